//! coturn (tests/env: Debian coturn, TURN REST API auth with a current and a previous
//! secret) driven by Debian's `turnutils_uclient` with credentials made as the dataplane
//! makes them: username `<expiry-unix-seconds>:<user>`, password
//! base64(HMAC-SHA1(secret, username)).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchboard_smoke::{endpoints, unique_name};

const VARS: [&str; 3] = [
    "SWITCHBOARD_TEST_TURN_PORT",
    "SWITCHBOARD_TEST_TURN_SECRET",
    "SWITCHBOARD_TEST_TURN_PREVIOUS_SECRET",
];

fn credentials(secret: &str, user: &str, expiry: SystemTime) -> anyhow::Result<(String, String)> {
    let expiry = expiry.duration_since(UNIX_EPOCH)?.as_secs();
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())?;
    mac.update(username.as_bytes());
    Ok((username, STANDARD.encode(mac.finalize().into_bytes())))
}

/// What one `turnutils_uclient` run showed.
struct Run {
    exit_ok: bool,
    output: String,
}

impl Run {
    /// Both clients got a relay address and the messages went through the relays.
    fn allocated(&self) -> bool {
        self.exit_ok
            && self.output.contains("Received relay addr")
            && !self.output.contains("ERROR")
            && received_messages(&self.output).is_some_and(|n| n > 0)
    }

    /// The server refused the allocation (uclient's words for a 401 it cannot get past).
    fn refused(&self) -> bool {
        !self.exit_ok
            && self.output.contains("Cannot complete Allocation")
            && !self.output.contains("Received relay addr")
    }
}

/// N of the closing `start_mclient: tot_send_msgs=…, tot_recv_msgs=N` line.
fn received_messages(output: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .find_map(|line| line.split("tot_recv_msgs=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

/// Client-to-client through the TURN server (-y), no RTCP pair (-c), 2 messages, 1 client pair.
fn uclient(port: &str, username: &str, password: &str) -> anyhow::Result<Run> {
    let out = Command::new("timeout")
        .args([
            "60",
            "turnutils_uclient",
            "-y",
            "-c",
            "-n",
            "2",
            "-m",
            "1",
            "-v",
        ])
        .args(["-u", username, "-w", password, "-p", port, "127.0.0.1"])
        .output()
        .context("running turnutils_uclient (Debian package coturn)")?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Run {
        exit_ok: out.status.success(),
        output,
    })
}

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

#[test]
fn current_secret_allocates() -> anyhow::Result<()> {
    let Some([port, secret, _]) = endpoints(VARS) else {
        return Ok(());
    };
    let (user, pass) = credentials(&secret, &unique_name("alice"), in_an_hour())?;
    let run = uclient(&port, &user, &pass)?;
    ensure!(
        run.allocated(),
        "allocation with the current secret failed:\n{}",
        run.output
    );
    Ok(())
}

#[test]
fn previous_secret_still_allocates() -> anyhow::Result<()> {
    let Some([port, _, previous]) = endpoints(VARS) else {
        return Ok(());
    };
    let (user, pass) = credentials(&previous, &unique_name("bob"), in_an_hour())?;
    let run = uclient(&port, &user, &pass)?;
    ensure!(
        run.allocated(),
        "allocation with the previous secret failed:\n{}",
        run.output
    );
    Ok(())
}

#[test]
fn wrong_secret_is_refused() -> anyhow::Result<()> {
    let Some([port, secret, previous]) = endpoints(VARS) else {
        return Ok(());
    };
    let wrong = format!("{secret}{previous}-not-a-secret");
    let (user, pass) = credentials(&wrong, &unique_name("mallory"), in_an_hour())?;
    let run = uclient(&port, &user, &pass)?;
    ensure!(
        run.refused(),
        "a wrong secret was not refused:\n{}",
        run.output
    );
    Ok(())
}

#[test]
fn expired_credentials_are_refused() -> anyhow::Result<()> {
    let Some([port, secret, _]) = endpoints(VARS) else {
        return Ok(());
    };
    let expired = SystemTime::now() - Duration::from_secs(60);
    let (user, pass) = credentials(&secret, &unique_name("carol"), expired)?;
    let run = uclient(&port, &user, &pass)?;
    ensure!(
        run.refused(),
        "expired credentials were not refused:\n{}",
        run.output
    );
    Ok(())
}
