//! The `idempotency` section of the profile.

use meshware_common::path::{PathPattern, PathRules};
use meshware_common::section::{check_header_name, check_method, path_rules, read_path_rule};
use meshware_common::SectionReader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub methods: Vec<String>,
    /// A request without a key is answered 400.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// 413 for a body larger than `max_request_bytes`.
    Reject,
    /// Forward it without idempotency handling.
    Skip,
}

/// What a duplicate of a gRPC call that returned messages gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcReplay {
    /// ALREADY_EXISTS: a filter's own answer to gRPC is trailers-only, so
    /// it cannot carry the messages.
    TrailersOnly,
    /// The stored response, byte for byte: the duplicate goes to the
    /// replay route (a listener of the same Envoy answering without any
    /// upstream), whose answer this filter replaces with the stored one.
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencySettings {
    pub enabled: bool,
    pub header: String,
    /// The most specific route whose methods include the request's applies.
    pub routes: PathRules<Route>,
    pub max_key_length: usize,
    /// Accept unquoted tokens besides structured-field strings.
    pub allow_bare_keys: bool,
    pub ttl_ms: u64,
    /// How long an in-flight mark lives at most (a VM that died mid-request
    /// must not block the key forever).
    pub in_flight_timeout_ms: u64,
    pub max_request_bytes: usize,
    pub over_limit: OverLimit,
    pub max_response_bytes: usize,
    pub store_5xx: bool,
    pub grpc_replay: GrpcReplay,
    /// Stored-entry slots per tenant: with `max_response_bytes`, the byte budget.
    pub max_entries: u64,
    pub user_header: String,
    /// Next slot of the tick sweep (per worker).
    pub sweep_cursor: std::cell::Cell<u64>,
}

fn read_routes(r: &mut SectionReader<'_>) -> PathRules<Route> {
    let shape = "{prefix | path, methods, required, case_sensitive}";
    let routes = r.object_list(
        "routes",
        &format!("an array of {shape}"),
        shape,
        |n, item_path, index| {
            let explicit = n.raw("prefix").is_some() || n.raw("path").is_some();
            let pattern = read_path_rule(n, item_path, false);
            let route = Route {
                methods: n.string_list("methods", &["POST", "PATCH"], check_method),
                required: n.bool("required", false),
            };
            let pattern = match pattern {
                Some(p) => p,
                None if !explicit => PathPattern::compile("/", false, true).ok()?,
                None => return None,
            };
            Some((index, pattern, route))
        },
    );
    let routes = routes.unwrap_or_else(|| {
        PathPattern::compile("/", false, true)
            .map(|root| {
                vec![(
                    0,
                    root,
                    Route {
                        methods: vec!["POST".into(), "PATCH".into()],
                        required: false,
                    },
                )]
            })
            .unwrap_or_default()
    });
    path_rules(
        r,
        "routes",
        "route (with the same methods)",
        routes,
        |a, b| a.methods == b.methods,
    )
}

pub fn parse(r: &mut SectionReader<'_>) -> IdempotencySettings {
    let enabled = r.bool("enabled", true);
    let header = r
        .opt_string("header", check_header_name)
        .unwrap_or_else(|| "idempotency-key".to_string());
    let routes = read_routes(r);
    let over_limit = match r.one_of("over_limit", &["reject", "skip"]) {
        Some("skip") => OverLimit::Skip,
        _ => OverLimit::Reject,
    };
    let grpc_replay = match r.one_of("grpc_replay", &["trailers_only", "full"]) {
        Some("trailers_only") => GrpcReplay::TrailersOnly,
        _ => GrpcReplay::Full,
    };
    IdempotencySettings {
        enabled,
        grpc_replay,
        header,
        routes,
        max_key_length: r.u64_in("max_key_length", 255, 1, 1024) as usize,
        allow_bare_keys: r.bool("allow_bare_keys", true),
        ttl_ms: r.u64_in("ttl_s", 86_400, 1, 7 * 86_400) * 1000,
        in_flight_timeout_ms: r.u64_in("in_flight_timeout_s", 60, 1, 3600) * 1000,
        max_request_bytes: r.u64_in("max_request_bytes", 65_536, 0, 1 << 20) as usize,
        over_limit,
        max_response_bytes: r.u64_in("max_response_bytes", 65_536, 0, 1 << 20) as usize,
        store_5xx: r.bool("store_5xx", false),
        max_entries: r.u64_in("max_entries", 1000, 1, 100_000),
        user_header: r
            .opt_string("user_header", check_header_name)
            .unwrap_or_else(|| "x-user-id".to_string()),
        sweep_cursor: std::cell::Cell::new(0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn parse_json(v: Value) -> (IdempotencySettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_and_errors() {
        let (s, e) = parse_json(json!({}));
        assert_eq!(e, "");
        assert_eq!(s.routes.iter().next().unwrap().1.methods, ["POST", "PATCH"]);
        assert_eq!(
            (s.ttl_ms, s.max_entries, s.over_limit),
            (86_400_000, 1000, OverLimit::Reject)
        );
        let (_, e) = parse_json(
            json!({"ttl_s": 0, "over_limit": "drop", "routes": [{"prefix": "x", "methods": ["post"]}]}),
        );
        assert!(e.contains("t.ttl_s: must be >= 1"), "{e}");
        assert!(e.contains("t.over_limit: \"drop\""), "{e}");
        assert!(e.contains("t.routes[0].prefix"), "{e}");
        assert!(e.contains("t.routes[0].methods[0]"), "{e}");
        assert_eq!(s.grpc_replay, GrpcReplay::Full);
        let (s, _) = parse_json(json!({"grpc_replay": "trailers_only"}));
        assert_eq!(s.grpc_replay, GrpcReplay::TrailersOnly);
        let (_, e) = parse_json(json!({"grpc_replay": "all"}));
        assert!(e.contains("t.grpc_replay: \"all\""), "{e}");
    }
}
