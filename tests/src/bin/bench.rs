//! `make bench`: what each configuration costs Envoy per request.
//!
//! Real Envoy at `--concurrency 1` with a direct-response route (the upstream
//! is not measured), a fresh Envoy per configuration and round, the
//! configurations interleaved in every round (BENCH_ROUNDS, default 3),
//! medians reported with ratios to bare Envoy of the same round:
//! - CPU microseconds per request: Envoy's user+system time from /proc over
//!   BENCH_REQUESTS (default 10000) requests on one keep-alive connection;
//! - throughput: `wrk` (Debian's package) with BENCH_WRK_CONNECTIONS
//!   (default 8) keep-alive connections for BENCH_WRK_SECONDS (default 3),
//!   closed loop, Envoy's one worker saturated;
//! - p50 / p99 latency at a fixed rate (BENCH_RATE, default 400 req/s), open
//!   loop: each request's latency counts from when it was due;
//! - RSS after the run, and the module size.
//!
//! Configurations: bare Envoy; Envoy's native filters covering the same
//! concerns (cors, rbac for endpoint_guard's rules, jwt_authn with a local
//! JWKS, local_ratelimit, header_mutation; `meshware_e2e::bench_setup`); a
//! no-op proxy-wasm filter; each filter of the suite
//! alone; all of them as separate modules; the suite module; the suite's
//! host calls alone (the probe replaying the calls the stand-in host traced
//! from dist/suite.wasm, without the suite's code: its floor;
//! BENCH_REPLAY_ALL=1 adds one for every single module). All with one
//! benchmark tenant whose every section is configured and a request every
//! filter acts on (a valid RS256 token, an allowed Origin, a traceparent),
//! limits not hit, 1% of successful requests access-logged (as in
//! production; two more configurations log every request).
//!
//! Output: a table on stdout, `target/bench/results.json`, and the table
//! between the bench markers of docs/PERFORMANCE.md (BENCH_WRITE_DOCS=1).
//!
//! `BENCH_PROBE=1` (`make bench-hostcalls`) measures instead what one host
//! call of each kind costs: the probe module makes it BENCH_PROBE_COUNT
//! (default 100) times per request, compared with the no-op module in the
//! same round; the table goes between the probe markers.
//!
//! `BENCH_TIME=1` (`make bench-time`) splits instead Envoy's CPU time per
//! request by code region (the VM's code, Envoy called from it, the rest of
//! Envoy, the kernel, libraries), sampled by `perf` (`time_split.rs`), in
//! BENCH_ROUNDS interleaved rounds; the table goes between the time
//! markers.
//!
//! `BENCH_INSTRUCTIONS=1` (`make bench-instructions`) counts instead the
//! instructions Envoy executes per request, under valgrind's callgrind
//! (`instructions.rs`): one run per configuration, exact enough to compare
//! builds on a noisy machine; the table goes between the instructions
//! markers.

#[path = "bench/instructions.rs"]
mod instructions;
#[path = "bench/time_split.rs"]
mod time_split;

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::bench_setup::{bench_profile, native_chain, token, NativeChain, HOST};
use meshware_e2e::envoy::{free_port, Envoy};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The row of the probe replaying a module's host calls.
fn replay_row(module: &str) -> String {
    format!("{module}'s host calls alone (replayed)")
}
/// How long before a paced request is due the client stops sleeping and
/// spins (timer slack is tens to hundreds of µs).
const SPIN: Duration = Duration::from_millis(1);

#[derive(Clone)]
struct Config {
    name: String,
    /// Module folder when not dist/ (a baseline build to compare with).
    dir: Option<PathBuf>,
    /// Wasm filters (dist/<name>.wasm, or dist/bench/noop.wasm).
    filters: Vec<&'static str>,
    native: bool,
    /// The suite as Envoy's dynamic module (dist/libmeshware.so).
    dynamic_module: bool,
    module_bytes: u64,
    /// jwt-auth verifies every request (`cache_entries: 0`).
    no_token_cache: bool,
    /// The access log writes every request (sample_rate 1.0), not the
    /// benchmark tenant's 1% of successes.
    log_every_request: bool,
    /// The plugin configuration instead of the benchmark profile (the probe
    /// module's plan).
    configuration: Option<String>,
    /// A row of a difference table: this configuration's CPU against another's.
    diff: Option<Diff>,
}

/// `(this - base) / divisor` per round.
#[derive(Clone)]
struct Diff {
    label: String,
    base: &'static str,
    divisor: f64,
}

fn root() -> PathBuf {
    meshware_e2e::root()
}

fn bootstrap(config: &Config, profile: &str, native: &NativeChain, port: u16, admin: u16) -> Value {
    // Bench-only modules (no-op, probe) live in dist/bench.
    let instrument = config.filters == ["noop"] || config.filters == ["probe"];
    let profile = config.configuration.as_deref().unwrap_or(profile);
    let dist = if instrument {
        meshware_e2e::dist().join("bench")
    } else if let Some(dir) = &config.dir {
        dir.clone()
    } else {
        meshware_e2e::dist()
    };
    let mut params = BootstrapParams::suite(port, admin, 1, dist, profile.to_string());
    params.filters = config.filters.iter().map(|s| s.to_string()).collect();
    params.native = config.dynamic_module;
    params.direct_response = true;
    params.access_log_path = "/dev/null".into();
    let mut v = render(&params);
    if config.native {
        native.add_to(&mut v);
    }
    v
}

/// One keep-alive connection.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Envoy's listener, for other clients.
    port: u16,
}

impl Conn {
    fn open(port: u16) -> Result<Conn, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn {
            writer: s,
            reader,
            port,
        })
    }

    fn exchange(&mut self, request: &[u8]) -> Result<(), String> {
        self.writer.write_all(request).map_err(|e| e.to_string())?;
        let mut status = String::new();
        self.reader
            .read_line(&mut status)
            .map_err(|e| e.to_string())?;
        if !status.contains(" 200 ") {
            return Err(format!("unexpected answer: {status}"));
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Sample {
    cpu_us: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    rss_kib: f64,
}

struct Load {
    request: Vec<u8>,
    count: usize,
    warmup: usize,
    rate: f64,
    wrk_seconds: u64,
    wrk_connections: u64,
}

/// Requests per second that `wrk` (Debian's package; `make bench` installs
/// it) gets through Envoy on `port` with `request`'s headers, over
/// `seconds` on `connections` keep-alive connections from one thread.
/// Any answer other than 2xx is an error: the figure would not be the
/// configuration's.
fn wrk_rps(port: u16, request: &[u8], seconds: u64, connections: u64) -> Result<f64, String> {
    let text = String::from_utf8_lossy(request);
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .ok_or("request without a path")?;
    let mut cmd = std::process::Command::new(std::env::var("WRK_BIN").unwrap_or("wrk".into()));
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")]);
    for header in lines.take_while(|l| !l.is_empty()) {
        // wrk adds `Host` from the URL unless given one spelled so.
        match header.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("host") => {
                cmd.args(["-H", &format!("Host:{value}")])
            }
            _ => cmd.args(["-H", header]),
        };
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd
        .output()
        .map_err(|e| format!("wrk: {e} (make bench installs Debian's wrk)"))?;
    let report = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for bad in ["Non-2xx or 3xx responses:", "Socket errors:"] {
        if let Some(line) = report.lines().find(|l| l.trim_start().starts_with(bad)) {
            return Err(format!("wrk: {}", line.trim()));
        }
    }
    report
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's report: {report}"))
}

/// A fresh Envoy for `config` and one connection to it, after the warm-up
/// requests (VM start, JIT, caches).
fn start_warm(
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
) -> Result<(Envoy, Conn), String> {
    start_warm_under(&[], config, profile, native, load)
}

/// As `start_warm`, Envoy run by `wrapper` (`Envoy::start_under`).
fn start_warm_under(
    wrapper: &[String],
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
) -> Result<(Envoy, Conn), String> {
    let (port, admin) = (free_port(), free_port());
    let envoy = Envoy::start_under(
        wrapper,
        &bootstrap(config, profile, native, port, admin),
        admin,
        1,
        "warning",
    )?;
    let mut conn = Conn::open(port)?;
    for _ in 0..load.warmup {
        conn.exchange(&load.request)?;
    }
    Ok((envoy, conn))
}

fn measure(
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
) -> Result<Sample, String> {
    let (envoy, mut conn) = start_warm(config, profile, native, load)?;
    let before = envoy.cpu_us().ok_or("no /proc stat")?;
    let started = Instant::now();
    for _ in 0..load.count {
        conn.exchange(&load.request)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = envoy.cpu_us().ok_or("no /proc stat")?;
    let closed_loop_rps = load.count as f64 / wall;
    // Throughput from a standard generator: wrk, several connections,
    // Envoy's one worker saturated (BENCH_WRK_SECONDS=0: skipped, the
    // sequential client's rate instead).
    let rps = if load.wrk_seconds > 0 {
        wrk_rps(
            conn.port,
            &load.request,
            load.wrk_seconds,
            load.wrk_connections,
        )?
    } else {
        closed_loop_rps
    };
    // Fixed rate, open loop: request i is due at start + i / rate and its
    // latency counts from then, so a slow answer also charges the requests
    // it delays (no coordinated omission).
    let interval = Duration::from_secs_f64(1.0 / load.rate);
    let n = (load.rate * 2.0) as usize;
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        // Sleep to just before the due time, then spin: a sleep's late
        // wake-up would otherwise count as latency.
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.saturating_sub(SPIN));
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        conn.exchange(&load.request)?;
        latencies.push(due.elapsed().as_secs_f64() * 1e6);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        latencies
            .get(((n as f64 * q) as usize).min(n - 1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Sample {
        cpu_us: (after - before) as f64 / load.count as f64,
        rps,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        rss_kib: envoy.rss_kib().unwrap_or(0) as f64,
    })
}

const ALLOCATIONS: &str = "allocations";
/// Key prefix of the counting builds' wall time per concern and phase.
const STAGE: &str = "stage:";
/// Key prefix of the counting builds' allocations per concern and phase.
const STAGE_ALLOCS: &str = "stage-allocs:";
const ALLOCATED_BYTES: &str = "bytes allocated";

/// The counting builds' `meshware_hostcalls.<function>` and
/// `meshware_allocations.*` counters.
fn hostcall_counters(envoy: &Envoy) -> Result<BTreeMap<String, u64>, String> {
    let text = meshware_e2e::http::get(
        envoy.admin_port,
        "/stats?filter=meshware_(hostcalls|allocations|stage_ns|stage_allocs)",
        &[],
    )
    .map_err(|e| e.to_string())?
    .text();
    Ok(text
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let key = match name.split_once("meshware_hostcalls.") {
                Some((_, function)) => format!("`{function}`"),
                None if name.contains("meshware_stage_ns.") => {
                    format!("{STAGE}{}", name.split_once("meshware_stage_ns.")?.1)
                }
                None if name.contains("meshware_stage_allocs.") => {
                    format!(
                        "{STAGE_ALLOCS}{}",
                        name.split_once("meshware_stage_allocs.")?.1
                    )
                }
                None => match name.split_once("meshware_allocations.")? {
                    (_, "calls") => ALLOCATIONS.to_string(),
                    (_, "bytes") => ALLOCATED_BYTES.to_string(),
                    _ => return None,
                },
            };
            Some((key, value.trim().parse().ok()?))
        })
        .collect())
}

/// Instructions per request of one configuration (`instructions.rs`).
fn count_instructions(
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
    out: &std::path::Path,
) -> Result<instructions::Split, String> {
    let (envoy, mut conn) =
        start_warm_under(&instructions::wrapper(out), config, profile, native, load)?;
    instructions::control(envoy.pid(), "-z")?;
    let started = Instant::now();
    for _ in 0..load.count {
        conn.exchange(&load.request)?;
    }
    let busy = started.elapsed();
    instructions::control(envoy.pid(), "-d")?;
    std::thread::sleep(busy);
    instructions::control(envoy.pid(), "-d")?;
    drop(conn);
    drop(envoy);
    let requests = instructions::read_dump(out, 1)?;
    let idle = instructions::read_dump(out, 2)?;
    Ok(requests.minus(&idle).per(load.count as f64))
}

/// `BENCH_INSTRUCTIONS=1`: every configuration once under callgrind.
fn instruction_table(
    configs: &[Config],
    profile_of: &dyn Fn(&Config) -> String,
    native: &NativeChain,
    load: &Load,
) -> Result<String, String> {
    let dir = root().join("target/bench/callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        // Under valgrind the eighth module of the ten fails to instantiate
        // (most likely V8's guard regions, about 10 GB of address space per
        // module, past what valgrind gives a process): configurations of
        // several modules are left out.
        if config.filters.len() > 1 {
            eprintln!("{:<40} left out: several modules", config.name);
            continue;
        }
        let out = dir.join(format!("config-{i}.out"));
        let split = count_instructions(config, &profile_of(config), native, load, &out)
            .map_err(|e| format!("{}: {e}", config.name))?;
        eprintln!(
            "{:<40} {:>9.0} instructions/request (Envoy {:.0}, VM {:.0}, libraries {:.0})",
            config.name,
            split.total(),
            split.envoy,
            split.vm,
            split.libraries
        );
        rows.push((config.name.clone(), split));
    }
    let total_of = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, s)| s.total())
    };
    let bare = total_of("bare Envoy");
    let noop_added = total_of("no-op wasm") - bare;
    let mut table = String::from(
        "| configuration | instructions / request | x bare | added | added / no-op's | in Envoy | in the VM's code | in libraries |\n|---|---|---|---|---|---|---|---|\n",
    );
    let k = |v: f64| format!("{:.1}k", v / 1000.0);
    let mut json_rows = Vec::new();
    for (name, s) in &rows {
        let added = s.total() - bare;
        let vs_noop = if name != "bare Envoy" && name != "native filters" {
            format!("{:.2}", added / noop_added)
        } else {
            "-".into()
        };
        table.push_str(&format!(
            "| {name} | {} | {:.2} | {} | {vs_noop} | {} | {} | {} |\n",
            k(s.total()),
            s.total() / bare,
            k(added),
            k(s.envoy),
            k(s.vm),
            k(s.libraries)
        ));
        json_rows.push(json!({
            "configuration": name,
            "instructions_per_request": s.total(),
            "envoy": s.envoy,
            "vm": s.vm,
            "libraries": s.libraries,
        }));
    }
    write_json("instructions.json", &Value::from(json_rows))?;
    Ok(table)
}

/// One configuration's CPU per request and its split by region, sampled
/// over the same requests (`time_split.rs`).
struct Timed {
    cpu_us: f64,
    user_us: f64,
    system_us: f64,
    split: time_split::TimeSplit,
    samples: usize,
}

fn time_one(
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
    data: &std::path::Path,
) -> Result<Timed, String> {
    let (envoy, mut conn) = start_warm(config, profile, native, load)?;
    let recording = time_split::record(envoy.pid(), data)?;
    let before = envoy.cpu_split_us().ok_or("no /proc stat")?;
    for _ in 0..load.count {
        conn.exchange(&load.request)?;
    }
    let after = envoy.cpu_split_us().ok_or("no /proc stat")?;
    let (shares, samples) = recording.finish()?;
    let n = load.count as f64;
    let user_us = after.0.saturating_sub(before.0) as f64 / n;
    let system_us = after.1.saturating_sub(before.1) as f64 / n;
    let cpu_us = user_us + system_us;
    Ok(Timed {
        cpu_us,
        user_us,
        system_us,
        split: shares.scaled(cpu_us),
        samples,
    })
}

/// `BENCH_TIME=1`: every configuration in BENCH_ROUNDS interleaved rounds,
/// CPU per request split by region; medians of each column.
fn time_table(
    configs: &[Config],
    profile_of: &dyn Fn(&Config) -> String,
    native: &NativeChain,
    load: &Load,
) -> Result<String, String> {
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let dir = root().join("target/bench/perf");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut timed: Vec<Vec<Timed>> = configs.iter().map(|_| Vec::new()).collect();
    let mut added: Vec<Vec<f64>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut bare = f64::NAN;
        for (i, config) in configs.iter().enumerate() {
            let data = dir.join(format!("config-{i}.data"));
            let t = time_one(config, &profile_of(config), native, load, &data)
                .map_err(|e| format!("{}: {e}", config.name))?;
            let _ = std::fs::remove_file(&data);
            let [vm, from_vm, rest, kernel, libraries] = t.split.parts();
            eprintln!(
                "round {} {:<40} {:>6.1} us/req: VM {vm:.1}, Envoy from VM {from_vm:.1}, Envoy {rest:.1}, kernel {kernel:.1}, libraries {libraries:.1} ({} samples)",
                round + 1,
                config.name,
                t.cpu_us,
                t.samples
            );
            if config.name == "bare Envoy" {
                bare = t.cpu_us;
            }
            if let (Some(a), Some(v)) = (added.get_mut(i), timed.get_mut(i)) {
                a.push(t.cpu_us - bare);
                v.push(t);
            }
        }
    }
    let mut table = String::from(
        "| configuration | CPU µs / request | added over bare | user | system | in the VM's code | in Envoy, called from the VM | in Envoy, the rest | in the kernel | in libraries |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut json_rows = Vec::new();
    for ((config, t), a) in configs.iter().zip(&timed).zip(&added) {
        let col = |f: &dyn Fn(&Timed) -> f64| median(t.iter().map(f).collect());
        let part = |k: usize| col(&|x: &Timed| x.split.parts().get(k).copied().unwrap_or(f64::NAN));
        let row = [
            col(&|x: &Timed| x.cpu_us),
            median(a.clone()),
            col(&|x: &Timed| x.user_us),
            col(&|x: &Timed| x.system_us),
            part(0),
            part(1),
            part(2),
            part(3),
            part(4),
        ];
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.1}")).collect();
        table.push_str(&format!("| {} | {} |\n", config.name, cells.join(" | ")));
        json_rows.push(json!({
            "configuration": config.name,
            "cpu_us": row[0],
            "added_us": row[1],
            "user_us": row[2],
            "system_us": row[3],
            "vm_us": row[4],
            "envoy_from_vm_us": row[5],
            "envoy_rest_us": row[6],
            "kernel_us": row[7],
            "libraries_us": row[8],
        }));
    }
    write_json("time.json", &Value::from(json_rows))?;
    Ok(table)
}

/// Host calls per request by function, over `load.count` requests.
fn count_calls(
    config: &Config,
    profile: &str,
    native: &NativeChain,
    load: &Load,
) -> Result<BTreeMap<String, f64>, String> {
    let (envoy, mut conn) = start_warm(config, profile, native, load)?;
    let before = hostcall_counters(&envoy)?;
    for _ in 0..load.count {
        conn.exchange(&load.request)?;
    }
    let after = hostcall_counters(&envoy)?;
    if after.is_empty() {
        return Err("no meshware_hostcalls counters: not a counting build?".into());
    }
    Ok(after
        .iter()
        .map(|(name, n)| {
            let delta = n - before.get(name).copied().unwrap_or(0);
            (name.clone(), delta as f64 / load.count as f64)
        })
        .filter(|(_, per_request)| *per_request > 0.0)
        .collect())
}

fn host_calls(counts: &BTreeMap<String, f64>) -> f64 {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with('`'))
        .map(|(_, n)| n)
        .sum()
}

/// `BENCH_COUNT=1`: every wasm configuration with its counting build.
fn count_table(
    configs: &[Config],
    profile_of: &dyn Fn(&Config) -> String,
    native: &NativeChain,
    load: &Load,
) -> Result<String, String> {
    let dir = meshware_e2e::dist().join("bench/counting");
    let mut rows = Vec::new();
    for config in configs
        .iter()
        .filter(|c| !c.filters.is_empty() && c.filters != ["noop"])
    {
        let counting = Config {
            dir: Some(dir.clone()),
            ..config.clone()
        };
        let counts = count_calls(&counting, &profile_of(config), native, load)
            .map_err(|e| format!("{}: {e}", config.name))?;
        eprintln!(
            "{:<40} {:>6.1} host calls/request",
            config.name,
            host_calls(&counts)
        );
        rows.push((config.name.clone(), counts));
    }
    let times = stage_table(&rows);
    // Columns: the functions called, most called first.
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, counts) in &rows {
        for (name, n) in counts.iter().filter(|(k, _)| k.starts_with('`')) {
            *totals.entry(name).or_default() += n;
        }
    }
    let mut columns: Vec<(&str, f64)> = totals.into_iter().collect();
    columns.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut table = format!("| configuration | {ALLOCATIONS} | {ALLOCATED_BYTES} | host calls |");
    let mut rule = String::from("|---|---|---|---|");
    for (name, _) in &columns {
        table.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    table.push('\n');
    table.push_str(&rule);
    table.push('\n');
    for (name, counts) in &rows {
        let of = |key: &str| counts.get(key).copied().unwrap_or(0.0);
        table.push_str(&format!(
            "| {name} | {:.1} | {:.0} | {:.1} |",
            of(ALLOCATIONS),
            of(ALLOCATED_BYTES),
            host_calls(counts)
        ));
        for (column, _) in &columns {
            match counts.get(*column) {
                Some(n) => table.push_str(&format!(" {n:.1} |")),
                None => table.push_str(" - |"),
            }
        }
        table.push('\n');
    }
    Ok(format!("{table}\n{times}"))
}

/// Wall time per request in each concern and phase of the counting builds
/// (`meshware_stage_ns`), less one clock reading per interval
/// (`clock.empty`, measured once per request): where the time inside the
/// VM goes, host calls included. The counting itself inflates every
/// figure a little (each counted call bumps a counter).
fn stage_table(rows: &[(String, BTreeMap<String, f64>)]) -> String {
    let mut out = String::from(
        "| configuration | concern | request µs | response µs | log µs | other µs | total µs | allocations |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (config, counts) in rows {
        if std::env::var("BENCH_STAGE_RAW").is_ok() {
            for (k, v) in counts.iter().filter(|(k, _)| k.starts_with(STAGE)) {
                eprintln!("RAW {config} {k} {:.2} us", v / 1000.0);
            }
            for (k, v) in counts.iter().filter(|(k, _)| k.starts_with(STAGE_ALLOCS)) {
                eprintln!("RAW {config} {k} {v:.2} allocations");
            }
        }
        let clock = counts
            .get(&format!("{STAGE}clock.empty"))
            .copied()
            .unwrap_or(0.0);
        let mut concerns: Vec<&str> = counts
            .keys()
            .filter_map(|k| k.strip_prefix(STAGE)?.split_once('.'))
            .map(|(concern, _)| concern)
            .filter(|c| *c != "clock")
            .collect();
        concerns.dedup();
        for concern in concerns {
            let mut by_phase = [0.0f64; 4];
            for (key, ns) in counts {
                let Some((c, phase)) = key.strip_prefix(STAGE).and_then(|k| k.split_once('.'))
                else {
                    continue;
                };
                if c != concern {
                    continue;
                }
                let column = match phase {
                    "request_headers" | "request_body" => 0,
                    "response_headers" | "response_body" => 1,
                    "log" => 2,
                    _ => 3,
                };
                // Counters are per request already; one clock per interval.
                if let Some(slot) = by_phase.get_mut(column) {
                    *slot += (ns - clock).max(0.0) / 1000.0;
                }
            }
            let total: f64 = by_phase.iter().sum();
            let [req, resp, log, other] = by_phase;
            // Every phase's allocations (each phase's own interval, so
            // the suite's row includes its concerns').
            let allocations: f64 = counts
                .iter()
                .filter(|(k, _)| {
                    k.strip_prefix(STAGE_ALLOCS)
                        .and_then(|k| k.split_once('.'))
                        .is_some_and(|(c, _)| c == concern)
                })
                .map(|(_, n)| n)
                .sum();
            out.push_str(&format!(
                "| {config} | {concern} | {req:.1} | {resp:.1} | {log:.1} | {other:.1} | {total:.1} | {allocations:.1} |\n"
            ));
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn module_size(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            let path = if *n == "noop" || *n == "probe" {
                meshware_e2e::dist().join(format!("bench/{n}.wasm"))
            } else {
                meshware_e2e::dist().join(format!("{n}.wasm"))
            };
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

impl Config {
    /// Wasm modules from dist/ (their size is measured here).
    fn wasm(name: &str, filters: Vec<&'static str>) -> Config {
        Config {
            dir: None,
            name: name.to_string(),
            module_bytes: module_size(&filters),
            filters,
            native: false,
            dynamic_module: false,
            no_token_cache: false,
            log_every_request: false,
            configuration: None,
            diff: None,
        }
    }
}

/// `BENCH_PROBE=1`: bare Envoy, the no-op module, and the probe module making
/// each kind of host call `count` times per request.
fn probe_configs(count: usize) -> Vec<Config> {
    let mut out = vec![
        Config::wasm("bare Envoy", vec![]),
        Config::wasm("no-op wasm", vec!["noop"]),
    ];
    for call in probe::CALLS {
        out.push(Config {
            configuration: Some(json!({"call": call, "count": count}).to_string()),
            diff: Some(Diff {
                label: format!("`{call}`"),
                base: "no-op wasm",
                divisor: count as f64,
            }),
            ..Config::wasm(call, vec!["probe"])
        });
    }
    out
}

/// The difference rows: medians over rounds of the same-round differences.
fn diff_table(configs: &[Config], samples: &[Vec<Sample>], heading: &str) -> String {
    let mut table = format!("| {heading} | rounds |\n|---|---|---|\n");
    for (i, c) in configs.iter().enumerate() {
        let Some(d) = &c.diff else { continue };
        let Some(base) = configs.iter().position(|b| b.name == d.base) else {
            continue;
        };
        let per_round: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[base])
            .map(|(this, base)| (this.cpu_us - base.cpu_us) / d.divisor)
            .collect();
        let rounds: Vec<String> = per_round.iter().map(|v| format!("{v:.2}")).collect();
        table.push_str(&format!(
            "| {} | {:.2} | {} |\n",
            d.label,
            median(per_round.clone()),
            rounds.join(", ")
        ));
    }
    table
}

/// Replaces the text between `<!-- {marker}:start -->` and its end marker.
/// Prints a table and, with BENCH_WRITE_DOCS, writes it with its header
/// line between the docs' `marker` markers.
/// Writes `value` to `target/bench/<name>`, pretty-printed.
fn write_json(name: &str, value: &Value) -> Result<(), String> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value:#}\n")).map_err(|e| format!("{}: {e}", path.display()))
}

fn publish(marker: &str, header: &str, table: &str) -> Result<(), String> {
    println!("{table}");
    if std::env::var("BENCH_WRITE_DOCS").is_ok() {
        write_docs(marker, &format!("\n{header}\n\n{table}"))?;
    }
    Ok(())
}

fn write_docs(marker: &str, text: &str) -> Result<(), String> {
    let path = root().join("docs/PERFORMANCE.md");
    let doc = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let (start, end) = (
        format!("<!-- {marker}:start -->"),
        format!("<!-- {marker}:end -->"),
    );
    if let (Some(a), Some(b)) = (doc.find(&start), doc.find(&end)) {
        let new = format!("{}{start}{text}{}", &doc[..a], &doc[b..]);
        std::fs::write(&path, new).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn configs() -> Vec<Config> {
    let mut out = vec![
        Config::wasm("bare Envoy", vec![]),
        Config {
            native: true,
            ..Config::wasm("native filters", vec![])
        },
        Config::wasm("no-op wasm", vec!["noop"]),
    ];
    for f in meshware_cli::FILTERS {
        out.push(Config::wasm(f.name, vec![f.name]));
    }
    out.push(Config {
        no_token_cache: true,
        ..Config::wasm("jwt_auth (token cache off)", vec!["jwt_auth"])
    });
    let all: Vec<&'static str> = meshware_cli::FILTERS.iter().map(|f| f.name).collect();
    out.push(Config::wasm("all filters (separate modules)", all));
    out.push(Config::wasm("suite module (all concerns)", vec!["suite"]));
    out.push(Config {
        dynamic_module: true,
        module_bytes: std::fs::metadata(
            meshware_e2e::dist().join(meshware_cli::bootstrap::NATIVE_MODULE),
        )
        .map(|m| m.len())
        .unwrap_or(0),
        ..Config::wasm("native module (all concerns)", vec!["suite"])
    });
    out.push(Config {
        log_every_request: true,
        ..Config::wasm("access_log (every request logged)", vec!["access_log"])
    });
    out.push(Config {
        log_every_request: true,
        ..Config::wasm("suite module (every request logged)", vec!["suite"])
    });
    out
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benchmark's profile and request for the stand-in host
/// (`tests/vmprof/host.cjs`): `profile.json` and `request.json` in `dir`.
fn write_stand_in_inputs(dir: &std::path::Path, profile: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let request = json!({
        "headers": [
            [":authority", HOST], [":path", "/orders"], [":method", "GET"],
            [":scheme", "http"], ["authorization", format!("Bearer {}", token()?)],
            ["origin", "https://shop.acme.example"],
            ["traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            ["x-forwarded-proto", "http"], ["x-request-id", "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"]
        ],
        "response_headers": [
            [":status", "200"], ["content-length", "3"], ["content-type", "text/plain"],
            ["date", "Mon, 23 Nov 2026 18:00:00 GMT"], ["server", "envoy"]
        ]
    });
    std::fs::write(dir.join("profile.json"), profile).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("request.json"), request.to_string()).map_err(|e| e.to_string())
}

/// The probe's plan that replays the host calls a module (dist/<module>.wasm)
/// makes for the benchmark's request: traced by the stand-in host in Node
/// from the module itself, so the row follows the module as it changes.
/// `None` (the rows are left out) without Node.
fn replay_plan(module: &str, profile: &str) -> Result<Option<String>, String> {
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    if std::process::Command::new(&node)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("bench: no {node}: the rows of host calls alone are left out");
        return Ok(None);
    }
    let dir = root().join("target/bench/replay");
    write_stand_in_inputs(&dir, profile)?;
    let trace = dir.join(format!("{module}.json"));
    let out = std::process::Command::new(&node)
        .arg(root().join("tests/vmprof/host.cjs"))
        .arg(meshware_e2e::dist().join(format!("{module}.wasm")))
        .arg(&dir)
        .env("VMPROF_TRACE", &trace)
        .output()
        .map_err(|e| format!("{node}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tracing {module}'s host calls: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(&trace).map_err(|e| format!("{}: {e}", trace.display()))?;
    let steps: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", trace.display()))?;
    let plan = json!({ "replay": steps }).to_string();
    // Refused here rather than by Envoy at start: the error names the step.
    probe::parse(plan.as_bytes()).map_err(|e| format!("{module}'s trace: {e}"))?;
    Ok(Some(plan))
}

fn run() -> Result<(), String> {
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let load = Load {
        count: env_or("BENCH_REQUESTS", 10000),
        warmup: env_or("BENCH_WARMUP", 1000),
        rate: env_or("BENCH_RATE", 400.0),
        wrk_seconds: env_or("BENCH_WRK_SECONDS", 3),
        wrk_connections: env_or("BENCH_WRK_CONNECTIONS", 8),
        request: format!(
            "GET /orders HTTP/1.1\r\nhost: {HOST}\r\nauthorization: Bearer {}\r\norigin: https://shop.acme.example\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
            token()?
        )
        .into_bytes(),
    };
    let profile = bench_profile()?;
    let native = native_chain(&profile)?;
    // BENCH_WRITE_PROFILE=<folder>: the benchmark's profile and request for
    // another host (`make profile-vm`), nothing measured.
    if let Ok(dir) = std::env::var("BENCH_WRITE_PROFILE") {
        return write_stand_in_inputs(&PathBuf::from(dir), &profile);
    }
    let mut no_cache: Value = serde_json::from_str(&profile).map_err(|e| e.to_string())?;
    no_cache["tenants"]["bench"]["jwt_auth"]["cache_entries"] = json!(0);
    let no_cache_profile = no_cache.to_string();
    let mut log_all: Value = serde_json::from_str(&profile).map_err(|e| e.to_string())?;
    log_all["tenants"]["bench"]["access_log"]["sample_rate"] = json!(1.0);
    let log_all_profile = log_all.to_string();
    // BENCH_ONLY=a,b: those configurations plus the two baselines.
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let probe_count: usize = env_or("BENCH_PROBE_COUNT", 100);
    let probing = std::env::var("BENCH_PROBE").is_ok();
    let mut all_configs = if probing {
        probe_configs(probe_count)
    } else {
        configs()
    };
    // The suite's host calls without its code, after the suite's row
    // (BENCH_REPLAY_ALL=1: every single module's too, after its row); not in
    // the counting mode (there is no counting probe).
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    if !probing && std::env::var("BENCH_COUNT").is_err() {
        let mut modules = vec![("suite", "suite module (all concerns)".to_string())];
        if std::env::var("BENCH_REPLAY_ALL").is_ok() {
            modules.extend(
                meshware_cli::FILTERS
                    .iter()
                    .map(|f| (f.name, f.name.to_string())),
            );
        }
        for (module, row) in modules {
            let name = replay_row(module);
            if !wanted(&name) {
                continue;
            }
            let Some(plan) = replay_plan(module, &profile)? else {
                break;
            };
            let at = all_configs
                .iter()
                .position(|c| c.name == row)
                .map_or(all_configs.len(), |i| i + 1);
            all_configs.insert(
                at,
                Config {
                    configuration: Some(plan),
                    ..Config::wasm(&name, vec!["probe"])
                },
            );
        }
    }
    let configs: Vec<Config> = all_configs
        .into_iter()
        .enumerate()
        .filter(|(_, c)| {
            c.name == "bare Envoy"
                || c.name == "no-op wasm"
                || only.as_ref().is_none_or(|o| o.contains(&c.name))
        })
        .map(|(_, c)| c)
        .collect();
    // BENCH_BASELINE_DIR=<folder of other builds>: each single-filter
    // configuration also runs with that folder's module, in the same rounds.
    let mut configs = configs;
    if let Ok(dir) = std::env::var("BENCH_BASELINE_DIR") {
        let extra: Vec<Config> = configs
            .iter()
            .filter(|c| c.filters.len() == 1 && c.filters != ["noop"])
            .map(|c| Config {
                name: format!("{} (baseline)", c.name),
                dir: Some(PathBuf::from(&dir)),
                module_bytes: c
                    .filters
                    .iter()
                    .map(|n| {
                        std::fs::metadata(PathBuf::from(&dir).join(format!("{n}.wasm")))
                            .map_or(0, |m| m.len())
                    })
                    .sum(),
                ..c.clone()
            })
            .collect();
        configs.extend(extra);
    }
    let profile_of = |config: &Config| -> String {
        if config.no_token_cache {
            no_cache_profile.clone()
        } else if config.log_every_request {
            log_all_profile.clone()
        } else {
            profile.clone()
        }
    };
    // The one-pass modes: (switch, request count variable and its default,
    // warm-up, docs marker, what the figures are, the table).
    type TableOf =
        fn(&[Config], &dyn Fn(&Config) -> String, &NativeChain, &Load) -> Result<String, String>;
    let one_pass: [(&str, &str, usize, usize, &str, &str, TableOf); 3] = [
        (
            "BENCH_TIME",
            "BENCH_REQUESTS",
            10000,
            1000,
            "time",
            "medians of BENCH_ROUNDS interleaved rounds; Envoy's CPU µs per request from /proc, split by where perf's clock samples fell (each column its own median)",
            time_table,
        ),
        (
            "BENCH_INSTRUCTIONS",
            "BENCH_INSTRUCTIONS_REQUESTS",
            1000,
            300,
            "instructions",
            "one run each under valgrind's callgrind; instructions per request, the same wall time without requests subtracted",
            instruction_table,
        ),
        (
            "BENCH_COUNT",
            "BENCH_COUNT_REQUESTS",
            1000,
            100,
            "counts",
            "counting builds (dist/bench/counting); host calls per request",
            count_table,
        ),
    ];
    for (switch, count_variable, count, warmup, marker, what, table_of) in one_pass {
        if std::env::var(switch).is_ok() {
            let load = Load {
                count: env_or(count_variable, count),
                warmup,
                ..load
            };
            let table = table_of(&configs, &profile_of, &native, &load)?;
            let header = format!(
                "{} requests per configuration after {} of warm-up, {what}.",
                load.count, load.warmup
            );
            return publish(marker, &header, &table);
        }
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        let mut bare = f64::NAN;
        for (i, config) in configs.iter().enumerate() {
            let s = measure(config, &profile_of(config), &native, &load)
                .map_err(|e| format!("{}: {e}", config.name))?;
            eprintln!(
                "round {} {:<32} {:>7.1} us/req {:>7.0} req/s p50 {:>6.0} us p99 {:>6.0} us",
                round + 1,
                config.name,
                s.cpu_us,
                s.rps,
                s.p50_us,
                s.p99_us
            );
            if i == 0 {
                bare = s.cpu_us;
            }
            ratios[i].push(s.cpu_us / bare);
            samples[i].push(s);
        }
    }
    if probing {
        let heading = format!("host call (x{probe_count} per request) | Envoy CPU µs per call");
        let table = diff_table(&configs, &samples, &heading);
        let header = format!(
            "{rounds} rounds x {} requests per configuration; medians of each round's (probe - no-op) / {probe_count}.",
            load.count
        );
        return publish("probe", &header, &table);
    }
    let col = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let noop_index = configs
        .iter()
        .position(|c| c.name == "no-op wasm")
        .unwrap_or(0);
    let noop_added = col(noop_index, |s| s.cpu_us) - col(0, |s| s.cpu_us);
    let mut table = String::from(
        "| configuration | CPU µs/req | x bare | added µs | added / no-op's | req/s | p50 µs | p99 µs | RSS MiB | module KB |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut results = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let cpu = col(i, |s| s.cpu_us);
        let added = cpu - col(0, |s| s.cpu_us);
        let vs_noop = if c.name != "bare Envoy" && c.name != "native filters" {
            format!("{:.2}", added / noop_added)
        } else {
            "-".into()
        };
        table.push_str(&format!(
            "| {} | {cpu:.1} | {:.2} | {added:.1} | {vs_noop} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            c.name,
            median(ratios[i].clone()),
            col(i, |s| s.rps),
            col(i, |s| s.p50_us),
            col(i, |s| s.p99_us),
            col(i, |s| s.rss_kib) / 1024.0,
            if c.module_bytes > 0 { format!("{:.0}", c.module_bytes as f64 / 1000.0) } else { "-".into() },
        ));
        results.push(json!({
            "configuration": c.name,
            "cpu_us_per_request": cpu,
            "ratio_to_bare": median(ratios[i].clone()),
            "added_us": added,
            "throughput_rps": col(i, |s| s.rps),
            "p50_us": col(i, |s| s.p50_us),
            "p99_us": col(i, |s| s.p99_us),
            "rss_kib": col(i, |s| s.rss_kib),
            "module_bytes": c.module_bytes,
            "rounds_cpu_us": samples[i].iter().map(|s| s.cpu_us).collect::<Vec<_>>(),
        }));
    }
    println!("{table}");
    let out = json!({"requests_per_round": load.count, "fixed_rate_rps": load.rate,
                     "rounds": rounds, "results": results});
    write_json("results.json", &out)?;
    if std::env::var("BENCH_WRITE_DOCS").is_ok() {
        let header = format!(
            "\n{rounds} rounds x {} requests per configuration (CPU), wrk {} connections x {} s (req/s), open loop at {} req/s (latency); medians.\n\n",
            load.count, load.wrk_connections, load.wrk_seconds, load.rate
        );
        write_docs("bench", &format!("{header}{table}"))?;
    }
    Ok(())
}
