//! Shared data of the native build: the process's memory, one map for every
//! worker, with proxy-wasm's semantics (a value and its CAS version; a
//! write with a stale version is refused). The bounds on key counts and the
//! eviction live in the cores (`crate::store`), as for the wasm build.

use proxy_wasm::types::{Bytes, Status};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

struct Entry {
    value: Vec<u8>,
    cas: u32,
}

struct Shared {
    entries: HashMap<String, Entry>,
    /// The last CAS version handed out (never 0: 0 means "no version").
    last_cas: u32,
}

fn shared() -> &'static Mutex<Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        Mutex::new(Shared {
            entries: HashMap::new(),
            last_cas: 0,
        })
    })
}

pub fn get(key: &str) -> (Option<Bytes>, Option<u32>) {
    // A poisoned lock (a panic elsewhere while holding it) still holds
    // consistent entries: every write below is one insert.
    let shared = shared().lock().unwrap_or_else(|p| p.into_inner());
    match shared.entries.get(key) {
        Some(e) => (Some(e.value.clone()), Some(e.cas)),
        None => (None, None),
    }
}

/// Writes `value` if `cas` is absent, 0, or the key's current version (a
/// missing key takes any version, as in Envoy's shared data).
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    let mut shared = shared().lock().unwrap_or_else(|p| p.into_inner());
    let current = shared.entries.get(key).map(|e| e.cas);
    if let (Some(expected), Some(current)) = (cas.filter(|c| *c != 0), current) {
        if expected != current {
            return Err(Status::CasMismatch);
        }
    }
    shared.last_cas = shared.last_cas.wrapping_add(1).max(1);
    let cas = shared.last_cas;
    shared.entries.insert(
        key.to_string(),
        Entry {
            value: value.to_vec(),
            cas,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_a_stale_version_are_refused() {
        let key = "native.store.test";
        assert_eq!(get(key), (None, None));
        assert!(set(key, b"a", None).is_ok());
        let (value, cas) = get(key);
        assert_eq!(value.as_deref(), Some(&b"a"[..]));
        let cas = cas.unwrap_or(0);
        assert!(cas != 0);
        assert!(set(key, b"b", Some(cas)).is_ok());
        assert_eq!(set(key, b"c", Some(cas)), Err(Status::CasMismatch));
        assert_eq!(get(key).0.as_deref(), Some(&b"b"[..]));
        // As Envoy's: a version only guards a key that exists.
        assert!(set("native.store.absent", b"x", Some(7)).is_ok());
    }
}
