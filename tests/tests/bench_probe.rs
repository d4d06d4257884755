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
