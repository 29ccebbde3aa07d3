//! Call history: every ended call, with its participants' join and leave times, its
//! duration, end reason and quality summary. MongoDB (`calls.mongodb_uri`, any server of
//! the MongoDB wire protocol) when configured, else a bounded list in memory.
//!
//! Documents live in `<calls.mongodb_database>.calls`, `_id` = call id (so a repeated
//! write of the same call is refused by the server, not duplicated), with the index
//! `{tenant: 1, participant_ids: 1, created_at: -1}` created at start.
//!
//! Both keep a call for `calls.history_max_age` after its `created_at`: older calls are
//! never listed, and they are deleted as their participants' next calls are recorded
//! (MongoDB: one `deleteMany` on the index's `tenant, participant_ids` prefix; memory: the
//! tenant's list). So what a user's history holds is bounded by how many calls they can
//! make in that time.

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
use crate::clock::now_ms;
use crate::error::StoreError;

/// Largest and default `call:history` page.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 20;

/// How long start-up waits for the MongoDB server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one history read or write waits for a usable server.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PartRecord {
    pub user_id: String,
    pub state: PartState,
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
}

/// One ended call, as stored and as `call:history` returns it (`_id` shown as `id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
}

/// One ended call as `call:history` returns it: the stored record without the tenant
/// and the index field, `_id` shown as `id`.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    pub id: String,
    pub kind: Kind,
    pub media_type: Media,
    pub initiator_id: String,
    pub participants: Vec<PartRecord>,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// From answer to end; 0 for calls never answered.
    pub duration_ms: i64,
    pub end_reason: EndReason,
    pub quality: Summary,
}

impl From<&CallRecord> for HistoryEntry {
    fn from(r: &CallRecord) -> Self {
        Self {
            id: r.id.clone(),
            kind: r.kind,
            media_type: r.media_type,
            initiator_id: r.initiator_id.clone(),
            participants: r.participants.clone(),
            created_at: r.created_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            duration_ms: r.duration_ms,
            end_reason: r.end_reason,
            quality: r.quality,
        }
    }
}

/// Where a `call:history` page starts: calls older than `created_at`, or as old and with
/// a smaller id (the id breaks ties, so calls created in the same millisecond are not
/// skipped between pages). Without `id`, only calls created strictly before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: Option<String>,
}

impl Cursor {
    /// Does a record sort after (is older than) this cursor?
    pub fn admits(&self, created_at: i64, id: &str) -> bool {
        created_at < self.created_at
            || (created_at == self.created_at && self.id.as_deref().is_some_and(|c| id < c))
    }
}

#[async_trait]
pub trait CallHistory: Send + Sync {
    /// Store an ended call (a second write of the same call is ignored).
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError>;
    /// The user's calls, newest first (ties by id, descending), after `before` when given.
    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<&Cursor>,
    ) -> Result<Vec<CallRecord>, StoreError>;
}

// === impl MemoryCallHistory ===

/// Calls kept in memory over all tenants together, oldest dropped first.
pub const MAX_MEMORY_HISTORY_TOTAL: usize = 100_000;

/// Embedded mode: the newest `max` calls of each tenant, and the newest `total` over all
/// tenants (so many tenants cannot grow it without bound).
pub struct MemoryCallHistory {
    max: usize,
    total: usize,
    /// `calls.history_max_age` in ms; `None`: kept until the count bounds drop them.
    max_age_ms: Option<i64>,
    calls: Mutex<MemHistory>,
}

/// The oldest `created_at` still kept at `now`.
fn cutoff(max_age_ms: Option<i64>, now: i64) -> Option<i64> {
    max_age_ms.map(|a| now.saturating_sub(a))
}

#[derive(Default)]
struct MemHistory {
    by_tenant: HashMap<String, VecDeque<CallRecord>>,
    /// Every kept record's (tenant, id), oldest first; entries whose record already went
    /// (per-tenant bound) are skipped when popped.
    order: VecDeque<(String, String)>,
    len: usize,
}

impl MemoryCallHistory {
    pub fn new(max: usize) -> Self {
        Self::with_total(max, MAX_MEMORY_HISTORY_TOTAL)
    }

    pub fn with_total(max: usize, total: usize) -> Self {
        Self {
            max,
            total: total.max(1),
            max_age_ms: None,
            calls: Mutex::default(),
        }
    }

    /// Keep calls for `max_age_ms` after they were created (`calls.history_max_age`).
    pub fn with_max_age(self, max_age_ms: Option<i64>) -> Self {
        Self { max_age_ms, ..self }
    }
}

#[async_trait]
impl CallHistory for MemoryCallHistory {
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        let mut guard = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let m = &mut *guard;
        let q = m.by_tenant.entry(rec.tenant.clone()).or_default();
        if q.iter().any(|r| r.id == rec.id) {
            return Ok(());
        }
        if let Some(cutoff) = cutoff(self.max_age_ms, now_ms()) {
            let before = q.len();
            q.retain(|r| r.created_at >= cutoff);
            m.len -= before - q.len();
        }
        q.push_back(rec.clone());
        m.len += 1;
        while q.len() > self.max {
            q.pop_front();
            m.len -= 1;
        }
        m.order.push_back((rec.tenant.clone(), rec.id.clone()));
        while m.len > self.total {
            let Some((t, id)) = m.order.pop_front() else {
                break;
            };
            if let Some(q) = m.by_tenant.get_mut(&t)
                && q.front().is_some_and(|r| r.id == id)
            {
                q.pop_front();
                m.len -= 1;
                if q.is_empty() {
                    m.by_tenant.remove(&t);
                }
            }
        }
        // Entries of records the per-tenant bound dropped are stale; keep the index small.
        if m.order.len() > 2 * self.total.max(m.len) {
            let live: std::collections::HashSet<(String, String)> = m
                .by_tenant
                .iter()
                .flat_map(|(t, q)| q.iter().map(move |r| (t.clone(), r.id.clone())))
                .collect();
            m.order.retain(|k| live.contains(k));
        }
        Ok(())
    }

    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<&Cursor>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let now = now_ms();
        let all = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<CallRecord> = all
            .by_tenant
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|r| r.participant_ids.iter().any(|u| u == user_id))
            .filter(|r| before.is_none_or(|b| b.admits(r.created_at, &r.id)))
            .filter(|r| cutoff(self.max_age_ms, now).is_none_or(|c| r.created_at >= c))
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
    /// `calls.history_max_age` in ms; `None`: kept for ever.
    max_age_ms: Option<i64>,
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
        Ok(MongoHistory {
            calls,
            max_age_ms: None,
        })
    }

    /// Keep calls for `max_age_ms` after they were created (`calls.history_max_age`).
    pub fn with_max_age(self, max_age_ms: Option<i64>) -> Self {
        Self { max_age_ms, ..self }
    }

    /// Delete the participants' calls created before `cutoff`; returns how many went.
    async fn prune(&self, rec: &CallRecord, cutoff: i64) -> Result<u64, StoreError> {
        let gone = self
            .calls
            .delete_many(doc! {
                "tenant": &rec.tenant,
                "participant_ids": { "$in": &rec.participant_ids },
                "created_at": { "$lt": cutoff },
            })
            .await
            .map_err(mongo_err)?;
        Ok(gone.deleted_count)
    }
}

#[async_trait]
impl CallHistory for MongoHistory {
    async fn record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        match self.calls.insert_one(rec).await {
            Ok(_) => {}
            // Duplicate key: this call was written already.
            Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000) =>
                {}
            Err(e) => return Err(mongo_err(e)),
        }
        if let Some(cutoff) = cutoff(self.max_age_ms, now_ms()) {
            // The record is in; a failed prune is retried with the next call.
            match self.prune(rec, cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(tenant = %rec.tenant, deleted = n, "expired call history deleted")
                }
                Err(e) => tracing::warn!(error = %e, "expired call history not deleted"),
            }
        }
        Ok(())
    }

    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
        before: Option<&Cursor>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let mut filter = doc! { "tenant": tenant, "participant_ids": user_id };
        match before {
            Some(Cursor {
                created_at,
                id: Some(id),
            }) => {
                filter.insert(
                    "$or",
                    vec![
                        doc! { "created_at": { "$lt": created_at } },
                        doc! { "created_at": created_at, "_id": { "$lt": id } },
                    ],
                );
            }
            Some(Cursor {
                created_at,
                id: None,
            }) => {
                filter.insert("created_at", doc! { "$lt": created_at });
            }
            None => {}
        }
        if let Some(cutoff) = cutoff(self.max_age_ms, now_ms()) {
            filter.insert("$and", vec![doc! { "created_at": { "$gte": cutoff } }]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::Call;

    fn rec(tenant: &str, id: &str, created_at: i64) -> CallRecord {
        let c = Call::direct(id.into(), "alice", "bob", Media::Audio, created_at).busy(created_at);
        CallRecord::of(tenant, &c, Summary::default())
    }

    #[tokio::test]
    async fn pages_do_not_skip_calls_created_in_the_same_millisecond() {
        let h = MemoryCallHistory::new(100);
        for id in ["c_a", "c_b", "c_c", "c_d", "c_e"] {
            h.record(&rec("t", id, 100)).await.unwrap();
        }
        h.record(&rec("t", "c_z", 99)).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = h.list("t", "alice", 2, cursor.as_ref()).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = Some(Cursor {
                created_at: last.created_at,
                id: Some(last.id.clone()),
            });
            seen.extend(page.iter().map(|r| r.id.clone()));
        }
        assert_eq!(seen, ["c_e", "c_d", "c_c", "c_b", "c_a", "c_z"]);
        // The earlier form (created_at only) still means "created strictly before".
        let old = Cursor {
            created_at: 100,
            id: None,
        };
        let page = h.list("t", "alice", 10, Some(&old)).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, "c_z");
    }

    #[tokio::test]
    async fn memory_history_is_bounded_over_all_tenants_too() {
        let h = MemoryCallHistory::with_total(2, 3);
        for i in 0..10 {
            h.record(&rec(&format!("t{i}"), &format!("c{i}"), i))
                .await
                .unwrap();
        }
        let kept: usize = {
            let m = h.calls.lock().unwrap();
            m.by_tenant.values().map(VecDeque::len).sum()
        };
        assert_eq!(kept, 3);
        for i in 0..7 {
            assert!(
                h.list(&format!("t{i}"), "alice", 10, None)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        for i in 7..10 {
            assert_eq!(
                h.list(&format!("t{i}"), "alice", 10, None)
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
        // Per tenant, still the newest `max`.
        for i in 0..5 {
            h.record(&rec("big", &format!("b{i}"), 100 + i))
                .await
                .unwrap();
        }
        assert_eq!(h.list("big", "alice", 10, None).await.unwrap().len(), 2);
        assert!(h.calls.lock().unwrap().order.len() <= 2 * 3 + 1);
    }
}
