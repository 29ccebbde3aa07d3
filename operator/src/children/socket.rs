//! Socket nodes: Deployment, Service, headless Service, PodDisruptionBudget, the optional
//! HorizontalPodAutoscaler and Ingress. The pod template here also serves the workers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, Service, ServicePort, ServiceSpec, SleepAction,
    TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyPeer,
    ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchboard_crds::cluster::RealtimeCluster;
use switchboard_crds::config::{DRAIN_IN_FLIGHT_WAIT, ServerConfig};

use super::config::{Role, SecretData, pod_wiring, secrets_hash};
use super::meta::{
    CONFIG_HASH_ANNOTATION, INTERNAL_ACCESS_LABEL, INTERNAL_PORT, Names, SECRETS_HASH_ANNOTATION,
    SOCKET_PORT, TURN_ROTATED_ANNOTATION, container_security, ingress_policy, ingress_rule,
    pod_security,
};

pub const COMPONENT: &str = "socket";
/// Label that tells the headless Service apart (the ServiceMonitor selects it).
pub const HEADLESS_LABEL: (&str, &str) = ("switchboard.dev/service", "headless");

/// Facts that go onto pod templates so a change rolls the pods.
#[derive(Clone, Copy, Debug)]
pub struct PodInputs<'a> {
    pub config_hash: &'a str,
    pub turn_rotated_at: Option<&'a str>,
    /// The bytes of the referenced Secret keys; the pod template carries a hash of those
    /// it reads, so rotating one rolls the pods.
    pub secrets: &'a SecretData,
}

/// User the Switchboard containers run as (the distroless `nonroot` user). Switchboard
/// writes no files, so its root filesystem is read-only.
pub const SWITCHBOARD_UID: i64 = 65532;

/// Requests used when the spec sets none: enough for a small node, and a CPU request so
/// the autoscaler has something to measure against.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("512Mi".into()),
        )])),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Seconds a socket pod sleeps in `preStop` before it gets SIGTERM: the time for its
/// endpoint's removal to reach kube-proxy and ingress controllers, so the clients a drain
/// sends away do not come straight back to this pod. (A `sleep` action, not an exec: the
/// images have no shell and no `sleep` binary.)
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Seconds left over after the drain and the in-flight wait, for the process to exit.
pub const EXIT_MARGIN_SECONDS: i64 = 10;
/// Termination grace period of pods that drain nothing (the workers).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// `terminationGracePeriodSeconds` of a socket pod: the `preStop` sleep, then the drain
/// window, then the wait for in-flight work, plus a margin, so the kubelet's SIGKILL
/// never cuts a drain short.
pub fn socket_grace_seconds(drain_window: std::time::Duration) -> i64 {
    let window = i64::try_from(drain_window.as_secs()).unwrap_or(i64::MAX / 2)
        + i64::from(drain_window.subsec_nanos() > 0);
    let in_flight = i64::try_from(DRAIN_IN_FLIGHT_WAIT.as_secs()).unwrap_or(0);
    PRE_STOP_SLEEP_SECONDS + window + in_flight + EXIT_MARGIN_SECONDS
}

/// The drain window the socket nodes run with (the spec's, else the data plane default).
pub fn drain_window(rc: &RealtimeCluster) -> std::time::Duration {
    rc.spec
        .socket
        .drain_window
        .unwrap_or_else(|| ServerConfig::default().drain_window)
        .0
}

/// A Switchboard pod (`switchboard <args>`) of one component, wired to its config and
/// secrets, spread across nodes. Socket pods also get the drain's `preStop` sleep and a
/// grace period that covers the drain window.
pub fn pod_template(
    rc: &RealtimeCluster,
    names: &Names,
    component: &str,
    role: Role,
    resources: Option<&ResourceRequirements>,
    inputs: &PodInputs<'_>,
) -> PodTemplateSpec {
    let wiring = pod_wiring(rc, names, role, inputs.turn_rotated_at.is_some());
    let args = match role {
        Role::Socket => "serve",
        Role::Worker => "worker",
    };
    // The TURN secret rolls the pods through its rotation time instead: its `previous`
    // key expiring must not restart every node.
    let turn = names.turn_secret();
    let mut annotations = BTreeMap::from([
        (
            CONFIG_HASH_ANNOTATION.to_owned(),
            inputs.config_hash.to_owned(),
        ),
        (
            SECRETS_HASH_ANNOTATION.to_owned(),
            secrets_hash(&wiring.secret_keys(), inputs.secrets, Some(&turn)),
        ),
    ]);
    if let Some(at) = inputs.turn_rotated_at {
        annotations.insert(TURN_ROTATED_ANNOTATION.into(), at.to_owned());
    }
    let image = &rc.spec.image;
    let container = Container {
        name: component.into(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().into()),
        args: Some(vec![args.to_owned()]),
        ports: Some(container_ports(role)),
        env: Some(wiring.env),
        volume_mounts: Some(wiring.mounts),
        resources: Some(resources.cloned().unwrap_or_else(default_resources)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        security_context: Some(container_security(SWITCHBOARD_UID, true)),
        lifecycle: (role == Role::Socket).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let grace = match role {
        Role::Socket => socket_grace_seconds(drain_window(rc)),
        Role::Worker => DEFAULT_GRACE_SECONDS,
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names.labels(component)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.service_account()),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security(SWITCHBOARD_UID)),
            containers: vec![container],
            volumes: Some(wiring.volumes),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(names.selector(component)),
                ..Default::default()
            }]),
            termination_grace_period_seconds: Some(grace),
            ..Default::default()
        }),
    }
}

/// Replicas the Deployment asks for: none when the autoscaler owns the count.
fn autoscaled(rc: &RealtimeCluster) -> bool {
    rc.spec
        .socket
        .autoscaling
        .as_ref()
        .is_some_and(|a| a.enabled)
}

/// Field manager that keeps `spec.replicas` of the socket Deployment when autoscaling is
/// switched on, so the operator can stop setting it without the API server resetting it.
pub const HANDOFF_MANAGER: &str = "switchboard-operator-replicas-handoff";

/// When autoscaling is on but the operator still owns `spec.replicas` of the live socket
/// Deployment: an apply, under [`HANDOFF_MANAGER`], of the live count. The operator's next
/// apply leaves `replicas` out; since another manager then owns it, the API server keeps
/// the value (instead of resetting it to 1) and the HPA takes over from there.
pub fn replicas_handoff(rc: &RealtimeCluster, live: &Deployment) -> Option<serde_json::Value> {
    if !autoscaled(rc) {
        return None;
    }
    let replicas = live.spec.replicas?;
    let owned = live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(super::meta::FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|spec| spec.get("f:replicas").is_some())
    });
    owned.then(|| {
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": live.metadata.name, "namespace": live.metadata.namespace},
            "spec": {"replicas": replicas},
        })
    })
}

pub fn deployment(rc: &RealtimeCluster, names: &Names, inputs: &PodInputs<'_>) -> Deployment {
    let socket = &rc.spec.socket;
    Deployment {
        metadata: names.meta(names.socket(), COMPONENT),
        spec: DeploymentSpec {
            replicas: (!autoscaled(rc)).then_some(socket.replicas),
            selector: names.selector(COMPONENT),
            template: pod_template(
                rc,
                names,
                COMPONENT,
                Role::Socket,
                socket.resources.as_ref(),
                inputs,
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `http` (Socket.IO and the probes; a worker's metrics too) and, on socket nodes,
/// `internal` (`/metrics`, `/admin/*`, `/api/*`).
fn container_ports(role: Role) -> Vec<ContainerPort> {
    let port = |name: &str, container_port| ContainerPort {
        name: Some(name.into()),
        container_port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![port("http", SOCKET_PORT)];
    if role == Role::Socket {
        ports.push(port("internal", INTERNAL_PORT));
    }
    ports
}

fn named_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn http_port(port: i32) -> ServicePort {
    named_port("http", port)
}

/// Ingress to the socket nodes: the public port from everywhere; the internal port
/// (service and admin APIs, metrics) only from pods of the namespace labelled
/// `switchboard.dev/internal-access: "true"` and the peers `spec.networkPolicy.internalFrom`
/// lists.
pub fn network_policy(rc: &RealtimeCluster, names: &Names) -> NetworkPolicy {
    let mut internal = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                INTERNAL_ACCESS_LABEL.into(),
                "true".into(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }];
    internal.extend(rc.spec.network_policy.internal_from.iter().cloned());
    ingress_policy(
        names,
        names.socket(),
        COMPONENT,
        vec![
            ingress_rule(SOCKET_PORT, None),
            ingress_rule(INTERNAL_PORT, Some(internal)),
        ],
    )
}

/// Where backends and admin tools reach the internal APIs (service and admin tokens),
/// inside the cluster only.
pub fn internal_service(names: &Names) -> Service {
    Service {
        metadata: names.meta(names.internal(), COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![named_port("internal", INTERNAL_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service clients (and the Ingress) reach the nodes through.
pub fn service(rc: &RealtimeCluster, names: &Names) -> Service {
    let s = &rc.spec.socket.service;
    let mut metadata = names.meta(names.socket(), COMPONENT);
    if !s.annotations.is_empty() {
        metadata.annotations = Some(s.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(s.type_.as_str().into()),
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![http_port(s.port)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One DNS record per node (metrics scraping, node-to-node diagnostics).
pub fn headless_service(names: &Names) -> Service {
    let mut metadata = names.meta(names.headless(), COMPONENT);
    if let Some(l) = metadata.labels.as_mut() {
        l.insert(HEADLESS_LABEL.0.into(), HEADLESS_LABEL.1.into());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![
                http_port(SOCKET_PORT),
                named_port("internal", INTERNAL_PORT),
            ]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Fewest socket nodes the cluster is meant to run: the autoscaler's minimum, else the
/// fixed count.
fn fewest_replicas(rc: &RealtimeCluster) -> i32 {
    match rc.spec.socket.autoscaling.as_ref().filter(|a| a.enabled) {
        Some(a) => a.min_replicas,
        None => rc.spec.socket.replicas,
    }
}

/// Voluntary disruptions (node drains) take one socket node at a time and always leave one
/// serving: with two or more nodes, at most one unavailable (which keeps the others up);
/// with a single node, that node must stay (`minAvailable: 1`: a node drain waits until
/// the cluster runs a second one, instead of leaving no node for clients to reconnect
/// to). Pods that are not ready may always be evicted, so a broken node never blocks one.
pub fn pdb(rc: &RealtimeCluster, names: &Names) -> PodDisruptionBudget {
    let (max_unavailable, min_available) = if fewest_replicas(rc) >= 2 {
        (Some(IntOrString::Int(1)), None)
    } else {
        (None, Some(IntOrString::Int(1)))
    };
    PodDisruptionBudget {
        metadata: names.meta(names.socket(), COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable,
            min_available,
            selector: Some(names.selector(COMPONENT)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        ..Default::default()
    }
}

/// CPU autoscaler, when `spec.socket.autoscaling.enabled`.
pub fn hpa(rc: &RealtimeCluster, names: &Names) -> Option<HorizontalPodAutoscaler> {
    let a = rc.spec.socket.autoscaling.as_ref().filter(|a| a.enabled)?;
    Some(HorizontalPodAutoscaler {
        metadata: names.meta(names.socket(), COMPONENT),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: names.socket(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Ingress for the socket Service, when `spec.ingress` is set.
pub fn ingress(rc: &RealtimeCluster, names: &Names) -> Option<Ingress> {
    let i = rc.spec.ingress.as_ref()?;
    let mut metadata = names.meta(names.ingress(), COMPONENT);
    if !i.annotations.is_empty() {
        metadata.annotations = Some(i.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(i.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names.socket(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            tls: i.tls_secret_name.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![i.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Where clients connect.
pub fn endpoint(rc: &RealtimeCluster, names: &Names) -> String {
    match &rc.spec.ingress {
        Some(i) if i.tls_secret_name.is_some() => format!("https://{}", i.host),
        Some(i) => format!("http://{}", i.host),
        None => format!(
            "http://{}.{}.svc:{}",
            names.socket(),
            names.namespace,
            rc.spec.socket.service.port
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use switchboard_crds::duration::HumanDuration;

    static NO_SECRETS: SecretData = SecretData::new();
    const INPUTS: PodInputs<'static> = PodInputs {
        config_hash: "abcd",
        turn_rotated_at: None,
        secrets: &NO_SECRETS,
    };

    #[test]
    fn deployment_has_probes_hash_spread_and_replicas() {
        let rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let d = deployment(&rc, &names, &INPUTS);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(2));
        let t = spec.template;
        assert_eq!(
            t.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            "abcd"
        );
        let pod = t.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["serve".to_string()][..]));
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.clone().unwrap().path;
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert!(c.resources.as_ref().unwrap().requests.is_some());
        assert_eq!(pod.topology_spread_constraints.unwrap().len(), 1);
        assert_eq!(c.image.as_deref(), Some(rc.spec.image.reference().as_str()));
        let sec = c.security_context.clone().unwrap();
        assert_eq!(sec.run_as_non_root, Some(true));
        assert_eq!(sec.read_only_root_filesystem, Some(true));
        assert_eq!(sec.allow_privilege_escalation, Some(false));
        assert_eq!(sec.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        let pod_sec = pod.security_context.unwrap();
        assert_eq!(pod_sec.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn socket_pods_sleep_before_sigterm_and_get_a_grace_period_past_the_drain() {
        let mut rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let pod =
            |rc: &RealtimeCluster| deployment(rc, &names, &INPUTS).spec.template.spec.unwrap();
        let p = pod(&rc);
        // Default window 10s: 5s preStop + 10s + 5s in-flight + 10s margin.
        assert_eq!(p.termination_grace_period_seconds, Some(30));
        let pre_stop = p.containers[0]
            .lifecycle
            .clone()
            .and_then(|l| l.pre_stop)
            .expect("a preStop hook");
        assert!(
            pre_stop.exec.is_none(),
            "the image has no shell or sleep binary"
        );
        assert_eq!(
            pre_stop.sleep.map(|s| s.seconds),
            Some(PRE_STOP_SLEEP_SECONDS)
        );
        rc.spec.socket.drain_window = Some(HumanDuration::from_secs(120));
        let p = pod(&rc);
        let grace = p.termination_grace_period_seconds.unwrap();
        assert!(
            grace >= PRE_STOP_SLEEP_SECONDS + 120 + DRAIN_IN_FLIGHT_WAIT.as_secs() as i64,
            "{grace}"
        );
        assert_eq!(grace, 140);
        // A window with a fraction of a second rounds up.
        assert_eq!(
            socket_grace_seconds(std::time::Duration::from_millis(1500)),
            socket_grace_seconds(std::time::Duration::from_secs(2))
        );
        // The rendered config carries the same window.
        let c = super::super::config::dataplane_config(&rc, &names);
        assert_eq!(c.server.drain_window, HumanDuration::from_secs(120));
    }

    #[test]
    fn workers_neither_sleep_nor_wait_for_a_drain() {
        let rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let t = pod_template(&rc, &names, "worker", Role::Worker, None, &INPUTS);
        let p = t.spec.unwrap();
        assert_eq!(
            p.termination_grace_period_seconds,
            Some(DEFAULT_GRACE_SECONDS)
        );
        assert!(p.containers[0].lifecycle.is_none());
    }

    #[test]
    fn the_pdb_always_leaves_a_node_serving() {
        let mut rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let spec = |rc: &RealtimeCluster| pdb(rc, &names).spec.unwrap();
        // Two nodes (the default): one may go at a time, the other keeps serving.
        let s = spec(&rc);
        assert_eq!(s.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(s.min_available, None);
        assert_eq!(
            s.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let sel = s.selector.unwrap().match_labels.unwrap();
        assert_eq!(sel["app.kubernetes.io/component"], "socket");
        // One node: it stays until there is another.
        rc.spec.socket.replicas = 1;
        let s = spec(&rc);
        assert_eq!(
            (s.max_unavailable, s.min_available),
            (None, Some(IntOrString::Int(1)))
        );
        // Autoscaled: the minimum counts, not the (ignored) fixed count.
        rc.spec.socket.autoscaling = Some(switchboard_crds::cluster::AutoscalingSpec {
            min_replicas: 3,
            ..Default::default()
        });
        assert_eq!(spec(&rc).max_unavailable, Some(IntOrString::Int(1)));
        rc.spec.socket.autoscaling.as_mut().unwrap().min_replicas = 1;
        assert_eq!(spec(&rc).min_available, Some(IntOrString::Int(1)));
    }

    #[test]
    fn a_rotated_secret_changes_the_pod_template() {
        let rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let hash = |value: &[u8]| {
            let data = SecretData::from([(("jwt".into(), "secret".into()), value.to_vec())]);
            let inputs = PodInputs {
                secrets: &data,
                ..INPUTS
            };
            deployment(&rc, &names, &inputs)
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[SECRETS_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(hash(b"one"), hash(b"one"));
        assert_ne!(hash(b"one"), hash(b"two"));
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa() {
        let rc = mk_full_cluster();
        let names = Names::of(&rc).unwrap();
        assert_eq!(deployment(&rc, &names, &INPUTS).spec.replicas, None);
        let h = hpa(&rc, &names).unwrap().spec;
        assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 10));
        assert!(hpa(&mk_cluster(), &names).is_none());
    }

    #[test]
    fn turning_autoscaling_on_hands_the_live_replicas_over() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let mut rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let mut live = deployment(&rc, &names, &INPUTS);
        live.spec.replicas = Some(5);
        live.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(crate::children::meta::FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}}))),
            ..Default::default()
        }]);
        // Autoscaling off: the operator keeps the count.
        assert_eq!(replicas_handoff(&rc, &live), None);
        rc.spec.socket.autoscaling = Some(Default::default());
        let patch = replicas_handoff(&rc, &live).unwrap();
        assert_eq!(patch["spec"]["replicas"], 5);
        assert_eq!(patch["metadata"]["name"], "chat-socket");
        // Once handed over (another manager owns it), nothing more to do.
        live.metadata.managed_fields.as_mut().unwrap()[0].manager = Some(HANDOFF_MANAGER.into());
        assert_eq!(replicas_handoff(&rc, &live), None);
    }

    #[test]
    fn ingress_routes_to_the_socket_service_with_tls() {
        let rc = mk_full_cluster();
        let names = Names::of(&rc).unwrap();
        let i = ingress(&rc, &names).unwrap().spec.unwrap();
        assert_eq!(i.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(i.tls.unwrap()[0].secret_name.as_deref(), Some("rt-tls"));
        let rules = i.rules.unwrap();
        let backend = &rules[0].http.as_ref().unwrap().paths[0].backend;
        assert_eq!(backend.service.as_ref().unwrap().name, "chat-socket");
        assert_eq!(endpoint(&rc, &names), "https://rt.example.com");
        let plain = mk_cluster();
        assert_eq!(endpoint(&plain, &names), "http://chat-socket.apps.svc:80");
    }

    #[test]
    fn services_select_only_socket_pods() {
        let rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        for s in [service(&rc, &names), headless_service(&names)] {
            let sel = s.spec.unwrap().selector.unwrap();
            assert_eq!(sel["app.kubernetes.io/component"], "socket");
            assert_eq!(sel["app.kubernetes.io/instance"], "chat");
        }
    }
}
