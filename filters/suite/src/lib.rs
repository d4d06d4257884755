//! The suite module (`dist/suite.wasm`): every concern in one VM per worker.
//! Each filter crate is a library here; the common crate's `chain` runs the
//! concerns the profile has a section for, in the documented order, from
//! one root and one HTTP context (docs/ARCHITECTURE.md).

use meshware_common::HttpFilter;

macro_rules! concerns {
    ($($filter:ty),* $(,)?) => {
        /// Section names of the concerns in chain order (the order of the
        /// separate modules too: `meshware_cli::FILTERS` checks it).
        pub const ORDER: &[&str] = &[$(<$filter as HttpFilter>::NAME),*];

        #[cfg(any(target_os = "wasi", feature = "native"))]
        const CONCERNS: &[meshware_common::chain::Concern] =
            &[$(meshware_common::chain::concern::<$filter>()),*];
    };
}

concerns!(
    access_log::AccessLog,
    trace_context::TraceContext,
    security_headers::SecurityHeaders,
    cors::Cors,
    jwt_auth::JwtAuth,
    endpoint_guard::EndpointGuard,
    rate_limit::RateLimit,
    idempotency::Idempotency,
    canary::Canary,
    circuit_breaker::CircuitBreaker,
    fault::Fault,
);

#[cfg(all(feature = "native", not(target_os = "wasi")))]
meshware_common::export_native!(|context_id| {
    Box::new(meshware_common::chain::SuiteRoot::new(context_id, CONCERNS))
});

#[cfg(target_os = "wasi")]
proxy_wasm::main! {{
    meshware_common::host::init("suite");
    proxy_wasm::set_root_context(|context_id| {
        Box::new(meshware_common::chain::SuiteRoot::new(context_id, CONCERNS))
    });
}}
