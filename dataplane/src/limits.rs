//! Rate limits: a token bucket per socket and a budget per user for each event class,
//! and an abuse threshold past which a socket is disconnected.
//!
//! ```text
//!  event ──▶ socket bucket (this socket, in memory) ──▶ user budget ──▶ Allow | Limited
//!                                                        │ UserBudgets::take, one call:
//!                                                        │  embedded: MemoryBudgets
//!                                                        │  shared:   RedisBudgets (one script)
//!                                                        └─ slow (> USER_BUDGET_TIMEOUT) or
//!                                                           failing: this node's MemoryBudgets
//! ```
//!
//! The per-user budget is a GCRA ([`gcra`]) per (tenant, user, class): one number, the
//! "theoretical arrival time" of the next event, which outlives sockets (a reconnect does
//! not refill it) and, in shared mode, lives in Redis (every node takes from the same
//! budget; one round trip per event, the script reads the clock of Redis, so the nodes'
//! clocks do not matter). A budget's state expires once it is full again, so what is
//! kept is bounded by the users active within the last `burst / rate` seconds.
//!
//! When Redis is slow or down the check **fails open to this node's own budget**: the
//! user is held to one budget per node for the outage (never unlimited, never refused
//! for our fault), and `switchboard_redis_errors_total` counts each such check.

pub mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use switchboard_crds::config::{Bucket, ClassBuckets, LimitsConfig};
use tokio::time::Instant;

use crate::error::StoreError;
/// Event classes, each with its own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Message,
    Typing,
    Read,
    Room,
    /// WebRTC signaling (offers, answers, ICE candidates): its own budget, so a mesh
    /// call's candidate trickle neither starves reads nor trips the abuse threshold.
    Signal,
}

impl Class {
    /// The class's name in keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            Class::Message => "message",
            Class::Typing => "typing",
            Class::Read => "read",
            Class::Room => "room",
            Class::Signal => "signal",
        }
    }

    fn of(self, b: &ClassBuckets) -> Bucket {
        match self {
            Class::Message => b.message,
            Class::Typing => b.typing,
            Class::Read => b.read,
            Class::Room => b.room,
            Class::Signal => b.signal,
        }
    }
}

/// A token bucket: starts full, refills at `rate` a second up to `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(b: Bucket, now: Instant) -> Self {
        Self {
            tokens: f64::from(b.burst),
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, b: Bucket, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * b.rate).min(f64::from(b.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Buckets of one holder (a socket or a user), one per class, made on first use.
#[derive(Default, Debug)]
struct Buckets(HashMap<Class, TokenBucket>);

impl Buckets {
    fn take(&mut self, class: Class, cfg: &ClassBuckets, now: Instant) -> bool {
        let b = class.of(cfg);
        self.0
            .entry(class)
            .or_insert_with(|| TokenBucket::new(b, now))
            .take(b, now)
    }
}

/// What a check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer `rate_limited`.
    Limited,
    /// Answer `rate_limited` and disconnect: the abuse threshold was crossed.
    Abusive,
}

/// Per-socket limiter state, kept in the socket's extensions.
#[derive(Default, Debug)]
pub struct SocketLimits {
    buckets: Buckets,
    /// When recent refusals happened (at most `abuse_threshold` kept).
    refusals: VecDeque<Instant>,
}

/// How long a check waits for the shared budget before it takes this node's instead.
pub const USER_BUDGET_TIMEOUT: Duration = Duration::from_millis(250);
/// Budgets [`MemoryBudgets`] keeps. Past it (after dropping the full ones) a new user's
/// events are held by their socket buckets alone until room frees up: one tenant's many
/// users never get another tenant's users refused.
pub const MAX_MEMORY_BUDGETS: usize = 200_000;

/// GCRA, the decision shared by the stores. `tat` is the budget's theoretical arrival
/// time (ms; at or before `now` when the budget is full), `now` the clock (ms). Returns
/// the new `tat` when the event is allowed, None when it is over the budget (which then
/// does not change). `burst` events fit at once; one more every `1 / rate` seconds.
pub fn gcra(tat: f64, now: f64, b: Bucket) -> Option<f64> {
    let interval = 1000.0 / b.rate;
    let next = tat.max(now) + interval;
    // A microsecond of slack for float rounding.
    (next - now <= interval * f64::from(b.burst) + 1e-3).then_some(next)
}

/// Where per-user budgets live.
#[async_trait]
pub trait UserBudgets: Send + Sync {
    /// Take one event of `class` from the user's budget `b`; false when it is spent.
    async fn take(
        &self,
        tenant: &str,
        user: &str,
        class: Class,
        b: Bucket,
    ) -> Result<bool, StoreError>;
}

// === impl MemoryBudgets ===

/// (tenant, user id, class).
type BudgetKey = (String, String, Class);

/// Per-user budgets in this process: embedded mode's, and a shared node's while Redis
/// fails. Outlives sockets; an entry whose budget is full again is dropped (that is the
/// same as no entry), so the map holds the users active within `burst / rate`, at most
/// [`MAX_MEMORY_BUDGETS`].
pub struct MemoryBudgets {
    /// The zero of the ms clock below.
    epoch: Instant,
    /// [`MAX_MEMORY_BUDGETS`] (smaller in tests).
    cap: usize,
    tats: Mutex<HashMap<BudgetKey, f64>>,
}

impl Default for MemoryBudgets {
    fn default() -> Self {
        Self::with_cap(MAX_MEMORY_BUDGETS)
    }
}

impl MemoryBudgets {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            epoch: Instant::now(),
            cap,
            tats: Mutex::default(),
        }
    }

    pub fn take_at(&self, tenant: &str, user: &str, class: Class, b: Bucket, now: Instant) -> bool {
        let now = now.saturating_duration_since(self.epoch).as_secs_f64() * 1000.0;
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), user.to_owned(), class);
        if !tats.contains_key(&key) && tats.len() >= self.cap {
            tats.retain(|_, tat| *tat > now);
            if tats.len() >= self.cap {
                tracing::warn!(
                    tenant,
                    user,
                    "user budgets full; this user is held by socket buckets alone for now"
                );
                return true;
            }
        }
        let tat = tats.get(&key).copied().unwrap_or(now);
        match gcra(tat, now, b) {
            Some(next) => {
                tats.insert(key, next);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl UserBudgets for MemoryBudgets {
    async fn take(
        &self,
        tenant: &str,
        user: &str,
        class: Class,
        b: Bucket,
    ) -> Result<bool, StoreError> {
        Ok(self.take_at(tenant, user, class, b, Instant::now()))
    }
}

// === impl Limiter ===

/// The node's limiter: configuration, the per-user budgets (shared or this node's) and
/// this node's own budgets to fall back on.
#[derive(Clone)]
pub struct Limiter {
    cfg: Arc<LimitsConfig>,
    users: Arc<dyn UserBudgets>,
    fallback: Arc<MemoryBudgets>,
    /// Counts checks that fell back (Redis slow or failing).
    redis_errors: Counter,
}

impl Limiter {
    pub fn new(cfg: LimitsConfig, users: Arc<dyn UserBudgets>, redis_errors: Counter) -> Self {
        Self {
            cfg: Arc::new(cfg),
            users,
            fallback: Arc::default(),
            redis_errors,
        }
    }

    /// The user's budget: the shared one, or this node's when that one does not answer
    /// within [`USER_BUDGET_TIMEOUT`].
    async fn take_user(&self, tenant: &str, user: &str, class: Class) -> bool {
        let b = class.of(&self.cfg.per_user);
        let shared =
            tokio::time::timeout(USER_BUDGET_TIMEOUT, self.users.take(tenant, user, class, b))
                .await;
        match shared {
            Ok(Ok(allowed)) => allowed,
            failed => {
                self.redis_errors.inc();
                tracing::debug!(
                    tenant,
                    user,
                    timed_out = failed.is_err(),
                    "user budget unavailable, using this node's"
                );
                self.fallback
                    .take_at(tenant, user, class, b, Instant::now())
            }
        }
    }

    /// Check one event of `class` from this socket and user.
    pub async fn check(
        &self,
        socket: &Mutex<SocketLimits>,
        tenant: &str,
        user: &str,
        class: Class,
        now: Instant,
    ) -> Verdict {
        let socket_ok = {
            let mut s = socket.lock().unwrap_or_else(|e| e.into_inner());
            s.buckets.take(class, &self.cfg.per_socket, now)
        };
        if socket_ok && self.take_user(tenant, user, class).await {
            return Verdict::Allow;
        }
        let mut s = socket.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.cfg.abuse_window.0;
        while s
            .refusals
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            s.refusals.pop_front();
        }
        s.refusals.push_back(now);
        if s.refusals.len() >= self.cfg.abuse_threshold as usize {
            s.refusals.clear();
            Verdict::Abusive
        } else {
            Verdict::Limited
        }
    }

    pub fn abuse_window(&self) -> Duration {
        self.cfg.abuse_window.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_limiter(cfg: LimitsConfig) -> Limiter {
        Limiter::new(cfg, Arc::new(MemoryBudgets::default()), Counter::default())
    }

    fn bucket(rate: f64, burst: u32) -> Bucket {
        Bucket { rate, burst }
    }

    /// Defaults, with these message buckets and abuse threshold.
    fn mk_cfg_of(socket: Bucket, user: Bucket, abuse_threshold: u32) -> LimitsConfig {
        let mut c = LimitsConfig::default();
        c.per_socket.message = socket;
        c.per_user.message = user;
        c.abuse_threshold = abuse_threshold;
        c
    }

    /// A message of user "u" of tenant "t" from socket `s`.
    async fn msg(l: &Limiter, s: &Mutex<SocketLimits>, now: Instant) -> Verdict {
        l.check(s, "t", "u", Class::Message, now).await
    }

    fn mk_cfg() -> LimitsConfig {
        mk_cfg_of(bucket(2.0, 3), bucket(100.0, 100), 5)
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_over_time() {
        let l = mk_limiter(mk_cfg());
        let s = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(msg(&l, &s, now).await, Verdict::Allow);
        }
        assert_eq!(msg(&l, &s, now).await, Verdict::Limited);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(msg(&l, &s, Instant::now()).await, Verdict::Allow);
        // Another class has its own bucket.
        assert_eq!(
            l.check(&s, "t", "u", Class::Read, Instant::now()).await,
            Verdict::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_refusals_become_abuse_and_other_users_are_unaffected() {
        let l = mk_limiter(mk_cfg());
        let flooder = Mutex::new(SocketLimits::default());
        let other = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        let mut verdicts = Vec::new();
        for _ in 0..8 {
            verdicts.push(l.check(&flooder, "t", "f", Class::Message, now).await);
        }
        assert_eq!(verdicts[..3], [Verdict::Allow; 3]);
        assert_eq!(verdicts[3..7], [Verdict::Limited; 4]);
        assert_eq!(verdicts[7], Verdict::Abusive);
        assert_eq!(
            l.check(&other, "t", "o", Class::Message, now).await,
            Verdict::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_user_bucket_spans_sockets() {
        let mut cfg = mk_cfg();
        cfg.per_socket.message = bucket(100.0, 100);
        cfg.per_user.message = bucket(1.0, 2);
        let l = mk_limiter(cfg);
        let (a, b) = (
            Mutex::new(SocketLimits::default()),
            Mutex::new(SocketLimits::default()),
        );
        let now = Instant::now();
        assert_eq!(msg(&l, &a, now).await, Verdict::Allow);
        assert_eq!(msg(&l, &b, now).await, Verdict::Allow);
        assert_eq!(msg(&l, &b, now).await, Verdict::Limited);
        // Same user id in another tenant is another user.
        assert_eq!(
            l.check(&b, "t2", "u", Class::Message, now).await,
            Verdict::Allow
        );
    }

    /// A peer of a full 8-person mesh call sends an offer or answer and ~20 trickled
    /// candidates to each of the 7 others at once: the default signal budget takes it
    /// without touching the read budget (which alone would refuse, then disconnect).
    #[tokio::test(start_paused = true)]
    async fn mesh_signaling_has_its_own_budget() {
        let l = mk_limiter(LimitsConfig::default());
        let s = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        let burst = 7 * (1 + 20);
        for i in 0..burst {
            assert_eq!(
                l.check(&s, "t", "u", Class::Signal, now).await,
                Verdict::Allow,
                "signal message {i}"
            );
        }
        for i in 0..LimitsConfig::default().per_socket.read.burst {
            assert_eq!(
                l.check(&s, "t", "u", Class::Read, now).await,
                Verdict::Allow,
                "read {i} after the signaling burst"
            );
        }
        let reads = mk_limiter(LimitsConfig::default());
        let r = Mutex::new(SocketLimits::default());
        let mut refused = 0;
        for _ in 0..burst {
            if reads.check(&r, "t", "u", Class::Read, now).await != Verdict::Allow {
                refused += 1;
            }
        }
        assert!(refused > 0, "the read budget alone could not carry a mesh");
    }

    #[test]
    fn gcra_lets_a_burst_through_then_one_per_interval() {
        let b = bucket(20.0, 40);
        let mut tat = 0.0;
        let at_once = (0..100)
            .take_while(|_| gcra(tat, 1000.0, b).map(|t| tat = t).is_some())
            .count();
        assert_eq!(at_once, 40);
        // 50 ms later (one interval at 20/s): exactly one more.
        assert!(gcra(tat, 1050.0, b).map(|t| tat = t).is_some());
        assert_eq!(gcra(tat, 1050.0, b), None);
        // After burst / rate seconds idle the budget is full again.
        let mut n = 0;
        while let Some(t) = gcra(tat, 1050.0 + 2000.0, b) {
            tat = t;
            n += 1;
        }
        assert_eq!(n, 40);
    }

    /// The default message budgets; no abuse threshold in the way.
    fn mk_user_cfg() -> LimitsConfig {
        mk_cfg_of(bucket(10.0, 20), bucket(20.0, 40), 1000)
    }

    /// Connect, send 60, disconnect, again, for 5 s: each socket brings a full socket
    /// bucket, the user's budget holds anyway (it used to go with the user's last socket).
    #[tokio::test(start_paused = true)]
    async fn the_user_budget_outlives_sockets() {
        let l = mk_limiter(mk_user_cfg());
        let start = Instant::now();
        let mut accepted = 0;
        while start.elapsed() < Duration::from_secs(5) {
            let socket = Mutex::new(SocketLimits::default());
            for _ in 0..60 {
                if l.check(&socket, "t", "u", Class::Message, Instant::now())
                    .await
                    == Verdict::Allow
                {
                    accepted += 1;
                }
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        let expected = 40.0 + 20.0 * start.elapsed().as_secs_f64();
        assert!(
            (f64::from(accepted) - expected).abs() <= expected * 0.1,
            "{accepted} accepted, expected {expected}"
        );
    }

    struct Failing;
    #[async_trait]
    impl UserBudgets for Failing {
        async fn take(&self, _: &str, _: &str, _: Class, _: Bucket) -> Result<bool, StoreError> {
            Err(StoreError::Unavailable("redis is down".into()))
        }
    }

    struct Hanging;
    #[async_trait]
    impl UserBudgets for Hanging {
        async fn take(&self, _: &str, _: &str, _: Class, _: Bucket) -> Result<bool, StoreError> {
            std::future::pending().await
        }
    }

    /// Redis down or slow: the check answers within the timeout and holds the user to
    /// this node's own budget (fail open to a bounded budget, never unlimited), counted.
    #[tokio::test(start_paused = true)]
    async fn a_failing_or_slow_shared_budget_falls_back_to_this_nodes() {
        let mut cfg = mk_user_cfg();
        cfg.per_socket.message = bucket(1000.0, 1000);
        for users in [Arc::new(Failing) as Arc<dyn UserBudgets>, Arc::new(Hanging)] {
            let errors = Counter::default();
            let l = Limiter::new(cfg.clone(), users, errors.clone());
            let s = Mutex::new(SocketLimits::default());
            let mut verdicts = Vec::new();
            for _ in 0..41 {
                let asked = Instant::now();
                verdicts.push(l.check(&s, "t", "u", Class::Message, asked).await);
                assert!(asked.elapsed() <= USER_BUDGET_TIMEOUT + Duration::from_millis(1));
            }
            // The node's budget refills while the checks wait out the timeouts: count
            // what a full budget allows over that time.
            let allowed = verdicts.iter().filter(|v| **v == Verdict::Allow).count();
            assert!(allowed >= 40, "{verdicts:?}");
            assert!(errors.get() == 41);
        }
        let l = Limiter::new(cfg, Arc::new(Failing), Counter::default());
        let s = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        let mut allowed = 0;
        for _ in 0..100 {
            if l.check(&s, "t", "u", Class::Message, now).await == Verdict::Allow {
                allowed += 1;
            }
        }
        assert_eq!(
            allowed, 40,
            "the node's own budget holds while Redis is down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_budgets_are_bounded_and_drop_full_ones() {
        let m = MemoryBudgets::with_cap(3);
        let b = bucket(10.0, 2);
        for u in ["a", "b", "c"] {
            assert!(m.take_at("t", u, Class::Message, b, Instant::now()));
        }
        assert_eq!(m.len(), 3);
        // Full: a fourth user is held by socket buckets alone (allowed, not tracked).
        assert!(m.take_at("t", "d", Class::Message, b, Instant::now()));
        assert_eq!(m.len(), 3);
        // Once the budgets are full again their entries go, and "d" is tracked.
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(m.take_at("t", "d", Class::Message, b, Instant::now()));
        assert_eq!(m.len(), 1);
    }
}
