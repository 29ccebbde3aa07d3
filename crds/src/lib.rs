//! Switchboard API types, shared by the operator and the data plane.
//!
//! ```text
//!   RealtimeCluster (CRD) ──operator renders──▶ DataplaneConfig (YAML in a ConfigMap)
//!                                                     │
//!                                   switchboard serve ◀┘ (+ SWITCHBOARD_* env, flags)
//! ```
//!
//! * [`cluster`] — the `RealtimeCluster` custom resource and its status.
//! * [`config`] — the data plane's configuration file, its defaults and its validation.
//! * [`duration`] — the `30s` / `5m` / `24h` duration format used by every duration key.
//! * [`origin`] — web origins as browsers send them (`server.cors_allowed_origins`).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod duration;
pub mod origin;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

/// Longest RealtimeCluster name: the longest child name, `<name>-socket-headless`
/// (or `<name>-redis-headless`), must stay a 63-character DNS label.
pub const MAX_NAME_LEN: usize = 40;

/// The `RealtimeCluster` CustomResourceDefinition, with the root rule on `metadata.name`
/// (the derive only reaches `spec` and `status`).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = cluster::RealtimeCluster::crd();
    for v in &mut crd.spec.versions {
        if let Some(root) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            root.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: format!(
                    "size(self.metadata.name) <= {MAX_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                message: Some(format!(
                    "metadata.name: must be a DNS label (lowercase letters, digits, '-') of at most {MAX_NAME_LEN} characters, so that child names such as <name>-socket-headless fit in 63"
                )),
                ..Default::default()
            }]);
        }
    }
    crd
}

/// Header of the generated CRD files.
const CRD_HEADER: &str =
    "# Generated from crds/src/cluster.rs by `switchboard-operator crd`; do not edit.\n";

/// The `RealtimeCluster` CustomResourceDefinition as YAML, exactly as committed in
/// `crds/realtimeclusters.yaml` and `charts/switchboard/crds/realtimeclusters.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd =
        serde_json::to_value(crd()).map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    Ok(format!(
        "{CRD_HEADER}{}",
        serde_yaml::to_string(&sorted(crd))?
    ))
}

/// The same document with every object's keys sorted. Whether serde_json keeps insertion
/// order depends on which crates a build links (its `preserve_order` feature), so the
/// committed file could otherwise differ between builds.
fn sorted(v: serde_json::Value) -> serde_yaml::Value {
    use serde_json::Value as J;
    use serde_yaml::Value as Y;
    match v {
        J::Null => Y::Null,
        J::Bool(b) => Y::Bool(b),
        J::Number(n) => serde_yaml::to_value(n).unwrap_or(Y::Null),
        J::String(s) => Y::String(s),
        J::Array(a) => Y::Sequence(a.into_iter().map(sorted).collect()),
        J::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Y::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (Y::String(k), sorted(v)))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed CRD files match the Rust types. To refresh them:
    /// `cargo run -p switchboard-operator -- crd > crds/realtimeclusters.yaml` and copy
    /// it to `charts/switchboard/crds/`.
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let generated = crd_yaml().expect("serialize");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for path in [
            root.join("realtimeclusters.yaml"),
            root.join("../charts/switchboard/crds/realtimeclusters.yaml"),
        ] {
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == generated,
                "{} drifted from crds/src/cluster.rs; regenerate it with \
                 `cargo run -p switchboard-operator -- crd`",
                path.display()
            );
        }
    }
}
