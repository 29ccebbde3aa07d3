//! A user's notification preferences and the pure decision "which channels does this
//! notification take for this user, now".
//!
//! ```text
//!  Notification (kind, priority) ─┐
//!  Preferences (types, min_priority, quiet hours in an IANA zone, channels) ─┼─▶ decide ─▶ Channels
//!  instant (ms since epoch) ──────┘
//! ```
//!
//! Rules (PROTOCOL.md, /notifications as implemented):
//! - a type turned off: nothing at all (no in-app entry, no push, no email);
//! - below `min_priority`: in-app only (it is listed, it does not interrupt);
//! - inside quiet hours: in-app only, unless the priority is `urgent` (urgent passes
//!   quiet hours; `high` does not);
//! - then each channel must be on in `channels` (`email` also needs a known address,
//!   checked by the caller).

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::StoreError;

/// What a notification is about; each can be turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "NotificationType")]
pub enum Kind {
    Message,
    Call,
    Mention,
    System,
}

/// How urgent a notification is, lowest first.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// The lowest priority that may interrupt (push, email).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MinPriority {
    #[default]
    All,
    High,
    Urgent,
}

impl MinPriority {
    fn admits(self, p: Priority) -> bool {
        match self {
            MinPriority::All => true,
            MinPriority::High => p >= Priority::High,
            MinPriority::Urgent => p == Priority::Urgent,
        }
    }
}

/// Minutes since local midnight, parsed from `"HH:MM"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockTime(pub u16);

impl ClockTime {
    pub fn parse(s: &str) -> Option<Self> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(Self(h * 60 + m))
    }
}

impl Serialize for ClockTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:02}:{:02}", self.0 / 60, self.0 % 60))
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClockTime::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a time HH:MM (00:00-23:59)"))
        })
    }
}

/// Quiet hours `[start, end)` in local wall-clock time of `timezone`; `start > end`
/// spans midnight (22:00-07:00).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QuietHours {
    /// `HH:MM`, 00:00-23:59.
    #[schemars(with = "String", regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: ClockTime,
    /// `HH:MM`, 00:00-23:59, not `start`.
    #[schemars(with = "String", regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: ClockTime,
    /// IANA time zone name, e.g. `Europe/Paris`.
    pub timezone: String,
}

impl QuietHours {
    /// Check the zone exists and the window is not empty.
    pub fn validate(&self) -> Result<(), String> {
        if self.start == self.end {
            return Err("quiet_hours: start and end must differ".into());
        }
        jiff::tz::TimeZone::get(&self.timezone)
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "quiet_hours.timezone: {:?} is not an IANA time zone",
                    self.timezone
                )
            })
    }

    /// True when `at_ms` falls inside the window, in the zone's local time (so the
    /// window follows daylight-saving changes). An unknown zone reads as "not quiet"
    /// (zones are checked when preferences are set).
    pub fn contains(&self, at_ms: i64) -> bool {
        let Ok(tz) = jiff::tz::TimeZone::get(&self.timezone) else {
            return false;
        };
        let Ok(ts) = jiff::Timestamp::from_millisecond(at_ms) else {
            return false;
        };
        let local = ts.to_zoned(tz);
        let now = (local.hour() as u16) * 60 + local.minute() as u16;
        let (s, e) = (self.start.0, self.end.0);
        if s < e {
            s <= now && now < e
        } else {
            now >= s || now < e
        }
    }
}

/// On/off per notification kind; every kind on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Types {
    pub message: bool,
    pub call: bool,
    pub mention: bool,
    pub system: bool,
}

impl Default for Types {
    fn default() -> Self {
        Self {
            message: true,
            call: true,
            mention: true,
            system: true,
        }
    }
}

impl Types {
    fn allows(&self, k: Kind) -> bool {
        match k {
            Kind::Message => self.message,
            Kind::Call => self.call,
            Kind::Mention => self.mention,
            Kind::System => self.system,
        }
    }
}

/// Delivery channels; push and in-app on, email off by default.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct Channels {
    pub push: bool,
    pub in_app: bool,
    pub email: bool,
}

impl Channels {
    pub const NONE: Channels = Channels {
        push: false,
        in_app: false,
        email: false,
    };
    fn user_default() -> Self {
        Self {
            push: true,
            in_app: true,
            email: false,
        }
    }
}

/// A user's preferences as stored and as acked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preferences {
    pub quiet_hours: Option<QuietHours>,
    pub min_priority: MinPriority,
    pub types: Types,
    pub channels: Channels,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            quiet_hours: None,
            min_priority: MinPriority::All,
            types: Types::default(),
            channels: Channels::user_default(),
        }
    }
}

/// `notification:set-preferences`: every field optional; an absent field keeps its
/// value, `quiet_hours: null` removes quiet hours.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PreferencesUpdate")]
pub struct Update {
    #[serde(default, deserialize_with = "present")]
    pub quiet_hours: Option<Option<QuietHours>>,
    pub min_priority: Option<MinPriority>,
    pub types: Option<PartialTypes>,
    pub channels: Option<PartialChannels>,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialTypes {
    pub message: Option<bool>,
    pub call: Option<bool>,
    pub mention: Option<bool>,
    pub system: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialChannels {
    pub push: Option<bool>,
    pub in_app: Option<bool>,
    pub email: Option<bool>,
}

/// A present field (even `null`) becomes `Some(..)`; an absent one stays `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl Update {
    /// The preferences after this update, validated.
    pub fn apply(self, mut p: Preferences) -> Result<Preferences, String> {
        if let Some(q) = self.quiet_hours {
            if let Some(q) = &q {
                q.validate()?;
            }
            p.quiet_hours = q;
        }
        if let Some(m) = self.min_priority {
            p.min_priority = m;
        }
        if let Some(t) = self.types {
            let ty = &mut p.types;
            ty.message = t.message.unwrap_or(ty.message);
            ty.call = t.call.unwrap_or(ty.call);
            ty.mention = t.mention.unwrap_or(ty.mention);
            ty.system = t.system.unwrap_or(ty.system);
        }
        if let Some(c) = self.channels {
            let ch = &mut p.channels;
            ch.push = c.push.unwrap_or(ch.push);
            ch.in_app = c.in_app.unwrap_or(ch.in_app);
            ch.email = c.email.unwrap_or(ch.email);
        }
        Ok(p)
    }
}

/// The channels a notification of `kind` and `priority` takes for a user with
/// preferences `p` at `at_ms`. Pure: no I/O, no clock.
pub fn decide(kind: Kind, priority: Priority, p: &Preferences, at_ms: i64) -> Channels {
    if !p.types.allows(kind) {
        return Channels::NONE;
    }
    let quiet =
        priority != Priority::Urgent && p.quiet_hours.as_ref().is_some_and(|q| q.contains(at_ms));
    let interrupt = p.min_priority.admits(priority) && !quiet;
    Channels {
        push: p.channels.push && interrupt,
        in_app: p.channels.in_app,
        email: p.channels.email && interrupt,
    }
}

/// Preferences per user.
#[async_trait]
pub trait PreferenceStore: Send + Sync {
    /// The stored preferences, or the defaults.
    async fn get(&self, tenant: &str, user_id: &str) -> Result<Preferences, StoreError>;
    async fn put(&self, tenant: &str, user_id: &str, p: &Preferences) -> Result<(), StoreError>;
    /// Read, change with `f` and write atomically (a concurrent update is never lost);
    /// `Ok(Err(why))` when `f` refused, nothing written.
    async fn update(
        &self,
        tenant: &str,
        user_id: &str,
        f: &(dyn Fn(Preferences) -> Result<Preferences, String> + Send + Sync),
    ) -> Result<Result<Preferences, String>, StoreError>;
}

// === impl MemoryPreferences ===

#[derive(Default)]
pub struct MemoryPreferences {
    prefs: Mutex<HashMap<(String, String), Preferences>>,
}

#[async_trait]
impl PreferenceStore for MemoryPreferences {
    async fn get(&self, tenant: &str, user_id: &str) -> Result<Preferences, StoreError> {
        let p = self.prefs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(p.get(&(tenant.into(), user_id.into()))
            .cloned()
            .unwrap_or_default())
    }

    async fn put(&self, tenant: &str, user_id: &str, p: &Preferences) -> Result<(), StoreError> {
        let mut m = self.prefs.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((tenant.into(), user_id.into()), p.clone());
        Ok(())
    }

    async fn update(
        &self,
        tenant: &str,
        user_id: &str,
        f: &(dyn Fn(Preferences) -> Result<Preferences, String> + Send + Sync),
    ) -> Result<Result<Preferences, String>, StoreError> {
        let mut m = self.prefs.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), user_id.to_owned());
        let cur = m.get(&key).cloned().unwrap_or_default();
        Ok(f(cur).inspect(|p| {
            m.insert(key, p.clone());
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// ms since epoch of a UTC wall-clock time.
    fn utc(s: &str) -> i64 {
        let ts: jiff::Timestamp = s.parse().unwrap();
        ts.as_millisecond()
    }

    fn mk_quiet(start: &str, end: &str, tz: &str) -> Preferences {
        Preferences {
            quiet_hours: Some(QuietHours {
                start: ClockTime::parse(start).unwrap(),
                end: ClockTime::parse(end).unwrap(),
                timezone: tz.into(),
            }),
            ..Preferences::default()
        }
    }

    const PUSH_INAPP: Channels = Channels {
        push: true,
        in_app: true,
        email: false,
    };
    const INAPP: Channels = Channels {
        push: false,
        in_app: true,
        email: false,
    };

    #[test]
    fn defaults_push_and_in_app_for_every_type_and_priority() {
        let p = Preferences::default();
        for k in [Kind::Message, Kind::Call, Kind::Mention, Kind::System] {
            for pr in [
                Priority::Low,
                Priority::Normal,
                Priority::High,
                Priority::Urgent,
            ] {
                assert_eq!(decide(k, pr, &p, 0), PUSH_INAPP, "{k:?} {pr:?}");
            }
        }
    }

    #[test]
    fn quiet_hours_across_midnight_in_utc() {
        let p = mk_quiet("22:00", "07:00", "UTC");
        let cases = [
            ("2026-01-15T21:59:59Z", false),
            ("2026-01-15T22:00:00Z", true),
            ("2026-01-15T23:59:00Z", true),
            ("2026-01-16T00:00:00Z", true),
            ("2026-01-16T06:59:59Z", true),
            ("2026-01-16T07:00:00Z", false),
            ("2026-01-16T12:00:00Z", false),
        ];
        for (at, quiet) in cases {
            let got = decide(Kind::Message, Priority::Normal, &p, utc(at));
            assert_eq!(got, if quiet { INAPP } else { PUSH_INAPP }, "{at}");
        }
    }

    #[test]
    fn quiet_hours_within_one_day() {
        let p = mk_quiet("13:00", "14:30", "UTC");
        assert_eq!(
            decide(Kind::Call, Priority::High, &p, utc("2026-03-01T12:59:00Z")),
            PUSH_INAPP
        );
        assert_eq!(
            decide(Kind::Call, Priority::High, &p, utc("2026-03-01T13:00:00Z")),
            INAPP
        );
        assert_eq!(
            decide(Kind::Call, Priority::High, &p, utc("2026-03-01T14:29:00Z")),
            INAPP
        );
        assert_eq!(
            decide(Kind::Call, Priority::High, &p, utc("2026-03-01T14:30:00Z")),
            PUSH_INAPP
        );
    }

    #[test]
    fn quiet_hours_follow_the_users_zone_and_its_dst() {
        // 22:00-07:00 in New York: 03:00Z is 22:00 EST in January (quiet) and
        // 23:00 EDT in July (quiet); 02:30Z is 21:30 EST (not quiet) but 22:30 EDT (quiet).
        let p = mk_quiet("22:00", "07:00", "America/New_York");
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &p,
                utc("2026-01-15T03:00:00Z")
            ),
            INAPP
        );
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &p,
                utc("2026-01-15T02:30:00Z")
            ),
            PUSH_INAPP
        );
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &p,
                utc("2026-07-15T02:30:00Z")
            ),
            INAPP
        );
        // 11:30Z is 06:30 EST in January (quiet) but 07:30 EDT in July (not quiet).
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &p,
                utc("2026-01-15T11:30:00Z")
            ),
            INAPP
        );
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &p,
                utc("2026-07-15T11:30:00Z")
            ),
            PUSH_INAPP
        );
        // The same instant in Tokyo (UTC+9, no DST): 03:00Z is 12:00 there.
        let tokyo = mk_quiet("22:00", "07:00", "Asia/Tokyo");
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &tokyo,
                utc("2026-01-15T03:00:00Z")
            ),
            PUSH_INAPP
        );
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &tokyo,
                utc("2026-01-15T14:00:00Z")
            ),
            INAPP
        );
        // Half-hour zone: Kolkata is UTC+5:30; 16:30Z is 22:00 there.
        let kolkata = mk_quiet("22:00", "07:00", "Asia/Kolkata");
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &kolkata,
                utc("2026-01-15T16:29:00Z")
            ),
            PUSH_INAPP
        );
        assert_eq!(
            decide(
                Kind::Message,
                Priority::Normal,
                &kolkata,
                utc("2026-01-15T16:30:00Z")
            ),
            INAPP
        );
    }

    #[test]
    fn only_urgent_passes_quiet_hours() {
        let p = mk_quiet("00:00", "23:59", "UTC");
        let at = utc("2026-05-05T12:00:00Z");
        for pr in [Priority::Low, Priority::Normal, Priority::High] {
            assert_eq!(decide(Kind::Call, pr, &p, at), INAPP, "{pr:?}");
        }
        assert_eq!(decide(Kind::Call, Priority::Urgent, &p, at), PUSH_INAPP);
    }

    #[test]
    fn min_priority_keeps_lower_ones_in_app_only() {
        let mut p = Preferences {
            min_priority: MinPriority::High,
            ..Preferences::default()
        };
        p.channels.email = true;
        let all = Channels {
            push: true,
            in_app: true,
            email: true,
        };
        assert_eq!(decide(Kind::Message, Priority::Low, &p, 0), INAPP);
        assert_eq!(decide(Kind::Message, Priority::Normal, &p, 0), INAPP);
        assert_eq!(decide(Kind::Message, Priority::High, &p, 0), all);
        assert_eq!(decide(Kind::Message, Priority::Urgent, &p, 0), all);
        p.min_priority = MinPriority::Urgent;
        assert_eq!(decide(Kind::Message, Priority::High, &p, 0), INAPP);
        assert_eq!(decide(Kind::Message, Priority::Urgent, &p, 0), all);
    }

    #[test]
    fn a_type_turned_off_takes_no_channel_even_when_urgent() {
        let mut p = Preferences::default();
        p.types.mention = false;
        assert_eq!(
            decide(Kind::Mention, Priority::Urgent, &p, 0),
            Channels::NONE
        );
        assert_eq!(decide(Kind::Message, Priority::Low, &p, 0), PUSH_INAPP);
    }

    #[test]
    fn channels_are_each_honoured() {
        let mut p = Preferences {
            channels: Channels {
                push: false,
                in_app: false,
                email: true,
            },
            ..Preferences::default()
        };
        let email_only = Channels {
            push: false,
            in_app: false,
            email: true,
        };
        assert_eq!(decide(Kind::System, Priority::Normal, &p, 0), email_only);
        // Quiet hours silence email too.
        p.quiet_hours = mk_quiet("00:00", "23:59", "UTC").quiet_hours;
        assert_eq!(
            decide(
                Kind::System,
                Priority::Normal,
                &p,
                utc("2026-01-01T10:00:00Z")
            ),
            Channels::NONE
        );
    }

    #[test]
    fn updates_merge_validate_and_clear() {
        let u: Update = serde_json::from_value(serde_json::json!({
            "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
            "types": {"call": false},
            "channels": {"email": true}
        }))
        .unwrap();
        let p = u.apply(Preferences::default()).unwrap();
        assert!(!p.types.call && p.types.message && p.channels.email && p.channels.push);
        assert_eq!(
            serde_json::to_value(&p).unwrap()["quiet_hours"],
            serde_json::json!({"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"})
        );
        let clear: Update =
            serde_json::from_value(serde_json::json!({"quiet_hours": null})).unwrap();
        let p = clear.apply(p).unwrap();
        assert!(p.quiet_hours.is_none() && !p.types.call);
        let bad_zone: Update = serde_json::from_value(serde_json::json!({
            "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}
        }))
        .unwrap();
        assert!(
            bad_zone
                .apply(Preferences::default())
                .unwrap_err()
                .contains("timezone")
        );
        for bad in [
            serde_json::json!({"quiet_hours": {"start": "24:00", "end": "07:00", "timezone": "UTC"}}),
            serde_json::json!({"quiet_hours": {"start": "7:00", "end": "08:00", "timezone": "UTC"}}),
            serde_json::json!({"min_priority": "low"}),
            serde_json::json!({"channels": {"sms": true}}),
        ] {
            assert!(
                serde_json::from_value::<Update>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let same: Update = serde_json::from_value(serde_json::json!({
            "quiet_hours": {"start": "07:00", "end": "07:00", "timezone": "UTC"}
        }))
        .unwrap();
        assert!(same.apply(Preferences::default()).is_err());
    }
}
