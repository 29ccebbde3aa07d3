//! The node's presence service: applies changes through the store, publishes them on the
//! bus, keeps the read cache, tracks local connections for idle detection, heartbeats,
//! and expires the connections of dead nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_crds::config::PresenceConfig;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::Instrument;

use super::cache::{Cache, Cached};
use super::{
    BusMsg, Change, Device, Manual, Origin, Presence, PresenceStore, Transition, Update, aggregate,
    date_of, newer,
};
use crate::app::now_ms;
use crate::error::StoreError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::online::OnlineStore;

/// The /presence namespace.
pub const PRESENCE: &str = "/presence";
/// Users whose forwarded activity this node remembers at most (see [`Tracker::activity`]).
pub const MAX_FORWARDED: usize = 100_000;

/// Socket.IO room of the sockets subscribed to a user's presence.
pub fn watch_room(tenant: &str, user_id: &str) -> String {
    format!("t:{tenant}:p:{user_id}")
}

/// Presence updates between nodes.
#[async_trait]
pub trait Bus: Send + Sync {
    async fn publish(&self, msg: &BusMsg) -> Result<(), StoreError>;
    /// A stream of every update published by any node (this one included).
    fn subscribe(&self) -> broadcast::Receiver<BusMsg>;
}

/// Embedded mode: an in-process channel.
pub struct LocalBus(broadcast::Sender<BusMsg>);

impl Default for LocalBus {
    fn default() -> Self {
        Self(broadcast::channel(4096).0)
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, msg: &BusMsg) -> Result<(), StoreError> {
        let _ = self.0.send(msg.clone());
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<BusMsg> {
        self.0.subscribe()
    }
}

/// A connection on this node.
#[derive(Clone, Debug)]
struct LocalConn {
    last_active: Instant,
    idle: bool,
}

/// This node's connections, by (tenant, user) then connection id, so activity touches
/// only the user's own connections.
type LocalConns = HashMap<(String, String), HashMap<String, LocalConn>>;

#[derive(Clone)]
pub struct Tracker(Arc<Inner>);

struct Inner {
    store: Arc<dyn PresenceStore>,
    /// The /chat online flags: swept with the presence devices of a dead node.
    online: Arc<dyn OnlineStore>,
    bus: Arc<dyn Bus>,
    node: String,
    cfg: PresenceConfig,
    metrics: Metrics,
    cache: Mutex<Cache>,
    local: Mutex<LocalConns>,
    /// When activity of a user without local connections was last forwarded.
    forwarded: Mutex<HashMap<(String, String), Instant>>,
    hub: OnceLock<Arc<dyn Hub>>,
    /// The background loops of [`Tracker::spawn`]; [`Tracker::shutdown`] stops them (the
    /// heartbeat above all: a drained node's last heartbeat must be allowed to lapse).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Some connection was released ([`Tracker::release`]): its device waits for the
    /// node's last heartbeat to lapse.
    released: std::sync::atomic::AtomicBool,
}

/// Which local connections change idleness at `now` (pure; tested with paused time).
fn idle_transitions(
    conns: &LocalConns,
    now: Instant,
    timeout: Duration,
) -> Vec<(String, String, String, bool)> {
    conns
        .iter()
        .flat_map(|((t, u), cs)| {
            cs.iter().filter_map(move |(id, c)| {
                let idle = now.saturating_duration_since(c.last_active) >= timeout;
                (idle != c.idle).then(|| (t.clone(), u.clone(), id.clone(), idle))
            })
        })
        .collect()
}

impl Tracker {
    pub fn new(
        store: Arc<dyn PresenceStore>,
        online: Arc<dyn OnlineStore>,
        bus: Arc<dyn Bus>,
        node: String,
        cfg: PresenceConfig,
        metrics: Metrics,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            online,
            bus,
            node,
            cfg,
            metrics,
            cache: Mutex::default(),
            local: Mutex::default(),
            forwarded: Mutex::default(),
            hub: OnceLock::new(),
            tasks: Mutex::default(),
            released: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn set_hub(&self, hub: Arc<dyn Hub>) {
        let _ = self.0.hub.set(hub);
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.0.cfg
    }

    /// Apply a change, record analytics, publish the result.
    async fn change(
        &self,
        tenant: &str,
        user: &str,
        change: Change,
    ) -> Result<Option<Presence>, StoreError> {
        let now = now_ms();
        let Some((snap, transition)) = self.0.store.change(tenant, user, &change, now).await?
        else {
            return Ok(None);
        };
        if transition != Transition::None {
            let online = self
                .0
                .store
                .record(tenant, user, transition, &date_of(now))
                .await?;
            self.0
                .metrics
                .presence_online
                .get_or_create(&crate::metrics::TenantLabel {
                    tenant: tenant.into(),
                })
                .set(online as i64);
        }
        let presence = aggregate(user, &snap, now);
        self.0
            .bus
            .publish(&BusMsg::Update(Update {
                tenant: tenant.into(),
                version: snap.version,
                presence: presence.clone(),
                origin: Some(Origin {
                    node: self.0.node.clone(),
                    sent_ms: now_ms(),
                }),
            }))
            .await?;
        Ok(Some(presence))
    }

    pub async fn connect(&self, tenant: &str, user: &str, conn: &str) -> Result<(), StoreError> {
        self.0
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((tenant.into(), user.into()))
            .or_default()
            .insert(
                conn.into(),
                LocalConn {
                    last_active: Instant::now(),
                    idle: false,
                },
            );
        let device = Device {
            conn: conn.into(),
            node: self.0.node.clone(),
            idle: false,
        };
        self.change(tenant, user, Change::Connect(device))
            .await
            .map(|_| ())
    }

    pub async fn disconnect(&self, tenant: &str, user: &str, conn: &str) -> Result<(), StoreError> {
        self.forget_local(tenant, user, conn);
        self.change(tenant, user, Change::Disconnect { conn: conn.into() })
            .await
            .map(|_| ())
    }

    /// A connection a drain closed: this node forgets it, but its device stays in the
    /// store, so a user who reconnects to another node never shows offline meanwhile.
    /// It goes with the rest of this node's devices when the node's last heartbeat lapses
    /// ([`Tracker::shutdown`] sets it to `server.reconnect_grace`) and a surviving node
    /// sweeps them; a user who did not come back goes offline then.
    pub fn release(&self, tenant: &str, user: &str, conn: &str) {
        self.0
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.forget_local(tenant, user, conn);
    }

    fn forget_local(&self, tenant: &str, user: &str, conn: &str) {
        let mut local = self.0.local.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), user.to_owned());
        if let Some(cs) = local.get_mut(&key) {
            cs.remove(conn);
            if cs.is_empty() {
                local.remove(&key);
            }
        }
    }

    /// Activity from any of the user's sockets on this node: wakes their idle connections
    /// here, or, when this node holds none, tells the nodes that do (at most once per
    /// quarter of the idle timeout per user).
    pub fn activity(&self, tenant: &str, user: &str) {
        if self.wake_local(tenant, user) {
            return;
        }
        let now = Instant::now();
        let every = self.0.cfg.idle_timeout.0 / 4;
        {
            let mut fwd = self.0.forwarded.lock().unwrap_or_else(|e| e.into_inner());
            let key = (tenant.to_owned(), user.to_owned());
            if fwd
                .get(&key)
                .is_some_and(|at| now.saturating_duration_since(*at) < every)
            {
                return;
            }
            if fwd.len() >= MAX_FORWARDED {
                fwd.clear();
            }
            fwd.insert(key, now);
        }
        let (bus, msg) = (
            self.0.bus.clone(),
            BusMsg::Activity {
                tenant: tenant.into(),
                user_id: user.into(),
            },
        );
        tokio::spawn(async move {
            if let Err(e) = bus.publish(&msg).await {
                tracing::warn!(error = %e, "presence activity not forwarded");
            }
        });
    }

    /// Refresh this node's connections of the user; returns whether it holds any.
    fn wake_local(&self, tenant: &str, user: &str) -> bool {
        let woke: Vec<String> = {
            let mut local = self.0.local.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let Some(cs) = local.get_mut(&(tenant.to_owned(), user.to_owned())) else {
                return false;
            };
            cs.iter_mut()
                .filter_map(|(id, c)| {
                    c.last_active = now;
                    std::mem::replace(&mut c.idle, false).then(|| id.clone())
                })
                .collect()
        };
        for conn in woke {
            let (me, t, u) = (self.clone(), tenant.to_owned(), user.to_owned());
            tokio::spawn(async move {
                if let Err(e) = me.change(&t, &u, Change::Idle { conn, idle: false }).await {
                    tracing::warn!(error = %e, "presence activity not stored");
                }
            });
        }
        true
    }

    pub async fn set_status(
        &self,
        tenant: &str,
        user: &str,
        manual: Option<Manual>,
    ) -> Result<Presence, StoreError> {
        match self.change(tenant, user, Change::SetManual(manual)).await? {
            Some(p) => Ok(p),
            None => Ok(self.get(tenant, &[user.to_owned()]).await?.remove(0)),
        }
    }

    /// Presences of `users`: from the cache when fresh, else from the store (all the
    /// missing ones in one store call).
    pub async fn get(&self, tenant: &str, users: &[String]) -> Result<Vec<Presence>, StoreError> {
        self.get_followed(tenant, users, |_| false).await
    }

    /// [`Tracker::get`] where `followed(user)` says this node follows the user's updates
    /// (the asking socket holds a subscription to them): their cached entry is served
    /// whatever its age, as every update since it was cached has reached the cache.
    pub async fn get_followed(
        &self,
        tenant: &str,
        users: &[String],
        followed: impl Fn(&str) -> bool,
    ) -> Result<Vec<Presence>, StoreError> {
        let ttl = self.0.cfg.cache_ttl.0;
        let now = Instant::now();
        let mut out: Vec<Option<Presence>> = {
            let cache = self.cache();
            users
                .iter()
                .map(|u| {
                    cache
                        .trusted(tenant, u, now, ttl, followed(u))
                        .map(|c| c.presence.clone())
                })
                .collect()
        };
        let missing: Vec<String> = users
            .iter()
            .zip(&out)
            .filter(|(_, p)| p.is_none())
            .map(|(u, _)| u.clone())
            .collect();
        if !missing.is_empty() {
            let snaps = self.0.store.snapshots(tenant, &missing).await?;
            let ms = now_ms();
            let mut fetched = HashMap::new();
            {
                let mut cache = self.cache();
                for (u, s) in missing.iter().zip(snaps) {
                    let p = aggregate(u, &s, ms);
                    let old = cache.get(tenant, u).cloned();
                    if old.as_ref().is_none_or(|c| s.version >= c.version) {
                        let delivered = old.map_or(0, |c| c.delivered);
                        cache.put(
                            tenant,
                            u,
                            Cached {
                                version: s.version,
                                presence: p.clone(),
                                at: now,
                                delivered,
                            },
                            ttl,
                        );
                    }
                    fetched.insert(u.clone(), p);
                }
            }
            for (u, slot) in users.iter().zip(out.iter_mut()) {
                if slot.is_none() {
                    *slot = fetched.get(u).cloned();
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An update from the bus: cache it if newer, then tell this node's subscribers.
    /// The cache changes before the event goes out, so a read after the event is fresh.
    pub async fn on_update(&self, u: Update) {
        if let Some(lag) = super::cross_node_lag(&u, &self.0.node, now_ms()) {
            self.0.metrics.cross_node_lag.observe(lag.as_secs_f64());
        }
        let user = u.presence.user_id.clone();
        // What to emit: the newest state this node knows, if its subscribers have not had it.
        let emit = {
            let mut cache = self.cache();
            let old = cache.get(&u.tenant, &user).cloned();
            if !newer(old.as_ref().map(|c| c.delivered), u.version) {
                None
            } else {
                // A read may already hold a newer state than this update: that one goes out.
                let (version, presence) = match old {
                    Some(c) if c.version > u.version => (c.version, c.presence),
                    _ => (u.version, u.presence),
                };
                cache.put(
                    &u.tenant,
                    &user,
                    Cached {
                        version,
                        presence: presence.clone(),
                        at: Instant::now(),
                        delivered: version,
                    },
                    self.0.cfg.cache_ttl.0,
                );
                Some(presence)
            }
        };
        if let (Some(presence), Some(hub)) = (emit, self.0.hub.get()) {
            self.0.metrics.broadcast(PRESENCE, "presence:update");
            let room = watch_room(&u.tenant, &presence.user_id);
            hub.emit_local(
                PRESENCE,
                room,
                "presence:update",
                serde_json::json!(super::events::PresenceAck { presence }),
            )
            .await;
        }
    }

    /// Background work: bus listener, idle ticker, heartbeat and dead-node reaper.
    pub fn spawn(&self) {
        let me = self.clone();
        let mut rx = self.0.bus.subscribe();
        let handle = tokio::spawn(
            async move {
                loop {
                    match rx.recv().await {
                        Ok(BusMsg::Update(u)) => me.on_update(u).await,
                        Ok(BusMsg::Activity { tenant, user_id }) => {
                            me.wake_local(&tenant, &user_id);
                        }
                        Ok(BusMsg::Resync) => {
                            // Updates published while the subscription was down are lost.
                            tracing::warn!(
                                "presence bus reconnected; cached presences are read again"
                            );
                            me.cache().distrust(Instant::now());
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Missed updates: reads go to the store again.
                            tracing::warn!(
                                missed = n,
                                "presence bus lagged; cached presences are read again"
                            );
                            me.cache().distrust(Instant::now());
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            .instrument(tracing::info_span!("presence_bus")),
        );
        self.tasks().push(handle);
        let me = self.clone();
        let handle = tokio::spawn(
            async move {
                let idle = me.0.cfg.idle_timeout.0;
                let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    me.idle_tick().await;
                }
            }
            .instrument(tracing::info_span!("presence_idle")),
        );
        self.tasks().push(handle);
        let me = self.clone();
        let handle = tokio::spawn(
            async move {
                let ttl = me.0.cfg.heartbeat_ttl.0;
                let mut interval = tokio::time::interval(ttl / 3);
                loop {
                    interval.tick().await;
                    if let Err(e) = me.0.store.heartbeat(&me.0.node, ttl).await {
                        tracing::warn!(error = %e, "presence heartbeat failed");
                    }
                    if let Err(e) = me.reap().await {
                        tracing::warn!(error = %e, "dead-node sweep failed");
                    }
                }
            }
            .instrument(tracing::info_span!("presence_liveness")),
        );
        self.tasks().push(handle);
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.0.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark local connections idle or active as their last activity says.
    pub async fn idle_tick(&self) {
        let changes: Vec<(String, String, String, bool)> = {
            let mut local = self.0.local.lock().unwrap_or_else(|e| e.into_inner());
            let t = idle_transitions(&local, Instant::now(), self.0.cfg.idle_timeout.0);
            for (tenant, user, id, idle) in &t {
                if let Some(c) = local
                    .get_mut(&(tenant.clone(), user.clone()))
                    .and_then(|cs| cs.get_mut(id))
                {
                    c.idle = *idle;
                }
            }
            t
        };
        for (t, u, conn, idle) in changes {
            if let Err(e) = self.change(&t, &u, Change::Idle { conn, idle }).await {
                tracing::warn!(error = %e, "presence idle change not stored");
            }
        }
    }

    /// Expire the connections of nodes whose heartbeat is gone: their presence devices
    /// and their /chat online flags.
    pub async fn reap(&self) -> Result<(), StoreError> {
        for node in self.0.store.dead_nodes().await? {
            if node == self.0.node || !self.0.store.claim_reap(&node).await? {
                continue;
            }
            let conns = self.0.store.node_conns(&node).await?;
            tracing::warn!(node = %node, connections = conns.len(), "node heartbeat expired (the node died, or drained and these clients did not come back); taking them offline");
            for (t, u, conn) in conns {
                self.change(&t, &u, Change::Disconnect { conn }).await?;
            }
            let flags = self.0.online.sweep_node(&node).await?;
            tracing::warn!(node = %node, online_flags = flags, "online flags of a dead node swept");
            self.0.store.forget_node(&node).await?;
        }
        Ok(())
    }

    /// Before the node accepts connections: remove the devices this node id left behind
    /// in an earlier life (a drain leaves them to lapse; a node back under the same id
    /// would keep them alive with its own heartbeat).
    pub async fn sweep_earlier_life(&self) {
        let swept = async {
            for (t, u, conn) in self.0.store.node_conns(&self.0.node).await? {
                self.change(&t, &u, Change::Disconnect { conn }).await?;
            }
            self.0.online.sweep_node(&self.0.node).await?;
            Ok::<(), StoreError>(())
        };
        if let Err(e) = swept.await {
            tracing::warn!(error = %e, "presence devices of this node's earlier life not swept");
        }
    }

    /// On graceful shutdown: stop the background loops; take the connections that are
    /// still open out of presence now; leave the devices of connections a drain closed
    /// ([`Tracker::release`]) for `linger` (the node's last heartbeat), after which a
    /// surviving node sweeps the ones whose users did not come back.
    pub async fn shutdown(&self, linger: Duration) {
        for t in self.tasks().drain(..) {
            t.abort();
        }
        if self.0.released.load(std::sync::atomic::Ordering::SeqCst)
            && let Err(e) = self.0.store.heartbeat(&self.0.node, linger).await
        {
            tracing::warn!(error = %e, "last presence heartbeat not written; drained devices expire with the previous one");
        }
        let conns: Vec<(String, String, String)> = {
            let local = self.0.local.lock().unwrap_or_else(|e| e.into_inner());
            local
                .iter()
                .flat_map(|((t, u), cs)| cs.keys().map(move |c| (t.clone(), u.clone(), c.clone())))
                .collect()
        };
        for (t, u, c) in conns {
            if let Err(e) = self.disconnect(&t, &u, &c).await {
                tracing::warn!(error = %e, "presence not cleared at shutdown");
            }
        }
    }

    /// Count of local connections (for tests and metrics).
    pub fn local_connections(&self) -> usize {
        self.0
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_conns(last_active: Instant, idle: bool) -> LocalConns {
        let mut m = LocalConns::new();
        m.entry(("t".into(), "u".into()))
            .or_default()
            .insert("a".into(), LocalConn { last_active, idle });
        m
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_timeout_without_activity() {
        let timeout = Duration::from_secs(300);
        let start = Instant::now();
        let conns = mk_conns(start, false);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(idle_transitions(&conns, Instant::now(), timeout).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let one = |idle| vec![("t".to_owned(), "u".to_owned(), "a".to_owned(), idle)];
        assert_eq!(idle_transitions(&conns, Instant::now(), timeout), one(true));
        // An idle connection with fresh activity becomes active again.
        let conns = mk_conns(Instant::now(), true);
        assert_eq!(
            idle_transitions(&conns, Instant::now(), timeout),
            one(false)
        );
    }

    fn status(m: BusMsg) -> super::super::Status {
        match m {
            BusMsg::Update(u) => u.presence.status,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tracker_goes_away_then_back_online_with_paused_time() {
        let store: Arc<dyn PresenceStore> = Arc::new(super::super::MemoryPresence::default());
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let mut rx = bus.subscribe();
        let cfg = PresenceConfig {
            idle_timeout: switchboard_crds::duration::HumanDuration::from_secs(300),
            ..PresenceConfig::default()
        };
        let online: Arc<dyn OnlineStore> = Arc::new(crate::online::MemoryOnline::default());
        let tr = Tracker::new(store, online, bus, "n1".into(), cfg, Metrics::new());
        tr.connect("t", "u", "c1").await.unwrap();
        assert_eq!(
            status(rx.recv().await.unwrap()),
            super::super::Status::Online
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        tr.idle_tick().await;
        assert_eq!(status(rx.recv().await.unwrap()), super::super::Status::Away);
        tr.activity("t", "u");
        let back = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status(back), super::super::Status::Online);
        // Another tenant's same user id is untouched.
        assert_eq!(
            tr.get("t2", &["u".into()]).await.unwrap()[0].status,
            super::super::Status::Offline
        );
    }
}
