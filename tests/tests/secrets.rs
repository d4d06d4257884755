#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test helpers outside #[test] fns
//! Secrets referenced from the VM's environment (`{"env": "NAME"}`):
//! an HMAC key and an admin token reach the filters through Envoy's
//! `vm_config.environment_variables`, work, and appear nowhere Envoy writes
//! (its log at debug level, /config_dump, /stats); a missing or malformed
//! variable is a configuration error naming the path and the variable.

use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{expect_rejected_env, free_port, Envoy};
use meshware_e2e::http;
use meshware_e2e::suite::bootstrap;
use serde_json::{json, Value};

const UMBRELLA: (&str, &str) = ("host", "api.umbrella.example");
const HMAC_VAR: &str = "MESHWARE_TEST_HMAC_KEY";
const TOKEN_VAR: &str = "MESHWARE_TEST_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "e2e-admin-token-from-the-environment-7f3a";
const FILTERS: &[&str] = &["endpoint_guard", "jwt_auth"];

/// The base64url HMAC key PyJWT signed the `valid HS256` vector with.
fn hmac_key() -> String {
    let v = meshware_e2e::jwt_vectors();
    v["jwks"]["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kty"] == "oct"))
        .and_then(|k| k["k"].as_str())
        .expect("an oct key in vectors.json")
        .to_string()
}

/// The example profile with tenant umbrella's HMAC key and admin token
/// referenced from `hmac_var` and `TOKEN_VAR`.
fn profile(hmac_var: &str) -> String {
    let mut v: Value = serde_json::from_str(&meshware_e2e::example_profile()).unwrap();
    let umbrella = &mut v["tenants"]["umbrella"];
    umbrella["endpoint_guard"] = json!({"admin_tokens": [{"env": TOKEN_VAR}]});
    let keys = &mut umbrella["jwt_auth"]["providers"][0]["jwks"]["keys"];
    for key in keys.as_array_mut().unwrap() {
        if key["kty"] == "oct" {
            key["k"] = json!({ "env": hmac_var });
        }
    }
    v.to_string()
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", meshware_e2e::jwt_token(name))
}

#[test]
fn secrets_from_the_environment_work_and_never_show() {
    let key = hmac_key();
    let echo = Echo::start(0).unwrap();
    let (config, port, admin) = bootstrap(&profile(HMAC_VAR), FILTERS, echo.port);
    // Everything at debug except Envoy's own `http` logger, which prints
    // the client's request headers verbatim (docs/SECURITY.md).
    let envoy = Envoy::start_full(
        &[],
        &config,
        admin,
        2,
        &["debug", "http:info,http2:info"],
        &[(HMAC_VAR, &key), (TOKEN_VAR, ADMIN_TOKEN)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut h = vec![UMBRELLA];
        h.extend_from_slice(headers);
        http::get(port, path, &h).unwrap()
    };
    let hs256 = bearer("valid HS256");
    // The key from the environment verifies PyJWT's HS256 token; a token
    // signed with another key is refused.
    let r = get("/orders", &[("authorization", &hs256)]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert_eq!(
        get("/orders", &[("authorization", &bearer("tampered payload"))]).status,
        401
    );
    // The admin token from the environment opens a protected path; another
    // token does not, and neither reaches the upstream.
    let r = get(
        "/admin/jobs",
        &[("authorization", &hs256), ("x-admin-token", ADMIN_TOKEN)],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert_eq!(echo.last().unwrap().header("x-admin-token"), None);
    let wrong = get(
        "/admin/jobs",
        &[
            ("authorization", &hs256),
            ("x-admin-token", "e2e-admin-token-from-the-environment-7f3b"),
        ],
    );
    assert_eq!(wrong.status, 404);
    // Nowhere Envoy writes: its log, the config dump, the stats.
    let dump = http::get(admin, "/config_dump", &[]).unwrap().text();
    assert!(dump.contains(HMAC_VAR), "the dump names the variable only");
    let stats = http::get(admin, "/stats", &[]).unwrap().text();
    let log = envoy.log();
    let module_logger = if meshware_e2e::suite::native_module() {
        "[debug][dynamic_modules]"
    } else {
        "[debug][wasm]"
    };
    assert!(log.contains(module_logger), "the log is at debug level");
    for (what, text) in [("log", &log), ("config_dump", &dump), ("stats", &stats)] {
        assert!(!text.contains(&key), "the HMAC key is in the {what}");
        assert!(
            !text.contains(ADMIN_TOKEN),
            "the admin token is in the {what}"
        );
    }
}

#[test]
fn a_missing_or_malformed_variable_is_a_configuration_error() {
    let echo_port = free_port();
    let (config, _, _) = bootstrap(&profile("MESHWARE_TEST_UNSET_KEY"), FILTERS, echo_port);
    let (code, log) = expect_rejected_env(&config, &[(TOKEN_VAR, ADMIN_TOKEN)]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(
            "tenants.umbrella.jwt_auth.providers[0].jwks.keys[4]: \"k\": environment variable MESHWARE_TEST_UNSET_KEY is not set in the VM"
        ),
        "{log}"
    );
    // Set, but not a key: the error names the variable, never its value.
    let junk = "not a base64url key, but secret all the same";
    let (config, _, _) = bootstrap(&profile(HMAC_VAR), FILTERS, echo_port);
    let (code, log) = expect_rejected_env(&config, &[(HMAC_VAR, junk), (TOKEN_VAR, ADMIN_TOKEN)]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "tenants.umbrella.jwt_auth.providers[0].jwks.keys[4]: \"k\": environment variable {HMAC_VAR} is not base64url"
        )),
        "{log}"
    );
    assert!(!log.contains(junk), "{log}");
    // A token too short to be one (Envoy stops at the first module that
    // refuses its configuration: endpoint_guard comes before jwt_auth).
    let key = hmac_key();
    let short = "short-secret";
    let (code, log) = expect_rejected_env(&config, &[(HMAC_VAR, &key), (TOKEN_VAR, short)]);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "tenants.umbrella.endpoint_guard.admin_tokens[0]: environment variable {TOKEN_VAR}: admin tokens are at least 16 characters"
        )),
        "{log}"
    );
    assert!(!log.contains(short) && !log.contains(&key), "{log}");
}
