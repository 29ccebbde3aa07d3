//! The service API for notifications (bearer `service_token`):
//!
//! - `POST /api/v1/notifications`: validate, record `queued`, then produce to Kafka, or
//!   (no Kafka configured: embedded mode) deliver from this node.
//! - `GET /api/v1/tenants/{tenant}/notifications/{id}`: progress and each target's state.
//! - `PUT /api/v1/tenants/{tenant}/users/{user}/email`: the address the e-mail channel uses.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::Notification;
use super::dispatch::Dispatcher;
use crate::app::{App, now_ms};
use crate::email::valid_address;
use crate::http::{bearer_gate, error};
use crate::ids;
use crate::kafka::Producer;
use crate::metrics::Metrics;

/// Direct deliveries running at once in embedded mode; past it the API answers 503.
pub const MAX_DIRECT_IN_FLIGHT: usize = 256;

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

/// The service API's gate: off without `service_token`, 401 without the right bearer.
fn service_gate(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    bearer_gate(
        headers,
        app.config.service_token.as_deref(),
        "service",
        "service_token / SWITCHBOARD_SERVICE_TOKEN",
    )
}

async fn enqueue(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = service_gate(&app, &headers) {
        return *r;
    }
    let mut n = match Notification::parse(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    n.created_at = Some(n.created_at.unwrap_or_else(now_ms));
    let Some(intake) = app.intake() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "notifications are not set up on this node",
        );
    };
    if let Err(e) = app.stores.delivery.accept(&n.tenant, &n.id).await {
        tracing::warn!(error = %e, "delivery store unavailable");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "storage is unavailable, retry later",
        );
    }
    match intake.as_ref() {
        Intake::Kafka(p) => {
            if let Err(e) = p.notification(&n).await {
                tracing::warn!(error = %e, "notification not produced");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the queue is unavailable, retry later",
                );
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
            let (d, hub) = (dispatcher.as_ref().clone(), app.hub().cloned());
            tokio::spawn(async move {
                if let Err(e) = d.dispatch(&n, hub.as_ref()).await {
                    tracing::warn!(error = %e, id = %n.id, "direct delivery failed");
                }
                drop(permit);
            });
        }
    }
    Metrics::kind(&app.metrics.notifications, "accepted");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "ok": true, "data": { "status": "queued" } })),
    )
        .into_response()
}

async fn status(
    State(app): State<App>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = service_gate(&app, &headers) {
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
        Ok(Some((progress, deliveries))) => (
            StatusCode::OK,
            axum::Json(json!({ "ok": true, "data": { "id": id, "tenant": tenant, "progress": progress, "deliveries": deliveries } })),
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such notification in this tenant"),
        Err(e) => {
            tracing::warn!(error = %e, "delivery store unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable, retry later")
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailReq {
    email: String,
}

async fn set_email(
    State(app): State<App>,
    headers: HeaderMap,
    Path((tenant, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = service_gate(&app, &headers) {
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
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({ "ok": true, "data": {} })),
        )
            .into_response(),
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
