//! rate-limit filter: per-tenant token buckets shared by every Envoy worker
//! through proxy-wasm shared data, with IETF RateLimit fields and bounded keys.
//!
//! This file is the adapter: it binds the pure core (`config`, `limiter`,
//! `quota`) to the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod global;
pub mod limiter;
pub mod quota;
pub mod rls;

#[cfg(test)]
mod quota_tests;

use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, HttpFilter, Outcomes, RequestCtx, SectionReader,
};

pub struct RateLimit;

impl HttpFilter for RateLimit {
    const NAME: &'static str = "rate_limit";
    const OUTCOMES: &'static [&'static str] = quota::OUTCOMES;
    const TICK_PERIOD_MS: u32 = 1000;
    /// Global limits call the rate limit service.
    const MAKES_CALLOUTS: bool = true;
    type Settings = config::RateLimitSettings;
    type Stream = quota::Fields;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn tenant_outcomes(settings: &Self::Settings) -> Vec<String> {
        quota::limit_outcomes(settings)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled && (!settings.limits.is_empty() || settings.global.is_some())
    }

    fn tenant_metrics(
        settings: &Self::Settings,
        tenant: &str,
    ) -> Vec<(meshware_common::metrics::MetricKind, String)> {
        quota::global_metrics(settings, tenant)
    }

    fn on_callout_response<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
        _tag: u32,
        response: Option<&meshware_common::CalloutResponse>,
    ) -> Decision<'s> {
        quota::on_global_answer(settings, stream, response, ctx.env)
    }

    fn on_park_expired<'s>(settings: &'s Self::Settings, _tag: u32) -> Decision<'s> {
        quota::on_global_expired(settings)
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        quota::on_request(
            settings,
            ctx.tenant.name,
            ctx.headers,
            ctx.path,
            ctx.source,
            ctx.env,
            stream,
        )
    }

    fn state(settings: &Self::Settings, tenant: &str, env: &dyn HostEnv) -> Option<String> {
        limiter::occupancy(env, tenant, settings)
    }

    fn on_tick(settings: &Self::Settings, tenant: &str, env: &dyn HostEnv) -> Outcomes {
        limiter::sweep(env, tenant, settings);
        Outcomes::default()
    }

    fn on_response<'s>(
        settings: &'s Self::Settings,
        _headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        quota::on_response(settings, stream)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(RateLimit);
