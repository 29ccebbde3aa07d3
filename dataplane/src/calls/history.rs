//! Call history: every ended call, with its participants' join and leave times, its
//! duration, end reason and quality summary. MongoDB (`calls.mongodb_uri`, any server of
//! the MongoDB wire protocol) when configured, else a bounded list in memory.
//!
//! Documents live in `<calls.mongodb_database>.calls`, `_id` = call id (so a repeated
//! write of the same call is refused by the server, not duplicated), with the index
//! `{tenant: 1, participant_ids: 1, created_at: -1}` created at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use super::quality::Summary;
use super::{Call, EndReason, Kind, Media, PartState};
use crate::error::StoreError;

/// Largest and default `call:history` page.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 20;

/// How long start-up waits for the MongoDB server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one history read or write waits for a usable server.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub user_id: String,
    pub state: PartState,
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
}

/// One ended call, as stored and as `call:history` returns it (`_id` shown as `id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant: String,
    pub kind: Kind,
    pub media_type: Media,
    pub initiator_id: String,
    /// Every participant's id, for the per-user index.
    pub participant_ids: Vec<String>,
    pub participants: Vec<PartRecord>,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// From answer to end; 0 for calls never answered.
    pub duration_ms: i64,
    pub end_reason: EndReason,
    pub quality: Summary,
}

impl CallRecord {
    pub fn of(tenant: &str, call: &Call, quality: Summary) -> CallRecord {
        let ended_at = call.ended_at.unwrap_or(call.created_at);
        CallRecord {
            id: call.id.clone(),
            tenant: tenant.to_owned(),
            kind: call.kind,
            media_type: call.media_type,
            initiator_id: call.initiator_id.clone(),
            participant_ids: call
                .participants
                .iter()
                .map(|p| p.user_id.clone())
                .collect(),
            participants: call
                .participants
                .iter()
                .map(|p| PartRecord {
                    user_id: p.user_id.clone(),
                    state: p.state,
                    joined_at: p.joined_at,
                    left_at: p.left_at,
                })
                .collect(),
            created_at: call.created_at,
            answered_at: call.answered_at,
            ended_at,
            duration_ms: call.answered_at.map_or(0, |a| (ended_at - a).max(0)),
            end_reason: call.end_reason.unwrap_or(EndReason::Hangup),
            quality,
        }
    }

    /// The client's view: `id` rather than `_id`, no tenant.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            if let Some(id) = o.remove("_id") {
                o.insert("id".into(), id);
            }
            o.remove("tenant");
            o.remove("participant_ids");
        }
        v
    }
}

#[async_trait]
pub trait CallHistory: Send + Sync {
    /// Store an ended call (a second write of the same call is ignored).
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError>;
    /// The user's calls, newest first, created before `before` (ms) when given.
    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<CallRecord>, StoreError>;
}

// === impl MemoryCallHistory ===

/// Embedded mode: the newest `max` calls of each tenant.
pub struct MemoryCallHistory {
    max: usize,
    calls: Mutex<HashMap<String, VecDeque<CallRecord>>>,
}

impl MemoryCallHistory {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            calls: Mutex::default(),
        }
    }
}

#[async_trait]
impl CallHistory for MemoryCallHistory {
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        let mut all = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let q = all.entry(rec.tenant.clone()).or_default();
        if q.iter().any(|r| r.id == rec.id) {
            return Ok(());
        }
        q.push_back(rec.clone());
        while q.len() > self.max {
            q.pop_front();
        }
        Ok(())
    }

    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let all = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<CallRecord> = all
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|r| r.participant_ids.iter().any(|u| u == user_id))
            .filter(|r| before.is_none_or(|b| r.created_at < b))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        out.truncate(limit);
        Ok(out)
    }
}

// === impl MongoHistory ===

pub struct MongoHistory {
    calls: Collection<CallRecord>,
}

fn mongo_err(e: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(format!("mongodb: {e}"))
}

impl MongoHistory {
    /// Connect and create the index; the error names the config key.
    pub async fn connect(uri: &str, database: &str) -> anyhow::Result<MongoHistory> {
        let mut opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| anyhow::anyhow!("calls.mongodb_uri (SWITCHBOARD_MONGODB_URI): {e}"))?;
        // A write must not hold up the ack that ended the call for the driver's default 30 s.
        opts.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        let client = mongodb::Client::with_options(opts)
            .map_err(|e| anyhow::anyhow!("calls.mongodb_uri (SWITCHBOARD_MONGODB_URI): {e}"))?;
        let calls = client.database(database).collection::<CallRecord>("calls");
        let index = IndexModel::builder()
            .keys(doc! { "tenant": 1, "participant_ids": 1, "created_at": -1 })
            .options(
                IndexOptions::builder()
                    .name("tenant_user_created".to_owned())
                    .build(),
            )
            .build();
        tokio::time::timeout(CONNECT_TIMEOUT, calls.create_index(index))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "calls.mongodb_uri (SWITCHBOARD_MONGODB_URI): no answer from the server within {CONNECT_TIMEOUT:?}"
                )
            })?
            .map_err(|e| {
                anyhow::anyhow!("calls.mongodb_uri (SWITCHBOARD_MONGODB_URI): cannot create the call history index: {e}")
            })?;
        Ok(MongoHistory { calls })
    }
}

#[async_trait]
impl CallHistory for MongoHistory {
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        match self.calls.insert_one(rec).await {
            Ok(_) => Ok(()),
            // Duplicate key: this call was written already.
            Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000) => {
                Ok(())
            }
            Err(e) => Err(mongo_err(e)),
        }
    }

    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let mut filter = doc! { "tenant": tenant, "participant_ids": user_id };
        if let Some(b) = before {
            filter.insert("created_at", doc! { "$lt": b });
        }
        let cursor = self
            .calls
            .find(filter)
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(i64::try_from(limit).unwrap_or(MAX_PAGE as i64))
            .await
            .map_err(mongo_err)?;
        cursor.try_collect().await.map_err(mongo_err)
    }
}
