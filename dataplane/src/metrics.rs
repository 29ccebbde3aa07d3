//! Prometheus metrics of a socket node, registered under the `switchboard` prefix.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsLabel {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub provider: String,
    pub outcome: String,
}

/// Every metric of the node; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub connections: Family<NsLabel, Gauge>,
    pub events: Family<EventLabel, Counter>,
    pub ack_latency: Family<NameLabel, Histogram>,
    pub redis_errors: Counter,
    pub typing: Family<KindLabel, Counter>,
    pub typing_duration: Histogram,
    pub disconnects: Family<KindLabel, Counter>,
    pub auth_failures: Family<KindLabel, Counter>,
    pub presence_online: Family<TenantLabel, Gauge>,
    /// Notifications by what became of them (accepted, processed, duplicate, dead_lettered).
    pub notifications: Family<KindLabel, Counter>,
    /// Deliveries by provider (fcm, apns, email, in_app) and outcome (sent, failed, pruned).
    pub deliveries: Family<DeliveryLabel, Counter>,
    pub calls_ended: Family<KindLabel, Counter>,
    /// Connections whose token expiry this node follows (one task each; see
    /// `auth::lifetime`): back to the connection count once closed sockets are dropped.
    pub token_clocks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut reg = Registry::with_prefix("switchboard");
        let connections = Family::<NsLabel, Gauge>::default();
        reg.register(
            "connections",
            "Live Socket.IO connections by namespace",
            connections.clone(),
        );
        let events = Family::<EventLabel, Counter>::default();
        reg.register(
            "events",
            "Client events handled, by name and outcome (ok or error code)",
            events.clone(),
        );
        let ack_latency = Family::<NameLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.5, 14))
        });
        reg.register(
            "ack_latency_seconds",
            "Time from receiving an event to sending its ack",
            ack_latency.clone(),
        );
        let redis_errors = Counter::default();
        reg.register(
            "redis_errors",
            "Storage calls that failed because Redis did not answer",
            redis_errors.clone(),
        );
        let typing = Family::<KindLabel, Counter>::default();
        reg.register(
            "typing_events",
            "Typing indicators started, stopped and expired",
            typing.clone(),
        );
        let typing_duration = Histogram::new(exponential_buckets(0.25, 2.0, 10));
        reg.register(
            "typing_duration_seconds",
            "How long a typing indicator lasted, start to stop or expiry",
            typing_duration.clone(),
        );
        let disconnects = Family::<KindLabel, Counter>::default();
        reg.register(
            "forced_disconnects",
            "Sockets disconnected by the server, by reason",
            disconnects.clone(),
        );
        let auth_failures = Family::<KindLabel, Counter>::default();
        reg.register(
            "auth_failures",
            "Refused handshakes by connect_error code",
            auth_failures.clone(),
        );
        let presence_online = Family::<TenantLabel, Gauge>::default();
        reg.register(
            "presence_online_users",
            "Users online now per tenant (as last seen by this node)",
            presence_online.clone(),
        );
        let notifications = Family::<KindLabel, Counter>::default();
        reg.register(
            "notifications",
            "Notifications by outcome: accepted, processed, duplicate, dead_lettered",
            notifications.clone(),
        );
        let deliveries = Family::<DeliveryLabel, Counter>::default();
        reg.register(
            "notification_deliveries",
            "Notification deliveries by provider and outcome",
            deliveries.clone(),
        );
        let calls_ended = Family::<KindLabel, Counter>::default();
        reg.register(
            "calls_ended",
            "Calls ended on this node, by end reason",
            calls_ended.clone(),
        );
        let token_clocks = Gauge::default();
        reg.register(
            "token_clocks",
            "Connections whose token expiry this node follows",
            token_clocks.clone(),
        );
        Self {
            registry: Arc::new(reg),
            connections,
            events,
            ack_latency,
            redis_errors,
            typing,
            typing_duration,
            disconnects,
            auth_failures,
            presence_online,
            notifications,
            deliveries,
            calls_ended,
            token_clocks,
        }
    }

    pub fn delivery(&self, provider: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabel {
                provider: provider.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn call_ended(&self, reason: &str) {
        Self::kind(&self.calls_ended, reason);
    }

    pub fn event(&self, event: &str, outcome: &str, took: Duration) {
        self.events
            .get_or_create(&EventLabel {
                event: event.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.ack_latency
            .get_or_create(&NameLabel {
                event: event.into(),
            })
            .observe(took.as_secs_f64());
        if outcome == "unavailable" {
            self.redis_errors.inc();
        }
    }

    pub fn connection(&self, namespace: &str, delta: i64) {
        self.connections
            .get_or_create(&NsLabel {
                namespace: namespace.into(),
            })
            .inc_by(delta);
    }

    pub fn kind(family: &Family<KindLabel, Counter>, kind: &str) {
        family.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
