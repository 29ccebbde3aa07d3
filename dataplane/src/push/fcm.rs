//! FCM HTTP v1: `POST {base}/v1/projects/{project}/messages:send` with an OAuth2 access
//! token from a service-account JSON (through `gcp_auth`, which signs the JWT grant and
//! posts it to the JSON's `token_uri`). Requests share one HTTP/2 connection, at most
//! [`MAX_IN_FLIGHT`] at a time.
//!
//! Answers, as FCM documents them (`error.details[].errorCode`, else `error.status`):
//! only `UNREGISTERED` (404) prunes the token — a bare 404 or `NOT_FOUND` (a wrong base
//! URL or project) must never wipe tokens, and `SENDER_ID_MISMATCH` (403: the token
//! belongs to another sender) is a configuration fault, so both are permanent;
//! `INVALID_ARGUMENT` (400) and `THIRD_PARTY_AUTH_ERROR` are permanent; a 401 (our
//! access token was refused) fetches a new OAuth token once and retries;
//! `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503) and `INTERNAL` (500) are retried with
//! back-off, honouring `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::{Attempt, Provider, retry_after};
use crate::devices::Device;
use crate::notifications::Notification;
use crate::preferences::Priority;

/// The OAuth2 scope FCM sends need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Concurrent sends per worker (HTTP/2 streams on the shared connection).
pub const MAX_IN_FLIGHT: usize = 64;
/// One send's time limit.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Fcm {
    http: reqwest::Client,
    /// Caches its access token until it expires; replaced by a fresh one (empty cache)
    /// when FCM refuses the token (401).
    auth: Mutex<Arc<gcp_auth::CustomServiceAccount>>,
    /// The service-account JSON, to build that fresh provider.
    account: String,
    send_url: String,
    permits: Semaphore,
}

impl Fcm {
    /// From the service-account JSON file and the base URL (`http://` speaks
    /// HTTP/2 without TLS, for local endpoints; `https://` negotiates HTTP/2 by ALPN).
    pub fn new(service_account_file: &str, base_url: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(service_account_file).map_err(|e| {
            format!(
                "notifications.fcm.service_account_file: cannot read {service_account_file:?}: {e}"
            )
        })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("notifications.fcm.service_account_file: not JSON: {e}"))?;
        let project = json["project_id"]
            .as_str()
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .ok_or("notifications.fcm.service_account_file: no valid project_id")?
            .to_owned();
        let sa = gcp_auth::CustomServiceAccount::from_json(&text)
            .map_err(|e| format!("notifications.fcm.service_account_file: {e}"))?;
        let base = base_url.trim_end_matches('/').to_owned();
        install_crypto_provider();
        let mut http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .pool_max_idle_per_host(4);
        if base.starts_with("http://") {
            http = http.http2_prior_knowledge();
        } else if !base.starts_with("https://") {
            return Err(format!(
                "notifications.fcm.base_url: {base:?} must start with https:// or http://"
            ));
        }
        Ok(Self {
            http: http.build().map_err(|e| format!("fcm http client: {e}"))?,
            auth: Mutex::new(Arc::new(sa)),
            account: text,
            send_url: format!("{base}/v1/projects/{project}/messages:send"),
            permits: Semaphore::new(MAX_IN_FLIGHT),
        })
    }
}

/// The v1 request body for one device.
pub fn message(n: &Notification, d: &Device) -> Value {
    let mut data: Map<String, Value> = n
        .data
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect();
    data.insert("notification_id".into(), Value::String(n.id.clone()));
    data.insert(
        "type".into(),
        serde_json::to_value(n.kind).unwrap_or_default(),
    );
    let android_priority = if n.priority >= Priority::High {
        "high"
    } else {
        "normal"
    };
    // A copy of the same notification (the one duplicate a worker crash can cause)
    // replaces the first on the device instead of showing twice: Android tray tag and
    // collapse key, APNs collapse id (FCM to iOS).
    let mut msg = json!({
        "token": d.token,
        "notification": { "title": n.title, "body": n.body },
        "data": data,
        "android": { "priority": android_priority, "collapse_key": n.id, "notification": { "tag": n.id } },
    });
    if let Some(c) = super::apns::collapse_id(n) {
        msg["apns"] = json!({ "headers": { "apns-collapse-id": c } });
    }
    if let Some(app) = &d.app_id {
        msg["android"]["restricted_package_name"] = Value::String(app.clone());
    }
    json!({ "message": msg })
}

/// What an FCM answer means.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Attempt {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Attempt::Sent(v["name"].as_str().map(str::to_owned));
    }
    let err = &v["error"];
    let code = err["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["errorCode"].as_str()))
        .or_else(|| err["status"].as_str())
        .unwrap_or("")
        .to_owned();
    let message = err["message"].as_str().unwrap_or("");
    let reason = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("{code} ({status}): {message}")
    };
    match code.as_str() {
        // Only this code says the token is dead; a 404 without it is a wrong URL.
        "UNREGISTERED" => Attempt::Prune {
            reason,
            unless_after: None,
        },
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => Attempt::Retry {
            reason,
            after: retry_after,
        },
        _ if status == 429 || status >= 500 => Attempt::Retry {
            reason,
            after: retry_after,
        },
        _ => Attempt::Permanent(reason),
    }
}

#[async_trait]
impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    async fn attempt(&self, n: &Notification, d: &Device) -> Attempt {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Permanent("fcm sender closed".into());
        };
        match self.send(n, d).await {
            // Our access token was refused (revoked, or the clock skewed): fetch a new
            // one, once, and try again.
            Sent::Unauthorized(_) => {
                self.refresh_auth();
                match self.send(n, d).await {
                    Sent::Unauthorized(reason) => Attempt::Permanent(format!(
                        "{reason} (a fresh OAuth token was refused too)"
                    )),
                    Sent::Answer(a) => a,
                }
            }
            Sent::Answer(a) => a,
        }
    }
}

/// One request's result: a classified answer, or a 401 (handled by the caller).
enum Sent {
    Answer(Attempt),
    Unauthorized(String),
}

impl Fcm {
    fn current_auth(&self) -> Arc<gcp_auth::CustomServiceAccount> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the token provider by a new one, whose cache is empty.
    fn refresh_auth(&self) {
        match gcp_auth::CustomServiceAccount::from_json(&self.account) {
            Ok(sa) => *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(sa),
            Err(e) => tracing::warn!(error = %e, "fcm: service account not reloaded"),
        }
    }

    async fn send(&self, n: &Notification, d: &Device) -> Sent {
        use gcp_auth::TokenProvider;
        let token = match self.current_auth().token(&[SCOPE]).await {
            Ok(t) => t,
            Err(e) => {
                return Sent::Answer(Attempt::Retry {
                    reason: format!("oauth token: {e}"),
                    after: None,
                });
            }
        };
        let resp = self
            .http
            .post(&self.send_url)
            .bearer_auth(token.as_str())
            .json(&message(n, d))
            .send()
            .await;
        let r = match resp {
            Err(e) => {
                return Sent::Answer(Attempt::Retry {
                    reason: format!("fcm request: {e}"),
                    after: None,
                });
            }
            Ok(r) => r,
        };
        let status = r.status().as_u16();
        let after = retry_after(
            r.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|h| h.to_str().ok()),
        );
        match r.bytes().await {
            Ok(body) if status == 401 => Sent::Unauthorized(match classify(status, &body, after) {
                Attempt::Permanent(reason) => reason,
                other => format!("{other:?}"),
            }),
            Ok(body) => Sent::Answer(classify(status, &body, after)),
            Err(e) => Sent::Answer(Attempt::Retry {
                reason: format!("fcm response: {e}"),
                after,
            }),
        }
    }
}

/// reqwest is built without a TLS crypto provider of its own (the workspace's
/// `rustls-no-provider`): a client needs the process default installed first. It is ring,
/// as for kube and lettre, so a release build carries one crypto library. Installing
/// twice is harmless (the first one stays).
fn install_crypto_provider() {
    // Err: a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::devices::Platform;

    fn err_body(status: &str, code: Option<&str>) -> Vec<u8> {
        let details = code.map_or(json!([]), |c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]));
        json!({"error": {"code": 0, "message": "m", "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn each_documented_answer_is_classified() {
        let ra = Some(Duration::from_secs(2));
        assert_eq!(
            classify(200, br#"{"name":"projects/p/messages/1"}"#, None),
            Attempt::Sent(Some("projects/p/messages/1".into()))
        );
        assert!(matches!(
            classify(404, &err_body("NOT_FOUND", Some("UNREGISTERED")), None),
            Attempt::Prune { .. }
        ));
        assert!(
            matches!(classify(400, &err_body("INVALID_ARGUMENT", Some("INVALID_ARGUMENT")), None), Attempt::Permanent(r) if r.starts_with("INVALID_ARGUMENT"))
        );
        assert_eq!(
            classify(
                429,
                &err_body("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
                ra
            ),
            Attempt::Retry {
                reason: "QUOTA_EXCEEDED (429): m".into(),
                after: ra
            }
        );
        assert!(matches!(
            classify(503, &err_body("UNAVAILABLE", Some("UNAVAILABLE")), None),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(500, &err_body("INTERNAL", Some("INTERNAL")), None),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(502, b"<html>bad gateway</html>", None),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(
                403,
                &err_body("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
                None
            ),
            Attempt::Permanent(r) if r.starts_with("SENDER_ID_MISMATCH")
        ));
        // A wrong base URL or project: 404 without UNREGISTERED never prunes.
        assert!(matches!(
            classify(404, &err_body("NOT_FOUND", None), None),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify(404, b"<html>not found</html>", None),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify(404, &err_body("NOT_FOUND", Some("UNSPECIFIED_ERROR")), None),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify(401, &err_body("UNAUTHENTICATED", None), None),
            Attempt::Permanent(_)
        ));
    }

    #[test]
    fn the_message_carries_token_texts_and_string_data() {
        let n = Notification::parse(
            br#"{"id":"n1","tenant":"t","user_ids":["u"],"type":"call","priority":"urgent","title":"Call","body":"Bob","data":{"room":"r","n":3}}"#,
        )
        .unwrap();
        let d = Device {
            platform: Platform::Fcm,
            token: "tok".into(),
            app_id: Some("com.ex.app".into()),
            environment: None,
            registered_at: 0,
        };
        let m = message(&n, &d);
        assert_eq!(m["message"]["token"], "tok");
        assert_eq!(
            m["message"]["notification"],
            json!({"title": "Call", "body": "Bob"})
        );
        assert_eq!(
            m["message"]["data"],
            json!({"room": "r", "n": "3", "notification_id": "n1", "type": "call"})
        );
        assert_eq!(
            m["message"]["android"],
            json!({"priority": "high", "restricted_package_name": "com.ex.app", "collapse_key": "n1", "notification": {"tag": "n1"}})
        );
        assert_eq!(
            m["message"]["apns"],
            json!({"headers": {"apns-collapse-id": "n1"}})
        );
    }
}
