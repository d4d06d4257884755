//! One scenario: the echo upstream plus Envoy with the suite's filters and a
//! profile, rendered from the one bootstrap template.

use crate::echo::Echo;
use crate::envoy::{free_port, Envoy};
use crate::http::{self, Response};
use meshware_cli::bootstrap::{render, BootstrapParams};
use serde_json::Value;

pub struct Suite {
    /// The default (stable) upstream.
    pub echo: Echo,
    /// The upstream of canary versions, when started with `start_with_canary`.
    pub canary: Option<Echo>,
    /// The server behind every extra cluster of `start_with_services`
    /// (a JWKS endpoint, an auth service), scripted per path.
    pub services: Option<Echo>,
    pub envoy: Envoy,
    pub port: u16,
}

/// The bootstrap for a profile and filters, on fresh ports.
pub fn bootstrap(profile: &str, filters: &[&str], upstream_port: u16) -> (Value, u16, u16) {
    bootstrap_with(profile, filters, upstream_port, None)
}

/// As `bootstrap`, plus a second upstream for every canary version.
pub fn bootstrap_with(
    profile: &str,
    filters: &[&str],
    upstream_port: u16,
    canary_port: Option<u16>,
) -> (Value, u16, u16) {
    bootstrap_params(profile, filters, upstream_port, canary_port, &|_| {})
}

/// As `bootstrap_with`, with the template's parameters changed by `edit`
/// before rendering (the upstream's protocol, gRPC-Web).
pub fn bootstrap_params(
    profile: &str,
    filters: &[&str],
    upstream_port: u16,
    canary_port: Option<u16>,
    edit: &dyn Fn(&mut BootstrapParams),
) -> (Value, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let dist = crate::dist();
    // `MESHWARE_E2E_MODULE=suite`: the same scenario against the single
    // module, with the profile narrowed to the sections of these filters
    // (the suite runs exactly the concerns a profile configures).
    let narrowed;
    let explicit_suite = filters == [meshware_cli::bootstrap::SUITE];
    let (profile, filters): (&str, &[&str]) = if suite_module() && !explicit_suite {
        narrowed = narrow_profile(profile, filters);
        (&narrowed, &[meshware_cli::bootstrap::SUITE])
    } else {
        (profile, filters)
    };
    for f in filters {
        let module = module_file(&dist, f);
        assert!(
            module.exists(),
            "{} is missing: run `make build` (and `make build-native`) first",
            module.display()
        );
    }
    let mut params = BootstrapParams::suite(port, admin, upstream_port, dist, profile.to_string());
    params.filters = filters.iter().map(|s| s.to_string()).collect();
    params.native = native_module();
    params.access_log_path = access_log_path(port).display().to_string();
    if let Some(canary) = canary_port {
        params.route_canary_versions(profile, "echo-canary", canary);
    }
    edit(&mut params);
    let value = render(&params);
    (value, port, admin)
}

/// The template's parameters for a profile and filters (separate modules,
/// or the suite module under `MESHWARE_E2E_MODULE=suite`), with the
/// filters' configurations as ECDS files in `ecds_dir`: what
/// `write_ecds_files` writes for a bootstrap from `bootstrap_params`.
pub fn params(
    profile: &str,
    filters: &[&str],
    upstream_port: u16,
    ecds_dir: &std::path::Path,
) -> BootstrapParams {
    let narrowed;
    let (profile, filters): (&str, &[&str]) = if suite_module() {
        narrowed = narrow_profile(profile, filters);
        (&narrowed, &[meshware_cli::bootstrap::SUITE])
    } else {
        (profile, filters)
    };
    let mut p = BootstrapParams::suite(0, 0, upstream_port, crate::dist(), profile.to_string());
    p.filters = filters.iter().map(|s| s.to_string()).collect();
    p.ecds_dir = Some(ecds_dir.to_path_buf());
    p.native = native_module();
    p
}

/// The file of module `filter` in `dist`: its wasm module, or the native
/// suite under `MESHWARE_E2E_MODULE=native`.
fn module_file(dist: &std::path::Path, filter: &str) -> std::path::PathBuf {
    if native_module() && filter == meshware_cli::bootstrap::SUITE {
        dist.join(meshware_cli::bootstrap::NATIVE_MODULE)
    } else {
        dist.join(format!("{filter}.wasm"))
    }
}

/// Makes the first filter of a rendered bootstrap (for `filter`, or the
/// suite module under `MESHWARE_E2E_MODULE=suite`) the test-only build
/// that panics on demand (`make build-test-panic`), under `policy`.
pub fn use_test_panic_module(config: &mut Value, filter: &str, policy: &str) {
    let first = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"];
    if native_module() {
        // The native build has no failure policy: it catches every panic.
        let module = crate::dist()
            .join("test-panic")
            .join(meshware_cli::bootstrap::NATIVE_MODULE);
        assert!(
            module.exists(),
            "{} is missing: run `make build-test-panic`",
            module.display()
        );
        first["dynamic_module_config"]["module"]["local"]["filename"] = serde_json::json!(module);
        return;
    }
    let wasm = &mut first["config"];
    let name = if suite_module() {
        meshware_cli::bootstrap::SUITE
    } else {
        filter
    };
    let module = crate::dist()
        .join("test-panic")
        .join(format!("{name}.wasm"));
    assert!(
        module.exists(),
        "{} is missing: run `make build-test-panic`",
        module.display()
    );
    wasm["vm_config"]["code"]["local"]["filename"] = serde_json::json!(module);
    wasm["failure_policy"] = serde_json::json!(policy);
}

/// Whether the e2e tests run against the suite module
/// (`MESHWARE_E2E_MODULE=suite`, or its native build: `native`).
pub fn suite_module() -> bool {
    std::env::var("MESHWARE_E2E_MODULE")
        .is_ok_and(|m| m == meshware_cli::bootstrap::SUITE || m == NATIVE)
}

const NATIVE: &str = "native";

/// Whether the e2e tests run against the native suite
/// (`MESHWARE_E2E_MODULE=native`: `dist/libmeshware.so`, Envoy's dynamic
/// modules).
pub fn native_module() -> bool {
    std::env::var("MESHWARE_E2E_MODULE").is_ok_and(|m| m == NATIVE)
}

/// The profile without the sections of suite concerns other than `filters`
/// (in `defaults` and every tenant).
pub fn narrow_profile(profile: &str, filters: &[&str]) -> String {
    // Read as the modules read it: a test of invalid JSON (a repeated name
    // too, which serde_json would drop) passes it on as is.
    let Ok(mut v) = meshware_common::json::parse(profile.as_bytes()) else {
        return profile.to_string();
    };
    let keep = |sections: &mut Value| {
        if let Some(map) = sections.as_object_mut() {
            // Unknown (misspelt) sections stay: they are errors to report.
            map.retain(|name, _| {
                filters.contains(&name.as_str())
                    || !meshware_common::KNOWN_SECTIONS.contains(&name.as_str())
            });
        }
    };
    if let Some(defaults) = v.get_mut("defaults") {
        keep(defaults);
    }
    if let Some(tenants) = v.get_mut("tenants").and_then(Value::as_object_mut) {
        tenants.values_mut().for_each(keep);
    }
    v.to_string()
}

/// Where the Envoy listening on `port` writes its access log.
pub fn access_log_path(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "meshware-e2e-access-{}-{port}.log",
        std::process::id()
    ))
}

impl Suite {
    /// The access log lines written so far, parsed (Envoy flushes the file
    /// about once a second: poll with `access_log_until`).
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(access_log_path(self.port))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Polls the access log (up to 10 s) until `done` holds for its lines.
    pub fn access_log_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if done(&lines) || std::time::Instant::now() > end {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn start(profile: &str, filters: &[&str]) -> Suite {
        Self::start_inner(profile, filters, false)
    }

    /// With a second upstream receiving every canary version.
    pub fn start_with_canary(profile: &str, filters: &[&str]) -> Suite {
        Self::start_inner(profile, filters, true)
    }

    /// With clusters named `clusters`, all served by `services` (script its
    /// answers before the first request: the filters call out at start).
    pub fn start_with_services(
        profile: &str,
        filters: &[&str],
        services: Echo,
        clusters: &[&str],
    ) -> Suite {
        Self::start_with_services_on(profile, filters, services, clusters, 2)
    }

    /// As `start_with_services`, with `workers` Envoy worker threads (one:
    /// every request meets the same VM and its parked list).
    pub fn start_with_services_on(
        profile: &str,
        filters: &[&str],
        services: Echo,
        clusters: &[&str],
        workers: u32,
    ) -> Suite {
        let echo = Echo::start(0).expect("echo upstream");
        let (envoy, port) = start_on_fresh_ports(workers, || {
            let (mut config, port, admin) = bootstrap_with(profile, filters, echo.port, None);
            if let Some(list) = config["static_resources"]["clusters"].as_array_mut() {
                for name in clusters {
                    list.push(meshware_cli::bootstrap::static_cluster(name, services.port));
                }
            }
            (config, port, admin)
        });
        Suite {
            echo,
            canary: None,
            services: Some(services),
            envoy,
            port,
        }
    }

    /// With the rendered bootstrap changed by `edit` before Envoy starts
    /// (extra clusters and routes, Envoy's own options).
    pub fn start_edited(profile: &str, filters: &[&str], edit: impl Fn(&mut Value)) -> Suite {
        Self::start_edited_env(profile, filters, &[], edit)
    }

    /// As `start_edited`, with `env` in Envoy's environment.
    pub fn start_edited_env(
        profile: &str,
        filters: &[&str],
        env: &[(&str, &str)],
        edit: impl Fn(&mut Value),
    ) -> Suite {
        let echo = Echo::start(0).expect("echo upstream");
        let (envoy, port) = start_on_fresh_ports_env(2, env, || {
            let (mut config, port, admin) = bootstrap_with(profile, filters, echo.port, None);
            edit(&mut config);
            (config, port, admin)
        });
        Suite {
            echo,
            canary: None,
            services: None,
            envoy,
            port,
        }
    }

    /// With the upstream a gRPC server on `grpc_port` spoken to in
    /// `protocol` (`Downstream`: the client's, the CLI's default; gRPC-Web
    /// over HTTP/1.1 needs `Http2`) and Envoy's gRPC-Web filter; the echo
    /// upstream is still started, unused.
    pub fn start_grpc(
        profile: &str,
        filters: &[&str],
        grpc_port: u16,
        protocol: meshware_cli::bootstrap::Protocol,
    ) -> Suite {
        Self::start_grpc_edited(profile, filters, grpc_port, protocol, |_| {})
    }

    /// As `start_grpc`, with the rendered bootstrap changed by `edit`.
    pub fn start_grpc_edited(
        profile: &str,
        filters: &[&str],
        grpc_port: u16,
        protocol: meshware_cli::bootstrap::Protocol,
        edit: impl Fn(&mut Value),
    ) -> Suite {
        let echo = Echo::start(0).expect("echo upstream");
        let (envoy, port) = start_on_fresh_ports(2, || {
            let (mut config, port, admin) =
                bootstrap_params(profile, filters, grpc_port, None, &|p| {
                    for u in &mut p.upstreams {
                        u.protocol = protocol;
                    }
                    p.grpc_web = true;
                });
            edit(&mut config);
            (config, port, admin)
        });
        Suite {
            echo,
            canary: None,
            services: None,
            envoy,
            port,
        }
    }

    fn start_inner(profile: &str, filters: &[&str], with_canary: bool) -> Suite {
        let echo = Echo::start(0).expect("echo upstream");
        let canary = with_canary.then(|| Echo::start(0).expect("canary upstream"));
        let canary_port = canary.as_ref().map(|c| c.port);
        let (envoy, port) = start_on_fresh_ports(2, || {
            bootstrap_with(profile, filters, echo.port, canary_port)
        });
        Suite {
            echo,
            canary,
            services: None,
            envoy,
            port,
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(self.port, path, headers).expect("request through envoy")
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Response {
        http::send(self.port, method, path, headers, body).expect("request through envoy")
    }

    /// The value of one Prometheus sample, e.g.
    /// `meshware_decisions{filter="trace_context",tenant="acme",outcome="started"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.envoy.prometheus();
        text.lines().find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }
}

/// Adds a cluster to a rendered bootstrap (a store, a rate limit service).
pub fn add_cluster(config: &mut Value, cluster: Value) {
    if let Some(list) = config
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
    {
        list.push(cluster);
    }
}

/// Starts Envoy on the bootstrap `make_config` makes; if a port was taken between
/// picking and binding (another process can still win that race), renders
/// again on new ports. Any other failure panics with Envoy's log.
fn start_on_fresh_ports(workers: u32, make_config: impl Fn() -> (Value, u16, u16)) -> (Envoy, u16) {
    start_on_fresh_ports_env(workers, &[], make_config)
}

fn start_on_fresh_ports_env(
    workers: u32,
    env: &[(&str, &str)],
    make_config: impl Fn() -> (Value, u16, u16),
) -> (Envoy, u16) {
    let mut attempt = 0;
    loop {
        let (config, port, admin) = make_config();
        match Envoy::start_full(&[], &config, admin, workers, &["info"], env) {
            Ok(envoy) => return (envoy, port),
            Err(e) if attempt < 3 && e.contains("Address already in use") => attempt += 1,
            Err(e) => panic!("{e}"),
        }
    }
}
