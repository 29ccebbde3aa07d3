//! The service API for notifications (bearer `service_token`, or a tenant's service JWT
//! acting in that tenant only: [`crate::http::service_gate`]):
//!
//! - `POST /api/v1/notifications`: validate, produce to Kafka then record `queued`, or (no
//!   Kafka configured: embedded mode) record `queued` and deliver from this node, retrying
//!   while the stores fail and recording `failed` when it gives up.
//! - `GET /api/v1/tenants/{tenant}/notifications/{id}`: progress and each target's state.
//! - `PUT /api/v1/tenants/{tenant}/users/{user}/email`: the address the e-mail channel uses.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::Notification;
use super::delivery::{Progress, Record};
use super::dispatch::{DispatchError, Dispatcher};
use crate::app::{App, now_ms};
use crate::email::valid_address;
use crate::http::{error, service_gate, success};
use crate::ids;
use crate::kafka::Producer;
use crate::metrics::Metrics;

/// Direct deliveries running at once in embedded mode; past it the API answers 503.
pub const MAX_DIRECT_IN_FLIGHT: usize = 256;
/// Embedded mode: failed runs of one notification (a store error) before it is recorded
/// `failed`, and the pause before a run is repeated (after such a failure, or while
/// another run holds the id).
pub const DIRECT_RUNS: u32 = 10;
pub const DIRECT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Where accepted notifications go.
pub enum Intake {
    Kafka(Producer),
    Direct {
        dispatcher: Box<Dispatcher>,
        permits: Arc<Semaphore>,
    },
}

impl Intake {
    pub fn direct(dispatcher: Dispatcher) -> Self {
        Intake::Direct {
            dispatcher: Box::new(dispatcher),
            permits: Arc::new(Semaphore::new(MAX_DIRECT_IN_FLIGHT)),
        }
    }

    /// Resolves when no direct delivery runs (each holds a permit until it is done).
    pub async fn idle(&self) {
        if let Intake::Direct { permits, .. } = self {
            let all = u32::try_from(MAX_DIRECT_IN_FLIGHT).unwrap_or(u32::MAX);
            drop(permits.acquire_many(all).await);
        }
    }
}

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/notifications", post(enqueue))
        .route("/api/v1/tenants/{tenant}/notifications/{id}", get(status))
        .route(
            "/api/v1/tenants/{tenant}/users/{user}/email",
            put(set_email),
        )
}

async fn enqueue(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match service_gate(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut n = match Notification::parse(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    if let Err(r) = caller.may_act_in(&n.tenant) {
        return *r;
    }
    n.created_at = Some(n.created_at_clamped(now_ms()));
    let Some(intake) = app.intake() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "notifications are not set up on this node",
        );
    };
    let unavailable = |what: &str| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable, retry later"),
        )
    };
    match intake.as_ref() {
        Intake::Kafka(p) => {
            if let Err(e) = p.notification(&n).await {
                tracing::warn!(error = %e, "notification not produced");
                return unavailable("the queue");
            }
            // Recorded after the produce: nothing is `queued` that was not. A worker that
            // got there first has written more; `accept` never overwrites it.
            if let Err(e) = app.stores.delivery.accept(&n.tenant, &n.id).await {
                tracing::warn!(error = %e, id = %n.id, "produced, but `queued` not recorded");
            }
        }
        Intake::Direct {
            dispatcher,
            permits,
        } => {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many notifications in flight, retry later",
                );
            };
            if let Err(e) = app.stores.delivery.accept(&n.tenant, &n.id).await {
                tracing::warn!(error = %e, "delivery store unavailable");
                return unavailable("storage");
            }
            let (d, hub) = (dispatcher.as_ref().clone(), app.hub().cloned());
            let span = tracing::info_span!("direct_delivery", tenant = %n.tenant, id = %n.id);
            tokio::spawn(
                async move {
                    deliver_direct(&d, &n, hub.as_ref()).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    Metrics::kind(&app.metrics.notifications, "accepted");
    success(StatusCode::ACCEPTED, Queued::default())
}

/// Embedded mode: run until delivered, retrying store failures and runs that find the id
/// held by another; after [`DIRECT_RUNS`] runs the notification is recorded `failed`.
async fn deliver_direct(d: &Dispatcher, n: &Notification, hub: Option<&Arc<dyn crate::hub::Hub>>) {
    let mut failures = 0;
    while failures < DIRECT_RUNS {
        match d.dispatch(n, hub).await {
            Ok(_) => return,
            // Another run holds it (a retried POST): wait for it; it ends (its lock
            // lapses if its node died), and then this run finds the targets finished.
            Err(DispatchError::Busy) => {}
            Err(DispatchError::Store(e)) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "direct delivery incomplete, retrying");
                if let crate::error::StoreError::Corrupt(_) = e {
                    break;
                }
            }
        }
        tokio::time::sleep(DIRECT_RETRY_PAUSE).await;
    }
    if let Err(e) = d.delivery.fail(&n.tenant, &n.id).await {
        tracing::error!(error = %e, "direct delivery failed and `failed` could not be recorded");
    } else {
        tracing::error!("direct delivery failed: recorded `failed`");
    }
}

async fn status(
    State(app): State<App>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = match service_gate(&app, &headers).await {
        Ok(caller) => caller.may_act_in(&tenant),
        Err(r) => Err(r),
    } {
        return *r;
    }
    if !ids::valid_tenant(&tenant) || !ids::valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid tenant or notification id",
        );
    }
    match app.stores.delivery.status(&tenant, &id).await {
        Ok(Some((progress, mut deliveries))) => {
            for d in &mut deliveries {
                d.target = redact(&d.channel, &d.target);
            }
            let data = Status {
                id,
                tenant,
                progress,
                deliveries,
            };
            success(StatusCode::OK, data)
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such notification in this tenant",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "delivery store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable, retry later",
            )
        }
    }
}

/// `POST /api/v1/notifications`: accepted and queued.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Queued {
    /// Always `queued`.
    #[schemars(extend("const" = "queued"))]
    pub status: &'static str,
}

impl Default for Queued {
    fn default() -> Self {
        Self { status: "queued" }
    }
}

/// `GET /api/v1/tenants/{tenant}/notifications/{id}`: targets are masked.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Status {
    pub id: String,
    pub tenant: String,
    pub progress: Progress,
    pub deliveries: Vec<Record>,
}

/// Shortest push token whose last [`SHOWN_TOKEN_CHARS`] characters are shown.
const MIN_SHOWN_TOKEN_CHARS: usize = 16;
const SHOWN_TOKEN_CHARS: usize = 4;

/// A delivery target as the status API shows it, never in full: an e-mail address keeps
/// the first character of its local part and its domain (`f***@example.com`); a push
/// token its last 4 characters when it has at least 16 (`***a1b2`), else nothing.
/// Enough to tell a user's devices apart, not to push to one.
pub fn redact(channel: &str, target: &str) -> String {
    if target.is_empty() {
        return String::new();
    }
    if channel == "email" {
        return match target.rsplit_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        };
    }
    let n = target.chars().count();
    if n < MIN_SHOWN_TOKEN_CHARS {
        return "***".into();
    }
    let tail: String = target.chars().skip(n - SHOWN_TOKEN_CHARS).collect();
    format!("***{tail}")
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailReq {
    email: String,
}

async fn set_email(
    State(app): State<App>,
    headers: HeaderMap,
    Path((tenant, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = match service_gate(&app, &headers).await {
        Ok(caller) => caller.may_act_in(&tenant),
        Err(r) => Err(r),
    } {
        return *r;
    }
    if !ids::valid_tenant(&tenant) || !ids::valid_id(&user) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid tenant or user id",
        );
    }
    let req: EmailReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid body: {e}"),
            );
        }
    };
    if !valid_address(&req.email) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "email is not a valid address",
        );
    }
    match app
        .stores
        .devices
        .set_email(&tenant, &user, &req.email)
        .await
    {
        Ok(()) => success(StatusCode::OK, crate::handler::Done {}),
        Err(e) => {
            tracing::warn!(error = %e, "device store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable, retry later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn targets_are_never_shown_in_full() {
        assert_eq!(redact("email", "fay@example.test"), "f***@example.test");
        assert_eq!(redact("email", "é@x.y"), "é***@x.y");
        assert_eq!(redact("email", "no-at-sign"), "***");
        let token = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH";
        assert_eq!(redact("fcm", token), "***aFUH");
        assert_eq!(redact("apns", "short-token"), "***");
        assert_eq!(redact("in_app", ""), "");
    }
}
