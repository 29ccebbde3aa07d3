//! The AsyncAPI 3.0 document of the Socket.IO protocol.
//!
//! From the server's point of view: a client → server event is an operation the server
//! `receive`s, with a `reply` (the ack envelope); a server → client event is one it
//! `send`s. Channels are the namespaces; a message's `name` is the Socket.IO event name.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{RequestEvent, Schemas, ServerEvent, VERSION, request_events, server_events};
use crate::error::{AckFailure, Code};

/// Channel id of a namespace: `/chat` → `chat`.
fn channel_id(ns: &str) -> &str {
    ns.trim_start_matches('/')
}

/// Component keys allow `A-Z a-z 0-9 . - _` only: `room:create` → `room.create`.
fn key(name: &str) -> String {
    name.replace(':', ".")
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

/// The ack of a request event: `{ok: true, data}` or `{ok: false, error: {code, message}}`.
fn ack_envelope(data: Value) -> Value {
    json!({
        "oneOf": [
            {
                "type": "object",
                "required": ["ok", "data"],
                "properties": { "ok": { "const": true }, "data": data },
            },
            reference("#/components/schemas/AckFailure"),
        ]
    })
}

/// The AsyncAPI 3.0 document, generated from the registered events' types.
pub fn asyncapi() -> Value {
    let mut schemas = Schemas::new(SchemaSettings::draft07());
    let failure = schemas.ser.subschema_for::<AckFailure>();
    debug_assert_eq!(
        failure.as_value()["$ref"],
        "#/components/schemas/AckFailure"
    );
    let requests = request_events();
    let events = server_events();

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for ns in super::NAMESPACES {
        let ch = channel_id(ns);
        let mut ch_messages = Map::new();
        for e in requests.iter().filter(|e| e.ns == ns) {
            add_request(
                e,
                &mut schemas,
                &mut ch_messages,
                &mut operations,
                &mut messages,
            );
        }
        for e in events.iter().filter(|e| e.ns == ns) {
            add_server_event(
                e,
                &mut schemas,
                &mut ch_messages,
                &mut operations,
                &mut messages,
            );
        }
        channels.insert(
            ch.to_owned(),
            json!({
                "address": ns,
                "title": ns,
                "description": format!("The Socket.IO namespace `{ns}`. Every request event is answered through its ack callback (the operation's reply)."),
                "messages": ch_messages,
            }),
        );
    }

    let codes: Vec<Value> = Code::ALL
        .iter()
        .map(|c| json!({ "code": c.as_str(), "meaning": c.meaning() }))
        .collect();
    let mut doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchboard client protocol",
            "version": VERSION,
            "description": "Socket.IO v4 (Engine.IO 4) events of a Switchboard node, path `/socket.io/`, WebSocket or HTTP long-polling. Authenticate with `auth: {token: \"<JWT>\"}` in the handshake (or `Authorization: Bearer <JWT>`); a refusal is a `connect_error` whose message starts with `unauthorized`, `token_expired`, `token_revoked`, `tenant_required` or `too_many_connections`. The prose contract, with every rule and limit, is dataplane/PROTOCOL.md; the HTTP APIs are in dataplane/openapi.yaml.",
            "x-error-codes": codes,
        },
        "defaultContentType": "application/json",
        "servers": {
            "node": {
                "host": "localhost:3000",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "A socket node (`switchboard serve`); long-polling uses http on the same path.",
                "security": [reference("#/components/securitySchemes/jwt")],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "securitySchemes": {
                "jwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Handshake `auth.token` or the `Authorization: Bearer` header. Claims: `sub`, `tenant`, `exp`; optional `name`, `jti`, `sid`, `email`.",
                }
            },
        },
    });
    schemas.finish(&mut doc);
    doc
}

fn add_request(
    e: &RequestEvent,
    schemas: &mut Schemas,
    ch_messages: &mut Map<String, Value>,
    operations: &mut Map<String, Value>,
    messages: &mut Map<String, Value>,
) {
    let ch = channel_id(e.ns);
    let (k, ack_k) = (key(e.name), format!("{}.ack", key(e.name)));
    let (msg_id, ack_id) = (format!("{ch}.{k}"), format!("{ch}.{ack_k}"));
    let request = (e.request)(&mut schemas.de);
    let ack = (e.ack)(&mut schemas.ser);
    messages.insert(
        msg_id.clone(),
        json!({
            "name": e.name,
            "title": format!("{} request", e.name),
            "payload": request.to_value(),
            "x-rate-class": e.class.name(),
        }),
    );
    messages.insert(
        ack_id.clone(),
        json!({
            "name": e.name,
            "title": format!("{} ack", e.name),
            "payload": ack_envelope(ack.to_value()),
        }),
    );
    ch_messages.insert(
        k.clone(),
        reference(&format!("#/components/messages/{msg_id}")),
    );
    ch_messages.insert(
        ack_k.clone(),
        reference(&format!("#/components/messages/{ack_id}")),
    );
    operations.insert(
        format!("{ch}.{k}"),
        json!({
            "action": "receive",
            "title": e.name,
            "summary": format!("Client → server `{}` (rate class `{}`), answered through the ack.", e.name, e.class.name()),
            "channel": reference(&format!("#/channels/{ch}")),
            "messages": [reference(&format!("#/channels/{ch}/messages/{k}"))],
            "reply": {
                "channel": reference(&format!("#/channels/{ch}")),
                "messages": [reference(&format!("#/channels/{ch}/messages/{ack_k}"))],
            },
        }),
    );
}

fn add_server_event(
    e: &ServerEvent,
    schemas: &mut Schemas,
    ch_messages: &mut Map<String, Value>,
    operations: &mut Map<String, Value>,
    messages: &mut Map<String, Value>,
) {
    let ch = channel_id(e.ns);
    let k = key(e.name);
    // A server event may share its name with a request (`receipt:read`, `webrtc:offer`).
    let (ch_k, msg_id) = (format!("{k}.event"), format!("{ch}.{k}.event"));
    let payload = (e.payload)(&mut schemas.ser);
    messages.insert(
        msg_id.clone(),
        json!({
            "name": e.name,
            "title": format!("{} event", e.name),
            "summary": e.summary,
            "payload": payload.to_value(),
        }),
    );
    ch_messages.insert(
        ch_k.clone(),
        reference(&format!("#/components/messages/{msg_id}")),
    );
    operations.insert(
        format!("{ch}.{k}.event"),
        json!({
            "action": "send",
            "title": e.name,
            "summary": e.summary,
            "channel": reference(&format!("#/channels/{ch}")),
            "messages": [reference(&format!("#/channels/{ch}/messages/{ch_k}"))],
        }),
    );
}
