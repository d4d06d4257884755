#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test helpers outside #[test] fns
//! The fault filter through real Envoy (two workers): percentages within
//! statistical bounds, drill requests scoped by a token from the
//! environment (a wrong one does nothing; the header never reaches the
//! upstream), the per-tenant bound on delays, a client gone during a delay,
//! gRPC aborts, time windows, the kill switch, the circuit breaker seeing
//! injected failures, and config errors named by their JSON path.

use meshware_e2e::envoy::expect_rejected_env;
use meshware_e2e::suite::{bootstrap, Suite};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ACME: (&str, &str) = ("host", "a.example");
const TOKEN_VAR: &str = "MESHWARE_TEST_DRILL_TOKEN";
const TOKEN: &str = "drill-token-for-the-tests-0123";

fn profile(fault: Value, defaults: Value) -> String {
    json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme"}},
        "defaults": defaults,
        "tenants": {"acme": {"fault": fault}, "public": {}}
    })
    .to_string()
}

fn with_token(mut fault: Value) -> Value {
    fault["drill_tokens"] = json!([{"env": TOKEN_VAR}]);
    fault
}

fn start_with(profile: &str, filters: &[&str]) -> Suite {
    Suite::start_edited_env(profile, filters, &[(TOKEN_VAR, TOKEN)], |_| {})
}

fn start(profile: &str) -> Suite {
    start_with(profile, &["fault"])
}

fn outcome(s: &Suite, what: &str) -> f64 {
    let sample =
        format!("meshware_decisions{{filter=\"fault\",tenant=\"acme\",outcome=\"{what}\"}}");
    s.metric(&sample).unwrap_or(0.0)
}

fn counted(s: &Suite, what: &str, at_least: f64) -> bool {
    meshware_e2e::eventually(3, || outcome(s, what) >= at_least)
}

#[test]
fn an_abort_percentage_holds_within_statistical_bounds() {
    let s = start(&profile(
        json!({"faults": [{"name": "flaky", "scope": "all", "percent": 30,
                           "abort": {"status": 503, "body": "injected"}}]}),
        json!({}),
    ));
    let n = 400;
    let aborted = (0..n)
        .filter(|_| {
            let r = s.get("/", &[ACME]);
            assert!(r.status == 200 || r.status == 503, "{}", r.status);
            r.status == 503
        })
        .count();
    // 30% of 400: mean 120, σ ≈ 9.2; four σ either way.
    assert!((83..=157).contains(&aborted), "{aborted} of {n} aborted");
    assert!(counted(&s, "aborted", aborted as f64));
    // Only aborted requests missed the upstream.
    assert_eq!(s.echo.count(), n - aborted);
    // Other tenants never get a fault.
    assert!((0..50).all(|_| s.get("/", &[("host", "x.example")]).status == 200));
}

#[test]
fn drills_need_the_token_and_the_header_never_reaches_the_upstream() {
    let s = start(&profile(
        with_token(json!({"faults": [
            {"name": "checkout-down", "percent": 100, "prefix": "/checkout",
             "abort": {"status": 503}},
            {"name": "slow", "percent": 100, "prefix": "/slow", "delay": {"ms": 400}}
        ]})),
        json!({}),
    ));
    // No header, a wrong token: nothing injected, the header stripped.
    assert_eq!(s.get("/checkout", &[ACME]).status, 200);
    let r = s.get(
        "/checkout",
        &[ACME, ("x-fault-drill", "wrong-token-0123456789")],
    );
    assert_eq!(r.status, 200);
    assert!(r.header("x-fault-injected").is_none());
    assert!(s
        .echo
        .requests()
        .iter()
        .all(|q| q.header("x-fault-drill").is_none()));
    assert!(counted(&s, "drill_refused", 1.0));
    // The right token: injected, and said so.
    let r = s.get("/checkout", &[ACME, ("x-fault-drill", TOKEN)]);
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-fault-injected"),
        Some("checkout-down; abort=503")
    );
    let t = Instant::now();
    let r = s.get("/slow", &[ACME, ("x-fault-drill", TOKEN)]);
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(390), "delayed only {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(r.header("x-fault-injected"), Some("slow; delay=400ms"));
    // The valid token never reached the upstream either.
    assert!(s
        .echo
        .requests()
        .iter()
        .all(|q| q.header("x-fault-drill").is_none()));
    // Another tenant's request with the header: stripped too.
    s.get("/", &[("host", "x.example"), ("x-fault-drill", TOKEN)]);
    assert!(s.echo.last().unwrap().header("x-fault-drill").is_none());
}

#[test]
fn delays_are_bounded_per_tenant_across_workers_and_a_gone_client_gives_its_slot_back() {
    let s = start(&profile(
        json!({"max_delayed": 2, "faults": [
            {"name": "slow", "scope": "all", "percent": 100, "delay": {"ms": 1500}}
        ]}),
        json!({}),
    ));
    let port = s.port;
    let started = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = meshware_e2e::http::get(port, "/", &[ACME]).unwrap();
                (r.status, t.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{results:?}"
    );
    let slow = results
        .iter()
        .filter(|(_, d)| *d >= Duration::from_millis(1400))
        .count();
    assert_eq!(slow, 2, "two delayed at once, the rest not: {results:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(counted(&s, "skipped_bound", 4.0));
    // A client that goes away during its delay gives its slot back.
    {
        use std::io::Write;
        for _ in 0..2 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(c, "GET / HTTP/1.1\r\nhost: a.example\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(c);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(s.get("/", &[ACME]).status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "the bound was free again: delayed"
    );
    assert!(!s.envoy.log().contains("panic"));
}

#[test]
fn time_windows_and_the_kill_switch() {
    let past = json!({"name": "past", "scope": "all", "percent": 100, "abort": {"status": 500},
                      "start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"});
    let future = json!({"name": "future", "scope": "all", "percent": 100, "abort": {"status": 500},
                        "start": "2099-01-01T00:00:00Z"});
    let now = json!({"name": "now", "scope": "all", "percent": 100, "abort": {"status": 502},
                     "start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00+01:00"});
    let s = start(&profile(json!({"faults": [past, future, now]}), json!({})));
    assert_eq!(
        s.get("/", &[ACME]).status,
        502,
        "only the open window injects"
    );
    assert!(counted(&s, "outside_window", 1.0), "one count per request");
    drop(s);
    let killed = start(&profile(
        json!({"faults": [{"name": "down", "scope": "all", "percent": 100, "abort": {"status": 500}}]}),
        json!({"fault": {"enabled": false}}),
    ));
    assert_eq!(killed.get("/", &[ACME]).status, 200, "the kill switch");
    assert!(counted(&killed, "killed", 1.0));
}

/// After the circuit breaker in the chain: an injected abort is what the
/// breaker records, as it would the upstream's 503.
#[test]
fn the_circuit_breaker_sees_injected_aborts_as_upstream_failures() {
    let fault = json!({"faults": [{"name": "down", "scope": "all", "percent": 100,
                                   "abort": {"status": 503}}]});
    let p = json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme"}},
        "tenants": {"acme": {"fault": fault,
            "circuit_breaker": {"min_requests": 4, "failure_ratio": 0.5, "open_for_ms": 60000}},
                    "public": {}}
    })
    .to_string();
    let s = start_with(&p, &["circuit_breaker", "fault"]);
    for _ in 0..4 {
        assert_eq!(s.get("/", &[ACME]).status, 503);
    }
    let r = s.get("/", &[ACME]);
    assert_eq!(r.header("x-circuit-state"), Some("open"), "{:?}", r.headers);
}

#[test]
fn grpc_calls_get_the_configured_grpc_status() {
    use meshware_e2e::grpc::{call, GrpcServer};
    let server = GrpcServer::start();
    let s = Suite::start_grpc(
        &profile(
            json!({"faults": [{"name": "down", "scope": "all", "percent": 100,
                              "abort": {"status": 503, "grpc_status": "UNAVAILABLE"}}]}),
            json!({}),
        ),
        &["fault"],
        server.port,
        meshware_cli::bootstrap::Protocol::Http2,
    );
    let r = call(s.port, "Unary", "hi", &["--authority", "a.example"]);
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    let ok = call(s.port, "Unary", "hi", &["--authority", "x.example"]);
    assert_eq!(ok["code"], "OK", "{ok}");
}

#[test]
fn config_errors_name_their_json_path() {
    let p = profile(
        with_token(json!({"faults": [
            {"name": "a", "percent": -5, "abort": {"status": 503}},
            {"name": "b", "percent": 10, "delay": {"ms": 600000}},
            {"name": "c", "percent": 10, "abort": {"status": 503}, "start": "next tuesday"}
        ]})),
        json!({}),
    );
    let (config, _, _) = bootstrap(&p, &["fault"], 1);
    let (code, log) = expect_rejected_env(&config, &[(TOKEN_VAR, TOKEN)]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    for line in [
        "tenants.acme.fault.faults[0].percent: must be a number in 0..100",
        "tenants.acme.fault.faults[1].delay.ms: must be <= 60000",
        "tenants.acme.fault.faults[2].start: \"next tuesday\": expected an RFC 3339 date-time",
    ] {
        assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
    }
}

/// The access log records what was injected: `decisions.fault`.
#[test]
fn the_access_log_records_the_fault() {
    let p = json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme"}},
        "tenants": {"acme": {
            "access_log": {"sample_rate": 1.0},
            "fault": {"faults": [
                {"name": "down", "scope": "all", "percent": 100, "prefix": "/down", "abort": {"status": 503}},
                {"name": "slow", "scope": "all", "percent": 100, "prefix": "/slow", "delay": {"ms": 100}}
            ]}},
            "public": {}}
    })
    .to_string();
    let s = start_with(&p, &["access_log", "fault"]);
    assert_eq!(s.get("/down", &[ACME]).status, 503);
    assert_eq!(s.get("/slow", &[ACME]).status, 200);
    let lines = s.access_log_until(|l| l.len() >= 2);
    let decided = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .map(|l| l["decisions"]["fault"].clone())
    };
    assert_eq!(decided("/down"), Some(json!("aborted")), "{lines:?}");
    assert_eq!(decided("/slow"), Some(json!("delayed")), "{lines:?}");
}
