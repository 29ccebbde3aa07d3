//! `switchboard-fake-fcm --listen ADDR --account FILE`: the FCM HTTP v1 and OAuth2 stand-in
//! as a program. It writes a service-account JSON (a fresh RSA key; `token_uri` pointing
//! at itself) to FILE, prints one JSON line `{"base_url": …, "account": …}` once it
//! listens, and serves until it gets SIGTERM or SIGINT. `GET /seen` says what it saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use switchboard_fakes::fcm::{FakeFcm, rsa_keys, service_account};

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the service-account JSON.
    #[arg(long)]
    account: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let (private, public) = rsa_keys();
    let fake = FakeFcm::start_on(args.listen, public)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    std::fs::write(&args.account, service_account(&fake, &private).to_string())
        .map_err(|e| format!("--account {}: {e}", args.account.display()))?;
    println!(
        "{}",
        serde_json::json!({"base_url": fake.base_url(), "account": args.account})
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
