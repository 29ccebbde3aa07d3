//! The status the operator reports, decided from what it observed (no I/O): per-component
//! readiness read from the children's status, then phase and conditions.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use switchboard_crds::cluster::{ComponentStatus, RealtimeClusterStatus, TurnStatus};

/// Replica counts of a workload, read from its live object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// Pods of every revision (old ones linger while a rollout finishes).
    pub total: i32,
    /// The workload's controller has seen its latest spec.
    pub current: bool,
}

impl Workload {
    pub fn of_deployment(d: &Deployment) -> Self {
        let s = d.status.clone().unwrap_or_default();
        Self::counted(
            d.spec.replicas,
            [s.ready_replicas, s.updated_replicas, s.replicas],
            s.observed_generation >= d.metadata.generation,
        )
    }

    pub fn of_stateful_set(d: &StatefulSet) -> Self {
        let s = d.status.clone().unwrap_or_default();
        Self::counted(
            d.spec.replicas,
            [s.ready_replicas, s.updated_replicas, Some(s.replicas)],
            s.observed_generation >= d.metadata.generation,
        )
    }

    /// From `spec.replicas` and the status's [ready, updated, total] counts.
    fn counted(
        spec: Option<i32>,
        [ready, updated, total]: [Option<i32>; 3],
        current: bool,
    ) -> Self {
        Self {
            desired: spec.unwrap_or(1),
            ready: ready.unwrap_or(0),
            updated: updated.unwrap_or(0),
            total: total.unwrap_or(0),
            current,
        }
    }

    fn ready(&self) -> bool {
        self.current
            && self.ready == self.desired
            && self.updated == self.desired
            && self.total == self.desired
    }

    fn component(&self, prefix: &str) -> ComponentStatus {
        ComponentStatus {
            replicas: self.desired,
            ready_replicas: self.ready,
            ready: self.ready(),
            summary: format!("{prefix}{}/{}", self.ready, self.desired),
        }
    }
}

/// A component the spec asks for: its workload once it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The spec does not ask for it.
    NotWanted,
    /// Asked for, not created yet (or just deleted).
    Missing,
    Present(Workload),
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub generation: Option<i64>,
    pub socket: Option<Workload>,
    /// `None` for an external Redis.
    pub redis: Option<Observation>,
    pub workers: Option<Observation>,
    pub coturn: Option<Observation>,
    pub turn: Option<TurnStatus>,
    pub endpoint: String,
    pub config_hash: String,
    /// Problems the user must fix (missing Secrets, contradictory settings), each naming
    /// the field.
    pub spec_problems: Vec<String>,
    /// Children the API server refused, with its message.
    pub apply_errors: Vec<String>,
    /// Children the operator left alone because an object of that name exists and this
    /// cluster does not control it (`Kind/name`).
    pub name_conflicts: Vec<String>,
}

fn observed(o: Option<Observation>, prefix: &str) -> Option<ComponentStatus> {
    match o? {
        Observation::NotWanted => None,
        Observation::Missing => Some(ComponentStatus {
            summary: format!("{prefix}missing"),
            ..Default::default()
        }),
        Observation::Present(w) => Some(w.component(prefix)),
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// The status for `facts`. Conditions keep their `lastTransitionTime` from `previous`
/// while their status is unchanged, so an unchanged cluster yields an identical status
/// (and no write).
pub fn decide(
    facts: &Facts,
    previous: Option<&RealtimeClusterStatus>,
    now: Timestamp,
) -> RealtimeClusterStatus {
    let socket = facts
        .socket
        .map(|w| w.component(""))
        .unwrap_or_else(|| ComponentStatus {
            summary: "missing".into(),
            ..Default::default()
        });
    let redis = match facts.redis {
        None => ComponentStatus {
            ready: true,
            summary: "external".into(),
            ..Default::default()
        },
        Some(o) => observed(Some(o), "managed ").unwrap_or_default(),
    };
    let workers = observed(facts.workers, "");
    let coturn = observed(facts.coturn, "");

    let mut not_ready = Vec::new();
    for (name, c) in [
        ("socket", Some(&socket)),
        ("redis", Some(&redis)),
        ("workers", workers.as_ref()),
        ("coturn", coturn.as_ref()),
    ] {
        if let Some(c) = c
            && !c.ready
        {
            not_ready.push(format!("{name} {}", c.summary));
        }
    }
    let conflicts = facts.name_conflicts.iter().map(|c| {
        format!("{c} exists and is not controlled by this RealtimeCluster; rename or delete it")
    });
    let problems: Vec<_> = facts
        .spec_problems
        .iter()
        .cloned()
        .chain(conflicts)
        .chain(facts.apply_errors.iter().cloned())
        .collect();
    let degraded = !problems.is_empty();
    let ready = not_ready.is_empty() && !degraded;
    let degraded_reason = if !facts.spec_problems.is_empty() {
        "InvalidSpec"
    } else if !facts.name_conflicts.is_empty() {
        "NameConflict"
    } else if !facts.apply_errors.is_empty() {
        "ApplyFailed"
    } else {
        "AsExpected"
    };
    let mut conditions = vec![
        condition(
            "Ready",
            ready,
            if ready {
                "AllComponentsReady"
            } else if degraded {
                degraded_reason
            } else {
                "ComponentsNotReady"
            },
            if ready {
                "every component is ready".into()
            } else if degraded {
                problems.join("; ")
            } else {
                format!("not ready: {}", not_ready.join(", "))
            },
        ),
        condition(
            "Progressing",
            !ready && !degraded,
            if !ready && !degraded {
                "RollingOut"
            } else {
                "Stable"
            },
            if !ready && !degraded {
                format!("waiting for {}", not_ready.join(", "))
            } else {
                String::new()
            },
        ),
        condition("Degraded", degraded, degraded_reason, problems.join("; ")),
    ];
    for c in &mut conditions {
        c.observed_generation = facts.generation;
        let kept = previous
            .and_then(|p| p.conditions.iter().find(|p| p.type_ == c.type_))
            .filter(|p| p.status == c.status)
            .map(|p| p.last_transition_time.clone());
        c.last_transition_time = kept.unwrap_or(Time(now));
    }
    let phase = if degraded {
        "Degraded"
    } else if ready {
        "Ready"
    } else if facts.socket.is_none() {
        "Pending"
    } else {
        "Progressing"
    };
    RealtimeClusterStatus {
        observed_generation: facts.generation,
        phase: Some(phase.into()),
        conditions,
        socket: Some(socket),
        redis: Some(redis),
        workers,
        coturn,
        turn: facts.turn.clone(),
        endpoint: Some(facts.endpoint.clone()),
        config_hash: Some(facts.config_hash.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(desired: i32, ready: i32) -> Workload {
        Workload {
            desired,
            ready,
            updated: desired,
            total: desired,
            current: true,
        }
    }

    fn mk_facts() -> Facts {
        Facts {
            generation: Some(3),
            socket: Some(w(2, 2)),
            redis: Some(Observation::Present(w(1, 1))),
            workers: Some(Observation::NotWanted),
            coturn: None,
            endpoint: "http://x".into(),
            config_hash: "h".into(),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a RealtimeClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn all_ready_is_ready() {
        let s = decide(&mk_facts(), None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(s.socket.unwrap().summary, "2/2");
        assert_eq!(s.redis.unwrap().summary, "managed 1/1");
        assert_eq!(s.observed_generation, Some(3));
        assert!(s.workers.is_none());
    }

    #[test]
    fn a_node_not_ready_is_progressing_and_says_which() {
        let mut f = mk_facts();
        f.socket = Some(w(2, 1));
        let s = decide(&f, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
        assert_eq!(cond(&s, "Ready").reason, "ComponentsNotReady");
        assert!(cond(&s, "Ready").message.contains("socket 1/2"));
        assert_eq!(cond(&s, "Progressing").status, "True");
    }

    #[test]
    fn a_rollout_with_old_pods_left_is_not_ready() {
        let mut f = mk_facts();
        f.socket = Some(Workload {
            desired: 3,
            ready: 4,
            updated: 3,
            total: 4,
            current: true,
        });
        let s = decide(&f, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
    }

    #[test]
    fn missing_secret_is_degraded_naming_the_field() {
        let mut f = mk_facts();
        f.spec_problems = vec!["spec.auth.jwt.secretRef: Secret \"jwt\" not found".into()];
        let s = decide(&f, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, "Degraded").reason, "InvalidSpec");
        assert!(
            cond(&s, "Ready")
                .message
                .contains("spec.auth.jwt.secretRef")
        );
    }

    #[test]
    fn a_foreign_object_of_a_childs_name_is_a_name_conflict() {
        let mut f = mk_facts();
        f.name_conflicts = vec!["Service/chat-socket".into()];
        let s = decide(&f, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, "Degraded").reason, "NameConflict");
        assert!(
            cond(&s, "Degraded")
                .message
                .contains("Service/chat-socket exists and is not controlled"),
            "{:?}",
            cond(&s, "Degraded")
        );
    }

    #[test]
    fn unchanged_facts_give_an_identical_status() {
        let first = decide(&mk_facts(), None, Timestamp::UNIX_EPOCH);
        let later: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(decide(&mk_facts(), Some(&first), later), first);
        // A status flip takes the new time.
        let mut f = mk_facts();
        f.socket = Some(w(2, 0));
        let flipped = decide(&f, Some(&first), later);
        assert_eq!(cond(&flipped, "Ready").last_transition_time, Time(later));
    }

    #[test]
    fn external_redis_counts_as_ready() {
        let mut f = mk_facts();
        f.redis = None;
        let s = decide(&f, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.redis.unwrap().summary, "external");
        assert_eq!(s.phase.as_deref(), Some("Ready"));
    }
}
