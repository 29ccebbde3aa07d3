//! [`PreferenceStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:notify-prefs`: the user's [`Preferences`] as JSON; absent means the defaults.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface};

use super::{PreferenceStore, Preferences};
use crate::error::StoreError;

mod keys {
    pub fn prefs(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:notify-prefs")
    }
}

/// Rounds of read-change-write before an update gives up (each lost only to a concurrent
/// write of the same user's preferences).
pub const MAX_UPDATE_ROUNDS: usize = 8;

/// KEYS: prefs. ARGV: expected JSON ('' = absent), new JSON. 1 written, 0 changed since.
const REPLACE: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
";

pub struct RedisPreferences {
    client: Client,
}

impl RedisPreferences {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl PreferenceStore for RedisPreferences {
    async fn get(&self, tenant: &str, user_id: &str) -> Result<Preferences, StoreError> {
        let v: Option<String> = self.client.get(keys::prefs(tenant, user_id)).await?;
        match v {
            None => Ok(Preferences::default()),
            Some(json) => Ok(serde_json::from_str(&json)?),
        }
    }

    async fn put(&self, tenant: &str, user_id: &str, p: &Preferences) -> Result<(), StoreError> {
        let json = serde_json::to_string(p)?;
        let _: () = self
            .client
            .set(keys::prefs(tenant, user_id), json, None, None, false)
            .await?;
        Ok(())
    }

    /// Compare-and-set on the stored JSON, retried while another write got in between.
    async fn update(
        &self,
        tenant: &str,
        user_id: &str,
        f: &(dyn Fn(Preferences) -> Result<Preferences, String> + Send + Sync),
    ) -> Result<Result<Preferences, String>, StoreError> {
        let key = keys::prefs(tenant, user_id);
        for _ in 0..MAX_UPDATE_ROUNDS {
            let raw: Option<String> = self.client.get(&key).await?;
            let cur = match &raw {
                None => Preferences::default(),
                Some(json) => serde_json::from_str(json)?,
            };
            let new = match f(cur) {
                Ok(p) => p,
                Err(why) => return Ok(Err(why)),
            };
            let written: i64 = self
                .client
                .eval(
                    REPLACE,
                    vec![key.clone()],
                    vec![raw.unwrap_or_default(), serde_json::to_string(&new)?],
                )
                .await?;
            if written == 1 {
                return Ok(Ok(new));
            }
        }
        Err(StoreError::Unavailable(format!(
            "preferences of {user_id} changed {MAX_UPDATE_ROUNDS} times during one update"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_carries_the_tenant_hash_tag() {
        assert_eq!(
            super::keys::prefs("acme", "al"),
            "sb:{acme}:user:al:notify-prefs"
        );
    }
}
