//! The endpoint-guard decision: normalize the path, apply request limits,
//! and hide protected paths from everyone outside the allowed ranges who does
//! not present an admin token.

use crate::config::{GuardSettings, Limits};
use crate::normalize::{normalize, PathError};
use meshware_common::{Decision, Headers, LocalReply, Outcomes, SourceAddress};
use std::borrow::Cow;

pub const OUTCOMES: &[&str] = &[
    "passed",
    "blocked",
    "allowed_cidr",
    "allowed_token",
    "invalid_path",
    "rejected_method",
    "rejected_body_size",
    "rejected_headers",
    "rejected_url_length",
];
pub const PASSED: usize = 0;
pub const BLOCKED: usize = 1;
pub const ALLOWED_CIDR: usize = 2;
pub const ALLOWED_TOKEN: usize = 3;
pub const INVALID_PATH: usize = 4;
pub const REJECTED_METHOD: usize = 5;
pub const REJECTED_BODY_SIZE: usize = 6;
pub const REJECTED_HEADERS: usize = 7;
pub const REJECTED_URL_LENGTH: usize = 8;

/// Body bytes counted for a request that declared no (or a small) length.
#[derive(Debug, Default)]
pub struct BodyBudget {
    limit: Option<u64>,
    seen: u64,
}

fn reject<'s>(status: u32, outcome: usize, body: &'static str) -> Decision<'s> {
    Decision {
        reply: Some(LocalReply {
            status,
            headers: vec![("content-type", "text/plain".to_string())],
            body: Cow::Borrowed(body.as_bytes()),
            owned_headers: Vec::new(),
        }),
        outcomes: Outcomes::one(outcome),
        ..Decision::default()
    }
}

/// Compares a presented token with every configured one without an early
/// exit, so timing reveals neither which token nor how many bytes matched.
pub fn token_matches(presented: &[u8], tokens: &[Vec<u8>]) -> bool {
    let mut any = 0u8;
    for token in tokens {
        let mut diff = u8::from(presented.len() != token.len());
        for (i, expected) in token.iter().enumerate() {
            diff |= presented.get(i).copied().unwrap_or(0) ^ expected;
        }
        any |= u8::from(diff == 0);
    }
    any == 1
}

fn header_limits_exceeded(limits: &Limits, headers: &Headers) -> bool {
    if let Some(max) = limits.max_header_count {
        let count = headers.iter().filter(|(k, _)| !k.starts_with(':')).count();
        if count as u64 > max {
            return true;
        }
    }
    if let Some(max) = limits.max_header_bytes {
        let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes as u64 > max {
            return true;
        }
    }
    false
}

pub fn on_request<'s>(
    s: &'s GuardSettings,
    headers: &Headers,
    source: &mut SourceAddress,
    budget: &mut BodyBudget,
) -> Decision<'s> {
    let mut decision = Decision::default();
    // The token is a secret meant for this filter only: never forward it.
    let presented_token = headers.get(&s.admin_token_header);
    if presented_token.is_some() {
        decision.request.remove(&s.admin_token_header);
    }
    let raw_path = headers.get(":path").unwrap_or("/");
    let path = match normalize(raw_path, s.case_insensitive) {
        Ok(p) => p,
        Err(PathError::Nul) => return reject(400, INVALID_PATH, "invalid path\n"),
        Err(_) => return reject(400, INVALID_PATH, "invalid path encoding\n"),
    };
    let limits = s
        .routes
        .iter()
        .find(|r| r.pattern.matches(&path))
        .map(|r| &r.limits)
        .unwrap_or(&s.limits);

    if limits
        .max_url_length
        .is_some_and(|max| raw_path.len() as u64 > max)
    {
        return reject(414, REJECTED_URL_LENGTH, "URI too long\n");
    }
    if header_limits_exceeded(limits, headers) {
        return reject(431, REJECTED_HEADERS, "request headers too large\n");
    }

    if let Some(rule) = s.rules.iter().find(|r| r.pattern.matches(&path)) {
        let from_allowed_range = !rule.allow_cidrs.is_empty()
            && source
                .get()
                .is_some_and(|ip| rule.allow_cidrs.iter().any(|c| c.contains(ip)));
        if from_allowed_range {
            decision.outcomes.add(ALLOWED_CIDR);
        } else if presented_token.is_some_and(|t| {
            !s.admin_tokens.is_empty() && token_matches(t.as_bytes(), &s.admin_tokens)
        }) {
            decision.outcomes.add(ALLOWED_TOKEN);
        } else {
            // Same answer as a path that does not exist: no body, no hint.
            return Decision {
                reply: Some(LocalReply {
                    status: s.block_status,
                    headers: Vec::new(),
                    body: Cow::Borrowed(b""),
                    owned_headers: Vec::new(),
                }),
                outcomes: Outcomes::one(BLOCKED),
                ..Decision::default()
            };
        }
    }

    if let Some(methods) = &limits.methods {
        let method = headers.get(":method").unwrap_or("");
        if !methods.iter().any(|m| m == method) {
            let mut d = reject(405, REJECTED_METHOD, "method not allowed\n");
            if let Some(reply) = &mut d.reply {
                reply.headers.push(("allow", limits.allow_header.clone()));
            }
            return d;
        }
    }
    if let Some(max) = limits.max_body_bytes {
        let declared = headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return reject(413, REJECTED_BODY_SIZE, "request body too large\n");
        }
        // Chunked bodies declare nothing; count what actually arrives.
        budget.limit = Some(max);
    }
    if decision.outcomes == Outcomes::default() {
        decision.outcomes.add(PASSED);
    }
    decision
}

/// Counts one body chunk; past the limit the request is answered with 413
/// (Envoy resets the upstream request, which never gets the whole body).
pub fn on_body<'s>(budget: &mut BodyBudget, chunk_len: usize) -> Decision<'s> {
    let Some(limit) = budget.limit else {
        return Decision::default();
    };
    budget.seen = budget.seen.saturating_add(chunk_len as u64);
    if budget.seen > limit {
        budget.limit = None;
        return reject(413, REJECTED_BODY_SIZE, "request body too large\n");
    }
    Decision::default()
}
