//! A real Redis (Debian's `redis-server`, `REDIS_BIN` overrides) on a free
//! loopback port, nothing persisted: the counters behind the rate limit
//! service of the global-limit tests. Killed on drop, its log printed when a
//! test fails.

use crate::envoy::{free_port, ScratchDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> String {
    std::env::var("REDIS_BIN").unwrap_or_else(|_| "/usr/bin/redis-server".into())
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: ScratchDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = ScratchDir::new();
        let port = free_port();
        let log = std::fs::File::create(dir.join("redis.log")).expect("redis log");
        let child = Command::new(binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            // Nothing on disk: each test starts from empty counters.
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run `make setup`)", binary()));
        let redis = Redis {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if redis.command("PING").as_deref() == Some("+PONG") {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis not ready after 10 s:\n{}", redis.log());
    }

    /// The URL limitador's Redis storage connects to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One inline command; the first line of the answer (`+PONG`, `:3`).
    pub fn command(&self, command: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(buf.get(..n)?).to_string();
        text.lines().next().map(str::to_string)
    }

    /// How many keys Redis holds (the counters limitador keeps there).
    pub fn keys(&self) -> u64 {
        self.command("DBSIZE")
            .and_then(|l| l.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    /// Kills it (the store gone under a running service).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- redis log ---\n{}", self.log());
        }
    }
}
