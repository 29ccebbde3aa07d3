//! The /notifications namespace: devices, preferences, the in-app list and mark-read.
//! Every call acts on the caller's own tenant and user (from the token); nothing here
//! takes a tenant or user id from the payload.

use serde::Deserialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::Entry;
use super::{DEFAULT_LIST, MAX_LIST, MAX_MARK_READ, NOTIFICATIONS};
use crate::app::{App, now_ms};
use crate::auth::AuthError;
use crate::devices::Device;
use crate::devices::{MAX_DEVICES_PER_USER, Registered, Registration};
use crate::error::AckError;
use crate::handler::{self, Cx, Done};
use crate::ids;
use crate::preferences::Preferences;
use crate::preferences::Update;

crate::contract::declare_events! { NOTIFICATIONS;
    "notification:register-device" => Room, register_device;
    "notification:unregister-device" => Room, unregister_device;
    "notification:set-preferences" => Room, set_preferences;
    "notification:get-preferences" => Read, get_preferences;
    "notification:list" => Read, list;
    "notification:mark-read" => Read, mark_read;
}

/// Admission to /notifications: authenticate, register the events, count it.
pub async fn admit<A: Adapter>(
    s: SocketRef<A>,
    State(app): State<App>,
    TryData(auth): TryData<Value>,
) -> Result<(), AuthError> {
    let token = handler::handshake_token(
        &s,
        auth.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
    );
    let id = handler::authenticate(&s, &app, auth).await?;
    // The e-mail channel's address: a verified token's `email` claim wins over the
    // registry (`PUT /api/v1/tenants/{t}/users/{u}/email`).
    if let Some(email) = token.as_deref().and_then(email_claim)
        && let Err(e) = app
            .stores
            .devices
            .set_email(&id.tenant, &id.user_id, &email)
            .await
    {
        tracing::warn!(error = %e, "email claim not stored");
    }
    register_events(&s);
    app.metrics.connection(NOTIFICATIONS, 1);
    s.on_disconnect(async move |s: SocketRef<A>, State(app): State<App>| {
        handler::released(&s, &app).await;
        app.metrics.connection(NOTIFICATIONS, -1);
    });
    Ok(())
}

pub async fn on_connect<A: Adapter>(s: SocketRef<A>, State(app): State<App>) {
    handler::admitted(&s, &app).await;
}

/// The `email` claim of a token that `authenticate` has just verified, when it is a
/// plausible address.
fn email_claim(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["email"]
        .as_str()
        .filter(|e| crate::email::valid_address(e))
        .map(str::to_owned)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TokenRef {
    token: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GetPreferencesRequest")]
struct Empty {}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListReq {
    #[serde(default)]
    unread_only: bool,
    limit: Option<usize>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct MarkRead {
    ids: Vec<String>,
}

async fn register_device<A: Adapter>(cx: Cx<A>, req: Registration) -> Result<DeviceAck, AckError> {
    let device = req.into_device(now_ms()).map_err(AckError::bad_request)?;
    let apns = &cx.app.config.notifications.apns;
    if device.platform == crate::devices::Platform::Apns
        && let (Some(app), Some(topic)) = (&device.app_id, &apns.topic)
        && !(apns.allowed_topics.contains(app) || (apns.allowed_topics.is_empty() && app == topic))
    {
        return Err(AckError::bad_request(format!(
            "app_id {app:?} is not an allowed APNs topic"
        )));
    }
    let (t, u) = (&cx.id.tenant, &cx.id.user_id);
    match cx
        .app
        .stores
        .devices
        .register(t, u, &device, MAX_DEVICES_PER_USER)
        .await?
    {
        Registered::Ok => Ok(DeviceAck { device }),
        Registered::TooMany => Err(AckError::forbidden(format!(
            "device limit reached ({MAX_DEVICES_PER_USER} per user): unregister one first"
        ))),
    }
}

async fn unregister_device<A: Adapter>(cx: Cx<A>, req: TokenRef) -> Result<Done, AckError> {
    if cx
        .app
        .stores
        .devices
        .unregister(&cx.id.tenant, &cx.id.user_id, &req.token)
        .await?
    {
        Ok(Done {})
    } else {
        Err(AckError::not_found("no such device token for this user"))
    }
}

async fn set_preferences<A: Adapter>(cx: Cx<A>, req: Update) -> Result<PreferencesAck, AckError> {
    let (t, u) = (&cx.id.tenant, &cx.id.user_id);
    // Read, merge and write as one: two concurrent updates never lose each other's fields.
    let p = cx
        .app
        .stores
        .preferences
        .update(t, u, &|cur| req.clone().apply(cur))
        .await?
        .map_err(AckError::bad_request)?;
    Ok(PreferencesAck { preferences: p })
}

async fn get_preferences<A: Adapter>(cx: Cx<A>, _req: Empty) -> Result<PreferencesAck, AckError> {
    let p = cx
        .app
        .stores
        .preferences
        .get(&cx.id.tenant, &cx.id.user_id)
        .await?;
    Ok(PreferencesAck { preferences: p })
}

async fn list<A: Adapter>(cx: Cx<A>, req: ListReq) -> Result<List, AckError> {
    let limit = req.limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(AckError::bad_request(format!(
            "limit must be 1 to {MAX_LIST}"
        )));
    }
    let v = cx
        .app
        .stores
        .inbox
        .list(&cx.id.tenant, &cx.id.user_id, req.unread_only, limit)
        .await?;
    Ok(List { notifications: v })
}

async fn mark_read<A: Adapter>(cx: Cx<A>, req: MarkRead) -> Result<Marked, AckError> {
    if req.ids.is_empty() || req.ids.len() > MAX_MARK_READ {
        return Err(AckError::bad_request(format!(
            "ids must hold 1 to {MAX_MARK_READ} ids"
        )));
    }
    if let Some(bad) = req.ids.iter().find(|i| !ids::valid_id(i)) {
        return Err(AckError::bad_request(format!(
            "invalid notification id {bad:?}"
        )));
    }
    let n = cx
        .app
        .stores
        .inbox
        .mark_read(&cx.id.tenant, &cx.id.user_id, &req.ids)
        .await?;
    Ok(Marked { marked: n })
}

/// `{device}`: `notification:register-device`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct DeviceAck {
    pub device: Device,
}

/// `{preferences}`: `notification:set-preferences`, `notification:get-preferences`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct PreferencesAck {
    pub preferences: Preferences,
}

/// `{notifications}`, newest first: `notification:list`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct List {
    pub notifications: Vec<Entry>,
}

/// `{marked}`: how many of the ids were marked read.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Marked {
    pub marked: usize,
}

/// /notifications' server → client events.
pub fn server_events() -> Vec<crate::contract::ServerEvent> {
    vec![crate::contract::ServerEvent::of::<Entry>(
        NOTIFICATIONS,
        "notification",
        "A new in-app notification, to every /notifications socket of the user.",
    )]
}
