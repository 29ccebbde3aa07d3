//! Push delivery: FCM HTTP v1 ([`fcm`]) and APNs ([`apns`]) behind one [`Pusher`] trait,
//! with the decisions (what a provider answer means, how long to back off) as plain
//! functions and the retry loop shared by both.
//!
//! ```text
//!  dispatch ─▶ Push::send(notification, device) ─▶ provider.attempt() ─▶ Attempt
//!                     ▲  retry (Retry-After or exponential), bounded ◀─┘ Sent | Prune | Permanent | Retry
//! ```

pub mod apns;
pub mod fcm;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::devices::{Device, Platform};
use crate::notifications::Notification;

/// First back-off; doubled after each retryable failure.
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, whatever Retry-After asks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One provider attempt's time limit (past it: retried like a network error).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// What one provider call said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Accepted; the provider's message id when it gives one.
    Sent(Option<String>),
    /// The token is dead: remove it (APNs gives the time it became invalid, in ms).
    Prune {
        reason: String,
        unless_after: Option<i64>,
    },
    /// Will never succeed as sent (bad payload, auth, wrong topic...).
    Permanent(String),
    /// Try again later (quota, provider unavailable, network), after `after` if given.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

/// The end of a delivery to one device, after retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent(Option<String>),
    Prune {
        reason: String,
        unless_after: Option<i64>,
    },
    Failed(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent(_) => "sent",
            Outcome::Prune { .. } => "pruned",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Wait before attempt `attempt + 1` (attempt counts from 1): Retry-After when the
/// provider gave one, else `base * 2^(attempt-1)`; never more than [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    retry_after.unwrap_or(exp).min(MAX_BACKOFF)
}

/// Parse a Retry-After header value (delay in seconds; HTTP dates are not used by FCM).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// One provider: a single attempt at one device.
#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    async fn attempt(&self, n: &Notification, d: &Device) -> Attempt;
}

/// Attempt until sent, pruned, permanently failed or `max_attempts` are used.
/// Returns the outcome and the number of attempts made.
pub async fn deliver(
    p: &dyn Provider,
    n: &Notification,
    d: &Device,
    max_attempts: u32,
    base: Duration,
) -> (Outcome, u32) {
    let max = max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, p.attempt(n, d))
            .await
            .unwrap_or_else(|_| Attempt::Retry {
                reason: format!("no answer within {ATTEMPT_TIMEOUT:?}"),
                after: None,
            });
        match answer {
            Attempt::Sent(id) => return (Outcome::Sent(id), attempt),
            Attempt::Prune {
                reason,
                unless_after,
            } => {
                return (
                    Outcome::Prune {
                        reason,
                        unless_after,
                    },
                    attempt,
                );
            }
            Attempt::Permanent(reason) => return (Outcome::Failed(reason), attempt),
            Attempt::Retry { reason, after } => {
                if attempt >= max {
                    return (
                        Outcome::Failed(format!("{reason} (gave up after {attempt} attempts)")),
                        attempt,
                    );
                }
                let wait = backoff(base, attempt, after);
                tracing::debug!(provider = p.name(), attempt, ?wait, %reason, "push retry");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The configured providers and their attempt budgets.
#[derive(Clone, Default)]
pub struct Push {
    pub fcm: Option<(Arc<dyn Provider>, u32)>,
    pub apns: Option<(Arc<dyn Provider>, u32)>,
    /// Back-off base (tests shorten it).
    pub base: Option<Duration>,
}

impl Push {
    /// How long a claim on a device of `platform` must last so that a live run is never
    /// overtaken: every attempt at its time limit plus the longest back-off between them.
    pub fn lease(&self, platform: Platform) -> Duration {
        let max = match platform {
            Platform::Fcm => &self.fcm,
            Platform::Apns => &self.apns,
        }
        .as_ref()
        .map_or(1, |(_, m)| (*m).max(1));
        (ATTEMPT_TIMEOUT + MAX_BACKOFF).saturating_mul(max)
    }

    /// Deliver to one device with the provider of its platform.
    pub async fn send(&self, n: &Notification, d: &Device) -> (Outcome, u32) {
        let p = match d.platform {
            Platform::Fcm => &self.fcm,
            Platform::Apns => &self.apns,
        };
        match p {
            Some((p, max)) => {
                deliver(p.as_ref(), n, d, *max, self.base.unwrap_or(BASE_BACKOFF)).await
            }
            None => (
                Outcome::Failed(format!(
                    "{} is not configured on this worker",
                    d.platform.as_str()
                )),
                0,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;
    use crate::devices::Platform;

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1, None), Duration::from_millis(100));
        assert_eq!(backoff(b, 2, None), Duration::from_millis(200));
        assert_eq!(backoff(b, 4, None), Duration::from_millis(800));
        assert_eq!(
            backoff(b, 2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(backoff(b, 40, None), MAX_BACKOFF);
        assert_eq!(backoff(b, 1, Some(Duration::from_secs(3600))), MAX_BACKOFF);
        assert_eq!(retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    struct Script(Mutex<Vec<Attempt>>);

    #[async_trait]
    impl Provider for Script {
        fn name(&self) -> &'static str {
            "script"
        }
        async fn attempt(&self, _: &Notification, _: &Device) -> Attempt {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn mk_n() -> Notification {
        Notification::parse(
            br#"{"id":"n","tenant":"t","user_ids":["u"],"type":"system","title":"x"}"#,
        )
        .unwrap()
    }

    fn mk_d() -> Device {
        Device {
            platform: Platform::Fcm,
            token: "tok".into(),
            app_id: None,
            environment: None,
            registered_at: 0,
        }
    }

    fn retry() -> Attempt {
        Attempt::Retry {
            reason: "UNAVAILABLE".into(),
            after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_sent_then_stops() {
        let s = Script(Mutex::new(vec![
            retry(),
            retry(),
            Attempt::Sent(Some("m".into())),
        ]));
        let t0 = tokio::time::Instant::now();
        let (o, n) = deliver(&s, &mk_n(), &mk_d(), 5, Duration::from_secs(1)).await;
        assert_eq!((o, n), (Outcome::Sent(Some("m".into())), 3));
        // 1 s then 2 s of back-off.
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_permanent_errors_are_not_retried() {
        let s = Script(Mutex::new(vec![retry(), retry(), retry()]));
        let (o, n) = deliver(&s, &mk_n(), &mk_d(), 3, Duration::from_secs(1)).await;
        assert!(matches!(o, Outcome::Failed(r) if r.contains("gave up after 3")));
        assert_eq!(n, 3);
        let s = Script(Mutex::new(vec![Attempt::Permanent(
            "INVALID_ARGUMENT".into(),
        )]));
        assert_eq!(
            deliver(&s, &mk_n(), &mk_d(), 5, BASE_BACKOFF).await,
            (Outcome::Failed("INVALID_ARGUMENT".into()), 1)
        );
    }
}
