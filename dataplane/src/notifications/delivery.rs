//! Delivery status per notification and target (a push device or an e-mail address),
//! and the claims that keep a worker crash from sending twice.
//!
//! A target goes `claimed` (just before the provider call) → `sent` | `failed` |
//! `pruned`. A replayed notification (Kafka redelivery after a crash, or the same id
//! produced twice) skips every target that is already finished; a target still
//! `claimed` was being sent when its worker died and is sent again (the one window
//! where a provider may see a push twice: it accepted the request and the worker died
//! before writing `sent`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// How long delivery records and the de-duplication marker are kept.
pub const DELIVERY_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Claimed,
    Sent,
    Failed,
    Pruned,
}

impl State {
    pub fn finished(self) -> bool {
        matches!(self, State::Sent | State::Failed | State::Pruned)
    }
}

/// One target's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub user_id: String,
    /// `fcm`, `apns`, `email` or `in_app`.
    pub channel: String,
    /// Device token or e-mail address (empty for in-app).
    pub target: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    pub updated_at: i64,
}

impl Record {
    /// The field naming this target inside a notification's records.
    pub fn key(&self) -> String {
        target_key(&self.user_id, &self.channel, &self.target)
    }
}

pub fn target_key(user_id: &str, channel: &str, target: &str) -> String {
    format!("{user_id}|{channel}|{target}")
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had it: send.
    Fresh,
    /// A worker claimed it and never finished (it died mid-send): send again.
    Reclaimed,
    /// Already finished: do not send.
    Finished(State),
}

/// The whole notification's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    Queued,
    Done,
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Record that the notification was accepted (queued), unless already known.
    async fn accept(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Claim a target before sending to it.
    async fn claim(&self, tenant: &str, id: &str, r: &Record) -> Result<Claim, StoreError>;
    /// Write a target's final (or claimed) state.
    async fn put(&self, tenant: &str, id: &str, r: &Record) -> Result<(), StoreError>;
    /// Mark the notification done: a replay is skipped whole.
    async fn done(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Progress and every target's record; None when the id is unknown in this tenant.
    async fn status(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Progress, Vec<Record>)>, StoreError>;
}

// === impl MemoryDelivery ===

/// One notification's progress and records, by target key.
type Entry = (Progress, HashMap<String, Record>);

#[derive(Default)]
pub struct MemoryDelivery {
    /// (tenant, id) → (progress, target key → record).
    all: Mutex<HashMap<(String, String), Entry>>,
}

#[async_trait]
impl DeliveryStore for MemoryDelivery {
    async fn accept(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.entry((tenant.into(), id.into()))
            .or_insert_with(|| (Progress::Queued, HashMap::new()));
        Ok(())
    }

    async fn claim(&self, tenant: &str, id: &str, r: &Record) -> Result<Claim, StoreError> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let (_, recs) = all
            .entry((tenant.into(), id.into()))
            .or_insert_with(|| (Progress::Queued, HashMap::new()));
        let claimed = Record {
            state: State::Claimed,
            ..r.clone()
        };
        Ok(match recs.insert(r.key(), claimed) {
            None => Claim::Fresh,
            Some(prev) if prev.state.finished() => {
                recs.insert(r.key(), prev.clone());
                Claim::Finished(prev.state)
            }
            Some(_) => Claim::Reclaimed,
        })
    }

    async fn put(&self, tenant: &str, id: &str, r: &Record) -> Result<(), StoreError> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let (_, recs) = all
            .entry((tenant.into(), id.into()))
            .or_insert_with(|| (Progress::Queued, HashMap::new()));
        recs.insert(r.key(), r.clone());
        Ok(())
    }

    async fn done(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.entry((tenant.into(), id.into()))
            .or_insert_with(|| (Progress::Queued, HashMap::new()))
            .0 = Progress::Done;
        Ok(())
    }

    async fn status(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Progress, Vec<Record>)>, StoreError> {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        Ok(all.get(&(tenant.into(), id.into())).map(|(p, recs)| {
            let mut v: Vec<Record> = recs.values().cloned().collect();
            v.sort_by_key(Record::key);
            (p.clone(), v)
        }))
    }
}
