//! What changes a room or a message after the fact: `room:delete`, `message:edit`,
//! `message:delete` and `message:react`. Each decodes, checks membership, hands the
//! decision to the store ([`crate::history::change`]) and tells the room.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;

use super::wire::*;
use super::{RoomRef, check_body, check_meta, load_room, membership, require_member};
use crate::app::now_ms;
use crate::error::{AckError, Code};
use crate::handler::{Cx, Done};
use crate::history::Updated;
use crate::history::change::{Change, Refusal, valid_emoji};
use crate::hub::{CHAT, chat_room};
use crate::rooms::roles::{Role, role_of};

// === room:delete ===

/// Owner only. The room, its memberships, history (edits and reactions included), the
/// members' receipt pointers and typing state go; members get `room:deleted` and their
/// sockets leave the room on every node.
pub(super) async fn room_delete<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<Done, AckError> {
    let t = &cx.id.tenant;
    let room = load_room(&cx.app, t, &req.room_id).await?;
    if room.owner_id != cx.id.user_id {
        return Err(AckError::forbidden("only the room's owner can delete it"));
    }
    // The room record goes first: from here on every event on the room is `not_found`,
    // so nothing new is written behind the deletion (see `message:send`).
    let Some(members) = cx.app.stores.rooms.delete(t, &room.id).await? else {
        return Err(AckError::not_found(format!("no room {:?}", room.id)));
    };
    let stores = &cx.app.stores;
    stores.history.delete_room(t, &room.id).await?;
    stores.receipts.forget_room(t, &room.id, &members).await?;
    stores.typing.clear_room(t, &room.id).await?;
    stores.changes.forget_room(t, &room.id, &members).await?;
    let socket_room = chat_room(t, &room.id);
    cx.app
        .emit(
            CHAT,
            socket_room.clone(),
            "room:deleted",
            json!(RoomDeleted {
                room_id: room.id.clone()
            }),
        )
        .await;
    if let Some(hub) = cx.app.hub() {
        hub.leave(CHAT, socket_room.clone(), socket_room).await;
    }
    tracing::info!(tenant = %t, room = %room.id, members = members.len(), "room deleted");
    Ok(Done {})
}

// === message:edit, message:delete, message:react ===

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct MessageEdit {
    room_id: String,
    seq: u64,
    body: String,
    meta: Option<Value>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct MessageRef {
    room_id: String,
    seq: u64,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct MessageReact {
    room_id: String,
    seq: u64,
    emoji: String,
    on: bool,
}

fn check_seq(seq: u64) -> Result<(), AckError> {
    if seq == 0 {
        Err(AckError::bad_request("seq must be at least 1"))
    } else {
        Ok(())
    }
}

fn refused(r: Refusal) -> AckError {
    let code = match r {
        Refusal::NotFound => Code::NotFound,
        Refusal::NotSender | Refusal::NotSenderOrModerator | Refusal::WindowClosed => {
            Code::Forbidden
        }
        Refusal::Deleted | Refusal::TooManyEdits(_) => Code::Conflict,
        Refusal::TooManyEmoji | Refusal::TooManyReactions => Code::Forbidden,
    };
    AckError::new(code, r.to_string())
}

/// Apply a change to a message of a room the user belongs to.
async fn change<A: Adapter>(
    cx: &Cx<A>,
    room_id: &str,
    seq: u64,
    change: Change,
) -> Result<Updated, AckError> {
    check_seq(seq)?;
    cx.app
        .stores
        .history
        .update(&cx.id.tenant, room_id, seq, &change)
        .await?
        .map_err(refused)
}

/// Tell the room's other sockets (the sender's socket has the ack) of an edit or a
/// delete, and stamp the room for `sync:get`.
async fn tell_updated<A: Adapter>(cx: &Cx<A>, room_id: &str, out: &Value) -> Result<(), AckError> {
    cx.app
        .stores
        .changes
        .touch_room(&cx.id.tenant, room_id)
        .await?;
    tell_room(cx, room_id, "message:updated", out).await;
    Ok(())
}

/// Tell the room's other sockets (the sender's socket has the ack).
async fn tell_room<A: Adapter>(cx: &Cx<A>, room_id: &str, event: &'static str, data: &Value) {
    cx.app.metrics.broadcast(crate::hub::CHAT, event);
    if let Err(e) = cx
        .socket
        .to(chat_room(&cx.id.tenant, room_id))
        .emit(event, data)
        .await
    {
        tracing::warn!(error = %e, event, "broadcast failed");
    }
}

pub(super) async fn message_edit<A: Adapter>(
    cx: Cx<A>,
    req: MessageEdit,
) -> Result<MessageAck, AckError> {
    let cfg = &cx.app.config.chat;
    check_body(cfg, &req.body)?;
    if let Some(meta) = &req.meta {
        check_meta(cfg, meta)?;
    }
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let window_ms = i64::try_from(cfg.edit_window.0.as_millis()).unwrap_or(i64::MAX);
    let updated = change(
        &cx,
        &req.room_id,
        req.seq,
        Change::Edit {
            user: cx.id.user_id.clone(),
            body: req.body,
            meta: req.meta,
            now: now_ms(),
            window_ms,
            max_edits: cfg.max_edits,
        },
    )
    .await?;
    let out = MessageAck {
        message: updated.message,
    };
    tell_updated(&cx, &req.room_id, &json!(out)).await?;
    Ok(out)
}

pub(super) async fn message_delete<A: Adapter>(
    cx: Cx<A>,
    req: MessageRef,
) -> Result<MessageAck, AckError> {
    let (room, standing) = membership(&cx.app, &cx.id, &req.room_id).await?;
    let updated = change(
        &cx,
        &req.room_id,
        req.seq,
        Change::Delete {
            user: cx.id.user_id.clone(),
            by_moderator: role_of(&room, &cx.id.user_id, &standing) != Role::Member,
            now: now_ms(),
        },
    )
    .await?;
    let out = MessageAck {
        message: updated.message,
    };
    tell_updated(&cx, &req.room_id, &json!(out)).await?;
    Ok(out)
}

pub(super) async fn message_react<A: Adapter>(
    cx: Cx<A>,
    req: MessageReact,
) -> Result<ReactionsAck, AckError> {
    if !valid_emoji(&req.emoji) {
        return Err(AckError::bad_request(
            "emoji must be 1-64 bytes without whitespace or control characters",
        ));
    }
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let updated = change(
        &cx,
        &req.room_id,
        req.seq,
        Change::React {
            user: cx.id.user_id.clone(),
            emoji: req.emoji,
            on: req.on,
        },
    )
    .await?;
    let reactions = updated.message.reactions;
    if updated.changed {
        let out = json!(ReactionsEvent {
            room_id: req.room_id.clone(),
            seq: req.seq,
            reactions: reactions.clone(),
        });
        tell_room(&cx, &req.room_id, "message:reactions", &out).await;
    }
    Ok(ReactionsAck { reactions })
}
