//! /chat end to end against real nodes: one embedded node, and two nodes sharing the
//! real Redis from tests/env.

mod support;

mod auth_matrix;
mod flows;
mod fuzz;
mod limits;
mod multinode;
mod tenants;
