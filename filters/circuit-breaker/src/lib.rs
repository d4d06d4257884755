//! circuit-breaker filter: per-tenant circuits over Envoy's selected cluster
//! (or a route prefix) shared across workers, a bulkhead of in-flight
//! requests, and per-route upstream budgets set through Envoy's router headers.
//!
//! This file is the adapter: it binds the pure core (`config`, `circuit`,
//! `breaker`) to the common host adapter, which does all proxy-wasm calls.

pub mod breaker;
pub mod circuit;
pub mod config;

#[cfg(test)]
mod breaker_tests;

use meshware_common::{Decision, HostEnv, HttpFilter, Outcomes, RequestCtx, SectionReader};

pub struct CircuitBreaker;

impl HttpFilter for CircuitBreaker {
    const NAME: &'static str = "circuit_breaker";
    const OUTCOMES: &'static [&'static str] = breaker::OUTCOMES;
    const PASSES_REPLAYS: bool = true;
    const OBSERVES_COMPLETION: bool = true;
    type Settings = config::BreakerSettings;
    type Stream = breaker::Admitted;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled
    }

    fn state(settings: &Self::Settings, tenant: &str, env: &dyn HostEnv) -> Option<String> {
        circuit::open_circuits(env, tenant, settings, env.now_ms())
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        breaker::on_request(
            settings,
            ctx.tenant.name,
            ctx.headers,
            ctx.path,
            ctx.policy.routing_header.as_deref(),
            ctx.env,
            stream,
        )
    }

    fn on_response_start(settings: &Self::Settings, stream: &mut Self::Stream, env: &dyn HostEnv) {
        breaker::on_response_start(settings, stream, env);
    }

    fn on_complete(
        settings: &Self::Settings,
        stream: &mut Self::Stream,
        env: &dyn HostEnv,
    ) -> Outcomes {
        breaker::on_complete(settings, stream, env)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(CircuitBreaker);
