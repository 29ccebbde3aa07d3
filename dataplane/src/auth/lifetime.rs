//! A token's lifetime on a live connection: `auth:expiring` some time before the token's
//! `exp`, `auth:refresh` to go on with a new token, and `auth:expired` plus a disconnect
//! at `exp` + leeway for a connection that did not refresh.
//!
//! ```text
//!  admitted ──▶ Clock (exp, in the socket's extensions) ──notify──▶ one task per socket
//!                 ▲                                                  │ exp − notice: auth:expiring {expires_at}
//!   auth:refresh ─┘ verified, same sub/tenant/sid, not revoked       │ exp + leeway: auth:expired {}, disconnect
//! ```
//!
//! [`next_step`] decides (no I/O); [`spawn`] waits and acts. The task holds no socket: it
//! finds it by id through the hub when a step is due, and it ends when the socket is
//! dropped (its extensions go, and the clock with them) or has expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use socketioxide::socket::Sid;
use tokio::sync::Notify;

use crate::hub::Hub;
use crate::metrics::KindLabel;

/// server → client, `exp − jwt.expiry_notice`: `{expires_at}` (ms since the epoch).
pub const EXPIRING: &str = "auth:expiring";
/// server → client, `exp + jwt.leeway` without a refresh: `{}`, then a disconnect.
pub const EXPIRED: &str = "auth:expired";
/// client → server: `{token}` → ack `{expires_at}`.
pub const REFRESH: &str = "auth:refresh";

/// `auth:expiring`: the token's `exp`, in ms.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Expiring {
    pub expires_at: u64,
}

/// `auth:expired`: the socket is disconnected right after it.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Expired {}

/// The token-lifetime events every namespace sends.
pub fn server_events(ns: &'static str) -> [crate::contract::ServerEvent; 2] {
    use crate::contract::ServerEvent;
    [
        ServerEvent::of::<Expiring>(
            ns,
            EXPIRING,
            "The token expires soon: send auth:refresh with a new one.",
        ),
        ServerEvent::of::<Expired>(
            ns,
            EXPIRED,
            "The token expired without a refresh; the socket is disconnected.",
        ),
    ]
}

/// How soon an expired socket that could not be disconnected (full send buffer) is tried
/// again.
const DISCONNECT_RETRY: Duration = Duration::from_secs(1);

/// What happens next to a connection whose token expires at `exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// At `at_ms` (ms since the epoch), send `auth:expiring`.
    Warn { at_ms: u64 },
    /// At `at_ms`, send `auth:expired` and disconnect.
    Expire { at_ms: u64 },
}

impl Step {
    pub fn at_ms(self) -> u64 {
        match self {
            Step::Warn { at_ms } | Step::Expire { at_ms } => at_ms,
        }
    }
}

/// The next step for a token that expires at `exp` (seconds since the epoch). `warned`:
/// `auth:expiring` already went out for this `exp`. A warning that is already due (a
/// token shorter-lived than the notice) goes out at once; the expiry always follows one.
pub fn next_step(exp: u64, warned: bool, notice: Duration, leeway: Duration) -> Step {
    let exp_ms = exp.saturating_mul(1000);
    if warned {
        Step::Expire {
            at_ms: exp_ms.saturating_add(millis(leeway)),
        }
    } else {
        Step::Warn {
            at_ms: exp_ms.saturating_sub(millis(notice)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    u64::try_from(crate::app::now_ms()).unwrap_or(0)
}

/// A connection's token expiry: written by `auth:refresh`, read by the connection's task.
/// Cheap to clone; lives in the socket's extensions. When its last clone goes (the socket
/// is dropped), the task ends.
#[derive(Clone)]
pub struct Clock(Arc<Owner>);

/// The socket's side of the clock: its drop tells the task the socket is gone.
struct Owner(Arc<Shared>);

/// What the socket and its task share. Small on purpose: every connection has one.
struct Shared {
    exp: AtomicU64,
    gone: AtomicBool,
    /// Wakes the task: a new `exp`, or the socket gone.
    changed: Notify,
    /// One refresh at a time per connection (each swaps the identity rooms).
    refreshing: tokio::sync::Mutex<()>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::SeqCst);
        // Kept as a permit if the task is not waiting right now.
        self.0.changed.notify_one();
    }
}

// === impl Clock ===

impl Clock {
    pub fn new(exp: u64) -> Self {
        Self(Arc::new(Owner(Arc::new(Shared {
            exp: AtomicU64::new(exp),
            gone: AtomicBool::new(false),
            changed: Notify::new(),
            refreshing: tokio::sync::Mutex::new(()),
        }))))
    }

    /// The token's `exp` now.
    pub fn exp(&self) -> u64 {
        self.shared().exp.load(Ordering::SeqCst)
    }

    /// A refreshed token took over: its `exp` replaces the old one.
    pub fn set(&self, exp: u64) {
        self.shared().exp.store(exp, Ordering::SeqCst);
        self.shared().changed.notify_one();
    }

    /// Held for the whole of one refresh.
    pub async fn refreshing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared().refreshing.lock().await
    }

    fn shared(&self) -> &Arc<Shared> {
        &(self.0).0
    }
}

/// Where a connection's task acts, and with what timing.
pub struct Target {
    pub hub: Arc<dyn Hub>,
    pub ns: String,
    pub sid: Sid,
    pub notice: Duration,
    pub leeway: Duration,
    /// `disconnects{kind}`: counts `token_expired`.
    pub disconnects: Family<KindLabel, Counter>,
    /// Tasks alive (up while one runs).
    pub live: Gauge,
}

/// Keeps `Target::live` up for as long as a task runs, however it ends.
struct Live(Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Start following `clock` for one connection, once it is admitted: until its token
/// expires (then tell the client and disconnect it) or the connection is gone.
pub fn spawn(clock: &Clock, target: Target) {
    let shared = clock.shared().clone();
    let span = tracing::debug_span!("token_clock", ns = %target.ns, sid = %target.sid);
    tokio::spawn(tracing::Instrument::instrument(
        follow(shared, target),
        span,
    ));
}

/// The task of [`spawn`]. It holds only the shared state, not the clock: dropping the
/// socket drops the clock's owner, which ends it.
async fn follow(shared: Arc<Shared>, target: Target) {
    target.live.inc();
    let _live = Live(target.live.clone());
    let mut warned_for = None;
    loop {
        if shared.gone.load(Ordering::SeqCst) {
            return;
        }
        let current = shared.exp.load(Ordering::SeqCst);
        let step = next_step(
            current,
            warned_for == Some(current),
            target.notice,
            target.leeway,
        );
        let wait = Duration::from_millis(step.at_ms().saturating_sub(now_ms()));
        tokio::select! {
            // A new exp, or the socket gone: plan again.
            () = shared.changed.notified() => continue,
            () = tokio::time::sleep(wait) => {}
        }
        if shared.exp.load(Ordering::SeqCst) != current {
            // A refresh landed just as the step came due: plan again for the new exp.
            continue;
        }
        match step {
            Step::Warn { .. } => {
                // Best effort: a socket that could not take it is still expired on time.
                let data = json!(Expiring {
                    expires_at: current.saturating_mul(1000)
                });
                target
                    .hub
                    .emit_to_socket(&target.ns, target.sid, EXPIRING, &data);
                warned_for = Some(current);
            }
            Step::Expire { .. } => {
                tracing::debug!(ns = %target.ns, sid = %target.sid, "token expired, disconnecting");
                target
                    .hub
                    .emit_to_socket(&target.ns, target.sid, EXPIRED, &json!(Expired {}));
                target
                    .disconnects
                    .get_or_create(&KindLabel {
                        kind: "token_expired".into(),
                    })
                    .inc();
                // A socket whose send buffer is full cannot be told to go yet: try again
                // until it goes (or the transport's own heartbeat closes it).
                while !target.hub.disconnect_socket(&target.ns, target.sid) {
                    if shared.gone.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::select! {
                        () = shared.changed.notified() => {}
                        () = tokio::time::sleep(DISCONNECT_RETRY) => {}
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::Mutex;

    /// Records what the task did to its socket.
    #[derive(Default)]
    struct FakeHub {
        seen: Mutex<Vec<&'static str>>,
    }

    impl FakeHub {
        fn seen(&self) -> Vec<&'static str> {
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    #[async_trait::async_trait]
    impl Hub for FakeHub {
        async fn emit(&self, _: &str, _: String, _: &'static str, _: Value) {}
        async fn emit_local(&self, _: &str, _: String, _: &'static str, _: Value) {}
        async fn join(&self, _: &str, _: String, _: String) {}
        async fn leave(&self, _: &str, _: String, _: String) {}
        async fn disconnect(&self, _: &str, _: String) {}
        fn emit_to_socket(&self, _: &str, _: Sid, event: &'static str, _: &Value) -> bool {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event);
            true
        }
        fn disconnect_socket(&self, _: &str, _: Sid) -> bool {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push("disconnect");
            // The first attempt finds the socket's send buffer full.
            seen.iter().filter(|e| **e == "disconnect").count() > 1
        }
    }

    fn mk_target(hub: &Arc<FakeHub>) -> Target {
        Target {
            hub: hub.clone(),
            ns: "/chat".into(),
            sid: Sid::new(),
            notice: Duration::from_secs(2),
            leeway: Duration::from_secs(1),
            disconnects: Family::default(),
            live: Gauge::default(),
        }
    }

    // Paused tokio time; the wall clock (which `exp` is measured against) barely moves,
    // so each wait is measured from the test's start.
    #[tokio::test(start_paused = true)]
    async fn warned_then_expired_unless_refreshed_and_the_task_ends() {
        let hub = Arc::new(FakeHub::default());
        let now = now_ms() / 1000;
        let clock = Clock::new(now + 5);
        spawn(&clock, mk_target(&hub));
        // The warning is due 2 s before exp (2 to 3 s from now).
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(hub.seen().is_empty(), "{:?}", hub.seen());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(hub.seen(), [EXPIRING]);
        // A refresh moves the expiry: nothing more happens at the old one.
        clock.set(now + 100);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(hub.seen(), [EXPIRING]);
        // The new token is warned about again, then expires at exp + leeway.
        clock.set(now + 3);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(hub.seen(), [EXPIRING, EXPIRING]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            hub.seen().get(..4),
            Some(&[EXPIRING, EXPIRING, EXPIRED, "disconnect"][..])
        );
        // The send buffer was full: tried again a second later, then done.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            hub.seen(),
            [EXPIRING, EXPIRING, EXPIRED, "disconnect", "disconnect"]
        );
        assert_eq!(Arc::strong_count(clock.shared()), 1, "the task ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_socket_ends_its_task() {
        let hub = Arc::new(FakeHub::default());
        let clock = Clock::new(now_ms() / 1000 + 3600);
        spawn(&clock, mk_target(&hub));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(Arc::strong_count(&hub), 2, "the task holds the hub");
        drop(clock);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(Arc::strong_count(&hub), 1, "the task ended");
        assert!(hub.seen().is_empty());
    }

    const NOTICE: Duration = Duration::from_secs(60);
    const LEEWAY: Duration = Duration::from_secs(30);

    #[test]
    fn a_warning_then_the_expiry_after_the_leeway() {
        assert_eq!(
            next_step(1_000, false, NOTICE, LEEWAY),
            Step::Warn { at_ms: 940_000 }
        );
        assert_eq!(
            next_step(1_000, true, NOTICE, LEEWAY),
            Step::Expire { at_ms: 1_030_000 }
        );
    }

    #[test]
    fn a_token_shorter_than_the_notice_is_warned_at_once_and_extremes_do_not_overflow() {
        assert_eq!(
            next_step(10, false, NOTICE, LEEWAY),
            Step::Warn { at_ms: 0 }
        );
        assert_eq!(
            next_step(u64::MAX, true, NOTICE, LEEWAY),
            Step::Expire { at_ms: u64::MAX }
        );
        assert_eq!(
            next_step(5, true, Duration::MAX, Duration::MAX),
            Step::Expire { at_ms: u64::MAX }
        );
    }
}
