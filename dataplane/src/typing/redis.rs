//! [`TypingStore`] on Redis.
//!
//! - `sb:{T}:room:{R}:typing`: a hash, user id → `"{expires_at_ms}|{name}"` (the name may
//!   hold `|`: only the first one separates). The key expires a minute past the latest
//!   expiry written to it, so an abandoned room leaves nothing behind.
//!
//! Every change compares with `now` inside a script, so a refresh between reading and
//! removing an indicator cannot be lost. `active` only reads: like the memory store it
//! leaves expired entries to `expire` (whose caller announces the stop). Times are the
//! caller's (`now`, `expires_at`); the key TTL is relative to them, not to the Redis clock.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use fred::types::Value;

use super::{TypingStore, Typist};
use crate::error::StoreError;

/// How long a room's hash outlives its latest expiry, in ms.
const KEY_GRACE_MS: i64 = 60_000;
/// The longest key TTL written, in ms (a year; an indicator lasts seconds).
const MAX_KEY_TTL_MS: i64 = 365 * 24 * 3600 * 1000;

mod keys {
    /// Who is typing in a room.
    pub fn typing(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:typing")
    }
}

/// KEYS: typing hash. ARGV: user id, entry, now, key TTL in ms.
/// Returns 1 when the user was not typing at `now`, 0 when they were, -1 when the stored
/// entry is corrupt (nothing written).
const START: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local fresh = 1
if old then
  local bar = string.find(old, '|', 1, true)
  local exp = bar and tonumber(string.sub(old, 1, bar - 1))
  if not exp then
    return -1
  end
  if exp > tonumber(ARGV[3]) then
    fresh = 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return fresh
";

/// KEYS: typing hash. ARGV: user id, now.
/// Removes the entry; returns 1 when it had not expired at `now`, 0 otherwise, -1 when it
/// is corrupt (nothing removed).
const STOP: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
local bar = string.find(old, '|', 1, true)
local exp = bar and tonumber(string.sub(old, 1, bar - 1))
if not exp then
  return -1
end
redis.call('HDEL', KEYS[1], ARGV[1])
if exp > tonumber(ARGV[2]) then
  return 1
end
return 0
";

/// KEYS: typing hash. ARGV: user id, now.
/// Removes the entry only if it has expired at `now`: 1 removed, 0 not, -1 corrupt.
const EXPIRE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
local bar = string.find(old, '|', 1, true)
local exp = bar and tonumber(string.sub(old, 1, bar - 1))
if not exp then
  return -1
end
if exp <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

pub struct RedisTyping {
    client: Client,
}

impl RedisTyping {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn flag(
        &self,
        script: &str,
        tenant: &str,
        room_id: &str,
        args: Vec<String>,
    ) -> Result<bool, StoreError> {
        let v: Value = self
            .client
            .eval(script, keys::typing(tenant, room_id), args)
            .await?;
        match v {
            Value::Integer(1) => Ok(true),
            Value::Integer(0) => Ok(false),
            Value::Integer(-1) => Err(StoreError::Corrupt(format!(
                "typing entry in room {room_id}"
            ))),
            other => Err(StoreError::Corrupt(format!(
                "typing: unexpected reply {other:?}"
            ))),
        }
    }
}

fn encode(typist: &Typist) -> String {
    format!("{}|{}", typist.expires_at, typist.name)
}

fn decode(user_id: String, entry: &str) -> Result<Typist, StoreError> {
    let (exp, name) = entry
        .split_once('|')
        .ok_or_else(|| StoreError::Corrupt(format!("typing entry {entry:?}")))?;
    let expires_at = exp
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("typing entry {entry:?}")))?;
    Ok(Typist {
        user_id,
        name: name.to_owned(),
        expires_at,
    })
}

fn string(v: Value) -> Result<String, StoreError> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| StoreError::Corrupt("typing entry is not UTF-8".into())),
        other => Err(StoreError::Corrupt(format!(
            "typing: unexpected reply {other:?}"
        ))),
    }
}

#[async_trait]
impl TypingStore for RedisTyping {
    async fn start(
        &self,
        tenant: &str,
        room_id: &str,
        typist: Typist,
        now: i64,
    ) -> Result<bool, StoreError> {
        let ttl = typist
            .expires_at
            .saturating_sub(now)
            .clamp(0, MAX_KEY_TTL_MS)
            .saturating_add(KEY_GRACE_MS);
        let args = vec![
            typist.user_id.clone(),
            encode(&typist),
            now.to_string(),
            ttl.to_string(),
        ];
        self.flag(START, tenant, room_id, args).await
    }

    async fn stop(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.flag(
            STOP,
            tenant,
            room_id,
            vec![user_id.to_owned(), now.to_string()],
        )
        .await
    }

    async fn expire(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.flag(
            EXPIRE,
            tenant,
            room_id,
            vec![user_id.to_owned(), now.to_string()],
        )
        .await
    }

    async fn clear_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        let _: Value = self.client.del(keys::typing(tenant, room_id)).await?;
        Ok(())
    }

    async fn active(
        &self,
        tenant: &str,
        room_id: &str,
        now: i64,
    ) -> Result<Vec<Typist>, StoreError> {
        let v: Value = self.client.hgetall(keys::typing(tenant, room_id)).await?;
        let pairs: Vec<(Value, Value)> = match v {
            Value::Null => vec![],
            Value::Map(mut map) => map.drain().map(|(k, v)| (Value::from(k), v)).collect(),
            Value::Array(items) => {
                if items.len() % 2 != 0 {
                    return Err(StoreError::Corrupt("typing: odd reply".into()));
                }
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "typing: unexpected reply {other:?}"
                )));
            }
        };
        let mut out = Vec::new();
        for (user, entry) in pairs {
            let typist = decode(string(user)?, &string(entry)?)?;
            if typist.expires_at > now {
                out.push(typist);
            }
        }
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_on_the_first_bar() -> Result<(), StoreError> {
        let t = Typist {
            user_id: "a".into(),
            name: "A|B|".into(),
            expires_at: -5,
        };
        assert_eq!(decode("a".into(), &encode(&t))?, t);
        assert!(decode("a".into(), "nope").is_err());
        assert!(decode("a".into(), "x|name").is_err());
        Ok(())
    }

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(
            keys::typing("acme", "general"),
            "sb:{acme}:room:general:typing"
        );
    }
}
