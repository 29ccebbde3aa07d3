//! The device registry: push tokens (FCM or APNs) per user, with the app they belong to
//! and, for APNs, the environment. A token belongs to one user of one tenant at a time:
//! registering it for another user, in this tenant or another, moves it. A global index
//! (platform + token → tenant, user) records the holder; the sender skips a token that
//! index gives to another tenant, so a phone that moved tenants never gets the old
//! tenant's pushes.

pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Devices one user may register.
pub const MAX_DEVICES_PER_USER: usize = 20;
/// Longest accepted token (FCM tokens are ~160 characters, APNs 64 hex digits).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest `app_id` (an Android package, an iOS bundle id or an FCM topic-like name).
pub const MAX_APP_ID_LEN: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }
}

/// APNs environment of a device token (a sandbox token is refused by production).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Sandbox,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Device {
    pub platform: Platform,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// When this token was (last) registered, ms since epoch. APNs' 410 prunes a token
    /// only when it was registered before the reported time.
    pub registered_at: i64,
}

/// `notification:register-device`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub platform: Platform,
    pub token: String,
    pub app_id: Option<String>,
    pub environment: Option<Environment>,
}

impl Registration {
    /// Check the fields and make the device.
    pub fn into_device(self, now_ms: i64) -> Result<Device, String> {
        let t = &self.token;
        if t.is_empty()
            || t.len() > MAX_TOKEN_LEN
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "token must be 1-{MAX_TOKEN_LEN} characters without spaces"
            ));
        }
        if self.platform == Platform::Apns
            && !(t.len() >= 32 && t.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err("an APNs token is a hexadecimal string (64 digits)".into());
        }
        if let Some(a) = &self.app_id
            && (a.is_empty()
                || a.len() > MAX_APP_ID_LEN
                || !a
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(format!(
                "app_id must be 1-{MAX_APP_ID_LEN} characters of A-Z a-z 0-9 - _ ."
            ));
        }
        if self.platform == Platform::Fcm && self.environment.is_some() {
            return Err("environment applies to APNs devices only".into());
        }
        Ok(Device {
            platform: self.platform,
            token: self.token,
            app_id: self.app_id,
            environment: self.environment,
            registered_at: now_ms,
        })
    }
}

/// What registering did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    Ok,
    /// The user already holds [`MAX_DEVICES_PER_USER`] other devices.
    TooMany,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Register (or refresh) a device; the token leaves any other user, of this tenant
    /// or another.
    async fn register(
        &self,
        tenant: &str,
        user_id: &str,
        d: &Device,
        max: usize,
    ) -> Result<Registered, StoreError>;
    /// Remove a token from the user's devices; false when the user did not have it.
    async fn unregister(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
    ) -> Result<bool, StoreError>;
    async fn list(&self, tenant: &str, user_id: &str) -> Result<Vec<Device>, StoreError>;
    /// Remove a token the provider called dead, unless it was registered again after
    /// `unless_after` (ms); true when removed.
    async fn prune(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
        unless_after: Option<i64>,
    ) -> Result<bool, StoreError>;
    /// The user's known e-mail address (from a token's `email` claim), if any.
    async fn email(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError>;
    async fn set_email(&self, tenant: &str, user_id: &str, email: &str) -> Result<(), StoreError>;
    /// The tenant the global index says holds this token, if any.
    async fn token_tenant(
        &self,
        platform: Platform,
        token: &str,
    ) -> Result<Option<String>, StoreError>;
}

/// Should a prune remove a device registered at `registered_at`?
pub fn prunable(registered_at: i64, unless_after: Option<i64>) -> bool {
    unless_after.is_none_or(|t| registered_at <= t)
}

// === impl MemoryDevices ===

#[derive(Default)]
pub struct MemoryDevices {
    /// (tenant, user) → devices.
    devices: Mutex<HashMap<(String, String), Vec<Device>>>,
    /// (platform, token) → (tenant, user): the global index.
    index: Mutex<HashMap<(Platform, String), (String, String)>>,
    emails: Mutex<HashMap<(String, String), String>>,
}

impl MemoryDevices {
    /// Drop the index entry of a token when it names this tenant and user.
    fn unindex(&self, tenant: &str, user_id: &str, token: &str) {
        let mut idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        idx.retain(|(_, t), (it, iu)| !(t == token && it == tenant && iu == user_id));
    }
}

#[async_trait]
impl DeviceStore for MemoryDevices {
    async fn register(
        &self,
        tenant: &str,
        user_id: &str,
        d: &Device,
        max: usize,
    ) -> Result<Registered, StoreError> {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let mine = all.get(&(tenant.into(), user_id.into()));
        let held = mine.map_or(0, |v| v.iter().filter(|x| x.token != d.token).count());
        if held >= max {
            return Ok(Registered::TooMany);
        }
        for v in all.values_mut() {
            v.retain(|x| x.token != d.token);
        }
        all.entry((tenant.into(), user_id.into()))
            .or_default()
            .push(d.clone());
        self.index.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (d.platform, d.token.clone()),
            (tenant.into(), user_id.into()),
        );
        Ok(Registered::Ok)
    }

    async fn unregister(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = all.get_mut(&(tenant.into(), user_id.into())) else {
            return Ok(false);
        };
        let before = v.len();
        v.retain(|x| x.token != token);
        let removed = v.len() != before;
        drop(all);
        if removed {
            self.unindex(tenant, user_id, token);
        }
        Ok(removed)
    }

    async fn list(&self, tenant: &str, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        Ok(all
            .get(&(tenant.into(), user_id.into()))
            .cloned()
            .unwrap_or_default())
    }

    async fn prune(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
        unless_after: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = all.get_mut(&(tenant.into(), user_id.into())) else {
            return Ok(false);
        };
        let before = v.len();
        v.retain(|x| !(x.token == token && prunable(x.registered_at, unless_after)));
        let removed = v.len() != before;
        drop(all);
        if removed {
            self.unindex(tenant, user_id, token);
        }
        Ok(removed)
    }

    async fn email(&self, tenant: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        let e = self.emails.lock().unwrap_or_else(|e| e.into_inner());
        Ok(e.get(&(tenant.into(), user_id.into())).cloned())
    }

    async fn set_email(&self, tenant: &str, user_id: &str, email: &str) -> Result<(), StoreError> {
        let mut e = self.emails.lock().unwrap_or_else(|e| e.into_inner());
        e.insert((tenant.into(), user_id.into()), email.into());
        Ok(())
    }

    async fn token_tenant(
        &self,
        platform: Platform,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        Ok(idx
            .get(&(platform, token.to_owned()))
            .map(|(t, _)| t.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mk_reg(platform: Platform, token: &str) -> Registration {
        Registration {
            platform,
            token: token.into(),
            app_id: None,
            environment: None,
        }
    }

    #[test]
    fn registrations_are_checked() {
        assert!(mk_reg(Platform::Fcm, "abc:def-1").into_device(1).is_ok());
        assert!(mk_reg(Platform::Fcm, "").into_device(1).is_err());
        assert!(mk_reg(Platform::Fcm, "a b").into_device(1).is_err());
        assert!(mk_reg(Platform::Apns, "not-hex").into_device(1).is_err());
        assert!(
            mk_reg(Platform::Apns, &"ab".repeat(32))
                .into_device(1)
                .is_ok()
        );
        let mut r = mk_reg(Platform::Fcm, "t");
        r.environment = Some(Environment::Sandbox);
        assert!(r.into_device(1).is_err());
        let mut r = mk_reg(Platform::Fcm, "t");
        r.app_id = Some("com.example/app".into());
        assert!(r.into_device(1).is_err());
    }

    #[test]
    fn a_prune_spares_a_device_registered_after_the_reported_time() {
        assert!(prunable(100, None));
        assert!(prunable(100, Some(100)));
        assert!(prunable(100, Some(200)));
        assert!(!prunable(300, Some(200)));
    }
}
