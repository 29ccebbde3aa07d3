//! The slice of Engine.IO v4 / Socket.IO v4 a load client needs, over WebSocket text
//! frames only: parse what the server sends, format what the client sends.
//!
//! ```text
//!  server → client                         client → server
//!  0{"sid":..,"pingInterval":..}  open     40/chat,{"token":".."}        connect
//!  2                              ping     3                             pong
//!  40/chat,{"sid":".."}           connect  42/chat,7["message:send",{}]  event + ack id
//!  44/chat,{"message":".."}       refused
//!  42/chat,["message:new",{..}]   event
//!  43/chat,7[{"ok":true,..}]      ack
//! ```

/// One decoded text frame. Payloads borrow from the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO open (`0{...}`).
    Open,
    /// Engine.IO ping: answer [`PONG`].
    Ping,
    /// Engine.IO close.
    Close,
    /// Socket.IO connect accepted in our namespace.
    Connected,
    /// Socket.IO connect refused: the JSON error object.
    ConnectError(&'a str),
    /// Socket.IO event in our namespace: the JSON array `["name", data..]`.
    Event(&'a str),
    /// Socket.IO ack for our request `id`: the JSON array of arguments.
    Ack { id: u64, args: &'a str },
    /// Socket.IO disconnect from the namespace.
    Disconnect,
    /// Anything else (other namespace, noop, binary placeholders).
    Other,
}

/// Engine.IO pong, the answer to a ping.
pub const PONG: &str = "3";

/// Decode a text frame for namespace `ns` (e.g. `/chat`).
pub fn parse<'a>(frame: &'a str, ns: &str) -> Packet<'a> {
    let mut chars = frame.as_bytes().iter();
    match chars.next() {
        Some(b'0') => return Packet::Open,
        Some(b'1') => return Packet::Close,
        Some(b'2') => return Packet::Ping,
        Some(b'4') => {}
        _ => return Packet::Other,
    }
    let Some(&kind) = chars.next() else {
        return Packet::Other;
    };
    let rest = &frame[2..];
    // The namespace prefix `/chat,` (absent for the main namespace `/`).
    let rest = if ns == "/" {
        rest
    } else {
        match rest.strip_prefix(ns).and_then(|r| r.strip_prefix(',')) {
            Some(r) => r,
            None if rest.starts_with('/') => return Packet::Other,
            None => return Packet::Other,
        }
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, body) = rest.split_at(digits);
    match kind {
        b'0' => Packet::Connected,
        b'1' => Packet::Disconnect,
        b'2' => Packet::Event(body),
        b'3' => match id.parse() {
            Ok(id) => Packet::Ack { id, args: body },
            Err(_) => Packet::Other,
        },
        b'4' => Packet::ConnectError(body),
        _ => Packet::Other,
    }
}

/// The name of an event array `["name", ...]`, without unescaping (names are plain).
pub fn event_name(args: &str) -> Option<&str> {
    let rest = args.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The stamp a load sender put in a message body, `"<send µs since the epoch>:<sender
/// connection index>"`: digits only, so the first `"body":"` of the frame is enough.
pub fn body_stamp(args: &str) -> Option<(u64, usize)> {
    const KEY: &str = "\"body\":\"";
    let at = args.find(KEY)? + KEY.len();
    let rest = &args[at..];
    let end = rest.find('"')?;
    let (us, idx) = rest[..end].split_once(':')?;
    Some((us.parse().ok()?, idx.parse().ok()?))
}

/// The body [`body_stamp`] reads.
pub fn stamp(us: u64, idx: usize) -> String {
    format!("{us}:{idx}")
}

/// Whether an ack's arguments say `ok: true` (the envelope `{ok, data | error}`; the
/// key may come first or last, as the server orders it).
pub fn ack_ok(args: &str) -> bool {
    args.contains("\"ok\":true")
}

/// The error code of a refused ack (`"code":"not_found"` → `not_found`).
pub fn ack_code(args: &str) -> Option<&str> {
    const KEY: &str = "\"code\":\"";
    let at = args.find(KEY)? + KEY.len();
    let rest = &args[at..];
    Some(&rest[..rest.find('"')?])
}

/// Socket.IO connect to `ns` with a handshake `auth: {token}`.
pub fn connect(ns: &str, token: &str) -> String {
    format!("40{ns},{}", serde_json::json!({ "token": token }))
}

/// Socket.IO event with an ack id: `42/chat,7["name",data]`.
pub fn emit(ns: &str, id: u64, event: &str, data: &str) -> String {
    format!("42{ns},{id}[\"{event}\",{data}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frames_a_chat_client_sees() {
        assert_eq!(parse("0{\"sid\":\"x\"}", "/chat"), Packet::Open);
        assert_eq!(parse("2", "/chat"), Packet::Ping);
        assert_eq!(
            parse("40/chat,{\"sid\":\"abc\"}", "/chat"),
            Packet::Connected
        );
        assert_eq!(
            parse("44/chat,{\"message\":\"unauthorized: bad\"}", "/chat"),
            Packet::ConnectError("{\"message\":\"unauthorized: bad\"}")
        );
        assert_eq!(
            parse("42/chat,[\"message:new\",{}]", "/chat"),
            Packet::Event("[\"message:new\",{}]")
        );
        assert_eq!(
            parse("43/chat,17[{\"ok\":true}]", "/chat"),
            Packet::Ack {
                id: 17,
                args: "[{\"ok\":true}]"
            }
        );
        assert_eq!(parse("42/presence,[\"x\"]", "/chat"), Packet::Other);
        assert_eq!(parse("41/chat,", "/chat"), Packet::Disconnect);
        assert_eq!(parse("6", "/chat"), Packet::Other);
    }

    #[test]
    fn reads_event_names_bodies_and_ack_envelopes() {
        let ev = r#"["message:new",{"message":{"id":"m","room_id":"r","seq":3,"sender_id":"u0","body":"1700000000123456:42","ts":1}}]"#;
        assert_eq!(event_name(ev), Some("message:new"));
        assert_eq!(body_stamp(ev), Some((1_700_000_000_123_456, 42)));
        assert_eq!(stamp(5, 6), "5:6");
        assert!(ack_ok(r#"[{"ok":true,"data":{"room":{}}}]"#));
        assert!(ack_ok(r#"[{"data":{"room":{"id":"r1"}},"ok":true}]"#));
        let refused = r#"[{"ok":false,"error":{"code":"not_found","message":"no room"}}]"#;
        assert!(!ack_ok(refused));
        assert_eq!(ack_code(refused), Some("not_found"));
    }

    #[test]
    fn formats_connect_and_events() {
        assert_eq!(connect("/chat", "t.k.n"), r#"40/chat,{"token":"t.k.n"}"#);
        assert_eq!(
            emit("/chat", 5, "room:join", r#"{"room_id":"r1"}"#),
            r#"42/chat,5["room:join",{"room_id":"r1"}]"#
        );
    }
}
