#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test helpers outside #[test] fns
//! Global limits through real Envoy and a real rate limit service
//! (limitador's counting behind Envoy's RLS gRPC API, `meshware_e2e::rls`):
//! two proxies share one limit, per-client descriptors and tenants are
//! independent, the service's failures follow each tenant's failure mode,
//! and Envoy's own ratelimit filter counts on the same limits.

use meshware_e2e::redis::Redis;
use meshware_e2e::rls::{limit, Mode, Rls};
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ACME: (&str, &str) = ("host", "a.example");
const BETA: (&str, &str) = ("host", "b.example");

fn descriptor(name: &str, more: Value) -> Value {
    let mut entries = vec![json!({"key": "kind", "value": name}), json!("tenant")];
    entries.extend(more.as_array().cloned().unwrap_or_default());
    json!({"name": name, "entries": entries})
}

fn global(failure_mode: &str, timeout_ms: u64) -> Value {
    json!({"global": {
        "cluster": "rls", "domain": "meshware", "timeout_ms": timeout_ms,
        "failure_mode": failure_mode,
        "descriptors": [
            descriptor("tenant", json!([])),
            descriptor("per-key", json!([{"header": "x-api-key", "key": "api_key"}]))
        ]
    }})
}

fn profile(acme: Value, beta: Value) -> String {
    json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme", "b.example": "beta"}},
        "tenants": {"acme": {"rate_limit": acme}, "beta": {"rate_limit": beta}, "public": {}}
    })
    .to_string()
}

/// Envoy with the profile, the `rls` cluster on `rls_port`.
fn proxy(profile: &str, rls_port: u16) -> Suite {
    Suite::start_edited(profile, &["rate_limit"], move |config| {
        meshware_e2e::suite::add_cluster(
            config,
            meshware_cli::bootstrap::grpc_cluster("rls", rls_port),
        );
    })
}

/// The decisions counter of `tenant` with every `label="value"` given.
fn decisions(s: &Suite, tenant: &str, labels: &[&str]) -> f64 {
    let text = s.envoy.prometheus();
    let tenant = format!("tenant=\"{tenant}\"");
    text.lines()
        .filter(|l| l.starts_with("meshware_decisions{") && l.contains("filter=\"rate_limit\""))
        .filter(|l| l.contains(&tenant) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn outcome(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    decisions(s, tenant, &[&format!("outcome=\"{outcome}\"")])
}

#[test]
fn two_proxies_share_one_global_limit_per_tenant_and_per_key() {
    // 150 per minute for acme (one window spans the test), 5 per key,
    // 1000 for beta: acme's exhaustion must not touch beta.
    let limits = [
        limit(
            "acme-tenant",
            150,
            60,
            &[("kind", "tenant"), ("tenant", "acme")],
            None,
        ),
        limit(
            "beta-tenant",
            1000,
            60,
            &[("kind", "tenant"), ("tenant", "beta")],
            None,
        ),
        limit("per-key", 5, 60, &[("kind", "per-key")], Some("api_key")),
    ];
    // Each proxy has its own service (as Limitador replicas), both counting
    // in one Redis.
    let redis = Redis::start();
    let (rls_a, rls_b) = (
        Rls::start_on(&redis, &limits),
        Rls::start_on(&redis, &limits),
    );
    let p = profile(global("allow", 2000), global("allow", 2000));
    let (a, b) = (proxy(&p, rls_a.port), proxy(&p, rls_b.port));
    // Three times the quota over 10 s, alternating between the proxies.
    let start = Instant::now();
    let total = 450;
    let mut admitted = 0;
    for i in 0..total {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = s.get("/", &[ACME]);
        match r.status {
            200 => admitted += 1,
            429 => {
                assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
                assert!(
                    r.header("ratelimit")
                        .is_some_and(|v| v.contains("acme-tenant")),
                    "{:?}",
                    r.headers
                );
                assert_eq!(
                    r.header("x-ratelimit-service"),
                    Some("limitador"),
                    "the service's headers"
                );
            }
            other => panic!("unexpected {other}: {}\n{}", r.text(), s.envoy.log()),
        }
        let due = Duration::from_millis(10_000 * (i + 1) / total);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    assert!(
        (147..=153).contains(&admitted),
        "admitted {admitted} of {total}, global quota 150\n{}",
        a.envoy.log()
    );
    // Both proxies counted, each through its own service, in one Redis.
    assert!(rls_a.calls() >= 200 && rls_b.calls() >= 200);
    assert!(redis.keys() >= 1, "the counters live in Redis");
    for s in [&a, &b] {
        assert!(
            outcome(s, "acme", "global_limited") > 100.0,
            "{}",
            s.envoy.prometheus()
        );
        assert!(outcome(s, "acme", "global_allowed") > 50.0);
        assert_eq!(outcome(s, "acme", "global_error"), 0.0);
        assert!(
            decisions(
                s,
                "acme",
                &["limit=\"tenant\"", "outcome=\"global_limited\""]
            ) > 0.0
        );
    }
    // Tenant isolation: beta is not limited by acme's exhausted quota.
    assert_eq!(a.get("/", &[BETA]).status, 200);
    // The service's request header reached the upstream.
    assert_eq!(a.echo.last().unwrap().header("x-global-checked"), Some("1"));
    // Per-key descriptors: each key its own 5, across both proxies.
    let per_key = |key: &str| {
        (0..8)
            .filter(|i| {
                let s = if i % 2 == 0 { &a } else { &b };
                s.get("/", &[BETA, ("x-api-key", key)]).status == 200
            })
            .count()
    };
    assert_eq!(per_key("k1"), 5);
    assert_eq!(per_key("k2"), 5, "another key is independent");
}

/// The service down, slow (past the timeout) or answering junk: a tenant
/// with `failure_mode: allow` goes on, one with `deny` gets a 503; nothing
/// hangs, and the counters say which failure it was.
#[test]
fn service_failures_follow_each_tenants_failure_mode() {
    let mut rls = Rls::start(&[limit("acme-tenant", 1000, 60, &[("kind", "tenant")], None)]);
    let p = profile(global("allow", 150), global("deny", 150));
    let s = proxy(&p, rls.port);
    assert_eq!(s.get("/", &[ACME]).status, 200);
    let timed = |host: (&str, &str)| {
        let t = Instant::now();
        let status = s.get("/", &[host]).status;
        (status, t.elapsed())
    };
    // Slow: past the 150 ms timeout.
    rls.set_mode(Mode::Slow(Duration::from_millis(600)));
    for (host, want) in [(ACME, 200), (BETA, 503)] {
        let (status, took) = timed(host);
        assert_eq!(status, want, "slow service, {host:?}\n{}", s.envoy.log());
        assert!(took < Duration::from_secs(2), "waited {took:?}");
    }
    // Counters reach Envoy on the VM's next tick.
    let counted = |tenant: &str, what: &str, n: f64| {
        meshware_e2e::eventually(3, || outcome(&s, tenant, what) >= n)
    };
    let show = || {
        s.envoy
            .prometheus()
            .lines()
            .filter(|l| l.contains("global"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(counted("acme", "global_timeout", 1.0), "{}", show());
    assert!(counted("beta", "global_timeout", 1.0), "{}", show());
    assert!(counted("beta", "global_denied", 1.0), "{}", show());
    // Junk: not a RateLimitResponse.
    rls.set_mode(Mode::Junk);
    assert_eq!(timed(ACME).0, 200);
    assert_eq!(timed(BETA).0, 503);
    assert!(counted("acme", "global_error", 1.0), "{}", show());
    // The service's Redis gone: it answers UNAVAILABLE, as Limitador does.
    rls.set_mode(Mode::Normal);
    rls.stop_redis();
    for (host, want) in [(ACME, 200), (BETA, 503)] {
        let (status, took) = timed(host);
        assert_eq!(status, want, "the service's storage down, {host:?}");
        assert!(took < Duration::from_secs(2), "waited {took:?}");
    }
    assert!(counted("acme", "global_error", 2.0), "{}", show());
    assert!(counted("beta", "global_denied", 3.0), "{}", show());
    // The service down.
    drop(rls);
    for (host, want) in [(ACME, 200), (BETA, 503)] {
        let (status, took) = timed(host);
        assert_eq!(status, want, "service down, {host:?}");
        assert!(took < Duration::from_secs(2), "waited {took:?}");
    }
    assert!(counted("acme", "global_error", 3.0), "{}", show());
    // The latency histogram has every call (Envoy merges histograms on
    // its stats flush, every 5 s).
    let calls = || {
        s.metric("meshware_global_rate_limit_ms_count{filter=\"rate_limit\",tenant=\"acme\"}")
            .unwrap_or(0.0)
    };
    assert!(meshware_e2e::eventually(8, || calls() >= 5.0), "{}", show());
}

/// A request over a local limit never costs a call.
#[test]
fn local_limits_decide_first() {
    let rls = Rls::start(&[limit("acme-tenant", 1000, 60, &[("kind", "tenant")], None)]);
    let mut acme = global("allow", 1000);
    acme["limits"] =
        json!([{"name": "local", "key": "tenant", "rate": 3, "per": "minute", "burst": 3}]);
    let s = proxy(&profile(acme, json!({})), rls.port);
    let statuses: Vec<u16> = (0..6).map(|_| s.get("/", &[ACME]).status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429, 429]);
    assert_eq!(rls.calls(), 3, "the locally limited requests made no call");
}

/// Envoy's own ratelimit filter, given the same descriptors, counts on the
/// same limit as the wasm filter: they speak the same protocol.
#[test]
fn envoys_native_ratelimit_filter_counts_on_the_same_limits() {
    let rls = Rls::start(&[limit(
        "acme-tenant",
        10,
        60,
        &[("kind", "tenant"), ("tenant", "acme")],
        None,
    )]);
    let p = profile(global("allow", 2000), json!({}));
    let ours = proxy(&p, rls.port);
    let port = rls.port;
    let native = Suite::start_edited(&p, &["rate_limit"], move |config| {
        meshware_e2e::suite::add_cluster(
            config,
            meshware_cli::bootstrap::grpc_cluster("rls", port),
        );
        let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        hcm["http_filters"] = json!([
            {"name": "envoy.filters.http.ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domain": "meshware", "failure_mode_deny": true, "timeout": "2s",
                "rate_limit_service": {"transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ]);
        // The descriptor the wasm filter sends for acme's `tenant`:
        // [("kind", "tenant"), ("tenant", "acme")].
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .unwrap()
        {
            if route["route"].is_object() {
                route["route"]["rate_limits"] = json!([{"actions": [
                    {"generic_key": {"descriptor_key": "kind", "descriptor_value": "tenant"}},
                    {"generic_key": {"descriptor_key": "tenant", "descriptor_value": "acme"}}
                ]}]);
            }
        }
    });
    let admitted =
        |s: &Suite, n: usize| (0..n).filter(|_| s.get("/", &[ACME]).status == 200).count();
    assert_eq!(admitted(&ours, 6), 6);
    assert_eq!(admitted(&native, 10), 4, "{}", native.envoy.log());
    assert_eq!(admitted(&ours, 3), 0, "the native filter spent the rest");
}

/// A gRPC client limited by the service gets `RESOURCE_EXHAUSTED` with the
/// RateLimit fields as metadata; a gRPC client of a tenant that denies on
/// failure gets `UNAVAILABLE` when the service is down.
#[test]
fn grpc_clients_get_grpc_statuses() {
    use meshware_e2e::grpc::{call, GrpcServer};
    let rls = Rls::start(&[limit(
        "acme-tenant",
        2,
        60,
        &[("kind", "tenant"), ("tenant", "acme")],
        None,
    )]);
    let server = GrpcServer::start();
    let port = rls.port;
    let s = Suite::start_grpc_edited(
        &profile(global("allow", 2000), global("deny", 300)),
        &["rate_limit"],
        server.port,
        meshware_cli::bootstrap::Protocol::Http2,
        move |config| {
            meshware_e2e::suite::add_cluster(
                config,
                meshware_cli::bootstrap::grpc_cluster("rls", port),
            );
        },
    );
    let acme = ["--authority", "a.example"];
    let codes: Vec<String> = (0..3)
        .map(|_| call(s.port, "Unary", "hi", &acme))
        .map(|v| v["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        codes,
        ["OK", "OK", "RESOURCE_EXHAUSTED"],
        "{}",
        s.envoy.log()
    );
    let limited = call(s.port, "Unary", "hi", &acme);
    assert!(
        limited["trailing_metadata"]["ratelimit"]
            .as_str()
            .is_some_and(|v| v.contains("acme-tenant")),
        "{limited}"
    );
    drop(rls);
    let down = call(s.port, "Unary", "hi", &["--authority", "b.example"]);
    assert_eq!(down["code"], "UNAVAILABLE", "{down}");
}

/// A client that goes away while its request waits for the service leaves
/// nothing held: the stream ends, the proxy serves on.
#[test]
fn a_client_gone_while_its_request_waits_leaves_nothing_behind() {
    use std::io::Write;
    let rls = Rls::start(&[limit("acme-tenant", 1000, 60, &[("kind", "tenant")], None)]);
    rls.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let s = proxy(&profile(global("allow", 3000), json!({})), rls.port);
    for _ in 0..4 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(c, "GET / HTTP/1.1\r\nhost: a.example\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(c);
    }
    let active = || {
        s.metric("envoy_http_downstream_rq_active{envoy_http_conn_manager_prefix=\"ingress\"}")
            .unwrap_or(-1.0)
    };
    assert!(
        meshware_e2e::eventually(5, || active() == 0.0),
        "streams still active: {}",
        active()
    );
    rls.set_mode(Mode::Normal);
    assert_eq!(s.get("/", &[ACME]).status, 200);
    assert_eq!(
        s.echo.count(),
        1,
        "the abandoned requests never reached the upstream"
    );
    // The slow answers to the abandoned calls (1.5 s) come to nothing.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(s.get("/", &[ACME]).status, 200);
    assert!(!s.envoy.log().contains("panic"), "{}", s.envoy.log());
}
