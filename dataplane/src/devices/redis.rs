//! [`DeviceStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:devices`: hash, token → [`Device`] as JSON.
//! - `sb:{T}:device-owners`: hash, token → user id (a token belongs to one user).
//! - `sb:{T}:user:{U}:email`: the user's e-mail address.
//! - `sb:device:{H}`: the global index, `H` = hex SHA-256 of `platform:token`, value
//!   `{tenant, user}` JSON. The one key without a tenant: it is what finds a token's
//!   holder across tenants. Written after the tenant's own keys, then the previous
//!   holder in another tenant loses the token (cross-slot, so not one script: a failure
//!   in between leaves the index naming the old tenant and the sender skipping the token
//!   in the new one until the client registers again — never a push across tenants).

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use serde::{Deserialize, Serialize};

use super::{Device, DeviceStore, Platform, Registered};
use crate::error::StoreError;

mod keys {
    pub const USER_PREFIX: &str = ":user:";
    pub const DEVICES_SUFFIX: &str = ":devices";

    pub fn tenant_prefix(tenant: &str) -> String {
        format!("sb:{{{tenant}}}")
    }
    pub fn devices(tenant: &str, user_id: &str) -> String {
        format!(
            "{}{USER_PREFIX}{user_id}{DEVICES_SUFFIX}",
            tenant_prefix(tenant)
        )
    }
    pub fn owners(tenant: &str) -> String {
        format!("{}:device-owners", tenant_prefix(tenant))
    }
    pub fn email(tenant: &str, user_id: &str) -> String {
        format!("{}{USER_PREFIX}{user_id}:email", tenant_prefix(tenant))
    }
    /// The global token index (no tenant: see the module docs).
    pub fn index(platform: super::Platform, token: &str) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{}:{token}", platform.as_str()));
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        format!("sb:device:{{{hex}}}")
    }
}

/// A global index entry.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Holder {
    tenant: String,
    user: String,
}

/// KEYS: index. ARGV: holder JSON. Deletes the entry when it is that holder's.
const UNINDEX: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// KEYS: user's devices, owners. ARGV: token, device JSON, max, user id, the previous
/// owner's devices key = ARGV[5] .. owner .. ARGV[6] (same tenant hash tag, same slot).
/// Returns 1 registered, 0 too many devices.
const REGISTER: &str = r"
local has = redis.call('HEXISTS', KEYS[1], ARGV[1])
if has == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and old ~= ARGV[4] then
  redis.call('HDEL', ARGV[5] .. old .. ARGV[6], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return 1
";

/// KEYS: user's devices, owners. ARGV: token, user id, unless_after ms or ''.
/// Returns 1 when removed.
const REMOVE: &str = r"
local j = redis.call('HGET', KEYS[1], ARGV[1])
if not j then return 0 end
if ARGV[3] ~= '' then
  local ok, d = pcall(cjson.decode, j)
  if ok and tonumber(d['registered_at']) and tonumber(d['registered_at']) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
";

pub struct RedisDevices {
    client: Client,
}

impl RedisDevices {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn remove(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
        unless_after: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .eval(
                REMOVE,
                vec![keys::devices(tenant, user_id), keys::owners(tenant)],
                vec![
                    token.to_owned(),
                    user_id.to_owned(),
                    unless_after.map(|t| t.to_string()).unwrap_or_default(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// After a removal: drop the index entry if it still names this holder. The
    /// platform is not known here (tokens are per platform in practice), so both go.
    async fn unindex(&self, tenant: &str, user_id: &str, token: &str) -> Result<(), StoreError> {
        let me = serde_json::to_string(&Holder {
            tenant: tenant.into(),
            user: user_id.into(),
        })?;
        for p in [Platform::Fcm, Platform::Apns] {
            let _: i64 = self
                .client
                .eval(UNINDEX, vec![keys::index(p, token)], vec![me.clone()])
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl DeviceStore for RedisDevices {
    async fn register(
        &self,
        tenant: &str,
        user_id: &str,
        d: &Device,
        max: usize,
    ) -> Result<Registered, StoreError> {
        let json = serde_json::to_string(d)?;
        let n: i64 = self
            .client
            .eval(
                REGISTER,
                vec![keys::devices(tenant, user_id), keys::owners(tenant)],
                vec![
                    d.token.clone(),
                    json,
                    max.to_string(),
                    user_id.to_owned(),
                    format!("{}{}", keys::tenant_prefix(tenant), keys::USER_PREFIX),
                    keys::DEVICES_SUFFIX.to_owned(),
                ],
            )
            .await?;
        if n != 1 {
            return Ok(Registered::TooMany);
        }
        let me = Holder {
            tenant: tenant.into(),
            user: user_id.into(),
        };
        let prev: Option<String> = self
            .client
            .set(
                keys::index(d.platform, &d.token),
                serde_json::to_string(&me)?,
                None,
                None,
                true,
            )
            .await?;
        if let Some(prev) = prev.and_then(|p| serde_json::from_str::<Holder>(&p).ok())
            && prev.tenant != tenant
        {
            // The token moved tenants: the old holder loses it.
            self.remove(&prev.tenant, &prev.user, &d.token, None)
                .await?;
        }
        Ok(Registered::Ok)
    }

    async fn unregister(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let removed = self.remove(tenant, user_id, token, None).await?;
        if removed {
            self.unindex(tenant, user_id, token).await?;
        }
        Ok(removed)
    }

    async fn list(&self, tenant: &str, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let all: Vec<String> = self.client.hvals(keys::devices(tenant, user_id)).await?;
        let mut v = all
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<Vec<Device>, _>>()?;
        v.sort_by(|a, b| (a.registered_at, &a.token).cmp(&(b.registered_at, &b.token)));
        Ok(v)
    }

    async fn prune(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
        unless_after: Option<i64>,
    ) -> Result<bool, StoreError> {
        let removed = self
            .remove(tenant, user_id, token, unless_after.or(Some(i64::MAX)))
            .await?;
        if removed {
            self.unindex(tenant, user_id, token).await?;
        }
        Ok(removed)
    }

    async fn email(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.client.get(keys::email(tenant, user_id)).await?)
    }

    async fn set_email(&self, tenant: &str, user_id: &str, email: &str) -> Result<(), StoreError> {
        let _: () = self
            .client
            .set(keys::email(tenant, user_id), email, None, None, false)
            .await?;
        Ok(())
    }

    async fn token_tenant(
        &self,
        platform: Platform,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let v: Option<String> = self.client.get(keys::index(platform, token)).await?;
        Ok(v.and_then(|v| serde_json::from_str::<Holder>(&v).ok())
            .map(|h| h.tenant))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_carry_the_tenant_hash_tag() {
        assert_eq!(
            super::keys::devices("acme", "al"),
            "sb:{acme}:user:al:devices"
        );
        assert_eq!(super::keys::owners("acme"), "sb:{acme}:device-owners");
        assert_eq!(super::keys::email("acme", "al"), "sb:{acme}:user:al:email");
    }
}
