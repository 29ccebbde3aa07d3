//! [`DeviceStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:devices`: hash, token → [`Device`] as JSON.
//! - `sb:{T}:device-owners`: hash, token → user id (a token belongs to one user).
//! - `sb:{T}:user:{U}:email`: the user's e-mail address.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};

use super::{Device, DeviceStore, Registered};
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
}

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
        Ok(if n == 1 {
            Registered::Ok
        } else {
            Registered::TooMany
        })
    }

    async fn unregister(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        self.remove(tenant, user_id, token, None).await
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
        self.remove(tenant, user_id, token, unless_after.or(Some(i64::MAX)))
            .await
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
