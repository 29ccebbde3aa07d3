//! Threads: `message:send` with `thread_root` posts a reply into the thread of an earlier
//! message of the room; `message:thread` pages a thread by seq; roots carry
//! `thread_replies`. Replies take the room's next seq like any message, so they count
//! toward unread counts and are read by the same read pointer.

use serde::Deserialize;
use socketioxide::adapter::Adapter;

use super::wire::*;
use super::{DEFAULT_PAGE, MAX_PAGE, require_member};
use crate::app::App;
use crate::error::AckError;
use crate::handler::Cx;

/// `Ok` when `root` may take a reply: a message in the room's history, not itself a
/// reply (threads do not nest: `bad_request`) and not deleted (`conflict`).
pub(super) async fn check_root(
    app: &App,
    tenant: &str,
    room_id: &str,
    root: u64,
) -> Result<(), AckError> {
    let Some(m) = app.stores.history.get(tenant, room_id, root).await? else {
        return Err(AckError::bad_request(format!(
            "thread_root {root} is not a message of this room"
        )));
    };
    if m.thread_root.is_some() {
        return Err(AckError::bad_request(format!(
            "message {root} is a thread reply; reply in its thread ({}) instead",
            m.thread_root.unwrap_or_default()
        )));
    }
    if m.deleted {
        return Err(AckError::conflict(format!(
            "message {root} was deleted; its thread takes no replies"
        )));
    }
    Ok(())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct MessageThread {
    room_id: String,
    root_seq: u64,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn message_thread<A: Adapter>(
    cx: Cx<A>,
    req: MessageThread,
) -> Result<Messages, AckError> {
    let limit = req.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AckError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if req.root_seq == 0 {
        return Err(AckError::bad_request("root_seq must be at least 1"));
    }
    require_member(&cx.app, &cx.id, &req.room_id).await?;
    let history = &cx.app.stores.history;
    let t = &cx.id.tenant;
    let Some(root) = history.get(t, &req.room_id, req.root_seq).await? else {
        return Err(AckError::not_found(format!(
            "no message {} in this room's history",
            req.root_seq
        )));
    };
    if root.thread_root.is_some() {
        return Err(AckError::bad_request(format!(
            "message {} is a thread reply, not a thread root",
            req.root_seq
        )));
    }
    let messages = history
        .thread(
            t,
            &req.room_id,
            req.root_seq,
            req.after_seq.unwrap_or(0),
            limit,
        )
        .await?;
    Ok(Messages { messages })
}
