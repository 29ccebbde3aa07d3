//! Server-side apply of desired children, skipped when the live object already holds
//! every field the operator sets (so a reconcile with nothing changed writes nothing).

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::children::Desired;
use crate::children::meta::FIELD_MANAGER;

/// True when every field in `desired` is present in `live` with the same value. Lists
/// must have the same length and match element by element; fields the API server adds
/// (defaults, status, metadata it manages) are ignored.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        // The API server stores quantities in canonical form (`1024Mi` comes back `1Gi`).
        (Value::String(l), Value::String(d)) => {
            l == d
                || quantity(l)
                    .zip(quantity(d))
                    .is_some_and(|(l, d)| same(l, d))
        }
        _ => live == desired,
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()) * 4.0
}

/// The value of a Kubernetes quantity (`500m`, `1Gi`, `2e3`), or `None` if `s` is not one.
fn quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e => 10f64.powi(e.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(n * factor)
}

/// What applying one child did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
    /// An object of that name exists and this cluster does not control it: left alone
    /// (a forced apply would take it over, and the garbage collector would later delete it
    /// with the cluster).
    NameConflict,
}

/// True when `live` is controlled by the owner with `owner_uid`.
pub fn controlled_by(live: &kube::api::ObjectMeta, owner_uid: &str) -> bool {
    live.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid && o.controller == Some(true))
}

fn api(client: &Client, ns: &str, d: &Desired) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &d.resource)
}

/// Apply `d` unless the live object already matches it, or belongs to someone else.
pub async fn apply(
    client: &Client,
    ns: &str,
    d: &Desired,
    owner_uid: &str,
) -> Result<Applied, kube::Error> {
    let api = api(client, ns, d);
    let live = api.get_opt(&d.name).await?;
    if let Some(live) = &live {
        if !controlled_by(&live.metadata, owner_uid) {
            return Ok(Applied::NameConflict);
        }
        let value = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
        if contains(&value, &d.object) {
            return Ok(Applied::Unchanged);
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api
        .patch(&d.name, &params, &Patch::Apply(&d.object))
        .await?;
    Ok(match &live {
        None => Applied::Created,
        // Another manager's list items (an extra env var, a sidecar) make `contains` see a
        // difference that the apply does not change: not an update.
        Some(l) if !changed(&l.metadata, &after.metadata) => Applied::Unchanged,
        Some(_) => Applied::Updated,
    })
}

/// Whether an apply changed the object. Kinds with a `generation` change it on every spec
/// change, and status writes by their controllers do not, so those compare it (plus
/// labels and annotations); others compare the resourceVersion.
pub fn changed(before: &kube::api::ObjectMeta, after: &kube::api::ObjectMeta) -> bool {
    match (before.generation, after.generation) {
        (Some(b), Some(a)) => {
            b != a || before.labels != after.labels || before.annotations != after.annotations
        }
        _ => before.resource_version != after.resource_version,
    }
}

/// Delete `name` of kind `resource` if it exists and `owner_uid` controls it (never
/// touches what someone else made under the same name).
pub async fn delete_owned(
    client: &Client,
    ns: &str,
    resource: &kube::core::ApiResource,
    name: &str,
    owner_uid: &str,
) -> Result<bool, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    let live = match api.get_opt(name).await {
        Ok(live) => live,
        // A kind whose API is not installed (no ServiceMonitor CRD) answers a bare 404.
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e),
    };
    let Some(live) = live else {
        return Ok(false);
    };
    if !controlled_by(&live.metadata, owner_uid) {
        return Ok(false);
    }
    api.delete(name, &DeleteParams::background()).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_live_fields_are_fine_changed_or_missing_ones_are_not() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}],
                                    "revisionHistoryLimit": 10}, "status": {}});
        assert!(contains(&live, &desired));
        let changed = json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}});
        assert!(!contains(&changed, &desired));
        let fewer = json!({"spec": {"replicas": 2, "ports": []}});
        assert!(!contains(&fewer, &desired));
        assert!(!contains(&json!({}), &desired));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(contains(&json!({"cpu": "500m"}), &json!({"cpu": "0.5"})));
        assert!(contains(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1024Mi"})
        ));
        assert!(contains(&json!({"n": "2k"}), &json!({"n": "2e3"})));
        assert!(!contains(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1G"})
        ));
        assert!(!contains(
            &json!({"image": "redis:7"}),
            &json!({"image": "redis:7.4"})
        ));
    }

    #[test]
    fn a_status_write_in_between_is_not_an_update() {
        let meta = |generation: Option<i64>, rv: &str| kube::api::ObjectMeta {
            generation,
            resource_version: Some(rv.into()),
            ..Default::default()
        };
        // A Deployment whose controller wrote its status meanwhile: same generation.
        assert!(!changed(&meta(Some(3), "10"), &meta(Some(3), "11")));
        assert!(changed(&meta(Some(3), "10"), &meta(Some(4), "12")));
        // A ConfigMap has no generation: the resourceVersion tells.
        assert!(!changed(&meta(None, "10"), &meta(None, "10")));
        assert!(changed(&meta(None, "10"), &meta(None, "11")));
    }

    #[test]
    fn only_the_controlling_owner_counts() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |uid: &str, controller| OwnerReference {
            uid: uid.into(),
            controller: Some(controller),
            ..Default::default()
        };
        let meta = |refs| kube::api::ObjectMeta {
            owner_references: Some(refs),
            ..Default::default()
        };
        assert!(controlled_by(&meta(vec![owner("u1", true)]), "u1"));
        assert!(!controlled_by(&meta(vec![owner("u1", false)]), "u1"));
        assert!(!controlled_by(&meta(vec![owner("u2", true)]), "u1"));
        assert!(!controlled_by(&kube::api::ObjectMeta::default(), "u1"));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }
}
