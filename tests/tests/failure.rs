//! VM failure behaviour through real Envoy: test-only modules
//! (`make build-test-panic`, feature `meshware-common/test-panic`) panic in
//! the callback a request header arms. For each failure policy the client
//! gets a prompt 503 (FAIL_CLOSED), a bypass (FAIL_OPEN) or a reloaded VM
//! (FAIL_RELOAD, `vm_reload` stats move), and never a hang.

use meshware_e2e::echo::{Canned, Echo};
use meshware_e2e::envoy::Envoy;
use meshware_e2e::http::{self, Response};
use meshware_e2e::suite::bootstrap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ARM: &str = "x-meshware-test-panic";

struct Setup {
    echo: Echo,
    envoy: Envoy,
    port: u16,
    _services: Option<Echo>,
}

fn profile() -> String {
    meshware_e2e::example_profile()
}

/// Envoy with one test-panic module (`filter`) under `policy`.
fn start(filter: &str, policy: &str, profile: &str, services: Option<Echo>) -> Setup {
    let echo = Echo::start(0).unwrap();
    let (mut config, port, admin) = bootstrap(profile, &[filter], echo.port);
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    // The bound on a request held for a callout whose callback crashed the
    // VM (Envoy never resumes it): shortened from the bootstrap's 60 s.
    hcm["stream_idle_timeout"] = json!("2s");
    meshware_e2e::suite::use_test_panic_module(&mut config, filter, policy);
    if let Some(s) = &services {
        config["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(meshware_cli::bootstrap::static_cluster("idp", s.port));
    }
    // One worker: the panicking VM is the one every request meets.
    let envoy = Envoy::start_with(&config, admin, 1, "info").unwrap_or_else(|e| panic!("{e}"));
    Setup {
        echo,
        envoy,
        port,
        _services: services,
    }
}

impl Setup {
    fn get(&self, headers: &[(&str, &str)]) -> (Response, Duration) {
        let t = Instant::now();
        let r = http::get(self.port, "/x", headers).expect("an answer, not a hang");
        (r, t.elapsed())
    }

    /// Whether the last request the upstream saw went through the filter
    /// (trace_context always writes a traceparent).
    fn filtered(&self) -> bool {
        self.echo
            .last()
            .is_some_and(|r| r.header("traceparent").is_some())
    }
}

fn vectors() -> Value {
    meshware_e2e::jwt_vectors()
}

/// The example profile with umbrella's keys fetched from cluster `idp`
/// every second (so JWKS callouts keep completing).
fn remote_jwks_profile() -> String {
    let mut p: Value = serde_json::from_str(&profile()).unwrap();
    let provider = &mut p["tenants"]["umbrella"]["jwt_auth"]["providers"][0];
    provider.as_object_mut().unwrap().remove("jwks");
    provider["remote_jwks"] =
        json!({"cluster": "idp", "path": "/jwks", "ttl_s": 1, "refetch_interval_s": 1});
    p.to_string()
}

fn start_case(filter: &str, policy: &str) -> Setup {
    if filter == "jwt_auth" {
        let idp = Echo::start(0).unwrap();
        idp.script(
            "/jwks",
            Canned::new(200, vectors()["jwks"].to_string().as_bytes()),
        );
        start(filter, policy, &remote_jwks_profile(), Some(idp))
    } else {
        start(filter, policy, &profile(), None)
    }
}

fn token(name: &str) -> String {
    meshware_e2e::jwt_token(name)
}

const UMBRELLA: (&str, &str) = ("host", "api.umbrella.example");

/// One request that shows whether the filter is working: trace_context adds
/// a traceparent; jwt_auth refuses a request without a token.
fn probe(s: &Setup, filter: &str) -> (u16, bool) {
    let (r, t) = if filter == "jwt_auth" {
        s.get(&[UMBRELLA])
    } else {
        s.get(&[])
    };
    assert!(t < Duration::from_secs(2), "answered in {t:?}");
    let working = match filter {
        "jwt_auth" => r.status == 401,
        _ => r.status == 200 && s.filtered(),
    };
    (r.status, working)
}

fn reloads(s: &Setup) -> u64 {
    let stats = http::get(s.envoy.admin_port, "/stats", &[]).unwrap().text();
    stats
        .lines()
        .filter(|l| l.contains(".vm_reload_success:"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn case(filter: &str, policy: &str, callback: &str) {
    let s = start_case(filter, policy);
    let what = format!("{filter} {policy} panic in {callback}");
    assert!(probe(&s, filter).1, "{what}: working before");
    // jwt_auth: a token with a kid the key set lacks makes this very
    // request fetch the JWKS, so the armed callout answer is its own.
    let unknown_kid = format!("Bearer {}", token("unknown kid"));
    let (r, t) = s.get(&[(ARM, callback), UMBRELLA, ("authorization", &unknown_kid)]);
    if callback == "http_call_response" {
        // Envoy does not fail a request held for a callout when the VM
        // crashes in its callback: the stream idle timeout answers it.
        assert!(matches!(r.status, 408 | 503 | 504), "{what}: {}", r.status);
        assert!(
            t < Duration::from_secs(4),
            "{what}: bounded by the idle timeout: {t:?}"
        );
    } else {
        assert!(
            t < Duration::from_secs(2),
            "{what}: the arming request answered in {t:?}"
        );
    }
    let log = || s.envoy.log();
    match policy {
        "FAIL_CLOSED" => {
            // Closed from the failure on: a prompt 503, every time.
            assert!(
                meshware_e2e::eventually(5, || probe(&s, filter).0 == 503),
                "{what}: no 503\n{}",
                log()
            );
            for _ in 0..3 {
                assert_eq!(probe(&s, filter).0, 503, "{what}: stays closed");
            }
        }
        "FAIL_OPEN" => {
            // Bypassed: the request reaches the upstream without the filter.
            assert!(
                meshware_e2e::eventually(5, || {
                    let (status, working) = probe(&s, filter);
                    status == 200 && !working
                }),
                "{what}: not bypassed\n{}",
                log()
            );
        }
        _ => {
            // Reloaded: after the backoff a fresh VM serves again.
            // (Envoy reloads on the first request after the backoff.)
            assert!(
                meshware_e2e::eventually(8, || probe(&s, filter).1 && reloads(&s) >= 1),
                "{what}: no reload\n{}",
                log()
            );
        }
    }
    assert!(
        log().contains(&format!("test-panic armed for {callback}")),
        "{what}: the panic happened"
    );
    drop(r);
}

/// The native build (`MESHWARE_E2E_MODULE=native`): a panic anywhere fails
/// the request it happened in (503, or the stream idle timeout for a
/// request held for a callout whose answer panicked), the process lives on,
/// and the next requests are served by a rebuilt worker state.
fn native_case(filter: &str, callback: &str) {
    let s = start_case(filter, "native");
    let what = format!("native {filter}: panic in {callback}");
    assert!(probe(&s, filter).1, "{what}: working before");
    let unknown_kid = format!("Bearer {}", token("unknown kid"));
    let (r, t) = s.get(&[(ARM, callback), UMBRELLA, ("authorization", &unknown_kid)]);
    if callback == "http_call_response" {
        assert!(matches!(r.status, 408 | 503 | 504), "{what}: {}", r.status);
        assert!(t < Duration::from_secs(4), "{what}: {t:?}");
    } else if callback == "tick" {
        // A worker's root ticks in the first hook after its period is due
        // (the native build has no timer per worker): this request's or,
        // after the period, the next one's, which fails.
        assert!(matches!(r.status, 200 | 503), "{what}: {}", r.status);
        assert!(t < Duration::from_secs(2), "{what}: answered in {t:?}");
        if r.status == 200 {
            std::thread::sleep(Duration::from_millis(400));
            let (next, _) = s.get(&[]);
            assert_eq!(
                next.status, 503,
                "{what}: the request the tick ran in fails"
            );
        }
    } else {
        assert_eq!(r.status, 503, "{what}: the request fails closed");
        assert!(t < Duration::from_secs(2), "{what}: answered in {t:?}");
    }
    // The same process (its admin still answers) serves the next requests
    // with the filter working.
    assert!(
        meshware_e2e::eventually(5, || probe(&s, filter).1),
        "{what}: not working after the panic\n{}",
        s.envoy.log()
    );
    for _ in 0..3 {
        assert!(probe(&s, filter).1, "{what}: stays working");
    }
    assert!(http::get(s.envoy.admin_port, "/ready", &[]).is_ok_and(|r| r.status == 200));
    let log = s.envoy.log();
    assert!(
        log.contains(&format!("test-panic armed for {callback}")),
        "{what}: the panic happened\n{log}"
    );
    assert!(log.contains("panicked"), "{what}: the panic is logged");
}

#[test]
fn native_panics_fail_the_request_never_the_process() {
    if !meshware_e2e::suite::native_module() {
        return; // the wasm builds' failure policies: the tests below
    }
    for callback in ["request_headers", "response_headers", "tick"] {
        native_case("trace_context", callback);
    }
    native_case("jwt_auth", "http_call_response");
}

#[test]
fn fail_closed_answers_503_promptly() {
    if meshware_e2e::suite::native_module() {
        return; // no failure policies: `native_panics_fail_the_request_never_the_process`
    }
    for callback in ["request_headers", "response_headers", "tick"] {
        case("trace_context", "FAIL_CLOSED", callback);
    }
    case("jwt_auth", "FAIL_CLOSED", "http_call_response");
}

#[test]
fn fail_open_bypasses_the_filter() {
    if meshware_e2e::suite::native_module() {
        return;
    }
    for callback in ["request_headers", "response_headers", "tick"] {
        case("trace_context", "FAIL_OPEN", callback);
    }
    case("jwt_auth", "FAIL_OPEN", "http_call_response");
}

#[test]
fn fail_reload_restarts_the_vm() {
    if meshware_e2e::suite::native_module() {
        return;
    }
    for callback in ["request_headers", "response_headers", "tick"] {
        case("trace_context", "FAIL_RELOAD", callback);
    }
    case("jwt_auth", "FAIL_RELOAD", "http_call_response");
}
