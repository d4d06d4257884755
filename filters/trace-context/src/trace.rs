//! Trace context decisions: W3C traceparent/tracestate validation, B3 and
//! Jaeger translation, sampling, x-request-id, tenant baggage. No host calls.

use crate::config::TraceSettings;
use meshware_common::digits::{hex, push_hex};
use meshware_common::rng::Rng;
use meshware_common::{Decision, HeaderEdits, Headers, Outcomes, Tenant};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const REQUEST_ID: &str = "x-request-id";
pub const BAGGAGE: &str = "baggage";
pub const TRACERESPONSE: &str = "traceresponse";

/// Outcome labels, indexed by the constants below; one per request.
pub const OUTCOMES: &[&str] = &["started", "continued", "translated", "invalid_replaced"];
pub const STARTED: usize = 0;
pub const CONTINUED: usize = 1;
pub const TRANSLATED: usize = 2;
pub const INVALID_REPLACED: usize = 3;

/// The traceparent flags this filter knows: sampled, and Level 2's random
/// (the trace id's low 56 bits are random). Every other bit is written 0.
pub const FLAG_SAMPLED: u8 = 0x01;
pub const FLAG_RANDOM: u8 = 0x02;

const MAX_TRACESTATE_MEMBERS: usize = 32;
const MAX_TRACESTATE_LEN: usize = 512;
const LARGE_TRACESTATE_MEMBER: usize = 128;
const MAX_BAGGAGE_MEMBERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
    /// Always written as version 00, the only version whose fields we know.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, self.trace_id, 32);
        out.push('-');
        push_hex(&mut out, u128::from(self.parent_id), 16);
        out.push('-');
        push_hex(&mut out, u128::from(self.flags), 2);
        out
    }
}

fn hex_lower(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let mut v: u128 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

fn field(s: &[u8], from: usize, len: usize) -> Option<u128> {
    let part = s.get(from..from + len)?;
    if part.len() != len {
        return None;
    }
    hex_lower(part)
}

/// Parses a traceparent by the W3C Trace Context rules: lowercase hex, version
/// `ff` invalid, all-zero ids invalid, version 00 exactly 55 chars, a higher
/// version at least 55 chars with a `-` after the flags if longer.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let s = value.as_bytes();
    if s.len() < 55 {
        return None;
    }
    let version = field(s, 0, 2)? as u8;
    if version == 0xff || (version == 0 && s.len() != 55) {
        return None;
    }
    if s.len() > 55 && s.get(55) != Some(&b'-') {
        return None;
    }
    if s.get(2) != Some(&b'-') || s.get(35) != Some(&b'-') || s.get(52) != Some(&b'-') {
        return None;
    }
    let trace_id = field(s, 3, 32)?;
    let parent_id = field(s, 36, 16)? as u64;
    let flags = field(s, 53, 2)? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// Incoming context from B3 or Jaeger headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: Option<bool>,
}

fn trace_id_b3(s: &str) -> Option<u128> {
    // B3 trace ids are 16 or 32 lower-hex chars; 64-bit ids are left-padded.
    match s.len() {
        16 | 32 => hex_lower(s.as_bytes()).filter(|v| *v != 0),
        _ => None,
    }
}

fn span_id_b3(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex_lower(s.as_bytes())
        .map(|v| v as u64)
        .filter(|v| *v != 0)
}

fn b3_sampling(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `b3: {trace}-{span}[-{sampling}[-{parent}]]`; a bare sampling state has no ids.
pub fn parse_b3_single(value: &str) -> Option<Foreign> {
    let mut parts = value.trim().split('-');
    let trace_id = trace_id_b3(parts.next()?)?;
    let span_id = span_id_b3(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(b3_sampling(s).filter(|_| s != "true" && s != "false")?),
    };
    if let Some(parent) = parts.next() {
        span_id_b3(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Foreign {
        trace_id,
        span_id,
        sampled,
    })
}

pub fn parse_b3_multi(headers: &Headers) -> Option<Foreign> {
    let trace_id = trace_id_b3(headers.get("x-b3-traceid")?.trim())?;
    let span_id = span_id_b3(headers.get("x-b3-spanid")?.trim())?;
    let debug = headers.get("x-b3-flags").map(str::trim) == Some("1");
    let sampled = headers
        .get("x-b3-sampled")
        .and_then(|s| b3_sampling(s.trim()).filter(|_| s.trim() != "d"));
    Some(Foreign {
        trace_id,
        span_id,
        sampled: if debug { Some(true) } else { sampled },
    })
}

/// A B3 sampling decision without ids: `b3: 0` (B3's "deny", which B3 asks
/// callers to send proxies), `b3: 1`, `b3: d`, or `X-B3-Sampled` /
/// `X-B3-Flags` without `X-B3-TraceId`.
pub fn b3_sampling_only(headers: &Headers) -> Option<bool> {
    if let Some(b3) = headers.get("b3") {
        return match b3.trim() {
            "0" => Some(false),
            "1" | "d" => Some(true),
            _ => None,
        };
    }
    if headers.contains("x-b3-traceid") {
        return None;
    }
    if headers.get("x-b3-flags").map(str::trim) == Some("1") {
        return Some(true);
    }
    headers
        .get("x-b3-sampled")
        .and_then(|s| b3_sampling(s.trim()).filter(|_| s.trim() != "d"))
}

/// B3 and Jaeger headers of the request rewritten to carry `out`'s ids and
/// sampling decision, so services instrumented with them follow the
/// tenant's decision rather than the caller's.
fn align_foreign_headers(headers: &Headers, out: &TraceParent, edits: &mut HeaderEdits<'_>) {
    let sampled = if out.sampled() { "1" } else { "0" };
    if headers.contains("b3") {
        let mut v = String::with_capacity(52);
        push_hex(&mut v, out.trace_id, 32);
        v.push('-');
        push_hex(&mut v, u128::from(out.parent_id), 16);
        v.push('-');
        v.push_str(sampled);
        edits.set("b3", v);
    }
    let multi = [
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-b3-parentspanid",
    ];
    if multi.iter().any(|h| headers.contains(h)) {
        edits.set("x-b3-traceid", hex(out.trace_id, 32));
        edits.set("x-b3-spanid", hex(u128::from(out.parent_id), 16));
        edits.set("x-b3-sampled", sampled);
        edits.remove("x-b3-flags");
        edits.remove("x-b3-parentspanid");
    }
    if headers.contains("uber-trace-id") {
        let mut v = hex(out.trace_id, 32);
        v.push(':');
        push_hex(&mut v, u128::from(out.parent_id), 16);
        v.push_str(":0:0");
        v.push_str(sampled);
        edits.set("uber-trace-id", v);
    }
}

/// `uber-trace-id: {trace}:{span}:{parent}:{flags}`, hex without leading
/// zeros, possibly URL-encoded (`%3A`).
pub fn parse_uber(value: &str) -> Option<Foreign> {
    let decoded;
    let value = if value.contains('%') {
        decoded = value.replace("%3A", ":").replace("%3a", ":");
        decoded.as_str()
    } else {
        value
    };
    let mut parts = value.trim().split(':');
    let trace = parts.next()?;
    let span = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if parts.next().is_some() || span.len() > 16 || parent.len() > 16 || flags.len() > 2 {
        return None;
    }
    let trace_id = hex_lower(trace.as_bytes()).filter(|v| *v != 0)?;
    let span_id = hex_lower(span.as_bytes()).filter(|v| *v != 0)? as u64;
    hex_lower(parent.as_bytes())?;
    let flags = hex_lower(flags.as_bytes())? as u8;
    Some(Foreign {
        trace_id,
        span_id,
        // Jaeger: bit 1 sampled, bit 2 debug (which implies sampled).
        sampled: Some(flags & 0b11 != 0),
    })
}

/// Trace Context Level 2: `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"` (it replaced
/// Level 1's tenant`@`system form, which it accepts too).
fn valid_tracestate_key(key: &str) -> bool {
    let b = key.as_bytes();
    match b.split_first() {
        Some((first, tail)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && tail.len() <= 255
                && tail
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(c))
        }
        None => false,
    }
}

fn valid_tracestate_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b.last() != Some(&b' ')
}

/// Cleans the combined tracestate list: a malformed member drops the whole
/// header (it cannot be trusted to be parsed right), later duplicates of a
/// key are dropped, and past 32 members or 512 chars, members over 128 chars
/// go first, then members from the right. `None`: send no tracestate.
pub fn clean_tracestate<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for value in values {
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, val) = member.split_once('=')?;
            if !valid_tracestate_key(key) || !valid_tracestate_value(val) {
                return None;
            }
            let duplicate = members
                .iter()
                .any(|m| m.split_once('=').map(|(k, _)| k) == Some(key));
            if !duplicate {
                members.push(member);
            }
        }
    }
    let total = |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    while members.len() > MAX_TRACESTATE_MEMBERS || total(&members) > MAX_TRACESTATE_LEN {
        match members
            .iter()
            .rposition(|m| m.len() > LARGE_TRACESTATE_MEMBER)
        {
            Some(i) => {
                members.remove(i);
            }
            None => {
                members.pop();
            }
        }
    }
    if members.is_empty() {
        None
    } else {
        Some(meshware_common::errors::joined(&members, ","))
    }
}

/// A request id we keep: 1..=128 chars of a conservative alphabet.
pub fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

/// RFC 9562 UUID version 4 from 122 random bits.
pub fn uuid_v4(rng: &mut Rng) -> String {
    let hi = (rng.next_u64() & !0xf000) | 0x4000; // version nibble
    let lo = (rng.next_u64() & !(0b11 << 62)) | (0b10 << 62); // variant bits
                                                              // 8-4-4-4-12 hex digits of the 128 bits.
    let id = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = String::with_capacity(36);
    for (shift, width) in [(96, 8), (80, 4), (64, 4), (48, 4), (0, 12)] {
        if !out.is_empty() {
            out.push('-');
        }
        push_hex(&mut out, id >> shift, width);
    }
    out
}

fn nonzero_u128(rng: &mut Rng) -> u128 {
    loop {
        let v = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64(rng: &mut Rng) -> u64 {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v;
        }
    }
}

/// Ratio sampling on the trace id, so every proxy of a trace decides alike.
pub fn sampled_by_rate(settings: &TraceSettings, trace_id: u128) -> bool {
    (trace_id as u64 & (crate::config::SAMPLE_SPACE - 1)) < settings.sample_threshold
}

/// `baggage` with our tenant member replacing any the client sent.
pub fn baggage_with_tenant<'a>(
    existing: impl Iterator<Item = &'a str>,
    key: &str,
    tenant: &str,
) -> String {
    let mut members: Vec<&str> = existing
        .flat_map(|v| v.split(','))
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| {
            let k = m.split(['=', ';']).next().unwrap_or("").trim();
            !m.is_empty() && k != key
        })
        .collect();
    members.truncate(MAX_BAGGAGE_MEMBERS - 1);
    let mut out = String::new();
    for m in members {
        out.push_str(m);
        out.push(',');
    }
    out.push_str(key);
    out.push('=');
    out.push_str(tenant);
    out
}

/// What the response phase echoes.
#[derive(Debug, Default)]
pub struct Echo {
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    /// Level 2's `traceresponse`: the trace and the span the request went on with.
    pub traceresponse: Option<String>,
}

pub fn on_request<'s>(
    settings: &'s TraceSettings,
    tenant: Tenant<'_>,
    headers: &Headers,
    rng: &mut Rng,
    echo: &mut Echo,
) -> Decision<'s> {
    let mut edits = HeaderEdits::default();
    let trust = settings.trust_incoming_sampling;

    // A second traceparent makes the context ambiguous: invalid.
    let incoming = match headers.count(TRACEPARENT) {
        0 => None,
        1 => Some(headers.get(TRACEPARENT).and_then(parse_traceparent)),
        _ => Some(None),
    };
    let has_tracestate = headers.contains(TRACESTATE);
    let (outcome, traceparent) = match incoming {
        Some(Some(tp)) => {
            let sampled = if trust {
                tp.sampled()
            } else {
                sampled_by_rate(settings, tp.trace_id)
            };
            // "Update sampled": a changed flag goes with a new parent-id.
            let parent_id = if sampled == tp.sampled() {
                tp.parent_id
            } else {
                nonzero_u64(rng)
            };
            // Only the flags we know are kept; the others MUST be zero.
            // (A later version's flags may mean other things: only sampled.)
            let random = if tp.version == 0 {
                tp.flags & FLAG_RANDOM
            } else {
                0
            };
            let out = TraceParent {
                version: 0,
                trace_id: tp.trace_id,
                parent_id,
                flags: random | u8::from(sampled),
            };
            if out != tp {
                edits.set(TRACEPARENT, out.render());
            }
            if has_tracestate {
                let count = headers.count(TRACESTATE);
                match clean_tracestate(headers.get_all(TRACESTATE)) {
                    Some(clean)
                        if count == 1 && headers.get(TRACESTATE) == Some(clean.as_str()) => {}
                    Some(clean) => edits.set(TRACESTATE, clean),
                    None => edits.remove(TRACESTATE),
                }
            }
            (CONTINUED, out)
        }
        invalid_or_missing => {
            let foreign = if invalid_or_missing.is_some() {
                None
            } else {
                let b3 = if settings.translate_b3 {
                    headers
                        .get("b3")
                        .and_then(parse_b3_single)
                        .or_else(|| parse_b3_multi(headers))
                } else {
                    None
                };
                b3.or_else(|| {
                    settings
                        .translate_jaeger
                        .then(|| headers.get("uber-trace-id").and_then(parse_uber))
                        .flatten()
                })
            };
            let (outcome, trace_id, parent_id, hint, random) = match foreign {
                Some(f) => (TRANSLATED, f.trace_id, f.span_id, f.sampled, 0),
                None => {
                    let (outcome, hint) = if invalid_or_missing.is_some() {
                        (INVALID_REPLACED, None)
                    } else {
                        // B3's sampling-only form still says what the caller wants.
                        let hint = settings
                            .translate_b3
                            .then(|| b3_sampling_only(headers))
                            .flatten();
                        (STARTED, hint)
                    };
                    // Our ids are random: Level 2's random flag says so.
                    (
                        outcome,
                        nonzero_u128(rng),
                        nonzero_u64(rng),
                        hint,
                        FLAG_RANDOM,
                    )
                }
            };
            let sampled = match hint {
                Some(s) if trust => s,
                _ => sampled_by_rate(settings, trace_id),
            };
            let out = TraceParent {
                version: 0,
                trace_id,
                parent_id,
                flags: random | u8::from(sampled),
            };
            edits.set(TRACEPARENT, out.render());
            // tracestate belongs to the traceparent it came with.
            if has_tracestate {
                edits.remove(TRACESTATE);
            }
            (outcome, out)
        }
    };

    if !trust {
        // The caller is not trusted to decide sampling: neither through the
        // B3 or Jaeger headers services behind may read instead.
        align_foreign_headers(headers, &traceparent, &mut edits);
    }

    let request_id = match (headers.count(REQUEST_ID), headers.get(REQUEST_ID)) {
        (1, Some(id)) if valid_request_id(id) => Some(id.to_string()),
        _ if settings.generate_request_id => {
            let id = uuid_v4(rng);
            edits.set(REQUEST_ID, id.clone());
            Some(id)
        }
        _ => None,
    };

    if let Some(key) = &settings.baggage_tenant_key {
        let value = baggage_with_tenant(headers.get_all(BAGGAGE), key, tenant.name);
        edits.set(BAGGAGE, value);
    }

    if settings.echo_request_id {
        echo.request_id = request_id;
    }
    if settings.echo_traceparent {
        echo.traceparent = Some(traceparent.render());
    }
    if settings.traceresponse {
        echo.traceresponse = Some(traceparent.render());
    }
    Decision {
        request: edits,
        outcomes: Outcomes::one(outcome),
        log_fields: vec![("trace_id", hex(traceparent.trace_id, 32))],
        ..Decision::default()
    }
}

pub fn on_response<'s>(echo: &mut Echo) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    if let Some(id) = echo.request_id.take() {
        edits.set(REQUEST_ID, id);
    }
    if let Some(tp) = echo.traceparent.take() {
        edits.set(TRACEPARENT, tp);
    }
    if let Some(tr) = echo.traceresponse.take() {
        edits.set(TRACERESPONSE, tr);
    }
    edits
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
