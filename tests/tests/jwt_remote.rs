//! jwt-auth's callouts through real Envoy: remote JWKS fetched through a
//! cluster (first fetch, waiting requests, 500 / junk / timeout, rotation,
//! stale-while-error) and the external auth check (allow, deny, timeout with
//! both fallbacks, missing cluster). The JWKS documents and tokens are the
//! ones PyJWT minted (filters/jwt-auth/testdata/vectors.json).

use meshware_e2e::echo::{Canned, Echo};
use meshware_e2e::http::Response;
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn vectors() -> Value {
    meshware_e2e::jwt_vectors()
}

fn token(name: &str) -> String {
    meshware_e2e::jwt_token(name)
}

/// A JWKS holding the minted keys with these kids.
fn jwks(kids: &[&str]) -> Vec<u8> {
    let v = vectors();
    let keys: Vec<Value> = v["jwks"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

fn remote_provider(path: &str, extra: Value) -> Value {
    let v = vectors();
    let mut remote = json!({"cluster": "idp", "path": path, "timeout_ms": 400,
                            "refetch_interval_s": 1, "wait_ms": 1500});
    for (k, val) in extra.as_object().unwrap() {
        remote[k] = val.clone();
    }
    json!({"issuer": v["issuer"], "audiences": [v["audience"]],
           "algorithms": ["RS256", "PS256", "ES256"], "remote_jwks": remote})
}

fn inline_provider() -> Value {
    let v = vectors();
    json!({"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
           "algorithms": ["RS256", "ES256"]})
}

/// A shared host: the verified `tenant` claim picks the tenant (opt-in).
fn shared_provider() -> Value {
    let mut p = inline_provider();
    p["tenant_claim"] = json!("tenant");
    p["tenant_from_claim"] = json!(true);
    p
}

fn profile() -> String {
    let tenants = json!({
        "rotating": {"jwt_auth": {"providers": [remote_provider("/jwks/rotating", json!({"ttl_s": 2}))]}},
        "failing": {"jwt_auth": {"providers": [remote_provider("/jwks/failing", json!({"unavailable_status": 401}))]}},
        "junk": {"jwt_auth": {"providers": [remote_provider("/jwks/junk", json!({}))]}},
        "slow": {"jwt_auth": {"providers": [remote_provider("/jwks/slow", json!({"timeout_ms": 300}))]}},
        "delayed": {"jwt_auth": {"providers": [remote_provider("/jwks/delayed", json!({"timeout_ms": 5000, "wait_ms": 5000}))]}},
        "stuck": {"jwt_auth": {"providers": [remote_provider("/jwks/stuck", json!({"timeout_ms": 10000, "wait_ms": 600}))]}},
        "stale": {"jwt_auth": {"providers": [remote_provider("/jwks/stale", json!({"ttl_s": 1}))]}},
        "ext": {"jwt_auth": {"external": {"cluster": "authz", "path_prefix": "/authz",
                                          "copy_headers": ["x-auth-user"]}}},
        "extfallback": {"jwt_auth": {"providers": [inline_provider()],
                                     "external": {"cluster": "authz", "path_prefix": "/slow-authz",
                                                  "on_error": "local_jwt"}}},
        "extmissing": {"jwt_auth": {"external": {"cluster": "no-such-cluster"}}},
        "globex": {},
        // ttl 2 s, refetch interval 10 s: revocation must follow the TTL.
        "revoke": {"jwt_auth": {"providers": [remote_provider("/jwks/revoke", json!({"ttl_s": 2, "refetch_interval_s": 10}))]}},
        // Down at first, back at once: the first fetch is retried quickly.
        "flaky": {"jwt_auth": {"providers": [remote_provider("/jwks/flaky", json!({"refetch_interval_s": 10, "wait_ms": 100}))]}},
        // Claims allowed, but its own host names it.
        "claimhost": {"jwt_auth": {"providers": [shared_provider()]}},
        "shared": {"jwt_auth": {"providers": [shared_provider()],
                                "rules": [{"prefix": "/public", "requirement": "optional"}]}}
    });
    let hosts: serde_json::Map<String, Value> = tenants
        .as_object()
        .unwrap()
        .keys()
        // The shared host is nobody's: its requests fall to the default
        // tenant, where a verified claim may name the tenant.
        .filter(|t| *t != "shared")
        .map(|t| (format!("{t}.example"), json!(t)))
        .collect();
    json!({"tenancy": {"hosts": hosts, "default": "shared",
                       "header": {"name": "x-tenant-id", "trusted": false}},
           "tenants": tenants})
    .to_string()
}

fn services() -> Echo {
    let idp = Echo::start(0).expect("services");
    idp.script("/jwks/rotating", Canned::new(200, &jwks(&["rsa-1"])));
    idp.script("/jwks/failing", Canned::new(500, b"internal error"));
    idp.script(
        "/jwks/junk",
        Canned::new(200, b"<html>not a key set</html>"),
    );
    idp.script(
        "/jwks/slow",
        Canned::new(200, &jwks(&["rsa-1"])).delay(1500),
    );
    idp.script(
        "/jwks/delayed",
        Canned::new(200, &jwks(&["rsa-1"])).delay(1500),
    );
    idp.script(
        "/jwks/stuck",
        Canned::new(200, &jwks(&["rsa-1"])).delay(8000),
    );
    idp.script("/jwks/stale", Canned::new(200, &jwks(&["rsa-1"])));
    idp.script(
        "/jwks/revoke",
        Canned::new(200, &jwks(&["rsa-1", "ec-256"])),
    );
    idp.script("/jwks/flaky", Canned::new(500, b"starting up"));
    idp.script(
        "/authz/allowed",
        Canned::new(200, b"").header("x-auth-user", "carol"),
    );
    idp.script("/authz/denied", Canned::new(403, b"no"));
    idp.script(
        "/authz/unauthenticated",
        Canned::new(401, b"").header("www-authenticate", "Basic realm=\"x\""),
    );
    idp.script("/authz/broken", Canned::new(500, b""));
    idp.script("/slow-authz", Canned::new(200, b"").delay(1000));
    idp
}

fn start() -> Suite {
    Suite::start_with_services(&profile(), &["jwt_auth"], services(), &["idp", "authz"])
}

fn call(s: &Suite, tenant: &str, path: &str, bearer: Option<&str>) -> Response {
    let host = format!("{tenant}.example");
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut h = vec![
        ("host", host.as_str()),
        ("x-auth-user", "mallory"),
        ("x-user-id", "mallory"),
    ];
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    s.get(path, &h)
}

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"jwt_auth\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample).unwrap_or(0.0)
}

fn services_of(s: &Suite) -> &Echo {
    s.services.as_ref().unwrap()
}

#[test]
fn remote_keys_verify_tokens_and_rotation_follows_the_key_set() {
    let s = start();
    let rs = token("valid RS256");
    let r = call(&s, "rotating", "/orders", Some(&rs));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log());
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    let fetches = services_of(&s).requests_to("/jwks/rotating");
    assert!(!fetches.is_empty());
    assert_eq!(fetches[0].method, "GET");
    assert_eq!(fetches[0].header("host"), Some("idp"));
    // Two workers, one shared key set: fetches stay few (first fetch, TTL refreshes).
    assert!(fetches.len() <= 4, "{} fetches", fetches.len());

    // The IdP rotates: both keys during the grace period. A token signed
    // with the new kid triggers an immediate (rate-limited) refetch.
    services_of(&s).script(
        "/jwks/rotating",
        Canned::new(200, &jwks(&["rsa-1", "ec-256"])),
    );
    let es = token("valid ES256");
    assert!(
        meshware_e2e::eventually(5, || call(&s, "rotating", "/orders", Some(&es)).status
            == 200),
        "the new kid is accepted after a refetch:\n{}",
        s.envoy.log()
    );
    assert_eq!(
        call(&s, "rotating", "/orders", Some(&rs)).status,
        200,
        "old kid during grace"
    );
    // Then the old key is withdrawn: after the TTL refresh it is refused
    // (tokens verified before stay cached per worker until they expire, so
    // check with a token never seen: the PS256 vector, same RSA key).
    services_of(&s).script("/jwks/rotating", Canned::new(200, &jwks(&["ec-256"])));
    let fresh_rs = token("valid PS256");
    assert!(
        meshware_e2e::eventually(8, || call(&s, "rotating", "/orders", Some(&fresh_rs))
            .status
            == 401),
        "the withdrawn kid is refused after the refresh:\n{}",
        s.envoy.log()
    );
    assert!(metric(&s, "rotating", "jwks_fetch_ok") >= 2.0);
}

#[test]
fn a_key_set_that_cannot_be_fetched_gives_the_configured_status() {
    let s = start();
    let rs = token("valid RS256");
    // 500 from the JWKS server, unavailable_status 401.
    let r = call(&s, "failing", "/orders", Some(&rs));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap_or("")
        .contains("invalid_token"));
    assert!(r.text().contains("signing keys are unavailable"));
    // Junk: 503 (the default).
    let r = call(&s, "junk", "/orders", Some(&rs));
    assert_eq!(r.status, 503, "{}", r.text());
    // A JWKS server slower than the fetch timeout: 503 after the timeout,
    // not after the server's delay.
    let started = Instant::now();
    let r = call(&s, "slow", "/orders", Some(&rs));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.echo.count(), 0, "nothing reached the upstream");
    for tenant in ["failing", "junk", "slow"] {
        assert!(metric(&s, tenant, "jwks_fetch_failed") >= 1.0, "{tenant}");
        assert!(
            metric(&s, tenant, "denied_keys_unavailable") >= 1.0,
            "{tenant}"
        );
    }
}

#[test]
fn requests_wait_for_the_first_key_set_until_their_deadline() {
    let s = start();
    let rs = token("valid RS256");
    // The key set takes 1.5 s to arrive: the request is held, then passes.
    let started = Instant::now();
    let r = call(&s, "delayed", "/orders", Some(&rs));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log());
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "it waited: {:?}",
        started.elapsed()
    );
    // A key set that does not arrive: the wait ends at its deadline (600 ms,
    // checked on a 200 ms tick), long before the fetch's own timeout.
    let started = Instant::now();
    let r = call(&s, "stuck", "/orders", Some(&rs));
    assert_eq!(r.status, 503, "{}", r.text());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(3000),
        "{waited:?}"
    );
    assert!(metric(&s, "stuck", "denied_keys_unavailable") >= 1.0);
}

#[test]
fn the_last_good_key_set_stays_in_use_when_refreshes_fail() {
    let s = start();
    let rs = token("valid RS256");
    assert_eq!(call(&s, "stale", "/orders", Some(&rs)).status, 200);
    services_of(&s).script("/jwks/stale", Canned::new(500, b"down"));
    assert!(
        meshware_e2e::eventually(6, || metric(&s, "stale", "jwks_fetch_failed") >= 2.0),
        "refreshes were attempted and failed:\n{}",
        s.envoy.prometheus()
    );
    // A token never seen (no cache) still verifies against the stale keys.
    let r = call(&s, "stale", "/orders", Some(&token("valid PS256")));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn external_auth_allows_denies_and_falls_back() {
    let s = start();
    let r = call(&s, "ext", "/allowed/x", Some("opaque-session"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log());
    let seen = s.echo.last().unwrap();
    assert_eq!(
        seen.header("x-auth-user"),
        Some("carol"),
        "copied from the auth service"
    );
    assert_eq!(
        seen.header_count("x-auth-user"),
        1,
        "the client's value was stripped"
    );
    assert_eq!(seen.header("x-tenant-id"), Some("ext"));
    let check = services_of(&s).requests_to("/authz/allowed").pop().unwrap();
    assert_eq!(check.path, "/authz/allowed/x");
    assert_eq!(check.header("authorization"), Some("Bearer opaque-session"));
    assert_eq!(check.header("x-forwarded-host"), Some("ext.example"));
    assert_eq!(check.header("x-meshware-tenant"), Some("ext"));
    assert_eq!(
        check.header("x-auth-user"),
        None,
        "only the configured headers go out"
    );

    let r = call(&s, "ext", "/denied", Some("opaque-session"));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call(&s, "ext", "/unauthenticated", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"x\""));
    // 5xx with on_error deny: 503; so is a cluster Envoy does not know.
    assert_eq!(call(&s, "ext", "/broken", Some("x")).status, 503);
    assert_eq!(call(&s, "extmissing", "/orders", Some("x")).status, 503);
    assert_eq!(
        s.echo.count(),
        1,
        "only the allowed request reached the upstream"
    );

    // Timeout (200 ms default; the service takes 1 s) with local_jwt: a
    // valid token passes on local verification, a bad one is refused.
    let started = Instant::now();
    let r = call(&s, "extfallback", "/orders", Some(&token("valid RS256")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.echo.last().unwrap().header("x-user-id"), Some("alice"));
    assert_eq!(
        call(&s, "extfallback", "/orders", Some(&token("expired"))).status,
        401
    );
    assert!(metric(&s, "ext", "external_allowed") >= 1.0);
    assert!(metric(&s, "ext", "external_denied") >= 2.0);
    assert!(metric(&s, "ext", "external_error") >= 1.0);
    assert!(metric(&s, "extfallback", "external_error") >= 2.0);
}

#[test]
fn on_a_shared_host_the_verified_claim_names_the_tenant() {
    let s = start();
    // "other tenant" is a valid token whose tenant claim is globex.
    let spoof = [("host", "shared.example"), ("x-tenant-id", "ext")];
    let bearer = format!("Bearer {}", token("other tenant"));
    let mut h = spoof.to_vec();
    h.push(("authorization", bearer.as_str()));
    assert_eq!(s.get("/orders", &h).status, 200);
    assert_eq!(s.echo.last().unwrap().header("x-tenant-id"), Some("globex"));
    // A host that names a tenant keeps it: a token claiming another one is
    // refused (one tenant for the whole chain), as is the reserved `other`.
    let mut on_globex_host = vec![("host", "claimhost.example")];
    on_globex_host.push(("authorization", bearer.as_str()));
    assert_eq!(s.get("/orders", &on_globex_host).status, 403);
    let reserved = format!("Bearer {}", token("claims the reserved tenant"));
    let r = s.get(
        "/orders",
        &[
            ("host", "shared.example"),
            ("authorization", reserved.as_str()),
        ],
    );
    assert_eq!(r.status, 403);
    // Without a verified token nobody vouches for a tenant: the client's value goes.
    assert_eq!(s.get("/public/page", &spoof).status, 200);
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.path, "/public/page");
    assert_eq!(seen.header("x-tenant-id"), None);
}

/// A key withdrawn from the JWKS stops working within `ttl_s` plus one
/// fetch, on every worker, although the refetch interval is 10 s; one
/// fetch per refresh round for the whole proxy (two workers and the main
/// thread share a lease).
#[test]
fn a_withdrawn_key_stops_working_within_the_ttl_and_one_fetch_serves_the_proxy() {
    let s = start();
    let rs = token("valid RS256");
    assert_eq!(call(&s, "revoke", "/orders", Some(&rs)).status, 200);
    let before = services_of(&s).requests_to("/jwks/revoke").len();
    std::thread::sleep(std::time::Duration::from_millis(4_200));
    let rounds = services_of(&s).requests_to("/jwks/revoke").len() - before;
    // About two refresh rounds in 4.2 s at a 2 s TTL: one fetch each, not
    // one per thread (three threads would make six).
    assert!((1..=3).contains(&rounds), "{rounds} fetches in 4.2 s");
    services_of(&s).script("/jwks/revoke", Canned::new(200, &jwks(&["ec-256"])));
    let withdrawn = std::time::Instant::now();
    assert!(
        meshware_e2e::eventually(4, || {
            // Several requests: both workers must have switched.
            (0..6).all(|_| call(&s, "revoke", "/orders", Some(&rs)).status == 401)
        }),
        "the withdrawn key still works {:?} later",
        withdrawn.elapsed()
    );
    assert!(withdrawn.elapsed() < std::time::Duration::from_millis(3_500));
    assert_eq!(
        call(&s, "revoke", "/orders", Some(&token("valid ES256"))).status,
        200
    );
}

/// The key server answers 500 at first and is back soon after: the first
/// fetch is retried on a short backoff (not after the 10 s refetch
/// interval); the failure streak is logged once, the recovery too. A token
/// whose kid the key set lacks is 401, not "unavailable".
#[test]
fn a_failed_first_fetch_recovers_quickly_and_is_logged_once() {
    let s = start();
    let rs = token("valid RS256");
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    assert_eq!(call(&s, "flaky", "/orders", Some(&rs)).status, 503);
    services_of(&s).script("/jwks/flaky", Canned::new(200, &jwks(&["rsa-1"])));
    let back = std::time::Instant::now();
    assert!(
        meshware_e2e::eventually(6, || call(&s, "flaky", "/orders", Some(&rs)).status == 200),
        "{}",
        s.envoy.log()
    );
    assert!(
        back.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        back.elapsed()
    );
    let r = call(&s, "flaky", "/orders", Some(&token("unknown kid")));
    assert_eq!(r.status, 401, "{}", r.text());
    // Envoy writes its log in batches: wait for the recovery line.
    meshware_e2e::eventually(5, || {
        s.envoy.log().contains("/jwks/flaky: in use again after")
    });
    let log = s.envoy.log();
    let warnings = log.matches("/jwks/flaky: fetch failed: HTTP 500").count();
    // One line per failure streak, per thread that saw it fail.
    assert!((1..=3).contains(&warnings), "{warnings} warnings:\n{log}");
    assert!(log.contains("/jwks/flaky: in use again after"), "{log}");
    assert!(!log.contains("starting up"), "never the body");
}
