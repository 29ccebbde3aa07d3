//! [`apply`] over every call state × event, for the actors that matter.

use super::*;

const RULES: Rules = Rules {
    ringing_timeout_ms: 30_000,
    max_participants: 4,
};
const T0: i64 = 1_000;
const LATER: i64 = T0 + 31_000;

fn mk_direct() -> Call {
    Call::direct("c1".into(), "alice", "bob", Media::Audio, T0)
}

fn mk_active_direct() -> Call {
    ok(&mk_direct(), answer("bob"), T0 + 5).call
}

fn mk_group() -> Call {
    Call::group(
        "g1".into(),
        "alice",
        &["bob".into(), "carol".into()],
        Media::Video,
        T0,
        &RULES,
    )
    .unwrap()
}

fn mk_active_group() -> Call {
    ok(&mk_group(), answer("bob"), T0 + 5).call
}

fn answer(u: &str) -> Event {
    Event::Answer { user: u.into() }
}
fn reject(u: &str) -> Event {
    Event::Reject { user: u.into() }
}
fn hangup(u: &str) -> Event {
    Event::Hangup { user: u.into() }
}
fn timeout(u: &str) -> Event {
    Event::RingTimeout { user: u.into() }
}
fn gone(u: &str) -> Event {
    Event::Disconnected { user: u.into() }
}
fn add(by: &str, u: &str) -> Event {
    Event::Add {
        by: by.into(),
        user: u.into(),
    }
}
fn remove(by: &str, u: &str) -> Event {
    Event::Remove {
        by: by.into(),
        user: u.into(),
    }
}

fn ok(c: &Call, ev: Event, now: i64) -> Outcome {
    apply(c, &ev, now, &RULES).unwrap_or_else(|e| panic!("{ev:?} on {:?}: {e}", c.state))
}

fn refused(c: &Call, ev: Event) -> CallError {
    apply(c, &ev, T0 + 10, &RULES).expect_err("should be refused")
}

fn state_of(c: &Call, u: &str) -> PartState {
    c.participant(u).unwrap().state
}

// === direct, ringing ===

#[test]
fn direct_ringing_answer_by_callee_makes_it_active() {
    let o = ok(&mk_direct(), answer("bob"), T0 + 5);
    assert_eq!(o.call.state, CallState::Active);
    assert_eq!(o.call.answered_at, Some(T0 + 5));
    assert_eq!(state_of(&o.call, "bob"), PartState::Joined);
    assert_eq!(o.notices, vec![Notice::Answered("bob".into())]);
}

#[test]
fn direct_ringing_caller_cannot_answer_or_reject() {
    assert!(matches!(
        refused(&mk_direct(), answer("alice")),
        CallError::Conflict(_)
    ));
    assert!(matches!(
        refused(&mk_direct(), reject("alice")),
        CallError::Conflict(_)
    ));
}

#[test]
fn direct_ringing_reject_ends_as_rejected() {
    let o = ok(&mk_direct(), reject("bob"), T0 + 5);
    assert_eq!(o.call.state, CallState::Ended);
    assert_eq!(o.call.end_reason, Some(EndReason::Rejected));
    assert_eq!(state_of(&o.call, "bob"), PartState::Rejected);
    assert_eq!(state_of(&o.call, "alice"), PartState::Left);
    assert_eq!(
        o.notices,
        vec![
            Notice::Rejected("bob".into()),
            Notice::Ended(EndReason::Rejected)
        ]
    );
}

#[test]
fn direct_ringing_hangup_by_either_side_ends_as_hangup() {
    for u in ["alice", "bob"] {
        let o = ok(&mk_direct(), hangup(u), T0 + 5);
        assert_eq!(o.call.end_reason, Some(EndReason::Hangup), "{u}");
        assert!(o.call.holders().is_empty());
    }
}

#[test]
fn direct_ringing_timeout_ends_as_timeout() {
    let o = ok(&mk_direct(), timeout("bob"), LATER);
    assert_eq!(o.call.end_reason, Some(EndReason::Timeout));
    assert_eq!(o.call.ended_at, Some(LATER));
    assert_eq!(o.notices, vec![Notice::Ended(EndReason::Timeout)]);
}

#[test]
fn direct_ringing_disconnect_ends_as_disconnected() {
    let o = ok(&mk_direct(), gone("alice"), T0 + 5);
    assert_eq!(o.call.end_reason, Some(EndReason::Disconnected));
}

#[test]
fn direct_calls_take_no_add_or_remove() {
    for c in [mk_direct(), mk_active_direct()] {
        assert!(matches!(
            refused(&c, add("alice", "carol")),
            CallError::BadRequest(_)
        ));
        assert!(matches!(
            refused(&c, remove("alice", "bob")),
            CallError::BadRequest(_)
        ));
    }
}

#[test]
fn outsiders_are_refused_and_their_timers_do_nothing() {
    for c in [
        mk_direct(),
        mk_active_direct(),
        mk_group(),
        mk_active_group(),
    ] {
        for ev in [
            answer("eve"),
            reject("eve"),
            hangup("eve"),
            add("eve", "x"),
            remove("eve", "bob"),
        ] {
            assert_eq!(refused(&c, ev), CallError::NotParticipant);
        }
        for ev in [timeout("eve"), gone("eve")] {
            let o = ok(&c, ev, LATER);
            assert_eq!(o.call, c);
            assert!(o.notices.is_empty());
        }
    }
}

// === direct, active ===

#[test]
fn direct_active_answer_and_reject_conflict() {
    let c = mk_active_direct();
    for ev in [answer("bob"), reject("bob"), answer("alice")] {
        assert!(matches!(refused(&c, ev), CallError::Conflict(_)));
    }
}

#[test]
fn direct_active_hangup_and_disconnect_end_it() {
    let c = mk_active_direct();
    let o = ok(&c, hangup("bob"), T0 + 60_000);
    assert_eq!(o.call.end_reason, Some(EndReason::Hangup));
    assert_eq!(
        o.call.participant("bob").unwrap().left_at,
        Some(T0 + 60_000)
    );
    assert_eq!(o.call.participant("bob").unwrap().joined_at, Some(T0 + 5));
    let o = ok(&c, gone("alice"), T0 + 60_000);
    assert_eq!(o.call.end_reason, Some(EndReason::Disconnected));
}

#[test]
fn direct_active_ring_timeout_is_a_no_op() {
    let c = mk_active_direct();
    let o = ok(&c, timeout("bob"), LATER);
    assert_eq!(o.call, c);
    assert!(o.notices.is_empty());
}

// === ended (both kinds) ===

#[test]
fn ended_calls_refuse_requests_and_ignore_timers() {
    let ended = [
        ok(&mk_direct(), hangup("alice"), T0 + 1).call,
        ok(
            &ok(&mk_active_group(), reject("carol"), T0 + 8).call,
            hangup("alice"),
            T0 + 9,
        )
        .call,
    ];
    for c in &ended {
        for ev in [
            answer("bob"),
            reject("bob"),
            hangup("bob"),
            add("alice", "dave"),
            remove("alice", "bob"),
        ] {
            assert_eq!(refused(c, ev), CallError::Ended);
        }
        for ev in [timeout("bob"), gone("bob")] {
            let o = ok(c, ev, LATER);
            assert_eq!(&o.call, c);
            assert!(o.notices.is_empty());
        }
    }
}

// === group ===

#[test]
fn group_creation_checks_participants() {
    assert!(matches!(
        Call::group(
            "g".into(),
            "alice",
            &["alice".into()],
            Media::Audio,
            T0,
            &RULES
        ),
        Err(CallError::BadRequest(_))
    ));
    let five: Vec<String> = ["b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    assert!(matches!(
        Call::group("g".into(), "alice", &five, Media::Audio, T0, &RULES),
        Err(CallError::Forbidden(_))
    ));
    let c = mk_group();
    assert_eq!(c.holders(), BTreeSet::from(["alice".to_owned()]));
}

#[test]
fn group_answer_joins_and_activates() {
    let o = ok(&mk_group(), answer("bob"), T0 + 5);
    assert_eq!(o.call.state, CallState::Active);
    assert_eq!(o.notices, vec![Notice::Joined("bob".into())]);
    assert_eq!(o.call.holders().len(), 2);
    let o = ok(&o.call, answer("carol"), T0 + 6);
    assert_eq!(o.call.answered_at, Some(T0 + 5));
    assert!(matches!(
        refused(&o.call, answer("carol")),
        CallError::Conflict(_)
    ));
}

#[test]
fn group_reject_leaves_the_rest_ringing_until_too_few_remain() {
    let o = ok(&mk_group(), reject("bob"), T0 + 5);
    assert_eq!(o.call.state, CallState::Ringing);
    assert_eq!(o.notices, vec![Notice::Rejected("bob".into())]);
    let o = ok(&o.call, reject("carol"), T0 + 6);
    assert_eq!(o.call.end_reason, Some(EndReason::AllLeft));
    assert!(matches!(
        refused(&mk_active_group(), reject("bob")),
        CallError::Conflict(_)
    ));
}

#[test]
fn group_hangup_ends_as_all_left_below_two() {
    let c = ok(&mk_active_group(), reject("carol"), T0 + 6).call;
    assert_eq!(c.state, CallState::Active);
    let o = ok(&c, hangup("bob"), T0 + 7);
    assert_eq!(o.call.end_reason, Some(EndReason::AllLeft));
    assert_eq!(
        o.notices,
        vec![
            Notice::Left("bob".into()),
            Notice::Ended(EndReason::AllLeft)
        ]
    );
}

#[test]
fn group_initiator_leaving_alone_with_ringers_ends_it() {
    let o = ok(&mk_group(), hangup("alice"), T0 + 1);
    assert_eq!(o.call.end_reason, Some(EndReason::AllLeft));
}

#[test]
fn group_disconnect_is_a_leave() {
    let c = ok(&mk_active_group(), answer("carol"), T0 + 6).call;
    let o = ok(&c, gone("carol"), T0 + 9);
    assert_eq!(o.call.state, CallState::Active);
    assert_eq!(state_of(&o.call, "carol"), PartState::Left);
    let again = ok(&o.call, gone("carol"), T0 + 10);
    assert!(again.notices.is_empty());
}

#[test]
fn group_ring_timeout_drops_the_late_and_ends_unanswered_calls_as_timeout() {
    let c = mk_group();
    // Not due yet: nothing happens.
    assert!(ok(&c, timeout("bob"), T0 + 1).notices.is_empty());
    let o = ok(&c, timeout("bob"), LATER);
    assert_eq!(o.notices, vec![Notice::Left("bob".into())]);
    let o = ok(&o.call, timeout("carol"), LATER);
    assert_eq!(o.call.end_reason, Some(EndReason::Timeout));
    // Answered calls end as all_left when the last ringer times out.
    let c = ok(
        &ok(&mk_group(), answer("bob"), T0 + 1).call,
        hangup("alice"),
        T0 + 2,
    )
    .call;
    let o = ok(&c, timeout("carol"), LATER);
    assert_eq!(o.call.end_reason, Some(EndReason::AllLeft));
}

#[test]
fn group_add_invites_and_respects_the_maximum() {
    let c = mk_active_group();
    let o = ok(&c, add("bob", "dave"), T0 + 7);
    assert_eq!(o.notices, vec![Notice::Invited("dave".into())]);
    assert_eq!(state_of(&o.call, "dave"), PartState::Ringing);
    assert!(matches!(
        refused(&o.call, add("bob", "erin")),
        CallError::Forbidden(_)
    ));
    assert!(matches!(
        refused(&o.call, add("bob", "dave")),
        CallError::Conflict(_)
    ));
    // Ringing members cannot add.
    assert!(matches!(
        refused(&c, add("carol", "dave")),
        CallError::Forbidden(_)
    ));
    // Someone who left can be invited again.
    let left = ok(&o.call, hangup("dave"), T0 + 8).call;
    let back = ok(&left, add("alice", "dave"), T0 + 9);
    assert_eq!(state_of(&back.call, "dave"), PartState::Ringing);
    assert_eq!(back.call.participant("dave").unwrap().invited_at, T0 + 9);
}

#[test]
fn group_remove_by_initiator_or_self_only() {
    let c = ok(&mk_active_group(), answer("carol"), T0 + 6).call;
    assert!(matches!(
        refused(&c, remove("bob", "carol")),
        CallError::Forbidden(_)
    ));
    let o = ok(&c, remove("alice", "carol"), T0 + 7);
    assert_eq!(o.notices, vec![Notice::Left("carol".into())]);
    assert!(matches!(
        refused(&o.call, remove("alice", "carol")),
        CallError::Conflict(_)
    ));
    let o = ok(&c, remove("bob", "bob"), T0 + 7);
    assert_eq!(state_of(&o.call, "bob"), PartState::Left);
}

// === glare, busy, holders, timers ===

#[test]
fn glare_is_recognised_from_the_other_side_only() {
    let c = mk_direct(); // alice → bob
    assert!(c.is_glare_with("bob", "alice"));
    assert!(!c.is_glare_with("alice", "bob"));
    assert!(!mk_active_direct().is_glare_with("bob", "alice"));
}

#[test]
fn busy_calls_end_at_once_and_hold_nobody() {
    let c = mk_direct().busy(T0);
    assert_eq!(c.end_reason, Some(EndReason::Busy));
    assert!(c.holders().is_empty());
    assert_eq!(mk_direct().holders().len(), 2);
}

#[test]
fn timer_members_round_trip() {
    let t = Timer {
        tenant: "acme".into(),
        call_id: "c_1".into(),
        kind: TimerKind::Grace,
        user_id: "bob@x".into(),
    };
    assert_eq!(Timer::parse(&t.member()), Some(t.clone()));
    assert_eq!(t.event(), gone("bob@x"));
    assert_eq!(Timer::parse("a|b|nope|c"), None);
}

#[test]
fn serialized_call_matches_the_protocol() {
    let v = serde_json::to_value(mk_direct()).unwrap();
    assert_eq!(v["kind"], "direct");
    assert_eq!(v["state"], "ringing");
    assert_eq!(v["media_type"], "audio");
    assert_eq!(v["participants"][1]["state"], "ringing");
    assert!(v.get("ended_at").is_none());
    let v = serde_json::to_value(ok(&mk_direct(), reject("bob"), T0 + 1).call).unwrap();
    assert_eq!(v["end_reason"], "rejected");
}
