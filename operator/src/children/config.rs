//! The data plane configuration, rendered with the data plane's own [`DataplaneConfig`]
//! type (so what the operator writes is exactly what `switchboard` reads), and the
//! environment and files that hand secrets to the pods. Secrets never enter the ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector,
    SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use sha2::{Digest, Sha256};
use switchboard_crds::cluster::{RealtimeCluster, RedisMode, SecretKeyRef};
use switchboard_crds::config::DataplaneConfig;

use super::BuildError;
use super::meta::{INTERNAL_PORT, Names, SOCKET_PORT};

/// Key of the configuration file in the ConfigMap.
pub const CONFIG_KEY: &str = "switchboard.yaml";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/switchboard/config";
/// Where the JWT public key is mounted.
pub const JWT_KEY_FILE: &str = "/etc/switchboard/jwt/public.pem";
/// Where the FCM service account is mounted.
pub const FCM_FILE: &str = "/etc/switchboard/fcm/service-account.json";
/// Where the APNs signing key is mounted.
pub const APNS_FILE: &str = "/etc/switchboard/apns/key.p8";
/// Keys of the TURN Secret.
pub const TURN_SECRET_KEY: &str = "secret";
pub const TURN_PREVIOUS_KEY: &str = "previous";
/// Port of the managed Redis.
pub const REDIS_PORT: i32 = 6379;

/// The ConfigMap and the hash of its content.
pub struct Rendered {
    pub config: DataplaneConfig,
    pub config_map: ConfigMap,
    /// First 16 hex digits of the SHA-256 of the file; on the pod template, so a change
    /// rolls the nodes.
    pub hash: String,
}

/// The data plane configuration for `rc`.
pub fn dataplane_config(rc: &RealtimeCluster, names: &Names) -> DataplaneConfig {
    let spec = &rc.spec;
    let mut c = DataplaneConfig {
        listen: format!("0.0.0.0:{SOCKET_PORT}"),
        log_format: "json".into(),
        ..Default::default()
    };
    // The public Service and the Ingress reach Socket.IO only; the APIs and metrics
    // answer on a port of their own (the workers, which share this file, ignore it).
    c.server.internal_listen = Some(format!("0.0.0.0:{INTERNAL_PORT}"));
    // The Redis URL carries a password in both modes, so it reaches the pods through
    // their environment (`pod_wiring`), never the ConfigMap.
    let jwt = &spec.auth.jwt;
    c.jwt.algorithm = jwt.algorithm.as_str().into();
    c.jwt.issuer = jwt.issuer.clone();
    c.jwt.audience = jwt.audience.clone();
    if jwt.public_key_ref.is_some() {
        c.jwt.public_key_file = Some(JWT_KEY_FILE.into());
    }
    if let Some(t) = &spec.turn {
        c.webrtc.stun_urls = t.stun_urls.clone();
        c.webrtc.turn_urls = t.urls.clone();
        if t.urls.is_empty() && t.managed.as_ref().is_some_and(|m| m.enabled) {
            // Only the managed coturn: its in-cluster address.
            c.webrtc.turn_urls = vec![format!(
                "turn:{}.{}.svc:{}",
                names.coturn(),
                names.namespace,
                super::turn::TURN_PORT
            )];
        }
        c.webrtc.turn_ttl = t.credential_ttl;
    }
    if let Some(h) = &spec.call_history {
        c.calls.mongodb_database = h.mongodb.database.clone();
    }
    if let Some(n) = &spec.notifications {
        let k = &mut c.notifications.kafka;
        k.brokers = n.kafka.brokers.clone();
        k.topic = n.kafka.topic.clone();
        k.group = n.kafka.group.clone();
        if let Some(dlq) = &n.kafka.dlq_topic {
            k.dlq_topic = dlq.clone();
        }
        // FCM and APNs settings reach the workers only, through their environment
        // ([`pod_wiring`]): the file is shared with the socket nodes, which must neither
        // get the signing keys nor refuse to start without them.
        if let Some(e) = &n.email {
            c.notifications.email.from = Some(e.from.clone());
        }
    }
    if let Some(w) = spec.socket.drain_window {
        c.server.drain_window = w;
    }
    c.server
        .cors_allowed_origins
        .clone_from(&spec.socket.cors_allowed_origins);
    if let Some(p) = &spec.presence {
        if let Some(d) = p.idle_timeout {
            c.presence.idle_timeout = d;
        }
        if let Some(d) = p.heartbeat_ttl {
            c.presence.heartbeat_ttl = d;
        }
    }
    if let Some(l) = &spec.limits {
        // The schema keeps these positive; a negative one would become 0 and be refused
        // by the data plane's validation, naming the key.
        if let Some(v) = l.max_payload_bytes {
            c.limits.max_payload_bytes = u64::try_from(v).unwrap_or(0);
        }
        if let Some(v) = l.max_message_bytes {
            c.chat.max_message_bytes = usize::try_from(v).unwrap_or(0);
        }
        if let Some(v) = l.max_rooms_per_user {
            c.limits.max_rooms_per_user = usize::try_from(v).unwrap_or(0);
        }
        if let Some(v) = l.max_rooms_per_tenant {
            c.limits.max_rooms_per_tenant = usize::try_from(v).unwrap_or(0);
        }
        if let Some(v) = l.history_max_len {
            c.chat.history_max_len = u64::try_from(v).unwrap_or(0);
        }
    }
    c
}

/// The ConfigMap holding the rendered file.
pub fn render(rc: &RealtimeCluster, names: &Names) -> Result<Rendered, BuildError> {
    let config = dataplane_config(rc, names);
    let text = serde_yaml::to_string(&config).map_err(|e| BuildError::Config(e.to_string()))?;
    let hash = content_hash(&text);
    let config_map = ConfigMap {
        metadata: names.meta(names.config(), "socket"),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), text)])),
        ..Default::default()
    };
    Ok(Rendered {
        config,
        config_map,
        hash,
    })
}

/// First 16 hex digits of the SHA-256 of `text`.
pub fn content_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Which Switchboard pod a wiring is for: each gets only the secrets it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `switchboard serve`: JWT, Redis, TURN, MongoDB, admin and service tokens.
    Socket,
    /// `switchboard worker`: Redis, FCM, APNs, SMTP; plus the JWT public key and the TURN
    /// secret, because the shared file names them and the worker validates it whole.
    Worker,
}

/// The bytes of every Secret key the spec references, by (Secret, key); absent keys are
/// missing. Hashed onto pod templates so that rotating a Secret rolls the pods using it.
pub type SecretData = BTreeMap<(String, String), Vec<u8>>;

/// Environment variables, volumes and mounts that give a pod its config and secrets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodWiring {
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `name` from one key of a Secret.
pub(crate) fn env_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl PodWiring {
    /// Every (Secret, key) this pod reads, from env and from volumes, sorted.
    pub fn secret_keys(&self) -> Vec<(String, String)> {
        let env = self
            .env
            .iter()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|r| (r.name.clone(), r.key.clone()));
        let files = self
            .volumes
            .iter()
            .filter_map(|v| v.secret.as_ref())
            .flat_map(|s| {
                let name = s.secret_name.clone().unwrap_or_default();
                s.items
                    .iter()
                    .flatten()
                    .map(move |i| (name.clone(), i.key.clone()))
            });
        let mut keys: Vec<_> = env.chain(files).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn secret_env(&mut self, var: &str, r: &SecretKeyRef) {
        self.env.push(env_secret(var, &r.name, &r.key, false));
    }

    /// Mount one key of a Secret as the file `path`.
    fn secret_file(&mut self, volume: &str, r: &SecretKeyRef, path: &str) {
        let (dir, file) = path.rsplit_once('/').unwrap_or(("/", path));
        self.volumes.push(Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: Some(vec![KeyToPath {
                    key: r.key.clone(),
                    path: file.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
}

/// Hash of the bytes behind `keys` (first 16 hex digits of a SHA-256), skipping the
/// Secret `skip`: a change in any of them gives a new hash.
pub fn secrets_hash(keys: &[(String, String)], data: &SecretData, skip: Option<&str>) -> String {
    let mut h = Sha256::new();
    for (name, key) in keys.iter().filter(|(n, _)| Some(n.as_str()) != skip) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        h.update([0]);
        match data.get(&(name.clone(), key.clone())) {
            Some(v) => {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
            None => h.update(b"-"),
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How pods of `rc` in `role` get the config file and the secrets that role uses.
pub fn pod_wiring(rc: &RealtimeCluster, names: &Names, role: Role, with_turn: bool) -> PodWiring {
    let spec = &rc.spec;
    let mut w = PodWiring::default();
    w.env.push(env_value(
        "SWITCHBOARD_CONFIG",
        &format!("{CONFIG_DIR}/{CONFIG_KEY}"),
    ));
    w.env.push(EnvVar {
        name: "SWITCHBOARD_NODE_ID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    w.volumes.push(Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config(),
            ..Default::default()
        }),
        ..Default::default()
    });
    w.mounts.push(VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    let socket = role == Role::Socket;
    let jwt = &spec.auth.jwt;
    if let Some(r) = jwt.secret_ref.as_ref().filter(|_| socket) {
        w.secret_env("SWITCHBOARD_JWT_SECRET", r);
    }
    if let Some(r) = &jwt.public_key_ref {
        w.secret_file("jwt-public-key", r, JWT_KEY_FILE);
    }
    match spec.redis.mode {
        RedisMode::Managed => w.env.push(env_secret(
            "SWITCHBOARD_REDIS_URL",
            &names.redis_auth(),
            super::redis::URL_KEY,
            false,
        )),
        RedisMode::External => {
            if let Some(r) = spec
                .redis
                .external
                .as_ref()
                .and_then(|e| e.url_secret_ref.as_ref())
            {
                w.secret_env("SWITCHBOARD_REDIS_URL", r);
            }
        }
    }
    if with_turn {
        let s = names.turn_secret();
        w.env.push(env_secret(
            "SWITCHBOARD_TURN_SECRET",
            &s,
            TURN_SECRET_KEY,
            false,
        ));
        w.env.push(env_secret(
            "SWITCHBOARD_TURN_PREVIOUS_SECRET",
            &s,
            TURN_PREVIOUS_KEY,
            true,
        ));
    }
    if socket {
        if let Some(h) = &spec.call_history {
            w.secret_env("SWITCHBOARD_MONGODB_URI", &h.mongodb.uri_secret_ref);
        }
        if let Some(r) = &spec.auth.admin_token_secret_ref {
            w.secret_env("SWITCHBOARD_ADMIN_TOKEN", r);
        }
        if let Some(r) = &spec.auth.service_token_secret_ref {
            w.secret_env("SWITCHBOARD_SERVICE_TOKEN", r);
        }
    }
    if let Some(n) = spec.notifications.as_ref().filter(|_| !socket) {
        if let Some(f) = &n.fcm {
            w.secret_file("fcm", &f.service_account_secret_ref, FCM_FILE);
            w.env
                .push(env_value("SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE", FCM_FILE));
            if let Some(url) = &f.base_url {
                w.env.push(env_value("SWITCHBOARD_FCM_BASE_URL", url));
            }
        }
        if let Some(a) = &n.apns {
            w.secret_file("apns", &a.key_secret_ref, APNS_FILE);
            for (var, value) in [
                ("SWITCHBOARD_APNS_KEY_FILE", APNS_FILE),
                ("SWITCHBOARD_APNS_KEY_ID", a.key_id.as_str()),
                ("SWITCHBOARD_APNS_TEAM_ID", a.team_id.as_str()),
                ("SWITCHBOARD_APNS_TOPIC", a.topic.as_str()),
                ("SWITCHBOARD_APNS_ENVIRONMENT", a.environment.as_str()),
            ] {
                w.env.push(env_value(var, value));
            }
        }
        if let Some(e) = &n.email {
            w.secret_env("SWITCHBOARD_SMTP_URL", &e.smtp_url_secret_ref);
        }
    }
    w
}

/// Every Secret the spec references, with the field that references it (for a clear
/// status message when one is missing).
pub fn referenced_secrets(rc: &RealtimeCluster) -> Vec<(&'static str, &SecretKeyRef)> {
    let spec = &rc.spec;
    let mut out = Vec::new();
    let jwt = &spec.auth.jwt;
    out.extend(
        jwt.secret_ref
            .iter()
            .map(|r| ("spec.auth.jwt.secretRef", r)),
    );
    out.extend(
        jwt.public_key_ref
            .iter()
            .map(|r| ("spec.auth.jwt.publicKeyRef", r)),
    );
    out.extend(
        spec.auth
            .admin_token_secret_ref
            .iter()
            .map(|r| ("spec.auth.adminTokenSecretRef", r)),
    );
    out.extend(
        spec.auth
            .service_token_secret_ref
            .iter()
            .map(|r| ("spec.auth.serviceTokenSecretRef", r)),
    );
    if spec.redis.mode == RedisMode::External {
        out.extend(
            spec.redis
                .external
                .iter()
                .filter_map(|e| e.url_secret_ref.as_ref())
                .map(|r| ("spec.redis.external.urlSecretRef", r)),
        );
    }
    if let Some(h) = &spec.call_history {
        out.push((
            "spec.callHistory.mongodb.uriSecretRef",
            &h.mongodb.uri_secret_ref,
        ));
    }
    if let Some(n) = &spec.notifications {
        out.extend(n.fcm.iter().map(|f| {
            (
                "spec.notifications.fcm.serviceAccountSecretRef",
                &f.service_account_secret_ref,
            )
        }));
        out.extend(
            n.apns
                .iter()
                .map(|a| ("spec.notifications.apns.keySecretRef", &a.key_secret_ref)),
        );
        out.extend(n.email.iter().map(|e| {
            (
                "spec.notifications.email.smtpUrlSecretRef",
                &e.smtp_url_secret_ref,
            )
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn names(rc: &RealtimeCluster) -> Names {
        Names::of(rc).unwrap()
    }

    #[test]
    fn rendered_file_is_a_valid_dataplane_config_without_secrets() {
        let rc = mk_full_cluster();
        let r = render(&rc, &names(&rc)).unwrap();
        let text = &r.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        let back = DataplaneConfig::from_str(text, false).unwrap();
        assert_eq!(back, r.config);
        assert!(back.jwt.secret.is_none());
        assert!(
            back.redis.url.is_none(),
            "external Redis comes from the env"
        );
        assert!(back.admin_token.is_none() && back.service_token.is_none());
        assert!(back.webrtc.turn_secret.is_none() && back.calls.mongodb_uri.is_none());
        assert_eq!(back.webrtc.turn_urls, ["turn:turn.example.com:3478"]);
        assert_eq!(back.webrtc.turn_ttl.to_string(), "1h");
        assert_eq!(back.notifications.kafka.brokers, ["kafka:9092"]);
        assert_eq!(back.notifications.kafka.dlq_topic, "notify.dlq");
        // Push settings reach only the workers, through their environment.
        assert_eq!(back.notifications.apns.key_file, None);
        assert_eq!(back.notifications.fcm.service_account_file, None);
        assert_eq!(back.calls.mongodb_database, "calls");
    }

    #[test]
    fn cors_origins_reach_the_rendered_file_and_none_means_off() {
        let mut rc = mk_cluster();
        let c = dataplane_config(&rc, &names(&rc));
        assert!(c.server.cors_allowed_origins.is_empty(), "off by default");
        rc.spec.socket.cors_allowed_origins = vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into(),
        ];
        let r = render(&rc, &names(&rc)).unwrap();
        let text = &r.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        let back = DataplaneConfig::from_str(text, false).unwrap();
        assert_eq!(
            back.server.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        back.validate()
            .expect("the nodes accept what the operator renders");
        let before = render(&mk_cluster(), &names(&rc)).unwrap().hash;
        assert_ne!(r.hash, before, "a change of origins rolls the nodes");
    }

    #[test]
    fn managed_redis_url_comes_from_the_generated_secret_not_the_config_map() {
        let rc = mk_cluster();
        let n = names(&rc);
        let c = dataplane_config(&rc, &n);
        assert_eq!(c.redis.url, None, "the URL carries the password");
        assert_eq!(c.listen, "0.0.0.0:3000");
        for role in [Role::Socket, Role::Worker] {
            let w = pod_wiring(&rc, &n, role, false);
            let var = w
                .env
                .iter()
                .find(|e| e.name == "SWITCHBOARD_REDIS_URL")
                .and_then(|e| e.value_from.clone()?.secret_key_ref);
            let r = var.unwrap_or_else(|| panic!("{role:?} gets no Redis URL"));
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                ("chat-redis-auth", "url")
            );
        }
        assert_eq!(
            super::super::redis::url(&n, "p@ss/w:rd"),
            "redis://:p%40ss%2Fw%3Ard@chat-redis.apps.svc:6379"
        );
    }

    #[test]
    fn room_limits_reach_the_config() {
        let mut rc = mk_cluster();
        let c = dataplane_config(&rc, &names(&rc));
        assert_eq!(
            c.limits.max_rooms_per_tenant,
            switchboard_crds::config::LimitsConfig::default().max_rooms_per_tenant,
            "unset keeps the data plane's default"
        );
        rc.spec.limits = Some(switchboard_crds::cluster::LimitsSpec {
            max_rooms_per_user: Some(7),
            max_rooms_per_tenant: Some(2500),
            ..Default::default()
        });
        let c = dataplane_config(&rc, &names(&rc));
        assert_eq!(c.limits.max_rooms_per_user, 7);
        assert_eq!(c.limits.max_rooms_per_tenant, 2500);
        let rendered = render(&rc, &names(&rc)).unwrap();
        let file = rendered.config_map.data.unwrap_or_default();
        let text = file.values().next().cloned().unwrap_or_default();
        assert!(text.contains("max_rooms_per_tenant: 2500"), "{text}");
    }

    #[test]
    fn hash_changes_with_the_spec_and_only_then() {
        let rc = mk_cluster();
        let a = render(&rc, &names(&rc)).unwrap().hash;
        assert_eq!(a, render(&rc, &names(&rc)).unwrap().hash);
        let mut edited = rc.clone();
        edited.spec.limits = Some(switchboard_crds::cluster::LimitsSpec {
            max_rooms_per_user: Some(7),
            ..Default::default()
        });
        let b = render(&edited, &names(&edited)).unwrap().hash;
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn secrets_reach_pods_as_env_and_files() {
        let rc = mk_full_cluster();
        let w = pod_wiring(&rc, &names(&rc), Role::Socket, true);
        let secret_of = |var: &str| {
            w.env
                .iter()
                .find(|e| e.name == var)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()))
        };
        assert_eq!(
            secret_of("SWITCHBOARD_JWT_SECRET"),
            Some(("jwt".into(), "secret".into()))
        );
        assert_eq!(
            secret_of("SWITCHBOARD_REDIS_URL"),
            Some(("redis".into(), "url".into()))
        );
        assert_eq!(
            secret_of("SWITCHBOARD_TURN_PREVIOUS_SECRET"),
            Some(("chat-turn".into(), "previous".into()))
        );
        assert_eq!(
            secret_of("SWITCHBOARD_MONGODB_URI"),
            Some(("mongo".into(), "uri".into()))
        );
        assert_eq!(
            secret_of("SWITCHBOARD_ADMIN_TOKEN"),
            Some(("admin".into(), "token".into()))
        );
        assert_eq!(
            secret_of("SWITCHBOARD_SERVICE_TOKEN"),
            Some(("service".into(), "token".into()))
        );
        // Socket nodes get no push signing keys.
        let mounts: Vec<_> = w.mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/etc/switchboard/config"]);
        assert_eq!(referenced_secrets(&rc).len(), 7);

        // Workers get the push keys and the Redis URL, not the HMAC key, MongoDB or tokens.
        let w = pod_wiring(&rc, &names(&rc), Role::Worker, true);
        let keys = w.secret_keys();
        let secrets: Vec<_> = keys.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(secrets, ["apns", "chat-turn", "chat-turn", "fcm", "redis"]);
        let mounts: Vec<_> = w.mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(
            mounts,
            [
                "/etc/switchboard/config",
                "/etc/switchboard/fcm",
                "/etc/switchboard/apns"
            ]
        );
        let value = |var: &str| w.env.iter().find(|e| e.name == var)?.value.clone();
        assert_eq!(
            value("SWITCHBOARD_APNS_KEY_FILE").as_deref(),
            Some(APNS_FILE)
        );
        assert_eq!(
            value("SWITCHBOARD_APNS_ENVIRONMENT").as_deref(),
            Some("sandbox")
        );
        assert_eq!(
            value("SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE").as_deref(),
            Some(FCM_FILE)
        );
        assert_eq!(
            value("SWITCHBOARD_FCM_BASE_URL").as_deref(),
            Some("http://fcm.test:8080")
        );
    }

    #[test]
    fn secrets_hash_follows_the_bytes_of_the_keys_a_pod_reads() {
        let rc = mk_full_cluster();
        let keys = pod_wiring(&rc, &names(&rc), Role::Socket, true).secret_keys();
        let mut data: SecretData = keys
            .iter()
            .map(|k| (k.clone(), b"value-1".to_vec()))
            .collect();
        let a = secrets_hash(&keys, &data, Some("chat-turn"));
        assert_eq!(a, secrets_hash(&keys, &data, Some("chat-turn")));
        data.insert(("jwt".into(), "secret".into()), b"value-2".to_vec());
        let b = secrets_hash(&keys, &data, Some("chat-turn"));
        assert_ne!(a, b, "a rotated JWT secret must roll the nodes");
        // A key the pod does not read changes nothing; the skipped Secret neither.
        data.insert(("fcm".into(), "sa.json".into()), b"other".to_vec());
        data.insert(("chat-turn".into(), "secret".into()), b"other".to_vec());
        assert_eq!(b, secrets_hash(&keys, &data, Some("chat-turn")));
    }
}
