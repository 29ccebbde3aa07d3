//! The change index behind `sync:get`: which of a user's rooms changed since a cursor.
//!
//! ```text
//!  message:send/edit/delete ──touch_room──▶ tenant: room → stamp     ┐
//!  receipt:read, join/add    ──touch_user──▶ user:   room → stamp     ├─ changed(user's rooms, after)
//!  leave/kick/ban, room:delete ──forget──▶ entries removed            ┘   = one bounded pass
//! ```
//!
//! A *stamp* comes from one counter per tenant, taken after the change it marks is
//! stored. A change that affects every member (a message, an edit, a delete) stamps the
//! room once, not once per member, so a send costs the same in a room of 2 or of 10 000;
//! a change that only one user sees (their read pointer moved, they joined) stamps that
//! user's own entry for the room. A room changed for a user after `after` when either of
//! its two stamps is above it. [`changed`](ChangeIndex::changed) looks the user's rooms
//! (at most `limits.max_rooms_per_user`) up in both, in one step; [`select`] decides the
//! page without I/O.
//!
//! Because a stamp is taken after its change is stored, a `sync:get` that ran in between
//! answers with a cursor below it, and the next call finds the change: nothing is missed.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;

/// Largest and default `sync:get` page, in rooms.
pub const MAX_SYNC_PAGE: usize = 100;
pub const DEFAULT_SYNC_PAGE: usize = 50;

/// One page of changed rooms: `(room id, stamp)` in stamp order, and whether rooms with
/// higher stamps are left for the next page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub rooms: Vec<(String, u64)>,
    pub more: bool,
}

impl Changed {
    /// The cursor after this page: its last stamp, else `after` (nothing new).
    pub fn cursor(&self, after: u64) -> u64 {
        self.rooms.last().map_or(after, |(_, s)| *s)
    }
}

/// The rooms whose stamp (the higher of the room's and the user's) is above `after`,
/// lowest first, at most `limit`. `stamps` holds, per room, the room's and the user's
/// stamp (0 where none).
pub fn select(
    rooms: &[String],
    stamps: impl IntoIterator<Item = (u64, u64)>,
    after: u64,
    limit: usize,
) -> Changed {
    let mut changed: Vec<(String, u64)> = rooms
        .iter()
        .zip(stamps)
        .map(|(r, (room, user))| (r.clone(), room.max(user)))
        .filter(|(_, s)| *s > after)
        .collect();
    changed.sort_unstable_by_key(|(_, s)| *s);
    let more = changed.len() > limit;
    changed.truncate(limit);
    Changed {
        rooms: changed,
        more,
    }
}

/// The opaque cursor clients get: `s` and a stamp.
pub fn encode_cursor(stamp: u64) -> String {
    format!("s{stamp}")
}

/// A cursor back to its stamp; `None` when it is not one this node hands out.
pub fn decode_cursor(cursor: &str) -> Option<u64> {
    let digits = cursor.strip_prefix('s')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Per-tenant change stamps of rooms and of users' views of rooms.
#[async_trait]
pub trait ChangeIndex: Send + Sync {
    /// Something every member sees changed in the room (call after storing it).
    async fn touch_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError>;
    /// Something only this user sees changed in the room (call after storing it).
    async fn touch_user(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError>;
    /// The user no longer belongs to the room: drop their entry.
    async fn forget_user_room(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError>;
    /// The room is gone: drop its entry and its members' entries.
    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        members: &[String],
    ) -> Result<(), StoreError>;
    /// Of `rooms` (the user's rooms), those changed after stamp `after`: one page.
    async fn changed(
        &self,
        tenant: &str,
        user_id: &str,
        rooms: &[String],
        after: u64,
        limit: usize,
    ) -> Result<Changed, StoreError>;
}

// === impl MemoryChanges ===

#[derive(Default)]
pub struct MemoryChanges {
    inner: Mutex<MemChanges>,
}

#[derive(Default)]
struct MemChanges {
    /// Last stamp per tenant.
    stamps: HashMap<String, u64>,
    /// (tenant, room) → stamp.
    rooms: HashMap<(String, String), u64>,
    /// (tenant, user) → room → stamp; bounded by the user's rooms (entries go on leave).
    users: HashMap<(String, String), HashMap<String, u64>>,
}

impl MemChanges {
    fn next(&mut self, tenant: &str) -> u64 {
        let s = self.stamps.entry(tenant.to_owned()).or_default();
        *s += 1;
        *s
    }
}

impl MemoryChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemChanges> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ChangeIndex for MemoryChanges {
    async fn touch_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        let mut m = self.lock();
        let s = m.next(tenant);
        m.rooms.insert((tenant.to_owned(), room_id.to_owned()), s);
        Ok(())
    }

    async fn touch_user(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError> {
        let mut m = self.lock();
        let s = m.next(tenant);
        m.users
            .entry((tenant.to_owned(), user_id.to_owned()))
            .or_default()
            .insert(room_id.to_owned(), s);
        Ok(())
    }

    async fn forget_user_room(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
    ) -> Result<(), StoreError> {
        let mut m = self.lock();
        if let Some(u) = m.users.get_mut(&(tenant.to_owned(), user_id.to_owned())) {
            u.remove(room_id);
        }
        Ok(())
    }

    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        members: &[String],
    ) -> Result<(), StoreError> {
        let mut m = self.lock();
        m.rooms.remove(&(tenant.to_owned(), room_id.to_owned()));
        for u in members {
            if let Some(u) = m.users.get_mut(&(tenant.to_owned(), u.clone())) {
                u.remove(room_id);
            }
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
        let m = self.lock();
        let mine = m.users.get(&(tenant.to_owned(), user_id.to_owned()));
        let stamps = rooms.iter().map(|r| {
            (
                m.rooms
                    .get(&(tenant.to_owned(), r.clone()))
                    .copied()
                    .unwrap_or(0),
                mine.and_then(|u| u.get(r)).copied().unwrap_or(0),
            )
        });
        Ok(select(rooms, stamps, after, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_rooms(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn pages_in_stamp_order_and_leave_nothing_out() {
        let rooms = mk_rooms(5);
        let stamps = [(3, 0), (0, 0), (1, 9), (7, 2), (0, 5)];
        let all = select(&rooms, stamps, 0, 10);
        assert_eq!(
            all.rooms,
            vec![
                ("r0".into(), 3),
                ("r4".into(), 5),
                ("r3".into(), 7),
                ("r2".into(), 9)
            ]
        );
        assert!(!all.more);
        let first = select(&rooms, stamps, 0, 2);
        assert!(first.more);
        assert_eq!(first.cursor(0), 5);
        let second = select(&rooms, stamps, first.cursor(0), 2);
        assert_eq!(second.rooms, vec![("r3".into(), 7), ("r2".into(), 9)]);
        assert!(!second.more);
        let none = select(&rooms, stamps, second.cursor(5), 2);
        assert_eq!(none, Changed::default());
        assert_eq!(none.cursor(9), 9, "an empty page keeps the cursor");
    }

    #[test]
    fn cursors_round_trip_and_refuse_strangers() {
        for s in [0, 1, 42, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(s)), Some(s));
        }
        for bad in [
            "",
            "s",
            "5",
            "s-1",
            "s+1",
            "s1x",
            "x1",
            "s99999999999999999999999",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }
}
