//! The committed contract documents match what the code generates, and PROTOCOL.md's
//! event tables name exactly the events the AsyncAPI document describes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use switchboard_dataplane::contract;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join(path))
        .unwrap_or_else(|| PathBuf::from(path))
}

fn assert_committed(path: &str, generated: &str) {
    let committed = std::fs::read_to_string(repo_file(path)).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "(one is a prefix of the other)".to_owned(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "{path} is not what the code generates ({line}). Regenerate it from the repository root:\n  {}",
            contract::REGENERATE
        );
    }
}

#[test]
fn asyncapi_yaml_is_what_the_code_generates() {
    assert_committed(
        contract::ASYNCAPI_PATH,
        &contract::to_yaml(&contract::asyncapi()),
    );
}

#[test]
fn openapi_yaml_is_what_the_code_generates() {
    assert_committed(
        contract::OPENAPI_PATH,
        &contract::to_yaml(&contract::openapi()),
    );
}

/// `(namespace, event)` of every row of PROTOCOL.md's "client → server" tables. A table
/// belongs to the namespace of the `##`/`###` heading above it; one under a heading for
/// every namespace belongs to all four.
fn protocol_tables(text: &str) -> BTreeSet<(String, String)> {
    let mut namespaces: Vec<&str> = Vec::new();
    let mut in_table = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            namespaces = if line.contains("every namespace") {
                contract::NAMESPACES.to_vec()
            } else {
                contract::NAMESPACES
                    .into_iter()
                    .filter(|ns| line.contains(ns))
                    .collect()
            };
            in_table = false;
            continue;
        }
        if line.starts_with("| client → server |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            continue;
        }
        let Some(first) = line.split('|').nth(1) else {
            continue;
        };
        for event in first.split('`').skip(1).step_by(2) {
            assert!(
                !namespaces.is_empty(),
                "PROTOCOL.md: a table row for `{event}` under a heading that names no namespace"
            );
            for ns in &namespaces {
                out.insert(((*ns).to_owned(), event.to_owned()));
            }
        }
    }
    out
}

/// `(namespace, event)` of every request event in the AsyncAPI document: the operations
/// the server receives.
fn asyncapi_requests(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let ops = doc["operations"].as_object().expect("operations");
    for op in ops.values() {
        if op["action"] != "receive" {
            continue;
        }
        let channel = op["channel"]["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/channels/"))
            .expect("channel ref");
        let ns = doc["channels"][channel]["address"]
            .as_str()
            .expect("address");
        let title = op["title"].as_str().expect("title");
        out.insert((ns.to_owned(), title.to_owned()));
    }
    out
}

#[test]
fn protocol_md_tables_and_asyncapi_name_the_same_request_events() {
    let text = std::fs::read_to_string(repo_file("dataplane/PROTOCOL.md")).expect("PROTOCOL.md");
    let tables = protocol_tables(&text);
    let doc = contract::asyncapi();
    let documented = asyncapi_requests(&doc);
    let only_md: Vec<_> = tables.difference(&documented).collect();
    let only_api: Vec<_> = documented.difference(&tables).collect();
    assert!(
        only_md.is_empty() && only_api.is_empty(),
        "PROTOCOL.md tables but not asyncapi: {only_md:?}\nasyncapi but not PROTOCOL.md tables: {only_api:?}"
    );
    // And every server → client event is named in the prose.
    for e in contract::server_events() {
        assert!(
            text.contains(&format!("`{}", e.name)) || text.contains(&format!("{} {{", e.name)),
            "server event {} ({}) is not in PROTOCOL.md",
            e.name,
            e.ns
        );
    }
}

#[test]
fn every_ack_allows_each_error_code() {
    let doc = contract::asyncapi();
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    let listed: Vec<&str> = codes
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(
        listed,
        [
            "bad_request",
            "unauthorized",
            "forbidden",
            "not_found",
            "conflict",
            "busy",
            "rate_limited",
            "payload_too_large",
            "unavailable",
            "internal"
        ]
    );
    for (id, m) in doc["components"]["messages"].as_object().expect("messages") {
        if id.ends_with(".ack") {
            assert_eq!(
                m["payload"]["oneOf"][1]["$ref"], "#/components/schemas/AckFailure",
                "{id}"
            );
        }
    }
}
