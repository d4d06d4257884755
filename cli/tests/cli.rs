#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test helpers outside #[test] fns
//! The `meshware` command as users run it in CI.

use std::process::Command;

fn meshware(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshware"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example() -> String {
    format!("{}/../examples/tenants.json", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_the_example_profile() {
    let (code, out, _) = meshware(&["validate", &example()]);
    assert_eq!(code, 0);
    assert!(out.contains("valid for access_log, trace_context"), "{out}");
}

#[test]
fn validate_lists_every_problem_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("meshware-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"tenancy":{"default":"acme","hosts":{"x.example":"ghost"}},
            "tenants":{"acme":{"trace_context":{"sample_rate":"high"}}}}"#,
    )
    .unwrap();
    let (code, _, err) = meshware(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("tenants.acme.trace_context.sample_rate: must be a number"),
        "{err}"
    );
    assert!(
        err.contains("tenancy.hosts[\"x.example\"]: unknown tenant \"ghost\""),
        "{err}"
    );
}

#[test]
fn usage_and_missing_files_are_clear_errors() {
    let (code, _, err) = meshware(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("usage:"));
    let (code, _, err) = meshware(&["validate", "/nonexistent.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent.json"), "{err}");
}

#[test]
fn bootstrap_renders_json_with_the_profile_inside() {
    let dir = std::env::temp_dir();
    let (code, out, err) = meshware(&[
        "bootstrap",
        "--profile",
        &example(),
        "--wasm-dir",
        dir.to_str().unwrap(),
        "--listen-port",
        "12345",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        12345
    );
    assert!(out.contains("shop.acme.example"));
    let (code, _, err) = meshware(&["bootstrap", "--profile", &example()]);
    assert_eq!(code, 2);
    assert!(err.contains("--wasm-dir is required"), "{err}");
}

#[test]
fn istio_and_oci_need_built_modules_and_say_so() {
    let empty = std::env::temp_dir().join(format!("meshware-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let dir = empty.to_str().unwrap();
    let (code, _, err) = meshware(&[
        "istio",
        "--profile",
        &example(),
        "--wasm-dir",
        dir,
        "--out",
        dir,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("access_log.wasm") && err.contains("run make build"),
        "{err}"
    );
    let (code, _, err) = meshware(&["oci", "--wasm-dir", dir, "--out", dir]);
    assert_eq!(code, 2);
    assert!(err.contains("run make build"), "{err}");
    let (code, _, err) = meshware(&["istio", "--profile", &example(), "--selector", "nokey"]);
    assert_eq!(code, 2);
    assert!(err.contains("--selector: expected key=value"), "{err}");
    let (code, _, err) = meshware(&["istio", "--bogus", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown option --bogus"), "{err}");
}

/// A profile with one secret of each kind in clear (an admin token and an
/// HMAC key), in a file of its own.
fn profile_with_plain_secrets(tag: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    v["tenants"]["acme"]["endpoint_guard"]["admin_tokens"] =
        serde_json::json!(["plain-admin-token-0123456789"]);
    let keys = &mut v["tenants"]["umbrella"]["jwt_auth"]["providers"][0]["jwks"]["keys"];
    for key in keys.as_array_mut().unwrap() {
        if key["kty"] == "oct" {
            key["k"] = serde_json::json!("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA");
        }
    }
    let path = std::env::temp_dir().join(format!("meshware-cli-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn istio_refuses_secrets_in_clear_unless_told() {
    let profile = profile_with_plain_secrets("plain");
    let empty = std::env::temp_dir().join(format!("meshware-cli-plain-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let dir = empty.to_str().unwrap();
    let args = [
        "istio",
        "--profile",
        &profile,
        "--wasm-dir",
        dir,
        "--out",
        dir,
    ];
    let (code, _, err) = meshware(&args);
    assert_eq!(code, 2);
    assert!(err.contains("holds secrets in clear"), "{err}");
    assert!(
        err.contains("tenants.acme.endpoint_guard.admin_tokens[0]: a plain admin token"),
        "{err}"
    );
    assert!(
        err.contains("tenants.umbrella.jwt_auth.providers[0].jwks.keys[4].k: an HMAC key in clear"),
        "{err}"
    );
    assert!(
        !err.contains("plain-admin-token-0123456789"),
        "no secret echoed: {err}"
    );
    // Told: it goes on (and stops at the missing modules here).
    let mut told = args.to_vec();
    told.extend(["--allow-plain-secrets", "yes"]);
    let (code, _, err) = meshware(&told);
    assert_eq!(code, 2);
    assert!(err.contains("run make build"), "{err}");
    // validate warns about both, and the example (hash + reference) is clean.
    let (code, _, err) = meshware(&["validate", &profile]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("hold no secret").count(), 2, "{err}");
    let (_, _, err) = meshware(&["validate", &example()]);
    assert!(!err.contains("warning: tenants"), "{err}");
}

#[test]
fn bootstrap_passes_the_referenced_variables_to_every_vm() {
    let dir = std::env::temp_dir();
    let (code, out, err) = meshware(&[
        "bootstrap",
        "--profile",
        &example(),
        "--wasm-dir",
        dir.to_str().unwrap(),
        "--env",
        "EXTRA_NAME",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let filters = v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .clone();
    let wasm: Vec<&serde_json::Value> = filters
        .iter()
        .filter(|f| f["typed_config"]["config"]["vm_config"].is_object())
        .collect();
    assert!(!wasm.is_empty());
    for f in wasm {
        assert_eq!(
            f["typed_config"]["config"]["vm_config"]["environment_variables"],
            serde_json::json!({"host_env_keys": ["EXTRA_NAME", "MESHWARE_DEMO_HMAC_KEY"]}),
            "{}",
            f["name"]
        );
    }
    let (code, _, err) = meshware(&[
        "bootstrap",
        "--profile",
        &example(),
        "--wasm-dir",
        dir.to_str().unwrap(),
        "--env",
        "NOT-A-NAME",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--env: {\"env\": \"NOT-A-NAME\"}"), "{err}");
}

#[test]
fn bootstrap_with_ecds_writes_one_file_per_filter() {
    let dir = std::env::temp_dir().join(format!("meshware-cli-ecds-{}", std::process::id()));
    let wasm = std::env::temp_dir();
    let (code, out, err) = meshware(&[
        "bootstrap",
        "--profile",
        &example(),
        "--wasm-dir",
        wasm.to_str().unwrap(),
        "--filters",
        "trace_context,rate_limit",
        "--ecds-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["node"]["id"], "meshware");
    let filters = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    for (i, name) in ["trace_context", "rate_limit"].iter().enumerate() {
        let f = &filters[i];
        assert_eq!(f["name"], format!("meshware.{name}"));
        let path = f["config_discovery"]["config_source"]["path_config_source"]["path"]
            .as_str()
            .unwrap();
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let resource = &file["resources"][0];
        assert_eq!(resource["name"], format!("meshware.{name}"));
        assert!(resource["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap()
            .contains("shop.acme.example"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
