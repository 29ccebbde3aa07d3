//! Switchboard operator: reconciles `RealtimeCluster` resources. Not implemented yet;
//! the crate exists so the workspace layout matches DESIGN.md.
#![forbid(unsafe_code)]
