//! `make bench` (part): live configuration from a real etcd at 1,000
//! tenants, through real Envoy (suite module, two workers).
//!
//! - **Push to applied**: 50 times, one tenant's quota changes through
//!   `meshware push`'s transaction; the time from the transaction's answer
//!   until every one of eight already-open keep-alive connections is judged
//!   under the new quota. Median and p99 (of 50: the second largest).
//! - **Polling at rest**: Envoy's CPU over idle windows with the store
//!   polled every 250 ms, against the same Envoy with the profile inline
//!   and no store, interleaved rounds, medians; the difference as a share
//!   of one core.
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

fn start(profile: &Value, etcd_port: Option<u16>, echo: &Echo) -> Result<(Envoy, u16), String> {
    let mut p = profile.clone();
    if etcd_port.is_some() {
        p["config_source"] =
            json!({"cluster": "etcd", "prefix": PREFIX, "poll_ms": poll_ms(), "timeout_ms": 1000});
    }
    let (mut config, port, admin) =
        meshware_e2e::suite::bootstrap(&p.to_string(), &["suite"], echo.port);
    if let (Some(etcd), Some(clusters)) = (
        etcd_port,
        config
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut),
    ) {
        clusters.push(meshware_cli::bootstrap::static_cluster("etcd", etcd));
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
    let (live, live_port) = start(&base, Some(etcd.port), &echo)?;
    let (inline, _) = start(&base, None, &echo)?;
    let host = ("host", "t0001.example");
    let applied_quota = |port: u16| {
        meshware_e2e::http::get(port, "/", &[host])
            .ok()
            .and_then(|r| quota(r.header("ratelimit-policy")))
    };
    if !meshware_e2e::eventually(60, || applied_quota(live_port) == Some(1_000_000)) {
        return Err(format!("no answer:\n{}", live.log()));
    }
    let polled = || {
        meshware_e2e::http::get(live_port, "/.well-known/meshware/status", &[])
            .ok()
            .is_some_and(|r| r.json()["revision"].as_u64() == etcd.revision())
    };
    if !meshware_e2e::eventually(30, polled) {
        return Err(format!("the store was never polled:\n{}", live.log()));
    }
    let mut conns: Vec<KeepAlive> = (0..CONNECTIONS)
        .map(|_| KeepAlive::connect(live_port))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut times = Vec::new();
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
        let mut pending: Vec<usize> = (0..conns.len()).collect();
        while !pending.is_empty() {
            if committed.elapsed() > Duration::from_secs(30) {
                return Err(format!("push {i} not applied after 30 s"));
            }
            let mut still = Vec::new();
            for c in pending {
                let r = conns
                    .get_mut(c)
                    .ok_or("no connection")?
                    .get("/", &[host])
                    .map_err(|e| e.to_string())?;
                if quota(r.header("ratelimit-policy")) != Some(want) {
                    still.push(c);
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        times.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    drop(conns);
    // Idle CPU: interleaved windows, the live Envoy then the inline one.
    let window = Duration::from_secs(10);
    let (mut live_cpu, mut inline_cpu) = (Vec::new(), Vec::new());
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        for (envoy, out) in [(&live, &mut live_cpu), (&inline, &mut inline_cpu)] {
            let before = envoy.cpu_exact_us().ok_or("no cpu reading")?;
            std::thread::sleep(window);
            let after = envoy.cpu_exact_us().ok_or("no cpu reading")?;
            out.push(after.saturating_sub(before) as f64 / window.as_micros() as f64 * 100.0);
        }
    }
    // What the polls cost the store and the proxy at rest: calls and bytes.
    let etcd_stat = |name: &str| -> f64 {
        live.prometheus()
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "envoy_cluster_{name}{{envoy_cluster_name=\"etcd\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (rq0, rx0, cx0) = (
        etcd_stat("upstream_rq_total"),
        etcd_stat("upstream_cx_rx_bytes_total"),
        etcd_stat("upstream_cx_total"),
    );
    let (cpu0, exact0) = (live.cpu_split_us(), live.cpu_exact_us());
    std::thread::sleep(window);
    let (rq1, rx1, cx1) = (
        etcd_stat("upstream_rq_total"),
        etcd_stat("upstream_cx_rx_bytes_total"),
        etcd_stat("upstream_cx_total"),
    );
    eprintln!(
        "at rest: {:.1} store calls/s, {:.0} bytes per answer, {} new connections, \
         cpu (ticks) {:?} -> {:?}, cpu (scheduler) {:?} -> {:?} us",
        (rq1 - rq0) / window.as_secs_f64(),
        (rx1 - rx0) / (rq1 - rq0).max(1.0),
        cx1 - cx0,
        cpu0,
        live.cpu_split_us(),
        exact0,
        live.cpu_exact_us()
    );
    let (live_idle, inline_idle) = (percentile(live_cpu, 0.5), percentile(inline_cpu, 0.5));
    let table = format!(
        "| measure ({} tenants, poll {} ms, 2 workers, {CONNECTIONS} keep-alive connections) | value |\n|---|---|\n\
| push to applied on every connection, median | {:.0} ms |\n\
| push to applied on every connection, p99 ({PUSHES} pushes) | {:.0} ms |\n\
| the push's own transaction (plan + commit), median | {:.0} ms |\n\
| Envoy CPU at rest, polling the store | {live_idle:.2} % of one core |\n\
| Envoy CPU at rest, same profile inline, no store | {inline_idle:.2} % of one core |\n\
| polling's share at rest (difference) | {:.2} % of one core |",
        tenant_count(),
        poll_ms(),
        percentile(times.clone(), 0.5),
        percentile(times, 0.99),
        percentile(push_ms, 0.5),
        live_idle - inline_idle
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
