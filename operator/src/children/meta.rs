//! Names, labels and metadata shared by every child.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use switchboard_crds::cluster::RealtimeCluster;

use super::BuildError;

/// The one field manager every server-side apply uses.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Pod-template annotation carrying the hash of the rendered configuration.
pub const CONFIG_HASH_ANNOTATION: &str = "switchboard.dev/config-hash";
/// Pod-template annotation carrying when the TURN secret was last rotated.
pub const TURN_ROTATED_ANNOTATION: &str = "switchboard.dev/turn-rotated-at";
/// Pod-template annotation carrying the hash of the Secret keys the pod reads.
pub const SECRETS_HASH_ANNOTATION: &str = "switchboard.dev/secrets-hash";
/// Annotation on every child: hash of what the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "switchboard.dev/applied-hash";
/// Container port of socket nodes (Socket.IO and the probes; the workers' health and
/// metrics).
pub const SOCKET_PORT: i32 = 3000;
/// Container port of the socket nodes' internal APIs (`server.internal_listen`):
/// `/metrics`, `/admin/*`, `/api/*`; never behind the public Service or the Ingress.
pub const INTERNAL_PORT: i32 = 9090;

/// Pod label that lets a pod of the cluster's namespace reach the socket nodes'
/// internal port (service and admin APIs, metrics) through the NetworkPolicy.
pub const INTERNAL_ACCESS_LABEL: &str = "switchboard.dev/internal-access";

/// One ingress rule: TCP `port`, from `from` (`None`: from everywhere).
pub fn ingress_rule(port: i32, from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// An ingress NetworkPolicy over one component's pods: what `rules` admit, nothing else.
pub fn ingress_policy(
    names: &Names,
    name: String,
    component: &str,
    rules: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: names.meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(names.selector(component)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..Default::default()
        }),
    }
}

/// The names of one cluster's children, derived from the cluster's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Names {
    pub instance: String,
    pub namespace: String,
    owner: OwnerReference,
}

impl Names {
    pub fn of(rc: &RealtimeCluster) -> Result<Self, BuildError> {
        let instance = rc
            .metadata
            .name
            .clone()
            .ok_or(BuildError::MissingMeta("metadata.name"))?;
        let namespace = rc
            .metadata
            .namespace
            .clone()
            .ok_or(BuildError::MissingMeta("metadata.namespace"))?;
        let owner = rc
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMeta("metadata.uid"))?;
        Ok(Self {
            instance,
            namespace,
            owner,
        })
    }

    pub fn service_account(&self) -> String {
        format!("{}-switchboard", self.instance)
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.instance)
    }
    pub fn socket(&self) -> String {
        format!("{}-socket", self.instance)
    }
    pub fn headless(&self) -> String {
        format!("{}-socket-headless", self.instance)
    }
    /// The ClusterIP Service of the internal APIs (backends, admin tools).
    pub fn internal(&self) -> String {
        format!("{}-internal", self.instance)
    }
    pub fn redis(&self) -> String {
        format!("{}-redis", self.instance)
    }
    /// The StatefulSet's governing Service (stable pod DNS).
    pub fn redis_headless(&self) -> String {
        format!("{}-redis-headless", self.instance)
    }
    /// The managed Redis' password (and the URL that carries it), generated once.
    pub fn redis_auth(&self) -> String {
        format!("{}-redis-auth", self.instance)
    }
    pub fn turn_secret(&self) -> String {
        format!("{}-turn", self.instance)
    }
    pub fn coturn(&self) -> String {
        format!("{}-coturn", self.instance)
    }
    pub fn worker(&self) -> String {
        format!("{}-worker", self.instance)
    }
    pub fn ingress(&self) -> String {
        self.instance.clone()
    }

    /// `app.kubernetes.io/*` labels of one component.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector_labels(component);
        l.insert(
            "app.kubernetes.io/managed-by".into(),
            FIELD_MANAGER.to_owned(),
        );
        l.insert("app.kubernetes.io/part-of".into(), "switchboard".into());
        l
    }

    /// The labels that select one component's pods (never change: selectors are immutable).
    pub fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "switchboard".into()),
            ("app.kubernetes.io/instance".into(), self.instance.clone()),
            ("app.kubernetes.io/component".into(), component.to_owned()),
        ])
    }

    pub fn selector(&self, component: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels(component)),
            ..Default::default()
        }
    }

    /// Metadata of a child: name, namespace, labels, and the cluster as controller owner
    /// (so the garbage collector removes the child with the cluster).
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// A container that runs as `uid` (not root), with no capabilities, no privilege
/// escalation and, when `read_only`, a read-only root filesystem.
pub fn container_security(
    uid: i64,
    read_only: bool,
) -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod that runs as `uid` with the runtime's default seccomp profile; volumes are
/// group-owned by `uid` (`fsGroup`), so a non-root process can write its data.
pub fn pod_security(uid: i64) -> k8s_openapi::api::core::v1::PodSecurityContext {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile};
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ServiceAccount the pods run as (no API access is granted to it).
pub fn service_account(names: &Names) -> ServiceAccount {
    ServiceAccount {
        metadata: names.meta(names.service_account(), "socket"),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
