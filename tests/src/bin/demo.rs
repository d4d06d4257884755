//! `make run`: Envoy with every filter on 127.0.0.1:10000 (admin :9901), the
//! echo upstream on 127.0.0.1:8080 (a second one on :8081 receives canary
//! versions), and `examples/tenants.json`. Ctrl-C stops all.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::echo::Echo;
use std::process::{Command, ExitCode};

/// `make run-etcd`: the local etcd's client port and the profile's prefix.
const ETCD_PORT: u16 = 2379;
const ETCD_PREFIX: &str = "/meshware/";

fn main() -> ExitCode {
    let root = meshware_e2e::root();
    let profile_path = std::env::var("PROFILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("examples/tenants.json"));
    let profile = match std::fs::read_to_string(&profile_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot read {}: {e}", profile_path.display());
            return ExitCode::from(2);
        }
    };
    if let Err(errors) = meshware_cli::validate_profile(profile.as_bytes()) {
        eprintln!("{} is invalid:\n{errors}", profile_path.display());
        return ExitCode::from(1);
    }
    let echo = match Echo::start(8080) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:8080: {e}");
            return ExitCode::from(2);
        }
    };
    let canary = match Echo::start(8081) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:8081: {e}");
            return ExitCode::from(2);
        }
    };
    // `make run-etcd` (ETCD=1): a local etcd on 127.0.0.1:2379 holds the
    // profile, which the filters poll; `meshware push` changes it live.
    let with_etcd = std::env::var("ETCD").is_ok_and(|v| v == "1");
    let mut etcd = None;
    let mut served = profile.clone();
    if with_etcd {
        let store = meshware_e2e::etcd::Etcd::start_on(ETCD_PORT, ETCD_PORT + 1);
        let endpoint =
            match meshware_cli::etcd::Endpoint::parse(&format!("http://127.0.0.1:{ETCD_PORT}")) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
        let parsed: serde_json::Value = match serde_json::from_str(&profile) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}: {e}", profile_path.display());
                return ExitCode::from(1);
            }
        };
        match meshware_cli::etcd::push(&endpoint, ETCD_PREFIX, &parsed, "the example profile") {
            Ok(line) => println!("etcd on 127.0.0.1:{ETCD_PORT}: {line}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
        let mut live = parsed;
        // Watched (etcd's gRPC Watch on an HTTP/2 cluster): a push applies at
        // once, and the store is polled at rest only to resync.
        live["config_source"] = serde_json::json!({
            "cluster": "etcd", "watch_cluster": "etcd-grpc", "prefix": ETCD_PREFIX,
            "poll_ms": 250, "timeout_ms": 1000
        });
        served = live.to_string();
        etcd = Some(store);
    }
    let mut params = BootstrapParams::suite(10000, 9901, echo.port, meshware_e2e::dist(), served);
    params.route_canary_versions(&profile, "echo-canary", canary.port);
    let mut config = render(&params);
    if let (true, Some(clusters)) = (
        with_etcd,
        config
            .pointer_mut("/static_resources/clusters")
            .and_then(serde_json::Value::as_array_mut),
    ) {
        clusters.push(meshware_cli::bootstrap::static_cluster("etcd", ETCD_PORT));
        clusters.push(meshware_cli::bootstrap::grpc_cluster(
            "etcd-grpc",
            ETCD_PORT,
        ));
    }
    let path = meshware_e2e::dist().join("demo-bootstrap.json");
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    println!(
        "meshware demo: Envoy on http://127.0.0.1:10000 (admin http://127.0.0.1:9901), echo upstream on 127.0.0.1:8080,
canary versions on the echo upstream on 127.0.0.1:8081
bootstrap: {} (also runs with `func-e run -c <that file>`)
access log: one JSON line per request on this terminal (errors always, successes as sampled)

Try:
  curl -s -H 'traceparent: 00-ZZ' http://127.0.0.1:10000/x
  curl -si -H 'host: shop.acme.example' -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://127.0.0.1:10000/orders
  curl -s -H 'host: api.globex.example' -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' http://127.0.0.1:10000/
  curl -s -H 'x-tenant-id: acme' http://127.0.0.1:10000/   # untrusted header: stripped, tenant stays 'public'
  curl -s -H 'host: shop.acme.example' http://127.0.0.1:10000/debug/pprof   # 404: hidden
  curl -si -H 'host: shop.acme.example' -H 'x-env-tag: canary' http://127.0.0.1:10000/   # canary upstream :8081
  curl -s http://127.0.0.1:9901/stats/prometheus | grep meshware_

Ctrl-C stops everything.{}",
        path.display(),
        if with_etcd {
            "

Live configuration: the filters poll etcd (127.0.0.1:2379, prefix /meshware/) every 250 ms.
  jq '.tenants.acme.rate_limit.limits[1].burst = 2' examples/tenants.json > /tmp/acme.json
  cargo run -q -p meshware-cli -- push --etcd http://127.0.0.1:2379 --prefix /meshware/ /tmp/acme.json
  curl -s http://127.0.0.1:10000/.well-known/meshware/status"
        } else {
            ""
        }
    );
    // The example profile's secrets come from the environment: the demo's
    // (examples/demo.env) unless the caller set its own.
    let demo_env = meshware_e2e::demo_env()
        .into_iter()
        .filter(|(name, _)| std::env::var_os(name).is_none());
    let status = Command::new(meshware_e2e::envoy::binary())
        .envs(demo_env)
        .arg("-c")
        .arg(&path)
        .args([
            "--concurrency",
            "2",
            "--log-level",
            "warn",
            "--component-log-level",
            "wasm:info",
            "--file-flush-interval-msec",
            "1000",
        ])
        .status();
    drop(etcd);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("envoy exited: {s}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "cannot start envoy ({}): {e}; run `make setup`",
                meshware_e2e::envoy::binary().display()
            );
            ExitCode::from(2)
        }
    }
}
