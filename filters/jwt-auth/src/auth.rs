//! The jwt-auth decision: which requirement applies, where the token is,
//! verification (with a per-worker cache of verified tokens), tenant binding,
//! and the identity headers the upstream receives.

use crate::config::{Cached, JwtSettings, Requirement, TokenSource};
use crate::verify::{verify, Reject};
use meshware_common::{Decision, Headers, LocalReply, Outcomes};
use serde_json::Value;
use sha2::Digest;
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
];
pub const ALLOWED: usize = 0;
pub const BYPASSED: usize = 1;
pub const ANONYMOUS: usize = 2;
pub const CACHE_HIT: usize = 3;
pub const DENIED_MISSING: usize = 4;
pub const DENIED_TENANT: usize = 5;

fn denied_outcome(r: Reject) -> usize {
    let label = r.label();
    OUTCOMES
        .iter()
        .position(|o| o.strip_prefix("denied_") == Some(label))
        .unwrap_or(DENIED_MISSING)
}

fn requirement(s: &JwtSettings, path: &str, method: &str) -> Requirement {
    s.rules
        .iter()
        .find(|r| {
            path.starts_with(&r.prefix)
                && r.methods
                    .as_ref()
                    .is_none_or(|m| m.iter().any(|x| x == method))
        })
        .map_or(s.default_requirement, |r| r.requirement)
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

fn reply<'s>(
    status: u32,
    challenge: Option<String>,
    error: &str,
    description: &str,
    outcome: usize,
) -> Decision<'s> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(c) = challenge {
        headers.push(("www-authenticate", c));
    }
    let body = serde_json::json!({"error": error, "error_description": description}).to_string();
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
        "invalid_token",
        &what,
        denied_outcome(r),
    )
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .or_else(|| i.as_number().map(|n| n.to_string()))
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

fn cache_key(token: &str) -> u128 {
    let d = sha2::Sha256::digest(token.as_bytes());
    d.get(..16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map_or(0, u128::from_le_bytes)
}

/// The verified token and whether it came from the cache.
fn verify_any(s: &JwtSettings, token: &str, now_s: u64) -> Result<(Rc<Cached>, bool), Reject> {
    let key = cache_key(token);
    if let Ok(cache) = s.cache.try_borrow() {
        if let Some(c) = cache.get(&key) {
            // Expiry is checked again on every hit (with the provider's leeway).
            let leeway = s
                .providers
                .get(c.provider)
                .map_or(0, |p| p.provider.leeway_s);
            if now_s <= c.exp.saturating_add(leeway) {
                return Ok((Rc::clone(c), true));
            }
        }
    }
    let mut first_error = None;
    for (i, p) in s.providers.iter().enumerate() {
        match verify(&p.provider, token, now_s) {
            Ok(v) => {
                let cached = Rc::new(Cached {
                    exp: v.exp,
                    provider: i,
                    claims: v.claims,
                });
                if s.cache_entries > 0 {
                    if let Ok(mut cache) = s.cache.try_borrow_mut() {
                        if cache.len() >= s.cache_entries {
                            // Bounded: start over rather than track recency.
                            cache.clear();
                        }
                        cache.insert(key, Rc::clone(&cached));
                    }
                }
                return Ok((cached, false));
            }
            // Another issuer's provider saying "bad issuer" is not the story.
            Err(Reject::BadIssuer) => {
                first_error.get_or_insert(Reject::BadIssuer);
            }
            Err(e) => {
                if first_error.is_none_or(|f| f == Reject::BadIssuer) {
                    first_error = Some(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or(Reject::UnknownKid))
}

pub fn on_request<'s>(
    s: &'s JwtSettings,
    tenant: &str,
    headers: &Headers,
    now_s: u64,
) -> Decision<'s> {
    let mut decision = Decision::default();
    // Identity headers are ours: a client can never set them.
    if headers.contains(&s.user_header) {
        decision.request.remove(&s.user_header);
    }
    for (_, h) in &s.claim_to_headers {
        if headers.contains(h) {
            decision.request.remove(h);
        }
    }
    let path = headers.get(":path").unwrap_or("/");
    let method = headers.get(":method").unwrap_or("");
    let requirement = requirement(s, path, method);
    if requirement == Requirement::Bypass {
        decision.outcomes.add(BYPASSED);
        return decision;
    }
    let Some(token) = find_token(s, headers) else {
        if requirement == Requirement::Optional {
            decision.outcomes.add(ANONYMOUS);
            return decision;
        }
        return reply(
            401,
            Some("Bearer".into()),
            "invalid_request",
            "a bearer token is required",
            DENIED_MISSING,
        );
    };
    let verified = match verify_any(s, token, now_s) {
        Ok((v, hit)) => {
            if hit {
                decision.outcomes.add(CACHE_HIT);
            }
            v
        }
        Err(r) => return unauthorized(r),
    };
    let provider = s.providers.get(verified.provider);
    if let Some(claim) = provider.and_then(|p| p.tenant_claim.as_ref()) {
        if verified.claims.get(claim).and_then(Value::as_str) != Some(tenant) {
            return reply(
                403,
                None,
                "forbidden",
                "the token belongs to another tenant",
                DENIED_TENANT,
            );
        }
    }
    if let Some(sub) = verified.claims.get("sub").and_then(claim_text) {
        decision.request.set(&s.user_header, sub);
    }
    for (claim, header) in &s.claim_to_headers {
        if let Some(v) = verified.claims.get(claim).and_then(claim_text) {
            decision.request.set(header, v);
        }
    }
    decision.set_tenant_header = true;
    if s.strip_authorization {
        decision.request.remove("authorization");
    }
    decision.outcomes.add(ALLOWED);
    decision
}
