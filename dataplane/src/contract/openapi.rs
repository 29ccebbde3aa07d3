//! The OpenAPI 3.1 document of the HTTP APIs: the probes, `/metrics`, the admin API
//! (`/admin/v1/*`, admin token) and the service API (`/api/v1/*`, service token).
//! Request and response bodies are the types the handlers decode and answer with.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{SchemaFn, Schemas, VERSION, schema_of};
use crate::error::AckFailure;
use crate::handler::Done;
use crate::http::{CallsQuality, PresenceMetrics, RevokeReq, Revoked};
use crate::notifications::Notification;
use crate::notifications::api::{EmailReq, Queued, Status};

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    None,
    Admin,
    /// The global service token or a tenant-scoped one.
    Service,
}

/// What a route answers with on success.
enum Body {
    /// `{ok: true, data}` with `data` of this type.
    Json(SchemaFn),
    /// Plain text (probes, metrics).
    Text(&'static str),
}

struct Route {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    auth: Auth,
    request: Option<SchemaFn>,
    status: u16,
    body: Body,
    /// Failure statuses besides the auth ones.
    errors: &'static [(u16, &'static str)],
}

fn json_of<T: JsonSchema>() -> Body {
    Body::Json(schema_of::<T>)
}

const DOWN: (u16, &str) = (
    503,
    "A store or Kafka does not answer (`unavailable`); nothing was done.",
);
const BAD: (u16, &str) = (
    400,
    "Malformed body or parameter (`bad_request`, the message names it).",
);
const OTHER_TENANT: (u16, &str) = (
    403,
    "A tenant-scoped token naming another tenant (`forbidden`).",
);

fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/healthz",
            id: "healthz",
            summary: "Liveness: `ok` while the process serves.",
            auth: Auth::None,
            request: None,
            status: 200,
            body: Body::Text("ok"),
            errors: &[],
        },
        Route {
            method: "get",
            path: "/readyz",
            id: "readyz",
            summary: "Readiness: `ready`, or 503 when Redis does not answer within 2 s or the node is draining.",
            auth: Auth::None,
            request: None,
            status: 200,
            body: Body::Text("ready"),
            errors: &[(503, "Not ready (`unavailable`).")],
        },
        Route {
            method: "get",
            path: "/metrics",
            id: "metrics",
            summary: "Prometheus metrics (OpenMetrics text). On `server.internal_listen` when set.",
            auth: Auth::None,
            request: None,
            status: 200,
            body: Body::Text("# TYPE switchboard_connections gauge"),
            errors: &[],
        },
        Route {
            method: "post",
            path: "/admin/v1/revocations",
            id: "revoke",
            summary: "Revoke a token (`jti`), a login session (`sid`) or every token of a user issued until now (`user_id`); their live sockets on every node are disconnected.",
            auth: Auth::Admin,
            request: Some(schema_of::<RevokeReq>),
            status: 200,
            body: json_of::<Revoked>(),
            errors: &[BAD, DOWN],
        },
        Route {
            method: "get",
            path: "/admin/v1/tenants/{tenant}/presence/metrics",
            id: "presenceMetrics",
            summary: "A tenant's users online now, today's peak and sessions, and 30 days of history.",
            auth: Auth::Admin,
            request: None,
            status: 200,
            body: json_of::<PresenceMetrics>(),
            errors: &[BAD, DOWN],
        },
        Route {
            method: "get",
            path: "/admin/v1/tenants/{tenant}/calls/quality",
            id: "callsQuality",
            summary: "Aggregate call quality of a tenant over its latest 5000 reports, and the thresholds.",
            auth: Auth::Admin,
            request: None,
            status: 200,
            body: json_of::<CallsQuality>(),
            errors: &[BAD, DOWN],
        },
        Route {
            method: "post",
            path: "/api/v1/notifications",
            id: "enqueueNotification",
            summary: "Enqueue a notification (Kafka, or this node's dispatcher in embedded mode); `id` is the idempotency key.",
            auth: Auth::Service,
            request: Some(schema_of::<Notification>),
            status: 202,
            body: json_of::<Queued>(),
            errors: &[
                BAD,
                OTHER_TENANT,
                (
                    503,
                    "Kafka or the store failed (`unavailable`), or 256 direct deliveries are running (`busy`); nothing queued.",
                ),
            ],
        },
        Route {
            method: "get",
            path: "/api/v1/tenants/{tenant}/notifications/{id}",
            id: "notificationStatus",
            summary: "A notification's progress and per-target delivery status (targets masked). Kept 7 days.",
            auth: Auth::Service,
            request: None,
            status: 200,
            body: json_of::<Status>(),
            errors: &[
                BAD,
                OTHER_TENANT,
                (404, "No such notification in this tenant (`not_found`)."),
                DOWN,
            ],
        },
        Route {
            method: "put",
            path: "/api/v1/tenants/{tenant}/users/{user}/email",
            id: "setEmail",
            summary: "Set a user's e-mail address for the e-mail channel (a token's `email` claim also sets it; the later write wins).",
            auth: Auth::Service,
            request: Some(schema_of::<EmailReq>),
            status: 200,
            body: json_of::<Done>(),
            errors: &[BAD, OTHER_TENANT, DOWN],
        },
    ]
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

fn failure(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": reference("#/components/schemas/AckFailure") } },
    })
}

/// The `{name}` parameters of a path.
fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
            })
        })
        .collect()
}

fn operation(r: &Route, schemas: &mut Schemas) -> Value {
    let ok = match &r.body {
        Body::Json(f) => json!({
            "description": "Done.",
            "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["ok", "data"],
                "properties": { "ok": { "const": true }, "data": f(&mut schemas.ser).to_value() },
            } } },
        }),
        Body::Text(example) => json!({
            "description": "Done.",
            "content": { "text/plain": { "schema": { "type": "string" }, "example": example } },
        }),
    };
    let mut responses = Map::new();
    responses.insert(r.status.to_string(), ok);
    match r.auth {
        Auth::None => {}
        Auth::Admin => {
            responses.insert(
                "401".into(),
                failure("No or the wrong admin token (`unauthorized`)."),
            );
            responses.insert(
                "404".into(),
                failure("No admin token is configured: the admin API is off."),
            );
        }
        Auth::Service => {
            responses.insert(
                "401".into(),
                failure("No, a wrong or a revoked service token (`unauthorized`)."),
            );
        }
    }
    for (status, description) in r.errors {
        responses.insert(status.to_string(), failure(description));
    }
    let mut op = json!({
        "operationId": r.id,
        "summary": r.summary,
        "responses": responses,
    });
    let params = path_params(r.path);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(f) = r.request {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": f(&mut schemas.de).to_value() } },
        });
    }
    match r.auth {
        Auth::None => op["security"] = json!([]),
        Auth::Admin => op["security"] = json!([{ "adminToken": [] }]),
        Auth::Service => op["security"] = json!([{ "serviceToken": [] }]),
    }
    let tag = match r.auth {
        Auth::None => "probes",
        Auth::Admin => "admin",
        Auth::Service => "service",
    };
    op["tags"] = json!([tag]);
    op
}

/// The OpenAPI 3.1 document, generated from the HTTP handlers' types.
pub fn openapi() -> Value {
    let mut schemas = Schemas::new(SchemaSettings::draft2020_12());
    schemas.ser.subschema_for::<AckFailure>();
    let mut paths = Map::new();
    for r in routes() {
        let op = operation(&r, &mut schemas);
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method] = op;
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard HTTP APIs",
            "version": VERSION,
            "description": "The probes, metrics, admin API (`/admin/v1/*`, admin token) and service API (`/api/v1/*`, service token) of a Switchboard node. With `server.internal_listen` set, `/metrics`, `/admin/*` and `/api/*` are served on that address only. The prose is in dataplane/PROTOCOL.md; the Socket.IO protocol is in dataplane/asyncapi.yaml.",
        },
        "servers": [{ "url": "http://localhost:3000", "description": "A socket node (`switchboard serve`)." }],
        "tags": [
            { "name": "probes", "description": "Health, readiness and metrics." },
            { "name": "admin", "description": "Operator API: `Authorization: Bearer <admin_token>`." },
            { "name": "service", "description": "Backend API: `Authorization: Bearer <service token>` (the global `service_token` or a tenant-scoped service JWT, which acts only in its tenant)." },
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "`admin_token` (SWITCHBOARD_ADMIN_TOKEN), at least 32 bytes." },
                "serviceToken": { "type": "http", "scheme": "bearer", "description": "`service_token` (SWITCHBOARD_SERVICE_TOKEN), or a JWT with `scope: \"service\"` and `tenant` (see `switchboard token --scope service`)." },
            },
        },
    });
    schemas.finish(&mut doc);
    doc
}
