//! The `jwt_auth` section of the profile.

use crate::external::External;
use crate::jwk::parse_jwks;
use crate::remote::RemoteJwks;
use crate::verify::{Alg, Provider};
use meshware_common::path::{PathPattern, PathRules};
use meshware_common::section::{check_header_name, check_method, path_rules, read_path_rule};
use meshware_common::SectionReader;
use serde_json::Value;
use std::cell::RefCell;
// Keyed by tokens clients send: std's randomly keyed SipHash, not the
// foldhash the common crate's maps use (its seed is not random in wasm);
// the table is hashbrown's, the same code the SDK links.
type HashMap<K, V> = hashbrown::HashMap<K, V, std::hash::RandomState>;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (or another header with a prefix).
    Header {
        name: String,
        prefix: String,
    },
    Cookie(String),
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Required,
    /// A missing token passes (anonymous); a bad one is still refused.
    Optional,
    Bypass,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub methods: Option<Vec<String>>,
    pub requirement: Requirement,
}

#[derive(Debug)]
pub struct NamedProvider {
    pub name: String,
    pub provider: Provider,
    /// Claim naming the token's tenant; it must equal the request's tenant.
    pub tenant_claim: Option<String>,
    /// Shared hosts: a token's `tenant_claim` naming another configured
    /// tenant picks that tenant (opt-in) instead of a 403.
    pub tenant_from_claim: bool,
    pub remote: Option<RemoteJwks>,
}

/// A verified token, cached per worker until it expires.
#[derive(Debug, Clone)]
pub struct Cached {
    pub exp: u64,
    pub provider: usize,
    /// The provider's remote key-set generation it was verified under.
    pub generation: u64,
    pub claims: serde_json::Map<String, Value>,
}

#[derive(Debug)]
pub struct JwtSettings {
    pub enabled: bool,
    pub providers: Vec<NamedProvider>,
    pub sources: Vec<TokenSource>,
    /// The most specific rule whose methods include the request's decides.
    pub rules: PathRules<Rule>,
    pub default_requirement: Requirement,
    pub user_header: String,
    /// Claim name -> header.
    pub claim_to_headers: Vec<(String, String)>,
    pub strip_authorization: bool,
    /// Some provider takes the tenant from its claim.
    pub tenant_from_claim: bool,
    pub external: Option<External>,
    pub cache_entries: usize,
    /// Keyed by the token itself: a hit compares the whole token, so a
    /// forged token cannot borrow a cached verdict. Hashing it with the
    /// map's keyed SipHash costs a fraction of a SHA-256 over the token,
    /// the hit path's largest cost in wasm (docs/PERFORMANCE.md); the price
    /// is memory, at most `cache_entries` tokens per worker.
    pub cache: RefCell<HashMap<Box<str>, Rc<Cached>>>,
}

const ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

fn read_requirement(
    r: &mut SectionReader<'_>,
    key: &'static str,
    default: Requirement,
) -> Requirement {
    match r.one_of(key, &["required", "optional", "bypass"]) {
        Some("optional") => Requirement::Optional,
        Some("bypass") => Requirement::Bypass,
        Some("required") => Requirement::Required,
        _ => default,
    }
}

fn read_provider(r: &mut SectionReader<'_>, path: &str) -> Option<NamedProvider> {
    let name = r.opt_string("name", |_| Ok(()));
    let issuer = r.opt_string("issuer", |_| Ok(()));
    let audiences = r.string_list("audiences", &[], |_| Ok(()));
    let algorithms: Vec<Alg> = r
        .string_list("algorithms", &[], |a| {
            if a == "none" {
                return Err("\"none\" is never accepted".into());
            }
            Alg::parse(a).map(|_| ()).ok_or_else(|| {
                format!(
                    "\"{a}\": expected one of {}",
                    meshware_common::errors::joined(ALGS, ", ")
                )
            })
        })
        .iter()
        .filter_map(|a| Alg::parse(a))
        .collect();
    let remote = match r.raw("remote_jwks") {
        None => None,
        Some((serde_json::Value::Object(fields), remote_path)) => {
            let mut n = r.nested(fields, &remote_path);
            let remote = crate::remote::parse(&mut n, format!("jwt_auth.jwks:{remote_path}"));
            n.finish();
            Some(remote)
        }
        Some((_, remote_path)) => {
            r.error(remote_path, "must be an object {cluster, path, ...}");
            None
        }
    };
    let keys = match r.raw("jwks") {
        None if remote.is_some() => Vec::new(),
        None => {
            r.error(
                format!("{path}.jwks"),
                "is required unless remote_jwks is set",
            );
            Vec::new()
        }
        Some((v, jwks_path)) => match parse_jwks(v) {
            Ok(k) => k,
            Err(errors) => {
                for (i, e) in errors {
                    r.error(format!("{jwks_path}.keys[{i}]"), e);
                }
                Vec::new()
            }
        },
    };
    let tenant_claim = r.opt_string("tenant_claim", |_| Ok(()));
    let tenant_from_claim = r.bool("tenant_from_claim", false);
    if tenant_from_claim && tenant_claim.is_none() {
        r.error(format!("{path}.tenant_from_claim"), "needs tenant_claim");
    }
    let leeway_s = r.u64_in("leeway_s", 60, 0, 600);
    let max_token_bytes = r.u64_in("max_token_bytes", 8192, 256, 65536) as usize;
    if algorithms.is_empty() {
        r.error(
            format!("{path}.algorithms"),
            "is required: list the algorithms this issuer signs with",
        );
    }
    let issuer = issuer.or_else(|| {
        r.error(format!("{path}.issuer"), "is required");
        None
    })?;
    Some(NamedProvider {
        name: name.unwrap_or_else(|| issuer.clone()),
        provider: Provider {
            issuer,
            audiences,
            algorithms,
            keys,
            leeway_s,
            max_token_bytes,
        },
        tenant_claim,
        tenant_from_claim,
        remote,
    })
}

fn read_sources(r: &mut SectionReader<'_>) -> Vec<TokenSource> {
    let shape = "{header, prefix} / {cookie} / {query}";
    let is_array = matches!(r.raw("token_sources"), Some((Value::Array(_), _)));
    let sources = r.object_list(
        "token_sources",
        &format!("an array of {shape}"),
        shape,
        |n, item_path, _| {
            let header = n.opt_string("header", check_header_name);
            let prefix = n.opt_string("prefix", |_| Ok(()));
            let cookie = n.opt_string("cookie", |_| Ok(()));
            let query = n.opt_string("query", |_| Ok(()));
            match (header, cookie, query) {
                (Some(name), None, None) => Some(TokenSource::Header {
                    name,
                    prefix: prefix.unwrap_or_default(),
                }),
                (None, Some(c), None) => Some(TokenSource::Cookie(c)),
                (None, None, Some(q)) => Some(TokenSource::Query(q)),
                _ => {
                    n.error(
                        item_path.to_string(),
                        "set exactly one of header, cookie, query",
                    );
                    None
                }
            }
        },
    );
    match sources {
        Some(sources) if is_array => sources,
        _ => vec![TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
    }
}

fn read_rules(r: &mut SectionReader<'_>) -> PathRules<Rule> {
    let shape = "{prefix | path, methods, requirement, case_sensitive}";
    let rules = r
        .object_list(
            "rules",
            &format!("an array of {shape}"),
            shape,
            |n, item_path, index| {
                let pattern = read_path_rule(n, item_path, false);
                let methods = n
                    .raw("methods")
                    .is_some()
                    .then(|| n.string_list("methods", &[], check_method));
                let rule = Rule {
                    methods,
                    requirement: read_requirement(n, "requirement", Requirement::Required),
                };
                let pattern = match pattern {
                    Some(p) => p,
                    None if n.raw("prefix").is_none() && n.raw("path").is_none() => {
                        PathPattern::compile("/", false, true).ok()?
                    }
                    None => return None,
                };
                Some((index, pattern, rule))
            },
        )
        .unwrap_or_default();
    path_rules(r, "rules", "rule (with the same methods)", rules, |a, b| {
        a.methods == b.methods
    })
}

pub fn parse(r: &mut SectionReader<'_>) -> JwtSettings {
    let enabled = r.bool("enabled", true);
    let providers = r
        .object_list(
            "providers",
            "an array of providers",
            "a provider object",
            |n, item_path, _| read_provider(n, item_path),
        )
        .unwrap_or_default();
    let sources = read_sources(r);
    let rules = read_rules(r);
    let default_requirement = read_requirement(r, "default_requirement", Requirement::Required);
    let user_header = r
        .opt_string("user_header", check_header_name)
        .unwrap_or_else(|| "x-user-id".into());
    let mut claim_to_headers = Vec::new();
    match r.raw("claim_to_headers") {
        None => {}
        Some((Value::Object(m), path)) => {
            for (claim, header) in m {
                match header.as_str().map(|h| (h, check_header_name(h))) {
                    Some((h, Ok(()))) => claim_to_headers.push((claim.clone(), h.to_string())),
                    Some((_, Err(e))) => r.error(format!("{path}.{claim}"), e),
                    None => r.error(format!("{path}.{claim}"), "must be a header name"),
                }
            }
        }
        Some((_, path)) => r.error(path, "must be an object of claim -> header"),
    }
    let external = match r.raw("external") {
        None | Some((Value::Null, _)) => None,
        Some((Value::Object(fields), ext_path)) => {
            let mut n = r.nested(fields, &ext_path);
            let external = crate::external::parse(&mut n);
            n.finish();
            Some(external)
        }
        Some((_, ext_path)) => {
            r.error(ext_path, "must be an object {cluster, ...} or null");
            None
        }
    };
    if let Some(ext) = &external {
        if ext.on_error == crate::external::OnError::LocalJwt && providers.is_empty() {
            let at = format!("{}.on_error", r.path_of("external"));
            r.error(at, "\"local_jwt\" needs at least one provider");
        }
        for h in &ext.copy_headers {
            if *h == user_header || claim_to_headers.iter().any(|(_, c)| c == h) {
                let at = format!("{}.copy_headers", r.path_of("external"));
                r.error(
                    at,
                    format!("\"{h}\" is already an identity header of this section"),
                );
            }
        }
    }
    JwtSettings {
        enabled,
        tenant_from_claim: providers.iter().any(|p| p.tenant_from_claim),
        external,
        providers,
        sources,
        rules,
        default_requirement,
        user_header,
        claim_to_headers,
        strip_authorization: r.bool("strip_authorization", false),
        cache_entries: r.u64_in("cache_entries", 1000, 0, 100_000) as usize,
        cache: RefCell::new(HashMap::with_hasher(std::hash::RandomState::new())),
    }
}
