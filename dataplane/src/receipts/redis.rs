//! [`ReceiptStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:receipts:{delivered|read}`: a hash, room id → pointer (decimal).
//! - `sb:{T}:user:{U}:privacy`: the user's [`Privacy`] as JSON; absent means the default.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use fred::types::Value;

use super::{Kind, Privacy, ReceiptStore};
use crate::error::StoreError;

mod keys {
    use super::Kind;

    /// One user's pointers of one kind, field = room id.
    pub fn pointers(tenant: &str, user_id: &str, kind: Kind) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:receipts:{}", kind.as_str())
    }

    /// One user's privacy choices.
    pub fn privacy(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:privacy")
    }
}

/// KEYS: pointers hash. ARGV: room id, up_to (decimal u64).
/// Returns {1, pointer} after moving it to max(current, up_to), or {0, stored} when the
/// stored pointer is not a canonical decimal (nothing written).
/// Decimal strings are compared as strings (length, then bytes) so u64 values beyond
/// what a Lua number holds exactly still compare right.
const ADVANCE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if not (cur == '0' or string.match(cur, '^[1-9]%d*$')) then
    return {0, cur}
  end
  local new = ARGV[2]
  if #new < #cur or (#new == #cur and new <= cur) then
    return {1, cur}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, ARGV[2]}
";

/// KEYS: pointer hashes. ARGV: room id. Removes the room's field from each.
const FORGET: &str = r"
for i = 1, #KEYS do
  redis.call('HDEL', KEYS[i], ARGV[1])
end
return #KEYS
";

/// Users whose pointers one `FORGET` call drops.
const FORGET_BATCH: usize = 500;

pub struct RedisReceipts {
    client: Client,
}

impl RedisReceipts {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected reply {v:?}"))
}

fn opt_string(v: Value, what: &str) -> Result<Option<String>, StoreError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{what}: not UTF-8"))),
        other => Err(corrupt(what, &other)),
    }
}

fn parse_pointer(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("receipt pointer {s:?}")))
}

#[async_trait]
impl ReceiptStore for RedisReceipts {
    async fn advance(
        &self,
        tenant: &str,
        user_id: &str,
        room_id: &str,
        kind: Kind,
        up_to: u64,
    ) -> Result<u64, StoreError> {
        let reply: Value = self
            .client
            .eval(
                ADVANCE,
                vec![keys::pointers(tenant, user_id, kind)],
                vec![room_id.to_owned(), up_to.to_string()],
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("advance", &reply));
        };
        let [ok, pointer]: [Value; 2] = parts.try_into().map_err(|p: Vec<Value>| {
            StoreError::Corrupt(format!("advance: {} reply parts", p.len()))
        })?;
        let pointer = opt_string(pointer, "receipt pointer")?.unwrap_or_default();
        match ok {
            Value::Integer(1) => parse_pointer(&pointer),
            _ => Err(StoreError::Corrupt(format!("receipt pointer {pointer:?}"))),
        }
    }

    async fn pointers(
        &self,
        tenant: &str,
        user_id: &str,
        room_ids: &[String],
        kind: Kind,
    ) -> Result<Vec<u64>, StoreError> {
        if room_ids.is_empty() {
            return Ok(vec![]);
        }
        let v: Value = self
            .client
            .hmget(keys::pointers(tenant, user_id, kind), room_ids.to_vec())
            .await?;
        let items = match v {
            Value::Array(items) => items,
            // fred may hand a one-field reply back unwrapped.
            other if room_ids.len() == 1 => vec![other],
            other => return Err(corrupt("pointers", &other)),
        };
        if items.len() != room_ids.len() {
            return Err(StoreError::Corrupt(format!(
                "{} pointers for {} rooms",
                items.len(),
                room_ids.len()
            )));
        }
        items
            .into_iter()
            .map(|i| match opt_string(i, "receipt pointer")? {
                None => Ok(0),
                Some(s) => parse_pointer(&s),
            })
            .collect()
    }

    async fn forget_room(
        &self,
        tenant: &str,
        room_id: &str,
        user_ids: &[String],
    ) -> Result<(), StoreError> {
        // One round trip per FORGET_BATCH users; a member list can be long.
        for chunk in user_ids.chunks(FORGET_BATCH) {
            let keys: Vec<String> = chunk
                .iter()
                .flat_map(|u| [Kind::Delivered, Kind::Read].map(|k| keys::pointers(tenant, u, k)))
                .collect();
            let _: Value = self
                .client
                .eval(FORGET, keys, vec![room_id.to_owned()])
                .await?;
        }
        Ok(())
    }

    async fn privacy(&self, tenant: &str, user_id: &str) -> Result<Privacy, StoreError> {
        let v: Value = self.client.get(keys::privacy(tenant, user_id)).await?;
        match opt_string(v, "privacy")? {
            None => Ok(Privacy::default()),
            Some(json) => Ok(serde_json::from_str(&json)?),
        }
    }

    async fn set_privacy(
        &self,
        tenant: &str,
        user_id: &str,
        privacy: Privacy,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(&privacy)?;
        let _: Value = self
            .client
            .set(keys::privacy(tenant, user_id), json, None, None, false)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(
            keys::pointers("acme", "alice", Kind::Read),
            "sb:{acme}:user:alice:receipts:read"
        );
        assert_eq!(
            keys::pointers("acme", "alice", Kind::Delivered),
            "sb:{acme}:user:alice:receipts:delivered"
        );
        assert_eq!(
            keys::privacy("acme", "alice"),
            "sb:{acme}:user:alice:privacy"
        );
    }
}
