//! `switchboard-operator run | crd`.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_operator::cli::Args::parse_and_run().await
}
