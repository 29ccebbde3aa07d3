//! Connections per user, on every node: each namespace connection holds a lease in its
//! user's set, and a handshake is refused with `too_many_connections` while the user holds
//! `limits.max_connections_per_user` live leases.
//!
//! ```text
//!  handshake ──ConnStore::admit (lease, or refused)──▶ memory | Redis ZSET per user
//!  every `heartbeat_ttl`: Leases::renew (this node's live connections) ──┘      ▲
//!  disconnect ──ConnStore::release─────────────────────────────────────────────┘
//! ```
//!
//! A node that dies stops renewing, so its connections stop counting within one lease
//! ([`lease`]); so does a connection whose admission failed after its lease was taken.

pub mod redis;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use crate::error::StoreError;

/// How long a lease lasts without a renewal: three heartbeats, so one late renewal
/// never drops a live connection.
pub fn lease(heartbeat_ttl: Duration) -> Duration {
    heartbeat_ttl.saturating_mul(3)
}

/// Users whose leases are renewed in one round trip at most.
pub const RENEW_BATCH: usize = 1000;

/// A connection as the lease sets name it: its namespace and `node_id/socket_id`.
pub fn member(ns: &str, conn: &str) -> String {
    format!("{ns}|{conn}")
}

/// One connection's lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Held {
    pub tenant: String,
    pub user_id: String,
    /// [`member`].
    pub conn: String,
}

#[async_trait]
pub trait ConnStore: Send + Sync {
    /// Take a lease for `held.conn` unless its user already holds `max` live ones
    /// (`held.conn`'s own lease aside). True: taken.
    async fn admit(&self, held: &Held, max: usize, lease: Duration) -> Result<bool, StoreError>;
    async fn release(&self, held: &Held) -> Result<(), StoreError>;
    /// Extend these leases (those not released or lapsed).
    async fn renew(&self, held: &[Arc<Held>], lease: Duration) -> Result<(), StoreError>;
}

/// The decision, shared by the stores: with `live` leases of the user held now (and
/// `mine`: one of them is this connection's), may it take one?
pub fn admits(live: usize, mine: bool, max: usize) -> bool {
    mine || live < max
}

/// This node's live connections, whose leases it renews. One entry per admitted
/// connection (bounded by the node's connections), removed at its disconnect; it shares
/// the `Held` of the socket's extensions.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashSet<ByConn>>,
}

/// A lease in [`Leases`], found by its connection.
struct ByConn(Arc<Held>);

impl PartialEq for ByConn {
    fn eq(&self, other: &Self) -> bool {
        self.0.conn == other.0.conn
    }
}

impl Eq for ByConn {}

impl std::hash::Hash for ByConn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.conn.hash(state);
    }
}

impl std::borrow::Borrow<str> for ByConn {
    fn borrow(&self) -> &str {
        &self.0.conn
    }
}

// === impl Leases ===

impl Leases {
    pub fn hold(&self, held: Arc<Held>) {
        self.lock().insert(ByConn(held));
    }

    pub fn drop_conn(&self, conn: &str) {
        self.lock().remove(conn);
    }

    /// What to renew now.
    pub fn snapshot(&self) -> Vec<Arc<Held>> {
        self.lock().iter().map(|h| h.0.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ByConn>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Renew this node's leases every `heartbeat_ttl` (a lease lasts three), for as long as
/// the process runs.
pub fn spawn_renewal(store: Arc<dyn ConnStore>, leases: Arc<Leases>, heartbeat_ttl: Duration) {
    let task = async move {
        let mut tick = tokio::time::interval(heartbeat_ttl);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let held = leases.snapshot();
            if let Err(e) = store.renew(&held, lease(heartbeat_ttl)).await {
                tracing::warn!(error = %e, connections = held.len(), "connection leases not renewed");
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::info_span!("connection_leases"),
    ));
}

/// Embedded mode: the leases in this process.
#[derive(Default)]
pub struct MemoryConns {
    /// (tenant, user) → member → lease end.
    users: Mutex<HashMap<(String, String), HashMap<String, Instant>>>,
}

#[async_trait]
impl ConnStore for MemoryConns {
    async fn admit(&self, held: &Held, max: usize, lease: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let leases = users
            .entry((held.tenant.clone(), held.user_id.clone()))
            .or_default();
        leases.retain(|_, end| *end > now);
        if !admits(leases.len(), leases.contains_key(&held.conn), max) {
            return Ok(false);
        }
        leases.insert(held.conn.clone(), now + lease);
        Ok(true)
    }

    async fn release(&self, held: &Held) -> Result<(), StoreError> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let key = (held.tenant.clone(), held.user_id.clone());
        if let Some(leases) = users.get_mut(&key) {
            leases.remove(&held.conn);
            if leases.is_empty() {
                users.remove(&key);
            }
        }
        Ok(())
    }

    async fn renew(&self, held: &[Arc<Held>], lease: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for h in held {
            if let Some(end) = users
                .get_mut(&(h.tenant.clone(), h.user_id.clone()))
                .and_then(|l| l.get_mut(&h.conn))
            {
                *end = now + lease;
            }
        }
        // Lapsed leases (failed admissions) go here, so nothing grows without bound.
        users.retain(|_, leases| {
            leases.retain(|_, end| *end > now);
            !leases.is_empty()
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_held(user: &str, conn: &str) -> Held {
        Held {
            tenant: "acme".into(),
            user_id: user.into(),
            conn: member("/chat", conn),
        }
    }

    #[test]
    fn a_user_at_the_cap_is_refused_unless_it_is_the_same_connection() {
        assert!(admits(1, false, 2));
        assert!(!admits(2, false, 2));
        assert!(admits(2, true, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_cap_release_and_lapse_without_renewal() {
        let store = MemoryConns::default();
        let lease = Duration::from_secs(3);
        let (a, b, c) = (
            mk_held("u", "n/a"),
            mk_held("u", "n/b"),
            mk_held("u", "n/c"),
        );
        assert!(store.admit(&a, 2, lease).await.unwrap());
        assert!(store.admit(&b, 2, lease).await.unwrap());
        assert!(!store.admit(&c, 2, lease).await.unwrap(), "third refused");
        assert!(
            store.admit(&mk_held("v", "n/c"), 2, lease).await.unwrap(),
            "another user has their own count"
        );
        store.release(&a).await.unwrap();
        assert!(
            store.admit(&c, 2, lease).await.unwrap(),
            "room after a release"
        );
        // b is renewed, c is not: c lapses.
        tokio::time::advance(Duration::from_secs(2)).await;
        store.renew(&[Arc::new(b.clone())], lease).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.admit(&a, 2, lease).await.unwrap(), "c lapsed");
        assert!(!store.admit(&c, 2, lease).await.unwrap(), "b still counts");
    }
}
