//! The jwt-auth decision: which requirement applies, where the token is,
//! verification (with a per-worker cache of verified tokens), tenant binding,
//! and the identity headers the upstream receives.

use crate::config::{Cached, JwtSettings, Requirement, TokenSource};
use crate::external::{self, OnError, Verdict};
use crate::remote::{Fetched, Need};
use crate::verify::{claimed_issuer, verify, Reject};
use meshware_common::path::RequestPath;
use meshware_common::tenancy::Source;
use meshware_common::{
    CalloutResponse, Decision, Headers, HostEnv, LocalReply, Outcomes, TenantWrite,
};
use serde_json::Value;
use std::borrow::Cow;
use std::rc::Rc;

pub const OUTCOMES: &[&str] = &[
    "allowed",
    "bypassed",
    "anonymous",
    "cache_hit",
    "denied_missing",
    "denied_tenant",
    "denied_malformed",
    "denied_too_large",
    "denied_bad_algorithm",
    "denied_unknown_kid",
    "denied_bad_signature",
    "denied_missing_exp",
    "denied_expired",
    "denied_not_yet_valid",
    "denied_bad_issuer",
    "denied_bad_audience",
    "denied_keys_unavailable",
    "jwks_fetch_ok",
    "jwks_fetch_failed",
    "external_allowed",
    "external_denied",
    "external_error",
    "denied_unsupported_crit",
];
pub const ALLOWED: usize = 0;
pub const BYPASSED: usize = 1;
pub const ANONYMOUS: usize = 2;
pub const CACHE_HIT: usize = 3;
pub const DENIED_MISSING: usize = 4;
pub const DENIED_TENANT: usize = 5;
pub const DENIED_KEYS_UNAVAILABLE: usize = 16;
pub const JWKS_FETCH_OK: usize = 17;
pub const JWKS_FETCH_FAILED: usize = 18;
pub const EXTERNAL_ALLOWED: usize = 19;
pub const EXTERNAL_DENIED: usize = 20;
pub const EXTERNAL_ERROR: usize = 21;

fn denied_outcome(r: Reject) -> usize {
    let label = r.label();
    OUTCOMES
        .iter()
        .position(|o| o.strip_prefix("denied_") == Some(label))
        .unwrap_or(DENIED_MISSING)
}

/// The strictest requirement any reading of the path gets: a path that one
/// backend routes to a required route is never let through anonymously.
fn requirement(s: &JwtSettings, path: &RequestPath, method: &str) -> Requirement {
    path.readings()
        .iter()
        .map(|reading| {
            s.rules
                .best_where(reading, |r| {
                    r.methods
                        .as_ref()
                        .is_none_or(|m| m.iter().any(|x| x == method))
                })
                .map_or(s.default_requirement, |r| r.requirement)
        })
        .min_by_key(|r| match r {
            Requirement::Required => 0,
            Requirement::Optional => 1,
            Requirement::Bypass => 2,
        })
        .unwrap_or(s.default_requirement)
}

fn query_param<'h>(path: &'h str, name: &str) -> Option<&'h str> {
    path.split_once('?')?
        .1
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn find_token<'h>(s: &JwtSettings, headers: &'h Headers) -> Option<&'h str> {
    s.sources
        .iter()
        .find_map(|src| match src {
            TokenSource::Header { name, prefix } => {
                let v = headers.get(name)?.trim();
                let head = v.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| v.get(prefix.len()..).unwrap_or("").trim())
            }
            TokenSource::Cookie(c) => headers.cookie(c),
            TokenSource::Query(q) => query_param(headers.get(":path").unwrap_or(""), q),
        })
        .filter(|t| !t.is_empty())
}

/// `error`: the RFC 6750 code of both the challenge and the body (`None`
/// for a request that brought no credentials).
fn reply<'s>(
    status: u32,
    challenge: Option<String>,
    error: Option<&str>,
    description: &str,
    outcome: usize,
) -> Decision<'s> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(c) = challenge {
        headers.push(("www-authenticate", c));
    }
    let body = match error {
        Some(e) => serde_json::json!({"error": e, "error_description": description}),
        None => serde_json::json!({"error_description": description}),
    }
    .to_string();
    Decision {
        reply: Some(LocalReply {
            status,
            headers,
            body: Cow::Owned(body.into_bytes()),
            ..LocalReply::default()
        }),
        outcomes: Outcomes::one(outcome),
        ..Decision::default()
    }
}

fn unauthorized<'s>(r: Reject) -> Decision<'s> {
    // RFC 6750: the description names the reason, never token contents.
    let what = r.label().replace('_', " ");
    reply(
        401,
        Some(format!(
            "Bearer error=\"invalid_token\", error_description=\"{what}\""
        )),
        Some("invalid_token"),
        &what,
        denied_outcome(r),
    )
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .or_else(|| i.as_number().map(|n| n.to_string()))
                })
                .collect();
            Some(meshware_common::errors::joined(&texts, ","))
        }
        _ => None,
    }
}

/// Why no provider accepted a token, and the first provider with remote
/// keys that did not know its `kid` (more keys may be fetched for it).
struct Failure {
    reject: Reject,
    remote_unknown_kid: Option<usize>,
}

/// The verified token and whether it came from the cache.
fn verify_any(
    s: &JwtSettings,
    token: &str,
    now_s: u64,
    env: &dyn HostEnv,
) -> Result<(Rc<Cached>, bool), Failure> {
    if let Ok(cache) = s.cache.try_borrow() {
        if let Some(c) = cache.get(token) {
            // Expiry is checked again on every hit (with the provider's leeway).
            let provider = s.providers.get(c.provider);
            let leeway = provider.map_or(0, |p| p.provider.leeway_s);
            let generation = provider
                .and_then(|p| p.remote.as_ref())
                .map_or(0, |r| r.generation());
            if now_s <= c.exp.saturating_add(leeway) && generation == c.generation {
                return Ok((Rc::clone(c), true));
            }
        }
    }
    let mut errors = Vec::with_capacity(s.providers.len());
    let mut remote_unknown_kid = None;
    for (i, p) in s.providers.iter().enumerate() {
        let remote_keys = p.remote.as_ref().map(|r| r.keys(env)).unwrap_or_default();
        match verify(&p.provider, &remote_keys, token, now_s) {
            Ok(v) => {
                let cached = Rc::new(Cached {
                    exp: v.exp,
                    provider: i,
                    generation: p.remote.as_ref().map_or(0, |r| r.generation()),
                    claims: v.claims,
                });
                if s.cache_entries > 0 {
                    if let Ok(mut cache) = s.cache.try_borrow_mut() {
                        if cache.len() >= s.cache_entries {
                            // Bounded: start over rather than track recency.
                            cache.clear();
                        }
                        cache.insert(token.into(), Rc::clone(&cached));
                    }
                }
                return Ok((cached, false));
            }
            Err(e) => {
                if e == Reject::UnknownKid && p.remote.is_some() {
                    remote_unknown_kid.get_or_insert(i);
                }
                errors.push((i, e));
            }
        }
    }
    Err(Failure {
        reject: most_relevant(s, token, &errors),
        remote_unknown_kid,
    })
}

/// Why a token every provider refused is refused: what the provider of the
/// issuer it claims said (its key is unknown, its signature bad, it
/// expired); a token whose issuer no provider has is `bad_issuer`, whatever
/// the others found first. Errors that come before any claim is read
/// (malformed, too large, `crit`) are the same for every provider.
fn most_relevant(s: &JwtSettings, token: &str, errors: &[(usize, Reject)]) -> Reject {
    let first = errors.first().map_or(Reject::UnknownKid, |(_, e)| *e);
    if matches!(
        first,
        Reject::Malformed | Reject::TooLarge | Reject::UnsupportedCrit
    ) {
        return first;
    }
    let Some(issuer) = claimed_issuer(token) else {
        return Reject::Malformed;
    };
    errors
        .iter()
        .find(|(i, _)| {
            s.providers
                .get(*i)
                .is_some_and(|p| p.provider.issuer == issuer)
        })
        .map_or(Reject::BadIssuer, |(_, e)| *e)
}

/// No key set could be obtained for a provider: its configured status.
fn keys_unavailable<'s>(status: u32) -> Decision<'s> {
    let what = "signing keys are unavailable";
    let challenge = (status == 401)
        .then(|| format!("Bearer error=\"invalid_token\", error_description=\"{what}\""));
    reply(
        status,
        challenge,
        Some("temporarily_unavailable"),
        what,
        DENIED_KEYS_UNAVAILABLE,
    )
}

/// Identity headers are ours: a client can never set them.
fn strip_identity<'s>(s: &'s JwtSettings, headers: &Headers, decision: &mut Decision<'s>) {
    let copied = s.external.iter().flat_map(|e| e.copy_headers.iter());
    let claims = s.claim_to_headers.iter().map(|(_, h)| h);
    for h in std::iter::once(&s.user_header).chain(claims).chain(copied) {
        if headers.contains(h) {
            decision.request.remove(h);
        }
    }
}

/// The request's view: its tenant, every configured tenant, its headers.
pub struct Request<'r> {
    pub tenant: &'r str,
    /// What chose the tenant: a claim may only name another one where the
    /// default (or the trusted header) did.
    pub tenant_source: Source,
    pub tenants: &'r [String],
    pub headers: &'r Headers,
    pub path: &'r RequestPath,
}

pub fn on_request<'s>(s: &'s JwtSettings, r: &Request<'_>, env: &dyn HostEnv) -> Decision<'s> {
    decide(s, r, env, true)
}

/// The answer to a callout this request started: the external check, or
/// a JWKS fetch (the key set is already updated: decide again, locally).
pub fn on_callout_response<'s>(
    s: &'s JwtSettings,
    r: &Request<'_>,
    env: &dyn HostEnv,
    tag: u32,
    response: Option<&CalloutResponse>,
) -> Decision<'s> {
    let Some(ext) = s.external.as_ref().filter(|_| tag == external::TAG) else {
        return decide(s, r, env, false);
    };
    match ext.verdict(response) {
        Verdict::Allow(copied) => {
            let mut decision = Decision::default();
            for (i, value) in copied {
                if let Some(h) = ext.copy_headers.get(i) {
                    decision.request.set(h, value.to_string());
                }
            }
            if s.strip_authorization {
                decision.request.remove("authorization");
            }
            decision.tenant_header = TenantWrite::Resolved;
            decision.outcomes.add(EXTERNAL_ALLOWED);
            decision
        }
        Verdict::Deny(status, challenge) => {
            let (error, what) = if status == 401 {
                (
                    "invalid_token",
                    "the authorization service refused the credentials",
                )
            } else {
                ("forbidden", "the authorization service denied the request")
            };
            let challenge = challenge
                .filter(|c| c.len() <= 512 && c.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .map(str::to_string)
                .or_else(|| (status == 401).then(|| "Bearer".to_string()));
            reply(status, challenge, Some(error), what, EXTERNAL_DENIED)
        }
        Verdict::Error => match ext.on_error {
            OnError::Deny => {
                let mut d = reply(
                    503,
                    None,
                    Some("temporarily_unavailable"),
                    "the authorization service is unavailable",
                    EXTERNAL_ERROR,
                );
                d.outcomes.add(DENIED_KEYS_UNAVAILABLE);
                d
            }
            OnError::LocalJwt => {
                let mut d = decide(s, r, env, false);
                d.outcomes.add(EXTERNAL_ERROR);
                d
            }
        },
    }
}

/// A fetch of provider `tag`'s keys completed (any request's or the tick's).
pub fn on_callout_done(
    s: &JwtSettings,
    tag: u32,
    response: Option<&CalloutResponse>,
    env: &dyn HostEnv,
) -> Outcomes {
    let remote = s
        .providers
        .get(tag as usize)
        .and_then(|p| p.remote.as_ref());
    match remote.map(|r| r.done(response, env)) {
        Some(Fetched::Ok) => Outcomes::one(JWKS_FETCH_OK),
        Some(Fetched::Failed) => Outcomes::one(JWKS_FETCH_FAILED),
        None => Outcomes::default(),
    }
}

/// A request waited in vain for provider `tag`'s keys: without any key
/// set, the provider's `unavailable_status`; with one (the wait was for a
/// kid it lacks), the token is refused as any unknown kid is: 401.
pub fn on_park_expired<'s>(s: &'s JwtSettings, tag: u32) -> Decision<'s> {
    let remote = s
        .providers
        .get(tag as usize)
        .and_then(|p| p.remote.as_ref());
    match remote {
        Some(r) if !r.never_fetched() => unauthorized(Reject::UnknownKid),
        Some(r) => keys_unavailable(r.unavailable_status),
        None => keys_unavailable(503),
    }
}

fn decide<'s>(
    s: &'s JwtSettings,
    r: &Request<'_>,
    env: &dyn HostEnv,
    use_external: bool,
) -> Decision<'s> {
    let (tenant, tenants, headers) = (r.tenant, r.tenants, r.headers);
    let mut decision = Decision::default();
    strip_identity(s, headers, &mut decision);
    if s.tenant_from_claim {
        // The tenant header is trusted on this profile: only a verified
        // token may set it (the success path below writes it again).
        decision.tenant_header = TenantWrite::Removed;
    }
    let method = headers.get(":method").unwrap_or("");
    let requirement = requirement(s, r.path, method);
    // `strip_authorization`: the upstream never sees an Authorization
    // header of this tenant, on any route, verified or not (a bypass or
    // optional route forwards the request without judging the header).
    let strip = |decision: &mut Decision<'s>| {
        if s.strip_authorization && headers.contains("authorization") {
            decision.request.remove("authorization");
        }
    };
    if requirement == Requirement::Bypass {
        decision.outcomes.add(BYPASSED);
        strip(&mut decision);
        return decision;
    }
    let token = find_token(s, headers);
    if token.is_none() && requirement == Requirement::Optional {
        decision.outcomes.add(ANONYMOUS);
        strip(&mut decision);
        return decision;
    }
    if let Some(ext) = s.external.as_ref().filter(|_| use_external) {
        // The auth service judges every credential kind, token or not.
        decision.callout = Some(ext.callout(headers, tenant));
        return decision;
    }
    let Some(token) = token else {
        // RFC 6750 §3.1: a request without credentials gets a challenge
        // with no error code (`invalid_request` is for a 400); the body
        // says the same.
        return reply(
            401,
            Some("Bearer".into()),
            None,
            "a bearer token is required",
            DENIED_MISSING,
        );
    };
    let now_ms = env.now_ms();
    let verified = match verify_any(s, token, now_ms / 1000, env) {
        Ok((v, hit)) => {
            if hit {
                decision.outcomes.add(CACHE_HIT);
            }
            v
        }
        Err(failure) => {
            let Some(i) = failure.remote_unknown_kid else {
                return unauthorized(failure.reject);
            };
            let Some(remote) = s.providers.get(i).and_then(|p| p.remote.as_ref()) else {
                return unauthorized(failure.reject);
            };
            let never = remote.never_fetched();
            match remote.need(i as u32, now_ms, !never) {
                Need::Fetch(callout, park) => {
                    decision.callout = Some(callout);
                    decision.park = Some(park);
                }
                Need::Wait(park) => decision.park = Some(park),
                Need::Unavailable if never => return keys_unavailable(remote.unavailable_status),
                Need::Unavailable => return unauthorized(failure.reject),
            }
            return decision;
        }
    };
    let provider = s.providers.get(verified.provider);
    decision.tenant_header = TenantWrite::Resolved;
    if let Some(p) = provider {
        if let Some(claim) = &p.tenant_claim {
            let claimed = verified.claims.get(claim).and_then(Value::as_str);
            match claimed {
                Some(t) if t == tenant => {}
                // Opt-in for shared hosts: the token names the tenant, a
                // configured one (never the reserved overflow slot), and
                // only where the host or path chose none: a request has
                // one tenant for the whole chain, and the filters after
                // this one resolve it from the host or path first.
                Some(t)
                    if p.tenant_from_claim
                        && t != meshware_common::profile::OTHER_TENANT
                        && tenants.iter().any(|n| n == t)
                        && matches!(r.tenant_source, Source::Default | Source::Header) =>
                {
                    decision.tenant_header = TenantWrite::Claimed(t.to_string());
                }
                _ => {
                    // RFC 6750 §3.1: a valid token without the rights.
                    return reply(
                        403,
                        Some(
                            "Bearer error=\"insufficient_scope\", \
                             error_description=\"the token belongs to another tenant\""
                                .to_string(),
                        ),
                        Some("insufficient_scope"),
                        "the token belongs to another tenant",
                        DENIED_TENANT,
                    );
                }
            }
        }
    }
    if let Some(sub) = verified.claims.get("sub").and_then(claim_text) {
        decision.log_fields.push(("user", sub.clone()));
        decision.request.set(&s.user_header, sub);
    }
    for (claim, header) in &s.claim_to_headers {
        if let Some(v) = verified.claims.get(claim).and_then(claim_text) {
            decision.request.set(header, v);
        }
    }
    if s.strip_authorization {
        decision.request.remove("authorization");
    }
    decision.outcomes.add(ALLOWED);
    decision
}
