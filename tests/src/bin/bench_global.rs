//! `make bench` (part): what a global limit costs per request, through real
//! Envoy (`--concurrency 1`, the echo upstream) and a real rate limit
//! service (limitador's counting behind Envoy's RLS gRPC API,
//! `meshware_e2e::rls`, in this process, limits never reached):
//!
//! - **rate_limit, local only**: one tenant-wide local limit;
//! - **rate_limit, local + global**: the same, plus one global descriptor
//!   (one gRPC call per request);
//! - **Envoy's ratelimit filter**: Envoy's own filter sending the same
//!   descriptor to the same service;
//! - **bare Envoy**, the baseline.
//!
//! Each configuration gets a fresh Envoy per round, rounds interleaved
//! (BENCH_ROUNDS, default 3), medians: Envoy's CPU per request over
//! BENCH_REQUESTS (default 3000) sequential requests on one keep-alive
//! connection (the service's own CPU is not Envoy's and not counted), and
//! those requests' p50 / p99 latency. With BENCH_WRITE_DOCS=1 the table
//! goes between the `global` markers of docs/PERFORMANCE.md.

use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::Envoy;
use meshware_e2e::http::KeepAlive;
use meshware_e2e::rls::{limit, Rls};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Instant;

const HOST: (&str, &str) = ("host", "bench.example");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bare,
    Local,
    LocalGlobal,
    Native,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Bare => "bare Envoy",
            Kind::Local => "rate_limit, local only",
            Kind::LocalGlobal => "rate_limit, local + global",
            Kind::Native => "Envoy's ratelimit filter, same service",
        }
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn profile(global: bool) -> String {
    let mut section = json!({"limits": [
        {"name": "tenant", "key": "tenant", "rate": 1_000_000, "burst": 1_000_000}
    ]});
    if global {
        section["global"] = json!({"cluster": "rls", "domain": "meshware", "timeout_ms": 1000,
            "descriptors": [{"name": "tenant",
                "entries": [{"key": "kind", "value": "tenant"}, "tenant"]}]});
    }
    json!({"tenancy": {"default": "bench", "hosts": {"bench.example": "bench"}},
           "tenants": {"bench": {"rate_limit": section}}})
    .to_string()
}

fn start(kind: Kind, rls: u16, echo: u16) -> Result<(Envoy, u16), String> {
    let filters: &[&str] = match kind {
        Kind::Local | Kind::LocalGlobal => &["rate_limit"],
        Kind::Bare | Kind::Native => &[],
    };
    let (mut config, port, admin) =
        meshware_e2e::suite::bootstrap(&profile(kind == Kind::LocalGlobal), filters, echo);
    if let Some(clusters) = config
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
    {
        clusters.push(meshware_cli::bootstrap::grpc_cluster("rls", rls));
    }
    if kind == Kind::Native {
        let hcm = config
            .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
            .ok_or("no connection manager")?;
        hcm["http_filters"] = json!([
            {"name": "envoy.filters.http.ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domain": "meshware", "timeout": "1s",
                "rate_limit_service": {"transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ]);
        let routes = hcm
            .pointer_mut("/route_config/virtual_hosts/0/routes")
            .and_then(Value::as_array_mut)
            .ok_or("no routes")?;
        for route in routes.iter_mut().filter(|r| r["route"].is_object()) {
            route["route"]["rate_limits"] = json!([{"actions": [
                {"generic_key": {"descriptor_key": "kind", "descriptor_value": "tenant"}},
                {"generic_key": {"descriptor_key": "tenant", "descriptor_value": "bench"}}
            ]}]);
        }
    }
    let envoy = Envoy::start_with(&config, admin, 1, "warn")?;
    Ok((envoy, port))
}

struct Sample {
    cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len().max(1) as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn measure(kind: Kind, rls: u16, echo: u16, requests: usize) -> Result<Sample, String> {
    let (envoy, port) = start(kind, rls, echo)?;
    let mut conn = KeepAlive::connect(port).map_err(|e| e.to_string())?;
    // Warm up: JIT tiers, connection pools, the service's counters.
    for _ in 0..300 {
        let r = conn.get("/", &[HOST]).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "{}: status {}\n{}",
                kind.label(),
                r.status,
                envoy.log()
            ));
        }
    }
    let before = envoy.cpu_us().ok_or("no cpu reading")?;
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let r = conn.get("/", &[HOST]).map_err(|e| e.to_string())?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if r.status != 200 {
            return Err(format!("{}: status {}", kind.label(), r.status));
        }
    }
    let after = envoy.cpu_us().ok_or("no cpu reading")?;
    Ok(Sample {
        cpu_us: after.saturating_sub(before) as f64 / requests as f64,
        p50_ms: percentile(latencies.clone(), 0.5),
        p99_ms: percentile(latencies, 0.99),
    })
}

fn run() -> Result<String, String> {
    let rounds = env_or("BENCH_ROUNDS", 3);
    let requests = env_or("BENCH_REQUESTS", 3000);
    let rls = Rls::start(&[limit(
        "tenant",
        1_000_000_000,
        3600,
        &[("kind", "tenant")],
        None,
    )]);
    let echo = Echo::start(0).map_err(|e| e.to_string())?;
    let kinds = [Kind::Bare, Kind::Local, Kind::LocalGlobal, Kind::Native];
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, kind) in kinds.iter().enumerate() {
            let s = measure(*kind, rls.port, echo.port, requests)?;
            eprintln!(
                "round {round} {}: {:.1} µs CPU/request, p50 {:.2} ms, p99 {:.2} ms",
                kind.label(),
                s.cpu_us,
                s.p50_ms,
                s.p99_ms
            );
            if let Some(v) = samples.get_mut(i) {
                v.push(s);
            }
        }
    }
    let median = |i: usize, f: fn(&Sample) -> f64| {
        percentile(
            samples
                .get(i)
                .map(|v| v.iter().map(f).collect())
                .unwrap_or_default(),
            0.5,
        )
    };
    let bare = median(0, |s| s.cpu_us);
    let local = median(1, |s| s.cpu_us);
    let mut table = format!(
        "| configuration ({rounds} rounds × {requests} requests, medians) | Envoy CPU µs/request | vs bare | p50 ms | p99 ms |\n|---|---|---|---|---|\n"
    );
    for (i, kind) in kinds.iter().enumerate() {
        let cpu = median(i, |s| s.cpu_us);
        table.push_str(&format!(
            "| {} | {cpu:.1} | {:.2}x | {:.2} | {:.2} |\n",
            kind.label(),
            cpu / bare,
            median(i, |s| s.p50_ms),
            median(i, |s| s.p99_ms),
        ));
    }
    table.push_str(&format!(
        "| the call, added to local only | {:.1} | | | |",
        median(2, |s| s.cpu_us) - local
    ));
    Ok(table)
}

fn write_docs(table: &str) -> Result<(), String> {
    let path = meshware_e2e::root().join("docs/PERFORMANCE.md");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let (start, end) = ("<!-- global:start -->\n", "<!-- global:end -->");
    let (Some((head, _)), Some((_, tail))) = (text.split_once(start), text.split_once(end)) else {
        return Err("no global markers in docs/PERFORMANCE.md".into());
    };
    let out = format!("{head}{start}{table}\n{end}{tail}");
    std::fs::write(&path, out).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(table) => {
            println!("{table}");
            if std::env::var("BENCH_WRITE_DOCS").is_ok() {
                if let Err(e) = write_docs(&table) {
                    eprintln!("bench_global: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_global: {e}");
            ExitCode::FAILURE
        }
    }
}
