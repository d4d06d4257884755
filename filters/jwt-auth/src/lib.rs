//! jwt-auth filter: per-tenant JWT verification (inline JWKS, twelve
//! algorithms), token sources, per-route requirements, a per-worker cache of
//! verified tokens, tenant binding, and identity headers that a client can
//! never set; remote JWKS fetched through a cluster (shared across workers,
//! refreshed on tick, stale-while-error) and an external auth check with a
//! fallback to local verification.
//!
//! This file is the adapter: it binds the pure core (`config`, `jwk`,
//! `verify`, `auth`) to the common host adapter, which does all proxy-wasm calls.

pub mod auth;
pub mod config;
pub mod external;
pub mod jwk;
pub mod remote;
pub mod verify;

#[cfg(test)]
mod auth_tests;

use meshware_common::{
    Callout, CalloutResponse, Decision, HostEnv, HttpFilter, Outcomes, RequestCtx, SectionReader,
};

pub struct JwtAuth;

fn request<'r>(ctx: &'r RequestCtx<'_>) -> auth::Request<'r> {
    auth::Request {
        tenant: ctx.tenant.name,
        tenant_source: ctx.tenant.source,
        tenants: ctx.tenants,
        headers: ctx.headers,
        path: ctx.path,
    }
}

impl HttpFilter for JwtAuth {
    const NAME: &'static str = "jwt_auth";
    const OUTCOMES: &'static [&'static str] = auth::OUTCOMES;
    type Settings = config::JwtSettings;
    type Stream = ();
    /// Drives background JWKS refresh and the deadline of waiting requests.
    const TICK_PERIOD_MS: u32 = 200;
    const MAKES_CALLOUTS: bool = true;

    fn parse(reader: &mut SectionReader<'_>) -> Self::Settings {
        config::parse(reader)
    }

    fn enabled(settings: &Self::Settings) -> bool {
        settings.enabled && (!settings.providers.is_empty() || settings.external.is_some())
    }

    fn on_request<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        _stream: &mut Self::Stream,
    ) -> Decision<'s> {
        auth::on_request(settings, &request(ctx), ctx.env)
    }

    /// Each remote key set's age: how fresh the keys verifying tokens are.
    fn state(settings: &Self::Settings, _tenant: &str, env: &dyn HostEnv) -> Option<String> {
        let providers: Vec<(&String, String)> = settings
            .providers
            .iter()
            .filter_map(|p| p.remote.as_ref().map(|r| (&p.name, r.status(env))))
            .collect();
        (!providers.is_empty()).then(|| {
            meshware_common::jsontext::object([(
                "remote_jwks",
                meshware_common::jsontext::object(providers),
            )])
        })
    }

    fn on_callout_response<'s>(
        settings: &'s Self::Settings,
        ctx: &mut RequestCtx<'_>,
        _stream: &mut Self::Stream,
        tag: u32,
        response: Option<&CalloutResponse>,
    ) -> Decision<'s> {
        auth::on_callout_response(settings, &request(ctx), ctx.env, tag, response)
    }

    fn on_callout_done(
        settings: &Self::Settings,
        tag: u32,
        response: Option<&CalloutResponse>,
        env: &dyn HostEnv,
    ) -> Outcomes {
        auth::on_callout_done(settings, tag, response, env)
    }

    fn background_callouts<'s>(
        settings: &'s Self::Settings,
        env: &dyn HostEnv,
    ) -> Vec<Callout<'s>> {
        settings
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.remote.as_ref()?.background(i as u32, env))
            .collect()
    }

    fn on_park_expired<'s>(settings: &'s Self::Settings, tag: u32) -> Decision<'s> {
        auth::on_park_expired(settings, tag)
    }
}

#[cfg(all(target_os = "wasi", not(feature = "library")))]
meshware_common::export_filter!(JwtAuth);
