//! [`RoomStore`] on Redis.
//!
//! - `sb:{T}:room:{R}`: the room as a JSON string (`SET NX` on create).
//! - `sb:{T}:room:{R}:members`: a sorted set of user ids, every score 0, so `ZRANGE 0 n`
//!   gives the first members in id (byte) order without reading the whole room.
//! - `sb:{T}:user:{U}:rooms`: a set of the room ids a user belongs to (the room limit).
//!
//! Membership changes touch both, in one script. Deleting a room reads its members, then
//! removes the room, its members and each member's entry in one script that first checks
//! the member count is still what was read (a join in between makes the caller retry).

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface, SetsInterface, SortedSetsInterface};
use fred::types::{SetOptions, Value};

use super::{Added, Room, RoomStore};
use crate::error::StoreError;

mod keys {
    /// The room's JSON.
    pub fn room(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}")
    }

    /// The room's members (sorted set, scores 0).
    pub fn members(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:members")
    }

    /// The rooms a user belongs to (set).
    pub fn user_rooms(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:rooms")
    }
}

/// KEYS: members, user's rooms. ARGV: room id, user id, max rooms.
/// Returns 0 added, 1 already a member, 2 too many rooms.
const ADD_MEMBER: &str = r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 2
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return 0
";

/// KEYS: members, user's rooms. ARGV: room id, user id. Returns 1 when the user was a member.
const REMOVE_MEMBER: &str = r"
local was = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
return was
";

/// KEYS: room, members, then each member's rooms set. ARGV: room id, member count read.
/// Returns -1 when there is no room, -2 when the members changed since the read (nothing
/// done), else the number of members removed.
const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[2]) then
  return -2
end
for i = 3, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[2])
return #KEYS - 2
";

/// Attempts of a room deletion that races joins before giving up as `unavailable`.
const DELETE_ATTEMPTS: usize = 8;

pub struct RedisRooms {
    client: Client,
}

impl RedisRooms {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected reply {v:?}"))
}

/// A bulk string reply; `None` for nil.
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

/// An array of strings (sets come back as arrays, or as RESP3 sets that fred gives as arrays).
fn strings(v: Value, what: &str) -> Result<Vec<String>, StoreError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| {
                opt_string(i, what)?
                    .ok_or_else(|| StoreError::Corrupt(format!("{what}: nil member")))
            })
            .collect(),
        other => Err(corrupt(what, &other)),
    }
}

#[async_trait]
impl RoomStore for RedisRooms {
    async fn create(&self, tenant: &str, room: &Room) -> Result<bool, StoreError> {
        let json = serde_json::to_string(room)?;
        let set: Value = self
            .client
            .set(
                keys::room(tenant, &room.id),
                json,
                None,
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(!set.is_null())
    }

    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError> {
        let v: Value = self.client.get(keys::room(tenant, room_id)).await?;
        match opt_string(v, "room")? {
            None => Ok(None),
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
        }
    }

    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError> {
        let v: Value = self
            .client
            .eval(
                ADD_MEMBER,
                vec![
                    keys::members(tenant, room_id),
                    keys::user_rooms(tenant, user_id),
                ],
                vec![
                    room_id.to_owned(),
                    user_id.to_owned(),
                    max_rooms.to_string(),
                ],
            )
            .await?;
        match v {
            Value::Integer(0) => Ok(Added::Added),
            Value::Integer(1) => Ok(Added::AlreadyMember),
            Value::Integer(2) => Ok(Added::TooManyRooms),
            other => Err(corrupt("add_member", &other)),
        }
    }

    async fn remove_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let v: Value = self
            .client
            .eval(
                REMOVE_MEMBER,
                vec![
                    keys::members(tenant, room_id),
                    keys::user_rooms(tenant, user_id),
                ],
                vec![room_id.to_owned(), user_id.to_owned()],
            )
            .await?;
        match v {
            Value::Integer(n) => Ok(n > 0),
            other => Err(corrupt("remove_member", &other)),
        }
    }

    async fn is_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let v: Value = self
            .client
            .zscore(keys::members(tenant, room_id), user_id)
            .await?;
        Ok(!v.is_null())
    }

    async fn members(
        &self,
        tenant: &str,
        room_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        // Every score is 0, so rank order is byte order of the ids, like the memory store's BTreeSet.
        let stop = i64::try_from(limit).map_or(-1, |l| l - 1);
        let v: Value = self
            .client
            .zrange(
                keys::members(tenant, room_id),
                0,
                stop,
                None,
                false,
                None,
                false,
            )
            .await?;
        strings(v, "members")
    }

    async fn rooms_of(&self, tenant: &str, user_id: &str) -> Result<Vec<String>, StoreError> {
        let v: Value = self
            .client
            .smembers(keys::user_rooms(tenant, user_id))
            .await?;
        let mut rooms = strings(v, "rooms of user")?;
        rooms.sort_unstable();
        Ok(rooms)
    }

    async fn delete(&self, tenant: &str, room_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        for _ in 0..DELETE_ATTEMPTS {
            let v: Value = self
                .client
                .zrange(
                    keys::members(tenant, room_id),
                    0,
                    -1,
                    None,
                    false,
                    None,
                    false,
                )
                .await?;
            let members = strings(v, "members")?;
            let mut script_keys = vec![keys::room(tenant, room_id), keys::members(tenant, room_id)];
            script_keys.extend(members.iter().map(|u| keys::user_rooms(tenant, u)));
            let v: Value = self
                .client
                .eval(
                    DELETE,
                    script_keys,
                    vec![room_id.to_owned(), members.len().to_string()],
                )
                .await?;
            match v {
                Value::Integer(-1) => return Ok(None),
                Value::Integer(-2) => continue,
                Value::Integer(_) => return Ok(Some(members)),
                other => return Err(corrupt("delete room", &other)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {room_id} kept changing members for {DELETE_ATTEMPTS} attempts"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(keys::room("acme", "general"), "sb:{acme}:room:general");
        assert_eq!(
            keys::members("acme", "general"),
            "sb:{acme}:room:general:members"
        );
        assert_eq!(
            keys::user_rooms("acme", "alice"),
            "sb:{acme}:user:alice:rooms"
        );
    }
}
