//! idempotency through real Envoy with the example profile: acme handles
//! Idempotency-Key on POST/PATCH /orders (optional) and POST /payments
//! (required), 64 stored entries, one hour TTL.

use meshware_e2e::http::Response;
use meshware_e2e::suite::Suite;
use serde_json::Value;
use std::time::Duration;

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start_with(profile: &str) -> Suite {
    Suite::start(profile, &["trace_context", "idempotency"])
}

fn post(
    s: &Suite,
    host: &str,
    path: &str,
    key: Option<&str>,
    user: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Response {
    let mut h: Vec<(&str, &[u8])> = vec![("host", host.as_bytes()), ("x-user-id", user.as_bytes())];
    if let Some(k) = key {
        h.push(("idempotency-key", k.as_bytes()));
    }
    for (k, v) in extra {
        h.push((k, v.as_bytes()));
    }
    s.send("POST", path, &h, body)
}

const ACME: &str = "shop.acme.example";

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"idempotency\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

#[test]
fn a_replay_is_identical_and_the_upstream_counts_one_request() {
    let s = start_with(&profile());
    let extra = [
        ("x-echo-status", "201"),
        ("x-echo-response-header", "location: /orders/42"),
    ];
    let first = post(
        &s,
        ACME,
        "/orders",
        Some("\"order-1\""),
        "alice",
        b"{\"sku\":1}",
        &extra,
    );
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotency-replayed"), None);
    let again = post(
        &s,
        ACME,
        "/orders",
        Some("\"order-1\""),
        "alice",
        b"{\"sku\":1}",
        &extra,
    );
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "byte-identical body");
    assert_eq!(again.header("location"), Some("/orders/42"));
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(s.echo.count(), 1);
    // Same key, other payload: 422, still one upstream request.
    let other = post(
        &s,
        ACME,
        "/orders",
        Some("\"order-1\""),
        "alice",
        b"{\"sku\":2}",
        &extra,
    );
    assert_eq!(other.status, 422);
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    // Another user with the same key is a new request.
    assert_eq!(
        post(
            &s,
            ACME,
            "/orders",
            Some("\"order-1\""),
            "bob",
            b"{\"sku\":1}",
            &[]
        )
        .status,
        200
    );
    assert_eq!(s.echo.count(), 2);
    assert_eq!(metric(&s, "acme", "replayed"), 1.0);
    assert_eq!(metric(&s, "acme", "mismatch"), 1.0);
}

#[test]
fn concurrent_duplicates_reach_the_upstream_once() {
    let s = start_with(&profile());
    let port = s.port;
    let racers: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 100));
                meshware_e2e::http::send(
                    port,
                    "POST",
                    "/orders",
                    &[
                        ("host", ACME.as_bytes()),
                        ("x-user-id", b"alice"),
                        ("idempotency-key", b"\"race\""),
                        ("x-echo-delay-ms", b"600"),
                    ],
                    b"{}",
                )
                .unwrap()
                .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(s.echo.count(), 1);
}

#[test]
fn a_reset_or_5xx_releases_the_key() {
    let s = start_with(&profile());
    let r = post(
        &s,
        ACME,
        "/orders",
        Some("\"retry-me\""),
        "alice",
        b"{}",
        &[("x-echo-reset", "1")],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let r = post(
        &s,
        ACME,
        "/orders",
        Some("\"retry-me\""),
        "alice",
        b"{}",
        &[("x-echo-status", "502")],
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.header("idempotency-replayed"), None);
    let r = post(
        &s,
        ACME,
        "/orders",
        Some("\"retry-me\""),
        "alice",
        b"{}",
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("idempotency-replayed"), None);
    assert_eq!(metric(&s, "acme", "released"), 2.0);
    assert_eq!(metric(&s, "acme", "first"), 3.0);
}

#[test]
fn other_tenants_and_ttl_expiry() {
    let mut p: Value = serde_json::from_str(&profile()).unwrap();
    p["tenants"]["acme"]["idempotency"]["ttl_s"] = Value::from(1);
    p["tenants"]["globex"]["idempotency"] = p["tenants"]["acme"]["idempotency"].clone();
    let s = start_with(&p.to_string());
    assert_eq!(
        post(&s, ACME, "/orders", Some("k"), "alice", b"{}", &[]).status,
        200
    );
    // The same key and user at another tenant is another scope.
    let r = post(
        &s,
        "api.globex.example",
        "/orders",
        Some("k"),
        "alice",
        b"{}",
        &[],
    );
    assert_eq!(r.header("idempotency-replayed"), None);
    assert_eq!(
        post(&s, ACME, "/orders", Some("k"), "alice", b"{}", &[]).header("idempotency-replayed"),
        Some("true")
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        post(&s, ACME, "/orders", Some("k"), "alice", b"{}", &[]).header("idempotency-replayed"),
        None,
        "expired"
    );
}

#[test]
fn hundreds_of_keys_cannot_grow_the_store() {
    let s = start_with(&profile());
    // 64 slots: hundreds of keys cannot grow the store; once both candidate
    // slots of a key are taken, it passes through without idempotency
    // (`store_full`) instead.
    for i in 0..300 {
        let r = post(
            &s,
            ACME,
            "/orders",
            Some(&format!("flood-{i}")),
            "alice",
            b"{}",
            &[],
        );
        assert_eq!(r.status, 200);
    }
    assert!(metric(&s, "acme", "store_full") > 100.0);
}

#[test]
fn malformed_or_missing_keys_are_400() {
    let s = start_with(&profile());
    for bad in ["\"unterminated", "two words", "\"\"", &"k".repeat(300)] {
        let r = post(&s, ACME, "/orders", Some(bad), "alice", b"{}", &[]);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    // Two keys.
    let r = s.send(
        "POST",
        "/orders",
        &[
            ("host", ACME.as_bytes()),
            ("idempotency-key", b"a"),
            ("idempotency-key", b"b"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 400);
    // /payments requires a key.
    assert_eq!(
        post(&s, ACME, "/payments", None, "alice", b"{}", &[]).status,
        400
    );
    assert_eq!(s.echo.count(), 0);
}
