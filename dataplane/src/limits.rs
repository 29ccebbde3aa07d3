//! Rate limits: a token bucket per socket and per user for each event class, and an
//! abuse threshold past which a socket is disconnected.
//!
//! Per-user buckets are per node: a user spreading a flood over many nodes gets each
//! node's allowance. The buckets are pure (time is passed in) so they are tested with
//! `tokio::time::pause`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_crds::config::{Bucket, ClassBuckets, LimitsConfig};
use tokio::time::Instant;

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

/// (tenant, user id).
type UserKey = (String, String);

/// The node's limiter: configuration plus per-user buckets, counted by live sockets so
/// a user's entry goes when their last socket does (bounded by connected users).
#[derive(Clone)]
pub struct Limiter {
    cfg: Arc<LimitsConfig>,
    users: Arc<Mutex<HashMap<UserKey, (Buckets, usize)>>>,
}

impl Limiter {
    pub fn new(cfg: LimitsConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            users: Arc::default(),
        }
    }

    pub fn attach(&self, tenant: &str, user: &str) {
        let mut u = self.users.lock().unwrap_or_else(|e| e.into_inner());
        u.entry((tenant.into(), user.into())).or_default().1 += 1;
    }

    pub fn detach(&self, tenant: &str, user: &str) {
        let mut u = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), user.to_owned());
        if let Some(e) = u.get_mut(&key) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                u.remove(&key);
            }
        }
    }

    /// Check one event of `class` from this socket and user.
    pub fn check(
        &self,
        socket: &Mutex<SocketLimits>,
        tenant: &str,
        user: &str,
        class: Class,
        now: Instant,
    ) -> Verdict {
        let mut s = socket.lock().unwrap_or_else(|e| e.into_inner());
        let socket_ok = s.buckets.take(class, &self.cfg.per_socket, now);
        let user_ok = socket_ok && {
            let mut u = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let entry = u.entry((tenant.into(), user.into())).or_default();
            entry.0.take(class, &self.cfg.per_user, now)
        };
        if user_ok {
            return Verdict::Allow;
        }
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

    fn mk_cfg() -> LimitsConfig {
        let mut c = LimitsConfig::default();
        c.per_socket.message = Bucket {
            rate: 2.0,
            burst: 3,
        };
        c.per_user.message = Bucket {
            rate: 100.0,
            burst: 100,
        };
        c.abuse_threshold = 5;
        c
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_over_time() {
        let l = Limiter::new(mk_cfg());
        let s = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(&s, "t", "u", Class::Message, now), Verdict::Allow);
        }
        assert_eq!(l.check(&s, "t", "u", Class::Message, now), Verdict::Limited);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            l.check(&s, "t", "u", Class::Message, Instant::now()),
            Verdict::Allow
        );
        // Another class has its own bucket.
        assert_eq!(
            l.check(&s, "t", "u", Class::Read, Instant::now()),
            Verdict::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_refusals_become_abuse_and_other_users_are_unaffected() {
        let l = Limiter::new(mk_cfg());
        let flooder = Mutex::new(SocketLimits::default());
        let other = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        let verdicts: Vec<_> = (0..8)
            .map(|_| l.check(&flooder, "t", "f", Class::Message, now))
            .collect();
        assert_eq!(verdicts[..3], [Verdict::Allow; 3]);
        assert_eq!(verdicts[3..7], [Verdict::Limited; 4]);
        assert_eq!(verdicts[7], Verdict::Abusive);
        assert_eq!(
            l.check(&other, "t", "o", Class::Message, now),
            Verdict::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_user_bucket_spans_sockets() {
        let mut cfg = mk_cfg();
        cfg.per_socket.message = Bucket {
            rate: 100.0,
            burst: 100,
        };
        cfg.per_user.message = Bucket {
            rate: 1.0,
            burst: 2,
        };
        let l = Limiter::new(cfg);
        let (a, b) = (
            Mutex::new(SocketLimits::default()),
            Mutex::new(SocketLimits::default()),
        );
        let now = Instant::now();
        assert_eq!(l.check(&a, "t", "u", Class::Message, now), Verdict::Allow);
        assert_eq!(l.check(&b, "t", "u", Class::Message, now), Verdict::Allow);
        assert_eq!(l.check(&b, "t", "u", Class::Message, now), Verdict::Limited);
        // Same user id in another tenant is another user.
        assert_eq!(l.check(&b, "t2", "u", Class::Message, now), Verdict::Allow);
    }

    /// A peer of a full 8-person mesh call sends an offer or answer and ~20 trickled
    /// candidates to each of the 7 others at once: the default signal budget takes it
    /// without touching the read budget (which alone would refuse, then disconnect).
    #[tokio::test(start_paused = true)]
    async fn mesh_signaling_has_its_own_budget() {
        let l = Limiter::new(LimitsConfig::default());
        let s = Mutex::new(SocketLimits::default());
        let now = Instant::now();
        let burst = 7 * (1 + 20);
        for i in 0..burst {
            assert_eq!(
                l.check(&s, "t", "u", Class::Signal, now),
                Verdict::Allow,
                "signal message {i}"
            );
        }
        for i in 0..LimitsConfig::default().per_socket.read.burst {
            assert_eq!(
                l.check(&s, "t", "u", Class::Read, now),
                Verdict::Allow,
                "read {i} after the signaling burst"
            );
        }
        let reads = Limiter::new(LimitsConfig::default());
        let r = Mutex::new(SocketLimits::default());
        let refused = (0..burst)
            .filter(|_| reads.check(&r, "t", "u", Class::Read, now) != Verdict::Allow)
            .count();
        assert!(refused > 0, "the read budget alone could not carry a mesh");
    }
}
