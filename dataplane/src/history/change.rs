//! Decide, without I/O, what an edit, a delete or a reaction does to a stored message.
//!
//! Both stores run [`apply`] on the message's current state: the memory store under its
//! lock, the Redis store between a read and a compare-and-set write (so two changes that
//! race give one of the orders that could have happened, never a mix).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Message;

/// Distinct emoji on one message at most.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;
/// Reactions (distinct emoji) of one user on one message at most.
pub const MAX_REACTIONS_PER_USER: usize = 5;
/// User ids listed per emoji in a reaction summary (the count is always exact).
pub const USERS_LISTED: usize = 10;
/// Longest emoji, in bytes of UTF-8 (a family or flag sequence fits).
pub const MAX_EMOJI_BYTES: usize = 64;

/// Who reacted with one emoji, oldest first. Stored form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reactors {
    pub emoji: String,
    pub users: Vec<String>,
}

/// `{emoji, count, user_ids}` as clients get it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: usize,
    /// The first [`USERS_LISTED`] users who reacted with it.
    pub user_ids: Vec<String>,
}

/// The aggregated view of stored reactions, in the order emoji were first used.
pub fn summarize(stored: &[Reactors]) -> Vec<Reaction> {
    stored
        .iter()
        .map(|r| Reaction {
            emoji: r.emoji.clone(),
            count: r.users.len(),
            user_ids: r.users.iter().take(USERS_LISTED).cloned().collect(),
        })
        .collect()
}

/// A requested change to message `seq` of a room.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// New body (and `meta` when given) by `user`, who must be the sender, within
    /// `window_ms` of sending, at most `max_edits` times.
    Edit {
        user: String,
        body: String,
        meta: Option<Value>,
        now: i64,
        window_ms: i64,
        max_edits: u32,
    },
    /// Tombstone the message: by its sender, or by the room's owner or a moderator
    /// (`by_moderator`).
    Delete {
        user: String,
        by_moderator: bool,
        now: i64,
    },
    /// Add (`on`) or take back a reaction.
    React {
        user: String,
        emoji: String,
        on: bool,
    },
}

/// Why a change is refused; each maps to a protocol error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no message with this seq in the room's history")]
    NotFound,
    #[error("only the sender can edit a message")]
    NotSender,
    #[error("only the sender, the room's owner or a moderator can delete a message")]
    NotSenderOrModerator,
    #[error("the message was deleted")]
    Deleted,
    #[error("the edit window of this message has closed (chat.edit_window)")]
    WindowClosed,
    #[error("this message was edited {0} times, the most allowed (chat.max_edits)")]
    TooManyEdits(u32),
    #[error("this message already has {MAX_EMOJI_PER_MESSAGE} distinct emoji")]
    TooManyEmoji,
    #[error("you already have {MAX_REACTIONS_PER_USER} reactions on this message")]
    TooManyReactions,
}

/// A message and its stored reactions, as one unit of change.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The current version, with `reactions` empty (they are in `reactors`).
    pub message: Message,
    pub reactors: Vec<Reactors>,
}

/// The state after `change`, or `None` when it changes nothing (a reaction already there,
/// or one taken back that was not).
pub fn apply(state: &State, change: &Change) -> Result<Option<State>, Refusal> {
    let m = &state.message;
    if m.deleted {
        return Err(Refusal::Deleted);
    }
    match change {
        Change::Edit {
            user,
            body,
            meta,
            now,
            window_ms,
            max_edits,
        } => {
            if &m.sender_id != user {
                return Err(Refusal::NotSender);
            }
            if now.saturating_sub(m.ts) > *window_ms {
                return Err(Refusal::WindowClosed);
            }
            if m.edit_count >= *max_edits {
                return Err(Refusal::TooManyEdits(m.edit_count));
            }
            let mut next = state.clone();
            next.message.body = body.clone();
            if meta.is_some() {
                next.message.meta = meta.clone();
            }
            next.message.edited_at = Some(*now);
            next.message.edit_count += 1;
            Ok(Some(next))
        }
        Change::Delete {
            user,
            by_moderator,
            now,
        } => {
            if &m.sender_id != user && !by_moderator {
                return Err(Refusal::NotSenderOrModerator);
            }
            let mut message = m.clone();
            message.body = String::new();
            message.meta = None;
            message.deleted = true;
            message.edited_at = Some(*now);
            message.reactions = vec![];
            Ok(Some(State {
                message,
                reactors: vec![],
            }))
        }
        Change::React { user, emoji, on } => {
            let mut reactors = state.reactors.clone();
            let at = reactors.iter().position(|r| &r.emoji == emoji);
            let has = at.is_some_and(|i| reactors[i].users.contains(user));
            match (on, at) {
                (true, _) if has => return Ok(None),
                (false, _) if !has => return Ok(None),
                (true, _) => {
                    let mine = reactors.iter().filter(|r| r.users.contains(user)).count();
                    if mine >= MAX_REACTIONS_PER_USER {
                        return Err(Refusal::TooManyReactions);
                    }
                    match at {
                        Some(i) => reactors[i].users.push(user.clone()),
                        None if reactors.len() >= MAX_EMOJI_PER_MESSAGE => {
                            return Err(Refusal::TooManyEmoji);
                        }
                        None => reactors.push(Reactors {
                            emoji: emoji.clone(),
                            users: vec![user.clone()],
                        }),
                    }
                }
                (false, Some(i)) => {
                    reactors[i].users.retain(|u| u != user);
                    if reactors[i].users.is_empty() {
                        reactors.remove(i);
                    }
                }
                (false, None) => return Ok(None),
            }
            Ok(Some(State {
                message: m.clone(),
                reactors,
            }))
        }
    }
}

/// `true` when `emoji` is acceptable as a reaction: 1 to [`MAX_EMOJI_BYTES`] bytes with no
/// whitespace or control characters (the client decides what it draws).
pub fn valid_emoji(emoji: &str) -> bool {
    !emoji.is_empty()
        && emoji.len() <= MAX_EMOJI_BYTES
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_state(sender: &str, ts: i64) -> State {
        State {
            message: Message {
                id: "m1".into(),
                room_id: "r".into(),
                seq: 7,
                sender_id: sender.into(),
                body: "hello".into(),
                ts,
                ..Message::default()
            },
            reactors: vec![],
        }
    }

    fn edit(user: &str, now: i64) -> Change {
        Change::Edit {
            user: user.into(),
            body: "fixed".into(),
            meta: None,
            now,
            window_ms: 1000,
            max_edits: 2,
        }
    }

    fn react(user: &str, emoji: &str, on: bool) -> Change {
        Change::React {
            user: user.into(),
            emoji: emoji.into(),
            on,
        }
    }

    #[test]
    fn only_the_sender_edits_within_the_window_and_the_bound() {
        let s = mk_state("alice", 100);
        assert_eq!(apply(&s, &edit("bob", 200)), Err(Refusal::NotSender));
        assert_eq!(apply(&s, &edit("alice", 1101)), Err(Refusal::WindowClosed));
        let once = apply(&s, &edit("alice", 1100)).unwrap().unwrap();
        assert_eq!(once.message.body, "fixed");
        assert_eq!(once.message.edited_at, Some(1100));
        assert_eq!(once.message.seq, 7, "seq never changes");
        assert_eq!(once.message.meta, None, "meta kept when not given");
        let twice = apply(&once, &edit("alice", 1100)).unwrap().unwrap();
        assert_eq!(
            apply(&twice, &edit("alice", 1100)),
            Err(Refusal::TooManyEdits(2))
        );
    }

    #[test]
    fn delete_leaves_a_tombstone_and_ends_every_change() {
        let mut s = mk_state("alice", 100);
        s.message.meta = Some(serde_json::json!({"k": 1}));
        s.reactors = vec![Reactors {
            emoji: "👍".into(),
            users: vec!["bob".into()],
        }];
        let del = |user: &str, by_moderator| Change::Delete {
            user: user.into(),
            by_moderator,
            now: 500,
        };
        assert_eq!(
            apply(&s, &del("bob", false)),
            Err(Refusal::NotSenderOrModerator)
        );
        let by_moderator = apply(&s, &del("bob", true)).unwrap().unwrap();
        assert!(by_moderator.message.deleted);
        let t = apply(&s, &del("alice", false)).unwrap().unwrap();
        assert!(t.message.deleted && t.message.body.is_empty() && t.message.meta.is_none());
        assert!(t.reactors.is_empty());
        assert_eq!(t.message.seq, 7);
        let json = serde_json::to_value(&t.message).unwrap();
        assert!(json.get("body").is_none(), "{json}");
        assert_eq!(json["deleted"], true);
        for c in [
            edit("alice", 200),
            del("alice", false),
            react("bob", "👍", true),
        ] {
            assert_eq!(apply(&t, &c), Err(Refusal::Deleted));
        }
    }

    #[test]
    fn reactions_are_idempotent_and_bounded() {
        let s = mk_state("alice", 0);
        let s = apply(&s, &react("bob", "👍", true)).unwrap().unwrap();
        assert_eq!(apply(&s, &react("bob", "👍", true)), Ok(None));
        assert_eq!(apply(&s, &react("bob", "🎉", false)), Ok(None));
        let s = apply(&s, &react("carol", "👍", true)).unwrap().unwrap();
        assert_eq!(
            summarize(&s.reactors),
            vec![Reaction {
                emoji: "👍".into(),
                count: 2,
                user_ids: vec!["bob".into(), "carol".into()],
            }]
        );
        let mut s2 = s.clone();
        for i in 0..MAX_REACTIONS_PER_USER - 1 {
            s2 = apply(&s2, &react("bob", &format!("e{i}"), true))
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            apply(&s2, &react("bob", "one-more", true)),
            Err(Refusal::TooManyReactions)
        );
        let mut s3 = s.clone();
        for i in 0..MAX_EMOJI_PER_MESSAGE - 1 {
            s3 = apply(&s3, &react(&format!("u{i}"), &format!("e{i}"), true))
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            apply(&s3, &react("zed", "new", true)),
            Err(Refusal::TooManyEmoji)
        );
        assert!(apply(&s3, &react("zed", "👍", true)).unwrap().is_some());
        let back = apply(&s, &react("bob", "👍", false)).unwrap().unwrap();
        let gone = apply(&back, &react("carol", "👍", false)).unwrap().unwrap();
        assert!(gone.reactors.is_empty());
    }

    #[test]
    fn summaries_list_a_bounded_number_of_users() {
        let users: Vec<String> = (0..USERS_LISTED + 5).map(|i| format!("u{i}")).collect();
        let s = summarize(&[Reactors {
            emoji: "🔥".into(),
            users: users.clone(),
        }]);
        assert_eq!(s[0].count, USERS_LISTED + 5);
        assert_eq!(s[0].user_ids, users[..USERS_LISTED].to_vec());
    }

    #[test]
    fn emoji_shapes() {
        assert!(valid_emoji("👍"));
        assert!(valid_emoji("👨‍👩‍👧"));
        assert!(valid_emoji(":party:"));
        for bad in ["", " ", "a b", "\n", &"x".repeat(MAX_EMOJI_BYTES + 1)] {
            assert!(!valid_emoji(bad), "{bad:?}");
        }
    }
}
