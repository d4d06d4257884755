//! The contract between a filter's pure core and the common host adapter.

use crate::decision::{Decision, HeaderEdits};
use crate::headers::Headers;
use crate::net::SourceAddress;
use crate::rng::Rng;
use crate::section::SectionReader;
use crate::store::HostEnv;

/// What the core knows about the request's tenant.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub slot: usize,
    pub name: &'a str,
    /// What chose it: a claim in a token may name another tenant only
    /// where nothing but the default (or a trusted header) did.
    pub source: crate::tenancy::Source,
}

/// Everything a core may read for one request; read from the host once.
pub struct RequestCtx<'a> {
    pub tenant: Tenant<'a>,
    /// Every configured tenant name (for identity claims naming a tenant).
    pub tenants: &'a [String],
    pub headers: &'a Headers,
    pub rng: &'a mut Rng,
    /// The request's path as every filter judges it (`crate::path`): match
    /// rules on its readings, never on the raw `:path`.
    pub path: &'a crate::path::RequestPath,
    /// The tenant's request policy (`request` section).
    pub policy: &'a crate::request::RequestPolicy,
    /// Envoy's trusted downstream address, read on first use.
    pub source: &'a mut SourceAddress,
    /// Clock and shared data (cross-worker state).
    pub env: &'a dyn HostEnv,
}

/// One filter of the suite. Implemented by each filter's core; the host adapter
/// (common `host` module) drives it inside Envoy, tests drive it natively.
pub trait HttpFilter: 'static {
    /// Section name in the profile and `filter` metric label, e.g. `trace_context`.
    const NAME: &'static str;
    /// Outcome labels counted per tenant; `Decision::outcomes` indexes this list.
    const OUTCOMES: &'static [&'static str];
    /// One tenant's compiled settings.
    type Settings: 'static;
    /// Per-request state carried from the request to the response phase.
    type Stream: Default + 'static;
    /// Whether `on_complete` is called at the end of every acted-on stream.
    const OBSERVES_COMPLETION: bool = false;
    /// Period of `on_tick` in milliseconds; 0 = no tick.
    const TICK_PERIOD_MS: u32 = 0;
    /// Whether the filter uses callouts or parked requests at all (the
    /// adapter's callout code is compiled out of other filters).
    const MAKES_CALLOUTS: bool = false;
    /// Whether the filter judges the upstream call (routing, circuits,
    /// faults), so it passes a request idempotency sends to its replay
    /// route untouched: no upstream answers it. Such a filter must read the
    /// whole request header map (`REQUEST_HEADERS: None`).
    const PASSES_REPLAYS: bool = false;
    /// Whether `on_request_body` is called for request body chunks.
    const READS_REQUEST_BODY: bool = false;
    /// Whether the filter holds requests for their whole body
    /// (`Decision::wait_for_body`, idempotency). Elsewhere the adapter's
    /// body hold is compiled out and `wait_for_body` is ignored.
    const HOLDS_REQUEST_BODY: bool = false;
    /// Whether `on_response` needs the response headers (reading costs a hostcall).
    const READS_RESPONSE_HEADERS: bool = false;
    /// The request headers the core reads besides `:authority`, `:path` and
    /// the profile's tenant header, which the adapter always reads: then
    /// only these are read, one hostcall each (first value only). `None`
    /// reads the whole header map (every value, one serialization).
    const REQUEST_HEADERS: Option<&'static [&'static str]> = None;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings;

    /// Outcome labels that depend on a tenant's settings (canary versions),
    /// counted after `OUTCOMES`: `Decision::outcomes` index `OUTCOMES.len() + i`.
    fn tenant_outcomes(_settings: &Self::Settings) -> Vec<String> {
        Vec::new()
    }

    /// Metrics beyond the outcome counters (RED metrics), per tenant, with
    /// their full names; defined at configure time. `Decision::metrics` and
    /// `on_complete_metrics` update them by index.
    fn tenant_metrics(
        _settings: &Self::Settings,
        _tenant: &str,
    ) -> Vec<(crate::metrics::MetricKind, String)> {
        Vec::new()
    }

    /// Updates to `tenant_metrics` when an acted-on stream ends (with
    /// `OBSERVES_COMPLETION`), after `on_complete`.
    fn on_complete_metrics(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
        _env: &dyn HostEnv,
    ) -> crate::metrics::MetricUpdates {
        crate::metrics::MetricUpdates::default()
    }

    /// What the status endpoint of live configuration (`config_source`)
    /// reports about this filter's shared state for one tenant, as JSON:
    /// key-set ages, open circuits, bucket occupancy. Read from shared data
    /// when the endpoint is asked, never on the request path. `None`: nothing.
    fn state(_settings: &Self::Settings, _tenant: &str, _env: &dyn HostEnv) -> Option<String> {
        None
    }

    /// Whether the filter does anything for this tenant (it is skipped otherwise).
    fn enabled(settings: &Self::Settings) -> bool;

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s>;

    /// One chunk of the request body (`chunk_len` bytes; the adapter never
    /// buffers, so chunks add up to the body). A local reply aborts the stream.
    fn on_request_body<'s>(
        _settings: &'s Self::Settings,
        _stream: &mut Self::Stream,
        _chunk_len: usize,
        _end_of_stream: bool,
    ) -> Decision<'s> {
        Decision::default()
    }

    /// Called once when a stream the filter acted on ends, however it ends
    /// (complete, upstream reset, local reply, client abort): Envoy's access
    /// log phase. Returns outcomes to count.
    fn on_complete(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
        _env: &dyn HostEnv,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// The whole request body after `Decision::wait_for_body` (`None`: it
    /// was larger than the limit and was not held).
    fn on_request_body_complete<'s>(
        _settings: &'s Self::Settings,
        _stream: &mut Self::Stream,
        _body: Option<&[u8]>,
        _env: &dyn HostEnv,
    ) -> Decision<'s> {
        Decision::default()
    }

    /// A body held with `Decision::grpc_body` turned out to be a gRPC
    /// stream: it goes on unheld. Returns outcomes to count.
    fn on_request_stream(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// Whether `on_response_body` sees the response body chunks.
    const READS_RESPONSE_BODY: bool = false;

    /// Whether this stream needs the response headers and body that
    /// `READS_RESPONSE_HEADERS` / `READS_RESPONSE_BODY` declare: each read
    /// costs a host call. `on_response` then sees no headers.
    fn wants_response(_stream: &Self::Stream) -> bool {
        true
    }

    /// A response to be replaced as it passes (a replay): each body chunk
    /// becomes the returned body (empty but for the last), and the last
    /// chunk adds the returned trailers. `on_response_body` is not called
    /// for it. Only where `HostEnv::replaces_responses`.
    fn response_replacement(
        _stream: &mut Self::Stream,
        _end_of_stream: bool,
    ) -> Option<crate::decision::ResponseReplacement> {
        None
    }

    /// One response body chunk as it passes (never buffered); called once
    /// with an empty chunk and `end_of_stream` for a response without body.
    fn on_response_body(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
        _chunk: &[u8],
        _end_of_stream: bool,
        _env: &dyn HostEnv,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// The response trailers (HTTP/2; gRPC's `grpc-status`), for a filter
    /// that reads the response body (`READS_RESPONSE_BODY`, `wants_response`):
    /// a response with trailers ends here, not with its last body chunk.
    fn on_response_trailers(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
        _trailers: &Headers,
        _env: &dyn HostEnv,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// Background work per tenant (every `TICK_PERIOD_MS`, on every worker);
    /// returns outcomes to count for the tenant.
    fn on_tick(
        _settings: &Self::Settings,
        _tenant: &str,
        _env: &dyn HostEnv,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// Callouts to start on tick, per tenant (background refresh). Their
    /// answers go to `on_callout_done` only.
    fn background_callouts<'s>(
        _settings: &'s Self::Settings,
        _env: &dyn HostEnv,
    ) -> Vec<crate::decision::Callout<'s>> {
        Vec::new()
    }

    /// Every callout's answer, first, whoever started it: update what the
    /// tenant's requests share (key sets). Returns outcomes to count.
    fn on_callout_done(
        _settings: &Self::Settings,
        _tag: u32,
        _response: Option<&crate::decision::CalloutResponse>,
        _env: &dyn HostEnv,
    ) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }

    /// The answer to the callout this request started (after
    /// `on_callout_done`). By default the request is decided afresh.
    fn on_callout_response<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
        _tag: u32,
        _response: Option<&crate::decision::CalloutResponse>,
    ) -> Decision<'s> {
        Self::on_request(settings, ctx, stream)
    }

    /// A parked request whose wait outlived its deadline.
    fn on_park_expired<'s>(_settings: &'s Self::Settings, _tag: u32) -> Decision<'s> {
        Decision::default()
    }

    /// The response's headers arrived (time to first byte), before
    /// `on_response`; called for every acted-on stream, without reading them.
    fn on_response_start(
        _settings: &Self::Settings,
        _stream: &mut Self::Stream,
        _env: &dyn HostEnv,
    ) {
    }

    fn on_response<'s>(
        _settings: &'s Self::Settings,
        _headers: &Headers,
        _stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        HeaderEdits::default()
    }

    /// Outcomes known only once `on_response` has seen the answer
    /// (idempotency: whether the replay route carried a replay), counted
    /// and written to the access-log record then, in place of the request's.
    fn response_outcomes(_stream: &Self::Stream) -> crate::decision::Outcomes {
        crate::decision::Outcomes::default()
    }
}

/// Compiles a profile for one filter: the code Envoy runs in `on_configure`
/// and the CLI runs in `validate`.
pub fn compile<F: HttpFilter>(
    json: &[u8],
) -> Result<crate::profile::Profile<F::Settings>, crate::errors::ConfigErrors> {
    crate::profile::compile(json, F::NAME, F::parse)
}

/// `[trace_context tenant=acme rid=abc] message`: the prefix of every log line.
pub fn log_line(filter: &str, tenant: &str, request_id: Option<&str>, message: &str) -> String {
    // Request ids come from clients: keep only a short, safe rendering.
    let rid: String = request_id
        .unwrap_or("-")
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    format!("[{filter} tenant={tenant} rid={rid}] {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn log_lines_are_prefixed_and_sanitized() {
        assert_eq!(
            log_line("f", "acme", Some("r1"), "hi"),
            "[f tenant=acme rid=r1] hi"
        );
        assert_eq!(
            log_line("f", "acme", None, "hi"),
            "[f tenant=acme rid=-] hi"
        );
        assert_eq!(
            log_line("f", "t", Some("a b\n"), "m"),
            "[f tenant=t rid=a?b?] m"
        );
    }
}
