//! `meshware bootstrap`'s output runs a real Envoy: canary versions routed
//! to their own upstreams, the listener address and access-log destination
//! as given (the same template the demo and the tests render).

use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{free_port, validate, Envoy};
use meshware_e2e::suite::suite_module;

#[test]
fn the_cli_bootstrap_routes_canary_versions_to_their_upstreams() {
    let stable = Echo::start(0).expect("stable upstream");
    let v2 = Echo::start(0).expect("v2 upstream");
    let (port, admin) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("meshware-cli-access-{port}.log"));
    let mut args: Vec<String> = [
        "--profile",
        "examples/tenants.json",
        "--wasm-dir",
        "dist",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-port",
        &admin.to_string(),
        "--upstream",
        &format!("127.0.0.1:{}", stable.port),
        "--upstream",
        &format!("v2=localhost:{}", v2.port),
        "--access-log",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if suite_module() {
        args.extend(["--filters".to_string(), "suite".to_string()]);
    }
    std::env::set_current_dir(meshware_e2e::root()).expect("cd to the workspace");
    let (config, warnings) = meshware_cli::bootstrap::from_args(&args).expect("bootstrap");
    assert!(warnings.is_empty(), "{warnings:?}");
    let (ok, out) = validate(&config);
    assert!(ok, "{out}");
    let envoy = Envoy::start(&config, admin).expect("envoy on the CLI's bootstrap");
    let get = |headers: &[(&str, &str)]| {
        meshware_e2e::http::get(port, "/orders", headers).expect("request through envoy")
    };
    let acme = ("host", "shop.acme.example");
    for _ in 0..3 {
        let r = get(&[acme, ("x-env-tag", "canary")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-route-version"), Some("v2"));
    }
    assert_eq!(v2.count(), 3, "the v2 upstream serves the canary");
    // A request that stays on v1 (acme's rules send 5% elsewhere at random:
    // a client the tenant's sticky hash keeps on v1 is found by trying).
    let stayed = (0..40).any(|i| {
        let user = format!("user-{i}");
        let r = get(&[
            acme,
            ("x-user-id", user.as_str()),
            ("cookie", &format!("uid={user}")),
        ]);
        r.header("x-route-version") == Some("v1")
    });
    assert!(stayed, "no request stayed on v1");
    assert!(stable.count() >= 1, "the default upstream serves v1");
    assert!(
        meshware_e2e::eventually(10, || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.lines().count() >= 1)),
        "access log at {}",
        log.display()
    );
    drop(envoy);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn the_cli_refuses_an_upstream_for_a_version_no_tenant_has() {
    std::env::set_current_dir(meshware_e2e::root()).expect("cd to the workspace");
    let args: Vec<String> = [
        "--profile",
        "examples/tenants.json",
        "--wasm-dir",
        "dist",
        "--upstream",
        "v9=127.0.0.1:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let err = meshware_cli::bootstrap::from_args(&args)
        .err()
        .unwrap_or_default();
    assert!(
        err.contains("no tenant of the profile has a canary version \"v9\""),
        "{err}"
    );
    let args: Vec<String> = ["--profile", "examples/tenants.json", "--wasm-dir", "dist"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (_, warnings) = meshware_cli::bootstrap::from_args(&args).expect("bootstrap");
    assert!(
        warnings.iter().any(|w| w.contains("\"v2\"")),
        "{warnings:?}"
    );
}

/// README's gRPC example: the CLI's defaults (the client's protocol
/// upstream, gRPC routes on the client's deadline) in front of a real gRPC
/// server, called by `tests/grpc/client.py`.
#[test]
fn the_cli_bootstrap_carries_grpc_with_its_defaults() {
    let server = meshware_e2e::grpc::GrpcServer::start();
    let (port, admin) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "--profile",
        "examples/tenants.json",
        "--wasm-dir",
        "dist",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-port",
        &admin.to_string(),
        "--upstream",
        &format!("127.0.0.1:{}", server.port),
        "--grpc-web",
        "on",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if suite_module() {
        args.extend(["--filters".to_string(), "suite".to_string()]);
    }
    std::env::set_current_dir(meshware_e2e::root()).expect("cd to the workspace");
    let (config, _) = meshware_cli::bootstrap::from_args(&args).expect("bootstrap");
    let (ok, out) = validate(&config);
    assert!(ok, "{out}");
    let _envoy = Envoy::start(&config, admin).expect("envoy on the CLI's bootstrap");
    let unary = meshware_e2e::grpc::call(port, "Unary", "hello", &[]);
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["responses"], serde_json::json!(["hello"]));
    let stream = meshware_e2e::grpc::call(port, "ServerStream", "2", &[]);
    assert_eq!(
        stream["responses"],
        serde_json::json!(["0", "1"]),
        "{stream}"
    );
}
