//! Requests jwt-auth holds (waiting for the first JWKS fetch, woken from
//! another context when it lands; or waiting for their own external auth
//! check) still pass every later concern before the upstream: endpoint
//! guard, rate limit, idempotency (with the body that arrived meanwhile),
//! canary. Separate modules get this from Envoy's filter chain; the suite
//! module (`MESHWARE_E2E_MODULE=suite`) from its own chain.

use meshware_e2e::echo::{Canned, Echo};
use meshware_e2e::http::{self, Response};
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FILTERS: [&str; 6] = [
    "jwt_auth",
    "endpoint_guard",
    "rate_limit",
    "idempotency",
    "canary",
    "trace_context",
];

/// The concerns after jwt-auth, the same for both tenants.
fn later_concerns(jwt: Value) -> Value {
    json!({
        "jwt_auth": jwt,
        "endpoint_guard": {"extra_protected_paths": ["/internal"]},
        "rate_limit": {"limits": [{"name": "orders", "key": "route", "prefix": "/orders",
                                   "methods": ["POST"], "rate": 1, "per": "minute", "burst": 2}]},
        "idempotency": {"routes": [{"prefix": "/orders", "methods": ["POST"]}]},
        "canary": {"routing_header": "x-route-version", "default_version": "v1"},
        "trace_context": {"sample_rate": 1.0}
    })
}

fn profile() -> String {
    let v = meshware_e2e::jwt_vectors();
    let remote = json!({"issuer": v["issuer"], "audiences": [v["audience"]],
        "algorithms": ["RS256"],
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "timeout_ms": 6000, "wait_ms": 8000}});
    json!({
        "tenancy": {"hosts": {"waiting.example": "waiting", "checked.example": "checked"},
                    "default": "checked"},
        "tenants": {
            "waiting": later_concerns(json!({"providers": [remote]})),
            "checked": later_concerns(json!({"external": {"cluster": "idp", "path_prefix": "/authz", "timeout_ms": 2000,
                                                          "copy_headers": ["x-auth-user"]}}))
        }
    })
    .to_string()
}

fn start() -> Suite {
    let idp = Echo::start(0).expect("services");
    let v = meshware_e2e::jwt_vectors();
    let jwks = serde_json::to_vec(&v["jwks"]).unwrap();
    // Long enough for every request below to arrive while the keys are missing.
    idp.script("/jwks", Canned::new(200, &jwks).delay(3000));
    idp.script(
        "/authz",
        Canned::new(200, b"")
            .header("x-auth-user", "carol")
            .delay(300),
    );
    Suite::start_with_services(&profile(), &FILTERS, idp, &["idp"])
}

fn request(s: &Suite, host: &str, method: &str, path: &str, key: Option<&str>) -> Response {
    let bearer = format!("Bearer {}", meshware_e2e::jwt_token("valid RS256"));
    let mut h = vec![("host", host), ("authorization", bearer.as_str())];
    if let Some(k) = key {
        h.push(("idempotency-key", k));
    }
    let body: Vec<Vec<u8>> = if method == "POST" {
        vec![
            b"order ".to_vec(),
            b"of ".to_vec(),
            path.as_bytes().to_vec(),
        ]
    } else {
        Vec::new()
    };
    if body.is_empty() {
        http::get(s.port, path, &h).expect("request through envoy")
    } else {
        http::send_chunked(s.port, method, path, &h, &body).expect("request through envoy")
    }
}

/// Checks what every tenant's held requests must have gone through.
fn check_chain(s: &Suite, host: &str, held: Vec<(&str, &str, &str, Response)>) {
    for (method, path, _, r) in &held {
        match *path {
            "/internal" => assert_ne!(r.status, 200, "endpoint_guard ran: {method} {path}"),
            _ => assert_eq!(r.status, 200, "{method} {path}: {}", r.text()),
        }
    }
    assert!(
        s.echo.requests_to("/internal").is_empty(),
        "a guarded path reached the upstream after the hold"
    );
    for r in s.echo.requests() {
        assert_eq!(
            r.header("x-route-version"),
            Some("v1"),
            "canary ran: {}",
            r.path
        );
        assert!(r.header("traceparent").is_some(), "trace_context ran");
    }
    let orders = s.echo.requests_to("/orders");
    assert_eq!(orders.len(), 1, "one order reached the upstream");
    assert_eq!(
        orders[0].body, b"order of /orders",
        "the body held meanwhile"
    );
    // The same key again: replayed by idempotency, which saw the held request.
    let again = request(s, host, "POST", "/orders", Some("k1"));
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(s.echo.requests_to("/orders").len(), 1);
    // Burst 2 on POST /orders: the held request and the replay took both.
    let third = request(s, host, "POST", "/orders", Some("k2"));
    assert_eq!(third.status, 429, "rate_limit counted the held request");
}

#[test]
fn requests_woken_by_the_jwks_fetch_pass_every_later_concern() {
    let s = start();
    let begin = Instant::now();
    let held: Vec<(&str, &str, &str, Response)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [
            ("GET", "/a", ""),
            ("GET", "/internal", ""),
            ("POST", "/orders", "k1"),
        ]
        .into_iter()
        .map(|(m, p, k)| {
            let s = &s;
            scope.spawn(move || {
                let key = (!k.is_empty()).then_some(k);
                (m, p, k, request(s, "waiting.example", m, p, key))
            })
        })
        .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        begin.elapsed() > Duration::from_millis(1500),
        "the requests waited for the keys ({:?})",
        begin.elapsed()
    );
    check_chain(&s, "waiting.example", held);
}

#[test]
fn requests_held_for_their_external_check_pass_every_later_concern() {
    let s = start();
    let held: Vec<(&str, &str, &str, Response)> = [
        ("GET", "/a", ""),
        ("GET", "/internal", ""),
        ("POST", "/orders", "k1"),
    ]
    .into_iter()
    .map(|(m, p, k)| {
        let key = (!k.is_empty()).then_some(k);
        (m, p, k, request(&s, "checked.example", m, p, key))
    })
    .collect();
    for r in s.echo.requests() {
        assert_eq!(r.header("x-auth-user"), Some("carol"), "{}", r.path);
    }
    check_chain(&s, "checked.example", held);
}

/// A request parked for the keys whose body is sent only after it was
/// woken (from another request's callout): the body goes through, instead
/// of being held by a hold that already ended. One worker, so the two
/// requests meet the same parked list.
#[test]
fn a_body_sent_after_a_parked_request_was_woken_goes_through() {
    use std::io::{Read, Write};
    let idp = Echo::start(0).expect("services");
    let v = meshware_e2e::jwt_vectors();
    idp.script(
        "/jwks",
        Canned::new(200, &serde_json::to_vec(&v["jwks"]).unwrap()).delay(1500),
    );
    let s = Suite::start_with_services_on(&profile(), &FILTERS, idp, &["idp"], 1);
    let port = s.port;
    let bearer = format!("Bearer {}", meshware_e2e::jwt_token("valid RS256"));
    // The first request starts the fetch (or waits for the tick's).
    let first = std::thread::spawn({
        let bearer = bearer.clone();
        move || {
            http::get(
                port,
                "/first",
                &[("host", "waiting.example"), ("authorization", &bearer)],
            )
            .map(|r| r.status)
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head = format!(
        "POST /late-body HTTP/1.1\r\nhost: waiting.example\r\nauthorization: {bearer}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    // The keys arrive (1.5 s) and wake the parked request; only then the body.
    std::thread::sleep(Duration::from_millis(3000));
    c.write_all(b"5\r\nlate \r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"4\r\nbody\r\n0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{text}\n{}",
        s.envoy.log()
    );
    assert_eq!(first.join().unwrap().unwrap(), 200);
    let got = s.echo.requests_to("/late-body");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"late body");
}
