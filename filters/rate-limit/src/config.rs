//! The `rate_limit` section of the profile.

use meshware_common::grpc;
use meshware_common::path::{PathPattern, RequestPath};
use meshware_common::section::{check_header_name, check_method, read_path_rule};
use meshware_common::SectionReader;
use serde_json::Value;
use std::cell::Cell;

pub const DEFAULT_USER_HEADER: &str = "x-user-id";
pub const DEFAULT_MAX_KEYS: u64 = 10_000;
pub const MAX_LIMITS: usize = 16;

/// What a limit's buckets are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// One bucket for the whole tenant.
    Tenant,
    /// One bucket per client address (Envoy's downstream address, or the
    /// trusted XFF hop).
    ClientAddress,
    /// One bucket per user (the header jwt-auth sets).
    User,
    /// One bucket per value of a request header.
    Header(String),
    /// One bucket for the limit's route (`prefix` + `methods`).
    Route,
}

impl KeyKind {
    /// Kinds with one bucket per distinct value, bounded by `max_keys`.
    pub fn is_per_value(&self) -> bool {
        matches!(
            self,
            KeyKind::ClientAddress | KeyKind::User | KeyKind::Header(_)
        )
    }

    /// The descriptor entry key, as Envoy's rate limit service would see it.
    pub fn descriptor_key(&self) -> &str {
        match self {
            KeyKind::Tenant => "tenant",
            KeyKind::ClientAddress => "remote_address",
            KeyKind::User => "user",
            KeyKind::Header(name) => name,
            KeyKind::Route => "route",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub name: String,
    pub key: KeyKind,
    /// Tokens added per `period_ms`.
    pub rate: u64,
    pub period_ms: u64,
    /// Bucket capacity.
    pub burst: u64,
    pub shadow: bool,
    /// The limit applies only under this path (`prefix` or `path`, matched
    /// like every path rule on every reading of the request's path) and to
    /// these methods. Limits add up: every limit that applies is charged.
    pub prefix: Option<PathPattern>,
    pub methods: Option<Vec<String>>,
    /// `"name";q=<rate>;w=<window s>`, prepared once.
    pub policy: String,
    /// Next slot the tick sweep looks at (per worker; settings are per VM).
    pub sweep_cursor: Cell<u64>,
    /// Busy buckets the current sweep pass has seen so far.
    pub pass_occupied: Cell<u64>,
    /// Busy buckets over the last complete sweep pass (`None` before one).
    pub occupied: Cell<Option<u64>>,
}

impl Limit {
    pub fn applies(&self, path: &RequestPath, method: &str) -> bool {
        self.prefix.as_ref().is_none_or(|p| p.matches_any(path))
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == method))
    }

    /// Microseconds per token (GCRA emission interval), at least 1.
    pub fn interval_us(&self) -> u64 {
        (self.period_ms.saturating_mul(1000) / self.rate.max(1)).max(1)
    }

    /// How far ahead of now the theoretical arrival time may run: `burst - 1`
    /// tokens beyond the one being taken.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us()
            .saturating_mul(self.burst.saturating_sub(1))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Count and report, never reject (every limit of the tenant).
    pub shadow: bool,
    /// 0: the client is Envoy's downstream address. N: the N-th address from
    /// the right of `x-forwarded-for` (after the one Envoy appends).
    pub xff_trusted_hops: u64,
    pub user_header: String,
    /// Buckets per limit for per-value keys; more distinct values share an
    /// overflow bucket.
    pub max_keys: u64,
    /// Add `RateLimit-Policy`/`RateLimit` to allowed responses too.
    pub response_headers: bool,
    /// The gRPC status of a limited gRPC call: `RESOURCE_EXHAUSTED` (the
    /// default: clients do not retry it at once), or `UNAVAILABLE` for
    /// clients that should retry.
    pub grpc_status: u8,
    pub limits: Vec<Limit>,
    /// Limits counted across proxies by a rate limit service (`global`).
    pub global: Option<crate::global::GlobalSettings>,
}

fn read_key(r: &mut SectionReader<'_>) -> Option<KeyKind> {
    let (value, path) = r.raw("key")?;
    let key = match value {
        Value::String(s) => match s.as_str() {
            "tenant" => Some(KeyKind::Tenant),
            "client_address" => Some(KeyKind::ClientAddress),
            "user" => Some(KeyKind::User),
            "route" => Some(KeyKind::Route),
            _ => None,
        },
        Value::Object(m) => match m.get("header") {
            Some(Value::String(h)) if m.len() == 1 => match check_header_name(h) {
                Ok(()) => Some(KeyKind::Header(h.clone())),
                Err(msg) => {
                    r.error(format!("{path}.header"), msg);
                    return None;
                }
            },
            _ => None,
        },
        _ => None,
    };
    if key.is_none() {
        r.error(
            path,
            "unknown key kind (expected \"tenant\", \"client_address\", \"user\", \"route\" or {\"header\": \"<name>\"})",
        );
    }
    key
}

fn read_limit(r: &mut SectionReader<'_>, path: &str) -> Option<Limit> {
    let name = r.opt_string("name", meshware_common::section::check_name("limit"));
    let key = read_key(r);
    let rate = r.u64_in("rate", 1, 1, 1_000_000_000);
    let per = r.opt_string("per", |p| match p {
        "second" | "minute" | "hour" => Ok(()),
        _ => Err(format!(
            "\"{p}\": expected \"second\", \"minute\" or \"hour\""
        )),
    });
    let period_ms = match per.as_deref() {
        Some("minute") => 60_000,
        Some("hour") => 3_600_000,
        _ => 1_000,
    };
    // No default: a bucket's size is a decision, and 0 would reject everything.
    let burst = match r.raw("burst") {
        None => {
            r.error(format!("{path}.burst"), "is required (bucket size, >= 1)");
            None
        }
        Some(_) => Some(r.u64_in("burst", 1, 1, 1_000_000_000)),
    };
    let shadow = r.bool("shadow", false);
    let prefix = read_path_rule(r, path, false);
    let methods = r
        .raw("methods")
        .is_some()
        .then(|| r.string_list("methods", &[], check_method));
    if r.raw("rate").is_none() {
        r.error(format!("{path}.rate"), "is required (tokens per `per`)");
    }
    let name = match name {
        Some(n) => n,
        None => {
            r.error(format!("{path}.name"), "is required");
            return None;
        }
    };
    if key.is_none() && r.raw("key").is_none() {
        r.error(format!("{path}.key"), "is required");
    }
    let (key, burst) = (key?, burst?);
    if key == KeyKind::Route && prefix.is_none() && methods.is_none() {
        r.error(
            format!("{path}.key"),
            "a \"route\" limit needs \"prefix\" and/or \"methods\" to name its route",
        );
        return None;
    }
    let window_s = period_ms / 1000;
    Some(Limit {
        policy: format!("\"{name}\";q={rate};w={window_s}"),
        name,
        key,
        rate,
        period_ms,
        burst,
        shadow,
        prefix,
        methods,
        sweep_cursor: Cell::new(0),
        pass_occupied: Cell::new(0),
        occupied: Cell::new(None),
    })
}

fn read_limits(r: &mut SectionReader<'_>) -> Vec<Limit> {
    r.unique_list("limits", "limit", MAX_LIMITS, read_limit, |l| &l.name)
        .unwrap_or_default()
}

pub fn parse(r: &mut SectionReader<'_>) -> RateLimitSettings {
    let enabled = r.bool("enabled", true);
    let shadow = r.bool("shadow", false);
    let xff_trusted_hops = r.u64_in("xff_trusted_hops", 0, 0, 16);
    let user_header = r
        .opt_string("user_header", check_header_name)
        .unwrap_or_else(|| DEFAULT_USER_HEADER.to_string());
    let max_keys = r.u64_in("max_keys", DEFAULT_MAX_KEYS, 1, 1_000_000);
    let response_headers = r.bool("response_headers", false);
    let grpc_status = r
        .opt_string("grpc_status", |v| match v {
            "RESOURCE_EXHAUSTED" | "UNAVAILABLE" => Ok(()),
            _ => Err(format!(
                "\"{v}\": must be \"RESOURCE_EXHAUSTED\" or \"UNAVAILABLE\""
            )),
        })
        .and_then(|v| grpc::code_named(&v))
        .unwrap_or(grpc::RESOURCE_EXHAUSTED);
    let limits = read_limits(r);
    let global = crate::global::parse(r);
    RateLimitSettings {
        enabled,
        shadow,
        xff_trusted_hops,
        user_header,
        max_keys,
        response_headers,
        grpc_status,
        limits,
        global,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn parse_json(v: Value) -> (RateLimitSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn limits_compile_with_policies() {
        let (s, e) = parse_json(json!({
            "limits": [
                {"name": "tenant", "key": "tenant", "rate": 100, "burst": 200},
                {"name": "per-client", "key": "client_address", "rate": 10, "per": "minute", "burst": 5, "shadow": true},
                {"name": "writes", "key": "route", "prefix": "/orders", "methods": ["POST"], "rate": 1, "per": "hour", "burst": 1},
                {"name": "api-key", "key": {"header": "x-api-key"}, "rate": 5, "burst": 5}
            ]
        }));
        assert_eq!(e, "");
        assert_eq!(s.limits.len(), 4);
        assert_eq!(s.limits[0].policy, "\"tenant\";q=100;w=1");
        assert_eq!(s.limits[1].policy, "\"per-client\";q=10;w=60");
        assert_eq!(s.limits[1].interval_us(), 6_000_000);
        assert_eq!(s.limits[1].tolerance_us(), 24_000_000);
        assert!(s.limits[2].applies(&RequestPath::read("/orders/1").unwrap(), "POST"));
        assert!(!s.limits[2].applies(&RequestPath::read("/orders/1").unwrap(), "GET"));
        assert!(!s.limits[2].applies(&RequestPath::read("/cart").unwrap(), "POST"));
        assert_eq!(s.limits[3].key, KeyKind::Header("x-api-key".into()));
        assert_eq!((s.max_keys, s.xff_trusted_hops), (DEFAULT_MAX_KEYS, 0));
    }

    #[test]
    fn every_bad_limit_names_its_path() {
        let (_, e) = parse_json(json!({
            "max_keys": 0,
            "limits": [
                {"name": "a", "key": "tenant", "rate": 10, "burst": 0},
                {"name": "b", "key": "planet", "rate": 10, "burst": 1},
                {"name": "c", "key": "tenant", "rate": 10},
                {"name": "d", "key": "tenant", "rate": 10, "burst": 1, "per": "day", "colour": 1},
                {"name": "e", "key": "route", "rate": 1, "burst": 1},
                {"name": "a", "key": "tenant", "rate": 1, "burst": 1},
                {"key": "tenant", "rate": 1, "burst": 1},
                {"name": "f", "key": {"header": "X-Bad"}, "rate": 1, "burst": 1}
            ]
        }));
        for expected in [
            "t.max_keys: must be >= 1",
            "t.limits[0].burst: must be >= 1",
            "t.limits[1].key: unknown key kind",
            "t.limits[2].burst: is required",
            "t.limits[3].per: \"day\"",
            "t.limits[3].colour: unknown field",
            "t.limits[4].key: a \"route\" limit needs",
            "t.limits[5].name: duplicate limit name \"a\"",
            "t.limits[6].name: is required",
            "t.limits[7].key.header: must be a lowercase header name",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }
}
