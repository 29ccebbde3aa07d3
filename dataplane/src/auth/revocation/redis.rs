//! [`RevocationStore`] on Redis.
//!
//! - `sb:{T}:revoked:jti:{JTI}`: `1` while the token is revoked.
//! - `sb:{T}:revoked:sid:{SID}`: `1` while the login session is revoked.
//! - `sb:{T}:revoked:user:{U}`: `before` (seconds) while the user's older tokens are revoked.
//!
//! Every entry lives for its TTL (`PX`). A second user revocation keeps the larger
//! `before` and the longer TTL, so it never shortens or narrows an earlier one.

use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::{Expiration, Value};

use super::{RevocationStore, Target, decide};
use crate::auth::Identity;
use crate::error::StoreError;

/// The longest TTL written, in ms (100 years: far past any token's lifetime, and well
/// inside what Redis and a Lua number take).
const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

mod keys {
    /// A revoked token id. The jti comes from the token: it is the last part of the key,
    /// so whatever it holds cannot reach another key.
    pub fn jti(tenant: &str, jti: &str) -> String {
        format!("sb:{{{tenant}}}:revoked:jti:{jti}")
    }

    /// A revoked login session (last part, like the jti).
    pub fn sid(tenant: &str, sid: &str) -> String {
        format!("sb:{{{tenant}}}:revoked:sid:{sid}")
    }

    /// A user's tokens issued at or before the stored moment.
    pub fn user(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:revoked:user:{user_id}")
    }
}

/// KEYS: the user entry. ARGV: before (decimal u64), TTL in ms.
/// Stores max(stored, before) with max(remaining TTL, TTL). A corrupt stored value is
/// replaced.
const REVOKE_USER: &str = r"
local v = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur and (cur == '0' or string.match(cur, '^[1-9]%d*$')) then
  if #cur > #v or (#cur == #v and cur > v) then
    v = cur
  end
end
local ttl = ARGV[2]
local left = redis.call('PTTL', KEYS[1])
if left > tonumber(ttl) then
  ttl = string.format('%d', left)
end
redis.call('SET', KEYS[1], v, 'PX', ttl)
return 1
";

pub struct RedisRevocations {
    client: Client,
}

impl RedisRevocations {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// A TTL in whole ms, rounded up so a sub-ms TTL still writes an entry.
fn ttl_ms(ttl: Duration) -> i64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000).min(MAX_TTL_MS);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[async_trait]
impl RevocationStore for RedisRevocations {
    async fn revoke(&self, tenant: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl_ms(ttl);
        if ms == 0 {
            // An entry that is gone at once revokes nothing (and must not lift an older one).
            return Ok(());
        }
        match target {
            Target::Jti(jti) => {
                let _: Value = self
                    .client
                    .set(
                        keys::jti(tenant, jti),
                        1,
                        Some(Expiration::PX(ms)),
                        None,
                        false,
                    )
                    .await?;
            }
            Target::Sid(sid) => {
                let _: Value = self
                    .client
                    .set(
                        keys::sid(tenant, sid),
                        1,
                        Some(Expiration::PX(ms)),
                        None,
                        false,
                    )
                    .await?;
            }
            Target::User { user_id, before } => {
                let _: Value = self
                    .client
                    .eval(
                        REVOKE_USER,
                        keys::user(tenant, user_id),
                        vec![before.to_string(), ms.to_string()],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn check(&self, id: &Identity) -> Result<Option<&'static str>, StoreError> {
        let mut keys = vec![keys::user(&id.tenant, &id.user_id)];
        if let Some(jti) = &id.jti {
            keys.push(keys::jti(&id.tenant, jti));
        }
        if let Some(sid) = &id.sid {
            keys.push(keys::sid(&id.tenant, sid));
        }
        let n = keys.len();
        let v: Value = self.client.mget(keys).await?;
        let mut items = match v {
            Value::Array(items) => items.into_iter(),
            // fred may hand a one-key reply back unwrapped.
            other if n == 1 => vec![other].into_iter(),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "revocations: unexpected reply {other:?}"
                )));
            }
        };
        if items.len() != n {
            return Err(StoreError::Corrupt(format!(
                "revocations: {} values for {n} keys",
                items.len()
            )));
        }
        let user_before = match items.next() {
            None | Some(Value::Null) => None,
            Some(v) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| StoreError::Corrupt(format!("user revocation {v:?}")))?;
                Some(
                    s.parse::<u64>()
                        .map_err(|_| StoreError::Corrupt(format!("user revocation {s:?}")))?,
                )
            }
        };
        let jti = id.jti.is_some() && items.next().is_some_and(|v| !v.is_null());
        let sid = id.sid.is_some() && items.next().is_some_and(|v| !v.is_null());
        Ok(decide(id, jti, sid, user_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(keys::jti("acme", "j1"), "sb:{acme}:revoked:jti:j1");
        assert_eq!(keys::sid("acme", "s1"), "sb:{acme}:revoked:sid:s1");
        assert_eq!(keys::user("acme", "alice"), "sb:{acme}:revoked:user:alice");
    }

    #[test]
    fn ttls_round_up_to_whole_ms() {
        assert_eq!(ttl_ms(Duration::ZERO), 0);
        assert_eq!(ttl_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
        assert_eq!(ttl_ms(Duration::MAX), 3_153_600_000_000);
    }
}
