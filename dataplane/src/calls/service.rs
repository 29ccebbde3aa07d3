//! The async layer around [`apply`]: load, decide, commit atomically, then announce to
//! the participants (on every node, through the hub), schedule or cancel timers and
//! write history. Timers are polled by every node from the shared store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use tracing::Instrument;

use super::history::{
    CallHistory, CallRecord, Cursor, HistoryEntry, MemoryCallHistory, MongoHistory,
};
use super::quality::{self, Issue, Summary, Thresholds};
use super::{
    Call, CallState, CallStore, Commit, EndReason, Event, Media, MemoryCalls, Notice, Outcome,
    Rules, Sample, Timer, TimerKind, apply,
};
use crate::app::{App, now_ms};
use crate::error::{AckError, Code, StoreError};
use crate::hub::user_room;
use crate::webrtc::wire::{CallAck, CallEnded, CallUser};

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
/// How often every node drains the history outbox (records the database has not taken
/// yet: it was down, or the node that ended the call died before writing), and how many
/// records one pass takes.
const OUTBOX_POLL: Duration = Duration::from_secs(1);
const OUTBOX_BATCH: usize = 100;

/// Where an ended call's history record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HistoryPath {
    /// Queued in the store's outbox by the commit, drained by any node until the
    /// database takes it (Redis + MongoDB); `call:ended` does not wait for the write.
    Outbox,
    /// Queued in the memory store's outbox and drained before `call:ended` goes out
    /// (embedded mode: the write cannot fail, and a client told can read it back).
    Inline,
    /// Written straight into this node's memory history (Redis without MongoDB: each
    /// node keeps the calls it ended, as documented).
    Direct,
}

/// Cheap handle; one per node.
#[derive(Clone)]
pub struct Calls(Arc<Shared>);

struct Shared {
    store: Arc<dyn CallStore>,
    history: Arc<dyn CallHistory>,
    history_path: HistoryPath,
    /// This node's open /webrtc connections: conn id → (tenant, user), registered again
    /// if the node was taken for dead.
    local: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// A background drain of the history outbox is running (at most one per node; a
    /// record it misses is taken by the next pass, within `OUTBOX_POLL`).
    draining: std::sync::atomic::AtomicBool,
    /// The background loops of [`Calls::spawn`] (timers, outbox, liveness), stopped by
    /// [`Calls::stop`].
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    rules: Rules,
    grace_ms: i64,
    thresholds: Thresholds,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn full() -> AckError {
    AckError::new(
        Code::Unavailable,
        "this node holds as many live calls as it can; retry later",
    )
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
            Some(r) => Arc::new(
                super::redis::RedisCalls::new(r.clone()).with_outbox_max(c.history_outbox_max),
            ),
            None => Arc::new(MemoryCalls::with_outbox_max(c.history_outbox_max)),
        };
        let mongo = c.mongodb_uri.as_deref().filter(|u| !u.is_empty());
        let max_age = Some(ms(c.history_max_age.0));
        let history: Arc<dyn CallHistory> = match mongo {
            Some(uri) => Arc::new(
                MongoHistory::connect(uri, &c.mongodb_database)
                    .await?
                    .with_max_age(max_age),
            ),
            None => Arc::new(MemoryCallHistory::new(c.memory_history_max).with_max_age(max_age)),
        };
        let durable = match (redis.is_some(), mongo.is_some()) {
            (_, true) => true,
            (false, false) => false,
            // Memory history behind a shared store: this node's calls stay on this node.
            (true, false) => return Ok(Calls::direct(store, history, config)),
        };
        Ok(Calls::new(store, history, config, durable))
    }

    /// `durable`: history goes through the store's outbox and is drained in the
    /// background (`call:ended` does not wait); else it is drained before `call:ended`.
    pub fn new(
        store: Arc<dyn CallStore>,
        history: Arc<dyn CallHistory>,
        config: &DataplaneConfig,
        durable: bool,
    ) -> Calls {
        let path = if durable {
            HistoryPath::Outbox
        } else {
            HistoryPath::Inline
        };
        Calls::with_path(store, history, config, path)
    }

    fn direct(
        store: Arc<dyn CallStore>,
        history: Arc<dyn CallHistory>,
        config: &DataplaneConfig,
    ) -> Calls {
        Calls::with_path(store, history, config, HistoryPath::Direct)
    }

    fn with_path(
        store: Arc<dyn CallStore>,
        history: Arc<dyn CallHistory>,
        config: &DataplaneConfig,
        history_path: HistoryPath,
    ) -> Calls {
        let c = &config.calls;
        Calls(Arc::new(Shared {
            store,
            history,
            history_path,
            local: std::sync::Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            tasks: std::sync::Mutex::default(),
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
        // The ringing timer goes first: if the commit fails it finds no call, but a call
        // committed without its timer could ring forever.
        let ring = self
            .schedule_ring(
                tenant,
                &call.id,
                callee,
                now + self.0.rules.ringing_timeout_ms,
            )
            .await?;
        let committed = self
            .0
            .store
            .commit(tenant, &call, 0, &claims, &[], None)
            .await;
        if !matches!(committed, Ok(Commit::Done(_))) {
            self.cancel_timer(&ring).await;
        }
        match committed? {
            Commit::Full => Err(full()),
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
                let record = self.outbox_record(tenant, &busy).await?;
                if let Commit::Done(_) = self
                    .0
                    .store
                    .commit(tenant, &busy, 0, &[], &[], record.as_deref())
                    .await?
                {
                    self.ended_history(tenant, &busy).await;
                    app.metrics.call_ended(EndReason::Busy.as_str());
                    app.emit(
                        WEBRTC,
                        user_room(tenant, caller),
                        "call:ended",
                        json!(CallEnded {
                            call: &busy,
                            reason: EndReason::Busy
                        }),
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
        let now = now_ms();
        let call = Call::group(new_call_id(), initiator, others, media, now, &self.0.rules)?;
        let mut rings = Vec::new();
        for p in call.participants.iter().filter(|p| p.user_id != initiator) {
            let at = p.invited_at + self.0.rules.ringing_timeout_ms;
            match self.schedule_ring(tenant, &call.id, &p.user_id, at).await {
                Ok(t) => rings.push(t),
                Err(e) => {
                    for t in &rings {
                        self.cancel_timer(t).await;
                    }
                    return Err(e.into());
                }
            }
        }
        let committed = self
            .0
            .store
            .commit(tenant, &call, 0, &[initiator.to_owned()], &[], None)
            .await;
        if !matches!(committed, Ok(Commit::Done(_))) {
            for t in &rings {
                self.cancel_timer(t).await;
            }
        }
        match committed? {
            Commit::Full => Err(full()),
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
            // Ringing timers of invitees are stored before the commit (a stray one finds
            // nothing to do); a failure refuses the request instead of a timer-less ring.
            for n in &out.notices {
                if let Notice::Invited(u) = n {
                    let at = out.call.participant(u).map_or(now_ms(), |p| p.invited_at)
                        + self.0.rules.ringing_timeout_ms;
                    self.schedule_ring(tenant, call_id, u, at).await?;
                }
            }
            let record = if out.call.state == CallState::Ended {
                self.outbox_record(tenant, &out.call).await?
            } else {
                None
            };
            match self
                .0
                .store
                .commit(
                    tenant,
                    &out.call,
                    version,
                    &claims,
                    &releases,
                    record.as_deref(),
                )
                .await?
            {
                Commit::Done(_) => {
                    self.announce(app, tenant, &out).await;
                    return Ok(out.call);
                }
                Commit::Full => return Err(full()),
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
                    // Its ringing timer was stored before the commit.
                    app.emit(
                        WEBRTC,
                        user_room(tenant, u),
                        "call:incoming",
                        json!(CallAck { call: call.clone() }),
                    )
                    .await;
                }
                Notice::Answered(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all("call:answered", json!(CallUser { call, user_id: u })).await;
                }
                Notice::Rejected(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all("call:rejected", json!(CallUser { call, user_id: u })).await;
                }
                Notice::Joined(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all(
                        "call:participant-joined",
                        json!(CallUser { call, user_id: u }),
                    )
                    .await;
                }
                Notice::Left(u) => {
                    self.cancel(tenant, &call.id, TimerKind::Ring, u).await;
                    to_all(
                        "call:participant-left",
                        json!(CallUser { call, user_id: u }),
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
                    // The record was queued by the commit; embedded mode writes it now
                    // (a client told the call ended can read it back), otherwise it is
                    // written in the background and `call:ended` does not wait.
                    self.ended_history(tenant, call).await;
                    app.metrics.call_ended(reason.as_str());
                    to_all(
                        "call:ended",
                        json!(CallEnded {
                            call,
                            reason: *reason
                        }),
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

    /// Store a ringing timer; the caller refuses the request when this fails.
    async fn schedule_ring(
        &self,
        tenant: &str,
        call_id: &str,
        user: &str,
        at: i64,
    ) -> Result<Timer, StoreError> {
        let t = Timer {
            tenant: tenant.into(),
            call_id: call_id.into(),
            kind: TimerKind::Ring,
            user_id: user.into(),
        };
        self.0.store.schedule(&t, at).await?;
        Ok(t)
    }

    async fn cancel_timer(&self, t: &Timer) {
        if let Err(e) = self.0.store.cancel(t).await {
            tracing::warn!(error = %e, call = %t.call_id, "call timer not cancelled; it will find nothing to do");
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

    /// The history record of a call that ends: quality summarized from its samples.
    async fn history_record(&self, tenant: &str, call: &Call) -> CallRecord {
        let samples = self.0.store.samples(tenant, Some(&call.id)).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, call = %call.id, "quality samples unavailable; history gets an empty summary");
            Vec::new()
        });
        CallRecord::of(
            tenant,
            call,
            quality::summarize(&samples, &self.0.thresholds),
        )
    }

    /// The record the ending commit queues in the outbox (none when written directly).
    async fn outbox_record(&self, tenant: &str, call: &Call) -> Result<Option<String>, StoreError> {
        if self.0.history_path == HistoryPath::Direct {
            return Ok(None);
        }
        let rec = self.history_record(tenant, call).await;
        Ok(Some(serde_json::to_string(&rec)?))
    }

    /// After the commit that ended `call`: see its record written (embedded), write it
    /// (direct), or start a background drain of the outbox.
    async fn ended_history(&self, tenant: &str, call: &Call) {
        match self.0.history_path {
            HistoryPath::Direct => {
                let rec = self.history_record(tenant, call).await;
                if let Err(e) = self.0.history.record(&rec).await {
                    tracing::error!(error = %e, call = %call.id, "call history write failed");
                }
            }
            HistoryPath::Inline => {
                if let Err(e) = self.drain_history().await {
                    tracing::warn!(error = %e, "call history outbox not drained");
                }
            }
            HistoryPath::Outbox => {
                let me = self.clone();
                tokio::spawn(
                    async move {
                        if let Err(e) = me.drain_in_background().await {
                            tracing::warn!(error = %e, "call history outbox not drained; retried every {OUTBOX_POLL:?}");
                        }
                    }
                    .instrument(tracing::info_span!("call_history")),
                );
            }
        }
    }

    /// [`Calls::drain_history`], unless this node is draining already.
    async fn drain_in_background(&self) -> Result<usize, StoreError> {
        use std::sync::atomic::Ordering;
        if self.0.draining.swap(true, Ordering::SeqCst) {
            return Ok(0);
        }
        let r = self.drain_history().await;
        self.0.draining.store(false, Ordering::SeqCst);
        r
    }

    /// Write queued history records until the outbox is empty or the database fails;
    /// returns how many were written. Any node may run this at any time: a record written
    /// twice (two nodes, or a node dying between write and removal) is ignored by the
    /// database's `_id` check.
    pub async fn drain_history(&self) -> Result<usize, StoreError> {
        let mut written = 0;
        loop {
            let batch = self.0.store.outbox(OUTBOX_BATCH).await?;
            if batch.is_empty() {
                return Ok(written);
            }
            for (tenant, json) in &batch {
                match serde_json::from_str::<CallRecord>(json) {
                    Ok(rec) if rec.tenant == *tenant => {
                        self.0.history.record(&rec).await?;
                        written += 1;
                    }
                    Ok(_) | Err(_) => {
                        tracing::error!(tenant = %tenant, "unreadable call history record dropped from the outbox");
                    }
                }
                self.0.store.outbox_done(tenant, json).await?;
            }
            if batch.len() < OUTBOX_BATCH {
                return Ok(written);
            }
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
        self.local()
            .insert(conn.to_owned(), (tenant.to_owned(), user.to_owned()));
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
        self.disconnected_within(tenant, user, conn, node, None)
            .await
    }

    /// [`Calls::disconnected`], with a grace of at least `at_least` (a connection a
    /// drain closed: its client is reconnecting to another node).
    pub async fn disconnected_within(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
        at_least: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.local().remove(conn);
        if self.0.store.conn_down(tenant, user, conn, node).await? > 0 {
            return Ok(());
        }
        if let Some(call_id) = self.0.store.user_call(tenant, user).await? {
            let grace = at_least.map_or(self.0.grace_ms, |d| self.0.grace_ms.max(ms(d)));
            let at = now_ms() + grace;
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
        let timers = tokio::spawn(
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
        if self.0.history_path == HistoryPath::Outbox {
            let me = self.clone();
            let outbox = tokio::spawn(
                async move {
                    let mut interval = tokio::time::interval(OUTBOX_POLL);
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        interval.tick().await;
                        match me.drain_in_background().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(records = n, "call history outbox drained"),
                            Err(e) => tracing::warn!(error = %e, "call history outbox not drained; retrying"),
                        }
                    }
                }
                .instrument(tracing::info_span!("call_history_outbox")),
            );
            self.tasks().push(outbox);
        }
        let me = self.clone();
        let liveness = tokio::spawn(
            async move {
                let node = app.node_id.clone();
                let ttl = app.config.presence.heartbeat_ttl.0;
                let mut interval = tokio::time::interval(ttl / 3);
                loop {
                    interval.tick().await;
                    if let Err(e) = me.liveness_tick(&node, ms(ttl)).await {
                        tracing::warn!(error = %e, "call node heartbeat or dead-node sweep failed");
                    }
                    match me.0.store.live_calls(now_ms()).await {
                        Ok(n) => {
                            app.metrics.calls_active.set(n as i64);
                        }
                        Err(e) => tracing::debug!(error = %e, "live calls not counted"),
                    }
                    match me.0.store.outbox_stats().await {
                        Ok(stats) => {
                            let m = &app.metrics;
                            m.call_history_outbox
                                .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
                            let counted = m
                                .bounds_reached
                                .get_or_create(&crate::metrics::KindLabel {
                                    kind: "call_history_outbox".into(),
                                })
                                .clone();
                            let new = stats.dropped.saturating_sub(counted.get());
                            if new > 0 {
                                counted.inc_by(new);
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "call history outbox not measured"),
                    }
                }
            }
            .instrument(tracing::info_span!("call_liveness")),
        );
        self.tasks().extend([timers, liveness]);
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.0.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At shutdown: stop the background loops. Timers this node would have fired are
    /// fired by the other nodes (they live in the store).
    pub fn stop(&self) {
        for t in self.tasks().drain(..) {
            t.abort();
        }
    }

    /// Resolves once no history write of this node is running; then writes what the
    /// outbox still holds, so the calls this node ended are recorded before it exits
    /// (another node would take them, later).
    pub async fn settle(&self) {
        use std::sync::atomic::Ordering;
        if self.0.history_path != HistoryPath::Outbox {
            return;
        }
        while self.0.draining.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self.drain_in_background().await {
            tracing::warn!(error = %e, "call history outbox not drained at shutdown; another node will");
        }
    }

    /// Take down the /webrtc connections this node id left behind in an earlier life.
    /// Awaited before the node accepts connections, so it never sweeps a new one.
    pub async fn sweep_earlier_life(&self, node: &str) {
        if let Err(e) = self.sweep(vec![node.to_owned()], false).await {
            tracing::warn!(error = %e, "connections of this node's earlier life not swept");
        }
    }

    /// One round of liveness: renew this node's heartbeat; if it had lapsed (or this node
    /// was swept as dead meanwhile), register its live connections again so their
    /// users' calls go on; then sweep the nodes that are dead.
    pub async fn liveness_tick(&self, node: &str, ttl_ms: i64) -> Result<(), StoreError> {
        let was_alive = self.0.store.heartbeat(node, ttl_ms).await?;
        let local: Vec<(String, (String, String))> = self
            .local()
            .iter()
            .map(|(c, tu)| (c.clone(), tu.clone()))
            .collect();
        if !local.is_empty() && (!was_alive || !self.0.store.node_known(node).await?) {
            tracing::warn!(
                connections = local.len(),
                "this node's heartbeat lapsed; registering its /webrtc connections again"
            );
            for (conn, (t, u)) in &local {
                self.connected(t, u, conn, node).await?;
            }
        }
        let dead = self.0.store.claim_dead_nodes(node).await?;
        self.sweep(dead, true).await
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.0.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fire the timers due now; returns how many were taken.
    pub async fn fire_due(&self, app: &App) -> Result<usize, StoreError> {
        let now = now_ms();
        let lease = now + TIMER_LEASE_MS;
        let due = self.0.store.due(now, TIMER_LEASE_MS, TIMER_BATCH).await?;
        for t in &due {
            // Cancelled or rescheduled since `due` took it: not ours to act on.
            if !self.0.store.leased(t, lease).await? {
                continue;
            }
            // A user who reconnected (on any node) is not disconnected.
            if t.kind == TimerKind::Grace
                && self.0.store.conn_count(&t.tenant, &t.user_id).await? > 0
            {
                self.0.store.finish(t, lease).await?;
                continue;
            }
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
            self.0.store.finish(t, lease).await?;
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
        before: Option<&Cursor>,
    ) -> Result<Vec<HistoryEntry>, AckError> {
        Ok(self
            .0
            .history
            .list(tenant, user, limit, before)
            .await?
            .iter()
            .map(HistoryEntry::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::app::Stores;
    use crate::auth::Verifier;
    use crate::calls::{CallState, Commit, OutboxStats, Sample};
    use crate::presence::tracker::LocalBus;

    /// The memory store, with faults on demand: timers that cannot be stored, and a
    /// cancel that lands between `due` and the firing (another node's, say).
    #[derive(Default)]
    struct Faulty {
        inner: MemoryCalls,
        fail_schedule: AtomicBool,
        cancel_after_due: AtomicBool,
    }

    #[async_trait]
    impl CallStore for Faulty {
        async fn load(&self, t: &str, c: &str) -> Result<Option<(Call, u64)>, StoreError> {
            self.inner.load(t, c).await
        }
        async fn commit(
            &self,
            t: &str,
            call: &Call,
            expected: u64,
            claims: &[String],
            releases: &[String],
            record: Option<&str>,
        ) -> Result<Commit, StoreError> {
            self.inner
                .commit(t, call, expected, claims, releases, record)
                .await
        }
        async fn outbox(&self, max: usize) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.outbox(max).await
        }
        async fn outbox_done(&self, t: &str, r: &str) -> Result<(), StoreError> {
            self.inner.outbox_done(t, r).await
        }
        async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
            self.inner.outbox_stats().await
        }
        async fn user_call(&self, t: &str, u: &str) -> Result<Option<String>, StoreError> {
            self.inner.user_call(t, u).await
        }
        async fn schedule(&self, timer: &Timer, at: i64) -> Result<(), StoreError> {
            if self.fail_schedule.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("timers down".into()));
            }
            self.inner.schedule(timer, at).await
        }
        async fn cancel(&self, timer: &Timer) -> Result<(), StoreError> {
            self.inner.cancel(timer).await
        }
        async fn due(&self, now: i64, lease: i64, max: usize) -> Result<Vec<Timer>, StoreError> {
            let due = self.inner.due(now, lease, max).await?;
            if self.cancel_after_due.load(Ordering::SeqCst) {
                for t in &due {
                    self.inner.cancel(t).await?;
                }
            }
            Ok(due)
        }
        async fn leased(&self, timer: &Timer, lease: i64) -> Result<bool, StoreError> {
            self.inner.leased(timer, lease).await
        }
        async fn finish(&self, timer: &Timer, lease: i64) -> Result<(), StoreError> {
            self.inner.finish(timer, lease).await
        }
        async fn add_sample(&self, t: &str, c: &str, s: &Sample) -> Result<(), StoreError> {
            self.inner.add_sample(t, c, s).await
        }
        async fn samples(&self, t: &str, c: Option<&str>) -> Result<Vec<Sample>, StoreError> {
            self.inner.samples(t, c).await
        }
        async fn conn_up(&self, t: &str, u: &str, c: &str, n: &str) -> Result<(), StoreError> {
            self.inner.conn_up(t, u, c, n).await
        }
        async fn conn_count(&self, t: &str, u: &str) -> Result<usize, StoreError> {
            self.inner.conn_count(t, u).await
        }
        async fn conn_down(&self, t: &str, u: &str, c: &str, n: &str) -> Result<usize, StoreError> {
            self.inner.conn_down(t, u, c, n).await
        }
        async fn heartbeat(&self, n: &str, ttl: i64) -> Result<bool, StoreError> {
            self.inner.heartbeat(n, ttl).await
        }
        async fn node_known(&self, n: &str) -> Result<bool, StoreError> {
            self.inner.node_known(n).await
        }
        async fn claim_dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError> {
            self.inner.claim_dead_nodes(me).await
        }
        async fn node_conns(&self, n: &str) -> Result<Vec<(String, String, String)>, StoreError> {
            self.inner.node_conns(n).await
        }
        async fn forget_node(&self, n: &str) -> Result<(), StoreError> {
            self.inner.forget_node(n).await
        }
        async fn live_calls(&self, now: i64) -> Result<u64, StoreError> {
            self.inner.live_calls(now).await
        }
    }

    fn setup() -> (App, Calls, Arc<Faulty>, Arc<MemoryCallHistory>) {
        let mut config = DataplaneConfig::default();
        config.jwt.secret = Some("a test secret of thirty-two bytes!!".into());
        let app = App::new(
            config.clone(),
            "n1".into(),
            Verifier::new(&config.jwt).expect("verifier"),
            Stores::memory(&config),
            Arc::new(LocalBus::default()),
            None,
        );
        let store = Arc::new(Faulty::default());
        let history = Arc::new(MemoryCallHistory::new(100));
        let calls = Calls::new(store.clone(), history.clone(), &config, false);
        (app, calls, store, history)
    }

    fn grace(call_id: &str, user: &str) -> Timer {
        Timer {
            tenant: "t".into(),
            call_id: call_id.into(),
            kind: TimerKind::Grace,
            user_id: user.into(),
        }
    }

    async fn active_call(app: &App, calls: &Calls) -> Call {
        let call = calls
            .initiate(app, "t", "alice", "bob", Media::Audio)
            .await
            .expect("initiate");
        let user = "bob".to_owned();
        calls
            .act(app, "t", &call.id, Event::Answer { user })
            .await
            .expect("answer")
    }

    #[tokio::test]
    async fn a_grace_timer_spares_a_user_who_is_connected() {
        let (app, calls, store, _) = setup();
        let call = active_call(&app, &calls).await;
        // bob reconnected (on some node) but the grace timer was not called off.
        store.conn_up("t", "bob", "n2/x", "n2").await.unwrap();
        store.schedule(&grace(&call.id, "bob"), 0).await.unwrap();
        assert_eq!(calls.fire_due(&app).await.unwrap(), 1);
        let (now, _) = store.load("t", &call.id).await.unwrap().unwrap();
        assert_eq!(now.state, CallState::Active, "connected: not disconnected");
        assert!(
            store.due(i64::MAX / 2, 1, 10).await.unwrap().is_empty(),
            "the spent timer is gone"
        );
        // Without a connection the same timer ends the call.
        assert_eq!(store.conn_down("t", "bob", "n2/x", "n2").await.unwrap(), 0);
        store.schedule(&grace(&call.id, "bob"), 0).await.unwrap();
        calls.fire_due(&app).await.unwrap();
        let (now, _) = store.load("t", &call.id).await.unwrap().unwrap();
        assert_eq!(now.end_reason, Some(EndReason::Disconnected));
    }

    #[tokio::test]
    async fn a_participant_a_drain_closed_keeps_the_call_for_the_reconnect_grace() {
        let (app, calls, store, _) = setup();
        let call = active_call(&app, &calls).await;
        let reconnect = Duration::from_secs(30);
        calls.connected("t", "bob", "n1/a", "n1").await.unwrap();
        calls
            .disconnected_within("t", "bob", "n1/a", "n1", Some(reconnect))
            .await
            .unwrap();
        // Not due after `calls.disconnect_grace` (10s), only after the reconnect grace.
        let at = now_ms();
        assert!(store.due(at + 11_000, 1, 10).await.unwrap().is_empty());
        let due = store.due(at + 31_000, 1, 10).await.unwrap();
        assert_eq!(due, vec![grace(&call.id, "bob")]);
        // Back on another node: the grace is called off and the call goes on.
        calls.connected("t", "bob", "n2/b", "n2").await.unwrap();
        assert!(store.due(i64::MAX / 2, 1, 10).await.unwrap().is_empty());
        let (now, _) = store.load("t", &call.id).await.unwrap().unwrap();
        assert_eq!(now.state, CallState::Active);
        // An ordinary disconnect keeps the configured grace.
        calls.disconnected("t", "bob", "n2/b", "n2").await.unwrap();
        let at = now_ms();
        assert_eq!(store.due(at + 11_000, 1, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_timer_cancelled_after_it_was_taken_does_not_act() {
        let (app, calls, store, _) = setup();
        let call = active_call(&app, &calls).await;
        store.cancel_after_due.store(true, Ordering::SeqCst);
        store.schedule(&grace(&call.id, "bob"), 0).await.unwrap();
        assert_eq!(calls.fire_due(&app).await.unwrap(), 1);
        let (now, _) = store.load("t", &call.id).await.unwrap().unwrap();
        assert_eq!(now.state, CallState::Active);
    }

    #[tokio::test]
    async fn no_call_rings_without_its_timer() {
        let (app, calls, store, history) = setup();
        store.fail_schedule.store(true, Ordering::SeqCst);
        let e = calls
            .initiate(&app, "t", "alice", "bob", Media::Audio)
            .await
            .expect_err("refused");
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(store.user_call("t", "bob").await.unwrap(), None, "no call");
        let others = ["bob".to_owned(), "carol".to_owned()];
        let e = calls
            .create_group(&app, "t", "alice", &others, Media::Audio)
            .await
            .expect_err("refused");
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(store.user_call("t", "alice").await.unwrap(), None);
        // Timers back: the call rings, and its timer is there.
        store.fail_schedule.store(false, Ordering::SeqCst);
        let call = calls
            .initiate(&app, "t", "alice", "bob", Media::Audio)
            .await
            .expect("initiate");
        let ring = Timer {
            tenant: "t".into(),
            call_id: call.id.clone(),
            kind: TimerKind::Ring,
            user_id: "bob".into(),
        };
        assert_eq!(store.due(i64::MAX / 2, 1, 10).await.unwrap(), vec![ring]);
        // An embedded node writes history before call:ended: readable at once.
        let user = "bob".to_owned();
        calls
            .act(&app, "t", &call.id, Event::Hangup { user })
            .await
            .expect("hangup");
        let h = history.list("t", "alice", 10, None).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(
            h[0].end_reason,
            EndReason::Rejected,
            "a ringing callee's hangup"
        );
        assert!(store.outbox(10).await.unwrap().is_empty());
    }
}
