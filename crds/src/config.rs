//! The data plane's configuration: one typed file (YAML or TOML), `SWITCHBOARD_*`
//! environment overrides, and validation whose every error names the key.
//!
//! Every setting has a dotted key (`jwt.algorithm`) used in the file, in
//! [`DataplaneConfig::set`] and in error messages, and an environment variable
//! listed in [`ENV_KEYS`]. Precedence: command-line flag > environment > file > default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// JWT algorithms a node can be configured with. `none` is not among them.
pub const JWT_ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"];
/// Log formats.
pub const LOG_FORMATS: &[&str] = &["text", "json"];

/// Environment variable → config key. One line per setting; keep in step with DESIGN.md.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("SWITCHBOARD_LISTEN", "listen"),
    ("SWITCHBOARD_NODE_ID", "node_id"),
    ("SWITCHBOARD_LOG_FORMAT", "log_format"),
    ("SWITCHBOARD_REDIS_URL", "redis.url"),
    ("SWITCHBOARD_JWT_SECRET", "jwt.secret"),
    ("SWITCHBOARD_JWT_PUBLIC_KEY_FILE", "jwt.public_key_file"),
    ("SWITCHBOARD_JWT_ALGORITHM", "jwt.algorithm"),
    ("SWITCHBOARD_JWT_ISSUER", "jwt.issuer"),
    ("SWITCHBOARD_JWT_AUDIENCE", "jwt.audience"),
    ("SWITCHBOARD_JWT_EXPIRY_NOTICE", "jwt.expiry_notice"),
    ("SWITCHBOARD_ADMIN_TOKEN", "admin_token"),
    ("SWITCHBOARD_SERVICE_TOKEN", "service_token"),
    ("SWITCHBOARD_DRAIN_WINDOW", "server.drain_window"),
    ("SWITCHBOARD_RECONNECT_GRACE", "server.reconnect_grace"),
    ("SWITCHBOARD_INTERNAL_LISTEN", "server.internal_listen"),
    (
        "SWITCHBOARD_CORS_ALLOWED_ORIGINS",
        "server.cors_allowed_origins",
    ),
    ("SWITCHBOARD_TYPING_TIMEOUT", "chat.typing_timeout"),
    ("SWITCHBOARD_IDLE_TIMEOUT", "presence.idle_timeout"),
    ("SWITCHBOARD_HEARTBEAT_TTL", "presence.heartbeat_ttl"),
    ("SWITCHBOARD_PRESENCE_CACHE_TTL", "presence.cache_ttl"),
    ("SWITCHBOARD_MAX_MESSAGE_BYTES", "chat.max_message_bytes"),
    ("SWITCHBOARD_HISTORY_MAX_LEN", "chat.history_max_len"),
    ("SWITCHBOARD_HISTORY_MAX_AGE", "chat.history_max_age"),
    ("SWITCHBOARD_IDEMPOTENCY_TTL", "chat.idempotency_ttl"),
    ("SWITCHBOARD_EDIT_WINDOW", "chat.edit_window"),
    ("SWITCHBOARD_MAX_EDITS", "chat.max_edits"),
    (
        "SWITCHBOARD_MAX_ROOMS_PER_USER",
        "limits.max_rooms_per_user",
    ),
    (
        "SWITCHBOARD_MAX_ROOMS_PER_TENANT",
        "limits.max_rooms_per_tenant",
    ),
    ("SWITCHBOARD_MAX_PAYLOAD_BYTES", "limits.max_payload_bytes"),
    (
        "SWITCHBOARD_MAX_CONNECTIONS_PER_USER",
        "limits.max_connections_per_user",
    ),
    ("SWITCHBOARD_STUN_URLS", "webrtc.stun_urls"),
    ("SWITCHBOARD_TURN_URLS", "webrtc.turn_urls"),
    ("SWITCHBOARD_TURN_SECRET", "webrtc.turn_secret"),
    (
        "SWITCHBOARD_TURN_PREVIOUS_SECRET",
        "webrtc.turn_previous_secret",
    ),
    ("SWITCHBOARD_TURN_TTL", "webrtc.turn_ttl"),
    ("SWITCHBOARD_RINGING_TIMEOUT", "calls.ringing_timeout"),
    (
        "SWITCHBOARD_CALL_DISCONNECT_GRACE",
        "calls.disconnect_grace",
    ),
    (
        "SWITCHBOARD_MAX_CALL_PARTICIPANTS",
        "calls.max_participants",
    ),
    ("SWITCHBOARD_CALL_HISTORY_MAX_AGE", "calls.history_max_age"),
    (
        "SWITCHBOARD_CALL_HISTORY_OUTBOX_MAX",
        "calls.history_outbox_max",
    ),
    ("SWITCHBOARD_MONGODB_URI", "calls.mongodb_uri"),
    ("SWITCHBOARD_MONGODB_DATABASE", "calls.mongodb_database"),
    ("SWITCHBOARD_NOTIFICATIONS_MAX_AGE", "notifications.max_age"),
    ("SWITCHBOARD_KAFKA_BROKERS", "notifications.kafka.brokers"),
    ("SWITCHBOARD_KAFKA_TOPIC", "notifications.kafka.topic"),
    ("SWITCHBOARD_KAFKA_GROUP", "notifications.kafka.group"),
    (
        "SWITCHBOARD_KAFKA_DLQ_TOPIC",
        "notifications.kafka.dlq_topic",
    ),
    (
        "SWITCHBOARD_KAFKA_MAX_IN_FLIGHT",
        "notifications.kafka.max_in_flight",
    ),
    (
        "SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE",
        "notifications.fcm.service_account_file",
    ),
    ("SWITCHBOARD_FCM_BASE_URL", "notifications.fcm.base_url"),
    ("SWITCHBOARD_APNS_KEY_FILE", "notifications.apns.key_file"),
    ("SWITCHBOARD_APNS_KEY_ID", "notifications.apns.key_id"),
    ("SWITCHBOARD_APNS_TEAM_ID", "notifications.apns.team_id"),
    ("SWITCHBOARD_APNS_TOPIC", "notifications.apns.topic"),
    (
        "SWITCHBOARD_APNS_ALLOWED_TOPICS",
        "notifications.apns.allowed_topics",
    ),
    (
        "SWITCHBOARD_APNS_ENVIRONMENT",
        "notifications.apns.environment",
    ),
    ("SWITCHBOARD_SMTP_URL", "notifications.email.smtp_url"),
    ("SWITCHBOARD_EMAIL_FROM", "notifications.email.from"),
];

/// Shortest admin or service bearer token accepted, in bytes: as long as a JWT secret,
/// so neither can be guessed.
pub const MIN_BEARER_TOKEN_BYTES: usize = 32;

/// Most origins `server.cors_allowed_origins` may list (each request is compared with
/// every one of them).
pub const MAX_CORS_ORIGINS: usize = 100;

/// APNs environments.
pub const APNS_ENVIRONMENTS: &[&str] = &["production", "sandbox"];

/// The whole data plane configuration, as the operator renders it into a ConfigMap.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Address the socket node listens on (Socket.IO, health, metrics and HTTP APIs).
    pub listen: String,
    /// This node's id, carried by its presence entries; defaults to the host name.
    pub node_id: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    pub redis: RedisConfig,
    pub jwt: JwtConfig,
    /// Bearer token for `/admin/v1/*`, at least 32 bytes. Unset: the admin API answers 404.
    pub admin_token: Option<String>,
    /// Global bearer token for `/api/v1/*` (every tenant), at least 32 bytes. Tenant-scoped
    /// service JWTs (`scope: "service"`) work with or without it.
    pub service_token: Option<String>,
    pub server: ServerConfig,
    pub chat: ChatConfig,
    pub presence: PresenceConfig,
    pub limits: LimitsConfig,
    pub webrtc: WebrtcConfig,
    pub calls: CallsConfig,
    pub notifications: NotificationsConfig,
}

/// Redis connection. Without a URL the node runs alone with in-memory state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]` (RESP3, Redis >= 7). Unset: embedded mode.
    pub url: Option<String>,
}

/// How client tokens are checked.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256/384/512. Exactly one of `secret` and `public_key_file`.
    pub secret: Option<String>,
    /// PEM public key for RS256, ES256 or EdDSA.
    pub public_key_file: Option<String>,
    /// The one accepted algorithm: HS256, HS384, HS512, RS256, ES256 or EdDSA.
    pub algorithm: String,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`. A live connection whose token was not
    /// refreshed is closed at `exp` plus this. At most 10m.
    pub leeway: HumanDuration,
    /// How long before its token's `exp` a live connection is told `auth:expiring`, so
    /// the client can send `auth:refresh` in time. 1s to 1h.
    pub expiry_notice: HumanDuration,
}

/// Longest in-flight work (request handlers computing their acks, disconnect handlers,
/// history writes) a draining node waits for after it closed its last connection, before
/// it exits anyway. The operator adds it to the pods' termination grace period.
pub const DRAIN_IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a socket node leaves: on SIGTERM it fails readiness, refuses new Engine.IO
/// handshakes (HTTP 503), tells every client `server:draining {within_ms}` and closes the
/// connections at the transport level, spread over `drain_window`, so the clients
/// reconnect to other nodes a few at a time.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The connections are closed one by one, evenly spread over this long (0s: all at
    /// once). At most 10m.
    pub drain_window: HumanDuration,
    /// A client whose connection a drain closed may be reconnecting to another node for
    /// this long: its presence devices stay (no offline flap) and a call it is in waits at
    /// least this long for it (instead of `calls.disconnect_grace` alone). 1s to 10m.
    pub reconnect_grace: HumanDuration,
    /// A second address (IP:PORT) for `/metrics`, `/admin/*` and `/api/*`; when set, the
    /// `listen` port serves only Socket.IO, `/healthz` and `/readyz`, so the public
    /// Service and the Ingress never expose the operators' and backends' APIs. Unset:
    /// everything on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_listen: Option<String>,
    /// Web origins (`https://app.example.com`, exactly as browsers send `Origin`) whose
    /// pages may use this node from another origin: Engine.IO long-polling and the HTTP
    /// APIs get CORS grants (preflights answered), and Socket.IO requests (WebSocket
    /// upgrades included) carrying any other `Origin` than these or the node's own are
    /// refused with 403. Empty (the default): no CORS headers, and no `Origin` check.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            drain_window: HumanDuration::from_secs(10),
            reconnect_grace: HumanDuration::from_secs(30),
            internal_listen: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Rooms, messages and typing.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// A typing indicator without a refresh for this long is cleared.
    pub typing_timeout: HumanDuration,
    /// Largest message body, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Largest `meta` object, in bytes of JSON.
    pub max_meta_bytes: usize,
    /// Messages kept per room (the room's stream is trimmed past this).
    pub history_max_len: u64,
    /// Messages older than this (by their `ts`) are gone from history and storage, besides
    /// the length bound. `0s`: no age limit. 0s, or 1s to 3650d.
    pub history_max_age: HumanDuration,
    /// How long a `client_msg_id` is remembered for de-duplication (a retry within it
    /// returns the first message while that message is still kept). 1s to 30d.
    pub idempotency_ttl: HumanDuration,
    /// Members listed by `room:members` at most.
    pub max_members_listed: usize,
    /// How long after sending its sender may edit a message (`0s`: never). Deleting is
    /// not bounded by it.
    pub edit_window: HumanDuration,
    /// Edits one message takes at most; only its current version is stored.
    pub max_edits: u32,
}

/// Presence: idle detection, node liveness, the read cache.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// No activity on any of a user's connections for this long makes them `away`.
    pub idle_timeout: HumanDuration,
    /// TTL of each node's heartbeat key; survivors expire a dead node's connections
    /// within twice this.
    pub heartbeat_ttl: HumanDuration,
    /// How long a node trusts a cached presence without an update.
    pub cache_ttl: HumanDuration,
    /// Presence subscriptions one socket may hold.
    pub max_subscriptions: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            idle_timeout: HumanDuration::from_secs(300),
            heartbeat_ttl: HumanDuration::from_secs(15),
            cache_ttl: HumanDuration::from_secs(300),
            max_subscriptions: 5000,
        }
    }
}

/// A token bucket: `rate` tokens a second, up to `burst` at once.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub rate: f64,
    pub burst: u32,
}

/// One bucket per event class.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClassBuckets {
    /// `message:send`.
    pub message: Bucket,
    /// `typing:*`.
    pub typing: Bucket,
    /// receipts, history, members, unread and other reads.
    pub read: Bucket,
    /// room create, join, leave, invite, privacy.
    pub room: Bucket,
    /// WebRTC signaling relay: `webrtc:offer`, `webrtc:answer`, `webrtc:ice-candidate`.
    /// Sized for a full mesh: a peer of an 8-person call sends an offer or answer and
    /// a trickle of candidates to each of the 7 others within a few seconds.
    pub signal: Bucket,
}

/// Abuse limits.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub per_socket: ClassBuckets,
    pub per_user: ClassBuckets,
    /// This many `rate_limited` answers within `abuse_window` disconnect the socket.
    pub abuse_threshold: u32,
    pub abuse_window: HumanDuration,
    /// Largest Socket.IO packet accepted, in bytes.
    pub max_payload_bytes: u64,
    /// Rooms a user may belong to.
    pub max_rooms_per_user: usize,
    /// Rooms a tenant may hold at once (`room:create` past it is `forbidden`;
    /// `room:delete` frees a place). 1 to 100000000.
    pub max_rooms_per_tenant: usize,
    /// Namespace connections one user may hold at once over all nodes (a client app
    /// usually opens one per namespace per device); past it a handshake gets
    /// `too_many_connections`. 1 to 10000.
    pub max_connections_per_user: usize,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:3000".into(),
            node_id: None,
            log_format: "text".into(),
            redis: RedisConfig::default(),
            jwt: JwtConfig::default(),
            admin_token: None,
            service_token: None,
            server: ServerConfig::default(),
            chat: ChatConfig::default(),
            presence: PresenceConfig::default(),
            limits: LimitsConfig::default(),
            webrtc: WebrtcConfig::default(),
            calls: CallsConfig::default(),
            notifications: NotificationsConfig::default(),
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            public_key_file: None,
            algorithm: "HS256".into(),
            issuer: None,
            audience: None,
            leeway: HumanDuration::from_secs(30),
            expiry_notice: HumanDuration::from_secs(60),
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            typing_timeout: HumanDuration::from_secs(5),
            max_message_bytes: 4096,
            max_meta_bytes: 2048,
            history_max_len: 10_000,
            history_max_age: HumanDuration::from_secs(0),
            idempotency_ttl: HumanDuration::from_secs(24 * 3600),
            max_members_listed: 1000,
            edit_window: HumanDuration::from_secs(24 * 3600),
            max_edits: 50,
        }
    }
}

impl Default for ClassBuckets {
    fn default() -> Self {
        Self {
            message: Bucket {
                rate: 10.0,
                burst: 20,
            },
            typing: Bucket {
                rate: 5.0,
                burst: 10,
            },
            read: Bucket {
                rate: 20.0,
                burst: 40,
            },
            room: Bucket {
                rate: 5.0,
                burst: 20,
            },
            signal: Bucket {
                rate: 50.0,
                burst: 200,
            },
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let per_socket = ClassBuckets::default();
        let per_user = ClassBuckets {
            message: Bucket {
                rate: 20.0,
                burst: 40,
            },
            typing: Bucket {
                rate: 10.0,
                burst: 20,
            },
            read: Bucket {
                rate: 40.0,
                burst: 80,
            },
            room: Bucket {
                rate: 10.0,
                burst: 40,
            },
            signal: Bucket {
                rate: 100.0,
                burst: 400,
            },
        };
        Self {
            per_socket,
            per_user,
            abuse_threshold: 50,
            abuse_window: HumanDuration::from_secs(10),
            max_payload_bytes: 64 * 1024,
            max_rooms_per_user: 500,
            max_rooms_per_tenant: 1_000_000,
            max_connections_per_user: 50,
        }
    }
}

/// ICE servers handed to clients by `webrtc:get-ice-servers`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebrtcConfig {
    /// `stun:host:port` URLs (environment: comma-separated).
    pub stun_urls: Vec<String>,
    /// `turn:` / `turns:` URLs (environment: comma-separated). Needs `turn_secret`.
    pub turn_urls: Vec<String>,
    /// coturn `static-auth-secret`: TURN REST credentials are signed with it.
    pub turn_secret: Option<String>,
    /// The secret before the last rotation; coturn still accepts it, so credentials
    /// issued before a rotation keep working until they expire.
    pub turn_previous_secret: Option<String>,
    /// Lifetime of issued TURN credentials. They cannot be revoked (coturn checks only
    /// their signature and expiry), so this is how long a revoked user may still relay
    /// with credentials fetched before the revocation. 1m to 7d.
    pub turn_ttl: HumanDuration,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_previous_secret: None,
            // One hour, as the operator's default credentialTTL: see `turn_ttl`.
            turn_ttl: HumanDuration::from_secs(3600),
        }
    }
}

/// Calls: timers, sizes, history and quality thresholds.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// An unanswered call ends as `timeout` after this long.
    pub ringing_timeout: HumanDuration,
    /// A participant whose last /webrtc socket went away leaves the call
    /// (`disconnected`) unless one comes back within this long.
    pub disconnect_grace: HumanDuration,
    /// Most participants of a group call, the initiator included.
    pub max_participants: usize,
    /// `mongodb://…` for call history. Unset: a bounded in-memory history.
    pub mongodb_uri: Option<String>,
    /// Database holding the `calls` collection.
    pub mongodb_database: String,
    /// Ended calls kept per tenant in memory when no MongoDB is configured.
    pub memory_history_max: usize,
    /// Call history older than this (by `created_at`) is no longer served and is deleted
    /// (MongoDB: when one of its participants' next call is recorded). 1h to 3650d.
    pub history_max_age: HumanDuration,
    /// History records of ended calls waiting for MongoDB, per tenant, at most; past it
    /// the oldest is dropped (and counted). 1 to 10000000.
    pub history_outbox_max: usize,
    pub quality: QualityThresholds,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ringing_timeout: HumanDuration::from_secs(30),
            disconnect_grace: HumanDuration::from_secs(10),
            max_participants: 8,
            mongodb_uri: None,
            mongodb_database: "switchboard".into(),
            memory_history_max: 10_000,
            history_max_age: HumanDuration::from_secs(365 * 86_400),
            history_outbox_max: 100_000,
            quality: QualityThresholds::default(),
        }
    }
}

/// A quality report past one of these raises the matching issue.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QualityThresholds {
    /// `high_latency` above this round-trip time.
    pub max_latency_ms: f64,
    /// `packet_loss` above this percentage.
    pub max_packet_loss_percentage: f64,
    /// `high_jitter` above this.
    pub max_jitter_ms: f64,
    /// `low_bitrate` below this.
    pub min_bitrate_kbps: f64,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        Self {
            max_latency_ms: 300.0,
            max_packet_loss_percentage: 5.0,
            max_jitter_ms: 30.0,
            min_bitrate_kbps: 100.0,
        }
    }
}

/// Notifications: in-app store, Kafka, push providers, email.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// In-app notifications kept per user (oldest dropped first).
    pub max_in_app_per_user: usize,
    /// A notification older than this when the worker reads it (from its `created_at`, or
    /// the Kafka timestamp without one) is not delivered: it goes to the dead-letter topic
    /// with reason `stale`. So a consumer group that re-reads a topic from the start (its
    /// offsets expired) does not push old notifications again.
    pub max_age: HumanDuration,
    pub kafka: KafkaConfig,
    pub fcm: FcmConfig,
    pub apns: ApnsConfig,
    pub email: EmailConfig,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            max_in_app_per_user: 500,
            max_age: HumanDuration::from_secs(24 * 3600),
            kafka: KafkaConfig::default(),
            fcm: FcmConfig::default(),
            apns: ApnsConfig::default(),
            email: EmailConfig::default(),
        }
    }
}

/// Kafka. Without brokers, `POST /api/v1/notifications` delivers directly.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` bootstrap servers (environment: comma-separated).
    pub brokers: Vec<String>,
    /// Topic notifications are produced to and consumed from.
    pub topic: String,
    /// Consumer group of `switchboard worker`.
    pub group: String,
    /// Where malformed messages go, with the reason.
    pub dlq_topic: String,
    /// Messages one `switchboard worker` processes at once, so a slow provider or a long
    /// Retry-After does not stall every partition it owns; offsets are committed only up
    /// to the first unfinished message of each partition. 1 to 1024.
    pub max_in_flight: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            topic: "notifications".into(),
            group: "switchboard-workers".into(),
            dlq_topic: "notifications-dlq".into(),
            max_in_flight: 32,
        }
    }
}

/// Firebase Cloud Messaging HTTP v1. Unset `service_account_file`: no FCM push.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    /// Service-account JSON (its `project_id`, `client_email`, `private_key`, `token_uri`).
    pub service_account_file: Option<String>,
    /// Base URL of the FCM API.
    pub base_url: String,
    /// Attempts per message for retryable errors (429, 500, 503).
    pub max_attempts: u32,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            service_account_file: None,
            base_url: "https://fcm.googleapis.com".into(),
            max_attempts: 5,
        }
    }
}

/// Apple Push Notification service, token (.p8) auth. Set all of `key_file`,
/// `key_id`, `team_id` and `topic`, or none.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// The .p8 signing key.
    pub key_file: Option<String>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    /// The app's bundle id (`apns-topic`).
    pub topic: Option<String>,
    /// Topics (bundle ids) a device may name as its `app_id`; empty: `topic` only. The key
    /// signs for every app of the team, so a client must not pick any of them.
    pub allowed_topics: Vec<String>,
    /// `production` or `sandbox`; a device's own environment wins.
    pub environment: String,
    /// Attempts per message for retryable errors (429, 5xx).
    pub max_attempts: u32,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            key_id: None,
            team_id: None,
            topic: None,
            allowed_topics: Vec::new(),
            environment: "production".into(),
            max_attempts: 5,
        }
    }
}

/// The email channel. Unset `smtp_url`: no email.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://[user:pass@]host:port` (STARTTLS when offered) or `smtps://…`.
    pub smtp_url: Option<String>,
    /// `From:` address; required with `smtp_url`.
    pub from: Option<String>,
}

/// Node ids end up in presence entries and metrics: 1–64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

// === impl ConfigError ===

/// A refused setting: the key, where it came from, and what would be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}{}: {message}", env_of(key).map(|e| format!(" ({e})")).unwrap_or_default())]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn env_of(key: &str) -> Option<&'static str> {
    ENV_KEYS.iter().find(|(_, k)| *k == key).map(|(e, _)| *e)
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// All the errors of one load, so a user fixes a file in one pass.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl DataplaneConfig ===

impl DataplaneConfig {
    /// Parse a file: YAML unless its name ends in `.toml`. Unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![err(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        Self::from_str(&text, is_toml)
    }

    /// Parse text as TOML or YAML (an empty document gives the defaults).
    pub fn from_str(text: &str, toml: bool) -> Result<Self, ConfigErrors> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let parsed = if toml {
            toml::from_str(text).map_err(|e| err("(file)", format!("TOML: {}", e.message())))
        } else {
            serde_yaml::from_str(text).map_err(|e| err("(file)", format!("YAML: {e}")))
        };
        parsed.map_err(|e| ConfigErrors(vec![e]))
    }

    /// Apply every `SWITCHBOARD_*` variable that `lookup` knows (usually `std::env::var`).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigErrors> {
        let errors: Vec<_> = ENV_KEYS
            .iter()
            .filter_map(|(var, key)| lookup(var).map(|v| (*key, v)))
            .filter_map(|(key, v)| self.set(key, &v).err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Set one key from its text form, as the environment and `--set key=value` do.
    /// An empty value clears an optional key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn opt(v: &str) -> Option<String> {
            (!v.is_empty()).then(|| v.to_owned())
        }
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| err(key, format!("{v:?} is not a whole number")))
        }
        fn dur(key: &str, v: &str) -> Result<HumanDuration, ConfigError> {
            HumanDuration::parse(v).map_err(|e| err(key, e.to_string()))
        }
        fn list(v: &str) -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }
        match key {
            "listen" => self.listen = value.to_owned(),
            "node_id" => self.node_id = opt(value),
            "log_format" => self.log_format = value.to_owned(),
            "redis.url" => self.redis.url = opt(value),
            "jwt.secret" => self.jwt.secret = opt(value),
            "jwt.public_key_file" => self.jwt.public_key_file = opt(value),
            "jwt.algorithm" => self.jwt.algorithm = value.to_owned(),
            "jwt.issuer" => self.jwt.issuer = opt(value),
            "jwt.audience" => self.jwt.audience = opt(value),
            "jwt.leeway" => self.jwt.leeway = dur(key, value)?,
            "jwt.expiry_notice" => self.jwt.expiry_notice = dur(key, value)?,
            "admin_token" => self.admin_token = opt(value),
            "service_token" => self.service_token = opt(value),
            "server.drain_window" => self.server.drain_window = dur(key, value)?,
            "server.reconnect_grace" => self.server.reconnect_grace = dur(key, value)?,
            "server.internal_listen" => self.server.internal_listen = opt(value),
            "server.cors_allowed_origins" => self.server.cors_allowed_origins = list(value),
            "chat.typing_timeout" => self.chat.typing_timeout = dur(key, value)?,
            "presence.idle_timeout" => self.presence.idle_timeout = dur(key, value)?,
            "presence.heartbeat_ttl" => self.presence.heartbeat_ttl = dur(key, value)?,
            "presence.cache_ttl" => self.presence.cache_ttl = dur(key, value)?,
            "presence.max_subscriptions" => self.presence.max_subscriptions = num(key, value)?,
            "chat.max_message_bytes" => self.chat.max_message_bytes = num(key, value)?,
            "chat.max_meta_bytes" => self.chat.max_meta_bytes = num(key, value)?,
            "chat.history_max_len" => self.chat.history_max_len = num(key, value)?,
            "chat.history_max_age" => self.chat.history_max_age = dur(key, value)?,
            "chat.idempotency_ttl" => self.chat.idempotency_ttl = dur(key, value)?,
            "chat.edit_window" => self.chat.edit_window = dur(key, value)?,
            "chat.max_edits" => self.chat.max_edits = num(key, value)?,
            "limits.max_rooms_per_user" => self.limits.max_rooms_per_user = num(key, value)?,
            "limits.max_rooms_per_tenant" => self.limits.max_rooms_per_tenant = num(key, value)?,
            "limits.max_payload_bytes" => self.limits.max_payload_bytes = num(key, value)?,
            "limits.max_connections_per_user" => {
                self.limits.max_connections_per_user = num(key, value)?
            }
            "limits.abuse_threshold" => self.limits.abuse_threshold = num(key, value)?,
            "limits.abuse_window" => self.limits.abuse_window = dur(key, value)?,
            "webrtc.stun_urls" => self.webrtc.stun_urls = list(value),
            "webrtc.turn_urls" => self.webrtc.turn_urls = list(value),
            "webrtc.turn_secret" => self.webrtc.turn_secret = opt(value),
            "webrtc.turn_previous_secret" => self.webrtc.turn_previous_secret = opt(value),
            "webrtc.turn_ttl" => self.webrtc.turn_ttl = dur(key, value)?,
            "calls.ringing_timeout" => self.calls.ringing_timeout = dur(key, value)?,
            "calls.disconnect_grace" => self.calls.disconnect_grace = dur(key, value)?,
            "calls.max_participants" => self.calls.max_participants = num(key, value)?,
            "calls.mongodb_uri" => self.calls.mongodb_uri = opt(value),
            "calls.mongodb_database" => self.calls.mongodb_database = value.to_owned(),
            "calls.memory_history_max" => self.calls.memory_history_max = num(key, value)?,
            "calls.history_max_age" => self.calls.history_max_age = dur(key, value)?,
            "calls.history_outbox_max" => self.calls.history_outbox_max = num(key, value)?,
            "notifications.max_in_app_per_user" => {
                self.notifications.max_in_app_per_user = num(key, value)?
            }
            "notifications.max_age" => self.notifications.max_age = dur(key, value)?,
            "notifications.kafka.brokers" => self.notifications.kafka.brokers = list(value),
            "notifications.kafka.topic" => self.notifications.kafka.topic = value.to_owned(),
            "notifications.kafka.group" => self.notifications.kafka.group = value.to_owned(),
            "notifications.kafka.dlq_topic" => {
                self.notifications.kafka.dlq_topic = value.to_owned()
            }
            "notifications.kafka.max_in_flight" => {
                self.notifications.kafka.max_in_flight = num(key, value)?
            }
            "notifications.fcm.service_account_file" => {
                self.notifications.fcm.service_account_file = opt(value)
            }
            "notifications.fcm.base_url" => self.notifications.fcm.base_url = value.to_owned(),
            "notifications.fcm.max_attempts" => {
                self.notifications.fcm.max_attempts = num(key, value)?
            }
            "notifications.apns.key_file" => self.notifications.apns.key_file = opt(value),
            "notifications.apns.key_id" => self.notifications.apns.key_id = opt(value),
            "notifications.apns.team_id" => self.notifications.apns.team_id = opt(value),
            "notifications.apns.topic" => self.notifications.apns.topic = opt(value),
            "notifications.apns.allowed_topics" => {
                self.notifications.apns.allowed_topics = list(value)
            }
            "notifications.apns.environment" => {
                self.notifications.apns.environment = value.to_owned()
            }
            "notifications.apns.max_attempts" => {
                self.notifications.apns.max_attempts = num(key, value)?
            }
            "notifications.email.smtp_url" => self.notifications.email.smtp_url = opt(value),
            "notifications.email.from" => self.notifications.email.from = opt(value),
            _ => {
                let known: Vec<_> = ENV_KEYS.iter().map(|(_, k)| *k).collect();
                return Err(err(
                    key,
                    format!("unknown key; settable keys: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Check every value; all problems at once, each naming its key and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(err(
                "listen",
                format!(
                    "{:?} is not an address; expected IP:PORT such as 0.0.0.0:3000",
                    self.listen
                ),
            ));
        }
        if !LOG_FORMATS.contains(&self.log_format.as_str()) {
            errors.push(err(
                "log_format",
                format!(
                    "{:?} is not allowed; allowed values: {}",
                    self.log_format,
                    LOG_FORMATS.join(", ")
                ),
            ));
        }
        if let Some(id) = &self.node_id
            && !valid_node_id(id)
        {
            errors.push(err(
                "node_id",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
            ));
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            errors.push(err(
                "redis.url",
                // Never the value: it comes from a Secret and holds a password.
                "must start with redis:// or rediss://",
            ));
        }
        self.validate_jwt(&mut errors);
        for (key, token) in [
            ("admin_token", &self.admin_token),
            ("service_token", &self.service_token),
        ] {
            // Never the value (it comes from a Secret); its length says enough.
            if token
                .as_ref()
                .is_some_and(|t| t.len() < MIN_BEARER_TOKEN_BYTES)
            {
                errors.push(err(
                    key,
                    format!(
                        "must be at least {MIN_BEARER_TOKEN_BYTES} bytes (for example: \
                         openssl rand -hex 32)"
                    ),
                ));
            }
        }
        let s = &self.server;
        if s.drain_window.0 > std::time::Duration::from_secs(600) {
            errors.push(err("server.drain_window", "must be between 0s and 10m"));
        }
        let grace = s.reconnect_grace.0;
        if grace < std::time::Duration::from_secs(1) || grace > std::time::Duration::from_secs(600)
        {
            errors.push(err("server.reconnect_grace", "must be between 1s and 10m"));
        }
        if let Some(internal) = &s.internal_listen {
            match internal.parse::<SocketAddr>() {
                Err(_) => errors.push(err(
                    "server.internal_listen",
                    format!("{internal:?} is not an address; expected IP:PORT such as 0.0.0.0:9090"),
                )),
                Ok(a) if a.port() != 0 && self.listen.parse::<SocketAddr>().is_ok_and(|l| l.port() == a.port()) => {
                    errors.push(err(
                        "server.internal_listen",
                        format!("{internal} uses the port of listen ({}); the internal APIs need their own", self.listen),
                    ))
                }
                Ok(_) => {}
            }
        }
        for origin in &s.cors_allowed_origins {
            if let Err(e) = crate::origin::check(origin) {
                errors.push(err("server.cors_allowed_origins", e.to_string()));
            }
        }
        if s.cors_allowed_origins.len() > MAX_CORS_ORIGINS {
            errors.push(err(
                "server.cors_allowed_origins",
                format!("at most {MAX_CORS_ORIGINS} origins"),
            ));
        }
        let c = &self.chat;
        if c.typing_timeout.0.as_millis() < 500 || c.typing_timeout.0.as_secs() > 300 {
            errors.push(err("chat.typing_timeout", "must be between 500ms and 5m"));
        }
        if !(1..=1_048_576).contains(&c.max_message_bytes) {
            errors.push(err(
                "chat.max_message_bytes",
                "must be between 1 and 1048576",
            ));
        }
        if c.max_meta_bytes > 65_536 {
            errors.push(err("chat.max_meta_bytes", "must be at most 65536"));
        }
        if !(10..=10_000_000).contains(&c.history_max_len) {
            errors.push(err(
                "chat.history_max_len",
                "must be between 10 and 10000000",
            ));
        }
        let age = c.history_max_age.0;
        if !age.is_zero()
            && (age < Duration::from_secs(1) || age > Duration::from_secs(3650 * 86_400))
        {
            errors.push(err(
                "chat.history_max_age",
                "must be 0s (no age limit) or between 1s and 3650d",
            ));
        }
        let ttl = c.idempotency_ttl.0;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 86_400) {
            errors.push(err("chat.idempotency_ttl", "must be between 1s and 30d"));
        }
        if c.edit_window.0.as_secs() > 30 * 86_400 {
            errors.push(err(
                "chat.edit_window",
                "must be between 0s (no edits) and 30d",
            ));
        }
        if !(1..=1000).contains(&c.max_edits) {
            errors.push(err("chat.max_edits", "must be between 1 and 1000"));
        }
        if !(1..=100_000).contains(&c.max_members_listed) {
            errors.push(err(
                "chat.max_members_listed",
                "must be between 1 and 100000",
            ));
        }
        let p = &self.presence;
        if p.idle_timeout.0.as_secs() < 1 || p.idle_timeout.0.as_secs() > 86_400 {
            errors.push(err("presence.idle_timeout", "must be between 1s and 24h"));
        }
        if p.heartbeat_ttl.0.as_secs() < 1 || p.heartbeat_ttl.0.as_secs() > 600 {
            errors.push(err("presence.heartbeat_ttl", "must be between 1s and 10m"));
        }
        if p.cache_ttl.0.as_secs() > 86_400 {
            errors.push(err("presence.cache_ttl", "must be at most 24h"));
        }
        if !(1..=100_000).contains(&p.max_subscriptions) {
            errors.push(err(
                "presence.max_subscriptions",
                "must be between 1 and 100000",
            ));
        }
        let l = &self.limits;
        for (scope, buckets) in [("per_socket", &l.per_socket), ("per_user", &l.per_user)] {
            for (class, b) in [
                ("message", &buckets.message),
                ("typing", &buckets.typing),
                ("read", &buckets.read),
                ("room", &buckets.room),
                ("signal", &buckets.signal),
            ] {
                if !(b.rate.is_finite() && b.rate > 0.0) || b.burst == 0 {
                    errors.push(err(
                        &format!("limits.{scope}.{class}"),
                        "rate must be > 0 and burst >= 1",
                    ));
                }
            }
        }
        if l.abuse_threshold == 0 {
            errors.push(err("limits.abuse_threshold", "must be at least 1"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&l.max_payload_bytes) {
            errors.push(err(
                "limits.max_payload_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(1..=100_000).contains(&l.max_rooms_per_user) {
            errors.push(err(
                "limits.max_rooms_per_user",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000_000).contains(&l.max_rooms_per_tenant) {
            errors.push(err(
                "limits.max_rooms_per_tenant",
                "must be between 1 and 100000000",
            ));
        }
        if !(1..=10_000).contains(&l.max_connections_per_user) {
            errors.push(err(
                "limits.max_connections_per_user",
                "must be between 1 and 10000",
            ));
        }
        self.validate_webrtc(&mut errors);
        self.validate_calls(&mut errors);
        self.validate_notifications(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate_webrtc(&self, errors: &mut Vec<ConfigError>) {
        let w = &self.webrtc;
        for u in &w.stun_urls {
            if !(u.starts_with("stun:") || u.starts_with("stuns:")) {
                errors.push(err(
                    "webrtc.stun_urls",
                    format!("{u:?} must start with stun: or stuns:"),
                ));
            }
        }
        for u in &w.turn_urls {
            if !(u.starts_with("turn:") || u.starts_with("turns:")) {
                errors.push(err(
                    "webrtc.turn_urls",
                    format!("{u:?} must start with turn: or turns:"),
                ));
            }
        }
        if !w.turn_urls.is_empty() && w.turn_secret.is_none() {
            errors.push(err(
                "webrtc.turn_secret",
                "required when webrtc.turn_urls is set (coturn's static-auth-secret)",
            ));
        }
        for (key, secret) in [
            ("webrtc.turn_secret", &w.turn_secret),
            ("webrtc.turn_previous_secret", &w.turn_previous_secret),
        ] {
            if secret.as_ref().is_some_and(|s| s.len() < 16) {
                errors.push(err(key, "must be at least 16 bytes"));
            }
        }
        if w.turn_previous_secret.is_some() && w.turn_secret.is_none() {
            errors.push(err(
                "webrtc.turn_previous_secret",
                "set only together with webrtc.turn_secret",
            ));
        }
        let ttl = w.turn_ttl.0.as_secs();
        if !(60..=7 * 86_400).contains(&ttl) {
            errors.push(err("webrtc.turn_ttl", "must be between 1m and 7d"));
        }
    }

    fn validate_calls(&self, errors: &mut Vec<ConfigError>) {
        let c = &self.calls;
        if c.ringing_timeout.0.as_secs() < 1 || c.ringing_timeout.0.as_secs() > 600 {
            errors.push(err("calls.ringing_timeout", "must be between 1s and 10m"));
        }
        if c.disconnect_grace.0.as_secs() > 300 {
            errors.push(err("calls.disconnect_grace", "must be at most 5m"));
        }
        if !(2..=100).contains(&c.max_participants) {
            errors.push(err("calls.max_participants", "must be between 2 and 100"));
        }
        if let Some(uri) = &c.mongodb_uri
            && !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"))
        {
            errors.push(err(
                "calls.mongodb_uri",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let db = &c.mongodb_database;
        if db.is_empty() || db.len() > 63 || db.contains(['/', '\\', '.', ' ', '"', '$']) {
            errors.push(err(
                "calls.mongodb_database",
                "must be 1 to 63 characters without / \\ . space \" $",
            ));
        }
        if !(1..=1_000_000).contains(&c.memory_history_max) {
            errors.push(err(
                "calls.memory_history_max",
                "must be between 1 and 1000000",
            ));
        }
        let age = c.history_max_age.0;
        if age < Duration::from_secs(3600) || age > Duration::from_secs(3650 * 86_400) {
            errors.push(err("calls.history_max_age", "must be between 1h and 3650d"));
        }
        if !(1..=10_000_000).contains(&c.history_outbox_max) {
            errors.push(err(
                "calls.history_outbox_max",
                "must be between 1 and 10000000",
            ));
        }
        let q = &c.quality;
        for (key, v) in [
            ("calls.quality.max_latency_ms", q.max_latency_ms),
            (
                "calls.quality.max_packet_loss_percentage",
                q.max_packet_loss_percentage,
            ),
            ("calls.quality.max_jitter_ms", q.max_jitter_ms),
            ("calls.quality.min_bitrate_kbps", q.min_bitrate_kbps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                errors.push(err(key, "must be a number >= 0"));
            }
        }
        if q.max_packet_loss_percentage > 100.0 {
            errors.push(err(
                "calls.quality.max_packet_loss_percentage",
                "must be at most 100",
            ));
        }
    }

    fn validate_notifications(&self, errors: &mut Vec<ConfigError>) {
        let n = &self.notifications;
        if !(1..=100_000).contains(&n.max_in_app_per_user) {
            errors.push(err(
                "notifications.max_in_app_per_user",
                "must be between 1 and 100000",
            ));
        }
        // At most the oldest `created_at` a producer may give (30 days).
        if n.max_age.0.as_secs() < 1 || n.max_age.0.as_secs() > 30 * 86_400 {
            errors.push(err(
                "notifications.max_age",
                "must be between 1s and 30 days (720h)",
            ));
        }
        let k = &n.kafka;
        for b in &k.brokers {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                errors.push(err(
                    "notifications.kafka.brokers",
                    format!("{b:?} is not host:port"),
                ));
            }
        }
        // The worker and the socket nodes share de-duplication, claims, devices and the
        // inbox through Redis; a Kafka setup without it would deliver from stores no one
        // else sees.
        if !k.brokers.is_empty() && self.redis.url.is_none() {
            errors.push(err(
                "notifications.kafka.brokers",
                "set together with redis.url (SWITCHBOARD_REDIS_URL): Kafka delivery needs the shared Redis",
            ));
        }
        let topic_ok = |t: &str| {
            (1..=249).contains(&t.len())
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        for (key, t) in [
            ("notifications.kafka.topic", &k.topic),
            ("notifications.kafka.group", &k.group),
            ("notifications.kafka.dlq_topic", &k.dlq_topic),
        ] {
            if !topic_ok(t) {
                errors.push(err(
                    key,
                    "must be 1 to 249 characters of A-Z, a-z, 0-9, '.', '_', '-'",
                ));
            }
        }
        if !(1..=1024).contains(&k.max_in_flight) {
            errors.push(err(
                "notifications.kafka.max_in_flight",
                "must be between 1 and 1024",
            ));
        }
        if k.topic == k.dlq_topic {
            errors.push(err(
                "notifications.kafka.dlq_topic",
                "must differ from notifications.kafka.topic",
            ));
        }
        let f = &n.fcm;
        if !(f.base_url.starts_with("https://") || f.base_url.starts_with("http://")) {
            errors.push(err(
                "notifications.fcm.base_url",
                "must start with https:// or http://",
            ));
        }
        if let Some(path) = &f.service_account_file
            && !Path::new(path).is_file()
        {
            errors.push(err(
                "notifications.fcm.service_account_file",
                format!("{path:?} is not a readable file"),
            ));
        }
        let a = &n.apns;
        let parts = [
            ("notifications.apns.key_file", &a.key_file),
            ("notifications.apns.key_id", &a.key_id),
            ("notifications.apns.team_id", &a.team_id),
            ("notifications.apns.topic", &a.topic),
        ];
        if parts.iter().any(|(_, v)| v.is_some()) {
            for (key, v) in parts {
                if v.is_none() {
                    errors.push(err(
                        key,
                        "required when any of notifications.apns.key_file, key_id, team_id, topic is set",
                    ));
                }
            }
        }
        if let Some(path) = &a.key_file
            && !Path::new(path).is_file()
        {
            errors.push(err(
                "notifications.apns.key_file",
                format!("{path:?} is not a readable file"),
            ));
        }
        for t in &a.allowed_topics {
            if t.is_empty()
                || t.len() > 255
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(err(
                    "notifications.apns.allowed_topics",
                    format!("{t:?} must be 1 to 255 characters of A-Z, a-z, 0-9, '-', '_', '.'"),
                ));
            }
        }
        if !APNS_ENVIRONMENTS.contains(&a.environment.as_str()) {
            errors.push(err(
                "notifications.apns.environment",
                format!(
                    "{:?} is not allowed; allowed values: {}",
                    a.environment,
                    APNS_ENVIRONMENTS.join(", ")
                ),
            ));
        }
        for (key, attempts) in [
            ("notifications.fcm.max_attempts", f.max_attempts),
            ("notifications.apns.max_attempts", a.max_attempts),
        ] {
            if !(1..=20).contains(&attempts) {
                errors.push(err(key, "must be between 1 and 20"));
            }
        }
        let e = &n.email;
        if let Some(url) = &e.smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                errors.push(err(
                    "notifications.email.smtp_url",
                    "must start with smtp:// or smtps://",
                ));
            }
            if e.from.is_none() {
                errors.push(err(
                    "notifications.email.from",
                    "required when notifications.email.smtp_url is set",
                ));
            }
        }
        if e.from.as_ref().is_some_and(|f| !f.contains('@')) {
            errors.push(err("notifications.email.from", "must be an email address"));
        }
    }

    fn validate_jwt(&self, errors: &mut Vec<ConfigError>) {
        let j = &self.jwt;
        if j.leeway.0 > std::time::Duration::from_secs(600) {
            errors.push(err("jwt.leeway", "must be between 0s and 10m"));
        }
        let notice = j.expiry_notice.0;
        if notice < std::time::Duration::from_secs(1)
            || notice > std::time::Duration::from_secs(3600)
        {
            errors.push(err("jwt.expiry_notice", "must be between 1s and 1h"));
        }
        let alg = j.algorithm.as_str();
        if !JWT_ALGORITHMS.contains(&alg) {
            errors.push(err(
                "jwt.algorithm",
                format!(
                    "{alg:?} is not allowed; allowed values: {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            ));
            return;
        }
        let hmac = alg.starts_with("HS");
        match (&j.secret, &j.public_key_file) {
            (Some(_), Some(_)) => errors.push(err(
                "jwt.secret",
                "set exactly one of jwt.secret and jwt.public_key_file",
            )),
            (Some(s), None) if !hmac => errors.push(err(
                "jwt.algorithm",
                format!(
                    "{alg} needs jwt.public_key_file; jwt.secret goes with HS256, HS384 or HS512"
                ),
            )),
            (Some(s), None) if s.len() < 32 => {
                errors.push(err("jwt.secret", "must be at least 32 bytes"))
            }
            (None, Some(_)) if hmac => errors.push(err(
                "jwt.algorithm",
                format!(
                    "{alg} needs jwt.secret; jwt.public_key_file goes with RS256, ES256 or EdDSA"
                ),
            )),
            (None, Some(path)) if !Path::new(path).is_file() => errors.push(err(
                "jwt.public_key_file",
                format!("{path:?} is not a readable file"),
            )),
            _ => {}
        }
    }

    /// True when no Redis is configured: one node, state in memory.
    pub fn embedded(&self) -> bool {
        self.redis.url.is_none()
    }

    /// True when a key to check tokens with is configured.
    pub fn has_jwt_key(&self) -> bool {
        self.jwt.secret.is_some() || self.jwt.public_key_file.is_some()
    }

    /// [`Self::validate`] plus what a socket node (`switchboard serve`) needs on top: in
    /// shared mode a configured JWT key. Only an embedded node may run on a generated dev
    /// secret: nodes sharing a Redis would each make up their own, and a token signed by
    /// one would be refused by the others.
    pub fn validate_serve(&self) -> Result<(), ConfigErrors> {
        let mut errors = self.validate().err().map(|e| e.0).unwrap_or_default();
        if !self.embedded() && !self.has_jwt_key() {
            errors.push(err(
                "jwt.secret",
                "shared mode (redis.url is set) needs a configured JWT key: set jwt.secret \
                 (SWITCHBOARD_JWT_SECRET) for HS256/384/512 or jwt.public_key_file \
                 (SWITCHBOARD_JWT_PUBLIC_KEY_FILE) for RS256/ES256/EdDSA; only embedded mode \
                 generates a dev secret",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_valid() -> DataplaneConfig {
        let mut c = DataplaneConfig::default();
        c.jwt.secret = Some("x".repeat(32));
        c
    }

    #[test]
    fn signal_limits_are_their_own_keys_and_validated() {
        let c = DataplaneConfig::from_str(
            "limits:\n  per_socket:\n    signal: {rate: 7, burst: 9}\n  per_user:\n    signal: {rate: 0, burst: 0}\n",
            false,
        )
        .expect("parses");
        assert_eq!(
            c.limits.per_socket.signal,
            Bucket {
                rate: 7.0,
                burst: 9
            }
        );
        assert_eq!(
            c.limits.per_socket.read,
            ClassBuckets::default().read,
            "others untouched"
        );
        let mut c = c;
        c.jwt.secret = Some("x".repeat(32));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.per_user.signal"), "{e}");
        let d = LimitsConfig::default();
        assert!(
            d.per_socket.signal.burst >= 7 * 21,
            "a mesh peer's burst fits"
        );
        assert!(d.per_user.signal.burst >= d.per_socket.signal.burst);
    }

    #[test]
    fn defaults_are_valid_with_a_secret() {
        mk_valid().validate().expect("defaults");
    }

    #[test]
    fn token_lifetime_keys_have_defaults_env_and_bounds() {
        let c = mk_valid();
        assert_eq!(c.jwt.expiry_notice, HumanDuration::from_secs(60));
        assert_eq!(c.jwt.leeway, HumanDuration::from_secs(30));
        let mut c = mk_valid();
        c.apply_env(|v| (v == "SWITCHBOARD_JWT_EXPIRY_NOTICE").then(|| "5s".into()))
            .unwrap();
        assert_eq!(c.jwt.expiry_notice, HumanDuration::from_secs(5));
        c.validate().unwrap();
        for bad in ["0s", "2h"] {
            c.set("jwt.expiry_notice", bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains(
                    "jwt.expiry_notice (SWITCHBOARD_JWT_EXPIRY_NOTICE): must be between 1s and 1h"
                ),
                "{bad}: {e}"
            );
        }
        let mut c = mk_valid();
        c.set("jwt.leeway", "1h").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("jwt.leeway"));
    }

    #[test]
    fn connections_per_user_has_a_default_env_and_bounds() {
        let mut c = mk_valid();
        assert_eq!(c.limits.max_connections_per_user, 50);
        c.apply_env(|v| (v == "SWITCHBOARD_MAX_CONNECTIONS_PER_USER").then(|| "3".into()))
            .unwrap();
        assert_eq!(c.limits.max_connections_per_user, 3);
        c.validate().unwrap();
        c.set("limits.max_connections_per_user", "0").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("limits.max_connections_per_user (SWITCHBOARD_MAX_CONNECTIONS_PER_USER)"),
            "{e}"
        );
    }

    #[test]
    fn notification_max_age_has_a_default_env_and_bounds() {
        let mut c = mk_valid();
        assert_eq!(c.notifications.max_age, HumanDuration::from_secs(86_400));
        c.apply_env(|v| (v == "SWITCHBOARD_NOTIFICATIONS_MAX_AGE").then(|| "2h".into()))
            .unwrap();
        assert_eq!(c.notifications.max_age, HumanDuration::from_secs(7200));
        c.validate().unwrap();
        for bad in ["0s", "721h"] {
            c.set("notifications.max_age", bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("notifications.max_age (SWITCHBOARD_NOTIFICATIONS_MAX_AGE)"),
                "{bad}: {e}"
            );
        }
        let e = c
            .set("notifications.max_age", "soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notifications.max_age"), "{e}");
    }

    #[test]
    fn shared_mode_needs_a_configured_jwt_key() {
        let mut c = DataplaneConfig::default();
        c.validate_serve()
            .expect("embedded mode may run on a dev secret");
        c.set("redis.url", "redis://127.0.0.1:6379").unwrap();
        let e = c.validate_serve().unwrap_err().to_string();
        for name in [
            "jwt.secret",
            "SWITCHBOARD_JWT_SECRET",
            "jwt.public_key_file",
            "SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
        ] {
            assert!(e.contains(name), "{name} missing from: {e}");
        }
        c.set("jwt.secret", &"k".repeat(32)).unwrap();
        c.validate_serve().expect("shared mode with a key");
        c.set("jwt.secret", "").unwrap();
        c.set("jwt.public_key_file", "/etc/hostname").unwrap();
        c.set("jwt.algorithm", "RS256").unwrap();
        c.validate_serve().expect("shared mode with a public key");
    }

    #[test]
    fn short_admin_and_service_tokens_are_refused_naming_key_and_env() {
        let mut c = mk_valid();
        c.set("admin_token", &"a".repeat(31)).unwrap();
        c.set("service_token", "service-token").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("admin_token (SWITCHBOARD_ADMIN_TOKEN): must be at least 32 bytes"),
            "{e}"
        );
        assert!(
            e.contains("service_token (SWITCHBOARD_SERVICE_TOKEN): must be at least 32 bytes"),
            "{e}"
        );
        assert!(
            !e.contains("service-token") && !e.contains(&"a".repeat(31)),
            "{e}"
        );
        c.set("admin_token", &"a".repeat(32)).unwrap();
        c.set("service_token", &"s".repeat(64)).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn errors_name_key_env_and_allowed_values() {
        let mut c = mk_valid();
        c.set("jwt.algorithm", "none").unwrap();
        c.set("log_format", "xml").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("jwt.algorithm (SWITCHBOARD_JWT_ALGORITHM)"),
            "{e}"
        );
        assert!(
            e.contains("HS256, HS384, HS512, RS256, ES256, EdDSA"),
            "{e}"
        );
        assert!(e.contains("log_format (SWITCHBOARD_LOG_FORMAT)"), "{e}");
        assert!(e.contains("text, json"), "{e}");
    }

    #[test]
    fn hs_with_public_key_and_rs_with_secret_are_refused() {
        let mut c = mk_valid();
        c.set("jwt.algorithm", "RS256").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs jwt.public_key_file")
        );
        let mut c = DataplaneConfig::default();
        c.set("jwt.public_key_file", "/etc/hostname").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs jwt.secret")
        );
    }

    #[test]
    fn env_overrides_file_and_bad_env_names_its_variable() {
        let mut c =
            DataplaneConfig::from_str("listen: 127.0.0.1:1\nchat:\n  typing_timeout: 3s\n", false)
                .unwrap();
        assert_eq!(c.chat.typing_timeout, HumanDuration::from_secs(3));
        c.apply_env(|v| (v == "SWITCHBOARD_LISTEN").then(|| "127.0.0.1:2".into()))
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        let e = c
            .apply_env(|v| (v == "SWITCHBOARD_TYPING_TIMEOUT").then(|| "soon".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("chat.typing_timeout (SWITCHBOARD_TYPING_TIMEOUT)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_files_are_refused_in_both_formats() {
        assert!(
            DataplaneConfig::from_str("listn: x\n", false)
                .unwrap_err()
                .to_string()
                .contains("listn")
        );
        assert!(
            DataplaneConfig::from_str("[chat]\ntyping = \"5s\"\n", true)
                .unwrap_err()
                .to_string()
                .contains("typing")
        );
    }

    #[test]
    fn storage_bound_keys_have_defaults_env_and_bounds() {
        let d = DataplaneConfig::default();
        assert_eq!(
            d.chat.history_max_age,
            HumanDuration::from_secs(0),
            "no age limit"
        );
        assert_eq!(d.chat.idempotency_ttl, HumanDuration::from_secs(86_400));
        assert_eq!(d.limits.max_rooms_per_tenant, 1_000_000);
        let mut c = mk_valid();
        c.apply_env(|v| match v {
            "SWITCHBOARD_HISTORY_MAX_AGE" => Some("30d".into()),
            "SWITCHBOARD_IDEMPOTENCY_TTL" => Some("1h".into()),
            "SWITCHBOARD_MAX_ROOMS_PER_TENANT" => Some("20".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.chat.history_max_age,
            HumanDuration::from_secs(30 * 86_400)
        );
        assert_eq!(c.chat.idempotency_ttl, HumanDuration::from_secs(3600));
        assert_eq!(c.limits.max_rooms_per_tenant, 20);
        c.validate().expect("30d, 1h and 20 are fine");
        c.set("chat.history_max_age", "500ms").unwrap();
        c.set("chat.idempotency_ttl", "0s").unwrap();
        c.set("limits.max_rooms_per_tenant", "0").unwrap();
        let e = c.validate().unwrap_err().to_string();
        for want in [
            "chat.history_max_age (SWITCHBOARD_HISTORY_MAX_AGE): must be 0s",
            "chat.idempotency_ttl (SWITCHBOARD_IDEMPOTENCY_TTL): must be between 1s and 30d",
            "limits.max_rooms_per_tenant (SWITCHBOARD_MAX_ROOMS_PER_TENANT): must be between 1",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        assert!(c.set("chat.history_max_age", "forever").is_err());
        let mut c = mk_valid();
        assert_eq!(
            c.calls.history_max_age,
            HumanDuration::from_secs(365 * 86_400)
        );
        assert_eq!(c.calls.history_outbox_max, 100_000);
        c.apply_env(|v| match v {
            "SWITCHBOARD_CALL_HISTORY_MAX_AGE" => Some("90d".into()),
            "SWITCHBOARD_CALL_HISTORY_OUTBOX_MAX" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.calls.history_max_age,
            HumanDuration::from_secs(90 * 86_400)
        );
        assert_eq!(c.calls.history_outbox_max, 5);
        c.validate().expect("90d and 5 are fine");
        c.set("calls.history_max_age", "30m").unwrap();
        c.set("calls.history_outbox_max", "0").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("calls.history_max_age (SWITCHBOARD_CALL_HISTORY_MAX_AGE)"),
            "{e}"
        );
        assert!(
            e.contains("calls.history_outbox_max (SWITCHBOARD_CALL_HISTORY_OUTBOX_MAX)"),
            "{e}"
        );
    }

    #[test]
    fn edit_keys_have_defaults_env_and_bounds() {
        let d = DataplaneConfig::default();
        assert_eq!(d.chat.edit_window, HumanDuration::from_secs(86_400));
        assert_eq!(d.chat.max_edits, 50);
        let mut c = mk_valid();
        c.apply_env(|v| match v {
            "SWITCHBOARD_EDIT_WINDOW" => Some("15m".into()),
            "SWITCHBOARD_MAX_EDITS" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.chat.edit_window, HumanDuration::from_secs(900));
        assert_eq!(c.chat.max_edits, 3);
        c.validate().expect("15m and 3 are fine");
        c.set("chat.edit_window", "0s").unwrap();
        c.validate().expect("0s turns editing off");
        c.set("chat.edit_window", "31d").unwrap();
        c.set("chat.max_edits", "0").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("chat.edit_window (SWITCHBOARD_EDIT_WINDOW): must be between 0s"),
            "{e}"
        );
        assert!(
            e.contains("chat.max_edits (SWITCHBOARD_MAX_EDITS): must be between 1 and 1000"),
            "{e}"
        );
        assert!(c.set("chat.max_edits", "many").is_err());
    }

    #[test]
    fn webrtc_calls_and_notification_keys_are_checked() {
        let mut c = mk_valid();
        c.set(
            "webrtc.turn_urls",
            "turn:127.0.0.1:3478?transport=udp, http://x",
        )
        .unwrap();
        c.set("calls.max_participants", "1").unwrap();
        c.set("notifications.kafka.brokers", "127.0.0.1:9092,nohost")
            .unwrap();
        c.set("notifications.apns.key_id", "ABC").unwrap();
        c.set("notifications.apns.allowed_topics", "com.ex.app, bad/topic")
            .unwrap();
        c.set("notifications.email.smtp_url", "smtp://127.0.0.1:25")
            .unwrap();
        c.set("notifications.kafka.max_in_flight", "0").unwrap();
        let e = c.validate().unwrap_err().to_string();
        for needle in [
            "webrtc.turn_urls (SWITCHBOARD_TURN_URLS): \"http://x\"",
            "webrtc.turn_secret (SWITCHBOARD_TURN_SECRET): required",
            "calls.max_participants (SWITCHBOARD_MAX_CALL_PARTICIPANTS)",
            "notifications.kafka.brokers (SWITCHBOARD_KAFKA_BROKERS): \"nohost\"",
            "notifications.apns.team_id (SWITCHBOARD_APNS_TEAM_ID): required",
            "notifications.apns.allowed_topics (SWITCHBOARD_APNS_ALLOWED_TOPICS): \"bad/topic\"",
            "notifications.email.from (SWITCHBOARD_EMAIL_FROM): required",
            "notifications.kafka.max_in_flight (SWITCHBOARD_KAFKA_MAX_IN_FLIGHT): must be between 1 and 1024",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in {e}");
        }
        assert_eq!(c.webrtc.turn_urls.len(), 2);
        let mut ok = mk_valid();
        ok.set("webrtc.turn_urls", "turn:127.0.0.1:3478").unwrap();
        ok.set("webrtc.turn_secret", "s".repeat(16).as_str())
            .unwrap();
        ok.set("webrtc.turn_ttl", "1h").unwrap();
        ok.set("notifications.kafka.brokers", "127.0.0.1:9092")
            .unwrap();
        let e = ok.validate().unwrap_err().to_string();
        assert!(
            e.contains("notifications.kafka.brokers") && e.contains("redis.url"),
            "Kafka without Redis: {e}"
        );
        ok.set("redis.url", "redis://127.0.0.1:6379").unwrap();
        ok.validate().expect("valid");
    }

    #[test]
    fn internal_listen_is_an_address_with_its_own_port() {
        let mut c = mk_valid();
        assert_eq!(c.server.internal_listen, None, "off by default");
        c.apply_env(|v| (v == "SWITCHBOARD_INTERNAL_LISTEN").then(|| "0.0.0.0:9090".into()))
            .unwrap();
        assert_eq!(c.server.internal_listen.as_deref(), Some("0.0.0.0:9090"));
        c.validate().expect("its own port");
        for bad in ["9090", "localhost:9090"] {
            c.set("server.internal_listen", bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("server.internal_listen (SWITCHBOARD_INTERNAL_LISTEN)"),
                "{e}"
            );
        }
        c.set("listen", "0.0.0.0:3000").unwrap();
        c.set("server.internal_listen", "127.0.0.1:3000").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("uses the port of listen"), "{e}");
        c.set("server.internal_listen", "").unwrap();
        assert_eq!(
            c.server.internal_listen, None,
            "an empty value turns it off"
        );
    }

    #[test]
    fn cors_origins_come_from_env_and_a_malformed_one_is_named() {
        let mut c = mk_valid();
        assert!(c.server.cors_allowed_origins.is_empty(), "off by default");
        c.apply_env(|v| {
            (v == "SWITCHBOARD_CORS_ALLOWED_ORIGINS")
                .then(|| "https://app.example.com, http://localhost:5173".into())
        })
        .unwrap();
        assert_eq!(
            c.server.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        c.validate().expect("two good origins");
        c.set("server.cors_allowed_origins", "https://app.example.com/,*")
            .unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        let e = e.to_string();
        assert!(
            e.contains(
                "server.cors_allowed_origins (SWITCHBOARD_CORS_ALLOWED_ORIGINS): \"https://app.example.com/\" is not an origin"
            ),
            "{e}"
        );
        assert!(e.contains("\"*\" is not an origin"), "{e}");
        let many: Vec<_> = (0..=MAX_CORS_ORIGINS)
            .map(|i| format!("https://a{i}.example.com"))
            .collect();
        c.set("server.cors_allowed_origins", &many.join(","))
            .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("at most 100 origins"), "{e}");
        c.set("server.cors_allowed_origins", "").unwrap();
        assert!(
            c.server.cors_allowed_origins.is_empty(),
            "empty turns it off"
        );
    }

    #[test]
    fn drain_keys_have_defaults_env_and_bounds() {
        let d = DataplaneConfig::default();
        assert_eq!(d.server.drain_window, HumanDuration::from_secs(10));
        let text = serde_yaml::to_string(&d).unwrap();
        assert!(text.contains("server:\n  drain_window: 10s\n"), "{text}");
        let mut c = mk_valid();
        c.apply_env(|v| (v == "SWITCHBOARD_DRAIN_WINDOW").then(|| "2s".into()))
            .unwrap();
        assert_eq!(c.server.drain_window, HumanDuration::from_secs(2));
        c.validate().expect("2s is fine");
        c.set("server.drain_window", "0s").unwrap();
        c.validate().expect("0s closes everything at once");
        c.set("server.drain_window", "11m").unwrap();
        c.set("server.reconnect_grace", "0s").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains(
                "server.drain_window (SWITCHBOARD_DRAIN_WINDOW): must be between 0s and 10m"
            ),
            "{e}"
        );
        assert!(
            e.contains("server.reconnect_grace (SWITCHBOARD_RECONNECT_GRACE)"),
            "{e}"
        );
        let e = c
            .set("server.drain_window", "soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.drain_window"), "{e}");
    }

    #[test]
    fn yaml_round_trips() {
        let c = mk_valid();
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(DataplaneConfig::from_str(&text, false).unwrap(), c);
    }
}
