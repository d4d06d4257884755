//! The endpoint-guard decision: apply request limits, and hide protected
//! paths from everyone outside the allowed ranges who does not present an
//! admin token. Rules are judged on every reading of the path the tenant
//! allows (`meshware_common::path`): a request is blocked, or limited, if
//! any reading is.

use crate::config::{GuardSettings, Limits, Rule};
use meshware_common::path::RequestPath;
use meshware_common::request::METHOD_OVERRIDE_HEADERS;
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
            ..LocalReply::default()
        }),
        outcomes: Outcomes::one(outcome),
        ..Decision::default()
    }
}

/// Compares a presented token with every configured one without an early
/// exit, so timing reveals neither which token nor how many bytes matched.
pub fn token_matches(presented: &[u8], digests: &[[u8; 32]]) -> bool {
    digest_scan(&crate::config::token_digest(presented), digests).0
}

/// Whether `presented` is one of `digests`, and how many byte pairs were
/// compared to find out: always 32 per digest, wherever (and whether) a
/// byte differs. Compared as digests: equal lengths whatever the tokens'.
pub(crate) fn digest_scan(presented: &[u8; 32], digests: &[[u8; 32]]) -> (bool, usize) {
    let mut any = 0u8;
    let mut compared = 0usize;
    for digest in digests {
        let mut diff = 0u8;
        for (a, b) in presented.iter().zip(digest.iter()) {
            diff |= a ^ b;
            compared += 1;
        }
        any |= u8::from(diff == 0);
    }
    (any == 1, compared)
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

/// The distinct values that `best` picks under each reading.
fn distinct<'a, T: PartialEq>(picks: impl Iterator<Item = &'a T>) -> Vec<&'a T> {
    let mut out: Vec<&T> = Vec::with_capacity(1);
    for p in picks {
        if !out.iter().any(|o| std::ptr::eq(*o, p)) {
            out.push(p);
        }
    }
    out
}

/// The request's methods: `:method`, plus the override headers' values
/// where the tenant keeps them (`request.method_override: "check"`).
fn methods(headers: &Headers, check_overrides: bool) -> impl Iterator<Item = &str> {
    let overrides = METHOD_OVERRIDE_HEADERS
        .iter()
        .filter(move |_| check_overrides)
        .filter_map(|h| headers.get(h))
        .map(str::trim);
    std::iter::once(headers.get(":method").unwrap_or("")).chain(overrides)
}

pub fn on_request<'s>(
    s: &'s GuardSettings,
    headers: &Headers,
    path: &RequestPath,
    check_overrides: bool,
    source: &mut SourceAddress,
    budget: &mut BodyBudget,
) -> Decision<'s> {
    let mut decision = Decision::default();
    // The token is a secret meant for this filter only: never forward it.
    let presented_token = headers.get(&s.admin_token_header);
    if presented_token.is_some() {
        decision.request.remove(&s.admin_token_header);
    }
    let raw_len = headers.get(":path").map_or(0, str::len) as u64;
    let every_limits = distinct(
        path.readings()
            .iter()
            .map(|r| s.routes.best(r).unwrap_or(&s.limits)),
    );
    for limits in &every_limits {
        if limits.max_url_length.is_some_and(|max| raw_len > max) {
            return reject(414, REJECTED_URL_LENGTH, "URI too long\n");
        }
        if header_limits_exceeded(limits, headers) {
            return reject(431, REJECTED_HEADERS, "request headers too large\n");
        }
    }

    let rules: Vec<&Rule> = distinct(path.readings().iter().filter_map(|r| s.rules.best(r)));
    for rule in rules {
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
                    ..LocalReply::default()
                }),
                outcomes: Outcomes::one(BLOCKED),
                ..Decision::default()
            };
        }
    }

    for limits in &every_limits {
        if let Some(allowed) = &limits.methods {
            let refused =
                methods(headers, check_overrides).any(|m| !allowed.iter().any(|a| a == m));
            if refused {
                let mut d = reject(405, REJECTED_METHOD, "method not allowed\n");
                if let Some(reply) = &mut d.reply {
                    reply.headers.push(("allow", limits.allow_header.clone()));
                }
                return d;
            }
        }
    }
    let max_body = every_limits.iter().filter_map(|l| l.max_body_bytes).min();
    if let Some(max) = max_body {
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
