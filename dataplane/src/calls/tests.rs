//! [`apply`] over kind × call state × participant state × event, as one table; then the
//! multi-step cases (timeouts due or not, the maximum, glare, busy) by hand.

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

// === the transition table ===

/// Rules of the table: room for one more invite in every group fixture.
const TABLE_RULES: Rules = Rules {
    ringing_timeout_ms: 30_000,
    max_participants: 5,
};

fn with_states(mut c: Call, states: &[(&str, PartState)]) -> Call {
    for (u, st) in states {
        let p = c.participant_mut(u).expect("fixture participant");
        p.state = *st;
        if matches!(st, PartState::Joined) {
            p.joined_at = Some(T0 + 1);
        }
        if matches!(st, PartState::Left | PartState::Rejected) {
            p.left_at = Some(T0 + 2);
        }
    }
    c
}

/// The fixtures: every reachable call state, with participants in every state.
fn fixture(name: &str) -> Call {
    let five: Vec<String> = ["bob", "carol", "dave", "erin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let group = || Call::group("g".into(), "alice", &five, Media::Video, T0, &TABLE_RULES).unwrap();
    let activate = |mut c: Call| {
        c.state = CallState::Active;
        c.answered_at = Some(T0 + 1);
        c
    };
    match name {
        "direct ringing" => mk_direct(),
        "direct active" => mk_active_direct(),
        "direct ended" => ok(&mk_direct(), hangup("alice"), T0 + 1).call,
        // alice (initiator) joined, bob and carol ringing, dave left, erin rejected.
        "group ringing" => with_states(
            group(),
            &[("dave", PartState::Left), ("erin", PartState::Rejected)],
        ),
        // alice (initiator) and bob joined, carol ringing, dave left, erin rejected.
        "group active" => activate(with_states(
            group(),
            &[
                ("bob", PartState::Joined),
                ("dave", PartState::Left),
                ("erin", PartState::Rejected),
            ],
        )),
        // The initiator left; bob and carol joined, dave ringing.
        "group active, initiator left" => activate(with_states(
            group(),
            &[
                ("alice", PartState::Left),
                ("bob", PartState::Joined),
                ("carol", PartState::Joined),
                ("erin", PartState::Rejected),
            ],
        )),
        "group ended" => {
            let mut c = activate(group());
            end(&mut c, EndReason::AllLeft, T0 + 3);
            c
        }
        other => panic!("no fixture {other}"),
    }
}

/// Events, in the table's column order: the actor's answer, reject, hangup, ring
/// timeout (due), disconnect, add of a newcomer, remove of another live participant,
/// remove of themselves.
const COLUMNS: [&str; 8] = [
    "answer",
    "reject",
    "hangup",
    "timeout",
    "gone",
    "add",
    "remove other",
    "remove self",
];

fn column_event(c: &Call, col: usize, actor: &str) -> (Event, String) {
    let other = c
        .participants
        .iter()
        .find(|p| p.user_id != actor && matches!(p.state, PartState::Ringing | PartState::Joined))
        .map_or("bob".to_owned(), |p| p.user_id.clone());
    let a = actor.to_owned();
    match col {
        0 => (answer(actor), a),
        1 => (reject(actor), a),
        2 => (hangup(actor), a),
        3 => (timeout(actor), a),
        4 => (gone(actor), a),
        5 => (add(actor, "zed"), "zed".into()),
        6 => (remove(actor, &other), other),
        _ => (remove(actor, actor), a),
    }
}

fn name_of<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One cell: `E:<error>`, `=` (a timer with nothing to do), or
/// `<call state>/<subject's state>[/<end reason>]`, the subject being the actor or, for
/// add and remove, the target.
fn cell(c: &Call, col: usize, actor: &str) -> String {
    let (ev, subject) = column_event(c, col, actor);
    match apply(c, &ev, LATER, &TABLE_RULES) {
        Err(e) => match e {
            CallError::NotParticipant => "E:notp",
            CallError::Ended => "E:ended",
            CallError::Conflict(_) => "E:conflict",
            CallError::Forbidden(_) => "E:forbidden",
            CallError::BadRequest(_) => "E:bad",
        }
        .to_owned(),
        Ok(o) if o.call == *c => {
            assert!(o.notices.is_empty(), "unchanged but announced: {ev:?}");
            "=".to_owned()
        }
        Ok(o) => {
            // Invariants of every change: an end is announced once, with its reason;
            // holders are live participants only.
            let ends: Vec<_> = o
                .notices
                .iter()
                .filter_map(|n| match n {
                    Notice::Ended(r) => Some(*r),
                    _ => None,
                })
                .collect();
            assert_eq!(
                ends,
                o.call.end_reason.into_iter().collect::<Vec<_>>(),
                "{ev:?}"
            );
            assert_eq!(o.call.state == CallState::Ended, o.call.ended_at.is_some());
            for h in o.call.holders() {
                assert!(o.call.is_live_participant(&h), "{h} holds but left: {ev:?}");
            }
            let mut out = format!(
                "{}/{}",
                name_of(o.call.state),
                o.call
                    .participant(&subject)
                    .map_or(String::new(), |p| name_of(p.state))
            );
            if let Some(r) = o.call.end_reason {
                out.push('/');
                out.push_str(r.as_str());
            }
            out
        }
    }
}

#[test]
fn transition_table() {
    const NOTP: [&str; 8] = [
        "E:notp", "E:notp", "E:notp", "=", "=", "E:notp", "E:notp", "E:notp",
    ];
    const ENDED: [&str; 8] = [
        "E:ended", "E:ended", "E:ended", "=", "=", "E:ended", "E:ended", "E:ended",
    ];
    const GONE: [&str; 8] = [
        "E:conflict",
        "E:conflict",
        "E:conflict",
        "=",
        "=",
        "E:forbidden",
        "E:forbidden",
        "E:conflict",
    ];
    #[rustfmt::skip]
    let table: &[(&str, &str, [&str; 8])] = &[
        // fixture, actor (their state), then one cell per column of COLUMNS.
        ("direct ringing", "alice", [
            "E:conflict", "E:conflict", "ended/left/hangup", "=",
            "ended/left/disconnected", "E:bad", "E:bad", "E:bad",
        ]),
        ("direct ringing", "bob", [
            "active/joined", "ended/rejected/rejected", "ended/rejected/rejected",
            "ended/left/timeout", "ended/left/disconnected", "E:bad", "E:bad", "E:bad",
        ]),
        ("direct ringing", "eve", NOTP),
        ("direct active", "alice", [
            "E:conflict", "E:conflict", "ended/left/hangup", "=",
            "ended/left/disconnected", "E:bad", "E:bad", "E:bad",
        ]),
        ("direct active", "bob", [
            "E:conflict", "E:conflict", "ended/left/hangup", "=",
            "ended/left/disconnected", "E:bad", "E:bad", "E:bad",
        ]),
        ("direct active", "eve", NOTP),
        ("direct ended", "alice", ENDED),
        ("direct ended", "bob", ENDED),
        ("direct ended", "eve", ENDED),
        ("group ringing", "alice", [
            "E:conflict", "E:conflict", "ended/left/all_left", "=",
            "ended/left/all_left", "ringing/ringing", "ringing/left", "ended/left/all_left",
        ]),
        ("group ringing", "bob", [
            "active/joined", "ringing/rejected", "ringing/rejected", "ringing/left",
            "ringing/left", "E:forbidden", "E:forbidden", "ringing/left",
        ]),
        ("group ringing", "dave", GONE),
        ("group ringing", "erin", GONE),
        ("group ringing", "eve", NOTP),
        ("group active", "alice", [
            "E:conflict", "E:conflict", "active/left", "=", "active/left",
            "active/ringing", "active/left", "active/left",
        ]),
        ("group active", "bob", [
            "E:conflict", "E:conflict", "active/left", "=", "active/left",
            "active/ringing", "E:forbidden", "active/left",
        ]),
        ("group active", "carol", [
            "active/joined", "active/rejected", "active/rejected", "active/left",
            "active/left", "E:forbidden", "E:forbidden", "active/left",
        ]),
        ("group active", "dave", GONE),
        ("group active", "erin", GONE),
        ("group active", "eve", NOTP),
        // An initiator who left removes nobody.
        ("group active, initiator left", "alice", GONE),
        ("group active, initiator left", "dave", [
            "active/joined", "active/rejected", "active/rejected", "active/left",
            "active/left", "E:forbidden", "E:forbidden", "active/left",
        ]),
        ("group ended", "alice", ENDED),
        ("group ended", "bob", ENDED),
        ("group ended", "eve", ENDED),
    ];
    let mut wrong = Vec::new();
    for (fx, actor, want) in table {
        let c = fixture(fx);
        for (col, want) in want.iter().enumerate() {
            let got = cell(&c, col, actor);
            if got != *want {
                wrong.push(format!(
                    "{fx}, {actor} ({}), {}: want {want}, got {got}",
                    c.participant(actor)
                        .map_or("outsider".into(), |p| name_of(p.state)),
                    COLUMNS[col]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Every kind, call state and participant state appears in the table.
    let mut seen = BTreeSet::new();
    for (fx, actor, _) in table {
        let c = fixture(fx);
        let p = c
            .participant(actor)
            .map_or("outsider".into(), |p| name_of(p.state));
        seen.insert((name_of(c.kind), name_of(c.state), p));
    }
    for kind in ["direct", "group"] {
        for st in ["ringing", "active", "ended"] {
            assert!(
                seen.iter().any(|(k, s, _)| k == kind && s == st),
                "{kind} {st}"
            );
        }
    }
    for p in ["ringing", "joined", "left", "rejected", "outsider"] {
        assert!(seen.iter().any(|(_, _, x)| x == p), "participant {p}");
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

// === memory bounds ===

#[tokio::test]
async fn memory_calls_refuse_new_calls_when_full_of_live_ones_and_keep_live_samples() {
    let s = MemoryCalls::default();
    let q = Sample {
        latency_ms: 1.0,
        packet_loss_percentage: 0.0,
        jitter_ms: 1.0,
        bitrate_kbps: 100.0,
    };
    for i in 0..MAX_MEMORY_CALLS {
        let c = Call::direct(format!("c{i}"), "a", "b", Media::Audio, T0);
        assert_eq!(
            s.commit("t", &c, 0, &[], &[], None).await.unwrap(),
            Commit::Done(1)
        );
        s.add_sample("t", &c.id, &q).await.unwrap();
    }
    let extra = Call::direct("extra".into(), "a", "b", Media::Audio, T0);
    assert_eq!(
        s.commit("t", &extra, 0, &[], &[], None).await.unwrap(),
        Commit::Full,
        "every call is live: refused, not dropped"
    );
    assert!(s.load("t", "c0").await.unwrap().is_some());
    // One ends: its place (and its samples') can be taken; live calls keep theirs.
    let ended = Call::direct("c0".into(), "a", "b", Media::Audio, T0).busy(T0 + 1);
    assert_eq!(
        s.commit("t", &ended, 1, &[], &[], None).await.unwrap(),
        Commit::Done(2)
    );
    assert_eq!(
        s.commit("t", &extra, 0, &[], &[], None).await.unwrap(),
        Commit::Done(1)
    );
    s.add_sample("t", "extra", &q).await.unwrap();
    assert_eq!(s.samples("t", Some("c1")).await.unwrap(), vec![q]);
    assert_eq!(s.samples("t", Some("extra")).await.unwrap(), vec![q]);
}

/// People coming and going cannot grow a group call's participant list without end: it
/// keeps at most `PARTICIPANT_ENTRIES_PER_SEAT` × `max_participants` entries; past that a
/// new person is refused (`forbidden`, naming the bound), while someone already on the
/// list may come back.
#[test]
fn a_group_calls_participant_list_is_bounded() {
    let mut call = mk_active_group(); // alice joined, bob joined, carol ringing
    let cap = RULES.max_participants * PARTICIPANT_ENTRIES_PER_SEAT;
    let mut i = 0;
    while call.participants.len() < cap {
        let u = format!("guest{i}");
        call = ok(&call, add("alice", &u), T0 + 10).call;
        call = ok(&call, remove("alice", &u), T0 + 11).call;
        i += 1;
    }
    assert_eq!(call.participants.len(), cap);
    let e = refused(&call, add("alice", "one-too-many"));
    assert!(
        matches!(&e, CallError::Forbidden(m) if m.contains("calls.max_participants")),
        "{e}"
    );
    assert_eq!(AckError::from(e).code, Code::Forbidden);
    // Someone already on the list comes back without a new entry.
    let back = ok(&call, add("alice", "guest0"), T0 + 20).call;
    assert_eq!(back.participants.len(), cap);
    assert_eq!(state_of(&back, "guest0"), PartState::Ringing);
}
