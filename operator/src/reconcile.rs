//! The thin async layer: read what the decisions need, apply what they return, write the
//! status when it changed, and run all of it as a kube-runtime `Controller`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::RngCore;
use serde_json::json;
use switchboard_crds::cluster::{RealtimeCluster, RealtimeClusterStatus, RedisMode, TurnStatus};
use tracing::{Instrument, info, info_span, warn};

use crate::apply::{Applied, apply, controlled_by, delete_owned};
use crate::checks::spec_problems;
use crate::children::meta::{FIELD_MANAGER, Names};
use crate::children::turn::{TurnChange, TurnSecretState, next_state};
use crate::children::{self, BuildError, Observed, config, monitor, redis, socket, turn};
use crate::metrics::{ClusterFacts, Metrics};
use crate::status::{Facts, Observation, Workload, decide};

/// Everything a reconcile needs; shared by all of them.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    recorder: Recorder,
    /// Consecutive failures per cluster, for the retry backoff. Entries go on success;
    /// at most [`MAX_TRACKED_FAILURES`] clusters are tracked.
    failures: Mutex<HashMap<ObjectRef<RealtimeCluster>, u32>>,
}

/// Bound of [`Context::failures`].
const MAX_TRACKED_FAILURES: usize = 10_000;
/// Longest wait between a failure and the retry.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A healthy cluster is looked at again at least this often.
const RESYNC: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Arc<Self> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`], per cluster.
    fn backoff(&self, key: ObjectRef<RealtimeCluster>) -> Duration {
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.len() >= MAX_TRACKED_FAILURES && !f.contains_key(&key) {
            f.clear();
        }
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(9)).min(MAX_BACKOFF)
    }

    fn succeeded(&self, key: &ObjectRef<RealtimeCluster>) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    async fn event(&self, rc: &RealtimeCluster, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &rc.object_ref(&())).await {
            warn!(error = %e, reason, "publishing an event failed");
        } else {
            self.metrics.write("Event", "create");
        }
    }
}

/// Why a reconcile failed; `metric_label` counts them by kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{count} children could not be applied; first: {first}")]
    Apply { count: usize, first: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::Apply { .. } => "apply",
        }
    }
}

/// The optional children, which are deleted when the spec stops asking for them.
fn prunable(names: &Names) -> Vec<(ApiResource, String)> {
    let ar = |r: ApiResource, n: String| (r, n);
    vec![
        ar(
            ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            names.socket(),
        ),
        ar(ApiResource::erase::<Ingress>(&()), names.ingress()),
        ar(ApiResource::erase::<Deployment>(&()), names.coturn()),
        ar(ApiResource::erase::<Service>(&()), names.coturn()),
        ar(ApiResource::erase::<Deployment>(&()), names.worker()),
        ar(ApiResource::erase::<StatefulSet>(&()), names.redis()),
        ar(ApiResource::erase::<Service>(&()), names.redis()),
        ar(ApiResource::erase::<Service>(&()), names.redis_headless()),
        ar(ApiResource::erase::<Secret>(&()), names.turn_secret()),
        ar(ApiResource::erase::<Secret>(&()), names.redis_auth()),
        ar(ApiResource::erase::<NetworkPolicy>(&()), names.redis()),
        ar(ApiResource::erase::<NetworkPolicy>(&()), names.socket()),
        ar(monitor::resource(), names.instance.clone()),
        ar(monitor::pod_monitor_resource(), names.worker()),
    ]
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One reconcile of one cluster.
#[tracing::instrument(skip_all, fields(cluster = %rc.name_any(), namespace = rc.namespace().unwrap_or_default()))]
pub async fn reconcile(rc: Arc<RealtimeCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    if rc.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the children; re-creating them
        // now would only race it.
        ctx.metrics
            .forget_cluster(&rc.namespace().unwrap_or_default(), &rc.name_any());
        return Ok(Action::await_change());
    }
    let names = Names::of(&rc)?;
    let ns = names.namespace.clone();
    let client = &ctx.client;
    let now = Timestamp::now();
    let mut recheck = RESYNC;

    // Secrets the spec references: their absence is reported, not fatal.
    // Read by name (`get`): the operator neither lists nor watches Secrets. A rotation
    // of one reaches the pods (through the secrets hash) at the next reconcile.
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut secrets = BTreeMap::new();
    for (_, r) in config::referenced_secrets(&rc) {
        if !secrets.contains_key(&r.name) {
            secrets.insert(r.name.clone(), secrets_api.get_opt(&r.name).await?);
        }
    }
    let mut secret_data: config::SecretData = config::referenced_secrets(&rc)
        .into_iter()
        .filter_map(|(_, r)| {
            let s = secrets.get(&r.name)?.as_ref()?;
            let v = s.data.as_ref()?.get(&r.key)?;
            Some(((r.name.clone(), r.key.clone()), v.0.clone()))
        })
        .collect();

    // The TURN secret: generated once, rotated on schedule.
    let mut turn_change = None;
    let turn_state = match &rc.spec.turn {
        Some(spec) => {
            let existing = secrets_api
                .get_opt(&names.turn_secret())
                .await?
                .as_ref()
                .and_then(TurnSecretState::from_secret);
            let d = next_state(existing, spec, now, random_secret);
            recheck = recheck.min(d.recheck_in);
            if d.change == TurnChange::PreviousExpired {
                info!(cluster = %names.instance, "previous TURN secret expired");
            }
            turn_change = Some((d.change, d.state.previous_valid_until.clone()));
            Some(d.state)
        }
        None => None,
    };

    // The managed Redis' password: generated once, kept in `<name>-redis-auth`.
    let redis_password = match rc.spec.redis.mode {
        RedisMode::Managed => {
            let password = secrets_api
                .get_opt(&names.redis_auth())
                .await?
                .as_ref()
                .and_then(redis::password_of)
                .unwrap_or_else(random_secret);
            secret_data.insert(
                (names.redis_auth(), redis::URL_KEY.into()),
                redis::url(&names, &password).into_bytes(),
            );
            Some(password)
        }
        RedisMode::External => None,
    };

    let mut problems = spec_problems(&rc, &names, turn_state.as_ref(), &secrets);

    let wants_monitor = rc
        .spec
        .monitoring
        .as_ref()
        .is_some_and(|m| m.service_monitor);
    let service_monitor_crd = wants_monitor
        && Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(monitor::CRD_NAME)
            .await?
            .is_some();

    // Workers are scraped through a PodMonitor (the Prometheus Operator ships both CRDs;
    // without this one the workers simply go unscraped).
    let pod_monitor_crd = wants_monitor
        && rc.spec.notifications.is_some()
        && Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(monitor::POD_MONITOR_CRD_NAME)
            .await?
            .is_some();

    if wants_monitor && !service_monitor_crd {
        problems.push(format!(
            "spec.monitoring.serviceMonitor: the ServiceMonitor CRD ({}) is not installed; install the Prometheus Operator or turn this off",
            monitor::CRD_NAME
        ));
    }

    let observed = Observed {
        turn: turn_state.clone(),
        service_monitor_crd,
        pod_monitor_crd,
        secret_data,
        redis_password,
    };
    let desired = children::desired(&rc, &observed)?;
    let owner_uid = rc.uid().unwrap_or_default();

    // Autoscaling just switched on: hand `replicas` to another field manager first, so
    // the apply that stops setting it does not reset the Deployment to one replica.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    if let Some(live) = deployments.get_opt(&names.socket()).await?
        && controlled_by(&live.metadata, &owner_uid)
        && let Some(patch) = socket::replicas_handoff(&rc, &live)
    {
        deployments
            .patch(
                &names.socket(),
                &PatchParams::apply(socket::HANDOFF_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        ctx.metrics.write("Deployment", "update");
    }

    let mut created = Vec::new();
    let mut updated = Vec::new();
    let mut conflicts = Vec::new();
    let mut apply_errors = Vec::new();
    let mut turn_secret_applied = false;
    for d in &desired {
        let result = apply(client, &ns, d, &owner_uid).await;
        if d.resource.kind == "Secret" && d.name == names.turn_secret() {
            turn_secret_applied = matches!(
                result,
                Ok(Applied::Created | Applied::Updated | Applied::Unchanged)
            );
        }
        match result {
            Ok(Applied::NameConflict) => {
                warn!(child = %d.label(), "an object of this name exists and is not ours; left alone");
                conflicts.push(d.label());
            }
            Ok(Applied::Unchanged) => {}
            Ok(Applied::Created) => {
                ctx.metrics.write(&d.resource.kind, "create");
                created.push(d.label());
            }
            Ok(Applied::Updated) => {
                ctx.metrics.write(&d.resource.kind, "update");
                updated.push(d.label());
            }
            Err(e) => {
                warn!(child = %d.label(), error = %e, "apply failed");
                apply_errors.push(format!("{}: {e}", d.label()));
            }
        }
    }
    // Announce a rotation only once the new secret is stored.
    if let Some((TurnChange::Rotated, until)) = &turn_change
        && turn_secret_applied
    {
        ctx.event(
            &rc,
            EventType::Normal,
            "TurnSecretRotated",
            format!(
                "rotated Secret {}; the previous secret stays valid until {}",
                names.turn_secret(),
                until.clone().unwrap_or_default()
            ),
        )
        .await;
    }
    let mut deleted = Vec::new();
    for (resource, name) in prunable(&names) {
        let wanted = desired
            .iter()
            .any(|d| d.resource.kind == resource.kind && d.name == name);
        if wanted {
            continue;
        }
        if delete_owned(client, &ns, &resource, &name, &owner_uid).await? {
            ctx.metrics.write(&resource.kind, "delete");
            deleted.push(format!("{}/{name}", resource.kind));
        }
    }
    if !(created.is_empty() && updated.is_empty() && deleted.is_empty()) {
        let mut parts = Vec::new();
        for (verb, list) in [
            ("created", &created),
            ("updated", &updated),
            ("deleted", &deleted),
        ] {
            if !list.is_empty() {
                parts.push(format!("{verb} {}", list.join(", ")));
            }
        }
        info!(cluster = %names.instance, changes = %parts.join("; "), "applied");
        ctx.event(&rc, EventType::Normal, "Applied", parts.join("; "))
            .await;
    }

    // Status from the children's status.
    let socket = deployments
        .get_opt(&names.socket())
        .await?
        .map(|d| Workload::of_deployment(&d));
    let observe_deployment = |wanted: bool, name: String| {
        let deployments = deployments.clone();
        async move {
            if !wanted {
                return Ok::<_, kube::Error>(Observation::NotWanted);
            }
            Ok(match deployments.get_opt(&name).await? {
                Some(d) => Observation::Present(Workload::of_deployment(&d)),
                None => Observation::Missing,
            })
        }
    };
    let redis = match rc.spec.redis.mode {
        RedisMode::External => None,
        RedisMode::Managed => Some(
            match Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .get_opt(&names.redis())
                .await?
            {
                Some(s) => Observation::Present(Workload::of_stateful_set(&s)),
                None => Observation::Missing,
            },
        ),
    };
    let workers = observe_deployment(rc.spec.notifications.is_some(), names.worker()).await?;
    let coturn = observe_deployment(turn::managed(&rc).is_some(), names.coturn()).await?;
    ctx.metrics.cluster(
        &ns,
        &rc.name_any(),
        &ClusterFacts {
            socket: socket.as_ref().map(|w| (w.desired, w.ready)),
            turn: match (&turn_state, &rc.spec.turn) {
                (Some(t), Some(spec)) => t.rotated_at.parse::<Timestamp>().ok().map(|at| {
                    (
                        at.as_millisecond() as f64 / 1000.0,
                        turn::rotation_interval(spec).as_secs_f64(),
                    )
                }),
                _ => None,
            },
        },
    );
    let facts = Facts {
        generation: rc.metadata.generation,
        socket,
        redis,
        workers: Some(workers),
        coturn: Some(coturn),
        turn: turn_state.map(|t| TurnStatus {
            secret_name: names.turn_secret(),
            rotated_at: t.rotated_at,
        }),
        endpoint: socket::endpoint(&rc, &names),
        config_hash: config::render(&rc, &names)?.hash,
        spec_problems: problems,
        apply_errors: apply_errors.clone(),
        name_conflicts: conflicts,
    };
    let previous = rc.status.as_ref();
    let status = decide(&facts, previous, now);
    if previous != Some(&status) {
        let newly_degraded = status.phase.as_deref() == Some("Degraded")
            && previous.and_then(|p| p.phase.as_deref()) != Some("Degraded");
        write_status(client, &rc, &status).await?;
        ctx.metrics.write("RealtimeCluster/status", "update");
        if newly_degraded {
            let note = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            ctx.event(&rc, EventType::Warning, "Degraded", note).await;
        }
    }
    if let Some(first) = apply_errors.first() {
        return Err(Error::Apply {
            count: apply_errors.len(),
            first: first.clone(),
        });
    }
    if status.phase.as_deref() != Some("Ready") {
        // Children's status changes wake us through the watches; this is a safety net.
        recheck = recheck.min(Duration::from_secs(30));
    }
    ctx.succeeded(&ObjectRef::from_obj(rc.as_ref()));
    Ok(Action::requeue(recheck))
}

async fn write_status(
    client: &Client,
    rc: &RealtimeCluster,
    status: &RealtimeClusterStatus,
) -> Result<(), kube::Error> {
    let api: Api<RealtimeCluster> =
        Api::namespaced(client.clone(), &rc.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": RealtimeCluster::api_version(&()),
        "kind": RealtimeCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &rc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The key of `obj` in the failure map.
fn key_of(obj: &DynamicObject) -> ObjectRef<RealtimeCluster> {
    let r = ObjectRef::new(&obj.name_any());
    match obj.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// The controller watches clusters untyped, so that one object the Rust types cannot read
/// (written before a schema tightened, or against an older CRD) only degrades itself
/// instead of failing the watch of every cluster. Readable ones go to [`reconcile`].
async fn reconcile_object(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let value = serde_json::to_value(obj.as_ref()).map_err(BuildError::from_json)?;
    match serde_json::from_value::<RealtimeCluster>(value) {
        Ok(rc) => reconcile(Arc::new(rc), ctx).await,
        Err(e) => {
            warn!(cluster = %obj.name_any(), error = %e, "cannot read the RealtimeCluster");
            unreadable(&ctx.client, &obj, &e.to_string()).await?;
            ctx.metrics.write("RealtimeCluster/status", "update");
            Ok(Action::await_change())
        }
    }
}

/// Mark a cluster the operator cannot read as Degraded (reason `UnreadableSpec`).
async fn unreadable(client: &Client, obj: &DynamicObject, why: &str) -> Result<(), kube::Error> {
    let ar = ApiResource::erase::<RealtimeCluster>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &obj.namespace().unwrap_or_default(), &ar);
    let now = Timestamp::now().to_string();
    let message = format!("the operator cannot read this RealtimeCluster: {why}");
    let already = obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["reason"] == "UnreadableSpec" && c["message"] == message.as_str());
    if already {
        return Ok(());
    }
    let condition = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "reason": "UnreadableSpec",
               "message": message, "lastTransitionTime": now,
               "observedGeneration": obj.metadata.generation})
    };
    let patch = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "status": {
            "observedGeneration": obj.metadata.generation,
            "phase": "Degraded",
            "conditions": [condition("Ready", "False"), condition("Progressing", "False"),
                           condition("Degraded", "True")],
        }
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(error.metric_label());
    let wait = ctx.backoff(key_of(&obj));
    warn!(cluster = %obj.name_any(), error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Run the controller until `shutdown` resolves. `namespace` limits it to one namespace
/// (the tests run one controller per namespace); `None` watches all.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned =
        || watcher::Config::default().labels("app.kubernetes.io/managed-by=switchboard-operator");
    let ar = ApiResource::erase::<RealtimeCluster>(&());
    let clusters: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    Controller::new_with(clusters, watcher::Config::default(), ar)
        .owns(api::<ConfigMap>(&client, namespace), owned())
        .owns(api::<ServiceAccount>(&client, namespace), owned())
        .owns(api::<Deployment>(&client, namespace), owned())
        .owns(api::<StatefulSet>(&client, namespace), owned())
        .owns(api::<Service>(&client, namespace), owned())
        .owns(api::<PodDisruptionBudget>(&client, namespace), owned())
        .owns(api::<HorizontalPodAutoscaler>(&client, namespace), owned())
        .owns(api::<Ingress>(&client, namespace), owned())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_object, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .instrument(info_span!("controller"))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures::mk_cluster;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn every_error_kind_is_registered_up_front() {
        let serde = serde_json::from_str::<u8>("x").unwrap_err();
        let errors = [
            Error::Kube(kube::Error::SerdeError(
                serde_json::from_str::<u8>("x").unwrap_err(),
            )),
            Error::Build(BuildError::Serialize {
                what: "x",
                source: serde,
            }),
            Error::Apply {
                count: 1,
                first: "x".into(),
            },
        ];
        for e in &errors {
            // A new variant must be added to `errors` (the match) and to ERROR_KINDS.
            match e {
                Error::Kube(_) | Error::Build(_) | Error::Apply { .. } => {}
            }
            assert!(
                crate::metrics::ERROR_KINDS.contains(&e.metric_label()),
                "{}",
                e.metric_label()
            );
        }
    }

    /// A cluster being deleted gets no children re-created: the reconcile returns before
    /// any request (this client reaches nothing, so any request would fail it).
    #[tokio::test]
    async fn a_cluster_being_deleted_is_left_to_the_garbage_collector() {
        let url: http::Uri = "http://127.0.0.1:1".parse().unwrap();
        crate::install_crypto_provider();
        let client = Client::try_from(kube::Config::new(url)).unwrap();
        let ctx = Context::new(client, Metrics::default(), None);
        let mut rc = mk_cluster();
        rc.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let action = reconcile(Arc::new(rc), ctx).await.expect("no request made");
        assert_eq!(action, Action::await_change());
    }
}
