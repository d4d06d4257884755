//! endpoint-guard filter: hides debug and admin endpoints behind source
//! ranges or an admin token, judged on every reading of the path the
//! tenant allows, and enforces per-route request limits.
//!
//! This file is the adapter: it binds the pure core (`config`, `guard`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod guard;

#[cfg(test)]
mod guard_tests;

use meshware_common::request::MethodOverride;
use meshware_common::{Decision, HttpFilter, RequestCtx, SectionReader};

pub struct EndpointGuard;

impl HttpFilter for EndpointGuard {
    const NAME: &'static str = "endpoint_guard";
    const OUTCOMES: &'static [&'static str] = guard::OUTCOMES;
    const READS_REQUEST_BODY: bool = true;
    type Settings = config::GuardSettings;
    type Stream = guard::BodyBudget;

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
        let check_overrides = ctx.policy.method_override == MethodOverride::Check;
        guard::on_request(
            settings,
            ctx.headers,
            ctx.path,
            check_overrides,
            ctx.source,
            stream,
        )
    }

    fn on_request_body<'s>(
        _settings: &'s Self::Settings,
        stream: &mut Self::Stream,
        chunk_len: usize,
        _end_of_stream: bool,
    ) -> Decision<'s> {
        guard::on_body(stream, chunk_len)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(EndpointGuard);
