//! [`RoomStore`] on Redis.
//!
//! - `sb:{T}:room:{R}`: the room as a JSON string (`SET NX` on create).
//! - `sb:{T}:rooms`: a set of the tenant's room ids (`limits.max_rooms_per_tenant`); a
//!   create checks its size and adds, a delete removes, each in the same script as the
//!   room record.
//! - `sb:{T}:room:{R}:members`: a sorted set of user ids, every score 0, so `ZRANGE 0 n`
//!   gives the first members in id (byte) order without reading the whole room.
//! - `sb:{T}:user:{U}:rooms`: a set of the room ids a user belongs to (the room limit).
//! - `sb:{T}:user:{U}:added`: the part of those that others added the user to; they
//!   have their own limit and do not count toward the user's own rooms.
//! - `sb:{T}:room:{R}:moderators`: a set of the members who are moderators.
//! - `sb:{T}:room:{R}:bans`: a set of banned user ids.
//! - `sb:{T}:room:{R}:mutes`: a hash, user id → the mute's end (ms) or `-` (until lifted).
//! - `sb:{T}:room:{R}:last_sent`: a hash, member → their last send in slow mode (ms).
//!
//! Membership changes touch both, in one script (a join checks the ban list in it; a ban
//! records the ban and removes the membership and role in one). Deleting a room reads its
//! members, then removes the room, its members, its moderation keys and each member's
//! entry in one script that first checks the member count is still what was read (a join
//! in between makes the caller retry). Slow mode's interval is a field of the room's JSON,
//! changed by compare-and-set.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{
    HashesInterface, KeysInterface, LuaInterface, SetsInterface, SortedSetsInterface,
};
use fred::types::Value;

use super::{
    Added, Created, Held, MAX_SANCTIONS_PER_ROOM, Mute, Room, RoomStore, Sanctioned, Standing,
};
use crate::error::StoreError;

mod keys {
    /// The room's JSON.
    pub fn room(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}")
    }

    /// The tenant's room ids (set).
    pub fn tenant_rooms(tenant: &str) -> String {
        format!("sb:{{{tenant}}}:rooms")
    }

    /// The room's members (sorted set, scores 0).
    pub fn members(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:members")
    }

    /// The rooms a user belongs to (set).
    pub fn user_rooms(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:rooms")
    }

    /// The rooms others added a user to (set; a subset of `user_rooms`).
    pub fn user_added(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:added")
    }

    /// The room's moderators (set).
    pub fn moderators(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:moderators")
    }

    /// The room's banned users (set).
    pub fn bans(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:bans")
    }

    /// The room's mutes (hash, user → end in ms or `-`).
    pub fn mutes(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:mutes")
    }

    /// Slow mode: each member's last send (hash, user → ms).
    pub fn last_sent(tenant: &str, room_id: &str) -> String {
        format!("sb:{{{tenant}}}:room:{room_id}:last_sent")
    }
}

/// KEYS: room, tenant's rooms. ARGV: room id, room JSON, max rooms.
/// Returns 0 created, 1 taken, 2 too many rooms in the tenant.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 2
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 0
";

/// KEYS: members, user's rooms, bans, user's added rooms. ARGV: room id, user id, max
/// rooms, '1' when someone else adds the user (counted among the added rooms) or '0' (the
/// user's own: all rooms but the added ones count).
/// Returns 0 added, 1 already a member, 2 too many rooms, 3 banned.
const ADD_MEMBER: &str = r"
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then
  return 3
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 1
end
local added = redis.call('SCARD', KEYS[4])
local counted = added
if ARGV[4] == '0' then
  counted = redis.call('SCARD', KEYS[2]) - added
end
if counted >= tonumber(ARGV[3]) then
  return 2
end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return 0
";

/// KEYS: members, user's rooms, moderators, last sends, user's added rooms. ARGV: room
/// id, user id. Returns 1 when the user was a member.
const REMOVE_MEMBER: &str = r"
local was = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return was
";

/// KEYS: members, moderators, bans, mutes. ARGV: user id.
/// Returns {member, moderator, banned, mute or false}.
const STANDING: &str = r"
return {redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0,
  redis.call('SISMEMBER', KEYS[2], ARGV[1]), redis.call('SISMEMBER', KEYS[3], ARGV[1]),
  redis.call('HGET', KEYS[4], ARGV[1])}
";

/// KEYS: members, moderators. ARGV: user id, '1' (moderator) or '0'.
/// Returns 0 when the user is not a member (nothing written), else 1.
const SET_MODERATOR: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
";

/// KEYS: bans, members, user's rooms, moderators, last sends, user's added rooms. ARGV:
/// room id, user id, max bans. Returns -1 when the list is full (nothing written), else 1 when the user was
/// a member and 0 when not.
const BAN: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[2])
local was = redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
return was
";

/// KEYS: members, mutes. ARGV: user id, end ('-' until lifted), max mutes.
/// Returns -2 when the user is not a member, -1 when the list is full (nothing written in
/// either case), 1 when written.
const MUTE: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return -2
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

/// KEYS: last sends. ARGV: user id, interval (ms), now (ms).
/// Returns 1 (and records now) when the last send is at least the interval ago, else 0.
const SLOW_PASS: &str = r"
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and tonumber(ARGV[3]) - tonumber(last) < tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

/// KEYS: room. ARGV: the JSON read, the new JSON. Returns 1 when written, 0 when the room
/// changed (or went) since the read.
const REPLACE_ROOM: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Marks a mute with no end in the mutes hash.
const NO_END: &str = "-";

/// KEYS: room, members, moderators, bans, mutes, last sends, tenant's rooms, then each
/// member's rooms set and added-rooms set. ARGV: room id, member count read.
/// Returns -1 when there is no room, -2 when the members changed since the read (nothing
/// done), else the number of members removed.
const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[2]) then
  return -2
end
for i = 8, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[1])
end
redis.call('SREM', KEYS[7], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return #KEYS - 7
";

/// Attempts of a compare-and-set (a room deletion racing joins, a slow-mode change racing
/// another) before giving up as `unavailable`.
const ATTEMPTS: usize = 8;

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

impl RedisRooms {
    /// [`ADD_MEMBER`]: by the user's own choice or (`by_other`) on someone else's behalf.
    async fn add(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max: usize,
        by_other: bool,
    ) -> Result<Added, StoreError> {
        let v: Value = self
            .client
            .eval(
                ADD_MEMBER,
                vec![
                    keys::members(tenant, room_id),
                    keys::user_rooms(tenant, user_id),
                    keys::bans(tenant, room_id),
                    keys::user_added(tenant, user_id),
                ],
                vec![
                    room_id.to_owned(),
                    user_id.to_owned(),
                    max.to_string(),
                    if by_other { "1" } else { "0" }.to_owned(),
                ],
            )
            .await?;
        match v {
            Value::Integer(0) => Ok(Added::Added),
            Value::Integer(1) => Ok(Added::AlreadyMember),
            Value::Integer(2) => Ok(Added::TooManyRooms),
            Value::Integer(3) => Ok(Added::Banned),
            other => Err(corrupt("add_member", &other)),
        }
    }
}

#[async_trait]
impl RoomStore for RedisRooms {
    async fn create(
        &self,
        tenant: &str,
        room: &Room,
        max_rooms: usize,
    ) -> Result<Created, StoreError> {
        let json = serde_json::to_string(room)?;
        let v: Value = self
            .client
            .eval(
                CREATE,
                vec![keys::room(tenant, &room.id), keys::tenant_rooms(tenant)],
                vec![room.id.clone(), json, max_rooms.to_string()],
            )
            .await?;
        match v {
            Value::Integer(0) => Ok(Created::Created),
            Value::Integer(1) => Ok(Created::Taken),
            Value::Integer(2) => Ok(Created::TooManyRooms),
            other => Err(corrupt("create room", &other)),
        }
    }

    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError> {
        let v: Value = self.client.get(keys::room(tenant, room_id)).await?;
        match opt_string(v, "room")? {
            None => Ok(None),
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
        }
    }

    async fn held(&self, tenant: &str, user_id: &str) -> Result<Held, StoreError> {
        let pipeline = self.client.pipeline();
        let _: () = pipeline.scard(keys::user_rooms(tenant, user_id)).await?;
        let _: () = pipeline.scard(keys::user_added(tenant, user_id)).await?;
        let (all, added): (usize, usize) = pipeline.all().await?;
        Ok(Held::of(all, added))
    }

    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError> {
        self.add(tenant, room_id, user_id, max_rooms, false).await
    }

    async fn add_invitee(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_added: usize,
    ) -> Result<Added, StoreError> {
        self.add(tenant, room_id, user_id, max_added, true).await
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
                    keys::moderators(tenant, room_id),
                    keys::last_sent(tenant, room_id),
                    keys::user_added(tenant, user_id),
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
        for _ in 0..ATTEMPTS {
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
            let mut script_keys = vec![
                keys::room(tenant, room_id),
                keys::members(tenant, room_id),
                keys::moderators(tenant, room_id),
                keys::bans(tenant, room_id),
                keys::mutes(tenant, room_id),
                keys::last_sent(tenant, room_id),
                keys::tenant_rooms(tenant),
            ];
            script_keys.extend(
                members
                    .iter()
                    .flat_map(|u| [keys::user_rooms(tenant, u), keys::user_added(tenant, u)]),
            );
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
            "room {room_id} kept changing members for {ATTEMPTS} attempts"
        )))
    }

    async fn standing(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Standing, StoreError> {
        let v: Value = self
            .client
            .eval(
                STANDING,
                vec![
                    keys::members(tenant, room_id),
                    keys::moderators(tenant, room_id),
                    keys::bans(tenant, room_id),
                    keys::mutes(tenant, room_id),
                ],
                vec![user_id.to_owned()],
            )
            .await?;
        let Value::Array(parts) = v else {
            return Err(corrupt("standing", &v));
        };
        let [member, moderator, banned, mute]: [Value; 4] =
            parts.try_into().map_err(|p: Vec<Value>| {
                StoreError::Corrupt(format!("standing: {} reply parts", p.len()))
            })?;
        let flag = |v: Value| match v {
            Value::Integer(n) => Ok(n == 1),
            other => Err(corrupt("standing", &other)),
        };
        let muted = match opt_string(mute, "mute")? {
            None => None,
            Some(s) if s == NO_END => Some(Mute { until: None }),
            Some(s) => Some(Mute {
                until: Some(
                    s.parse()
                        .map_err(|_| StoreError::Corrupt(format!("mute end {s:?}")))?,
                ),
            }),
        };
        Ok(Standing {
            member: flag(member)?,
            moderator: flag(moderator)?,
            banned: flag(banned)?,
            muted,
        })
    }

    async fn set_moderator(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        moderator: bool,
    ) -> Result<bool, StoreError> {
        let v: Value = self
            .client
            .eval(
                SET_MODERATOR,
                vec![
                    keys::members(tenant, room_id),
                    keys::moderators(tenant, room_id),
                ],
                vec![
                    user_id.to_owned(),
                    if moderator { "1" } else { "0" }.to_owned(),
                ],
            )
            .await?;
        match v {
            Value::Integer(n) => Ok(n == 1),
            other => Err(corrupt("set_moderator", &other)),
        }
    }

    async fn ban(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Sanctioned, StoreError> {
        let v: Value = self
            .client
            .eval(
                BAN,
                vec![
                    keys::bans(tenant, room_id),
                    keys::members(tenant, room_id),
                    keys::user_rooms(tenant, user_id),
                    keys::moderators(tenant, room_id),
                    keys::last_sent(tenant, room_id),
                    keys::user_added(tenant, user_id),
                ],
                vec![
                    room_id.to_owned(),
                    user_id.to_owned(),
                    MAX_SANCTIONS_PER_ROOM.to_string(),
                ],
            )
            .await?;
        match v {
            Value::Integer(-1) => Ok(Sanctioned::TooMany),
            Value::Integer(n @ (0 | 1)) => Ok(Sanctioned::Done { was_member: n == 1 }),
            other => Err(corrupt("ban", &other)),
        }
    }

    async fn unban(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .srem(keys::bans(tenant, room_id), user_id)
            .await?;
        Ok(n > 0)
    }

    async fn mute(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        mute: Mute,
    ) -> Result<Option<Sanctioned>, StoreError> {
        let v: Value = self
            .client
            .eval(
                MUTE,
                vec![keys::members(tenant, room_id), keys::mutes(tenant, room_id)],
                vec![
                    user_id.to_owned(),
                    mute.until
                        .map_or_else(|| NO_END.to_owned(), |u| u.to_string()),
                    MAX_SANCTIONS_PER_ROOM.to_string(),
                ],
            )
            .await?;
        match v {
            Value::Integer(-2) => Ok(None),
            Value::Integer(-1) => Ok(Some(Sanctioned::TooMany)),
            Value::Integer(1) => Ok(Some(Sanctioned::Done { was_member: true })),
            other => Err(corrupt("mute", &other)),
        }
    }

    async fn unmute(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .hdel(keys::mutes(tenant, room_id), user_id)
            .await?;
        Ok(n > 0)
    }

    async fn set_slow_mode(
        &self,
        tenant: &str,
        room_id: &str,
        interval_s: u32,
    ) -> Result<Option<Room>, StoreError> {
        for _ in 0..ATTEMPTS {
            let v: Value = self.client.get(keys::room(tenant, room_id)).await?;
            let Some(read) = opt_string(v, "room")? else {
                return Ok(None);
            };
            let mut room: Room = serde_json::from_str(&read)?;
            room.slow_mode_s = interval_s;
            let v: Value = self
                .client
                .eval(
                    REPLACE_ROOM,
                    vec![keys::room(tenant, room_id)],
                    vec![read, serde_json::to_string(&room)?],
                )
                .await?;
            match v {
                Value::Integer(1) => return Ok(Some(room)),
                Value::Integer(0) => continue,
                other => return Err(corrupt("set_slow_mode", &other)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {room_id} kept changing for {ATTEMPTS} attempts"
        )))
    }

    async fn slow_mode_pass(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        interval_ms: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let v: Value = self
            .client
            .eval(
                SLOW_PASS,
                vec![keys::last_sent(tenant, room_id)],
                vec![user_id.to_owned(), interval_ms.to_string(), now.to_string()],
            )
            .await?;
        match v {
            Value::Integer(n) => Ok(n == 1),
            other => Err(corrupt("slow_mode_pass", &other)),
        }
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
        for (key, name) in [
            (keys::moderators("acme", "general"), "moderators"),
            (keys::bans("acme", "general"), "bans"),
            (keys::mutes("acme", "general"), "mutes"),
            (keys::last_sent("acme", "general"), "last_sent"),
        ] {
            assert_eq!(key, format!("sb:{{acme}}:room:general:{name}"));
        }
    }
}
