//! The rate-limit decision for one request: which limits apply, whose bucket
//! each charges, and the 429 (or the RateLimit fields) that follow.

use crate::config::{KeyKind, Limit, RateLimitSettings};
use crate::limiter::{take, Verdict};
use meshware_common::digits::push_decimal;
use meshware_common::metrics::MetricKind;
use meshware_common::net::{key_text, parse_source_address};
use meshware_common::path::RequestPath;
use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, LocalReply, Outcomes, SourceAddress,
};
use std::borrow::Cow;
use std::net::IpAddr;

pub const OUTCOMES: &[&str] = &[
    "allowed",
    "limited",
    "shadow_limited",
    "key_overflow",
    "store_contention",
    "no_key",
    "global_allowed",
    "global_limited",
    "global_error",
    "global_timeout",
    "global_denied",
];
pub const ALLOWED: usize = 0;
pub const LIMITED: usize = 1;
pub const SHADOW_LIMITED: usize = 2;
pub const KEY_OVERFLOW: usize = 3;
pub const STORE_CONTENTION: usize = 4;
pub const NO_KEY: usize = 5;
/// The rate limit service allowed, limited, failed (down, an error, junk),
/// did not answer in time; `GLOBAL_DENIED`: a failure the tenant denies.
pub const GLOBAL_ALLOWED: usize = 6;
pub const GLOBAL_LIMITED: usize = 7;
pub const GLOBAL_ERROR: usize = 8;
pub const GLOBAL_TIMEOUT: usize = 9;
pub const GLOBAL_DENIED: usize = 10;

/// Per limit: `limit.<name>.allowed|limited|shadow_limited`, after `OUTCOMES`.
pub const PER_LIMIT: [&str; 3] = ["allowed", "limited", "shadow_limited"];

pub fn limit_outcomes(s: &RateLimitSettings) -> Vec<String> {
    let global = s.global.iter().flat_map(|g| &g.descriptors);
    s.limits
        .iter()
        .flat_map(|l| {
            PER_LIMIT
                .iter()
                .map(move |o| format!("limit.{}.{o}", l.name))
        })
        .chain(global.map(|d| format!("limit.{}.global_limited", d.name)))
        .collect()
}

/// The outcome of global descriptor `index` limiting a request.
fn global_outcome(s: &RateLimitSettings, index: usize) -> usize {
    OUTCOMES.len() + s.limits.len() * PER_LIMIT.len() + index
}

/// The call's latency, per tenant (`meshware_global_rate_limit_ms`).
pub fn global_metrics(s: &RateLimitSettings, tenant: &str) -> Vec<(MetricKind, String)> {
    match s.global {
        Some(_) => vec![(
            MetricKind::Histogram,
            format!("meshware.global_rate_limit_ms.filter.rate_limit.tenant.{tenant}"),
        )],
        None => Vec::new(),
    }
}

fn limit_outcome(index: usize, which: usize) -> usize {
    OUTCOMES.len() + index * PER_LIMIT.len() + which
}

/// The RateLimit fields for allowed responses, when the tenant wants them.
#[derive(Debug, Default)]
pub struct Fields {
    /// The tightest limit's index: its policy text is configuration.
    policy: Option<usize>,
    current: Option<String>,
    /// The call to the rate limit service, while it is in flight.
    sent: Option<crate::global::Sent>,
    /// The service's `response_headers_to_add`, for the response.
    service_headers: Vec<(String, String)>,
}

/// The client's address: Envoy's downstream address, or with `hops` trusted
/// proxies in front, the address `hops` places left of the last entry of
/// `x-forwarded-for` (Envoy appends the peer with `use_remote_address`).
/// Anything a client writes further left is ignored.
pub fn client_address(headers: &Headers, source: &mut SourceAddress, hops: u64) -> Option<IpAddr> {
    if hops > 0 {
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let from_right = usize::try_from(hops).ok()?;
        if let Some(index) = entries.len().checked_sub(from_right + 1) {
            if let Some(ip) = entries.get(index).and_then(|e| parse_source_address(e)) {
                return Some(ip);
            }
        }
    }
    source.get()
}

/// The value a per-value limit counts by (only ever hashed): borrowed from
/// the request, or the address as key text.
fn key_value<'h>(
    s: &RateLimitSettings,
    limit: &Limit,
    headers: &'h Headers,
    source: &mut SourceAddress,
) -> Option<Option<Cow<'h, str>>> {
    match &limit.key {
        KeyKind::Tenant | KeyKind::Route => Some(None),
        KeyKind::ClientAddress => client_address(headers, source, s.xff_trusted_hops)
            .map(|ip| Some(Cow::Owned(key_text(ip)))),
        KeyKind::User => headers
            .get(&s.user_header)
            .filter(|v| !v.is_empty())
            .map(|v| Some(Cow::Borrowed(v))),
        KeyKind::Header(name) => headers
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| Some(Cow::Borrowed(v))),
    }
}

fn too_many<'s>(
    limit: &Limit,
    grpc_status: u8,
    (retry_after_s, reset_s): (u64, u64),
    outcomes: Outcomes,
) -> Decision<'s> {
    let body = meshware_common::jsontext::problem(
        "urn:meshware:problem:quota-exceeded",
        "Too Many Requests",
        429,
        &format!(
            "quota \"{}\" exceeded; retry after {retry_after_s} s",
            limit.name
        ),
    );
    Decision {
        reply: Some(LocalReply {
            status: 429,
            headers: vec![
                ("content-type", "application/problem+json".to_string()),
                ("retry-after", retry_after_s.to_string()),
                ("ratelimit-policy", limit.policy.clone()),
                ("ratelimit", format!("\"{}\";r=0;t={reset_s}", limit.name)),
            ],
            body: Cow::Owned(body.into_bytes()),
            grpc_status: Some(grpc_status),
            ..LocalReply::default()
        }),
        outcomes,
        ..Decision::default()
    }
}

pub fn on_request<'s>(
    s: &'s RateLimitSettings,
    tenant: &str,
    headers: &Headers,
    path: &RequestPath,
    source: &mut SourceAddress,
    env: &dyn HostEnv,
    fields: &mut Fields,
) -> Decision<'s> {
    let mut outcomes = Outcomes::default();
    let method = headers.get(":method").unwrap_or("");
    // The tightest allowed limit, for the optional response fields.
    let mut tightest: Option<(usize, &Limit, u64, u64)> = None;
    for (i, limit) in s.limits.iter().enumerate() {
        if !limit.applies(path, method) {
            continue;
        }
        let Some(value) = key_value(s, limit, headers, source) else {
            outcomes.add(NO_KEY);
            continue;
        };
        let taken = take(env, tenant, limit, value.as_deref(), s.max_keys);
        if taken.overflow {
            outcomes.add(KEY_OVERFLOW);
        }
        match taken.verdict {
            Verdict::Allowed { remaining, reset_s } => {
                outcomes.add(limit_outcome(i, 0));
                if tightest.is_none_or(|(_, _, r, _)| remaining < r) {
                    tightest = Some((i, limit, remaining, reset_s));
                }
            }
            Verdict::StoreError => outcomes.add(STORE_CONTENTION),
            Verdict::Limited {
                retry_after_s,
                reset_s,
            } => {
                if s.shadow || limit.shadow {
                    outcomes.add(limit_outcome(i, 2));
                    outcomes.add(SHADOW_LIMITED);
                } else {
                    outcomes.add(limit_outcome(i, 1));
                    outcomes.add(LIMITED);
                    return too_many(limit, s.grpc_status, (retry_after_s, reset_s), outcomes);
                }
            }
        }
    }
    outcomes.add(ALLOWED);
    if s.response_headers {
        if let Some((i, limit, remaining, reset_s)) = tightest {
            fields.policy = Some(i);
            let mut current = String::with_capacity(limit.name.len() + 32);
            current.push('"');
            current.push_str(&limit.name);
            current.push_str("\";r=");
            push_decimal(&mut current, remaining);
            current.push_str(";t=");
            push_decimal(&mut current, reset_s);
            fields.current = Some(current);
        }
    }
    // Local limits allowed it: the global ones decide the rest, one call.
    if let Some(g) = &s.global {
        let (indices, descriptors) =
            crate::global::descriptors(s, g, tenant, headers, path, source);
        if !descriptors.is_empty() {
            let now = env.now_ms();
            let (callout, park) = crate::global::call(g, &indices, &descriptors, now);
            fields.sent = Some(crate::global::Sent {
                descriptors: indices,
                started_ms: now,
            });
            return Decision {
                outcomes,
                callout: Some(callout),
                park: Some(park),
                ..Decision::default()
            };
        }
    }
    Decision {
        outcomes,
        ..Decision::default()
    }
}

/// The rate limit service answered (or the call failed): the request was
/// charged to the local limits already, so only the answer decides now.
pub fn on_global_answer<'s>(
    s: &'s RateLimitSettings,
    fields: &mut Fields,
    response: Option<&meshware_common::CalloutResponse>,
    env: &dyn HostEnv,
) -> Decision<'s> {
    use crate::global::{failed, limited_reply, verdict, Verdict};
    let (Some(g), Some(sent)) = (&s.global, fields.sent.take()) else {
        return Decision::default();
    };
    let mut metrics = meshware_common::metrics::MetricUpdates::default();
    let elapsed = env.now_ms().saturating_sub(sent.started_ms);
    metrics.push(0, i64::try_from(elapsed).unwrap_or(i64::MAX));
    let mut decision = match verdict(response) {
        Verdict::Allowed {
            request_headers,
            response_headers,
        } => {
            let mut d = Decision {
                outcomes: Outcomes::one(GLOBAL_ALLOWED),
                ..Decision::default()
            };
            for (name, value) in request_headers {
                d.request.set(name.to_ascii_lowercase(), value);
            }
            fields.service_headers = response_headers;
            d
        }
        Verdict::Limited {
            sent_index,
            status,
            response_headers,
        } => {
            let index = sent.descriptors.get(sent_index).copied().unwrap_or(0);
            let name = g
                .descriptors
                .get(index)
                .map_or("global", |d| d.name.as_str());
            let mut outcomes = Outcomes::one(GLOBAL_LIMITED);
            outcomes.add(global_outcome(s, index));
            Decision {
                reply: Some(limited_reply(s, name, &status, response_headers)),
                outcomes,
                ..Decision::default()
            }
        }
        Verdict::Failed { timeout } => {
            // Envoy ends a call past its timeout with the HTTP 504 of its
            // router, which its gRPC client reads as UNAVAILABLE: the
            // elapsed time tells a timeout apart (within a tenth: the
            // clock the module reads is in whole milliseconds, and Envoy's
            // timer may fire a little early against it).
            let outcome = if timeout || elapsed.saturating_mul(10) >= g.timeout_ms.saturating_mul(9)
            {
                GLOBAL_TIMEOUT
            } else {
                GLOBAL_ERROR
            };
            failed(g, Outcomes::one(outcome))
        }
    };
    decision.metrics = metrics;
    decision
}

/// The call outlived its deadline (Envoy's own timeout should come first).
pub fn on_global_expired(s: &RateLimitSettings) -> Decision<'_> {
    match &s.global {
        Some(g) => crate::global::failed(g, Outcomes::one(GLOBAL_TIMEOUT)),
        None => Decision::default(),
    }
}

pub fn on_response<'s>(s: &'s RateLimitSettings, fields: &mut Fields) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    for (name, value) in std::mem::take(&mut fields.service_headers) {
        edits.set(name.to_ascii_lowercase(), value);
    }
    if let Some(limit) = fields.policy.take().and_then(|i| s.limits.get(i)) {
        edits.set("ratelimit-policy", limit.policy.as_str());
    }
    if let Some(current) = fields.current.take() {
        edits.set("ratelimit", current);
    }
    edits
}
