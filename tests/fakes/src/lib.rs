//! Stand-ins for the push providers, which these machines cannot reach: local HTTP/2
//! endpoints answering as the providers document, error cases included. Used in process
//! by the data plane's tests, and as a program (`switchboard-fake-fcm`) by the tests on
//! real pods, where the notification worker reaches it over the pod bridge.
// A test stand-in: a failed bind or a poisoned lock is a failed test, said at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fcm;
