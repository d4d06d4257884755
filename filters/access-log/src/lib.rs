//! access-log filter: records per request what Envoy's own access logger
//! writes (tenant, redacted path, sampling verdict; every other filter
//! records its decision under the same convention, see
//! `meshware_common::host::record_for_log`) and keeps per-tenant RED metrics.
//! First in the chain, so it sees every request, including those a later
//! filter answers locally.
//!
//! This file is the adapter: it binds the pure core (`config`, `record`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod record;

use meshware_common::metrics::{MetricKind, MetricUpdates};
use meshware_common::{Decision, HostEnv, HttpFilter, RequestCtx, SectionReader};

pub struct AccessLog;

impl HttpFilter for AccessLog {
    const NAME: &'static str = "access_log";
    const OUTCOMES: &'static [&'static str] = record::OUTCOMES;
    const OBSERVES_COMPLETION: bool = true;
    const REQUEST_HEADERS: Option<&'static [&'static str]> = Some(&[":method", "content-type"]);
    type Settings = config::LogSettings;
    type Stream = record::Started;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled
    }

    fn tenant_metrics(_settings: &Self::Settings, tenant: &str) -> Vec<(MetricKind, String)> {
        record::tenant_metrics(tenant)
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        stream: &mut Self::Stream,
    ) -> Decision<'s> {
        record::on_request(
            settings,
            ctx.tenant.name,
            ctx.headers,
            ctx.rng,
            ctx.env,
            stream,
        )
    }

    fn on_complete_metrics(
        _settings: &Self::Settings,
        stream: &mut Self::Stream,
        env: &dyn HostEnv,
    ) -> MetricUpdates {
        record::on_complete(stream, env)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(AccessLog);
