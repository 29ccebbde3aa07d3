//! The managed Redis: a one-replica StatefulSet (AOF on), its Services, the password
//! the operator generates for it, and the NetworkPolicy that admits only this cluster's
//! socket and worker pods.
//!
//! Redis runs with `requirepass` (the password comes from the Secret `<name>-redis-auth`,
//! which also holds the URL the pods connect with) and `maxmemory` with the
//! `noeviction` policy: when it is full, writes are refused (the nodes answer
//! `unavailable`) and nothing already stored is evicted.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchboard_crds::cluster::{ManagedRedisSpec, RealtimeCluster};

use super::config::{REDIS_PORT, content_hash, env_secret};
use super::meta::{
    Names, SECRETS_HASH_ANNOTATION, container_security, ingress_policy, ingress_rule, pod_security,
};

pub const COMPONENT: &str = "redis";
/// The user of the project's Redis image (images/build), by number so `runAsNonRoot` can
/// check it.
pub const REDIS_UID: i64 = 65532;

/// Key of the password in `<name>-redis-auth`.
pub const PASSWORD_KEY: &str = "password";
/// Key of the URL (with the password) the socket nodes and workers connect with.
pub const URL_KEY: &str = "url";
/// `maxmemory` when neither the spec nor the container's memory says otherwise.
const DEFAULT_MAX_MEMORY: u64 = 192 << 20;

fn managed(rc: &RealtimeCluster) -> ManagedRedisSpec {
    rc.spec.redis.managed.clone().unwrap_or_default()
}

/// The password stored in `<name>-redis-auth`, if that Secret holds one.
pub fn password_of(s: &Secret) -> Option<String> {
    let v = s.data.as_ref()?.get(PASSWORD_KEY)?;
    String::from_utf8(v.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// The URL the pods connect with: the password percent-encoded into the userinfo.
pub fn url(names: &Names, password: &str) -> String {
    let mut enc = String::with_capacity(password.len());
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(char::from(b));
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!(
        "redis://:{enc}@{}.{}.svc:{REDIS_PORT}",
        names.redis(),
        names.namespace
    )
}

/// `<name>-redis-auth`: the password and the URL carrying it.
pub fn auth_secret(names: &Names, password: &str) -> Secret {
    Secret {
        metadata: names.meta(names.redis_auth(), COMPONENT),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                PASSWORD_KEY.into(),
                ByteString(password.as_bytes().to_vec()),
            ),
            (
                URL_KEY.into(),
                ByteString(url(names, password).into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// Bytes of a Kubernetes quantity (`512Mi`, `1G`, `268435456`); `None` when it is not
/// one of the plain forms the CRD admits or is not a whole number of bytes.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Redis `maxmemory` in bytes: `maxMemory`, else three quarters of the container's
/// memory limit, else of its request, else 192Mi.
pub fn max_memory(m: &ManagedRedisSpec) -> u64 {
    if let Some(b) = m.max_memory.as_deref().and_then(quantity_bytes) {
        return b;
    }
    let memory = |list: Option<&BTreeMap<String, Quantity>>| {
        list.and_then(|l| l.get("memory"))
            .and_then(|q| quantity_bytes(&q.0))
    };
    let r = m.resources.as_ref();
    memory(r.and_then(|r| r.limits.as_ref()))
        .or_else(|| memory(r.and_then(|r| r.requests.as_ref())))
        .map(|b| b / 4 * 3)
        .unwrap_or(DEFAULT_MAX_MEMORY)
}

pub fn stateful_set(rc: &RealtimeCluster, names: &Names, password: &str) -> StatefulSet {
    let m = managed(rc);
    let probe = |period| Probe {
        exec: Some(ExecAction {
            command: Some(vec!["redis-cli".into(), "ping".into()]),
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let container = Container {
        name: "redis".into(),
        image: Some(m.image.clone()),
        // Protected mode is off because a password is set (`requirepass`, expanded by
        // the kubelet from the env var); the NetworkPolicy admits only this cluster's
        // socket and worker pods. `redis-cli` (the probes) reads REDISCLI_AUTH.
        args: Some(
            [
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--requirepass",
                "$(REDIS_PASSWORD)",
                "--maxmemory",
                &max_memory(&m).to_string(),
                "--maxmemory-policy",
                "noeviction",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(
            ["REDIS_PASSWORD", "REDISCLI_AUTH"]
                .map(|var| env_secret(var, &names.redis_auth(), PASSWORD_KEY, false))
                .to_vec(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        }]),
        resources: Some(m.resources.clone().unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("256Mi".into())),
            ])),
            ..Default::default()
        })),
        liveness_probe: Some(probe(10)),
        readiness_probe: Some(probe(5)),
        // Redis writes only /data (a volume, group-owned through fsGroup).
        security_context: Some(container_security(REDIS_UID, true)),
        ..Default::default()
    };
    let (volumes, claims) = match &m.storage {
        Some(size) => (
            None,
            Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: m.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity(size.clone()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
        ),
        None => (
            Some(vec![Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            None,
        ),
    };
    StatefulSet {
        metadata: names.meta(names.redis(), COMPONENT),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.redis_headless()),
            selector: names.selector(COMPONENT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(COMPONENT)),
                    // A new password (the Secret deleted and generated again) restarts
                    // Redis; the socket nodes roll through their own secrets hash.
                    annotations: Some(BTreeMap::from([(
                        SECRETS_HASH_ANNOTATION.into(),
                        content_hash(password),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes,
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security(REDIS_UID)),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn redis_port() -> ServicePort {
    ServicePort {
        name: Some("redis".into()),
        port: REDIS_PORT,
        target_port: Some(IntOrString::String("redis".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The address clients use (`redis://<name>-redis.<ns>.svc:6379`).
pub fn service(names: &Names) -> Service {
    Service {
        metadata: names.meta(names.redis(), COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![redis_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet's governing Service (`serviceName`): one DNS record per pod.
pub fn headless_service(names: &Names) -> Service {
    Service {
        metadata: names.meta(names.redis_headless(), COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![redis_port()]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ingress to the managed Redis: its port, from this cluster's socket and worker pods
/// only.
pub fn network_policy(names: &Names) -> NetworkPolicy {
    let clients = LabelSelector {
        match_labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".into(), "switchboard".into()),
            ("app.kubernetes.io/instance".into(), names.instance.clone()),
        ])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/component".into(),
            operator: "In".into(),
            values: Some(vec![
                super::socket::COMPONENT.into(),
                super::workers::COMPONENT.into(),
            ]),
        }]),
    };
    let from = NetworkPolicyPeer {
        pod_selector: Some(clients),
        ..Default::default()
    };
    ingress_policy(
        names,
        names.redis(),
        COMPONENT,
        vec![ingress_rule(REDIS_PORT, Some(vec![from]))],
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use switchboard_crds::cluster::ManagedRedisSpec;

    #[test]
    fn empty_dir_by_default_claim_when_storage_is_set() {
        let mut rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let s = stateful_set(&rc, &names, "pw").spec;
        assert!(s.volume_claim_templates.is_none());
        assert!(
            s.template.spec.unwrap().volumes.unwrap()[0]
                .empty_dir
                .is_some()
        );
        rc.spec.redis.managed = Some(ManagedRedisSpec {
            storage: Some("2Gi".into()),
            ..Default::default()
        });
        let s = stateful_set(&rc, &names, "pw").spec;
        let claim = &s.volume_claim_templates.unwrap()[0];
        let req = claim.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(req.requests.as_ref().unwrap()["storage"].0, "2Gi");
        assert_eq!(s.service_name.as_deref(), Some("chat-redis-headless"));
        let headless = headless_service(&names);
        assert_eq!(
            headless.metadata.name.as_deref(),
            Some("chat-redis-headless")
        );
        assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        let pod = s.template.spec.unwrap();
        let sec = pod.security_context.unwrap();
        assert_eq!((sec.run_as_user, sec.fs_group), (Some(65532), Some(65532)));
        let c = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(c.run_as_non_root, Some(true));
        assert_eq!(c.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    }
}
