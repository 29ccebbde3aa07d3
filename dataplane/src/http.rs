//! Plain HTTP on the socket port: `/healthz`, `/readyz`, `/metrics`, the admin API and
//! the service API's gate (global token or a tenant's service JWT).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fred::interfaces::ClientLike;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::revocation::Target;
use crate::auth::{MAX_REVOCABLE_ID_BYTES, now_secs};
use crate::hub::{CHAT, session_room, token_room, user_room};
use crate::ids;
use crate::metrics::Metrics;
use crate::presence::tracker::PRESENCE;

/// Default and largest lifetime of a revocation entry.
pub const DEFAULT_REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_REVOCATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Every HTTP route on one port (no `server.internal_listen`).
pub fn router(app: App) -> Router {
    typed(probes().merge(internal_routes())).with_state(app)
}

/// The public port's routes when `server.internal_listen` is set: the probes only (the
/// Socket.IO layer goes on top).
pub fn public_router(app: App) -> Router {
    typed(probes()).with_state(app)
}

/// Unknown paths get 404 `not_found`, and every error answer carries the JSON envelope
/// (see [`typed_errors`]).
fn typed(routes: Router<App>) -> Router<App> {
    routes
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::map_response(typed_errors))
}

/// The JSON envelope `{ok:false, error:{code, message}}` on every error answer: axum's
/// own refusals (405 for a method a route does not take, 413 for a body past its limit,
/// 400 for a path parameter that does not decode, ...) come as plain text, and a client
/// of the API must be able to read every answer the same way.
async fn typed_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let (parts, body) = resp.into_parts();
    // axum's refusal says what was wrong ("length limit exceeded", ...): keep its start.
    let text = axum::body::to_bytes(body, 512).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_owned(),
        t => t.to_owned(),
    };
    let mut typed = error(status, code, message);
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        typed
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    typed
}

/// The internal port's routes: the probes, `/metrics`, `/admin/*` and `/api/*`.
pub fn internal_router(app: App) -> Router {
    router(app)
}

fn probes() -> Router<App> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

fn internal_routes() -> Router<App> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/v1/revocations", post(revoke))
        .route(
            "/admin/v1/tenants/{tenant}/presence/metrics",
            get(presence_metrics),
        )
        .route(
            "/admin/v1/tenants/{tenant}/calls/quality",
            get(calls_quality),
        )
        .merge(crate::notifications::api::routes())
}

/// A successful answer: `{ok: true, data}`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Success<T> {
    /// Always `true`.
    #[schemars(extend("const" = true))]
    pub ok: bool,
    pub data: T,
}

/// Answer `{ok: true, data}` with `status`.
pub(crate) fn success<T: serde::Serialize>(status: StatusCode, data: T) -> Response {
    (status, axum::Json(Success { ok: true, data })).into_response()
}

/// `POST /admin/v1/revocations`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Revoked {
    /// How long the entry is kept, in seconds.
    pub ttl_s: u64,
}

/// One day of a tenant's presence analytics.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct DayStats {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Most users online at once.
    pub peak: u64,
    pub sessions: u64,
    pub ended_sessions: u64,
    pub avg_session_ms: u64,
}

impl From<&crate::presence::Daily> for DayStats {
    fn from(d: &crate::presence::Daily) -> Self {
        Self {
            date: d.date.clone(),
            peak: d.peak,
            sessions: d.sessions,
            ended_sessions: d.ended_sessions,
            avg_session_ms: d
                .session_ms_total
                .checked_div(d.ended_sessions)
                .unwrap_or(0),
        }
    }
}

/// `GET /admin/v1/tenants/{tenant}/presence/metrics`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct PresenceMetrics {
    pub tenant: String,
    pub online_now: u64,
    /// Today (UTC); null before anything was recorded.
    pub today: Option<DayStats>,
    /// The last 30 days, today first.
    pub history: Vec<DayStats>,
}

/// `GET /admin/v1/tenants/{tenant}/calls/quality`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct CallsQuality {
    pub tenant: String,
    /// Over the tenant's latest 5000 reports.
    pub quality: crate::calls::quality::Summary,
    pub thresholds: crate::calls::quality::Thresholds,
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "ok": false, "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

async fn readyz(State(app): State<App>) -> Response {
    if app.drain.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node is shutting down",
        );
    }
    if let Some(redis) = &app.redis {
        let ping = tokio::time::timeout(Duration::from_secs(2), redis.ping::<String>(None)).await;
        if !matches!(ping, Ok(Ok(_))) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "redis does not answer",
            );
        }
    }
    "ready".into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// The `Authorization: Bearer` token of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// Equal, compared in constant time.
fn same_secret(got: &str, expected: &str) -> bool {
    let (a, b) = (got.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Authorization: Bearer <expected>`, compared in constant time.
fn bearer_ok(headers: &HeaderMap, expected: &str) -> bool {
    bearer(headers).is_some_and(|got| same_secret(got, expected))
}

// === the service API's callers ===

/// Who calls the service API (`/api/v1/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCaller {
    /// The global `service_token`: operators, every tenant.
    Operator,
    /// A tenant-scoped service JWT: this tenant only.
    Tenant(String),
}

impl ServiceCaller {
    /// May it act in `tenant`? A tenant-scoped caller gets 403 `forbidden` anywhere else.
    pub fn may_act_in(&self, tenant: &str) -> Result<(), Box<Response>> {
        match self {
            ServiceCaller::Tenant(own) if own != tenant => Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this service token acts only in its own tenant",
            ))),
            _ => Ok(()),
        }
    }
}

/// The service API's gate: the global `service_token` (every tenant), or a service JWT
/// (`scope: "service"`, signed with the node's JWT key, unrevoked) acting in its tenant.
/// 401 for anything else; 503 when revocations cannot be checked (never waved through).
pub(crate) async fn service_gate(
    app: &App,
    headers: &HeaderMap,
) -> Result<ServiceCaller, Box<Response>> {
    let refused = |why: String| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "service bearer token required (service_token, or a service JWT of the \
                 tenant): {why}"
            ),
        ))
    };
    let Some(got) = bearer(headers) else {
        return Err(refused("no Authorization: Bearer header".into()));
    };
    if app
        .config
        .service_token
        .as_deref()
        .is_some_and(|global| same_secret(got, global))
    {
        return Ok(ServiceCaller::Operator);
    }
    let id = app.verifier.verify_service(got).map_err(|e| {
        Metrics::kind(&app.metrics.auth_failures, e.code());
        refused(e.to_string())
    })?;
    match app.stores.revocations.check(&id).await {
        Ok(None) => Ok(ServiceCaller::Tenant(id.tenant)),
        Ok(Some(reason)) => {
            Metrics::kind(&app.metrics.auth_failures, "token_revoked");
            Err(refused(format!("token_revoked: {reason}")))
        }
        Err(e) => {
            tracing::warn!(error = %e, "revocation check failed");
            Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "service tokens cannot be checked right now, retry later",
            )))
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeReq {
    tenant: String,
    /// Exactly one of `jti`, `sid`, `user_id`.
    jti: Option<String>,
    sid: Option<String>,
    user_id: Option<String>,
    /// 1..2592000, default 86400.
    ttl_s: Option<u64>,
}

/// The admin API's gate: off without a configured token, 401 without the right bearer.
fn admin_gate(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    bearer_gate(
        headers,
        app.config.admin_token.as_deref(),
        "admin",
        "admin_token / SWITCHBOARD_ADMIN_TOKEN",
    )
}

/// An API behind a configured bearer token: 404 (off) when `expected` is unset, naming
/// the setting that turns it on; 401 without the right bearer.
fn bearer_gate(
    headers: &HeaderMap,
    expected: Option<&str>,
    api: &str,
    setting: &str,
) -> Result<(), Box<Response>> {
    let Some(expected) = expected else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the {api} API is off (set {setting})"),
        )));
    };
    if !bearer_ok(headers, expected) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{api} bearer token required"),
        )));
    }
    Ok(())
}

/// Days of daily presence history returned.
pub const PRESENCE_HISTORY_DAYS: usize = 30;

async fn presence_metrics(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(tenant): axum::extract::Path<String>,
) -> Response {
    if let Err(r) = admin_gate(&app, &headers) {
        return *r;
    }
    if !ids::valid_tenant(&tenant) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid tenant");
    }
    let store = &app.stores.presence;
    let dates = crate::presence::last_dates(crate::app::now_ms(), PRESENCE_HISTORY_DAYS);
    let (online, days) = match (
        store.online_count(&tenant).await,
        store.history(&tenant, &dates).await,
    ) {
        (Ok(o), Ok(d)) => (o, d),
        _ => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "presence store unavailable",
            );
        }
    };
    let data = PresenceMetrics {
        tenant,
        online_now: online,
        today: days.first().map(DayStats::from),
        history: days.iter().map(DayStats::from).collect(),
    };
    success(StatusCode::OK, data)
}

async fn revoke(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = admin_gate(&app, &headers) {
        return *r;
    }
    let req: RevokeReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid body: {e}"),
            );
        }
    };
    if !ids::valid_tenant(&req.tenant) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid tenant");
    }
    let bounded = |s: &String| !s.is_empty() && s.len() <= MAX_REVOCABLE_ID_BYTES;
    let (target, room) = match (&req.jti, &req.sid, &req.user_id) {
        (Some(j), None, None) if bounded(j) => (Target::Jti(j.clone()), token_room(&req.tenant, j)),
        (None, Some(s), None) if bounded(s) => {
            (Target::Sid(s.clone()), session_room(&req.tenant, s))
        }
        (None, None, Some(u)) if ids::valid_id(u) => (
            Target::User {
                user_id: u.clone(),
                before: now_secs(),
            },
            user_room(&req.tenant, u),
        ),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of jti, sid, user_id (1-128 characters)",
            );
        }
    };
    let ttl = req
        .ttl_s
        .map_or(DEFAULT_REVOCATION_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_REVOCATION_TTL {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "ttl_s must be between 1 and {}",
                MAX_REVOCATION_TTL.as_secs()
            ),
        );
    }
    if let Err(e) = app
        .stores
        .revocations
        .revoke(&req.tenant, &target, ttl)
        .await
    {
        tracing::warn!(error = %e, "revocation not stored");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "revocation store unavailable; nothing was revoked",
        );
    }
    if let Some(hub) = app.hub() {
        for ns in [CHAT, PRESENCE, crate::notifications::NOTIFICATIONS] {
            hub.disconnect(ns, room.clone()).await;
        }
        hub.disconnect(crate::calls::service::WEBRTC, room.clone())
            .await;
    }
    Metrics::kind(&app.metrics.disconnects, "revoked");
    tracing::info!(tenant = %req.tenant, ?target, ttl_s = ttl.as_secs(), "revoked");
    success(
        StatusCode::OK,
        Revoked {
            ttl_s: ttl.as_secs(),
        },
    )
}

/// Call quality of a tenant: mean and p95 of every measure over its recent reports, and
/// how many reports showed each issue.
async fn calls_quality(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(tenant): axum::extract::Path<String>,
) -> Response {
    if let Err(r) = admin_gate(&app, &headers) {
        return *r;
    }
    if !ids::valid_tenant(&tenant) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid tenant");
    }
    let Some(calls) = app.calls() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "calls are not ready",
        );
    };
    match calls.tenant_quality(&tenant).await {
        Ok(quality) => success(
            StatusCode::OK,
            CallsQuality {
                tenant,
                quality,
                thresholds: *calls.thresholds(),
            },
        ),
        Err(e) => {
            tracing::warn!(error = %e, "call quality unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "call store unavailable",
            )
        }
    }
}
