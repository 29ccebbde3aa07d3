//! What /webrtc sends: the acks' `data` and the server → client events. The handlers
//! and the call service build these types; the contract documents come from them.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::calls::history::HistoryEntry;
use crate::calls::quality::Issue;
use crate::calls::service::WEBRTC;
use crate::calls::{Call, EndReason, Sample};
use crate::contract::ServerEvent;

/// `{call}`: every `call:*` change's ack, and the `call:incoming` event.
#[derive(Serialize, JsonSchema)]
pub struct CallAck {
    pub call: Call,
}

/// `{call, user_id}`: `call:answered`, `call:rejected`, `call:participant-joined`,
/// `call:participant-left` (the user who did it).
#[derive(Serialize, JsonSchema)]
pub struct CallUser<'a> {
    pub call: &'a Call,
    pub user_id: &'a str,
}

/// `{call, reason}`: `call:ended`.
#[derive(Serialize, JsonSchema)]
pub struct CallEnded<'a> {
    pub call: &'a Call,
    pub reason: EndReason,
}

/// `{issues}`: `call:report-quality`.
#[derive(Serialize, JsonSchema)]
pub struct Issues {
    pub issues: Vec<Issue>,
}

/// `call:quality-issue`, to the reporter.
#[derive(Serialize, JsonSchema)]
pub struct QualityIssue {
    pub call_id: String,
    pub issues: Vec<Issue>,
    pub report: Sample,
}

/// `{calls}`, newest first: `call:history`.
#[derive(Serialize, JsonSchema)]
pub struct CallList {
    pub calls: Vec<HistoryEntry>,
}

/// `webrtc:offer` / `webrtc:answer` as relayed to `to_user_id`.
#[derive(Serialize, JsonSchema)]
pub struct SdpRelayed<'a> {
    pub call_id: &'a str,
    /// The sender's token subject.
    pub from_user_id: &'a str,
    pub to_user_id: &'a str,
    pub sdp: &'a str,
}

/// `webrtc:ice-candidate` as relayed to `to_user_id`.
#[derive(Serialize, JsonSchema)]
pub struct CandidateRelayed<'a> {
    pub call_id: &'a str,
    /// The sender's token subject.
    pub from_user_id: &'a str,
    pub to_user_id: &'a str,
    /// An RTCIceCandidateInit object or a candidate string, as the sender sent it.
    pub candidate: &'a Value,
}

/// /webrtc's server → client events.
pub fn server_events() -> Vec<ServerEvent> {
    vec![
        ServerEvent::of::<CallAck>(
            WEBRTC,
            "call:incoming",
            "You are invited to a call (ringing).",
        ),
        ServerEvent::of::<CallUser>(WEBRTC, "call:answered", "A callee answered."),
        ServerEvent::of::<CallUser>(WEBRTC, "call:rejected", "A callee rejected."),
        ServerEvent::of::<CallUser>(
            WEBRTC,
            "call:participant-joined",
            "A participant joined a group call.",
        ),
        ServerEvent::of::<CallUser>(
            WEBRTC,
            "call:participant-left",
            "A participant left a group call.",
        ),
        ServerEvent::of::<CallEnded>(
            WEBRTC,
            "call:ended",
            "The call ended (reason: hangup, rejected, timeout, busy, disconnected, all_left).",
        ),
        ServerEvent::of::<QualityIssue>(
            WEBRTC,
            "call:quality-issue",
            "Your quality report crossed a threshold.",
        ),
        ServerEvent::of::<SdpRelayed>(
            WEBRTC,
            "webrtc:offer",
            "An SDP offer from another participant.",
        ),
        ServerEvent::of::<SdpRelayed>(
            WEBRTC,
            "webrtc:answer",
            "An SDP answer from another participant.",
        ),
        ServerEvent::of::<CandidateRelayed>(
            WEBRTC,
            "webrtc:ice-candidate",
            "An ICE candidate from another participant.",
        ),
    ]
}
