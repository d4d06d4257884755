//! `make bench` (part): live configuration from a real etcd at 1,000
//! tenants, through real Envoy (suite module, two workers).
//!
//! Three proxies: one polls the store every 250 ms, one watches it
//! (`watch_cluster`, etcd's gRPC Watch; polls only every 30 s at rest), one
//! has the profile inline.
//!
//! - **Push to applied**: 50 times, one tenant's quota changes through
//!   `meshware push`'s transaction; the time from the transaction's answer
//!   until every one of a proxy's eight already-open keep-alive connections
//!   is judged under the new quota. Median and p99 (of 50: the second
//!   largest), per proxy.
//! - **At rest**: Envoy's CPU (the scheduler's runtime of all its threads)
//!   over idle windows, the three proxies in turn, three rounds, medians;
//!   each source's share is its difference to the inline proxy.
//!
//! With BENCH_WRITE_DOCS=1 the table goes between the `live` markers of
//! docs/PERFORMANCE.md. BENCH_LIVE_POLL_MS and BENCH_LIVE_PUSHES change the
//! poll period and the number of pushes; BENCH_LIVE_LOG Envoy's log level.

use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::Envoy;
use meshware_e2e::etcd::Etcd;
use meshware_e2e::http::KeepAlive;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PREFIX: &str = "/bench/";
const TENANTS: usize = 1000;
fn tenant_count() -> usize {
    std::env::var("BENCH_LIVE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TENANTS)
}
const PUSHES: usize = 50;
fn poll_ms() -> u64 {
    std::env::var("BENCH_LIVE_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POLL_MS)
}
fn pushes() -> usize {
    std::env::var("BENCH_LIVE_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PUSHES)
}
const CONNECTIONS: usize = 8;
const POLL_MS: u64 = 250;

fn tenant(quota: u64) -> Value {
    json!({"rate_limit": {"response_headers": true, "limits": [
        {"name": "tenant", "key": "tenant", "rate": quota, "per": "minute", "burst": quota}
    ]}})
}

fn profile() -> Value {
    let mut hosts = serde_json::Map::new();
    let mut tenants = serde_json::Map::new();
    for i in 0..tenant_count() {
        let name = format!("t{i:04}");
        hosts.insert(format!("{name}.example"), json!(name));
        tenants.insert(name, tenant(1_000_000));
    }
    json!({"tenancy": {"default": "t0000", "hosts": hosts}, "defaults": {}, "tenants": tenants})
}

fn quota(text: Option<&str>) -> Option<u64> {
    text?
        .split(';')
        .find_map(|p| p.strip_prefix("q=")?.parse().ok())
}

/// How an Envoy gets its profile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Polls the store every `poll_ms`.
    Polled,
    /// Watches the store (`watch_cluster`), polls every `resync_ms` (30 s).
    Watched,
    /// The profile inline, no store.
    Inline,
}

fn start(
    profile: &Value,
    source: Source,
    etcd_port: u16,
    echo: &Echo,
) -> Result<(Envoy, u16), String> {
    let mut p = profile.clone();
    match source {
        Source::Polled => {
            p["config_source"] = json!({"cluster": "etcd", "prefix": PREFIX,
                "poll_ms": poll_ms(), "timeout_ms": 1000})
        }
        Source::Watched => {
            p["config_source"] = json!({"cluster": "etcd", "watch_cluster": "etcd-grpc",
                "prefix": PREFIX, "poll_ms": poll_ms(), "resync_ms": 30000, "timeout_ms": 1000})
        }
        Source::Inline => {}
    }
    let (mut config, port, admin) =
        meshware_e2e::suite::bootstrap(&p.to_string(), &["suite"], echo.port);
    if source != Source::Inline {
        meshware_e2e::suite::add_cluster(
            &mut config,
            meshware_cli::bootstrap::static_cluster("etcd", etcd_port),
        );
        meshware_e2e::suite::add_cluster(
            &mut config,
            meshware_cli::bootstrap::grpc_cluster("etcd-grpc", etcd_port),
        );
    }
    let level = std::env::var("BENCH_LIVE_LOG").unwrap_or_else(|_| "warn".into());
    let envoy = Envoy::start_with(&config, admin, 2, &level)?;
    Ok((envoy, port))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len().max(1) as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn run() -> Result<String, String> {
    let etcd = Etcd::start();
    let store = meshware_cli::etcd::Endpoint::parse(&format!("http://127.0.0.1:{}", etcd.port))?;
    let base = profile();
    meshware_cli::etcd::push(&store, PREFIX, &base, "1,000 tenants")?;
    let echo = Echo::start(0).map_err(|e| e.to_string())?;
    // The embedded default is the same profile: the first poll changes
    // nothing, every measured push changes one tenant.
    let (polled, polled_port) = start(&base, Source::Polled, etcd.port, &echo)?;
    let (watched, watched_port) = start(&base, Source::Watched, etcd.port, &echo)?;
    let (inline, _) = start(&base, Source::Inline, etcd.port, &echo)?;
    let host = ("host", "t0001.example");
    for (envoy, port) in [(&polled, polled_port), (&watched, watched_port)] {
        let applied_quota = || {
            meshware_e2e::http::get(port, "/", &[host])
                .ok()
                .and_then(|r| quota(r.header("ratelimit-policy")))
        };
        if !meshware_e2e::eventually(60, || applied_quota() == Some(1_000_000)) {
            return Err(format!("no answer:\n{}", envoy.log()));
        }
        let synced = || {
            meshware_e2e::http::get(port, "/.well-known/meshware/status", &[])
                .ok()
                .is_some_and(|r| r.json()["revision"].as_u64() == etcd.revision())
        };
        if !meshware_e2e::eventually(30, synced) {
            return Err(format!("the store was never polled:\n{}", envoy.log()));
        }
    }
    let watching = || {
        meshware_e2e::http::get(watched_port, "/.well-known/meshware/status", &[])
            .ok()
            .is_some_and(|r| r.json()["source"]["watch"] == "open")
    };
    if !meshware_e2e::eventually(30, watching) {
        return Err(format!("the watch never opened:\n{}", watched.log()));
    }
    // Connections to both proxies, opened before the pushes and kept.
    let mut conns: Vec<(usize, KeepAlive)> = Vec::new();
    for (which, port) in [(0, polled_port), (1, watched_port)] {
        for _ in 0..CONNECTIONS {
            conns.push((which, KeepAlive::connect(port).map_err(|e| e.to_string())?));
        }
    }
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut push_ms = Vec::new();
    for i in 0..pushes() {
        let want = 2_000_000 + i as u64;
        let mut next = base.clone();
        next["tenants"]["t0001"] = tenant(want);
        let planned = Instant::now();
        let plan = meshware_cli::etcd::plan(&store, PREFIX, &next)?;
        meshware_cli::etcd::commit(&store, &plan)?;
        let committed = Instant::now();
        push_ms.push((committed - planned).as_secs_f64() * 1000.0);
        // Each proxy's time: until every one of its connections is judged
        // under the new quota.
        let mut pending: Vec<usize> = (0..conns.len()).collect();
        let mut done = [false, false];
        while !pending.is_empty() {
            if committed.elapsed() > Duration::from_secs(30) {
                return Err(format!("push {i} not applied after 30 s"));
            }
            let mut still = Vec::new();
            for c in pending {
                let (_, conn) = conns.get_mut(c).ok_or("no connection")?;
                let r = conn.get("/", &[host]).map_err(|e| e.to_string())?;
                if quota(r.header("ratelimit-policy")) != Some(want) {
                    still.push(c);
                }
            }
            pending = still;
            for which in 0..2 {
                let left = pending
                    .iter()
                    .any(|c| conns.get(*c).is_some_and(|(w, _)| *w == which));
                if !left && !done[which] {
                    done[which] = true;
                    times[which].push(committed.elapsed().as_secs_f64() * 1000.0);
                }
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    drop(conns);
    // Idle CPU: interleaved windows, each Envoy in turn; the scheduler's
    // own runtime (not the 10 ms tick samples, which miss or double-count
    // a process that wakes briefly and periodically).
    let window = Duration::from_secs(10);
    let mut cpu: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..5 {
        for (envoy, out) in [(&polled, 0), (&watched, 1), (&inline, 2)] {
            let before = envoy.cpu_exact_us().ok_or("no cpu reading")?;
            std::thread::sleep(window);
            let after = envoy.cpu_exact_us().ok_or("no cpu reading")?;
            cpu[out].push(after.saturating_sub(before) as f64 / window.as_micros() as f64 * 100.0);
        }
    }
    // What the polls cost the store and the proxy at rest: calls and bytes.
    let etcd_stat = |envoy: &Envoy, name: &str| -> f64 {
        envoy
            .prometheus()
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "envoy_cluster_{name}{{envoy_cluster_name=\"etcd\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    for (what, envoy) in [("polled", &polled), ("watched", &watched)] {
        let (rq0, rx0, cx0) = (
            etcd_stat(envoy, "upstream_rq_total"),
            etcd_stat(envoy, "upstream_cx_rx_bytes_total"),
            etcd_stat(envoy, "upstream_cx_total"),
        );
        std::thread::sleep(window);
        let (rq1, rx1, cx1) = (
            etcd_stat(envoy, "upstream_rq_total"),
            etcd_stat(envoy, "upstream_cx_rx_bytes_total"),
            etcd_stat(envoy, "upstream_cx_total"),
        );
        eprintln!(
            "at rest, {what}: {:.1} store calls/s, {:.0} bytes per answer, {} new connections",
            (rq1 - rq0) / window.as_secs_f64(),
            (rx1 - rx0) / (rq1 - rq0).max(1.0),
            cx1 - cx0,
        );
    }
    let [polled_cpu, watched_cpu, inline_cpu] = cpu;
    let (polled_idle, watched_idle, inline_idle) = (
        percentile(polled_cpu, 0.5),
        percentile(watched_cpu, 0.5),
        percentile(inline_cpu, 0.5),
    );
    let [polled_times, watched_times] = times;
    let table = format!(
        "| measure ({} tenants, poll {} ms, 2 workers, {CONNECTIONS} keep-alive connections per proxy) | polled | watched (`watch_cluster`, resync 30 s) |\n|---|---|---|\n\
| push to applied on every connection, median | {:.0} ms | {:.0} ms |\n\
| push to applied on every connection, p99 ({} pushes) | {:.0} ms | {:.0} ms |\n\
| Envoy CPU at rest (scheduler time), median of 5 × 10 s | {polled_idle:.2} % of one core | {watched_idle:.2} % of one core |\n\
| the same profile inline, no store | {inline_idle:.2} % of one core | |\n\
| the source's share at rest (difference) | {:.2} % of one core | {:.2} % of one core |\n\
| the push's own transaction (plan + commit), median | {:.0} ms | |",
        tenant_count(),
        poll_ms(),
        percentile(polled_times.clone(), 0.5),
        percentile(watched_times.clone(), 0.5),
        pushes(),
        percentile(polled_times, 0.99),
        percentile(watched_times, 0.99),
        polled_idle - inline_idle,
        watched_idle - inline_idle,
        percentile(push_ms, 0.5),
    );
    Ok(table)
}

fn main() -> ExitCode {
    match run() {
        Ok(table) => {
            println!("{table}");
            if std::env::var("BENCH_WRITE_DOCS").is_ok() {
                let path = meshware_e2e::root().join("docs/PERFORMANCE.md");
                let doc = std::fs::read_to_string(&path).unwrap_or_default();
                let (start, end) = ("<!-- live:start -->", "<!-- live:end -->");
                if let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) {
                    let new = format!(
                        "{}{start}\n{table}\n{}",
                        doc.get(..a).unwrap_or_default(),
                        doc.get(b..).unwrap_or_default()
                    );
                    if let Err(e) = std::fs::write(&path, new) {
                        eprintln!("{}: {e}", path.display());
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_live: {e}");
            ExitCode::FAILURE
        }
    }
}
