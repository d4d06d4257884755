//! What `make bench` runs, shared with the tests that check it: the
//! benchmark tenant, its request's token, and the native-equivalent chain
//! (Envoy's own filters configured for the same tenant), which must enforce
//! what the suite enforces for the comparison to be fair
//! (tests/tests/bench_native.rs).

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The benchmark tenant's host.
pub const HOST: &str = "bench.example";

/// The example profile plus tenant `bench` (host bench.example) with every
/// section configured as a production tenant would, limits far above the
/// benchmark's rate.
pub fn bench_profile() -> Result<(String, Value), String> {
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
    p["tenants"]["bench"] = bench.clone();
    p["tenancy"]["hosts"][HOST] = json!("bench");
    Ok((p.to_string(), bench))
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

/// Envoy's own filters for the same concerns, inserted before the router,
/// configured from the benchmark tenant's sections.
fn native_filters(tenant: &Value) -> Vec<Value> {
    let jwks = &tenant["jwt_auth"]["providers"][0]["jwks"];
    vec![
        json!({"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        json!({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": guard_policies(&tenant["endpoint_guard"])}
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
    ]
}

/// endpoint_guard's path and method rules as RBAC deny policies, the way an
/// operator would write them: a protected path (the defaults plus the
/// tenant's extra ones, by prefix, ignoring case) is denied unless the source
/// address is in the rule's ranges or the admin token header holds a token; a
/// route's allowed methods deny the others under its prefix. Body and header
/// size limits have no native filter that does not buffer, so none here.
fn guard_policies(guard: &Value) -> Value {
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let section_cidrs = texts(&guard["allow_cidrs"]);
    let mut rules: Vec<(String, Vec<String>)> = endpoint_guard::config::DEFAULT_PROTECTED_PATHS
        .iter()
        .map(|p| (p.to_string(), section_cidrs.clone()))
        .collect();
    for rule in guard["extra_protected_paths"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match rule {
            Value::String(path) => rules.push((path.clone(), section_cidrs.clone())),
            rule => rules.push((
                rule["path"].as_str().unwrap_or_default().to_string(),
                match rule.get("allow_cidrs") {
                    Some(own) => texts(own),
                    None => section_cidrs.clone(),
                },
            )),
        }
    }
    // One policy per set of ranges: rules sharing it are one or_rules.
    let mut by_cidrs: BTreeMap<Vec<String>, Vec<Value>> = BTreeMap::new();
    for (path, cidrs) in rules {
        let prefix = path.trim_end_matches('*');
        by_cidrs
            .entry(cidrs)
            .or_default()
            .push(json!({"url_path": {"path": {"prefix": prefix, "ignore_case": true}}}));
    }
    let token_header = guard["admin_token_header"]
        .as_str()
        .unwrap_or("x-admin-token");
    let tokens = texts(&guard["admin_tokens"]);
    let mut policies = serde_json::Map::new();
    for (i, (cidrs, paths)) in by_cidrs.into_iter().enumerate() {
        let mut allowed: Vec<Value> = cidrs
            .iter()
            .filter_map(|c| {
                let (address, len) = c
                    .split_once('/')
                    .unwrap_or((c, if c.contains(':') { "128" } else { "32" }));
                let len: u32 = len.parse().ok()?;
                Some(json!({"remote_ip": {"address_prefix": address, "prefix_len": len}}))
            })
            .collect();
        allowed.extend(
            tokens
                .iter()
                .map(|t| json!({"header": {"name": token_header, "string_match": {"exact": t}}})),
        );
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
    for (i, route) in guard["routes"].as_array().into_iter().flatten().enumerate() {
        let methods = texts(&route["allowed_methods"]);
        let (Some(prefix), false) = (route["prefix"].as_str(), methods.is_empty()) else {
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
                    {"url_path": {"path": {"prefix": prefix}}},
                    {"not_rule": {"or_rules": {"rules": method_rules}}}
                ]}}],
                "principals": [{"any": true}]
            }),
        );
    }
    Value::Object(policies)
}

/// Puts the native chain into a rendered bootstrap (`meshware_cli::bootstrap::render`):
/// its filters before the router, CORS's policy on the virtual host.
pub fn add_native_chain(bootstrap: &mut Value, tenant: &Value) {
    let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    if let Some(filters) = hcm["http_filters"].as_array_mut() {
        for (i, f) in native_filters(tenant).into_iter().enumerate() {
            filters.insert(i, f);
        }
    }
    hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] = json!({
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "https://shop.acme.example"}, {"suffix": ".acme.example"}],
            "allow_methods": "GET,POST",
            "allow_headers": "content-type",
            "max_age": "600"
        }
    });
}
