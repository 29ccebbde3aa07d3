//! The /webrtc namespace: ICE servers, calls (1:1 and group), signaling relay, quality
//! reports and call history. Handlers decode and check ids, then hand over to
//! [`crate::calls::service`] (state) or [`crate::signaling`] (relay).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Extension, SocketRef, State, TryData};

use crate::app::App;
use crate::auth::{AuthError, Identity, now_secs};
use crate::calls::history::{Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::calls::service::{Calls, WEBRTC};
use crate::calls::{Event, Media, Sample};
use crate::error::{AckError, Code};
use crate::handler::{self, Cx, Done};
use crate::metrics::Metrics;
use crate::signaling::Payload;
use crate::signaling::Signal;
use crate::{ice, ids, signaling};

pub(crate) mod wire;

pub use wire::server_events;
use wire::{CallAck, CallList, Issues, QualityIssue};

/// Admission to /webrtc: authenticate, register events, call off a pending disconnect.
pub async fn admit<A: Adapter>(
    s: SocketRef<A>,
    State(app): State<App>,
    TryData(auth): TryData<Value>,
) -> Result<(), AuthError> {
    let id = handler::authenticate(&s, &app, auth).await?;
    register_events(&s);
    let (t, u) = (id.tenant.as_str(), id.user_id.as_str());
    let conn = handler::conn_id(&app, &s.id);
    if let Some(calls) = app.calls()
        && let Err(e) = calls.connected(t, u, &conn, &app.node_id).await
    {
        tracing::warn!(error = %e, "call store unavailable at connect");
        return Err(AuthError::Unavailable);
    }
    app.metrics.connection(WEBRTC, 1);
    s.on_disconnect(
        async move |s: SocketRef<A>,
                    State(app): State<App>,
                    Extension(id): Extension<Arc<Identity>>| {
            handler::released(&s, &app).await;
            let (t, u) = (id.tenant.as_str(), id.user_id.as_str());
            app.metrics.connection(WEBRTC, -1);
            let conn = handler::conn_id(&app, &s.id);
            // A client the drain sent to another node keeps its call for at least
            // `server.reconnect_grace` while it reconnects.
            let grace = app
                .drain
                .closed_by_drain(s.id)
                .then_some(app.config.server.reconnect_grace.0);
            if let Some(calls) = app.calls()
                && let Err(e) = calls.disconnected_within(t, u, &conn, &app.node_id, grace).await
            {
                tracing::warn!(error = %e, tenant = %t, user = %u, "disconnect not recorded; a call may outlive it");
            }
        },
    );
    Ok(())
}

crate::contract::declare_events! { WEBRTC;
    "webrtc:get-ice-servers" => Read, get_ice_servers;
    "call:initiate" => Room, initiate;
    "call:answer" => Room, answer;
    "call:reject" => Room, reject;
    "call:hangup" => Room, hangup;
    "call:create-group" => Room, create_group;
    "call:add-participant" => Room, add_participant;
    "call:remove-participant" => Room, remove_participant;
    "webrtc:offer" => Signal, offer;
    "webrtc:answer" => Signal, sdp_answer;
    "webrtc:ice-candidate" => Signal, ice_candidate;
    "call:report-quality" => Read, report_quality;
    "call:history" => Read, history;
}

/// Connect handler of /webrtc: admission happened in [`admit`]; the token's clock starts.
pub async fn on_connect<A: Adapter>(s: SocketRef<A>, State(app): State<App>) {
    handler::admitted(&s, &app).await;
}

fn calls(app: &App) -> Result<&Calls, AckError> {
    app.calls()
        .ok_or_else(|| AckError::new(Code::Unavailable, "calls are not ready on this node"))
}

fn check_id(name: &str, v: &str) -> Result<(), AckError> {
    if ids::valid_id(v) {
        Ok(())
    } else {
        Err(AckError::bad_request(format!(
            "{name} must be 1-128 characters of A-Z a-z 0-9 - _ . @ +"
        )))
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "IceServersRequest")]
struct Empty {}

#[derive(Deserialize, schemars::JsonSchema)]
struct Initiate {
    callee_id: String,
    media_type: Media,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct CallRef {
    call_id: String,
    /// Free text from the client; accepted for the protocol, not stored.
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct CreateGroup {
    participant_ids: Vec<String>,
    media_type: Media,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ParticipantRef {
    call_id: String,
    user_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Sdp {
    call_id: String,
    to_user_id: String,
    sdp: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Candidate {
    call_id: String,
    to_user_id: String,
    candidate: Value,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "QualityReport")]
struct Quality {
    call_id: String,
    latency_ms: f64,
    packet_loss_percentage: f64,
    jitter_ms: f64,
    bitrate_kbps: f64,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "CallHistoryRequest")]
struct History {
    limit: Option<usize>,
    before: Option<i64>,
    /// With `before`: the id of the last call of the previous page (ties broken by id).
    before_id: Option<String>,
}

async fn get_ice_servers<A: Adapter>(cx: Cx<A>, _req: Empty) -> Result<ice::IceServers, AckError> {
    let w = &cx.app.config.webrtc;
    if w.turn_secret.is_some() && !w.turn_urls.is_empty() {
        // TURN credentials cannot be taken back (coturn checks only their signature and
        // expiry): a revoked user gets none, even before its disconnect reaches this socket.
        handler::not_revoked(&cx).await?;
    }
    let servers = ice::ice_servers(
        &w.stun_urls,
        &w.turn_urls,
        w.turn_secret.as_deref(),
        w.turn_ttl.0,
        &cx.id.user_id,
        now_secs(),
    );
    Ok(servers)
}

async fn initiate<A: Adapter>(cx: Cx<A>, req: Initiate) -> Result<CallAck, AckError> {
    check_id("callee_id", &req.callee_id)?;
    let call = calls(&cx.app)?
        .initiate(
            &cx.app,
            &cx.id.tenant,
            &cx.id.user_id,
            &req.callee_id,
            req.media_type,
        )
        .await?;
    Ok(CallAck { call })
}

async fn act<A: Adapter>(cx: &Cx<A>, call_id: &str, ev: Event) -> Result<CallAck, AckError> {
    check_id("call_id", call_id)?;
    let calls = calls(&cx.app)?;
    // Someone else's call, or another tenant's, is not found.
    calls
        .visible(&cx.id.tenant, &cx.id.user_id, call_id)
        .await?;
    let call = calls.act(&cx.app, &cx.id.tenant, call_id, ev).await?;
    Ok(CallAck { call })
}

async fn answer<A: Adapter>(cx: Cx<A>, req: CallRef) -> Result<CallAck, AckError> {
    let user = cx.id.user_id.clone();
    act(&cx, &req.call_id, Event::Answer { user }).await
}

async fn reject<A: Adapter>(cx: Cx<A>, req: CallRef) -> Result<CallAck, AckError> {
    let user = cx.id.user_id.clone();
    act(&cx, &req.call_id, Event::Reject { user }).await
}

async fn hangup<A: Adapter>(cx: Cx<A>, req: CallRef) -> Result<CallAck, AckError> {
    let user = cx.id.user_id.clone();
    act(&cx, &req.call_id, Event::Hangup { user }).await
}

async fn create_group<A: Adapter>(cx: Cx<A>, req: CreateGroup) -> Result<CallAck, AckError> {
    for u in &req.participant_ids {
        check_id("participant_ids", u)?;
    }
    let call = calls(&cx.app)?
        .create_group(
            &cx.app,
            &cx.id.tenant,
            &cx.id.user_id,
            &req.participant_ids,
            req.media_type,
        )
        .await?;
    Ok(CallAck { call })
}

async fn add_participant<A: Adapter>(cx: Cx<A>, req: ParticipantRef) -> Result<CallAck, AckError> {
    check_id("user_id", &req.user_id)?;
    let ev = Event::Add {
        by: cx.id.user_id.clone(),
        user: req.user_id,
    };
    act(&cx, &req.call_id, ev).await
}

async fn remove_participant<A: Adapter>(
    cx: Cx<A>,
    req: ParticipantRef,
) -> Result<CallAck, AckError> {
    check_id("user_id", &req.user_id)?;
    let ev = Event::Remove {
        by: cx.id.user_id.clone(),
        user: req.user_id,
    };
    act(&cx, &req.call_id, ev).await
}

/// Check and relay one signaling message.
async fn signal<A: Adapter>(cx: &Cx<A>, msg: Signal<'_>) -> Result<Done, AckError> {
    check_id("call_id", msg.call_id)?;
    check_id("to_user_id", msg.to)?;
    let (t, me) = (cx.id.tenant.as_str(), cx.id.user_id.as_str());
    let call = calls(&cx.app)?.visible(t, me, msg.call_id).await?;
    signaling::may_relay(&call, me, msg.to)?;
    signaling::relay(&cx.app, t, me, msg).await;
    Ok(Done {})
}

fn check_sdp(sdp: &str) -> Result<(), AckError> {
    if sdp.trim().is_empty() || sdp.len() > signaling::MAX_SDP_BYTES {
        return Err(AckError::bad_request(format!(
            "sdp must be a non-empty string of at most {} bytes",
            signaling::MAX_SDP_BYTES
        )));
    }
    Ok(())
}

async fn offer<A: Adapter>(cx: Cx<A>, req: Sdp) -> Result<Done, AckError> {
    check_sdp(&req.sdp)?;
    let msg = Signal {
        event: "webrtc:offer",
        call_id: &req.call_id,
        to: &req.to_user_id,
        payload: Payload::Sdp(req.sdp),
    };
    signal(&cx, msg).await
}

async fn sdp_answer<A: Adapter>(cx: Cx<A>, req: Sdp) -> Result<Done, AckError> {
    check_sdp(&req.sdp)?;
    let msg = Signal {
        event: "webrtc:answer",
        call_id: &req.call_id,
        to: &req.to_user_id,
        payload: Payload::Sdp(req.sdp),
    };
    signal(&cx, msg).await
}

async fn ice_candidate<A: Adapter>(cx: Cx<A>, req: Candidate) -> Result<Done, AckError> {
    let ok_shape = matches!(req.candidate, Value::Object(_) | Value::String(_));
    let size = serde_json::to_string(&req.candidate).map_or(usize::MAX, |s| s.len());
    if !ok_shape || size > signaling::MAX_CANDIDATE_BYTES {
        return Err(AckError::bad_request(format!(
            "candidate must be an object or a string of at most {} bytes",
            signaling::MAX_CANDIDATE_BYTES
        )));
    }
    let msg = Signal {
        event: "webrtc:ice-candidate",
        call_id: &req.call_id,
        to: &req.to_user_id,
        payload: Payload::Candidate(req.candidate),
    };
    signal(&cx, msg).await
}

async fn report_quality<A: Adapter>(cx: Cx<A>, req: Quality) -> Result<Issues, AckError> {
    check_id("call_id", &req.call_id)?;
    let sample = Sample {
        latency_ms: req.latency_ms,
        packet_loss_percentage: req.packet_loss_percentage,
        jitter_ms: req.jitter_ms,
        bitrate_kbps: req.bitrate_kbps,
    };
    let issues = calls(&cx.app)?
        .report_quality(&cx.id.tenant, &cx.id.user_id, &req.call_id, &sample)
        .await?;
    cx.app.metrics.call_quality_reports.inc();
    for issue in &issues {
        Metrics::kind(&cx.app.metrics.call_quality_issues, issue.as_str());
    }
    if !issues.is_empty() {
        let data = json!(QualityIssue {
            call_id: req.call_id,
            issues: issues.clone(),
            report: sample,
        });
        if let Err(e) = cx.socket.emit("call:quality-issue", &data) {
            tracing::debug!(error = %e, "quality issue not delivered");
        }
    }
    Ok(Issues { issues })
}

async fn history<A: Adapter>(cx: Cx<A>, req: History) -> Result<CallList, AckError> {
    let limit = req.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(AckError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    if let Some(id) = &req.before_id {
        check_id("before_id", id)?;
    }
    let cursor = match (req.before, req.before_id) {
        (Some(created_at), id) => Some(Cursor { created_at, id }),
        (None, Some(_)) => return Err(AckError::bad_request("before_id needs before")),
        (None, None) => None,
    };
    let calls = calls(&cx.app)?
        .history(&cx.id.tenant, &cx.id.user_id, limit, cursor.as_ref())
        .await?;
    Ok(CallList { calls })
}
