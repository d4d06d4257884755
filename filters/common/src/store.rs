//! Shared state across Envoy worker threads: proxy-wasm shared data, seen
//! through a trait so cores stay pure and tests can use `MemoryStore`.
//!
//! Semantics follow Envoy's: `get` returns the value and its CAS token; `set`
//! with `Some(cas)` fails with `CasMismatch` when the key changed since. `set`
//! with `None` (the key was absent when read) creates the key and fails with
//! `CasMismatch` when another worker created it meanwhile: two workers
//! creating the same key (a bulkhead's first slot, an idempotency claim)
//! must not both succeed. Values never expire by themselves, and keys cannot
//! be deleted (callers write an empty value and bound their key space by
//! construction).

use hashbrown::HashMap;
use std::cell::RefCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another worker wrote the key since it was read: read again and retry.
    CasMismatch,
    /// The host refused the write.
    Failed,
}

pub trait SharedStore {
    /// The value and its CAS token; `None` when the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// The host services a core may use on the request path or on tick.
pub trait HostEnv: SharedStore {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// An Envoy attribute (`["xds", "cluster_name"]`, `["response", "code"]`),
    /// raw as the host serializes it (integers: 8 bytes little-endian).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Whether a filter can replace a response's body and add trailers
    /// (`HttpFilter::response_replacement`): proxy-wasm can, the native
    /// build's ABI cannot.
    fn replaces_responses(&self) -> bool {
        true
    }
}

/// Overwrites `key` whatever it holds: a CAS on the version just read, so
/// it also works where an unconditional write of an existing key is
/// refused. Last writer wins (for values every writer may publish).
pub fn overwrite(store: &dyn SharedStore, key: &str, value: &[u8]) {
    let cas = store.get(key).map(|(_, cas)| cas);
    let _ = store.set(key, value, cas);
}

/// An integer attribute as Envoy serializes it.
pub fn property_u64(bytes: &[u8]) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(0..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

/// The two candidate slots (of `slots`) of a hashed key: bounded key spaces
/// (rate-limit buckets, idempotency entries) place each key in one of them.
pub fn candidate_slots(hash: u64, slots: u64) -> [u64; 2] {
    let slots = slots.max(1);
    [
        hash % slots,
        crate::bucket::splitmix64_finalize(hash) % slots,
    ]
}

/// What one sweep window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub cleared: u64,
    /// Slots still holding a value the sweep kept (in use).
    pub kept: u64,
    /// Where the next window starts.
    pub next: u64,
    /// This window reached the last slot: a pass over all of them ended.
    pub wrapped: bool,
}

/// Clears, from slot `start` on, up to `count` of the `slots` keys
/// `key(i)` whose value `idle` says is no longer needed; a write that loses a
/// CAS race is skipped.
pub fn sweep_slots(
    store: &dyn SharedStore,
    start: u64,
    count: u64,
    slots: u64,
    key: impl Fn(u64) -> String,
    idle: impl Fn(&[u8]) -> bool,
) -> Swept {
    let slots = slots.max(1);
    let start = start % slots;
    // A window ends at the last slot, so a pass counts each slot once.
    let count = count.min(slots - start);
    let mut swept = Swept {
        cleared: 0,
        kept: 0,
        next: (start + count) % slots,
        wrapped: start + count == slots,
    };
    for i in start..start + count {
        let k = key(i);
        if let Some((bytes, cas)) = store.get(&k) {
            if bytes.is_empty() {
                continue;
            }
            if idle(&bytes) && store.set(&k, &[], Some(cas)).is_ok() {
                swept.cleared += 1;
            } else {
                swept.kept += 1;
            }
        }
    }
    swept
}

/// An in-memory store with Envoy's CAS rules, for native tests.
#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
    /// Test hook: fail this many upcoming CAS writes with `CasMismatch`, as if
    /// another worker had raced each one.
    pub forced_conflicts: RefCell<u32>,
    pub now: RefCell<u64>,
    /// Attributes for `HostEnv::property`, keyed by the path joined with `.`.
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    /// Test hook: another worker creates this key with this value right
    /// after the next read of it (which still sees the key absent).
    pub created_after_read: RefCell<Option<(String, Vec<u8>)>>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Keys holding a non-empty value.
    pub fn occupied(&self) -> usize {
        self.entries
            .borrow()
            .values()
            .filter(|(v, _)| !v.is_empty())
            .count()
    }

    pub fn advance_ms(&self, ms: u64) {
        *self.now.borrow_mut() += ms;
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let read = self.entries.borrow().get(key).cloned();
        let racer = self.created_after_read.borrow().clone();
        if let Some((racing_key, value)) = racer.filter(|(k, _)| k == key) {
            *self.created_after_read.borrow_mut() = None;
            let _ = self.set(&racing_key, &value, None);
        }
        read
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if cas.is_some() {
            let mut forced = self.forced_conflicts.borrow_mut();
            if *forced > 0 {
                *forced -= 1;
                return Err(SetError::CasMismatch);
            }
        }
        let mut entries = self.entries.borrow_mut();
        match (cas, entries.get(key)) {
            (Some(expected), Some((_, current))) if expected != *current => {
                return Err(SetError::CasMismatch);
            }
            (None, Some(_)) => return Err(SetError::CasMismatch),
            _ => {}
        }
        let mut next = self.next_cas.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        entries.insert(key.to_string(), (value.to_vec(), *next));
        Ok(())
    }
}

impl HostEnv for MemoryStore {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.borrow().get(&path.join(".")).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn cas_detects_a_concurrent_write() {
        let s = MemoryStore::default();
        assert_eq!(s.get("k"), None);
        s.set("k", b"a", None).unwrap();
        let (v, cas) = s.get("k").unwrap();
        assert_eq!(v, b"a");
        s.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(s.set("k", b"c", Some(cas)), Err(SetError::CasMismatch));
        assert_eq!(s.get("k").unwrap().0, b"b");
        *s.forced_conflicts.borrow_mut() = 1;
        let (_, cas) = s.get("k").unwrap();
        assert_eq!(s.set("k", b"d", Some(cas)), Err(SetError::CasMismatch));
        assert!(s.set("k", b"d", Some(cas)).is_ok());
        assert_eq!((s.len(), s.occupied()), (1, 1));
    }

    #[test]
    fn creating_a_key_fails_when_another_worker_created_it_first() {
        let s = MemoryStore::default();
        // Both read "absent"; the first creation wins, the second must retry.
        assert_eq!(s.get("slot"), None);
        s.set("slot", b"1", None).unwrap();
        assert_eq!(s.set("slot", b"1", None), Err(SetError::CasMismatch));
        assert_eq!(s.get("slot").unwrap().0, b"1");
        // The hook: the read sees the key absent, the creation lands after it.
        *s.created_after_read.borrow_mut() = Some(("other".into(), b"x".to_vec()));
        assert_eq!(s.get("other"), None);
        assert_eq!(s.set("other", b"y", None), Err(SetError::CasMismatch));
        assert_eq!(s.get("other").unwrap().0, b"x");
    }
}
