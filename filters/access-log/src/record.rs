//! What the access log and the RED metrics record for one request: the
//! tenant, a redacted path, the sampling verdict (read by Envoy's access
//! logger from filter state), the in-flight gauge, and on completion the
//! request counter by method and status class plus the latency histogram.

use crate::config::{LogSettings, Query};
use meshware_common::metrics::{
    red_duration, red_in_flight, red_requests, MetricKind, MetricUpdates,
};
use meshware_common::rng::Rng;
use meshware_common::{property_u64, Decision, Headers, HostEnv, Outcomes};

pub const OUTCOMES: &[&str] = &["sampled", "unsampled"];
pub const SAMPLED: usize = 0;
pub const UNSAMPLED: usize = 1;

/// Methods get their own label; anything else is `other` (bounded labels).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
/// `none`: the stream ended without a response (client went away).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Metric indices after the method x class counters.
pub const DURATION: usize = METHODS.len() * STATUS_CLASSES.len();
pub const IN_FLIGHT: usize = DURATION + 1;

/// Per request: what completion needs.
#[derive(Debug, Default)]
pub struct Started {
    pub start_ms: u64,
    pub method: usize,
    pub counted: bool,
    /// A gRPC call: classed by its gRPC status (`grpc::http_equivalent`).
    pub grpc: bool,
}

pub fn tenant_metrics(tenant: &str) -> Vec<(MetricKind, String)> {
    let mut out = Vec::with_capacity(IN_FLIGHT + 1);
    for method in METHODS {
        for class in STATUS_CLASSES {
            out.push((MetricKind::Counter, red_requests(tenant, method, class)));
        }
    }
    out.push((MetricKind::Histogram, red_duration(tenant)));
    out.push((MetricKind::Gauge, red_in_flight(tenant)));
    out
}

fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

pub fn class_index(status: u64) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// The path as the log shows it.
pub fn logged_path(s: &LogSettings, path: &str) -> String {
    let (base, query) = match path.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (path, None),
    };
    let mut out = String::with_capacity(path.len().min(s.max_path_bytes) + 16);
    out.push_str(base);
    match (s.query, query) {
        (_, None) | (Query::Strip, _) => {}
        (Query::Keep, Some(q)) => {
            out.push('?');
            out.push_str(q);
        }
        (Query::Redact, Some(q)) => {
            out.push('?');
            for (i, pair) in q.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                let secret = s.redact_params.iter().any(|p| p.eq_ignore_ascii_case(name));
                if secret && pair.contains('=') {
                    out.push_str(name);
                    out.push_str("=[redacted]");
                } else {
                    out.push_str(pair);
                }
            }
        }
    }
    if out.len() > s.max_path_bytes {
        let mut cut = s.max_path_bytes;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

pub fn on_request<'s>(
    s: &'s LogSettings,
    tenant: &str,
    headers: &Headers,
    rng: &mut Rng,
    env: &dyn HostEnv,
    started: &mut Started,
) -> Decision<'s> {
    started.start_ms = env.now_ms();
    started.method = method_index(headers.get(":method").unwrap_or(""));
    started.counted = true;
    started.grpc = headers
        .get("content-type")
        .is_some_and(meshware_common::grpc::is_grpc);
    let sampled = s.sample_threshold == u64::MAX || rng.next_u64() < s.sample_threshold;
    let mut decision = Decision {
        outcomes: Outcomes::one(if sampled { SAMPLED } else { UNSAMPLED }),
        log_fields: vec![
            ("tenant", tenant.to_string()),
            ("path", logged_path(s, headers.get(":path").unwrap_or(""))),
            (
                meshware_common::decision::SAMPLED_FIELD,
                if sampled {
                    meshware_common::decision::SAMPLED
                } else {
                    "0"
                }
                .to_string(),
            ),
        ],
        ..Decision::default()
    };
    decision.metrics.push(IN_FLIGHT, 1);
    decision
}

pub fn on_complete(started: &mut Started, env: &dyn HostEnv) -> MetricUpdates {
    let mut updates = MetricUpdates::default();
    if !std::mem::take(&mut started.counted) {
        return updates;
    }
    let status = env
        .property(&["response", "code"])
        .and_then(|b| property_u64(&b))
        .unwrap_or(0);
    // A gRPC call's outcome is its grpc-status (headers or trailers, as
    // Envoy read it), carried by an HTTP 200.
    let status = match (started.grpc, status) {
        (true, 200) => env
            .property(&["response", "grpc_status"])
            .and_then(|b| property_u64(&b))
            .map_or(status, meshware_common::grpc::http_equivalent),
        _ => status,
    };
    let counter = started.method * STATUS_CLASSES.len() + class_index(status);
    let duration = env.now_ms().saturating_sub(started.start_ms);
    updates.push(counter, 1);
    updates.push(DURATION, i64::try_from(duration).unwrap_or(i64::MAX));
    updates.push(IN_FLIGHT, -1);
    updates
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
