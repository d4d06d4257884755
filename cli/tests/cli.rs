#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
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
