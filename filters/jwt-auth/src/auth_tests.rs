//! The jwt-auth decision with tokens minted by PyJWT (tests/mint_tokens.py).

use crate::auth::*;
use crate::config::{parse, JwtSettings};
use meshware_common::{Decision, Headers};
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
    on_request(s, "umbrella", &Headers::new(pairs), NOW)
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
    assert!(d.request.removes("authorization") && d.set_tenant_header);
    // The second time it comes from the cache.
    assert!(request(s, "/orders", &[("authorization", &bearer)])
        .outcomes
        .contains(CACHE_HIT));
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
