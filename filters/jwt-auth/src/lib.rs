//! jwt-auth filter: per-tenant JWT verification (inline JWKS, twelve
//! algorithms), token sources, per-route requirements, a per-worker cache of
//! verified tokens, tenant binding, and identity headers that a client can
//! never set. Remote JWKS and external auth are not built yet (issue 3).
//!
//! This file is the adapter: it binds the pure core (`config`, `jwk`,
//! `verify`, `auth`) to the common host adapter, which does all proxy-wasm calls.

pub mod auth;
pub mod config;
pub mod jwk;
pub mod verify;

#[cfg(test)]
mod auth_tests;

use meshware_common::{Decision, HttpFilter, RequestCtx, SectionReader};

pub struct JwtAuth;

impl HttpFilter for JwtAuth {
    const NAME: &'static str = "jwt_auth";
    const OUTCOMES: &'static [&'static str] = auth::OUTCOMES;
    type Settings = config::JwtSettings;
    type Stream = ();

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled && !settings.providers.is_empty()
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        _stream: &mut Self::Stream,
    ) -> Decision<'s> {
        let now_s = ctx.env.now_ms() / 1000;
        auth::on_request(settings, ctx.tenant.name, ctx.headers, now_s)
    }
}

#[cfg(target_os = "wasi")]
meshware_common::export_filter!(JwtAuth);
