//! A Prometheus Operator ServiceMonitor scraping the nodes' `/metrics` through the
//! headless Service. Built as a dynamic object: the operator does not link the
//! Prometheus Operator's types, and creates this only when its CRD is installed.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::Desired;
use super::meta::Names;
use super::socket::{COMPONENT, HEADLESS_LABEL};

/// `monitoring.coreos.com/v1` ServiceMonitor.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// Name of the ServiceMonitor CRD, looked up before creating one.
pub const CRD_NAME: &str = "servicemonitors.monitoring.coreos.com";

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
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        }
    });
    Desired {
        resource,
        name: names.instance.clone(),
        object,
    }
}
