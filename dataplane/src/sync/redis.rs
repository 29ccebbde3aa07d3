//! [`ChangeIndex`] on Redis.
//!
//! - `sb:{T}:sync:stamp`: the tenant's last stamp (`INCR`).
//! - `sb:{T}:sync:rooms`: a sorted set, room id → the stamp of its last change.
//! - `sb:{T}:user:{U}:sync`: a sorted set, room id → the stamp of the user's last own
//!   change there (read pointer moved, joined); entries go when they leave the room.
//!
//! A touch takes the stamp and writes it in one script. `changed` is one `ZMSCORE` of the
//! user's rooms in each set, in one script: one round trip whatever the number of rooms.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{LuaInterface, SortedSetsInterface};
use fred::types::Value;

use super::{ChangeIndex, Changed, select};
use crate::error::StoreError;

mod keys {
    /// The tenant's stamp counter.
    pub fn stamp(tenant: &str) -> String {
        format!("sb:{{{tenant}}}:sync:stamp")
    }

    /// Room → stamp of its last change (sorted set).
    pub fn rooms(tenant: &str) -> String {
        format!("sb:{{{tenant}}}:sync:rooms")
    }

    /// One user's own changes: room → stamp (sorted set).
    pub fn user(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:sync")
    }
}

/// KEYS: stamp counter, sorted set. ARGV: room id. Stamps the room in the set.
const TOUCH: &str = r"
local s = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], s, ARGV[1])
return s
";

/// KEYS: sorted sets. ARGV: room id. Removes the room from each.
const FORGET: &str = r"
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return #KEYS
";

/// KEYS: rooms set, the user's set. ARGV: room ids.
/// Returns {room stamps, user stamps}, each one entry per room (nil where none); asks
/// `ZMSCORE` 1000 rooms at a time (Lua's `unpack` has a bound).
const SCORES: &str = r"
local function scores(key)
  local out = {}
  for i = 1, #ARGV, 1000 do
    local part = redis.call('ZMSCORE', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
  end
  return out
end
return {scores(KEYS[1]), scores(KEYS[2])}
";

/// Members whose entries one `FORGET` call removes.
const FORGET_BATCH: usize = 500;

pub struct RedisChanges {
    client: Client,
}

impl RedisChanges {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn touch(&self, tenant: &str, set: String, room_id: &str) -> Result<(), StoreError> {
        let v: Value = self
            .client
            .eval(
                TOUCH,
                vec![keys::stamp(tenant), set],
                vec![room_id.to_owned()],
            )
            .await?;
        match v {
            Value::Integer(_) => Ok(()),
            other => Err(corrupt("touch", &other)),
        }
    }
}

fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected reply {v:?}"))
}

/// One `ZMSCORE` reply to stamps (0 where the room has none).
fn stamps(v: Value, n: usize) -> Result<Vec<u64>, StoreError> {
    let items = match v {
        Value::Array(items) => items,
        other => return Err(corrupt("stamps", &other)),
    };
    if items.len() != n {
        return Err(StoreError::Corrupt(format!(
            "{} stamps for {n} rooms",
            items.len()
        )));
    }
    items
        .into_iter()
        .map(|i| match i {
            Value::Null | Value::Boolean(false) => Ok(0),
            Value::Integer(n) => u64::try_from(n).map_err(|_| corrupt("stamp", &i)),
            // A score comes back as a double (RESP3) or a string (RESP2); stamps are
            // integers below 2^53, which doubles hold exactly.
            Value::Double(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
            Value::String(ref s) => s.parse().map_err(|_| corrupt("stamp", &i)),
            Value::Bytes(ref b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt("stamp", &i)),
            other => Err(corrupt("stamp", &other)),
        })
        .collect()
}

#[async_trait]
impl ChangeIndex for RedisChanges {
    async fn touch_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        self.touch(tenant, keys::rooms(tenant), room_id).await
    }

    async fn touch_user(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError> {
        self.touch(tenant, keys::user(tenant, user_id), room_id)
            .await
    }

    async fn forget_user_room(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .zrem(keys::user(tenant, user_id), room_id)
            .await?;
        Ok(())
    }

    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        members: &[String],
    ) -> Result<(), StoreError> {
        let _: Value = self.client.zrem(keys::rooms(tenant), room_id).await?;
        for chunk in members.chunks(FORGET_BATCH) {
            let keys: Vec<String> = chunk.iter().map(|u| keys::user(tenant, u)).collect();
            let _: Value = self
                .client
                .eval(FORGET, keys, vec![room_id.to_owned()])
                .await?;
        }
        Ok(())
    }

    async fn changed(
        &self,
        tenant: &str,
        user_id: &str,
        rooms: &[String],
        after: u64,
        limit: usize,
    ) -> Result<Changed, StoreError> {
        if rooms.is_empty() {
            return Ok(Changed::default());
        }
        let v: Value = self
            .client
            .eval(
                SCORES,
                vec![keys::rooms(tenant), keys::user(tenant, user_id)],
                rooms.to_vec(),
            )
            .await?;
        let Value::Array(parts) = v else {
            return Err(corrupt("changed", &v));
        };
        let [room, user]: [Value; 2] = parts.try_into().map_err(|p: Vec<Value>| {
            StoreError::Corrupt(format!("changed: {} reply parts", p.len()))
        })?;
        let room = stamps(room, rooms.len())?;
        let user = stamps(user, rooms.len())?;
        Ok(select(rooms, room.into_iter().zip(user), after, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(keys::stamp("acme"), "sb:{acme}:sync:stamp");
        assert_eq!(keys::rooms("acme"), "sb:{acme}:sync:rooms");
        assert_eq!(keys::user("acme", "alice"), "sb:{acme}:user:alice:sync");
    }
}
