//! [`PresenceStore`] and [`Bus`] on Redis.
//!
//! - `sb:{T}:presence:{U}`: hash `v` (version), `m` (manual status JSON), `ls` (last seen),
//!   `ss` (session start), `n` (devices), `a` (active devices), `c` (the version `n` and
//!   `a` were counted at).
//! - `sb:{T}:presence:{U}:dev`: hash, connection id → device JSON.
//! - `sb:{T}:presence:online`: set of the tenant's users online now.
//! - `sb:{T}:presence:daily:{YYYY-MM-DD}`: hash `peak`, `sessions`, `ended`, `ms`; kept 31 days.
//! - `sb:node:{N}:conns`: set of `tenant|user|conn` held by node N; `sb:nodes`: nodes
//!   that hold connections; `sb:node:{N}:alive`: heartbeat (TTL); `sb:node:{N}:reaping`:
//!   the sweep lock. Node keys are cluster-wide, not tenant data.
//!
//! A change reads the user's state fields and the one device it is about ([`READ`]),
//! applies [`super::apply`] (the one place the rules live) and writes the fields and that
//! device back with a compare-and-set script on the version ([`CAS`]); a concurrent writer
//! makes it read and apply again. Neither touches the other devices: a change costs the
//! same with 1 device or with `limits.max_connections_per_user`. A `get-batch` reads all
//! its users in one [`READ`] (one round trip).
//!
//! Counts written by a node that predates them (or data from before them) are told by
//! `c` ≠ `v`; [`READ`] counts the devices again then, once.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, LuaInterface, PubsubInterface,
    SetsInterface,
};
use fred::types::{Expiration, SetOptions, Value};
use tokio::sync::broadcast;

use super::tracker::Bus;
use super::{BusMsg, Change, Daily, Device, Manual, PresenceStore, Snapshot, Transition, apply};
use crate::error::StoreError;

/// Attempts of one change under contention before giving up with `unavailable`.
const MAX_CAS_ATTEMPTS: usize = 16;
/// Daily analytics are kept this long.
const DAILY_TTL_SECS: i64 = 31 * 86_400;
/// The pub/sub channel carrying presence updates between nodes.
pub const CHANNEL: &str = "sb:presence";

mod keys {
    pub fn state(t: &str, u: &str) -> String {
        format!("sb:{{{t}}}:presence:{u}")
    }
    pub fn devices(t: &str, u: &str) -> String {
        format!("sb:{{{t}}}:presence:{u}:dev")
    }
    pub fn online(t: &str) -> String {
        format!("sb:{{{t}}}:presence:online")
    }
    pub fn daily(t: &str, date: &str) -> String {
        format!("sb:{{{t}}}:presence:daily:{date}")
    }
    pub fn node_conns(node: &str) -> String {
        format!("sb:node:{node}:conns")
    }
    pub fn node_alive(node: &str) -> String {
        format!("sb:node:{node}:alive")
    }
    pub fn node_reaping(node: &str) -> String {
        format!("sb:node:{node}:reaping")
    }
    pub const NODES: &str = crate::redis::NODES;
}

/// The state fields [`READ`] returns per user, in order (then the device).
const FIELDS: [&str; 6] = ["v", "m", "ls", "ss", "n", "a"];

/// KEYS: state and devices hash of each user, in pairs. ARGV: per user, the connection
/// whose device to return ("" for none). Returns per user `v m ls ss n a device` (nil
/// where absent). Counts not made at the current version (`c` ≠ `v`: written by a node
/// that predates them) are counted again from the devices.
const READ: &str = r"
local out = {}
for i = 1, #KEYS, 2 do
  local s = redis.call('HMGET', KEYS[i], 'v', 'm', 'ls', 'ss', 'n', 'a', 'c')
  if s[1] and s[7] ~= s[1] then
    local n, a = 0, 0
    for _, j in ipairs(redis.call('HVALS', KEYS[i + 1])) do
      n = n + 1
      if not cjson.decode(j).idle then a = a + 1 end
    end
    s[5], s[6] = tostring(n), tostring(a)
  end
  local conn = ARGV[(i + 1) / 2]
  local d = false
  if conn ~= '' then
    d = redis.call('HGET', KEYS[i + 1], conn)
  end
  for k = 1, 6 do
    out[#out + 1] = s[k]
  end
  out[#out + 1] = d
end
return out
";

/// KEYS: state, devices, node index, nodes set.
/// ARGV: expected version, new version, manual JSON or "", last seen, session start,
/// devices, active, device op ("set" | "del" | ""), conn, device JSON, index op
/// ("add" | "rem" | ""), index member, node.
/// Returns 1 when written, 0 when the version moved on.
const CAS: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then
  return 0
end
if ARGV[8] == 'set' then
  redis.call('HSET', KEYS[2], ARGV[9], ARGV[10])
elseif ARGV[8] == 'del' then
  redis.call('HDEL', KEYS[2], ARGV[9])
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'ls', ARGV[4], 'ss', ARGV[5], 'n', ARGV[6], 'a', ARGV[7], 'c', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'm')
else
  redis.call('HSET', KEYS[1], 'm', ARGV[3])
end
if ARGV[11] == 'add' then
  redis.call('SADD', KEYS[3], ARGV[12])
  redis.call('SADD', KEYS[4], ARGV[13])
elseif ARGV[11] == 'rem' then
  redis.call('SREM', KEYS[3], ARGV[12])
end
return 1
";

/// KEYS: online set, daily hash. ARGV: op ("on" | "off"), user, session ms, daily TTL.
/// Returns the number of users online now.
const RECORD: &str = r"
if ARGV[1] == 'on' then
  redis.call('SADD', KEYS[1], ARGV[2])
  local n = redis.call('SCARD', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'sessions', 1)
  local peak = tonumber(redis.call('HGET', KEYS[2], 'peak') or '0')
  if n > peak then
    redis.call('HSET', KEYS[2], 'peak', n)
  end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return n
elseif ARGV[1] == 'off' then
  redis.call('SREM', KEYS[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'ended', 1)
  redis.call('HINCRBY', KEYS[2], 'ms', ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return redis.call('SCARD', KEYS[1])
";

pub struct RedisPresence {
    client: Client,
}

impl RedisPresence {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The snapshots of `users` and, for each, the device of the paired connection: one
    /// round trip however many users.
    async fn read(
        &self,
        t: &str,
        users: &[(&str, Option<&str>)],
    ) -> Result<Vec<(Snapshot, Option<Device>)>, StoreError> {
        if users.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = users
            .iter()
            .flat_map(|(u, _)| [keys::state(t, u), keys::devices(t, u)])
            .collect();
        let conns: Vec<&str> = users.iter().map(|(_, c)| c.unwrap_or("")).collect();
        let v: Value = self.client.eval(READ, keys, conns).await?;
        let Value::Array(items) = v else {
            return Err(StoreError::Corrupt(format!(
                "presence read: unexpected reply {v:?}"
            )));
        };
        let per_user = FIELDS.len() + 1;
        if items.len() != users.len() * per_user {
            return Err(StoreError::Corrupt(format!(
                "presence read: {} values for {} users",
                items.len(),
                users.len()
            )));
        }
        items
            .chunks(per_user)
            .zip(users)
            .map(|(row, (u, _))| decode(u, row))
            .collect()
    }
}

/// One user's row of [`READ`]: `v m ls ss n a device`.
fn decode(u: &str, row: &[Value]) -> Result<(Snapshot, Option<Device>), StoreError> {
    let name = |i: usize| FIELDS.get(i).copied().unwrap_or("device");
    let text = |i: usize| -> Result<Option<String>, StoreError> {
        match &row[i] {
            // RESP3 carries the script's `false` (a missing field) as a boolean.
            Value::Null | Value::Boolean(false) => Ok(None),
            Value::String(s) => Ok(Some(s.to_string())),
            Value::Bytes(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
            Value::Integer(n) => Ok(Some(n.to_string())),
            other => Err(StoreError::Corrupt(format!(
                "presence {} of {u}: {other:?}",
                name(i)
            ))),
        }
    };
    let num = |i: usize| -> Result<i64, StoreError> {
        text(i)?.map_or(Ok(0), |v| {
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("presence {} of {u}", name(i))))
        })
    };
    let count = |i: usize| -> Result<u32, StoreError> {
        u32::try_from(num(i)?)
            .map_err(|_| StoreError::Corrupt(format!("presence {} of {u}", name(i))))
    };
    let manual = match text(1)? {
        Some(j) => Some(serde_json::from_str::<Manual>(&j)?),
        None => None,
    };
    let device = match text(6)? {
        Some(j) => Some(serde_json::from_str::<Device>(&j)?),
        None => None,
    };
    let snap = Snapshot {
        version: num(0)? as u64,
        manual,
        last_seen: num(2)?,
        session_start: num(3)?,
        devices: count(4)?,
        active: count(5)?,
    };
    Ok((snap, device))
}

fn index_op(change: &Change, before: Option<&Device>) -> (&'static str, Option<Device>) {
    match change {
        Change::Connect(d) => ("add", Some(d.clone())),
        Change::Disconnect { .. } => ("rem", before.cloned()),
        _ => ("", None),
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn change(
        &self,
        t: &str,
        u: &str,
        change: &Change,
        now: i64,
    ) -> Result<Option<(Snapshot, Transition)>, StoreError> {
        let conn = change.conn();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((before, dev)) = self.read(t, &[(u, conn)]).await?.pop() else {
                return Err(StoreError::Corrupt(format!("presence read of {u}: no row")));
            };
            let Some((next, transition)) = apply(&before, dev.as_ref(), change, now) else {
                return Ok(None);
            };
            let (op, indexed) = index_op(change, dev.as_ref());
            let node = indexed.as_ref().map(|d| d.node.clone()).unwrap_or_default();
            let member = indexed
                .as_ref()
                .map(|d| format!("{t}|{u}|{}", d.conn))
                .unwrap_or_default();
            let manual = match &next.manual {
                Some(m) => serde_json::to_string(m)?,
                None => String::new(),
            };
            let (dev_op, dev_json) = match (conn, change.device_after(dev.as_ref())) {
                (None, _) => ("", String::new()),
                (Some(_), Some(d)) => ("set", serde_json::to_string(&d)?),
                (Some(_), None) => ("del", String::new()),
            };
            let args = vec![
                before.version.to_string(),
                next.version.to_string(),
                manual,
                next.last_seen.to_string(),
                next.session_start.to_string(),
                next.devices.to_string(),
                next.active.to_string(),
                dev_op.to_owned(),
                conn.unwrap_or_default().to_owned(),
                dev_json,
                op.to_owned(),
                member,
                node.clone(),
            ];
            let keys = vec![
                keys::state(t, u),
                keys::devices(t, u),
                keys::node_conns(&node),
                keys::NODES.to_owned(),
            ];
            let written: i64 = self.client.eval(CAS, keys, args).await?;
            if written == 1 {
                return Ok(Some((next, transition)));
            }
        }
        Err(StoreError::Unavailable(format!(
            "presence of {u}: too much contention"
        )))
    }

    async fn snapshots(&self, t: &str, users: &[String]) -> Result<Vec<Snapshot>, StoreError> {
        let pairs: Vec<(&str, Option<&str>)> = users.iter().map(|u| (u.as_str(), None)).collect();
        Ok(self
            .read(t, &pairs)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as i64;
        let _: () = self
            .client
            .set(
                keys::node_alive(node),
                "1",
                Some(Expiration::PX(ms)),
                None,
                false,
            )
            .await?;
        Ok(())
    }

    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        let nodes: Vec<String> = self.client.smembers(keys::NODES).await?;
        let mut dead = Vec::new();
        for n in nodes {
            let alive: i64 = self.client.exists(keys::node_alive(&n)).await?;
            if alive == 0 {
                dead.push(n);
            }
        }
        Ok(dead)
    }

    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let members: Vec<String> = self.client.smembers(keys::node_conns(node)).await?;
        Ok(members
            .into_iter()
            .filter_map(|m| {
                let mut p = m.splitn(3, '|');
                Some((
                    p.next()?.to_owned(),
                    p.next()?.to_owned(),
                    p.next()?.to_owned(),
                ))
            })
            .collect())
    }

    async fn claim_reap(&self, node: &str) -> Result<bool, StoreError> {
        let r: Option<String> = self
            .client
            .set(
                keys::node_reaping(node),
                "1",
                Some(Expiration::EX(60)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(r.is_some())
    }

    async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        let left: i64 = self.client.scard(keys::node_conns(node)).await?;
        if left == 0 {
            let _: i64 = self.client.srem(keys::NODES, node).await?;
            let _: i64 = self
                .client
                .del(vec![keys::node_conns(node), keys::node_reaping(node)])
                .await?;
        }
        Ok(())
    }

    async fn record(
        &self,
        t: &str,
        u: &str,
        tr: Transition,
        date: &str,
    ) -> Result<u64, StoreError> {
        let (op, ms) = match tr {
            Transition::CameOnline => ("on", 0),
            Transition::WentOffline { session_ms } => ("off", session_ms.max(0)),
            Transition::None => ("", 0),
        };
        let n: i64 = self
            .client
            .eval(
                RECORD,
                vec![keys::online(t), keys::daily(t, date)],
                vec![
                    op.to_owned(),
                    u.to_owned(),
                    ms.to_string(),
                    DAILY_TTL_SECS.to_string(),
                ],
            )
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn online_count(&self, t: &str) -> Result<u64, StoreError> {
        let n: i64 = self.client.scard(keys::online(t)).await?;
        Ok(n.max(0) as u64)
    }

    async fn history(&self, t: &str, dates: &[String]) -> Result<Vec<Daily>, StoreError> {
        let mut out = Vec::with_capacity(dates.len());
        for d in dates {
            let h: HashMap<String, u64> = self.client.hgetall(keys::daily(t, d)).await?;
            let g = |k: &str| h.get(k).copied().unwrap_or(0);
            out.push(Daily {
                date: d.clone(),
                peak: g("peak"),
                sessions: g("sessions"),
                ended_sessions: g("ended"),
                session_ms_total: g("ms"),
            });
        }
        Ok(out)
    }
}

// === impl RedisBus ===

/// Presence updates over Redis pub/sub: every node subscribes to one channel.
pub struct RedisBus {
    client: Client,
    /// Held so the subscription lives as long as the bus.
    _sub: SubscriberClient,
    tx: broadcast::Sender<BusMsg>,
}

impl RedisBus {
    /// Subscribe and start forwarding messages to local receivers.
    pub async fn start(client: Client, sub: SubscriberClient) -> Result<Self, StoreError> {
        let (tx, _) = broadcast::channel(4096);
        let forward = tx.clone();
        let mut rx = sub.message_rx();
        tokio::spawn(async move {
            while let Ok(msg) = rx.recv().await {
                let Value::String(s) = &msg.value else {
                    continue;
                };
                match serde_json::from_str::<BusMsg>(s) {
                    Ok(u) => {
                        let _ = forward.send(u);
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable presence update"),
                }
            }
        });
        // What was published while the connection was down is lost: tell the tracker.
        let mut reconnects = sub.reconnect_rx();
        let resync = tx.clone();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                let _ = resync.send(BusMsg::Resync);
            }
        });
        sub.init().await?;
        // `sub` re-subscribes by itself after a reconnect (crate::redis::redis_subscriber).
        sub.subscribe(CHANNEL).await?;
        Ok(Self {
            client,
            _sub: sub,
            tx,
        })
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, msg: &BusMsg) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .publish(CHANNEL, serde_json::to_string(msg)?)
            .await?;
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<BusMsg> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenant_keys_share_the_hash_tag() {
        for k in [
            super::keys::state("acme", "u"),
            super::keys::devices("acme", "u"),
            super::keys::online("acme"),
            super::keys::daily("acme", "2026-01-01"),
        ] {
            assert!(k.starts_with("sb:{acme}:"), "{k}");
        }
    }
}
