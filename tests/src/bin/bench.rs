//! `make bench`: Envoy's CPU per request under each configuration, measured
//! from /proc over a fixed request count on one keep-alive connection, with
//! Envoy at `--concurrency 1`. Configurations are interleaved and repeated;
//! medians and ratios against bare Envoy of the same round are reported.
//!
//! Scenarios so far: bare Envoy, and jwt-auth with a valid RS256 token
//! verified from its per-worker cache (hit) or every time (`cache_entries: 0`,
//! miss). Output: a table on stdout and `target/bench/results.json`.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{free_port, Envoy};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;

struct Config {
    name: &'static str,
    filters: Vec<&'static str>,
    profile: String,
}

fn profiles() -> Result<Vec<Config>, String> {
    let root = meshware_e2e::root();
    let text = std::fs::read_to_string(root.join("examples/tenants.json"))
        .map_err(|e| format!("examples/tenants.json: {e}"))?;
    let mut miss: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    miss["tenants"]["umbrella"]["jwt_auth"]["cache_entries"] = json!(0);
    Ok(vec![
        Config {
            name: "bare",
            filters: vec![],
            profile: text.clone(),
        },
        Config {
            name: "jwt_auth cache hit",
            filters: vec!["jwt_auth"],
            profile: text,
        },
        Config {
            name: "jwt_auth cache miss",
            filters: vec!["jwt_auth"],
            profile: miss.to_string(),
        },
    ])
}

fn token() -> Result<String, String> {
    let text = std::fs::read_to_string(meshware_e2e::root().join("examples/tokens.json"))
        .map_err(|e| format!("examples/tokens.json: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["valid RS256"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no \"valid RS256\" token".into())
}

/// Sends `count` requests on one connection; every answer must be 200.
fn load(port: u16, request: &[u8], count: usize) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    for _ in 0..count {
        writer.write_all(request).map_err(|e| e.to_string())?;
        let mut status = String::new();
        reader.read_line(&mut status).map_err(|e| e.to_string())?;
        if !status.contains(" 200 ") {
            return Err(format!("unexpected answer: {status}"));
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
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
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Sample {
    cpu_us_per_request: f64,
    rss_kib: u64,
}

fn measure(config: &Config, echo: &Echo, request: &[u8], count: usize) -> Result<Sample, String> {
    let port = free_port();
    let admin = free_port();
    let mut params = BootstrapParams::suite(
        port,
        admin,
        echo.port,
        meshware_e2e::dist(),
        config.profile.clone(),
    );
    params.filters = config.filters.iter().map(|s| s.to_string()).collect();
    let envoy = Envoy::start_with(&render(&params), admin, 1, "warning")?;
    load(port, request, count / 10)?; // warm-up: VM start, JIT, caches
    let before = envoy.cpu_us().ok_or("no /proc stat")?;
    load(port, request, count)?;
    let after = envoy.cpu_us().ok_or("no /proc stat")?;
    Ok(Sample {
        cpu_us_per_request: (after - before) as f64 / count as f64,
        rss_kib: envoy.rss_kib().unwrap_or(0),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
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

fn run() -> Result<(), String> {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let count: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let configs = profiles()?;
    let echo = Echo::start(0).map_err(|e| e.to_string())?;
    let request = format!(
        "GET /orders HTTP/1.1\r\nhost: api.umbrella.example\r\nauthorization: Bearer {}\r\n\r\n",
        token()?
    );
    // cpu[config][round]
    let mut cpu = vec![Vec::new(); configs.len()];
    let mut ratio = vec![Vec::new(); configs.len()];
    let mut rss = vec![0u64; configs.len()];
    for round in 0..rounds {
        let mut bare = f64::NAN;
        for (i, config) in configs.iter().enumerate() {
            let s = measure(config, &echo, request.as_bytes(), count)?;
            eprintln!(
                "round {} {:<22} {:>8.1} us/request",
                round + 1,
                config.name,
                s.cpu_us_per_request
            );
            if config.filters.is_empty() {
                bare = s.cpu_us_per_request;
            }
            cpu[i].push(s.cpu_us_per_request);
            ratio[i].push(s.cpu_us_per_request / bare);
            rss[i] = rss[i].max(s.rss_kib);
        }
    }
    println!("| configuration | Envoy CPU us/request (median of {rounds}) | x bare | RSS KiB |");
    println!("|---|---|---|---|");
    let mut results = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let c = median(cpu[i].clone());
        let r = median(ratio[i].clone());
        println!("| {} | {c:.1} | {r:.2} | {} |", config.name, rss[i]);
        results.push(
            json!({"configuration": config.name, "cpu_us_per_request": c,
                            "ratio_to_bare": r, "rss_kib": rss[i], "rounds": cpu[i]}),
        );
    }
    let dir = meshware_e2e::root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = json!({"requests_per_round": count, "rounds": rounds, "results": results});
    std::fs::write(dir.join("results.json"), format!("{out:#}\n")).map_err(|e| e.to_string())?;
    Ok(())
}
