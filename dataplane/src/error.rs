//! The protocol's error codes and the ack envelope every request event answers with.
//!
//! `{ "ok": true, "data": {...} }` or `{ "ok": false, "error": { "code", "message" } }`.

use serde::Serialize;
use serde_json::{Value, json};

/// Error codes of PROTOCOL.md, also used as the `outcome` label of event metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ErrorCode")]
pub enum Code {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    Busy,
    RateLimited,
    PayloadTooLarge,
    Unavailable,
    Internal,
}

impl Code {
    /// Every code, in the order PROTOCOL.md lists them.
    pub const ALL: [Code; 10] = [
        Code::BadRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::Conflict,
        Code::Busy,
        Code::RateLimited,
        Code::PayloadTooLarge,
        Code::Unavailable,
        Code::Internal,
    ];

    /// What a client should make of the code (the contract documents list these).
    pub fn meaning(self) -> &'static str {
        match self {
            Code::BadRequest => {
                "the payload is malformed or a field is invalid; the message names it"
            }
            Code::Unauthorized => "the token is missing, invalid, expired or revoked",
            Code::Forbidden => "not allowed for this user (membership, role, limits)",
            Code::NotFound => "no such room, message, call, device or notification in this tenant",
            Code::Conflict => "the state does not allow it (taken id, ended call, deleted message)",
            Code::Busy => "the callee or the node is busy",
            Code::RateLimited => "over a rate limit or slow mode; retry later",
            Code::PayloadTooLarge => "a field is over its size limit",
            Code::Unavailable => "a store or dependency does not answer; retry later",
            Code::Internal => "a bug or corrupt data on the server",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::Busy => "busy",
            Code::RateLimited => "rate_limited",
            Code::PayloadTooLarge => "payload_too_large",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }
}

/// A refused request: the code the client branches on and a message for humans.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct AckError {
    pub code: Code,
    pub message: String,
    /// The server closes the socket once this ack is out (the socket's token is revoked).
    pub then_disconnect: bool,
}

impl AckError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            then_disconnect: false,
        }
    }
    /// `unauthorized` for a socket whose token turned out revoked; the socket is closed
    /// after the ack.
    pub fn revoked(message: impl Into<String>) -> Self {
        Self {
            then_disconnect: true,
            ..Self::new(Code::Unauthorized, message)
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }
}

/// Storage failures become `unavailable` (the backend did not answer) or `internal`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<fred::error::Error> for StoreError {
    fn from(e: fred::error::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<StoreError> for AckError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                AckError::new(Code::Unavailable, "storage is unavailable, retry later")
            }
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "corrupt stored data");
                AckError::new(Code::Internal, "internal error")
            }
        }
    }
}

/// The `error` of a refused request.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ErrorBody<'a> {
    pub code: Code,
    /// For humans; clients branch on `code`.
    pub message: &'a str,
}

/// A refused request's ack (and an HTTP API's error body): `{ok: false, error}`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AckFailure<'a> {
    /// Always `false`.
    #[schemars(extend("const" = false))]
    pub ok: bool,
    pub error: ErrorBody<'a>,
}

impl<'a> From<&'a AckError> for AckFailure<'a> {
    fn from(e: &'a AckError) -> Self {
        Self {
            ok: false,
            error: ErrorBody {
                code: e.code,
                message: &e.message,
            },
        }
    }
}

/// The ack body for a result.
pub fn envelope(result: &Result<Value, AckError>) -> Value {
    match result {
        Ok(data) => json!({ "ok": true, "data": data }),
        Err(e) => json!(AckFailure::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shapes_match_the_protocol() {
        assert_eq!(
            envelope(&Ok(json!({"a": 1}))),
            json!({"ok": true, "data": {"a": 1}})
        );
        let e = envelope(&Err(AckError::new(Code::PayloadTooLarge, "too big")));
        assert_eq!(
            e,
            json!({"ok": false, "error": {"code": "payload_too_large", "message": "too big"}})
        );
    }
}
