//! Revocation: by token id (`jti`), by login session (`sid`), or every token of a user
//! issued up to a moment. Entries expire after their TTL (the longest a revoked token
//! could still be valid).

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Identity;
use crate::error::StoreError;

/// What to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Jti(String),
    Sid(String),
    /// Every token of this user issued at or before `before` (seconds since the epoch).
    User {
        user_id: String,
        before: u64,
    },
}

#[async_trait]
pub trait RevocationStore: Send + Sync {
    async fn revoke(&self, tenant: &str, target: &Target, ttl: Duration) -> Result<(), StoreError>;
    /// The reason an identity is revoked, if it is.
    async fn check(&self, id: &Identity) -> Result<Option<&'static str>, StoreError>;
}

/// The decision, shared by the stores: given what is recorded for this identity's jti,
/// sid and user, is it revoked?
pub fn decide(
    id: &Identity,
    jti: bool,
    sid: bool,
    user_before: Option<u64>,
) -> Option<&'static str> {
    if jti {
        return Some("this token was revoked");
    }
    if sid {
        return Some("this login session was revoked");
    }
    match (user_before, id.iat) {
        (Some(before), Some(iat)) if iat <= before => {
            Some("tokens of this user issued before the revocation are revoked")
        }
        // Without iat we cannot tell when it was issued: refuse while the entry lives.
        (Some(_), None) => Some("tokens of this user are revoked"),
        _ => None,
    }
}

#[derive(Default)]
pub struct MemoryRevocations {
    /// (tenant, "jti:x" | "sid:x" | "user:x") → (value, expires)
    entries: Mutex<HashMap<(String, String), (u64, Instant)>>,
}

fn entry_key(target: &Target) -> (String, u64) {
    match target {
        Target::Jti(j) => (format!("jti:{j}"), 1),
        Target::Sid(s) => (format!("sid:{s}"), 1),
        Target::User { user_id, before } => (format!("user:{user_id}"), *before),
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocations {
    async fn revoke(&self, tenant: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        e.retain(|_, (_, exp)| *exp > now);
        let (key, value) = entry_key(target);
        // Like the Redis store: the widest revocation wins (largest `before`, longest TTL).
        let entry = e.entry((tenant.into(), key)).or_insert((value, now + ttl));
        entry.0 = entry.0.max(value);
        entry.1 = entry.1.max(now + ttl);
        Ok(())
    }

    async fn check(&self, id: &Identity) -> Result<Option<&'static str>, StoreError> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let get = |k: String| {
            e.get(&(id.tenant.clone(), k))
                .filter(|(_, exp)| *exp > now)
                .map(|(v, _)| *v)
        };
        let jti = id
            .jti
            .as_ref()
            .is_some_and(|j| get(format!("jti:{j}")).is_some());
        let sid = id
            .sid
            .as_ref()
            .is_some_and(|s| get(format!("sid:{s}")).is_some());
        Ok(decide(id, jti, sid, get(format!("user:{}", id.user_id))))
    }
}
