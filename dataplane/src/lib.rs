//! Switchboard data plane: a Socket.IO node for chat (and, as they land, presence,
//! calls and notifications), multi-node through Redis.
//!
//! ```text
//!  client ──Socket.IO──▶ handler::authenticate ──▶ chat::on_connect ──▶ handler::on(event)
//!                                                                     │ limits → decode → capability
//!                                   stores (memory | Redis) ◀─────────┤
//!                     hub (Socket.IO adapter: local | Redis pub/sub) ◀┘ fan-out to every node
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod calls;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod conns;
pub mod contract;
pub mod cors;
pub mod devices;
pub mod drain;
pub mod email;
pub mod error;
pub mod handler;
pub mod history;
pub mod http;
pub mod hub;
pub mod ice;
pub mod ids;
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod online;
pub mod preferences;
pub mod presence;
pub mod push;
pub mod receipts;
pub mod redis;
pub mod retry;
pub mod rooms;
pub mod server;
pub mod signaling;
pub mod sync;
pub mod telemetry;
pub mod typing;
pub mod webrtc;
pub mod worker;

pub use server::{serve, serve_split, serve_with};
