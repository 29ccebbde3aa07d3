//! Typing indicators: who is typing in a room, until when, and the aggregated text.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;

/// Someone typing in a room, with the name shown in the aggregated text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Typist {
    pub user_id: String,
    pub name: String,
    /// ms since the epoch after which the indicator is gone without a refresh.
    pub expires_at: i64,
}

#[async_trait]
pub trait TypingStore: Send + Sync {
    /// Start or refresh. Returns `true` when the user was not typing at `now`.
    async fn start(
        &self,
        tenant: &str,
        room_id: &str,
        typist: Typist,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Stop. Returns `true` when the user was typing (and not yet expired at `now`).
    async fn stop(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Remove the user's indicator only if it has expired at `now` (a refresh since keeps it).
    /// Returns `true` when it removed one.
    async fn expire(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Forget everyone typing in the room (room deletion).
    async fn clear_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError>;
    /// Everyone typing at `now`, ordered by user id. Must not delete expired entries:
    /// `expire` has to find them to announce the end of typing.
    async fn active(
        &self,
        tenant: &str,
        room_id: &str,
        now: i64,
    ) -> Result<Vec<Typist>, StoreError>;
}

/// The aggregated text of PROTOCOL.md.
/// `"Alice is typing..."`, `"Alice and Bob are typing..."`, `"Alice, Bob and 2 others are typing..."`.
pub fn display_text(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [a] => format!("{a} is typing..."),
        [a, b] => format!("{a} and {b} are typing..."),
        [a, b, c] => format!("{a}, {b} and {c} are typing..."),
        [a, b, rest @ ..] => format!("{a}, {b} and {} others are typing...", rest.len()),
    }
}

// === impl MemoryTyping ===

#[derive(Default)]
pub struct MemoryTyping {
    rooms: Mutex<HashMap<(String, String), HashMap<String, Typist>>>,
}

#[async_trait]
impl TypingStore for MemoryTyping {
    async fn start(
        &self,
        tenant: &str,
        room_id: &str,
        typist: Typist,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry((tenant.into(), room_id.into())).or_default();
        Ok(room
            .insert(typist.user_id.clone(), typist)
            .is_none_or(|old| old.expires_at <= now))
    }

    async fn stop(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let removed = rooms
            .get_mut(&(tenant.into(), room_id.into()))
            .and_then(|r| r.remove(user_id));
        Ok(removed.is_some_and(|t| t.expires_at > now))
    }

    async fn expire(
        &self,
        tenant: &str,
        room_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(room) = rooms.get_mut(&(tenant.into(), room_id.into())) else {
            return Ok(false);
        };
        if room.get(user_id).is_some_and(|t| t.expires_at <= now) {
            room.remove(user_id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn clear_room(&self, tenant: &str, room_id: &str) -> Result<(), StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.remove(&(tenant.into(), room_id.into()));
        Ok(())
    }

    async fn active(
        &self,
        tenant: &str,
        room_id: &str,
        now: i64,
    ) -> Result<Vec<Typist>, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(room) = rooms.get(&(tenant.into(), room_id.into())) else {
            return Ok(vec![]);
        };
        // Expired entries stay until their timer's `expire` removes them and announces it.
        let mut v: Vec<Typist> = room
            .values()
            .filter(|t| t.expires_at > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_the_protocol() {
        assert_eq!(display_text(&[]), "");
        assert_eq!(display_text(&["Alice"]), "Alice is typing...");
        assert_eq!(
            display_text(&["Alice", "Bob"]),
            "Alice and Bob are typing..."
        );
        assert_eq!(
            display_text(&["Alice", "Bob", "Carol"]),
            "Alice, Bob and Carol are typing..."
        );
        assert_eq!(
            display_text(&["Alice", "Bob", "C", "D"]),
            "Alice, Bob and 2 others are typing..."
        );
    }

    #[tokio::test]
    async fn expiry_keeps_a_refreshed_indicator() {
        let s = MemoryTyping::default();
        let t = |exp| Typist {
            user_id: "a".into(),
            name: "A".into(),
            expires_at: exp,
        };
        assert!(s.start("t", "r", t(100), 0).await.unwrap());
        assert!(!s.start("t", "r", t(200), 50).await.unwrap());
        assert!(!s.expire("t", "r", "a", 150).await.unwrap());
        assert_eq!(s.active("t", "r", 150).await.unwrap().len(), 1);
        assert!(s.expire("t", "r", "a", 200).await.unwrap());
        assert!(s.active("t", "r", 150).await.unwrap().is_empty());
        assert!(s.active("other", "r", 0).await.unwrap().is_empty());
    }
}
