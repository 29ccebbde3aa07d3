//! Who is connecting: JWT verification, the identity a socket carries, and revocation.
//!
//! ```text
//!  handshake auth.token / Authorization: Bearer ──▶ Verifier::verify ──▶ Identity
//!                                                      │ (claims, alg, iss/aud, exp/nbf)
//!                                  Revocations::check ◀┘ (jti, sid, user-before-time)
//! ```

pub mod lifetime;
pub mod revocation;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use switchboard_crds::config::JwtConfig;

use crate::ids;

/// Why a connection was refused. The Display form is the `connect_error` message and
/// starts with the protocol's code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("token_expired: the token's exp is in the past")]
    Expired,
    #[error("token_revoked: {0}")]
    Revoked(&'static str),
    #[error("tenant_required: the token has no tenant claim")]
    TenantRequired,
    /// The user holds `limits.max_connections_per_user` connections already.
    #[error("too_many_connections: this user holds {0} connections already, the most allowed")]
    TooManyConnections(usize),
    /// The token could not be checked (storage down): refused, never waved through.
    #[error("unauthorized: the server cannot check tokens right now, retry later")]
    Unavailable,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Unauthorized(_) | AuthError::Unavailable => "unauthorized",
            AuthError::Expired => "token_expired",
            AuthError::Revoked(_) => "token_revoked",
            AuthError::TenantRequired => "tenant_required",
            AuthError::TooManyConnections(_) => "too_many_connections",
        }
    }
}

/// The claims Switchboard reads. `sub`, `tenant` and `exp` are required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The `scope` claim of a tenant-scoped service token: it acts on the service API
/// (`/api/v1/*`) in its `tenant` only, and never connects as a user.
pub const SERVICE_SCOPE: &str = "service";

/// A token's claims with its `scope` (OAuth access tokens often carry one, as a string or
/// a list; only the exact string [`SERVICE_SCOPE`] means anything here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScopedClaims {
    #[serde(flatten)]
    pub claims: Claims,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub scope: serde_json::Value,
}

impl ScopedClaims {
    /// Claims of a service token for `claims.tenant`.
    pub fn service(claims: Claims) -> Self {
        Self {
            claims,
            scope: SERVICE_SCOPE.into(),
        }
    }

    fn is_service(&self) -> bool {
        self.scope.as_str() == Some(SERVICE_SCOPE)
    }
}

/// What a connected socket is: fixed at the handshake, stored in the socket's extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub tenant: String,
    pub user_id: String,
    /// Display name for typing texts; the user id when the token has none.
    pub name: String,
    pub jti: Option<String>,
    pub sid: Option<String>,
    /// Issued-at, used by "revoke every token of this user issued before T".
    pub iat: Option<u64>,
    pub exp: u64,
}

// === impl Identity ===

impl Identity {
    /// May a connection of this identity go on with `new` (a verified, refreshed token)?
    /// Only for the same tenant and user, and the same login session when this one has
    /// one.
    pub fn check_refresh(&self, new: &Identity) -> Result<(), AuthError> {
        if new.tenant != self.tenant {
            return Err(AuthError::Unauthorized(
                "the new token is for another tenant".into(),
            ));
        }
        if new.user_id != self.user_id {
            return Err(AuthError::Unauthorized(
                "the new token is for another user".into(),
            ));
        }
        if self.sid.is_some() && new.sid != self.sid {
            return Err(AuthError::Unauthorized(
                "the new token is for another login session".into(),
            ));
        }
        Ok(())
    }
}

/// Checks tokens against the one configured algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

/// The key and algorithm used to sign tokens (`switchboard token`, tests).
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
}

/// A configured algorithm name to the library's enum (only the allowed set).
pub fn algorithm(name: &str) -> Result<Algorithm, String> {
    Ok(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(format!("jwt.algorithm: {other:?} is not allowed")),
    })
}

// === impl Verifier ===

impl Verifier {
    /// Build from a validated config. The key type follows the algorithm, so an RSA
    /// public key can never be used as an HMAC secret (no HS/RS confusion).
    pub fn new(cfg: &JwtConfig) -> Result<Self, String> {
        let alg = algorithm(&cfg.algorithm)?;
        let key = match (alg, &cfg.secret, &cfg.public_key_file) {
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, Some(secret), None) => {
                DecodingKey::from_secret(secret.as_bytes())
            }
            (Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA, None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("jwt.public_key_file: cannot read {path:?}: {e}"))?;
                let parsed = match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                };
                parsed.map_err(|e| {
                    format!(
                        "jwt.public_key_file: {path:?} is not a {} public key in PEM: {e}",
                        cfg.algorithm
                    )
                })?
            }
            _ => {
                return Err(
                    "jwt: set jwt.secret for HS* or jwt.public_key_file for RS256/ES256/EdDSA"
                        .into(),
                );
            }
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = cfg.leeway.0.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &cfg.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        match &cfg.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        Ok(Self {
            key: Arc::new(key),
            validation: Arc::new(v),
        })
    }

    /// Verify a user's token and turn it into an identity. Revocation is checked
    /// separately. A service token is refused: it never connects as a user.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let (id, service) = self.decode(token)?;
        if service {
            return Err(AuthError::Unauthorized(
                "a service token (scope \"service\") cannot be used as a user's token".into(),
            ));
        }
        Ok(id)
    }

    /// Verify a tenant-scoped service token (`scope: "service"`, `tenant`, `sub` naming
    /// the service, `exp`): checked like a user's token (key, algorithm, iss/aud, exp),
    /// revocable by its `jti` or `sub` like one. Its identity's tenant is the only one it
    /// may act in.
    pub fn verify_service(&self, token: &str) -> Result<Identity, AuthError> {
        let (id, service) = self.decode(token)?;
        if !service {
            return Err(AuthError::Unauthorized(
                "not a service token: its scope claim must be \"service\"".into(),
            ));
        }
        Ok(id)
    }

    /// Check a token and read its identity, and whether it is a service token.
    fn decode(&self, token: &str) -> Result<(Identity, bool), AuthError> {
        let data = jsonwebtoken::decode::<ScopedClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => {
                    AuthError::Unauthorized("token not valid yet (nbf)".into())
                }
                ErrorKind::InvalidIssuer => AuthError::Unauthorized("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Unauthorized("wrong audience".into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Unauthorized("algorithm not accepted".into())
                }
                ErrorKind::InvalidSignature => AuthError::Unauthorized("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Unauthorized(format!("missing claim {c}"))
                }
                _ => AuthError::Unauthorized("malformed token".into()),
            })?;
        let service = data.claims.is_service();
        let c = data.claims.claims;
        let tenant = c
            .tenant
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::TenantRequired)?;
        if !ids::valid_tenant(&tenant) {
            return Err(AuthError::Unauthorized(
                "tenant claim has characters outside A-Z a-z 0-9 - _ .".into(),
            ));
        }
        if !ids::valid_id(&c.sub) {
            return Err(AuthError::Unauthorized(
                "sub claim has characters outside A-Z a-z 0-9 - _ . @ +".into(),
            ));
        }
        // A jti or sid that revocation could not name must not get in: refused, never
        // dropped (a dropped jti would make the token impossible to revoke by its id).
        let jti = revocable_id("jti", c.jti)?;
        let sid = revocable_id("sid", c.sid)?;
        let name = c
            .name
            .map(|n| {
                n.chars()
                    .filter(|ch| !ch.is_control())
                    .take(64)
                    .collect::<String>()
            })
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| c.sub.clone());
        let id = Identity {
            tenant,
            user_id: c.sub,
            name,
            jti,
            sid,
            iat: c.iat,
            exp: c.exp,
        };
        Ok((id, service))
    }
}

/// Longest `jti` or `sid` accepted, in bytes: the admin API revokes ids up to this long.
pub const MAX_REVOCABLE_ID_BYTES: usize = 128;

/// A `jti` or `sid` claim as revocation can name it: 1 to [`MAX_REVOCABLE_ID_BYTES`]
/// bytes without control characters (they end up in Redis keys and room names).
fn revocable_id(claim: &str, v: Option<String>) -> Result<Option<String>, AuthError> {
    match v {
        None => Ok(None),
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_REVOCABLE_ID_BYTES
                && !v.chars().any(char::is_control) =>
        {
            Ok(Some(v))
        }
        Some(v) => Err(AuthError::Unauthorized(format!(
            "{claim} claim must be 1 to {MAX_REVOCABLE_ID_BYTES} bytes without control \
             characters (it has {} bytes)",
            v.len()
        ))),
    }
}

// === impl Signer ===

impl Signer {
    /// An HMAC signer for the configured secret (the dev secret in embedded mode).
    pub fn hmac(cfg: &JwtConfig) -> Result<Self, String> {
        let alg = algorithm(&cfg.algorithm)?;
        let secret = cfg.secret.as_ref().ok_or(
            "jwt.secret: tokens can be issued only with an HMAC secret (SWITCHBOARD_JWT_SECRET)",
        )?;
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(
                "jwt.algorithm: tokens can be issued only for HS256, HS384 or HS512".into(),
            );
        }
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            alg,
        })
    }

    pub fn sign(&self, claims: &impl Serialize) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).map_err(|e| e.to_string())
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cfg() -> JwtConfig {
        JwtConfig {
            secret: Some("s".repeat(32)),
            ..JwtConfig::default()
        }
    }

    fn mk_claims() -> Claims {
        Claims {
            sub: "alice".into(),
            tenant: Some("acme".into()),
            exp: now_secs() + 600,
            iat: Some(now_secs()),
            nbf: None,
            name: Some("Alice".into()),
            jti: Some("j1".into()),
            sid: Some("s1".into()),
            iss: None,
            aud: None,
        }
    }

    fn verify(cfg: &JwtConfig, claims: &Claims) -> Result<Identity, AuthError> {
        let token = Signer::hmac(cfg).unwrap().sign(claims).unwrap();
        Verifier::new(cfg).unwrap().verify(&token)
    }

    #[test]
    fn a_good_token_gives_its_identity() {
        let id = verify(&mk_cfg(), &mk_claims()).unwrap();
        assert_eq!(
            (id.tenant.as_str(), id.user_id.as_str(), id.name.as_str()),
            ("acme", "alice", "Alice")
        );
        assert_eq!(id.sid.as_deref(), Some("s1"));
    }

    #[test]
    fn each_refusal_has_its_code() {
        let cfg = mk_cfg();
        let mut c = mk_claims();
        c.exp = now_secs() - 3600;
        assert_eq!(verify(&cfg, &c).unwrap_err(), AuthError::Expired);
        let mut c = mk_claims();
        c.tenant = None;
        assert_eq!(verify(&cfg, &c).unwrap_err(), AuthError::TenantRequired);
        let mut c = mk_claims();
        c.nbf = Some(now_secs() + 3600);
        assert_eq!(verify(&cfg, &c).unwrap_err().code(), "unauthorized");
        let mut c = mk_claims();
        c.sub = "a:b".into();
        assert_eq!(verify(&cfg, &c).unwrap_err().code(), "unauthorized");
    }

    #[test]
    fn a_refresh_keeps_the_tenant_user_and_session() {
        let cfg = mk_cfg();
        let old = verify(&cfg, &mk_claims()).unwrap();
        let mut c = mk_claims();
        c.jti = Some("j2".into());
        c.exp += 600;
        old.check_refresh(&verify(&cfg, &c).unwrap()).unwrap();
        for change in [
            |c: &mut Claims| c.tenant = Some("globex".into()),
            |c: &mut Claims| c.sub = "mallory".into(),
            |c: &mut Claims| c.sid = Some("s2".into()),
            |c: &mut Claims| c.sid = None,
        ] {
            let mut c = mk_claims();
            change(&mut c);
            let e = old.check_refresh(&verify(&cfg, &c).unwrap()).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{c:?}");
        }
        // A connection without a session may go on with one.
        let mut c = mk_claims();
        c.sid = None;
        let no_session = verify(&cfg, &c).unwrap();
        no_session
            .check_refresh(&verify(&cfg, &mk_claims()).unwrap())
            .unwrap();
    }

    #[test]
    fn a_jti_or_sid_revocation_cannot_name_is_refused_not_dropped() {
        let cfg = mk_cfg();
        for (jti, sid) in [
            (Some("j".repeat(129)), Some("s1".to_owned())),
            (Some("j1".to_owned()), Some("s".repeat(129))),
            (Some(String::new()), None),
            (Some("a\nb".to_owned()), None),
        ] {
            let mut c = mk_claims();
            c.jti = jti;
            c.sid = sid;
            let e = verify(&cfg, &c).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{c:?}");
        }
        let mut c = mk_claims();
        c.jti = Some("j".repeat(128));
        c.sid = None;
        let id = verify(&cfg, &c).unwrap();
        assert_eq!(id.jti.as_deref().map(str::len), Some(128));
        assert_eq!(id.sid, None);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut cfg = mk_cfg();
        cfg.issuer = Some("https://id.example".into());
        cfg.audience = Some("switchboard".into());
        let mut c = mk_claims();
        assert!(
            verify(&cfg, &c)
                .unwrap_err()
                .to_string()
                .starts_with("unauthorized")
        );
        c.iss = Some("https://id.example".into());
        c.aud = Some("switchboard".into());
        verify(&cfg, &c).unwrap();
        c.aud = Some("other".into());
        assert!(
            verify(&cfg, &c)
                .unwrap_err()
                .to_string()
                .contains("audience")
        );
    }

    #[test]
    fn another_secret_or_algorithm_is_refused() {
        let token = Signer::hmac(&mk_cfg()).unwrap().sign(&mk_claims()).unwrap();
        let other = JwtConfig {
            secret: Some("t".repeat(32)),
            ..JwtConfig::default()
        };
        assert!(
            Verifier::new(&other)
                .unwrap()
                .verify(&token)
                .unwrap_err()
                .to_string()
                .contains("bad signature")
        );
        let hs512 = JwtConfig {
            algorithm: "HS512".into(),
            ..mk_cfg()
        };
        assert!(
            Verifier::new(&hs512)
                .unwrap()
                .verify(&token)
                .unwrap_err()
                .to_string()
                .contains("algorithm")
        );
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(serde_json::to_vec(&mk_claims()).unwrap());
        let token = format!("{header}.{body}.");
        assert_eq!(
            Verifier::new(&mk_cfg())
                .unwrap()
                .verify(&token)
                .unwrap_err()
                .code(),
            "unauthorized"
        );
    }

    #[test]
    fn a_service_token_is_only_a_service_token() {
        let cfg = mk_cfg();
        let signer = Signer::hmac(&cfg).unwrap();
        let v = Verifier::new(&cfg).unwrap();
        let service = signer.sign(&ScopedClaims::service(mk_claims())).unwrap();
        let id = v.verify_service(&service).unwrap();
        assert_eq!((id.tenant.as_str(), id.user_id.as_str()), ("acme", "alice"));
        assert_eq!(v.verify(&service).unwrap_err().code(), "unauthorized");
        // A user's token is not a service token, whatever other scope it carries.
        let user = signer.sign(&mk_claims()).unwrap();
        assert_eq!(v.verify_service(&user).unwrap_err().code(), "unauthorized");
        for scope in [
            serde_json::json!("openid profile"),
            serde_json::json!(["service"]),
        ] {
            let t = signer
                .sign(&ScopedClaims {
                    claims: mk_claims(),
                    scope,
                })
                .unwrap();
            v.verify(&t).unwrap();
            assert_eq!(v.verify_service(&t).unwrap_err().code(), "unauthorized");
        }
        // Checked like any token: expiry, tenant.
        let mut c = mk_claims();
        c.exp = now_secs() - 3600;
        let expired = signer.sign(&ScopedClaims::service(c)).unwrap();
        assert_eq!(v.verify_service(&expired).unwrap_err(), AuthError::Expired);
        let mut c = mk_claims();
        c.tenant = None;
        let no_tenant = signer.sign(&ScopedClaims::service(c)).unwrap();
        assert_eq!(
            v.verify_service(&no_tenant).unwrap_err(),
            AuthError::TenantRequired
        );
    }
}
