//! Moderation: `room:set-role`, `room:kick`, `room:ban`, `room:unban`, `room:mute` and
//! `room:set-slow-mode`. Each decodes, reads who the actor and the target are, hands the
//! decision to [`crate::rooms::roles`], then applies it through the room store and tells
//! the users concerned on every node.

use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;

use super::wire::*;
use super::{check_room_id, load_room, stop_typing};
use crate::app::{App, now_ms};
use crate::error::{AckError, Code};
use crate::handler::{Cx, Done};
use crate::hub::{CHAT, chat_room, user_room};
use crate::ids;
use crate::rooms::roles::{self, Assignable, Role, role_of};
use crate::rooms::{MAX_SANCTIONS_PER_ROOM, Mute, Room, Sanctioned, Standing};

/// Longest `reason` of a kick or a ban, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest slow-mode interval: one day.
pub const MAX_SLOW_MODE_S: u32 = 24 * 3600;

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct SetRole {
    room_id: String,
    user_id: String,
    role: Assignable,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct Target {
    room_id: String,
    user_id: String,
    reason: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct MuteReq {
    room_id: String,
    user_id: String,
    /// End of the mute in ms since the epoch; absent or null: until lifted; not after now:
    /// lift the mute.
    until: Option<i64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct SlowMode {
    room_id: String,
    interval_s: u32,
}

fn refused(r: roles::Refusal) -> AckError {
    AckError::forbidden(r.to_string())
}

/// The room, and the actor's role in it (`forbidden` for someone outside it who is not
/// its owner).
async fn actor(app: &App, tenant: &str, me: &str, room_id: &str) -> Result<(Room, Role), AckError> {
    let room = load_room(app, tenant, room_id).await?;
    let standing = app.stores.rooms.standing(tenant, room_id, me).await?;
    let role = role_of(&room, me, &standing);
    if role != Role::Owner && !standing.member {
        return Err(AckError::forbidden("you are not a member of this room"));
    }
    Ok((room, role))
}

/// Who acts on whom: the room, the actor's role, the target's standing and role.
async fn parties<A: Adapter>(
    cx: &Cx<A>,
    room_id: &str,
    user_id: &str,
) -> Result<(Room, Role, Standing, Role), AckError> {
    check_room_id(room_id)?;
    if !ids::valid_id(user_id) {
        return Err(AckError::bad_request(
            "user_id must be 1-128 characters of A-Z a-z 0-9 - _ . @ +",
        ));
    }
    let t = &cx.id.tenant;
    let (room, me) = actor(&cx.app, t, &cx.id.user_id, room_id).await?;
    let standing = cx.app.stores.rooms.standing(t, room_id, user_id).await?;
    let target = role_of(&room, user_id, &standing);
    Ok((room, me, standing, target))
}

fn check_reason(reason: Option<&str>) -> Result<(), AckError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(AckError::bad_request(format!(
            "reason must be at most {MAX_REASON_CHARS} characters"
        ))),
        _ => Ok(()),
    }
}

fn not_a_member(user_id: &str) -> AckError {
    AckError::not_found(format!("{user_id:?} is not a member of this room"))
}

fn too_many(what: &str) -> AckError {
    AckError::forbidden(format!(
        "this room already has {MAX_SANCTIONS_PER_ROOM} {what}"
    ))
}

/// A user who lost their membership: their typing stops, their sockets leave the room on
/// every node and get `room:kicked`.
async fn eject(app: &App, tenant: &str, room_id: &str, user_id: &str, reason: Option<String>) {
    if let Err(e) = stop_typing(app, tenant, user_id, room_id).await {
        tracing::warn!(error = %e.message, "typing stop after a kick failed");
    }
    if let Err(e) = app
        .stores
        .changes
        .forget_user_room(tenant, user_id, room_id)
        .await
    {
        tracing::warn!(error = %e, "sync entry of a kicked user not removed");
    }
    let user = user_room(tenant, user_id);
    if let Some(hub) = app.hub() {
        hub.leave(CHAT, user.clone(), chat_room(tenant, room_id))
            .await;
    }
    let out = Kicked {
        room_id: room_id.to_owned(),
        reason,
    };
    app.emit(CHAT, user, "room:kicked", json!(out)).await;
}

pub(super) async fn room_set_role<A: Adapter>(cx: Cx<A>, req: SetRole) -> Result<Done, AckError> {
    let (_, me, _, target) = parties(&cx, &req.room_id, &req.user_id).await?;
    roles::may_set_role(me, target).map_err(refused)?;
    let moderator = req.role == Assignable::Moderator;
    let t = &cx.id.tenant;
    if !cx
        .app
        .stores
        .rooms
        .set_moderator(t, &req.room_id, &req.user_id, moderator)
        .await?
    {
        return Err(not_a_member(&req.user_id));
    }
    tracing::info!(tenant = %t, room = %req.room_id, user = %req.user_id, moderator, "role set");
    Ok(Done {})
}

pub(super) async fn room_kick<A: Adapter>(cx: Cx<A>, req: Target) -> Result<Done, AckError> {
    check_reason(req.reason.as_deref())?;
    let (_, me, standing, target) = parties(&cx, &req.room_id, &req.user_id).await?;
    roles::may_moderate(me, target).map_err(refused)?;
    if !standing.member {
        return Err(not_a_member(&req.user_id));
    }
    let t = &cx.id.tenant;
    if !cx
        .app
        .stores
        .rooms
        .remove_member(t, &req.room_id, &req.user_id)
        .await?
    {
        return Err(not_a_member(&req.user_id));
    }
    eject(&cx.app, t, &req.room_id, &req.user_id, req.reason).await;
    tracing::info!(tenant = %t, room = %req.room_id, user = %req.user_id, by = %cx.id.user_id, "kicked");
    Ok(Done {})
}

pub(super) async fn room_ban<A: Adapter>(cx: Cx<A>, req: Target) -> Result<Done, AckError> {
    check_reason(req.reason.as_deref())?;
    let (_, me, _, target) = parties(&cx, &req.room_id, &req.user_id).await?;
    roles::may_moderate(me, target).map_err(refused)?;
    let t = &cx.id.tenant;
    match cx
        .app
        .stores
        .rooms
        .ban(t, &req.room_id, &req.user_id)
        .await?
    {
        Sanctioned::TooMany => return Err(too_many("bans")),
        Sanctioned::Done { was_member } => {
            if was_member {
                eject(&cx.app, t, &req.room_id, &req.user_id, req.reason).await;
            }
        }
    }
    tracing::info!(tenant = %t, room = %req.room_id, user = %req.user_id, by = %cx.id.user_id, "banned");
    Ok(Done {})
}

pub(super) async fn room_unban<A: Adapter>(cx: Cx<A>, req: Target) -> Result<Done, AckError> {
    check_reason(req.reason.as_deref())?;
    let (_, me, _, target) = parties(&cx, &req.room_id, &req.user_id).await?;
    roles::may_moderate(me, target).map_err(refused)?;
    cx.app
        .stores
        .rooms
        .unban(&cx.id.tenant, &req.room_id, &req.user_id)
        .await?;
    Ok(Done {})
}

pub(super) async fn room_mute<A: Adapter>(cx: Cx<A>, req: MuteReq) -> Result<Done, AckError> {
    let (_, me, standing, target) = parties(&cx, &req.room_id, &req.user_id).await?;
    roles::may_moderate(me, target).map_err(refused)?;
    if !standing.member {
        return Err(not_a_member(&req.user_id));
    }
    let rooms = &cx.app.stores.rooms;
    let t = &cx.id.tenant;
    match req.until {
        Some(until) if until <= now_ms() => {
            rooms.unmute(t, &req.room_id, &req.user_id).await?;
        }
        until => match rooms
            .mute(t, &req.room_id, &req.user_id, Mute { until })
            .await?
        {
            None => return Err(not_a_member(&req.user_id)),
            Some(Sanctioned::TooMany) => return Err(too_many("mutes")),
            Some(Sanctioned::Done { .. }) => {}
        },
    }
    Ok(Done {})
}

pub(super) async fn room_set_slow_mode<A: Adapter>(
    cx: Cx<A>,
    req: SlowMode,
) -> Result<RoomAck, AckError> {
    if req.interval_s > MAX_SLOW_MODE_S {
        return Err(AckError::bad_request(format!(
            "interval_s must be between 0 (off) and {MAX_SLOW_MODE_S}"
        )));
    }
    check_room_id(&req.room_id)?;
    let t = &cx.id.tenant;
    let (_, me) = actor(&cx.app, t, &cx.id.user_id, &req.room_id).await?;
    if me == Role::Member {
        return Err(refused(roles::Refusal::NotModerator));
    }
    let room = cx
        .app
        .stores
        .rooms
        .set_slow_mode(t, &req.room_id, req.interval_s)
        .await?
        .ok_or_else(|| AckError::not_found(format!("no room {:?}", req.room_id)))?;
    Ok(RoomAck { room })
}

/// `rate_limited` for a send that slow mode holds back.
pub(super) fn slowed(interval_ms: i64) -> AckError {
    AckError::new(
        Code::RateLimited,
        format!(
            "slow mode: one message per {} s in this room",
            interval_ms / 1000
        ),
    )
}
