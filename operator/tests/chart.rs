//! The Helm chart with the test environment's helm: `helm lint` is clean, the values
//! schema refuses bad values, and `helm install` into the real API server creates the CRD
//! and the operator Deployment. Then the real `switchboard-operator run` binary, acting as
//! the chart's ServiceAccount (impersonation), reconciles a sample cluster to Ready: the
//! chart's least-privilege RBAC is enough.
//!
//! This test binary deletes and reinstalls the RealtimeCluster CRD; cargo runs test
//! binaries one after another, so no other operator test is running meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kube.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use support::*;
use switchboard_crds::cluster::RealtimeCluster;
use switchboard_smoke::unique_name;

const CRD: &str = "realtimeclusters.switchboard.dev";

fn chart() -> String {
    repo().join("charts/switchboard").display().to_string()
}

/// Run helm with its state inside `home`; (success, stdout + stderr).
fn helm(home: &Path, args: &[&str]) -> Result<(bool, String)> {
    let bin = endpoint("SWITCHBOARD_TEST_HELM").context("SWITCHBOARD_TEST_HELM")?;
    let out = Command::new(bin)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn scratch(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn helm_lint_is_clean_and_the_schema_refuses_bad_values() -> Result<()> {
    if endpoint("SWITCHBOARD_TEST_HELM").is_none() {
        return Ok(());
    }
    let home = scratch("sb-helm-lint");
    let chart = chart();
    for extra in [&[][..], &["--set", "watchNamespace=apps"][..]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(extra);
        let (ok, out) = helm(&home, &args)?;
        assert!(ok, "{out}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]"), "{out}");
    }
    // Scoped to one namespace: a Role, not a ClusterRole, for the children.
    let (ok, out) = helm(
        &home,
        &["template", "sb", &chart, "--set", "watchNamespace=apps"],
    )?;
    assert!(ok, "{out}");
    assert!(
        out.contains("kind: Role\nmetadata:\n  name: sb-switchboard\n  namespace: apps"),
        "{out}"
    );
    // The values schema names the bad value.
    let (ok, out) = helm(
        &home,
        &["template", "sb", &chart, "--set", "replicaCount=0"],
    )?;
    assert!(!ok);
    assert!(out.contains("replicaCount"), "{out}");
    let (ok, out) = helm(&home, &["template", "sb", &chart, "--set", "logFormat=xml"])?;
    assert!(!ok);
    assert!(out.contains("logFormat"), "{out}");
    // Every object carries the app.kubernetes.io labels.
    let (ok, out) = helm(&home, &["template", "sb", &chart])?;
    assert!(ok, "{out}");
    let objects = out.matches("\nkind: ").count();
    let labelled = out
        .matches("app.kubernetes.io/part-of: switchboard")
        .count();
    assert!(
        objects >= 8 && labelled >= objects,
        "{objects} objects, {labelled} labelled:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

/// `helm template sb CHART EXTRA…`, which must succeed: the objects it renders.
fn template(home: &Path, extra: &[&str]) -> Result<Vec<serde_yaml::Value>> {
    let chart = chart();
    let mut args = vec!["template", "sb", chart.as_str()];
    args.extend_from_slice(extra);
    let (ok, out) = helm(home, &args)?;
    ensure!(ok, "helm {}: {out}", args.join(" "));
    Ok(serde_yaml::Deserializer::from_str(&out)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<Vec<serde_yaml::Value>, _>>()?
        .into_iter()
        .filter(|v| !v.is_null())
        .collect())
}

fn of_kind<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The rules of every group of a PrometheusRule.
fn rules_of(rule: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
    rule["spec"]["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn the_chart_renders_rules_and_monitors_when_their_crds_are_served_and_the_dashboard_when_asked()
-> Result<()> {
    if endpoint("SWITCHBOARD_TEST_HELM").is_none() {
        return Ok(());
    }
    let home = scratch("sb-helm-obs");
    let rules_file = repo().join("charts/switchboard/rules/switchboard.rules.yaml");
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(rules_file)?)?;
    let dashboard_file = repo().join("charts/switchboard/dashboards/switchboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_file)?)?;
    const RULE_API: &str = "monitoring.coreos.com/v1/PrometheusRule";

    // By default: no dashboard, and no PrometheusRule or ServiceMonitor where their CRDs
    // are not served.
    let plain = template(&home, &[])?;
    assert!(of_kind(&plain, "PrometheusRule").is_empty());
    assert!(of_kind(&plain, "ServiceMonitor").is_empty());
    assert!(of_kind(&plain, "ConfigMap").is_empty());

    // The operator's own metrics: a ServiceMonitor on its -metrics Service.
    let monitored = template(
        &home,
        &["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"],
    )?;
    let sm = of_kind(&monitored, "ServiceMonitor");
    assert_eq!(sm.len(), 1, "{monitored:?}");
    let svc = of_kind(&monitored, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "sb-switchboard-metrics")
        .context("the metrics Service")?;
    for (k, v) in sm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .context("matchLabels")?
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(
        sm[0]["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm[0]["spec"]["endpoints"][0]["path"], "/metrics");

    // Where the Prometheus Operator is installed: the rules, exactly the rule file.
    let with_crd = template(&home, &["--api-versions", RULE_API])?;
    let rule = of_kind(&with_crd, "PrometheusRule");
    assert_eq!(rule.len(), 1, "{with_crd:?}");
    assert_eq!(rule[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule[0]["metadata"]["name"], "sb-switchboard");
    assert_eq!(
        rule[0]["spec"], rules,
        "the PrometheusRule's spec is the rule file"
    );
    assert_eq!(rules_of(rule[0]).len(), 9);

    // Runbook links follow prometheusRule.runbookBaseUrl; labels for a ruleSelector.
    let moved = template(
        &home,
        &[
            "--api-versions",
            RULE_API,
            "--set",
            "prometheusRule.runbookBaseUrl=https://wiki.example.com/switchboard",
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
        ],
    )?;
    let rule = of_kind(&moved, "PrometheusRule")[0];
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let moved_rules = rules_of(rule);
    assert_eq!(moved_rules.len(), 9);
    for r in &moved_rules {
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or("");
        assert!(
            url.starts_with("https://wiki.example.com/switchboard#switchboard"),
            "{url}"
        );
    }

    // Turned off: none even with the CRD served.
    let off = template(
        &home,
        &[
            "--api-versions",
            RULE_API,
            "--set",
            "prometheusRule.enabled=false",
        ],
    )?;
    assert!(of_kind(&off, "PrometheusRule").is_empty());

    // The dashboard: a ConfigMap with the sidecar's label holding the dashboard JSON.
    let with_dashboard = template(
        &home,
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.namespace=monitoring",
        ],
    )?;
    let cm = of_kind(&with_dashboard, "ConfigMap");
    assert_eq!(cm.len(), 1, "{with_dashboard:?}");
    assert_eq!(cm[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm[0]["metadata"]["namespace"], "monitoring");
    let json = cm[0]["data"]["switchboard.json"]
        .as_str()
        .context("data.switchboard.json")?;
    assert_eq!(serde_json::from_str::<serde_json::Value>(json)?, dashboard);

    // And lint stays clean with the dashboard on (lint cannot be told the CRD is served).
    let chart = chart();
    let (ok, out) = helm(
        &home,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    )?;
    assert!(ok && !out.contains("[WARNING]"), "{out}");
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

/// A kubeconfig that acts as `user` (impersonation) with the admin credentials.
fn impersonating_kubeconfig(dir: &Path, user: &str) -> Result<std::path::PathBuf> {
    let path = endpoint("KUBECONFIG").context("KUBECONFIG")?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    for u in doc["users"].as_sequence_mut().context("users")? {
        u["user"]["as"] = user.into();
    }
    let out = dir.join("kubeconfig");
    std::fs::write(&out, serde_yaml::to_string(&doc)?)?;
    Ok(out)
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    switchboard_smoke::http_get("127.0.0.1", port, path).await
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn helm_install_then_the_operator_runs_with_the_charts_rbac() -> Result<()> {
    if endpoint("SWITCHBOARD_TEST_HELM").is_none()
        || endpoint("SWITCHBOARD_TEST_KWOK_NODES").is_none()
    {
        return Ok(());
    }
    let kubeconfig = endpoint("KUBECONFIG").context("KUBECONFIG")?;
    let client = client().await?;
    // Start without the CRD, so the install has to create it.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt(CRD).await?.is_some() {
        crds.delete(CRD, &DeleteParams::default()).await?;
        eventually("the old CRD to go", Duration::from_secs(60), || async {
            Ok(crds.get_opt(CRD).await?.is_none())
        })
        .await?;
    }
    let ns = fresh_namespace(&client, "op-helm").await?;
    // Cluster-scoped objects (ClusterRoles) are named after the release: one per run.
    let release = unique_name("sb");
    let fullname = format!("{release}-switchboard");
    let home = scratch("sb-helm-install");
    let chart = chart();
    let (ok, out) = helm(
        &home,
        &[
            "install",
            &release,
            &chart,
            "--namespace",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    assert!(ok, "{out}");
    assert!(
        out.contains("The Switchboard operator is installed"),
        "NOTES missing: {out}"
    );
    let crd = crds.get(CRD).await?;
    assert_eq!(crd.spec.group, "switchboard.dev");
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await?;
    assert_eq!(deployment.status.and_then(|s| s.ready_replicas), Some(1));

    // The real binary, as the chart's ServiceAccount, reconciles a cluster elsewhere.
    let dir = scratch("sb-operator-run");
    let as_sa = impersonating_kubeconfig(&dir, &format!("system:serviceaccount:{ns}:{fullname}"))?;
    // Two replicas of the real binary share one Lease.
    let start = |identity: &str| -> Result<(Killed, u16)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard-operator"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &as_sa)
            .env("POD_NAMESPACE", &ns)
            .env("POD_NAME", identity)
            .env("SWITCHBOARD_OPERATOR_LEASE_DURATION", "5s")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok((Killed(child), port))
    };
    let (first, port) = start("operator-a")?;
    eventually("/readyz", Duration::from_secs(30), || async {
        Ok(http_get(port, "/readyz").await.is_ok_and(|(c, _)| c == 200))
    })
    .await?;
    assert_eq!(http_get(port, "/healthz").await?.0, 200);

    let apps = fresh_namespace(&client, "op-helm-apps").await?;
    create_secret(
        &client,
        &apps,
        "chat-jwt",
        "secret",
        "an-hmac-secret-of-at-least-32-bytes!",
    )
    .await?;
    let sample = std::fs::read_to_string(repo().join("charts/switchboard/samples/minimal.yaml"))?;
    let out = kubectl(&["-n", &apps, "apply", "-f", "-"], Some(&sample))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clusters: Api<RealtimeCluster> = Api::namespaced(client.clone(), &apps);
    eventually(
        "the sample to be Ready",
        Duration::from_secs(120),
        || async {
            let rc = clusters.get("chat").await?;
            Ok(rc.status.and_then(|s| s.phase).as_deref() == Some("Ready"))
        },
    )
    .await?;
    let (code, metrics) = http_get(port, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("switchboard_operator_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_operator_reconciles_total"),
        "{metrics}"
    );
    // Every error kind is registered at 0 up front: none may have counted.
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_operator_reconcile_errors_total{"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(
        metrics.contains("switchboard_operator_reconcile_errors_total{kind=\"apply\"} 0"),
        "{metrics}"
    );
    assert!(errors.is_empty(), "errors while reconciling: {errors:?}");

    // A second replica waits: ready, not leading, reconciling nothing.
    let (_second, port_b) = start("operator-b")?;
    eventually("the standby's /readyz", Duration::from_secs(30), || async {
        Ok(http_get(port_b, "/readyz")
            .await
            .is_ok_and(|(c, _)| c == 200))
    })
    .await?;
    let (_, standby) = http_get(port_b, "/metrics").await?;
    assert!(
        standby.contains("switchboard_operator_leader 0"),
        "{standby}"
    );
    assert!(
        standby.contains("switchboard_operator_reconciles_total 0"),
        "{standby}"
    );
    // The leader dies without releasing the Lease: the standby takes over once it expires.
    let killed = std::time::Instant::now();
    drop(first);
    eventually("the standby to lead", Duration::from_secs(30), || async {
        let (_, m) = http_get(port_b, "/metrics").await?;
        Ok(m.contains("switchboard_operator_leader 1")
            && !m.contains("switchboard_operator_reconciles_total 0"))
    })
    .await?;
    let took = killed.elapsed();
    println!("standby took over {took:?} after the leader was killed");
    assert!(
        took >= Duration::from_secs(2),
        "took over a live Lease after {took:?}"
    );

    let (ok, out) = helm(
        &home,
        &[
            "uninstall",
            &release,
            "--namespace",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ],
    )?;
    assert!(ok, "{out}");
    delete_namespace(&client, &apps).await;
    delete_namespace(&client, &ns).await;
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
