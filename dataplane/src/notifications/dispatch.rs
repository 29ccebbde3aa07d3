//! Deliver one notification: de-duplicate by id, take its run lock, decide channels per
//! user from their preferences, then in-app, push and e-mail, recording every target's
//! state. Run by the Kafka worker, and by the socket node itself in embedded mode.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use super::delivery::{Claim, DeliveryStore, Progress, RUN_LOCK_TTL, Record, State};
use super::{InboxStore, NOTIFICATIONS, Notification};
use crate::app::now_ms;
use crate::devices::{Device, DeviceStore};
use crate::email::Mailer;
use crate::error::StoreError;
use crate::hub::{Hub, user_room};
use crate::metrics::Metrics;
use crate::preferences::{PreferenceStore, decide};
use crate::push::{ATTEMPT_TIMEOUT, Outcome, Push};

/// Recipients handled at once.
pub const USER_CONCURRENCY: usize = 16;
/// Devices of one user sent to at once.
pub const DEVICE_CONCURRENCY: usize = 8;

/// Everything a delivery needs; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub inbox: Arc<dyn InboxStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub preferences: Arc<dyn PreferenceStore>,
    pub delivery: Arc<dyn DeliveryStore>,
    pub push: Push,
    pub mailer: Option<Mailer>,
    pub max_in_app: usize,
    pub metrics: Metrics,
}

/// Why a dispatch stopped; the caller retries the whole notification later (finished
/// targets are skipped then).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another live run holds the notification (or one of its targets).
    #[error("another run of this notification is in progress")]
    Busy,
}

/// What one dispatch did (logged, and returned to tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The id was already fully delivered: nothing was done.
    pub duplicate: bool,
    pub in_app: usize,
    pub sent: usize,
    pub failed: usize,
    pub pruned: usize,
    /// Targets finished by an earlier run of the same id.
    pub skipped: usize,
}

enum Done {
    Sent,
    Failed,
    Pruned,
    Skipped,
}

/// A held run lock: renewed while it lives; released when dropped (also when the run
/// is cancelled mid-way, e.g. by a worker's shutdown, so the next run need not wait for
/// it to lapse).
struct RunLock {
    renew: tokio::task::AbortHandle,
    store: Arc<dyn DeliveryStore>,
    tenant: String,
    id: String,
    owner: String,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.renew.abort();
        let (store, t, i, o) = (
            self.store.clone(),
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.owner),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.unlock(&t, &i, &o).await {
                    tracing::warn!(error = %e, tenant = %t, id = %i, "run lock not released (it lapses)");
                }
            });
        }
    }
}

impl Dispatcher {
    /// Deliver `n` (validated). A store error or another live run of the same id stops
    /// the dispatch and is returned: the caller retries the whole notification later.
    pub async fn dispatch(
        &self,
        n: &Notification,
        hub: Option<&Arc<dyn Hub>>,
    ) -> Result<Summary, DispatchError> {
        let (t, id) = (&n.tenant, &n.id);
        if self.delivery.progress(t, id).await? == Some(Progress::Done) {
            return Ok(self.duplicate());
        }
        let owner = uuid::Uuid::new_v4().simple().to_string();
        if !self.delivery.lock(t, id, &owner, RUN_LOCK_TTL).await? {
            return Err(DispatchError::Busy);
        }
        let _lock = self.hold_lock(t, id, &owner);
        // Another run may have finished between the check above and the lock.
        if self.delivery.progress(t, id).await? == Some(Progress::Done) {
            return Ok(self.duplicate());
        }
        self.run(n, hub, &owner).await
    }

    fn duplicate(&self) -> Summary {
        Metrics::kind(&self.metrics.notifications, "duplicate");
        Summary {
            duplicate: true,
            ..Summary::default()
        }
    }

    fn hold_lock(&self, tenant: &str, id: &str, owner: &str) -> RunLock {
        let (store, t, i, o) = (
            self.delivery.clone(),
            tenant.to_owned(),
            id.to_owned(),
            owner.to_owned(),
        );
        let span = tracing::info_span!("run_lock", tenant = %t, id = %i);
        let task = tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(RUN_LOCK_TTL / 3).await;
                    match store.renew(&t, &i, &o, RUN_LOCK_TTL).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("run lock lost; claims still guard each target");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "run lock not renewed"),
                    }
                }
            }
            .instrument(span),
        );
        RunLock {
            renew: task.abort_handle(),
            store: self.delivery.clone(),
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            owner: owner.to_owned(),
        }
    }

    async fn run(
        &self,
        n: &Notification,
        hub: Option<&Arc<dyn Hub>>,
        owner: &str,
    ) -> Result<Summary, DispatchError> {
        let at = now_ms();
        let created_at = n.created_at_clamped(at);
        // Futures collected first: a closure inside the stream would make this future
        // not `Send` for every lifetime (it runs in spawned tasks).
        let users: Vec<_> = n
            .user_ids
            .iter()
            .map(|u| self.for_user(n, u, at, created_at, hub, owner))
            .collect();
        let results: Vec<Result<(bool, Vec<Done>), DispatchError>> = futures::stream::iter(users)
            .buffer_unordered(USER_CONCURRENCY)
            .collect()
            .await;
        let mut s = Summary::default();
        for r in results {
            let (in_app, done) = r?;
            s.in_app += usize::from(in_app);
            for d in done {
                match d {
                    Done::Sent => s.sent += 1,
                    Done::Failed => s.failed += 1,
                    Done::Pruned => s.pruned += 1,
                    Done::Skipped => s.skipped += 1,
                }
            }
        }
        self.delivery.done(&n.tenant, &n.id).await?;
        Metrics::kind(&self.metrics.notifications, "processed");
        tracing::info!(tenant = %n.tenant, id = %n.id, ?s, "notification delivered");
        Ok(s)
    }

    async fn for_user(
        &self,
        n: &Notification,
        user: &str,
        at: i64,
        created_at: i64,
        hub: Option<&Arc<dyn Hub>>,
        owner: &str,
    ) -> Result<(bool, Vec<Done>), DispatchError> {
        let t = &n.tenant;
        let prefs = self.preferences.get(t, user).await?;
        let ch = decide(n.kind, n.priority, &prefs, at);
        let mut out = Vec::new();
        let mut added = false;
        if ch.in_app {
            let entry = n.entry(created_at);
            added = self.inbox.add(t, user, &entry, self.max_in_app).await?;
            if added {
                if let Some(hub) = hub {
                    hub.emit(
                        NOTIFICATIONS,
                        user_room(t, user),
                        "notification",
                        json!(entry),
                    )
                    .await;
                }
                self.metrics.delivery("in_app", "sent");
            }
        }
        if ch.push {
            let devices = self.devices.list(t, user).await?;
            let sends: Vec<_> = devices
                .iter()
                .map(|d| self.push_one(n, user, d, owner))
                .collect();
            let done: Vec<Result<Done, DispatchError>> = futures::stream::iter(sends)
                .buffer_unordered(DEVICE_CONCURRENCY)
                .collect()
                .await;
            for d in done {
                out.push(d?);
            }
        }
        if ch.email
            && let Some(mailer) = &self.mailer
            && let Some(addr) = self.devices.email(t, user).await?
        {
            out.push(self.email_one(n, user, mailer, &addr, owner).await?);
        }
        Ok((added, out))
    }

    fn record(
        user: &str,
        channel: &str,
        target: &str,
        state: State,
        reason: Option<String>,
        attempts: u32,
    ) -> Record {
        Record {
            user_id: user.into(),
            channel: channel.into(),
            target: target.into(),
            state,
            reason,
            attempts,
            updated_at: now_ms(),
            owner: None,
            lease_until: None,
        }
    }

    /// Claim a target for this run for `lease`; Ok(false) when it is finished already.
    async fn claim(
        &self,
        n: &Notification,
        user: &str,
        channel: &str,
        target: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, DispatchError> {
        let now = now_ms();
        let claim = Record {
            owner: Some(owner.to_owned()),
            lease_until: Some(
                now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
            ),
            ..Self::record(user, channel, target, State::Claimed, None, 0)
        };
        match self.delivery.claim(&n.tenant, &n.id, &claim, now).await? {
            Claim::Finished(_) => Ok(false),
            Claim::Busy => Err(DispatchError::Busy),
            Claim::Fresh | Claim::Reclaimed => Ok(true),
        }
    }

    async fn push_one(
        &self,
        n: &Notification,
        user: &str,
        d: &Device,
        owner: &str,
    ) -> Result<Done, DispatchError> {
        let channel = d.platform.as_str();
        if !self
            .claim(
                n,
                user,
                channel,
                &d.token,
                owner,
                self.push.lease(d.platform),
            )
            .await?
        {
            return Ok(Done::Skipped);
        }
        // A token registered since in another tenant is that tenant's now.
        let (outcome, attempts) = match self.devices.token_tenant(d.platform, &d.token).await? {
            Some(other) if other != n.tenant => (
                Outcome::Failed("token is registered in another tenant now".into()),
                0,
            ),
            _ => self.push.send(n, d).await,
        };
        self.metrics.delivery(channel, outcome.label());
        let (state, reason, done) = match outcome {
            Outcome::Sent(_) => (State::Sent, None, Done::Sent),
            Outcome::Failed(r) => (State::Failed, Some(r), Done::Failed),
            Outcome::Prune {
                reason,
                unless_after,
            } => {
                let removed = self
                    .devices
                    .prune(&n.tenant, user, &d.token, unless_after)
                    .await?;
                if removed {
                    (State::Pruned, Some(reason), Done::Pruned)
                } else {
                    // Registered again after the provider's timestamp: keep it.
                    (
                        State::Failed,
                        Some(format!("{reason}; token kept: registered again since")),
                        Done::Failed,
                    )
                }
            }
        };
        self.delivery
            .put(
                &n.tenant,
                &n.id,
                &Self::record(user, channel, &d.token, state, reason, attempts),
            )
            .await?;
        Ok(done)
    }

    async fn email_one(
        &self,
        n: &Notification,
        user: &str,
        mailer: &Mailer,
        addr: &str,
        owner: &str,
    ) -> Result<Done, DispatchError> {
        if !self
            .claim(n, user, "email", addr, owner, ATTEMPT_TIMEOUT)
            .await?
        {
            return Ok(Done::Skipped);
        }
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, mailer.send(n, addr))
            .await
            .unwrap_or_else(|_| Err(format!("smtp: no answer within {ATTEMPT_TIMEOUT:?}")));
        let (state, reason, done, label) = match sent {
            Ok(()) => (State::Sent, None, Done::Sent, "sent"),
            Err(e) => (State::Failed, Some(e), Done::Failed, "failed"),
        };
        self.metrics.delivery("email", label);
        self.delivery
            .put(
                &n.tenant,
                &n.id,
                &Self::record(user, "email", addr, state, reason, 1),
            )
            .await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::devices::{MemoryDevices, Platform};
    use crate::notifications::MemoryInbox;
    use crate::notifications::delivery::MemoryDelivery;
    use crate::preferences::MemoryPreferences;
    use crate::push::{Attempt, Provider};

    /// Answers every attempt with the same thing and counts them per token.
    struct Fixed(Attempt, Mutex<Vec<String>>);

    #[async_trait]
    impl Provider for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        async fn attempt(&self, _: &Notification, d: &Device) -> Attempt {
            self.1.lock().unwrap().push(d.token.clone());
            self.0.clone()
        }
    }

    fn mk_dispatcher(answer: Attempt) -> (Dispatcher, Arc<Fixed>) {
        let p = Arc::new(Fixed(answer, Mutex::default()));
        let push = Push {
            fcm: Some((p.clone(), 1)),
            apns: None,
            base: None,
        };
        let d = Dispatcher {
            inbox: Arc::new(MemoryInbox::default()),
            devices: Arc::new(MemoryDevices::default()),
            preferences: Arc::new(MemoryPreferences::default()),
            delivery: Arc::new(MemoryDelivery::default()),
            push,
            mailer: None,
            max_in_app: 10,
            metrics: Metrics::new(),
        };
        (d, p)
    }

    fn mk_n(id: &str) -> Notification {
        Notification::parse(
            format!(r#"{{"id":"{id}","tenant":"t","user_ids":["u"],"type":"call","title":"x"}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    async fn register(d: &Dispatcher, token: &str, at: i64) {
        let dev = Device {
            platform: Platform::Fcm,
            token: token.into(),
            app_id: None,
            environment: None,
            registered_at: at,
        };
        d.devices.register("t", "u", &dev, 20).await.unwrap();
    }

    /// Holds every attempt until released, counting them.
    struct Gate(tokio::sync::Semaphore, Mutex<usize>, tokio::sync::Notify);

    #[async_trait]
    impl Provider for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        async fn attempt(&self, _: &Notification, _: &Device) -> Attempt {
            *self.1.lock().unwrap() += 1;
            self.2.notify_one();
            let _p = self.0.acquire().await.unwrap();
            Attempt::Sent(None)
        }
    }

    #[tokio::test]
    async fn two_concurrent_runs_of_one_id_push_once() {
        let (mut d, _) = mk_dispatcher(Attempt::Sent(None));
        let gate = Arc::new(Gate(
            tokio::sync::Semaphore::new(0),
            Mutex::default(),
            tokio::sync::Notify::new(),
        ));
        d.push.fcm = Some((gate.clone(), 1));
        register(&d, "a", 1).await;
        let n = mk_n("n3");
        let first = tokio::spawn({
            let (d, n) = (d.clone(), n.clone());
            async move { d.dispatch(&n, None).await.unwrap() }
        });
        gate.2.notified().await;
        // The same id again (a retried POST, a rebalance) while the first is mid-send.
        assert!(matches!(
            d.dispatch(&n, None).await,
            Err(DispatchError::Busy)
        ));
        gate.0.add_permits(10);
        assert_eq!(first.await.unwrap().sent, 1);
        assert!(d.dispatch(&n, None).await.unwrap().duplicate);
        assert_eq!(*gate.1.lock().unwrap(), 1, "pushed once");
    }

    #[tokio::test]
    async fn a_token_now_registered_in_another_tenant_is_not_pushed() {
        let (d, p) = mk_dispatcher(Attempt::Sent(None));
        register(&d, "moved", 1).await;
        let list = d.devices.list("t", "u").await.unwrap();
        // The phone registers in tenant "b"; "t"'s copy is still being delivered to.
        d.devices
            .register("b", "someone", &list[0], 20)
            .await
            .unwrap();
        let s = d.run(&mk_n("n4"), None, "me").await.unwrap();
        // `run` delivers to the devices it listed; here it lists none, so deliver to
        // the stale copy directly.
        assert_eq!(s.sent, 0);
        let done = d.push_one(&mk_n("n5"), "u", &list[0], "me").await.unwrap();
        assert!(matches!(done, Done::Failed));
        assert!(p.1.lock().unwrap().is_empty(), "pushed across tenants");
        let (_, recs) = d.delivery.status("t", "n5").await.unwrap().unwrap();
        assert!(
            recs[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("another tenant")
        );
    }

    #[tokio::test]
    async fn a_410_spares_a_token_registered_again_after_its_timestamp() {
        let (d, _) = mk_dispatcher(Attempt::Prune {
            reason: "Unregistered (410)".into(),
            unless_after: Some(1_000),
        });
        register(&d, "old", 500).await;
        register(&d, "new", 2_000).await;
        let s = d.dispatch(&mk_n("n1"), None).await.unwrap();
        assert_eq!((s.pruned, s.failed), (1, 1));
        let left: Vec<String> = d
            .devices
            .list("t", "u")
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.token)
            .collect();
        assert_eq!(left, ["new"]);
        let (_, recs) = d.delivery.status("t", "n1").await.unwrap().unwrap();
        let new = recs.iter().find(|r| r.target == "new").unwrap();
        assert_eq!(new.state, State::Failed);
        assert!(new.reason.as_deref().unwrap().contains("token kept"));
    }

    #[tokio::test]
    async fn a_replay_resends_only_what_was_claimed_and_never_finished() {
        let (d, p) = mk_dispatcher(Attempt::Sent(None));
        for tok in ["a", "b", "c"] {
            register(&d, tok, 1).await;
        }
        let n = mk_n("n2");
        // As a worker that died mid-batch leaves it: "a" sent, "b" claimed, "c" untouched.
        let rec = |tok: &str, state| Dispatcher::record("u", "fcm", tok, state, None, 1);
        d.delivery
            .put("t", "n2", &rec("a", State::Sent))
            .await
            .unwrap();
        d.delivery
            .put("t", "n2", &rec("b", State::Claimed))
            .await
            .unwrap();
        let s = d.dispatch(&n, None).await.unwrap();
        assert_eq!((s.sent, s.skipped), (2, 1));
        let mut sent = p.1.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent, ["b", "c"]);
        // Done: a third run does nothing at all.
        assert!(d.dispatch(&n, None).await.unwrap().duplicate);
        assert_eq!(p.1.lock().unwrap().len(), 2);
        assert_eq!(d.inbox.list("t", "u", false, 10).await.unwrap().len(), 1);
    }
}
