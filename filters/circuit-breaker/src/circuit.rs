//! One circuit's state in shared data, updated with CAS by every worker:
//! closed -> open when the failure ratio over a rolling window of one-second
//! buckets reaches the threshold (with enough requests); open -> half-open
//! after `open_for_ms`; half-open admits `half_open_probes` probes; a failed
//! probe re-opens, enough good probes close (with a fresh window).
//! The same value carries the circuit's bulkhead (requests in flight), so
//! admission and completion are each one read and one CAS write.

use crate::config::BreakerSettings;
use meshware_common::store::SetError;
use meshware_common::SharedStore;

/// CAS attempts per update. Past this, admission fails open (allowed) and a
/// sample is dropped: the breaker protects the upstream, it must not become
/// an outage of its own.
pub const MAX_CAS_RETRIES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bucket {
    second: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    pub state: State,
    pub opened_at_ms: u64,
    pub probes_admitted: u32,
    pub probe_successes: u32,
    window: Vec<Bucket>,
    /// Bulkhead slots taken by admitted requests not yet complete.
    pub in_flight: u64,
}

/// Bytes before the window, and after it (the in-flight count).
const HEAD: usize = 17;
const TAIL: usize = 8;

impl Circuit {
    pub(crate) fn closed(window_s: u64) -> Circuit {
        Circuit {
            state: State::Closed,
            opened_at_ms: 0,
            probes_admitted: 0,
            probe_successes: 0,
            window: vec![Bucket::default(); window_s as usize],
            in_flight: 0,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + self.window.len() * 16 + TAIL);
        out.push(match self.state {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        });
        out.extend_from_slice(&self.opened_at_ms.to_le_bytes());
        out.extend_from_slice(&self.probes_admitted.to_le_bytes());
        out.extend_from_slice(&self.probe_successes.to_le_bytes());
        for b in &self.window {
            out.extend_from_slice(&b.second.to_le_bytes());
            out.extend_from_slice(&b.total.to_le_bytes());
            out.extend_from_slice(&b.failures.to_le_bytes());
        }
        out.extend_from_slice(&self.in_flight.to_le_bytes());
        out
    }

    /// The in-flight count of any value of this layout, whatever its window
    /// size: a window change must not forget the slots taken.
    fn in_flight_of(bytes: &[u8]) -> Option<u64> {
        let len = bytes.len();
        if len < HEAD + TAIL || !(len - HEAD - TAIL).is_multiple_of(16) {
            return None;
        }
        Some(u64::from_le_bytes(
            bytes.get(len - TAIL..)?.try_into().ok()?,
        ))
    }

    /// `None` for foreign bytes or a window of another size (a config
    /// change): the circuit then starts closed (keeping its in-flight count).
    pub(crate) fn decode(bytes: &[u8], window_s: u64) -> Option<Circuit> {
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
        };
        let state = match bytes.first()? {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            _ => return None,
        };
        if bytes.len() != HEAD + window_s as usize * 16 + TAIL {
            return None;
        }
        let window = (0..window_s as usize)
            .map(|i| {
                let at = HEAD + i * 16;
                Some(Bucket {
                    second: u64_at(at)?,
                    total: u32_at(at + 8)?,
                    failures: u32_at(at + 12)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Circuit {
            state,
            opened_at_ms: u64_at(1)?,
            probes_admitted: u32_at(9)?,
            probe_successes: u32_at(13)?,
            window,
            in_flight: Self::in_flight_of(bytes)?,
        })
    }

    /// Totals over buckets younger than the window.
    fn totals(&self, now_s: u64, window_s: u64) -> (u64, u64) {
        self.window
            .iter()
            .filter(|b| b.second + window_s > now_s)
            .fold((0, 0), |(t, f), b| {
                (t + u64::from(b.total), f + u64::from(b.failures))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed circuit, or the store could not be updated (fail open).
    Allowed,
    /// Half-open: this request is one of the probes.
    Probe {
        half_opened: bool,
    },
    Rejected {
        state: State,
        retry_after_s: u64,
    },
    /// The circuit would admit it, but `max_in_flight` requests are in
    /// flight (nothing was taken: not a probe either).
    BulkheadFull,
}

/// Admission, and whether it took a bulkhead slot (to give back exactly
/// once, in `complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    pub admission: Admission,
    pub slot: bool,
}

/// Reads, changes and CAS-writes one circuit; `change` returns the value to
/// report, and whether anything must be written.
fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    s: &BreakerSettings,
    retries: usize,
    mut change: impl FnMut(&mut Circuit) -> (T, bool),
) -> Option<T> {
    for _ in 0..retries {
        let (mut circuit, cas) = match store.get(key) {
            Some((bytes, cas)) => (
                Circuit::decode(&bytes, s.window_s).unwrap_or_else(|| {
                    let mut fresh = Circuit::closed(s.window_s);
                    fresh.in_flight = Circuit::in_flight_of(&bytes).unwrap_or(0);
                    fresh
                }),
                Some(cas),
            ),
            None => (Circuit::closed(s.window_s), None),
        };
        let (result, write) = change(&mut circuit);
        if !write {
            return Some(result);
        }
        match store.set(key, &circuit.encode(), cas) {
            Ok(()) => return Some(result),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return None,
        }
    }
    None
}

/// The circuit's admission, then the bulkhead's, in one CAS write. With a
/// bulkhead, a CAS mismatch means another worker just took or returned a
/// slot; giving up after a few would fail open (admit past `max`) exactly
/// when the bulkhead is contended, so it retries as long as a release does.
pub fn admit(
    store: &dyn SharedStore,
    key: &str,
    s: &BreakerSettings,
    now_ms: u64,
    max_in_flight: Option<u64>,
) -> Admit {
    let retries = if max_in_flight.is_some() {
        RELEASE_RETRIES
    } else {
        MAX_CAS_RETRIES
    };
    let result = update(store, key, s, retries, |c| {
        let (admission, changed) = match c.state {
            State::Closed => (Admission::Allowed, false),
            State::Open => {
                let reopen_at = c.opened_at_ms.saturating_add(s.open_for_ms);
                if now_ms < reopen_at {
                    let retry_after_s = (reopen_at - now_ms).div_ceil(1000).max(1);
                    let state = State::Open;
                    return (
                        no_slot(Admission::Rejected {
                            state,
                            retry_after_s,
                        }),
                        false,
                    );
                }
                c.state = State::HalfOpen;
                c.probes_admitted = 1;
                c.probe_successes = 0;
                (Admission::Probe { half_opened: true }, true)
            }
            State::HalfOpen => {
                if u64::from(c.probes_admitted) < s.half_open_probes {
                    c.probes_admitted += 1;
                    (Admission::Probe { half_opened: false }, true)
                } else {
                    let retry_after_s = s.open_for_ms.div_ceil(1000).max(1);
                    let state = State::HalfOpen;
                    return (
                        no_slot(Admission::Rejected {
                            state,
                            retry_after_s,
                        }),
                        false,
                    );
                }
            }
        };
        match max_in_flight {
            // Not written: the probe above is not taken either.
            Some(max) if c.in_flight >= max => (no_slot(Admission::BulkheadFull), false),
            Some(_) => {
                c.in_flight += 1;
                (
                    Admit {
                        admission,
                        slot: true,
                    },
                    true,
                )
            }
            None => (no_slot(admission), changed),
        }
    });
    result.unwrap_or(no_slot(Admission::Allowed))
}

fn no_slot(admission: Admission) -> Admit {
    Admit {
        admission,
        slot: false,
    }
}

/// A state change caused by recording an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
    /// A probe failed: open again.
    Reopened,
}

/// What a completed stream says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    pub failure: bool,
    pub probe: bool,
}

/// At the end of an admitted stream, in one CAS write: gives back its
/// bulkhead slot (`slot`) and records its outcome (`evidence`, if it is
/// any), applying the transitions.
pub fn complete(
    store: &dyn SharedStore,
    key: &str,
    s: &BreakerSettings,
    now_ms: u64,
    slot: bool,
    evidence: Option<Evidence>,
) -> Option<Transition> {
    // A lost release would shrink the bulkhead for good: retry much longer.
    let retries = if slot {
        RELEASE_RETRIES
    } else {
        MAX_CAS_RETRIES
    };
    update(store, key, s, retries, |c| {
        if slot {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        let (transition, changed) = match evidence {
            Some(e) => record(c, s, now_ms, e),
            None => (None, false),
        };
        (transition, changed || slot)
    })
    .flatten()
}

/// Records a completed request (or probe) in `c`.
fn record(
    c: &mut Circuit,
    s: &BreakerSettings,
    now_ms: u64,
    e: Evidence,
) -> (Option<Transition>, bool) {
    let now_s = now_ms / 1000;
    if e.probe && c.state == State::HalfOpen {
        if e.failure {
            c.state = State::Open;
            c.opened_at_ms = now_ms;
            return (Some(Transition::Reopened), true);
        }
        c.probe_successes += 1;
        if u64::from(c.probe_successes) >= s.half_open_probes {
            let in_flight = c.in_flight;
            *c = Circuit::closed(s.window_s);
            c.in_flight = in_flight;
            return (Some(Transition::Closed), true);
        }
        return (None, true);
    }
    if c.state != State::Closed {
        // A request admitted before the circuit opened: not evidence.
        return (None, false);
    }
    let index = (now_s % s.window_s) as usize;
    if let Some(bucket) = c.window.get_mut(index) {
        if bucket.second != now_s {
            *bucket = Bucket {
                second: now_s,
                ..Bucket::default()
            };
        }
        bucket.total = bucket.total.saturating_add(1);
        if e.failure {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }
    let (total, failures) = c.totals(now_s, s.window_s);
    if total >= s.min_requests && failures as f64 >= s.failure_ratio * total as f64 {
        c.state = State::Open;
        c.opened_at_ms = now_ms;
        return (Some(Transition::Opened), true);
    }
    (None, true)
}

/// CAS attempts for an update that holds or takes a bulkhead slot.
pub const RELEASE_RETRIES: usize = 64;

/// Requests in flight on a circuit (0 for none or foreign bytes).
pub fn in_flight(store: &dyn SharedStore, key: &str) -> u64 {
    store
        .get(key)
        .and_then(|(b, _)| Circuit::in_flight_of(&b))
        .unwrap_or(0)
}

/// Circuits a tenant's index remembers (the most recently opened).
pub const INDEX_LEN: usize = 32;

/// The shared-data key of the index of a tenant's circuits that have
/// opened, for the status endpoint (shared data cannot list its keys).
/// Circuit keys are `mw.cb.<tenant>.<scope>`; tenant names hold no dot.
pub fn index_key_of(circuit_key: &str) -> Option<String> {
    let tenant = circuit_key.strip_prefix("mw.cb.")?.split('.').next()?;
    Some(index_key(tenant))
}

pub fn index_key(tenant: &str) -> String {
    format!("mw.cb.{tenant}.~opened")
}

/// Adds a circuit that just opened to its tenant's index (newline-separated
/// keys, the oldest dropped past `INDEX_LEN`). Runs on a transition only.
pub fn remember_opened(store: &dyn SharedStore, circuit_key: &str) {
    let Some(index) = index_key_of(circuit_key) else {
        return;
    };
    for _ in 0..MAX_CAS_RETRIES {
        let (current, cas) = match store.get(&index) {
            Some((bytes, cas)) => (String::from_utf8(bytes).unwrap_or_default(), Some(cas)),
            None => (String::new(), None),
        };
        if current.lines().any(|k| k == circuit_key) {
            return;
        }
        let mut keys: Vec<&str> = current.lines().filter(|k| !k.is_empty()).collect();
        keys.push(circuit_key);
        let skip = keys.len().saturating_sub(INDEX_LEN);
        let value = meshware_common::errors::joined(keys.get(skip..).unwrap_or_default(), "\n");
        match store.set(&index, value.as_bytes(), cas) {
            Err(SetError::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// The status endpoint's view of a tenant's circuits: every remembered one
/// that is not closed now, with its state, time since it opened and its
/// requests in flight. `None` when none ever opened.
pub fn open_circuits(
    store: &dyn SharedStore,
    tenant: &str,
    s: &BreakerSettings,
    now_ms: u64,
) -> Option<String> {
    let (index, _) = store.get(&index_key(tenant))?;
    let index = String::from_utf8(index).ok()?;
    let prefix = format!("mw.cb.{tenant}.");
    let open: Vec<String> = index
        .lines()
        .filter_map(|key| {
            let (bytes, _) = store.get(key)?;
            let c = Circuit::decode(&bytes, s.window_s)?;
            (c.state != State::Closed).then(|| {
                format!(
                    "{{\"circuit\":{},\"state\":\"{}\",\"open_for_ms\":{},\"in_flight\":{}}}",
                    meshware_common::jsontext::quoted(key.strip_prefix(&prefix).unwrap_or(key)),
                    c.state.label(),
                    now_ms.saturating_sub(c.opened_at_ms),
                    c.in_flight
                )
            })
        })
        .collect();
    Some(format!(
        "{{\"open_circuits\":[{}]}}",
        meshware_common::errors::joined(&open, ",")
    ))
}
