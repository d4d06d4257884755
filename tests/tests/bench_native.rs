//! `make bench`'s native-equivalent chain through real Envoy: the native
//! filters must enforce what the suite enforces for the benchmark tenant
//! (token required, protected paths closed unless the admin token is sent,
//! methods limited under a route, CORS and security headers on the answer),
//! or the comparison would set our filters against less work.
//!
//! Run against the echo upstream, not the benchmark's direct-response route:
//! Envoy's cors filter leaves a direct (local) reply without CORS headers,
//! which would hide whether its policy is right (PERFORMANCE.md notes what
//! that spares the native chain in the benchmark). The benchmark's own
//! bootstrap, with the direct-response route, is checked by `envoy --mode
//! validate`.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::bench_setup::{bench_profile, native_chain, token, HOST};
use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{free_port, validate, Envoy};
use meshware_e2e::http::{get, send, Response};
use serde_json::Value;

struct Native {
    envoy: Envoy,
    echo: Echo,
    port: u16,
    token: String,
}

fn start() -> Native {
    let profile = bench_profile().unwrap();
    let native = native_chain(&profile).unwrap();
    let echo = Echo::start(0).unwrap();
    let (port, admin) = (free_port(), free_port());
    let params = |direct_response: bool| {
        let mut p = BootstrapParams::suite(
            port,
            admin,
            echo.port,
            meshware_e2e::dist(),
            profile.clone(),
        );
        p.filters = vec![];
        p.direct_response = direct_response;
        let mut bootstrap = render(&p);
        native.add_to(&mut bootstrap);
        bootstrap
    };
    let (valid, out) = validate(&params(true));
    assert!(
        valid,
        "envoy --mode validate refused the benchmark's native chain:\n{out}"
    );
    let envoy = Envoy::start(&params(false), admin).unwrap();
    Native {
        envoy,
        echo,
        port,
        token: token().unwrap(),
    }
}

impl Native {
    fn get(&self, path: &str, extra: &[(&str, &str)]) -> Response {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![("host", HOST), ("authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        get(self.port, path, &headers).unwrap()
    }
}

fn admin_token(profile: &Value) -> String {
    profile["tenants"]["bench"]["endpoint_guard"]["admin_tokens"][0]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_native_chain_enforces_the_benchmark_tenants_rules() {
    let n = start();
    let log = || n.envoy.log();

    // The benchmark's request: allowed, with CORS and security headers.
    let ok = n.get("/orders", &[("origin", "https://shop.acme.example")]);
    assert_eq!(ok.status, 200, "{}", log());
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://shop.acme.example")
    );
    assert_eq!(ok.header("x-frame-options"), Some("DENY"));
    assert!(ok.header("strict-transport-security").is_some());
    assert!(ok.header("x-ratelimit-limit").is_some(), "{:?}", ok.headers);
    assert_eq!(ok.header("server"), None);

    // No token: jwt_authn answers.
    let anonymous = get(n.port, "/orders", &[("host", HOST)]).unwrap();
    assert_eq!(anonymous.status, 401);

    // Protected paths (a default one in any case, the tenant's extra one)
    // are closed to a client outside allow_cidrs (127.0.0.1 is not in 10/8).
    for path in [
        "/debug/pprof/heap",
        "/DEBUG/Pprof",
        "/internal/users",
        "/.git/config",
    ] {
        assert_eq!(n.get(path, &[]).status, 403, "{path} was not denied");
    }
    // ... and open with the admin token.
    let admin = admin_token(&serde_json::from_str(&bench_profile().unwrap()).unwrap());
    assert_eq!(
        n.get("/debug/pprof/heap", &[("x-admin-token", admin.as_str())])
            .status,
        200
    );
    assert_eq!(
        n.get(
            "/debug/pprof/heap",
            &[("x-admin-token", "not-the-admin-token!")]
        )
        .status,
        403
    );

    // The tenant's /upload route allows PUT and POST only.
    assert_eq!(n.get("/upload/a", &[]).status, 403);
    let bearer = format!("Bearer {}", n.token);
    let put = send(
        n.port,
        "PUT",
        "/upload/a",
        &[
            ("host", HOST.as_bytes()),
            ("authorization", bearer.as_bytes()),
        ],
        b"x",
    )
    .unwrap();
    assert_eq!(put.status, 200, "{}", log());

    // Nothing denied reached the upstream.
    let reached: Vec<String> = n.echo.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        reached,
        ["/orders", "/debug/pprof/heap", "/upload/a"],
        "the upstream saw other requests"
    );
}

/// A bad endpoint_guard section is refused with its field named, not turned
/// into a native chain that enforces something else.
#[test]
fn a_bad_guard_section_is_an_error_naming_the_field() {
    let mut profile: Value = serde_json::from_str(&bench_profile().unwrap()).unwrap();
    profile["tenants"]["bench"]["endpoint_guard"]["allow_cidrs"] =
        serde_json::json!(["10.0.0.1/8"]);
    let err = native_chain(&profile.to_string()).err().unwrap();
    assert!(
        err.contains("tenants.bench.endpoint_guard.allow_cidrs"),
        "{err}"
    );
}
