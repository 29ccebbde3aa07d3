//! Deliver one notification: de-duplicate by id, decide channels per user from their
//! preferences, then in-app, push and e-mail, recording every target's state.
//! Run by the Kafka worker, and by the socket node itself in embedded mode.

use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::delivery::{Claim, DeliveryStore, Progress, Record, State};
use super::{InboxStore, NOTIFICATIONS, Notification};
use crate::app::now_ms;
use crate::devices::{Device, DeviceStore};
use crate::email::Mailer;
use crate::error::StoreError;
use crate::hub::{Hub, user_room};
use crate::metrics::Metrics;
use crate::preferences::{PreferenceStore, decide};
use crate::push::{Outcome, Push};

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

impl Dispatcher {
    /// Deliver `n` (validated). A store error stops the dispatch and is returned: the
    /// caller retries the whole notification later, and finished targets are skipped.
    pub async fn dispatch(
        &self,
        n: &Notification,
        hub: Option<&Arc<dyn Hub>>,
    ) -> Result<Summary, StoreError> {
        if let Some((Progress::Done, _)) = self.delivery.status(&n.tenant, &n.id).await? {
            Metrics::kind(&self.metrics.notifications, "duplicate");
            return Ok(Summary {
                duplicate: true,
                ..Summary::default()
            });
        }
        let at = now_ms();
        let created_at = n.created_at.unwrap_or(at);
        // Futures collected first: a closure inside the stream would make this future
        // not `Send` for every lifetime (it runs in spawned tasks).
        let users: Vec<_> = n
            .user_ids
            .iter()
            .map(|u| self.for_user(n, u, at, created_at, hub))
            .collect();
        let results: Vec<Result<(bool, Vec<Done>), StoreError>> = futures::stream::iter(users)
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
    ) -> Result<(bool, Vec<Done>), StoreError> {
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
            let sends: Vec<_> = devices.iter().map(|d| self.push_one(n, user, d)).collect();
            let done: Vec<Result<Done, StoreError>> = futures::stream::iter(sends)
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
            out.push(self.email_one(n, user, mailer, &addr).await?);
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
        }
    }

    async fn push_one(&self, n: &Notification, user: &str, d: &Device) -> Result<Done, StoreError> {
        let channel = d.platform.as_str();
        let claim = Self::record(user, channel, &d.token, State::Claimed, None, 0);
        if let Claim::Finished(_) = self.delivery.claim(&n.tenant, &n.id, &claim).await? {
            return Ok(Done::Skipped);
        }
        let (outcome, attempts) = self.push.send(n, d).await;
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
    ) -> Result<Done, StoreError> {
        let claim = Self::record(user, "email", addr, State::Claimed, None, 0);
        if let Claim::Finished(_) = self.delivery.claim(&n.tenant, &n.id, &claim).await? {
            return Ok(Done::Skipped);
        }
        let (state, reason, done, label) = match mailer.send(n, addr).await {
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
