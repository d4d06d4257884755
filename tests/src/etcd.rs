//! A real etcd (Debian's `etcd-server`, `ETCD_BIN` overrides) on free
//! loopback ports with a throw-away data folder, spoken to through its v3
//! JSON gateway as the filters and `meshware push` speak to it. Killed on
//! drop, its log printed when a test fails.

use crate::envoy::{free_port, ScratchDir};
use crate::http;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into())
}

pub struct Etcd {
    child: Option<Child>,
    pub port: u16,
    peer_port: u16,
    dir: ScratchDir,
}

fn b64(data: &[u8]) -> String {
    meshware_common::base64::encode(data)
}

impl Etcd {
    /// Starts etcd on a free client port, with an empty store.
    pub fn start() -> Etcd {
        Self::start_on(free_port(), free_port())
    }

    /// On given client and peer ports (the demo's 2379 and 2380).
    pub fn start_on(port: u16, peer_port: u16) -> Etcd {
        let mut e = Etcd {
            child: None,
            port,
            peer_port,
            dir: ScratchDir::new(),
        };
        e.launch();
        e
    }

    fn launch(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log");
        let child = Command::new(binary())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--name", "meshware-test"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("meshware-test={peer}")])
            // A first push of 1,000 tenants is one transaction (docs/CONFIG.md).
            .args(["--max-txn-ops", "4096"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run `make setup`)", binary()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.revision().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd not ready after 30 s:\n{}", self.log());
    }

    /// Stops etcd (the store is then unreachable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port: with the same data, or, when
    /// `wipe`, with an empty store (its revision starts over: a store
    /// restored from an older snapshot, as the proxy sees it).
    pub fn restart(&mut self, wipe: bool) {
        self.stop();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
        }
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn call(&self, path: &str, body: Value) -> Option<Value> {
        let text = body.to_string();
        let r = http::send(
            self.port,
            "POST",
            path,
            &[("content-type", b"application/json")],
            text.as_bytes(),
        )
        .ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// The store's revision.
    pub fn revision(&self) -> Option<u64> {
        let v = self.call(
            "/v3/kv/range",
            json!({"key": b64(b"\0"), "count_only": true}),
        )?;
        v["header"]["revision"].as_str()?.parse().ok()
    }

    pub fn put(&self, key: &str, value: &str) -> u64 {
        let v = self
            .call(
                "/v3/kv/put",
                json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
            )
            .unwrap_or_else(|| panic!("etcd put {key} failed:\n{}", self.log()));
        v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    pub fn delete(&self, key: &str) -> u64 {
        let v = self
            .call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))
            .unwrap_or_else(|| panic!("etcd delete {key} failed:\n{}", self.log()));
        v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    /// Writes a profile's documents under `prefix`: `tenancy`, `defaults`,
    /// `tenants/<name>`.
    pub fn put_profile(&self, prefix: &str, profile: &Value) -> u64 {
        let mut revision = 0;
        if let Some(t) = profile.get("tenancy") {
            revision = self.put(&format!("{prefix}tenancy"), &t.to_string());
        }
        if let Some(d) = profile.get("defaults") {
            revision = self.put(&format!("{prefix}defaults"), &d.to_string());
        }
        for (name, t) in profile["tenants"].as_object().into_iter().flatten() {
            revision = self.put(&format!("{prefix}tenants/{name}"), &t.to_string());
        }
        revision
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- etcd log ---\n{}", self.log());
        }
    }
}
