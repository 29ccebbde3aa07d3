//! Socket nodes: Deployment, Service, headless Service, PodDisruptionBudget, the optional
//! HorizontalPodAutoscaler and Ingress. The pod template here also serves the workers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    Service, ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchboard_crds::cluster::RealtimeCluster;

use super::config::{Role, SecretData, pod_wiring, secrets_hash};
use super::meta::{
    CONFIG_HASH_ANNOTATION, Names, SECRETS_HASH_ANNOTATION, SOCKET_PORT, TURN_ROTATED_ANNOTATION,
    container_security, pod_security,
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

/// A Switchboard pod (`switchboard <args>`) of one component, wired to its config and
/// secrets, spread across nodes.
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
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: SOCKET_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(wiring.env),
        volume_mounts: Some(wiring.mounts),
        resources: Some(resources.cloned().unwrap_or_else(default_resources)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        security_context: Some(container_security(SWITCHBOARD_UID, true)),
        ..Default::default()
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
            termination_grace_period_seconds: Some(30),
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

fn http_port(port: i32) -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
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
            ports: Some(vec![http_port(SOCKET_PORT)]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one node down at a time for voluntary disruptions.
pub fn pdb(names: &Names) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: names.meta(names.socket(), COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(names.selector(COMPONENT)),
            ..Default::default()
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
