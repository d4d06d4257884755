//! The host adapter: the only code that talks to Envoy through proxy-wasm.
//! It reads the plugin configuration once, resolves the tenant, reads request
//! headers once, calls the filter's pure core and applies its decision.
//!
//! SDK helpers that panic on unexpected input (non-UTF-8 header values) are
//! avoided: headers are read as bytes and hostcall errors degrade to "continue".

use crate::decision::{
    Callout, CalloutResponse, Decision, HeaderEdits, HeaderOp, Outcomes, ResponseReplacement,
    TenantWrite,
};
use crate::filter::{compile, log_line, HttpFilter, RequestCtx, Tenant};
use crate::headers::Headers;
use crate::hostcall as hostcalls;
use crate::metrics::{decision_metric, MetricKind, MetricUpdates};
use crate::net::{parse_source_address, SourceAddress};
use crate::profile::Profile;
use crate::rng::Rng;
use crate::store::{HostEnv, SetError, SharedStore};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

// The parts of the adapter, each in its file: the stream (a filter's HTTP
// context), metrics, what the cores read from the host, the access log's
// records, the suite's shared header read. The root (configure, tick,
// callouts and parked requests) stays here.
mod env;
mod log_record;
mod metrics;
mod stream;
pub use self::env::EnvoyEnv;
use self::env::{declared_headers, source_address};
use self::log_record::*;
use self::metrics::*;
pub use self::metrics::{flush_metrics, tick_due, vm_tick_period_ms};
pub(crate) use self::stream::send_unavailable;
pub use self::stream::Stream;
use self::stream::*;

/// Installs logging and a panic hook that reports at critical level with the
/// filter's name: a panic aborts the VM, so the log line is all that is left.
pub fn init(filter: &'static str) {
    proxy_wasm::set_log_level(LogLevel::Trace);
    std::panic::set_hook(Box::new(move |info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("[{filter}] panic: {info}"));
    }));
}

/// A VM-wide seed from the host's entropy (WASI `random_get`), mixed with time
/// so a failing entropy source still gives distinct ids per VM.
pub(crate) fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let random = getrandom::fill(&mut bytes).is_ok();
    let time = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let value = u64::from_le_bytes(bytes);
    if random {
        value ^ time.rotate_left(32)
    } else {
        time
    }
}

/// Everything prepared at configure time.
struct Compiled<F: HttpFilter> {
    profile: Profile<F::Settings>,
    /// Per slot: counter ids by outcome index (static, then tenant outcomes).
    counters: Vec<Vec<Option<u32>>>,
    /// Per slot: the filter's extra metrics (`tenant_metrics`): kind and id.
    extra_metrics: Vec<Vec<(MetricKind, Option<u32>)>>,
    /// Per slot: the tenant outcome labels, for log lines.
    tenant_outcomes: Vec<Vec<String>>,
    /// The profile has this filter's section (else it does nothing of its own).
    active: bool,
    /// Whether any tenant owns headers (then the whole request map is read).
    reads_owned: bool,
    /// Per slot: the `filter="request"` counters (`request::OUTCOMES`).
    request_counters: Vec<Vec<Option<u32>>>,
    /// Filter state key of this filter's recorded outcome: `meshware.<filter>`.
    log_key: String,
    /// The live configuration's status endpoint (`config_source`).
    status: Option<crate::live_host::StatusEndpoint>,
}

/// A configured filter's shared state, for the status endpoint.
trait StateReport {
    fn name(&self) -> &'static str;
    /// Per tenant, the filter's `HttpFilter::state`; `None` when no tenant
    /// has any.
    fn report(&self, env: &dyn crate::store::HostEnv) -> Option<String>;
}

impl<F: HttpFilter> StateReport for Compiled<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn report(&self, env: &dyn crate::store::HostEnv) -> Option<String> {
        if !self.active {
            return None;
        }
        let profile = &self.profile;
        let members: Vec<(&String, String)> = profile
            .tenant_names()
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let settings = profile.settings(slot).filter(|s| F::enabled(s))?;
                F::state(settings, name, env).map(|v| (name, v))
            })
            .collect();
        (!members.is_empty()).then(|| crate::jsontext::object(members))
    }
}

thread_local! {
    /// Every filter configured in this VM (one, or the suite's concerns),
    /// by name: the status endpoint reports their state.
    static STATE_REPORTS: RefCell<Vec<Rc<dyn StateReport>>> = const { RefCell::new(Vec::new()) };
}

fn register_state(report: Rc<dyn StateReport>) {
    STATE_REPORTS.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.retain(|old| old.name() != report.name());
            r.push(report);
        }
    });
}

/// Whether the filter `name` is configured in this VM.
pub(crate) fn reports_state_of(name: &str) -> bool {
    STATE_REPORTS.with(|r| {
        r.try_borrow()
            .is_ok_and(|r| r.iter().any(|x| x.name() == name))
    })
}

/// The shared state of every filter configured in this VM, as a JSON
/// object by filter name (`only`: that filter alone).
pub(crate) fn state_json(env: &dyn crate::store::HostEnv, only: Option<&str>) -> String {
    STATE_REPORTS.with(|r| {
        let Ok(r) = r.try_borrow() else {
            return "{}".to_string();
        };
        crate::jsontext::object(
            r.iter()
                .filter(|x| only.is_none_or(|o| o == x.name()))
                .filter_map(|x| x.report(env).map(|v| (x.name(), v))),
        )
    })
}

/// Test builds only (`--features meshware-common/test-panic`): a request
/// header `x-meshware-test-panic: <callback>` arms a panic in the next
/// `request_headers`, `response_headers`, `tick` or `http_call_response`
/// callback of this VM (the flag lives in shared data and is cleared before
/// panicking, so a reloaded VM does not panic again).
#[cfg(feature = "test-panic")]
#[allow(clippy::panic)]
pub mod test_panic {
    use crate::hostcall as hostcalls;
    pub const HEADER: &str = "x-meshware-test-panic";
    const FLAG: &str = "meshware.test.panic";

    pub fn arm(callback: &str) {
        let _ = hostcalls::set_shared_data(FLAG, Some(callback.as_bytes()), None);
    }

    pub fn at(callback: &str) {
        if let Ok((Some(v), _)) = hostcalls::get_shared_data(FLAG) {
            if v == callback.as_bytes() {
                let _ = hostcalls::set_shared_data(FLAG, Some(b""), None);
                panic!("test-panic armed for {callback}");
            }
        }
    }
}

#[cfg(not(feature = "test-panic"))]
mod test_panic {
    pub fn at(_callback: &str) {}
}

/// A request held until a callout with `tag` completes (`Decision::park`).
struct Parked {
    context_id: u32,
    slot: usize,
    tag: u32,
    deadline_ms: u64,
}

/// Bound on held requests per worker: past it, a request that would wait is
/// answered at once as if its wait had expired.
const MAX_PARKED: usize = 4096;

/// Per-worker state the root and its streams share.
struct Worker {
    rng: RefCell<Rng>,
    parked: RefCell<Vec<Parked>>,
    /// This VM has served requests (a worker's, not the main thread's VM).
    serves: std::cell::Cell<bool>,
}

pub struct Root<F: HttpFilter> {
    context_id: u32,
    compiled: Option<Rc<Compiled<F>>>,
    worker: Rc<Worker>,
    /// Background callouts in flight: token -> (tenant slot, tag).
    callouts: hashbrown::HashMap<u32, (usize, u32)>,
    /// When the filter's own tick is next due (ms): the VM ticks more often,
    /// to flush metrics.
    tick_due_ms: u64,
    /// The live configuration source (`config_source`), for a module on its
    /// own (the suite's root runs one for all its concerns).
    live: Option<crate::live_host::LiveHost>,
}

impl<F: HttpFilter> Root<F> {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            compiled: None,
            worker: Rc::new(Worker {
                rng: RefCell::new(Rng::from_seed(seed())),
                parked: RefCell::new(Vec::new()),
                serves: std::cell::Cell::new(false),
            }),
            callouts: hashbrown::HashMap::new(),
            tick_due_ms: 0,
            live: None,
        }
    }

    /// Answers every held request as if its wait had expired, with the
    /// settings it was held under: a new configuration may move tenants to
    /// other slots.
    fn release_held(&mut self, compiled: &Compiled<F>) {
        if !F::MAKES_CALLOUTS {
            return; // nothing is ever held
        }
        if let Ok(mut parked) = self.worker.parked.try_borrow_mut() {
            parked.iter_mut().for_each(|p| p.deadline_ms = 0);
        }
        self.expire_parked(compiled);
        self.callouts.clear();
    }

    /// Swaps in a new profile between requests (live configuration): the
    /// requests in flight finish on the settings they started with.
    pub fn reconfigure(&mut self, config: &str) {
        let old = self.compiled.clone();
        match self.configure(config.as_bytes()) {
            Ok(()) => {
                let moved = match (&old, &self.compiled) {
                    (Some(o), Some(n)) => o.profile.tenant_names() != n.profile.tenant_names(),
                    _ => false,
                };
                if let (true, Some(old)) = (moved, old) {
                    self.release_held(&old);
                }
            }
            Err(errors) => log::error!(
                "[{}] live profile refused ({} problems), keeping the current one:\n{errors}",
                F::NAME,
                errors.len()
            ),
        }
    }

    /// The compiled profile's `config_source`, if any.
    fn source_settings(&self) -> Option<&crate::live::SourceSettings> {
        self.compiled.as_ref()?.profile.config_source.as_ref()
    }

    /// Validates a profile with this filter's compile code, changing nothing.
    pub fn validate(config: &str) -> Result<(), crate::errors::ConfigErrors> {
        compile::<F>(config.as_bytes()).map(|_| ())
    }

    /// Answers held requests whose deadline passed.
    fn expire_parked(&self, compiled: &Compiled<F>) {
        let now = EnvoyEnv.now_ms();
        let expired: Vec<Parked> = match self.worker.parked.try_borrow_mut() {
            Ok(mut parked) => {
                let (expired, kept) = parked.drain(..).partition(|p| p.deadline_ms <= now);
                *parked = kept;
                expired
            }
            Err(_) => return,
        };
        for p in expired {
            if hostcalls::set_effective_context(p.context_id).is_err() {
                continue; // the request is gone
            }
            if let Some(settings) = compiled.profile.settings(p.slot) {
                let decision = F::on_park_expired(settings, p.tag);
                finish_other::<F>(compiled, p.slot, &decision, p.context_id);
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

/// Reads the answer of the callout being delivered.
pub(crate) fn callout_response(num_headers: usize, body_size: usize) -> Option<CalloutResponse> {
    if num_headers == 0 {
        return None; // Envoy's signal for a failed call (timeout, reset, no host)
    }
    let headers = Headers::from_serialized(
        hostcalls::get_map_serialized(MapType::HttpCallResponseHeaders).ok()?,
    );
    let status = headers.get(":status")?.parse().ok()?;
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    Some(CalloutResponse {
        status,
        headers,
        body,
    })
}

/// Reads the answer of the gRPC callout being delivered: its gRPC status
/// and, when OK, the response message.
pub(crate) fn grpc_callout_response(status_code: u32, response_size: usize) -> CalloutResponse {
    let body = if status_code == 0 {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    CalloutResponse {
        status: status_code,
        headers: Headers::default(),
        body,
    }
}

fn dispatch(callout: &Callout<'_>) -> Option<u32> {
    if let Some(grpc) = &callout.grpc {
        return match hostcalls::dispatch_grpc_call(
            callout.cluster,
            grpc.service,
            grpc.method,
            Vec::new(),
            Some(&grpc.message),
            std::time::Duration::from_millis(callout.timeout_ms),
        ) {
            Ok(token) => Some(token),
            Err(status) => {
                log::warn!(
                    "gRPC callout {}/{} failed to start: {status:?}",
                    grpc.service,
                    grpc.method
                );
                None
            }
        };
    }
    let headers: Vec<(&str, &str)> = callout
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    match hostcalls::dispatch_http_call(
        callout.cluster,
        headers,
        None,
        Vec::new(),
        std::time::Duration::from_millis(callout.timeout_ms),
    ) {
        Ok(token) => Some(token),
        Err(status) => {
            log::warn!(
                "callout to cluster {} failed to start: {status:?}",
                callout.cluster
            );
            None
        }
    }
}

/// Applies a decision to a request that is not the current callback's own
/// (the effective context was switched to it): reply, or edit and resume.
/// Such a request cannot start callouts of its own; asking to is answered
/// as an expired wait. Resuming goes through `chain::resume`, so in the
/// suite module the concerns after this one run before the request moves on.
fn finish_other<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    decision: &Decision<'_>,
    context_id: u32,
) {
    if decision.callout.is_some() || decision.park.is_some() {
        if let Some(settings) = compiled.profile.settings(slot) {
            let tag = decision
                .callout
                .as_ref()
                .map(|c| c.tag)
                .or(decision.park.map(|p| p.tag))
                .unwrap_or(0);
            let expired = F::on_park_expired(settings, tag);
            if expired.callout.is_none() && expired.park.is_none() {
                finish_other::<F>(compiled, slot, &expired, context_id);
                return;
            }
        }
        send_unavailable(F::NAME);
        return;
    }
    if act::<F>(compiled, slot, decision, None) {
        return;
    }
    apply(MapType::HttpRequestHeaders, &decision.request);
    apply_tenant_header(compiled, slot, &decision.tenant_header, context_id);
    resume_request(context_id);
}

fn apply_tenant_header<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    what: &TenantWrite,
    context_id: u32,
) {
    if let TenantWrite::Claimed(t) = what {
        hand_claimed_tenant(context_id, t);
    }
    let Some(h) = compiled.profile.tenancy.header() else {
        return;
    };
    let value = match what {
        TenantWrite::Unchanged => return,
        TenantWrite::Resolved => Some(compiled.profile.tenant_name(slot)),
        TenantWrite::Claimed(t) => Some(t.as_str()),
        TenantWrite::Removed => None,
    };
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &h.name, value);
    match value {
        Some(v) => shared_headers::edit(&HeaderOp::Set(h.name.as_str().into(), v.into())),
        None => shared_headers::edit(&HeaderOp::Remove(h.name.as_str().into())),
    }
}

/// A verified token claimed the request's tenant (jwt_auth): every filter
/// after this one acts for it, whatever the host said. Carried where the
/// owned headers' handoff is (filter state, which a client cannot set),
/// and in the suite module in memory.
fn hand_claimed_tenant(context_id: u32, tenant: &str) {
    shared_headers::set_claimed(context_id, tenant);
    let mark = hostcalls::get_property(vec![FIRST_FILTER_KEY])
        .ok()
        .flatten()
        .map(|m| String::from_utf8_lossy(&m).into_owned());
    let value = crate::request::with_claimed_tenant(mark.as_deref(), tenant);
    let _ = hostcalls::set_property(vec![FIRST_FILTER_KEY], Some(value.as_bytes()));
}

/// The suite module's one read of a request's headers, shared by its
/// concerns (feature `suite`; a module of one filter reads for itself).
#[cfg(feature = "suite")]
pub mod shared_headers;

#[cfg(not(feature = "suite"))]
mod shared_headers {
    use super::*;

    pub(super) fn path(
        _context_id: u32,
        _raw: &str,
    ) -> Option<Rc<Result<crate::path::RequestPath, crate::path::Invalid>>> {
        None
    }

    pub(super) fn first_done(_context_id: u32) -> Option<bool> {
        None
    }

    pub(super) fn set_first_done(_context_id: u32) {}

    pub(super) fn set_claimed(_context_id: u32, _tenant: &str) {}

    pub(super) fn claimed(_context_id: u32) -> Option<String> {
        None
    }

    pub(super) fn get(_context_id: u32) -> Option<Rc<Headers>> {
        None
    }

    pub(super) fn edit(_op: &HeaderOp<'_>) {}

    pub(super) fn response(_context_id: u32) -> Option<Rc<Headers>> {
        None
    }

    pub(super) fn edit_response(_op: &HeaderOp<'_>) {}

    pub(super) fn now_ms(read: impl FnOnce() -> u64) -> u64 {
        read()
    }

    pub(super) fn forget_properties() {}

    pub(super) fn property(
        _path: &[&str],
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        read()
    }
}

/// Lets a held request go on: in the suite module through the concerns
/// after the one that held it (`chain::resume`), else to Envoy's next filter.
fn resume_request(context_id: u32) {
    #[cfg(feature = "suite")]
    crate::chain::resume(context_id);
    #[cfg(not(feature = "suite"))]
    {
        let _ = context_id;
        let _ = hostcalls::resume_http_request();
    }
}

/// Runs `decide` with a request context for the effective context's
/// request (its headers read afresh); `None` when they cannot be read.
fn with_request<F: HttpFilter, R>(
    compiled: &Compiled<F>,
    worker: &Worker,
    slot: usize,
    decide: impl FnOnce(&mut RequestCtx<'_>) -> R,
) -> Option<R> {
    let map = hostcalls::get_map_serialized(MapType::HttpRequestHeaders).ok()?;
    let headers = Headers::from_serialized(map);
    // The request was judged when it arrived; its path has not changed.
    let raw_path = headers.get(":path").unwrap_or("/");
    let mut path = crate::path::RequestPath::read(raw_path).unwrap_or_default();
    let _ = path.allow(
        raw_path,
        compiled.profile.request_policy(slot).allowed_forms,
    );
    let mut rng = worker.rng.try_borrow_mut().ok()?;
    let tenant_header = compiled
        .profile
        .tenancy
        .header()
        .and_then(|h| headers.get(&h.name));
    let (_, tenant_source) =
        compiled
            .profile
            .resolve(headers.get(":authority"), &path, tenant_header);
    let mut source = SourceAddress::lazy(source_address);
    let mut ctx = RequestCtx {
        tenant: Tenant {
            slot,
            name: compiled.profile.tenant_name(slot),
            source: tenant_source,
        },
        tenants: compiled.profile.tenant_names(),
        headers: &headers,
        path: &path,
        policy: compiled.profile.request_policy(slot),
        rng: &mut rng,
        source: &mut source,
        env: &EnvoyEnv,
    };
    Some(decide(&mut ctx))
}

/// Decides again every request held for (`slot`, `tag`), each in its own
/// context, then restores `own_context`.
fn wake_parked<F: HttpFilter>(
    compiled: &Compiled<F>,
    worker: &Worker,
    slot: usize,
    tag: u32,
    own_context: u32,
) {
    let waiting: Vec<Parked> = match worker.parked.try_borrow_mut() {
        Ok(mut parked) => {
            let (waiting, kept) = parked
                .drain(..)
                .partition(|p| p.slot == slot && p.tag == tag);
            *parked = kept;
            waiting
        }
        Err(_) => return,
    };
    let Some(settings) = compiled.profile.settings(slot) else {
        return;
    };
    for p in waiting {
        if hostcalls::set_effective_context(p.context_id).is_err() {
            continue;
        }
        let mut state = F::Stream::default();
        let Some(decision) = with_request(compiled, worker, slot, |ctx| {
            F::on_request(settings, ctx, &mut state)
        }) else {
            continue;
        };
        finish_other::<F>(compiled, slot, &decision, p.context_id);
    }
    let _ = hostcalls::set_effective_context(own_context);
}

impl<F: HttpFilter> Context for Root<F> {
    /// The plugin is going away (a new configuration, or Envoy stopping):
    /// its counts must not.
    fn on_done(&mut self) -> bool {
        flush_metrics();
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.worker.serves.get() {
            test_panic::at("http_call_response");
        }
        if let Some(live) = self.live.as_mut().filter(|l| l.owns(token_id)) {
            let response = callout_response(num_headers, body_size);
            if let Some(profile) = live.answer(response.as_ref(), &Self::validate) {
                self.reconfigure(&profile);
            }
            return;
        }
        if !F::MAKES_CALLOUTS {
            return;
        }
        let Some((slot, tag)) = self.callouts.remove(&token_id) else {
            return;
        };
        let Some(compiled) = self.compiled.clone() else {
            return;
        };
        let response = callout_response(num_headers, body_size);
        if let Some(settings) = compiled.profile.settings(slot) {
            let outcomes = F::on_callout_done(settings, tag, response.as_ref(), &EnvoyEnv);
            count(&compiled, slot, outcomes);
        }
        wake_parked::<F>(&compiled, &self.worker, slot, tag, self.context_id);
    }

    /// A message of the live configuration's etcd watch.
    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        crate::live_host::watch_message(self.live.as_mut(), token_id, message_size);
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        crate::live_host::watch_closed(self.live.as_mut(), token_id, status_code);
    }
}

impl<F: HttpFilter> Root<F> {
    /// Compiles the profile for this filter and defines its metrics.
    pub fn configure(&mut self, config: &[u8]) -> Result<(), crate::errors::ConfigErrors> {
        let profile = compile::<F>(config)?;
        let status = profile
            .config_source
            .as_ref()
            .map(|s| crate::live_host::StatusEndpoint::new(LIVE_MODULE.unwrap_or(F::NAME), s));
        let tenant_outcomes: Vec<Vec<String>> = (0..profile.tenant_names().len())
            .map(|slot| {
                profile
                    .settings(slot)
                    .map(F::tenant_outcomes)
                    .unwrap_or_default()
            })
            .collect();
        let counters = define_counters::<F>(&profile, &tenant_outcomes);
        let extra_metrics = define_extra_metrics::<F>(&profile);
        let request_counters = define_request_counters(&profile);
        let reads_owned = (0..profile.tenant_names().len())
            .any(|slot| !profile.request_policy(slot).owned_headers.is_empty());
        // One rule for the suite and the separate modules: a concern runs
        // only where the profile has its section (in `defaults` or for a
        // tenant). Without one, a module still checks paths and strips
        // owned headers.
        let active = crate::profile::sections_present(config)
            .is_some_and(|p| p.iter().any(|s| s == F::NAME));
        if !active {
            log::warn!(
                "[{}] the profile has no {} section: the filter only checks paths and strips owned headers",
                F::NAME,
                F::NAME
            );
        }
        log::info!(
            "[{}] configured {} tenants",
            F::NAME,
            profile.tenant_names().len().saturating_sub(1)
        );
        let compiled = Rc::new(Compiled {
            profile,
            counters,
            extra_metrics,
            tenant_outcomes,
            reads_owned,
            request_counters,
            active,
            log_key: format!("meshware.{}", F::NAME),
            status,
        });
        register_state(compiled.clone());
        self.compiled = Some(compiled);
        Ok(())
    }

    /// How often `on_tick` must run (0: never). Test builds tick for every
    /// filter, so a tick panic can be armed.
    pub fn tick_period_ms() -> u32 {
        if cfg!(feature = "test-panic") && F::TICK_PERIOD_MS == 0 {
            200
        } else {
            F::TICK_PERIOD_MS
        }
    }
}

/// The plugin configuration Envoy passed to `on_configure`.
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Follows Envoy's wasm log level, so debug lines are not even formatted on
/// the request path unless an operator asked for them.
pub fn follow_log_level() {
    // The native build's logger follows Envoy's level from the start.
    #[cfg(not(feature = "native"))]
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

impl<F: HttpFilter> RootContext for Root<F> {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_log_level();
        let config = plugin_configuration();
        match self.configure(&config) {
            Ok(()) => {
                // A filter without its section has no background work: the
                // VM ticks only to flush metrics.
                let active = self.compiled.as_ref().is_some_and(|c| c.active);
                let own = if active { Self::tick_period_ms() } else { 0 };
                let mut period = vm_tick_period_ms(u64::from(own));
                self.live = self
                    .source_settings()
                    .map(|s| crate::live_host::LiveHost::new(F::NAME, s, seed()));
                if let Some(live) = self.live.as_mut() {
                    period = period.min(live.poll_ms());
                    // A reloaded VM starts on the latest accepted revision.
                    if let Some(profile) = live.adopt() {
                        self.reconfigure(&profile);
                    }
                }
                hostcalls::set_tick_period(std::time::Duration::from_millis(period)).ok();
                true
            }
            Err(errors) => {
                log::error!(
                    "[{}] invalid profile ({} problems):\n{errors}",
                    F::NAME,
                    errors.len()
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        flush_metrics();
        if let Some(live) = self.live.as_mut() {
            let adopted = live.adopt();
            live.tick();
            if let Some(profile) = adopted {
                self.reconfigure(&profile);
            }
        }
        let period = u64::from(Self::tick_period_ms());
        if period == 0 {
            return;
        }
        if tick_due(EnvoyEnv.now_ms(), &mut self.tick_due_ms, period) {
            self.filter_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        hostcalls::timed(F::NAME, "create", || {
            Some(Box::new(self.stream(context_id)) as _)
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl<F: HttpFilter> Root<F> {
    /// The filter's background work: its own tick per tenant, background
    /// callouts, expired parked requests.
    fn filter_tick(&mut self) {
        // Armed tick panics hit a worker's VM (the main thread's ticks too).
        if self.worker.serves.get() {
            test_panic::at("tick");
        }
        let Some(compiled) = self.compiled.clone() else {
            return;
        };
        for (slot, tenant) in compiled.profile.tenant_names().iter().enumerate() {
            if let Some(settings) = compiled.profile.settings(slot) {
                if F::enabled(settings) {
                    let outcomes = F::on_tick(settings, tenant, &EnvoyEnv);
                    count(&compiled, slot, outcomes);
                    if !F::MAKES_CALLOUTS {
                        continue;
                    }
                    for callout in F::background_callouts(settings, &EnvoyEnv) {
                        match dispatch(&callout) {
                            Some(token) => {
                                self.callouts.insert(token, (slot, callout.tag));
                            }
                            None => {
                                let outcomes =
                                    F::on_callout_done(settings, callout.tag, None, &EnvoyEnv);
                                count(&compiled, slot, outcomes);
                            }
                        }
                    }
                }
            }
        }
        let has_parked = F::MAKES_CALLOUTS
            && self
                .worker
                .parked
                .try_borrow()
                .map(|p| !p.is_empty())
                .unwrap_or(false);
        if has_parked {
            self.expire_parked(&compiled);
        }
    }
}

impl<F: HttpFilter> Root<F> {
    fn stream(&self, context_id: u32) -> Stream<F> {
        self.worker.serves.set(true);
        Stream::<F> {
            context_id,
            compiled: self.compiled.clone(),
            worker: self.worker.clone(),
            held: None,
            deadline: false,
            active_slot: None,
            request_id: None,
            waiting_for_body: None,
            waiting_grpc: false,
            grpc: None,
            body_buffered: 0,
            #[cfg(feature = "suite")]
            log_record: LogRecord::default(),
            state: F::Stream::default(),
            _filter: PhantomData,
        }
    }
}

/// One filter's root inside the suite module (`crate::chain`): configured,
/// ticked and asked for streams by the suite's own root.
pub trait RootStage {
    fn name(&self) -> &'static str;
    fn configure(&mut self, config: &[u8]) -> Result<(), crate::errors::ConfigErrors>;
    fn tick_period_ms(&self) -> u32;
    fn tick(&mut self);
    /// A background callout's answer (ignored unless this stage started it).
    fn call_response(&mut self, token: u32, num_headers: usize, body_size: usize);
    fn stage(&self, context_id: u32) -> Box<dyn Stage>;
    /// Checks a profile with this concern's compile code, changing nothing.
    fn validate(&self, config: &str) -> Result<(), crate::errors::ConfigErrors>;
    /// Swaps in a new (validated) profile between requests.
    fn reconfigure(&mut self, config: &str);
    /// Answers every held request (the stage is going away).
    fn release(&mut self);
    /// The compiled profile's `config_source`, if any.
    fn source_settings(&self) -> Option<&crate::live::SourceSettings>;
}

impl<F: HttpFilter> RootStage for Root<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn configure(&mut self, config: &[u8]) -> Result<(), crate::errors::ConfigErrors> {
        Root::configure(self, config)
    }
    fn tick_period_ms(&self) -> u32 {
        Self::tick_period_ms()
    }
    fn tick(&mut self) {
        self.filter_tick();
    }
    fn call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        Context::on_http_call_response(self, token, num_headers, body_size, 0);
    }
    fn stage(&self, context_id: u32) -> Box<dyn Stage> {
        Box::new(self.stream(context_id))
    }
    fn validate(&self, config: &str) -> Result<(), crate::errors::ConfigErrors> {
        Self::validate(config)
    }
    fn reconfigure(&mut self, config: &str) {
        Root::reconfigure(self, config);
    }
    fn release(&mut self) {
        if let Some(compiled) = self.compiled.clone() {
            self.release_held(&compiled);
        }
    }
    fn source_settings(&self) -> Option<&crate::live::SourceSettings> {
        Root::source_settings(self)
    }
}

/// One filter's stream inside the suite module: the HTTP callbacks, each
/// returning what the filter alone would return to Envoy.
pub trait Stage {
    fn request_headers(&mut self, end_of_stream: bool) -> Action;
    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action;
    fn request_trailers(&mut self) -> Action;
    fn response_headers(&mut self, end_of_stream: bool) -> Action;
    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action;
    fn response_trailers(&mut self) -> Action;
    /// Whether the request is a gRPC call, when known.
    fn grpc(&self) -> Option<bool>;
    fn log(&mut self);
    /// A callout's answer: `None` when this stage did not start it;
    /// `Some(true)` when the request may go on (the caller resumes it).
    fn call_response(&mut self, token: u32, num_headers: usize, body_size: usize) -> Option<bool>;
    /// A gRPC callout's answer, likewise.
    fn grpc_response(&mut self, token: u32, status_code: u32, size: usize) -> Option<bool>;
    /// Whether the stage holds the request until its body is complete.
    fn waiting_for_body(&self) -> bool;
    /// Whether a decision of this request recorded log field `field` as
    /// `value` (kept for the log phase).
    fn records(&self, field: &str, value: &str) -> bool;
    /// The request this stage held was decided from another context
    /// (`wake_parked`) and goes on.
    fn release(&mut self);
}

/// Exports a filter type as a proxy-wasm module:
/// `meshware_common::export_filter!(TraceContext);` in the filter's `lib.rs`.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        proxy_wasm::main! {{
            $crate::host::init(<$filter as $crate::HttpFilter>::NAME);
            proxy_wasm::set_root_context(|context_id| {
                Box::new($crate::host::Root::<$filter>::new(context_id))
            });
        }}
    };
}
