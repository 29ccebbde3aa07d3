//! Writes that must land: after a disconnect, nobody is left to ask again, so a failed
//! presence or online-flag write is tried again with back-off until the store takes it.
//! (A node that dies meanwhile leaves the rest to the dead-node sweep.)

use std::future::Future;
use std::time::Duration;

use tracing::Instrument;

use crate::error::StoreError;
use crate::metrics::Metrics;

/// The first pause after a failure; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pause before attempt `n + 1` after `n` failures (pure).
pub fn pause(failures: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_PAUSE)
}

/// Run `write` until it succeeds; each failure is logged and counted
/// (`switchboard_disconnect_write_retries`).
pub async fn until_stored<F, Fut>(what: &'static str, metrics: &Metrics, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut failures = 0u32;
    while let Err(e) = write().await {
        failures = failures.saturating_add(1);
        metrics.disconnect_write_retries.inc();
        let wait = pause(failures);
        tracing::warn!(error = %e, write = what, failures, retry_in_ms = wait.as_millis() as u64, "write after a disconnect failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// [`until_stored`] in a task of its own (so the caller, a socket's teardown, goes on).
/// `write` makes one attempt from owned (cloned) state each time it is called.
pub fn spawn_until_stored<F, Fut>(what: &'static str, metrics: Metrics, write: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    tokio::spawn(
        async move { until_stored(what, &metrics, write).await }
            .instrument(tracing::info_span!("write_after_disconnect", write = what)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap() {
        assert_eq!(pause(1), Duration::from_millis(100));
        assert_eq!(pause(2), Duration::from_millis(200));
        assert_eq!(pause(4), Duration::from_millis(800));
        assert_eq!(pause(7), MAX_PAUSE);
        assert_eq!(pause(u32::MAX), MAX_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_write_lands() {
        let metrics = Metrics::new();
        let mut left = 3;
        let start = tokio::time::Instant::now();
        until_stored("test", &metrics, || {
            let r = if left > 0 {
                left -= 1;
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            };
            async move { r }
        })
        .await;
        assert_eq!(left, 0);
        assert_eq!(metrics.disconnect_write_retries.get(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(100 + 200 + 400));
    }
}
