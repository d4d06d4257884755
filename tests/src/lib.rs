//! End-to-end harness: real Envoy, an in-process echo upstream that records
//! what it received, free ports picked at run time, Envoy's log printed when a
//! test fails, processes always torn down.

pub mod echo;
pub mod envoy;
pub mod http;
pub mod page;
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
