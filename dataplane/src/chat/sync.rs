//! `sync:get`: what changed in the user's rooms since a cursor, across all of them, paged.
//!
//! One bounded pass whatever the number of rooms: the user's rooms, their change stamps
//! ([`crate::sync`]), then for the page only: last seqs, read pointers and last messages,
//! each one store call (on Redis, five round trips a call in all).

use serde::Deserialize;
use socketioxide::adapter::Adapter;

use super::wire::*;
use crate::error::AckError;
use crate::handler::Cx;
use crate::receipts::{Kind, unread};
use crate::sync::{DEFAULT_SYNC_PAGE, MAX_SYNC_PAGE, decode_cursor, encode_cursor};

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct SyncGet {
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn sync_get<A: Adapter>(cx: Cx<A>, req: SyncGet) -> Result<SyncPage, AckError> {
    let limit = req.limit.unwrap_or(DEFAULT_SYNC_PAGE);
    if !(1..=MAX_SYNC_PAGE).contains(&limit) {
        return Err(AckError::bad_request(format!(
            "limit must be between 1 and {MAX_SYNC_PAGE}"
        )));
    }
    let after = match req.cursor.as_deref() {
        None => 0,
        Some(c) => decode_cursor(c).ok_or_else(|| {
            AckError::bad_request("cursor must be one that sync:get answered with")
        })?,
    };
    let (t, me) = (&cx.id.tenant, &cx.id.user_id);
    let stores = &cx.app.stores;
    let mine = stores.rooms.rooms_of(t, me).await?;
    let page = stores.changes.changed(t, me, &mine, after, limit).await?;
    let ids: Vec<String> = page.rooms.iter().map(|(r, _)| r.clone()).collect();
    let last = stores.history.last_seqs(t, &ids).await?;
    let read = stores.receipts.pointers(t, me, &ids, Kind::Read).await?;
    let messages = stores.history.last_messages(t, &ids).await?;
    let rooms = ids
        .into_iter()
        .zip(last.iter().zip(read))
        .zip(messages)
        .map(|((room_id, (last, read)), last_message)| SyncRoom {
            room_id,
            last_seq: *last,
            unread: unread(*last, read),
            last_message,
        })
        .collect();
    Ok(SyncPage {
        rooms,
        cursor: encode_cursor(page.cursor(after)),
        more: page.more,
    })
}
