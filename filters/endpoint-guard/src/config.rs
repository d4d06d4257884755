//! The `endpoint_guard` section of the profile.

use meshware_common::path::{PathPattern, PathRules};
use meshware_common::request::DEFAULT_ADMIN_TOKEN_HEADER as ADMIN_TOKEN_HEADER;
use meshware_common::section::{check_header_name, check_method, path_rules};
use meshware_common::{Cidr, SectionReader};
use serde_json::Value;

/// Paths services keep exposing by accident: heap dumps, env vars, configs.
pub const DEFAULT_PROTECTED_PATHS: &[&str] = &[
    "/debug/pprof",
    "/debug/vars",
    "/actuator",
    "/metrics",
    "/admin",
    "/.env",
    "/server-status",
    "/.git",
];

pub const DEFAULT_ADMIN_TOKEN_HEADER: &str = ADMIN_TOKEN_HEADER;
/// Shorter admin tokens are guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Who may reach one protected path: the rule's own `allow_cidrs`, else
/// the section's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow_cidrs: Vec<Cidr>,
}

/// Request limits; `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Upper-case methods; `None`: any method.
    pub methods: Option<Vec<String>>,
    /// The `allow` header value of a 405, prepared once.
    pub allow_header: String,
    pub max_body_bytes: Option<u64>,
    pub max_header_count: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_url_length: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub enabled: bool,
    pub case_insensitive: bool,
    /// Protected paths: the most specific match decides who may pass.
    pub rules: PathRules<Rule>,
    pub admin_token_header: String,
    /// SHA-256 digests of the admin tokens: configured as
    /// `sha256:<hex>`, or hashed here from a plain token. The presented
    /// token is hashed and compared with each in constant time.
    pub admin_tokens: Vec<[u8; 32]>,
    /// 404 (default: scanners learn nothing) or 403.
    pub block_status: u32,
    /// Tenant-wide limits.
    pub limits: Limits,
    /// The most specific match replaces the tenant-wide limits it sets.
    pub routes: PathRules<Limits>,
}

/// The prefix of an admin token given as its SHA-256 digest (hex), as
/// `meshware hash-token` prints it: the profile then holds no secret.
pub const HASH_PREFIX: &str = "sha256:";

/// The 32-byte digest in `sha256:<64 hex digits>`.
pub fn parse_token_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix(HASH_PREFIX)?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let (hi, lo) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// SHA-256 of a token.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

fn check_token(t: &str) -> Result<(), String> {
    if t.starts_with(HASH_PREFIX) {
        return match parse_token_hash(t) {
            Some(_) => Ok(()),
            None => Err(
                "a hashed admin token is \"sha256:\" and 64 hex digits (meshware hash-token)"
                    .to_string(),
            ),
        };
    }
    if t.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "admin tokens are at least {MIN_ADMIN_TOKEN_LEN} characters"
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("admin tokens are printable ASCII without spaces".to_string());
    }
    Ok(())
}

/// `admin_tokens`: each a plain token, `sha256:<hex>`, or `{"env": "NAME"}`
/// naming a VM environment variable that holds either form.
fn read_admin_tokens(r: &mut SectionReader<'_>) -> Vec<[u8; 32]> {
    use meshware_common::secret;
    let Some((value, path)) = r.raw("admin_tokens") else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        r.error(path, "must be an array of tokens");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let from = match secret::source(item) {
            Ok(from) => from,
            Err(e) => {
                r.error(at, e);
                continue;
            }
        };
        match secret::resolve(item) {
            Ok(Some(token)) => match check_token(&token) {
                Ok(()) => out.push(
                    parse_token_hash(&token).unwrap_or_else(|| token_digest(token.as_bytes())),
                ),
                Err(e) if matches!(from, secret::SecretSource::Env(_)) => {
                    r.error(at, format!("{}: {e}", from.describe()))
                }
                Err(e) => r.error(at, e),
            },
            Ok(None) => {} // shape only (CLI): the proxy resolves it
            Err(e) => r.error(at, e),
        }
    }
    out
}

fn check_cidr(c: &str) -> Result<(), String> {
    Cidr::parse(c).map(|_| ())
}

fn cidrs(list: &[String]) -> Vec<Cidr> {
    list.iter().filter_map(|c| Cidr::parse(c).ok()).collect()
}

fn compile_pattern(
    r: &mut SectionReader<'_>,
    path: String,
    text: &str,
    lowercase: bool,
) -> Option<PathPattern> {
    match PathPattern::compile(text, false, lowercase) {
        Ok(p) => Some(p),
        Err(msg) => {
            r.error(path, msg);
            None
        }
    }
}

fn allow_header(methods: &Option<Vec<String>>) -> String {
    methods
        .as_ref()
        .map(|m| meshware_common::errors::joined(m, ", "))
        .unwrap_or_default()
}

/// Reads the limit fields shared by the section and each route.
fn read_limits(r: &mut SectionReader<'_>, inherited: &Limits) -> Limits {
    let methods = match r.raw("allowed_methods") {
        None => inherited.methods.clone(),
        Some((Value::Null, _)) => None,
        Some(_) => Some(r.string_list("allowed_methods", &[], check_method)),
    };
    fn number(r: &mut SectionReader<'_>, key: &'static str, inherited: Option<u64>) -> Option<u64> {
        match r.raw(key) {
            None => inherited,
            Some(_) => r.opt_u64_in(key, 1, u64::MAX),
        }
    }
    let max_body_bytes = number(r, "max_body_bytes", inherited.max_body_bytes);
    let max_header_count = number(r, "max_header_count", inherited.max_header_count);
    let max_header_bytes = number(r, "max_header_bytes", inherited.max_header_bytes);
    let max_url_length = number(r, "max_url_length", inherited.max_url_length);
    Limits {
        allow_header: allow_header(&methods),
        methods,
        max_body_bytes,
        max_header_count,
        max_header_bytes,
        max_url_length,
    }
}

/// Adds a protected path; an operator's entry replaces an earlier one with
/// the same pattern (a default, or `protected_paths` under
/// `extra_protected_paths`) rather than being shadowed by it.
fn add_rule(rules: &mut Vec<(PathPattern, Rule)>, pattern: PathPattern, rule: Rule) {
    match rules.iter_mut().find(|(p, _)| *p == pattern) {
        Some(existing) => existing.1 = rule,
        None => rules.push((pattern, rule)),
    }
}

fn read_rules(
    r: &mut SectionReader<'_>,
    section_cidrs: &[Cidr],
    lowercase: bool,
) -> PathRules<Rule> {
    let mut rules = Vec::new();
    let section_rule = || Rule {
        allow_cidrs: section_cidrs.to_vec(),
    };
    for key in ["protected_paths", "extra_protected_paths"] {
        let Some((value, path)) = r.raw(key) else {
            if key == "protected_paths" {
                for p in DEFAULT_PROTECTED_PATHS {
                    if let Ok(pattern) = PathPattern::compile(p, false, lowercase) {
                        add_rule(&mut rules, pattern, section_rule());
                    }
                }
            }
            continue;
        };
        let Value::Array(items) = value else {
            r.error(
                path,
                "must be an array of paths or {path, allow_cidrs} objects",
            );
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item {
                Value::String(text) => {
                    if let Some(pattern) = compile_pattern(r, item_path, text, lowercase) {
                        add_rule(&mut rules, pattern, section_rule());
                    }
                }
                Value::Object(fields) => {
                    let mut n = r.nested(fields, &item_path);
                    let text = n.opt_string("path", |_| Ok(()));
                    let own = n
                        .raw("allow_cidrs")
                        .is_some()
                        .then(|| n.string_list("allow_cidrs", &[], check_cidr));
                    n.finish();
                    let Some(text) = text else {
                        r.error(format!("{item_path}.path"), "is required");
                        continue;
                    };
                    let pattern_path = format!("{item_path}.path");
                    if let Some(pattern) = compile_pattern(r, pattern_path, &text, lowercase) {
                        let rule = Rule {
                            allow_cidrs: own.map(|c| cidrs(&c)).unwrap_or(section_cidrs.to_vec()),
                        };
                        add_rule(&mut rules, pattern, rule);
                    }
                }
                _ => r.error(item_path, "must be a path or a {path, allow_cidrs} object"),
            }
        }
    }
    PathRules::new(rules)
}

fn read_routes(r: &mut SectionReader<'_>, tenant: &Limits, lowercase: bool) -> PathRules<Limits> {
    let routes = r
        .object_list(
            "routes",
            "an array of route objects",
            "an object {prefix | path, allowed_methods, max_*}",
            |n, item_path, index| {
                let (text, exact) = match (
                    n.opt_string("prefix", |_| Ok(())),
                    n.opt_string("path", |_| Ok(())),
                ) {
                    (Some(p), None) => (p, false),
                    (None, Some(p)) => (p, true),
                    _ => {
                        n.error(item_path.to_string(), "set exactly one of prefix, path");
                        let _ = read_limits(n, tenant);
                        return None;
                    }
                };
                let limits = read_limits(n, tenant);
                let field = if exact { "path" } else { "prefix" };
                match PathPattern::compile(&text, exact, lowercase) {
                    Ok(pattern) => Some((index, pattern, limits)),
                    Err(msg) => {
                        n.error(format!("{item_path}.{field}"), msg);
                        None
                    }
                }
            },
        )
        .unwrap_or_default();
    path_rules(r, "routes", "route", routes, |_, _| true)
}

pub fn parse(r: &mut SectionReader<'_>) -> GuardSettings {
    let enabled = r.bool("enabled", true);
    let case_insensitive = r.bool("case_insensitive", true);
    let section_cidrs = cidrs(&r.string_list("allow_cidrs", &[], check_cidr));
    let rules = read_rules(r, &section_cidrs, case_insensitive);
    let admin_token_header = r
        .opt_string("admin_token_header", check_header_name)
        .unwrap_or_else(|| DEFAULT_ADMIN_TOKEN_HEADER.to_string());
    let admin_tokens = read_admin_tokens(r);
    let block_status = match r.u64_in("block_status", 404, 403, 404) {
        403 => 403,
        404 => 404,
        _ => {
            let path = r.path_of("block_status");
            r.error(path, "must be 403 or 404");
            404
        }
    };
    let limits = read_limits(r, &Limits::default());
    let routes = read_routes(r, &limits, case_insensitive);
    GuardSettings {
        enabled,
        case_insensitive,
        rules,
        admin_token_header,
        admin_tokens,
        block_status,
        limits,
        routes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn parse_json(v: Value) -> (GuardSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_protect_the_usual_suspects() {
        let (s, e) = parse_json(json!({}));
        assert_eq!(e, "");
        assert!(s.enabled && s.case_insensitive);
        assert_eq!(s.rules.len(), DEFAULT_PROTECTED_PATHS.len());
        assert_eq!(s.block_status, 404);
        assert_eq!(s.admin_token_header, "x-admin-token");
        assert_eq!(s.limits, Limits::default());
    }

    #[test]
    fn routes_inherit_and_override_tenant_limits() {
        let (s, e) = parse_json(json!({
            "max_body_bytes": 100, "allowed_methods": ["GET", "POST"],
            "routes": [
                {"prefix": "/upload", "max_body_bytes": 1000},
                {"prefix": "/upload/big", "max_body_bytes": null, "allowed_methods": ["PUT"]}
            ]
        }));
        assert_eq!(e, "");
        assert_eq!(s.routes.len(), 2);
        let route = |p: &str| {
            let path = meshware_common::path::RequestPath::read(p).unwrap();
            s.routes.best(path.canonical()).unwrap().clone()
        };
        let big = route("/upload/big/x");
        assert_eq!(big.max_body_bytes, None);
        assert_eq!(big.allow_header, "PUT");
        let upload = route("/upload/x");
        assert_eq!(upload.max_body_bytes, Some(1000));
        assert_eq!(upload.allow_header, "GET, POST");
    }

    #[test]
    fn every_bad_value_names_its_path() {
        let (_, e) = parse_json(json!({
            "allow_cidrs": ["10.0.0.0/8", "10.0.0.0/33", 7],
            "protected_paths": ["/ok", "nope", {"path": "/x", "allow_cidrs": ["1.2.3.4/40"], "typo": 1}, {"allow_cidrs": []}],
            "admin_tokens": ["short"],
            "block_status": 401,
            "allowed_methods": ["get"],
            "max_body_bytes": 0,
            "routes": [{"prefix": "/a", "max_url_length": -1, "extra": true}, 5,
                       {"prefix": "/b"}, {"prefix": "/B/"}, {"prefix": "/c", "path": "/c"}],
        }));
        for expected in [
            "t.allow_cidrs[1]: \"10.0.0.0/33\": prefix length must be 0..=32",
            "t.allow_cidrs[2]: must be a string",
            "t.protected_paths[1]: \"nope\": a path starts with",
            "t.protected_paths[2].allow_cidrs[0]: \"1.2.3.4/40\"",
            "t.protected_paths[2].typo: unknown field",
            "t.protected_paths[3].path: is required",
            "t.admin_tokens[0]: admin tokens are at least 16 characters",
            "t.block_status: must be >= 403",
            "t.allowed_methods[0]: \"get\": methods are upper-case",
            "t.max_body_bytes: must be >= 1",
            "t.routes[0].max_url_length: must be a non-negative integer",
            "t.routes[0].extra: unknown field",
            "t.routes[1]: must be an object",
            "t.routes[3]: the same path as routes[2]: this route can never apply",
            "t.routes[4]: set exactly one of prefix, path",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }

    #[test]
    fn block_status_accepts_only_403_and_404() {
        let (s, e) = parse_json(json!({"block_status": 403}));
        assert_eq!((s.block_status, e.as_str()), (403, ""));
        let (_, e) = parse_json(json!({"block_status": 404.5}));
        assert!(e.contains("t.block_status"), "{e}");
    }

    #[test]
    fn admin_tokens_may_come_from_the_environment() {
        // PATH is set wherever tests run and is a valid token's shape.
        let path = std::env::var("PATH").unwrap_or_default();
        if path.len() >= MIN_ADMIN_TOKEN_LEN && !path.contains(' ') {
            let (s, e) = parse_json(json!({"admin_tokens": [{"env": "PATH"}]}));
            assert_eq!(e, "");
            assert!(crate::guard::token_matches(
                path.as_bytes(),
                &s.admin_tokens
            ));
        }
        let (s, e) = parse_json(json!({"admin_tokens": [
            {"env": "MESHWARE_NEVER_SET"}, {"env": "bad name"}, {"token": "x"}, 3
        ]}));
        assert!(s.admin_tokens.is_empty());
        assert!(
            e.contains("t.admin_tokens[0]: environment variable MESHWARE_NEVER_SET is not set"),
            "{e}"
        );
        assert!(
            e.contains("t.admin_tokens[1]: {\"env\": \"bad name\"}"),
            "{e}"
        );
        assert!(
            e.contains("t.admin_tokens[2]: must be a string or {\"env\""),
            "{e}"
        );
        assert!(e.contains("t.admin_tokens[3]: must be a string or"), "{e}");
        let (_, e) = meshware_common::secret::shape_only(|| {
            parse_json(json!({"admin_tokens": [{"env": "MESHWARE_NEVER_SET"}]}))
        });
        assert_eq!(e, "", "the CLI checks the reference's shape only");
    }
}
