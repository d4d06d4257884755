//! The tenant profile: one JSON document for every filter and every tenant.
//!
//! ```json
//! { "tenancy":  { "hosts": {..}, "path_prefixes": {..},
//!                 "header": {"name": "x-tenant-id", "trusted": false},
//!                 "default": "public" },
//!   "defaults": { "<section>": {..} },
//!   "tenants":  { "<tenant>": { "<section>": {..} } } }
//! ```
//! `compile` validates the shared parts, then one filter's section for every
//! tenant, collecting every error with its JSON path.

use crate::errors::{join, ConfigErrors};
use crate::path::{PathPattern, PathRules, RequestPath};
use crate::request::RequestPolicy;
use crate::section::{check_header_name, Layer, SectionReader};
use crate::tenancy::{Names, Slot, Source, Tenancy, TenantHeader};
use serde_json::{Map, Value};

/// Section names of the filters in this suite. A section name not listed here
/// is a typo and an error; a filter reads only its own section.
pub const KNOWN_SECTIONS: &[&str] = &[
    "trace_context",
    "security_headers",
    "jwt_auth",
    "access_log",
    "endpoint_guard",
    "cors",
    "rate_limit",
    "idempotency",
    "canary",
    "circuit_breaker",
    "fault",
];

/// Sections every filter reads besides its own (`request`: the path and
/// header policy of `crate::request`).
pub const COMMON_SECTIONS: &[&str] = &[crate::request::SECTION];

/// The metric label and log name of the overflow tenant slot.
pub const OTHER_TENANT: &str = "other";

/// Upper bound on configured tenants: every tenant costs metrics per filter.
pub const MAX_TENANTS: usize = 1000;

const DEFAULT_TENANT_HEADER: &str = "x-tenant-id";

/// A profile compiled for one filter: tenancy plus that filter's settings per tenant.
#[derive(Debug)]
pub struct Profile<S> {
    pub tenancy: Tenancy,
    /// Slot -> tenant name; the last one is `other`.
    names: Vec<String>,
    /// Slot -> settings; the `other` slot holds the default tenant's settings.
    settings: Vec<S>,
    /// Slot -> request policy (`request` section and owned headers).
    requests: Vec<RequestPolicy>,
    /// The live configuration source (`config_source`), when set.
    pub config_source: Option<crate::live::SourceSettings>,
}

impl<S> Profile<S> {
    pub fn tenant_names(&self) -> &[String] {
        &self.names
    }

    /// The slot of a configured tenant (never the reserved `other`).
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.names
            .iter()
            .position(|n| n == name)
            .filter(|_| name != OTHER_TENANT)
    }

    pub fn tenant_name(&self, slot: Slot) -> &str {
        self.names
            .get(slot)
            .map(String::as_str)
            .unwrap_or(OTHER_TENANT)
    }

    pub fn settings(&self, slot: Slot) -> Option<&S> {
        self.settings.get(slot)
    }

    pub fn resolve(
        &self,
        authority: Option<&str>,
        path: &RequestPath,
        header_value: Option<&str>,
    ) -> (Slot, Source) {
        self.tenancy.resolve(authority, path, header_value)
    }

    /// The tenant's request policy (the default policy for an unknown slot).
    pub fn request_policy(&self, slot: Slot) -> &RequestPolicy {
        static DEFAULT: RequestPolicy = RequestPolicy {
            allowed_forms: crate::path::Forms::NONE,
            method_override: crate::request::MethodOverride::Strip,
            owned_headers: Vec::new(),
            credential_headers: Vec::new(),
            routing_header: None,
        };
        self.requests.get(slot).unwrap_or(&DEFAULT)
    }
}

fn tenant_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        });
    if !ok {
        return Some(
            "tenant names are 1..63 chars of [a-z0-9_-] starting with a letter or digit \
             (they become metric labels)"
                .to_string(),
        );
    }
    if name == OTHER_TENANT {
        return Some(format!(
            "\"{OTHER_TENANT}\" is reserved for unknown tenants"
        ));
    }
    None
}

fn as_object<'a>(
    value: &'a Value,
    path: &str,
    errors: &mut ConfigErrors,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(m) => Some(m),
        _ => {
            errors.push(path, "must be an object");
            None
        }
    }
}

fn check_keys(map: &Map<String, Value>, path: &str, allowed: &[&str], errors: &mut ConfigErrors) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(
                join(path, key),
                format!(
                    "unknown field (expected one of: {})",
                    crate::errors::joined(allowed, ", ")
                ),
            );
        }
    }
}

/// Checks a `{ "<section>": {..} }` object (a tenant, or `defaults`).
fn check_sections(map: &Map<String, Value>, path: &str, errors: &mut ConfigErrors) {
    for (key, value) in map {
        let p = join(path, key);
        if !KNOWN_SECTIONS.contains(&key.as_str()) && !COMMON_SECTIONS.contains(&key.as_str()) {
            errors.push(
                p,
                format!(
                    "unknown section (expected one of: {}, {})",
                    crate::errors::joined(KNOWN_SECTIONS, ", "),
                    crate::errors::joined(COMMON_SECTIONS, ", ")
                ),
            );
        } else {
            as_object(value, &p, errors);
        }
    }
}

struct Shared<'a> {
    tenants: Vec<(&'a str, &'a Map<String, Value>)>,
    defaults: Option<&'a Map<String, Value>>,
    tenancy: Tenancy,
}

fn parse_shared<'a>(root: &'a Value, errors: &mut ConfigErrors) -> Option<Shared<'a>> {
    let root = as_object(root, "(root)", errors)?;
    check_keys(
        root,
        "",
        &["tenancy", "defaults", "tenants", crate::live::SECTION],
        errors,
    );

    // tenants: sorted by name (serde_json's map is ordered), slot = position.
    let mut tenants = Vec::new();
    match root.get("tenants") {
        None => errors.push(
            "tenants",
            "is required (an object of tenant name -> sections)",
        ),
        Some(v) => {
            if let Some(map) = as_object(v, "tenants", errors) {
                if map.len() > MAX_TENANTS {
                    errors.push("tenants", format!("at most {MAX_TENANTS} tenants"));
                }
                for (name, sections) in map {
                    let p = join("tenants", name);
                    if let Some(problem) = tenant_name_problem(name) {
                        errors.push(p.clone(), problem);
                    }
                    if let Some(s) = as_object(sections, &p, errors) {
                        check_sections(s, &p, errors);
                        tenants.push((name.as_str(), s));
                    }
                }
            }
        }
    }
    let defaults = match root.get("defaults") {
        None => None,
        Some(v) => {
            let m = as_object(v, "defaults", errors);
            if let Some(m) = m {
                check_sections(m, "defaults", errors);
            }
            m
        }
    };

    let by_name = Names::new(
        tenants
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.to_string(), i))
            .collect(),
    );
    let other_slot = tenants.len();
    let lookup = |name: &Value, path: &str, errors: &mut ConfigErrors| -> Option<Slot> {
        match name {
            Value::String(s) => match by_name.get(s.as_str()) {
                Some(slot) => Some(slot),
                None => {
                    errors.push(
                        path,
                        format!("unknown tenant \"{s}\" (not declared in tenants)"),
                    );
                    None
                }
            },
            _ => {
                errors.push(path, "must be a tenant name (string)");
                None
            }
        }
    };

    let empty = Map::new();
    let tenancy_map = match root.get("tenancy") {
        None => {
            errors.push(
                "tenancy",
                "is required (at least {\"default\": \"<tenant>\"})",
            );
            &empty
        }
        Some(v) => as_object(v, "tenancy", errors).unwrap_or(&empty),
    };
    check_keys(
        tenancy_map,
        "tenancy",
        &["hosts", "path_prefixes", "header", "default"],
        errors,
    );

    let mut exact_hosts = Vec::new();
    let mut wildcard_hosts = Vec::new();
    if let Some(v) = tenancy_map.get("hosts") {
        if let Some(map) = as_object(v, "tenancy.hosts", errors) {
            for (host, tenant) in map {
                let p = join("tenancy.hosts", host);
                let slot = lookup(tenant, &p, errors);
                let (pattern, wildcard) = match host.strip_prefix("*.") {
                    Some(rest) => (rest, true),
                    None => (host.as_str(), false),
                };
                let valid = !pattern.is_empty()
                    && pattern.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.[]:".contains(&b)
                    })
                    && !pattern.starts_with('.')
                    && !pattern.ends_with('.');
                if !valid {
                    errors.push(
                        p,
                        "host keys are lowercase names without port, optionally \"*.\" + suffix",
                    );
                    continue;
                }
                if let Some(slot) = slot {
                    if wildcard {
                        wildcard_hosts.push((format!(".{pattern}"), slot));
                    } else {
                        exact_hosts.push((pattern.to_string(), slot));
                    }
                }
            }
        }
    }
    // Longest first; ties by name.
    crate::order::sort_by(&mut wildcard_hosts, |a, b| {
        a.0.len() > b.0.len() || (a.0.len() == b.0.len() && a.0 < b.0)
    });

    // Matched like every path rule: on the canonical reading, on a segment
    // boundary, ignoring case (`/T/x/` is tenant x's path to a
    // case-insensitive backend).
    let mut path_prefixes = Vec::new();
    let mut prefix_keys = Vec::new();
    if let Some(v) = tenancy_map.get("path_prefixes") {
        if let Some(map) = as_object(v, "tenancy.path_prefixes", errors) {
            for (prefix, tenant) in map {
                let p = join("tenancy.path_prefixes", prefix);
                let slot = lookup(tenant, &p, errors);
                match PathPattern::compile(prefix, false, true) {
                    Ok(pattern) => {
                        if let Some(slot) = slot {
                            path_prefixes.push((pattern, slot));
                            prefix_keys.push(prefix.clone());
                        }
                    }
                    Err(msg) => errors.push(p, msg),
                }
            }
        }
    }
    let path_prefixes = PathRules::new(path_prefixes);
    for (earlier, later) in path_prefixes.shadowed(|_, _| true) {
        let key = |i: usize| prefix_keys.get(i).map_or("", String::as_str);
        errors.push(
            join("tenancy.path_prefixes", key(later)),
            format!("the same path as \"{}\": it can never apply", key(earlier)),
        );
    }

    let header = match tenancy_map.get("header") {
        None => Some(TenantHeader {
            name: DEFAULT_TENANT_HEADER.to_string(),
            trusted: false,
        }),
        Some(Value::Null) => None,
        Some(v) => as_object(v, "tenancy.header", errors).map(|m| {
            check_keys(m, "tenancy.header", &["name", "trusted"], errors);
            let name = match m.get("name") {
                None => DEFAULT_TENANT_HEADER.to_string(),
                Some(Value::String(s)) => {
                    if let Err(msg) = check_header_name(s) {
                        errors.push("tenancy.header.name", msg);
                    }
                    s.clone()
                }
                Some(_) => {
                    errors.push("tenancy.header.name", "must be a string");
                    DEFAULT_TENANT_HEADER.to_string()
                }
            };
            let trusted = match m.get("trusted") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    errors.push("tenancy.header.trusted", "must be a boolean");
                    false
                }
            };
            TenantHeader { name, trusted }
        }),
    };

    let default_slot = match tenancy_map.get("default") {
        None => {
            errors.push(
                "tenancy.default",
                "is required (the tenant for unmatched requests)",
            );
            None
        }
        Some(v) => lookup(v, "tenancy.default", errors),
    };

    Some(Shared {
        tenants,
        defaults,
        tenancy: Tenancy {
            exact_hosts: Names::new(exact_hosts),
            wildcard_hosts,
            path_prefixes,
            header,
            by_name,
            default_slot: default_slot.unwrap_or(0),
            other_slot,
        },
    })
}

fn section_layer<'a>(
    sections: &'a Map<String, Value>,
    base: &str,
    section: &str,
) -> Option<(&'a Map<String, Value>, String)> {
    match sections.get(section)? {
        Value::Object(m) => Some((m, join(base, section))),
        _ => None, // reported by check_sections
    }
}

/// The sections a profile configures anywhere (in `defaults` or for any
/// tenant); `None` when it is not a JSON object (compiling reports why).
/// The suite module runs only these concerns. Sorted, each once.
pub fn sections_present(json: &[u8]) -> Option<Vec<String>> {
    let root: Value = crate::json::parse(json).ok()?;
    let root = root.as_object()?;
    // A Vec, not a BTreeSet: one B-tree fewer in every module.
    let mut present = Vec::new();
    let mut add = |sections: &Value| {
        if let Some(map) = sections.as_object() {
            present.extend(map.keys().cloned());
        }
    };
    if let Some(defaults) = root.get("defaults") {
        add(defaults);
    }
    if let Some(tenants) = root.get("tenants").and_then(Value::as_object) {
        tenants.values().for_each(add);
    }
    crate::order::sort(&mut present);
    present.dedup();
    Some(present)
}

/// Reads one section with `parse`: the tenant's layer over `defaults`'.
fn read_layered<S>(
    tenant: Option<&(&Map<String, Value>, String)>,
    defaults: Option<&(&Map<String, Value>, String)>,
    errors: &mut ConfigErrors,
    parse: impl Fn(&mut SectionReader<'_>) -> S,
) -> S {
    let layers = [tenant, defaults]
        .into_iter()
        .flatten()
        .map(|(fields, path)| Layer { fields, path })
        .collect();
    let mut reader = SectionReader::new(layers, errors);
    let settings = parse(&mut reader);
    reader.finish();
    settings
}

/// Every tenant's request policy, the `other` slot's last (the default
/// tenant's); errors of the `request` sections are reported once, here.
fn request_policies(shared: &Shared<'_>, errors: &mut ConfigErrors) -> Vec<RequestPolicy> {
    let section = crate::request::SECTION;
    let defaults = shared
        .defaults
        .and_then(|d| section_layer(d, "defaults", section));
    let read = |tenant: Option<&(&Map<String, Value>, String)>, errors: &mut ConfigErrors| {
        read_layered(tenant, defaults.as_ref(), errors, crate::request::parse)
    };
    let _ = read(None, errors);
    let mut policies = Vec::with_capacity(shared.tenants.len() + 1);
    for (name, sections) in &shared.tenants {
        let layer = section_layer(sections, &join("tenants", name), section);
        let mut policy = read(layer.as_ref(), errors);
        policy.owned_headers = crate::request::owned_headers(
            Some(sections),
            shared.defaults,
            shared.tenancy.header(),
            &policy,
        );
        policy.credential_headers =
            crate::request::credential_headers(Some(sections), shared.defaults);
        policy.routing_header = crate::request::routing_header(Some(sections), shared.defaults);
        policies.push(policy);
    }
    let other = policies
        .get(shared.tenancy.default_slot)
        .cloned()
        .unwrap_or_default();
    policies.push(other);
    policies
}

/// Validates the whole profile and compiles `section` for every tenant with `parse`.
pub fn compile<S>(
    json: &[u8],
    section: &str,
    parse: impl Fn(&mut SectionReader<'_>) -> S,
) -> Result<Profile<S>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let root: Value = match crate::json::parse(json) {
        Ok(v) => v,
        Err(e) => {
            errors.push("(root)", format!("invalid JSON: {e}"));
            return Err(errors);
        }
    };
    let config_source = crate::live::parse_settings(&root, &mut errors);
    let Some(shared) = parse_shared(&root, &mut errors) else {
        return Err(errors.finish());
    };
    let defaults = shared
        .defaults
        .and_then(|d| section_layer(d, "defaults", section));

    let read = |tenant: Option<&(&Map<String, Value>, String)>, errors: &mut ConfigErrors| -> S {
        read_layered(tenant, defaults.as_ref(), errors, &parse)
    };

    // `defaults` on its own, so a bad default is found even where every tenant overrides it.
    let _ = read(None, &mut errors);
    let tenant_layers: Vec<_> = shared
        .tenants
        .iter()
        .map(|(name, sections)| section_layer(sections, &join("tenants", name), section))
        .collect();
    let mut settings: Vec<S> = tenant_layers
        .iter()
        .map(|layer| read(layer.as_ref(), &mut errors))
        .collect();
    // The `other` slot gets the default tenant's settings (compiled again, at configure time).
    let default_layer = tenant_layers
        .get(shared.tenancy.default_slot)
        .and_then(Option::as_ref);
    settings.push(read(default_layer, &mut errors));
    let mut names: Vec<String> = shared.tenants.iter().map(|(n, _)| n.to_string()).collect();
    names.push(OTHER_TENANT.to_string());
    let requests = request_policies(&shared, &mut errors);

    if errors.is_empty() {
        Ok(Profile {
            tenancy: shared.tenancy,
            names,
            settings,
            requests,
            config_source,
        })
    } else {
        Err(errors.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A stand-in section: one number and one flag.
    fn parse_demo(r: &mut SectionReader<'_>) -> (f64, bool) {
        (
            r.f64_in("sample_rate", 1.0, 0.0, 1.0),
            r.bool("echo", false),
        )
    }

    fn compile_json(v: Value) -> Result<Profile<(f64, bool)>, ConfigErrors> {
        compile(v.to_string().as_bytes(), "trace_context", parse_demo)
    }

    #[test]
    fn sections_present_in_defaults_or_any_tenant() {
        let v = json!({
            "tenancy": {"default": "a"},
            "defaults": {"cors": {}},
            "tenants": {"a": {"rate_limit": {"rps": 1}}, "b": {"cors": {}, "canary": {}}}
        });
        let present = sections_present(v.to_string().as_bytes());
        let names: Vec<String> = present.map(|p| p.into_iter().collect()).unwrap_or_default();
        assert_eq!(names, vec!["canary", "cors", "rate_limit"]);
        assert!(sections_present(b"[1]").is_none());
        assert!(sections_present(b"{").is_none());
        let empty = sections_present(b"{}");
        assert_eq!(empty.map(|p| p.len()), Some(0));
    }

    fn example() -> Value {
        json!({
            "tenancy": {
                "hosts": {"shop.acme.example": "acme", "*.globex.example": "globex",
                          "*.eu.globex.example": "acme"},
                "path_prefixes": {"/t/initech/": "initech", "/t/": "public"},
                "header": {"name": "x-tenant-id", "trusted": true},
                "default": "public"
            },
            "defaults": {"trace_context": {"sample_rate": 0.25}},
            "tenants": {
                "acme": {"trace_context": {"echo": true}},
                "globex": {"trace_context": {"sample_rate": 1.0}},
                "initech": {},
                "public": {"trace_context": {"sample_rate": 0.0}}
            }
        })
    }

    #[test]
    fn resolution_order_host_prefix_header_default() {
        let p = compile_json(example()).unwrap();
        let name = |a: Option<&str>, path: Option<&str>, h: Option<&str>| {
            let path = RequestPath::read(path.unwrap_or("/")).unwrap();
            let (slot, src) = p.resolve(a, &path, h);
            (p.tenant_name(slot).to_string(), src)
        };
        assert_eq!(
            name(Some("SHOP.acme.example:443"), None, None),
            ("acme".into(), Source::Host)
        );
        assert_eq!(
            name(Some("api.globex.example"), None, None),
            ("globex".into(), Source::Host)
        );
        // The longest wildcard suffix wins.
        assert_eq!(
            name(Some("x.eu.globex.example"), None, None),
            ("acme".into(), Source::Host)
        );
        // The bare suffix is not matched by "*.".
        assert_eq!(name(Some("globex.example"), None, None).1, Source::Default);
        // Host beats prefix; the longest prefix wins; the query is ignored.
        assert_eq!(
            name(Some("shop.acme.example"), Some("/t/initech/x"), None).0,
            "acme"
        );
        assert_eq!(
            name(Some("other.example"), Some("/t/initech/x?a=1"), None).0,
            "initech"
        );
        assert_eq!(name(None, Some("/t/zzz"), None).0, "public");
        assert_eq!(
            name(None, Some("/x"), Some("globex")),
            ("globex".into(), Source::Header)
        );
        // A trusted header naming no tenant lands in the bounded "other" slot.
        assert_eq!(
            name(None, Some("/x"), Some("zeta")),
            ("other".into(), Source::Header)
        );
        assert_eq!(
            name(None, Some("/x"), None),
            ("public".into(), Source::Default)
        );
    }

    #[test]
    fn path_prefixes_match_the_canonical_path_and_every_reading() {
        let p = compile_json(example()).unwrap();
        let tenant = |raw: &str, all: bool| {
            let mut path = RequestPath::read(raw).unwrap();
            if all {
                path.allow(raw, crate::path::Forms::ALL).unwrap();
            }
            let (slot, src) = p.resolve(None, &path, None);
            (p.tenant_name(slot).to_string(), src)
        };
        for raw in [
            "/t/initech/x",
            "/T/Initech/x",
            "/t/./initech/x",
            "/t/x/../initech/y",
            "/t/initech",
        ] {
            assert_eq!(tenant(raw, false).0, "initech", "{raw}");
        }
        assert_eq!(tenant("/t/initechx", false).0, "public");
        // Readings naming different tenants: refused by the caller.
        assert_eq!(tenant("/t/%69nitech/x", true).1, Source::AmbiguousPath);
        assert_eq!(tenant("/t/initech/..;/x", true).1, Source::AmbiguousPath);
        // Express reads `initech;v=1` as another segment.
        assert_eq!(tenant("/t/initech;v=1/x", true).1, Source::AmbiguousPath);
        assert_eq!(
            tenant("/t/initech/a;v=1", true),
            ("initech".to_string(), Source::PathPrefix)
        );
    }

    #[test]
    fn untrusted_header_is_ignored() {
        let mut v = example();
        v["tenancy"]["header"]["trusted"] = json!(false);
        let p = compile_json(v).unwrap();
        let (slot, src) = p.resolve(None, &RequestPath::read("/x").unwrap(), Some("globex"));
        assert_eq!((p.tenant_name(slot), src), ("public", Source::Default));
    }

    #[test]
    fn sections_merge_tenant_over_defaults_over_builtin() {
        let p = compile_json(example()).unwrap();
        let of = |name: &str| {
            let slot = p.tenant_names().iter().position(|n| n == name).unwrap();
            *p.settings(slot).unwrap()
        };
        assert_eq!(of("acme"), (0.25, true));
        assert_eq!(of("globex"), (1.0, false));
        assert_eq!(of("initech"), (0.25, false));
        assert_eq!(of("public"), (0.0, false));
        // "other" carries the default tenant's settings.
        assert_eq!(of("other"), (0.0, false));
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let v = json!({
            "tenancy": {"hosts": {"Bad Host": "acme", "a.example": "nobody"},
                        "path_prefixes": {"x": "acme"},
                        "header": {"name": "X-Up", "trusted": "yes"},
                        "default": "public", "extra": 1},
            "defaults": {"trace_context": {"sample_rate": "high"}, "tracecontext": {}},
            "tenants": {"acme": {"trace_context": {"sample_rate": 2, "bogus": true}},
                        "Other": {}, "other": {}},
            "version": 3
        });
        let text = compile_json(v).unwrap_err().to_string();
        for expected in [
            "version: unknown field",
            "tenancy.extra: unknown field",
            "tenancy.hosts[\"Bad Host\"]: host keys are lowercase",
            "tenancy.hosts[\"a.example\"]: unknown tenant \"nobody\"",
            "tenancy.path_prefixes.x: \"x\": a path starts with \"/\"",
            "tenancy.header.name: must be a lowercase header name",
            "tenancy.header.trusted: must be a boolean",
            "tenancy.default: unknown tenant \"public\"",
            "defaults.tracecontext: unknown section",
            "defaults.trace_context.sample_rate: must be a number",
            "tenants.acme.trace_context.sample_rate: must be <= 1",
            "tenants.acme.trace_context.bogus: unknown field",
            "tenants.Other: tenant names are",
            "tenants.other: \"other\" is reserved",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Reported once even though every tenant reads the bad default.
        assert_eq!(
            text.matches("defaults.trace_context.sample_rate").count(),
            1
        );
    }

    #[test]
    fn wrong_types_and_bad_json_are_errors_not_panics() {
        assert!(compile(b"{not json", "trace_context", parse_demo)
            .unwrap_err()
            .to_string()
            .starts_with("(root): invalid JSON"));
        let text = compile_json(json!([1])).unwrap_err().to_string();
        assert_eq!(text, "(root): must be an object");
        let text = compile_json(json!({"tenancy": 1, "tenants": {"a": []}}))
            .unwrap_err()
            .to_string();
        assert!(text.contains("tenancy: must be an object"), "{text}");
        assert!(text.contains("tenants.a: must be an object"), "{text}");
        let text = compile_json(
            json!({"tenancy": {"default": "a"}, "tenants": {"a": {"trace_context": 5}}}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(text, "tenants.a.trace_context: must be an object");
    }
}
