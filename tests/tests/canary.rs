//! canary through real Envoy: two upstream clusters (stable `echo`, canary
//! `echo-canary`) and a route matching `x-route-version: v2`, rendered from
//! the example profile. Expected placements come from the fixed hash in the
//! common crate (native), so agreement proves wasm and native hash alike.

use meshware_common::bucket::bucket;
use meshware_e2e::envoy::expect_rejected;
use meshware_e2e::suite::{bootstrap, Suite};

const ACME: (&str, &str) = ("host", "shop.acme.example");

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start(profile: &str) -> Suite {
    Suite::start_with_canary(profile, &["trace_context", "canary"])
}

/// Sends one acme request for `user` and returns which upstream got it.
fn lands_on(s: &Suite, user: &str, extra: &[(&str, &str)]) -> &'static str {
    let canary = s.canary.as_ref().unwrap();
    let (stable_before, canary_before) = (s.echo.count(), canary.count());
    let mut headers = vec![ACME, ("x-user-id", user)];
    headers.extend_from_slice(extra);
    let r = s.get("/shop", &headers);
    assert_eq!(r.status, 200, "{}", r.text());
    let stable_hit = s.echo.count() - stable_before;
    let canary_hit = canary.count() - canary_before;
    let (name, seen) = match (stable_hit, canary_hit) {
        (1, 0) => ("v1", s.echo.last().unwrap()),
        (0, 1) => ("v2", canary.last().unwrap()),
        other => panic!("request hit {other:?} upstreams"),
    };
    // The upstream sees the decision, and acme echoes it back.
    assert_eq!(seen.header("x-route-version"), Some(name));
    assert_eq!(r.header("x-route-version"), Some(name));
    name
}

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"canary\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

/// The example profile's catch-all rule: 5% of users, salt "v2".
fn expected(user: &str, basis_points: u32) -> &'static str {
    if bucket("v2", user.as_bytes()) < basis_points {
        "v2"
    } else {
        "v1"
    }
}

#[test]
fn users_land_where_the_native_hash_says_and_stay_there() {
    let s = start(&profile());
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut first = Vec::new();
    for u in &users {
        let got = lands_on(&s, u, &[]);
        assert_eq!(got, expected(u, 500), "{u}");
        first.push(got);
    }
    let in_canary = first.iter().filter(|v| **v == "v2").count();
    assert!(in_canary > 0, "no canary user among 300 at 5%");
    // Sticky across requests (and across both workers).
    for (u, v) in users.iter().zip(&first).take(100) {
        assert_eq!(lands_on(&s, u, &[]), *v, "{u}");
    }
    let repeated = first.iter().take(100).filter(|v| **v == "v2").count();
    assert_eq!(
        metric(&s, "acme", "version_v2"),
        (in_canary + repeated) as f64
    );
    drop(s);
    // Sticky across an Envoy restart: nothing but the hash decides.
    let s = start(&profile());
    for (u, v) in users.iter().zip(&first).take(100) {
        assert_eq!(lands_on(&s, u, &[]), *v, "{u} after restart");
    }
}

#[test]
fn ramping_from_5_to_10_percent_keeps_every_earlier_canary_user() {
    let users: Vec<String> = (0..400).map(|i| format!("ramp-{i}")).collect();
    let s = start(&profile());
    let at5: Vec<&str> = users.iter().map(|u| lands_on(&s, u, &[])).collect();
    drop(s);
    let ramped = profile().replace("\"percent\": 5\n", "\"percent\": 10\n");
    assert_ne!(
        ramped,
        profile(),
        "the example's 5% rule moved; update this test"
    );
    let s = start(&ramped);
    let at10: Vec<&str> = users.iter().map(|u| lands_on(&s, u, &[])).collect();
    for ((u, a), b) in users.iter().zip(&at5).zip(&at10) {
        if *a == "v2" {
            assert_eq!(*b, "v2", "{u} left the canary when the slice grew");
        }
        assert_eq!(*b, expected(u, 1000), "{u}");
    }
    let n5 = at5.iter().filter(|v| **v == "v2").count();
    let n10 = at10.iter().filter(|v| **v == "v2").count();
    assert!(n10 > n5, "{n5} -> {n10}");
}

#[test]
fn a_spoofed_routing_header_is_replaced() {
    let s = start(&profile());
    let stable_user = (0..)
        .map(|i| format!("s{i}"))
        .find(|u| expected(u, 500) == "v1")
        .unwrap();
    assert_eq!(
        lands_on(&s, &stable_user, &[("x-route-version", "v2")]),
        "v1"
    );
    // The first meshware filter removed the client's value before canary
    // ran (docs/SECURITY.md): canary never saw one to replace.
    assert_eq!(metric(&s, "acme", "routing_header_replaced"), 0.0);
    // A tenant without rules still gets the routing header set to its default.
    let r = s.get("/", &[("x-route-version", "v2")]);
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().header("x-route-version"), Some("v1"));
    assert_eq!(s.canary.as_ref().unwrap().count(), 0);
}

#[test]
fn in_list_regex_and_group_rules_route_to_canary() {
    let s = start(&profile());
    let stable_user = (0..)
        .map(|i| format!("g{i}"))
        .find(|u| bucket("v2", u.as_bytes()) >= 2000)
        .unwrap();
    assert_eq!(
        lands_on(&s, &stable_user, &[("x-env-tag", "nightly")]),
        "v2"
    );
    assert_eq!(lands_on(&s, &stable_user, &[("x-env-tag", "prod")]), "v1");
    assert_eq!(
        lands_on(&s, &stable_user, &[("cookie", "a=b; build=rc-42")]),
        "v2"
    );
    assert_eq!(
        lands_on(&s, &stable_user, &[("cookie", "build=rc-x")]),
        "v1"
    );
    // beta group: 20% slice; this user is outside it.
    assert_eq!(
        lands_on(&s, &stable_user, &[("x-user-group", "beta")]),
        "v1"
    );
    let beta_user = (0..)
        .map(|i| format!("b{i}"))
        .find(|u| (500..2000).contains(&bucket("v2", u.as_bytes())))
        .unwrap();
    assert_eq!(lands_on(&s, &beta_user, &[("x-user-group", "beta")]), "v2");
    assert_eq!(lands_on(&s, &beta_user, &[]), "v1");
}

#[test]
fn the_override_header_needs_an_allowed_group() {
    let s = start(&profile());
    let user = (0..)
        .map(|i| format!("o{i}"))
        .find(|u| expected(u, 500) == "v1")
        .unwrap();
    assert_eq!(lands_on(&s, &user, &[("x-canary-override", "v2")]), "v1");
    assert_eq!(
        lands_on(
            &s,
            &user,
            &[("x-canary-override", "v2"), ("x-user-group", "qa")]
        ),
        "v2"
    );
    assert_eq!(
        s.canary
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .header("x-canary-override"),
        None,
        "the override header is for the proxy only"
    );
    assert_eq!(metric(&s, "acme", "override"), 1.0);
    assert_eq!(metric(&s, "acme", "override_denied"), 1.0);
}

#[test]
fn invalid_regex_and_percent_over_100_are_rejected_with_their_paths() {
    let profile = r#"{
      "tenancy": {"default": "acme"},
      "tenants": {"acme": {"canary": {"rules": [
        {"version": "v2", "when": [{"header": "x-g", "regex": "([a-z"}]},
        {"version": "v2", "percent": 120},
        {"version": "v2", "when": [{"header": "x-g", "regex": "(?i)beta"}]}
      ]}}}
    }"#;
    let (config, _, _) = bootstrap(profile, &["canary"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    for line in [
        "tenants.acme.canary.rules[0].when[0].regex: invalid regex",
        "tenants.acme.canary.rules[1].percent: must be <= 100",
        // Outside the supported subset: an error, never a silent difference.
        "tenants.acme.canary.rules[2].when[0].regex: invalid regex: inline flags",
    ] {
        assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
    }
}
