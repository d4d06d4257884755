//! The idempotency core against an in-memory store with Envoy's CAS rules.

use crate::config::tests::parse_json;
use crate::config::IdempotencySettings;
use crate::replay::*;
use meshware_common::path::RequestPath;
use meshware_common::store::MemoryStore;
use meshware_common::{Decision, Headers, Outcomes, SourceAddress};
use serde_json::json;

fn settings() -> &'static IdempotencySettings {
    let (s, e) = parse_json(json!({
        "routes": [{"prefix": "/orders", "methods": ["POST"], "required": true}],
        "ttl_s": 60, "max_entries": 8, "max_request_bytes": 16, "max_response_bytes": 64
    }));
    assert_eq!(e, "");
    Box::leak(Box::new(s))
}

fn env() -> MemoryStore {
    let st = MemoryStore::default();
    *st.now.borrow_mut() = 1_000_000;
    st
}

/// Runs the request phases; returns the decision that ended them.
fn send(
    s: &'static IdempotencySettings,
    st: &MemoryStore,
    user: &str,
    key: Option<&str>,
    body: &[u8],
    f: &mut Flight,
) -> Decision<'static> {
    send_to(s, st, "/orders", user, key, body, f)
}

fn send_to(
    s: &'static IdempotencySettings,
    st: &MemoryStore,
    path: &str,
    user: &str,
    key: Option<&str>,
    body: &[u8],
    f: &mut Flight,
) -> Decision<'static> {
    let mut pairs = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        ("x-user-id".to_string(), user.to_string()),
    ];
    if let Some(k) = key {
        pairs.push(("idempotency-key".into(), k.into()));
    }
    // Every reading, as for a tenant that allows every ambiguous form.
    let read = RequestPath::read_all(path).unwrap();
    let d = on_request(
        s,
        "t",
        &Headers::new(pairs),
        &read,
        &mut SourceAddress::known(None),
        f,
    );
    if d.reply.is_some() || d.wait_for_body.is_none() {
        return d;
    }
    let limit = d.wait_for_body.unwrap_or(0);
    on_body(s, f, (body.len() <= limit).then_some(body), st)
}

fn respond(s: &IdempotencySettings, st: &MemoryStore, f: &mut Flight, status: &str, body: &[u8]) {
    let h = Headers::new(vec![
        (":status".into(), status.into()),
        ("content-type".into(), "application/json".into()),
        ("date".into(), "x".into()),
    ]);
    on_response(f, &h);
    on_response_body(s, f, body, true, st);
}

fn status(d: &Decision<'_>) -> Option<u32> {
    d.reply.as_ref().map(|r| r.status)
}

#[test]
fn first_then_replay_then_mismatch() {
    let s = settings();
    let st = env();
    let mut f = Flight::default();
    let d = send(s, &st, "u1", Some("\"k1\""), b"{\"a\":1}", &mut f);
    assert!(d.reply.is_none() && d.outcomes.contains(FIRST));
    // While it runs, a duplicate is a conflict.
    let d = send(
        s,
        &st,
        "u1",
        Some("\"k1\""),
        b"{\"a\":1}",
        &mut Flight::default(),
    );
    assert_eq!(status(&d), Some(409));
    respond(s, &st, &mut f, "201", b"{\"id\":7}");
    let d = send(
        s,
        &st,
        "u1",
        Some("\"k1\""),
        b"{\"a\":1}",
        &mut Flight::default(),
    );
    let reply = d.reply.unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(&*reply.body, b"{\"id\":7}");
    assert!(reply
        .owned_headers
        .contains(&("content-type".into(), "application/json".into())));
    assert!(reply
        .owned_headers
        .contains(&("idempotency-replayed".into(), "true".into())));
    assert!(!reply.owned_headers.iter().any(|(k, _)| k == "date"));
    assert_eq!(
        status(&send(
            s,
            &st,
            "u1",
            Some("\"k1\""),
            b"{\"a\":2}",
            &mut Flight::default()
        )),
        Some(422)
    );
    // Another caller with the same key is a new request.
    assert!(send(
        s,
        &st,
        "u2",
        Some("\"k1\""),
        b"{\"a\":1}",
        &mut Flight::default()
    )
    .outcomes
    .contains(FIRST));
    // After the TTL the key is new again.
    st.advance_ms(61_000);
    assert!(send(
        s,
        &st,
        "u1",
        Some("\"k1\""),
        b"{\"a\":1}",
        &mut Flight::default()
    )
    .outcomes
    .contains(FIRST));
}

#[test]
fn failures_release_the_mark() {
    let s = settings();
    let st = env();
    let mut f = Flight::default();
    send(s, &st, "u", Some("k"), b"", &mut f);
    assert!(on_complete(&mut f, &st).contains(RELEASED));
    let mut f = Flight::default();
    assert!(send(s, &st, "u", Some("k"), b"", &mut f)
        .outcomes
        .contains(FIRST));
    respond(s, &st, &mut f, "503", b"down");
    assert!(
        send(s, &st, "u", Some("k"), b"", &mut Flight::default())
            .outcomes
            .contains(FIRST),
        "5xx released"
    );
}

#[test]
fn keys_are_validated() {
    let s = settings();
    let st = env();
    assert_eq!(
        status(&send(s, &st, "u", None, b"", &mut Flight::default())),
        Some(400)
    );
    for bad in ["\"open", "\"a\"b\"", "a b", "\"\"", &"x".repeat(300)] {
        assert_eq!(
            status(&send(s, &st, "u", Some(bad), b"", &mut Flight::default())),
            Some(400),
            "{bad}"
        );
    }
    assert_eq!(parse_key("\"a\\\"b\"", s), Ok("a\"b".to_string()));
    assert_eq!(
        status(&send(
            s,
            &st,
            "u",
            Some("k2"),
            &[b'x'; 17],
            &mut Flight::default()
        )),
        Some(413)
    );
}

#[test]
fn the_store_stays_bounded() {
    let s = settings();
    let st = env();
    let mut full = 0;
    for i in 0..200 {
        let mut f = Flight::default();
        let d = send(s, &st, "u", Some(&format!("key-{i}")), b"", &mut f);
        if d.outcomes.contains(STORE_FULL) {
            full += 1;
        } else {
            respond(s, &st, &mut f, "200", b"ok");
        }
    }
    assert!(st.len() <= 8, "{}", st.len());
    assert!(full > 150, "{full}");
    st.advance_ms(61_000);
    assert!(sweep(s, "t", &st, &s.sweep_cursor).contains(EVICTED));
    assert_eq!(st.occupied(), 0);
}

#[test]
fn a_required_route_holds_for_every_reading_of_its_path() {
    let (s, e) = meshware_common::section::parse_alone(
        &json!({"routes": [{"prefix": "/pay", "required": true}, {"prefix": "/", "methods": ["PATCH"]}]}),
        "t",
        crate::config::parse,
    );
    assert_eq!(e, "");
    let s: &'static IdempotencySettings = Box::leak(Box::new(s));
    let st = MemoryStore::default();
    for p in [
        "/pay",
        "//pay",
        "/PAY",
        "/./pay",
        "/x/../pay",
        "/pay;x",
        "/%70ay/x",
    ] {
        let d = send_to(s, &st, p, "u", None, b"{}", &mut Flight::default());
        assert_eq!(d.reply.as_ref().map(|r| r.status), Some(400), "{p}");
    }
    let d = send_to(
        s,
        &st,
        "/payments",
        "u",
        None,
        b"{}",
        &mut Flight::default(),
    );
    assert!(d.reply.is_none());
}

/// A gRPC call's request phases (content type gRPC, key in metadata).
fn send_grpc(
    s: &'static IdempotencySettings,
    st: &dyn meshware_common::HostEnv,
    key: &str,
    body: &[u8],
    f: &mut Flight,
) -> Decision<'static> {
    let pairs = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/orders".to_string()),
        ("content-type".to_string(), "application/grpc".to_string()),
        ("x-user-id".to_string(), "u".to_string()),
        ("idempotency-key".to_string(), key.to_string()),
    ];
    let read = RequestPath::read_all("/orders").unwrap();
    let d = on_request(
        s,
        "t",
        &Headers::new(pairs),
        &read,
        &mut SourceAddress::known(None),
        f,
    );
    if d.reply.is_some() {
        return d;
    }
    assert!(
        d.grpc_body,
        "a gRPC call is held only while it can be unary"
    );
    on_body(s, f, Some(body), st)
}

/// A gRPC response: headers, messages, then trailers.
fn respond_grpc(
    s: &IdempotencySettings,
    st: &dyn meshware_common::HostEnv,
    f: &mut Flight,
    body: &[u8],
    status: &str,
) -> meshware_common::Outcomes {
    let h = Headers::new(vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/grpc".into()),
    ]);
    on_response(f, &h);
    on_response_body(s, f, body, false, st);
    let t = Headers::new(vec![
        ("grpc-status".into(), status.into()),
        ("grpc-message".into(), "bad%20thing".into()),
        ("x-trailer".into(), "kept".into()),
    ]);
    on_response_trailers(s, f, &t, st)
}

#[test]
fn a_grpc_failure_is_stored_from_its_trailers_and_replayed_trailers_only() {
    let s = settings();
    let st = env();
    let mut f = Flight::default();
    assert!(send_grpc(s, &st, "\"k1\"", b"m", &mut f)
        .outcomes
        .contains(FIRST));
    assert!(respond_grpc(s, &st, &mut f, b"", "9").contains(STORED));
    let d = send_grpc(s, &st, "\"k1\"", b"m", &mut Flight::default());
    let reply = d.reply.expect("replayed");
    assert!(d.outcomes.contains(REPLAYED));
    assert_eq!(reply.grpc_status, Some(9));
    assert_eq!(reply.grpc_message.as_deref(), Some("bad%20thing"));
    assert!(reply
        .owned_headers
        .contains(&("x-trailer".to_string(), "kept".to_string())));
    assert!(reply
        .owned_headers
        .contains(&("idempotency-replayed".to_string(), "true".to_string())));
    assert!(!reply
        .owned_headers
        .iter()
        .any(|(k, _)| k == "grpc-status" || k == "content-type"));
}

#[test]
fn a_grpc_answer_with_messages_is_never_run_twice() {
    let (s, e) = parse_json(json!({
        "routes": [{"prefix": "/orders", "methods": ["POST"]}],
        "grpc_replay": "trailers_only"
    }));
    assert_eq!(e, "");
    let s: &'static IdempotencySettings = Box::leak(Box::new(s));
    let st = env();
    let mut f = Flight::default();
    send_grpc(s, &st, "\"k2\"", b"m", &mut f);
    assert!(respond_grpc(s, &st, &mut f, b"\0\0\0\0\x02ok", "0").contains(STORED));
    let d = send_grpc(s, &st, "\"k2\"", b"m", &mut Flight::default());
    assert!(d.outcomes.contains(NOT_REPLAYABLE));
    assert_eq!(
        d.reply.and_then(|r| r.grpc_status),
        Some(meshware_common::grpc::ALREADY_EXISTS)
    );
    // Another payload with the same key: FAILED_PRECONDITION (from 422).
    let d = send_grpc(s, &st, "\"k2\"", b"other", &mut Flight::default());
    assert!(d.outcomes.contains(MISMATCH));
    assert_eq!(d.reply.map(|r| r.status), Some(422));
}

#[test]
fn an_unavailable_upstream_releases_the_key_and_a_stream_is_never_held() {
    let s = settings();
    let st = env();
    let mut f = Flight::default();
    send_grpc(s, &st, "\"k3\"", b"m", &mut f);
    assert!(respond_grpc(s, &st, &mut f, b"", "14").contains(RELEASED));
    // The retry runs (the key is free again).
    assert!(send_grpc(s, &st, "\"k3\"", b"m", &mut Flight::default())
        .outcomes
        .contains(FIRST));
    // A stream: told once, never claimed, nothing to release.
    let mut f = Flight::default();
    let pairs = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/orders".to_string()),
        ("content-type".to_string(), "application/grpc".to_string()),
        ("idempotency-key".to_string(), "\"k4\"".to_string()),
    ];
    let read = RequestPath::read_all("/orders").unwrap();
    on_request(
        s,
        "t",
        &Headers::new(pairs),
        &read,
        &mut SourceAddress::known(None),
        &mut f,
    );
    assert!(on_stream(&mut f).contains(STREAMING));
    assert!(!f.stores_response());
    assert_eq!(
        on_complete(&mut f, &st),
        meshware_common::Outcomes::default()
    );
}

fn full_replay_settings() -> &'static IdempotencySettings {
    let (s, e) = parse_json(json!({
        "routes": [{"prefix": "/orders", "methods": ["POST"]}],
        "max_request_bytes": 16, "max_response_bytes": 64, "grpc_replay": "full"
    }));
    assert_eq!(e, "");
    Box::leak(Box::new(s))
}

/// The replay route's answer, as the bootstrap's replay listener sends it.
fn carrier_headers(marker: &str) -> Headers {
    Headers::new(vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/plain".into()),
        ("content-length".into(), "6".into()),
        ("date".into(), "now".into()),
        ("x-meshware-replay".into(), marker.into()),
    ])
}

#[test]
fn with_full_replay_a_grpc_answer_with_messages_is_replayed_byte_for_byte() {
    let s = full_replay_settings();
    let st = env();
    let mut f = Flight::default();
    send_grpc(s, &st, "\"k5\"", b"m", &mut f);
    let message = b"\0\0\0\0\x02ok";
    assert!(respond_grpc(s, &st, &mut f, message, "0").contains(STORED));

    let mut dup = Flight::default();
    let d = send_grpc(s, &st, "\"k5\"", b"m", &mut dup);
    assert!(d.reply.is_none(), "not answered by the filter: {d:?}");
    assert_eq!(
        d.outcomes,
        Outcomes::default(),
        "counted when the answer shows who carried it"
    );
    assert_eq!(response_outcomes(&dup), Outcomes::default());
    // To the replay route, in a form no server runs as a call.
    assert_eq!(d.request.value_of("x-meshware-replay"), Some("1"));
    assert_eq!(d.request.value_of(":method"), Some("OPTIONS"));
    assert_eq!(
        d.request.value_of("content-type"),
        Some("application/x-meshware-replay")
    );
    assert!(d.request.clear_route_cache);
    assert!(dup.stores_response(), "the replay reads the response");

    // The route's answer: its headers go (but date), the stored ones come.
    let mut seen = Headers::new(
        carrier_headers("carrier")
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    for op in &on_response(&mut dup, &carrier_headers("carrier")).ops {
        seen.apply(op);
    }
    assert_eq!(seen.get(":status"), Some("200"));
    assert_eq!(seen.get("content-type"), Some("application/grpc"));
    assert_eq!(seen.get("idempotency-replayed"), Some("true"));
    assert_eq!(seen.get("date"), Some("now"));
    assert_eq!(seen.get("content-length"), None);
    assert_eq!(seen.get("x-meshware-replay"), None);
    assert_eq!(response_outcomes(&dup), Outcomes::one(REPLAYED));

    // Nothing of the route's body; then the stored body and trailers.
    assert_eq!(
        response_replacement(&mut dup, false),
        Some(meshware_common::ResponseReplacement::default())
    );
    let last = response_replacement(&mut dup, true).expect("replaced");
    assert_eq!(last.body, message);
    assert_eq!(
        last.trailers,
        [
            ("grpc-status".to_string(), "0".to_string()),
            ("grpc-message".to_string(), "bad%20thing".to_string()),
            ("x-trailer".to_string(), "kept".to_string()),
        ]
    );
    assert_eq!(response_replacement(&mut dup, true), None, "once");
}

#[test]
fn a_full_replay_nobody_carries_becomes_already_exists() {
    let s = full_replay_settings();
    let st = env();
    let mut f = Flight::default();
    send_grpc(s, &st, "\"k6\"", b"m", &mut f);
    respond_grpc(s, &st, &mut f, b"\0\0\0\0\x02ok", "0");
    let mut dup = Flight::default();
    send_grpc(s, &st, "\"k6\"", b"m", &mut dup);
    // An upstream answered instead of the replay route (415, say).
    let edits = on_response(&mut dup, &carrier_headers("someone-else"));
    assert_eq!(edits.value_of("grpc-status"), Some("6"));
    assert_eq!(edits.value_of(":status"), Some("200"));
    assert_eq!(edits.value_of("content-type"), Some("application/grpc"));
    assert_eq!(response_outcomes(&dup), Outcomes::one(NOT_REPLAYABLE));
    assert_eq!(
        response_replacement(&mut dup, false),
        Some(meshware_common::ResponseReplacement::default()),
        "its body is dropped"
    );
    let last = response_replacement(&mut dup, true).expect("replaced");
    assert!(last.body.is_empty());
    assert_eq!(
        last.trailers,
        [("grpc-status".to_string(), "6".to_string())]
    );
}

/// A host whose responses cannot be replaced (the native build).
struct NoReplacing(MemoryStore);

impl meshware_common::SharedStore for NoReplacing {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.get(key)
    }
    fn set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), meshware_common::store::SetError> {
        self.0.set(key, value, cas)
    }
}

impl meshware_common::HostEnv for NoReplacing {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.0.property(path)
    }
    fn replaces_responses(&self) -> bool {
        false
    }
}

#[test]
fn where_responses_cannot_be_replaced_a_full_replay_is_already_exists() {
    let s = full_replay_settings();
    let st = NoReplacing(env());
    let mut f = Flight::default();
    let claim = |f: &mut Flight| send_grpc(s, &st, "\"k7\"", b"m", f);
    claim(&mut f);
    assert!(respond_grpc(s, &st, &mut f, b"\0\0\0\0\x02ok", "0").contains(STORED));
    let d = claim(&mut Flight::default());
    assert_eq!(
        d.reply.and_then(|r| r.grpc_status),
        Some(meshware_common::grpc::ALREADY_EXISTS)
    );
}
