//! jwt-auth through real Envoy with the example profile: tenant umbrella
//! (host api.umbrella.example) trusts the public keys minted by PyJWT
//! (tests/mint_tokens.py; examples/tokens.json holds sample tokens).

use meshware_e2e::envoy::expect_rejected;
use meshware_e2e::http::Response;
use meshware_e2e::suite::{bootstrap, Suite};

const UMBRELLA: (&str, &str) = ("host", "api.umbrella.example");

fn profile() -> String {
    meshware_e2e::example_profile()
}

fn token(name: &str) -> String {
    meshware_e2e::jwt_token(name)
}

fn start() -> Suite {
    Suite::start(&profile(), &["trace_context", "jwt_auth"])
}

fn with_token(s: &Suite, name: &str, extra: &[(&str, &str)]) -> Response {
    let bearer = format!("Bearer {}", token(name));
    let mut h = vec![UMBRELLA, ("authorization", bearer.as_str())];
    h.extend_from_slice(extra);
    s.get("/orders", &h)
}

fn metric(s: &Suite, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"jwt_auth\",tenant=\"umbrella\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

#[test]
fn valid_tokens_of_every_listed_algorithm_pass_with_identity_headers() {
    let s = start();
    for name in [
        "valid RS256",
        "valid PS256",
        "valid ES256",
        "valid ES384",
        "valid EdDSA",
        // The HMAC key comes from Envoy's environment (examples/demo.env).
        "valid HS256",
    ] {
        let r = with_token(
            &s,
            name,
            &[
                ("x-user-id", "mallory"),
                ("x-user-group", "admin"),
                ("x-tenant-id", "acme"),
            ],
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let seen = s.echo.last().unwrap();
        assert_eq!(seen.header("x-user-id"), Some("alice"), "{name}");
        assert_eq!(seen.header("x-user-group"), Some("beta"));
        assert_eq!(seen.header("x-tenant-id"), Some("umbrella"));
        assert_eq!(seen.header_count("x-user-id"), 1);
        assert_eq!(seen.header("authorization"), None, "stripped as configured");
    }
    // The cache is per worker (2 here): of three more requests with the same
    // token, at least one lands on a worker that already verified it.
    for _ in 0..3 {
        assert_eq!(with_token(&s, "valid RS256", &[]).status, 200);
    }
    assert!(metric(&s, "cache_hit") >= 1.0);
    assert_eq!(metric(&s, "allowed"), 9.0);
}

#[test]
fn every_rejection_is_a_401_with_a_bearer_challenge() {
    let s = start();
    for (name, reason) in [
        ("expired", "expired"),
        ("no exp", "missing exp"),
        ("nbf in the future", "not yet valid"),
        ("wrong issuer", "bad issuer"),
        ("wrong audience", "bad audience"),
        ("unknown kid", "unknown kid"),
        ("alg none", "bad algorithm"),
        ("HS256 with the RSA public key", "bad algorithm"),
        ("valid HS384", "bad algorithm"),
        ("valid RS384", "bad algorithm"),
        ("tampered payload", "bad signature"),
        ("bad base64", "malformed"),
        ("two segments", "malformed"),
    ] {
        let r = with_token(&s, name, &[]);
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"").as_str()
            ),
            "{name}"
        );
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(
            !r.text().contains(&token(name)),
            "no token contents in the reply"
        );
    }
    // No credentials: a bare challenge and no error code (RFC 6750 §3.1).
    let r = s.get("/orders", &[UMBRELLA]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.json().get("error").is_none(), "{}", r.text());
    assert_eq!(s.echo.count(), 0);
    assert_eq!(metric(&s, "denied_bad_algorithm"), 4.0);
}

#[test]
fn tenant_binding_bypass_and_optional_routes() {
    let s = start();
    let r = with_token(&s, "other tenant", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "insufficient_scope");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer error=\"insufficient_scope\"")),
        "{:?}",
        r.headers
    );
    assert_eq!(s.get("/healthz", &[UMBRELLA]).status, 200);
    let r = s.get("/public/catalog", &[UMBRELLA, ("x-user-id", "mallory")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        s.echo.last().unwrap().header("x-user-id"),
        None,
        "spoofed identity stripped even without a token"
    );
    assert_eq!(metric(&s, "denied_tenant"), 1.0);
}

#[test]
fn an_oversize_token_is_refused() {
    let s = start();
    let huge = format!("Bearer {}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
    let r = s.get("/orders", &[UMBRELLA, ("authorization", &huge)]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("too large"));
}

#[test]
fn invalid_providers_are_rejected_by_envoy_with_their_paths() {
    let profile = r#"{"tenancy": {"default": "a"}, "tenants": {"a": {"jwt_auth": {"providers": [
        {"issuer": "x", "algorithms": ["none"], "jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}]}}}}"#;
    let (config, _, _) = bootstrap(profile, &["jwt_auth"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    for line in [
        "tenants.a.jwt_auth.providers[0].algorithms[0]: \"none\" is never accepted",
        "tenants.a.jwt_auth.providers[0].jwks.keys[0]: bad RSA key",
    ] {
        assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
    }
}

/// PyJWT-minted tokens (tests/mint_tokens.py): a well-signed token whose
/// `crit` names an extension nobody here implements (RFC 7515 §4.1.11), an
/// unencoded payload (RFC 7797), and a token of an issuer no provider has
/// whose key is unknown too (the issuer is what is wrong with it).
#[test]
fn crit_extensions_and_unknown_issuers_are_refused_for_what_they_are() {
    let s = start();
    for (name, reason) in [
        ("crit names an unknown extension", "unsupported crit"),
        ("unencoded payload (b64 false)", "unsupported crit"),
        ("unknown issuer and kid", "bad issuer"),
    ] {
        let r = with_token(&s, name, &[]);
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"").as_str()
            ),
            "{name}"
        );
    }
    assert_eq!(s.echo.count(), 0);
    assert_eq!(metric(&s, "denied_unsupported_crit"), 2.0);
    assert_eq!(metric(&s, "denied_bad_issuer"), 1.0);
}

/// umbrella sets `strip_authorization`: no Authorization header of its
/// requests reaches the upstream, on its bypass and optional routes too,
/// whatever the header holds.
#[test]
fn strip_authorization_covers_bypass_and_optional_routes() {
    let s = start();
    for (path, value) in [
        ("/healthz", "Bearer not-a-token"),
        ("/public/catalog", "Basic dXNlcjpwYXNz"),
        ("/public/catalog", "Bearer"),
    ] {
        let r = s.get(path, &[UMBRELLA, ("authorization", value)]);
        assert_eq!(r.status, 200, "{path} {value}");
        let seen = s.echo.last().unwrap();
        assert_eq!(seen.header("authorization"), None, "{path} {value}");
    }
    let r = with_token(&s, "valid RS256", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().header("authorization"), None);
}

/// HS256 tokens signed here by Python's `hmac` (independent of the filter)
/// with the demo's key: one per payload text, written byte for byte.
fn hs256_tokens(payloads: &[&str]) -> Vec<String> {
    let key = meshware_e2e::demo_env()
        .into_iter()
        .find(|(k, _)| k == "MESHWARE_DEMO_HMAC_KEY")
        .map(|(_, v)| v)
        .expect("demo.env holds the HMAC key");
    let script = r#"
import base64, hashlib, hmac, sys
key = base64.urlsafe_b64decode(sys.argv[1] + "=" * (-len(sys.argv[1]) % 4))
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(b'{"alg":"HS256","typ":"JWT","kid":"hs-1"}')
for payload in sys.argv[2:]:
    body = b64(payload.encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    print(f"{head}.{body}.{b64(mac)}")
"#;
    let out = std::process::Command::new(meshware_e2e::python())
        .args(["-c", script, &key])
        .args(payloads)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A claim named twice is ambiguous: a reader keeping the last `tenant`
/// (serde_json, many JSON libraries) sees umbrella, one keeping the first
/// sees globex. RFC 7519 §4 lets the verifier refuse it: malformed.
#[test]
fn a_token_naming_a_claim_twice_is_refused_as_malformed() {
    let claims =
        r#""iss":"https://idp.umbrella.example","aud":"api","sub":"alice","exp":4102444800"#;
    let once = format!(r#"{{{claims},"tenant":"umbrella"}}"#);
    let twice = format!(r#"{{{claims},"tenant":"globex","tenant":"umbrella"}}"#);
    let tokens = hs256_tokens(&[&once, &twice]);
    let s = start();
    let call = |t: &str| {
        let bearer = format!("Bearer {t}");
        s.get("/orders", &[UMBRELLA, ("authorization", bearer.as_str())])
    };
    // The same signing, the claim once: accepted (the signature is right).
    assert_eq!(call(&tokens[0]).status, 200);
    let r = call(&tokens[1]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"malformed\"")
    );
    assert_eq!(metric(&s, "denied_malformed"), 1.0);
    assert_eq!(s.echo.count(), 1);
}
