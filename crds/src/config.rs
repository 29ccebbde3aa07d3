//! The data plane's configuration: one typed file (YAML or TOML), `SWITCHBOARD_*`
//! environment overrides, and validation whose every error names the key.
//!
//! Every setting has a dotted key (`jwt.algorithm`) used in the file, in
//! [`DataplaneConfig::set`] and in error messages, and an environment variable
//! listed in [`ENV_KEYS`]. Precedence: command-line flag > environment > file > default.

use std::net::SocketAddr;
use std::path::Path;

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
    ("SWITCHBOARD_ADMIN_TOKEN", "admin_token"),
    ("SWITCHBOARD_SERVICE_TOKEN", "service_token"),
    ("SWITCHBOARD_TYPING_TIMEOUT", "chat.typing_timeout"),
    ("SWITCHBOARD_IDLE_TIMEOUT", "presence.idle_timeout"),
    ("SWITCHBOARD_HEARTBEAT_TTL", "presence.heartbeat_ttl"),
    ("SWITCHBOARD_PRESENCE_CACHE_TTL", "presence.cache_ttl"),
    ("SWITCHBOARD_MAX_MESSAGE_BYTES", "chat.max_message_bytes"),
    ("SWITCHBOARD_HISTORY_MAX_LEN", "chat.history_max_len"),
    (
        "SWITCHBOARD_MAX_ROOMS_PER_USER",
        "limits.max_rooms_per_user",
    ),
    ("SWITCHBOARD_MAX_PAYLOAD_BYTES", "limits.max_payload_bytes"),
];

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
    /// Bearer token for `/admin/v1/*`. Unset: the admin API answers 404.
    pub admin_token: Option<String>,
    /// Bearer token for `/api/v1/*`. Unset: the service API answers 404.
    pub service_token: Option<String>,
    pub chat: ChatConfig,
    pub presence: PresenceConfig,
    pub limits: LimitsConfig,
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
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: HumanDuration,
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
    /// Members listed by `room:members` at most.
    pub max_members_listed: usize,
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
            chat: ChatConfig::default(),
            presence: PresenceConfig::default(),
            limits: LimitsConfig::default(),
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
            max_members_listed: 1000,
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
        };
        Self {
            per_socket,
            per_user,
            abuse_threshold: 50,
            abuse_window: HumanDuration::from_secs(10),
            max_payload_bytes: 64 * 1024,
            max_rooms_per_user: 500,
        }
    }
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
            "admin_token" => self.admin_token = opt(value),
            "service_token" => self.service_token = opt(value),
            "chat.typing_timeout" => self.chat.typing_timeout = dur(key, value)?,
            "presence.idle_timeout" => self.presence.idle_timeout = dur(key, value)?,
            "presence.heartbeat_ttl" => self.presence.heartbeat_ttl = dur(key, value)?,
            "presence.cache_ttl" => self.presence.cache_ttl = dur(key, value)?,
            "presence.max_subscriptions" => self.presence.max_subscriptions = num(key, value)?,
            "chat.max_message_bytes" => self.chat.max_message_bytes = num(key, value)?,
            "chat.max_meta_bytes" => self.chat.max_meta_bytes = num(key, value)?,
            "chat.history_max_len" => self.chat.history_max_len = num(key, value)?,
            "limits.max_rooms_per_user" => self.limits.max_rooms_per_user = num(key, value)?,
            "limits.max_payload_bytes" => self.limits.max_payload_bytes = num(key, value)?,
            "limits.abuse_threshold" => self.limits.abuse_threshold = num(key, value)?,
            "limits.abuse_window" => self.limits.abuse_window = dur(key, value)?,
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
                format!("{url:?} must start with redis:// or rediss://"),
            ));
        }
        self.validate_jwt(&mut errors);
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
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate_jwt(&self, errors: &mut Vec<ConfigError>) {
        let j = &self.jwt;
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
    fn defaults_are_valid_with_a_secret() {
        mk_valid().validate().expect("defaults");
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
    fn yaml_round_trips() {
        let c = mk_valid();
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(DataplaneConfig::from_str(&text, false).unwrap(), c);
    }
}
