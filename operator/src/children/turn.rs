//! The TURN REST shared secret and the optional coturn Deployment.
//!
//! The operator generates the secret once and replaces it every `rotationInterval`.
//! After a rotation the old secret stays in the Secret as `previous` for one
//! `credentialTTL`, because credentials signed with it just before the rotation are
//! still in clients' hands; both reach the nodes (`SWITCHBOARD_TURN_SECRET`,
//! `SWITCHBOARD_TURN_PREVIOUS_SECRET`) and coturn (two `static-auth-secret`s).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec, Probe,
    Secret, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use switchboard_crds::cluster::{ManagedTurnSpec, RealtimeCluster, TurnSpec};

use super::config::{TURN_PREVIOUS_KEY, TURN_SECRET_KEY, env_secret};
use super::meta::{
    Names, SECRETS_HASH_ANNOTATION, TURN_ROTATED_ANNOTATION, container_security, pod_security,
};

/// User coturn runs as (the project's coturn image's user, by number so `runAsNonRoot`
/// can check it).
pub const COTURN_UID: i64 = 65532;

pub const COMPONENT: &str = "turn";
/// Secret annotation: until when `previous` is kept.
pub const PREVIOUS_UNTIL_ANNOTATION: &str = "switchboard.dev/previous-valid-until";
/// TURN listening port.
pub const TURN_PORT: i32 = 3478;

/// What the TURN Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnSecretState {
    pub current: String,
    pub previous: Option<String>,
    /// RFC 3339 time the current secret was generated.
    pub rotated_at: String,
    /// RFC 3339 time after which `previous` is dropped.
    pub previous_valid_until: Option<String>,
}

impl TurnSecretState {
    pub fn fresh(current: String, rotated_at: String) -> Self {
        Self {
            current,
            previous: None,
            rotated_at,
            previous_valid_until: None,
        }
    }

    /// Read back a Secret written by [`secret`]; `None` when it is not one.
    pub fn from_secret(s: &Secret) -> Option<Self> {
        let data = s.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        // Without its annotations (edited by hand, restored from a backup) the secret is
        // still the one clients hold credentials for: keep it, with an unreadable rotation
        // time, so the next decision rotates and keeps it as `previous` for one TTL.
        Some(Self {
            current: text(TURN_SECRET_KEY)?,
            previous: text(TURN_PREVIOUS_KEY),
            rotated_at: ann
                .get(TURN_ROTATED_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            previous_valid_until: ann.get(PREVIOUS_UNTIL_ANNOTATION).cloned(),
        })
    }

    /// Hash of the secrets themselves, on coturn's pod template: coturn reads them once,
    /// at start, so dropping `previous` must restart it too.
    pub fn data_hash(&self) -> String {
        let previous = self.previous.as_deref().unwrap_or("");
        super::config::content_hash(&format!("{}\0{previous}", self.current))
    }
}

/// What [`next_state`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnChange {
    Unchanged,
    Created,
    Rotated,
    PreviousExpired,
}

/// The decision: the state to store, what changed, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnDecision {
    pub state: TurnSecretState,
    pub change: TurnChange,
    pub recheck_in: Duration,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// How often the secret is replaced: `spec.rotationInterval`, at least a minute.
pub fn rotation_interval(spec: &TurnSpec) -> Duration {
    spec.rotation_interval.0.max(Duration::from_secs(60))
}

/// Decide the TURN secret at `now`. `fresh` makes a new random secret (only called when
/// one is needed). An unreadable time in the Secret counts as due for rotation.
pub fn next_state(
    existing: Option<TurnSecretState>,
    spec: &TurnSpec,
    now: Timestamp,
    fresh: impl FnOnce() -> String,
) -> TurnDecision {
    let rotation = rotation_interval(spec);
    let ttl = spec.credential_ttl.0;
    let Some(mut state) = existing else {
        return TurnDecision {
            state: TurnSecretState::fresh(fresh(), now.to_string()),
            change: TurnChange::Created,
            recheck_in: rotation,
        };
    };
    let rotated_at: Option<Timestamp> = state.rotated_at.parse().ok();
    let due = rotated_at.map(|t| add(t, rotation));
    let mut change = TurnChange::Unchanged;
    if due.is_none_or(|due| now >= due) {
        let previous_until = add(now, ttl);
        state = TurnSecretState {
            previous: Some(std::mem::take(&mut state.current)),
            current: fresh(),
            rotated_at: now.to_string(),
            previous_valid_until: Some(previous_until.to_string()),
        };
        change = TurnChange::Rotated;
    } else if state.previous.is_some() {
        let until_ts: Option<Timestamp> = state
            .previous_valid_until
            .as_deref()
            .and_then(|s| s.parse().ok());
        if until_ts.is_none_or(|u| now >= u) {
            state.previous = None;
            state.previous_valid_until = None;
            change = TurnChange::PreviousExpired;
        }
    }
    let next_rotation = until(now, add(parse_or(&state.rotated_at, now), rotation));
    let mut recheck_in = next_rotation;
    if let Some(u) = state
        .previous_valid_until
        .as_deref()
        .and_then(|s| s.parse().ok())
    {
        recheck_in = recheck_in.min(until(now, u));
    }
    TurnDecision {
        state,
        change,
        recheck_in: recheck_in.max(Duration::from_secs(1)),
    }
}

fn parse_or(s: &str, default: Timestamp) -> Timestamp {
    s.parse().unwrap_or(default)
}

/// The Secret holding the state.
pub fn secret(names: &Names, s: &TurnSecretState) -> Secret {
    let mut metadata = names.meta(names.turn_secret(), COMPONENT);
    let mut ann = BTreeMap::from([(TURN_ROTATED_ANNOTATION.to_owned(), s.rotated_at.clone())]);
    let mut data = BTreeMap::from([(
        TURN_SECRET_KEY.to_owned(),
        ByteString(s.current.clone().into_bytes()),
    )]);
    if let (Some(p), Some(u)) = (&s.previous, &s.previous_valid_until) {
        data.insert(TURN_PREVIOUS_KEY.into(), ByteString(p.clone().into_bytes()));
        ann.insert(PREVIOUS_UNTIL_ANNOTATION.into(), u.clone());
    }
    metadata.annotations = Some(ann);
    Secret {
        metadata,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The coturn settings, when the operator should run coturn.
pub fn managed(rc: &RealtimeCluster) -> Option<&ManagedTurnSpec> {
    rc.spec
        .turn
        .as_ref()?
        .managed
        .as_ref()
        .filter(|m| m.enabled)
}

/// Where coturn may write (its pid file and the SQLite user database it opens even when
/// only REST credentials are used): an emptyDir, the root file system stays read-only.
const COTURN_RUN_DIR: &str = "/var/run/turnserver";

/// Peer ranges coturn refuses to relay to unless `allowedPeerIPs` lists them: the
/// unspecified, "this network", private (RFC 1918), carrier-grade NAT (RFC 6598),
/// loopback, link-local and IETF-reserved IPv4 blocks, and the IPv6 loopback,
/// unspecified, IPv4-mapped, unique local and link-local blocks. A credential for the
/// TURN server then cannot reach the cluster network, the node or a cloud metadata
/// endpoint (169.254.169.254).
pub const DENIED_PEER_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "::/127",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
];

/// An address, a range `a-b` or a CIDR block as coturn's `ip[-ip]`; `None` when it is
/// none of them (the schema refuses such entries).
pub fn peer_range(entry: &str) -> Option<String> {
    use std::net::IpAddr;
    if let Some((a, b)) = entry.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.parse().ok()?, b.parse().ok()?);
        return (a.is_ipv4() == b.is_ipv4()).then(|| format!("{a}-{b}"));
    }
    let Some((ip, bits)) = entry.split_once('/') else {
        return entry.parse::<IpAddr>().ok().map(|a| a.to_string());
    };
    let bits: u32 = bits.parse().ok()?;
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if bits <= 32 => {
            let host = u32::MAX.checked_shr(bits).unwrap_or(0);
            let first = u32::from(a) & !host;
            Some(format!(
                "{}-{}",
                std::net::Ipv4Addr::from(first),
                std::net::Ipv4Addr::from(first | host)
            ))
        }
        IpAddr::V6(a) if bits <= 128 => {
            let host = u128::MAX.checked_shr(bits).unwrap_or(0);
            let first = u128::from(a) & !host;
            Some(format!(
                "{}-{}",
                std::net::Ipv6Addr::from(first),
                std::net::Ipv6Addr::from(first | host)
            ))
        }
        _ => None,
    }
}

/// coturn's arguments: REST shared-secret authentication with the current secret and,
/// while it exists, the previous one. The secrets come from the environment through the
/// kubelet's `$(VAR)` expansion, so no shell is needed (the image has none) and a secret
/// never appears in the pod spec. Hardened: no CLI, no multicast or denied-range peers
/// (bar the allow-list), UDP relays only unless TCP is asked for, a per-user allocation
/// quota.
pub fn coturn_args(m: &ManagedTurnSpec, s: &TurnSecretState) -> Vec<String> {
    let mut args: Vec<String> = [
        "-n",
        "--log-file=stdout",
        "--simple-log",
        "--no-cli",
        "--fingerprint",
        "--no-multicast-peers",
        "--use-auth-secret",
        "--realm=$(TURN_REALM)",
        "--static-auth-secret=$(TURN_SECRET)",
    ]
    .map(String::from)
    .to_vec();
    if s.previous.is_some() {
        args.push("--static-auth-secret=$(TURN_PREVIOUS_SECRET)".into());
    }
    if !m.tcp_relay {
        args.push("--no-tcp-relay".into());
    }
    args.push(format!("--user-quota={}", m.user_quota));
    for r in DENIED_PEER_RANGES.iter().filter_map(|r| peer_range(r)) {
        args.push(format!("--denied-peer-ip={r}"));
    }
    for r in m.allowed_peer_ips.iter().filter_map(|r| peer_range(r)) {
        args.push(format!("--allowed-peer-ip={r}"));
    }
    args.push(format!("--listening-port={TURN_PORT}"));
    args.push(format!("--pidfile={COTURN_RUN_DIR}/turnserver.pid"));
    args.push(format!("--userdb={COTURN_RUN_DIR}/turndb"));
    args
}

/// coturn with the REST shared secret(s). The previous secret is passed only while the
/// Secret holds one (its appearance or removal changes the secrets hash, which rolls the
/// pods).
pub fn coturn_deployment(names: &Names, m: &ManagedTurnSpec, s: &TurnSecretState) -> Deployment {
    let secret = names.turn_secret();
    let env_secret =
        |name: &str, key: &str, optional: bool| env_secret(name, &secret, key, optional);
    let mut env = vec![
        EnvVar {
            name: "TURN_REALM".into(),
            value: Some(m.realm.clone()),
            ..Default::default()
        },
        env_secret("TURN_SECRET", TURN_SECRET_KEY, false),
    ];
    if s.previous.is_some() {
        env.push(env_secret("TURN_PREVIOUS_SECRET", TURN_PREVIOUS_KEY, false));
    }
    let port = |name: &str, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: TURN_PORT,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let container = Container {
        name: "coturn".into(),
        image: Some(m.image.clone()),
        command: Some(vec!["turnserver".into()]),
        args: Some(coturn_args(m, s)),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: "run".into(),
            mount_path: COTURN_RUN_DIR.into(),
            ..Default::default()
        }]),
        ports: Some(vec![port("turn-udp", "UDP"), port("turn-tcp", "TCP")]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(TURN_PORT),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        resources: m.resources.clone(),
        // coturn writes only under COTURN_RUN_DIR (an emptyDir); it logs to stdout.
        security_context: Some(container_security(COTURN_UID, true)),
        ..Default::default()
    };
    Deployment {
        metadata: names.meta(names.coturn(), COMPONENT),
        spec: DeploymentSpec {
            replicas: Some(m.replicas),
            selector: names.selector(COMPONENT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(COMPONENT)),
                    annotations: Some(BTreeMap::from([
                        (TURN_ROTATED_ANNOTATION.to_owned(), s.rotated_at.clone()),
                        (SECRETS_HASH_ANNOTATION.to_owned(), s.data_hash()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "run".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security(COTURN_UID)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A ClusterIP Service for coturn. The managed coturn is in-cluster only: no relay port
/// range and no external IP are set up, so it serves clients on the cluster network.
pub fn coturn_service(names: &Names) -> Service {
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: TURN_PORT,
        target_port: Some(IntOrString::Int(TURN_PORT)),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    Service {
        metadata: names.meta(names.coturn(), COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names.selector_labels(COMPONENT)),
            ports: Some(vec![port("turn-udp", "UDP"), port("turn-tcp", "TCP")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_crds::duration::HumanDuration;

    fn spec() -> TurnSpec {
        TurnSpec {
            urls: vec!["turn:t:3478".into()],
            credential_ttl: HumanDuration::from_secs(3600),
            rotation_interval: HumanDuration::from_secs(86_400),
            ..Default::default()
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn created_once_then_unchanged_until_due() {
        let d = next_state(None, &spec(), at("2026-01-01T00:00:00Z"), || "s1".into());
        assert_eq!(d.change, TurnChange::Created);
        assert_eq!(d.state.current, "s1");
        assert_eq!(d.recheck_in, Duration::from_secs(86_400));
        let later = at("2026-01-01T12:00:00Z");
        let d2 = next_state(Some(d.state.clone()), &spec(), later, || {
            panic!("no new secret before the interval")
        });
        assert_eq!(d2.change, TurnChange::Unchanged);
        assert_eq!(d2.state, d.state);
        assert_eq!(d2.recheck_in, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_one_ttl() {
        let s0 = TurnSecretState::fresh("old".into(), "2026-01-01T00:00:00Z".into());
        let now = at("2026-01-02T00:00:05Z");
        let d = next_state(Some(s0), &spec(), now, || "new".into());
        assert_eq!(d.change, TurnChange::Rotated);
        assert_eq!(d.state.current, "new");
        assert_eq!(d.state.previous.as_deref(), Some("old"));
        assert_eq!(
            d.state.previous_valid_until.as_deref(),
            Some("2026-01-02T01:00:05Z")
        );
        assert_eq!(d.recheck_in, Duration::from_secs(3600));

        // Still kept just before the TTL runs out…
        let d2 = next_state(
            Some(d.state.clone()),
            &spec(),
            at("2026-01-02T01:00:04Z"),
            || unreachable!(),
        );
        assert_eq!(d2.change, TurnChange::Unchanged);
        assert_eq!(d2.state.previous.as_deref(), Some("old"));
        // …and dropped after.
        let d3 = next_state(
            Some(d2.state),
            &spec(),
            at("2026-01-02T01:00:05Z"),
            || unreachable!(),
        );
        assert_eq!(d3.change, TurnChange::PreviousExpired);
        assert_eq!(d3.state.previous, None);
        assert_eq!(d3.state.current, "new");
    }

    #[test]
    fn secret_round_trips_through_its_kubernetes_form() {
        let rc = crate::children::fixtures::mk_cluster();
        let names = Names::of(&rc).unwrap();
        let s = TurnSecretState {
            current: "c".into(),
            previous: Some("p".into()),
            rotated_at: "2026-01-01T00:00:00Z".into(),
            previous_valid_until: Some("2026-01-01T01:00:00Z".into()),
        };
        assert_eq!(TurnSecretState::from_secret(&secret(&names, &s)), Some(s));
        let garbled = Secret::default();
        assert_eq!(TurnSecretState::from_secret(&garbled), None);
    }

    #[test]
    fn a_secret_without_annotations_keeps_its_value_as_previous() {
        let rc = crate::children::fixtures::mk_cluster();
        let names = Names::of(&rc).unwrap();
        let mut bare = secret(
            &names,
            &TurnSecretState::fresh("held-by-clients".into(), "x".into()),
        );
        bare.metadata.annotations = None;
        let state = TurnSecretState::from_secret(&bare).unwrap();
        let d = next_state(Some(state), &spec(), at("2026-01-01T00:00:00Z"), || {
            "new".into()
        });
        assert_eq!(d.change, TurnChange::Rotated);
        assert_eq!(d.state.current, "new");
        assert_eq!(d.state.previous.as_deref(), Some("held-by-clients"));
    }

    #[test]
    fn dropping_the_previous_secret_restarts_coturn() {
        let rc = crate::children::fixtures::mk_cluster();
        let names = Names::of(&rc).unwrap();
        let hash = |s: &TurnSecretState| {
            coturn_deployment(&names, &ManagedTurnSpec::default(), s)
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[SECRETS_HASH_ANNOTATION]
                .clone()
        };
        let with = TurnSecretState {
            previous: Some("p".into()),
            previous_valid_until: Some("2026-01-01T01:00:00Z".into()),
            ..TurnSecretState::fresh("c".into(), "2026-01-01T00:00:00Z".into())
        };
        let without = TurnSecretState::fresh("c".into(), "2026-01-01T00:00:00Z".into());
        assert_ne!(hash(&with), hash(&without));
    }

    #[test]
    fn garbled_rotation_time_rotates() {
        let s0 = TurnSecretState::fresh("old".into(), "yesterday".into());
        let d = next_state(Some(s0), &spec(), at("2026-01-01T00:00:00Z"), || {
            "new".into()
        });
        assert_eq!(d.change, TurnChange::Rotated);
    }

    #[test]
    fn coturn_gets_both_secrets_without_a_shell() {
        let rc = crate::children::fixtures::mk_cluster();
        let names = Names::of(&rc).unwrap();
        let container = |s: &TurnSecretState| {
            let d = coturn_deployment(&names, &ManagedTurnSpec::default(), s);
            d.spec.template.spec.unwrap().containers[0].clone()
        };
        let secrets = |c: &Container| -> Vec<String> {
            let args = c.args.clone().unwrap();
            args.into_iter()
                .filter(|a| a.starts_with("--static-auth-secret="))
                .collect()
        };
        let envs = |c: &Container| -> Vec<String> {
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .map(|e| e.name.clone())
                .collect()
        };

        let fresh = TurnSecretState::fresh("c".into(), "2026-01-01T00:00:00Z".into());
        let c = container(&fresh);
        assert_eq!(c.command.as_deref(), Some(&["turnserver".to_string()][..]));
        assert_eq!(secrets(&c), ["--static-auth-secret=$(TURN_SECRET)"]);
        assert_eq!(envs(&c), ["TURN_REALM", "TURN_SECRET"]);
        let sec = c.security_context.unwrap();
        assert_eq!(sec.read_only_root_filesystem, Some(true));
        assert_eq!(sec.run_as_user, Some(COTURN_UID));

        let rotated = TurnSecretState {
            previous: Some("p".into()),
            ..fresh
        };
        let c = container(&rotated);
        assert_eq!(
            secrets(&c),
            [
                "--static-auth-secret=$(TURN_SECRET)",
                "--static-auth-secret=$(TURN_PREVIOUS_SECRET)"
            ]
        );
        assert_eq!(
            envs(&c),
            ["TURN_REALM", "TURN_SECRET", "TURN_PREVIOUS_SECRET"]
        );
        // Required, not optional: a missing key must stop the pod, never pass "$(VAR)".
        let prev = &c.env.as_ref().unwrap()[2];
        let optional = prev
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .optional;
        assert_ne!(optional, Some(true));
    }

    #[test]
    fn coturn_is_hardened_with_the_allow_list_on_top() {
        let fresh = TurnSecretState::fresh("c".into(), "2026-01-01T00:00:00Z".into());
        let mut m = ManagedTurnSpec::default();
        let args = coturn_args(&m, &fresh);
        for flag in [
            "--no-cli",
            "--no-multicast-peers",
            "--no-tcp-relay",
            "--user-quota=12",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        let denied: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--denied-peer-ip="))
            .collect();
        for range in [
            "10.0.0.0-10.255.255.255",
            "172.16.0.0-172.31.255.255",
            "192.168.0.0-192.168.255.255",
            "127.0.0.0-127.255.255.255",
            "169.254.0.0-169.254.255.255",
            "100.64.0.0-100.127.255.255",
            "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::-::1",
        ] {
            assert!(denied.contains(&range), "{range} not denied: {denied:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--allowed-peer-ip")));
        m.allowed_peer_ips = vec![
            "10.244.0.0/16".into(),
            "192.168.1.7".into(),
            "10.1.0.1-10.1.0.9".into(),
        ];
        m.tcp_relay = true;
        m.user_quota = 3;
        let args = coturn_args(&m, &fresh);
        let allowed: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--allowed-peer-ip="))
            .collect();
        assert_eq!(
            allowed,
            [
                "10.244.0.0-10.244.255.255",
                "192.168.1.7",
                "10.1.0.1-10.1.0.9"
            ]
        );
        assert!(!args.iter().any(|a| a == "--no-tcp-relay"));
        assert!(args.iter().any(|a| a == "--user-quota=3"));
        assert_eq!(peer_range("10.0.0.300"), None);
        assert_eq!(peer_range("10.0.0.1-::1"), None);
        assert_eq!(peer_range("10.0.0.0/33"), None);
        assert_eq!(
            peer_range("0.0.0.0/0").as_deref(),
            Some("0.0.0.0-255.255.255.255")
        );
    }
}
