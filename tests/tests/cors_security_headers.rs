//! cors and security-headers through real Envoy with the example profile:
//! acme allows `https://shop.acme.example` and `https://*.acme.example`
//! without credentials; initech allows `https://*.initech.example` and `null`
//! with credentials. Security headers: defaults for everyone, acme overwrites
//! HSTS and X-Frame-Options and sets a CSP if absent.

use meshware_e2e::envoy::expect_rejected;
use meshware_e2e::http::Response;
use meshware_e2e::suite::{bootstrap, Suite};

const ACME: (&str, &str) = ("host", "shop.acme.example");

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start() -> Suite {
    Suite::start(&profile(), &["trace_context", "security_headers", "cors"])
}

fn preflight(
    s: &Suite,
    host: &str,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> Response {
    s.send(
        "OPTIONS",
        path,
        &[
            ("host", host.as_bytes()),
            ("origin", origin.as_bytes()),
            ("access-control-request-method", method.as_bytes()),
            ("access-control-request-headers", headers.as_bytes()),
        ],
        b"",
    )
}

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample =
        format!("meshware_decisions{{filter=\"cors\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}");
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

#[test]
fn patterns_are_anchored_to_one_label() {
    let s = start();
    for (origin, allowed) in [
        ("https://shop.acme.example", true),
        ("https://admin.acme.example", true),
        ("https://evil.acme.example.attacker.test", false),
        ("https://a.b.acme.example", false),
        ("http://admin.acme.example", false),
        ("https://acme.example", false),
        ("null", false),
    ] {
        let r = s.get("/cart", &[ACME, ("origin", origin)]);
        assert_eq!(r.status, 200, "actual requests pass either way");
        let expected = allowed.then_some(origin);
        assert_eq!(
            r.header("access-control-allow-origin"),
            expected,
            "{origin}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{origin}");
        let p = preflight(
            &s,
            "shop.acme.example",
            "/cart",
            origin,
            "POST",
            "content-type",
        );
        assert_eq!(p.status, if allowed { 204 } else { 403 }, "{origin}");
        if !allowed {
            assert!(
                p.headers
                    .iter()
                    .all(|(k, _)| !k.starts_with("access-control-")),
                "{origin}: {:?}",
                p.headers
            );
        }
        // Allowed or denied, the answer varies on Origin (CONFIG.md: every
        // response of a CORS tenant says so).
        assert!(
            p.header("vary").is_some_and(|v| v.starts_with("Origin")),
            "{origin}: {:?}",
            p.headers
        );
    }
    // Preflights never reach the upstream; the 7 actual requests do.
    assert_eq!(s.echo.count(), 7);
    assert!(s.echo.requests().iter().all(|r| r.method != "OPTIONS"));
    assert_eq!(metric(&s, "acme", "preflight_allowed"), 2.0);
    assert_eq!(metric(&s, "acme", "preflight_denied"), 5.0);
    assert_eq!(metric(&s, "acme", "actual_allowed"), 2.0);
    assert_eq!(metric(&s, "acme", "actual_denied"), 5.0);
}

#[test]
fn null_is_allowed_only_where_listed_and_credentials_need_the_exact_origin() {
    let s = start();
    // initech does not list `null`: a sandboxed document gets nothing.
    let r = s.get("/t/initech/x", &[("origin", "null")]);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let p = preflight(
        &s,
        "localhost",
        "/t/initech/x",
        "https://app.initech.example",
        "PUT",
        "X-Custom",
    );
    assert_eq!(p.status, 204);
    assert_eq!(
        p.header("access-control-allow-origin"),
        Some("https://app.initech.example")
    );
    assert_eq!(
        p.header("access-control-allow-headers"),
        Some("x-custom, content-type")
    );
    assert_eq!(p.header("access-control-max-age"), Some("60"));
    // A method or header not listed: denied.
    assert_eq!(
        preflight(
            &s,
            "localhost",
            "/t/initech/x",
            "https://app.initech.example",
            "DELETE",
            ""
        )
        .status,
        403
    );
    assert_eq!(
        preflight(
            &s,
            "localhost",
            "/t/initech/x",
            "https://app.initech.example",
            "PUT",
            "x-secret"
        )
        .status,
        403
    );
}

#[test]
fn upstream_cors_headers_cannot_undo_the_policy() {
    let s = start();
    let r = s.get(
        "/x",
        &[
            ACME,
            ("origin", "https://attacker.test"),
            (
                "x-echo-response-header",
                "access-control-allow-origin: https://attacker.test",
            ),
            (
                "x-echo-response-header",
                "access-control-allow-credentials: true",
            ),
            (
                "x-echo-response-header",
                "access-control-allow-methods: DELETE",
            ),
            ("x-echo-response-header", "access-control-max-age: 86400"),
            (
                "x-echo-response-header",
                "access-control-allow-private-network: true",
            ),
        ],
    );
    // Every CORS response header a browser reads is the filter's.
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-max-age",
        "access-control-allow-private-network",
    ] {
        assert_eq!(r.header(name), None, "{name}: {:?}", r.headers);
    }
}

#[test]
fn credentials_with_a_wildcard_origin_are_rejected_by_envoy() {
    let profile = r#"{"tenancy": {"default": "a"}, "tenants": {"a": {"cors": {
        "allowed_origins": ["*"], "allow_credentials": true}}}}"#;
    let (config, _, _) = bootstrap(profile, &["cors"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    assert!(
        log.contains(
            "tenants.a.cors.allow_credentials: cannot be true when allowed_origins contains \"*\""
        ),
        "{log}"
    );
}

#[test]
fn security_headers_are_set_kept_or_overwritten_and_fingerprints_removed() {
    let s = start();
    let r = s.get(
        "/",
        &[
            ACME,
            (
                "x-echo-response-header",
                "strict-transport-security: max-age=0",
            ),
            (
                "x-echo-response-header",
                "content-security-policy: default-src *",
            ),
            ("x-echo-response-header", "x-frame-options: ALLOWALL"),
            ("x-echo-response-header", "x-powered-by: PHP/5.4"),
            ("x-echo-response-header", "x-aspnet-version: 4.0"),
        ],
    );
    assert_eq!(r.status, 200);
    // Overwritten by acme's profile.
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // CSP: both policies reach the browser, which enforces each (the
    // upstream's `default-src *` cannot loosen acme's).
    let csp: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "content-security-policy")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        csp,
        [
            "default-src *",
            "default-src 'self'; frame-ancestors 'none'"
        ],
        "{:?}",
        r.headers
    );
    // Defaults for everyone.
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    for gone in ["server", "x-powered-by", "x-aspnet-version"] {
        assert_eq!(r.header(gone), None, "{gone}: {:?}", r.headers);
    }
    // Without upstream values, acme's CSP is added; the public tenant has no HSTS.
    let r = s.get("/", &[ACME]);
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'")
    );
    let r = s.get("/", &[]);
    assert_eq!(r.header("strict-transport-security"), None);
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    // The public tenant's default frame option (SAMEORIGIN, mode stricter):
    // an upstream value browsers ignore is replaced, a stricter one kept.
    let r = s.get(
        "/",
        &[("x-echo-response-header", "x-frame-options: ALLOWALL")],
    );
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    let r = s.get("/", &[("x-echo-response-header", "x-frame-options: DENY")]);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

/// `null` with credentials would let every site (a sandboxed iframe, a
/// `data:` URL) read the tenant's credentialed responses: Envoy refuses the
/// profile, naming the field; listed without credentials, `null` is answered.
#[test]
fn null_with_credentials_is_refused_and_null_without_them_is_answered() {
    let mut p: serde_json::Value = serde_json::from_str(&profile()).unwrap();
    p["tenants"]["initech"]["cors"]["allowed_origins"] =
        serde_json::json!(["https://*.initech.example", "null"]);
    let (config, _, _) = meshware_e2e::suite::bootstrap(&p.to_string(), &["cors"], 1);
    let (code, log) = meshware_e2e::envoy::expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    assert!(
        log.contains("tenants.initech.cors.allow_credentials: cannot be true when allowed_origins contains \"null\""),
        "{log}"
    );
    p["tenants"]["initech"]["cors"]["allow_credentials"] = serde_json::json!(false);
    let s = Suite::start(&p.to_string(), &["cors"]);
    let r = s.get("/t/initech/x", &[("origin", "null")]);
    assert_eq!(r.header("access-control-allow-origin"), Some("null"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}
