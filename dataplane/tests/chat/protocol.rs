//! The client → server events of every namespace and the HTTP routes: the one list that
//! the fuzzers and the cross-tenant matrix walk. `lists_match_the_protocol_and_the_code`
//! (in `fuzz.rs`) compares it with the tables of `dataplane/PROTOCOL.md` and with the
//! events the handlers register, so an event added to either and not here fails a test.

use std::collections::BTreeSet;

pub const CHAT: &[&str] = &[
    "room:create",
    "room:join",
    "room:leave",
    "room:invite",
    "room:members",
    "message:send",
    "message:history",
    "message:delivered",
    "receipt:read",
    "receipt:batch",
    "unread:get",
    "typing:start",
    "typing:stop",
    "typing:get-aggregated",
    "privacy:set",
    "room:delete",
    "message:edit",
    "message:delete",
    "message:react",
    "message:thread",
    "sync:get",
    "room:set-role",
    "room:kick",
    "room:ban",
    "room:unban",
    "room:mute",
    "room:set-slow-mode",
];

pub const PRESENCE: &[&str] = &[
    "presence:set-status",
    "presence:activity",
    "presence:subscribe",
    "presence:unsubscribe",
    "presence:get-batch",
];

pub const WEBRTC: &[&str] = &[
    "webrtc:get-ice-servers",
    "call:initiate",
    "call:answer",
    "call:reject",
    "call:hangup",
    "call:create-group",
    "call:add-participant",
    "call:remove-participant",
    "webrtc:offer",
    "webrtc:answer",
    "webrtc:ice-candidate",
    "call:report-quality",
    "call:history",
];

pub const NOTIFICATIONS: &[&str] = &[
    "notification:register-device",
    "notification:unregister-device",
    "notification:set-preferences",
    "notification:get-preferences",
    "notification:list",
    "notification:mark-read",
];

/// Taken on every namespace (token lifetime).
pub const EVERY_NAMESPACE: &[&str] = &["auth:refresh"];

/// Each namespace with its own events (without [`EVERY_NAMESPACE`]).
pub const NAMESPACES: &[(&str, &[&str])] = &[
    ("/chat", CHAT),
    ("/presence", PRESENCE),
    ("/webrtc", WEBRTC),
    ("/notifications", NOTIFICATIONS),
];

/// Every request event a socket on `ns` takes, [`EVERY_NAMESPACE`] included.
pub fn events(ns: &str) -> Vec<&'static str> {
    let own = NAMESPACES
        .iter()
        .find(|(n, _)| *n == ns)
        .map(|(_, e)| *e)
        .unwrap_or_else(|| panic!("no namespace {ns}"));
    own.iter().chain(EVERY_NAMESPACE).copied().collect()
}

/// Keys the payloads of each namespace use, so random objects often hit a real field.
pub const CHAT_KEYS: &[&str] = &[
    "room_id",
    "name",
    "members",
    "body",
    "client_msg_id",
    "up_to_seq",
    "visibility",
    "user_ids",
    "room_ids",
    "receipts",
    "limit",
    "meta",
    "kind",
    "reply_to",
    "seq",
    "emoji",
    "on",
    "thread_root",
    "root_seq",
    "before_seq",
    "after_seq",
    "user_id",
    "role",
    "reason",
    "until",
    "interval_s",
    "cursor",
    "read_receipts",
    "typing_indicators",
    "token",
];

pub const PRESENCE_KEYS: &[&str] = &["status", "message", "user_ids", "token"];

pub const WEBRTC_KEYS: &[&str] = &[
    "call_id",
    "callee_id",
    "media_type",
    "participant_ids",
    "user_id",
    "to_user_id",
    "sdp",
    "candidate",
    "reason",
    "latency_ms",
    "packet_loss_percentage",
    "jitter_ms",
    "bitrate_kbps",
    "limit",
    "before",
    "before_id",
    "token",
];

pub const NOTIFICATION_KEYS: &[&str] = &[
    "platform",
    "token",
    "app_id",
    "environment",
    "quiet_hours",
    "start",
    "end",
    "timezone",
    "min_priority",
    "types",
    "message",
    "call",
    "mention",
    "system",
    "channels",
    "push",
    "in_app",
    "email",
    "unread_only",
    "limit",
    "ids",
];

/// The payload keys of `ns`'s events.
pub fn keys(ns: &str) -> &'static [&'static str] {
    match ns {
        "/chat" => CHAT_KEYS,
        "/presence" => PRESENCE_KEYS,
        "/webrtc" => WEBRTC_KEYS,
        "/notifications" => NOTIFICATION_KEYS,
        _ => panic!("no namespace {ns}"),
    }
}

/// The HTTP routes of the internal listener besides the probes: (method, path with
/// `{tenant}`-style parameters), as `dataplane/src/http.rs` and
/// `dataplane/src/notifications/api.rs` route them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("POST", "/admin/v1/revocations"),
    ("GET", "/admin/v1/tenants/{tenant}/presence/metrics"),
    ("GET", "/admin/v1/tenants/{tenant}/calls/quality"),
    ("POST", "/api/v1/notifications"),
    ("GET", "/api/v1/tenants/{tenant}/notifications/{id}"),
    ("PUT", "/api/v1/tenants/{tenant}/users/{user}/email"),
];

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The request events `dataplane/PROTOCOL.md`'s "client → server" tables list, as
/// `namespace event` lines.
pub fn documented_events() -> BTreeSet<String> {
    let mut ns = None;
    let mut found = BTreeSet::new();
    // The "Authentication (every namespace)" section's table lists `auth:refresh`, which
    // every namespace has (EVERY_NAMESPACE, checked on its own).
    let mut every = false;
    for line in read("PROTOCOL.md").lines() {
        if line.starts_with('#') {
            ns = NAMESPACES
                .iter()
                .map(|(n, _)| *n)
                .find(|n| line.split_whitespace().any(|w| w == *n));
            every = line.contains("every namespace");
            continue;
        }
        let Some(first_cell) = line.strip_prefix("| `").map(|r| r.split('|').next()) else {
            continue;
        };
        if every {
            continue;
        }
        let ns = ns.unwrap_or_else(|| {
            panic!("PROTOCOL.md: an event table outside a namespace section: {line}")
        });
        for (i, name) in format!("`{}", first_cell.unwrap_or_default())
            .split('`')
            .enumerate()
        {
            if i % 2 == 1 {
                found.insert(format!("{ns} {name}"));
            }
        }
    }
    found
}

/// The events the handlers register: the `"name" => Class, handler;` entries of the
/// `declare_events!` lists in `dataplane/src` (the macro's own file, `contract.rs`, holds
/// only its definition and an example).
pub fn registered_events() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(format!(
        "{}/src",
        env!("CARGO_MANIFEST_DIR")
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.file_name().is_some_and(|n| n == "contract.rs") {
                continue;
            }
            let text: String = std::fs::read_to_string(&path)
                .expect("source")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            for list in text.split("declare_events!{").skip(1) {
                let list = list.split('}').next().unwrap_or_default();
                for entry in list.split(';').skip(1) {
                    if let Some(name) = entry.strip_prefix('"').and_then(|e| e.split('"').next()) {
                        found.insert(name.to_owned());
                    }
                }
            }
        }
    }
    found
}

/// Every listed event, as `namespace event` lines (the shape of [`documented_events`]).
pub fn listed_events() -> BTreeSet<String> {
    NAMESPACES
        .iter()
        .flat_map(|(ns, events)| events.iter().map(move |e| format!("{ns} {e}")))
        .collect()
}
