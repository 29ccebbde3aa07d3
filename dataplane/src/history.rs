//! Messages: the per-room ordered log (`seq` rises by one per room), idempotent sends,
//! history pages in both directions, and what changes a message after it was sent
//! (edits, deletes as tombstones, reactions; decided in [`change`]).

pub mod change;
pub mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::now_ms;
use crate::error::StoreError;
use change::{Change, Reaction, Reactors, Refusal, State, summarize};

/// `{id, room_id, seq, sender_id, body, ts, client_msg_id?, reply_to?, meta?, edited_at?,
/// edit_count?, deleted?, reactions?, thread_root?, thread_replies?}`. A deleted message
/// (tombstone) has no `body`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Message {
    pub id: String,
    pub room_id: String,
    pub seq: u64,
    pub sender_id: String,
    /// Empty only on a tombstone (a sent body is never empty), and then left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// When it was last edited (or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// Edits so far (bounded by `chat.max_edits`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edit_count: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Filled on reads from the stored reactions; never stored inside the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// The seq of the thread's root when this message is a thread reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<u64>,
    /// Replies in this message's thread. Filled on reads; never stored in the message.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub thread_replies: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A change that was applied (or changed nothing): the message as it is now, reactions
/// included, and the reactions alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    pub message: Message,
    /// `false` when the change was a no-op (nothing to tell the room).
    pub changed: bool,
}

impl Updated {
    fn from_state(state: State, thread_replies: u64, changed: bool) -> Self {
        let mut message = state.message;
        message.reactions = summarize(&state.reactors);
        message.thread_replies = thread_replies;
        Self { message, changed }
    }
}

/// The result of an append: the stored message, and whether it was already there
/// (same sender, same `client_msg_id`).
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    pub message: Message,
    pub duplicate: bool,
}

/// A page request. `after`: the oldest messages with seq > after; `before`: the newest
/// with seq < before; both: a window; neither: the newest. Always returned oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Page {
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: usize,
}

/// What a store keeps besides the length bound (`chat.history_max_len`, given per
/// append): how old a message may get, and how long a `client_msg_id` de-duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Messages whose `ts` is older than this are gone from every read and dropped from
    /// storage (`chat.history_max_age`); `None`: no age limit.
    pub max_age_ms: Option<i64>,
    /// How long a `client_msg_id` is remembered (`chat.idempotency_ttl`).
    pub idempotency_ttl_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_ms: None,
            idempotency_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

impl Retention {
    pub fn from_config(c: &switchboard_crds::config::ChatConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            max_age_ms: Some(ms(c.history_max_age.0)).filter(|a| *a > 0),
            idempotency_ttl_ms: ms(c.idempotency_ttl.0).max(1),
        }
    }

    /// The oldest `ts` still kept at `now`; `None` without an age limit.
    pub fn cutoff(&self, now: i64) -> Option<i64> {
        self.max_age_ms.map(|a| now.saturating_sub(a))
    }

    /// Whether a message is past the age limit at `now`.
    pub fn expired(&self, m: &Message, now: i64) -> bool {
        self.cutoff(now).is_some_and(|c| m.ts < c)
    }
}

/// Room message logs.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Store `msg` (its `seq` is ignored and assigned here), trimming the room's log to
    /// `max_len` and dropping what is past the store's [`Retention`] age. A repeated
    /// `client_msg_id` from the same sender returns the first message while it is kept
    /// and within the retention's idempotency TTL. Reads never return a message past the
    /// age limit.
    async fn append(
        &self,
        tenant: &str,
        msg: Message,
        max_len: u64,
    ) -> Result<Appended, StoreError>;
    async fn page(
        &self,
        tenant: &str,
        room_id: &str,
        page: Page,
    ) -> Result<Vec<Message>, StoreError>;
    /// The last assigned seq of each room (0 for a room without messages).
    async fn last_seqs(&self, tenant: &str, room_ids: &[String]) -> Result<Vec<u64>, StoreError>;
    /// The current version of each room's last message (reactions and thread count
    /// included; `None` for a room without messages), in one step for all of them.
    async fn last_messages(
        &self,
        tenant: &str,
        room_ids: &[String],
    ) -> Result<Vec<Option<Message>>, StoreError>;
    /// The current version of message `seq` (reactions and thread count included), or
    /// `None` when it is not in the log.
    async fn get(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError>;
    /// The replies in thread `root` with seq > `after`, oldest first, at most `limit`
    /// (current versions; replies trimmed from the log are gone from the thread too).
    async fn thread(
        &self,
        tenant: &str,
        room_id: &str,
        root: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// Apply an edit, delete or reaction to message `seq` atomically: [`change::apply`]
    /// decides on the current state. `Refusal::NotFound` when the message is not in the
    /// log (never sent, trimmed, or the room deleted).
    async fn update(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
        change: &Change,
    ) -> Result<Result<Updated, Refusal>, StoreError>;
    /// Forget the room's log, seq counter, edits and reactions (room deletion).
    async fn delete_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError>;
}

/// Select a page from a log sorted by seq (shared by the in-memory store and tests).
pub fn select_page<'a>(
    log: impl DoubleEndedIterator<Item = &'a Message> + Clone,
    p: Page,
) -> Vec<Message> {
    let in_window =
        |m: &&Message| p.after.is_none_or(|a| m.seq > a) && p.before.is_none_or(|b| m.seq < b);
    if p.after.is_some() {
        log.filter(in_window).take(p.limit).cloned().collect()
    } else {
        let mut v: Vec<Message> = log.rev().filter(in_window).take(p.limit).cloned().collect();
        v.reverse();
        v
    }
}

// === impl MemoryHistory ===

#[derive(Default)]
pub struct MemoryHistory {
    inner: Mutex<HashMap<(String, String), RoomLog>>,
    retention: Retention,
}

impl MemoryHistory {
    pub fn with_retention(retention: Retention) -> Self {
        Self {
            inner: Mutex::default(),
            retention,
        }
    }

    /// The rooms (a poisoned lock is taken over: every change leaves them consistent).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), RoomLog>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room's log with what is past the age limit dropped.
    fn room<'a>(
        &self,
        rooms: &'a mut HashMap<(String, String), RoomLog>,
        tenant: &str,
        room_id: &str,
    ) -> Option<&'a mut RoomLog> {
        let room = rooms.get_mut(&(tenant.to_owned(), room_id.to_owned()))?;
        if let Some(cutoff) = self.retention.cutoff(now_ms()) {
            room.expire(cutoff);
        }
        Some(room)
    }
}

#[derive(Default)]
struct RoomLog {
    last_seq: u64,
    /// Current versions (edits and tombstones replace in place), consecutive seqs.
    log: VecDeque<Message>,
    /// Reactions by seq; entries of trimmed messages go with them.
    reactors: HashMap<u64, Vec<Reactors>>,
    /// Thread root → its replies' seqs; a root's entry goes when it is trimmed (its
    /// replies, being later, outlive it by at most the log's length).
    threads: HashMap<u64, std::collections::BTreeSet<u64>>,
    /// (sender, client_msg_id) → the seq of the first message and when the entry
    /// expires (ms); bounded like the log (entries of trimmed messages go).
    by_client_id: HashMap<(String, String), (u64, i64)>,
}

impl RoomLog {
    /// Add what is stored beside a message: its reactions (none on a tombstone) and the
    /// size of its thread.
    fn decorate(&self, m: &mut Message) {
        if !m.deleted
            && let Some(rx) = self.reactors.get(&m.seq)
        {
            m.reactions = summarize(rx);
        }
        m.thread_replies = self.threads.get(&m.seq).map_or(0, |t| t.len() as u64);
    }

    /// Drop the oldest message with what is stored beside it.
    fn drop_oldest(&mut self) {
        if let Some(old) = self.log.pop_front() {
            self.reactors.remove(&old.seq);
            self.threads.remove(&old.seq);
            if let Some(root) = old.thread_root
                && let Some(replies) = self.threads.get_mut(&root)
            {
                replies.remove(&old.seq);
            }
            if let Some(c) = old.client_msg_id {
                self.by_client_id.remove(&(old.sender_id, c));
            }
        }
    }

    /// Drop the messages sent before `cutoff` (ms). Messages are appended in `ts` order,
    /// so those are the oldest ones.
    fn expire(&mut self, cutoff: i64) {
        while self.log.front().is_some_and(|m| m.ts < cutoff) {
            self.drop_oldest();
        }
    }

    /// Where message `seq` is in the log (seqs in it are consecutive).
    fn at(&self, seq: u64) -> Option<usize> {
        self.log
            .front()
            .and_then(|first| seq.checked_sub(first.seq))
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| self.log.get(*i).is_some_and(|m| m.seq == seq))
    }
}

#[async_trait]
impl MessageStore for MemoryHistory {
    async fn append(
        &self,
        tenant: &str,
        mut msg: Message,
        max_len: u64,
    ) -> Result<Appended, StoreError> {
        let now = now_ms();
        let mut rooms = self.lock();
        let room = rooms
            .entry((tenant.to_owned(), msg.room_id.clone()))
            .or_default();
        if let Some(cutoff) = self.retention.cutoff(now) {
            room.expire(cutoff);
        }
        let cid = msg
            .client_msg_id
            .clone()
            .map(|c| (msg.sender_id.clone(), c));
        if let Some(first) = cid
            .as_ref()
            .and_then(|c| room.by_client_id.get(c))
            .filter(|(_, until)| *until > now)
            .and_then(|(seq, _)| room.at(*seq))
            .map(|i| &room.log[i])
        {
            return Ok(Appended {
                message: first.clone(),
                duplicate: true,
            });
        }
        room.last_seq += 1;
        msg.seq = room.last_seq;
        room.log.push_back(msg.clone());
        if let Some(root) = msg.thread_root {
            room.threads.entry(root).or_default().insert(msg.seq);
        }
        if let Some(c) = cid {
            let until = now.saturating_add(self.retention.idempotency_ttl_ms);
            room.by_client_id.insert(c, (msg.seq, until));
        }
        while room.log.len() as u64 > max_len {
            room.drop_oldest();
        }
        Ok(Appended {
            message: msg,
            duplicate: false,
        })
    }

    async fn page(
        &self,
        tenant: &str,
        room_id: &str,
        page: Page,
    ) -> Result<Vec<Message>, StoreError> {
        let mut rooms = self.lock();
        let Some(r) = self.room(&mut rooms, tenant, room_id) else {
            return Ok(vec![]);
        };
        let mut out = select_page(r.log.iter(), page);
        for m in &mut out {
            r.decorate(m);
        }
        Ok(out)
    }

    async fn get(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError> {
        let mut rooms = self.lock();
        let Some(r) = self.room(&mut rooms, tenant, room_id) else {
            return Ok(None);
        };
        Ok(r.at(seq).map(|i| {
            let mut m = r.log[i].clone();
            r.decorate(&mut m);
            m
        }))
    }

    async fn thread(
        &self,
        tenant: &str,
        room_id: &str,
        root: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let mut rooms = self.lock();
        let Some(r) = self.room(&mut rooms, tenant, room_id) else {
            return Ok(vec![]);
        };
        let Some(replies) = r.threads.get(&root) else {
            return Ok(vec![]);
        };
        Ok(replies
            .range(after.saturating_add(1)..)
            .filter_map(|seq| r.at(*seq))
            .take(limit)
            .map(|i| {
                let mut m = r.log[i].clone();
                r.decorate(&mut m);
                m
            })
            .collect())
    }

    async fn last_seqs(&self, tenant: &str, room_ids: &[String]) -> Result<Vec<u64>, StoreError> {
        let rooms = self.lock();
        Ok(room_ids
            .iter()
            .map(|r| {
                rooms
                    .get(&(tenant.to_owned(), r.clone()))
                    .map_or(0, |l| l.last_seq)
            })
            .collect())
    }

    async fn last_messages(
        &self,
        tenant: &str,
        room_ids: &[String],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let mut rooms = self.lock();
        Ok(room_ids
            .iter()
            .map(|r| {
                let room = self.room(&mut rooms, tenant, r)?;
                let mut m = room.log.back()?.clone();
                room.decorate(&mut m);
                Some(m)
            })
            .collect())
    }

    async fn update(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
        change: &Change,
    ) -> Result<Result<Updated, Refusal>, StoreError> {
        let mut rooms = self.lock();
        let Some(room) = self.room(&mut rooms, tenant, room_id) else {
            return Ok(Err(Refusal::NotFound));
        };
        let Some(at) = room.at(seq) else {
            return Ok(Err(Refusal::NotFound));
        };
        let state = State {
            message: room.log[at].clone(),
            reactors: room.reactors.get(&seq).cloned().unwrap_or_default(),
        };
        let replies = room.threads.get(&seq).map_or(0, |t| t.len() as u64);
        match change::apply(&state, change) {
            Err(r) => Ok(Err(r)),
            Ok(None) => Ok(Ok(Updated::from_state(state, replies, false))),
            Ok(Some(next)) => {
                room.log[at] = next.message.clone();
                if next.reactors.is_empty() {
                    room.reactors.remove(&seq);
                } else {
                    room.reactors.insert(seq, next.reactors.clone());
                }
                Ok(Ok(Updated::from_state(next, replies, true)))
            }
        }
    }

    async fn delete_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        let mut rooms = self.lock();
        rooms.remove(&(tenant.to_owned(), room_id.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_log(n: u64) -> Vec<Message> {
        (1..=n)
            .map(|seq| Message {
                id: format!("m{seq}"),
                room_id: "r".into(),
                seq,
                sender_id: "a".into(),
                body: "x".into(),
                ts: 0,
                ..Message::default()
            })
            .collect()
    }

    fn seqs(v: Vec<Message>) -> Vec<u64> {
        v.into_iter().map(|m| m.seq).collect()
    }

    #[test]
    fn pages_in_both_directions_oldest_first() {
        let log = mk_log(10);
        let p = |before, after, limit| {
            seqs(select_page(
                log.iter(),
                Page {
                    before,
                    after,
                    limit,
                },
            ))
        };
        assert_eq!(p(None, None, 3), vec![8, 9, 10]);
        assert_eq!(p(Some(5), None, 3), vec![2, 3, 4]);
        assert_eq!(p(None, Some(5), 3), vec![6, 7, 8]);
        assert_eq!(p(Some(9), Some(2), 100), vec![3, 4, 5, 6, 7, 8]);
        assert_eq!(p(None, Some(10), 3), Vec::<u64>::new());
    }
}
