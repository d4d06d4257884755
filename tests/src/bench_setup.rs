//! What `make bench` runs, shared with the tests that check it: the
//! benchmark tenant, its request's token, and the native-equivalent chain
//! (Envoy's own filters configured for the same tenant), which must enforce
//! what the suite enforces for the comparison to be fair
//! (tests/tests/bench_native.rs).

use endpoint_guard::config::GuardSettings;
use meshware_common::Cidr;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The benchmark tenant's host.
pub const HOST: &str = "bench.example";

/// The example profile plus tenant `bench` (host bench.example) with every
/// section configured as a production tenant would, limits far above the
/// benchmark's rate.
/// The benchmark tenant's admin token.
pub const BENCH_ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

pub fn bench_profile() -> Result<String, String> {
    let text = std::fs::read_to_string(crate::root().join("examples/tenants.json"))
        .map_err(|e| format!("examples/tenants.json: {e}"))?;
    let mut p: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let t = &p["tenants"];
    let mut bench = t["acme"].clone();
    bench["jwt_auth"] = t["umbrella"]["jwt_auth"].clone();
    if let Some(provider) = bench["jwt_auth"]["providers"][0].as_object_mut() {
        provider.remove("tenant_claim");
    }
    bench["circuit_breaker"] = t["globex"]["circuit_breaker"].clone();
    // A plain admin token (a local benchmark): the native chain's RBAC can
    // only compare the token itself, not the digest the example holds.
    bench["endpoint_guard"]["admin_tokens"] = json!([BENCH_ADMIN_TOKEN]);
    // As in production: every error is logged, and a sample of successes
    // (configurations "(every request logged)" show what logging all costs).
    bench["access_log"] = json!({"sample_rate": 0.01});
    if let Some(limits) = bench["rate_limit"]["limits"].as_array_mut() {
        for l in limits {
            l["rate"] = json!(1_000_000);
            l["burst"] = json!(1_000_000);
            l["per"] = json!("second");
        }
    }
    // Configured but inert, as between drills: a fault at 0 %.
    bench["fault"] = json!({"faults": [{"name": "drill", "scope": "all", "percent": 0,
        "delay": {"ms": 800}}]});
    p["tenants"]["bench"] = bench;
    p["tenancy"]["hosts"][HOST] = json!("bench");
    Ok(p.to_string())
}

pub fn token() -> Result<String, String> {
    let text = std::fs::read_to_string(crate::root().join("examples/tokens.json"))
        .map_err(|e| format!("examples/tokens.json: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["valid RS256"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no \"valid RS256\" token".into())
}

/// Envoy's own filters for the same concerns as the benchmark tenant's
/// sections, built once per run (`native_chain`) and put into each native
/// configuration's bootstrap (`add_to`).
pub struct NativeChain {
    /// Inserted before the router, in this order.
    filters: Vec<Value>,
    /// The virtual host's `typed_per_filter_config`.
    per_filter_config: Value,
}

/// The native chain for tenant `bench` of `profile` (`bench_profile`). Its
/// endpoint_guard section is read by endpoint_guard's own parser, so the
/// rules are the ones the filter enforces (defaults, replacements and all)
/// and a bad section is an error naming its field.
pub fn native_chain(profile: &str) -> Result<NativeChain, String> {
    let p: Value = serde_json::from_str(profile).map_err(|e| e.to_string())?;
    let tenant = &p["tenants"]["bench"];
    let guards =
        meshware_common::filter::compile::<endpoint_guard::EndpointGuard>(profile.as_bytes())
            .map_err(|e| format!("the benchmark profile: {e}"))?;
    let guard = guards
        .tenant_names()
        .iter()
        .position(|name| name == "bench")
        .and_then(|slot| guards.settings(slot))
        .ok_or("the benchmark profile has no tenant \"bench\"")?;
    let jwks = &tenant["jwt_auth"]["providers"][0]["jwks"];
    let filters = vec![
        json!({"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        json!({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": guard_policies(guard)}
        }}),
        json!({"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"umbrella": {
                "issuer": "https://idp.umbrella.example",
                "audiences": ["api"],
                "local_jwks": {"inline_string": jwks.to_string()},
                "forward_payload_header": "x-jwt-payload"
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "umbrella"}}]
        }}),
        json!({"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench",
            "token_bucket": {"max_tokens": 1_000_000, "tokens_per_fill": 1_000_000, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            // Like the tenant's `response_headers: true`: limit headers on
            // every answer (Envoy's are the older x-ratelimit-* draft).
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03"
        }}),
        json!({"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"response_mutations": [
                {"append": {"header": {"key": "strict-transport-security", "value": "max-age=31536000; includeSubDomains"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                {"append": {"header": {"key": "content-security-policy", "value": "default-src 'self'; frame-ancestors 'none'"}, "append_action": "ADD_IF_ABSENT"}},
                {"append": {"header": {"key": "x-content-type-options", "value": "nosniff"}, "append_action": "ADD_IF_ABSENT"}},
                {"append": {"header": {"key": "x-frame-options", "value": "DENY"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                {"append": {"header": {"key": "referrer-policy", "value": "strict-origin-when-cross-origin"}, "append_action": "ADD_IF_ABSENT"}},
                {"remove": "server"}
            ]}
        }}),
    ];
    let per_filter_config = json!({
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "https://shop.acme.example"}, {"suffix": ".acme.example"}],
            "allow_methods": "GET,POST",
            "allow_headers": "content-type",
            "max_age": "600"
        }
    });
    Ok(NativeChain {
        filters,
        per_filter_config,
    })
}

impl NativeChain {
    /// Puts the chain into a rendered bootstrap
    /// (`meshware_cli::bootstrap::render`).
    pub fn add_to(&self, bootstrap: &mut Value) {
        let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"];
        if let Some(filters) = hcm["http_filters"].as_array_mut() {
            filters.splice(0..0, self.filters.iter().cloned());
        }
        hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] =
            self.per_filter_config.clone();
    }
}

/// endpoint_guard's path and method rules as RBAC deny policies, the way an
/// operator would write them: a protected path is denied (by its normalized
/// prefix) unless the source address is in the rule's ranges or the admin
/// token header holds a token; a route's allowed methods deny the others
/// under its prefix. Not mapped: a tenant-wide `allowed_methods` (the
/// benchmark tenant has none), and body and header size limits (no native
/// filter enforces them without buffering).
fn guard_policies(guard: &GuardSettings) -> Value {
    let url_prefix = |prefix: &str| json!({"url_path": {"path": {"prefix": prefix, "ignore_case": guard.case_insensitive}}});
    // The filter keeps digests only; the profile's token is the plain one.
    let tokens: Vec<Value> = (!guard.admin_tokens.is_empty())
        .then(|| {
            json!({"header": {"name": guard.admin_token_header,
                "string_match": {"exact": BENCH_ADMIN_TOKEN}}})
        })
        .into_iter()
        .collect();
    // One policy per set of ranges: rules sharing it are one or_rules.
    let mut by_cidrs: Vec<(&[Cidr], Vec<Value>)> = Vec::new();
    for (pattern, rule) in guard.rules.iter() {
        let path = url_prefix(pattern.prefix());
        match by_cidrs
            .iter_mut()
            .find(|(c, _)| *c == rule.allow_cidrs.as_slice())
        {
            Some((_, paths)) => paths.push(path),
            None => by_cidrs.push((&rule.allow_cidrs, vec![path])),
        }
    }
    let mut policies = serde_json::Map::new();
    for (i, (cidrs, paths)) in by_cidrs.into_iter().enumerate() {
        let allowed: Vec<Value> = cidrs
            .iter()
            .map(remote_ip)
            .chain(tokens.iter().cloned())
            .collect();
        let principal = if allowed.is_empty() {
            json!({"any": true})
        } else {
            json!({"not_id": {"or_ids": {"ids": allowed}}})
        };
        policies.insert(
            format!("protected-{i}"),
            json!({"permissions": [{"or_rules": {"rules": paths}}], "principals": [principal]}),
        );
    }
    for (i, (pattern, limits)) in guard.routes.iter().enumerate() {
        let Some(methods) = &limits.methods else {
            continue;
        };
        let method_rules: Vec<Value> = methods
            .iter()
            .map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}}))
            .collect();
        policies.insert(
            format!("route-{i}-methods"),
            json!({
                "permissions": [{"and_rules": {"rules": [
                    url_prefix(pattern.prefix()),
                    {"not_rule": {"or_rules": {"rules": method_rules}}}
                ]}}],
                "principals": [{"any": true}]
            }),
        );
    }
    Value::Object(policies)
}

/// A range as an RBAC principal.
fn remote_ip(cidr: &Cidr) -> Value {
    let (address, prefix_len) = match *cidr {
        Cidr::V4 { network, mask } => (Ipv4Addr::from(network).to_string(), mask.count_ones()),
        Cidr::V6 { network, mask } => (Ipv6Addr::from(network).to_string(), mask.count_ones()),
    };
    json!({"remote_ip": {"address_prefix": address, "prefix_len": prefix_len}})
}
