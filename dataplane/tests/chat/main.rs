//! /chat end to end against real nodes: one embedded node, and two nodes sharing the
//! real Redis from tests/env.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth_matrix;
mod changes;
mod conns;
mod faults;
mod flows;
mod frames;
mod fuzz;
mod http_fuzz;
mod internal;
mod lifetime;
mod limits;
mod matrix;
mod moderation;
mod multinode;
mod presence;
mod presence_cost;
mod protocol;
mod slow_consumer;
mod storage;
mod sync;
mod tenants;
