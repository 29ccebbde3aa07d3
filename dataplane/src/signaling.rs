//! WebRTC signaling relay: `webrtc:offer`, `webrtc:answer` and `webrtc:ice-candidate` go
//! from one participant of a call to another, on whatever node the receiver is, with
//! `from_user_id` set from the sender's token (a client-supplied one is never used).

use serde_json::{Value, json};

use crate::webrtc::wire::{CandidateRelayed, SdpRelayed};

use crate::app::App;
use crate::calls::Call;
use crate::calls::service::WEBRTC;
use crate::error::AckError;
use crate::hub::user_room;

/// Largest SDP relayed, in bytes (a video offer with many codecs is ~10 KB).
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Largest ICE candidate relayed, as JSON bytes.
pub const MAX_CANDIDATE_BYTES: usize = 4 * 1024;

/// May `from` send signaling to `to` in `call`? Both must take part in the live call
/// (ringing or joined) and be different users.
pub fn may_relay(call: &Call, from: &str, to: &str) -> Result<(), AckError> {
    if from == to {
        return Err(AckError::bad_request(
            "to_user_id must be another participant",
        ));
    }
    if !call.is_live_participant(from) {
        return Err(AckError::forbidden("you are not in this call"));
    }
    if !call.is_live_participant(to) {
        return Err(AckError::forbidden("to_user_id is not in this call"));
    }
    Ok(())
}

/// One signaling message: `payload` goes out as `event`.
pub struct Signal<'a> {
    pub event: &'static str,
    pub call_id: &'a str,
    pub to: &'a str,
    pub payload: Payload,
}

/// What a signaling message carries.
pub enum Payload {
    /// An offer's or answer's SDP.
    Sdp(String),
    /// An ICE candidate (object or string).
    Candidate(Value),
}

/// Relay a message (already checked) from `from` to `to`'s /webrtc sockets on every node.
pub async fn relay(app: &App, tenant: &str, from: &str, s: Signal<'_>) {
    let (call_id, to_user_id, from_user_id) = (s.call_id, s.to, from);
    let data = match &s.payload {
        Payload::Sdp(sdp) => json!(SdpRelayed {
            call_id,
            from_user_id,
            to_user_id,
            sdp,
        }),
        Payload::Candidate(candidate) => json!(CandidateRelayed {
            call_id,
            from_user_id,
            to_user_id,
            candidate,
        }),
    };
    app.emit(WEBRTC, user_room(tenant, s.to), s.event, data)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{Media, Rules};

    #[test]
    fn only_live_participants_signal_each_other() {
        let rules = Rules {
            ringing_timeout_ms: 1000,
            max_participants: 8,
        };
        let c = Call::direct("c".into(), "alice", "bob", Media::Audio, 0);
        assert!(may_relay(&c, "alice", "bob").is_ok());
        assert!(may_relay(&c, "bob", "alice").is_ok());
        assert!(may_relay(&c, "alice", "alice").is_err());
        assert!(may_relay(&c, "eve", "bob").is_err());
        assert!(may_relay(&c, "alice", "eve").is_err());
        let ended = crate::calls::apply(
            &c,
            &crate::calls::Event::Hangup { user: "bob".into() },
            1,
            &rules,
        )
        .unwrap()
        .call;
        assert!(may_relay(&ended, "alice", "bob").is_err());
    }
}
