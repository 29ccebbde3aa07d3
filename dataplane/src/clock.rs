//! The wall clock, in the unit the protocol uses (ms since the epoch). Its own module so
//! capabilities that need the time do not depend on the node's context (`app`).

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
