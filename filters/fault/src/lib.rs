//! fault filter: per-tenant fault injection for resilience drills. Aborts
//! (an HTTP status, or a gRPC status for gRPC calls) and delays (fixed or a
//! uniform range), each with a percentage, per route and method, for every
//! matching request or only for drill requests carrying a valid
//! `x-fault-drill` token, from listed source ranges, within a time window;
//! bounded delays that never block a worker; one kill switch.
//!
//! This file is the adapter: it binds the pure core (`config`, `fault`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod fault;

use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, HttpFilter, Outcomes, RequestCtx, SectionReader,
};

pub struct Fault;

impl HttpFilter for Fault {
    const NAME: &'static str = "fault";
    const OUTCOMES: &'static [&'static str] = fault::OUTCOMES;
    const PASSES_REPLAYS: bool = true;
    type Settings = config::FaultSettings;
    type Stream = fault::Injected;
    /// Delays end on the tick after their deadline: 20 ms of resolution.
    const TICK_PERIOD_MS: u32 = 20;
    /// A delayed request holds a slot of its tenant's bound until it ends.
    const OBSERVES_COMPLETION: bool = true;
    /// Delays hold requests (parked until their deadline).
    const MAKES_CALLOUTS: bool = true;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        !settings.faults.is_empty()
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        let rng = &mut *ctx.rng;
        fault::on_request(
            settings,
            fault::Request {
                tenant: ctx.tenant.name,
                headers: ctx.headers,
                path: ctx.path,
                source: ctx.source,
                env: ctx.env,
            },
            &mut |bound| rng.below(bound),
            stream,
        )
    }

    /// A delay's deadline: the request goes on.
    fn on_park_expired<'s>(_settings: &'s Self::Settings, _tag: u32) -> Decision<'s> {
        Decision::default()
    }

    fn on_complete(
        settings: &Self::Settings,
        stream: &mut Self::Stream,
        env: &dyn HostEnv,
    ) -> Outcomes {
        fault::on_complete(settings, stream, env);
        Outcomes::default()
    }

    fn on_response<'s>(
        _settings: &'s Self::Settings,
        _headers: &Headers,
        stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        fault::on_response(stream)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(Fault);
