//! [`CallStore`] on Redis.
//!
//! - `sb:{T}:call:{C}`: a hash, `v` (version, bumped by every commit) and `doc` (the call
//!   JSON). Live calls expire after a day, ended ones after an hour.
//! - `sb:{T}:user:{U}:call`: the id of the live call holding the user (busy for others).
//!   A claim is refused while it names another call that exists and has not ended.
//! - `sb:{T}:call:{C}:quality`, `sb:{T}:quality`: recent quality reports (JSON), capped
//!   lists.
//! - `sb:calls:timers`: a sorted set of `tenant|call|kind|user` by due time (ms), shared
//!   by every node (cluster-wide, like the presence node keys): any live node fires a due
//!   timer, so a ringing timeout survives the node that set it. Claiming a timer pushes
//!   its score out by a lease instead of removing it; the firing node removes it when
//!   done, and if it dies first another node fires it after the lease (transitions are
//!   idempotent, so a repeat changes nothing).
//!
//! - `sb:calls:live`: a sorted set of `tenant|call` by expiry (ms) of every live call,
//!   cluster-wide like the timers: written after each commit (added while live, removed
//!   once ended), counted for `switchboard_calls_active`. An entry a node could not
//!   remove (it died right after the commit) lapses with the call's keys.
//!
//! - `sb:{T}:calls:outbox`: history records of ended calls not yet in the history
//!   database (a list, oldest first), pushed by the commit that ends the call;
//!   `sb:calls:outbox:tenants` names the tenants with a non-empty outbox. Every node
//!   drains them and removes a record once the database took it.
//!
//! A commit is one script: compare the version, check every claim, then write the call,
//! the claims, the releases, the holders' refreshed TTLs and the outbox record together.
//! Every key it touches is declared: the client reads each claimed user's holder first
//! and passes that call's key; the script refuses (and the client retries) if a holder
//! changed meanwhile.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::SetsInterface;
use fred::interfaces::{
    HashesInterface, KeysInterface, ListInterface, LuaInterface, SortedSetsInterface,
};
use fred::types::{Expiration, SetOptions, Value};

use super::{
    Call, CallState, CallStore, Commit, MAX_SAMPLES_PER_CALL, MAX_SAMPLES_PER_TENANT, OutboxStats,
    Sample, Timer,
};
use crate::error::StoreError;

/// How long a live call's keys last without a change, and an ended call's record.
const LIVE_TTL_MS: i64 = 24 * 3600 * 1000;
const ENDED_TTL_MS: i64 = 3600 * 1000;

mod keys {
    pub fn call(tenant: &str, call_id: &str) -> String {
        format!("sb:{{{tenant}}}:call:{call_id}")
    }
    pub fn user_call(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:call")
    }
    pub fn call_quality(tenant: &str, call_id: &str) -> String {
        format!("sb:{{{tenant}}}:call:{call_id}:quality")
    }
    pub fn tenant_quality(tenant: &str) -> String {
        format!("sb:{{{tenant}}}:quality")
    }
    pub const TIMERS: &str = "sb:calls:timers";
    pub const LIVE: &str = "sb:calls:live";
    pub fn live_member(tenant: &str, call_id: &str) -> String {
        format!("{tenant}|{call_id}")
    }
    pub fn outbox(tenant: &str) -> String {
        format!("sb:{{{tenant}}}:calls:outbox")
    }
    pub const OUTBOX_TENANTS: &str = "sb:calls:outbox:tenants";
    /// A user's open /webrtc connections (`node/sid`).
    pub fn user_conns(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:webrtc")
    }
    /// Nodes holding /webrtc connections; each node's `tenant|user|conn`, heartbeat and
    /// sweep lock. Cluster-wide, like the timers.
    pub const NODES: &str = "sb:calls:nodes";
    pub fn node_conns(node: &str) -> String {
        format!("sb:calls:node:{node}:conns")
    }
    pub fn node_alive(node: &str) -> String {
        format!("sb:calls:node:{node}:alive")
    }
    pub fn node_sweep(node: &str) -> String {
        format!("sb:calls:node:{node}:sweep")
    }
}

/// How long a sweeper holds a dead node before another may try, in seconds. Sweeping
/// twice is harmless (removals are idempotent), so a sweeper that dies costs little.
const SWEEP_LOCK_SECS: i64 = 10;

/// KEYS: call hash, outbox, then `n` user keys (the `nc` claims first, then releases,
/// then kept holders), then one holder call key per claim.
/// ARGV: expected version, call JSON, TTL ms, call id, history record ('' for none),
/// n, nc, one op per user key (`c` claim, `r` release, `k` keep: refresh the TTL), then
/// per claim the holder the client read ('' for none), and last the outbox bound.
/// Returns {1, new version, records dropped from the full outbox}, {0} when the version moved, {2} when a claimed user's
/// holder changed since the client read it, {-1, claim index, holder id} when a claimed
/// user is held by another live call.
const COMMIT: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0}
end
local n, nc = tonumber(ARGV[6]), tonumber(ARGV[7])
for i = 1, nc do
  local cur = redis.call('GET', KEYS[2 + i])
  if (cur or '') ~= ARGV[7 + n + i] then
    return {2}
  end
  if cur and cur ~= ARGV[4] then
    local doc = redis.call('HGET', KEYS[2 + n + i], 'doc')
    if doc then
      local ok, c = pcall(cjson.decode, doc)
      if ok and type(c) == 'table' and c.state ~= 'ended' then
        return {-1, i - 1, cur}
      end
    end
  end
end
for i = 1, n do
  local k, op = KEYS[2 + i], ARGV[7 + i]
  if op == 'c' then
    redis.call('SET', k, ARGV[4], 'PX', ARGV[3])
  elseif redis.call('GET', k) == ARGV[4] then
    if op == 'r' then
      redis.call('DEL', k)
    else
      redis.call('PEXPIRE', k, ARGV[3])
    end
  end
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'doc', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local dropped = 0
if ARGV[5] ~= '' then
  local len = redis.call('RPUSH', KEYS[2], ARGV[5])
  local over = len - tonumber(ARGV[#ARGV])
  if over > 0 then
    redis.call('LTRIM', KEYS[2], over, -1)
    dropped = over
  end
end
return {1, v + 1, dropped}
"#;

/// Tries of a commit whose claimed users' holders keep changing under it.
const COMMIT_TRIES: usize = 8;

/// KEYS: timers. ARGV: member, lease. Removes the timer if still leased until `lease`.
const FINISH: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// KEYS: the user's connections. ARGV: conn. Removes it; how many are left.
const CONN_DOWN: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
";

/// KEYS: timers. ARGV: now, lease until, max. Returns the due members, leased.
const DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], m)
end
return due
";

/// KEYS: list. ARGV: JSON, cap.
const PUSH: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
";

pub struct RedisCalls {
    client: Client,
    /// Records one tenant's outbox holds at most (`calls.history_outbox_max`).
    outbox_max: usize,
    /// Records this handle's commits dropped from a full outbox.
    dropped: std::sync::atomic::AtomicU64,
}

impl RedisCalls {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            outbox_max: super::DEFAULT_OUTBOX_MAX,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn with_outbox_max(self, outbox_max: usize) -> Self {
        Self {
            outbox_max: outbox_max.max(1),
            ..self
        }
    }

    async fn push(&self, key: String, json: &str, cap: usize) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(PUSH, vec![key], vec![json.to_owned(), cap.to_string()])
            .await?;
        Ok(())
    }

    /// Keep `sb:calls:live` in step with a committed call. After the commit, not in it
    /// (the index is cluster-wide, the call's keys are the tenant's slot): a failure here
    /// only skews the gauge until the entry lapses, so it is logged, not returned.
    async fn index_live(&self, tenant: &str, call: &Call) {
        let member = keys::live_member(tenant, &call.id);
        let done: Result<i64, _> = if call.state == CallState::Ended {
            self.client.zrem(keys::LIVE, member).await
        } else {
            let until = crate::app::now_ms() + LIVE_TTL_MS;
            self.client
                .zadd(keys::LIVE, None, None, false, false, (until as f64, member))
                .await
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, call = %call.id, "live-call index not updated");
        }
    }
}

fn text(v: Value, what: &str) -> Result<String, StoreError> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| StoreError::Corrupt(format!("{what}: not UTF-8"))),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(StoreError::Corrupt(format!(
            "{what}: unexpected reply {other:?}"
        ))),
    }
}

#[async_trait]
impl CallStore for RedisCalls {
    async fn load(&self, tenant: &str, call_id: &str) -> Result<Option<(Call, u64)>, StoreError> {
        let (v, doc): (Option<String>, Option<String>) = self
            .client
            .hmget(keys::call(tenant, call_id), vec!["v", "doc"])
            .await?;
        let (Some(v), Some(doc)) = (v, doc) else {
            return Ok(None);
        };
        let version = v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("call {call_id}: version {v:?}")))?;
        Ok(Some((serde_json::from_str(&doc)?, version)))
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
        let ttl = if call.state == CallState::Ended {
            ENDED_TTL_MS
        } else {
            LIVE_TTL_MS
        };
        // Holders kept by this call get their TTL refreshed with the call's.
        let keeps: Vec<String> = call
            .holders()
            .into_iter()
            .filter(|u| !claims.contains(u) && !releases.contains(u))
            .collect();
        let claim_keys: Vec<String> = claims.iter().map(|u| keys::user_call(tenant, u)).collect();
        if record.is_some() {
            // Before the commit, so a drainer finds the tenant even if this node dies
            // right after it (and again after, in case a drainer emptied it meanwhile).
            let _: i64 = self.client.sadd(keys::OUTBOX_TENANTS, tenant).await?;
        }
        let doc = serde_json::to_string(call)?;
        for _ in 0..COMMIT_TRIES {
            let holders: Vec<Option<String>> = if claim_keys.is_empty() {
                Vec::new()
            } else {
                self.client.mget(claim_keys.clone()).await?
            };
            let mut ks = vec![keys::call(tenant, &call.id), keys::outbox(tenant)];
            ks.extend(claim_keys.iter().cloned());
            ks.extend(releases.iter().map(|u| keys::user_call(tenant, u)));
            ks.extend(keeps.iter().map(|u| keys::user_call(tenant, u)));
            let n = ks.len() - 2;
            let mut args = vec![
                expected.to_string(),
                doc.clone(),
                ttl.to_string(),
                call.id.clone(),
                record.unwrap_or_default().to_owned(),
                n.to_string(),
                claims.len().to_string(),
            ];
            args.extend(claims.iter().map(|_| "c".to_owned()));
            args.extend(releases.iter().map(|_| "r".to_owned()));
            args.extend(keeps.iter().map(|_| "k".to_owned()));
            for h in &holders {
                // The holder's call key (or, for none, the call's own key: unread).
                ks.push(match h {
                    Some(c) => keys::call(tenant, c),
                    None => keys::call(tenant, &call.id),
                });
                args.push(h.clone().unwrap_or_default());
            }
            args.push(self.outbox_max.to_string());
            let reply: Value = self.client.eval(COMMIT, ks, args).await?;
            let Value::Array(parts) = reply else {
                return Err(StoreError::Corrupt(format!(
                    "commit: unexpected reply {reply:?}"
                )));
            };
            let mut it = parts.into_iter();
            return match it.next() {
                Some(Value::Integer(1)) => {
                    if record.is_some() {
                        let _: i64 = self.client.sadd(keys::OUTBOX_TENANTS, tenant).await?;
                    }
                    self.index_live(tenant, call).await;
                    let v = text(it.next().unwrap_or(Value::Null), "commit version")?;
                    if let Some(Value::Integer(n @ 1..)) = it.next() {
                        self.dropped
                            .fetch_add(n.unsigned_abs(), std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(tenant = %tenant, dropped = n, "call history outbox full; the oldest records dropped");
                    }
                    Ok(Commit::Done(v.parse().unwrap_or(expected + 1)))
                }
                Some(Value::Integer(0)) => Ok(Commit::Stale),
                Some(Value::Integer(2)) => continue,
                Some(Value::Integer(-1)) => {
                    let idx = match it.next() {
                        Some(Value::Integer(i)) => usize::try_from(i).unwrap_or(0),
                        _ => 0,
                    };
                    let holder = text(it.next().unwrap_or(Value::Null), "commit holder")?;
                    Ok(Commit::Held {
                        user: claims.get(idx).cloned().unwrap_or_default(),
                        call_id: holder,
                    })
                }
                other => Err(StoreError::Corrupt(format!(
                    "commit: unexpected reply {other:?}"
                ))),
            };
        }
        Ok(Commit::Stale)
    }

    async fn outbox(&self, max: usize) -> Result<Vec<(String, String)>, StoreError> {
        let tenants: Vec<String> = self.client.smembers(keys::OUTBOX_TENANTS).await?;
        let mut out = Vec::new();
        for t in tenants {
            if out.len() >= max {
                break;
            }
            let key = keys::outbox(&t);
            let take = i64::try_from(max - out.len()).unwrap_or(i64::MAX);
            let recs: Vec<String> = self.client.lrange(&key, 0, take - 1).await?;
            if recs.is_empty() {
                // Drop the tenant from the index; put it back if a commit pushed since.
                let _: i64 = self.client.srem(keys::OUTBOX_TENANTS, &t).await?;
                let left: i64 = self.client.llen(&key).await?;
                if left > 0 {
                    let _: i64 = self.client.sadd(keys::OUTBOX_TENANTS, &t).await?;
                }
                continue;
            }
            out.extend(recs.into_iter().map(|r| (t.clone(), r)));
        }
        Ok(out)
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let tenants: Vec<String> = self.client.smembers(keys::OUTBOX_TENANTS).await?;
        let mut pending = 0_u64;
        for t in tenants {
            let n: u64 = self.client.llen(keys::outbox(&t)).await?;
            pending += n;
        }
        Ok(OutboxStats {
            pending,
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn outbox_done(&self, tenant: &str, record: &str) -> Result<(), StoreError> {
        let _: i64 = self.client.lrem(keys::outbox(tenant), 1, record).await?;
        Ok(())
    }

    async fn user_call(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.client.get(keys::user_call(tenant, user_id)).await?)
    }

    async fn schedule(&self, timer: &Timer, at_ms: i64) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .zadd(
                keys::TIMERS,
                None,
                None,
                false,
                false,
                (at_ms as f64, timer.member()),
            )
            .await?;
        Ok(())
    }

    async fn leased(&self, timer: &Timer, lease_until: i64) -> Result<bool, StoreError> {
        let score: Option<f64> = self.client.zscore(keys::TIMERS, timer.member()).await?;
        Ok(score == Some(lease_until as f64))
    }

    async fn finish(&self, timer: &Timer, lease_until: i64) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                FINISH,
                vec![keys::TIMERS],
                vec![timer.member(), lease_until.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn cancel(&self, timer: &Timer) -> Result<(), StoreError> {
        let _: i64 = self.client.zrem(keys::TIMERS, timer.member()).await?;
        Ok(())
    }

    async fn due(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Timer>, StoreError> {
        let members: Vec<String> = self
            .client
            .eval(
                DUE,
                vec![keys::TIMERS],
                vec![
                    now.to_string(),
                    (now + lease_ms).to_string(),
                    max.to_string(),
                ],
            )
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let t = Timer::parse(m);
                if t.is_none() {
                    tracing::warn!(member = %m, "unreadable call timer skipped");
                }
                t
            })
            .collect())
    }

    async fn add_sample(&self, tenant: &str, call_id: &str, s: &Sample) -> Result<(), StoreError> {
        let json = serde_json::to_string(s)?;
        self.push(
            keys::call_quality(tenant, call_id),
            &json,
            MAX_SAMPLES_PER_CALL,
        )
        .await?;
        self.push(keys::tenant_quality(tenant), &json, MAX_SAMPLES_PER_TENANT)
            .await
    }

    async fn samples(
        &self,
        tenant: &str,
        call_id: Option<&str>,
    ) -> Result<Vec<Sample>, StoreError> {
        let key = match call_id {
            Some(c) => keys::call_quality(tenant, c),
            None => keys::tenant_quality(tenant),
        };
        let items: Vec<String> = self.client.lrange(key, 0, -1).await?;
        items
            .iter()
            .map(|j| serde_json::from_str(j).map_err(StoreError::from))
            .collect()
    }

    async fn conn_up(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .sadd(keys::user_conns(tenant, user), conn)
            .await?;
        let _: i64 = self
            .client
            .sadd(keys::node_conns(node), format!("{tenant}|{user}|{conn}"))
            .await?;
        let _: i64 = self.client.sadd(keys::NODES, node).await?;
        Ok(())
    }

    async fn conn_count(&self, tenant: &str, user: &str) -> Result<usize, StoreError> {
        let n: i64 = self.client.scard(keys::user_conns(tenant, user)).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn conn_down(
        &self,
        tenant: &str,
        user: &str,
        conn: &str,
        node: &str,
    ) -> Result<usize, StoreError> {
        let left: i64 = self
            .client
            .eval(
                CONN_DOWN,
                vec![keys::user_conns(tenant, user)],
                vec![conn.to_owned()],
            )
            .await?;
        let _: i64 = self
            .client
            .srem(keys::node_conns(node), format!("{tenant}|{user}|{conn}"))
            .await?;
        Ok(usize::try_from(left).unwrap_or(0))
    }

    async fn heartbeat(&self, node: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let before: Option<String> = self
            .client
            .set(
                keys::node_alive(node),
                "1",
                Some(Expiration::PX(ttl_ms.max(1))),
                None,
                true,
            )
            .await?;
        Ok(before.is_some())
    }

    async fn node_known(&self, node: &str) -> Result<bool, StoreError> {
        let known: bool = self.client.sismember(keys::NODES, node).await?;
        Ok(known)
    }

    async fn claim_dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError> {
        let nodes: Vec<String> = self.client.smembers(keys::NODES).await?;
        let mut dead = Vec::new();
        for n in nodes.into_iter().filter(|n| n != me) {
            let alive: i64 = self.client.exists(keys::node_alive(&n)).await?;
            if alive == 1 {
                continue;
            }
            let claimed: Option<String> = self
                .client
                .set(
                    keys::node_sweep(&n),
                    me,
                    Some(Expiration::EX(SWEEP_LOCK_SECS)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if claimed.is_some() {
                dead.push(n);
            }
        }
        Ok(dead)
    }

    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let members: Vec<String> = self.client.smembers(keys::node_conns(node)).await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let mut it = m.splitn(3, '|');
                Some((
                    it.next()?.to_owned(),
                    it.next()?.to_owned(),
                    it.next()?.to_owned(),
                ))
            })
            .collect())
    }

    async fn live_calls(&self, now: i64) -> Result<u64, StoreError> {
        let _: i64 = self
            .client
            .zremrangebyscore(keys::LIVE, f64::NEG_INFINITY, now as f64)
            .await?;
        let n: i64 = self.client.zcard(keys::LIVE).await?;
        Ok(n.max(0) as u64)
    }

    async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        let _: i64 = self.client.srem(keys::NODES, node).await?;
        let _: i64 = self
            .client
            .del(vec![keys::node_conns(node), keys::node_sweep(node)])
            .await?;
        Ok(())
    }
}
