//! Prometheus metrics of the operator, under the `switchboard_operator` prefix.
//!
//! Per-cluster series carry `realtimecluster_namespace` and `realtimecluster`, never
//! `namespace`: a Prometheus Operator scrape sets `namespace` (the operator's own) on every
//! series. Only the leader reconciles, so only the leader has them; a cluster's series go
//! when it is deleted ([`Metrics::forget_cluster`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every `kind` of [`crate::reconcile::Error::metric_label`]. Their series exist (at 0)
/// from the start, so a rate over them is 0 rather than no data until the first failure.
pub const ERROR_KINDS: [&str; 3] = ["kube", "build", "apply"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub realtimecluster_namespace: String,
    pub realtimecluster: String,
}

/// What one reconcile saw of a cluster, for its gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterFacts {
    /// Socket node pods the Deployment wants, and those ready (`None`: no Deployment yet).
    pub socket: Option<(i32, i32)>,
    /// When the current TURN secret was generated (Unix seconds), and the rotation
    /// interval (seconds); `None` without `spec.turn`.
    pub turn: Option<(f64, f64)>,
}

/// Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub writes: Family<WriteLabels, Counter>,
    pub duration: Histogram,
    pub leader: Gauge,
    pub socket_desired: Family<ClusterLabels, Gauge>,
    pub socket_ready: Family<ClusterLabels, Gauge>,
    pub turn_rotated: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    pub turn_interval: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        for kind in ERROR_KINDS {
            let _ = errors.get_or_create(&ErrorLabels { kind: kind.into() });
        }
        let writes = Family::<WriteLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind of error",
            errors.clone(),
        );
        registry.register(
            "writes",
            "Objects created, updated or deleted, by kind and action",
            writes.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let socket_desired = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "socket_desired_replicas",
            "Socket node pods a RealtimeCluster's Deployment wants",
            socket_desired.clone(),
        );
        let socket_ready = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "socket_ready_replicas",
            "Socket node pods of a RealtimeCluster that are ready",
            socket_ready.clone(),
        );
        let turn_rotated = Family::<ClusterLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "turn_secret_rotated_timestamp_seconds",
            "When the current TURN shared secret of a RealtimeCluster was generated (Unix time)",
            turn_rotated.clone(),
        );
        let turn_interval = Family::<ClusterLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "turn_secret_rotation_interval_seconds",
            "How often a RealtimeCluster's TURN shared secret is due to be replaced",
            turn_interval.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            writes,
            duration,
            leader,
            socket_desired,
            socket_ready,
            turn_rotated,
            turn_interval,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and observes its duration when the returned guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn write(&self, kind: &str, action: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    /// Record what a reconcile saw of cluster `namespace/name`.
    pub fn cluster(&self, namespace: &str, name: &str, facts: &ClusterFacts) {
        let l = cluster_labels(namespace, name);
        match facts.socket {
            Some((desired, ready)) => {
                self.socket_desired.get_or_create(&l).set(desired.into());
                self.socket_ready.get_or_create(&l).set(ready.into());
            }
            None => {
                self.socket_desired.remove(&l);
                self.socket_ready.remove(&l);
            }
        }
        match facts.turn {
            Some((rotated, interval)) => {
                self.turn_rotated.get_or_create(&l).set(rotated);
                self.turn_interval.get_or_create(&l).set(interval);
            }
            None => {
                self.turn_rotated.remove(&l);
                self.turn_interval.remove(&l);
            }
        }
    }

    /// A deleted cluster: its series go.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        self.cluster(
            namespace,
            name,
            &ClusterFacts {
                socket: None,
                turn: None,
            },
        );
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn cluster_labels(namespace: &str, name: &str) -> ClusterLabels {
    ClusterLabels {
        realtimecluster_namespace: namespace.to_owned(),
        realtimecluster: name.to_owned(),
    }
}

/// Observes the time since its creation when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind() {
        let m = Metrics::default();
        m.error("kube");
        m.error("kube");
        m.error("build");
        drop(m.reconcile_timer());
        let text = m.encode();
        assert!(
            text.contains("switchboard_operator_reconcile_errors_total{kind=\"kube\"} 2"),
            "{text}"
        );
        // Kinds that never failed are there at 0.
        assert!(
            text.contains("switchboard_operator_reconcile_errors_total{kind=\"apply\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(text.contains("switchboard_operator_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn cluster_series_follow_the_cluster() {
        let m = Metrics::default();
        m.cluster(
            "prod",
            "chat",
            &ClusterFacts {
                socket: Some((3, 2)),
                turn: Some((1_700_000_000.0, 86_400.0)),
            },
        );
        let text = m.encode();
        let l = r#"{realtimecluster_namespace="prod",realtimecluster="chat"}"#;
        for want in [
            format!("switchboard_operator_socket_desired_replicas{l} 3"),
            format!("switchboard_operator_socket_ready_replicas{l} 2"),
            format!("switchboard_operator_turn_secret_rotated_timestamp_seconds{l} 1700000000.0"),
            format!("switchboard_operator_turn_secret_rotation_interval_seconds{l} 86400.0"),
        ] {
            assert!(text.contains(&want), "{want} missing from\n{text}");
        }
        // spec.turn removed: no stale age.
        m.cluster(
            "prod",
            "chat",
            &ClusterFacts {
                socket: Some((3, 3)),
                turn: None,
            },
        );
        let text = m.encode();
        assert!(
            !text.contains("turn_secret_rotated_timestamp_seconds{"),
            "{text}"
        );
        m.forget_cluster("prod", "chat");
        assert!(!m.encode().contains("realtimecluster="), "{}", m.encode());
    }
}
