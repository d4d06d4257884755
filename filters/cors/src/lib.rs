//! cors filter: answers preflights at the proxy and adds CORS response
//! headers for allowed origins only (anchored patterns, never a reflected
//! arbitrary Origin).
//!
//! This file is the adapter: it binds the pure core (`config`, `policy`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod policy;

use meshware_common::{Decision, HeaderEdits, Headers, HttpFilter, RequestCtx, SectionReader};

pub struct Cors;

impl HttpFilter for Cors {
    const NAME: &'static str = "cors";
    const OUTCOMES: &'static [&'static str] = policy::OUTCOMES;
    const READS_RESPONSE_HEADERS: bool = true;
    type Settings = config::CorsSettings;
    type Stream = policy::Pending;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled && !settings.origins.is_empty()
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        policy::on_request(settings, ctx.headers, stream)
    }

    fn on_response<'s>(
        settings: &'s Self::Settings,
        headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        policy::on_response(settings, headers, stream)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(Cors);
