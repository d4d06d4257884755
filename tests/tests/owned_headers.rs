//! Guarantees that hold for any subset of filters: every filter loaded
//! alone (and the suite with only that filter's section) keeps the headers
//! meshware owns from reaching the upstream with a client's value, and a
//! concern without a section does the same in its module and in the suite.

use meshware_e2e::suite::{suite_module, Suite};

/// Headers meshware owns whatever the profile configures: the untrusted
/// tenant header, the admin token, method overrides.
const ALWAYS: &[&str] = &[
    "x-tenant-id",
    "x-admin-token",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Owned because a section of the example tenant umbrella (its own, or
/// `defaults`) sets them.
const BY_SECTION: &[(&str, &[&str])] = &[
    ("jwt_auth", &["x-user-id", "x-user-group"]),
    ("canary", &["x-route-version"]),
    (
        "circuit_breaker",
        &[
            "x-envoy-max-retries",
            "x-envoy-upstream-rq-timeout-ms",
            "x-envoy-retry-on",
        ],
    ),
];

const SPOOF: &str = "spoofed-by-the-client";

fn owned_for(filter: &str) -> Vec<&'static str> {
    let mut owned = ALWAYS.to_vec();
    for (section, headers) in BY_SECTION {
        // Separate modules read the whole profile; the suite here only the
        // filter's section.
        if !suite_module() || *section == filter {
            owned.extend_from_slice(headers);
        }
    }
    owned
}

#[test]
fn no_filter_alone_lets_a_client_set_an_owned_header() {
    let profile = meshware_e2e::example_profile();
    for filter in meshware_e2e::all_filters() {
        let s = Suite::start(&profile, &[filter]);
        let owned = owned_for(filter);
        let mut headers: Vec<(&str, &str)> = owned.iter().map(|h| (*h, SPOOF)).collect();
        headers.push(("x-not-owned", SPOOF));
        // Tenant umbrella (jwt_auth with a valid token), a path no rule
        // of it guards.
        let bearer = format!("Bearer {}", meshware_e2e::jwt_token("valid RS256"));
        headers.push(("host", "api.umbrella.example"));
        headers.push(("authorization", bearer.as_str()));
        let r = s.get("/shop", &headers);
        assert_eq!(r.status, 200, "{filter}: {}", r.text());
        let seen = s
            .echo
            .last()
            .unwrap_or_else(|| panic!("{filter}: nothing upstream"));
        for h in &owned {
            assert_ne!(
                seen.header(h),
                Some(SPOOF),
                "{filter} let the client's {h} through"
            );
        }
        assert_eq!(seen.header("x-not-owned"), Some(SPOOF), "{filter}");
    }
}

#[test]
fn the_admin_token_never_reaches_the_upstream_even_where_the_guard_is_off() {
    let profile = meshware_e2e::example_profile().replace(
        "\"endpoint_guard\": {",
        "\"endpoint_guard\": {\"enabled\": false, ",
    );
    assert!(profile.contains("\"enabled\": false, "));
    for filters in [
        &["endpoint_guard"][..],
        &["trace_context", "endpoint_guard"],
        &["cors"],
    ] {
        let s = Suite::start(&profile, filters);
        let r = s.get(
            "/debug/pprof",
            &[
                ("host", "shop.acme.example"),
                ("x-admin-token", "demo-acme-admin-token-change-me"),
            ],
        );
        assert_eq!(r.status, 200, "{filters:?}: the guard is off");
        assert_eq!(
            s.echo.last().unwrap().header("x-admin-token"),
            None,
            "{filters:?}"
        );
    }
}

#[test]
fn a_concern_without_a_section_does_nothing_in_its_module_as_in_the_suite() {
    // No security_headers section anywhere: the module adds no header and
    // keeps `server`, exactly as the suite (which runs only configured
    // concerns) does; owned headers are still stripped.
    let profile = r#"{"tenancy": {"default": "t"}, "tenants": {"t": {"cors": {"allow_origins": ["https://a.example"]}}}}"#;
    let s = Suite::start(profile, &["security_headers"]);
    s.echo.script(
        "/",
        meshware_e2e::echo::Canned::new(200, b"ok").header("server", "backend/1"),
    );
    let r = s.get("/x", &[("x-tenant-id", SPOOF)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), None);
    assert_eq!(r.header("x-content-type-options"), None);
    assert_eq!(r.header("server"), Some("backend/1"));
    assert_eq!(s.echo.last().unwrap().header("x-tenant-id"), None);
    // With a section, the defaults apply.
    let with = r#"{"tenancy": {"default": "t"}, "tenants": {"t": {"security_headers": {}}}}"#;
    let s = Suite::start(with, &["security_headers"]);
    let r = s.get("/x", &[]);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn method_overrides_are_stripped_unless_the_tenant_checks_them() {
    let profile = r#"{"tenancy": {"default": "t", "hosts": {"check.example": "c"}},
        "tenants": {
          "t": {"endpoint_guard": {"allowed_methods": ["GET", "POST"]}},
          "c": {"request": {"method_override": "check"}, "endpoint_guard": {"allowed_methods": ["GET", "POST"]}}
        }}"#;
    let s = Suite::start(profile, &["endpoint_guard"]);
    let h: Vec<(&str, &[u8])> = vec![("x-http-method-override", b"DELETE")];
    let r = s.send("POST", "/orders/1", &h, b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        s.echo.last().unwrap().header("x-http-method-override"),
        None
    );
    let h: Vec<(&str, &[u8])> = vec![
        ("host", b"check.example"),
        ("x-http-method-override", b"DELETE"),
    ];
    let r = s.send("POST", "/orders/1", &h, b"");
    assert_eq!(r.status, 405, "{}", r.text());
    let h: Vec<(&str, &[u8])> = vec![
        ("host", b"check.example"),
        ("x-http-method-override", b"GET"),
    ];
    assert_eq!(s.send("POST", "/orders/1", &h, b"").status, 200);
    assert_eq!(
        s.echo.last().unwrap().header("x-http-method-override"),
        Some("GET")
    );
}
