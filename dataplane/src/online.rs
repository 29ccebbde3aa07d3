//! Which users have a live connection, on any node (the `online` flag of `room:members`).
//! Entries are `node_id/socket_id` so a node's entries can be told apart.

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
}
