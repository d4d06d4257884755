//! What a filter core decides for one request; the host adapter applies it.

use std::borrow::Cow;

/// One header change. Names borrow from the compiled config (or are static);
/// so do values fixed at configure time, so only computed values allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp<'a> {
    /// Replace every value of the header with this one.
    Set(Cow<'a, str>, Cow<'a, str>),
    /// Add one more value, keeping existing ones.
    Append(Cow<'a, str>, Cow<'a, str>),
    Remove(Cow<'a, str>),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderEdits<'a> {
    pub ops: Vec<HeaderOp<'a>>,
    /// Set when an edited header can change route selection: Envoy must
    /// re-evaluate the route, or it keeps the one chosen before the edit.
    pub clear_route_cache: bool,
}

impl<'a> HeaderEdits<'a> {
    /// Names are configuration or static (borrowed); a name that is data
    /// (a rate limit service's header) is owned.
    pub fn set(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        self.ops.push(HeaderOp::Set(name.into(), value.into()));
    }
    pub fn append(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        self.ops.push(HeaderOp::Append(name.into(), value.into()));
    }
    pub fn remove(&mut self, name: impl Into<Cow<'a, str>>) {
        self.ops.push(HeaderOp::Remove(name.into()));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && !self.clear_route_cache
    }
    /// The value a `Set` or `Append` gives `name`, for tests and chaining.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        self.ops.iter().rev().find_map(|op| match op {
            HeaderOp::Set(n, v) | HeaderOp::Append(n, v) if n == name => Some(v.as_ref()),
            _ => None,
        })
    }
    pub fn removes(&self, name: &str) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, HeaderOp::Remove(n) if n == name))
    }
}

/// An answer given by the proxy without reaching the upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalReply<'a> {
    pub status: u32,
    pub headers: Vec<(&'a str, String)>,
    /// Headers whose names are data, not code (a replayed response).
    pub owned_headers: Vec<(String, String)>,
    pub body: Cow<'a, [u8]>,
    /// The gRPC status a gRPC client gets instead (`crate::grpc`); `None`
    /// derives it from `status` (`grpc::status_for_http`).
    pub grpc_status: Option<u8>,
    /// The `grpc-message` (percent-encoded) instead of the one the adapter
    /// derives from the filter and outcome (a replayed response's own).
    pub grpc_message: Option<Cow<'a, str>>,
}

/// Outcome indices (into the filter's `OUTCOMES`) to count for this request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes(u64);

impl Outcomes {
    pub fn one(index: usize) -> Self {
        let mut o = Outcomes::default();
        o.add(index);
        o
    }
    pub fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
    pub fn contains(&self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    /// The outcomes in index order: one step per outcome present (every
    /// request counts its outcomes, so not 64 steps per set).
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut left = self.0;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let index = left.trailing_zeros() as usize;
            left &= left - 1;
            Some(index)
        })
    }
}

/// The request-phase decision: continue with edits, or reply locally.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub request: HeaderEdits<'a>,
    pub reply: Option<LocalReply<'a>>,
    pub outcomes: Outcomes,
    /// Hold the request until its whole body (at most this many bytes) has
    /// arrived, then decide in `HttpFilter::on_request_body_complete`.
    pub wait_for_body: Option<usize>,
    /// With `wait_for_body` on a gRPC call: hold it only while it can be
    /// unary. A complete message without the end of the stream makes it a
    /// stream (which waits for answers before it ends): it goes on, and
    /// `HttpFilter::on_request_stream` is told instead.
    pub grpc_body: bool,
    /// What to do with the profile's tenant header (the identity filter
    /// vouches for it; the host knows the header's name).
    pub tenant_header: TenantWrite,
    /// Call another cluster and hold the request until the answer (or the
    /// call's failure) reaches `HttpFilter::on_callout_response`.
    pub callout: Option<Callout<'a>>,
    /// Hold the request until a callout with this tag (for this tenant, on
    /// this worker) completes, then run `on_request` again; past the
    /// deadline `HttpFilter::on_park_expired` answers instead. With a
    /// `callout`, only the deadline applies (to the request starting it).
    pub park: Option<Park>,
    /// Values for the access log, recorded as filter state
    /// `wasm.meshware.<name>` (e.g. `user`, `trace_id`, `path`).
    pub log_fields: Vec<(&'static str, String)>,
    /// Updates to the filter's `tenant_metrics`.
    pub metrics: crate::metrics::MetricUpdates,
}

/// What a response's body becomes (`HttpFilter::response_replacement`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseReplacement {
    pub body: Vec<u8>,
    /// Added after the body (gRPC's status and trailing metadata).
    pub trailers: Vec<(String, String)>,
}

/// Which requests get an access-log line from the logger we ship (the
/// bootstrap's filter, and the Istio Telemetry example of DEPLOY.md): every
/// response with a status from `LOGGED_FROM_STATUS` on, every stream without
/// a response, and the requests whose log field `SAMPLED_FIELD` is
/// `SAMPLED` (set by the access-log filter).
pub const LOGGED_FROM_STATUS: u32 = 400;
pub const SAMPLED_FIELD: &str = "sampled";
pub const SAMPLED: &str = "1";

/// The identity filter's word on the tenant header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum TenantWrite {
    #[default]
    Unchanged,
    /// Set it to the tenant resolved from host / path.
    Resolved,
    /// Set it to a configured tenant named by a verified token (shared hosts).
    Claimed(String),
    /// Remove any client-sent value (nobody vouched for one).
    Removed,
}

/// An HTTP call to an Envoy cluster (`dispatch_http_call`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Callout<'a> {
    pub cluster: &'a str,
    /// Including the pseudo-headers `:method`, `:path`, `:authority`.
    pub headers: Vec<(&'a str, String)>,
    pub timeout_ms: u64,
    /// Filter-defined: which resource the call is for (e.g. a provider index).
    pub tag: u32,
    /// A gRPC call instead (`dispatch_grpc_call`; `cluster` is then the
    /// serialized `GrpcService`, `headers` unused). Its answer arrives as a
    /// `CalloutResponse` whose `status` is the gRPC status and `body` the
    /// response message.
    pub grpc: Option<GrpcCall<'a>>,
}

/// The method and request message of a gRPC callout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GrpcCall<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub message: Vec<u8>,
}

/// What a held request waits for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    pub tag: u32,
    pub deadline_ms: u64,
}

/// A callout's answer; `None` in the hooks means it failed (timeout, reset,
/// no such cluster) and carries no response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    pub status: u32,
    pub headers: crate::headers::Headers,
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn outcomes_are_a_small_set() {
        let mut o = Outcomes::one(2);
        o.add(5);
        o.add(64); // out of range: ignored, never panics
        assert!(o.contains(2) && o.contains(5) && !o.contains(0));
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![2, 5]);
    }

    #[test]
    fn outcomes_iterate_every_member_in_order_and_nothing_else() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut masks = vec![0, 1, 1 << 63, u64::MAX];
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            masks.push(seed);
        }
        for mask in masks {
            let o = Outcomes(mask);
            let naive: Vec<usize> = (0..64).filter(|&i| mask & (1 << i) != 0).collect();
            assert_eq!(o.iter().collect::<Vec<_>>(), naive, "{mask:#x}");
        }
    }

    #[test]
    fn edits_report_what_they_do() {
        let mut e = HeaderEdits::default();
        assert!(e.is_empty());
        e.set("a", "1");
        e.remove("b");
        e.append("a", "2".to_string());
        assert_eq!(e.value_of("a"), Some("2"));
        assert!(e.removes("b") && !e.removes("a"));
    }
}
