//! [`PresenceStore`] and [`Bus`] on Redis.
//!
//! - `sb:{T}:presence:{U}`: hash `v` (version), `m` (manual status JSON), `ls` (last seen),
//!   `ss` (session start).
//! - `sb:{T}:presence:{U}:dev`: hash, connection id → device JSON.
//! - `sb:{T}:presence:online`: set of the tenant's users online now.
//! - `sb:{T}:presence:daily:{YYYY-MM-DD}`: hash `peak`, `sessions`, `ended`, `ms`; kept 31 days.
//! - `sb:node:{N}:conns`: set of `tenant|user|conn` held by node N; `sb:nodes`: nodes
//!   that hold connections; `sb:node:{N}:alive`: heartbeat (TTL); `sb:node:{N}:reaping`:
//!   the sweep lock. Node keys are cluster-wide, not tenant data.
//!
//! A change reads the state, applies [`super::apply`] (the one place the rules live) and
//! writes it back with a compare-and-set script on the version; a concurrent writer makes
//! it read and apply again.

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
    pub const NODES: &str = "sb:nodes";
}

/// KEYS: state, devices, node index, nodes set.
/// ARGV: expected version, new version, manual JSON or "", last seen, session start,
/// index op ("add" | "rem" | ""), index member, node, then device conn/JSON pairs.
/// Returns 1 when written, 0 when the version moved on.
const CAS: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[2])
if #ARGV > 8 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 9))
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'ls', ARGV[4], 'ss', ARGV[5])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'm')
else
  redis.call('HSET', KEYS[1], 'm', ARGV[3])
end
if ARGV[6] == 'add' then
  redis.call('SADD', KEYS[3], ARGV[7])
  redis.call('SADD', KEYS[4], ARGV[8])
elseif ARGV[6] == 'rem' then
  redis.call('SREM', KEYS[3], ARGV[7])
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

    async fn read(&self, t: &str, u: &str) -> Result<Snapshot, StoreError> {
        let state: HashMap<String, String> = self.client.hgetall(keys::state(t, u)).await?;
        let devs: HashMap<String, String> = self.client.hgetall(keys::devices(t, u)).await?;
        let num = |k: &str| -> Result<i64, StoreError> {
            state.get(k).map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|_| StoreError::Corrupt(format!("presence {k} of {u}")))
            })
        };
        let manual = match state.get("m") {
            Some(j) => Some(serde_json::from_str::<Manual>(j)?),
            None => None,
        };
        let mut devices: Vec<Device> = devs
            .values()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<_, _>>()?;
        devices.sort_by(|a, b| a.conn.cmp(&b.conn));
        Ok(Snapshot {
            version: num("v")? as u64,
            manual,
            devices,
            last_seen: num("ls")?,
            session_start: num("ss")?,
        })
    }
}

fn index_op(change: &Change, before: &Snapshot) -> (&'static str, Option<Device>) {
    match change {
        Change::Connect(d) => ("add", Some(d.clone())),
        Change::Disconnect { conn } => (
            "rem",
            before.devices.iter().find(|d| &d.conn == conn).cloned(),
        ),
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
        for _ in 0..MAX_CAS_ATTEMPTS {
            let before = self.read(t, u).await?;
            let Some((next, transition)) = apply(&before, change, now) else {
                return Ok(None);
            };
            let (op, dev) = index_op(change, &before);
            let node = dev.as_ref().map(|d| d.node.clone()).unwrap_or_default();
            let member = dev
                .as_ref()
                .map(|d| format!("{t}|{u}|{}", d.conn))
                .unwrap_or_default();
            let manual = match &next.manual {
                Some(m) => serde_json::to_string(m)?,
                None => String::new(),
            };
            let mut args = vec![
                before.version.to_string(),
                next.version.to_string(),
                manual,
                next.last_seen.to_string(),
                next.session_start.to_string(),
                op.to_owned(),
                member,
                node.clone(),
            ];
            for d in &next.devices {
                args.push(d.conn.clone());
                args.push(serde_json::to_string(d)?);
            }
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
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            out.push(self.read(t, u).await?);
        }
        Ok(out)
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
