//! Fan-out that does not start from a socket: typing expiry timers and the admin API
//! emit, join, leave and disconnect through this handle, on every node (through the
//! Socket.IO adapter: in-process in embedded mode, Redis pub/sub otherwise).
//!
//! Socket.IO room names are built here and only here; each carries the tenant, so a
//! broadcast can never reach another tenant's sockets.

use async_trait::async_trait;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;

/// The /chat namespace.
pub const CHAT: &str = "/chat";

/// Socket.IO room of a chat room.
pub fn chat_room(tenant: &str, room_id: &str) -> String {
    format!("t:{tenant}:r:{room_id}")
}

/// Socket.IO room holding every socket of a user.
pub fn user_room(tenant: &str, user_id: &str) -> String {
    format!("t:{tenant}:u:{user_id}")
}

/// Socket.IO room holding every socket of a login session.
pub fn session_room(tenant: &str, sid: &str) -> String {
    format!("t:{tenant}:s:{sid}")
}

/// Socket.IO room holding every socket opened with one token id.
pub fn token_room(tenant: &str, jti: &str) -> String {
    format!("t:{tenant}:j:{jti}")
}

#[async_trait]
pub trait Hub: Send + Sync {
    /// Emit to every socket of `room` in namespace `ns`, on every node.
    async fn emit(&self, ns: &str, room: String, event: &'static str, data: Value);
    /// Emit to the sockets of `room` on this node only.
    async fn emit_local(&self, ns: &str, room: String, event: &'static str, data: Value);
    /// Make every socket in `from` (e.g. a user's room) join `room`, on every node.
    async fn join(&self, ns: &str, from: String, room: String);
    async fn leave(&self, ns: &str, from: String, room: String);
    /// Disconnect every socket of `room`, on every node.
    async fn disconnect(&self, ns: &str, room: String);
    /// Emit to one socket of this node; false when it is gone or its buffer is full.
    fn emit_to_socket(&self, ns: &str, sid: Sid, event: &'static str, data: &Value) -> bool;
    /// Disconnect one socket of this node from `ns`. False when it is still there (its
    /// send buffer is full, so the disconnect packet could not be queued): try again.
    fn disconnect_socket(&self, ns: &str, sid: Sid) -> bool;
}

#[async_trait]
impl<A: Adapter> Hub for SocketIo<A> {
    async fn emit(&self, ns: &str, room: String, event: &'static str, data: Value) {
        if let Some(op) = self.of(ns)
            && let Err(e) = op.to(room).emit(event, &data).await
        {
            tracing::warn!(error = %e, event, "broadcast failed");
        }
    }

    async fn emit_local(&self, ns: &str, room: String, event: &'static str, data: Value) {
        if let Some(op) = self.of(ns)
            && let Err(e) = op.local().to(room).emit(event, &data).await
        {
            tracing::warn!(error = %e, event, "local emit failed");
        }
    }

    async fn join(&self, ns: &str, from: String, room: String) {
        if let Some(op) = self.of(ns)
            && let Err(e) = op.within(from).join(room).await
        {
            tracing::warn!(error = %e, "remote join failed");
        }
    }

    async fn leave(&self, ns: &str, from: String, room: String) {
        if let Some(op) = self.of(ns)
            && let Err(e) = op.within(from).leave(room).await
        {
            tracing::warn!(error = %e, "remote leave failed");
        }
    }

    async fn disconnect(&self, ns: &str, room: String) {
        if let Some(op) = self.of(ns)
            && let Err(e) = op.within(room).disconnect().await
        {
            tracing::warn!(error = %e, "remote disconnect failed");
        }
    }

    fn emit_to_socket(&self, ns: &str, sid: Sid, event: &'static str, data: &Value) -> bool {
        self.of(ns)
            .and_then(|op| op.get_socket(sid))
            .is_some_and(|s| s.emit(event, data).is_ok())
    }

    fn disconnect_socket(&self, ns: &str, sid: Sid) -> bool {
        match self.of(ns).and_then(|op| op.get_socket(sid)) {
            None => true,
            Some(s) => s.disconnect().is_ok(),
        }
    }
}
