//! [`PreferenceStore`] on Redis.
//!
//! - `sb:{T}:user:{U}:notify-prefs`: the user's [`Preferences`] as JSON; absent means the defaults.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::KeysInterface;

use super::{PreferenceStore, Preferences};
use crate::error::StoreError;

mod keys {
    pub fn prefs(tenant: &str, user_id: &str) -> String {
        format!("sb:{{{tenant}}}:user:{user_id}:notify-prefs")
    }
}

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
