//! The notification worker Deployment (`switchboard worker`): same image, configuration
//! and secrets as the socket nodes.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use switchboard_crds::cluster::{NotificationsSpec, RealtimeCluster};

use super::config::Role;
use super::meta::Names;
use super::socket::{PodInputs, pod_template};

pub const COMPONENT: &str = "worker";

pub fn deployment(
    rc: &RealtimeCluster,
    n: &NotificationsSpec,
    names: &Names,
    inputs: &PodInputs<'_>,
) -> Deployment {
    Deployment {
        metadata: names.meta(names.worker(), COMPONENT),
        spec: DeploymentSpec {
            replicas: Some(n.workers.replicas),
            selector: names.selector(COMPONENT),
            template: pod_template(
                rc,
                names,
                COMPONENT,
                Role::Worker,
                n.workers.resources.as_ref(),
                inputs,
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn workers_run_the_worker_command_with_the_same_config_hash() {
        let rc = mk_full_cluster();
        let names = Names::of(&rc).unwrap();
        let secrets = Default::default();
        let inputs = PodInputs {
            config_hash: "h1",
            turn_rotated_at: Some("2026-01-01T00:00:00Z"),
            secrets: &secrets,
        };
        let n = rc.spec.notifications.as_ref().unwrap();
        let d = deployment(&rc, n, &names, &inputs).spec;
        assert_eq!(d.replicas, Some(1));
        let t = d.template;
        let ann = t.metadata.unwrap().annotations.unwrap();
        assert_eq!(ann[crate::children::meta::CONFIG_HASH_ANNOTATION], "h1");
        let c = &t.spec.unwrap().containers[0];
        assert_eq!(c.args.as_deref(), Some(&["worker".to_string()][..]));
        // The worker serves /healthz and /readyz on `listen` (port 3000, named http).
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"SWITCHBOARD_APNS_KEY_FILE"), "{env:?}");
        assert!(!env.contains(&"SWITCHBOARD_MONGODB_URI"), "{env:?}");
        assert!(!env.contains(&"SWITCHBOARD_JWT_SECRET"), "{env:?}");
        assert_eq!(
            d.selector.match_labels.unwrap()["app.kubernetes.io/component"],
            "worker"
        );
    }
}
