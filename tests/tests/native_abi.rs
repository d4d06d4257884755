//! The native module (`dist/libmeshware.so`) loads only into the Envoy whose
//! dynamic-module ABI it was built for (1.40.0): into that one its
//! configuration validates; into any other (`make test-compat` runs this
//! file against Envoy 1.36.2) it refuses to load, and says why, instead of
//! calling callbacks that do not exist or differ.

use meshware_e2e::suite::bootstrap;
use serde_json::json;
use std::process::Command;

use meshware_e2e::envoy::{version as envoy_version, NATIVE_ENVOY as BUILT_FOR};

#[test]
fn the_native_module_loads_only_into_the_envoy_it_was_built_for() {
    let module = meshware_e2e::dist().join(meshware_cli::bootstrap::NATIVE_MODULE);
    if !module.exists() {
        // Built by `make build-native` (part of `make test`), before this runs.
        panic!("{} is missing: run `make build-native`", module.display());
    }
    let profile = meshware_e2e::example_profile();
    let (mut config, _, _) = bootstrap(&profile, &[], 1);
    // Found by name in the search path: the form every Envoy with dynamic
    // modules reads (`module.local` is newer than 1.36).
    let filter = json!({
        "name": "meshware.suite",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "meshware", "do_not_close": true},
            "filter_name": "suite",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": profile}
        }
    });
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    // The router: last whatever the harness put first (every module mode).
    let router = hcm["http_filters"]
        .as_array()
        .and_then(|f| f.last())
        .cloned()
        .unwrap();
    hcm["http_filters"] = json!([filter, router]);
    let dir = tempdir();
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(meshware_e2e::envoy::binary())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&path)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", meshware_e2e::dist())
        .envs(meshware_e2e::demo_env())
        .output()
        .expect("envoy runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = envoy_version();
    if version == BUILT_FOR {
        assert!(out.status.success(), "Envoy {version} refused it:\n{log}");
        assert!(
            log.contains("Dynamic module ABI version v0.2.0 matched"),
            "{log}"
        );
    } else {
        assert!(!out.status.success(), "Envoy {version} took it:\n{log}");
        assert!(
            log.contains(
                "meshware: this module was built for Envoy 1.40.0 (dynamic modules ABI v0.2.0)"
            ),
            "Envoy {version}: no reason given:\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshware-native-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The one naming difference (ARCHITECTURE.md, "The native build"): the
/// same stat names as the wasm suite's in `/stats`, and in Prometheus
/// Envoy's `envoy_` prefix (no custom namespace for dynamic modules), read
/// here straight from the admin endpoint, not through the harness.
#[test]
fn native_metrics_keep_the_stat_names_and_gain_envoys_prefix_in_prometheus() {
    if envoy_version() != BUILT_FOR {
        return; // the module does not load there (the test above)
    }
    let echo = meshware_e2e::echo::Echo::start(0).unwrap();
    let port = meshware_e2e::envoy::free_port();
    let admin = meshware_e2e::envoy::free_port();
    let profile = meshware_e2e::example_profile();
    let mut params = meshware_cli::bootstrap::BootstrapParams::suite(
        port,
        admin,
        echo.port,
        meshware_e2e::dist(),
        profile,
    );
    params.filters = vec![meshware_cli::bootstrap::SUITE.to_string()];
    params.native = true;
    params.access_log_path = "/dev/null".into();
    let config = meshware_cli::bootstrap::render(&params);
    let envoy = meshware_e2e::envoy::Envoy::start_with(&config, admin, 1, "info").unwrap();
    let r = meshware_e2e::http::get(port, "/", &[("host", "shop.acme.example")]).unwrap();
    assert_eq!(r.status, 200);
    let counted = || {
        let stats = meshware_e2e::http::get(admin, "/stats", &[])
            .unwrap()
            .text();
        stats
            .lines()
            .any(|l| l == "meshware.decisions.filter.canary.tenant.acme.outcome.default: 1")
    };
    assert!(meshware_e2e::eventually(5, counted), "{}", envoy.log());
    let prom = meshware_e2e::http::get(admin, "/stats/prometheus", &[])
        .unwrap()
        .text();
    assert!(
        prom.contains(
            "envoy_meshware_decisions{filter=\"canary\",tenant=\"acme\",outcome=\"default\"} 1"
        ),
        "{prom}"
    );
}
