//! rate-limit through real Envoy (`--concurrency 2`: two workers share every
//! bucket through shared data) with the example profile: acme has a tenant
//! limit, a per-client limit (5/s, burst 10) and a route limit on POST
//! /orders; globex one tenant-wide 100/s; initech a per-API-key limit with
//! 50 key slots; public a per-client limit in shadow mode.

use meshware_e2e::envoy::expect_rejected;
use meshware_e2e::http;
use meshware_e2e::suite::{bootstrap, Suite};
use std::time::{Duration, Instant};

const ACME: (&str, &str) = ("host", "shop.acme.example");
const GLOBEX: (&str, &str) = ("host", "api.globex.example");

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start(profile: &str) -> Suite {
    Suite::start(profile, &["trace_context", "rate_limit"])
}

fn metric(s: &Suite, tenant: &str, limit: Option<&str>, outcome: &str) -> f64 {
    let sample = match limit {
        Some(l) => format!(
            "meshware_decisions{{filter=\"rate_limit\",tenant=\"{tenant}\",limit=\"{l}\",outcome=\"{outcome}\"}}"
        ),
        None => format!(
            "meshware_decisions{{filter=\"rate_limit\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
        ),
    };
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

/// Sends requests until the first non-200 (at most `max`); returns how many
/// were allowed, the elapsed time and the final response.
fn until_limited(
    s: &Suite,
    max: usize,
    mut headers: impl FnMut(usize) -> Vec<(String, String)>,
) -> (usize, f64, meshware_e2e::http::Response) {
    let start = Instant::now();
    for i in 0..max {
        let owned = headers(i);
        let h: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = s.get("/shop", &h);
        if r.status != 200 {
            return (i, start.elapsed().as_secs_f64(), r);
        }
    }
    panic!("never limited in {max} requests");
}

/// Burst plus what the rate refilled meanwhile (5/s), plus one for rounding.
fn within_burst(allowed: usize, elapsed: f64) -> bool {
    allowed >= 10 && allowed as f64 <= 10.0 + 5.0 * elapsed + 1.0
}

fn acme() -> Vec<(String, String)> {
    vec![("host".into(), "shop.acme.example".into())]
}

#[test]
fn burst_then_refill_with_standard_fields() {
    let s = start(&profile());
    let r = s.get("/shop", &[ACME]);
    // acme asks for the fields on allowed responses too.
    assert_eq!(r.header("ratelimit"), Some("\"per_client\";r=9;t=1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"per_client\";q=5;w=1"));
    let (allowed, elapsed, r) = until_limited(&s, 40, |_| acme());
    let allowed = allowed + 1;
    assert!(within_burst(allowed, elapsed), "{allowed} in {elapsed:.2}s");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"per_client\";q=5;w=1"));
    // `t`: until the quota is whole again (10 tokens at 5/s), not until
    // the next token (that is Retry-After).
    assert_eq!(r.header("ratelimit"), Some("\"per_client\";r=0;t=2"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["type"], "urn:meshware:problem:quota-exceeded");
    assert_eq!(body["status"], 429);
    assert_eq!(s.echo.count(), allowed);
    // 5 per second: a token is back after 200 ms.
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(s.get("/shop", &[ACME]).status, 200);
    assert_eq!(metric(&s, "acme", Some("per_client"), "limited"), 1.0);
    assert_eq!(
        metric(&s, "acme", Some("per_client"), "allowed"),
        (allowed + 1) as f64
    );
    assert_eq!(metric(&s, "acme", None, "limited"), 1.0);
}

#[test]
fn a_route_limit_and_the_client_limit_apply_together() {
    let s = start(&profile());
    let host: (&str, &[u8]) = ("host", b"shop.acme.example");
    assert_eq!(s.send("POST", "/orders", &[host], b"{}").status, 200);
    let last = s.send("POST", "/orders", &[host], b"{}");
    assert_eq!(last.status, 200);
    let r = s.send("POST", "/orders", &[host], b"{}");
    assert_eq!(r.status, 429);
    // One definition of `t` (seconds until the quota resets) on both: the
    // last admitted answer and the refusal right after it agree.
    let t = |r: &meshware_e2e::http::Response| -> i64 {
        let v = r.header("ratelimit").unwrap_or("");
        v.rsplit("t=")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    assert!(
        last.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"orders_write\";r=0;")),
        "{:?}",
        last.headers
    );
    assert!(
        (t(&last) - t(&r)).abs() <= 1 && t(&r) >= 59,
        "{} vs {}",
        t(&last),
        t(&r)
    );
    assert_eq!(r.header("retry-after"), Some("30"), "one token: 30 s");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"orders_write\";q=2;w=60")
    );
    // Reads of the same route are not limited by the write limit.
    assert_eq!(s.get("/orders", &[ACME]).status, 200);
    assert_eq!(metric(&s, "acme", Some("orders_write"), "limited"), 1.0);
    assert_eq!(metric(&s, "acme", Some("per_client"), "allowed"), 4.0);
}

#[test]
fn forwarded_for_does_not_change_the_client_key() {
    let s = start(&profile());
    // A new XFF value (or tenant header) on every request: if either bought
    // a fresh bucket, the client would never be limited.
    let (allowed, elapsed, r) = until_limited(&s, 40, |i| {
        let mut h = acme();
        h.push(("x-forwarded-for".into(), format!("198.51.100.{i}")));
        h.push(("x-tenant-id".into(), "globex".into()));
        h
    });
    assert_eq!(r.status, 429);
    assert!(within_burst(allowed, elapsed), "{allowed} in {elapsed:.2}s");
}

#[test]
fn clients_behind_a_trusted_proxy_are_isolated() {
    // One trusted hop in front: the client is the XFF entry left of the one
    // Envoy appends.
    let profile = profile().replace(
        "\"response_headers\": true,",
        "\"response_headers\": true, \"xff_trusted_hops\": 1,",
    );
    let s = start(&profile);
    let (allowed, elapsed, r) = until_limited(&s, 40, |_| {
        let mut h = acme();
        h.push(("x-forwarded-for".into(), "203.0.113.1".into()));
        h
    });
    assert_eq!(r.status, 429);
    assert!(within_burst(allowed, elapsed), "{allowed} in {elapsed:.2}s");
    assert_eq!(
        s.get("/", &[ACME, ("x-forwarded-for", "203.0.113.2")])
            .status,
        200
    );
}

#[test]
fn one_tenant_exhausting_its_quota_leaves_another_untouched() {
    let s = start(&profile());
    let (_, _, r) = until_limited(&s, 40, |_| acme());
    assert_eq!(r.status, 429);
    for _ in 0..20 {
        assert_eq!(s.get("/", &[GLOBEX]).status, 200);
    }
}

#[test]
fn shadow_mode_counts_without_rejecting() {
    let s = start(&profile());
    for _ in 0..8 {
        assert_eq!(s.get("/", &[]).status, 200);
    }
    assert!(metric(&s, "public", Some("per_client"), "shadow_limited") >= 5.0);
    assert!(metric(&s, "public", None, "shadow_limited") >= 5.0);
    assert_eq!(metric(&s, "public", None, "limited"), 0.0);
    assert_eq!(s.echo.count(), 8);
}

#[test]
fn thousands_of_random_keys_cannot_evict_a_live_bucket() {
    let s = start(&profile());
    let path = "/t/initech/items";
    assert_eq!(s.get(path, &[("x-api-key", "established")]).status, 200);
    let mut statuses = [0usize; 2];
    for i in 0..2000u32 {
        let key = format!("rnd-{:08x}", i.wrapping_mul(2654435761));
        match s.get(path, &[("x-api-key", &key)]).status {
            200 => statuses[0] += 1,
            429 => statuses[1] += 1,
            other => panic!("status {other}"),
        }
    }
    // 50 slots (two candidates each): once they are busy, new keys share
    // the overflow bucket (burst 3), so most of the flood is limited ...
    assert!(statuses[1] > 1500, "{statuses:?}");
    assert!(metric(&s, "initech", None, "key_overflow") > 1500.0);
    // ... while the key that was there first keeps its own bucket.
    assert_eq!(s.get(path, &[("x-api-key", "established")]).status, 200);
    assert_eq!(s.get(path, &[("x-api-key", "established")]).status, 200);
    assert_eq!(s.get(path, &[("x-api-key", "established")]).status, 429);
}

#[test]
fn admitted_count_matches_the_budget_across_workers() {
    let s = start(&profile());
    let port = s.port;
    let run_for = Duration::from_secs(10);
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut limited) = (0u64, 0u64);
                while start.elapsed() < run_for {
                    match http::get(port, "/", &[GLOBEX]).map(|r| r.status) {
                        Ok(200) => ok += 1,
                        Ok(429) => limited += 1,
                        other => panic!("{other:?}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for w in workers {
        let (a, b) = w.join().unwrap();
        ok += a;
        limited += b;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // burst 100 up front, then 100 per second.
    let budget = 100.0 + 100.0 * elapsed;
    let error = (ok as f64 - budget) / budget;
    println!(
        "admitted {ok} of {} in {elapsed:.2}s, budget {budget:.0}, error {:+.2}%",
        ok + limited,
        error * 100.0
    );
    assert!(
        limited > ok,
        "the load must exceed the limit: {ok} ok, {limited} limited"
    );
    assert!(error.abs() <= 0.02, "admitted {ok}, budget {budget:.0}");
}

#[test]
fn burst_zero_and_unknown_key_kind_are_rejected_with_their_paths() {
    let profile = r#"{
      "tenancy": {"default": "acme"},
      "tenants": {"acme": {"rate_limit": {"limits": [
        {"name": "a", "key": "tenant", "rate": 10, "burst": 0},
        {"name": "b", "key": "planet", "rate": 10, "burst": 5}
      ]}}}
    }"#;
    let (config, _, _) = bootstrap(profile, &["rate_limit"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    for line in [
        "tenants.acme.rate_limit.limits[0].burst: must be >= 1",
        "tenants.acme.rate_limit.limits[1].key: unknown key kind",
    ] {
        assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
    }
}
