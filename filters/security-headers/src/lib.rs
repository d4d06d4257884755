//! security-headers filter: adds HSTS, CSP, X-Content-Type-Options,
//! X-Frame-Options, Referrer-Policy and Permissions-Policy per tenant (set if
//! absent, or overwrite) and removes fingerprinting headers.
//!
//! This file is the adapter: it binds the pure core (`config`, `headers`) to
//! the common host adapter, which does all proxy-wasm calls.

pub mod config;
pub mod headers;

use meshware_common::{
    Decision, HeaderEdits, Headers, HttpFilter, Outcomes, RequestCtx, SectionReader,
};

pub struct SecurityHeaders;

impl HttpFilter for SecurityHeaders {
    const NAME: &'static str = "security_headers";
    const OUTCOMES: &'static [&'static str] = headers::OUTCOMES;
    const READS_RESPONSE_HEADERS: bool = true;
    // The request phase needs nothing but the tenant.
    const REQUEST_HEADERS: Option<&'static [&'static str]> = Some(&[]);
    type Settings = config::SecuritySettings;
    type Stream = ();

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled
    }

    fn on_request<'s>(
        _settings: &'s Self::Settings,
        _ctx: &mut RequestCtx<'_>,
        _stream: &mut Self::Stream,
    ) -> Decision<'s> {
        Decision {
            outcomes: Outcomes::one(0),
            ..Decision::default()
        }
    }

    fn on_response<'s>(
        settings: &'s Self::Settings,
        headers: &Headers,
        _stream: &mut Self::Stream,
    ) -> HeaderEdits<'s> {
        headers::on_response(settings, headers)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(SecurityHeaders);
