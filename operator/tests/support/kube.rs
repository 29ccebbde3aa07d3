//! Helpers shared by the operator's integration tests (included with `#[path = "support/kube.rs"]`): the real
//! API server from `tests/env` (`envctl up etcd kube_apiserver kube_controller_manager
//! kube_scheduler kwok helm`), fresh namespaces, polling, and an in-process operator.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use switchboard_operator::metrics::Metrics;
use switchboard_operator::reconcile::{Context, run_controller};
pub use switchboard_smoke::endpoint;
pub use switchboard_smoke::kube::{client, delete_namespace, eventually, fresh_namespace};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Install (or update) the RealtimeCluster CRD and wait until it is served.
pub async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = switchboard_crds::crd();
    let name = crd.metadata.name.clone().context("CRD without a name")?;
    // Leave an identical CRD alone (installed by helm in the chart test, say): any update
    // makes the API server rebuild the resource's storage, and watches opened just before
    // can go quiet until the old storage is drained, a minute later.
    if let Some(live) = crds.get_opt(&name).await?
        && switchboard_operator::apply::contains(
            &serde_json::to_value(&live.spec)?,
            &serde_json::to_value(&crd.spec)?,
        )
    {
        return established(&crds, &name).await;
    }
    crds.patch(
        &name,
        &PatchParams::apply("switchboard-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    established(&crds, &name).await
}

/// Create a Secret with one key.
pub async fn create_secret(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// Run kubectl (the test environment's) with `stdin`; its output.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<Output> {
    use std::io::Write;
    let bin = endpoint("SWITCHBOARD_TEST_KUBECTL").context("SWITCHBOARD_TEST_KUBECTL")?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    Ok(child.wait_with_output()?)
}

/// An operator running in this process, limited to one namespace; stops when dropped.
pub struct RunningOperator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    pub metrics: Metrics,
}

impl RunningOperator {
    pub fn start(client: &Client, ns: &str) -> Self {
        let metrics = Metrics::default();
        let ctx = Context::new(client.clone(), metrics.clone(), Some("test".into()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_owned();
        let task = tokio::spawn(async move {
            run_controller(ctx, Some(&ns), async move {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            stop: Some(tx),
            task,
            metrics,
        }
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Install the Prometheus Operator's ServiceMonitor and PodMonitor CRDs (schemaless
/// stand-ins: the operator only needs the kinds to exist) and wait until they are served.
pub async fn install_service_monitor_crd(client: &Client) -> Result<()> {
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
    ] {
        install_monitoring_crd(client, kind, plural).await?;
    }
    Ok(())
}

async fn install_monitoring_crd(client: &Client, kind: &str, plural: &str) -> Result<()> {
    let name = format!("{plural}.monitoring.coreos.com");
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural,
                      "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("switchboard-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    established(&crds, &name).await
}

async fn established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    eventually(
        &format!("CRD {name} to be established"),
        Duration::from_secs(30),
        || async {
            let c = crds.get(name).await?;
            Ok(c.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            }))
        },
    )
    .await
}
