//! Every object the operator creates for a `RealtimeCluster`, built by plain functions
//! from the spec (no I/O): the reconciler applies what [`desired`] returns and deletes
//! the owned kinds it no longer returns.
//!
//! ```text
//!   RealtimeCluster ─┬─ config    ConfigMap  <name>-config          (DataplaneConfig YAML)
//!                    ├─ socket    Deployment/Service/headless/PDB/HPA/NetworkPolicy <name>-socket
//!                    ├─ redis     StatefulSet/Service/headless/NetworkPolicy <name>-redis (managed),
//!                    │            Secret <name>-redis-auth (generated password and URL)
//!                    ├─ turn      Secret <name>-turn, Deployment/Service <name>-coturn
//!                    ├─ workers   Deployment                         <name>-worker
//!                    ├─ ingress   Ingress                            <name>
//!                    └─ monitor   ServiceMonitor                     <name>
//! ```

pub mod config;
pub mod meta;
pub mod monitor;
pub mod redis;
pub mod socket;
pub mod turn;
pub mod workers;

use kube::core::ApiResource;
use serde::Serialize;
use switchboard_crds::cluster::{PlacementSpec, RealtimeCluster, RedisMode};

use crate::children::meta::Names;

/// One object to apply, type-erased so one apply path serves every kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub resource: ApiResource,
    pub name: String,
    /// The full object (apiVersion, kind, metadata, spec…) as it is applied.
    pub object: serde_json::Value,
}

impl Desired {
    /// Erase a typed object.
    pub fn of<K>(obj: &K) -> Result<Self, serde_json::Error>
    where
        K: kube::Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let mut object = serde_json::to_value(obj)?;
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), resource.api_version.clone().into());
            map.insert("kind".into(), resource.kind.clone().into());
        }
        Ok(Self {
            name: obj.meta().name.clone().unwrap_or_default(),
            resource,
            object,
        })
    }

    /// Record the hash of the object in its own annotations. The apply layer skips an
    /// object whose live copy already holds every desired field; the hash makes a field
    /// the operator stops setting count as a difference, so the next apply removes it.
    fn stamp(&mut self) {
        let hash = config::content_hash(&self.object.to_string());
        if let Some(meta) = self
            .object
            .get_mut("metadata")
            .and_then(|m| m.as_object_mut())
        {
            let ann = meta
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(ann) = ann.as_object_mut() {
                ann.insert(meta::APPLIED_HASH_ANNOTATION.into(), hash.into());
            }
        }
    }

    /// Put the pods of a workload (Deployment, StatefulSet) where `spec.placement` says:
    /// one place for every pod the operator creates, whichever child builds it.
    fn place(&mut self, p: &PlacementSpec) {
        if !matches!(self.resource.kind.as_str(), "Deployment" | "StatefulSet") {
            return;
        }
        let Some(pod) = self
            .object
            .pointer_mut("/spec/template/spec")
            .and_then(|s| s.as_object_mut())
        else {
            return;
        };
        if !p.node_selector.is_empty() {
            pod.insert("nodeSelector".into(), serde_json::json!(p.node_selector));
        }
        if !p.tolerations.is_empty() {
            pod.insert("tolerations".into(), serde_json::json!(p.tolerations));
        }
    }

    /// `Kind/name`, for logs and events.
    pub fn label(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

/// What the builders need besides the spec: facts only the cluster knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The TURN secret's current generation time (rolls nodes when it changes).
    pub turn: Option<turn::TurnSecretState>,
    /// Whether the ServiceMonitor CRD (monitoring.coreos.com) is installed.
    pub service_monitor_crd: bool,
    /// Whether the PodMonitor CRD (monitoring.coreos.com) is installed.
    pub pod_monitor_crd: bool,
    /// The bytes of the Secret keys the spec references (hashed onto pod templates),
    /// and of the managed Redis' URL.
    pub secret_data: config::SecretData,
    /// The managed Redis' password: read from `<name>-redis-auth`, or generated when that
    /// Secret is missing (`None` only when Redis is external).
    pub redis_password: Option<String>,
}

/// Why desired state could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the RealtimeCluster has no {0}")]
    MissingMeta(&'static str),
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("rendering the data plane configuration: {0}")]
    Config(String),
    #[error("the managed Redis has no password yet")]
    MissingRedisPassword,
}

impl BuildError {
    pub fn from_json(source: serde_json::Error) -> Self {
        Self::Serialize {
            what: "RealtimeCluster",
            source,
        }
    }
}

/// Every child for `rc`, in apply order (config and secrets before the pods that use them).
pub fn desired(rc: &RealtimeCluster, observed: &Observed) -> Result<Vec<Desired>, BuildError> {
    let names = Names::of(rc)?;
    let spec = &rc.spec;
    let rendered = config::render(rc, &names)?;
    let mut out = Vec::new();
    let mut push = |what: &'static str, d: Result<Desired, serde_json::Error>| {
        d.map(|d| out.push(d))
            .map_err(|source| BuildError::Serialize { what, source })
    };
    push(
        "ServiceAccount",
        Desired::of(&meta::service_account(&names)),
    )?;
    push("ConfigMap", Desired::of(&rendered.config_map))?;
    if let Some(t) = &observed.turn {
        push("Secret", Desired::of(&turn::secret(&names, t)))?;
    }
    let policies = spec.network_policy.enabled;
    if spec.redis.mode == RedisMode::Managed {
        let Some(password) = &observed.redis_password else {
            return Err(BuildError::MissingRedisPassword);
        };
        push("Secret", Desired::of(&redis::auth_secret(&names, password)))?;
        push(
            "StatefulSet",
            Desired::of(&redis::stateful_set(rc, &names, password)),
        )?;
        push("Service", Desired::of(&redis::service(&names)))?;
        push("Service", Desired::of(&redis::headless_service(&names)))?;
        if policies {
            push("NetworkPolicy", Desired::of(&redis::network_policy(&names)))?;
        }
    }
    let pod = socket::PodInputs {
        config_hash: &rendered.hash,
        turn_rotated_at: observed.turn.as_ref().map(|t| t.rotated_at.as_str()),
        secrets: &observed.secret_data,
    };
    push(
        "Deployment",
        Desired::of(&socket::deployment(rc, &names, &pod)),
    )?;
    push("Service", Desired::of(&socket::service(rc, &names)))?;
    push("Service", Desired::of(&socket::headless_service(&names)))?;
    push("Service", Desired::of(&socket::internal_service(&names)))?;
    push("PodDisruptionBudget", Desired::of(&socket::pdb(rc, &names)))?;
    if policies {
        push(
            "NetworkPolicy",
            Desired::of(&socket::network_policy(rc, &names)),
        )?;
    }
    if let Some(hpa) = socket::hpa(rc, &names) {
        push("HorizontalPodAutoscaler", Desired::of(&hpa))?;
    }
    if let Some(ing) = socket::ingress(rc, &names) {
        push("Ingress", Desired::of(&ing))?;
    }
    if let (Some(t), Some(spec)) = (&observed.turn, turn::managed(rc)) {
        push(
            "Deployment",
            Desired::of(&turn::coturn_deployment(&names, spec, t)),
        )?;
        push("Service", Desired::of(&turn::coturn_service(&names)))?;
    }
    if let Some(n) = &spec.notifications {
        push(
            "Deployment",
            Desired::of(&workers::deployment(rc, n, &names, &pod)),
        )?;
    }
    let monitored = spec.monitoring.as_ref().is_some_and(|m| m.service_monitor);
    if monitored && observed.service_monitor_crd {
        out.push(monitor::service_monitor(&names));
    }
    if monitored && observed.pod_monitor_crd && spec.notifications.is_some() {
        out.push(monitor::worker_pod_monitor(&names));
    }
    for d in &mut out {
        if let Some(p) = &spec.placement {
            d.place(p);
        }
        d.stamp();
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use switchboard_crds::cluster::*;

    /// A valid cluster with an HMAC JWT secret and a managed Redis.
    pub fn mk_cluster() -> RealtimeCluster {
        let mut rc = RealtimeCluster::new(
            "chat",
            RealtimeClusterSpec {
                auth: AuthSpec {
                    jwt: JwtSpec {
                        secret_ref: Some(SecretKeyRef {
                            name: "jwt".into(),
                            key: "secret".into(),
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        rc.metadata.namespace = Some("apps".into());
        rc.metadata.uid = Some("0000-uid".into());
        rc.metadata.generation = Some(1);
        rc
    }

    /// Every optional part switched on.
    pub fn mk_full_cluster() -> RealtimeCluster {
        let mut rc = mk_cluster();
        let secret = |name: &str, key: &str| SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        rc.spec.socket.autoscaling = Some(AutoscalingSpec::default());
        rc.spec.auth.admin_token_secret_ref = Some(secret("admin", "token"));
        rc.spec.auth.service_token_secret_ref = Some(secret("service", "token"));
        rc.spec.redis = RedisSpec {
            mode: RedisMode::External,
            managed: None,
            external: Some(ExternalRedisSpec {
                url_secret_ref: Some(secret("redis", "url")),
            }),
        };
        rc.spec.turn = Some(TurnSpec {
            urls: vec!["turn:turn.example.com:3478".into()],
            stun_urls: vec!["stun:stun.example.com:3478".into()],
            managed: Some(ManagedTurnSpec::default()),
            ..Default::default()
        });
        rc.spec.notifications = Some(NotificationsSpec {
            workers: WorkersSpec::default(),
            kafka: KafkaSpec {
                brokers: vec!["kafka:9092".into()],
                topic: "notify".into(),
                group: "workers".into(),
                dlq_topic: Some("notify.dlq".into()),
            },
            fcm: Some(FcmSpec {
                service_account_secret_ref: secret("fcm", "sa.json"),
                base_url: Some("http://fcm.test:8080".into()),
            }),
            apns: Some(ApnsSpec {
                key_secret_ref: secret("apns", "key.p8"),
                key_id: "ABCDEFGHIJ".into(),
                team_id: "TEAM123456".into(),
                topic: "com.example.app".into(),
                environment: ApnsEnvironment::Sandbox,
            }),
            email: None,
        });
        rc.spec.call_history = Some(CallHistorySpec {
            mongodb: MongoSpec {
                uri_secret_ref: secret("mongo", "uri"),
                database: "calls".into(),
            },
        });
        rc.spec.ingress = Some(IngressSpec {
            class_name: Some("nginx".into()),
            host: "rt.example.com".into(),
            tls_secret_name: Some("rt-tls".into()),
            annotations: Default::default(),
        });
        rc.spec.monitoring = Some(MonitoringSpec {
            service_monitor: true,
        });
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    /// What the reconciler observes for a cluster whose Redis password exists.
    fn with_password() -> Observed {
        Observed {
            redis_password: Some("p".repeat(64)),
            ..Default::default()
        }
    }

    fn kinds(d: &[Desired]) -> Vec<String> {
        d.iter().map(Desired::label).collect()
    }

    #[test]
    fn placement_reaches_every_pod_and_nothing_else() {
        use k8s_openapi::api::core::v1::Toleration;
        let mut rc = mk_cluster();
        rc.spec.placement = Some(PlacementSpec {
            node_selector: [("pool".to_string(), "realtime".to_string())].into(),
            tolerations: vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }],
        });
        let d = desired(&rc, &with_password()).unwrap();
        let mut placed = Vec::new();
        for child in &d {
            let pod = &child.object["spec"]["template"]["spec"];
            if pod.is_object() {
                assert_eq!(pod["nodeSelector"]["pool"], "realtime", "{}", child.label());
                assert_eq!(
                    pod["tolerations"][0]["key"],
                    "dedicated",
                    "{}",
                    child.label()
                );
                placed.push(child.label());
            } else {
                assert!(child.object.pointer("/spec/nodeSelector").is_none());
            }
        }
        assert_eq!(placed, ["StatefulSet/chat-redis", "Deployment/chat-socket"]);
        // Unset: the pods say nothing about nodes.
        let d = desired(&mk_cluster(), &with_password()).unwrap();
        for child in &d {
            assert!(
                child
                    .object
                    .pointer("/spec/template/spec/nodeSelector")
                    .is_none()
            );
            assert!(
                child
                    .object
                    .pointer("/spec/template/spec/tolerations")
                    .is_none()
            );
        }
    }

    #[test]
    fn minimal_cluster_gets_the_core_children_all_owned() {
        let rc = mk_cluster();
        let d = desired(&rc, &with_password()).unwrap();
        assert_eq!(
            kinds(&d),
            [
                "ServiceAccount/chat-switchboard",
                "ConfigMap/chat-config",
                "Secret/chat-redis-auth",
                "StatefulSet/chat-redis",
                "Service/chat-redis",
                "Service/chat-redis-headless",
                "NetworkPolicy/chat-redis",
                "Deployment/chat-socket",
                "Service/chat-socket",
                "Service/chat-socket-headless",
                "Service/chat-internal",
                "PodDisruptionBudget/chat-socket",
                "NetworkPolicy/chat-socket",
            ]
        );
        // The public Service carries Socket.IO only; the internal APIs have their own
        // ClusterIP Service and container port.
        let object = |label: &str| &d.iter().find(|c| c.label() == label).unwrap().object;
        let port_names = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            port_names(&object("Service/chat-socket")["spec"]["ports"]),
            ["http"]
        );
        let internal = &object("Service/chat-internal")["spec"];
        assert_eq!(internal["type"], "ClusterIP");
        assert_eq!(internal["ports"][0]["port"], 9090);
        assert_eq!(
            port_names(
                &object("Deployment/chat-socket")["spec"]["template"]["spec"]["containers"][0]["ports"]
            ),
            ["http", "internal"]
        );
        let config = object("ConfigMap/chat-config")["data"][config::CONFIG_KEY]
            .as_str()
            .unwrap();
        assert!(config.contains("internal_listen: 0.0.0.0:9090"), "{config}");
        for child in &d {
            let owners = &child.object["metadata"]["ownerReferences"];
            assert_eq!(owners[0]["uid"], "0000-uid", "{}", child.label());
            assert_eq!(owners[0]["controller"], true, "{}", child.label());
            assert_eq!(child.object["metadata"]["namespace"], "apps");
            assert_eq!(
                child.object["metadata"]["labels"]["app.kubernetes.io/instance"],
                "chat"
            );
        }
    }

    #[test]
    fn full_cluster_adds_hpa_ingress_turn_workers_and_monitor() {
        let rc = mk_full_cluster();
        let observed = Observed {
            turn: Some(turn::TurnSecretState::fresh(
                "a".repeat(64),
                "2026-01-01T00:00:00Z".into(),
            )),
            service_monitor_crd: true,
            pod_monitor_crd: true,
            ..with_password()
        };
        let d = desired(&rc, &observed).unwrap();
        let k = kinds(&d);
        for want in [
            "Secret/chat-turn",
            "HorizontalPodAutoscaler/chat-socket",
            "Ingress/chat",
            "Deployment/chat-coturn",
            "Service/chat-coturn",
            "Deployment/chat-worker",
            "ServiceMonitor/chat",
            "PodMonitor/chat-worker",
        ] {
            assert!(k.contains(&want.to_string()), "{want} missing from {k:?}");
        }
        // The PodMonitor scrapes the worker pods' port, as the Deployment names it.
        let pm = d.iter().find(|c| c.resource.kind == "PodMonitor").unwrap();
        let worker = d
            .iter()
            .find(|c| c.resource.kind == "Deployment" && c.name == "chat-worker")
            .unwrap();
        let template = &worker.object["spec"]["template"];
        assert_eq!(
            pm.object["spec"]["selector"]["matchLabels"],
            worker.object["spec"]["selector"]["matchLabels"]
        );
        let ports = template["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["name"] == pm.object["spec"]["podMetricsEndpoints"][0]["port"]),
            "{ports:?}"
        );
        // The ServiceMonitor scrapes a port the metrics Service has: the internal one.
        let sm = d
            .iter()
            .find(|c| c.resource.kind == "ServiceMonitor")
            .unwrap();
        let scraped = &sm.object["spec"]["endpoints"][0]["port"];
        assert_eq!(scraped, "internal");
        let headless = d
            .iter()
            .find(|c| c.label() == "Service/chat-socket-headless")
            .unwrap();
        assert!(
            headless.object["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| &p["name"] == scraped)
        );
        // No workers, no PodMonitor.
        let mut no_workers = rc.clone();
        no_workers.spec.notifications = None;
        let k = kinds(&desired(&no_workers, &observed).unwrap());
        assert!(!k.contains(&"PodMonitor/chat-worker".to_string()), "{k:?}");
        // External Redis: no StatefulSet.
        assert!(!k.iter().any(|k| k.starts_with("StatefulSet/")), "{k:?}");
        // Without the CRDs, no ServiceMonitor and no PodMonitor.
        let d = desired(
            &rc,
            &Observed {
                service_monitor_crd: false,
                pod_monitor_crd: false,
                ..observed
            },
        )
        .unwrap();
        assert!(!kinds(&d).contains(&"ServiceMonitor/chat".to_string()));
        assert!(!kinds(&d).contains(&"PodMonitor/chat-worker".to_string()));
    }

    #[test]
    fn managed_redis_is_locked_down_by_password_and_network_policies() {
        let mut rc = mk_cluster();
        // A managed Redis without its password is an error, never a Redis without one.
        assert!(matches!(
            desired(&rc, &Observed::default()),
            Err(BuildError::MissingRedisPassword)
        ));
        rc.spec.network_policy.internal_from =
            vec![k8s_openapi::api::networking::v1::NetworkPolicyPeer {
                namespace_selector: Some(Default::default()),
                ..Default::default()
            }];
        let d = desired(&rc, &with_password()).unwrap();
        let object = |label: &str| &d.iter().find(|c| c.label() == label).unwrap().object;
        let secret = object("Secret/chat-redis-auth");
        let decoded = |k: &str| {
            let b: k8s_openapi::ByteString =
                serde_json::from_value(secret["data"][k].clone()).unwrap();
            String::from_utf8(b.0).unwrap()
        };
        assert_eq!(decoded("password"), "p".repeat(64));
        assert_eq!(
            decoded("url"),
            format!("redis://:{}@chat-redis.apps.svc:6379", "p".repeat(64))
        );
        // Redis requires it (expanded from the Secret, never written into the object),
        // and refuses writes rather than evict when full.
        let redis = &object("StatefulSet/chat-redis")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = redis["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(after("--requirepass"), "$(REDIS_PASSWORD)");
        assert_eq!(after("--maxmemory-policy"), "noeviction");
        assert_eq!(after("--maxmemory"), (192u64 << 20).to_string());
        assert!(!redis.to_string().contains(&"p".repeat(64)));
        for var in ["REDIS_PASSWORD", "REDISCLI_AUTH"] {
            let e = redis["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == var)
                .unwrap();
            assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "chat-redis-auth");
        }
        // The socket pods' secrets hash covers the URL: a new password rolls them.
        let hash = |observed: &Observed| {
            let d = desired(&rc, observed).unwrap();
            let dep = d
                .iter()
                .find(|c| c.label() == "Deployment/chat-socket")
                .unwrap();
            dep.object["spec"]["template"]["metadata"]["annotations"][meta::SECRETS_HASH_ANNOTATION]
                .clone()
        };
        let mut observed = with_password();
        let key = |o: &mut Observed, pw: &str| {
            o.redis_password = Some(pw.into());
            o.secret_data.insert(
                ("chat-redis-auth".into(), "url".into()),
                redis::url(&Names::of(&rc).unwrap(), pw).into_bytes(),
            );
        };
        key(&mut observed, "one");
        let one = hash(&observed);
        key(&mut observed, "two");
        assert_ne!(one, hash(&observed));
        // Redis admits this cluster's socket and worker pods only, on its port.
        let np = &object("NetworkPolicy/chat-redis")["spec"];
        assert_eq!(
            np["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "redis"
        );
        assert_eq!(np["policyTypes"], serde_json::json!(["Ingress"]));
        let rule = &np["ingress"][0];
        assert_eq!(np["ingress"].as_array().unwrap().len(), 1);
        assert_eq!(rule["ports"][0]["port"], 6379);
        let sel = &rule["from"][0]["podSelector"];
        assert_eq!(sel["matchLabels"]["app.kubernetes.io/instance"], "chat");
        assert_eq!(
            sel["matchExpressions"][0]["values"],
            serde_json::json!(["socket", "worker"])
        );
        assert!(
            rule["from"][0].get("namespaceSelector").is_none(),
            "same namespace only"
        );
        // Socket pods: the public port from anyone; the internal port from labelled pods
        // and the listed peers only.
        let np = &object("NetworkPolicy/chat-socket")["spec"];
        assert_eq!(
            np["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "socket"
        );
        let rules = np["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["ports"][0]["port"], 3000);
        assert!(rules[0].get("from").is_none());
        assert_eq!(rules[1]["ports"][0]["port"], 9090);
        assert_eq!(
            rules[1]["from"][0]["podSelector"]["matchLabels"][meta::INTERNAL_ACCESS_LABEL],
            "true"
        );
        assert_eq!(
            rules[1]["from"][1]["namespaceSelector"],
            serde_json::json!({})
        );
        // Turned off: no policies (the operator prunes them).
        rc.spec.network_policy.enabled = false;
        let k = kinds(&desired(&rc, &with_password()).unwrap());
        assert!(!k.iter().any(|k| k.starts_with("NetworkPolicy/")), "{k:?}");
    }

    #[test]
    fn redis_max_memory_follows_the_spec_then_the_container_memory() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use switchboard_crds::cluster::ManagedRedisSpec;
        let mem = |q: &str| Some([("memory".to_string(), Quantity(q.into()))].into());
        let mut m = ManagedRedisSpec::default();
        assert_eq!(redis::max_memory(&m), 192 << 20);
        m.resources = Some(ResourceRequirements {
            requests: mem("1Gi"),
            ..Default::default()
        });
        assert_eq!(redis::max_memory(&m), 768 << 20);
        m.resources.as_mut().unwrap().limits = mem("2G");
        assert_eq!(redis::max_memory(&m), 1_500_000_000);
        m.max_memory = Some("100Mi".into());
        assert_eq!(redis::max_memory(&m), 100 << 20);
        assert_eq!(redis::quantity_bytes("1.5Gi"), None);
        assert_eq!(redis::quantity_bytes("12"), Some(12));
    }
}
