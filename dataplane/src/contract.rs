//! The machine-readable contract: an AsyncAPI 3.0 document of every namespace, event,
//! payload, ack and error code, and an OpenAPI 3.1 document of the HTTP APIs, both made
//! from the Rust types the handlers decode and answer with (through `schemars`).
//!
//! ```text
//!  chat / presence / webrtc / notifications ── request_events!{..} ──▶ register_events (handler::on)
//!                                                                  └─▶ request_events() ─┐
//!  server_events() (payload types the emitters use) ───────────────────────────────────┼─▶ asyncapi()
//!  http routes' request/response types ─────────────────────────────────────────────────┴─▶ openapi()
//! ```
//!
//! One list per namespace serves both the registration and the document, and each
//! entry's request and ack types are inferred from the handler's own signature, so the
//! document cannot name a type the handler does not use. `switchboard contract asyncapi`
//! and `switchboard contract openapi` print them; `dataplane/tests/contract.rs` fails when
//! the committed `dataplane/asyncapi.yaml` / `dataplane/openapi.yaml` differ.

mod asyncapi;
mod openapi;

use std::future::Future;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::Value;
use socketioxide::adapter::LocalAdapter;

use crate::error::AckError;
use crate::handler::Cx;
use crate::limits::Class;

pub use asyncapi::asyncapi;
pub use openapi::openapi;

/// Where the committed documents live, relative to the repository root, and the command
/// that writes them.
pub const ASYNCAPI_PATH: &str = "dataplane/asyncapi.yaml";
pub const OPENAPI_PATH: &str = "dataplane/openapi.yaml";
pub const REGENERATE: &str = "cargo run -p switchboard-dataplane --bin switchboard -- contract asyncapi --out dataplane/asyncapi.yaml && cargo run -p switchboard-dataplane --bin switchboard -- contract openapi --out dataplane/openapi.yaml";

/// The contract version the documents carry (PROTOCOL.md's title).
pub const VERSION: &str = "1.1.0";

/// Where schemas go in both documents.
const DEFS: &str = "/components/schemas";

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// A client → server event with an ack.
#[derive(Clone, Copy)]
pub struct RequestEvent {
    pub ns: &'static str,
    pub name: &'static str,
    pub class: Class,
    request: SchemaFn,
    ack: SchemaFn,
}

impl RequestEvent {
    /// The entry of a handler: its request and ack types come from its signature.
    pub fn of<Req, Resp, F, Fut>(ns: &'static str, name: &'static str, class: Class, _f: F) -> Self
    where
        Req: JsonSchema,
        Resp: JsonSchema,
        F: Fn(Cx<LocalAdapter>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, AckError>>,
    {
        Self {
            ns,
            name,
            class,
            request: schema_of::<Req>,
            ack: schema_of::<Resp>,
        }
    }
}

/// A server → client event.
#[derive(Clone, Copy)]
pub struct ServerEvent {
    pub ns: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
    payload: SchemaFn,
}

impl ServerEvent {
    pub fn of<T: JsonSchema>(ns: &'static str, name: &'static str, summary: &'static str) -> Self {
        Self {
            ns,
            name,
            summary,
            payload: schema_of::<T>,
        }
    }
}

/// The four namespaces, in the order the documents list them.
pub const NAMESPACES: [&str; 4] = ["/chat", "/presence", "/webrtc", "/notifications"];

/// Every request event of every namespace, as registered.
pub fn request_events() -> Vec<RequestEvent> {
    let mut all = Vec::new();
    for ns in NAMESPACES {
        all.extend(crate::handler::request_events(ns));
    }
    all.extend(crate::chat::request_events());
    all.extend(crate::presence::events::request_events());
    all.extend(crate::webrtc::request_events());
    all.extend(crate::notifications::events::request_events());
    all
}

/// Every server → client event of every namespace.
pub fn server_events() -> Vec<ServerEvent> {
    let mut all = Vec::new();
    for ns in NAMESPACES {
        all.extend(crate::auth::lifetime::server_events(ns));
        all.extend(crate::drain::server_events(ns));
    }
    all.extend(crate::chat::server_events());
    all.extend(crate::presence::events::server_events());
    all.extend(crate::webrtc::server_events());
    all.extend(crate::notifications::events::server_events());
    all
}

/// Schemas for both directions: requests as they are decoded, answers and events as they
/// are serialized (a field left out when empty is optional there, not required).
///
/// Two generators name their types independently, so request-side schemas are first
/// written under a path of their own and moved into `components/schemas` by [`finish`]:
/// under the same name when the answer side has none or the same schema, else as
/// `<Name>Input`.
///
/// [`finish`]: Schemas::finish
struct Schemas {
    de: SchemaGenerator,
    ser: SchemaGenerator,
}

/// Where request-side schemas wait until [`Schemas::finish`].
const DE_DEFS: &str = "/components/x-request-schemas";

impl Schemas {
    fn new(settings: SchemaSettings) -> Self {
        Self {
            de: settings
                .clone()
                .with(|s| s.definitions_path = DE_DEFS.into())
                .for_deserialize()
                .into_generator(),
            ser: settings
                .with(|s| s.definitions_path = DEFS.into())
                .for_serialize()
                .into_generator(),
        }
    }

    /// Put every named schema, sorted by name, into `doc`'s `components.schemas`, and
    /// point the request side's references at them.
    fn finish(mut self, doc: &mut Value) {
        let mut out = self.ser.take_definitions(true);
        let de = self.de.take_definitions(true);
        // Names first (a request schema may refer to another one), then the schemas.
        let mut names = std::collections::BTreeMap::new();
        for (name, schema) in &de {
            let taken = out.get(name).is_some_and(|other| other != schema);
            let target = if taken {
                format!("{name}Input")
            } else {
                name.clone()
            };
            names.insert(name.clone(), target);
        }
        for (name, mut schema) in de {
            retarget(&mut schema, &names);
            out.insert(names[&name].clone(), schema);
        }
        retarget(doc, &names);
        let mut sorted: Vec<(String, Value)> = out.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        doc["components"]["schemas"] = Value::Object(sorted.into_iter().collect());
    }
}

/// Point every `$ref` into [`DE_DEFS`] at the schema's final name.
fn retarget(v: &mut Value, names: &std::collections::BTreeMap<String, String>) {
    let prefix = format!("#{DE_DEFS}/");
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(r) if k == "$ref" => {
                        if let Some(name) = r.strip_prefix(&prefix) {
                            let name = names.get(name).map_or(name, String::as_str);
                            *r = format!("#{DEFS}/{name}");
                        }
                    }
                    _ => retarget(child, names),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| retarget(i, names)),
        _ => {}
    }
}

/// Render a document as YAML, with a header naming its source and the command.
pub fn to_yaml(doc: &Value) -> String {
    let body = serde_yaml::to_string(doc).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!(
        "# Generated from the Rust request and response types (dataplane/src/contract.rs).\n# Do not edit by hand; regenerate with:\n#   {REGENERATE}\n{body}"
    )
}

/// Declare a namespace's request events once: this makes `register_events` (run at
/// admission) and `request_events` (for the documents) from the same list.
///
/// ```ignore
/// declare_events! { CHAT;
///     "room:create" => Room, room_create;
/// }
/// ```
macro_rules! declare_events {
    ($ns:expr; $( $name:literal => $class:ident, $($f:ident)::+ ;)*) => {
        /// Register this namespace's request events on a socket being admitted.
        fn register_events<A: socketioxide::adapter::Adapter>(s: &socketioxide::extract::SocketRef<A>) {
            $( $crate::handler::on(s, $name, $crate::limits::Class::$class, $($f)::+::<A>); )*
        }

        /// This namespace's request events, as registered, for the contract documents.
        pub fn request_events() -> Vec<$crate::contract::RequestEvent> {
            vec![$(
                $crate::contract::RequestEvent::of(
                    $ns,
                    $name,
                    $crate::limits::Class::$class,
                    $($f)::+::<socketioxide::adapter::LocalAdapter>,
                ),
            )*]
        }
    };
}
pub(crate) use declare_events;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_listed_once_per_namespace() {
        let mut seen = std::collections::BTreeSet::new();
        for e in request_events() {
            assert!(
                seen.insert((e.ns, e.name, "req")),
                "{} {} twice",
                e.ns,
                e.name
            );
        }
        for e in server_events() {
            assert!(
                seen.insert((e.ns, e.name, "srv")),
                "{} {} twice",
                e.ns,
                e.name
            );
        }
        for ns in NAMESPACES {
            assert!(seen.contains(&(ns, "auth:refresh", "req")));
            assert!(seen.contains(&(ns, "auth:expiring", "srv")));
            assert!(seen.contains(&(ns, "server:draining", "srv")));
        }
    }
}
