//! The host side of live configuration (`crate::live`): one worker per
//! module polls the store (a lease in shared data), judges changes with the
//! module's own compile code and publishes the accepted snapshot in shared
//! data; every worker (the poller too) adopts a newer snapshot on its tick
//! and reconfigures between requests. Shared data outlives a crashed VM, so
//! a reloaded VM starts on the latest accepted snapshot, not on the
//! bootstrap's profile.

use crate::errors::ConfigErrors;
use crate::host::EnvoyEnv;
use crate::hostcall as hostcalls;
use crate::live::{watch, ConfigSource, Etcd, Snapshot, SourceSettings, Step};
use crate::store::{HostEnv, SharedStore};
use serde_json::Value;

/// Envoy's own header for a call's upstream path etc.
const METHOD: &str = "POST";

pub struct LiveHost {
    module: &'static str,
    settings: SourceSettings,
    /// `settings` as JSON, carried into every assembled profile.
    source_json: String,
    source: Etcd,
    /// What this worker runs on.
    snapshot: Snapshot,
    /// This worker's lease identity.
    owner: u64,
    /// The poll call in flight: token and when it started.
    in_flight: Option<(u32, u64)>,
    next_poll_ms: u64,
    /// Whether this worker held the polling lease when it last asked, and
    /// when it asks again (every `poll_ms`, polling or not).
    holds_lease: bool,
    next_lease_ms: u64,
    watch: Watch,
    /// Consecutive failed polls (one warning per streak).
    failures: u32,
    regressed: bool,
    started_ms: u64,
    metrics: LiveMetrics,
}

/// The poller's etcd watch (`watch_cluster`): a gRPC stream that says when
/// something under the prefix changed.
struct Watch {
    /// The serialized `GrpcService` of `watch_cluster` (none: no watch).
    service: Option<String>,
    token: Option<u32>,
    /// etcd confirmed it (`created`): polls fall back to `resync_ms`.
    open: bool,
    /// When to try again after it failed or closed.
    retry_ms: u64,
    /// When the stream was started: etcd confirms a watch at once, so one
    /// unconfirmed past `timeout_ms` is dead (an HTTP/1.1 cluster, say).
    started_ms: u64,
    /// Consecutive failures (one warning per streak).
    failures: u32,
}

/// How long a failed or closed watch waits before it is opened again: as
/// long as a poll, at least a second.
fn watch_retry_ms(poll_ms: u64) -> u64 {
    poll_ms.max(1000)
}

/// The live configuration's metrics (`meshware_config_*`, labelled by
/// `filter`; updates also by `tenant` and `outcome`).
struct LiveMetrics {
    revision: Option<u32>,
    staleness_ms: Option<u32>,
    /// 1 while the watch is open (0 without one, or while it is down).
    watch_open: Option<u32>,
    next_staleness_ms: u64,
    /// Counter ids by (document label, accepted?), defined when first
    /// counted: at most two per tenant.
    updates: Vec<(String, bool, u32)>,
}

impl LiveMetrics {
    fn new(module: &str) -> LiveMetrics {
        let gauge = |what: &str| {
            hostcalls::define_metric(
                proxy_wasm::types::MetricType::Gauge,
                &format!("meshware.{what}.filter.{module}"),
            )
            .ok()
        };
        LiveMetrics {
            revision: gauge("config_revision"),
            staleness_ms: gauge("config_staleness_ms"),
            watch_open: gauge("config_watch_open"),
            next_staleness_ms: 0,
            updates: Vec::new(),
        }
    }

    fn count(&mut self, module: &str, key: &str, accepted: bool) {
        // Tenant names never start with '_': the shared documents cannot
        // collide with a tenant's label.
        let label = match key.strip_prefix("tenants/") {
            Some(t) => t.to_string(),
            None => format!("_{key}"),
        };
        let id = match self
            .updates
            .iter()
            .find(|(l, a, _)| *l == label && *a == accepted)
        {
            Some((_, _, id)) => Some(*id),
            None => {
                let outcome = if accepted { "accepted" } else { "rejected" };
                let name = format!(
                    "meshware.config_updates.filter.{module}.tenant.{label}.outcome.{outcome}"
                );
                let id =
                    hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, &name).ok();
                if let Some(id) = id {
                    self.updates.push((label, accepted, id));
                }
                id
            }
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// Shared-data keys of one module's live configuration.
fn key(module: &str, what: &str) -> String {
    format!("meshware.live.{module}.{what}")
}

fn put(key: &str, value: &[u8]) {
    crate::store::overwrite(&EnvoyEnv, key, value);
}

/// What the status of a module's source says, for the status endpoint and
/// the staleness metric: when the store last answered, and the last problem.
pub fn status(module: &str) -> Option<Value> {
    let (bytes, _) = EnvoyEnv.get(&key(module, "status"))?;
    crate::json::parse(&bytes).ok()
}

impl LiveHost {
    /// The live source of a compiled profile's `config_source`.
    pub fn new(module: &'static str, settings: &SourceSettings, owner: u64) -> LiveHost {
        let settings = settings.clone();
        let now = EnvoyEnv.now_ms();
        let watch_service = settings
            .watch_cluster
            .as_deref()
            .map(crate::grpc::envoy_grpc_service);
        LiveHost {
            module,
            source: Etcd::new(&settings.prefix),
            source_json: settings.to_json(),
            settings,
            snapshot: Snapshot::default(),
            owner,
            in_flight: None,
            next_poll_ms: 0,
            holds_lease: false,
            next_lease_ms: 0,
            watch: Watch {
                service: watch_service,
                token: None,
                open: false,
                retry_ms: 0,
                started_ms: 0,
                failures: 0,
            },
            failures: 0,
            regressed: false,
            started_ms: now,
            metrics: LiveMetrics::new(module),
        }
    }

    pub fn poll_ms(&self) -> u64 {
        self.settings.poll_ms
    }

    /// The published snapshot, when newer than this worker's: its profile
    /// to reconfigure with (`None`: nothing newer, or no profile yet).
    pub fn adopt(&mut self) -> Option<String> {
        let (rev, _) = EnvoyEnv.get(&key(self.module, "rev"))?;
        let published: u64 = std::str::from_utf8(&rev).ok()?.trim().parse().ok()?;
        if published <= self.snapshot.revision {
            return None;
        }
        let (bytes, _) = EnvoyEnv.get(&key(self.module, "snapshot"))?;
        let snapshot = Snapshot::from_json(&bytes)?;
        let changed = snapshot.docs != self.snapshot.docs;
        log::debug!(
            "[{}] adopting config revision {published} (documents changed: {changed})",
            self.module
        );
        self.snapshot = snapshot;
        self.record_revision();
        if changed {
            self.snapshot.profile(&self.source_json)
        } else {
            None
        }
    }

    fn record_revision(&self) {
        if let Some(id) = self.metrics.revision {
            let _ = hostcalls::record_metric(id, self.snapshot.revision);
        }
    }

    /// Seconds since the store last answered, as every worker sees it
    /// (from the shared status), at most once a second.
    fn record_staleness(&mut self, now: u64) {
        if now < self.metrics.next_staleness_ms {
            return;
        }
        self.metrics.next_staleness_ms = now.saturating_add(1000);
        let published = status(self.module);
        let last_ok = published
            .as_ref()
            .and_then(|s| fresh_as_of(s, now))
            .unwrap_or(self.started_ms);
        if let Some(id) = self.metrics.staleness_ms {
            let _ = hostcalls::record_metric(id, now.saturating_sub(last_ok));
        }
        if let Some(id) = self.metrics.watch_open {
            let open = published.as_ref().is_some_and(watch_is_open);
            let _ = hostcalls::record_metric(id, u64::from(open));
        }
    }

    /// Whether this worker holds (or now takes) the polling lease.
    fn lease(&self, now: u64) -> bool {
        let k = key(self.module, "lease");
        let until = now
            .saturating_add(self.settings.poll_ms.saturating_mul(3))
            .saturating_add(self.settings.timeout_ms);
        let mine = format!("{} {until}", self.owner);
        let cas = match EnvoyEnv.get(&k) {
            Some((value, cas)) => {
                let text = String::from_utf8_lossy(&value);
                let mut parts = text.split(' ');
                let holder: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let held_until: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                if holder != self.owner && held_until > now {
                    return false;
                }
                Some(cas)
            }
            None => None,
        };
        EnvoyEnv.set(&k, mine.as_bytes(), cas).is_ok()
    }

    /// On tick: renews (or takes) the polling lease every `poll_ms`; the
    /// holder keeps its watch open and polls when a poll is due: every
    /// `poll_ms`, or every `resync_ms` while the watch is open.
    pub fn tick(&mut self) {
        let now = EnvoyEnv.now_ms();
        self.record_staleness(now);
        // The native build polls from the main thread's root only: a
        // worker's callouts ride on its streams, which may end before the
        // answer; the workers adopt what it publishes.
        #[cfg(feature = "native")]
        if !crate::native::entry::on_main_thread() {
            return;
        }
        if now >= self.next_lease_ms {
            self.next_lease_ms = now.saturating_add(self.settings.poll_ms);
            self.holds_lease = self.lease(now);
            if !self.holds_lease {
                self.close_watch();
            }
        }
        if !self.holds_lease {
            return;
        }
        self.open_watch(now);
        if let Some((_, since)) = self.in_flight {
            // Envoy answers every call by its timeout; this is a backstop.
            if now < since.saturating_add(self.settings.timeout_ms.saturating_mul(2)) {
                return;
            }
            self.in_flight = None;
        }
        if now < self.next_poll_ms {
            return;
        }
        self.next_poll_ms = now.saturating_add(self.poll_period());
        self.send(now);
    }

    fn poll_period(&self) -> u64 {
        if self.watch.open {
            self.settings.resync_ms.max(self.settings.poll_ms)
        } else {
            self.settings.poll_ms
        }
    }

    /// Opens the watch when one is configured, none is open and its retry
    /// time has come: from the revision after the one this worker runs on,
    /// so a change between the last poll and the watch is not missed.
    fn open_watch(&mut self, now: u64) {
        let Some(service) = self.watch.service.as_deref() else {
            return;
        };
        let unconfirmed = self.watch.token.is_some() && !self.watch.open;
        if unconfirmed
            && now
                >= self
                    .watch
                    .started_ms
                    .saturating_add(self.settings.timeout_ms)
        {
            self.close_watch();
            let why = format!(
                "etcd did not confirm it within {} ms (is the cluster HTTP/2?)",
                self.settings.timeout_ms
            );
            self.watch_failed(&why);
            return;
        }
        if self.watch.token.is_some() || now < self.watch.retry_ms {
            return;
        }
        self.watch.retry_ms = now.saturating_add(watch_retry_ms(self.settings.poll_ms));
        let start = match self.snapshot.revision {
            0 => 0,
            r => r.saturating_add(1),
        };
        let request = watch::create_request(&self.settings.prefix, start);
        let opened =
            hostcalls::open_grpc_stream(service, watch::SERVICE, watch::METHOD, Vec::new())
                .and_then(|token| {
                    match hostcalls::send_grpc_stream_message(token, Some(&request), false) {
                        Ok(()) => Ok(token),
                        Err(status) => {
                            let _ = hostcalls::cancel_grpc_stream(token);
                            Err(status)
                        }
                    }
                });
        match opened {
            Ok(token) => {
                self.watch.token = Some(token);
                self.watch.started_ms = now;
            }
            Err(status) => self.watch_failed(&format!("it could not start ({status:?})")),
        }
    }

    fn watch_failed(&mut self, why: &str) {
        self.watch.failures = self.watch.failures.saturating_add(1);
        if self.watch.failures == 1 {
            log::warn!(
                "[{}] config store watch on {}: {why}; polling every {} ms, watching again every {} ms",
                self.module,
                self.settings.watch_cluster.as_deref().unwrap_or(""),
                self.settings.poll_ms,
                watch_retry_ms(self.settings.poll_ms)
            );
        }
    }

    fn close_watch(&mut self) {
        if let Some(token) = self.watch.token.take() {
            let _ = hostcalls::cancel_grpc_stream(token);
        }
        self.watch.open = false;
    }

    /// Whether `token` is this source's watch stream.
    pub fn owns_watch(&self, token: u32) -> bool {
        self.watch.token == Some(token)
    }

    /// A message of the watch (`None`: unreadable).
    pub fn watch_message(&mut self, message: Option<&[u8]>) {
        let now = EnvoyEnv.now_ms();
        let decoded = message.and_then(watch::decode);
        match watch::step(decoded.as_ref(), self.snapshot.revision) {
            watch::Step::Opened => {
                if self.watch.failures > 0 || !self.watch.open {
                    log::info!(
                        "[{}] config store watch on {}: open; polling every {} ms as a safety net",
                        self.module,
                        self.settings.watch_cluster.as_deref().unwrap_or(""),
                        self.settings.resync_ms.max(self.settings.poll_ms)
                    );
                }
                self.watch.failures = 0;
                self.watch.open = true;
                self.republish_watch_state();
                self.next_poll_ms = self
                    .next_poll_ms
                    .min(now.saturating_add(self.settings.resync_ms));
            }
            watch::Step::Poll => {
                self.watch.open = true;
                if self.in_flight.is_none() {
                    self.next_poll_ms = now.saturating_add(self.poll_period());
                    self.send(now);
                } else {
                    // After the poll in flight: the next tick polls again.
                    self.next_poll_ms = 0;
                }
            }
            watch::Step::Nothing => {}
            watch::Step::Closed => {
                let why = match decoded {
                    None => "an unreadable message".to_string(),
                    Some(m) if m.compact_revision > 0 => format!(
                        "etcd compacted its history past revision {}",
                        m.compact_revision
                    ),
                    Some(_) => "etcd canceled it".to_string(),
                };
                self.close_watch();
                self.republish_watch_state();
                self.watch_failed(&why);
                self.next_poll_ms = 0;
            }
        }
    }

    /// The watch stream ended (the store or the cluster went away): poll
    /// every `poll_ms` until it is open again.
    pub fn watch_closed(&mut self, grpc_status: u32) {
        self.watch.token = None;
        self.watch.open = false;
        self.republish_watch_state();
        self.next_poll_ms = 0;
        self.watch_failed(&format!(
            "the stream closed ({})",
            crate::grpc::name_of(u8::try_from(grpc_status).unwrap_or(2))
        ));
    }

    fn send(&mut self, now: u64) {
        let call = self.source.next_call(&self.snapshot);
        let headers = vec![
            (":method", METHOD),
            (":path", call.path),
            (":authority", self.settings.authority.as_str()),
            ("content-type", "application/json"),
        ];
        match hostcalls::dispatch_http_call(
            &self.settings.cluster,
            headers,
            Some(call.body.as_bytes()),
            Vec::new(),
            std::time::Duration::from_millis(self.settings.timeout_ms),
        ) {
            Ok(token) => self.in_flight = Some((token, now)),
            Err(status) => {
                let _ = self.source.answer(&self.snapshot, None);
                self.failed(&format!("the call could not start ({status:?})"), now);
            }
        }
    }

    /// Whether `token` is this source's call.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|(t, _)| t == token)
    }

    /// The store answered (`None`: the call failed). Returns the profile to
    /// reconfigure with when a change was accepted.
    pub fn answer(
        &mut self,
        response: Option<&crate::CalloutResponse>,
        compile: &dyn Fn(&str) -> Result<(), ConfigErrors>,
    ) -> Option<String> {
        self.in_flight = None;
        let now = EnvoyEnv.now_ms();
        match self.source.answer(&self.snapshot, response) {
            Step::Continue => {
                self.send(now);
                None
            }
            Step::Unchanged => {
                self.ok(now, None);
                None
            }
            Step::Regressed { store, accepted } => {
                if !self.regressed {
                    log::error!(
                        "[{}] config store {}: its revision {store} is older than the accepted {accepted} (restored from an older snapshot?): nothing applied until it moves past {accepted}",
                        self.module,
                        self.settings.cluster
                    );
                }
                self.regressed = true;
                self.status(
                    now,
                    Some(format!(
                        "store revision {store} is older than the accepted {accepted}"
                    )),
                );
                None
            }
            Step::Failed(why) => {
                self.failed(&why, now);
                None
            }
            Step::Changed(changes) => {
                let judged = crate::live::judge(
                    &self.snapshot,
                    changes,
                    self.settings.max_document_bytes,
                    &self.source_json,
                    compile,
                );
                for k in &judged.accepted {
                    self.metrics.count(self.module, k, true);
                }
                for (k, _) in &judged.rejected {
                    self.metrics.count(self.module, k, false);
                }
                for (k, errors) in &judged.rejected {
                    log::warn!(
                        "[{}] config store: {k} refused, its last good document stays:\n{errors}",
                        self.module
                    );
                }
                if !judged.accepted.is_empty() {
                    log::info!(
                        "[{}] config store revision {}: applied {}",
                        self.module,
                        judged.snapshot.revision,
                        crate::errors::joined(&judged.accepted, ", ")
                    );
                }
                let changed = judged.snapshot.docs != self.snapshot.docs;
                self.snapshot = judged.snapshot;
                self.record_revision();
                put(
                    &key(self.module, "snapshot"),
                    self.snapshot.to_json().as_bytes(),
                );
                put(
                    &key(self.module, "rev"),
                    self.snapshot.revision.to_string().as_bytes(),
                );
                self.ok(now, None);
                if changed {
                    judged.profile
                } else {
                    None
                }
            }
        }
    }

    fn ok(&mut self, now: u64, problem: Option<String>) {
        if self.failures > 0 || self.regressed {
            log::info!(
                "[{}] config store {}: answering again",
                self.module,
                self.settings.cluster
            );
        }
        self.failures = 0;
        self.regressed = false;
        self.status(now, problem);
    }

    fn failed(&mut self, why: &str, now: u64) {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            log::warn!(
                "[{}] config store {}: poll failed: {why}; keeping revision {}",
                self.module,
                self.settings.cluster,
                self.snapshot.revision
            );
        }
        // Publish the problem; `last_ok_ms` stays what the last good poll wrote.
        let last_ok = status(self.module)
            .and_then(|s| s.get("last_ok_ms").and_then(Value::as_u64))
            .unwrap_or(0);
        self.write_status(last_ok, Some(why.to_string()), now);
    }

    fn status(&self, now: u64, problem: Option<String>) {
        let ok = if problem.is_none() || self.regressed {
            now
        } else {
            0
        };
        self.write_status(ok, problem, now);
    }

    fn write_status(&self, last_ok_ms: u64, problem: Option<String>, now: u64) {
        use crate::jsontext::quoted;
        let problem = problem
            .as_deref()
            .map_or_else(|| "null".to_string(), quoted);
        let watch = match (&self.watch.service, self.watch.open) {
            (None, _) => "null",
            (Some(_), true) => "\"open\"",
            (Some(_), false) => "\"closed\"",
        };
        let value = format!(
            "{{\"cluster\":{},\"prefix\":{},\"revision\":{},\"last_ok_ms\":{last_ok_ms},\"last_poll_ms\":{now},\"problem\":{problem},\"watch\":{watch},\"started_ms\":{}}}",
            quoted(&self.settings.cluster),
            quoted(&self.settings.prefix),
            self.snapshot.revision,
            self.started_ms
        );
        put(&key(self.module, "status"), value.as_bytes());
    }

    /// Rewrites the published status with the watch's new state (the last
    /// poll's fields unchanged).
    fn republish_watch_state(&self) {
        let Some(published) = status(self.module) else {
            return;
        };
        let last_ok = published
            .get("last_ok_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let last_poll = published
            .get("last_poll_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let problem = published
            .get("problem")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.write_status(last_ok, problem, last_poll);
    }

    /// The snapshot this worker runs on.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// Until when the proxy is known to have had the store's latest: the last
/// good poll, or now while the watch is open (etcd would have said
/// otherwise). Staleness is measured from it.
fn fresh_as_of(status: &Value, now: u64) -> Option<u64> {
    if watch_is_open(status) {
        return Some(now);
    }
    status.get("last_ok_ms").and_then(Value::as_u64)
}

/// Whether a published status says the watch is open.
fn watch_is_open(status: &Value) -> bool {
    status.get("watch").and_then(Value::as_str) == Some("open")
}

/// A root's gRPC stream message, for its live source's watch if it is
/// that stream (the roots of the modules and of the suite call this).
pub fn watch_message(live: Option<&mut LiveHost>, token_id: u32, message_size: usize) {
    if let Some(live) = live.filter(|l| l.owns_watch(token_id)) {
        let message = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::GrpcReceiveBuffer,
            0,
            message_size,
        )
        .ok()
        .flatten();
        live.watch_message(message.as_deref());
    }
}

/// A root's gRPC stream closed: the watch's, if it is that stream.
pub fn watch_closed(live: Option<&mut LiveHost>, token_id: u32, status_code: u32) {
    if let Some(live) = live.filter(|l| l.owns_watch(token_id)) {
        live.watch_closed(status_code);
    }
}

/// The status endpoint of a module's live configuration, prepared when
/// the filter is configured.
pub struct StatusEndpoint {
    pub module: &'static str,
    pub path: String,
    pub allow: Vec<crate::net::Cidr>,
    pub token_header: String,
    pub tokens: crate::live::StatusTokens,
}

impl StatusEndpoint {
    pub fn new(module: &'static str, s: &SourceSettings) -> StatusEndpoint {
        StatusEndpoint {
            module,
            path: s.status_path.clone(),
            allow: s.status_allow_cidrs.clone(),
            token_header: s.status_token_header.clone(),
            tokens: s.status_tokens.clone(),
        }
    }

    /// Whether a client may read it: from an allowed range, or with a token.
    pub fn allows(&self, source: Option<std::net::IpAddr>, token: Option<&[u8]>) -> bool {
        source.is_some_and(|ip| self.allow.iter().any(|c| c.contains(ip)))
            || token.is_some_and(|t| self.tokens.accepts(t))
    }

    /// Whether the request's canonical path (as judged) is the endpoint's.
    pub fn matches(&self, path: &crate::path::RequestPath) -> bool {
        path.canonical().text(false) == self.path
    }

    /// The JSON answer: the source and its staleness, the store revision
    /// the proxy runs on, each document's revision and each refusal, and
    /// `state` (the filters' shared state, a JSON object by filter).
    pub fn body(&self, state: &str) -> String {
        use crate::jsontext::quoted;
        let now = EnvoyEnv.now_ms();
        let source = EnvoyEnv
            .get(&key(self.module, "status"))
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())
            .filter(|v| v.starts_with('{'))
            .unwrap_or_else(|| "null".into());
        let last_ok = status(self.module)
            .and_then(|s| fresh_as_of(&s, now))
            .unwrap_or(0);
        // Milliseconds, an integer: no float formatting in the modules.
        let staleness = if last_ok == 0 {
            "null".to_string()
        } else {
            now.saturating_sub(last_ok).to_string()
        };
        let snapshot = EnvoyEnv
            .get(&key(self.module, "snapshot"))
            .and_then(|(v, _)| Snapshot::from_json(&v))
            .unwrap_or_default();
        let documents = crate::jsontext::object(
            snapshot
                .docs
                .iter()
                .map(|(k, d)| (k, format!("{{\"revision\":{}}}", d.mod_revision))),
        );
        let rejected = crate::jsontext::object(snapshot.rejected.iter().map(|(k, r)| {
            (
                k,
                format!(
                    "{{\"revision\":{},\"errors\":{}}}",
                    r.mod_revision,
                    quoted(&r.errors)
                ),
            )
        }));
        format!(
            "{{\"module\":{},\"source\":{source},\"staleness_ms\":{staleness},\"revision\":{},\"documents\":{documents},\"rejected\":{rejected},\"state\":{state}}}\n",
            quoted(self.module),
            snapshot.revision
        )
    }
}
