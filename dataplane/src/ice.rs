//! ICE servers for `webrtc:get-ice-servers`: the configured STUN URLs, and TURN URLs with
//! short-lived credentials of the TURN REST API, as coturn's `use-auth-secret` checks them:
//!
//! ```text
//! username   = "<expiry-unix-seconds>:<user_id>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! Credentials are always signed with the current secret. coturn is configured with both
//! the current and the previous secret (`static-auth-secret` twice), so credentials handed
//! out before a rotation keep working until they expire: a rotation drops no call.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// One entry of RTCConfiguration.iceServers.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What the ack carries: the servers and how long the credentials last, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    pub ttl: u64,
}

/// TURN REST credentials for `user_id`, valid until `now_secs + ttl`.
pub fn turn_credentials(
    secret: &str,
    user_id: &str,
    now_secs: u64,
    ttl: Duration,
) -> (String, String) {
    let username = format!("{}:{user_id}", now_secs.saturating_add(ttl.as_secs()));
    // HMAC accepts keys of any length; the error arm cannot happen, and a wrong key would
    // only give a credential coturn refuses, never a crash.
    let credential = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, credential)
}

/// The servers for one user: STUN without credentials, TURN with fresh ones when a
/// secret is configured (TURN URLs without a secret are left out: they could not work).
pub fn ice_servers(
    stun_urls: &[String],
    turn_urls: &[String],
    turn_secret: Option<&str>,
    ttl: Duration,
    user_id: &str,
    now_secs: u64,
) -> IceServers {
    let mut servers = Vec::new();
    if !stun_urls.is_empty() {
        servers.push(IceServer {
            urls: stun_urls.to_vec(),
            username: None,
            credential: None,
        });
    }
    if let Some(secret) = turn_secret.filter(|s| !s.is_empty())
        && !turn_urls.is_empty()
    {
        let (username, credential) = turn_credentials(secret, user_id, now_secs, ttl);
        servers.push(IceServer {
            urls: turn_urls.to_vec(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    IceServers {
        ice_servers: servers,
        ttl: ttl.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_the_turn_rest_api() {
        // Reference value computed independently:
        // printf '1700086400:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let (user, pass) =
            turn_credentials("north", "alice", 1_700_000_000, Duration::from_secs(86_400));
        assert_eq!(user, "1700086400:alice");
        assert_eq!(pass, "SXua5ne/+mDhiHTp0pQJzRO4ESg=");
    }

    #[test]
    fn turn_needs_a_secret_and_stun_needs_none() {
        let stun = vec!["stun:127.0.0.1:3478".to_owned()];
        let turn = vec!["turn:127.0.0.1:3478".to_owned()];
        let s = ice_servers(&stun, &turn, None, Duration::from_secs(60), "bob", 10);
        assert_eq!(s.ice_servers.len(), 1);
        assert!(s.ice_servers[0].username.is_none());
        let s = ice_servers(&stun, &turn, Some("k"), Duration::from_secs(60), "bob", 10);
        assert_eq!(s.ice_servers.len(), 2);
        assert_eq!(s.ice_servers[1].username.as_deref(), Some("70:bob"));
        assert_eq!(s.ttl, 60);
    }
}
