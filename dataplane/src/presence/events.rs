//! The /presence namespace: set-status, activity, subscribe, unsubscribe, get-batch.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Extension, SocketRef, State, TryData};

use super::Presence;
use super::tracker::watch_room;
use super::{Manual, Status};
use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::error::AckError;
use crate::handler::{self, Cx, Done};
use crate::ids;

/// Most ids in one subscribe or unsubscribe.
pub const MAX_SUBSCRIBE: usize = 500;
/// Most ids in one get-batch.
pub const MAX_BATCH: usize = 1000;
/// Longest status message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

crate::contract::declare_events! { super::tracker::PRESENCE;
    "presence:set-status" => Room, set_status;
    "presence:activity" => Typing, activity;
    "presence:subscribe" => Room, subscribe;
    "presence:unsubscribe" => Room, unsubscribe;
    "presence:get-batch" => Read, get_batch;
}

/// Admission to /presence: authenticate, register events, count the connection.
pub async fn admit<A: Adapter>(
    s: SocketRef<A>,
    State(app): State<App>,
    TryData(auth): TryData<Value>,
) -> Result<(), AuthError> {
    let id = handler::authenticate(&s, &app, auth).await?;
    register_events(&s);
    let (t, u) = (id.tenant.as_str(), id.user_id.as_str());
    let conn = handler::conn_id(&app, &s.id);
    app.presence.connect(t, u, &conn).await.map_err(|e| {
        tracing::warn!(error = %e, "presence store unavailable");
        AuthError::Unavailable
    })?;
    app.metrics.connection(super::tracker::PRESENCE, 1);
    s.on_disconnect(
        async move |s: SocketRef<A>,
                    State(app): State<App>,
                    Extension(id): Extension<Arc<Identity>>| {
            handler::released(&s, &app).await;
            let conn = handler::conn_id(&app, &s.id);
            if app.drain.closed_by_drain(s.id) {
                // The client is reconnecting to another node: its device stays until
                // `server.reconnect_grace` after this node is gone, so it does not flap offline.
                app.presence.release(&id.tenant, &id.user_id, &conn);
            } else {
                let p = app.presence.clone();
                crate::retry::spawn_until_stored(
                    "presence disconnect",
                    app.metrics.clone(),
                    move || {
                        let (p, id, conn) = (p.clone(), id.clone(), conn.clone());
                        async move { p.disconnect(&id.tenant, &id.user_id, &conn).await }
                    },
                );
            }
            app.metrics.connection(super::tracker::PRESENCE, -1);
        },
    );
    Ok(())
}

pub async fn on_connect<A: Adapter>(s: SocketRef<A>, State(app): State<App>) {
    handler::admitted(&s, &app).await;
}

#[derive(Deserialize, schemars::JsonSchema)]
struct SetStatus {
    status: Status,
    message: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ActivityRequest")]
struct Empty {}

#[derive(Deserialize, schemars::JsonSchema)]
struct UserIds {
    user_ids: Vec<String>,
}

fn check_ids(ids_: &[String], max: usize) -> Result<(), AckError> {
    if ids_.is_empty() || ids_.len() > max {
        return Err(AckError::bad_request(format!(
            "user_ids must hold 1 to {max} ids"
        )));
    }
    match ids_.iter().find(|u| !ids::valid_id(u)) {
        Some(bad) => Err(AckError::bad_request(format!("invalid user id {bad:?}"))),
        None => Ok(()),
    }
}

async fn set_status<A: Adapter>(cx: Cx<A>, req: SetStatus) -> Result<PresenceAck, AckError> {
    let message = req
        .message
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty());
    if message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS)
    {
        return Err(AckError::bad_request(format!(
            "message is longer than {MAX_MESSAGE_CHARS} characters"
        )));
    }
    let manual = Some(Manual {
        status: req.status,
        message,
    });
    let p = cx
        .app
        .presence
        .set_status(&cx.id.tenant, &cx.id.user_id, manual)
        .await?;
    Ok(PresenceAck { presence: p })
}

async fn activity<A: Adapter>(_cx: Cx<A>, _req: Empty) -> Result<Done, AckError> {
    // `handler::on` records activity for every event; this event exists for clients
    // that have nothing else to send.
    Ok(Done {})
}

async fn subscribe<A: Adapter>(cx: Cx<A>, req: UserIds) -> Result<Presences, AckError> {
    check_ids(&req.user_ids, MAX_SUBSCRIBE)?;
    let t = &cx.id.tenant;
    let prefix = watch_room(t, "");
    let held: HashSet<String> = cx
        .socket
        .rooms()
        .into_iter()
        .filter(|r| r.starts_with(&prefix))
        .map(|r| r.to_string())
        .collect();
    let max = cx.app.presence.config().max_subscriptions;
    let new: Vec<String> = req
        .user_ids
        .iter()
        .map(|u| watch_room(t, u))
        .filter(|r| !held.contains(r))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if held.len() + new.len() > max {
        return Err(AckError::forbidden(format!(
            "subscription limit reached (presence.max_subscriptions = {max})"
        )));
    }
    cx.socket.join(new);
    // Ids this socket already held: their updates reach this node's cache, so what it
    // holds is current and re-subscribing costs no store read.
    let presences = cx
        .app
        .presence
        .get_followed(t, &req.user_ids, |u| held.contains(&watch_room(t, u)))
        .await?;
    Ok(Presences { presences })
}

async fn unsubscribe<A: Adapter>(cx: Cx<A>, req: UserIds) -> Result<Done, AckError> {
    check_ids(&req.user_ids, MAX_SUBSCRIBE)?;
    let rooms: Vec<String> = req
        .user_ids
        .iter()
        .map(|u| watch_room(&cx.id.tenant, u))
        .collect();
    cx.socket.leave(rooms);
    Ok(Done {})
}

async fn get_batch<A: Adapter>(cx: Cx<A>, req: UserIds) -> Result<Presences, AckError> {
    check_ids(&req.user_ids, MAX_BATCH)?;
    let presences = cx.app.presence.get(&cx.id.tenant, &req.user_ids).await?;
    Ok(Presences { presences })
}

/// `{presence}`: the `presence:set-status` ack and the `presence:update` event.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct PresenceAck {
    pub presence: Presence,
}

/// `{presences}`, in the order asked: `presence:subscribe`, `presence:get-batch`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Presences {
    pub presences: Vec<Presence>,
}

/// /presence's server → client events.
pub fn server_events() -> Vec<crate::contract::ServerEvent> {
    vec![crate::contract::ServerEvent::of::<PresenceAck>(
        super::tracker::PRESENCE,
        "presence:update",
        "A subscribed user's presence changed (duplicates possible: compare with what you show).",
    )]
}
