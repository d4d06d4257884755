//! `make soak`: every filter under bounded load for SOAK_SECONDS (default
//! 600) at `--concurrency 2` with the example tenants: valid / invalid /
//! expired tokens, limit hits, idempotent retries, random paths. Samples
//! Envoy's RSS and the in-flight gauges every 30 s; afterwards checks that
//! no unexpected 5xx happened and the in-flight gauges are back to zero.
//! Writes `target/soak.json` and prints a summary for docs/RELIABILITY.md.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::{free_port, Envoy};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

/// One keep-alive client; reconnects when Envoy closes the connection.
struct Client {
    port: u16,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    fn send(&mut self, request: &str) -> std::io::Result<u16> {
        if self.conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let r = BufReader::new(s.try_clone()?);
            self.conn = Some((s, r));
        }
        let result = (|| {
            let (w, r) = self.conn.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
            w.write_all(request.as_bytes())?;
            let mut status = String::new();
            r.read_line(&mut status)?;
            let code: u16 = status
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            let mut length = 0usize;
            let mut close = false;
            loop {
                let mut line = String::new();
                r.read_line(&mut line)?;
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                close |= line == "connection: close";
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body)?;
            Ok((code, close))
        })();
        match result {
            Ok((code, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(code)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn request(host: &str, method: &str, path: &str, extra: &[(&str, String)]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        r.push_str("content-length: 2\r\ncontent-type: application/json\r\n\r\n{}");
    } else {
        r.push_str("\r\n");
    }
    r
}

fn tokens() -> Value {
    let text = std::fs::read_to_string(meshware_e2e::root().join("examples/tokens.json"))
        .unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// One traffic class: a thread sending `next(i)` every `pause`.
fn spawn(
    port: u16,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    pause: Duration,
    next: impl Fn(u64) -> Vec<String> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = Client { port, conn: None };
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for req in next(i) {
                match c.send(&req) {
                    Ok(code) if code >= 500 => {
                        counts.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(code) if code >= 400 => {
                        counts.client_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.transport_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            i += 1;
            std::thread::sleep(pause);
        }
    })
}

fn in_flight(envoy: &Envoy) -> f64 {
    envoy
        .prometheus()
        .lines()
        .filter(|l| l.starts_with("meshware_in_flight{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() -> ExitCode {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let root = meshware_e2e::root();
    let profile = match std::fs::read_to_string(root.join("examples/tenants.json")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let echo = match Echo::start(0) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (port, admin) = (free_port(), free_port());
    let mut params = BootstrapParams::suite(port, admin, echo.port, meshware_e2e::dist(), profile);
    params.access_log_path = "/dev/null".into();
    // SOAK_MODULE=suite: the same load against the single module.
    if std::env::var("SOAK_MODULE").is_ok_and(|m| m == meshware_cli::bootstrap::SUITE) {
        params.filters = vec![meshware_cli::bootstrap::SUITE.to_string()];
    }
    eprintln!("soak: modules {}", params.filters.join(","));
    let envoy = match Envoy::start_with(&render(&params), admin, 2, "warning") {
        Ok(e) => e,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let t = tokens();
    let valid = format!("Bearer {}", t["valid RS256"].as_str().unwrap_or(""));
    let expired = format!("Bearer {}", t["expired"].as_str().unwrap_or(""));
    let ms = Duration::from_millis;
    let mut threads = vec![
        // Under acme's per-client limit (5/s): served.
        spawn(port, stop.clone(), counts.clone(), ms(250), |i| {
            vec![request(
                "shop.acme.example",
                "GET",
                &format!("/orders?page={}", i % 50),
                &[],
            )]
        }),
        // Idempotent retries: the same key twice, a new key each minute or so
        // (acme allows two POST /orders per minute: later ones are 429).
        spawn(port, stop.clone(), counts.clone(), ms(20_000), |i| {
            let key = format!("soak-{i}");
            let h = [("idempotency-key", key)];
            vec![
                request("shop.acme.example", "POST", "/orders", &h),
                request("shop.acme.example", "POST", "/orders", &h),
            ]
        }),
        spawn(port, stop.clone(), counts.clone(), ms(100), {
            let (valid, expired) = (valid.clone(), expired.clone());
            move |i| {
                let auth = match i % 4 {
                    0 => vec![],
                    1 => vec![("authorization", expired.clone())],
                    2 => vec![("authorization", "Bearer not.a.token".to_string())],
                    _ => vec![("authorization", valid.clone())],
                };
                vec![request("api.umbrella.example", "GET", "/orders", &auth)]
            }
        }),
        spawn(port, stop.clone(), counts.clone(), ms(100), |i| {
            vec![request(
                "api.globex.example",
                "GET",
                &format!("/items/{}", i % 1000),
                &[],
            )]
        }),
        spawn(port, stop.clone(), counts.clone(), ms(200), |i| {
            vec![request(
                "www.example.org",
                "GET",
                &format!("/r/{i}/{}", i * 7919),
                &[],
            )]
        }),
        spawn(port, stop.clone(), counts.clone(), ms(200), |i| {
            let path = if i % 10 == 0 {
                "/t/initech/debug/pprof".to_string()
            } else {
                format!("/t/initech/x{}", i % 100)
            };
            vec![request(
                "api.initech.example",
                "GET",
                &path,
                &[("x-api-key", format!("k{}", i % 80))],
            )]
        }),
    ];
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        let minute = started.elapsed().as_secs_f64() / 60.0;
        let rss = envoy.rss_kib().unwrap_or(0);
        let flying = in_flight(&envoy);
        eprintln!(
            "t={:>5.1} min  rss={rss} KiB  in_flight={flying}  ok={} 4xx={} 5xx={} transport={}",
            minute,
            counts.ok.load(Ordering::Relaxed),
            counts.client_errors.load(Ordering::Relaxed),
            counts.server_errors.load(Ordering::Relaxed),
            counts.transport_errors.load(Ordering::Relaxed)
        );
        samples.push(json!({"minute": minute, "rss_kib": rss, "in_flight": flying}));
        std::thread::sleep(Duration::from_secs(30.min(seconds)));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads.drain(..) {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_secs(2));
    let final_in_flight = in_flight(&envoy);
    // The bulkhead count is back to zero: globex's whole max_in_flight (8)
    // of slow requests is admitted at once.
    let bulkhead: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client { port, conn: None };
                c.send(&request(
                    "api.globex.example",
                    "GET",
                    "/slow",
                    &[("x-echo-delay-ms", "300".to_string())],
                ))
                .unwrap_or(0)
            })
        })
        .collect();
    let bulkhead_admitted = bulkhead
        .into_iter()
        .map(|t| t.join().unwrap_or(0))
        .filter(|code| *code == 200)
        .count();
    let rss: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["rss_kib"].as_f64())
        .collect();
    // Growth per minute after the first minute (warm-up: VMs, caches, buckets).
    let warm: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s["minute"].as_f64()?, s["rss_kib"].as_f64()?)))
        .filter(|(m, _)| *m >= 1.0)
        .collect();
    let growth = match (warm.first(), warm.last()) {
        (Some((m0, r0)), Some((m1, r1))) if m1 > m0 => (r1 - r0) / (m1 - m0),
        _ => 0.0,
    };
    let summary = json!({
        "seconds": seconds,
        "requests_ok": counts.ok.load(Ordering::Relaxed),
        "requests_4xx": counts.client_errors.load(Ordering::Relaxed),
        "requests_5xx": counts.server_errors.load(Ordering::Relaxed),
        "transport_errors": counts.transport_errors.load(Ordering::Relaxed),
        "rss_kib_first": rss.first(),
        "rss_kib_last": rss.last(),
        "rss_growth_kib_per_minute_after_warmup": growth,
        "in_flight_after": final_in_flight,
        "bulkhead_admitted_of_8_after": bulkhead_admitted,
        "samples": samples,
    });
    let out = root.join("target/soak.json");
    let _ = std::fs::write(&out, format!("{summary:#}\n"));
    println!("{summary:#}");
    let ok = counts.server_errors.load(Ordering::Relaxed) == 0
        && counts.transport_errors.load(Ordering::Relaxed) == 0
        && final_in_flight == 0.0
        && bulkhead_admitted == 8;
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "soak: unexpected 5xx, transport errors or in-flight left (see {})",
            out.display()
        );
        ExitCode::FAILURE
    }
}
