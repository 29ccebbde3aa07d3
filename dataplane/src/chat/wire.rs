//! What /chat sends: the acks' `data` and the server → client events. The handlers
//! build these types, and the contract documents are generated from them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::contract::ServerEvent;
use crate::history::Message;
use crate::history::change::Reaction;
use crate::hub::CHAT;
use crate::receipts::Privacy;
use crate::rooms::Room;

/// `{room}`: `room:join`, `room:set-slow-mode`.
#[derive(Serialize, JsonSchema)]
pub struct RoomAck {
    pub room: Room,
}

/// `{room, skipped, banned, declined}`: `room:create`, `room:invite`.
#[derive(Serialize, JsonSchema)]
pub struct RoomAdded {
    pub room: Room,
    /// Users not added: banned, declining adds by others (`privacy:set {room_adds:
    /// "nobody"}`), or already added to `limits.max_rooms_per_user` rooms by others.
    pub skipped: Vec<String>,
    /// Those of `skipped` banned from the room.
    pub banned: Vec<String>,
    /// Those of `skipped` whose privacy declines adds by others.
    pub declined: Vec<String>,
}

/// One member and whether they are online (invisible users show offline).
#[derive(Serialize, JsonSchema)]
pub struct Member {
    pub user_id: String,
    pub online: bool,
}

/// `room:members`.
#[derive(Serialize, JsonSchema)]
pub struct Members {
    pub members: Vec<Member>,
}

/// `message:send`.
#[derive(Serialize, JsonSchema)]
pub struct Sent {
    pub message: Message,
    /// The `client_msg_id` was seen from this sender: this is the first message.
    pub duplicate: bool,
}

/// `{message}`: `message:edit`, `message:delete`; the events `message:new` and
/// `message:updated`.
#[derive(Serialize, JsonSchema)]
pub struct MessageAck {
    pub message: Message,
}

/// `{messages}`, oldest first: `message:history`, `message:thread`.
#[derive(Serialize, JsonSchema)]
pub struct Messages {
    pub messages: Vec<Message>,
}

/// `{reactions}`: `message:react`.
#[derive(Serialize, JsonSchema)]
pub struct ReactionsAck {
    pub reactions: Vec<Reaction>,
}

/// `message:reactions`.
#[derive(Serialize, JsonSchema)]
pub struct ReactionsEvent {
    pub room_id: String,
    pub seq: u64,
    pub reactions: Vec<Reaction>,
}

/// `{unread}`: `receipt:read`.
#[derive(Serialize, JsonSchema)]
pub struct Unread {
    pub unread: u64,
}

/// `{unread: {room_id: n}}`: `receipt:batch`.
#[derive(Serialize, JsonSchema)]
pub struct UnreadByRoom {
    pub unread: BTreeMap<String, u64>,
}

/// `{counts: {room_id: n}}`: `unread:get`.
#[derive(Serialize, JsonSchema)]
pub struct Counts {
    pub counts: BTreeMap<String, u64>,
}

/// `receipt:read` and `receipt:delivered` events: a user's pointer after the update.
#[derive(Serialize, JsonSchema)]
pub struct Receipt {
    pub room_id: String,
    pub user_id: String,
    pub up_to_seq: u64,
}

/// `typing:update`.
#[derive(Serialize, JsonSchema)]
pub struct TypingUpdate {
    pub room_id: String,
    pub user_id: String,
    pub typing: bool,
}

/// `typing:aggregated` and the `typing:get-aggregated` ack: typers ordered by user id.
#[derive(Serialize, JsonSchema)]
pub struct Aggregated {
    pub room_id: String,
    pub user_ids: Vec<String>,
    /// `"Alice is typing..."`, `"Alice and Bob are typing..."`, ...; empty when nobody is.
    pub display_text: String,
}

/// `{privacy}`: `privacy:set`.
#[derive(Serialize, JsonSchema)]
pub struct PrivacyAck {
    pub privacy: Privacy,
}

/// One changed room of a `sync:get` page.
#[derive(Serialize, JsonSchema)]
pub struct SyncRoom {
    pub room_id: String,
    pub last_seq: u64,
    pub unread: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
}

/// `sync:get`.
#[derive(Serialize, JsonSchema)]
pub struct SyncPage {
    pub rooms: Vec<SyncRoom>,
    /// Opaque; pass it to the next `sync:get`.
    pub cursor: String,
    /// Call again at once with `cursor`.
    pub more: bool,
}

/// `room:deleted`.
#[derive(Serialize, JsonSchema)]
pub struct RoomDeleted {
    pub room_id: String,
}

/// `room:kicked` (also after a ban).
#[derive(Serialize, JsonSchema)]
pub struct Kicked {
    pub room_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// /chat's server → client events.
pub fn server_events() -> Vec<ServerEvent> {
    vec![
        ServerEvent::of::<MessageAck>(
            CHAT,
            "message:new",
            "A message in one of your rooms (not to the sending socket).",
        ),
        ServerEvent::of::<MessageAck>(
            CHAT,
            "message:updated",
            "A message was edited or deleted (a tombstone).",
        ),
        ServerEvent::of::<ReactionsEvent>(
            CHAT,
            "message:reactions",
            "A message's reactions changed.",
        ),
        ServerEvent::of::<Receipt>(CHAT, "receipt:read", "A member's read pointer moved."),
        ServerEvent::of::<Receipt>(
            CHAT,
            "receipt:delivered",
            "A member's delivered pointer moved.",
        ),
        ServerEvent::of::<TypingUpdate>(
            CHAT,
            "typing:update",
            "A member started or stopped typing.",
        ),
        ServerEvent::of::<Aggregated>(
            CHAT,
            "typing:aggregated",
            "Who is typing in a room now, with the display text.",
        ),
        ServerEvent::of::<RoomDeleted>(CHAT, "room:deleted", "A room you are in was deleted."),
        ServerEvent::of::<Kicked>(
            CHAT,
            "room:kicked",
            "You were kicked or banned from a room.",
        ),
    ]
}
