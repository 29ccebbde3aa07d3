//! Rooms and membership: who may join, who belongs, how many rooms a user holds.

pub mod redis;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

/// `{id, name, visibility, owner_id, created_at}` as PROTOCOL.md gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub visibility: Visibility,
    pub owner_id: String,
    pub created_at: i64,
}

/// What adding a member did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyMember,
    /// The user already holds `max_rooms` rooms; nothing changed.
    TooManyRooms,
}

/// Room storage. Every call is scoped by tenant; nothing reads across tenants.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Store a new room. `false` (and nothing written) when the id is taken.
    async fn create(&self, tenant: &str, room: &Room) -> Result<bool, StoreError>;
    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError>;
    /// Add a member unless they already hold `max_rooms` rooms.
    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError>;
    /// `true` when the user was a member.
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
    /// Delete the room and every membership in it, at once. Returns the members it had,
    /// or `None` when there was no such room.
    async fn delete(&self, tenant: &str, room_id: &str) -> Result<Option<Vec<String>>, StoreError>;
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
}

fn k(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

impl MemoryRooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemRooms> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RoomStore for MemoryRooms {
    async fn create(&self, tenant: &str, room: &Room) -> Result<bool, StoreError> {
        let mut m = self.lock();
        let key = k(tenant, &room.id);
        if m.rooms.contains_key(&key) {
            return Ok(false);
        }
        m.rooms.insert(key, room.clone());
        Ok(true)
    }

    async fn get(&self, tenant: &str, room_id: &str) -> Result<Option<Room>, StoreError> {
        Ok(self.lock().rooms.get(&k(tenant, room_id)).cloned())
    }

    async fn add_member(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        max_rooms: usize,
    ) -> Result<Added, StoreError> {
        let mut m = self.lock();
        let held = m.user_rooms.entry(k(tenant, user_id)).or_default();
        if held.contains(room_id) {
            return Ok(Added::AlreadyMember);
        }
        if held.len() >= max_rooms {
            return Ok(Added::TooManyRooms);
        }
        held.insert(room_id.to_owned());
        m.members
            .entry(k(tenant, room_id))
            .or_default()
            .insert(user_id.to_owned());
        Ok(Added::Added)
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
        if let Some(held) = m.user_rooms.get_mut(&k(tenant, user_id)) {
            held.remove(room_id);
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
        let members: Vec<String> = m
            .members
            .remove(&k(tenant, room_id))
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for u in &members {
            if let Some(held) = m.user_rooms.get_mut(&k(tenant, u)) {
                held.remove(room_id);
            }
        }
        Ok(Some(members))
    }
}
