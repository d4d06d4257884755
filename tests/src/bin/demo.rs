//! `make run`: Envoy with every filter on 127.0.0.1:10000 (admin :9901), the
//! echo upstream on 127.0.0.1:8080 (a second one on :8081 receives canary
//! versions), and `examples/tenants.json`. Ctrl-C stops all.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::echo::Echo;
use std::process::{Command, ExitCode};

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
    let mut params = BootstrapParams::suite(
        10000,
        9901,
        echo.port,
        meshware_e2e::dist(),
        profile.clone(),
    );
    params.route_canary_versions(&profile, "echo-canary", canary.port);
    let config = render(&params);
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

Ctrl-C stops everything.",
        path.display()
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
