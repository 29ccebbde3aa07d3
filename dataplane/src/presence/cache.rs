//! The node's presence cache: what this node knows of users' presence, bounded per
//! tenant so one tenant's reads and updates can never evict another tenant's entries.
//!
//! ```text
//!  tenant ──▶ TenantCache { user ──▶ Cached }   ≤ MAX_PER_TENANT each, oldest out first
//!  ≤ MAX_TENANTS tenants: a new one takes the place of a tenant that cached nothing for a
//!  cache TTL (whose entries have all expired); if none has, it is not cached (its reads
//!  go to the store) — a busy tenant is never evicted by another
//! ```
//!
//! Nothing empties the whole cache: when the bus may have lost updates (a lagged
//! receiver, a Redis reconnect) every entry is marked stale at once ([`Cache::distrust`])
//! and reads fetch again; versions stay, so no update is delivered twice.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::Presence;

/// Cached presences per tenant at most; a tenant past it loses its own oldest entry.
pub const MAX_PER_TENANT: usize = 10_000;
/// Tenants cached at once (so at most `MAX_TENANTS × MAX_PER_TENANT` entries a node).
pub const MAX_TENANTS: usize = 256;

/// A cached presence. `version` is what the cache holds (from a read or an update);
/// `delivered` is the highest version this node has emitted to its subscribers. They
/// differ when a read fetched a state before its bus update arrived: the update must
/// still go out.
#[derive(Clone, Debug)]
pub struct Cached {
    pub version: u64,
    pub presence: Presence,
    pub at: Instant,
    pub delivered: u64,
}

struct TenantCache {
    /// When this tenant last cached something.
    touched: Instant,
    users: HashMap<String, Cached>,
    /// Users in the order they were first cached: the oldest goes first.
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct Cache {
    tenants: HashMap<String, TenantCache>,
    /// Entries cached at or before this may have missed updates.
    distrusted_at: Option<Instant>,
}

impl Cache {
    pub fn get(&self, tenant: &str, user: &str) -> Option<&Cached> {
        self.tenants.get(tenant)?.users.get(user)
    }

    /// The entry if it may be served: younger than `ttl`, or of a user whose updates this
    /// node follows (`followed`: a subscription is held, so every update reaches this
    /// cache) — and in both cases cached after the last [`Cache::distrust`].
    pub fn trusted(
        &self,
        tenant: &str,
        user: &str,
        now: Instant,
        ttl: std::time::Duration,
        followed: bool,
    ) -> Option<&Cached> {
        self.get(tenant, user).filter(|c| {
            self.distrusted_at.is_none_or(|d| c.at > d)
                && (followed || now.saturating_duration_since(c.at) < ttl)
        })
    }

    /// Cache `entry` (at `entry.at`); a full tenant drops its own oldest entry. A tenant
    /// that would be one too many takes the place of a tenant idle for `ttl`, or is not
    /// cached.
    pub fn put(&mut self, tenant: &str, user: &str, entry: Cached, ttl: std::time::Duration) {
        let now = entry.at;
        if !self.tenants.contains_key(tenant) && self.tenants.len() >= MAX_TENANTS {
            let idle = self
                .tenants
                .iter()
                .find(|(_, tc)| now.saturating_duration_since(tc.touched) >= ttl)
                .map(|(t, _)| t.clone());
            match idle {
                Some(t) => {
                    self.tenants.remove(&t);
                }
                None => return,
            }
        }
        let tc = self
            .tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| TenantCache {
                touched: now,
                users: HashMap::new(),
                order: VecDeque::new(),
            });
        tc.touched = now;
        if let Some(c) = tc.users.get_mut(user) {
            *c = entry;
            return;
        }
        while tc.users.len() >= MAX_PER_TENANT {
            let Some(oldest) = tc.order.pop_front() else {
                break;
            };
            tc.users.remove(&oldest);
        }
        tc.order.push_back(user.to_owned());
        tc.users.insert(user.to_owned(), entry);
    }

    /// Every entry held now may be stale (updates were lost): reads fetch again.
    pub fn distrust(&mut self, now: Instant) {
        self.distrusted_at = Some(now);
    }

    /// Entries of `tenant` (for tests and metrics).
    pub fn len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.users.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::presence::Status;

    fn mk_cached(user: &str, version: u64, at: Instant) -> Cached {
        Cached {
            version,
            presence: Presence {
                user_id: user.into(),
                status: Status::Online,
                message: None,
                last_seen: 0,
                devices: 1,
            },
            at,
            delivered: version,
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn one_tenant_filling_its_share_never_evicts_another() {
        let mut c = Cache::default();
        let now = Instant::now();
        c.put("victim", "bob", mk_cached("bob", 1, now), TTL);
        for i in 0..MAX_PER_TENANT + 500 {
            let u = format!("u{i}");
            c.put("flood", &u, mk_cached(&u, 1, now), TTL);
        }
        assert_eq!(c.len("flood"), MAX_PER_TENANT);
        assert!(c.get("flood", "u0").is_none(), "the flooder's oldest went");
        assert!(
            c.get("flood", &format!("u{}", MAX_PER_TENANT + 499))
                .is_some()
        );
        assert_eq!(c.get("victim", "bob").map(|e| e.version), Some(1));
        // Updating a cached user keeps its place and count.
        c.put("victim", "bob", mk_cached("bob", 2, now), TTL);
        assert_eq!(c.len("victim"), 1);
        assert_eq!(c.get("victim", "bob").map(|e| e.version), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn tenants_past_the_bound_take_only_an_idle_tenants_place() {
        let mut c = Cache::default();
        for i in 0..MAX_TENANTS {
            c.put(
                &format!("t{i}"),
                "u",
                mk_cached("u", 1, Instant::now()),
                TTL,
            );
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        c.put("late", "u", mk_cached("u", 1, Instant::now()), TTL);
        assert!(
            c.get("late", "u").is_none(),
            "every tenant is busy: not cached"
        );
        assert!((0..MAX_TENANTS).all(|i| c.get(&format!("t{i}"), "u").is_some()));
        // Later, all but t7 stay busy; t7 cached nothing for a TTL: "late" takes its place.
        tokio::time::advance(TTL).await;
        for i in (0..MAX_TENANTS).filter(|i| *i != 7) {
            c.put(
                &format!("t{i}"),
                "u",
                mk_cached("u", 2, Instant::now()),
                TTL,
            );
        }
        c.put("late", "u", mk_cached("u", 1, Instant::now()), TTL);
        assert!(c.get("late", "u").is_some());
        assert!(c.get("t7", "u").is_none());
        assert!(
            (0..MAX_TENANTS)
                .filter(|i| *i != 7)
                .all(|i| c.get(&format!("t{i}"), "u").is_some())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_followed_users_and_distrust() {
        let mut c = Cache::default();
        let ttl = TTL;
        c.put("t", "u", mk_cached("u", 3, Instant::now()), TTL);
        tokio::time::advance(Duration::from_secs(11)).await;
        let now = Instant::now();
        assert!(c.trusted("t", "u", now, ttl, false).is_none(), "expired");
        assert!(
            c.trusted("t", "u", now, ttl, true).is_some(),
            "a followed user's entry is kept current by its updates"
        );
        c.distrust(now);
        assert!(c.trusted("t", "u", now, ttl, true).is_none());
        // The version stays known, so an old update is not delivered again.
        assert_eq!(c.get("t", "u").map(|e| e.delivered), Some(3));
        tokio::time::advance(Duration::from_millis(1)).await;
        c.put("t", "u", mk_cached("u", 4, Instant::now()), TTL);
        assert!(c.trusted("t", "u", Instant::now(), ttl, false).is_some());
    }
}
