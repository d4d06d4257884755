//! Stored responses in shared data. Each tenant has `max_entries` slots; a
//! scope (tenant, caller, key) hashes to two of them. A slot holds one
//! entry: an in-flight mark or a completed response, each with an expiry.
//! Expired entries are free; the tick sweep clears them.

use meshware_common::bucket::fnv1a_64;
use meshware_common::store::{candidate_slots, sweep_slots, SetError};
use meshware_common::SharedStore;

pub const MAX_CAS_RETRIES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The response's trailers (gRPC: `grpc-status`, `grpc-message`, the
    /// server's trailing metadata); empty for most HTTP responses.
    pub trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub scope: String,
    pub fingerprint: u128,
    pub expires_ms: u64,
    /// `None`: in flight.
    pub response: Option<Stored>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn pairs(&mut self) -> Option<Vec<(String, String)>> {
        let n = self.u16()?;
        let mut pairs = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            pairs.push((self.string()?, self.string()?));
        }
        Some(pairs)
    }
    fn rest(&mut self) -> &'a [u8] {
        let out = self.bytes.get(self.at..).unwrap_or(&[]);
        self.at = self.bytes.len();
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(bytes.get(..n).unwrap_or(&[]));
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    let n = pairs.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for (k, v) in pairs.iter().take(n) {
        put_str(out, k);
        put_str(out, v);
    }
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // 0: in flight; 1: a response; 2: a response with trailers.
        out.push(match &self.response {
            None => 0,
            Some(r) if r.trailers.is_empty() => 1,
            Some(_) => 2,
        });
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        put_str(&mut out, &self.scope);
        if let Some(r) = &self.response {
            out.extend_from_slice(&r.status.to_le_bytes());
            put_pairs(&mut out, &r.headers);
            if !r.trailers.is_empty() {
                put_pairs(&mut out, &r.trailers);
            }
            out.extend_from_slice(&r.body);
        }
        out
    }

    /// `None` for an empty (free) slot or foreign bytes.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader { bytes, at: 0 };
        let (done, with_trailers) = match r.take(1)? {
            [0] => (false, false),
            [1] => (true, false),
            [2] => (true, true),
            _ => return None,
        };
        let expires_ms = r.u64()?;
        let fingerprint = r.u128()?;
        let scope = r.string()?;
        let response = if done {
            let status = r.u16()?;
            let headers = r.pairs()?;
            let trailers = if with_trailers {
                r.pairs()?
            } else {
                Vec::new()
            };
            Some(Stored {
                status,
                headers,
                trailers,
                body: r.rest().to_vec(),
            })
        } else {
            None
        };
        Some(Entry {
            scope,
            fingerprint,
            expires_ms,
            response,
        })
    }
}

/// The two candidate slot keys of a scope.
pub fn slot_keys(tenant: &str, scope: &str, max_entries: u64) -> [String; 2] {
    let h = fnv1a_64(&[scope.as_bytes()]);
    candidate_slots(h, max_entries).map(|n| slot_key(tenant, n))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was new: the request goes upstream holding this slot.
    Claimed { slot: String },
    /// The key is live in a slot.
    Found(Entry),
    /// Both slots hold other live entries.
    Full,
    /// The store could not be updated.
    Unavailable,
}

/// Finds the scope's live entry, or claims a free slot with an in-flight mark.
pub fn find_or_claim(
    store: &dyn SharedStore,
    slots: &[String; 2],
    mark: &Entry,
    now_ms: u64,
) -> Claim {
    'retry: for _ in 0..MAX_CAS_RETRIES {
        let mut free: Option<(&String, Option<u32>)> = None;
        for slot in slots {
            let current = store.get(slot);
            let entry = current.as_ref().and_then(|(b, _)| Entry::decode(b));
            match entry {
                Some(e) if e.expires_ms > now_ms => {
                    if e.scope == mark.scope {
                        return Claim::Found(e);
                    }
                }
                _ => {
                    if free.is_none() {
                        free = Some((slot, current.map(|(_, cas)| cas)));
                    }
                }
            }
        }
        let Some((slot, cas)) = free else {
            return Claim::Full;
        };
        match store.set(slot, &mark.encode(), cas) {
            Ok(()) => return Claim::Claimed { slot: slot.clone() },
            Err(SetError::CasMismatch) => continue 'retry,
            Err(SetError::Failed) => return Claim::Unavailable,
        }
    }
    Claim::Unavailable
}

/// Replaces our in-flight mark in `slot` with `next` (a stored response, or
/// `None` to free the slot). Does nothing if the slot moved on.
pub fn finish(store: &dyn SharedStore, slot: &str, scope: &str, next: Option<&Entry>) -> bool {
    for _ in 0..MAX_CAS_RETRIES * 8 {
        let Some((bytes, cas)) = store.get(slot) else {
            return false;
        };
        match Entry::decode(&bytes) {
            Some(e) if e.scope == scope && e.response.is_none() => {}
            _ => return false,
        }
        let value = next.map(Entry::encode).unwrap_or_default();
        match store.set(slot, &value, Some(cas)) {
            Ok(()) => return true,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return false,
        }
    }
    false
}

pub fn slot_key(tenant: &str, slot: u64) -> String {
    format!("mw.idem.{tenant}.{slot}")
}

/// Clears up to `count` expired slots from `start`; returns how many were
/// cleared and where the next sweep starts.
pub fn sweep(
    store: &dyn SharedStore,
    tenant: &str,
    start: u64,
    count: u64,
    max_entries: u64,
    now_ms: u64,
) -> (u64, u64) {
    let swept = sweep_slots(
        store,
        start,
        count,
        max_entries,
        |n| slot_key(tenant, n),
        |bytes| Entry::decode(bytes).is_some_and(|e| e.expires_ms <= now_ms),
    );
    (swept.cleared, swept.next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshware_common::store::MemoryStore;

    fn mark(scope: &str, fp: u128) -> Entry {
        Entry {
            scope: scope.into(),
            fingerprint: fp,
            expires_ms: 1000,
            response: None,
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            scope: "t\0u\0k".into(),
            fingerprint: 0xdead_beef_u128 << 64 | 7,
            expires_ms: 99,
            response: Some(Stored {
                status: 201,
                headers: vec![("location".into(), "/orders/1".into())],
                trailers: Vec::new(),
                body: b"{\"id\":1}".to_vec(),
            }),
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        let mut grpc = e.clone();
        if let Some(r) = &mut grpc.response {
            r.trailers = vec![
                ("grpc-status".into(), "0".into()),
                ("x-t".into(), "1".into()),
            ];
        }
        assert_eq!(grpc.encode().first(), Some(&2));
        assert_eq!(Entry::decode(&grpc.encode()), Some(grpc));
        let m = mark("s", 1);
        assert_eq!(Entry::decode(&m.encode()), Some(m));
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn claim_find_finish_and_full() {
        let st = MemoryStore::default();
        let slots = [String::from("a"), String::from("b")];
        assert!(matches!(
            find_or_claim(&st, &slots, &mark("x", 1), 0),
            Claim::Claimed { .. }
        ));
        assert!(
            matches!(find_or_claim(&st, &slots, &mark("x", 1), 0), Claim::Found(e) if e.response.is_none())
        );
        assert!(matches!(
            find_or_claim(&st, &slots, &mark("y", 1), 0),
            Claim::Claimed { .. }
        ));
        assert_eq!(find_or_claim(&st, &slots, &mark("z", 1), 0), Claim::Full);
        // Expired entries are free again.
        assert!(matches!(
            find_or_claim(&st, &slots, &mark("z", 1), 1000),
            Claim::Claimed { .. }
        ));
        assert!(finish(&st, "a", "z", None) || finish(&st, "b", "z", None));
        assert_eq!(sweep(&st, "t", 0, 10, 10, 0).0, 0);
    }

    #[test]
    fn two_workers_claiming_the_same_key_do_not_both_win() {
        let st = MemoryStore::default();
        let slots = [String::from("a"), String::from("b")];
        // Another worker claims the key in slot a just after this worker
        // read slot a as free: this claim must see it, not claim beside it.
        *st.created_after_read.borrow_mut() = Some(("a".into(), mark("x", 1).encode()));
        assert!(matches!(
            find_or_claim(&st, &slots, &mark("x", 1), 0),
            Claim::Found(e) if e.scope == "x"
        ));
        assert_eq!(st.get("b"), None, "no second claim");
    }
}
