//! Presence: who is online, away, busy or (visibly) offline, on every node.
//!
//! ```text
//!  connect / disconnect / idle / activity / set-status
//!        │ one atomic store call, which bumps the user's version
//!        ▼
//!  PresenceStore ──snapshot──▶ aggregate() ──▶ Bus::publish {tenant, user, version, presence}
//!                                                   │ every node, this one included
//!                                                   ▼
//!                     Tracker::on_update: cache (keep the highest version) ──▶ local emit
//!                                         `presence:update` to sockets subscribed here
//! ```
//!
//! ## Conflict rule
//! All of a user's presence state (devices, manual status, last seen) lives in one place
//! (Redis, or memory in embedded mode) and every change is one atomic step that bumps a
//! per-user `version`. The shown presence is a pure function of that state
//! ([`aggregate`]): a manual status beats automatic ones while any device is connected
//! (manual `offline` is invisible); otherwise `online` if any device is active, else
//! `away`; no device: `offline`. Updates travel with their version and every cache keeps
//! the highest ([`newer`]), so however updates from several devices and nodes interleave,
//! every node ends on the state with the highest version: the same result everywhere.

pub mod cache;
pub mod events;
pub mod redis;
pub mod tracker;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

/// `{user_id, status, message?, last_seen, devices}` as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Presence {
    pub user_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// ms since the epoch: the last time the user was seen connected (now, while online).
    pub last_seen: i64,
    pub devices: u32,
}

/// A status chosen by hand; `None` in a snapshot means automatic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Manual {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One live connection of a user (a socket on /presence) and the node holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Device {
    pub conn: String,
    pub node: String,
    pub idle: bool,
}

/// What is stored about one user's presence, besides the devices themselves: their
/// counts, so a change and a read cost the same however many devices the user has (at
/// most `limits.max_connections_per_user`: each device is a connection holding a lease).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub manual: Option<Manual>,
    /// Connected devices.
    pub devices: u32,
    /// Of those, the ones not idle.
    pub active: u32,
    /// ms: when the last change happened while the user was visible.
    pub last_seen: i64,
    /// ms: when the current session (first device of a run) began; 0 when offline.
    pub session_start: i64,
}

/// What a change did to the user's session, for analytics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// The user's first device connected.
    CameOnline,
    /// The user's last device went; the session lasted this long (ms).
    WentOffline {
        session_ms: i64,
    },
}

/// A change to one user's presence state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Connect(Device),
    Disconnect { conn: String },
    Idle { conn: String, idle: bool },
    SetManual(Option<Manual>),
}

/// The presence shown for a snapshot (see the conflict rule in the module docs).
pub fn aggregate(user_id: &str, s: &Snapshot, now: i64) -> Presence {
    let devices = s.devices;
    if devices == 0 {
        return Presence {
            user_id: user_id.into(),
            status: Status::Offline,
            message: None,
            last_seen: s.last_seen,
            devices: 0,
        };
    }
    match &s.manual {
        // Invisible: others see an offline user, last seen when they went invisible.
        Some(Manual {
            status: Status::Offline,
            ..
        }) => Presence {
            user_id: user_id.into(),
            status: Status::Offline,
            message: None,
            last_seen: s.last_seen,
            devices: 0,
        },
        Some(m) => Presence {
            user_id: user_id.into(),
            status: m.status,
            message: m.message.clone(),
            last_seen: now,
            devices,
        },
        None => {
            let status = if s.active > 0 {
                Status::Online
            } else {
                Status::Away
            };
            Presence {
                user_id: user_id.into(),
                status,
                message: None,
                last_seen: now,
                devices,
            }
        }
    }
}

impl Change {
    /// The connection the change is about, if any.
    pub fn conn(&self) -> Option<&str> {
        match self {
            Change::Connect(d) => Some(&d.conn),
            Change::Disconnect { conn } | Change::Idle { conn, .. } => Some(conn),
            Change::SetManual(_) => None,
        }
    }

    /// The stored device of [`Change::conn`] after the change, given the one before
    /// (`None` after: removed or absent).
    pub fn device_after(&self, before: Option<&Device>) -> Option<Device> {
        match self {
            Change::Connect(d) => Some(d.clone()),
            Change::Disconnect { .. } => None,
            Change::Idle { idle, .. } => before.map(|d| Device {
                idle: *idle,
                ..d.clone()
            }),
            Change::SetManual(_) => before.cloned(),
        }
    }
}

/// Apply a change to a snapshot (the store does exactly this, atomically). `device` is
/// the stored device of the change's connection ([`Change::conn`]), `None` when there is
/// none: the snapshot's counts and that one device are all a change needs, so its cost
/// does not grow with the user's devices.
/// Returns `None` when nothing changed (no version bump, nothing to publish).
pub fn apply(
    s: &Snapshot,
    device: Option<&Device>,
    change: &Change,
    now: i64,
) -> Option<(Snapshot, Transition)> {
    let mut next = s.clone();
    let was_on = s.devices > 0;
    let active = |d: &Device| u32::from(!d.idle);
    match change {
        Change::Connect(d) => {
            match device {
                // The same connection again: its idleness may change.
                Some(old) => {
                    next.active = next.active.saturating_sub(active(old)) + active(d);
                }
                None => {
                    next.devices += 1;
                    next.active += active(d);
                }
            }
        }
        Change::Disconnect { .. } => {
            let old = device?;
            next.devices = next.devices.saturating_sub(1);
            next.active = next.active.saturating_sub(active(old));
        }
        Change::Idle { idle, .. } => {
            let old = device?;
            if old.idle == *idle {
                return None;
            }
            next.active = if *idle {
                next.active.saturating_sub(1)
            } else {
                next.active + 1
            };
        }
        Change::SetManual(m) => {
            // Choosing `online` by hand means "automatic again".
            next.manual = m
                .clone()
                .filter(|m| m.status != Status::Online || m.message.is_some());
            if next.manual == s.manual {
                return None;
            }
        }
    }
    let is_on = next.devices > 0;
    let invisible_before = matches!(
        s.manual,
        Some(Manual {
            status: Status::Offline,
            ..
        })
    );
    if was_on && !invisible_before {
        next.last_seen = now;
    }
    if is_on
        && !matches!(
            next.manual,
            Some(Manual {
                status: Status::Offline,
                ..
            })
        )
    {
        next.last_seen = now;
    }
    let transition = match (was_on, is_on) {
        (false, true) => {
            next.session_start = now;
            Transition::CameOnline
        }
        (true, false) => {
            let session_ms = now - s.session_start;
            next.session_start = 0;
            Transition::WentOffline { session_ms }
        }
        _ => Transition::None,
    };
    next.version = s.version + 1;
    Some((next, transition))
}

/// A published update: the presence and the version it was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Update {
    pub tenant: String,
    pub version: u64,
    pub presence: Presence,
    /// The node that published it and when: receivers measure the cross-node lag.
    /// Absent in updates from nodes that predate it (and ignored by those nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Who published an [`Update`], and when (milliseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Origin {
    pub node: String,
    pub sent_ms: i64,
}

/// How long `u` took from another node to this one (`me`) at `now_ms`: `None` for this
/// node's own updates and for updates without an origin. Clocks a little apart never
/// make it negative.
pub fn cross_node_lag(u: &Update, me: &str, now_ms: i64) -> Option<std::time::Duration> {
    let origin = u.origin.as_ref().filter(|o| o.node != me)?;
    let ms = now_ms.saturating_sub(origin.sent_ms).max(0);
    Some(std::time::Duration::from_millis(ms as u64))
}

/// What travels on the presence bus between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMsg {
    /// A user's presence changed.
    Update(Update),
    /// A user was active on a node that holds none of their /presence connections:
    /// nodes that hold some wake them.
    Activity { tenant: String, user_id: String },
    /// Local only, never published: this node's bus subscription was re-established, so
    /// updates published meanwhile were lost (the cache reads again).
    Resync,
}

/// Whether `update` should replace what a cache holds (higher version wins).
pub fn newer(cached: Option<u64>, update: u64) -> bool {
    cached.is_none_or(|v| update > v)
}

/// Per-tenant daily analytics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Daily {
    pub date: String,
    pub peak: u64,
    pub sessions: u64,
    pub ended_sessions: u64,
    pub session_ms_total: u64,
}

/// Presence storage: one user's state changes atomically, node liveness, analytics.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Apply a change atomically. `None`: nothing changed.
    async fn change(
        &self,
        tenant: &str,
        user_id: &str,
        change: &Change,
        now: i64,
    ) -> Result<Option<(Snapshot, Transition)>, StoreError>;
    async fn snapshots(
        &self,
        tenant: &str,
        user_ids: &[String],
    ) -> Result<Vec<Snapshot>, StoreError>;
    /// Record that this node is alive for `ttl`.
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Nodes that hold connections but whose heartbeat expired.
    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError>;
    /// The connections a node holds: (tenant, user, conn).
    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Forget a dead node once its connections are gone. `false` when another node
    /// is already doing it.
    async fn claim_reap(&self, node: &str) -> Result<bool, StoreError>;
    async fn forget_node(&self, node: &str) -> Result<(), StoreError>;
    /// Analytics: record a transition at `date` (YYYY-MM-DD); returns users online now.
    async fn record(
        &self,
        tenant: &str,
        user_id: &str,
        t: Transition,
        date: &str,
    ) -> Result<u64, StoreError>;
    async fn online_count(&self, tenant: &str) -> Result<u64, StoreError>;
    /// The daily records of `dates`, in that order (a missing day reads as zeros).
    async fn history(&self, tenant: &str, dates: &[String]) -> Result<Vec<Daily>, StoreError>;
}

// === impl MemoryPresence ===

#[derive(Default)]
pub struct MemoryPresence {
    inner: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    users: HashMap<(String, String), MemUser>,
    online: HashMap<String, std::collections::HashSet<String>>,
    daily: HashMap<(String, String), Daily>,
}

/// One user in [`MemoryPresence`]: the snapshot and the devices by connection.
#[derive(Default)]
struct MemUser {
    snap: Snapshot,
    devices: HashMap<String, Device>,
}

impl MemUser {
    /// [`apply`] and keep the result, devices included.
    fn apply(&mut self, change: &Change, now: i64) -> Option<(Snapshot, Transition)> {
        let before = change.conn().and_then(|c| self.devices.get(c)).cloned();
        let (next, t) = apply(&self.snap, before.as_ref(), change, now)?;
        if let Some(conn) = change.conn() {
            match change.device_after(before.as_ref()) {
                Some(d) => self.devices.insert(conn.to_owned(), d),
                None => self.devices.remove(conn),
            };
        }
        self.snap = next.clone();
        Some((next, t))
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn change(
        &self,
        tenant: &str,
        user_id: &str,
        change: &Change,
        now: i64,
    ) -> Result<Option<(Snapshot, Transition)>, StoreError> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.users
            .entry((tenant.to_owned(), user_id.to_owned()))
            .or_default()
            .apply(change, now))
    }

    async fn snapshots(
        &self,
        tenant: &str,
        user_ids: &[String],
    ) -> Result<Vec<Snapshot>, StoreError> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(user_ids
            .iter()
            .map(|u| {
                m.users
                    .get(&(tenant.to_owned(), u.clone()))
                    .map(|user| user.snap.clone())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn heartbeat(&self, _node: &str, _ttl: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        // One process: its node cannot die while this code runs.
        Ok(vec![])
    }

    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.users
            .iter()
            .flat_map(|((t, u), user)| {
                user.devices
                    .values()
                    .filter(|d| d.node == node)
                    .map(move |d| (t.clone(), u.clone(), d.conn.clone()))
            })
            .collect())
    }

    async fn claim_reap(&self, _node: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn forget_node(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record(
        &self,
        tenant: &str,
        user_id: &str,
        t: Transition,
        date: &str,
    ) -> Result<u64, StoreError> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let online = m.online.entry(tenant.into()).or_default();
        match t {
            Transition::CameOnline => {
                online.insert(user_id.into());
            }
            Transition::WentOffline { .. } => {
                online.remove(user_id);
            }
            Transition::None => {}
        }
        let now_online = online.len() as u64;
        let d = m
            .daily
            .entry((tenant.into(), date.into()))
            .or_insert_with(|| Daily {
                date: date.into(),
                ..Daily::default()
            });
        match t {
            Transition::CameOnline => {
                d.sessions += 1;
                d.peak = d.peak.max(now_online);
            }
            Transition::WentOffline { session_ms } => {
                d.ended_sessions += 1;
                d.session_ms_total += session_ms.max(0) as u64;
            }
            Transition::None => {}
        }
        Ok(now_online)
    }

    async fn online_count(&self, tenant: &str) -> Result<u64, StoreError> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.online.get(tenant).map_or(0, |s| s.len() as u64))
    }

    async fn history(&self, tenant: &str, dates: &[String]) -> Result<Vec<Daily>, StoreError> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(dates
            .iter()
            .map(|d| {
                m.daily
                    .get(&(tenant.into(), d.clone()))
                    .cloned()
                    .unwrap_or_else(|| Daily {
                        date: d.clone(),
                        ..Daily::default()
                    })
            })
            .collect())
    }
}

/// The last `n` UTC dates (YYYY-MM-DD), today first.
pub fn last_dates(now_ms: i64, n: usize) -> Vec<String> {
    (0..n as i64)
        .map(|i| date_of(now_ms - i * 86_400_000))
        .collect()
}

/// UTC date of a ms timestamp (civil-from-days, proleptic Gregorian).
pub fn date_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(conn: &str) -> Device {
        Device {
            conn: conn.into(),
            node: "n1".into(),
            idle: false,
        }
    }

    fn run_user(changes: &[Change]) -> MemUser {
        let mut k = MemUser::default();
        for (i, c) in changes.iter().enumerate() {
            k.apply(c, 1000 + i as i64);
        }
        k
    }

    fn run(changes: &[Change]) -> Snapshot {
        run_user(changes).snap
    }

    #[test]
    fn cross_node_lag_counts_only_other_nodes_updates() {
        let s = run(&[Change::Connect(dev("a"))]);
        let mut u = Update {
            tenant: "t".into(),
            version: 1,
            presence: aggregate("u", &s, 5),
            origin: None,
        };
        assert_eq!(cross_node_lag(&u, "n1", 1_000), None, "no origin");
        u.origin = Some(Origin {
            node: "n1".into(),
            sent_ms: 990,
        });
        assert_eq!(cross_node_lag(&u, "n1", 1_000), None, "own update");
        assert_eq!(
            cross_node_lag(&u, "n2", 1_000),
            Some(std::time::Duration::from_millis(10))
        );
        // The receiver's clock a little behind the sender's: no negative lag.
        assert_eq!(
            cross_node_lag(&u, "n2", 980),
            Some(std::time::Duration::ZERO)
        );
        // Nodes that predate `origin` read the message and ignore it; this node reads
        // theirs too.
        let json = serde_json::to_string(&BusMsg::Update(u.clone())).unwrap();
        assert!(
            json.contains(r#""origin":{"node":"n1","sent_ms":990}"#),
            "{json}"
        );
        let old = json.replace(r#","origin":{"node":"n1","sent_ms":990}"#, "");
        let BusMsg::Update(read) = serde_json::from_str(&old).unwrap() else {
            panic!("not an update: {old}");
        };
        assert_eq!(read.origin, None);
    }

    #[test]
    fn automatic_status_follows_devices() {
        let mut u = run_user(&[
            Change::Connect(dev("a")),
            Change::Connect(dev("b")),
            Change::Idle {
                conn: "a".into(),
                idle: true,
            },
        ]);
        let s = u.snap.clone();
        assert_eq!(aggregate("u", &s, 5).status, Status::Online);
        assert_eq!(aggregate("u", &s, 5).devices, 2);
        let idle_b = |idle| Change::Idle {
            conn: "b".into(),
            idle,
        };
        let s2 = u.apply(&idle_b(true), 9).unwrap().0;
        assert_eq!(aggregate("u", &s2, 9).status, Status::Away);
        assert!(u.apply(&idle_b(true), 9).is_none(), "already idle");
        let s3 = u.apply(&idle_b(false), 10).unwrap().0;
        assert_eq!(aggregate("u", &s3, 10).status, Status::Online);
        // The same connection again (a reconnect under one id) is not a second device.
        let s4 = u.apply(&Change::Connect(dev("b")), 11).unwrap().0;
        assert_eq!((s4.devices, s4.active), (2, 1));
        let s5 = u
            .apply(&Change::Disconnect { conn: "b".into() }, 12)
            .unwrap()
            .0;
        assert_eq!((s5.devices, s5.active), (1, 0));
        assert_eq!(aggregate("u", &s5, 12).status, Status::Away);
    }

    #[test]
    fn manual_beats_automatic_and_offline_is_invisible() {
        let busy = Change::SetManual(Some(Manual {
            status: Status::Busy,
            message: Some("focus".into()),
        }));
        let s = run(&[
            Change::Connect(dev("a")),
            Change::Idle {
                conn: "a".into(),
                idle: true,
            },
            busy,
        ]);
        let p = aggregate("u", &s, 50);
        assert_eq!(
            (p.status, p.message.as_deref()),
            (Status::Busy, Some("focus"))
        );
        let inv = apply(
            &s,
            None,
            &Change::SetManual(Some(Manual {
                status: Status::Offline,
                message: None,
            })),
            60,
        )
        .unwrap()
        .0;
        let p = aggregate("u", &inv, 70);
        assert_eq!((p.status, p.devices, p.last_seen), (Status::Offline, 0, 60));
        // Setting `online` by hand returns to automatic (idle → away).
        let auto = apply(
            &inv,
            None,
            &Change::SetManual(Some(Manual {
                status: Status::Online,
                message: None,
            })),
            80,
        )
        .unwrap()
        .0;
        assert_eq!(auto.manual, None);
        assert_eq!(aggregate("u", &auto, 80).status, Status::Away);
    }

    #[test]
    fn sessions_and_last_seen() {
        let mut u = MemUser::default();
        let (_, t) = u.apply(&Change::Connect(dev("a")), 100).unwrap();
        assert_eq!(t, Transition::CameOnline);
        let (s, t) = u
            .apply(&Change::Disconnect { conn: "a".into() }, 400)
            .unwrap();
        assert_eq!(t, Transition::WentOffline { session_ms: 300 });
        let p = aggregate("u", &s, 999);
        assert_eq!((p.status, p.last_seen), (Status::Offline, 400));
        assert!(
            u.apply(&Change::Disconnect { conn: "a".into() }, 500)
                .is_none(),
            "no-op changes bump nothing"
        );
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_795_651_200_000), "2026-11-26");
        assert_eq!(date_of(951_782_400_000), "2000-02-29");
        assert_eq!(
            last_dates(86_400_000 * 2, 3),
            vec!["1970-01-03", "1970-01-02", "1970-01-01"]
        );
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let conn = prop_oneof![Just("d1".to_owned()), Just("d2".to_owned())];
        let status = prop_oneof![
            Just(Status::Online),
            Just(Status::Away),
            Just(Status::Busy),
            Just(Status::Offline)
        ];
        prop_oneof![
            conn.clone().prop_map(|c| Change::Connect(Device {
                conn: c,
                node: "n".into(),
                idle: false
            })),
            conn.clone().prop_map(|c| Change::Disconnect { conn: c }),
            (conn, any::<bool>()).prop_map(|(c, idle)| Change::Idle { conn: c, idle }),
            proptest::option::of(status).prop_map(|s| Change::SetManual(s.map(|status| Manual {
                status,
                message: None
            }))),
        ]
    }

    proptest! {
        /// Two devices on two nodes change presence in any interleaving; the store applies
        /// them one at a time and publishes each result. Whatever order the updates reach
        /// two nodes' caches in, both end on the same presence: the store's final one.
        #[test]
        fn any_interleaving_converges(changes in prop::collection::vec(arb_change(), 1..30), seed in any::<u64>()) {
            let mut u = MemUser::default();
            let mut published = Vec::new();
            for (i, c) in changes.iter().enumerate() {
                if let Some((n, _)) = u.apply(c, 1000 + i as i64) {
                    published.push((n.version, aggregate("u", &n, 5000)));
                }
            }
            // The counts always match the devices kept.
            prop_assert_eq!(u.snap.devices as usize, u.devices.len());
            prop_assert_eq!(u.snap.active as usize, u.devices.values().filter(|d| !d.idle).count());
            let expected = aggregate("u", &u.snap, 5000);
            let deliver = |order: &[usize]| {
                let mut cache: Option<(u64, Presence)> = None;
                for &i in order {
                    let (v, p) = &published[i];
                    if newer(cache.as_ref().map(|c| c.0), *v) {
                        cache = Some((*v, p.clone()));
                    }
                }
                cache.map(|c| c.1)
            };
            let forward: Vec<usize> = (0..published.len()).collect();
            let mut shuffled = forward.clone();
            let mut x = seed;
            for i in (1..shuffled.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (x >> 33) as usize % (i + 1));
            }
            let a = deliver(&forward);
            let b = deliver(&shuffled);
            prop_assert_eq!(&a, &b);
            if !published.is_empty() {
                prop_assert_eq!(a, Some(expected));
            }
        }
    }
}
