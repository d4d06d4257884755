//! canary filter: picks a version per request from ordered header/cookie
//! rules and sticky hash percentages, writes it to the routing header and
//! clears Envoy's route cache so routes matching that header take effect.
//!
//! This file is the adapter: it binds the pure core (`config`, `route`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod pattern;
pub mod route;

use meshware_common::{Decision, HeaderEdits, Headers, HttpFilter, RequestCtx, SectionReader};

pub struct Canary;

impl HttpFilter for Canary {
    const NAME: &'static str = "canary";
    const OUTCOMES: &'static [&'static str] = route::OUTCOMES;
    const PASSES_REPLAYS: bool = true;
    type Settings = config::CanarySettings;
    type Stream = route::Chosen;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn tenant_outcomes(settings: &Self::Settings) -> Vec<String> {
        route::version_outcomes(settings)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        route::on_request(settings, ctx.headers, stream)
    }

    fn on_response<'s>(
        settings: &'s Self::Settings,
        _headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        route::on_response(settings, stream)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(Canary);
