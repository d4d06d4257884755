//! End-to-end harness: real Envoy, an in-process echo upstream that records
//! what it received, free ports picked at run time, Envoy's log printed when a
//! test fails, processes always torn down.

pub mod bench_setup;
pub mod echo;
pub mod envoy;
pub mod etcd;
pub mod grpc;
pub mod http;
pub mod page;
pub mod redis;
#[cfg(feature = "rls")]
pub mod rls;
pub mod routers;
pub mod suite;

use std::path::PathBuf;

/// The workspace root (this crate lives in `tests/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where `make build` puts the release modules.
pub fn dist() -> PathBuf {
    std::env::var_os("MESHWARE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("dist"))
}

/// The example profile (`examples/tenants.json`), as the demo serves it.
pub fn example_profile() -> String {
    std::fs::read_to_string(root().join("examples/tenants.json"))
        .unwrap_or_else(|e| panic!("examples/tenants.json: {e}"))
}

/// The demo's secrets (`examples/demo.env`, `NAME=value` lines): every
/// Envoy the demo and the tests start has them in its environment, as the
/// example profile's `{"env": "NAME"}` references expect.
pub fn demo_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("examples/demo.env"))
        .unwrap_or_else(|e| panic!("examples/demo.env: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every filter of the suite, in chain order.
pub fn all_filters() -> Vec<&'static str> {
    meshware_cli::FILTERS.iter().map(|f| f.name).collect()
}

/// The project virtualenv's Python (`make setup`): the test libraries
/// (grpcio, h2, PyJWT, Flask) live there.
pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// The JWT vectors PyJWT minted (`filters/jwt-auth/testdata/vectors.json`).
pub fn jwt_vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("filters/jwt-auth/testdata/vectors.json"))
        .unwrap_or_else(|e| panic!("vectors.json: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vectors.json: {e}"))
}

/// One minted token by its case name (e.g. `valid RS256`).
pub fn jwt_token(name: &str) -> String {
    let v = jwt_vectors();
    v["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == name))
        .and_then(|c| c["token"].as_str())
        .unwrap_or_else(|| panic!("no vector {name}"))
        .to_string()
}

/// Polls `check` every 100 ms for up to `secs` seconds; whether it held.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
