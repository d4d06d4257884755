//! The jwt-auth decision with tokens minted by PyJWT (tests/mint_tokens.py).

use crate::auth::*;
use crate::config::{parse, JwtSettings};
use meshware_common::path::RequestPath;
use meshware_common::store::MemoryStore;
use meshware_common::{CalloutResponse, Decision, Headers, TenantWrite};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../testdata/vectors.json")).unwrap()
}

fn token(name: &str) -> String {
    let v = vectors();
    let c = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    c["token"].as_str().unwrap().to_string()
}

fn settings_from(section: Value) -> (&'static JwtSettings, String) {
    let (s, e) = meshware_common::section::parse_alone(&section, "t", parse);
    (Box::leak(Box::new(s)), e)
}

fn settings() -> &'static JwtSettings {
    let v = vectors();
    let (s, e) = settings_from(json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                       "algorithms": ["RS256", "ES256", "EdDSA"], "tenant_claim": "tenant"}],
        "rules": [{"prefix": "/healthz", "requirement": "bypass"}, {"prefix": "/public", "requirement": "optional"}],
        "claim_to_headers": {"groups": "x-user-group"},
        "token_sources": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "session"}, {"query": "access_token"}],
        "strip_authorization": true
    }));
    assert_eq!(e, "");
    s
}

fn request(s: &'static JwtSettings, path: &str, extra: &[(&str, &str)]) -> Decision<'static> {
    let mut pairs = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    on_request(s, &req(&Headers::new(pairs)), &env_at(NOW))
}

fn tenants() -> &'static [String] {
    Box::leak(Box::new(vec![
        "umbrella".to_string(),
        "globex".to_string(),
        "other".to_string(),
    ]))
}

/// The request's path read as the host adapter reads it, for a tenant that
/// allows every ambiguous form (so every reading is judged).
fn path_of(headers: &Headers) -> &'static RequestPath {
    let raw = headers.get(":path").unwrap_or("/");
    Box::leak(Box::new(RequestPath::read_all(raw).unwrap()))
}

fn req(headers: &Headers) -> Request<'_> {
    Request {
        tenant: "umbrella",
        // A shared host: nothing but the default chose the tenant.
        tenant_source: meshware_common::tenancy::Source::Default,
        tenants: tenants(),
        headers,
        path: path_of(headers),
    }
}

fn env_at(now_s: u64) -> MemoryStore {
    let env = MemoryStore::default();
    *env.now.borrow_mut() = now_s * 1000;
    env
}

fn status(d: &Decision<'_>) -> Option<u32> {
    d.reply.as_ref().map(|r| r.status)
}

#[test]
fn a_valid_token_sets_identity_and_strips_spoofs() {
    let s = settings();
    let bearer = format!("Bearer {}", token("valid RS256"));
    let d = request(
        s,
        "/orders",
        &[
            ("authorization", &bearer),
            ("x-user-id", "mallory"),
            ("x-user-group", "admin"),
        ],
    );
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(ALLOWED));
    assert!(d.request.removes("x-user-id") && d.request.removes("x-user-group"));
    assert_eq!(d.request.value_of("x-user-id"), Some("alice"));
    assert_eq!(d.request.value_of("x-user-group"), Some("beta"));
    assert!(d.request.removes("authorization") && d.tenant_header == TenantWrite::Resolved);
    // The second time it comes from the cache.
    assert!(request(s, "/orders", &[("authorization", &bearer)])
        .outcomes
        .contains(CACHE_HIT));
    // The cache compares whole tokens: the cached one with a character of
    // its signature changed, or cut short, is verified (and refused).
    let valid = token("valid RS256");
    let at = valid.len() - 10;
    let other = if &valid[at..=at] == "A" { "B" } else { "A" };
    for forged in [
        format!("{}{other}{}", &valid[..at], &valid[at + 1..]),
        valid[..valid.len() - 4].to_string(),
    ] {
        let d = request(
            s,
            "/orders",
            &[("authorization", &format!("Bearer {forged}"))],
        );
        assert_eq!(status(&d), Some(401), "{forged}");
        assert!(!d.outcomes.contains(CACHE_HIT));
    }
}

#[test]
fn sources_requirements_and_rejections() {
    let s = settings();
    let d = request(s, "/orders", &[]);
    assert_eq!(status(&d), Some(401));
    let reply = d.reply.unwrap();
    assert!(reply
        .headers
        .contains(&("www-authenticate", "Bearer".to_string())));
    assert!(request(s, "/healthz", &[]).outcomes.contains(BYPASSED));
    assert!(request(s, "/public/x", &[]).outcomes.contains(ANONYMOUS));
    let cookie = format!("a=b; session={}", token("valid ES256"));
    assert_eq!(status(&request(s, "/orders", &[("cookie", &cookie)])), None);
    let q = format!("/orders?x=1&access_token={}", token("valid EdDSA"));
    assert_eq!(status(&request(s, &q, &[])), None);
    for (name, reason) in [
        ("expired", "expired"),
        ("alg none", "bad algorithm"),
        ("HS256 with the RSA public key", "bad algorithm"),
        ("tampered payload", "bad signature"),
        ("valid HS256", "bad algorithm"),
    ] {
        let bearer = format!("Bearer {}", token(name));
        let d = request(s, "/orders", &[("authorization", &bearer)]);
        assert_eq!(status(&d), Some(401), "{name}");
        let reply = d.reply.unwrap();
        let challenge = &reply
            .headers
            .iter()
            .find(|(k, _)| *k == "www-authenticate")
            .unwrap()
            .1;
        assert_eq!(
            challenge,
            &format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""),
            "{name}"
        );
        // A bad token is refused even where a missing one would pass.
        assert_eq!(
            status(&request(s, "/public", &[("authorization", &bearer)])),
            Some(401)
        );
    }
}

#[test]
fn a_token_of_another_tenant_is_forbidden() {
    let s = settings();
    let bearer = format!("Bearer {}", token("other tenant"));
    let d = request(s, "/orders", &[("authorization", &bearer)]);
    assert_eq!(status(&d), Some(403));
    assert!(d.outcomes.contains(DENIED_TENANT));
    // RFC 6750 §3.1: a valid token without the rights: insufficient_scope,
    // in the challenge and in the body alike.
    let reply = d.reply.unwrap();
    let challenge = reply.headers.iter().find(|(k, _)| *k == "www-authenticate");
    assert!(
        challenge.is_some_and(|(_, v)| v.starts_with("Bearer error=\"insufficient_scope\"")),
        "{:?}",
        reply.headers
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[test]
fn no_credentials_get_a_challenge_without_an_error_code() {
    let d = request(settings(), "/orders", &[]);
    let reply = d.reply.unwrap();
    assert!(reply
        .headers
        .contains(&("www-authenticate", "Bearer".to_string())));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert!(body.get("error").is_none(), "{body}");
    assert_eq!(body["error_description"], "a bearer token is required");
}

#[test]
fn every_minted_case_gets_its_expected_decision() {
    // All algorithms the vectors use, so only the case's own flaw decides.
    let v = vectors();
    let (s, e) = settings_from(json!({
        "providers": [
            {"issuer": "https://other-idp.example", "audiences": [v["audience"]], "jwks": v["jwks"],
             "algorithms": ["RS256"]},
            {"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
             "algorithms": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
                            "ES384", "EdDSA", "HS256", "HS384", "HS512"]}
        ]
    }));
    assert_eq!(e, "");
    for case in v["cases"].as_array().unwrap() {
        let expect = case
            .get("decision")
            .or_else(|| case.get("expect"))
            .and_then(Value::as_str)
            .unwrap();
        let bearer = format!("Bearer {}", case["token"].as_str().unwrap());
        let d = request(s, "/orders", &[("authorization", &bearer)]);
        if expect == "ok" {
            assert_eq!(status(&d), None, "{}", case["name"]);
        } else {
            assert!(
                d.outcomes.contains(denied(expect)),
                "{}: {expect}",
                case["name"]
            );
        }
    }
}

#[test]
fn configuration_errors_name_their_paths() {
    let (_, e) = settings_from(json!({
        "providers": [{"issuer": "x", "algorithms": ["none"], "jwks": {"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}}, {"algorithms": ["RS256"], "jwks": {"keys": []}}],
        "default_requirement": "sometimes",
        "claim_to_headers": {"groups": "X Bad"}
    }));
    for expected in [
        "t.providers[0].algorithms[0]: \"none\" is never accepted",
        "t.providers[0].jwks.keys[0]: HMAC keys must be at least 32 bytes",
        "t.providers[1].issuer: is required",
        "t.default_requirement: \"sometimes\"",
        "t.claim_to_headers.groups",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
}

// ---- remote JWKS and external auth ----

fn jwks_body(kids: &[&str]) -> Vec<u8> {
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

fn answer(status: u32, body: Vec<u8>, headers: &[(&str, &str)]) -> CalloutResponse {
    let pairs = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CalloutResponse {
        status,
        headers: Headers::new(pairs),
        body,
    }
}

fn remote_settings(extra: Value) -> &'static JwtSettings {
    let v = vectors();
    let mut section = json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]],
                       "algorithms": ["RS256", "ES256"],
                       "remote_jwks": {"cluster": "idp", "path": "/jwks.json", "ttl_s": 60,
                                       "refetch_interval_s": 5, "wait_ms": 1500}}]
    });
    for (k, val) in extra.as_object().unwrap() {
        section[k] = val.clone();
    }
    let (s, e) = settings_from(section);
    assert_eq!(e, "");
    s
}

fn call(s: &'static JwtSettings, env: &MemoryStore, bearer: &str) -> Decision<'static> {
    let pairs = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/orders".to_string()),
        ("authorization".to_string(), format!("Bearer {bearer}")),
    ];
    on_request(s, &req(&Headers::new(pairs)), env)
}

#[test]
fn remote_keys_are_fetched_once_while_other_requests_wait() {
    let s = remote_settings(json!({}));
    let env = env_at(NOW);
    let rs = token("valid RS256");
    let first = call(s, &env, &rs);
    let callout = first.callout.as_ref().expect("the first request fetches");
    // ... and waits for it at most until its deadline.
    assert_eq!(first.park.map(|p| p.deadline_ms), Some(NOW * 1000 + 1500));
    assert_eq!(callout.cluster, "idp");
    assert!(callout
        .headers
        .contains(&(":path", "/jwks.json".to_string())));
    assert!(callout.headers.contains(&(":authority", "idp".to_string())));
    // A second request while the fetch is in flight waits with a deadline.
    let second = call(s, &env, &token("valid ES256"));
    assert_eq!(second.callout, None);
    let park = second.park.expect("waits");
    assert_eq!((park.tag, park.deadline_ms), (0, NOW * 1000 + 1500));
    // A wait that outlives its deadline with no key set yet: the
    // configured status.
    assert_eq!(status(&on_park_expired(s, 0)), Some(503));
    let done = on_callout_done(
        s,
        0,
        Some(&answer(200, jwks_body(&["rsa-1", "ec-256"]), &[])),
        &env,
    );
    assert!(done.contains(JWKS_FETCH_OK));
    assert!(call(s, &env, &rs).outcomes.contains(ALLOWED));
    assert!(call(s, &env, &token("valid ES256"))
        .outcomes
        .contains(ALLOWED));
    // With a key set present, a wait (for an unknown kid) that outlives its
    // deadline is an unknown kid: 401 invalid_token, not "unavailable".
    let late = on_park_expired(s, 0);
    assert_eq!(status(&late), Some(401));
    assert!(late.outcomes.contains(denied("unknown_kid")));
}

#[test]
fn a_failed_first_fetch_answers_the_configured_status_then_retries_on_a_short_backoff() {
    for jwks_answer in [
        None,
        Some(answer(500, b"oops".to_vec(), &[])),
        Some(answer(200, b"<html>junk".to_vec(), &[])),
        Some(answer(200, br#"{"keys": []}"#.to_vec(), &[])),
    ] {
        let s = remote_settings(json!({}));
        let env = env_at(NOW);
        let rs = token("valid RS256");
        assert!(call(s, &env, &rs).callout.is_some());
        let done = on_callout_done(s, 0, jwks_answer.as_ref(), &env);
        assert!(done.contains(JWKS_FETCH_FAILED));
        let d = call(s, &env, &rs);
        assert_eq!(status(&d), Some(503));
        assert!(d.outcomes.contains(DENIED_KEYS_UNAVAILABLE));
        // The first fetch is retried on a short backoff, not after the
        // refetch interval: 0.5 s, then 1 s, 2 s, ... at most 5 s.
        for (wait_ms, delay_ms) in [(400, 500), (900, 1000), (1_900, 2_000), (3_900, 4_000)] {
            env.advance_ms(wait_ms);
            assert!(
                call(s, &env, &rs).callout.is_none(),
                "not before {delay_ms} ms"
            );
            env.advance_ms(delay_ms - wait_ms);
            assert!(
                call(s, &env, &rs).callout.is_some(),
                "retried after {delay_ms} ms"
            );
            on_callout_done(s, 0, jwks_answer.as_ref(), &env);
        }
        env.advance_ms(4_900);
        assert!(
            call(s, &env, &rs).callout.is_none(),
            "capped at the interval"
        );
        env.advance_ms(100);
        assert!(call(s, &env, &rs).callout.is_some());
    }
    let v = vectors();
    let (s401, e) = settings_from(
        json!({"providers": [{"issuer": v["issuer"], "algorithms": ["RS256"],
        "remote_jwks": {"cluster": "idp", "path": "/jwks.json", "unavailable_status": 401}}]}),
    );
    assert_eq!(e, "");
    let env = env_at(NOW);
    call(s401, &env, &token("valid RS256"));
    on_callout_done(s401, 0, None, &env);
    let d = call(s401, &env, &token("valid RS256"));
    assert_eq!(status(&d), Some(401));
    let reply = d.reply.unwrap();
    assert!(reply
        .headers
        .iter()
        .any(|(k, v)| *k == "www-authenticate" && v.contains("invalid_token")));
    assert_eq!(status(&on_park_expired(s401, 0)), Some(401));
}

#[test]
fn stale_keys_stay_in_use_when_a_refresh_fails_and_rotation_follows_refreshes() {
    let s = remote_settings(json!({}));
    let env = env_at(NOW);
    let remote = s.providers[0].remote.as_ref().unwrap();
    // The tick fetches first.
    let first = remote.background(0, &env).expect("first fetch on tick");
    assert_eq!(first.tag, 0);
    assert_eq!(remote.background(0, &env), None, "one at a time");
    on_callout_done(s, 0, Some(&answer(200, jwks_body(&["rsa-1"]), &[])), &env);
    assert_eq!(remote.background(0, &env), None, "fresh for the TTL");
    let rs = token("valid RS256");
    assert!(call(s, &env, &rs).outcomes.contains(ALLOWED));
    // Past the TTL the tick refreshes; the refresh fails; the old keys stay.
    env.advance_ms(60_000);
    assert!(remote.background(0, &env).is_some());
    assert!(
        on_callout_done(s, 0, Some(&answer(503, vec![], &[])), &env).contains(JWKS_FETCH_FAILED)
    );
    s.cache.borrow_mut().clear();
    assert!(call(s, &env, &rs).outcomes.contains(ALLOWED));
    // An unknown kid (the IdP rotated to ec-256) triggers one refetch ...
    let es = token("valid ES256");
    env.advance_ms(5_000);
    let d = call(s, &env, &es);
    assert!(d.callout.is_some(), "unknown kid refetches");
    // ... a second unknown kid soon after does not: it waits for that fetch.
    assert!(call(s, &env, &es).park.is_some());
    on_callout_done(s, 0, Some(&answer(200, jwks_body(&["ec-256"]), &[])), &env);
    assert!(call(s, &env, &es).outcomes.contains(ALLOWED));
    // The rotated-out kid is now unknown (its cached verdict is void: the
    // key set changed) and the refetch is rate-limited.
    let d = call(s, &env, &rs);
    assert_eq!(status(&d), Some(401));
    assert!(d.outcomes.contains(denied("unknown_kid")));
}

fn denied(label: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == format!("denied_{label}"))
        .unwrap()
}

#[test]
fn another_worker_adopts_the_shared_key_set_without_fetching() {
    let env = env_at(NOW);
    let a = remote_settings(json!({}));
    let b = remote_settings(json!({}));
    let rs = token("valid RS256");
    assert!(call(a, &env, &rs).callout.is_some());
    on_callout_done(a, 0, Some(&answer(200, jwks_body(&["rsa-1"]), &[])), &env);
    let d = call(b, &env, &rs);
    assert_eq!(d.callout, None);
    assert!(d.outcomes.contains(ALLOWED));
    assert_eq!(
        b.providers[0].remote.as_ref().unwrap().background(0, &env),
        None
    );
}

fn external_settings(on_error: &str) -> &'static JwtSettings {
    let v = vectors();
    let (s, e) = settings_from(json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                       "algorithms": ["RS256"]}],
        "rules": [{"prefix": "/healthz", "requirement": "bypass"}],
        "external": {"cluster": "authz", "path_prefix": "/check", "copy_headers": ["x-auth-user"],
                     "on_error": on_error}
    }));
    assert_eq!(e, "");
    s
}

fn ext_request(s: &'static JwtSettings, extra: &[(&str, &str)]) -> (Headers, Decision<'static>) {
    let mut pairs = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/orders?x=1".to_string()),
        (":authority".to_string(), "api.example".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let headers = Headers::new(pairs);
    let d = on_request(s, &req(&headers), &env_at(NOW));
    (headers, d)
}

#[test]
fn the_external_check_allows_denies_and_falls_back() {
    let s = external_settings("deny");
    let (headers, d) = ext_request(
        s,
        &[
            ("authorization", "Bearer abc"),
            ("x-auth-user", "mallory"),
            ("x-other", "1"),
        ],
    );
    assert!(
        d.request.removes("x-auth-user"),
        "copied headers are identity headers"
    );
    let c = d.callout.expect("asks the auth service");
    assert_eq!(
        (c.cluster, c.timeout_ms, c.tag),
        ("authz", 200, crate::external::TAG)
    );
    for want in [
        (":method", "POST"),
        (":path", "/check/orders?x=1"),
        (":authority", "authz"),
        ("x-forwarded-host", "api.example"),
        ("x-meshware-tenant", "umbrella"),
        ("authorization", "Bearer abc"),
    ] {
        assert!(
            c.headers.contains(&(want.0, want.1.to_string())),
            "{want:?}"
        );
    }
    assert!(!c.headers.iter().any(|(k, _)| *k == "x-other"));
    let env = env_at(NOW);
    let tag = crate::external::TAG;
    let allow = answer(200, vec![], &[("x-auth-user", "bob"), ("x-secret", "no")]);
    let d = on_callout_response(s, &req(&headers), &env, tag, Some(&allow));
    assert_eq!(d.request.value_of("x-auth-user"), Some("bob"));
    assert_eq!(d.request.value_of("x-secret"), None);
    assert!(d.tenant_header == TenantWrite::Resolved && d.outcomes.contains(EXTERNAL_ALLOWED));
    for code in [401, 403] {
        let deny = answer(code, vec![], &[]);
        let d = on_callout_response(s, &req(&headers), &env, tag, Some(&deny));
        assert_eq!(status(&d), Some(code));
        assert!(d.outcomes.contains(EXTERNAL_DENIED));
    }
    for failure in [
        None,
        Some(answer(500, vec![], &[])),
        Some(answer(302, vec![], &[])),
    ] {
        let d = on_callout_response(s, &req(&headers), &env, tag, failure.as_ref());
        assert_eq!(status(&d), Some(503));
        assert!(d.outcomes.contains(EXTERNAL_ERROR));
    }
    // Bypassed routes never call out.
    let bypass = Headers::new(vec![(":path".into(), "/healthz".into())]);
    assert_eq!(on_request(s, &req(&bypass), &env).callout, None);

    let s = external_settings("local_jwt");
    let good = format!("Bearer {}", token("valid RS256"));
    let (headers, _) = ext_request(s, &[("authorization", &good)]);
    let d = on_callout_response(s, &req(&headers), &env, tag, None);
    assert!(d.outcomes.contains(EXTERNAL_ERROR) && d.outcomes.contains(ALLOWED));
    assert_eq!(d.request.value_of("x-user-id"), Some("alice"));
    let (headers, _) = ext_request(s, &[("authorization", "Bearer not.a.token")]);
    let d = on_callout_response(s, &req(&headers), &env, tag, None);
    assert_eq!(status(&d), Some(401));
}

#[test]
fn remote_and_external_config_errors_name_their_paths() {
    let (_, e) = settings_from(json!({
        "providers": [{"issuer": "i", "algorithms": ["RS256"],
                       "remote_jwks": {"path": "jwks", "timeout_ms": 0, "unavailable_status": 402, "ttl": 1}},
                      {"issuer": "j", "algorithms": ["RS256"]}],
        "external": {"on_error": "allow", "copy_headers": ["x-user-id", "bad header"]}
    }));
    for want in [
        "t.providers[0].remote_jwks.cluster: is required",
        "t.providers[0].remote_jwks.path:",
        "t.providers[0].remote_jwks.timeout_ms:",
        "t.providers[0].remote_jwks.unavailable_status: must be 401 or 503",
        "t.providers[0].remote_jwks.ttl: unknown field",
        "t.providers[1].jwks: is required unless remote_jwks is set",
        "t.external.cluster: is required",
        "t.external.on_error:",
        "t.external.copy_headers",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let (_, e) = settings_from(json!({"external": {"cluster": "a", "on_error": "local_jwt"}}));
    assert!(
        e.contains("t.external.on_error: \"local_jwt\" needs at least one provider"),
        "{e}"
    );
}

#[test]
fn on_shared_hosts_a_verified_claim_may_pick_the_tenant() {
    let v = vectors();
    let (s, e) = settings_from(json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                       "algorithms": ["RS256"], "tenant_claim": "tenant", "tenant_from_claim": true}],
        "rules": [{"prefix": "/public", "requirement": "optional"}]
    }));
    assert_eq!(e, "");
    let bearer = format!("Bearer {}", token("other tenant"));
    let d = request(s, "/orders", &[("authorization", &bearer)]);
    assert_eq!(d.tenant_header, TenantWrite::Claimed("globex".into()));
    // One tenant per request: where the host or a path prefix chose the
    // tenant, a token naming another is refused, never a second tenant.
    for source in [
        meshware_common::tenancy::Source::Host,
        meshware_common::tenancy::Source::PathPrefix,
    ] {
        let headers = Headers::new(vec![
            (":path".into(), "/orders".into()),
            ("authorization".into(), bearer.clone()),
        ]);
        let r = Request {
            tenant_source: source,
            ..req(&headers)
        };
        let d = on_request(s, &r, &env_at(NOW));
        assert_eq!(status(&d), Some(403), "{source:?}");
        assert!(d.outcomes.contains(DENIED_TENANT));
    }
    // The reserved overflow slot `other` can never be claimed.
    let reserved = format!("Bearer {}", token("claims the reserved tenant"));
    let d = request(s, "/orders", &[("authorization", &reserved)]);
    assert_eq!(status(&d), Some(403));
    let bearer = format!("Bearer {}", token("valid RS256"));
    assert_eq!(
        request(s, "/orders", &[("authorization", &bearer)]).tenant_header,
        TenantWrite::Resolved
    );
    // No verified token: a client-sent tenant header is removed.
    let d = request(s, "/public/x", &[]);
    assert!(d.outcomes.contains(ANONYMOUS));
    assert_eq!(d.tenant_header, TenantWrite::Removed);
    // A claim naming no configured tenant is refused.
    let headers = Headers::new(vec![
        (":path".into(), "/orders".into()),
        (
            "authorization".into(),
            format!("Bearer {}", token("other tenant")),
        ),
    ]);
    let only_umbrella = vec!["umbrella".to_string()];
    let r = Request {
        tenant: "umbrella",
        tenant_source: meshware_common::tenancy::Source::Default,
        tenants: &only_umbrella,
        headers: &headers,
        path: path_of(&headers),
    };
    let d = on_request(s, &r, &env_at(NOW));
    assert_eq!(status(&d), Some(403));
    assert!(d.outcomes.contains(DENIED_TENANT));
    let (_, e) = settings_from(
        json!({"providers": [{"issuer": "i", "algorithms": ["RS256"],
        "jwks": v["jwks"], "tenant_from_claim": true}]}),
    );
    assert!(
        e.contains("t.providers[0].tenant_from_claim: needs tenant_claim"),
        "{e}"
    );
}

#[test]
fn path_rules_match_every_reading_on_segment_boundaries() {
    let s = settings();
    // Anonymous only where every reading is optional or bypassed.
    for p in [
        "/public",
        "/public/x",
        "/PUBLIC/x",
        "/healthz",
        "/public/a;b",
    ] {
        assert_eq!(status(&request(s, p, &[])), None, "{p}");
    }
    for p in [
        "/publicity",
        "/public/../private",
        "/public/..;/private",
        "/public%2f..%2fprivate",
        "/healthz/..%2forders",
        "/healthzx",
        "/private",
    ] {
        assert_eq!(status(&request(s, p, &[])), Some(401), "{p}");
    }
}

#[test]
fn rules_that_can_never_apply_are_errors() {
    let (_, e) = settings_from(json!({
        "providers": [], "external": null,
        "rules": [{"prefix": "/a", "requirement": "bypass"}, {"prefix": "/A/", "requirement": "optional"},
                  {"prefix": "/a", "methods": ["GET"], "requirement": "optional"},
                  {"prefix": "/b", "path": "/b"}]
    }));
    assert!(
        e.contains("t.rules[1]: the same path as rules[0]: this rule (with the same methods)"),
        "{e}"
    );
    assert!(!e.contains("t.rules[2]"), "{e}");
    assert!(e.contains("t.rules[3]: set one of prefix, path"), "{e}");
}

#[test]
fn strip_authorization_holds_on_bypass_and_optional_routes_too() {
    let s = settings(); // strip_authorization: true
    for path in ["/healthz", "/public/x"] {
        let d = request(s, path, &[("authorization", "Basic Z2FyYmFnZQ==")]);
        assert_eq!(status(&d), None, "{path}");
        assert!(d.request.removes("authorization"), "{path}");
    }
    // A cookie-borne token on an optional route: verified, and the
    // Authorization header (absent) is not touched.
    let cookie = format!("session={}", token("valid ES256"));
    let d = request(s, "/public/x", &[("cookie", &cookie)]);
    assert_eq!(status(&d), None);
}

#[test]
fn a_good_key_set_is_refreshed_when_its_ttl_is_up_not_on_the_refetch_interval() {
    // ttl 3 s, refetch interval 10 s: a withdrawn key must stop working
    // within the TTL (plus one fetch), not after 10 s.
    let v = vectors();
    let (s, e) = settings_from(json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]], "algorithms": ["RS256"],
                       "remote_jwks": {"cluster": "idp", "path": "/jwks.json", "ttl_s": 3,
                                       "refetch_interval_s": 10}}]
    }));
    assert_eq!(e, "");
    let env = env_at(NOW);
    let remote = s.providers[0].remote.as_ref().unwrap();
    let tick = |env: &MemoryStore| remote.background(0, env);
    assert!(tick(&env).is_some(), "the first fetch");
    on_callout_done(s, 0, Some(&answer(200, jwks_body(&["rsa-1"]), &[])), &env);
    env.advance_ms(2_900);
    assert!(tick(&env).is_none());
    env.advance_ms(100);
    let refresh = tick(&env);
    assert!(refresh.is_some(), "refreshed at the TTL");
    // The key was withdrawn: the refresh drops it, tokens with it are refused.
    on_callout_done(s, 0, Some(&answer(200, jwks_body(&["ec-256"]), &[])), &env);
    let d = call(s, &env, &token("valid RS256"));
    assert_eq!(status(&d), Some(401), "{:?}", d.outcomes);
    // A refresh that fails is retried on the backoff, the old keys kept.
    env.advance_ms(3_000);
    assert!(tick(&env).is_some());
    on_callout_done(s, 0, None, &env);
    env.advance_ms(400);
    assert!(tick(&env).is_none());
    env.advance_ms(100);
    assert!(tick(&env).is_some());
}

#[test]
fn one_worker_fetches_per_refresh_and_the_others_adopt_its_key_set() {
    let v = vectors();
    let section = json!({
        "providers": [{"issuer": v["issuer"], "audiences": [v["audience"]], "algorithms": ["RS256"],
                       "remote_jwks": {"cluster": "idp", "path": "/jwks.json", "ttl_s": 3}}]
    });
    // Two workers: their own settings and state, one shared store.
    let (a, _) = settings_from(section.clone());
    let (b, _) = settings_from(section);
    let env = env_at(NOW);
    let ra = a.providers[0].remote.as_ref().unwrap();
    let rb = b.providers[0].remote.as_ref().unwrap();
    for round in 0..3 {
        assert!(
            ra.background(0, &env).is_some(),
            "round {round}: a takes the lease"
        );
        assert!(
            rb.background(0, &env).is_none(),
            "round {round}: b does not fetch too"
        );
        on_callout_done(a, 0, Some(&answer(200, jwks_body(&["rsa-1"]), &[])), &env);
        // b adopts the published key set on its next tick, without fetching.
        env.advance_ms(200);
        assert!(rb.background(0, &env).is_none());
        assert!(call(b, &env, &token("valid RS256"))
            .outcomes
            .contains(ALLOWED));
        env.advance_ms(2_800);
    }
}
