//! Which users have a live connection, on any node (the `online` flag of `room:members`).
//! Entries are `node_id/socket_id` so a node's entries can be told apart, and each node's
//! entries are indexed: when a node dies without a goodbye, the presence dead-node sweep
//! ([`crate::presence::tracker::Tracker::reap`]) removes its entries with
//! [`OnlineStore::sweep_node`], as it does the node's presence devices.

pub mod redis;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;

#[async_trait]
pub trait OnlineStore: Send + Sync {
    async fn connect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError>;
    async fn disconnect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError>;
    /// One flag per user, in order.
    async fn online(&self, tenant: &str, user_ids: &[String]) -> Result<Vec<bool>, StoreError>;
    /// Remove every entry `node` holds (it died, or this is its earlier life); returns
    /// how many went.
    async fn sweep_node(&self, node: &str) -> Result<usize, StoreError>;
}

/// The node of a connection id `node_id/socket_id`.
pub fn node_of(conn: &str) -> &str {
    conn.rsplit_once('/').map_or("", |(n, _)| n)
}

#[derive(Default)]
pub struct MemoryOnline {
    conns: Mutex<HashMap<(String, String), HashSet<String>>>,
}

#[async_trait]
impl OnlineStore for MemoryOnline {
    async fn connect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.entry((tenant.into(), user_id.into()))
            .or_default()
            .insert(conn.into());
        Ok(())
    }

    async fn disconnect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), user_id.to_owned());
        if let Some(set) = c.get_mut(&key) {
            set.remove(conn);
            if set.is_empty() {
                c.remove(&key);
            }
        }
        Ok(())
    }

    async fn online(&self, tenant: &str, user_ids: &[String]) -> Result<Vec<bool>, StoreError> {
        let c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        Ok(user_ids
            .iter()
            .map(|u| c.contains_key(&(tenant.into(), u.clone())))
            .collect())
    }

    async fn sweep_node(&self, node: &str) -> Result<usize, StoreError> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut swept = 0;
        c.retain(|_, set| {
            let before = set.len();
            set.retain(|conn| node_of(conn) != node);
            swept += before - set.len();
            !set.is_empty()
        });
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sweep_takes_only_that_nodes_entries() {
        let m = MemoryOnline::default();
        m.connect("t", "a", "n1/s1").await.unwrap();
        m.connect("t", "b", "n1/s2").await.unwrap();
        m.connect("t", "b", "n2/s3").await.unwrap();
        m.connect("t2", "a", "n2/s4").await.unwrap();
        assert_eq!(m.sweep_node("n1").await.unwrap(), 2);
        let users = ["a".to_owned(), "b".to_owned()];
        assert_eq!(m.online("t", &users).await.unwrap(), vec![false, true]);
        assert_eq!(m.online("t2", &users).await.unwrap(), vec![true, false]);
        assert_eq!(node_of("pod-1/abc"), "pod-1");
    }
}
