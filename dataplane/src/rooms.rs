//! Rooms and membership: who may join, who belongs, how many rooms a user holds, and
//! the room's moderation state (roles, bans, mutes, slow mode; decided in [`roles`]).

pub mod redis;
pub mod roles;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

/// `{id, name, visibility, owner_id, created_at}` as PROTOCOL.md gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub visibility: Visibility,
    pub owner_id: String,
    pub created_at: i64,
    /// Slow mode: a member may send one message per this many seconds (0 = off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_mode_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Bans per room at most, and likewise mutes (a named bound on each room's lists).
pub const MAX_SANCTIONS_PER_ROOM: usize = 10_000;

/// A mute: until a time (ms since the epoch), or until lifted (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mute {
    pub until: Option<i64>,
}

/// What a user is in a room, read in one go (one round trip on Redis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    pub member: bool,
    pub moderator: bool,
    pub banned: bool,
    pub muted: Option<Mute>,
}

/// A user's rooms as counted for `limits.max_rooms_per_user`: their own, and those others
/// added them to (each kind has its own limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub own: usize,
    pub added: usize,
}

impl Held {
    /// From the counts of all the user's rooms and of those others added them to.
    pub fn of(all: usize, added: usize) -> Self {
        Self {
            own: all.saturating_sub(added),
            added,
        }
    }
}

/// What a ban or a mute did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sanctioned {
    /// Applied; `was_member` tells whether a ban took a membership away.
    Done { was_member: bool },
    /// The room already holds [`MAX_SANCTIONS_PER_ROOM`] of them; nothing changed.
    TooMany,
}

/// What adding a member did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyMember,
    /// The user already holds `max_rooms` rooms; nothing changed.
    TooManyRooms,
    /// The user is banned from the room; nothing changed.
    Banned,
}

/// What creating a room did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    /// The id is taken in this tenant; nothing written.
    Taken,
    /// The tenant already holds `max_rooms` rooms (`limits.max_rooms_per_tenant`);
    /// nothing written.
    TooManyRooms,
}

/// Room storage. Every call is scoped by tenant; nothing reads across tenants.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Store a new room unless its id is taken or the tenant already holds `max_rooms`
    /// rooms. `room:delete` ([`RoomStore::delete`]) frees the place.
    async fn create(
        &self,
        tenant: &str,
        room: &Room,
        max_rooms: usize,
    ) -> Result<Created, StoreError>;
    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError>;
    /// The user's own rooms (created or joined with `room:join`) and the rooms others
    /// added them to, as counted for `limits.max_rooms_per_user`.
    async fn held(&self, tenant: &str, user_id: &str) -> Result<Held, StoreError>;
    /// Add a member by their own choice (they create or join the room) unless they are
    /// banned or already hold `max_rooms` rooms of their own; rooms others added them to
    /// do not count.
    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError>;
    /// Add a member on someone else's behalf (`room:create` `members`, `room:invite`)
    /// unless they are banned or others already added them to `max_added` rooms. Such a
    /// membership never counts toward the user's own rooms, so nobody can use up
    /// another user's room limit.
    async fn add_invitee(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_added: usize,
    ) -> Result<Added, StoreError>;
    /// `true` when the user was a member. Their role goes with the membership; a mute
    /// stays (leaving and joining again does not lift it).
    async fn remove_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError>;
    async fn is_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError>;
    /// Members in id order, at most `limit`.
    async fn members(
        &self,
        tenant: &str,
        room_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Ids of the rooms a user belongs to.
    async fn rooms_of(&self, tenant: &str, user_id: &str) -> Result<Vec<String>, StoreError>;
    /// Delete the room and every membership in it, at once, with its roles, bans, mutes
    /// and slow-mode state. Returns the members it had, or `None` when there was no room.
    async fn delete(&self, tenant: &str, room_id: &str) -> Result<Option<Vec<String>>, StoreError>;

    // --- moderation ---

    /// Membership, role, ban and mute of one user in a room.
    async fn standing(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Standing, StoreError>;
    /// Make a member a moderator (`true`) or a plain member. `false` (nothing written)
    /// when the user is not a member.
    async fn set_moderator(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        moderator: bool,
    ) -> Result<bool, StoreError>;
    /// Ban a user: recorded, and their membership and role removed, at once.
    async fn ban(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Sanctioned, StoreError>;
    /// `true` when the user was banned.
    async fn unban(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError>;
    /// Mute a member. `Ok(None)` (nothing written) when the user is not a member.
    async fn mute(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        mute: Mute,
    ) -> Result<Option<Sanctioned>, StoreError>;
    /// Lift a mute; `true` when there was one.
    async fn unmute(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError>;
    /// Set the room's slow-mode interval; the room as it is now, `None` when it is gone.
    async fn set_slow_mode(
        &self,
        tenant: &str,
        room_id: &str,
        interval_s: u32,
    ) -> Result<Option<Room>, StoreError>;
    /// Slow mode: `true` (and `now` recorded as the user's last send) when the user's last
    /// recorded send is at least `interval_ms` before `now`; `false` otherwise.
    async fn slow_mode_pass(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        interval_ms: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
}

// === impl MemoryRooms ===

/// Embedded mode: everything in one process.
#[derive(Default)]
pub struct MemoryRooms {
    inner: Mutex<MemRooms>,
}

#[derive(Default)]
struct MemRooms {
    rooms: HashMap<(String, String), Room>,
    members: HashMap<(String, String), BTreeSet<String>>,
    user_rooms: HashMap<(String, String), BTreeSet<String>>,
    /// The part of `user_rooms` others added the user to.
    user_added: HashMap<(String, String), BTreeSet<String>>,
    /// Rooms per tenant (`limits.max_rooms_per_tenant`).
    per_tenant: HashMap<String, usize>,
    /// Per room: its moderators, banned users, mutes and slow-mode last sends.
    moderation: HashMap<(String, String), Moderation>,
}

#[derive(Default)]
struct Moderation {
    moderators: BTreeSet<String>,
    banned: BTreeSet<String>,
    muted: HashMap<String, Mute>,
    last_sent: HashMap<String, i64>,
}

fn k(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

impl MemRooms {
    /// Add a member by their own choice or (`by_other`) on someone else's behalf, each
    /// kind within its own `max`.
    fn add(
        &mut self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max: usize,
        by_other: bool,
    ) -> Result<Added, StoreError> {
        if self
            .moderation
            .get(&k(tenant, room_id))
            .is_some_and(|x| x.banned.contains(user_id))
        {
            return Ok(Added::Banned);
        }
        let key = k(tenant, user_id);
        let all = self.user_rooms.get(&key);
        if all.is_some_and(|h| h.contains(room_id)) {
            return Ok(Added::AlreadyMember);
        }
        let added = self.user_added.get(&key).map_or(0, BTreeSet::len);
        let counted = if by_other {
            added
        } else {
            all.map_or(0, BTreeSet::len).saturating_sub(added)
        };
        if counted >= max {
            return Ok(Added::TooManyRooms);
        }
        if by_other {
            self.user_added
                .entry(key.clone())
                .or_default()
                .insert(room_id.to_owned());
        }
        self.user_rooms
            .entry(key)
            .or_default()
            .insert(room_id.to_owned());
        self.members
            .entry(k(tenant, room_id))
            .or_default()
            .insert(user_id.to_owned());
        Ok(Added::Added)
    }

    /// The user is no longer in the room (either kind).
    fn forget_membership(&mut self, tenant: &str, room_id: &str, user_id: &str) {
        let key = k(tenant, user_id);
        if let Some(held) = self.user_rooms.get_mut(&key) {
            held.remove(room_id);
        }
        if let Some(added) = self.user_added.get_mut(&key) {
            added.remove(room_id);
        }
    }
}

impl MemoryRooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemRooms> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RoomStore for MemoryRooms {
    async fn create(
        &self,
        tenant: &str,
        room: &Room,
        max_rooms: usize,
    ) -> Result<Created, StoreError> {
        let mut m = self.lock();
        let key = k(tenant, &room.id);
        if m.rooms.contains_key(&key) {
            return Ok(Created::Taken);
        }
        let held = m.per_tenant.entry(tenant.to_owned()).or_default();
        if *held >= max_rooms {
            return Ok(Created::TooManyRooms);
        }
        *held += 1;
        m.rooms.insert(key, room.clone());
        Ok(Created::Created)
    }

    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError> {
        Ok(self.lock().rooms.get(&k(tenant, room_id)).cloned())
    }

    async fn held(&self, tenant: &str, user_id: &str) -> Result<Held, StoreError> {
        let m = self.lock();
        let all = m
            .user_rooms
            .get(&k(tenant, user_id))
            .map_or(0, BTreeSet::len);
        let added = m
            .user_added
            .get(&k(tenant, user_id))
            .map_or(0, BTreeSet::len);
        Ok(Held::of(all, added))
    }

    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError> {
        self.lock().add(tenant, room_id, user_id, max_rooms, false)
    }

    async fn add_invitee(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_added: usize,
    ) -> Result<Added, StoreError> {
        self.lock().add(tenant, room_id, user_id, max_added, true)
    }

    async fn remove_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let mut m = self.lock();
        let was = m
            .members
            .get_mut(&k(tenant, room_id))
            .is_some_and(|s| s.remove(user_id));
        m.forget_membership(tenant, room_id, user_id);
        if let Some(x) = m.moderation.get_mut(&k(tenant, room_id)) {
            x.moderators.remove(user_id);
            x.last_sent.remove(user_id);
        }
        Ok(was)
    }

    async fn is_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .members
            .get(&k(tenant, room_id))
            .is_some_and(|s| s.contains(user_id)))
    }

    async fn members(
        &self,
        tenant: &str,
        room_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let m = self.lock();
        Ok(m.members
            .get(&k(tenant, room_id))
            .map(|s| s.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn rooms_of(&self, tenant: &str, user_id: &str) -> Result<Vec<String>, StoreError> {
        let m = self.lock();
        Ok(m.user_rooms
            .get(&k(tenant, user_id))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn delete(&self, tenant: &str, room_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut m = self.lock();
        if m.rooms.remove(&k(tenant, room_id)).is_none() {
            return Ok(None);
        }
        if let Some(held) = m.per_tenant.get_mut(tenant) {
            *held = held.saturating_sub(1);
        }
        let members: Vec<String> = m
            .members
            .remove(&k(tenant, room_id))
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for u in &members {
            m.forget_membership(tenant, room_id, u);
        }
        m.moderation.remove(&k(tenant, room_id));
        Ok(Some(members))
    }

    async fn standing(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Standing, StoreError> {
        let m = self.lock();
        let key = k(tenant, room_id);
        let x = m.moderation.get(&key);
        Ok(Standing {
            member: m.members.get(&key).is_some_and(|s| s.contains(user_id)),
            moderator: x.is_some_and(|x| x.moderators.contains(user_id)),
            banned: x.is_some_and(|x| x.banned.contains(user_id)),
            muted: x.and_then(|x| x.muted.get(user_id).copied()),
        })
    }

    async fn set_moderator(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        moderator: bool,
    ) -> Result<bool, StoreError> {
        let mut m = self.lock();
        let key = k(tenant, room_id);
        if !m.members.get(&key).is_some_and(|s| s.contains(user_id)) {
            return Ok(false);
        }
        let x = m.moderation.entry(key).or_default();
        if moderator {
            x.moderators.insert(user_id.to_owned());
        } else {
            x.moderators.remove(user_id);
        }
        Ok(true)
    }

    async fn ban(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Sanctioned, StoreError> {
        let mut m = self.lock();
        let key = k(tenant, room_id);
        let x = m.moderation.entry(key.clone()).or_default();
        if !x.banned.contains(user_id) && x.banned.len() >= MAX_SANCTIONS_PER_ROOM {
            return Ok(Sanctioned::TooMany);
        }
        x.banned.insert(user_id.to_owned());
        x.moderators.remove(user_id);
        x.last_sent.remove(user_id);
        let was_member = m.members.get_mut(&key).is_some_and(|s| s.remove(user_id));
        m.forget_membership(tenant, room_id, user_id);
        Ok(Sanctioned::Done { was_member })
    }

    async fn unban(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut m = self.lock();
        Ok(m.moderation
            .get_mut(&k(tenant, room_id))
            .is_some_and(|x| x.banned.remove(user_id)))
    }

    async fn mute(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        mute: Mute,
    ) -> Result<Option<Sanctioned>, StoreError> {
        let mut m = self.lock();
        let key = k(tenant, room_id);
        if !m.members.get(&key).is_some_and(|s| s.contains(user_id)) {
            return Ok(None);
        }
        let x = m.moderation.entry(key).or_default();
        if !x.muted.contains_key(user_id) && x.muted.len() >= MAX_SANCTIONS_PER_ROOM {
            return Ok(Some(Sanctioned::TooMany));
        }
        x.muted.insert(user_id.to_owned(), mute);
        Ok(Some(Sanctioned::Done { was_member: true }))
    }

    async fn unmute(&self, tenant: &str, room_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut m = self.lock();
        Ok(m.moderation
            .get_mut(&k(tenant, room_id))
            .is_some_and(|x| x.muted.remove(user_id).is_some()))
    }

    async fn set_slow_mode(
        &self,
        tenant: &str,
        room_id: &str,
        interval_s: u32,
    ) -> Result<Option<Room>, StoreError> {
        let mut m = self.lock();
        Ok(m.rooms.get_mut(&k(tenant, room_id)).map(|r| {
            r.slow_mode_s = interval_s;
            r.clone()
        }))
    }

    async fn slow_mode_pass(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        interval_ms: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut m = self.lock();
        let x = m.moderation.entry(k(tenant, room_id)).or_default();
        if x.last_sent
            .get(user_id)
            .is_some_and(|last| now.saturating_sub(*last) < interval_ms)
        {
            return Ok(false);
        }
        x.last_sent.insert(user_id.to_owned(), now);
        Ok(true)
    }
}
