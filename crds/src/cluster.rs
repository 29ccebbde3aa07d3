//! The `RealtimeCluster` custom resource (`switchboard.dev/v1alpha1`): what a user asks
//! for, and the status the operator reports back.
//!
//! Every field carries a description (so `kubectl explain realtimecluster.spec` helps),
//! defaults live in the schema (the API server fills them in), and rules that span fields
//! are CEL rules in the schema, so an invalid spec is refused by `kubectl apply` with a
//! message that names the field. `crds/realtimeclusters.yaml` is generated from these types
//! (`switchboard-operator crd`); a test fails when the committed file drifts from them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// API group of every Switchboard resource.
pub const GROUP: &str = "switchboard.dev";

/// A Switchboard installation: socket nodes, Redis, TURN, notification workers.
// Each `printcolumn(...)` repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "RealtimeCluster",
    namespaced,
    status = "RealtimeClusterStatus",
    shortname = "rtc",
    category = "switchboard",
    doc = "A Switchboard real-time cluster: Socket.IO nodes, Redis, TURN and notification workers, run by the switchboard operator.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether every component is ready",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        description = "Ready socket nodes / desired",
        json_path = ".status.socket.summary"
    ),
    printcolumn(
        name = "Redis",
        type_ = "string",
        description = "Redis mode and readiness",
        json_path = ".status.redis.summary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeClusterSpec {
    /// The Switchboard container image used by socket nodes and notification workers.
    #[serde(default)]
    pub image: ImageSpec,
    /// The socket nodes (`switchboard serve`).
    #[serde(default)]
    pub socket: SocketSpec,
    /// How client tokens are verified.
    pub auth: AuthSpec,
    /// Where shared state lives: a Redis the operator runs, or one you provide.
    #[serde(default)]
    pub redis: RedisSpec,
    /// STUN/TURN servers handed to clients, and the TURN shared secret the operator rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnSpec>,
    /// Push, in-app and e-mail notifications through Kafka and notification workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationsSpec>,
    /// Where ended calls are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_history: Option<CallHistorySpec>,
    /// Presence timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceSpec>,
    /// Abuse limits and size caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// An Ingress for the socket Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Prometheus Operator integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Where every pod the operator creates runs (socket nodes, workers, Redis, coturn):
    /// node labels they require and taints they tolerate, e.g. for a dedicated node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    /// NetworkPolicies around the cluster's pods (on by default; they take effect where
    /// the cluster's network plugin enforces NetworkPolicy).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

// === Placement ===

/// Node selection for the operator's pods.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PlacementSpec {
    /// Node labels every pod requires (the pods' `nodeSelector`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints every pod tolerates (the pods' `tolerations`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

// === Image ===

/// A container image.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageSpec {
    /// Image repository, without tag.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Image tag.
    #[schemars(length(min = 1))]
    pub tag: String,
    /// When the kubelet pulls the image.
    pub pull_policy: PullPolicy,
}

/// Where the project's images are published (`images/build` builds them offline, and
/// `images/Dockerfile` with Docker); every default image is there, tagged with the release
/// version, which is also the chart's `appVersion`.
pub const IMAGE_REGISTRY: &str = "ghcr.io/switchboard-dev";

/// The release version: the default tag of every image.
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");

/// `IMAGE_REGISTRY/name:IMAGE_TAG`, one of the project's own images.
pub fn default_image(name: &str) -> String {
    format!("{IMAGE_REGISTRY}/{name}:{IMAGE_TAG}")
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: format!("{IMAGE_REGISTRY}/switchboard"),
            tag: IMAGE_TAG.into(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Image pull policy.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

// === Socket nodes ===

/// The socket nodes.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.drainWindow) || (!self.drainWindow.endsWith('d') && duration(self.drainWindow) <= duration('10m'))",
     "message": "spec.socket.drainWindow: must be between 0s and 10m"}
]))]
pub struct SocketSpec {
    /// Number of socket nodes when autoscaling is off.
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// CPU and memory requests and limits of each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale the nodes on CPU with a HorizontalPodAutoscaler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// The Service in front of the nodes.
    pub service: ServiceSpec,
    /// How long a stopping node takes to close its connections: it tells each client
    /// `server:draining` and closes them one by one over this window, so clients move to
    /// the other nodes a few at a time (`server.drain_window`; unset: 10s, at most 10m).
    /// The pods' termination grace period is set to cover it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_window: Option<HumanDuration>,
    /// Web origins whose pages may use the nodes from another origin, written as
    /// browsers send them (`https://app.example.com`, `http://localhost:5173`; no path,
    /// no default port). Long-polling and the HTTP APIs get CORS grants for them, and
    /// Socket.IO requests from any other origin are refused
    /// (`server.cors_allowed_origins`). Empty: no CORS, no origin check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 512),
            regex(pattern = r"^[a-z][a-z0-9+.-]*://[^\s/?#@A-Z]+$")
        )
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for SocketSpec {
    fn default() -> Self {
        Self {
            replicas: 2,
            resources: None,
            autoscaling: None,
            service: ServiceSpec::default(),
            drain_window: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// HorizontalPodAutoscaler settings for the socket nodes.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas",
     "message": "spec.socket.autoscaling: minReplicas must be <= maxReplicas"}
]))]
pub struct AutoscalingSpec {
    /// Turn the autoscaler on; `replicas` is then ignored.
    pub enabled: bool,
    /// Fewest socket nodes.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most socket nodes; at least `minReplicas`.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of the request) the autoscaler aims for.
    #[serde(rename = "targetCPU")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: 2,
            max_replicas: 10,
            target_cpu: 70,
        }
    }
}

/// The socket Service.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Service type.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// Port the Service exposes (the nodes listen on 3000).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Extra annotations for the Service (for example a cloud load balancer's settings).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: 80,
            annotations: BTreeMap::new(),
        }
    }
}

/// Kubernetes Service type.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

// === Auth ===

/// Client authentication, and the bearer tokens of the HTTP APIs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// JWT verification.
    pub jwt: JwtSpec,
    /// Secret key holding the admin API's bearer token (`SWITCHBOARD_ADMIN_TOKEN` on the
    /// socket nodes); unset: the admin API is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the service API's global bearer token (`SWITCHBOARD_SERVICE_TOKEN`
    /// on the socket nodes; every tenant, for operators). Tenants' backends can instead use
    /// service JWTs (`scope: "service"`) signed with the JWT key, each acting in its tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token_secret_ref: Option<SecretKeyRef>,
}

/// How JWTs are verified: an HMAC secret or a public key, each from a Secret.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secretRef) != has(self.publicKeyRef)",
     "message": "spec.auth.jwt: set exactly one of secretRef and publicKeyRef"},
    {"rule": "!has(self.secretRef) || self.algorithm.startsWith('HS')",
     "message": "spec.auth.jwt.algorithm: secretRef goes with HS256, HS384 or HS512"},
    {"rule": "!has(self.publicKeyRef) || !self.algorithm.startsWith('HS')",
     "message": "spec.auth.jwt.algorithm: publicKeyRef goes with RS256, ES256 or EdDSA"}
]))]
pub struct JwtSpec {
    /// The one algorithm tokens must use.
    #[serde(default = "default_jwt_algorithm")]
    pub algorithm: JwtAlgorithm,
    /// Secret key holding the HMAC secret (at least 32 bytes), for HS256/384/512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the PEM public key, for RS256, ES256 or EdDSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_ref: Option<SecretKeyRef>,
    /// When set, tokens must carry this `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl Default for JwtSpec {
    fn default() -> Self {
        Self {
            algorithm: default_jwt_algorithm(),
            secret_ref: None,
            public_key_ref: None,
            issuer: None,
            audience: None,
        }
    }
}

fn default_jwt_algorithm() -> JwtAlgorithm {
    JwtAlgorithm::HS256
}

/// JWT algorithms a node accepts (`none` is not among them).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
    EdDSA,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// One key of a Secret in the RealtimeCluster's namespace.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

// === Redis ===

/// Shared state.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'external' || (has(self.external) && has(self.external.urlSecretRef))",
     "message": "spec.redis.external.urlSecretRef is required when spec.redis.mode is external"}
]))]
pub struct RedisSpec {
    /// `managed`: the operator runs a Redis StatefulSet; `external`: use the URL in a Secret.
    pub mode: RedisMode,
    /// Settings of the managed Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedisSpec>,
    /// Settings of an external Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedisSpec>,
}

/// Who runs Redis.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    #[default]
    Managed,
    External,
}

/// The Redis the operator runs (one replica, AOF persistence).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)",
     "message": "spec.redis.managed.storage is immutable (a StatefulSet's volume claims cannot change); create a new cluster to change it"}
]))]
pub struct ManagedRedisSpec {
    /// Redis image (Redis 7 or later; it runs as a non-root user with a read-only root
    /// file system and must have `redis-server` and `redis-cli` on its PATH). Default: the
    /// project's image of Debian's Redis, built by `images/build`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Size of a PersistentVolumeClaim for the data (for example `1Gi`); unset: an emptyDir.
    /// Immutable once set (or left unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"),
        length(max = 32)
    )]
    pub storage: Option<String>,
    /// StorageClass of that claim; unset: the cluster's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CPU and memory of the Redis container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Redis `maxmemory` (a quantity, for example `512Mi`). Redis runs with
    /// `maxmemory-policy noeviction`: past it, writes are refused (clients get
    /// `unavailable`) and nothing stored is evicted. Unset: three quarters of the
    /// container's memory limit, else of its memory request, else 192Mi.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"), length(max = 32))]
    pub max_memory: Option<String>,
}

impl Default for ManagedRedisSpec {
    fn default() -> Self {
        Self {
            image: default_image("redis"),
            storage: None,
            storage_class_name: None,
            resources: None,
            max_memory: None,
        }
    }
}

/// A Redis you run.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedisSpec {
    /// Secret key holding `redis://[user:pass@]host:port[/db]` (or `rediss://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
}

// === TURN ===

/// STUN/TURN servers and the TURN REST shared secret.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "size(self.urls) > 0 || (has(self.managed) && self.managed.enabled)",
     "message": "spec.turn.urls: list at least one TURN URL, or enable spec.turn.managed"}
]))]
pub struct TurnSpec {
    /// TURN URLs handed to clients (`turn:host:3478`, `turns:host:5349`). Empty with
    /// `managed` enabled: the coturn Service's in-cluster address.
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub urls: Vec<String>,
    /// STUN URLs handed to clients (`stun:host:3478`).
    #[serde(rename = "stunURLs")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub stun_urls: Vec<String>,
    /// A coturn Deployment run by the operator with the same shared secret. In-cluster
    /// only: no relay port range and no external IP are configured, so clients outside
    /// the cluster network need a TURN server of their own in `urls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedTurnSpec>,
    /// Lifetime of the TURN credentials nodes hand out.
    #[serde(rename = "credentialTTL")]
    pub credential_ttl: HumanDuration,
    /// How often the operator replaces the shared secret; the previous one stays valid
    /// for one `credentialTTL` after each rotation.
    pub rotation_interval: HumanDuration,
}

impl Default for TurnSpec {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            stun_urls: Vec::new(),
            managed: None,
            credential_ttl: HumanDuration::from_secs(3600),
            rotation_interval: HumanDuration::from_secs(86_400),
        }
    }
}

/// The coturn Deployment (reachable inside the cluster network only; see `managed`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.allowedPeerIPs) || self.allowedPeerIPs.all(p, isIP(p) || isCIDR(p) || (p.split('-').size() == 2 && isIP(p.split('-')[0]) && isIP(p.split('-')[1])))",
     "message": "spec.turn.managed.allowedPeerIPs: each entry must be an IP address, a CIDR block (10.244.0.0/16) or a range (10.0.0.1-10.0.0.9)"}
]))]
pub struct ManagedTurnSpec {
    /// Run coturn.
    pub enabled: bool,
    /// coturn replicas.
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// coturn image (`turnserver` on its PATH; no shell needed; it runs as a non-root
    /// user). Default: the project's image of Debian's coturn, built by `images/build`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// TURN realm.
    #[schemars(length(min = 1))]
    pub realm: String,
    /// CPU and memory of each coturn container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Peer addresses coturn may relay to although they are in a denied range. By default
    /// coturn refuses relays to private (RFC 1918, unique local), loopback, link-local,
    /// carrier-grade NAT and unspecified addresses, so a TURN credential cannot reach
    /// the cluster network. Each entry is an address (`10.0.0.5`), a range
    /// (`10.0.0.1-10.0.0.9`) or a CIDR block (`10.244.0.0/16`).
    #[serde(rename = "allowedPeerIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            regex(pattern = r"^[0-9A-Fa-f:.]+(/[0-9]{1,3}|-[0-9A-Fa-f:.]+)?$"),
            length(min = 2, max = 90)
        )
    )]
    pub allowed_peer_ips: Vec<String>,
    /// Relay TCP as well as UDP (RFC 6062). Off by default: only UDP relays.
    pub tcp_relay: bool,
    /// Most relay allocations one TURN user (one credential) may hold at once.
    #[schemars(range(min = 1, max = 1000))]
    pub user_quota: i32,
}

impl Default for ManagedTurnSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 1,
            image: default_image("coturn"),
            realm: "switchboard".into(),
            resources: None,
            allowed_peer_ips: Vec::new(),
            tcp_relay: false,
            user_quota: 12,
        }
    }
}

// === Notifications ===

/// Notification workers and their providers.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// The worker Deployment (`switchboard worker`).
    #[serde(default)]
    pub workers: WorkersSpec,
    /// The Kafka topic workers consume.
    pub kafka: KafkaSpec,
    /// Firebase Cloud Messaging (HTTP v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmSpec>,
    /// Apple Push Notification service (token auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsSpec>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
}

/// The notification workers.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkersSpec {
    /// Worker replicas (Kafka partitions are shared among them).
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory of each worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            resources: None,
        }
    }
}

/// Kafka.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 512)))]
    pub brokers: Vec<String>,
    /// Topic of notification requests.
    #[serde(default = "default_kafka_topic")]
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
    /// Consumer group of the workers.
    #[serde(default = "default_kafka_group")]
    #[schemars(length(min = 1, max = 249))]
    pub group: String,
    /// Topic where requests that cannot be delivered end up; unset: the worker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_topic: Option<String>,
}

fn default_kafka_topic() -> String {
    "switchboard.notifications".into()
}

fn default_kafka_group() -> String {
    "switchboard-workers".into()
}

/// FCM credentials.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FcmSpec {
    /// Secret key holding the Google service account JSON.
    pub service_account_secret_ref: SecretKeyRef,
    /// Base URL of the FCM API; unset: `https://fcm.googleapis.com`. For a proxy, or a
    /// stand-in in tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 512),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub base_url: Option<String>,
}

/// APNs token-auth credentials.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApnsSpec {
    /// Secret key holding the `.p8` signing key.
    pub key_secret_ref: SecretKeyRef,
    /// The key's id (10 characters).
    #[schemars(length(min = 10, max = 10))]
    pub key_id: String,
    /// The Apple developer team id (10 characters).
    #[schemars(length(min = 10, max = 10))]
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    #[schemars(length(min = 1))]
    pub topic: String,
    /// `production` or `sandbox`.
    #[serde(default)]
    pub environment: ApnsEnvironment,
}

/// APNs environment.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

impl ApnsEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Sandbox => "sandbox",
        }
    }
}

/// E-mail delivery.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailSpec {
    /// Secret key holding the SMTP URL (`smtp://user:pass@host:587`).
    pub smtp_url_secret_ref: SecretKeyRef,
    /// Sender address.
    #[schemars(length(min = 3))]
    pub from: String,
}

// === Calls, presence, limits ===

/// Call history storage.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallHistorySpec {
    /// MongoDB that stores ended calls.
    pub mongodb: MongoSpec,
}

/// A MongoDB database.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MongoSpec {
    /// Secret key holding the `mongodb://` URI.
    pub uri_secret_ref: SecretKeyRef,
    /// Database name.
    #[serde(default = "default_mongo_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
}

fn default_mongo_database() -> String {
    "switchboard".into()
}

/// Presence timings; unset fields keep the data plane's defaults.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSpec {
    /// No activity for this long makes a user `away`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
    /// TTL of each node's heartbeat; a dead node's connections expire within twice this.
    #[serde(
        default,
        rename = "heartbeatTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_ttl: Option<HumanDuration>,
}

/// Limits; unset fields keep the data plane's defaults.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest Socket.IO packet accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 16777216))]
    pub max_payload_bytes: Option<i64>,
    /// Largest chat message body, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_message_bytes: Option<i64>,
    /// Rooms a user may belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_rooms_per_user: Option<i64>,
    /// Rooms a tenant may hold at once (`limits.max_rooms_per_tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_rooms_per_tenant: Option<i64>,
    /// Messages kept per room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10000000))]
    pub history_max_len: Option<i64>,
}

// === Ingress, monitoring ===

/// An Ingress routing to the socket Service (WebSocket upgrades included).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass name; unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Host name clients connect to.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Secret holding the TLS certificate for `host`; unset: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations for the Ingress (controller-specific timeouts, for example).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Monitoring.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a Prometheus Operator ServiceMonitor for the nodes (only when its CRD exists).
    #[serde(default)]
    pub service_monitor: bool,
}

/// NetworkPolicies: the managed Redis admits only this cluster's socket and worker pods;
/// the socket pods' public port admits everyone and their internal port (service and
/// admin APIs, metrics) only the peers listed here and pods labelled
/// `switchboard.dev/internal-access: "true"` in the cluster's namespace.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies.
    pub enabled: bool,
    /// More peers allowed to reach the socket pods' internal port (9090), for example
    /// the namespace Prometheus runs in, or a backend in another namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub internal_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            internal_from: Vec::new(),
        }
    }
}

// === Status ===

/// What the operator observed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Progressing`, `Ready` or `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Socket nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<ComponentStatus>,
    /// Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<ComponentStatus>,
    /// Notification workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<ComponentStatus>,
    /// coturn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coturn: Option<ComponentStatus>,
    /// The TURN shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnStatus>,
    /// Where clients connect (`http://service.namespace.svc:port`, or the Ingress URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Hash of the rendered data plane configuration the nodes run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Readiness of one component, read from its workload's status.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Desired replicas (0 for an external service).
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Whether the component is usable.
    pub ready: bool,
    /// One-line summary for `kubectl get` (`2/2`, `managed 1/1`, `external`).
    pub summary: String,
}

/// The TURN shared secret the operator manages.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TurnStatus {
    /// Name of the Secret.
    pub secret_name: String,
    /// When the current secret was generated (RFC 3339).
    pub rotated_at: String,
}
