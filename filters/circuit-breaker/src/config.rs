//! The `circuit_breaker` section of the profile.

use meshware_common::path::PathRules;
use meshware_common::section::{path_rules, read_path_rule};
use meshware_common::SectionReader;

/// What one circuit covers, besides the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitKey {
    /// Envoy's selected upstream cluster (`xds.cluster_name`).
    Cluster,
    /// The matching `routes` entry (its prefix); unmatched requests share `default`.
    Route,
}

/// Per route prefix: the upstream budget, set through Envoy's router headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteBudget {
    /// Circuit name when keyed by route: the route's index, as `route<i>`.
    pub name: String,
    pub timeout_ms: Option<String>,
    pub max_retries: Option<String>,
    pub retry_on: Option<String>,
    /// The gRPC conditions of `retry_on` (`x-envoy-retry-grpc-on`).
    pub retry_grpc_on: Option<String>,
    /// `timeout_ms` as a number: a gRPC call's `grpc-timeout` is lowered to it.
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub enabled: bool,
    pub key: CircuitKey,
    /// Open when failures / requests >= this over the window ...
    pub failure_ratio: f64,
    /// ... with at least this many requests in it.
    pub min_requests: u64,
    pub window_s: u64,
    /// A response slower than this counts as a failure.
    pub slow_ms: Option<u64>,
    pub open_for_ms: u64,
    pub half_open_probes: u64,
    pub status: u32,
    pub fallback_body: String,
    pub fallback_content_type: String,
    pub max_in_flight: Option<u64>,
    pub strip_client_envoy_headers: bool,
    /// gRPC statuses that count as failures (bit i: status i).
    pub grpc_failure_codes: u32,
    /// Longest prefix first.
    /// The most specific route applies.
    pub routes: PathRules<RouteBudget>,
}

/// Router headers a client could use to raise its own budget (the first
/// meshware filter of a request strips them: `meshware_common::request`).
pub use meshware_common::request::CLIENT_BUDGET_HEADERS;

/// Envoy's gRPC retry conditions (`x-envoy-retry-grpc-on`): a gRPC error
/// is an HTTP 200, which the HTTP conditions never match.
const RETRY_GRPC_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The gRPC statuses that say the upstream failed, by default.
pub const DEFAULT_GRPC_FAILURES: &[&str] =
    &["UNKNOWN", "DEADLINE_EXCEEDED", "INTERNAL", "UNAVAILABLE"];

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

fn read_routes(r: &mut SectionReader<'_>) -> PathRules<RouteBudget> {
    let routes = r
        .object_list(
            "routes",
            "an array of route objects",
            "{prefix | path, timeout_ms, max_retries, retry_on, case_sensitive}",
            |n, item_path, i| {
                let pattern = read_path_rule(n, item_path, true);
                let timeout_ms = n
                    .opt_u64_in("timeout_ms", 1, 3_600_000)
                    .map(|v| v.to_string());
                let max_retries = n.opt_u64_in("max_retries", 0, 10).map(|v| v.to_string());
                let retry = n.opt_string("retry_on", |v| {
                    let known = |p: &&str| RETRY_ON.contains(p) || RETRY_GRPC_ON.contains(p);
                    match v.split(',').map(str::trim).find(|p| !known(p)) {
                        None => Ok(()),
                        Some(bad) => Err(format!(
                            "unknown retry condition \"{bad}\" (expected: {}, or for gRPC: {})",
                            meshware_common::errors::joined(RETRY_ON, ", "),
                            meshware_common::errors::joined(RETRY_GRPC_ON, ", ")
                        )),
                    }
                });
                let conditions = |grpc: bool| {
                    retry.as_ref().and_then(|v| {
                        let list: Vec<&str> = v
                            .split(',')
                            .map(str::trim)
                            .filter(|p| RETRY_GRPC_ON.contains(p) == grpc)
                            .collect();
                        (!list.is_empty()).then(|| meshware_common::errors::joined(&list, ","))
                    })
                };
                let (retry_on, retry_grpc_on) = (conditions(false), conditions(true));
                let timeout = timeout_ms.as_ref().and_then(|t| t.parse().ok());
                Some((
                    i,
                    pattern?,
                    RouteBudget {
                        name: format!("route{i}"),
                        timeout_ms,
                        max_retries,
                        retry_on,
                        retry_grpc_on,
                        timeout,
                    },
                ))
            },
        )
        .unwrap_or_default();
    path_rules(r, "routes", "route", routes, |_, _| true)
}

pub fn parse(r: &mut SectionReader<'_>) -> BreakerSettings {
    let enabled = r.bool("enabled", true);
    let key = match r.opt_string("key", |k| match k {
        "cluster" | "route" => Ok(()),
        _ => Err(format!("\"{k}\": expected \"cluster\" or \"route\"")),
    }) {
        Some(k) if k == "route" => CircuitKey::Route,
        _ => CircuitKey::Cluster,
    };
    let failure_ratio = r.f64_in("failure_ratio", 0.5, 0.01, 1.0);
    let min_requests = r.u64_in("min_requests", 20, 1, 1_000_000);
    let window_s = r.u64_in("window_s", 10, 1, 60);
    let slow_ms = r.opt_u64_in("slow_ms", 1, 3_600_000);
    let open_for_ms = r.u64_in("open_for_ms", 5000, 100, 3_600_000);
    let half_open_probes = r.u64_in("half_open_probes", 3, 1, 100);
    let status = r.u64_in("status", 503, 500, 599) as u32;
    let fallback_body = r.opt_string("fallback_body", |b| {
        if b.len() <= 65536 {
            Ok(())
        } else {
            Err("at most 64 KiB".to_string())
        }
    });
    let fallback_content_type = r
        .opt_string("fallback_content_type", |c| {
            if !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                Ok(())
            } else {
                Err("must be a media type such as application/json".to_string())
            }
        })
        .unwrap_or_else(|| "text/plain".to_string());
    let max_in_flight = r.opt_u64_in("max_in_flight", 1, 1_000_000);
    let strip_client_envoy_headers = r.bool("strip_client_envoy_headers", true);
    let routes = read_routes(r);
    let grpc_failure_codes = r
        .string_list("grpc_failure_codes", DEFAULT_GRPC_FAILURES, |c| {
            match meshware_common::grpc::code_named(c) {
                Some(0) => Err("OK is never a failure".to_string()),
                Some(_) => Ok(()),
                None => Err(format!(
                    "\"{c}\": not a gRPC status name (UNAVAILABLE, INTERNAL, ...)"
                )),
            }
        })
        .iter()
        .filter_map(|c| meshware_common::grpc::code_named(c))
        .fold(0u32, |mask, code| mask | 1 << code);
    BreakerSettings {
        enabled,
        key,
        failure_ratio,
        min_requests,
        window_s,
        slow_ms,
        open_for_ms,
        half_open_probes,
        status,
        fallback_body: fallback_body.unwrap_or_else(|| "upstream unavailable\n".to_string()),
        fallback_content_type,
        max_in_flight,
        strip_client_envoy_headers,
        grpc_failure_codes,
        routes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn parse_json(v: Value) -> (BreakerSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_and_routes() {
        let (s, e) = parse_json(json!({"routes": [
            {"prefix": "/cache", "timeout_ms": 100},
            {"prefix": "/cache/slow", "timeout_ms": 800, "max_retries": 1, "retry_on": "5xx,reset"}
        ]}));
        assert_eq!(e, "");
        assert_eq!(
            (s.failure_ratio, s.min_requests, s.window_s, s.open_for_ms),
            (0.5, 20, 10, 5000)
        );
        let route = |p: &str| {
            let path = meshware_common::path::RequestPath::read(p).unwrap();
            s.routes.best(path.canonical()).cloned()
        };
        assert_eq!(
            route("/cache/slow/x").unwrap().retry_on.as_deref(),
            Some("5xx,reset")
        );
        assert_eq!(
            route("/CACHE/x").unwrap().timeout_ms.as_deref(),
            Some("100")
        );
        assert_eq!(route("/cached"), None);
    }

    #[test]
    fn invalid_thresholds_name_their_path() {
        let (_, e) = parse_json(json!({
            "failure_ratio": 1.5, "min_requests": 0, "window_s": 120, "open_for_ms": 10,
            "status": 200, "key": "host",
            "routes": [{"prefix": "cache", "retry_on": "sometimes"}]
        }));
        for expected in [
            "t.failure_ratio: must be <= 1",
            "t.min_requests: must be >= 1",
            "t.window_s: must be <= 60",
            "t.open_for_ms: must be >= 100",
            "t.status: must be >= 500",
            "t.key: \"host\"",
            "t.routes[0].prefix: \"cache\": a path starts with",
            "t.routes[0].retry_on: unknown retry condition \"sometimes\"",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }
}
