//! [`MessageStore`] on Redis.
//!
//! - `sb:{T}:room:{R}:seq`: the room's last assigned seq (`INCR`).
//! - `sb:{T}:room:{R}:log`: a stream, one entry per message with the explicit id
//!   `<seq>-1` and one field `m`, the message JSON (seq included), trimmed to `max_len`
//!   exactly. History pages are `XRANGE`/`XREVRANGE` on those ids.
//! - `sb:{T}:room:{R}:cmid:{SENDER}:{CLIENT_MSG_ID}`: the seq of the first message with
//!   that `client_msg_id`, expiring after the retention's idempotency TTL
//!   (`chat.idempotency_ttl`). A repeat returns that message while it is still in the
//!   log; once trimmed or expired, a repeat is a new message (as the memory store does). The
//!   entry found must be that sender's message with that `client_msg_id` (the key may
//!   outlive a deleted room whose id was taken again); otherwise the send is new.
//! - `sb:{T}:room:{R}:edits`: a hash, seq → the message's current JSON once it was edited
//!   or deleted (stream entries cannot change); `...:edited` a sorted set of those seqs.
//! - `sb:{T}:room:{R}:reactions`: a hash, seq → the stored reactions as JSON;
//!   `...:reacted` a sorted set of those seqs.
//!
//! - `sb:{T}:room:{R}:threads`: a sorted set (every score 0, ordered by member) of
//!   `<root>:<reply>`, both seqs zero-padded to 20 digits, so a thread pages with
//!   `ZRANGEBYLEX`; `...:thread_counts` a hash, root seq → its number of replies.
//!
//! With an age limit (`chat.history_max_age`), each append first trims the stream of the
//! messages sent before the cutoff (`XTRIM MINID`; they are a prefix, found by a binary
//! search over seqs), and reads leave out any such message they meet (a read that meets
//! one runs the same trim and reads again, so a page is never short because of them).
//!
//! Appends prune the hashes and the thread index below the log's first seq (through the sorted sets, at most
//! [`PRUNE_BATCH`] a time), so what is stored beside the log stays bounded by it.
//! Edits, deletes and reactions are decided in Rust ([`super::change`]) on a read, then
//! written by a compare-and-set script that refuses when anything it read has changed
//! since; the caller reads again and retries.
//!
//! The JSON is serialized by Rust and never decoded in Lua (numbers in `meta` stay as
//! they are): Rust serializes the message with `"seq":0` and hands the text before and
//! after the `0` to the script, which puts the assigned seq between them.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface, StreamsInterface};
use fred::types::Value;

use super::change::{self, Change, Reactors, Refusal, State};
use super::{Appended, Message, MessageStore, Page, Retention, Updated};
use crate::clock::now_ms;
use crate::error::StoreError;

/// Edit and reaction entries of trimmed messages removed per append at most.
const PRUNE_BATCH: u32 = 64;
/// Compare-and-set attempts of one update before giving up as `unavailable`.
const UPDATE_ATTEMPTS: usize = 16;

mod keys {
    /// The room's last assigned seq.
    pub fn seq(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:seq")
    }

    /// The room's message stream.
    pub fn log(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:log")
    }

    /// Current versions of edited or deleted messages (hash, field = seq).
    pub fn edits(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:edits")
    }

    /// The seqs in `edits` (sorted set, score = seq).
    pub fn edited(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:edited")
    }

    /// Reactions per message (hash, field = seq).
    pub fn reactions(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:reactions")
    }

    /// The seqs in `reactions` (sorted set, score = seq).
    pub fn reacted(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:reacted")
    }

    /// Thread replies as `<root>:<reply>` (sorted set, scores 0, lexical order).
    pub fn threads(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:threads")
    }

    /// Replies per thread root (hash, field = root seq).
    pub fn thread_counts(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:thread_counts")
    }

    /// The seq of the first message a sender sent with this `client_msg_id`.
    /// The client id is the last part, so whatever it holds cannot reach another key.
    pub fn client_msg_id(
        tenant: &str,
        room_id: &str,
        sender_id: &str,
        client_msg_id: &str,
    ) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:cmid:{sender_id}:{client_msg_id}")
    }
}

/// Lua: `expire(stream, cutoff)` drops the stream's entries whose message `ts` is before
/// `cutoff` (ms). Messages are appended in `ts` order, so they are a prefix: a binary
/// search over the seqs (consecutive in a log) finds the first one kept.
macro_rules! expire_lua {
    () => {
        r"
local function ts_of(stream, seq)
  local id = string.format('%d', seq) .. '-1'
  local e = redis.call('XRANGE', stream, id, id)
  if #e ~= 1 then
    return nil
  end
  local fields = e[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then
      local ok, m = pcall(cjson.decode, fields[i + 1])
      if ok and type(m) == 'table' and type(m.ts) == 'number' then
        return m.ts
      end
    end
  end
  return nil
end
local function expire(stream, cutoff)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #first == 0 then
    return
  end
  local lo = tonumber(string.match(first[1][1], '^(%d+)'))
  local first_ts = ts_of(stream, lo)
  if not first_ts or first_ts >= cutoff then
    return
  end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local hi = tonumber(string.match(last[1][1], '^(%d+)')) + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local ts = ts_of(stream, mid)
    if ts and ts < cutoff then
      lo = mid + 1
    else
      hi = mid
    end
  end
  redis.call('XTRIM', stream, 'MINID', string.format('%d', lo) .. '-1')
end
"
    };
}

/// KEYS: stream. ARGV: cutoff (ms). Drops the messages sent before the cutoff.
const EXPIRE: &str = concat!(
    expire_lua!(),
    "expire(KEYS[1], tonumber(ARGV[1]))\nreturn 1\n"
);

/// KEYS: seq counter, stream, idempotency key (unused without a client_msg_id), edits,
/// edited, reactions, reacted, threads, thread counts.
/// ARGV: JSON before the seq, JSON after the seq, max_len, "1" when there is a
/// client_msg_id, its TTL in ms, sender id, client_msg_id, prune batch, thread root
/// ("" for none), the age cutoff in ms ("" for none).
/// Returns {seq, 0, ""} for a new message, {seq, 1, json} for a repeat (its current
/// version), {x, 2, why} when the stored data is corrupt.
const APPEND: &str = concat!(
    expire_lua!(),
    r"
if ARGV[10] ~= '' then
  expire(KEYS[2], tonumber(ARGV[10]))
end
if ARGV[4] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    if not string.match(prev, '^%d+$') then
      return {prev, 2, 'client_msg_id entry is not a seq'}
    end
    local found = redis.call('XRANGE', KEYS[2], prev .. '-1', prev .. '-1')
    if #found == 1 then
      local fields = found[1][2]
      local json = nil
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then
          json = fields[i + 1]
        end
      end
      if not json then
        return {prev, 2, 'stream entry without field m'}
      end
      local ok, m = pcall(cjson.decode, json)
      if ok and type(m) == 'table' and m.sender_id == ARGV[6] and m.client_msg_id == ARGV[7] then
        return {prev, 1, redis.call('HGET', KEYS[4], prev) or json}
      end
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A lost counter restarts after the last entry, never below it (XADD would refuse).
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last == 1 then
    redis.call('SET', KEYS[1], string.match(last[1][1], '^%d+'))
  end
end
redis.call('INCR', KEYS[1])
local seq = redis.call('GET', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-1', 'm', ARGV[1] .. seq .. ARGV[2])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], seq, 'PX', ARGV[5])
end
local function pad(n)
  return string.rep('0', 20 - #n) .. n
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[8], 0, pad(ARGV[9]) .. ':' .. pad(seq))
  redis.call('HINCRBY', KEYS[9], ARGV[9], 1)
end
-- What is stored beside entries no longer in the stream (trimmed by length or age) goes.
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local floor = tonumber(string.match(head[1][1], '^(%d+)')) - 1
if floor > 0 then
  for i = 4, 6, 2 do
    local old = redis.call('ZRANGEBYSCORE', KEYS[i + 1], '-inf', floor, 'LIMIT', 0, tonumber(ARGV[8]))
    if #old > 0 then
      redis.call('HDEL', KEYS[i], unpack(old))
      redis.call('ZREM', KEYS[i + 1], unpack(old))
    end
  end
  -- Threads whose root is trimmed: their index entries and counts.
  local gone = redis.call('ZRANGEBYLEX', KEYS[8], '-', '[' .. pad(string.format('%d', floor)) .. ':~', 'LIMIT', 0, tonumber(ARGV[8]))
  if #gone > 0 then
    for _, e in ipairs(gone) do
      redis.call('HDEL', KEYS[9], string.match(string.sub(e, 1, 20), '^0*(%d+)$'))
    end
    redis.call('ZREM', KEYS[8], unpack(gone))
  end
end
return {seq, 0, ''}
"
);

/// KEYS: stream, edits, reactions, thread counts. ARGV: seq.
/// Returns {stream JSON, edit JSON, reactions JSON, thread replies}, each nil when absent.
const READ: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-1', ARGV[1] .. '-1')
local json = false
if #found == 1 then
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then
      json = fields[i + 1]
    end
  end
end
return {json, redis.call('HGET', KEYS[2], ARGV[1]), redis.call('HGET', KEYS[3], ARGV[1]),
  redis.call('HGET', KEYS[4], ARGV[1])}
";

/// KEYS: threads, stream. ARGV: lexical min, lexical max, limit.
/// Returns the stream entries of the thread's replies in that range, oldest first
/// (replies no longer in the stream are skipped).
const THREAD: &str = r"
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, e in ipairs(ids) do
  local seq = string.match(string.sub(e, 22), '^0*(%d+)$')
  local found = redis.call('XRANGE', KEYS[2], seq .. '-1', seq .. '-1')
  if #found == 1 then
    out[#out + 1] = found[1]
  end
end
return out
";

/// KEYS: per room, its stream, edits, reactions and thread counts (4 keys a room).
/// Returns per room false (no messages) or {last stream entry, edit, reactions, thread
/// replies} (each of the last three false when absent).
const LAST: &str = r"
local out = {}
for i = 1, #KEYS, 4 do
  local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  if #last == 1 then
    local seq = string.match(last[1][1], '^(%d+)')
    out[#out + 1] = {last[1], redis.call('HGET', KEYS[i + 1], seq),
      redis.call('HGET', KEYS[i + 2], seq), redis.call('HGET', KEYS[i + 3], seq)}
  else
    out[#out + 1] = false
  end
end
return out
";

/// A seq zero-padded to 20 digits (every u64 fits), as in the thread index.
fn pad(seq: u64) -> String {
    format!("{seq:020}")
}

/// KEYS: stream, edits, edited, reactions, reacted.
/// ARGV: seq, the stream JSON read, the edit read ('' none), the reactions read ('' none),
/// the new edit ('' none), the new reactions ('' none).
/// Returns 0 when the message is gone, 1 when something changed since the read (nothing
/// written), 2 when written.
const UPDATE: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-1', ARGV[1] .. '-1')
if #found ~= 1 then
  return 0
end
local fields = found[1][2]
local json = nil
for i = 1, #fields, 2 do
  if fields[i] == 'm' then
    json = fields[i + 1]
  end
end
if json ~= ARGV[2] then
  return 1
end
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[3] then
  return 1
end
if (redis.call('HGET', KEYS[4], ARGV[1]) or '') ~= ARGV[4] then
  return 1
end
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])
end
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
else
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[1], ARGV[1])
end
return 2
";

pub struct RedisHistory {
    client: Client,
    retention: Retention,
}

impl RedisHistory {
    /// A store with the default [`Retention`] (no age limit).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            retention: Retention::default(),
        }
    }

    pub fn with_retention(self, retention: Retention) -> Self {
        Self { retention, ..self }
    }

    /// Leave out the messages past the age limit at `now`; `true` when there were any.
    fn drop_expired(&self, out: &mut Vec<Message>, now: i64) -> bool {
        let before = out.len();
        out.retain(|m| !self.retention.expired(m, now));
        out.len() != before
    }

    /// What `read` returns, less the messages past the age limit. When it met some, they
    /// were a prefix the read would have been filled past: the stream is trimmed of them
    /// and read again, so a page is never cut short by them.
    async fn unexpired<F, Fut>(
        &self,
        tenant: &str,
        room_id: &str,
        read: F,
    ) -> Result<Vec<Message>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Message>, StoreError>>,
    {
        let now = now_ms();
        let mut out = read().await?;
        if self.drop_expired(&mut out, now)
            && let Some(cutoff) = self.retention.cutoff(now)
        {
            self.expire(tenant, room_id, cutoff).await?;
            out = read().await?;
            self.drop_expired(&mut out, now);
        }
        Ok(out)
    }

    /// Trim the room's stream of the messages past the age limit.
    async fn expire(&self, tenant: &str, room_id: &str, cutoff: i64) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .eval(
                EXPIRE,
                vec![keys::log(tenant, room_id)],
                vec![cutoff.to_string()],
            )
            .await?;
        Ok(())
    }

    /// Replies of a thread as stored (no overlay, no age filter).
    async fn raw_thread(
        &self,
        tenant: &str,
        room_id: &str,
        root: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let v: Value = self
            .client
            .eval(
                THREAD,
                vec![keys::threads(tenant, room_id), keys::log(tenant, room_id)],
                vec![
                    format!("({}:{}", pad(root), pad(after)),
                    format!("[{}:~", pad(root)),
                    limit.to_string(),
                ],
            )
            .await?;
        entries_to_messages(v)
    }

    /// One page from the stream as stored (no overlay, no age filter).
    async fn raw_page(
        &self,
        tenant: &str,
        room_id: &str,
        page: Page,
    ) -> Result<Vec<Message>, StoreError> {
        let key = keys::log(tenant, room_id);
        // fred refuses counts from i64::MAX up; no log is that long anyway.
        let count = Some(
            u64::try_from(page.limit)
                .unwrap_or(u64::MAX)
                .min(i64::MAX as u64 - 1),
        );
        let end = page.before.map_or_else(|| "+".to_owned(), exclusive);
        Ok(match page.after {
            // The oldest `limit` in (after, before).
            Some(after) => {
                let v: Value = self
                    .client
                    .xrange(key, exclusive(after), end, count)
                    .await?;
                entries_to_messages(v)?
            }
            // The newest `limit` below `before`, then oldest first.
            None => {
                let v: Value = self.client.xrevrange(key, end, "-", count).await?;
                let mut out = entries_to_messages(v)?;
                out.reverse();
                out
            }
        })
    }

    /// Replace the messages of a page by their current versions and add their reactions
    /// (tombstones show none) and thread sizes.
    async fn overlay(
        &self,
        tenant: &str,
        room_id: &str,
        page: &mut [Message],
    ) -> Result<(), StoreError> {
        if page.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = page.iter().map(|m| m.seq.to_string()).collect();
        let edits = self
            .fields(keys::edits(tenant, room_id), fields.clone())
            .await?;
        let reactions = self
            .fields(keys::reactions(tenant, room_id), fields.clone())
            .await?;
        let threads = self
            .fields(keys::thread_counts(tenant, room_id), fields)
            .await?;
        for (((m, edit), reactions), replies) in
            page.iter_mut().zip(edits).zip(reactions).zip(threads)
        {
            decorate(m, edit, reactions, replies)?;
        }
        Ok(())
    }

    /// `HMGET` of some fields, one `Option` per field.
    async fn fields(
        &self,
        key: String,
        fields: Vec<String>,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let n = fields.len();
        let v: Value = self.client.hmget(key, fields).await?;
        let items = match v {
            Value::Array(items) => items,
            // fred may hand a one-field reply back unwrapped.
            other if n == 1 => vec![other],
            other => return Err(corrupt("hmget", &other)),
        };
        if items.len() != n {
            return Err(StoreError::Corrupt(format!(
                "{} values for {n} fields",
                items.len()
            )));
        }
        items
            .into_iter()
            .map(|i| opt_string(i, "hash field"))
            .collect()
    }
}

/// Make a message read from the stream its current version: its edit (or tombstone) if
/// any, its reactions (none on a tombstone) and its thread size.
fn decorate(
    m: &mut Message,
    edit: Option<String>,
    reactions: Option<String>,
    replies: Option<String>,
) -> Result<(), StoreError> {
    if let Some(edit) = edit {
        let current: Message = serde_json::from_str(&edit)?;
        if current.seq != m.seq {
            return Err(StoreError::Corrupt(format!(
                "edit of seq {} stored for {}",
                current.seq, m.seq
            )));
        }
        *m = current;
    }
    if let Some(r) = reactions.filter(|_| !m.deleted) {
        let stored: Vec<Reactors> = serde_json::from_str(&r)?;
        m.reactions = change::summarize(&stored);
    }
    if let Some(n) = replies {
        m.thread_replies = parse_seq(&n, "thread replies")?;
    }
    Ok(())
}

fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected reply {v:?}"))
}

fn opt_string(v: Value, what: &str) -> Result<Option<String>, StoreError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{what}: not UTF-8"))),
        other => Err(corrupt(what, &other)),
    }
}

fn string(v: Value, what: &str) -> Result<String, StoreError> {
    opt_string(v, what)?.ok_or_else(|| StoreError::Corrupt(format!("{what}: nil")))
}

fn parse_seq(s: &str, what: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {s:?} is not a seq")))
}

/// The message JSON split around its seq: `(before, after)` such that
/// `before + seq + after` is the message with that seq.
fn split_at_seq(json: &str) -> Result<(&str, &str), StoreError> {
    // `seq` is the third field, after two JSON strings, which cannot hold an unescaped
    // quote: the first match is the message's own seq, never one inside `meta`.
    const FIELD: &str = "\"seq\":";
    let at = json
        .find("\"seq\":0")
        .ok_or_else(|| StoreError::Corrupt("serialized message has no seq".into()))?;
    let split = at + FIELD.len();
    Ok((&json[..split], &json[split + 1..]))
}

/// An exclusive bound on the stream id of a seq.
fn exclusive(seq: u64) -> String {
    format!("({seq}-1")
}

/// One stream entry `[id, [field, value, ...]]` to its message.
fn entry_to_message(entry: Value) -> Result<Message, StoreError> {
    let Value::Array(mut parts) = entry else {
        return Err(corrupt("stream entry", &entry));
    };
    if parts.len() != 2 {
        return Err(StoreError::Corrupt(format!(
            "stream entry has {} parts",
            parts.len()
        )));
    }
    let fields = parts.pop().unwrap_or(Value::Null);
    let id = string(parts.pop().unwrap_or(Value::Null), "stream entry id")?;
    let seq = match id.split_once('-') {
        Some((seq, "1")) => parse_seq(seq, "stream entry id")?,
        _ => return Err(StoreError::Corrupt(format!("stream entry id {id:?}"))),
    };
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(items) => {
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(mut map) => map.drain().map(|(k, v)| (Value::from(k), v)).collect(),
        other => return Err(corrupt("stream entry fields", &other)),
    };
    for (k, v) in pairs {
        if opt_string(k, "stream field")?.as_deref() == Some("m") {
            let msg: Message = serde_json::from_str(&string(v, "stream field m")?)?;
            if msg.seq != seq {
                return Err(StoreError::Corrupt(format!(
                    "message seq {} in entry {id}",
                    msg.seq
                )));
            }
            return Ok(msg);
        }
    }
    Err(StoreError::Corrupt(format!(
        "stream entry {id} has no field m"
    )))
}

fn entries_to_messages(v: Value) -> Result<Vec<Message>, StoreError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(entries) => entries.into_iter().map(entry_to_message).collect(),
        other => Err(corrupt("stream range", &other)),
    }
}

#[async_trait]
impl MessageStore for RedisHistory {
    async fn append(
        &self,
        tenant: &str,
        mut msg: Message,
        max_len: u64,
    ) -> Result<Appended, StoreError> {
        msg.seq = 0;
        let json = serde_json::to_string(&msg)?;
        let (before, after) = split_at_seq(&json)?;
        let cmid_key = match &msg.client_msg_id {
            Some(c) => keys::client_msg_id(tenant, &msg.room_id, &msg.sender_id, c),
            // Never read or written; a key of the same slot keeps cluster routing happy.
            None => keys::seq(tenant, &msg.room_id),
        };
        let reply: Value = self
            .client
            .eval(
                APPEND,
                vec![
                    keys::seq(tenant, &msg.room_id),
                    keys::log(tenant, &msg.room_id),
                    cmid_key,
                    keys::edits(tenant, &msg.room_id),
                    keys::edited(tenant, &msg.room_id),
                    keys::reactions(tenant, &msg.room_id),
                    keys::reacted(tenant, &msg.room_id),
                    keys::threads(tenant, &msg.room_id),
                    keys::thread_counts(tenant, &msg.room_id),
                ],
                vec![
                    before.to_owned(),
                    after.to_owned(),
                    max_len.to_string(),
                    if msg.client_msg_id.is_some() {
                        "1"
                    } else {
                        "0"
                    }
                    .to_owned(),
                    self.retention.idempotency_ttl_ms.to_string(),
                    msg.sender_id.clone(),
                    msg.client_msg_id.clone().unwrap_or_default(),
                    PRUNE_BATCH.to_string(),
                    msg.thread_root.map(|r| r.to_string()).unwrap_or_default(),
                    self.retention
                        .cutoff(now_ms())
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                ],
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("append", &reply));
        };
        let [seq, kind, extra]: [Value; 3] = parts.try_into().map_err(|p: Vec<Value>| {
            StoreError::Corrupt(format!("append: {} reply parts", p.len()))
        })?;
        let seq = string(seq, "append seq")?;
        match kind {
            Value::Integer(0) => {
                msg.seq = parse_seq(&seq, "room seq counter")?;
                Ok(Appended {
                    message: msg,
                    duplicate: false,
                })
            }
            Value::Integer(1) => {
                let first: Message = serde_json::from_str(&string(extra, "first message")?)?;
                if first.seq != parse_seq(&seq, "client_msg_id entry")? {
                    return Err(StoreError::Corrupt(format!(
                        "first message has seq {} not {seq}",
                        first.seq
                    )));
                }
                Ok(Appended {
                    message: first,
                    duplicate: true,
                })
            }
            Value::Integer(2) => Err(StoreError::Corrupt(format!(
                "append: {} (seq {seq:?})",
                opt_string(extra, "append")?.unwrap_or_default()
            ))),
            other => Err(corrupt("append", &other)),
        }
    }

    async fn page(
        &self,
        tenant: &str,
        room_id: &str,
        page: Page,
    ) -> Result<Vec<Message>, StoreError> {
        if page.limit == 0 {
            return Ok(vec![]);
        }
        let mut out = self
            .unexpired(tenant, room_id, || self.raw_page(tenant, room_id, page))
            .await?;
        self.overlay(tenant, room_id, &mut out).await?;
        Ok(out)
    }

    async fn last_seqs(&self, tenant: &str, room_ids: &[String]) -> Result<Vec<u64>, StoreError> {
        if room_ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = room_ids.iter().map(|r| keys::seq(tenant, r)).collect();
        let v: Value = self.client.mget(keys).await?;
        let items = match v {
            Value::Array(items) => items,
            // fred may hand a one-key reply back unwrapped.
            other if room_ids.len() == 1 => vec![other],
            other => return Err(corrupt("last seqs", &other)),
        };
        if items.len() != room_ids.len() {
            return Err(StoreError::Corrupt(format!(
                "{} seqs for {} rooms",
                items.len(),
                room_ids.len()
            )));
        }
        items
            .into_iter()
            .map(|i| match opt_string(i, "room seq counter")? {
                None => Ok(0),
                Some(s) => parse_seq(&s, "room seq counter"),
            })
            .collect()
    }

    async fn last_messages(
        &self,
        tenant: &str,
        room_ids: &[String],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        if room_ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = room_ids
            .iter()
            .flat_map(|r| {
                [
                    keys::log(tenant, r),
                    keys::edits(tenant, r),
                    keys::reactions(tenant, r),
                    keys::thread_counts(tenant, r),
                ]
            })
            .collect();
        let now = now_ms();
        let v: Value = self.client.eval(LAST, keys, Vec::<String>::new()).await?;
        let Value::Array(items) = v else {
            return Err(corrupt("last messages", &v));
        };
        if items.len() != room_ids.len() {
            return Err(StoreError::Corrupt(format!(
                "{} last messages for {} rooms",
                items.len(),
                room_ids.len()
            )));
        }
        items
            .into_iter()
            .map(|item| match item {
                Value::Null => Ok(None),
                Value::Array(parts) => {
                    let [entry, edit, reactions, replies]: [Value; 4] =
                        parts.try_into().map_err(|p: Vec<Value>| {
                            StoreError::Corrupt(format!("last message: {} parts", p.len()))
                        })?;
                    let mut m = entry_to_message(entry)?;
                    if self.retention.expired(&m, now) {
                        return Ok(None);
                    }
                    decorate(
                        &mut m,
                        opt_string(edit, "edit")?,
                        opt_string(reactions, "reactions")?,
                        opt_string(replies, "thread replies")?,
                    )?;
                    Ok(Some(m))
                }
                other => Err(corrupt("last message", &other)),
            })
            .collect()
    }

    async fn get(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError> {
        let page = Page {
            before: Some(seq.saturating_add(1)),
            after: Some(seq.saturating_sub(1)),
            limit: 1,
        };
        if seq == 0 {
            return Ok(None);
        }
        Ok(self
            .page(tenant, room_id, page)
            .await?
            .into_iter()
            .find(|m| m.seq == seq))
    }

    async fn thread(
        &self,
        tenant: &str,
        room_id: &str,
        root: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let mut out = self
            .unexpired(tenant, room_id, || {
                self.raw_thread(tenant, room_id, root, after, limit)
            })
            .await?;
        if let Some(stray) = out.iter().find(|m| m.thread_root != Some(root)) {
            return Err(StoreError::Corrupt(format!(
                "message {} in the thread of {root}",
                stray.seq
            )));
        }
        self.overlay(tenant, room_id, &mut out).await?;
        Ok(out)
    }

    async fn update(
        &self,
        tenant: &str,
        room_id: &str,
        seq: u64,
        change: &Change,
    ) -> Result<Result<Updated, Refusal>, StoreError> {
        let seq_s = seq.to_string();
        for _ in 0..UPDATE_ATTEMPTS {
            let reply: Value = self
                .client
                .eval(
                    READ,
                    vec![
                        keys::log(tenant, room_id),
                        keys::edits(tenant, room_id),
                        keys::reactions(tenant, room_id),
                        keys::thread_counts(tenant, room_id),
                    ],
                    vec![seq_s.clone()],
                )
                .await?;
            let Value::Array(parts) = reply else {
                return Err(corrupt("read", &reply));
            };
            let [entry, edit, reactions, replies]: [Value; 4] =
                parts.try_into().map_err(|p: Vec<Value>| {
                    StoreError::Corrupt(format!("read: {} reply parts", p.len()))
                })?;
            let replies = match opt_string(replies, "thread replies")? {
                Some(n) => parse_seq(&n, "thread replies")?,
                None => 0,
            };
            let Some(entry) = opt_string(entry, "stream field m")? else {
                return Ok(Err(Refusal::NotFound));
            };
            let edit = opt_string(edit, "edit")?.unwrap_or_default();
            let reactions = opt_string(reactions, "reactions")?.unwrap_or_default();
            let original: Message = serde_json::from_str(&entry)?;
            if self.retention.expired(&original, now_ms()) {
                return Ok(Err(Refusal::NotFound));
            }
            let message: Message = if edit.is_empty() {
                original.clone()
            } else {
                serde_json::from_str(&edit)?
            };
            if message.seq != seq {
                return Err(StoreError::Corrupt(format!(
                    "message seq {} stored for {seq}",
                    message.seq
                )));
            }
            let reactors: Vec<Reactors> = if reactions.is_empty() {
                vec![]
            } else {
                serde_json::from_str(&reactions)?
            };
            let state = State { message, reactors };
            let next = match change::apply(&state, change) {
                Err(r) => return Ok(Err(r)),
                Ok(None) => return Ok(Ok(Updated::from_state(state, replies, false))),
                Ok(Some(next)) => next,
            };
            let new_edit = if next.message == original {
                String::new()
            } else {
                serde_json::to_string(&next.message)?
            };
            let new_reactions = if next.reactors.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&next.reactors)?
            };
            let done: Value = self
                .client
                .eval(
                    UPDATE,
                    vec![
                        keys::log(tenant, room_id),
                        keys::edits(tenant, room_id),
                        keys::edited(tenant, room_id),
                        keys::reactions(tenant, room_id),
                        keys::reacted(tenant, room_id),
                    ],
                    vec![
                        seq_s.clone(),
                        entry,
                        edit,
                        reactions,
                        new_edit,
                        new_reactions,
                    ],
                )
                .await?;
            match done {
                Value::Integer(0) => return Ok(Err(Refusal::NotFound)),
                Value::Integer(1) => continue,
                Value::Integer(2) => {
                    return Ok(Ok(Updated::from_state(next, replies, true)));
                }
                other => return Err(corrupt("update", &other)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "message {seq} of room {room_id} kept changing for {UPDATE_ATTEMPTS} attempts"
        )))
    }

    async fn delete_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .del(vec![
                keys::seq(tenant, room_id),
                keys::log(tenant, room_id),
                keys::edits(tenant, room_id),
                keys::edited(tenant, room_id),
                keys::reactions(tenant, room_id),
                keys::reacted(tenant, room_id),
                keys::threads(tenant, room_id),
                keys::thread_counts(tenant, room_id),
            ])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(id: &str, meta: Option<serde_json::Value>) -> Message {
        Message {
            id: id.into(),
            room_id: "general".into(),
            seq: 0,
            sender_id: "alice".into(),
            body: "\"seq\":0 in the body".into(),
            ts: 1,
            client_msg_id: Some("c\"seq\":0".into()),
            reply_to: Some(3),
            meta,
            ..Message::default()
        }
    }

    #[test]
    fn the_seq_is_spliced_where_serde_put_it() -> Result<(), StoreError> {
        let meta = json!({"seq": 0, "big": 12_345_678_901_234_567_890_u64, "f": 0.1, "n": -7});
        for id in ["m1", "\"seq\":0", "x\\", "\\\"seq\\\":0"] {
            let mut m = msg(id, Some(meta.clone()));
            let json = serde_json::to_string(&m)?;
            let (before, after) = split_at_seq(&json)?;
            let stored = format!("{before}{}{after}", 18_446_744_073_709_551_615_u64);
            m.seq = u64::MAX;
            let back: Message = serde_json::from_str(&stored)?;
            assert_eq!(back, m, "{id}");
            assert_eq!(back.meta, Some(meta.clone()));
        }
        Ok(())
    }

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(keys::seq("acme", "general"), "sb:{acme}:room:general:seq");
        assert_eq!(keys::log("acme", "general"), "sb:{acme}:room:general:log");
        assert_eq!(
            keys::client_msg_id("acme", "general", "alice", "c1"),
            "sb:{acme}:room:general:cmid:alice:c1"
        );
        assert_eq!(exclusive(7), "(7-1");
        for (key, name) in [
            (keys::edits("acme", "general"), "edits"),
            (keys::edited("acme", "general"), "edited"),
            (keys::reactions("acme", "general"), "reactions"),
            (keys::reacted("acme", "general"), "reacted"),
            (keys::threads("acme", "general"), "threads"),
            (keys::thread_counts("acme", "general"), "thread_counts"),
        ] {
            assert_eq!(key, format!("sb:{{acme}}:room:general:{name}"));
        }
        assert_eq!(pad(42), "00000000000000000042");
        assert_eq!(pad(u64::MAX).len(), 20);
    }
}
