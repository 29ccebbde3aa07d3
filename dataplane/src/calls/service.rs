//! The async layer around [`apply`]: load, decide, commit atomically, then announce to
//! the participants (on every node, through the hub), schedule or cancel timers and
//! write history. Timers are polled by every node from the shared store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use tracing::Instrument;

use super::history::{CallHistory, CallRecord, MemoryCallHistory, MongoHistory};
use super::quality::{self, Issue, Summary, Thresholds};
use super::{
    Call, CallStore, Commit, EndReason, Event, Media, MemoryCalls, Notice, Outcome, Rules, Sample,
    Timer, TimerKind, apply,
};
use crate::app::{App, now_ms};
use crate::error::{AckError, Code, StoreError};
use crate::hub::user_room;

/// The /webrtc namespace.
pub const WEBRTC: &str = "/webrtc";

/// Tries of one transition when other nodes keep changing the call meanwhile.
const MAX_TRIES: usize = 8;
/// How often every node looks for due timers, how many it takes at once, and how long
/// a taken timer stays its (another node fires it after that if this one died).
const TIMER_POLL: Duration = Duration::from_millis(200);
const TIMER_BATCH: usize = 100;
// A repeat after a lease is harmless (transitions are idempotent), so it is short: a node
// that dies holding a timer delays it by at most this.
const TIMER_LEASE_MS: i64 = 3_000;
/// A history write that fails is retried this many times, this far apart.
const HISTORY_TRIES: u32 = 5;
const HISTORY_RETRY: Duration = Duration::from_secs(2);

/// Cheap handle; one per node.
#[derive(Clone)]
pub struct Calls(Arc<Shared>);

struct Shared {
    store: Arc<dyn CallStore>,
    history: Arc<dyn CallHistory>,
    rules: Rules,
    grace_ms: i64,
    thresholds: Thresholds,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn new_call_id() -> String {
    format!("c_{}", uuid::Uuid::new_v4().simple())
}

impl Calls {
    /// Build from the config: the call store follows the node's mode (Redis or memory),
    /// history goes to MongoDB when `calls.mongodb_uri` is set.
    pub async fn build(
        config: &DataplaneConfig,
        redis: Option<&fred::clients::Client>,
    ) -> anyhow::Result<Calls> {
        let c = &config.calls;
        let store: Arc<dyn CallStore> = match redis {
            Some(r) => Arc::new(super::redis::RedisCalls::new(r.clone())),
            None => Arc::new(MemoryCalls::default()),
        };
        let history: Arc<dyn CallHistory> = match c.mongodb_uri.as_deref().filter(|u| !u.is_empty())
        {
            Some(uri) => Arc::new(MongoHistory::connect(uri, &c.mongodb_database).await?),
            None => Arc::new(MemoryCallHistory::new(c.memory_history_max)),
        };
        Ok(Calls::new(store, history, config))
    }

    pub fn new(
        store: Arc<dyn CallStore>,
        history: Arc<dyn CallHistory>,
        config: &DataplaneConfig,
    ) -> Calls {
        let c = &config.calls;
        Calls(Arc::new(Shared {
            store,
            history,
            rules: Rules {
                ringing_timeout_ms: ms(c.ringing_timeout.0),
                max_participants: c.max_participants,
            },
            grace_ms: ms(c.disconnect_grace.0),
            thresholds: Thresholds {
                max_latency_ms: c.quality.max_latency_ms,
                max_packet_loss_percentage: c.quality.max_packet_loss_percentage,
                max_jitter_ms: c.quality.max_jitter_ms,
                min_bitrate_kbps: c.quality.min_bitrate_kbps,
            },
        }))
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.0.thresholds
    }

    /// The call, if the user takes or took part in it; `not_found` otherwise (a call of
    /// another tenant or another user's call looks the same as none).
    pub async fn visible(&self, tenant: &str, user: &str, call_id: &str) -> Result<Call, AckError> {
        match self.0.store.load(tenant, call_id).await? {
            Some((c, _)) if c.participant(user).is_some() => Ok(c),
            _ => Err(AckError::not_found(format!("no call {call_id:?}"))),
        }
    }

    // === requests ===

    /// `call:initiate`. A callee held by another call makes an ended `busy` call; a
    /// callee already calling the caller (glare) gets that call answered instead, so the
    /// two crossing calls become one.
    pub async fn initiate(
        &self,
        app: &App,
        tenant: &str,
        caller: &str,
        callee: &str,
        media: Media,
    ) -> Result<Call, AckError> {
        if caller == callee {
            return Err(AckError::bad_request("you cannot call yourself"));
        }
        let now = now_ms();
        let call = Call::direct(new_call_id(), caller, callee, media, now);
        let claims = [caller.to_owned(), callee.to_owned()];
        match self.0.store.commit(tenant, &call, 0, &claims, &[]).await? {
            Commit::Done(_) => {
                let out = Outcome {
                    call: call.clone(),
                    notices: vec![Notice::Invited(callee.to_owned())],
                };
                self.announce(app, tenant, &out).await;
                Ok(call)
            }
            Commit::Stale => Err(AckError::new(Code::Internal, "call id collision, retry")),
            Commit::Held { user, call_id } => {
                if let Some((other, _)) = self.0.store.load(tenant, &call_id).await?
                    && other.is_glare_with(caller, callee)
                {
                    tracing::info!(tenant, call = %call_id, caller, callee, "glare: crossing calls joined into one");
                    return self
                        .act(
                            app,
                            tenant,
                            &call_id,
                            Event::Answer {
                                user: caller.to_owned(),
                            },
                        )
                        .await;
                }
                if user == caller {
                    return Err(AckError::conflict(
                        "you are already in a call; hang up first",
                    ));
                }
                let busy = call.busy(now);
                if let Commit::Done(_) = self.0.store.commit(tenant, &busy, 0, &[], &[]).await? {
                    self.record(tenant, &busy).await;
                    app.metrics.call_ended(EndReason::Busy.as_str());
                    app.emit(
                        WEBRTC,
                        user_room(tenant, caller),
                        "call:ended",
                        json!({ "call": busy, "reason": EndReason::Busy.as_str() }),
                    )
                    .await;
                }
                Ok(busy)
            }
        }
    }

    /// `call:create-group`.
    pub async fn create_group(
        &self,
        app: &App,
        tenant: &str,
        initiator: &str,
        others: &[String],
        media: Media,
    ) -> Result<Call, AckError> {
        let call = Call::group(
            new_call_id(),
            initiator,
            others,
            media,
            now_ms(),
            &self.0.rules,
        )?;
        match self
            .0
            .store
            .commit(tenant, &call, 0, &[initiator.to_owned()], &[])
            .await?
        {
            Commit::Done(_) => {
                let notices = call
                    .participants
                    .iter()
                    .filter(|p| p.user_id != initiator)
                    .map(|p| Notice::Invited(p.user_id.clone()))
                    .collect();
                let out = Outcome {
                    call: call.clone(),
                    notices,
                };
                self.announce(app, tenant, &out).await;
                Ok(call)
            }
            Commit::Stale => Err(AckError::new(Code::Internal, "call id collision, retry")),
            Commit::Held { .. } => Err(AckError::conflict(
                "you are already in a call; hang up first",
            )),
        }
    }

    /// Apply `ev` to a call: decide, commit (retrying when the call moved meanwhile),
    /// announce. A user held by another call answers `busy`.
    pub async fn act(
        &self,
        app: &App,
        tenant: &str,
        call_id: &str,
        ev: Event,
    ) -> Result<Call, AckError> {
        for _ in 0..MAX_TRIES {
            let Some((call, version)) = self.0.store.load(tenant, call_id).await? else {
                return Err(AckError::not_found(format!("no call {call_id:?}")));
            };
            let out = apply(&call, &ev, now_ms(), &self.0.rules)?;
            if out.call == call {
                return Ok(call);
            }
            let (before, after) = (call.holders(), out.call.holders());
            let claims: Vec<String> = after.difference(&before).cloned().collect();
            let releases: Vec<String> = before.difference(&after).cloned().collect();
            match self
                .0
                .store
                .commit(tenant, &out.call, version, &claims, &releases)
                .await?
            {
                Commit::Done(_) => {
                    self.announce(app, tenant, &out).await;
                    return Ok(out.call);
                }
                Commit::Stale => continue,
                Commit::Held { user, .. } => {
                    return Err(AckError::new(
                        Code::Busy,
                        format!("{user} is in another call"),
                    ));
                }
            }
        }
        Err(AckError::new(
            Code::Unavailable,
            "the call is changing too fast, retry",
        ))
    }

    /// Tell everyone what changed, and keep timers and history in step.
    async fn announce(&self, app: &App, tenant: &str, out: &Outcome) {
        let call = &out.call;
        let to_all = |event: &'static str, data: Value| {
            let rooms: Vec<String> = call
                .audience()
                .iter()
                .map(|u| user_room(tenant, u))
                .collect();
            async move {
                for room in rooms {
                    app.emit(WEBRTC, room, event, data.clone()).await;
                }
            }
        };
        for n in &out.notices {
            match n {
                Notice::Invited(u) => {
                    let at = call
                        .participant(u)
                        .map_or(call.created_at, |p| p.invited_at)
                        + self.0.rules.ringing_timeout_ms;
                    self.schedule(tenant, &call.id, TimerKind::Ring, u, at)
                        .await;
                    app.emit(
                        WEBRTC,
                        user_room(tenant, u),
                        "call:incoming",
                        json!({ "call": call }),
                    )
                    .await;
                }
                Notice::Answered(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all("call:answered", json!({ "call": call, "user_id": u })).await;
                }
                Notice::Rejected(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all("call:rejected", json!({ "call": call, "user_id": u })).await;
                }
                Notice::Joined(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all(
                        "call:participant-joined",
                        json!({ "call": call, "user_id": u }),
                    )
                    .await;
                }
                Notice::Left(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all(
                        "call:participant-left",
                        json!({ "call": call, "user_id": u }),
                    )
                    .await;
                }
                Notice::Ended(reason) => {
                    for p in &call.participants {
                        self.cancel(tenant, &call.id, TimerKind::Ring, &p.user_id)
                            .await;
                        self.cancel(tenant, &call.id, TimerKind::Grace, &p.user_id)
                            .await;
                    }
                    // History first: a client told the call ended can read it back.
                    self.record(tenant, call).await;
                    app.metrics.call_ended(reason.as_str());
                    to_all(
                        "call:ended",
                        json!({ "call": call, "reason": reason.as_str() }),
                    )
                    .await;
                }
            }
        }
    }

    async fn schedule(&self, tenant: &str, call_id: &str, kind: TimerKind, user: &str, at: i64) {
        let t = Timer {
            tenant: tenant.into(),
            call_id: call_id.into(),
            kind,
            user_id: user.into(),
        };
        if let Err(e) = self.0.store.schedule(&t, at).await {
            tracing::warn!(error = %e, call = call_id, "call timer not stored");
        }
    }

    async fn cancel(&self, tenant: &str, call_id: &str, kind: TimerKind, user: &str) {
        let t = Timer {
            tenant: tenant.into(),
            call_id: call_id.into(),
            kind,
            user_id: user.into(),
        };
        if let Err(e) = self.0.store.cancel(&t).await {
            tracing::warn!(error = %e, call = call_id, "call timer not cancelled; it will find nothing to do");
        }
    }

    /// Write an ended call to history; retried in the background when the database does
    /// not answer.
    async fn record(&self, tenant: &str, call: &Call) {
        let samples = self.0.store.samples(tenant, Some(&call.id)).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, call = %call.id, "quality samples unavailable; history gets an empty summary");
            Vec::new()
        });
        let rec = CallRecord::of(
            tenant,
            call,
            quality::summarize(&samples, &self.0.thresholds),
        );
        if let Err(e) = self.0.history.record(&rec).await {
            tracing::warn!(error = %e, call = %call.id, "call history write failed; retrying in the background");
            let history = self.0.history.clone();
            tokio::spawn(
                async move {
                    for _ in 1..HISTORY_TRIES {
                        tokio::time::sleep(HISTORY_RETRY).await;
                        match history.record(&rec).await {
                            Ok(()) => return,
                            Err(e) => tracing::warn!(error = %e, "call history write failed again"),
                        }
                    }
                    tracing::error!(call = %rec.id, "call history write given up");
                }
                .instrument(tracing::info_span!("call_history_retry")),
            );
        }
    }

    // === connections ===

    /// A /webrtc connection opened: count it, and call off a pending disconnect of the
    /// user's call.
    pub async fn connected(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        self.0.store.conn_up(tenant, user, conn, node).await?;
        if let Some(call_id) = self.0.store.user_call(tenant, user).await? {
            self.cancel(tenant, &call_id, TimerKind::Grace, user).await;
        }
        Ok(())
    }

    /// A /webrtc connection closed (or its node died). When it was the user's last one
    /// on any node, their call ends as `disconnected` (they leave a group call) unless
    /// they come back within `calls.disconnect_grace`.
    pub async fn disconnected(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        if self.0.store.conn_down(tenant, user, conn, node).await? > 0 {
            return Ok(());
        }
        if let Some(call_id) = self.0.store.user_call(tenant, user).await? {
            let at = now_ms() + self.0.grace_ms;
            self.schedule(tenant, &call_id, TimerKind::Grace, user, at)
                .await;
        }
        Ok(())
    }

    /// Take down the connections of dead nodes (and, at start, those this node id left
    /// behind in an earlier life).
    async fn sweep(&self, nodes: Vec<String>, forget: bool) -> Result<(), StoreError> {
        for node in nodes {
            let conns = self.0.store.node_conns(&node).await?;
            if !conns.is_empty() {
                tracing::warn!(node = %node, connections = conns.len(), "taking down the /webrtc connections of a dead node");
            }
            for (t, u, c) in conns {
                self.disconnected(&t, &u, &c, &node).await?;
            }
            if forget {
                self.0.store.forget_node(&node).await?;
            }
        }
        Ok(())
    }

    // === background work ===

    /// Fire due timers (whichever node set them), keep this node's heartbeat and sweep
    /// dead nodes' connections, until the process ends.
    pub fn spawn(&self, app: App) {
        let me = self.clone();
        let timers_app = app.clone();
        tokio::spawn(
            async move {
                let mut interval = tokio::time::interval(TIMER_POLL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    if let Err(e) = me.fire_due(&timers_app).await {
                        tracing::warn!(error = %e, "call timers not polled");
                    }
                }
            }
            .instrument(tracing::info_span!("call_timers")),
        );
        let me = self.clone();
        tokio::spawn(
            async move {
                let node = app.node_id.clone();
                let ttl = app.config.presence.heartbeat_ttl.0;
                if let Err(e) = me.sweep(vec![node.clone()], false).await {
                    tracing::warn!(error = %e, "connections of this node's earlier life not swept");
                }
                let mut interval = tokio::time::interval(ttl / 3);
                loop {
                    interval.tick().await;
                    if let Err(e) = me.0.store.heartbeat(&node, ms(ttl)).await {
                        tracing::warn!(error = %e, "call node heartbeat failed");
                    }
                    let dead = me.0.store.claim_dead_nodes(&node).await;
                    if let Err(e) = async { me.sweep(dead?, true).await }.await {
                        tracing::warn!(error = %e, "dead-node sweep of /webrtc connections failed");
                    }
                }
            }
            .instrument(tracing::info_span!("call_liveness")),
        );
    }

    /// Fire the timers due now; returns how many fired.
    pub async fn fire_due(&self, app: &App) -> Result<usize, StoreError> {
        let due = self
            .0
            .store
            .due(now_ms(), TIMER_LEASE_MS, TIMER_BATCH)
            .await?;
        for t in &due {
            match self.act(app, &t.tenant, &t.call_id, t.event()).await {
                Ok(c) => {
                    tracing::debug!(tenant = %t.tenant, call = %t.call_id, state = ?c.state, "call timer fired")
                }
                Err(e) if e.code == Code::Unavailable => {
                    // Leave it leased: it is tried again after the lease.
                    tracing::warn!(error = %e, call = %t.call_id, "call timer not applied");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, call = %t.call_id, "call timer had nothing to do")
                }
            }
            self.0.store.cancel(t).await?;
        }
        Ok(due.len())
    }

    // === quality and history ===

    /// `call:report-quality`: store the report, return its issues.
    pub async fn report_quality(
        &self,
        tenant: &str,
        user: &str,
        call_id: &str,
        s: &Sample,
    ) -> Result<Vec<Issue>, AckError> {
        quality::validate(s).map_err(AckError::bad_request)?;
        let call = self.visible(tenant, user, call_id).await?;
        if !call.is_live_participant(user) {
            return Err(AckError::conflict(
                "only a participant of a live call can report its quality",
            ));
        }
        self.0.store.add_sample(tenant, call_id, s).await?;
        Ok(quality::issues(s, &self.0.thresholds))
    }

    /// The tenant's recent reports, summarized.
    pub async fn tenant_quality(&self, tenant: &str) -> Result<Summary, StoreError> {
        let samples = self.0.store.samples(tenant, None).await?;
        Ok(quality::summarize(&samples, &self.0.thresholds))
    }

    pub async fn history(
        &self,
        tenant: &str,
        user: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Value>, AckError> {
        Ok(self
            .0
            .history
            .list(tenant, user, limit, before)
            .await?
            .iter()
            .map(CallRecord::to_json)
            .collect())
    }
}
