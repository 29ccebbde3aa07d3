//! A local stand-in for FCM HTTP v1 and Google's OAuth2 token endpoint, answering as
//! they document (errors included). It speaks HTTP/2 without TLS (prior knowledge) and
//! checks what the real ones check: the JWT grant's RS256 signature against the service
//! account's public key, its `iss`/`aud`/`scope`; the bearer token on sends; the v1
//! request body shape (`message.token`, `notification`, string-only `data`).
//!
//! Answers by token prefix: `ok-` 200; `unregistered-` 404 UNREGISTERED; `invalid-` 400
//! INVALID_ARGUMENT; `quota-` 429 QUOTA_EXCEEDED with `Retry-After: 1` once, then 200;
//! `unavailable-` 503 UNAVAILABLE once, then 200; `internal-` 500 INTERNAL always;
//! `notfound-` a bare 404 NOT_FOUND (no errorCode, as a wrong URL gets); `mismatch-`
//! 403 SENDER_ID_MISMATCH; `slow-` 200 after 100 ms (to see sends overlap); `stall-`
//! 200 once the `stall` gate opens (a provider stuck on one message). Access
//! tokens in `revoked` get 401 UNAUTHENTICATED.
//!
//! `GET /seen` answers what it saw as JSON (`sends`: notification id, device token,
//! status; `refused`; `issued`), for tests that run it as a separate program.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const PROJECT: &str = "switchboard-test";
pub const CLIENT_EMAIL: &str = "pusher@switchboard-test.iam.gserviceaccount.com";

/// What the fake saw.
#[derive(Default)]
pub struct Seen {
    /// Access tokens issued.
    pub issued: Vec<String>,
    /// Every send request: (notification id, device token, HTTP status answered).
    pub sends: Vec<(String, String, u16)>,
    /// Requests refused for shape or auth (should stay empty).
    pub refused: Vec<String>,
    /// Sends seen per device token (drives once-then-ok answers).
    per_token: HashMap<String, u32>,
    /// Sends not HTTP/2.
    pub not_h2: usize,
    /// (notification id, Android tray tag) of every send.
    pub tags: Vec<(String, String)>,
    /// Access tokens the fake now refuses (401), as if revoked.
    pub revoked: Vec<String>,
    /// Refuse every access token (401).
    pub refuse_all_tokens: bool,
    /// Sends being answered right now, and the most at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
}

#[derive(Clone)]
pub struct FakeFcm {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    /// When set, successful sends wait for this gate (the crash test holds sends in flight).
    pub hold: Arc<tokio::sync::RwLock<()>>,
    /// Sends to `stall-` tokens wait for this gate (write-lock it to stall them).
    pub stall: Arc<tokio::sync::RwLock<()>>,
    public_pem: Arc<Vec<u8>>,
}

impl FakeFcm {
    pub async fn start(public_pem: Vec<u8>) -> FakeFcm {
        Self::start_on("127.0.0.1:0".parse().unwrap(), public_pem)
            .await
            .unwrap()
    }

    /// Listen on `addr` (port 0: any free port).
    pub async fn start_on(addr: SocketAddr, public_pem: Vec<u8>) -> std::io::Result<FakeFcm> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let fake = FakeFcm {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            hold: Arc::default(),
            stall: Arc::default(),
            public_pem: Arc::new(public_pem),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{call}", post(send))
            .route("/seen", get(seen))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(fake)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Successful (200) sends per notification id.
    pub fn accepted(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (id, _, status) in &self.seen.lock().unwrap().sends {
            if *status == 200 {
                *m.entry(id.clone()).or_default() += 1;
            }
        }
        m
    }

    /// Refuse every access token issued so far (401), as after a revocation.
    pub fn revoke_tokens(&self) {
        let mut s = self.seen.lock().unwrap();
        let issued = s.issued.clone();
        s.revoked.extend(issued);
    }

    pub fn statuses_for(&self, token: &str) -> Vec<u16> {
        self.seen
            .lock()
            .unwrap()
            .sends
            .iter()
            .filter(|(_, t, _)| t == token)
            .map(|(_, _, s)| *s)
            .collect()
    }
}

async fn seen(State(f): State<FakeFcm>) -> axum::Json<Value> {
    let s = f.seen.lock().unwrap();
    let sends: Vec<Value> = s
        .sends
        .iter()
        .map(|(id, token, status)| json!({"id": id, "token": token, "status": status}))
        .collect();
    axum::Json(json!({"sends": sends, "refused": s.refused, "issued": s.issued.len()}))
}

fn google_error(status: StatusCode, grpc: &str, code: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": format!("fake {code}"), "status": grpc,
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}});
    (status, axum::Json(body)).into_response()
}

async fn token(State(f): State<FakeFcm>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), urlencoding_decode(v)))
        .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        f.seen
            .lock()
            .unwrap()
            .refused
            .push(format!("grant_type {form:?}"));
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    match check_assertion(&f, form.get("assertion").map(String::as_str).unwrap_or("")) {
        Ok(()) => {
            let token = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
            f.seen.lock().unwrap().issued.push(token.clone());
            axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
                .into_response()
        }
        Err(why) => {
            f.seen
                .lock()
                .unwrap()
                .refused
                .push(format!("assertion: {why}"));
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response()
        }
    }
}

/// Check a JWT-bearer grant as Google does: RS256 signature by the account's key over
/// the segments as sent (Google accepts padded base64url, which gcp_auth sends), then
/// `iss`, `aud` (the token URI), `scope`, `exp`.
fn check_assertion(f: &FakeFcm, jwt: &str) -> Result<(), String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, sig] = parts.as_slice() else {
        return Err("not three segments".into());
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&f.public_pem).map_err(|e| e.to_string())?;
    let message = format!("{head}.{claims}");
    let ok = jsonwebtoken::crypto::verify(
        sig.trim_end_matches('='),
        message.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS256,
    )
    .map_err(|e| e.to_string())?;
    if !ok {
        return Err("bad signature".into());
    }
    let header: Value = serde_json::from_slice(
        &b64.decode(head.trim_end_matches('='))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let c: Value = serde_json::from_slice(
        &b64.decode(claims.trim_end_matches('='))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    if c["iss"] != CLIENT_EMAIL || c["aud"] != f.token_uri().as_str() {
        return Err(format!("iss/aud {c}"));
    }
    if !c["scope"].as_str().is_some_and(|s| {
        s.split(' ')
            .any(|x| x == "https://www.googleapis.com/auth/firebase.messaging")
    }) {
        return Err(format!("scope {c}"));
    }
    if c["exp"].as_u64().is_none_or(|e| e <= now) {
        return Err(format!("exp {c}"));
    }
    Ok(())
}

fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(x)) => {
                out.push(x);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn send(
    State(f): State<FakeFcm>,
    Path((project, call)): Path<(String, String)>,
    version: Version,
    headers: HeaderMap,
    body: String,
) -> Response {
    if version != Version::HTTP_2 {
        f.seen.lock().unwrap().not_h2 += 1;
    }
    if project != PROJECT || call != "messages:send" {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "UNSPECIFIED_ERROR");
    }
    let bearer = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let known = {
        let s = f.seen.lock().unwrap();
        s.issued.contains(&bearer) && !s.revoked.contains(&bearer) && !s.refuse_all_tokens
    };
    if !known {
        f.seen
            .lock()
            .unwrap()
            .refused
            .push(format!("bearer {bearer:?}"));
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}))).into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let m = &v["message"];
    let token = m["token"].as_str().unwrap_or("").to_owned();
    let data_ok = m["data"]
        .as_object()
        .is_some_and(|d| d.values().all(Value::is_string));
    if token.is_empty() || !m["notification"]["title"].is_string() || !data_ok {
        f.seen.lock().unwrap().refused.push(format!("body {body}"));
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        );
    }
    let id = m["data"]["notification_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let tag = m["android"]["notification"]["tag"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let n = {
        let mut s = f.seen.lock().unwrap();
        s.tags.push((id.clone(), tag));
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let n = s.per_token.entry(token.clone()).or_default();
        *n += 1;
        *n
    };
    let (status, resp) = if token.starts_with("unregistered-") {
        (
            404,
            google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "UNREGISTERED"),
        )
    } else if token.starts_with("notfound-") {
        let body = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}});
        (
            404,
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response(),
        )
    } else if token.starts_with("mismatch-") {
        (
            403,
            google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "SENDER_ID_MISMATCH",
            ),
        )
    } else if token.starts_with("invalid-") {
        (
            400,
            google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
            ),
        )
    } else if token.starts_with("internal-") {
        (
            500,
            google_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "INTERNAL"),
        )
    } else if token.starts_with("quota-") && n == 1 {
        let mut r = google_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
        );
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        (429, r)
    } else if token.starts_with("unavailable-") && n == 1 {
        (
            503,
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "UNAVAILABLE",
            ),
        )
    } else {
        if token.starts_with("slow-") {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if token.starts_with("stall-") {
            let _stalled = f.stall.read().await;
        }
        let _gate = f.hold.read().await;
        let name = format!(
            "projects/{PROJECT}/messages/{}",
            uuid::Uuid::new_v4().simple()
        );
        (200, axum::Json(json!({"name": name})).into_response())
    };
    let mut s = f.seen.lock().unwrap();
    s.in_flight -= 1;
    s.sends.push((id, token, status));
    resp
}

/// An RSA key pair made with the openssl CLI: (private PKCS#8 PEM, public PEM).
pub fn rsa_keys() -> (String, Vec<u8>) {
    let private = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey");
    assert!(private.status.success(), "openssl genpkey failed");
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl pkey");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&private.stdout)
        .unwrap();
    let public = child.wait_with_output().unwrap();
    (String::from_utf8(private.stdout).unwrap(), public.stdout)
}

/// A fake FCM with a service-account JSON file whose `token_uri` points at it.
pub async fn start_with_account() -> (FakeFcm, PathBuf) {
    let (private, public) = rsa_keys();
    let fake = FakeFcm::start(public).await;
    let path = std::env::temp_dir().join(format!("sb-fcm-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, service_account(&fake, &private).to_string()).unwrap();
    (fake, path)
}

/// The Google service-account JSON of `fake`'s project, signed by `private`.
pub fn service_account(fake: &FakeFcm, private: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "k1",
        "private_key": private,
        "client_email": CLIENT_EMAIL,
        "client_id": "1",
        "auth_uri": "http://127.0.0.1:9/auth",
        "token_uri": fake.token_uri(),
    })
}
