//! A Prometheus Operator ServiceMonitor scraping the nodes' `/metrics` through the
//! headless Service, and a PodMonitor scraping the notification workers' (they have no
//! Service: nothing connects to them). Built as dynamic objects: the operator does not
//! link the Prometheus Operator's types, and creates each only when its CRD is installed.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::Desired;
use super::meta::Names;
use super::socket::{COMPONENT, HEADLESS_LABEL};
use super::workers::COMPONENT as WORKER;

/// `monitoring.coreos.com/v1` ServiceMonitor.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// Name of the ServiceMonitor CRD, looked up before creating one.
pub const CRD_NAME: &str = "servicemonitors.monitoring.coreos.com";

/// `monitoring.coreos.com/v1` PodMonitor.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    )
}

/// Name of the PodMonitor CRD, looked up before creating one.
pub const POD_MONITOR_CRD_NAME: &str = "podmonitors.monitoring.coreos.com";

/// The workers' `/metrics` (Kafka consumer lag, deliveries by provider and outcome) on
/// their `http` port.
pub fn worker_pod_monitor(names: &Names) -> Desired {
    let resource = pod_monitor_resource();
    let metadata = names.meta(names.worker(), WORKER);
    let object = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": names.selector_labels(WORKER)},
            "namespaceSelector": {"matchNames": [names.namespace]},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        }
    });
    Desired {
        resource,
        name: names.worker(),
        object,
    }
}

pub fn service_monitor(names: &Names) -> Desired {
    let resource = resource();
    let metadata = names.meta(names.instance.clone(), COMPONENT);
    let mut selector = names.selector_labels(COMPONENT);
    selector.insert(HEADLESS_LABEL.0.into(), HEADLESS_LABEL.1.into());
    let object = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [names.namespace]},
            // The nodes serve /metrics on their internal port (server.internal_listen).
            "endpoints": [{"port": "internal", "path": "/metrics", "interval": "30s"}],
        }
    });
    Desired {
        resource,
        name: names.instance.clone(),
        object,
    }
}
