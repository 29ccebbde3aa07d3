//! Calls: the state machine of 1:1 and group calls, decided by a pure function.
//!
//! ```text
//!   initiate ──▶ ringing ──answer──▶ active ──hangup / all_left / disconnected──▶ ended
//!                   │ reject / hangup / timeout / disconnected ──────────────────▶ ended
//! ```
//!
//! [`apply`] takes a call and an event and returns the next call and what to announce,
//! or a typed refusal; it does no I/O and is tested over every state × event below.
//! [`service`] is the thin async layer: it loads a call, applies, commits atomically
//! (compare-and-set on a version, with the users' "in a call" claims in the same
//! script), then announces, schedules timers and writes history.

pub mod history;
pub mod quality;
pub mod redis;
pub mod service;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{AckError, Code, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "CallKind")]
pub enum Kind {
    Direct,
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    Audio,
    Video,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Ringing,
    Active,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    Ringing,
    Joined,
    Left,
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Hangup,
    Rejected,
    Timeout,
    Busy,
    Disconnected,
    AllLeft,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::Rejected => "rejected",
            EndReason::Timeout => "timeout",
            EndReason::Busy => "busy",
            EndReason::Disconnected => "disconnected",
            EndReason::AllLeft => "all_left",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Participant {
    pub user_id: String,
    pub state: PartState,
    /// When this user was (last) invited; the ringing timeout counts from here.
    pub invited_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_at: Option<i64>,
}

/// A call as PROTOCOL.md gives it (plus per-participant times).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Call {
    pub id: String,
    pub kind: Kind,
    pub media_type: Media,
    pub initiator_id: String,
    pub participants: Vec<Participant>,
    pub state: CallState,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
}

/// Something that happens to a call. `user` is always the authenticated user (or, for
/// timers, the user the timer was set for), never a client-supplied id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Answer {
        user: String,
    },
    Reject {
        user: String,
    },
    Hangup {
        user: String,
    },
    Add {
        by: String,
        user: String,
    },
    Remove {
        by: String,
        user: String,
    },
    /// The ringing timer of `user` fired.
    RingTimeout {
        user: String,
    },
    /// `user` has had no /webrtc connection for the grace period.
    Disconnected {
        user: String,
    },
}

/// What the async layer announces after a committed transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `call:incoming` to the user (and a ringing timer for them).
    Invited(String),
    /// Direct call answered: `call:answered`.
    Answered(String),
    /// `call:rejected`.
    Rejected(String),
    /// Group: `call:participant-joined`.
    Joined(String),
    /// Group: `call:participant-left`.
    Left(String),
    /// `call:ended {call, reason}`.
    Ended(EndReason),
}

/// Limits the transitions need.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub ringing_timeout_ms: i64,
    pub max_participants: usize,
}

/// Why a transition was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("you are not a participant of this call")]
    NotParticipant,
    #[error("the call has ended")]
    Ended,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(&'static str),
}

impl From<CallError> for AckError {
    fn from(e: CallError) -> Self {
        let code = match &e {
            CallError::NotParticipant | CallError::Forbidden(_) => Code::Forbidden,
            CallError::Ended | CallError::Conflict(_) => Code::Conflict,
            CallError::BadRequest(_) => Code::BadRequest,
        };
        AckError::new(code, e.to_string())
    }
}

/// The result of [`apply`]: the next call (unchanged when a timer found nothing to do)
/// and what to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub call: Call,
    pub notices: Vec<Notice>,
}

// === impl Call ===

impl Call {
    /// A 1:1 call from `caller` to `callee`, ringing.
    pub fn direct(id: String, caller: &str, callee: &str, media: Media, now: i64) -> Call {
        Call {
            id,
            kind: Kind::Direct,
            media_type: media,
            initiator_id: caller.to_owned(),
            participants: vec![
                Participant::joined(caller, now),
                Participant::ringing(callee, now),
            ],
            state: CallState::Ringing,
            created_at: now,
            answered_at: None,
            ended_at: None,
            end_reason: None,
        }
    }

    /// A group call: the initiator has joined, the others ring.
    pub fn group(
        id: String,
        initiator: &str,
        others: &[String],
        media: Media,
        now: i64,
        rules: &Rules,
    ) -> Result<Call, CallError> {
        let invited: BTreeSet<&str> = others
            .iter()
            .map(String::as_str)
            .filter(|u| *u != initiator)
            .collect();
        if invited.is_empty() {
            return Err(CallError::BadRequest(
                "participant_ids must name at least one other user",
            ));
        }
        if invited.len() + 1 > rules.max_participants {
            return Err(too_many(rules));
        }
        let mut participants = vec![Participant::joined(initiator, now)];
        participants.extend(invited.into_iter().map(|u| Participant::ringing(u, now)));
        Ok(Call {
            id,
            kind: Kind::Group,
            media_type: media,
            initiator_id: initiator.to_owned(),
            participants,
            state: CallState::Ringing,
            created_at: now,
            answered_at: None,
            ended_at: None,
            end_reason: None,
        })
    }

    /// A direct call that ended at once because the callee was in another call.
    pub fn busy(mut self, now: i64) -> Call {
        end(&mut self, EndReason::Busy, now);
        self
    }

    pub fn participant(&self, user: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user_id == user)
    }

    fn participant_mut(&mut self, user: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.user_id == user)
    }

    /// True while the user takes part: ringing or joined, in a call that has not ended.
    pub fn is_live_participant(&self, user: &str) -> bool {
        self.state != CallState::Ended
            && self
                .participant(user)
                .is_some_and(|p| matches!(p.state, PartState::Ringing | PartState::Joined))
    }

    /// Users this call keeps "in a call" (busy for others): both sides of a live direct
    /// call, the joined members of a live group call.
    pub fn holders(&self) -> BTreeSet<String> {
        if self.state == CallState::Ended {
            return BTreeSet::new();
        }
        self.participants
            .iter()
            .filter(|p| match self.kind {
                Kind::Direct => matches!(p.state, PartState::Ringing | PartState::Joined),
                Kind::Group => p.state == PartState::Joined,
            })
            .map(|p| p.user_id.clone())
            .collect()
    }

    /// Everyone to tell about a change: every participant, whatever their state.
    pub fn audience(&self) -> Vec<String> {
        self.participants
            .iter()
            .map(|p| p.user_id.clone())
            .collect()
    }

    /// Direct call whose callee is `caller` and whose initiator is `callee`, still
    /// ringing: the two sides called each other at once.
    pub fn is_glare_with(&self, caller: &str, callee: &str) -> bool {
        self.kind == Kind::Direct
            && self.state == CallState::Ringing
            && self.initiator_id == callee
            && self
                .participant(caller)
                .is_some_and(|p| p.state == PartState::Ringing)
    }
}

impl Participant {
    fn joined(user: &str, now: i64) -> Self {
        Self {
            user_id: user.to_owned(),
            state: PartState::Joined,
            invited_at: now,
            joined_at: Some(now),
            left_at: None,
        }
    }

    fn ringing(user: &str, now: i64) -> Self {
        Self {
            user_id: user.to_owned(),
            state: PartState::Ringing,
            invited_at: now,
            joined_at: None,
            left_at: None,
        }
    }
}

/// A group call's participant list keeps everyone who ever took part (with their
/// state), so people coming and going could grow it without end: it holds at most this
/// many times `calls.max_participants` entries. Adding someone new to a full list is
/// `forbidden`; someone already on it (who left) may always be added again.
pub const PARTICIPANT_ENTRIES_PER_SEAT: usize = 4;

fn list_full(rules: &Rules) -> CallError {
    CallError::Forbidden(format!(
        "this call's participant list is full: it keeps at most {} people who ever took part ({PARTICIPANT_ENTRIES_PER_SEAT} × calls.max_participants); start a new call",
        rules
            .max_participants
            .saturating_mul(PARTICIPANT_ENTRIES_PER_SEAT)
    ))
}

fn too_many(rules: &Rules) -> CallError {
    CallError::Forbidden(format!(
        "a call holds at most {} participants (calls.max_participants)",
        rules.max_participants
    ))
}

/// End the call: everyone still ringing or joined has left.
fn end(call: &mut Call, reason: EndReason, now: i64) {
    for p in &mut call.participants {
        if matches!(p.state, PartState::Ringing | PartState::Joined) {
            p.state = PartState::Left;
            p.left_at = Some(now);
        }
    }
    call.state = CallState::Ended;
    call.ended_at = Some(now);
    call.end_reason = Some(reason);
}

/// Group calls end when fewer than two take part or nobody has joined.
fn end_group_if_over(call: &mut Call, notices: &mut Vec<Notice>, now: i64, timed_out: bool) {
    let live = call
        .participants
        .iter()
        .filter(|p| matches!(p.state, PartState::Ringing | PartState::Joined))
        .count();
    let joined = call
        .participants
        .iter()
        .filter(|p| p.state == PartState::Joined)
        .count();
    if live < 2 || joined == 0 {
        let reason = if timed_out && call.answered_at.is_none() {
            EndReason::Timeout
        } else {
            EndReason::AllLeft
        };
        end(call, reason, now);
        notices.push(Notice::Ended(reason));
    }
}

/// Decide the next state of `call` for `ev` at `now`.
///
/// Timer events (`RingTimeout`, `Disconnected`) never fail: when there is nothing left to
/// do they return the call unchanged with no notices (a timer that lost a race).
pub fn apply(call: &Call, ev: &Event, now: i64, rules: &Rules) -> Result<Outcome, CallError> {
    let unchanged = || {
        Ok(Outcome {
            call: call.clone(),
            notices: Vec::new(),
        })
    };
    let timer = matches!(ev, Event::RingTimeout { .. } | Event::Disconnected { .. });
    if call.state == CallState::Ended {
        return if timer {
            unchanged()
        } else {
            Err(CallError::Ended)
        };
    }
    let actor = match ev {
        Event::Answer { user }
        | Event::Reject { user }
        | Event::Hangup { user }
        | Event::RingTimeout { user }
        | Event::Disconnected { user } => user,
        Event::Add { by, .. } | Event::Remove { by, .. } => by,
    };
    let Some(me) = call.participant(actor).map(|p| p.state) else {
        return if timer {
            unchanged()
        } else {
            Err(CallError::NotParticipant)
        };
    };
    let mut next = call.clone();
    let mut notices = Vec::new();
    match (call.kind, ev) {
        // === direct calls ===
        (Kind::Direct, Event::Answer { user }) => {
            if call.state != CallState::Ringing || me != PartState::Ringing {
                return Err(CallError::Conflict("only the ringing callee can answer"));
            }
            set_joined(&mut next, user, now);
            next.state = CallState::Active;
            next.answered_at = Some(now);
            notices.push(Notice::Answered(user.clone()));
        }
        (Kind::Direct, Event::Reject { user }) => {
            if call.state != CallState::Ringing || me != PartState::Ringing {
                return Err(CallError::Conflict("only the ringing callee can reject"));
            }
            reject_direct(&mut next, &mut notices, user, now);
        }
        // A ringing callee hanging up declines the call: it ends as `rejected`.
        (Kind::Direct, Event::Hangup { user }) if me == PartState::Ringing => {
            reject_direct(&mut next, &mut notices, user, now);
        }
        (Kind::Direct, Event::Hangup { .. }) => {
            end(&mut next, EndReason::Hangup, now);
            notices.push(Notice::Ended(EndReason::Hangup));
        }
        (Kind::Direct, Event::RingTimeout { .. }) => {
            if call.state != CallState::Ringing || me != PartState::Ringing {
                return unchanged();
            }
            end(&mut next, EndReason::Timeout, now);
            notices.push(Notice::Ended(EndReason::Timeout));
        }
        (Kind::Direct, Event::Disconnected { .. }) => {
            end(&mut next, EndReason::Disconnected, now);
            notices.push(Notice::Ended(EndReason::Disconnected));
        }
        (Kind::Direct, Event::Add { .. } | Event::Remove { .. }) => {
            return Err(CallError::BadRequest(
                "participants can only be added to or removed from group calls",
            ));
        }
        // === group calls ===
        (Kind::Group, Event::Answer { user }) => {
            if me != PartState::Ringing {
                return Err(CallError::Conflict("you are not being called"));
            }
            set_joined(&mut next, user, now);
            if next.state == CallState::Ringing {
                next.state = CallState::Active;
                next.answered_at = Some(now);
            }
            notices.push(Notice::Joined(user.clone()));
        }
        (Kind::Group, Event::Reject { user }) => {
            if me != PartState::Ringing {
                return Err(CallError::Conflict("you are not being called"));
            }
            reject_group(&mut next, &mut notices, user, now);
        }
        // A ringing participant hanging up declines, as a reject does.
        (Kind::Group, Event::Hangup { user }) if me == PartState::Ringing => {
            reject_group(&mut next, &mut notices, user, now);
        }
        (Kind::Group, Event::Hangup { user } | Event::Disconnected { user }) => {
            if !matches!(me, PartState::Ringing | PartState::Joined) {
                return if timer {
                    unchanged()
                } else {
                    Err(CallError::Conflict("you already left this call"))
                };
            }
            leave(&mut next, user, now);
            notices.push(Notice::Left(user.clone()));
            end_group_if_over(&mut next, &mut notices, now, false);
        }
        (Kind::Group, Event::RingTimeout { user }) => {
            let due = call
                .participant(user)
                .is_some_and(|p| p.invited_at + rules.ringing_timeout_ms <= now);
            if me != PartState::Ringing || !due {
                return unchanged();
            }
            leave(&mut next, user, now);
            notices.push(Notice::Left(user.clone()));
            end_group_if_over(&mut next, &mut notices, now, true);
        }
        (Kind::Group, Event::Add { user, .. }) => {
            if me != PartState::Joined {
                return Err(CallError::Forbidden(
                    "only a joined participant can add others".into(),
                ));
            }
            let live = call
                .participants
                .iter()
                .filter(|p| matches!(p.state, PartState::Ringing | PartState::Joined))
                .count();
            match next.participant_mut(user) {
                Some(p) if matches!(p.state, PartState::Ringing | PartState::Joined) => {
                    return Err(CallError::Conflict("that user is already in the call"));
                }
                _ if live + 1 > rules.max_participants => return Err(too_many(rules)),
                None if call.participants.len()
                    >= rules
                        .max_participants
                        .saturating_mul(PARTICIPANT_ENTRIES_PER_SEAT) =>
                {
                    return Err(list_full(rules));
                }
                Some(p) => {
                    *p = Participant::ringing(user, now);
                }
                None => next.participants.push(Participant::ringing(user, now)),
            }
            notices.push(Notice::Invited(user.clone()));
        }
        (Kind::Group, Event::Remove { by, user }) => {
            if by != user && (*by != call.initiator_id || me != PartState::Joined) {
                return Err(CallError::Forbidden(
                    "only the initiator, while joined, can remove others".into(),
                ));
            }
            let target = call.participant(user).map(|p| p.state);
            if !matches!(target, Some(PartState::Ringing | PartState::Joined)) {
                return Err(CallError::Conflict("that user is not in the call"));
            }
            leave(&mut next, user, now);
            notices.push(Notice::Left(user.clone()));
            end_group_if_over(&mut next, &mut notices, now, false);
        }
    }
    Ok(Outcome {
        call: next,
        notices,
    })
}

fn reject_direct(call: &mut Call, notices: &mut Vec<Notice>, user: &str, now: i64) {
    if let Some(p) = call.participant_mut(user) {
        p.state = PartState::Rejected;
        p.left_at = Some(now);
    }
    end(call, EndReason::Rejected, now);
    notices.push(Notice::Rejected(user.to_owned()));
    notices.push(Notice::Ended(EndReason::Rejected));
}

fn reject_group(call: &mut Call, notices: &mut Vec<Notice>, user: &str, now: i64) {
    if let Some(p) = call.participant_mut(user) {
        p.state = PartState::Rejected;
        p.left_at = Some(now);
    }
    notices.push(Notice::Rejected(user.to_owned()));
    end_group_if_over(call, notices, now, false);
}

fn set_joined(call: &mut Call, user: &str, now: i64) {
    if let Some(p) = call.participant_mut(user) {
        p.state = PartState::Joined;
        p.joined_at = Some(now);
    }
}

fn leave(call: &mut Call, user: &str, now: i64) {
    if let Some(p) = call.participant_mut(user) {
        p.state = PartState::Left;
        p.left_at = Some(now);
    }
}

// === storage ===

/// A timer kept in the store, fired by whichever node polls first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer {
    pub tenant: String,
    pub call_id: String,
    pub kind: TimerKind,
    pub user_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    Ring,
    Grace,
}

impl Timer {
    /// `tenant|call|ring|user` (ids cannot hold `|`, see `ids`).
    pub fn member(&self) -> String {
        let k = match self.kind {
            TimerKind::Ring => "ring",
            TimerKind::Grace => "grace",
        };
        format!("{}|{}|{k}|{}", self.tenant, self.call_id, self.user_id)
    }

    pub fn parse(m: &str) -> Option<Timer> {
        let mut it = m.split('|');
        let (t, c, k, u) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let kind = match k {
            "ring" => TimerKind::Ring,
            "grace" => TimerKind::Grace,
            _ => return None,
        };
        Some(Timer {
            tenant: t.into(),
            call_id: c.into(),
            kind,
            user_id: u.into(),
        })
    }

    pub fn event(&self) -> Event {
        let user = self.user_id.clone();
        match self.kind {
            TimerKind::Ring => Event::RingTimeout { user },
            TimerKind::Grace => Event::Disconnected { user },
        }
    }
}

/// The history outbox's size and what its bound cost ([`CallStore::outbox_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub dropped: u64,
}

/// Default bound on one tenant's history outbox (`calls.history_outbox_max`).
pub const DEFAULT_OUTBOX_MAX: usize = 100_000;

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Written; the new version.
    Done(u64),
    /// Someone else changed the call first: reload and decide again.
    Stale,
    /// `user` is held by another live call, `call_id`; nothing written.
    Held { user: String, call_id: String },
    /// A new call was refused: the store holds as many live calls as it may.
    Full,
}

/// One quality report, as validated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sample {
    pub latency_ms: f64,
    pub packet_loss_percentage: f64,
    pub jitter_ms: f64,
    pub bitrate_kbps: f64,
}

/// Reports kept per call and per tenant (older ones drop off).
pub const MAX_SAMPLES_PER_CALL: usize = 1000;
pub const MAX_SAMPLES_PER_TENANT: usize = 5000;

/// Call storage. Every call is scoped by tenant; nothing reads across tenants, except
/// the timer queue, which every node polls for all tenants.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// The call and its version.
    async fn load(&self, tenant: &str, call_id: &str) -> Result<Option<(Call, u64)>, StoreError>;
    /// Write `call` if its version is still `expected` (0: it must not exist yet), and
    /// atomically claim `claims` for it (each user must not be held by another live call),
    /// release `releases` (when still held by it), and queue `record` (the history
    /// document of a call that ends with this commit) in the history outbox.
    async fn commit(
        &self,
        tenant: &str,
        call: &Call,
        expected: u64,
        claims: &[String],
        releases: &[String],
        record: Option<&str>,
    ) -> Result<Commit, StoreError>;
    /// History records waiting for the history database, oldest first, at most `max`:
    /// `(tenant, record JSON)`. Every node drains them; they stay until
    /// [`CallStore::outbox_done`], so a node dying mid-write loses nothing.
    async fn outbox(&self, max: usize) -> Result<Vec<(String, String)>, StoreError>;
    /// The record is in the history database.
    async fn outbox_done(&self, tenant: &str, record: &str) -> Result<(), StoreError>;
    /// Records waiting in the outbox, over all tenants, and how many this store handle
    /// dropped since it was made (a tenant's outbox past its bound loses its oldest).
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
    /// The live call a user is held by.
    async fn user_call(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError>;
    async fn schedule(&self, timer: &Timer, at_ms: i64) -> Result<(), StoreError>;
    async fn cancel(&self, timer: &Timer) -> Result<(), StoreError>;
    /// Timers due at `now`, at most `max`, leased until `now + lease_ms` (so another
    /// node fires them if this one dies before [`CallStore::finish`]).
    async fn due(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Timer>, StoreError>;
    /// Is the timer still the one [`CallStore::due`] leased until `lease_until` (not
    /// cancelled nor rescheduled since)?
    async fn leased(&self, timer: &Timer, lease_until: i64) -> Result<bool, StoreError>;
    /// Remove a fired timer, only if it is still the leased one (a newer schedule stays).
    async fn finish(&self, timer: &Timer, lease_until: i64) -> Result<(), StoreError>;
    async fn add_sample(&self, tenant: &str, call_id: &str, s: &Sample) -> Result<(), StoreError>;
    /// A call's samples, or (call_id None) the tenant's recent samples.
    async fn samples(&self, tenant: &str, call_id: Option<&str>)
    -> Result<Vec<Sample>, StoreError>;

    // --- /webrtc connections, so a participant's disconnect is seen on any node, and a
    // --- dead node's connections are taken down by the survivors.

    /// A /webrtc connection `conn` of the user opened on `node`.
    async fn conn_up(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<(), StoreError>;
    /// How many /webrtc connections the user has (any node).
    async fn conn_count(&self, tenant: &str, user: &str) -> Result<usize, StoreError>;
    /// It closed; how many /webrtc connections the user still has (any node), counted
    /// atomically with the removal.
    async fn conn_down(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<usize, StoreError>;
    /// `node` is alive for `ttl_ms` more; whether it still was (its heartbeat had not
    /// lapsed).
    async fn heartbeat(&self, node: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Is `node` among the nodes holding connections (not swept as dead)?
    async fn node_known(&self, node: &str) -> Result<bool, StoreError>;
    /// Nodes with connections whose heartbeat is gone, each claimed for one sweeper.
    async fn claim_dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError>;
    /// The `(tenant, user, conn)` a node held.
    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Drop a swept node's bookkeeping.
    async fn forget_node(&self, node: &str) -> Result<(), StoreError>;
    /// Live calls (ringing or active) of every tenant at `now` (ms), for the
    /// `switchboard_calls_active` gauge.
    async fn live_calls(&self, now: i64) -> Result<u64, StoreError>;
}

// === impl MemoryCalls ===

/// Calls kept in memory at most; ended calls are dropped first past this.
pub const MAX_MEMORY_CALLS: usize = 100_000;

#[derive(Default)]
struct Mem {
    calls: HashMap<(String, String), (Call, u64)>,
    users: HashMap<(String, String), String>,
    timers: BTreeMap<(i64, String), Timer>,
    timer_at: HashMap<String, i64>,
    call_samples: HashMap<(String, String), std::collections::VecDeque<Sample>>,
    /// Open /webrtc connections per user (one node: nothing to sweep).
    conns: HashMap<(String, String), BTreeSet<String>>,
    tenant_samples: HashMap<String, std::collections::VecDeque<Sample>>,
    /// History records not yet written (drained right after the commit).
    outbox: std::collections::VecDeque<(String, String)>,
}

/// Embedded mode.
pub struct MemoryCalls {
    inner: Mutex<Mem>,
    /// Records one tenant's outbox holds at most (`calls.history_outbox_max`).
    outbox_max: usize,
    /// Records dropped from a full outbox.
    dropped: std::sync::atomic::AtomicU64,
}

impl Default for MemoryCalls {
    fn default() -> Self {
        Self::with_outbox_max(DEFAULT_OUTBOX_MAX)
    }
}

impl MemoryCalls {
    pub fn with_outbox_max(outbox_max: usize) -> Self {
        Self {
            inner: Mutex::default(),
            outbox_max: outbox_max.max(1),
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn push_bounded(q: &mut std::collections::VecDeque<Sample>, s: Sample, max: usize) {
    q.push_back(s);
    while q.len() > max {
        q.pop_front();
    }
}

#[async_trait]
impl CallStore for MemoryCalls {
    async fn load(&self, tenant: &str, call_id: &str) -> Result<Option<(Call, u64)>, StoreError> {
        Ok(self
            .lock()
            .calls
            .get(&(tenant.to_owned(), call_id.to_owned()))
            .cloned())
    }

    async fn commit(
        &self,
        tenant: &str,
        call: &Call,
        expected: u64,
        claims: &[String],
        releases: &[String],
        record: Option<&str>,
    ) -> Result<Commit, StoreError> {
        let mut m = self.lock();
        let key = (tenant.to_owned(), call.id.clone());
        let version = m.calls.get(&key).map_or(0, |(_, v)| *v);
        if version != expected {
            return Ok(Commit::Stale);
        }
        if version == 0 && m.calls.len() >= MAX_MEMORY_CALLS {
            m.calls.retain(|_, (c, _)| c.state != CallState::Ended);
            if m.calls.len() >= MAX_MEMORY_CALLS {
                return Ok(Commit::Full);
            }
        }
        for u in claims {
            if let Some(other) = m.users.get(&(tenant.to_owned(), u.clone()))
                && *other != call.id
                && m.calls
                    .get(&(tenant.to_owned(), other.clone()))
                    .is_some_and(|(c, _)| c.state != CallState::Ended)
            {
                return Ok(Commit::Held {
                    user: u.clone(),
                    call_id: other.clone(),
                });
            }
        }
        for u in claims {
            m.users
                .insert((tenant.to_owned(), u.clone()), call.id.clone());
        }
        for u in releases {
            let k = (tenant.to_owned(), u.clone());
            if m.users.get(&k) == Some(&call.id) {
                m.users.remove(&k);
            }
        }
        if let Some(r) = record {
            let mine = m.outbox.iter().filter(|(t, _)| t == tenant).count();
            let oldest_mine = m.outbox.iter().position(|(t, _)| t == tenant);
            let drop_at = if mine >= self.outbox_max {
                oldest_mine
            } else if m.outbox.len() >= MAX_MEMORY_CALLS {
                Some(0)
            } else {
                None
            };
            if let Some(i) = drop_at {
                m.outbox.remove(i);
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(tenant = %tenant, "call history outbox full; the oldest record dropped");
            }
            m.outbox.push_back((tenant.to_owned(), r.to_owned()));
        }
        m.calls.insert(key, (call.clone(), version + 1));
        Ok(Commit::Done(version + 1))
    }

    async fn user_call(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .users
            .get(&(tenant.to_owned(), user_id.to_owned()))
            .cloned())
    }

    async fn schedule(&self, timer: &Timer, at_ms: i64) -> Result<(), StoreError> {
        let mut m = self.lock();
        let member = timer.member();
        if let Some(old) = m.timer_at.insert(member.clone(), at_ms) {
            m.timers.remove(&(old, member.clone()));
        }
        m.timers.insert((at_ms, member), timer.clone());
        Ok(())
    }

    async fn leased(&self, timer: &Timer, lease_until: i64) -> Result<bool, StoreError> {
        Ok(self.lock().timer_at.get(&timer.member()) == Some(&lease_until))
    }

    async fn finish(&self, timer: &Timer, lease_until: i64) -> Result<(), StoreError> {
        let mut m = self.lock();
        let member = timer.member();
        if m.timer_at.get(&member) == Some(&lease_until) {
            m.timer_at.remove(&member);
            m.timers.remove(&(lease_until, member));
        }
        Ok(())
    }

    async fn outbox(&self, max: usize) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.lock().outbox.iter().take(max).cloned().collect())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        Ok(OutboxStats {
            pending: self.lock().outbox.len() as u64,
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn outbox_done(&self, tenant: &str, record: &str) -> Result<(), StoreError> {
        let mut m = self.lock();
        if let Some(i) = m
            .outbox
            .iter()
            .position(|(t, r)| t == tenant && r == record)
        {
            m.outbox.remove(i);
        }
        Ok(())
    }

    async fn cancel(&self, timer: &Timer) -> Result<(), StoreError> {
        let mut m = self.lock();
        let member = timer.member();
        if let Some(at) = m.timer_at.remove(&member) {
            m.timers.remove(&(at, member));
        }
        Ok(())
    }

    async fn due(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Timer>, StoreError> {
        let mut m = self.lock();
        let due: Vec<(i64, String)> = m
            .timers
            .range(..=(now, String::from("\u{10ffff}")))
            .take(max)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in due {
            if let Some(t) = m.timers.remove(&k) {
                m.timers.insert((now + lease_ms, k.1.clone()), t.clone());
                m.timer_at.insert(k.1, now + lease_ms);
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn add_sample(&self, tenant: &str, call_id: &str, s: &Sample) -> Result<(), StoreError> {
        let mut m = self.lock();
        if m.call_samples.len() >= MAX_MEMORY_CALLS {
            // Bounded like the calls: the samples of calls that ended (or are gone) go;
            // live calls keep theirs (there are at most MAX_MEMORY_CALLS of them).
            let Mem {
                calls,
                call_samples,
                ..
            } = &mut *m;
            call_samples.retain(|k, _| {
                calls
                    .get(k)
                    .is_some_and(|(c, _)| c.state != CallState::Ended)
            });
            if m.call_samples.len() >= MAX_MEMORY_CALLS {
                return Err(StoreError::Unavailable(
                    "too many live calls' quality samples in memory".into(),
                ));
            }
        }
        push_bounded(
            m.call_samples
                .entry((tenant.to_owned(), call_id.to_owned()))
                .or_default(),
            *s,
            MAX_SAMPLES_PER_CALL,
        );
        push_bounded(
            m.tenant_samples.entry(tenant.to_owned()).or_default(),
            *s,
            MAX_SAMPLES_PER_TENANT,
        );
        Ok(())
    }

    async fn samples(
        &self,
        tenant: &str,
        call_id: Option<&str>,
    ) -> Result<Vec<Sample>, StoreError> {
        let m = self.lock();
        let q = match call_id {
            Some(c) => m.call_samples.get(&(tenant.to_owned(), c.to_owned())),
            None => m.tenant_samples.get(tenant),
        };
        Ok(q.map(|q| q.iter().copied().collect()).unwrap_or_default())
    }

    async fn conn_up(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        _node: &str,
    ) -> Result<(), StoreError> {
        self.lock()
            .conns
            .entry((tenant.to_owned(), user.to_owned()))
            .or_default()
            .insert(conn.to_owned());
        Ok(())
    }

    async fn conn_count(&self, tenant: &str, user: &str) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .conns
            .get(&(tenant.to_owned(), user.to_owned()))
            .map_or(0, BTreeSet::len))
    }

    async fn conn_down(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        _node: &str,
    ) -> Result<usize, StoreError> {
        let mut m = self.lock();
        let key = (tenant.to_owned(), user.to_owned());
        let left = m.conns.get_mut(&key).map_or(0, |c| {
            c.remove(conn);
            c.len()
        });
        if left == 0 {
            m.conns.remove(&key);
        }
        Ok(left)
    }

    async fn heartbeat(&self, _node: &str, _ttl_ms: i64) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn node_known(&self, _node: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn claim_dead_nodes(&self, _me: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn node_conns(&self, _node: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(Vec::new())
    }

    async fn forget_node(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn live_calls(&self, _now: i64) -> Result<u64, StoreError> {
        let m = self.lock();
        Ok(m.calls
            .values()
            .filter(|(c, _)| c.state != CallState::Ended)
            .count() as u64)
    }
}

#[cfg(test)]
mod tests;
