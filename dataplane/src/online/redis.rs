//! [`OnlineStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:conns`: a set of the user's live connections (`node_id/socket_id`).
//!   Redis drops the key with its last member, so "online" is "the key exists".
//! - `sb:node:{N}:online`: set of `tenant|user|conn` held by node N, so a dead node's
//!   entries can be swept; the node joins `sb:nodes` ([`crate::redis::NODES`]), whose dead
//!   members the presence sweep visits. Node keys are cluster-wide, not tenant data.

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
    /// A node's entries, as `tenant|user|conn`.
    pub fn node(node: &str) -> String {
        format!("sb:node:{node}:online")
    }
}

/// KEYS: the user's set, the node's index, the nodes set. ARGV: conn, index member, node.
const CONNECT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
";

/// KEYS: the user's set, the node's index. ARGV: conn, index member.
const DISCONNECT: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// Entries of a node's index swept per round trip.
const SWEEP_BATCH: usize = 500;

fn index_member(tenant: &str, user_id: &str, conn: &str) -> String {
    format!("{tenant}|{user_id}|{conn}")
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
        let node = super::node_of(conn);
        let _: Value = self
            .client
            .eval(
                CONNECT,
                vec![
                    keys::conns(tenant, user_id),
                    keys::node(node),
                    crate::redis::NODES.to_owned(),
                ],
                vec![
                    conn.to_owned(),
                    index_member(tenant, user_id, conn),
                    node.to_owned(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn disconnect(&self, tenant: &str, user_id: &str, conn: &str) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .eval(
                DISCONNECT,
                vec![
                    keys::conns(tenant, user_id),
                    keys::node(super::node_of(conn)),
                ],
                vec![conn.to_owned(), index_member(tenant, user_id, conn)],
            )
            .await?;
        Ok(())
    }

    async fn sweep_node(&self, node: &str) -> Result<usize, StoreError> {
        let mut swept = 0;
        loop {
            // An entry leaves the index with its flag, so a sweep that stops half way
            // (Redis gone) resumes at the next dead-node round.
            let batch: Vec<String> = self
                .client
                .srandmember(keys::node(node), Some(SWEEP_BATCH))
                .await?;
            if batch.is_empty() {
                return Ok(swept);
            }
            let pipe = self.client.pipeline();
            for m in &batch {
                let mut p = m.splitn(3, '|');
                let (Some(t), Some(u), Some(conn)) = (p.next(), p.next(), p.next()) else {
                    tracing::warn!(entry = %m, "malformed online index entry dropped");
                    continue;
                };
                let _: () = pipe.srem(keys::conns(t, u), conn).await?;
            }
            let _: () = pipe.srem(keys::node(node), batch.clone()).await?;
            let _: Vec<Value> = pipe.all().await?;
            swept += batch.len();
        }
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
