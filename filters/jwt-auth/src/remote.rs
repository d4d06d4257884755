//! Remote JWKS: a provider's key set fetched from an Envoy cluster, kept per
//! worker, refreshed in the background and shared across workers through
//! shared data (the first worker to fetch publishes; the others adopt it).
//!
//! Pure: the adapter dispatches the callouts this module describes and hands
//! back their answers.

use crate::jwk::{parse_jwks_lenient, Jwk};
use meshware_common::section::check_path_prefix;
use meshware_common::{Callout, CalloutResponse, HostEnv, Park, SectionReader};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// A JWKS larger than this is refused (a real one is a few KB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct RemoteJwks {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
    pub ttl_ms: u64,
    /// Least time between two fetches after a failure or for an unknown `kid`.
    pub refetch_interval_ms: u64,
    /// How long a request waits for a key set that was never fetched.
    pub wait_ms: u64,
    /// The status when no key set could be fetched: 503 or 401.
    pub unavailable_status: u32,
    /// Shared-data key (unique per profile location of this provider).
    pub shared_key: String,
    pub state: RefCell<RemoteState>,
}

/// This worker's view of the key set.
#[derive(Debug, Default)]
pub struct RemoteState {
    pub keys: Rc<Vec<Jwk>>,
    /// When the key set in use was fetched (by any worker); 0 = never.
    pub fetched_ms: u64,
    pub last_attempt_ms: u64,
    /// A fetch this worker started and has not heard back from.
    pub in_flight_since: Option<u64>,
    /// The last shared-data copy looked at (its fetch time), to skip re-parsing.
    pub seen_shared_ms: u64,
    /// Fetches in a row that failed (this worker's): the retry backoff,
    /// and one log line per streak.
    pub failures: u32,
    /// Changes whenever the key set's content changes: tokens verified
    /// under another generation are verified again (a withdrawn key must
    /// not live on in the cache of verified tokens).
    pub generation: u64,
}

impl RemoteState {
    fn replace(&mut self, keys: Vec<Jwk>, body: &[u8], fetched_ms: u64) {
        let generation = meshware_common::bucket::fnv1a_64(&[body]);
        self.keys = Rc::new(keys);
        self.fetched_ms = fetched_ms;
        self.generation = generation;
    }
}

/// What a request needing this provider's keys should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<'s> {
    /// Fetch, waiting at most until the park's deadline.
    Fetch(Callout<'s>, Park),
    Wait(Park),
    /// Nothing can be fetched now; the caller decides with what it has.
    Unavailable,
}

/// The outcome of a completed fetch, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    Ok,
    Failed,
}

pub fn parse(r: &mut SectionReader<'_>, shared_key: String) -> RemoteJwks {
    let cluster = r.opt_string("cluster", |c| {
        if c.is_empty() || c.len() > 200 {
            Err("must name an Envoy cluster".into())
        } else {
            Ok(())
        }
    });
    let path = r.opt_string("path", check_path_prefix);
    let authority = r.opt_string("authority", |_| Ok(()));
    let timeout_ms = r.u64_in("timeout_ms", 1000, 10, 60_000);
    let ttl_s = r.u64_in("ttl_s", 300, 1, 86_400);
    let refetch_interval_s = r.u64_in("refetch_interval_s", 10, 1, 3_600);
    let wait_ms = r.u64_in("wait_ms", 2000, 10, 60_000);
    let unavailable_status = r.u64_in("unavailable_status", 503, 401, 503);
    if ![401, 503].contains(&unavailable_status) {
        let at = r.path_of("unavailable_status");
        r.error(at, "must be 401 or 503");
    }
    if cluster.is_none() {
        let at = r.path_of("cluster");
        r.error(at, "is required");
    }
    if path.is_none() {
        let at = r.path_of("path");
        r.error(at, "is required (e.g. \"/.well-known/jwks.json\")");
    }
    let cluster = cluster.unwrap_or_default();
    RemoteJwks {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path: path.unwrap_or_default(),
        timeout_ms,
        ttl_ms: ttl_s * 1000,
        refetch_interval_ms: refetch_interval_s * 1000,
        wait_ms,
        unavailable_status: unavailable_status as u32,
        shared_key,
        state: RefCell::new(RemoteState::default()),
    }
}

impl RemoteJwks {
    pub fn callout(&self, tag: u32) -> Callout<'_> {
        Callout {
            cluster: &self.cluster,
            headers: vec![
                (":method", "GET".into()),
                (":path", self.path.clone()),
                (":authority", self.authority.clone()),
                ("accept", "application/json".into()),
            ],
            timeout_ms: self.timeout_ms,
            tag,
            grpc: None,
        }
    }

    fn in_flight(&self, s: &RemoteState, now: u64) -> bool {
        // A call whose answer never came (its request went away) is forgotten.
        s.in_flight_since
            .is_some_and(|t| now < t.saturating_add(self.timeout_ms + 1000))
    }

    /// The key set in use; adopts another worker's fresher copy first.
    pub fn keys(&self, env: &dyn HostEnv) -> Rc<Vec<Jwk>> {
        let stale = self
            .state
            .try_borrow()
            .map(|s| s.fetched_ms == 0)
            .unwrap_or(false);
        if stale {
            self.adopt_shared(env);
        }
        self.state
            .try_borrow()
            .map(|s| Rc::clone(&s.keys))
            .unwrap_or_default()
    }

    /// Takes the shared copy when it is newer than ours. Returns whether it did.
    fn adopt_shared(&self, env: &dyn HostEnv) -> bool {
        let Some((value, _)) = env.get(&self.shared_key) else {
            return false;
        };
        let Some((fetched_ms, body)) = split_shared(&value) else {
            return false;
        };
        let Ok(mut s) = self.state.try_borrow_mut() else {
            return false;
        };
        if fetched_ms <= s.fetched_ms || fetched_ms == s.seen_shared_ms {
            return false;
        }
        s.seen_shared_ms = fetched_ms;
        match keys_from_body(body) {
            Some(keys) => {
                self.recovered(&mut s);
                s.replace(keys, body, fetched_ms);
                true
            }
            None => false,
        }
    }

    /// A request found no usable key (none fetched yet, or an unknown `kid`).
    /// `unknown_kid`: keys exist but none matched.
    pub fn need(&self, tag: u32, now: u64, unknown_kid: bool) -> Need<'_> {
        let Ok(mut s) = self.state.try_borrow_mut() else {
            return Need::Unavailable;
        };
        let never = s.fetched_ms == 0;
        if self.in_flight(&s, now) {
            return Need::Wait(Park {
                tag,
                deadline_ms: now.saturating_add(self.wait_ms),
            });
        }
        // No key set yet: retried on the failure backoff; a key set present
        // but without the token's kid: at most once per refetch interval.
        let spacing = if never {
            self.retry_delay(s.failures)
        } else {
            self.refetch_interval_ms
        };
        let recently = s.last_attempt_ms != 0 && now < s.last_attempt_ms.saturating_add(spacing);
        if recently || !(never || unknown_kid) {
            return Need::Unavailable;
        }
        s.in_flight_since = Some(now);
        s.last_attempt_ms = now;
        drop(s);
        Need::Fetch(
            self.callout(tag),
            Park {
                tag,
                deadline_ms: now.saturating_add(self.wait_ms),
            },
        )
    }

    /// The refresh lease in shared data (`<shared key>.lease`: until when
    /// the holder's fetch may run), taken with CAS when free or expired.
    /// A brand-new key cannot be written conditionally in proxy-wasm: two
    /// workers racing on the very first round may both fetch, once.
    fn take_lease(&self, env: &dyn HostEnv, now: u64) -> bool {
        let key = format!("{}.lease", self.shared_key);
        let until = now.saturating_add(self.timeout_ms).saturating_add(1000);
        let (held, cas) = match env.get(&key) {
            Some((value, cas)) => {
                let held_until = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                (held_until > now, Some(cas))
            }
            None => (false, None),
        };
        !held && env.set(&key, until.to_string().as_bytes(), cas).is_ok()
    }

    /// A good key set arrived (fetched here, or adopted from another
    /// worker's fetch): the failure streak, if any, ends with one line.
    fn recovered(&self, s: &mut RemoteState) {
        if s.failures > 0 {
            log::info!(
                "[jwt_auth] key set {}{}: in use again after {} failed fetches",
                self.cluster,
                self.path,
                s.failures
            );
        }
        s.failures = 0;
    }

    /// Writes the lease (the fetching worker's; CAS on the current version
    /// so it also works where an unconditional write is refused).
    fn set_lease(&self, env: &dyn HostEnv, until: u64) {
        let key = format!("{}.lease", self.shared_key);
        meshware_common::store::overwrite(env, &key, until.to_string().as_bytes());
    }

    /// How long after the last attempt the next may start, after `failures`
    /// failed fetches in a row: 0.5 s, doubling, at most the refetch
    /// interval (a key server back at once is used at once).
    fn retry_delay(&self, failures: u32) -> u64 {
        match failures {
            0 => 0,
            n => 500u64
                .checked_shl(n - 1)
                .unwrap_or(u64::MAX)
                .min(self.refetch_interval_ms),
        }
    }

    /// The current key set's generation (see `RemoteState::generation`).
    pub fn generation(&self) -> u64 {
        self.state.try_borrow().map(|s| s.generation).unwrap_or(0)
    }

    /// Whether no key set was ever obtained (requests then get `unavailable_status`).
    pub fn never_fetched(&self) -> bool {
        self.state
            .try_borrow()
            .map(|s| s.fetched_ms == 0)
            .unwrap_or(true)
    }

    /// On tick: the first fetch, and a refresh when the key set is older
    /// than its TTL (unless another worker already refreshed it).
    pub fn background(&self, tag: u32, env: &dyn HostEnv) -> Option<Callout<'_>> {
        let now = env.now_ms();
        let due = {
            let s = self.state.try_borrow().ok()?;
            // A good key set is refreshed when its TTL is up (so a withdrawn
            // key works at most `ttl_s` plus one fetch); only failures wait
            // before the next attempt.
            let old = s.fetched_ms == 0 || now >= s.fetched_ms.saturating_add(self.ttl_ms);
            let spaced = now
                >= s.last_attempt_ms
                    .saturating_add(self.retry_delay(s.failures));
            old && spaced && !self.in_flight(&s, now)
        };
        if !due {
            return None;
        }
        if self.adopt_shared(env) {
            let s = self.state.try_borrow().ok()?;
            if now < s.fetched_ms.saturating_add(self.ttl_ms) {
                return None;
            }
        }
        // One fetch per proxy: the worker that takes the lease fetches and
        // publishes; the others adopt the document on a later tick.
        if !self.take_lease(env, now) {
            return None;
        }
        let mut s = self.state.try_borrow_mut().ok()?;
        s.in_flight_since = Some(now);
        s.last_attempt_ms = now;
        drop(s);
        Some(self.callout(tag))
    }

    /// A fetch completed (`None`: the call itself failed). A failure keeps
    /// the key set in use (stale-while-error).
    pub fn done(&self, response: Option<&CalloutResponse>, env: &dyn HostEnv) -> Fetched {
        let now = env.now_ms();
        let keys = response
            .filter(|r| r.status == 200 && r.body.len() <= MAX_JWKS_BYTES)
            .and_then(|r| keys_from_body(&r.body).map(|k| (k, &r.body)));
        let Ok(mut s) = self.state.try_borrow_mut() else {
            return Fetched::Failed;
        };
        s.in_flight_since = None;
        let Some((keys, body)) = keys else {
            s.failures = s.failures.saturating_add(1);
            // The lease holds until the backoff is over: no worker retries
            // sooner than this one would.
            let retry_at = now.saturating_add(self.retry_delay(s.failures));
            self.set_lease(env, retry_at);
            if s.failures == 1 {
                // One line per streak: the reason, never the body.
                let why = match response {
                    None => "no answer (timeout, reset or no such cluster)".to_string(),
                    Some(r) if r.status != 200 => format!("HTTP {}", r.status),
                    Some(r) if r.body.len() > MAX_JWKS_BYTES => {
                        "a body over the size limit".to_string()
                    }
                    Some(_) => "a body that holds no usable JWKS".to_string(),
                };
                log::warn!(
                    "[jwt_auth] key set {}{}: fetch failed: {why}; {}",
                    self.cluster,
                    self.path,
                    if s.fetched_ms == 0 {
                        "no key set yet, retrying"
                    } else {
                        "keeping the last good key set"
                    }
                );
            }
            return Fetched::Failed;
        };
        self.recovered(&mut s);
        s.replace(keys, body, now);
        s.seen_shared_ms = now;
        drop(s);
        // The lease ends with the fetch.
        self.set_lease(env, 0);
        let mut value = format!("{now}\n").into_bytes();
        value.extend_from_slice(body);
        // Last writer wins: every writer holds a fresh, valid key set.
        meshware_common::store::overwrite(env, &self.shared_key, &value);
        Fetched::Ok
    }
}

impl RemoteJwks {
    /// The status endpoint's view: the shared key set's age (any worker's
    /// fetch; `null` before the first), the keys this worker uses and its
    /// failed fetches in a row.
    pub fn status(&self, env: &dyn HostEnv) -> String {
        let fetched = env
            .get(&self.shared_key)
            .and_then(|(v, _)| split_shared(&v).map(|(at, _)| at))
            .unwrap_or(0);
        let age = if fetched == 0 {
            "null".to_string()
        } else {
            env.now_ms().saturating_sub(fetched).to_string()
        };
        let (keys, failures) = self
            .state
            .try_borrow()
            .map(|s| (s.keys.len(), s.failures))
            .unwrap_or((0, 0));
        format!(
            "{{\"cluster\":{},\"age_ms\":{age},\"ttl_ms\":{},\"keys\":{keys},\"failures\":{failures}}}",
            meshware_common::jsontext::quoted(&self.cluster),
            self.ttl_ms
        )
    }
}

fn split_shared(value: &[u8]) -> Option<(u64, &[u8])> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let (head, rest) = value.split_at(newline);
    let fetched = std::str::from_utf8(head).ok()?.parse().ok()?;
    Some((fetched, rest.get(1..)?))
}

/// The usable keys of a JWKS body; `None` when it is not a JWKS or holds no
/// usable key. Keys of unsupported types are skipped: identity providers
/// publish encryption keys and other curves next to their signing keys.
fn keys_from_body(body: &[u8]) -> Option<Vec<Jwk>> {
    let v: Value = meshware_common::json::parse(body).ok()?;
    let keys = parse_jwks_lenient(&v)?;
    (!keys.is_empty()).then_some(keys)
}
