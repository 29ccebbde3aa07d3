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
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{var} is not set: start the test environment first with \
             `tests/env/envctl up` and `source tests/.state/env`"
        ),
        _ => {
            println!(
                "SKIPPED: {var} is not set (run `tests/env/envctl up` and `source tests/.state/env`)"
            );
            None
        }
    }
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
