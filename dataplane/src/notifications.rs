//! Notifications: the message producers send (Kafka topic `notifications` or
//! `POST /api/v1/notifications`), its validation, and the in-app inbox each user lists
//! and marks read on the `/notifications` namespace.
//!
//! ```text
//!  producer ─▶ Kafka `notifications` ─▶ worker ─┐           (or, embedded: HTTP API ─┐)
//!                                               ▼                                    ▼
//!                         dispatch: de-dup by id → preferences::decide per user
//!                           ├─ in-app: inbox (bounded) + `notification` event to the user's
//!                           │          sockets on every node (Socket.IO Redis adapter)
//!                           ├─ push:   push::Sender per device (FCM v1, APNs), claim → sent
//!                           └─ email:  email::Mailer (SMTP)
//!                         delivery status per device ─▶ GET /api/v1/tenants/{t}/notifications/{id}
//! ```

pub mod api;
pub mod delivery;
pub mod dispatch;
pub mod events;
pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::ids;
use crate::preferences::{Kind, Priority};

/// The `/notifications` namespace.
pub const NOTIFICATIONS: &str = "/notifications";
/// Most recipients of one notification.
pub const MAX_RECIPIENTS: usize = 1000;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 4096;
/// Largest `data` object, in bytes of JSON.
pub const MAX_DATA_BYTES: usize = 4096;
/// Most ids in one `notification:mark-read`.
pub const MAX_MARK_READ: usize = 500;
/// `data` keys FCM refuses (or that the sender sets itself): refused at intake so one
/// notification cannot fail on every Android device.
pub const RESERVED_DATA_KEYS: &[&str] = &[
    "from",
    "notification",
    "message_type",
    "collapse_key",
    "notification_id",
    "type",
];
/// `data` key prefixes FCM reserves.
pub const RESERVED_DATA_PREFIXES: &[&str] = &["google.", "gcm."];
/// Oldest accepted `created_at`, relative to acceptance.
pub const MAX_CREATED_AGE_MS: i64 = 30 * 24 * 3600 * 1000;
/// Largest and default `notification:list` page.
pub const MAX_LIST: usize = 100;
pub const DEFAULT_LIST: usize = 50;

/// A notification as producers send it (Kafka message value, HTTP body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Idempotency key: the same id is delivered once.
    pub id: String,
    pub tenant: String,
    pub user_ids: Vec<String>,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub priority: Priority,
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub data: Map<String, Value>,
    /// ms since epoch; set when accepted if the producer did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

impl Notification {
    /// Parse and check a producer's message; the error says what is wrong (it becomes the
    /// dead-letter reason or the HTTP 400 message).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let n: Notification =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid notification JSON: {e}"))?;
        n.validate()?;
        Ok(n)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !ids::valid_id(&self.id) {
            return Err("id must be 1-128 characters of A-Z a-z 0-9 - _ . @ +".into());
        }
        if !ids::valid_tenant(&self.tenant) {
            return Err("tenant must be 1-64 characters of A-Z a-z 0-9 - _ .".into());
        }
        if self.user_ids.is_empty() || self.user_ids.len() > MAX_RECIPIENTS {
            return Err(format!("user_ids must hold 1 to {MAX_RECIPIENTS} ids"));
        }
        if let Some(bad) = self.user_ids.iter().find(|u| !ids::valid_id(u)) {
            return Err(format!("invalid user id {bad:?}"));
        }
        if self.title.trim().is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(format!(
                "title must be 1-{MAX_TITLE_CHARS} characters and not blank"
            ));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(format!("body is longer than {MAX_BODY_BYTES} bytes"));
        }
        if let Some(k) = self.data.keys().find(|k| {
            RESERVED_DATA_KEYS.contains(&k.as_str())
                || RESERVED_DATA_PREFIXES.iter().any(|p| k.starts_with(p))
        }) {
            return Err(format!(
                "data key {k:?} is reserved (FCM: from, notification, message_type, collapse_key, google.*, gcm.*; Switchboard: notification_id, type)"
            ));
        }
        if serde_json::to_vec(&self.data).map_or(usize::MAX, |v| v.len()) > MAX_DATA_BYTES {
            return Err(format!(
                "data is larger than {MAX_DATA_BYTES} bytes of JSON"
            ));
        }
        Ok(())
    }

    /// The producer's `created_at` kept within [now − [`MAX_CREATED_AGE_MS`], now] (a
    /// future one would pin the entry at the top of every inbox); now when absent.
    pub fn created_at_clamped(&self, now: i64) -> i64 {
        self.created_at
            .unwrap_or(now)
            .clamp(now.saturating_sub(MAX_CREATED_AGE_MS), now)
    }

    /// Whether it is too old to deliver at `now` (ms): its age counts from `created_at`,
    /// or without one from `produced_at` (the Kafka timestamp); with neither it is not.
    pub fn is_stale(&self, produced_at: Option<i64>, now: i64, max_age: Duration) -> bool {
        let max = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        self.created_at
            .or(produced_at)
            .is_some_and(|at| now.saturating_sub(at) > max)
    }

    /// The in-app entry, as the `notification` event and `notification:list` carry it.
    pub fn entry(&self, created_at: i64) -> Entry {
        Entry {
            id: self.id.clone(),
            kind: self.kind,
            priority: self.priority,
            title: self.title.clone(),
            body: self.body.clone(),
            data: self.data.clone(),
            created_at,
            read: false,
        }
    }
}

/// One in-app notification of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "InAppNotification")]
pub struct Entry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub priority: Priority,
    pub title: String,
    pub body: String,
    pub data: Map<String, Value>,
    pub created_at: i64,
    pub read: bool,
}

/// In-app notifications per user, newest kept, at most `max` each.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Add an entry unless one with its id is there; true when added. Past `max`
    /// entries the oldest go.
    async fn add(
        &self,
        tenant: &str,
        user_id: &str,
        e: &Entry,
        max: usize,
    ) -> Result<bool, StoreError>;
    /// Newest first.
    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        unread_only: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// Mark entries read; unknown ids are ignored. Returns how many changed.
    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        ids: &[String],
    ) -> Result<usize, StoreError>;
}

// === impl MemoryInbox ===

#[derive(Default)]
pub struct MemoryInbox {
    /// (tenant, user) → entries, oldest first.
    inbox: Mutex<HashMap<(String, String), Vec<Entry>>>,
}

#[async_trait]
impl InboxStore for MemoryInbox {
    async fn add(
        &self,
        tenant: &str,
        user_id: &str,
        e: &Entry,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut all = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let v = all.entry((tenant.into(), user_id.into())).or_default();
        if v.iter().any(|x| x.id == e.id) {
            return Ok(false);
        }
        let at = v.partition_point(|x| (x.created_at, &x.id) <= (e.created_at, &e.id));
        v.insert(at, e.clone());
        if v.len() > max {
            let drop = v.len() - max;
            v.drain(..drop);
        }
        Ok(true)
    }

    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        unread_only: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let all = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        Ok(all
            .get(&(tenant.into(), user_id.into()))
            .map(|v| {
                v.iter()
                    .rev()
                    .filter(|e| !unread_only || !e.read)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        ids: &[String],
    ) -> Result<usize, StoreError> {
        let mut all = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = all.get_mut(&(tenant.into(), user_id.into())) else {
            return Ok(0);
        };
        let mut n = 0;
        for e in v.iter_mut().filter(|e| !e.read && ids.contains(&e.id)) {
            e.read = true;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn staleness_counts_from_created_at_else_from_the_kafka_timestamp() {
        let mut n = Notification::parse(mk_json().to_string().as_bytes()).unwrap();
        let day = Duration::from_secs(86_400);
        let now = 10 * 86_400_000;
        assert!(!n.is_stale(None, now, day), "no time known: delivered");
        assert!(
            !n.is_stale(Some(now - 86_400_000), now, day),
            "exactly max_age"
        );
        assert!(n.is_stale(Some(now - 86_400_001), now, day));
        n.created_at = Some(now - 1000);
        assert!(
            !n.is_stale(Some(0), now, day),
            "created_at wins over an old Kafka timestamp"
        );
        n.created_at = Some(now - 2 * 86_400_000);
        assert!(n.is_stale(Some(now), now, day));
    }

    #[test]
    fn created_at_is_clamped_to_the_past_month() {
        let mut n = Notification::parse(mk_json().to_string().as_bytes()).unwrap();
        let now = 100 * MAX_CREATED_AGE_MS;
        assert_eq!(n.created_at_clamped(now), now);
        n.created_at = Some(now + 1_000_000);
        assert_eq!(n.created_at_clamped(now), now, "future");
        n.created_at = Some(0);
        assert_eq!(n.created_at_clamped(now), now - MAX_CREATED_AGE_MS);
        n.created_at = Some(now - 5);
        assert_eq!(n.created_at_clamped(now), now - 5);
    }

    fn mk_json() -> Value {
        json!({"id": "n1", "tenant": "acme", "user_ids": ["alice"], "type": "message",
               "priority": "high", "title": "Hi", "body": "there", "data": {"room": "r1"}})
    }

    #[test]
    fn valid_messages_parse_and_bad_ones_say_why() {
        let n = Notification::parse(mk_json().to_string().as_bytes()).unwrap();
        assert_eq!((n.kind, n.priority), (Kind::Message, Priority::High));
        let cases: [(&str, Value, &str); 7] = [
            ("not json", json!("x"), "invalid notification JSON"),
            (
                "bad type",
                json!({"type": "sms"}),
                "invalid notification JSON",
            ),
            ("no users", json!({"user_ids": []}), "user_ids"),
            ("bad user", json!({"user_ids": ["a:b"]}), "invalid user id"),
            ("bad tenant", json!({"tenant": "{x}"}), "tenant"),
            ("blank title", json!({"title": "  "}), "title"),
            ("unknown field", json!({"colour": "red"}), "unknown field"),
        ];
        for (what, patch, want) in cases {
            let mut v = mk_json();
            match patch {
                Value::Object(p) => p.into_iter().for_each(|(k, x)| {
                    v[k] = x;
                }),
                other => v = other,
            }
            let e = Notification::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(e.contains(want), "{what}: {e}");
        }
        for k in ["from", "google.x", "gcm.y", "notification_id", "type"] {
            let mut v = mk_json();
            v["data"] = json!({ k: "x" });
            let e = Notification::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(e.contains("reserved"), "{k}: {e}");
        }
        let mut big = mk_json();
        big["data"] = json!({"k": "x".repeat(MAX_DATA_BYTES)});
        assert!(
            Notification::parse(big.to_string().as_bytes())
                .unwrap_err()
                .contains("data")
        );
    }
}
