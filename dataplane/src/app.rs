//! The node's shared context: configuration, stores, metrics, limiter and fan-out hub.
//! Cheap to clone (`Arc` inside); handed to every handler through Socket.IO state.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use switchboard_crds::config::DataplaneConfig;

use crate::auth::Verifier;
use crate::auth::revocation::{MemoryRevocations, RevocationStore};
use crate::history::{MemoryHistory, MessageStore, Retention};
use crate::hub::Hub;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::online::{MemoryOnline, OnlineStore};
use crate::presence::tracker::{Bus, Tracker};
use crate::presence::{MemoryPresence, PresenceStore};
use crate::receipts::{MemoryReceipts, ReceiptStore};
use crate::rooms::{MemoryRooms, RoomStore};
use crate::typing::{MemoryTyping, TypingStore};

/// One implementation of every capability's store.
#[derive(Clone)]
pub struct Stores {
    pub rooms: Arc<dyn RoomStore>,
    pub history: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub typing: Arc<dyn TypingStore>,
    pub online: Arc<dyn OnlineStore>,
    pub revocations: Arc<dyn RevocationStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub inbox: Arc<dyn crate::notifications::InboxStore>,
    pub devices: Arc<dyn crate::devices::DeviceStore>,
    pub preferences: Arc<dyn crate::preferences::PreferenceStore>,
    pub delivery: Arc<dyn crate::notifications::delivery::DeliveryStore>,
    /// What changed in which room, for `sync:get`.
    pub changes: Arc<dyn crate::sync::ChangeIndex>,
    /// Connection leases per user (`limits.max_connections_per_user`).
    pub conns: Arc<dyn crate::conns::ConnStore>,
    /// Per-user rate budgets (`limits.per_user`), outliving sockets.
    pub budgets: Arc<dyn crate::limits::UserBudgets>,
}

impl Stores {
    /// Embedded mode: everything in this process.
    pub fn memory(config: &DataplaneConfig) -> Self {
        Self {
            rooms: Arc::new(MemoryRooms::default()),
            history: Arc::new(MemoryHistory::with_retention(Retention::from_config(
                &config.chat,
            ))),
            receipts: Arc::new(MemoryReceipts::default()),
            typing: Arc::new(MemoryTyping::default()),
            online: Arc::new(MemoryOnline::default()),
            revocations: Arc::new(MemoryRevocations::default()),
            presence: Arc::new(MemoryPresence::default()),
            inbox: Arc::new(crate::notifications::MemoryInbox::default()),
            devices: Arc::new(crate::devices::MemoryDevices::default()),
            preferences: Arc::new(crate::preferences::MemoryPreferences::default()),
            delivery: Arc::new(crate::notifications::delivery::MemoryDelivery::default()),
            changes: Arc::new(crate::sync::MemoryChanges::default()),
            conns: Arc::new(crate::conns::MemoryConns::default()),
            budgets: Arc::new(crate::limits::MemoryBudgets::default()),
        }
    }

    /// Shared mode: every node reads and writes the same Redis.
    pub fn redis(client: &fred::clients::Client, config: &DataplaneConfig) -> Self {
        Self {
            rooms: Arc::new(crate::rooms::redis::RedisRooms::new(client.clone())),
            history: Arc::new(
                crate::history::redis::RedisHistory::new(client.clone())
                    .with_retention(Retention::from_config(&config.chat)),
            ),
            receipts: Arc::new(crate::receipts::redis::RedisReceipts::new(client.clone())),
            typing: Arc::new(crate::typing::redis::RedisTyping::new(client.clone())),
            online: Arc::new(crate::online::redis::RedisOnline::new(client.clone())),
            revocations: Arc::new(crate::auth::revocation::redis::RedisRevocations::new(
                client.clone(),
            )),
            presence: Arc::new(crate::presence::redis::RedisPresence::new(client.clone())),
            inbox: Arc::new(crate::notifications::redis::RedisInbox::new(client.clone())),
            devices: Arc::new(crate::devices::redis::RedisDevices::new(client.clone())),
            preferences: Arc::new(crate::preferences::redis::RedisPreferences::new(
                client.clone(),
            )),
            delivery: Arc::new(crate::notifications::redis::RedisDelivery::new(
                client.clone(),
            )),
            changes: Arc::new(crate::sync::redis::RedisChanges::new(client.clone())),
            conns: Arc::new(crate::conns::redis::RedisConns::new(client.clone())),
            budgets: Arc::new(crate::limits::redis::RedisBudgets::new(client.clone())),
        }
    }
}

#[derive(Clone)]
pub struct App(Arc<Inner>);

pub struct Inner {
    pub config: DataplaneConfig,
    pub node_id: String,
    pub verifier: Verifier,
    pub stores: Stores,
    pub metrics: Metrics,
    pub limits: Limiter,
    pub presence: Tracker,
    /// The Redis client, when not embedded (readiness pings it).
    pub redis: Option<fred::clients::Client>,
    /// Graceful drain: readiness, refused handshakes, handlers in flight.
    pub drain: crate::drain::Drain,
    /// This node's connection leases, renewed in the background (see `conns`).
    pub leases: Arc<crate::conns::Leases>,
    /// Set once the Socket.IO server exists (it needs the app as its state first).
    hub: OnceLock<Arc<dyn Hub>>,
    /// Where `POST /api/v1/notifications` sends (Kafka, or this node's dispatcher).
    intake: OnceLock<Arc<crate::notifications::api::Intake>>,
    /// Calls (/webrtc), set at start-up once its history database answers.
    calls: OnceLock<crate::calls::service::Calls>,
}

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    pub fn new(
        config: DataplaneConfig,
        node_id: String,
        verifier: Verifier,
        stores: Stores,
        bus: Arc<dyn Bus>,
        redis: Option<fred::clients::Client>,
    ) -> Self {
        let metrics = Metrics::new();
        let limits = Limiter::new(
            config.limits.clone(),
            stores.budgets.clone(),
            metrics.redis_errors.clone(),
        );
        let presence = Tracker::new(
            stores.presence.clone(),
            stores.online.clone(),
            bus,
            node_id.clone(),
            config.presence.clone(),
            metrics.clone(),
        );
        Self(Arc::new(Inner {
            config,
            node_id,
            verifier,
            stores,
            metrics,
            limits,
            presence,
            redis,
            drain: crate::drain::Drain::default(),
            leases: Arc::default(),
            hub: OnceLock::new(),
            intake: OnceLock::new(),
            calls: OnceLock::new(),
        }))
    }

    pub fn set_hub(&self, hub: Arc<dyn Hub>) {
        self.0.presence.set_hub(hub.clone());
        let _ = self.0.hub.set(hub);
    }

    /// Emit through the hub (no-op before the server is up, which cannot happen while
    /// handlers run: the hub is set before the listener accepts).
    pub async fn emit(&self, ns: &str, room: String, event: &'static str, data: Value) {
        if let Some(h) = self.0.hub.get() {
            self.0.metrics.broadcast(ns, event);
            h.emit(ns, room, event, data).await;
        }
    }

    pub fn hub(&self) -> Option<&Arc<dyn Hub>> {
        self.0.hub.get()
    }

    pub fn set_intake(&self, intake: crate::notifications::api::Intake) {
        let _ = self.0.intake.set(Arc::new(intake));
    }

    pub fn intake(&self) -> Option<&Arc<crate::notifications::api::Intake>> {
        self.0.intake.get()
    }

    pub fn set_calls(&self, calls: crate::calls::service::Calls) {
        let _ = self.0.calls.set(calls);
    }

    pub fn calls(&self) -> Option<&crate::calls::service::Calls> {
        self.0.calls.get()
    }
}

pub use crate::clock::now_ms;
