//! Prometheus metrics of a socket node and of a notification worker, registered under the
//! `switchboard` prefix. Grafana's dashboard and the alert rules of the chart
//! (`charts/switchboard/dashboards/`, `templates/prometheusrule.yaml`) read these names;
//! `tests/observability` checks every expression of both against a real Prometheus.
//!
//! No label is called `namespace`, `pod`, `job` or `instance`: a Prometheus Operator
//! scrape sets those on every series, and a clash would rename ours to `exported_*`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A Socket.IO namespace (`/chat`, `/presence`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsLabel {
    pub socketio_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastLabel {
    pub socketio_namespace: String,
    pub event: String,
}

/// A partition of a Kafka topic the worker consumes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
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
    /// Notifications by what became of them (accepted, processed, duplicate, dead_lettered;
    /// `stale` too for those dead-lettered as older than `notifications.max_age`).
    pub notifications: Family<KindLabel, Counter>,
    /// Deliveries by provider (fcm, apns, email, in_app) and outcome (sent, failed, pruned).
    pub deliveries: Family<DeliveryLabel, Counter>,
    pub calls_ended: Family<KindLabel, Counter>,
    /// Events this node fanned out to a room (one per broadcast, at the sending node).
    pub broadcasts: Family<BroadcastLabel, Counter>,
    /// Publish-to-receive time of presence updates between nodes over Redis pub/sub.
    pub cross_node_lag: Histogram,
    /// Live calls (ringing or active) of the whole cluster, counted in the call store.
    pub calls_active: Gauge,
    /// Call quality reports, and the issues they showed by kind.
    pub call_quality_reports: Counter,
    pub call_quality_issues: Family<KindLabel, Counter>,
    /// Worker only: messages behind the group's committed offset, per assigned partition.
    pub kafka_consumer_lag: Family<PartitionLabel, Gauge>,
    /// 1 when Redis answered the last sample ([`crate::redis::spawn_sampler`]), else 0.
    pub redis_up: Gauge,
    /// Redis `INFO memory`: used_memory and maxmemory (0: no limit).
    pub redis_used_memory: Gauge,
    pub redis_max_memory: Gauge,
    /// Connections whose token expiry this node follows (one task each; see
    /// `auth::lifetime`): back to the connection count once closed sockets are dropped.
    pub token_clocks: Gauge,
    /// Storage bounds hit, by bound: `rooms_per_tenant`, `call_participants`,
    /// `call_history_outbox` (a record dropped), `call_history_age` (records pruned).
    pub bounds_reached: Family<KindLabel, Counter>,
    /// Call history records waiting in the outbox for the database (as last drained by
    /// this node).
    pub call_history_outbox: Gauge,
    /// Side effects of a stored write that failed and were skipped (the write stands and
    /// is delivered), by kind: `receipt`, `typing`, `sync_index`.
    pub side_effect_failures: Family<KindLabel, Counter>,
    /// Presence and online-flag writes after a disconnect that failed and were tried again.
    pub disconnect_write_retries: Counter,
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
            "Notifications by outcome: accepted, processed, duplicate, dead_lettered (stale: also counted as stale)",
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
        let broadcasts = Family::<BroadcastLabel, Counter>::default();
        reg.register(
            "broadcasts",
            "Events fanned out to a room by this node, by Socket.IO namespace and event",
            broadcasts.clone(),
        );
        let cross_node_lag = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        reg.register(
            "cross_node_lag_seconds",
            "Time from a node publishing a presence update on Redis to another node receiving it",
            cross_node_lag.clone(),
        );
        let calls_active = Gauge::default();
        reg.register(
            "calls_active",
            "Live calls (ringing or active) in the whole cluster; every node reports the same count",
            calls_active.clone(),
        );
        let call_quality_reports = Counter::default();
        reg.register(
            "call_quality_reports",
            "Call quality reports accepted",
            call_quality_reports.clone(),
        );
        let call_quality_issues = Family::<KindLabel, Counter>::default();
        reg.register(
            "call_quality_issues",
            "Issues found in call quality reports, by kind",
            call_quality_issues.clone(),
        );
        let kafka_consumer_lag = Family::<PartitionLabel, Gauge>::default();
        reg.register(
            "worker_kafka_consumer_lag",
            "Messages of a partition not yet committed by the worker's consumer group",
            kafka_consumer_lag.clone(),
        );
        let redis_up = Gauge::default();
        reg.register(
            "redis_up",
            "1 when Redis answered the last INFO sample, 0 when it did not",
            redis_up.clone(),
        );
        let redis_used_memory = Gauge::default();
        reg.register_with_unit(
            "redis_used_memory",
            "Memory Redis uses (INFO memory used_memory)",
            prometheus_client::registry::Unit::Bytes,
            redis_used_memory.clone(),
        );
        let redis_max_memory = Gauge::default();
        reg.register_with_unit(
            "redis_maxmemory",
            "Redis memory limit (INFO memory maxmemory; 0 means none)",
            prometheus_client::registry::Unit::Bytes,
            redis_max_memory.clone(),
        );
        let token_clocks = Gauge::default();
        reg.register(
            "token_clocks",
            "Connections whose token expiry this node follows",
            token_clocks.clone(),
        );
        let bounds_reached = Family::<KindLabel, Counter>::default();
        reg.register(
            "storage_bounds_reached",
            "Requests refused or records dropped because a storage bound was reached, by bound",
            bounds_reached.clone(),
        );
        let call_history_outbox = Gauge::default();
        reg.register(
            "call_history_outbox",
            "Call history records waiting in the outbox for the history database",
            call_history_outbox.clone(),
        );
        let side_effect_failures = Family::<KindLabel, Counter>::default();
        reg.register(
            "side_effect_failures",
            "Side effects of a stored message that failed (the message was delivered anyway), by kind",
            side_effect_failures.clone(),
        );
        let disconnect_write_retries = Counter::default();
        reg.register(
            "disconnect_write_retries",
            "Presence and online-flag writes after a disconnect that failed and were tried again",
            disconnect_write_retries.clone(),
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
            broadcasts,
            cross_node_lag,
            calls_active,
            call_quality_reports,
            call_quality_issues,
            kafka_consumer_lag,
            redis_up,
            redis_used_memory,
            redis_max_memory,
            token_clocks,
            bounds_reached,
            call_history_outbox,
            side_effect_failures,
            disconnect_write_retries,
        }
    }

    /// A storage bound was reached (`bound` as in [`Metrics::bounds_reached`]).
    pub fn bound_reached(&self, bound: &str) {
        Self::kind(&self.bounds_reached, bound);
    }

    pub fn broadcast(&self, socketio_namespace: &str, event: &str) {
        self.broadcasts
            .get_or_create(&BroadcastLabel {
                socketio_namespace: socketio_namespace.into(),
                event: event.into(),
            })
            .inc();
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
                socketio_namespace: namespace.into(),
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
