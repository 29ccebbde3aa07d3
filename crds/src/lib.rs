//! Switchboard API types, shared by the operator and the data plane.
//!
//! ```text
//!   RealtimeCluster (CRD) ──operator renders──▶ DataplaneConfig (YAML in a ConfigMap)
//!                                                     │
//!                                   switchboard serve ◀┘ (+ SWITCHBOARD_* env, flags)
//! ```
//!
//! * [`config`] — the data plane's configuration file, its defaults and its validation.
//! * [`duration`] — the `30s` / `5m` / `24h` duration format used by every duration key.
#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
