//! trace-context filter: keeps or starts a W3C trace for every request,
//! translating B3 and Jaeger context, and guarantees a well-formed x-request-id.
//!
//! This file is the adapter: it binds the pure core (`config`, `trace`) to the
//! common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod trace;

use meshware_common::{Decision, HeaderEdits, Headers, HttpFilter, RequestCtx, SectionReader};

pub struct TraceContext;

impl HttpFilter for TraceContext {
    const NAME: &'static str = "trace_context";
    const OUTCOMES: &'static [&'static str] = trace::OUTCOMES;
    // First in the suite's order: no filter before it could set the tenant header.
    type Settings = config::TraceSettings;
    type Stream = trace::Echo;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        trace::on_request(settings, ctx.tenant, ctx.headers, ctx.rng, stream)
    }

    fn on_response<'s>(
        _settings: &'s Self::Settings,
        _headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        trace::on_response(stream)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(TraceContext);
