//! Shared helpers for the smoke tests in `tests/`: where each real server of the test
//! environment is. `tests/env/envctl up …` starts the servers and writes their endpoints
//! to `tests/.state/env`; `source tests/.state/env` puts them into the environment.
//! [`kube`] holds what every test against the API server needs (the operator's too).

pub mod kube;

/// The endpoint in the environment variable `var`, as written by `tests/env/envctl up`.
///
/// When it is missing (or empty): under CI (`CI=true`) this panics with a message naming
/// the variable, so a CI run can never pass by skipping; elsewhere it prints a skip line
/// and returns `None`, and the test returns early.
#[must_use]
pub fn endpoint(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            skip_or_fail(&format!(
                "{var} is not set: start the test environment first with \
                 `tests/env/envctl up` and `source tests/.state/env`"
            ));
            None
        }
    }
}

/// A test that cannot run here says why: under CI (`CI=true`) it panics with `why`, so a
/// CI run never passes by skipping; elsewhere it prints a skip line and the caller
/// returns early. The one place the test suites decide this.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why}");
    }
    println!("SKIPPED: {why}");
}

/// All of `vars`, or `None` (after the same CI check and skip line as [`endpoint`]) when
/// any is missing.
#[must_use]
pub fn endpoints<const N: usize>(vars: [&str; N]) -> Option<[String; N]> {
    let mut values = Vec::with_capacity(N);
    for var in vars {
        values.push(endpoint(var)?);
    }
    values.try_into().ok()
}

/// A name that no other test run uses (for topics, keys, channels, collections).
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// GET `path` on `host`:`port` over plain HTTP/1.0 (5 s to connect and 5 s to answer):
/// the status code and the body. For health and metrics endpoints of the servers under
/// test, where a client library would only hide what went over the wire.
pub async fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{Duration, timeout};
    let limit = Duration::from_secs(5);
    let mut s = timeout(limit, tokio::net::TcpStream::connect((host, port)))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    timeout(limit, s.read_to_string(&mut buf))
        .await
        .with_context(|| format!("no answer from {host}:{port}{path}"))??;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
