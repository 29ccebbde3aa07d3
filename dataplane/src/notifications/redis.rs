//! The inbox and delivery records on Redis.
//!
//! - `sb:{T}:user:{U}:inbox`: sorted set, id scored by `created_at` (ms).
//! - `sb:{T}:user:{U}:inbox:items`: hash, id → [`Entry`] JSON (with `read: false`).
//! - `sb:{T}:user:{U}:inbox:read`: set of the ids read.
//! - `sb:{T}:notif:{ID}:delivery`: hash, `user|channel|target` → [`Record`] JSON, and
//!   `_progress` → `queued` | `done` | `failed`; expires [`DELIVERY_TTL_SECS`] after the last write.
//! - `sb:{T}:notif:{ID}:run`: the run lock, the owning run's id (`SET NX PX`).

use async_trait::async_trait;
use fred::clients::Client;
use std::time::Duration;

use fred::interfaces::{
    HashesInterface, KeysInterface, LuaInterface, SetsInterface, SortedSetsInterface,
};
use fred::types::{Expiration, SetOptions, Value};

use super::delivery::{Claim, DELIVERY_TTL_SECS, DeliveryStore, Progress, Record, State};
use super::{Entry, InboxStore};
use crate::error::StoreError;

mod keys {
    pub fn inbox(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:inbox")
    }
    pub fn items(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:inbox:items")
    }
    pub fn read(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:inbox:read")
    }
    pub fn delivery(tenant: &str, id: &str) -> String {
        format!("sb:{{{tenant}}}:notif:{id}:delivery")
    }
    pub fn run_lock(tenant: &str, id: &str) -> String {
        format!("sb:{{{tenant}}}:notif:{id}:run")
    }
}

/// The progress field of a delivery hash (target keys always contain `|`).
const PROGRESS: &str = "_progress";

/// KEYS: inbox, items, read. ARGV: id, score, entry JSON, max. 1 added, 0 already there.
const ADD: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('SREM', KEYS[3], id)
  end
end
return 1
";

/// KEYS: items, read. ARGV: ids. Returns how many became read.
const MARK_READ: &str = r"
local n = 0
for _, id in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    n = n + redis.call('SADD', KEYS[2], id)
  end
end
return n
";

/// KEYS: delivery, run lock. ARGV: target key, claimed record JSON, ttl, owner, now (ms).
/// Returns {0} fresh, {1} reclaimed, {2, state} finished, {3} busy: claimed by another
/// owner whose lease is alive and who still holds the run lock.
const CLAIM: &str = r"
local j = redis.call('HGET', KEYS[1], ARGV[1])
if j then
  local ok, d = pcall(cjson.decode, j)
  if ok and type(d) == 'table' then
    local s = d['state']
    if s == 'sent' or s == 'failed' or s == 'pruned' then
      return {2, s}
    end
    local owner, lease = d['owner'], tonumber(d['lease_until'])
    if s == 'claimed' and type(owner) == 'string' and owner ~= ARGV[4]
      and lease and lease > tonumber(ARGV[5])
      and redis.call('GET', KEYS[2]) == owner then
      return {3}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[1], '_progress', 'queued')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if j then return {1} end
return {0}
";

/// KEYS: run lock. ARGV: owner, ttl ms. 1 when renewed (still the owner's).
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
";

/// KEYS: run lock. ARGV: owner.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
";

/// KEYS: delivery. ARGV: ttl. Progress `failed` unless `done`.
const FAIL: &str = r"
if redis.call('HGET', KEYS[1], '_progress') ~= 'done' then
  redis.call('HSET', KEYS[1], '_progress', 'failed')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return 1
";

/// KEYS: delivery. ARGV: field, value, ttl, only-if-absent ('1' or '0').
const PUT: &str = r"
if ARGV[4] == '1' then
  redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

pub struct RedisInbox {
    client: Client,
}

impl RedisInbox {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The stored JSON (None when missing) and the read flag of each id, in order.
    async fn page(
        &self,
        tenant: &str,
        user_id: &str,
        ids: &[String],
    ) -> Result<Vec<(Option<String>, bool)>, StoreError> {
        let items: Value = self
            .client
            .hmget(keys::items(tenant, user_id), ids.to_vec())
            .await?;
        let read: Value = self
            .client
            .smismember(keys::read(tenant, user_id), ids.to_vec())
            .await?;
        let as_vec = |v: Value, what: &str| match v {
            Value::Array(v) => Ok(v),
            // fred may hand a one-field reply back unwrapped.
            other if ids.len() == 1 => Ok(vec![other]),
            other => Err(StoreError::Corrupt(format!(
                "inbox {what}: unexpected reply {other:?}"
            ))),
        };
        let items = as_vec(items, "items")?;
        let read = as_vec(read, "read flags")?;
        Ok(items
            .into_iter()
            .zip(read)
            .map(|(i, r)| {
                (
                    i.as_string(),
                    r.as_i64() == Some(1) || r.as_bool() == Some(true),
                )
            })
            .collect())
    }
}

#[async_trait]
impl InboxStore for RedisInbox {
    async fn add(
        &self,
        tenant: &str,
        user_id: &str,
        e: &Entry,
        max: usize,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .eval(
                ADD,
                vec![
                    keys::inbox(tenant, user_id),
                    keys::items(tenant, user_id),
                    keys::read(tenant, user_id),
                ],
                vec![
                    e.id.clone(),
                    e.created_at.to_string(),
                    serde_json::to_string(e)?,
                    max.to_string(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Reads only the page `limit` needs: `ZREVRANGE 0 limit-1` (and, for `unread_only`,
    /// further pages of that size until enough unread ones are found).
    async fn list(
        &self,
        tenant: &str,
        user_id: &str,
        unread_only: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let page = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut start = 0i64;
        loop {
            let ids: Vec<String> = self
                .client
                .zrevrange(
                    keys::inbox(tenant, user_id),
                    start,
                    start.saturating_add(page - 1),
                    false,
                )
                .await?;
            if ids.is_empty() {
                return Ok(out);
            }
            let got = ids.len();
            let items = self.page(tenant, user_id, &ids).await?;
            for (item, is_read) in items {
                if unread_only && is_read {
                    continue;
                }
                let Some(json) = item else { continue };
                let mut e: Entry = serde_json::from_str(&json)?;
                e.read = is_read;
                out.push(e);
                if out.len() == limit {
                    return Ok(out);
                }
            }
            if !unread_only || i64::try_from(got).unwrap_or(0) < page {
                return Ok(out);
            }
            start = start.saturating_add(page);
        }
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        ids: &[String],
    ) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let n: i64 = self
            .client
            .eval(
                MARK_READ,
                vec![keys::items(tenant, user_id), keys::read(tenant, user_id)],
                ids.to_vec(),
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

pub struct RedisDelivery {
    client: Client,
}

impl RedisDelivery {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn put_field(
        &self,
        tenant: &str,
        id: &str,
        field: &str,
        value: String,
        only_if_absent: bool,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                PUT,
                vec![keys::delivery(tenant, id)],
                vec![
                    field.to_owned(),
                    value,
                    DELIVERY_TTL_SECS.to_string(),
                    if only_if_absent { "1" } else { "0" }.to_owned(),
                ],
            )
            .await?;
        Ok(())
    }
}

fn progress_of(s: &str) -> Progress {
    match s {
        "done" => Progress::Done,
        "failed" => Progress::Failed,
        _ => Progress::Queued,
    }
}

fn state_of(s: &str) -> Result<State, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(StoreError::from)
}

#[async_trait]
impl DeliveryStore for RedisDelivery {
    async fn accept(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.put_field(tenant, id, PROGRESS, "queued".into(), true)
            .await
    }

    async fn claim(
        &self,
        tenant: &str,
        id: &str,
        r: &Record,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let claimed = Record {
            state: State::Claimed,
            ..r.clone()
        };
        let reply: Value = self
            .client
            .eval(
                CLAIM,
                vec![keys::delivery(tenant, id), keys::run_lock(tenant, id)],
                vec![
                    r.key(),
                    serde_json::to_string(&claimed)?,
                    DELIVERY_TTL_SECS.to_string(),
                    r.owner.clone().unwrap_or_default(),
                    now.to_string(),
                ],
            )
            .await?;
        let parts = match reply {
            Value::Array(p) => p,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "claim: unexpected reply {other:?}"
                )));
            }
        };
        match parts.as_slice() {
            [Value::Integer(0)] => Ok(Claim::Fresh),
            [Value::Integer(1)] => Ok(Claim::Reclaimed),
            [Value::Integer(2), s] => Ok(Claim::Finished(state_of(
                &s.as_string().unwrap_or_default(),
            )?)),
            [Value::Integer(3)] => Ok(Claim::Busy),
            other => Err(StoreError::Corrupt(format!(
                "claim: unexpected reply {other:?}"
            ))),
        }
    }

    async fn put(&self, tenant: &str, id: &str, r: &Record) -> Result<(), StoreError> {
        self.put_field(tenant, id, &r.key(), serde_json::to_string(r)?, false)
            .await
    }

    async fn done(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.put_field(tenant, id, PROGRESS, "done".into(), false)
            .await
    }

    async fn fail(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                FAIL,
                vec![keys::delivery(tenant, id)],
                vec![DELIVERY_TTL_SECS.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn progress(&self, tenant: &str, id: &str) -> Result<Option<Progress>, StoreError> {
        let p: Option<String> = self
            .client
            .hget(keys::delivery(tenant, id), PROGRESS)
            .await?;
        Ok(p.map(|p| progress_of(&p)))
    }

    async fn lock(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let set: Option<String> = self
            .client
            .set(
                keys::run_lock(tenant, id),
                owner,
                Some(Expiration::PX(px)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }

    async fn renew(
        &self,
        tenant: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .eval(
                RENEW,
                vec![keys::run_lock(tenant, id)],
                vec![owner.to_owned(), ttl.as_millis().to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn unlock(&self, tenant: &str, id: &str, owner: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                UNLOCK,
                vec![keys::run_lock(tenant, id)],
                vec![owner.to_owned()],
            )
            .await?;
        Ok(())
    }

    async fn status(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Progress, Vec<Record>)>, StoreError> {
        let all: std::collections::HashMap<String, String> =
            self.client.hgetall(keys::delivery(tenant, id)).await?;
        if all.is_empty() {
            return Ok(None);
        }
        let progress = progress_of(all.get(PROGRESS).map_or("", String::as_str));
        let mut recs = all
            .iter()
            .filter(|(k, _)| k.as_str() != PROGRESS)
            .map(|(_, v)| serde_json::from_str::<Record>(v))
            .collect::<Result<Vec<_>, _>>()?;
        recs.sort_by_key(Record::key);
        Ok(Some((progress, recs)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_carry_the_tenant_hash_tag() {
        assert_eq!(super::keys::inbox("acme", "al"), "sb:{acme}:user:al:inbox");
        assert_eq!(
            super::keys::delivery("acme", "n1"),
            "sb:{acme}:notif:n1:delivery"
        );
    }
}
