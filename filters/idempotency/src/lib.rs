//! idempotency filter: Idempotency-Key handling with an in-flight mark shared
//! by every worker, 409/422 for duplicates, and byte-identical replay of the
//! stored response without reaching the upstream.
//!
//! This file is the adapter: it binds the pure core (`config`, `store`,
//! `replay`) to the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod replay;
pub mod store;

#[cfg(test)]
mod replay_tests;

use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, HttpFilter, Outcomes, RequestCtx, ResponseReplacement,
    SectionReader,
};

pub struct Idempotency;

impl HttpFilter for Idempotency {
    const NAME: &'static str = "idempotency";
    const OUTCOMES: &'static [&'static str] = replay::OUTCOMES;
    const HOLDS_REQUEST_BODY: bool = true;
    const READS_RESPONSE_HEADERS: bool = true;
    const READS_RESPONSE_BODY: bool = true;
    const OBSERVES_COMPLETION: bool = true;
    const TICK_PERIOD_MS: u32 = 1000;
    type Settings = config::IdempotencySettings;
    type Stream = replay::Flight;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled && !settings.routes.is_empty()
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        replay::on_request(
            settings,
            ctx.tenant.name,
            ctx.headers,
            ctx.path,
            ctx.source,
            stream,
        )
    }

    fn on_request_body_complete<'s>(
        settings: &'s Self::Settings,
        stream: &mut Self::Stream,
        body: Option<&[u8]>,
        env: &dyn HostEnv,
    ) -> Decision<'s> {
        replay::on_body(settings, stream, body, env)
    }

    fn on_request_stream(_settings: &Self::Settings, stream: &mut Self::Stream) -> Outcomes {
        replay::on_stream(stream)
    }

    fn on_response_trailers(
        settings: &Self::Settings,
        stream: &mut Self::Stream,
        trailers: &Headers,
        env: &dyn HostEnv,
    ) -> Outcomes {
        replay::on_response_trailers(settings, stream, trailers, env)
    }

    fn on_response<'s>(
        _settings: &'s Self::Settings,
        headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        replay::on_response(stream, headers)
    }

    fn response_outcomes(stream: &Self::Stream) -> Outcomes {
        replay::response_outcomes(stream)
    }

    fn response_replacement(
        stream: &mut Self::Stream,
        end_of_stream: bool,
    ) -> Option<ResponseReplacement> {
        replay::response_replacement(stream, end_of_stream)
    }

    /// Only a claimed request's response is stored, only a replay's replaced.
    fn wants_response(stream: &Self::Stream) -> bool {
        stream.stores_response()
    }

    fn on_response_body(
        settings: &Self::Settings,
        stream: &mut Self::Stream,
        chunk: &[u8],
        end_of_stream: bool,
        env: &dyn HostEnv,
    ) -> Outcomes {
        replay::on_response_body(settings, stream, chunk, end_of_stream, env)
    }

    fn on_complete(
        _settings: &Self::Settings,
        stream: &mut Self::Stream,
        env: &dyn HostEnv,
    ) -> Outcomes {
        replay::on_complete(stream, env)
    }

    fn on_tick(settings: &Self::Settings, tenant: &str, env: &dyn HostEnv) -> Outcomes {
        replay::sweep(settings, tenant, env, &settings.sweep_cursor)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(Idempotency);
