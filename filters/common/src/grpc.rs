//! gRPC as the filters answer and observe it: status codes, the text of a
//! local reply's `grpc-message`, the `grpc-timeout` header.
//!
//! A gRPC client reads the outcome of a call from `grpc-status`, not from
//! the HTTP status (always 200), so every local reply to a gRPC request
//! carries a gRPC status chosen here (or by the filter), never Envoy's
//! generic HTTP-to-gRPC mapping (which turns 429 into `UNAVAILABLE`, the
//! code clients retry at once).

/// The canonical status codes (grpc/grpc `doc/statuscodes.md`), by value.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const OK: u8 = 0;
pub const CANCELLED: u8 = 1;
pub const UNKNOWN: u8 = 2;
pub const INVALID_ARGUMENT: u8 = 3;
pub const DEADLINE_EXCEEDED: u8 = 4;
pub const ALREADY_EXISTS: u8 = 6;
pub const PERMISSION_DENIED: u8 = 7;
pub const RESOURCE_EXHAUSTED: u8 = 8;
pub const FAILED_PRECONDITION: u8 = 9;
pub const ABORTED: u8 = 10;
pub const UNIMPLEMENTED: u8 = 12;
pub const INTERNAL: u8 = 13;
pub const UNAVAILABLE: u8 = 14;
pub const UNAUTHENTICATED: u8 = 16;

/// The code named `name` (`UNAVAILABLE`, case-insensitive), for profiles.
pub fn code_named(name: &str) -> Option<u8> {
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

/// The name of `code` (`"14"` style codes outside the table are `UNKNOWN`).
pub fn name_of(code: u8) -> &'static str {
    NAMES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// Whether a request's `content-type` makes it a gRPC call
/// (`application/grpc`, `application/grpc+proto`, ...; gRPC-Web arrives
/// here already translated by Envoy's `grpc_web` filter, and is also
/// recognised before it).
pub fn is_grpc(content_type: &str) -> bool {
    let t = content_type.as_bytes();
    let prefix = b"application/grpc";
    t.len() >= prefix.len()
        && t.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && matches!(t.get(prefix.len()), None | Some(b'+' | b'-' | b';'))
}

/// The gRPC status of a meshware local reply that names no code of its own,
/// by the HTTP status the filter chose. It follows what each status means
/// for the call rather than gRPC's transport mapping: a quota (429) is
/// `RESOURCE_EXHAUSTED`, a hidden or unknown endpoint (404) `UNIMPLEMENTED`,
/// an in-flight duplicate (409) `ABORTED`, a reused key with another
/// payload (422) `FAILED_PRECONDITION`, a request refused as unreadable
/// (400) `INVALID_ARGUMENT`.
pub fn status_for_http(status: u32) -> u8 {
    match status {
        200..=299 => OK,
        400 => INVALID_ARGUMENT,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 | 405 | 501 => UNIMPLEMENTED,
        408 | 504 => DEADLINE_EXCEEDED,
        409 => ABORTED,
        413 | 414 | 429 | 431 => RESOURCE_EXHAUSTED,
        412 | 422 | 428 => FAILED_PRECONDITION,
        499 => CANCELLED,
        500 => INTERNAL,
        502 | 503 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// The HTTP status a gRPC status stands for (the mapping of Google's API
/// design guide and grpc-gateway): RED metrics class a gRPC call by it, so
/// `UNAVAILABLE` is a 5xx and `NOT_FOUND` a 4xx although both were HTTP 200.
pub fn http_equivalent(code: u64) -> u64 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500, // UNKNOWN, INTERNAL, DATA_LOSS and codes beyond the table
    }
}

/// The `grpc-message` of a local reply: which filter answered and why, in
/// the outcome's label (`rate_limit: limited`): short, nothing from the
/// request, percent-encoded as the gRPC wire format wants (every byte
/// outside printable ASCII, and `%`).
pub fn message(filter: &str, outcome: Option<&str>) -> String {
    let text = match outcome {
        Some(o) => format!("{filter}: {o}"),
        None => filter.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reply headers that are not gRPC metadata: Envoy writes the content type
/// of a gRPC reply itself, and a trailers-only reply has no body.
pub fn is_metadata(name: &str) -> bool {
    !matches!(name, "content-type" | "content-length")
}

/// The longest timeout `grpc-timeout` can express (8 digits of hours) is
/// far beyond any budget; values are kept in milliseconds, saturating.
const MAX_DIGITS: usize = 8;

/// Why a `grpc-timeout` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTimeout {
    Empty,
    TooManyDigits,
    NotDigits,
    UnknownUnit,
}

impl BadTimeout {
    pub fn describe(self) -> &'static str {
        match self {
            BadTimeout::Empty => "no digits",
            BadTimeout::TooManyDigits => "more than 8 digits",
            BadTimeout::NotDigits => "not a number",
            BadTimeout::UnknownUnit => "unknown unit",
        }
    }
}

/// A `grpc-timeout` value (`1-8 digits` then a unit `H M S m u n`) in
/// milliseconds, rounded up so a sub-millisecond deadline is not zero.
pub fn parse_timeout(value: &str) -> Result<u64, BadTimeout> {
    let bytes = value.as_bytes();
    let Some((&unit, digits)) = bytes.split_last() else {
        return Err(BadTimeout::Empty);
    };
    if digits.is_empty() {
        return Err(BadTimeout::Empty);
    }
    if digits.len() > MAX_DIGITS {
        return Err(BadTimeout::TooManyDigits);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(BadTimeout::NotDigits);
        }
        n = n * 10 + u64::from(d - b'0');
    }
    let ceil_div = |n: u64, d: u64| n.div_ceil(d);
    Ok(match unit {
        b'H' => n.saturating_mul(3_600_000),
        b'M' => n.saturating_mul(60_000),
        b'S' => n.saturating_mul(1_000),
        b'm' => n,
        b'u' => ceil_div(n, 1_000),
        b'n' => ceil_div(n, 1_000_000),
        _ => return Err(BadTimeout::UnknownUnit),
    })
}

/// `ms` as a `grpc-timeout` value: the finest unit whose 8 digits hold
/// it, rounded up.
pub fn format_timeout(ms: u64) -> String {
    const LIMIT: u64 = 100_000_000;
    for (unit, per) in [('m', 1), ('S', 1_000), ('M', 60_000)] {
        let n = ms.div_ceil(per);
        if n < LIMIT {
            return format!("{n}{unit}");
        }
    }
    format!("{}H", ms.div_ceil(3_600_000).min(LIMIT - 1))
}

/// The serialized `envoy.config.core.v3.GrpcService` naming `cluster`
/// (`envoy_grpc.cluster_name`), the target of a gRPC callout. Names of at
/// most 100 bytes: every length is one varint byte, so the message is ASCII
/// text.
pub fn envoy_grpc_service(cluster: &str) -> String {
    let mut inner = String::with_capacity(cluster.len() + 2);
    inner.push('\n'); // field 1 (cluster_name), length-delimited
    inner.push(char::from(cluster.len().min(127) as u8));
    inner.push_str(cluster);
    let mut outer = String::with_capacity(inner.len() + 2);
    outer.push('\n'); // field 1 (envoy_grpc), length-delimited
    outer.push(char::from(inner.len().min(127) as u8));
    outer.push_str(&inner);
    outer
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn codes_by_name_and_back() {
        assert_eq!(code_named("unavailable"), Some(14));
        assert_eq!(code_named("RESOURCE_EXHAUSTED"), Some(8));
        assert_eq!(code_named("14"), None);
        assert_eq!(code_named("NOPE"), None);
        for (i, n) in NAMES.iter().enumerate() {
            assert_eq!(code_named(n).map(usize::from), Some(i));
            assert_eq!(name_of(u8::try_from(i).unwrap()), *n);
        }
        assert_eq!(name_of(99), "UNKNOWN");
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(yes), "{yes}");
        }
        for no in [
            "application/grpcx",
            "application/json",
            "",
            "application/gr",
        ] {
            assert!(!is_grpc(no), "{no}");
        }
    }

    #[test]
    fn local_reply_codes_follow_the_meaning() {
        assert_eq!(status_for_http(429), RESOURCE_EXHAUSTED);
        assert_eq!(status_for_http(401), UNAUTHENTICATED);
        assert_eq!(status_for_http(403), PERMISSION_DENIED);
        assert_eq!(status_for_http(404), UNIMPLEMENTED);
        assert_eq!(status_for_http(413), RESOURCE_EXHAUSTED);
        assert_eq!(status_for_http(409), ABORTED);
        assert_eq!(status_for_http(422), FAILED_PRECONDITION);
        assert_eq!(status_for_http(503), UNAVAILABLE);
        assert_eq!(status_for_http(400), INVALID_ARGUMENT);
        assert_eq!(status_for_http(418), UNKNOWN);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            message("rate_limit", Some("limited")),
            "rate_limit: limited"
        );
        assert_eq!(message("request", None), "request");
        assert_eq!(message("x", Some("50%\né")), "x: 50%25%0A%C3%A9");
    }

    #[test]
    fn grpc_statuses_class_like_their_http_meaning() {
        assert_eq!(http_equivalent(0), 200);
        assert_eq!(http_equivalent(14), 503);
        assert_eq!(http_equivalent(4), 504);
        assert_eq!(http_equivalent(5), 404);
        assert_eq!(http_equivalent(16), 401);
        assert_eq!(http_equivalent(8), 429);
        assert_eq!(http_equivalent(2), 500);
        assert_eq!(http_equivalent(99), 500);
        // Our own replies read back as the HTTP status they came from.
        for http in [401, 403, 429, 409, 503] {
            assert_eq!(
                http_equivalent(u64::from(status_for_http(http))),
                u64::from(http)
            );
        }
    }

    #[test]
    fn timeouts_in_every_unit() {
        assert_eq!(parse_timeout("1H"), Ok(3_600_000));
        assert_eq!(parse_timeout("2M"), Ok(120_000));
        assert_eq!(parse_timeout("30S"), Ok(30_000));
        assert_eq!(parse_timeout("250m"), Ok(250));
        assert_eq!(parse_timeout("1500u"), Ok(2));
        assert_eq!(parse_timeout("1n"), Ok(1));
        assert_eq!(parse_timeout("0m"), Ok(0));
        assert_eq!(parse_timeout("99999999H"), Ok(99_999_999 * 3_600_000));
        assert_eq!(parse_timeout(""), Err(BadTimeout::Empty));
        assert_eq!(parse_timeout("S"), Err(BadTimeout::Empty));
        assert_eq!(parse_timeout("123456789m"), Err(BadTimeout::TooManyDigits));
        assert_eq!(parse_timeout("1.5S"), Err(BadTimeout::NotDigits));
        assert_eq!(parse_timeout("-1S"), Err(BadTimeout::NotDigits));
        assert_eq!(parse_timeout("10s"), Err(BadTimeout::UnknownUnit));
        assert_eq!(parse_timeout("10"), Err(BadTimeout::UnknownUnit));
    }

    #[test]
    fn formatted_timeouts_read_back_at_least_as_long() {
        for ms in [
            0,
            1,
            999,
            99_999_999,
            100_000_000,
            123_456_789_012,
            99_999_999_999_999,
        ] {
            let back = parse_timeout(&format_timeout(ms)).unwrap();
            assert!(back >= ms && back - ms < 3_600_000, "{ms} -> {back}");
        }
    }
}
