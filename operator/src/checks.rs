//! Problems the CRD schema cannot see, found from the spec and the Secrets it names
//! (no I/O): each message names the field to fix. They put the cluster in `Degraded`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use switchboard_crds::cluster::RealtimeCluster;
use switchboard_crds::config::DataplaneConfig;

use crate::children::config::referenced_secrets;

/// Smallest HMAC secret the data plane accepts (see `jwt.secret` in the config).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `secrets` maps every Secret name the spec references to what the API server returned.
pub fn spec_problems(
    rc: &RealtimeCluster,
    config: &DataplaneConfig,
    secrets: &BTreeMap<String, Option<Secret>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (field, r) in referenced_secrets(rc) {
        let Some(Some(secret)) = secrets.get(&r.name) else {
            out.push(format!("{field}: Secret {:?} not found", r.name));
            continue;
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|v| v.0.len())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(String::len)
            });
        match value {
            None => out.push(format!(
                "{field}: Secret {:?} has no key {:?}",
                r.name, r.key
            )),
            Some(len) if field == "spec.auth.jwt.secretRef" && len < MIN_JWT_SECRET_BYTES => {
                out.push(format!(
                    "{field}: key {:?} of Secret {:?} holds {len} bytes; an HMAC secret needs at least {MIN_JWT_SECRET_BYTES}",
                    r.key, r.name
                ))
            }
            Some(_) => {}
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
    if let Err(errors) = config.validate() {
        out.extend(
            errors
                .0
                .iter()
                .map(|e| format!("rendered data plane configuration: {e}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::config::dataplane_config;
    use crate::children::fixtures::*;
    use crate::children::meta::Names;
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
        let cfg = dataplane_config(rc, &Names::of(rc).unwrap());
        let map = secrets
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect();
        spec_problems(rc, &cfg, &map)
    }

    #[test]
    fn a_good_secret_is_no_problem() {
        let rc = mk_cluster();
        assert!(problems(&rc, &[("jwt", secret("secret", &"k".repeat(32)))]).is_empty());
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
        assert!(p[0].contains("holds 5 bytes"), "{p:?}");
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
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("spec.turn.rotationInterval: 1h"), "{p:?}");
    }
}
