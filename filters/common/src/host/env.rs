//! What the cores may read from the host beside the request: Envoy's clock,
//! shared data and attributes (`HostEnv`), and the request's declared headers.

use super::*;

/// Envoy's clock and shared data (one key-value map per VM id, shared by
/// every worker thread, with CAS).
pub struct EnvoyEnv;

/// See `EnvoyEnv::set`.
pub(super) const CREATE_ONLY_CAS: u32 = u32::MAX;

impl SharedStore for EnvoyEnv {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            Ok((Some(value), None)) => Some((value, 0)),
            // The SDK reports an empty value (a released or cleared key) as
            // no data: the key exists, and a write must name its CAS.
            Ok((None, Some(cas))) => Some((Vec::new(), cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        // Envoy writes unconditionally with CAS 0, and creates an absent key
        // whatever the CAS: a token no existing entry holds (Envoy hands them
        // out from 1 upwards, one per write, host-wide: this one comes round
        // once every 2^32 writes) makes the write create-only.
        let cas = Some(cas.unwrap_or(CREATE_ONLY_CAS));
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

impl HostEnv for EnvoyEnv {
    fn replaces_responses(&self) -> bool {
        hostcalls::REPLACES_RESPONSES
    }

    // In the suite, once per phase for all concerns (`shared_headers`).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        shared_headers::property(path, || {
            hostcalls::get_property(path.to_vec()).ok().flatten()
        })
    }

    fn now_ms(&self) -> u64 {
        shared_headers::now_ms(|| {
            hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        })
    }
}

/// The request headers a filter declared (`HttpFilter::REQUEST_HEADERS`),
/// plus what tenant resolution reads, one hostcall each.
pub(super) fn declared_headers(
    names: &[&str],
    tenant_header: Option<&crate::tenancy::TenantHeader>,
) -> Vec<(String, Vec<u8>)> {
    let always = [":authority", ":path", "grpc-timeout"];
    let tenant = tenant_header.map(|h| h.name.as_str());
    let mut out = Vec::with_capacity(names.len() + 3);
    for name in always.iter().chain(names).copied().chain(tenant) {
        if let Ok(Some(value)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            out.push((name.to_string(), value));
        }
    }
    out
}

/// Envoy's downstream address as the listener saw it (after
/// `use_remote_address`/original-src handling, never a client header).
pub(super) fn source_address() -> Option<std::net::IpAddr> {
    let bytes = EnvoyEnv.property(&["source", "address"])?;
    parse_source_address(std::str::from_utf8(&bytes).ok()?)
}
