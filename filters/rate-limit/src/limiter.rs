//! Token buckets in shared data, as GCRA (generic cell rate algorithm): one
//! number per bucket, the theoretical arrival time (TAT) of the next request,
//! in microseconds. A request at `now` is allowed when
//! `max(TAT, now) + interval - now <= tolerance + interval`, i.e. the bucket
//! still holds a token; allowing it moves TAT one interval ahead. Exact
//! integer arithmetic, no refill rounding, and an idle bucket (TAT <= now) is
//! a full one, so it can be evicted without changing any decision.
//!
//! Memory is bounded by construction: a per-value limit (client, user,
//! header) hashes each value to one of two of `max_keys` slots; a slot held by
//! another value's busy bucket is skipped, an idle one is taken over, and when
//! both are busy the request is charged to the limit's shared overflow bucket.

use crate::config::{Limit, RateLimitSettings};
use meshware_common::bucket::fnv1a_64;
use meshware_common::store::{candidate_slots, sweep_slots, SetError};
use meshware_common::{HostEnv, SharedStore};

/// CAS attempts per bucket before giving up. Past this the request is
/// allowed (fail open) and counted as `store_contention`: losing eight races
/// in a row means heavy contention, and rejecting traffic for it would turn
/// a proxy hiccup into an outage.
pub const MAX_CAS_RETRIES: usize = 8;
/// Slots the tick sweep inspects per limit per tick.
pub const SWEEP_PER_TICK: u64 = 256;
const SLOT_LEN: usize = 16;

/// One bucket as stored: the owning value's hash and its TAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub key_hash: u64,
    pub tat_us: u64,
}

impl Slot {
    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut out = [0u8; SLOT_LEN];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.key_hash.to_le_bytes());
        b.copy_from_slice(&self.tat_us.to_le_bytes());
        out
    }

    /// `None` for an empty (evicted) or foreign value.
    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        let hash: [u8; 8] = bytes.get(0..8)?.try_into().ok()?;
        let tat: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == SLOT_LEN).then(|| Slot {
            key_hash: u64::from_le_bytes(hash),
            tat_us: u64::from_le_bytes(tat),
        })
    }
}

/// The result of one limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; whole tokens left and seconds until the bucket is full.
    Allowed { remaining: u64, reset_s: u64 },
    /// Empty bucket; seconds until one token is back, and until the bucket
    /// is full (the draft's `t`, the same as an allowed answer's `reset_s`).
    Limited { retry_after_s: u64, reset_s: u64 },
    /// Could not update the bucket (contention or host error): allowed.
    StoreError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub verdict: Verdict,
    /// Charged to the overflow bucket: every slot for the value was busy.
    pub overflow: bool,
}

fn ceil_s(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

enum SlotResult {
    Done(Verdict),
    /// Held by another value's bucket that is not idle.
    Busy,
}

/// GCRA on one shared-data key, with CAS retries.
fn take_slot(
    env: &dyn SharedStore,
    key: &str,
    hash: u64,
    limit: &Limit,
    now_us: u64,
) -> SlotResult {
    let interval = limit.interval_us();
    let tolerance = limit.tolerance_us();
    for _ in 0..MAX_CAS_RETRIES {
        let (current, cas) = match env.get(key) {
            Some((bytes, cas)) => (Slot::decode(&bytes), Some(cas)),
            None => (None, None),
        };
        let tat = match current {
            Some(s) if s.key_hash == hash => s.tat_us.max(now_us),
            Some(s) if s.tat_us > now_us => return SlotResult::Busy,
            // Empty, evicted or idle: a full bucket for this value.
            _ => now_us,
        };
        let next_tat = tat.saturating_add(interval);
        let ahead = next_tat - now_us;
        if ahead > tolerance.saturating_add(interval) {
            let wait = ahead - tolerance - interval;
            return SlotResult::Done(Verdict::Limited {
                retry_after_s: ceil_s(wait).max(1),
                // Not charged: full again when the current TAT is reached.
                reset_s: ceil_s(tat - now_us).max(1),
            });
        }
        let slot = Slot {
            key_hash: hash,
            tat_us: next_tat,
        };
        match env.set(key, &slot.encode(), cas) {
            Ok(()) => {
                let remaining = (tolerance.saturating_add(interval) - ahead) / interval;
                return SlotResult::Done(Verdict::Allowed {
                    remaining,
                    reset_s: ceil_s(ahead),
                });
            }
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return SlotResult::Done(Verdict::StoreError),
        }
    }
    SlotResult::Done(Verdict::StoreError)
}

/// A slot of a per-value limit: its number, or the shared overflow bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotName {
    Number(u64),
    Overflow,
}

/// Shared-data key of a limit's bucket or slot, built in one allocation
/// (`mw.rl.<tenant>.<limit>[.<slot>|.overflow]`).
pub fn bucket_key(tenant: &str, limit: &str, slot: Option<SlotName>) -> String {
    use std::fmt::Write;
    // "mw.rl." + two dots + the longest slot text (20 digits).
    let mut key = String::with_capacity(tenant.len() + limit.len() + 28);
    key.push_str("mw.rl.");
    key.push_str(tenant);
    key.push('.');
    key.push_str(limit);
    match slot {
        None => {}
        Some(SlotName::Number(n)) => {
            let _ = write!(key, ".{n}");
        }
        Some(SlotName::Overflow) => key.push_str(".overflow"),
    }
    key
}

/// Takes one token for `value` (the client address, user, header value;
/// `None` for tenant- and route-wide limits).
pub fn take(
    env: &dyn HostEnv,
    tenant: &str,
    limit: &Limit,
    value: Option<&str>,
    max_keys: u64,
) -> Taken {
    let now_us = env.now_ms().saturating_mul(1000);
    let Some(value) = value else {
        let key = bucket_key(tenant, &limit.name, None);
        let verdict = match take_slot(env, &key, 0, limit, now_us) {
            SlotResult::Done(v) => v,
            SlotResult::Busy => Verdict::StoreError,
        };
        return Taken {
            verdict,
            overflow: false,
        };
    };
    // Never 0: 0 marks the overflow bucket.
    let hash = fnv1a_64(&[
        tenant.as_bytes(),
        &[0],
        limit.name.as_bytes(),
        &[0],
        value.as_bytes(),
    ])
    .max(1);
    for slot in candidate_slots(hash, max_keys) {
        let key = bucket_key(tenant, &limit.name, Some(SlotName::Number(slot)));
        if let SlotResult::Done(verdict) = take_slot(env, &key, hash, limit, now_us) {
            return Taken {
                verdict,
                overflow: false,
            };
        }
    }
    let key = bucket_key(tenant, &limit.name, Some(SlotName::Overflow));
    let verdict = match take_slot(env, &key, 0, limit, now_us) {
        SlotResult::Done(v) => v,
        SlotResult::Busy => Verdict::StoreError,
    };
    Taken {
        verdict,
        overflow: true,
    }
}

/// Clears idle slots of per-value limits, a window per tick, so shared data
/// holds only live buckets. Idle buckets are full, so clearing one changes no
/// decision; a write that loses a CAS race is simply skipped.
pub fn sweep(env: &dyn HostEnv, tenant: &str, settings: &RateLimitSettings) -> u64 {
    let now_us = env.now_ms().saturating_mul(1000);
    let mut cleared = 0;
    for limit in settings.limits.iter().filter(|l| l.key.is_per_value()) {
        let swept = sweep_slots(
            env,
            limit.sweep_cursor.get(),
            SWEEP_PER_TICK,
            settings.max_keys,
            |slot| bucket_key(tenant, &limit.name, Some(SlotName::Number(slot))),
            |bytes| Slot::decode(bytes).is_some_and(|s| s.tat_us <= now_us),
        );
        limit.sweep_cursor.set(swept.next);
        // Occupancy for the status endpoint: buckets in use over the last
        // complete pass of this worker's sweep.
        let seen = limit.pass_occupied.get().saturating_add(swept.kept);
        if swept.wrapped {
            limit.occupied.set(Some(seen));
            limit.pass_occupied.set(0);
        } else {
            limit.pass_occupied.set(seen);
        }
        cleared += swept.cleared;
    }
    cleared
}

/// The status endpoint's view of a tenant's per-value limits: for each,
/// its slots and how many held a bucket in use over the last full sweep
/// pass (`null` before one ended), and whether its overflow bucket is busy.
pub fn occupancy(env: &dyn HostEnv, tenant: &str, settings: &RateLimitSettings) -> Option<String> {
    let now_us = env.now_ms().saturating_mul(1000);
    let limits: Vec<(&String, String)> = settings
        .limits
        .iter()
        .filter(|l| l.key.is_per_value())
        .map(|limit| {
            let overflow_busy = env
                .get(&bucket_key(tenant, &limit.name, Some(SlotName::Overflow)))
                .and_then(|(b, _)| Slot::decode(&b))
                .is_some_and(|s| s.tat_us > now_us);
            let occupied = limit
                .occupied
                .get()
                .map_or_else(|| "null".to_string(), |n| n.to_string());
            (
                &limit.name,
                format!(
                    "{{\"slots\":{},\"occupied\":{occupied},\"overflow_busy\":{overflow_busy}}}",
                    settings.max_keys
                ),
            )
        })
        .collect();
    (!limits.is_empty()).then(|| {
        meshware_common::jsontext::object([("limits", meshware_common::jsontext::object(limits))])
    })
}
