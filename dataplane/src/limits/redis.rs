//! [`UserBudgets`] on Redis: every node takes from the same budget.
//!
//! - `sb:{T}:rate:{U}:{class}`: the budget's theoretical arrival time (ms, Redis's
//!   clock), expiring when the budget is full again (so only users active within
//!   `burst / rate` seconds have a key).
//!
//! One script per check ([`TAKE`]): read, decide ([`super::gcra`], the same arithmetic),
//! write, in one round trip and atomically, so two nodes taking at once cannot both take
//! the last event. The script reads `TIME` on the Redis server: the nodes' clocks never
//! enter the budget.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::LuaInterface;
use switchboard_crds::config::Bucket;

use super::{Class, UserBudgets};
use crate::error::StoreError;

mod keys {
    /// A user's budget for one event class (the tenant hash tag keeps it in the
    /// tenant's slot).
    pub fn budget(tenant: &str, user_id: &str, class: &str) -> String {
        format!("sb:{{{tenant}}}:rate:{user_id}:{class}")
    }
}

/// KEYS: the budget. ARGV: interval (ms per event, 1000 / rate), burst.
/// Returns 1 when the event is taken, 0 when the budget is spent. GCRA as
/// [`super::gcra`]: `next = max(tat, now) + interval`, allowed while
/// `next - now <= interval * burst`.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > interval * burst + 0.001 then
  return 0
end
redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - now)))
return 1
";

pub struct RedisBudgets {
    client: Client,
}

impl RedisBudgets {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl UserBudgets for RedisBudgets {
    async fn take(
        &self,
        tenant: &str,
        user: &str,
        class: Class,
        b: Bucket,
    ) -> Result<bool, StoreError> {
        let taken: i64 = self
            .client
            .eval(
                TAKE,
                keys::budget(tenant, user, class.name()),
                vec![(1000.0 / b.rate).to_string(), b.burst.to_string()],
            )
            .await?;
        Ok(taken == 1)
    }
}
