//! The /chat namespace: rooms, messages, receipts, unread counts, typing and privacy.
//!
//! Each handler decodes a typed request, checks membership, calls the stores and
//! fans out; see PROTOCOL.md for the events and payloads.

mod changes;
mod moderation;
mod sync;
mod threads;
mod wire;

pub use wire::server_events;
use wire::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Extension, SocketRef, State, TryData};
use switchboard_crds::config::ChatConfig;

use crate::app::{App, now_ms};
use crate::auth::{AuthError, Identity};
use crate::error::{AckError, Code};
use crate::handler::{self, Cx, Done};
use crate::history::{Message, Page};
use crate::hub::{CHAT, chat_room, user_room};
use crate::ids;
use crate::metrics::Metrics;
use crate::receipts::{Kind, Privacy, RoomAdds, unread};
use crate::rooms::roles::{SendVerdict, role_of, send_verdict};
use crate::rooms::{Added, Created, Room, Standing, Visibility};
use crate::typing::{Typist, display_text};

/// Most user ids in one `room:create` or `room:invite`.
pub const MAX_INVITEES: usize = 100;
/// Most receipts in one `receipt:batch`.
pub const MAX_BATCH: usize = 100;
/// Most rooms in one `unread:get`.
pub const MAX_UNREAD_ROOMS: usize = 500;
/// Largest and default `message:history` page.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 50;

/// Admission to /chat, run as connect middleware so that everything is in place before
/// the client learns it is connected: authenticate, register the events (an event sent
/// right after `connect` must find its handler), join the user's rooms, count it online.
pub async fn admit<A: Adapter>(
    s: SocketRef<A>,
    State(app): State<App>,
    TryData(auth): TryData<Value>,
) -> Result<(), AuthError> {
    let id = handler::authenticate(&s, &app, auth).await?;
    register_events(&s);

    let (t, u) = (id.tenant.as_str(), id.user_id.as_str());
    let rooms_of = || async {
        app.stores.rooms.rooms_of(t, u).await.map_err(|e| {
            tracing::warn!(tenant = %t, user = %u, error = %e, "cannot load rooms");
            AuthError::Unavailable
        })
    };
    let mine = rooms_of().await?;
    s.join(mine.iter().map(|r| chat_room(t, r)).collect::<Vec<_>>());
    // A kick, ban or room:delete between the read and the join sent its "leave" before
    // this socket was in the room: read again and leave what is gone. (One that comes
    // later finds the socket in the room and its own leave takes it out.)
    let now = rooms_of().await?;
    let gone: Vec<String> = mine
        .iter()
        .filter(|r| !now.contains(r))
        .map(|r| chat_room(t, r))
        .collect();
    if !gone.is_empty() {
        s.leave(gone);
    }
    let conn = handler::conn_id(&app, &s.id);
    if let Err(e) = app.stores.online.connect(t, u, &conn).await {
        tracing::warn!(error = %e, "online store unavailable");
    }
    app.metrics.connection(CHAT, 1);
    tracing::debug!(tenant = %t, user = %u, sid = %s.id, "chat connected");

    s.on_disconnect(
        async move |s: SocketRef<A>,
                    State(app): State<App>,
                    Extension(id): Extension<Arc<Identity>>| {
            handler::released(&s, &app).await;
            let conn = handler::conn_id(&app, &s.id);
            let online = app.stores.online.clone();
            crate::retry::spawn_until_stored("online disconnect", app.metrics.clone(), move || {
                let (online, id, conn) = (online.clone(), id.clone(), conn.clone());
                async move { online.disconnect(&id.tenant, &id.user_id, &conn).await }
            });
            app.metrics.connection(CHAT, -1);
        },
    );
    Ok(())
}

crate::contract::declare_events! { CHAT;
    "room:create" => Room, room_create;
    "room:join" => Room, room_join;
    "room:leave" => Room, room_leave;
    "room:invite" => Room, room_invite;
    "room:members" => Read, room_members;
    "room:delete" => Room, changes::room_delete;
    "message:send" => Message, message_send;
    "message:edit" => Message, changes::message_edit;
    "message:delete" => Message, changes::message_delete;
    "message:react" => Message, changes::message_react;
    "message:history" => Read, message_history;
    "message:thread" => Read, threads::message_thread;
    "message:delivered" => Read, message_delivered;
    "receipt:read" => Read, receipt_read;
    "receipt:batch" => Read, receipt_batch;
    "unread:get" => Read, unread_get;
    "sync:get" => Read, sync::sync_get;
    "typing:start" => Typing, typing_start;
    "typing:stop" => Typing, typing_stop;
    "typing:get-aggregated" => Read, typing_get_aggregated;
    "privacy:set" => Room, privacy_set;
    "room:set-role" => Room, moderation::room_set_role;
    "room:kick" => Room, moderation::room_kick;
    "room:ban" => Room, moderation::room_ban;
    "room:unban" => Room, moderation::room_unban;
    "room:mute" => Room, moderation::room_mute;
    "room:set-slow-mode" => Room, moderation::room_set_slow_mode;
}

/// Connect handler of /chat: admission happened in [`admit`]; the token's clock starts.
pub async fn on_connect<A: Adapter>(s: SocketRef<A>, State(app): State<App>) {
    handler::admitted(&s, &app).await;
}

// === rooms ===

#[derive(Deserialize, schemars::JsonSchema)]
struct RoomCreate {
    room_id: Option<String>,
    name: Option<String>,
    visibility: Visibility,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct RoomRef {
    room_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct RoomInvite {
    room_id: String,
    user_ids: Vec<String>,
}

fn check_room_id(id: &str) -> Result<(), AckError> {
    if ids::valid_id(id) {
        Ok(())
    } else {
        Err(AckError::bad_request(
            "room_id must be 1-128 characters of A-Z a-z 0-9 - _ . @ +",
        ))
    }
}

fn check_user_ids(v: &[String], max: usize) -> Result<(), AckError> {
    if v.len() > max {
        return Err(AckError::bad_request(format!(
            "at most {max} user ids per call"
        )));
    }
    match v.iter().find(|u| !ids::valid_id(u)) {
        Some(bad) => Err(AckError::bad_request(format!("invalid user id {bad:?}"))),
        None => Ok(()),
    }
}

/// The room, or `not_found`.
async fn load_room(app: &App, tenant: &str, room_id: &str) -> Result<Room, AckError> {
    check_room_id(room_id)?;
    app.stores
        .rooms
        .get(tenant, room_id)
        .await?
        .ok_or_else(|| AckError::not_found(format!("no room {room_id:?}")))
}

/// The room and the user's standing in it; `forbidden` unless the user belongs to it
/// (checked after the room exists). A room deleted between the two reads takes its
/// members with it: that is `not_found`, as it would have been a moment later.
async fn membership(app: &App, id: &Identity, room_id: &str) -> Result<(Room, Standing), AckError> {
    let room = load_room(app, &id.tenant, room_id).await?;
    let standing = app
        .stores
        .rooms
        .standing(&id.tenant, room_id, &id.user_id)
        .await?;
    if standing.member {
        return Ok((room, standing));
    }
    load_room(app, &id.tenant, room_id).await?;
    Err(AckError::forbidden("you are not a member of this room"))
}

/// `forbidden` unless the user belongs to the room (checked after the room exists).
async fn require_member(app: &App, id: &Identity, room_id: &str) -> Result<(), AckError> {
    membership(app, id, room_id).await.map(drop)
}

fn too_many_rooms(app: &App) -> AckError {
    AckError::forbidden(format!(
        "room limit reached (limits.max_rooms_per_user = {})",
        app.config.limits.max_rooms_per_user
    ))
}

fn banned() -> AckError {
    AckError::forbidden("you are banned from this room")
}

/// Users `add_members` did not add: `skipped` (all of them), `banned` (those of them
/// banned from the room) and `declined` (those whose privacy refuses adds by others);
/// the others were already added to as many rooms by others as they may be.
#[derive(Default, serde::Serialize, schemars::JsonSchema)]
struct NotAdded {
    skipped: Vec<String>,
    banned: Vec<String>,
    declined: Vec<String>,
}

/// Add users to a room and make their live sockets (any node) join it. `actor` (the
/// creator, or whoever joins) is added by their own choice; anyone else is added on the
/// actor's behalf, which only their privacy allows and which counts toward the rooms
/// others put them in, never toward their own (`limits.max_rooms_per_user` each).
/// Returns those skipped because they are banned, decline adds, or are full.
async fn add_members(
    app: &App,
    tenant: &str,
    room_id: &str,
    actor: &str,
    users: &[String],
) -> Result<NotAdded, AckError> {
    let max = app.config.limits.max_rooms_per_user;
    let mut not = NotAdded::default();
    for u in users {
        let rooms = &app.stores.rooms;
        let added = if u == actor {
            rooms.add_member(tenant, room_id, u, max).await?
        } else if app.stores.receipts.privacy(tenant, u).await?.room_adds == RoomAdds::Nobody {
            not.skipped.push(u.clone());
            not.declined.push(u.clone());
            continue;
        } else {
            rooms.add_invitee(tenant, room_id, u, max).await?
        };
        match added {
            Added::TooManyRooms => not.skipped.push(u.clone()),
            Added::Banned => {
                not.skipped.push(u.clone());
                not.banned.push(u.clone());
            }
            added @ (Added::Added | Added::AlreadyMember) => {
                if added == Added::Added {
                    app.stores.changes.touch_user(tenant, u, room_id).await?;
                }
                if let Some(hub) = app.hub() {
                    hub.join(CHAT, user_room(tenant, u), chat_room(tenant, room_id))
                        .await;
                }
            }
        }
    }
    Ok(not)
}

async fn room_create<A: Adapter>(cx: Cx<A>, req: RoomCreate) -> Result<RoomAdded, AckError> {
    let room_id = req
        .room_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    check_room_id(&room_id)?;
    check_user_ids(&req.members, MAX_INVITEES)?;
    let name = req.name.unwrap_or_else(|| room_id.clone());
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(AckError::bad_request("name must be 1-200 characters"));
    }
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    if cx.app.stores.rooms.held(t, me).await?.own >= cx.app.config.limits.max_rooms_per_user {
        return Err(too_many_rooms(&cx.app));
    }
    let room = Room {
        id: room_id.clone(),
        name,
        visibility: req.visibility,
        owner_id: me.clone(),
        created_at: now_ms(),
        slow_mode_s: 0,
    };
    let max_rooms = cx.app.config.limits.max_rooms_per_tenant;
    match cx.app.stores.rooms.create(t, &room, max_rooms).await? {
        Created::Created => {}
        Created::Taken => {
            return Err(AckError::conflict(format!(
                "room {room_id:?} already exists"
            )));
        }
        Created::TooManyRooms => {
            cx.app.metrics.bound_reached("rooms_per_tenant");
            return Err(AckError::forbidden(format!(
                "the tenant's room limit is reached (limits.max_rooms_per_tenant = {max_rooms}); delete a room first"
            )));
        }
    }
    // Whatever an earlier room of this id left behind (a `room:delete` cut short by a
    // store outage after the room record went) is not this room's: clear it before
    // anyone can post.
    cx.app.stores.history.delete_room(t, &room_id).await?;
    cx.app.stores.typing.clear_room(t, &room_id).await?;
    let mut users = vec![me.clone()];
    users.extend(req.members.into_iter().filter(|u| u != me));
    let not = add_members(&cx.app, t, &room_id, me, &users).await?;
    cx.socket.join(chat_room(t, &room_id));
    tracing::info!(tenant = %t, room = %room_id, owner = %me, "room created");
    Ok(RoomAdded {
        room,
        skipped: not.skipped,
        banned: not.banned,
        declined: not.declined,
    })
}

async fn room_join<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<RoomAck, AckError> {
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let room = load_room(&cx.app, t, &req.room_id).await?;
    if room.visibility == Visibility::Private
        && !cx.app.stores.rooms.is_member(t, &room.id, me).await?
    {
        return Err(AckError::forbidden("this room is private: members only"));
    }
    match cx
        .app
        .stores
        .rooms
        .add_member(t, &room.id, me, cx.app.config.limits.max_rooms_per_user)
        .await?
    {
        Added::TooManyRooms => return Err(too_many_rooms(&cx.app)),
        Added::Banned => return Err(banned()),
        Added::Added => cx.app.stores.changes.touch_user(t, me, &room.id).await?,
        Added::AlreadyMember => {}
    }
    if let Some(hub) = cx.app.hub() {
        hub.join(CHAT, user_room(t, me), chat_room(t, &room.id))
            .await;
    }
    cx.socket.join(chat_room(t, &room.id));
    Ok(RoomAck { room })
}

async fn room_leave<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<Done, AckError> {
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    load_room(&cx.app, t, &req.room_id).await?;
    if !cx
        .app
        .stores
        .rooms
        .remove_member(t, &req.room_id, me)
        .await?
    {
        return Err(AckError::not_found("you are not a member of this room"));
    }
    cx.app
        .stores
        .changes
        .forget_user_room(t, me, &req.room_id)
        .await?;
    stop_typing(&cx.app, t, me, &req.room_id).await?;
    cx.socket.leave(chat_room(t, &req.room_id));
    if let Some(hub) = cx.app.hub() {
        hub.leave(CHAT, user_room(t, me), chat_room(t, &req.room_id))
            .await;
    }
    Ok(Done {})
}

async fn room_invite<A: Adapter>(cx: Cx<A>, req: RoomInvite) -> Result<RoomAdded, AckError> {
    let t = &cx.id.tenant;
    let room = load_room(&cx.app, t, &req.room_id).await?;
    if room.owner_id != cx.id.user_id {
        return Err(AckError::forbidden("only the room's owner can invite"));
    }
    if req.user_ids.is_empty() {
        return Err(AckError::bad_request("user_ids must not be empty"));
    }
    check_user_ids(&req.user_ids, MAX_INVITEES)?;
    let not = add_members(&cx.app, t, &room.id, &cx.id.user_id, &req.user_ids).await?;
    Ok(RoomAdded {
        room,
        skipped: not.skipped,
        banned: not.banned,
        declined: not.declined,
    })
}

async fn room_members<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<Members, AckError> {
    let t = &cx.id.tenant;
    let room = load_room(&cx.app, t, &req.room_id).await?;
    let member = cx
        .app
        .stores
        .rooms
        .is_member(t, &room.id, &cx.id.user_id)
        .await?;
    if room.visibility == Visibility::Private && !member {
        return Err(AckError::forbidden("this room is private: members only"));
    }
    let users = cx
        .app
        .stores
        .rooms
        .members(t, &room.id, cx.app.config.chat.max_members_listed)
        .await?;
    let mut online = cx.app.stores.online.online(t, &users).await?;
    // Invisible users (offline by hand) are shown offline here too.
    let connected: Vec<String> = users
        .iter()
        .zip(&online)
        .filter(|(_, on)| **on)
        .map(|(u, _)| u.clone())
        .collect();
    let invisible: std::collections::HashSet<String> = cx
        .app
        .stores
        .presence
        .snapshots(t, &connected)
        .await?
        .into_iter()
        .zip(connected)
        .filter(|(s, _)| {
            s.manual
                .as_ref()
                .is_some_and(|m| m.status == crate::presence::Status::Offline)
        })
        .map(|(_, u)| u)
        .collect();
    for (u, on) in users.iter().zip(online.iter_mut()) {
        *on = *on && !invisible.contains(u);
    }
    let members = users
        .into_iter()
        .zip(online)
        .map(|(user_id, online)| Member { user_id, online })
        .collect();
    Ok(Members { members })
}

// === messages ===

#[derive(Deserialize, schemars::JsonSchema)]
struct MessageSend {
    room_id: String,
    body: String,
    client_msg_id: Option<String>,
    reply_to: Option<u64>,
    meta: Option<Value>,
    thread_root: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct MessageHistory {
    room_id: String,
    before_seq: Option<u64>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// A message body: not blank, at most `chat.max_message_bytes`.
fn check_body(cfg: &ChatConfig, body: &str) -> Result<(), AckError> {
    if body.trim().is_empty() {
        return Err(AckError::bad_request("body must not be empty"));
    }
    if body.len() > cfg.max_message_bytes {
        return Err(AckError::new(
            Code::PayloadTooLarge,
            format!(
                "body is {} bytes; the limit is {} (chat.max_message_bytes)",
                body.len(),
                cfg.max_message_bytes
            ),
        ));
    }
    Ok(())
}

/// `meta`: a JSON object of at most `chat.max_meta_bytes`.
fn check_meta(cfg: &ChatConfig, meta: &Value) -> Result<(), AckError> {
    if !meta.is_object() {
        return Err(AckError::bad_request("meta must be a JSON object"));
    }
    let size = serde_json::to_vec(meta)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > cfg.max_meta_bytes {
        return Err(AckError::new(
            Code::PayloadTooLarge,
            format!(
                "meta is {size} bytes; the limit is {} (chat.max_meta_bytes)",
                cfg.max_meta_bytes
            ),
        ));
    }
    Ok(())
}

async fn message_send<A: Adapter>(cx: Cx<A>, req: MessageSend) -> Result<Sent, AckError> {
    let cfg = &cx.app.config.chat;
    check_body(cfg, &req.body)?;
    if let Some(c) = &req.client_msg_id
        && (c.is_empty() || c.len() > 128)
    {
        return Err(AckError::bad_request("client_msg_id must be 1-128 bytes"));
    }
    if let Some(meta) = &req.meta {
        check_meta(cfg, meta)?;
    }
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let (room, standing) = membership(&cx.app, &cx.id, &req.room_id).await?;
    let role = role_of(&room, me, &standing);
    let slow = match send_verdict(&room, role, &standing, now_ms()) {
        SendVerdict::Muted(None) => {
            return Err(AckError::forbidden("you are muted in this room"));
        }
        SendVerdict::Muted(Some(until)) => {
            return Err(AckError::forbidden(format!(
                "you are muted in this room until {until} (ms since the epoch)"
            )));
        }
        SendVerdict::Allowed(slow) => slow,
    };
    if let Some(r) = req.reply_to {
        let last = cx
            .app
            .stores
            .history
            .last_seqs(t, std::slice::from_ref(&req.room_id))
            .await?;
        if r == 0 || r > last.first().copied().unwrap_or(0) {
            return Err(AckError::bad_request(format!(
                "reply_to {r} is not a message of this room"
            )));
        }
    }
    if let Some(root) = req.thread_root {
        threads::check_root(&cx.app, t, &req.room_id, root).await?;
    }
    // Last, so a refused request does not use up the member's slot.
    if let Some(interval) = slow
        && !cx
            .app
            .stores
            .rooms
            .slow_mode_pass(t, &req.room_id, me, interval, now_ms())
            .await?
    {
        return Err(moderation::slowed(interval));
    }
    let msg = Message {
        id: uuid::Uuid::now_v7().to_string(),
        room_id: req.room_id.clone(),
        seq: 0,
        sender_id: me.clone(),
        body: req.body,
        ts: now_ms(),
        client_msg_id: req.client_msg_id,
        reply_to: req.reply_to,
        meta: req.meta,
        thread_root: req.thread_root,
        ..Message::default()
    };
    let stored = cx
        .app
        .stores
        .history
        .append(t, msg, cfg.history_max_len)
        .await?;
    // A `room:delete` may have run since the membership check: it removes the room
    // record before the history, so a room gone now means this append may have landed
    // after the history was cleared. Clear it again rather than leave a stray log.
    if cx.app.stores.rooms.get(t, &req.room_id).await?.is_none() {
        cx.app.stores.history.delete_room(t, &req.room_id).await?;
        return Err(AckError::not_found(format!("no room {:?}", req.room_id)));
    }
    let message = stored.message;
    if !stored.duplicate {
        after_stored(&cx.app, t, me, &message).await;
        let out = json!(MessageAck {
            message: message.clone()
        });
        cx.app.metrics.broadcast(CHAT, "message:new");
        if let Err(e) = cx
            .socket
            .to(chat_room(t, &message.room_id))
            .emit("message:new", &out)
            .await
        {
            tracing::warn!(error = %e, "message:new broadcast failed");
        }
    }
    Ok(Sent {
        message,
        duplicate: stored.duplicate,
    })
}

/// The side effects of a stored message: the room's change index (`sync:get`), the
/// sender's own receipts and the end of their typing indicator. The message is stored:
/// whatever happens here, its ack is `ok` and it is broadcast. A step that fails is
/// logged and counted (`switchboard_side_effect_failures{kind}`) and the others still run.
async fn after_stored(app: &App, t: &str, me: &str, message: &Message) {
    let room = &message.room_id;
    let failed = |kind: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(tenant = %t, room = %room, seq = message.seq, step = kind, error = %e,
            "side effect of a stored message failed; the message is delivered anyway");
        Metrics::kind(&app.metrics.side_effect_failures, kind);
    };
    if let Err(e) = app.stores.changes.touch_room(t, room).await {
        failed("sync_index", &e);
    }
    // Sending implies having read everything up to one's own message.
    for kind in [Kind::Read, Kind::Delivered] {
        if let Err(e) = app
            .stores
            .receipts
            .advance(t, me, room, kind, message.seq)
            .await
        {
            failed("receipt", &e);
        }
    }
    if let Err(e) = stop_typing(app, t, me, room).await {
        failed("typing", &e);
    }
}

async fn message_history<A: Adapter>(cx: Cx<A>, req: MessageHistory) -> Result<Messages, AckError> {
    let limit = req.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AckError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if let (Some(b), Some(a)) = (req.before_seq, req.after_seq)
        && b <= a
    {
        return Err(AckError::bad_request(
            "before_seq must be greater than after_seq",
        ));
    }
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let page = Page {
        before: req.before_seq,
        after: req.after_seq,
        limit,
    };
    let messages = cx
        .app
        .stores
        .history
        .page(&cx.id.tenant, &req.room_id, page)
        .await?;
    Ok(Messages { messages })
}

// === receipts ===

#[derive(Deserialize, schemars::JsonSchema)]
struct ReceiptReq {
    room_id: String,
    up_to_seq: u64,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct BatchItem {
    room_id: String,
    up_to_seq: u64,
    kind: Kind,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ReceiptBatch {
    receipts: Vec<BatchItem>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct UnreadGet {
    room_ids: Option<Vec<String>>,
}

/// Record a receipt (read implies delivered), tell the room, return the unread count.
async fn apply_receipt<A: Adapter>(
    cx: &Cx<A>,
    privacy: Privacy,
    room_id: &str,
    up_to: u64,
    kind: Kind,
) -> Result<u64, AckError> {
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let last = cx
        .app
        .stores
        .history
        .last_seqs(t, &[room_id.to_owned()])
        .await?
        .first()
        .copied()
        .unwrap_or(0);
    let up_to = up_to.min(last);
    let receipts = &cx.app.stores.receipts;
    let delivered = receipts
        .advance(t, me, room_id, Kind::Delivered, up_to)
        .await?;
    let read = match kind {
        Kind::Read => {
            let read = receipts.advance(t, me, room_id, Kind::Read, up_to).await?;
            // The user's unread count may have moved: a change for their sync.
            cx.app.stores.changes.touch_user(t, me, room_id).await?;
            read
        }
        Kind::Delivered => receipts
            .pointers(t, me, &[room_id.to_owned()], Kind::Read)
            .await?
            .first()
            .copied()
            .unwrap_or(0),
    };
    let room = chat_room(t, room_id);
    let (event, pointer) = match kind {
        Kind::Read if privacy.read_receipts => ("receipt:read", read),
        Kind::Read => return Ok(unread(last, read)),
        Kind::Delivered => ("receipt:delivered", delivered),
    };
    let out = json!(Receipt {
        room_id: room_id.to_owned(),
        user_id: me.clone(),
        up_to_seq: pointer,
    });
    cx.app.metrics.broadcast(CHAT, event);
    if let Err(e) = cx.socket.to(room).emit(event, &out).await {
        tracing::warn!(error = %e, event, "receipt broadcast failed");
    }
    Ok(unread(last, read))
}

async fn message_delivered<A: Adapter>(cx: Cx<A>, req: ReceiptReq) -> Result<Done, AckError> {
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    apply_receipt(
        &cx,
        Privacy::default(),
        &req.room_id,
        req.up_to_seq,
        Kind::Delivered,
    )
    .await?;
    Ok(Done {})
}

async fn receipt_read<A: Adapter>(cx: Cx<A>, req: ReceiptReq) -> Result<Unread, AckError> {
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let privacy = cx
        .app
        .stores
        .receipts
        .privacy(&cx.id.tenant, &cx.id.user_id)
        .await?;
    let n = apply_receipt(&cx, privacy, &req.room_id, req.up_to_seq, Kind::Read).await?;
    Ok(Unread { unread: n })
}

async fn receipt_batch<A: Adapter>(cx: Cx<A>, req: ReceiptBatch) -> Result<UnreadByRoom, AckError> {
    if req.receipts.is_empty() || req.receipts.len() > MAX_BATCH {
        return Err(AckError::bad_request(format!(
            "receipts must hold 1 to {MAX_BATCH} entries"
        )));
    }
    // All or nothing: check every entry before applying any.
    for r in &req.receipts {
        require_member(&cx.app, &cx.id, &r.room_id).await?;
    }
    let privacy = cx
        .app
        .stores
        .receipts
        .privacy(&cx.id.tenant, &cx.id.user_id)
        .await?;
    let mut counts = BTreeMap::new();
    for r in &req.receipts {
        let n = apply_receipt(&cx, privacy, &r.room_id, r.up_to_seq, r.kind).await?;
        counts.insert(r.room_id.clone(), n);
    }
    Ok(UnreadByRoom { unread: counts })
}

async fn unread_get<A: Adapter>(cx: Cx<A>, req: UnreadGet) -> Result<Counts, AckError> {
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let mine = cx.app.stores.rooms.rooms_of(t, me).await?;
    let rooms = match req.room_ids {
        None => mine,
        Some(asked) => {
            if asked.len() > MAX_UNREAD_ROOMS {
                return Err(AckError::bad_request(format!(
                    "at most {MAX_UNREAD_ROOMS} room ids"
                )));
            }
            if let Some(other) = asked.iter().find(|r| !mine.contains(r)) {
                return Err(AckError::forbidden(format!(
                    "you are not a member of room {other:?}"
                )));
            }
            asked
        }
    };
    let last = cx.app.stores.history.last_seqs(t, &rooms).await?;
    let read = cx
        .app
        .stores
        .receipts
        .pointers(t, me, &rooms, Kind::Read)
        .await?;
    let counts: BTreeMap<_, _> = rooms
        .iter()
        .zip(last.iter().zip(read))
        .map(|(r, (l, rd))| (r.clone(), unread(*l, rd)))
        .collect();
    Ok(Counts { counts })
}

// === typing ===

async fn aggregated(app: &App, tenant: &str, room_id: &str) -> Result<Aggregated, AckError> {
    let active = app.stores.typing.active(tenant, room_id, now_ms()).await?;
    let names: Vec<&str> = active.iter().map(|t| t.name.as_str()).collect();
    Ok(Aggregated {
        room_id: room_id.to_owned(),
        display_text: display_text(&names),
        user_ids: active.into_iter().map(|t| t.user_id).collect(),
    })
}

/// Tell the room that `user` started or stopped typing, with the new aggregate.
async fn announce_typing(
    app: &App,
    tenant: &str,
    room_id: &str,
    user_id: &str,
    typing: bool,
) -> Result<(), AckError> {
    let room = chat_room(tenant, room_id);
    app.emit(
        CHAT,
        room.clone(),
        "typing:update",
        json!(TypingUpdate {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            typing,
        }),
    )
    .await;
    let agg = aggregated(app, tenant, room_id).await?;
    app.emit(CHAT, room, "typing:aggregated", json!(agg)).await;
    Ok(())
}

/// Stop the user's indicator in a room if there is one (sending a message, leaving the
/// room or being kicked ends typing).
async fn stop_typing(
    app: &App,
    tenant: &str,
    user_id: &str,
    room_id: &str,
) -> Result<(), AckError> {
    if app
        .stores
        .typing
        .stop(tenant, room_id, user_id, now_ms())
        .await?
    {
        Metrics::kind(&app.metrics.typing, "stop");
        announce_typing(app, tenant, room_id, user_id, false).await?;
    }
    Ok(())
}

async fn typing_start<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<Done, AckError> {
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let (t, me) = (cx.id.tenant.clone(), cx.id.user_id.clone());
    if !cx
        .app
        .stores
        .receipts
        .privacy(&t, &me)
        .await?
        .typing_indicators
    {
        return Ok(Done {});
    }
    let timeout = cx.app.config.chat.typing_timeout.0;
    let now = now_ms();
    let typist = Typist {
        user_id: me.clone(),
        name: cx.id.name.clone(),
        expires_at: now + timeout.as_millis() as i64,
    };
    let started = cx
        .app
        .stores
        .typing
        .start(&t, &req.room_id, typist, now)
        .await?;
    if started {
        Metrics::kind(&cx.app.metrics.typing, "start");
        announce_typing(&cx.app, &t, &req.room_id, &me, true).await?;
    }
    // Expiry: this timer clears the indicator unless a refresh (on any node) moved it on.
    let app = cx.app.clone();
    let room_id = req.room_id;
    tokio::spawn(async move {
        tokio::time::sleep(timeout + std::time::Duration::from_millis(20)).await;
        match app.stores.typing.expire(&t, &room_id, &me, now_ms()).await {
            Ok(true) => {
                Metrics::kind(&app.metrics.typing, "expired");
                app.metrics.typing_duration.observe(timeout.as_secs_f64());
                if let Err(e) = announce_typing(&app, &t, &room_id, &me, false).await {
                    tracing::warn!(error = %e, "typing expiry broadcast failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "typing expiry failed"),
        }
    });
    Ok(Done {})
}

async fn typing_stop<A: Adapter>(cx: Cx<A>, req: RoomRef) -> Result<Done, AckError> {
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    stop_typing(&cx.app, &cx.id.tenant, &cx.id.user_id, &req.room_id).await?;
    Ok(Done {})
}

async fn typing_get_aggregated<A: Adapter>(
    cx: Cx<A>,
    req: RoomRef,
) -> Result<Aggregated, AckError> {
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    aggregated(&cx.app, &cx.id.tenant, &req.room_id).await
}

// === privacy ===

#[derive(Deserialize, schemars::JsonSchema)]
struct PrivacySet {
    read_receipts: Option<bool>,
    typing_indicators: Option<bool>,
    room_adds: Option<RoomAdds>,
}

async fn privacy_set<A: Adapter>(cx: Cx<A>, req: PrivacySet) -> Result<PrivacyAck, AckError> {
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let mut p = cx.app.stores.receipts.privacy(t, me).await?;
    if let Some(v) = req.read_receipts {
        p.read_receipts = v;
    }
    if let Some(v) = req.typing_indicators {
        p.typing_indicators = v;
    }
    if let Some(v) = req.room_adds {
        p.room_adds = v;
    }
    cx.app.stores.receipts.set_privacy(t, me, p).await?;
    if !p.typing_indicators {
        for room in cx.app.stores.rooms.rooms_of(t, me).await? {
            stop_typing(&cx.app, t, me, &room).await?;
        }
    }
    Ok(PrivacyAck { privacy: p })
}
