//! Notifications end to end: the /notifications namespace and the service API on real
//! nodes, the FCM sender against a local HTTP/2 FCM + OAuth stand-in, the Kafka worker
//! (real Kafka and Redis from tests/env) including a SIGKILL mid-batch, e-mail through
//! a real SMTP server (tests/env `smtp`), and the stores on memory and Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../chat/support.rs"]
#[allow(dead_code)]
mod support;

mod common;
mod email;
// The FCM stand-in, shared with the tests on real pods (tests/fakes).
use switchboard_fakes::fcm as fake_fcm;
mod embedded;
mod fcm;
mod scoped;
mod startup;
mod stores;
mod worker;
