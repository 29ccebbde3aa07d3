//! Delivery status per notification and target (a push device or an e-mail address),
//! and the claims that keep a worker crash from sending twice.
//!
//! Two runs of one id never send at once:
//!
//! - **Run lock.** A run first takes the notification's lock (`SET NX PX`, owner = a
//!   random run id, [`RUN_LOCK_TTL`], renewed every third of it while the run lasts,
//!   released at its end). A second run (a retried POST in embedded mode, a Kafka
//!   rebalance, the same id produced under another key) finds it held and is `Busy`: it
//!   does nothing and is retried later, when it finds the targets finished.
//! - **Claims.** A target goes `claimed` (just before the provider call, with the run's
//!   `owner` and a `lease_until` long enough for every attempt: max attempts × (attempt
//!   timeout + longest back-off)) → `sent` | `failed` | `pruned`. A claim of another
//!   owner whose lease is alive and who still holds the run lock is `Busy`; a claim whose
//!   owner died (its run lock lapsed) is taken over at once.
//!
//! A replayed notification skips every finished target; a target still `claimed` by a
//! dead run is sent again (the one window where a provider may see a push twice: it
//! accepted the request and the worker died before writing `sent`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// How long delivery records and the de-duplication marker are kept.
pub const DELIVERY_TTL_SECS: i64 = 7 * 24 * 3600;
/// Life of a run lock without renewal: how soon a dead run's notification is taken over.
pub const RUN_LOCK_TTL: Duration = Duration::from_secs(15);
/// Notifications [`MemoryDelivery`] keeps (the oldest go first; each also expires after
/// [`DELIVERY_TTL_SECS`]).
pub const MAX_MEMORY_DELIVERIES: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The run that claimed it (claimed records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Until when (ms) the claim is its owner's (claimed records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
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
    /// Another live run holds it: do not send now.
    Busy,
}

/// The whole notification's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    Queued,
    Done,
    /// Given up (embedded mode: the stores kept failing).
    Failed,
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Record that the notification was accepted (queued), unless already known.
    async fn accept(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Claim a target for `r.owner` until `r.lease_until` before sending to it; `now` in ms.
    async fn claim(
        &self,
        tenant: &str,
        id: &str,
        r: &Record,
        now: i64,
    ) -> Result<Claim, StoreError>;
    /// Write a target's final (or claimed) state.
    async fn put(&self, tenant: &str, id: &str, r: &Record) -> Result<(), StoreError>;
    /// Mark the notification done: a replay is skipped whole.
    async fn done(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Mark it failed (given up), unless it is done.
    async fn fail(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Its progress alone (the duplicate check); None when unknown.
    async fn progress(&self, tenant: &str, id: &str) -> Result<Option<Progress>, StoreError>;
    /// Take the run lock for `owner` for `ttl`; false when another owner holds it.
    async fn lock(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Extend `owner`'s lock; false when it is no longer theirs.
    async fn renew(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Release `owner`'s lock (another owner's is left alone).
    async fn unlock(&self, tenant: &str, id: &str, owner: &str) -> Result<(), StoreError>;
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

/// (tenant, id).
type Key = (String, String);

#[derive(Default)]
struct Memory {
    all: HashMap<Key, Entry>,
    /// Keys of `all`, oldest first, with when they were created (eviction order).
    order: VecDeque<(Key, Instant)>,
    /// Run locks: (tenant, id) → (owner, expiry).
    locks: HashMap<Key, (String, Instant)>,
}

impl Memory {
    /// The entry of `key`, created (and the oldest or expired ones evicted) when absent.
    fn entry(&mut self, key: Key) -> &mut Entry {
        if !self.all.contains_key(&key) {
            let ttl = Duration::from_secs(DELIVERY_TTL_SECS.unsigned_abs());
            while let Some((old, at)) = self.order.front() {
                if self.order.len() >= MAX_MEMORY_DELIVERIES || at.elapsed() > ttl {
                    self.all.remove(old);
                    self.order.pop_front();
                } else {
                    break;
                }
            }
            self.order.push_back((key.clone(), Instant::now()));
        }
        self.all
            .entry(key)
            .or_insert_with(|| (Progress::Queued, HashMap::new()))
    }

    fn lock_holder(&mut self, key: &Key) -> Option<&str> {
        if self
            .locks
            .get(key)
            .is_some_and(|(_, exp)| *exp <= Instant::now())
        {
            self.locks.remove(key);
        }
        self.locks.get(key).map(|(o, _)| o.as_str())
    }
}

/// In-process delivery records (embedded mode), bounded by [`MAX_MEMORY_DELIVERIES`].
#[derive(Default)]
pub struct MemoryDelivery {
    inner: Mutex<Memory>,
}

impl MemoryDelivery {
    fn inner(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many notifications are kept (tests check the bound).
    pub fn len(&self) -> usize {
        self.inner().all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Is `prev` a claim another live run holds at `now`?
fn busy(prev: &Record, owner: Option<&str>, now: i64, holder: Option<&str>) -> bool {
    prev.state == State::Claimed
        && prev.owner.is_some()
        && prev.owner.as_deref() != owner
        && prev.lease_until.is_some_and(|l| l > now)
        && holder.is_some()
        && holder == prev.owner.as_deref()
}

#[async_trait]
impl DeliveryStore for MemoryDelivery {
    async fn accept(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.inner().entry((tenant.into(), id.into()));
        Ok(())
    }

    async fn claim(
        &self,
        tenant: &str,
        id: &str,
        r: &Record,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let mut m = self.inner();
        let key: Key = (tenant.into(), id.into());
        let holder = m.lock_holder(&key).map(str::to_owned);
        let (_, recs) = m.entry(key);
        if let Some(prev) = recs.get(&r.key()) {
            if prev.state.finished() {
                return Ok(Claim::Finished(prev.state));
            }
            if busy(prev, r.owner.as_deref(), now, holder.as_deref()) {
                return Ok(Claim::Busy);
            }
        }
        let claimed = Record {
            state: State::Claimed,
            ..r.clone()
        };
        Ok(match recs.insert(r.key(), claimed) {
            None => Claim::Fresh,
            Some(_) => Claim::Reclaimed,
        })
    }

    async fn put(&self, tenant: &str, id: &str, r: &Record) -> Result<(), StoreError> {
        let mut m = self.inner();
        m.entry((tenant.into(), id.into()))
            .1
            .insert(r.key(), r.clone());
        Ok(())
    }

    async fn done(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.inner().entry((tenant.into(), id.into())).0 = Progress::Done;
        Ok(())
    }

    async fn fail(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut m = self.inner();
        let e = m.entry((tenant.into(), id.into()));
        if e.0 != Progress::Done {
            e.0 = Progress::Failed;
        }
        Ok(())
    }

    async fn progress(&self, tenant: &str, id: &str) -> Result<Option<Progress>, StoreError> {
        Ok(self
            .inner()
            .all
            .get(&(tenant.into(), id.into()))
            .map(|(p, _)| p.clone()))
    }

    async fn lock(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut m = self.inner();
        let key: Key = (tenant.into(), id.into());
        if m.lock_holder(&key).is_some() {
            return Ok(false);
        }
        m.locks.insert(key, (owner.into(), Instant::now() + ttl));
        Ok(true)
    }

    async fn renew(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut m = self.inner();
        let key: Key = (tenant.into(), id.into());
        if m.lock_holder(&key) != Some(owner) {
            return Ok(false);
        }
        m.locks.insert(key, (owner.into(), Instant::now() + ttl));
        Ok(true)
    }

    async fn unlock(&self, tenant: &str, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut m = self.inner();
        let key: Key = (tenant.into(), id.into());
        if m.lock_holder(&key) == Some(owner) {
            m.locks.remove(&key);
        }
        Ok(())
    }

    async fn status(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Progress, Vec<Record>)>, StoreError> {
        let m = self.inner();
        Ok(m.all.get(&(tenant.into(), id.into())).map(|(p, recs)| {
            let mut v: Vec<Record> = recs.values().cloned().collect();
            v.sort_by_key(Record::key);
            (p.clone(), v)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mk_claim(owner: &str, lease_until: i64) -> Record {
        Record {
            user_id: "u".into(),
            channel: "fcm".into(),
            target: "tok".into(),
            state: State::Claimed,
            reason: None,
            attempts: 0,
            updated_at: 0,
            owner: Some(owner.into()),
            lease_until: Some(lease_until),
        }
    }

    #[tokio::test]
    async fn a_live_owners_claim_is_busy_and_a_dead_owners_is_taken_over() {
        let s = MemoryDelivery::default();
        let ttl = Duration::from_secs(60);
        assert!(s.lock("t", "n", "a", ttl).await.unwrap());
        assert!(!s.lock("t", "n", "b", ttl).await.unwrap(), "held by a");
        assert_eq!(
            s.claim("t", "n", &mk_claim("a", 1_000), 0).await.unwrap(),
            Claim::Fresh
        );
        // b while a holds the lock and its lease: busy; after the lease: taken over.
        assert_eq!(
            s.claim("t", "n", &mk_claim("b", 1_000), 10).await.unwrap(),
            Claim::Busy
        );
        assert_eq!(
            s.claim("t", "n", &mk_claim("b", 3_000), 2_000)
                .await
                .unwrap(),
            Claim::Reclaimed
        );
        // a's run ends (lock released): b's claim is b's alone while b holds the lock.
        s.unlock("t", "n", "a").await.unwrap();
        assert!(s.lock("t", "n", "b", ttl).await.unwrap());
        assert_eq!(
            s.claim("t", "n", &mk_claim("a", 9_000), 2_500)
                .await
                .unwrap(),
            Claim::Busy
        );
        assert!(!s.renew("t", "n", "a", ttl).await.unwrap());
        assert!(s.renew("t", "n", "b", ttl).await.unwrap());
        // b dies (its lock lapses): a takes the claim over at once, lease or not.
        s.unlock("t", "n", "b").await.unwrap();
        assert_eq!(
            s.claim("t", "n", &mk_claim("a", 9_000), 2_500)
                .await
                .unwrap(),
            Claim::Reclaimed
        );
    }

    #[tokio::test]
    async fn memory_records_are_bounded() {
        let s = MemoryDelivery::default();
        for i in 0..MAX_MEMORY_DELIVERIES + 10 {
            s.accept("t", &format!("n{i}")).await.unwrap();
        }
        assert_eq!(s.len(), MAX_MEMORY_DELIVERIES);
        assert_eq!(
            s.progress("t", "n0").await.unwrap(),
            None,
            "the oldest went"
        );
        assert!(s.progress("t", "n10").await.unwrap().is_some());
    }
}
