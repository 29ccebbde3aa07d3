//! [`OnlineStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:conns`: a set of the user's live connections (`node_id/socket_id`).
//!   Redis drops the key with its last member, so "online" is "the key exists".

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{LuaInterface, SetsInterface};
use fred::types::Value;

use super::OnlineStore;
use crate::error::StoreError;

mod keys {
    /// A user's live connections.
    pub fn conns(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:conns")
    }
}

/// KEYS: the users' connection sets. Returns one EXISTS per key, in order.
const EXISTS_EACH: &str = r"
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('EXISTS', KEYS[i])
end
return out
";

pub struct RedisOnline {
    client: Client,
}

impl RedisOnline {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl OnlineStore for RedisOnline {
    async fn connect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError> {
        let _: Value = self.client.sadd(keys::conns(tenant, user_id), conn).await?;
        Ok(())
    }

    async fn disconnect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError> {
        let _: Value = self.client.srem(keys::conns(tenant, user_id), conn).await?;
        Ok(())
    }

    async fn online(&self, tenant: &str, user_ids: &[String]) -> Result<Vec<bool>, StoreError> {
        if user_ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = user_ids.iter().map(|u| keys::conns(tenant, u)).collect();
        let v: Value = self
            .client
            .eval(EXISTS_EACH, keys, Vec::<String>::new())
            .await?;
        let items = match v {
            Value::Array(items) => items,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "online: unexpected reply {other:?}"
                )));
            }
        };
        if items.len() != user_ids.len() {
            return Err(StoreError::Corrupt(format!(
                "online: {} flags for {} users",
                items.len(),
                user_ids.len()
            )));
        }
        items
            .into_iter()
            .map(|i| match i {
                Value::Integer(n) => Ok(n > 0),
                other => Err(StoreError::Corrupt(format!(
                    "online: unexpected flag {other:?}"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(keys::conns("acme", "alice"), "sb:{acme}:user:alice:conns");
    }
}
