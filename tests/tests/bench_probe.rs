//! The benchmark's replay probe (dist/bench/probe.wasm with a `replay`
//! plan) through real Envoy: it must make the calls it is given, in the
//! callbacks it is given, or `make bench`'s row of the suite's host calls
//! alone would measure less than it says. A plan it cannot replay is
//! refused at configure time.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{expect_rejected, free_port, Envoy};
use serde_json::{json, Value};

fn bootstrap(plan: &Value, upstream: u16) -> (Value, u16, u16) {
    let (port, admin) = (free_port(), free_port());
    let mut params = BootstrapParams::suite(
        port,
        admin,
        upstream,
        meshware_e2e::dist().join("bench"),
        plan.to_string(),
    );
    params.filters = vec!["probe".into()];
    (render(&params), port, admin)
}

#[test]
fn a_replay_makes_each_call_in_its_callback() {
    let plan = json!({"replay": [
        {"on": "request_headers", "call": "proxy_get_header_map_pairs", "map": 0},
        {"on": "request_headers", "call": "proxy_replace_header_map_value", "map": 0, "key": "x-replayed", "value": "request"},
        {"on": "request_headers", "call": "proxy_remove_header_map_value", "map": 0, "key": "authorization"},
        {"on": "request_headers", "call": "proxy_get_property", "path": ["source", "address"]},
        {"on": "request_headers", "call": "proxy_get_shared_data", "key": "replay.k"},
        {"on": "request_headers", "call": "proxy_set_shared_data", "key": "replay.k", "value": "01ff"},
        {"on": "request_headers", "call": "proxy_get_current_time_nanoseconds"},
        {"on": "request_headers", "call": "proxy_call_foreign_function", "name": "clear_route_cache", "argument": ""},
        {"on": "response_headers", "call": "proxy_get_header_map_pairs", "map": 2},
        {"on": "response_headers", "call": "proxy_add_header_map_value", "map": 2, "key": "x-replayed", "value": "response"},
        {"on": "response_headers", "call": "proxy_remove_header_map_value", "map": 2, "key": "x-echo-extra"},
        {"on": "log", "call": "proxy_get_property", "path": ["response", "code"]},
        {"on": "log", "call": "proxy_increment_metric", "metric": 0, "delta": 3},
        {"on": "log", "call": "proxy_record_metric", "metric": 2, "value": 7}
    ]});
    let echo = Echo::start(0).expect("echo upstream");
    let (config, port, admin) = bootstrap(&plan, echo.port);
    let envoy = Envoy::start(&config, admin).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        let r = meshware_e2e::http::get(
            port,
            "/replayed",
            &[
                ("authorization", "Bearer secret"),
                ("x-echo-response-header", "x-echo-extra: dropped"),
            ],
        )
        .expect("request through envoy");
        assert_eq!(r.status, 200, "{}", envoy.log());
        assert_eq!(r.header("x-replayed"), Some("response"));
        assert_eq!(
            r.header("x-echo-extra"),
            None,
            "removed in the response phase"
        );
    }
    let seen = echo.last().expect("the upstream got the request");
    assert_eq!(seen.header("x-replayed"), Some("request"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "removed in the request phase"
    );
    // The log phase's metric calls, once per request (2 x 3).
    let counted = meshware_e2e::eventually(5, || {
        envoy
            .prometheus()
            .lines()
            .any(|l| l.contains("probe_replay_counter") && l.trim_end().ends_with(" 6"))
    });
    assert!(counted, "{}", envoy.prometheus());
}

#[test]
fn a_plan_the_probe_cannot_replay_is_refused() {
    let plan = json!({"replay": [
        {"on": "request_headers", "call": "proxy_send_local_response"}
    ]});
    let (config, _, _) = bootstrap(&plan, free_port());
    let (code, log) = expect_rejected(&config);
    assert!(
        log.contains("call: the probe cannot replay \\\"proxy_send_local_response\\\"")
            || log.contains("call: the probe cannot replay \"proxy_send_local_response\""),
        "exit {code:?}:\n{log}"
    );
}

/// `make bench`'s "host calls only" row and `make profile-vm` run the suite
/// under the stand-in host in Node (tests/vmprof/host.cjs) with the
/// benchmark's profile, whose HMAC key comes from the VM's environment: the
/// host must configure the suite and trace a whole request, and the trace
/// must be a plan the probe replays through Envoy.
#[test]
fn the_suite_traced_by_the_stand_in_host_is_replayed_by_the_probe() {
    let dir = std::env::temp_dir().join(format!("meshware-trace-{}", std::process::id()));
    let written = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .env("BENCH_WRITE_PROFILE", &dir)
        .output()
        .expect("run the bench binary");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let trace_file = dir.join("suite.json");
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    let traced = std::process::Command::new(node)
        .arg(meshware_e2e::root().join("tests/vmprof/host.cjs"))
        .arg(meshware_e2e::dist().join("suite.wasm"))
        .arg(&dir)
        .env("VMPROF_TRACE", &trace_file)
        .output()
        .expect("run node");
    let stderr = String::from_utf8_lossy(&traced.stderr).to_string();
    assert!(traced.status.success(), "{stderr}");
    let trace: Value =
        serde_json::from_str(&std::fs::read_to_string(&trace_file).expect("the trace is written"))
            .expect("the trace is JSON");
    let steps = trace.as_array().expect("a list of host calls");
    for phase in ["request_headers", "response_headers", "log"] {
        assert!(
            steps.iter().any(|s| s["on"] == phase),
            "no host call in {phase}: {trace}"
        );
    }
    assert!(
        steps
            .iter()
            .any(|s| s["call"] == "proxy_replace_header_map_value" && s["key"] == "baggage"),
        "the suite's concerns ran (trace_context's baggage): {trace}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let echo = Echo::start(0).expect("echo upstream");
    let (config, port, admin) = bootstrap(&json!({ "replay": trace }), echo.port);
    let envoy = Envoy::start(&config, admin).unwrap_or_else(|e| panic!("{e}"));
    let r = meshware_e2e::http::get(port, "/orders", &[]).expect("request through envoy");
    assert_eq!(r.status, 200, "{}", envoy.log());
    let seen = echo.last().expect("the upstream got the request");
    assert_eq!(
        seen.header("baggage"),
        Some("tenant=bench"),
        "{}",
        envoy.log()
    );
}
