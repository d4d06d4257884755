//! The host adapter: the only code that talks to Envoy through proxy-wasm.
//! It reads the plugin configuration once, resolves the tenant, reads request
//! headers once, calls the filter's pure core and applies its decision.
//!
//! SDK helpers that panic on unexpected input (non-UTF-8 header values) are
//! avoided: headers are read as bytes and hostcall errors degrade to "continue".

use crate::decision::{Decision, HeaderEdits, HeaderOp, Outcomes};
use crate::filter::{compile, log_line, HttpFilter, RequestCtx, Tenant};
use crate::headers::Headers;
use crate::metrics::decision_metric;
use crate::net::{parse_source_address, SourceAddress};
use crate::profile::Profile;
use crate::rng::Rng;
use crate::store::{HostEnv, SetError, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

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
fn seed() -> u64 {
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
    /// Per slot: the tenant outcome labels, for log lines.
    tenant_outcomes: Vec<Vec<String>>,
    /// The tenant header to strip from requests when the profile does not trust it.
    strip_header: Option<String>,
}

pub struct Root<F: HttpFilter> {
    compiled: Option<Rc<Compiled<F>>>,
    rng: Rc<RefCell<Rng>>,
}

impl<F: HttpFilter> Default for Root<F> {
    fn default() -> Self {
        Root {
            compiled: None,
            rng: Rc::new(RefCell::new(Rng::from_seed(seed()))),
        }
    }
}

impl<F: HttpFilter> Context for Root<F> {}

impl<F: HttpFilter> RootContext for Root<F> {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Follow Envoy's wasm log level, so debug lines are not even formatted
        // on the request path unless an operator asked for them.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match compile::<F>(&config) {
            Ok(profile) => {
                let tenant_outcomes: Vec<Vec<String>> = (0..profile.tenant_names().len())
                    .map(|slot| {
                        profile
                            .settings(slot)
                            .map(F::tenant_outcomes)
                            .unwrap_or_default()
                    })
                    .collect();
                let counters = define_counters::<F>(&profile, &tenant_outcomes);
                let strip_header = match profile.tenancy.header() {
                    Some(h) if !h.trusted && F::STRIP_UNTRUSTED_TENANT_HEADER => {
                        Some(h.name.clone())
                    }
                    _ => None,
                };
                log::info!(
                    "[{}] configured {} tenants",
                    F::NAME,
                    profile.tenant_names().len().saturating_sub(1)
                );
                if F::TICK_PERIOD_MS > 0 {
                    hostcalls::set_tick_period(std::time::Duration::from_millis(u64::from(
                        F::TICK_PERIOD_MS,
                    )))
                    .ok();
                }
                self.compiled = Some(Rc::new(Compiled {
                    profile,
                    counters,
                    tenant_outcomes,
                    strip_header,
                }));
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
        let Some(compiled) = &self.compiled else {
            return;
        };
        for (slot, tenant) in compiled.profile.tenant_names().iter().enumerate() {
            if let Some(settings) = compiled.profile.settings(slot) {
                if F::enabled(settings) {
                    let outcomes = F::on_tick(settings, tenant, &EnvoyEnv);
                    count(compiled, slot, outcomes);
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream::<F> {
            compiled: self.compiled.clone(),
            rng: self.rng.clone(),
            active_slot: None,
            request_id: None,
            waiting_for_body: None,
            state: F::Stream::default(),
            _filter: PhantomData,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn define_counters<F: HttpFilter>(
    profile: &Profile<F::Settings>,
    tenant_outcomes: &[Vec<String>],
) -> Vec<Vec<Option<u32>>> {
    let mut all = Vec::with_capacity(profile.tenant_names().len());
    for (slot, tenant) in profile.tenant_names().iter().enumerate() {
        let dynamic = tenant_outcomes.get(slot).map(Vec::as_slice).unwrap_or(&[]);
        let outcomes = F::OUTCOMES
            .iter()
            .copied()
            .chain(dynamic.iter().map(String::as_str));
        let mut ids = Vec::with_capacity(F::OUTCOMES.len() + dynamic.len());
        for outcome in outcomes {
            let name = decision_metric(F::NAME, tenant, outcome);
            let id = hostcalls::define_metric(MetricType::Counter, &name);
            if id.is_err() {
                log::warn!("[{}] could not define metric {name}", F::NAME);
            }
            ids.push(id.ok());
        }
        all.push(ids);
    }
    all
}

fn count<F: HttpFilter>(compiled: &Compiled<F>, slot: usize, outcomes: Outcomes) {
    let counters = compiled
        .counters
        .get(slot)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for outcome in outcomes.iter() {
        if let Some(Some(id)) = counters.get(outcome) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

pub struct Stream<F: HttpFilter> {
    compiled: Option<Rc<Compiled<F>>>,
    rng: Rc<RefCell<Rng>>,
    /// The tenant slot when the filter acted on the request phase.
    active_slot: Option<usize>,
    /// For log lines of later phases.
    request_id: Option<String>,
    /// Holding the request for its body, up to this many bytes.
    waiting_for_body: Option<usize>,
    state: F::Stream,
    _filter: PhantomData<F>,
}

impl<F: HttpFilter> Context for Stream<F> {}

fn apply(map: MapType, edits: &HeaderEdits<'_>) {
    for op in &edits.ops {
        let result = match op {
            HeaderOp::Set(name, value) => hostcalls::set_map_value(map, name, Some(value)),
            HeaderOp::Append(name, value) => hostcalls::add_map_value(map, name, value),
            HeaderOp::Remove(name) => hostcalls::remove_map_value(map, name),
        };
        if result.is_err() {
            log::warn!("header edit failed: {op:?}");
        }
    }
    if edits.clear_route_cache
        && hostcalls::call_foreign_function("clear_route_cache", None).is_err()
    {
        log::warn!("clear_route_cache is not available on this host");
    }
}

/// Envoy's clock and shared data (one key-value map per VM id, shared by
/// every worker thread, with CAS).
pub struct EnvoyEnv;

impl SharedStore for EnvoyEnv {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            Ok((Some(value), None)) => Some((value, 0)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

impl HostEnv for EnvoyEnv {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Envoy's downstream address as the listener saw it (after
/// `use_remote_address`/original-src handling, never a client header).
fn source_address() -> Option<std::net::IpAddr> {
    let bytes = hostcalls::get_property(vec!["source", "address"]).ok()??;
    parse_source_address(std::str::from_utf8(&bytes).ok()?)
}

impl<F: HttpFilter> Stream<F> {
    /// Counts a decision's outcomes, logs it and sends its local reply.
    /// Returns true when a reply was sent (the stream must pause).
    fn act(&self, compiled: &Compiled<F>, slot: usize, decision: &Decision<'_>) -> bool {
        let counters = compiled
            .counters
            .get(slot)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for outcome in decision.outcomes.iter() {
            if let Some(Some(id)) = counters.get(outcome) {
                let _ = hostcalls::increment_metric(*id, 1);
            }
        }
        let tenant = compiled.profile.tenant_name(slot);
        let request_id = self.request_id.as_deref();
        if log::log_enabled!(log::Level::Debug) && decision.outcomes != Outcomes::default() {
            let dynamic = compiled.tenant_outcomes.get(slot);
            let outcomes: Vec<&str> = decision
                .outcomes
                .iter()
                .filter_map(|i| match F::OUTCOMES.get(i) {
                    Some(name) => Some(*name),
                    None => dynamic
                        .and_then(|d| d.get(i - F::OUTCOMES.len()))
                        .map(String::as_str),
                })
                .collect();
            let message = format!("outcome={}", outcomes.join(","));
            log::debug!("{}", log_line(F::NAME, tenant, request_id, &message));
        }
        let Some(reply) = &decision.reply else {
            return false;
        };
        let reply_headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(
                reply
                    .owned_headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
        let message = format!("local reply {}", reply.status);
        log::debug!("{}", log_line(F::NAME, tenant, request_id, &message));
        hostcalls::send_http_response(reply.status, reply_headers, Some(&reply.body)).is_ok()
    }
}

impl<F: HttpFilter> Stream<F> {
    /// A chunk of a request held for its body: buffer (Envoy keeps the
    /// chunks while we pause) until the end or the limit, then decide.
    fn held_body(&mut self, body_size: usize, end_of_stream: bool, limit: usize) -> Action {
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let decision = if body_size > limit {
            F::on_request_body_complete(settings, &mut self.state, None, &EnvoyEnv)
        } else if end_of_stream {
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            F::on_request_body_complete(settings, &mut self.state, Some(&body), &EnvoyEnv)
        } else {
            return Action::Pause;
        };
        self.waiting_for_body = None;
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        apply(MapType::HttpRequestHeaders, &decision.request);
        Action::Continue
    }
}

impl<F: HttpFilter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(compiled) = self.compiled.clone() else {
            return Action::Continue;
        };
        let Ok(pairs) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return Action::Continue;
        };
        let headers = Headers::from_bytes(pairs);
        let profile = &compiled.profile;
        let header_value = profile.tenancy.header().and_then(|h| headers.get(&h.name));
        let (slot, _source) = profile.resolve(
            headers.get(":authority"),
            headers.get(":path"),
            header_value,
        );
        if let Some(name) = &compiled.strip_header {
            if headers.contains(name) {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
            }
        }
        let Some(settings) = profile.settings(slot) else {
            return Action::Continue;
        };
        if !F::enabled(settings) {
            return Action::Continue;
        }
        let Ok(mut rng) = self.rng.try_borrow_mut() else {
            return Action::Continue;
        };
        let tenant = Tenant {
            slot,
            name: profile.tenant_name(slot),
        };
        let mut source = SourceAddress::lazy(source_address);
        let mut ctx = RequestCtx {
            tenant,
            headers: &headers,
            rng: &mut rng,
            source: &mut source,
            env: &EnvoyEnv,
        };
        let decision = F::on_request(settings, &mut ctx, &mut self.state);
        drop(rng);
        self.active_slot = Some(slot);
        // Kept for log lines of this and later phases; copied only when
        // debug lines are written at all (the level follows Envoy's).
        if log::log_enabled!(log::Level::Debug) {
            self.request_id = decision
                .request
                .value_of("x-request-id")
                .or_else(|| headers.get("x-request-id"))
                .map(str::to_string);
        }
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        apply(MapType::HttpRequestHeaders, &decision.request);
        if decision.set_tenant_header {
            if let Some(h) = profile.tenancy.header() {
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    &h.name,
                    Some(tenant.name),
                );
            }
        }
        if let Some(limit) = decision.wait_for_body {
            if !end_of_stream {
                self.waiting_for_body = Some(limit);
                return Action::Pause;
            }
            // No body: decide now.
            let decision =
                F::on_request_body_complete(settings, &mut self.state, Some(&[]), &EnvoyEnv);
            if self.act(&compiled, slot, &decision) {
                return Action::Pause;
            }
            apply(MapType::HttpRequestHeaders, &decision.request);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(limit) = self.waiting_for_body {
            return self.held_body(body_size, end_of_stream, limit);
        }
        if !F::READS_REQUEST_BODY {
            return Action::Continue;
        }
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let decision = F::on_request_body(settings, &mut self.state, body_size, end_of_stream);
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if !F::OBSERVES_COMPLETION {
            return;
        }
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return;
        };
        let outcomes = F::on_complete(settings, &mut self.state, &EnvoyEnv);
        let decision = Decision {
            outcomes,
            ..Decision::default()
        };
        self.act(&compiled, slot, &decision);
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let headers = if F::READS_RESPONSE_HEADERS {
            match hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
                Ok(pairs) => Headers::from_bytes(pairs),
                Err(_) => return Action::Continue,
            }
        } else {
            Headers::default()
        };
        let edits = F::on_response(settings, &headers, &mut self.state);
        apply(MapType::HttpResponseHeaders, &edits);
        if F::READS_RESPONSE_BODY && end_of_stream {
            let outcomes = F::on_response_body(settings, &mut self.state, &[], true, &EnvoyEnv);
            count(&compiled, slot, outcomes);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !F::READS_RESPONSE_BODY {
            return Action::Continue;
        }
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let outcomes =
            F::on_response_body(settings, &mut self.state, &chunk, end_of_stream, &EnvoyEnv);
        count(&compiled, slot, outcomes);
        Action::Continue
    }
}

/// Exports a filter type as a proxy-wasm module:
/// `meshware_common::export_filter!(TraceContext);` in the filter's `lib.rs`.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        proxy_wasm::main! {{
            $crate::host::init(<$filter as $crate::HttpFilter>::NAME);
            proxy_wasm::set_root_context(|_| {
                Box::new($crate::host::Root::<$filter>::default())
            });
        }}
    };
}
