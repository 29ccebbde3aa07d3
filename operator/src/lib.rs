//! Switchboard operator: reconciles `RealtimeCluster` resources into everything a
//! production install needs.
//!
//! ```text
//!  RealtimeCluster ──watch──▶ reconcile ──▶ checks::spec_problems   (pure)
//!        ▲   (+ owned children)   │     ──▶ children::desired       (pure)
//!        │                        │     ──▶ apply (server-side apply, skipped when live
//!        │                        │          already matches; prune what is no longer wanted)
//!        └──── status (if changed)◀─────── status::decide           (pure)
//! ```
//!
//! * [`children`] builds every child object from the spec; [`checks`] finds problems the
//!   schema cannot; [`status`] turns observations into status. None of them do I/O.
//! * [`apply`] and [`reconcile`] talk to the API server; [`lease`] makes sure only one
//!   replica does; [`http`] and [`metrics`] expose health and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod apply;
pub mod checks;
pub mod children;
pub mod cli;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod status;

/// Pick rustls' process-wide crypto provider (ring). Both ring and aws-lc-rs are in the
/// workspace's dependency tree, so rustls cannot choose one itself and every kube client
/// would panic on its first TLS config without this. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
