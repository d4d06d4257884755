//! Shared by every meshware filter: the tenant profile model and its
//! validation, tenant resolution, the decision type filters return, metric
//! naming, and (in the proxy-wasm and native builds only) the host adapter.

pub mod base64;
pub mod bucket;
pub mod decision;
pub mod digits;
pub mod errors;
pub mod filter;
pub mod grpc;
pub mod headers;
pub mod heap;
pub mod json;
pub mod jsontext;
pub mod live;
pub mod metrics;
pub mod net;
pub mod order;
pub mod path;
pub mod profile;
pub mod protowire;
pub mod request;
pub mod rng;
pub mod secret;
pub mod section;
pub mod sequence;
pub mod store;
pub mod tenancy;

#[cfg(all(target_os = "wasi", feature = "count-hostcalls"))]
pub mod alloc_count;
/// Every wasm module's heap (`heap`; counting builds wrap it in
/// `alloc_count`).
#[cfg(all(target_os = "wasi", not(feature = "count-hostcalls")))]
#[global_allocator]
static HEAP: heap::Heap = heap::Heap::new();
#[cfg(all(any(target_os = "wasi", feature = "native"), feature = "suite"))]
pub mod chain;
/// The VM's environment without wasi-libc's (`getenv`).
mod environ;
#[cfg(any(target_os = "wasi", feature = "native"))]
pub mod host;
#[cfg(any(target_os = "wasi", feature = "native"))]
pub mod hostcall;
#[cfg(any(target_os = "wasi", feature = "native"))]
pub mod live_host;
/// The dynamic-module adapter: Envoy's native ABI under the same host calls.
#[cfg(all(feature = "native", not(target_os = "wasi")))]
pub mod native;

pub use decision::{
    Callout, CalloutResponse, Decision, GrpcCall, HeaderEdits, HeaderOp, LocalReply, Outcomes,
    Park, ResponseReplacement, TenantWrite,
};
pub use errors::{ConfigError, ConfigErrors};
pub use filter::{HttpFilter, RequestCtx, Tenant};
pub use headers::Headers;
pub use net::{Cidr, SourceAddress};
pub use profile::{Profile, KNOWN_SECTIONS};
pub use section::SectionReader;
pub use store::{property_u64, HostEnv, SharedStore};
