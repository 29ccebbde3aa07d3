//! The managed Redis: a one-replica StatefulSet (AOF on) and its Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchboard_crds::cluster::{ManagedRedisSpec, RealtimeCluster};

use super::config::REDIS_PORT;
use super::meta::{Names, container_security, pod_security};

pub const COMPONENT: &str = "redis";
/// The user of the project's Redis image (images/build), by number so `runAsNonRoot` can
/// check it.
pub const REDIS_UID: i64 = 65532;

fn managed(rc: &RealtimeCluster) -> ManagedRedisSpec {
    rc.spec.redis.managed.clone().unwrap_or_default()
}

pub fn stateful_set(rc: &RealtimeCluster, names: &Names) -> StatefulSet {
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
        // Protected mode (Redis' default without a config file, as Debian's redis-server
        // runs here) refuses every client that is not on loopback: the socket nodes reach
        // it through its Service. It is a ClusterIP with no password, like the official
        // image's default; reachable only inside the cluster network.
        args: Some(
            [
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "no",
            ]
            .map(String::from)
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use switchboard_crds::cluster::ManagedRedisSpec;

    #[test]
    fn empty_dir_by_default_claim_when_storage_is_set() {
        let mut rc = mk_cluster();
        let names = Names::of(&rc).unwrap();
        let s = stateful_set(&rc, &names).spec;
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
        let s = stateful_set(&rc, &names).spec;
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
