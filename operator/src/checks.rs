//! Problems the CRD schema cannot see, found from the spec and the Secrets it names
//! (no I/O): each message names the field to fix. They put the cluster in `Degraded`.
//!
//! Besides "does the Secret exist and hold the key", the data plane's own validation runs
//! on exactly what a pod will load: the rendered file plus the `SWITCHBOARD_*` variables
//! the pod gets, their values resolved from the Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use switchboard_crds::cluster::RealtimeCluster;

use switchboard_crds::config::ENV_KEYS;

use crate::children::config::{
    APNS_FILE, FCM_FILE, JWT_KEY_FILE, Role, TURN_PREVIOUS_KEY, TURN_SECRET_KEY, dataplane_config,
    pod_wiring, referenced_secrets,
};
use crate::children::meta::Names;
use crate::children::turn::TurnSecretState;

/// Config keys whose values are files the pod gets from Secret volumes; the operator
/// checks the Secret instead of the (absent, here) file.
const MOUNTED_FILES: &[(&str, &str)] = &[
    ("jwt.public_key_file", JWT_KEY_FILE),
    ("notifications.fcm.service_account_file", FCM_FILE),
    ("notifications.apns.key_file", APNS_FILE),
];

/// The spec field behind a config key, for messages.
fn spec_field(key: &str) -> &'static str {
    match key {
        "jwt.secret" => "spec.auth.jwt.secretRef",
        "admin_token" => "spec.auth.adminTokenSecretRef",
        "service_token" => "spec.auth.serviceTokenSecretRef",
        "redis.url" => "spec.redis.external.urlSecretRef",
        "calls.mongodb_uri" => "spec.callHistory.mongodb.uriSecretRef",
        "calls.mongodb_database" => "spec.callHistory.mongodb.database",
        "server.cors_allowed_origins" => "spec.socket.corsAllowedOrigins",
        "webrtc.stun_urls" => "spec.turn.stunURLs",
        "webrtc.turn_urls" => "spec.turn.urls",
        "webrtc.turn_ttl" => "spec.turn.credentialTTL",
        "presence.idle_timeout" => "spec.presence.idleTimeout",
        "presence.heartbeat_ttl" => "spec.presence.heartbeatTTL",
        "notifications.kafka.brokers" => "spec.notifications.kafka.brokers",
        "notifications.kafka.topic" => "spec.notifications.kafka.topic",
        "notifications.kafka.group" => "spec.notifications.kafka.group",
        "notifications.kafka.dlq_topic" => "spec.notifications.kafka.dlqTopic",
        "notifications.email.smtp_url" => "spec.notifications.email.smtpUrlSecretRef",
        "notifications.email.from" => "spec.notifications.email.from",
        k if k.starts_with("limits.") || k.starts_with("chat.") => "spec.limits",
        _ => "the rendered configuration",
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned());
    data.or_else(|| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    })
}

/// `secrets` maps every Secret name the spec references to what the API server returned;
/// `turn` is the TURN secret the pods will get.
pub fn spec_problems(
    rc: &RealtimeCluster,
    names: &Names,
    turn: Option<&TurnSecretState>,
    secrets: &BTreeMap<String, Option<Secret>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (field, r) in referenced_secrets(rc) {
        match secrets.get(&r.name) {
            Some(Some(s)) if secret_value(s, &r.key).is_some() => {}
            Some(Some(_)) => out.push(format!(
                "{field}: Secret {:?} has no key {:?}",
                r.name, r.key
            )),
            _ => out.push(format!("{field}: Secret {:?} not found", r.name)),
        }
    }
    if let Some(t) = &rc.spec.turn
        && t.rotation_interval.0 <= t.credential_ttl.0
    {
        out.push(format!(
            "spec.turn.rotationInterval: {} must be longer than spec.turn.credentialTTL ({}), or credentials would outlive both secrets",
            t.rotation_interval, t.credential_ttl
        ));
    }

    // What each kind of pod loads: the file, then its environment.
    let mut roles = vec![Role::Socket];
    if rc.spec.notifications.is_some() {
        roles.push(Role::Worker);
    }
    let turn_secret = names.turn_secret();
    // The managed Redis' URL comes from the Secret the operator itself generates (with a
    // password it makes up), so it is always there and well-formed.
    let redis_auth = names.redis_auth();
    for role in roles {
        let mut config = dataplane_config(rc, names);
        let wiring = pod_wiring(rc, names, role, turn.is_some());
        let lookup = |var: &str| {
            let e = wiring.env.iter().find(|e| e.name == var)?;
            if let Some(v) = &e.value {
                return Some(v.clone());
            }
            let from = e.value_from.as_ref()?;
            if from.field_ref.is_some() {
                return Some("node-0".into());
            }
            let r = from.secret_key_ref.as_ref()?;
            if r.name == redis_auth {
                return Some(crate::children::redis::url(names, "generated"));
            }
            if r.name == turn_secret {
                let t = turn?;
                return match r.key.as_str() {
                    TURN_SECRET_KEY => Some(t.current.clone()),
                    TURN_PREVIOUS_KEY => t.previous.clone(),
                    _ => None,
                };
            }
            secret_value(secrets.get(&r.name)?.as_ref()?, &r.key)
        };
        // The user's Secret a config key was fed from, if any.
        let fed_from = |key: &str| {
            let var = ENV_KEYS.iter().find(|(_, k)| *k == key)?.0;
            let e = wiring.env.iter().find(|e| e.name == var)?;
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            (r.name != turn_secret && r.name != redis_auth).then(|| (r.name.clone(), r.key.clone()))
        };
        let env_errors = config
            .apply_env(lookup)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let errors = config.validate().err().map(|e| e.0).unwrap_or_default();
        for e in env_errors.into_iter().chain(errors) {
            if MOUNTED_FILES.iter().any(|(k, _)| *k == e.key) {
                continue;
            }
            // Never the value: it is a secret. Say where it is and what it must be.
            let message = match fed_from(&e.key) {
                Some((name, key)) => format!(
                    "{}: value in Secret {name:?} key {key:?} {}",
                    spec_field(&e.key),
                    e.message
                ),
                None => format!("{}: {e}", spec_field(&e.key)),
            };
            if !out.contains(&message) {
                out.push(message);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures::*;
    use k8s_openapi::ByteString;
    use switchboard_crds::cluster::TurnSpec;
    use switchboard_crds::duration::HumanDuration;

    fn secret(key: &str, value: &str) -> Option<Secret> {
        Some(Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        })
    }

    fn problems(rc: &RealtimeCluster, secrets: &[(&str, Option<Secret>)]) -> Vec<String> {
        let names = Names::of(rc).unwrap();
        let map = secrets
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect();
        let turn = TurnSecretState::fresh("t".repeat(64), "2026-01-01T00:00:00Z".into());
        spec_problems(rc, &names, rc.spec.turn.as_ref().map(|_| &turn), &map)
    }

    #[test]
    fn good_secrets_are_no_problem() {
        let rc = mk_cluster();
        assert!(problems(&rc, &[("jwt", secret("secret", &"k".repeat(32)))]).is_empty());
        let full = mk_full_cluster();
        let p = problems(
            &full,
            &[
                ("jwt", secret("secret", &"k".repeat(32))),
                ("redis", secret("url", "redis://r:6379")),
                ("mongo", secret("uri", "mongodb://m:27017")),
                ("fcm", secret("sa.json", "{}")),
                ("apns", secret("key.p8", "pem")),
                ("admin", secret("token", &"a".repeat(32))),
                ("service", secret("token", &"s".repeat(32))),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        // The same with the managed Redis: its URL (from the Secret the operator
        // generates) counts as set, so Kafka-fed workers are no problem.
        let mut managed = full.clone();
        managed.spec.redis = Default::default();
        let p = problems(
            &managed,
            &[
                ("jwt", secret("secret", &"k".repeat(32))),
                ("mongo", secret("uri", "mongodb://m:27017")),
                ("fcm", secret("sa.json", "{}")),
                ("apns", secret("key.p8", "pem")),
                ("admin", secret("token", &"a".repeat(32))),
                ("service", secret("token", &"s".repeat(32))),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn short_admin_and_service_tokens_name_their_refs() {
        let mut rc = mk_full_cluster();
        rc.spec.notifications = None;
        rc.spec.call_history = None;
        let p = problems(
            &rc,
            &[
                ("jwt", secret("secret", &"k".repeat(32))),
                ("redis", secret("url", "redis://r:6379")),
                ("admin", secret("token", "admin-token")),
                ("service", secret("token", "service-token")),
            ],
        );
        for field in [
            "spec.auth.adminTokenSecretRef: value in Secret \"admin\" key \"token\" must be at least 32 bytes",
            "spec.auth.serviceTokenSecretRef: value in Secret \"service\" key \"token\" must be at least 32 bytes",
        ] {
            assert!(p.iter().any(|m| m.starts_with(field)), "{field}: {p:?}");
        }
    }

    #[test]
    fn an_origin_the_schema_lets_through_but_a_node_refuses_names_the_field() {
        let mut rc = mk_cluster();
        rc.spec.socket.cors_allowed_origins = vec!["https://app.example.com:443".into()];
        let p = problems(&rc, &[("jwt", secret("secret", &"k".repeat(32)))]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("spec.socket.corsAllowedOrigins: ")
                && p[0].contains("\"https://app.example.com:443\" is not an origin")
                && p[0].contains("default port"),
            "{p:?}"
        );
    }

    #[test]
    fn missing_secret_missing_key_and_short_secret_name_the_field() {
        let rc = mk_cluster();
        let p = problems(&rc, &[("jwt", None)]);
        assert_eq!(p, ["spec.auth.jwt.secretRef: Secret \"jwt\" not found"]);
        let p = problems(&rc, &[("jwt", secret("other", "x"))]);
        assert_eq!(
            p,
            ["spec.auth.jwt.secretRef: Secret \"jwt\" has no key \"secret\""]
        );
        let p = problems(&rc, &[("jwt", secret("secret", "short"))]);
        assert_eq!(
            p,
            [
                "spec.auth.jwt.secretRef: value in Secret \"jwt\" key \"secret\" must be at least 32 bytes"
            ]
        );
    }

    #[test]
    fn a_bad_url_in_a_secret_is_reported_against_its_ref() {
        let mut rc = mk_full_cluster();
        rc.spec.notifications = None;
        rc.spec.call_history = None;
        rc.spec.auth.admin_token_secret_ref = None;
        rc.spec.auth.service_token_secret_ref = None;
        let p = problems(
            &rc,
            &[
                ("jwt", secret("secret", &"k".repeat(32))),
                ("redis", secret("url", "http://not-redis")),
            ],
        );
        assert_eq!(
            p,
            [
                "spec.redis.external.urlSecretRef: value in Secret \"redis\" key \"url\" must start with redis:// or rediss://"
            ]
        );
    }

    /// Status conditions and Warning events carry these messages: no value read from a
    /// Secret may appear in them, whatever is wrong with it.
    #[test]
    fn no_secret_value_reaches_a_message() {
        let rc = mk_full_cluster();
        let mut rc_email = rc.clone();
        if let Some(n) = rc_email.spec.notifications.as_mut() {
            n.email = Some(switchboard_crds::cluster::EmailSpec {
                smtp_url_secret_ref: switchboard_crds::cluster::SecretKeyRef {
                    name: "smtp".into(),
                    key: "url".into(),
                },
                from: "noreply@example.com".into(),
            });
        }
        let leak = "hunter2-password";
        let p = problems(
            &rc_email,
            &[
                ("jwt", secret("secret", leak)),
                (
                    "redis",
                    secret("url", &format!("http://user:{leak}@r:6379")),
                ),
                ("mongo", secret("uri", &format!("postgres://u:{leak}@m"))),
                ("smtp", secret("url", &format!("ftp://u:{leak}@mail"))),
                ("admin", secret("token", leak)),
                ("service", secret("token", leak)),
                ("fcm", secret("sa.json", leak)),
                ("apns", secret("key.p8", leak)),
            ],
        );
        assert!(p.len() >= 4, "{p:?}");
        for m in &p {
            assert!(!m.contains(leak), "{m}");
            assert!(m.contains("value in Secret"), "{m}");
        }
    }

    #[test]
    fn rotation_shorter_than_ttl_is_refused() {
        let mut rc = mk_cluster();
        rc.spec.turn = Some(TurnSpec {
            urls: vec!["turn:x".into()],
            credential_ttl: HumanDuration::from_secs(7200),
            rotation_interval: HumanDuration::from_secs(3600),
            ..Default::default()
        });
        let p = problems(&rc, &[("jwt", secret("secret", &"k".repeat(32)))]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("spec.turn.rotationInterval: 1h"), "{p:?}");
    }
}
