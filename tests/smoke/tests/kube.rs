//! Smoke tests of the Kubernetes control plane started by
//! `tests/env/envctl up etcd kube_apiserver kube_controller_manager kwok`: the API server
//! answers with the pinned version, stores and returns objects, kwok's fake nodes are
//! Ready, the scheduler, the controllers and kwok bring the pods of a Deployment and of a
//! StatefulSet to Ready, and the garbage collector removes what an owner leaves behind.
//! The operator's tests rely on all of it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, ReplicaSet, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use switchboard_smoke::endpoint;
use switchboard_smoke::kube::{client, delete_namespace, eventually, fresh_namespace};

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn pod_template(app: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(app)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("registry.invalid/switchboard-smoke:0".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Wait until `count` pods labelled app=APP are Ready, on kwok's nodes.
async fn wait_pods_ready(client: &Client, ns: &str, app: &str, count: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("app={app}"));
    eventually(
        &format!("{count} Ready pods of {app}"),
        Duration::from_secs(90),
        || async {
            let list = pods.list(&selector).await?;
            let ready = list.items.iter().filter(|p| pod_ready(p)).count();
            Ok(ready == count && list.items.len() == count)
        },
    )
    .await?;
    for pod in pods.list(&selector).await?.items {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(
            node.starts_with("kwok-"),
            "pod scheduled on {node:?}, not a kwok node"
        );
    }
    Ok(())
}

#[tokio::test]
async fn api_server_reports_the_pinned_version() -> Result<()> {
    let Some(version) = endpoint("SWITCHBOARD_TEST_KUBE_VERSION") else {
        return Ok(());
    };
    let Some(_) = endpoint("KUBECONFIG") else {
        return Ok(());
    };
    let info = client().await?.apiserver_version().await?;
    assert_eq!(info.git_version, version);
    Ok(())
}

#[tokio::test]
async fn config_map_round_trip_in_a_fresh_namespace() -> Result<()> {
    let Some(_) = endpoint("KUBECONFIG") else {
        return Ok(());
    };
    let client = client().await?;
    let ns = fresh_namespace(&client, "smoke-cm").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let data = BTreeMap::from([
        ("greeting".to_string(), "hello".to_string()),
        ("unicode".to_string(), "héllo ✓".to_string()),
    ]);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            ..Default::default()
        },
        data: Some(data.clone()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await?;
    let back = api.get("smoke").await?;
    assert_eq!(back.data, Some(data));
    assert!(back.metadata.uid.is_some());
    delete_namespace(&client, &ns).await;
    Ok(())
}

#[tokio::test]
async fn kwok_nodes_are_ready() -> Result<()> {
    let Some(names) = endpoint("SWITCHBOARD_TEST_KWOK_NODES") else {
        return Ok(());
    };
    let client = client().await?;
    let nodes: Api<Node> = Api::all(client);
    for name in names.split_whitespace() {
        let node = nodes.get(name).await?;
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("kwok.x-k8s.io/node").map(String::as_str),
            Some("fake")
        );
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "node {name} is not Ready: {:?}", node.status);
    }
    Ok(())
}

#[tokio::test]
async fn deployment_and_statefulset_pods_become_ready() -> Result<()> {
    let Some(_) = endpoint("SWITCHBOARD_TEST_KWOK_NODES") else {
        return Ok(());
    };
    let client = client().await?;
    let ns = fresh_namespace(&client, "smoke-workloads").await?;

    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels("web")),
                ..Default::default()
            },
            template: pod_template("web"),
            ..Default::default()
        },
        ..Default::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let statefulset = StatefulSet {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(2),
            service_name: Some("db".into()),
            selector: LabelSelector {
                match_labels: Some(labels("db")),
                ..Default::default()
            },
            template: pod_template("db"),
            ..Default::default()
        },
        ..Default::default()
    };
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await?;

    wait_pods_ready(&client, &ns, "web", 3).await?;
    wait_pods_ready(&client, &ns, "db", 2).await?;
    eventually(
        "the Deployment's status",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("web").await?;
            Ok(d.status.and_then(|s| s.ready_replicas) == Some(3))
        },
    )
    .await?;
    eventually(
        "the StatefulSet's status",
        Duration::from_secs(60),
        || async {
            let s = statefulsets.get("db").await?;
            Ok(s.status.and_then(|s| s.ready_replicas) == Some(2))
        },
    )
    .await?;
    delete_namespace(&client, &ns).await;
    Ok(())
}

#[tokio::test]
async fn garbage_collector_follows_owner_references() -> Result<()> {
    let Some(_) = endpoint("KUBECONFIG") else {
        return Ok(());
    };
    let client = client().await?;
    let ns = fresh_namespace(&client, "smoke-gc").await?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().context("owner has no uid")?,
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    maps.create(&PostParams::default(), &dependent).await?;
    maps.delete("owner", &DeleteParams::background()).await?;
    eventually(
        "the dependent ConfigMap to be collected",
        Duration::from_secs(60),
        || async { Ok(maps.get_opt("dependent").await?.is_none()) },
    )
    .await?;

    // A Deployment's ReplicaSets and pods go with it, as the operator's objects will.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &Deployment {
                metadata: ObjectMeta {
                    name: Some("gone".into()),
                    ..Default::default()
                },
                spec: DeploymentSpec {
                    replicas: Some(1),
                    selector: LabelSelector {
                        match_labels: Some(labels("gone")),
                        ..Default::default()
                    },
                    template: pod_template("gone"),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    wait_pods_ready(&client, &ns, "gone", 1).await?;
    deployments
        .delete("gone", &DeleteParams::background())
        .await?;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the ReplicaSet and pod of a deleted Deployment to go",
        Duration::from_secs(90),
        || async {
            let selector = ListParams::default().labels("app=gone");
            Ok(replicasets.list(&selector).await?.items.is_empty()
                && pods.list(&selector).await?.items.is_empty())
        },
    )
    .await?;
    delete_namespace(&client, &ns).await;
    Ok(())
}
