//! Delivered and read pointers per user and room, and the privacy choices that decide
//! whether a user's read receipts and typing indicators go out.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "ReceiptKind")]
pub enum Kind {
    Delivered,
    Read,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Delivered => "delivered",
            Kind::Read => "read",
        }
    }
}

/// `{read_receipts, typing_indicators, room_adds}`; both kinds on and adds by anyone
/// unless the user turns them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Privacy {
    pub read_receipts: bool,
    pub typing_indicators: bool,
    /// Whether others may put the user in rooms (`room:create` `members`, `room:invite`).
    /// Stored choices from before this field read as the default.
    #[serde(default)]
    pub room_adds: RoomAdds,
}

/// Who may add a user to rooms.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RoomAdds {
    /// Any user of the tenant (within the limit of rooms others may put one in).
    #[default]
    Anyone,
    /// Nobody: the user joins rooms only with `room:join` (public rooms).
    Nobody,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            read_receipts: true,
            typing_indicators: true,
            room_adds: RoomAdds::Anyone,
        }
    }
}

/// Receipt pointers only move forward.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Move the pointer to `max(current, up_to)`; returns the pointer after the call.
    async fn advance(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
        kind: Kind,
        up_to: u64,
    ) -> Result<u64, StoreError>;
    /// Pointers of one user for several rooms (0 where none).
    async fn pointers(
        &self,
        tenant: &str,
        user_id: &str,
        room_ids: &[String],
        kind: Kind,
    ) -> Result<Vec<u64>, StoreError>;
    /// Drop every pointer (both kinds) of these users in a room (room deletion).
    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        user_ids: &[String],
    ) -> Result<(), StoreError>;
    async fn privacy(&self, tenant: &str, user_id: &str) -> Result<Privacy, StoreError>;
    async fn set_privacy(
        &self,
        tenant: &str,
        user_id: &str,
        privacy: Privacy,
    ) -> Result<(), StoreError>;
}

/// Unread count from the room's last seq and the user's read pointer.
pub fn unread(last_seq: u64, read: u64) -> u64 {
    last_seq.saturating_sub(read)
}

// === impl MemoryReceipts ===

#[derive(Default)]
pub struct MemoryReceipts {
    pointers: Mutex<HashMap<(String, String, String, Kind), u64>>,
    privacy: Mutex<HashMap<(String, String), Privacy>>,
}

#[async_trait]
impl ReceiptStore for MemoryReceipts {
    async fn advance(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
        kind: Kind,
        up_to: u64,
    ) -> Result<u64, StoreError> {
        let mut p = self.pointers.lock().unwrap_or_else(|e| e.into_inner());
        let cur = p
            .entry((tenant.into(), user_id.into(), room_id.into(), kind))
            .or_default();
        *cur = (*cur).max(up_to);
        Ok(*cur)
    }

    async fn pointers(
        &self,
        tenant: &str,
        user_id: &str,
        room_ids: &[String],
        kind: Kind,
    ) -> Result<Vec<u64>, StoreError> {
        let p = self.pointers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(room_ids
            .iter()
            .map(|r| {
                p.get(&(tenant.into(), user_id.into(), r.clone(), kind))
                    .copied()
                    .unwrap_or(0)
            })
            .collect())
    }

    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        user_ids: &[String],
    ) -> Result<(), StoreError> {
        let mut p = self.pointers.lock().unwrap_or_else(|e| e.into_inner());
        for u in user_ids {
            for kind in [Kind::Delivered, Kind::Read] {
                p.remove(&(tenant.into(), u.clone(), room_id.into(), kind));
            }
        }
        Ok(())
    }

    async fn privacy(&self, tenant: &str, user_id: &str) -> Result<Privacy, StoreError> {
        let p = self.privacy.lock().unwrap_or_else(|e| e.into_inner());
        Ok(p.get(&(tenant.into(), user_id.into()))
            .copied()
            .unwrap_or_default())
    }

    async fn set_privacy(
        &self,
        tenant: &str,
        user_id: &str,
        privacy: Privacy,
    ) -> Result<(), StoreError> {
        let mut p = self.privacy.lock().unwrap_or_else(|e| e.into_inner());
        p.insert((tenant.into(), user_id.into()), privacy);
        Ok(())
    }
}
