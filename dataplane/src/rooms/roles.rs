//! Decide, without I/O, who may moderate whom and whether a member may send now.
//!
//! Roles: the room's owner (its `owner_id`, never stored as a role), moderators (set by
//! the owner) and members. The rules:
//! - only the owner sets roles, and the owner's own role cannot be set;
//! - the owner and moderators kick, ban, unban and mute;
//! - nobody acts on the owner; a moderator does not act on another moderator (or on
//!   themselves): only the owner acts on moderators;
//! - a muted member's sends are refused until the mute ends; owners and moderators are
//!   exempt from slow mode (a muted moderator is still muted).

use serde::{Deserialize, Serialize};

use super::{Room, Standing};

/// A user's role in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Moderator,
    Member,
}

/// The roles `room:set-role` can give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Assignable {
    Moderator,
    Member,
}

/// The role of a user of `standing` in `room` (the owner whatever the store says).
pub fn role_of(room: &Room, user_id: &str, standing: &Standing) -> Role {
    if room.owner_id == user_id {
        Role::Owner
    } else if standing.moderator && standing.member {
        Role::Moderator
    } else {
        Role::Member
    }
}

/// Why a moderation request is refused (each is `forbidden` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only the room's owner can set roles")]
    NotOwner,
    #[error("only the room's owner or a moderator can do this")]
    NotModerator,
    #[error("nobody can act on the room's owner")]
    TargetIsOwner,
    #[error("only the room's owner can act on a moderator")]
    TargetIsModerator,
}

/// May `actor` set roles on `target`?
pub fn may_set_role(actor: Role, target: Role) -> Result<(), Refusal> {
    match (actor, target) {
        (Role::Owner, Role::Owner) => Err(Refusal::TargetIsOwner),
        (Role::Owner, _) => Ok(()),
        _ => Err(Refusal::NotOwner),
    }
}

/// May `actor` kick, ban, unban or mute `target`?
pub fn may_moderate(actor: Role, target: Role) -> Result<(), Refusal> {
    match (actor, target) {
        (Role::Member, _) => Err(Refusal::NotModerator),
        (_, Role::Owner) => Err(Refusal::TargetIsOwner),
        (Role::Moderator, Role::Moderator) => Err(Refusal::TargetIsModerator),
        _ => Ok(()),
    }
}

/// May a user send now, and does slow mode apply to them?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendVerdict {
    /// Muted until this time (`None`: until lifted).
    Muted(Option<i64>),
    /// Allowed; `Some(ms)`: only if their last send is at least this long ago.
    Allowed(Option<i64>),
}

/// The verdict on a send by a member of `role` and `standing` at `now` in `room`.
pub fn send_verdict(room: &Room, role: Role, standing: &Standing, now: i64) -> SendVerdict {
    if let Some(m) = standing.muted
        && m.until.is_none_or(|until| until > now)
    {
        return SendVerdict::Muted(m.until);
    }
    let slow =
        (room.slow_mode_s > 0 && role == Role::Member).then(|| i64::from(room.slow_mode_s) * 1000);
    SendVerdict::Allowed(slow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::{Mute, Visibility};

    fn mk_room(slow: u32) -> Room {
        Room {
            id: "r".into(),
            name: "r".into(),
            visibility: Visibility::Public,
            owner_id: "olga".into(),
            created_at: 0,
            slow_mode_s: slow,
        }
    }

    fn mk_standing(moderator: bool, muted: Option<Mute>) -> Standing {
        Standing {
            member: true,
            moderator,
            banned: false,
            muted,
        }
    }

    #[test]
    fn roles_come_from_the_owner_and_the_store() {
        let r = mk_room(0);
        assert_eq!(role_of(&r, "olga", &Standing::default()), Role::Owner);
        assert_eq!(role_of(&r, "mo", &mk_standing(true, None)), Role::Moderator);
        assert_eq!(role_of(&r, "mem", &mk_standing(false, None)), Role::Member);
        let gone = Standing {
            member: false,
            ..mk_standing(true, None)
        };
        assert_eq!(role_of(&r, "mo", &gone), Role::Member, "no role outside");
    }

    #[test]
    fn who_acts_on_whom() {
        use Role::*;
        assert_eq!(may_set_role(Owner, Member), Ok(()));
        assert_eq!(may_set_role(Owner, Moderator), Ok(()));
        assert_eq!(may_set_role(Owner, Owner), Err(Refusal::TargetIsOwner));
        assert_eq!(may_set_role(Moderator, Member), Err(Refusal::NotOwner));
        assert_eq!(may_set_role(Member, Member), Err(Refusal::NotOwner));
        assert_eq!(may_moderate(Owner, Moderator), Ok(()));
        assert_eq!(may_moderate(Owner, Member), Ok(()));
        assert_eq!(may_moderate(Moderator, Member), Ok(()));
        assert_eq!(
            may_moderate(Moderator, Moderator),
            Err(Refusal::TargetIsModerator)
        );
        for actor in [Owner, Moderator] {
            assert_eq!(may_moderate(actor, Owner), Err(Refusal::TargetIsOwner));
        }
        assert_eq!(may_moderate(Member, Member), Err(Refusal::NotModerator));
    }

    #[test]
    fn mutes_and_slow_mode() {
        let r = mk_room(5);
        let muted = |until| mk_standing(false, Some(Mute { until }));
        assert_eq!(
            send_verdict(&r, Role::Member, &muted(None), 10),
            SendVerdict::Muted(None)
        );
        assert_eq!(
            send_verdict(&r, Role::Member, &muted(Some(11)), 10),
            SendVerdict::Muted(Some(11))
        );
        assert_eq!(
            send_verdict(&r, Role::Member, &muted(Some(10)), 10),
            SendVerdict::Allowed(Some(5000)),
            "a mute ends at its time"
        );
        assert_eq!(
            send_verdict(&r, Role::Moderator, &mk_standing(true, None), 10),
            SendVerdict::Allowed(None)
        );
        assert_eq!(
            send_verdict(&r, Role::Owner, &Standing::default(), 10),
            SendVerdict::Allowed(None)
        );
        assert_eq!(
            send_verdict(&mk_room(0), Role::Member, &Standing::default(), 10),
            SendVerdict::Allowed(None)
        );
    }
}
