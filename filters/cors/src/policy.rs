//! The CORS decision: preflights are answered here and never reach the
//! upstream; actual requests get CORS response headers only for allowed
//! origins. The filter owns the CORS response headers:
//! values an upstream sets are removed, so an upstream that reflects any
//! Origin cannot undo the policy.

use crate::config::{CorsSettings, OriginRule};
use meshware_common::{Decision, HeaderEdits, Headers, LocalReply, Outcomes};
use std::borrow::Cow;

pub const OUTCOMES: &[&str] = &[
    "preflight_allowed",
    "preflight_denied",
    "actual_allowed",
    "actual_denied",
    "no_origin",
];
pub const PREFLIGHT_ALLOWED: usize = 0;
pub const PREFLIGHT_DENIED: usize = 1;
pub const ACTUAL_ALLOWED: usize = 2;
pub const ACTUAL_DENIED: usize = 3;
pub const NO_ORIGIN: usize = 4;

/// Every CORS response header a browser reads (the Fetch standard's six,
/// and Private Network Access's): the filter's alone on the tenant's
/// responses, whatever the upstream sent.
const OWNED_RESPONSE_HEADERS: [&str; 7] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-max-age",
    "access-control-allow-private-network",
];

/// Carried to the response phase.
#[derive(Debug, Default)]
pub struct Pending {
    /// The `access-control-allow-origin` value for an allowed actual request.
    allow_origin: Option<String>,
    /// The filter answered a preflight itself; its own reply passes through
    /// the response phase too and must be left as built.
    answered: bool,
}

fn allowed_origin_value(s: &CorsSettings, origin: &str) -> Option<String> {
    let rule = s.origins.iter().find(|r| r.matches(origin))?;
    // `*` is only ever answered literally, and never with credentials
    // (rejected at configure time); listed origins are echoed as listed.
    Some(if *rule == OriginRule::Any && !s.allow_credentials {
        "*".to_string()
    } else {
        origin.to_string()
    })
}

fn vary_on_origin(s: &CorsSettings) -> bool {
    !s.allows_any_origin() || s.allow_credentials
}

fn preflight<'s>(
    s: &'s CorsSettings,
    origin: &str,
    method: &str,
    headers: &Headers,
) -> Decision<'s> {
    let requested_headers_ok = headers
        .get_all("access-control-request-headers")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .all(|h| s.allowed_headers.iter().any(|a| a.eq_ignore_ascii_case(h)));
    let method_ok = s.allowed_methods.iter().any(|m| m == method);
    let allow_origin =
        allowed_origin_value(s, origin).filter(|_| method_ok && requested_headers_ok);
    // A preflight's answer depends on these request headers whether it
    // allows or denies: caches must key on them either way.
    let vary = vary_on_origin(s).then(|| {
        (
            "vary",
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string(),
        )
    });
    let Some(allow_origin) = allow_origin else {
        return Decision {
            reply: Some(LocalReply {
                status: 403,
                headers: vary.into_iter().collect(),
                body: Cow::Borrowed(b""),
                ..LocalReply::default()
            }),
            outcomes: Outcomes::one(PREFLIGHT_DENIED),
            ..Decision::default()
        };
    };
    let mut reply_headers = vec![
        ("access-control-allow-origin", allow_origin),
        ("access-control-allow-methods", s.methods_value.clone()),
    ];
    if !s.headers_value.is_empty() {
        reply_headers.push(("access-control-allow-headers", s.headers_value.clone()));
    }
    if s.allow_credentials {
        reply_headers.push(("access-control-allow-credentials", "true".to_string()));
    }
    if let Some(max_age) = &s.max_age_value {
        reply_headers.push(("access-control-max-age", max_age.clone()));
    }
    reply_headers.extend(vary);
    Decision {
        reply: Some(LocalReply {
            status: 204,
            headers: reply_headers,
            body: Cow::Borrowed(b""),
            ..LocalReply::default()
        }),
        outcomes: Outcomes::one(PREFLIGHT_ALLOWED),
        ..Decision::default()
    }
}

pub fn on_request<'s>(
    s: &'s CorsSettings,
    headers: &Headers,
    pending: &mut Pending,
) -> Decision<'s> {
    let Some(origin) = headers.get("origin") else {
        return Decision {
            outcomes: Outcomes::one(NO_ORIGIN),
            ..Decision::default()
        };
    };
    let method = headers.get(":method").unwrap_or("");
    if method == "OPTIONS" {
        if let Some(requested) = headers.get("access-control-request-method") {
            pending.answered = true;
            return preflight(s, origin, requested.trim(), headers);
        }
    }
    pending.allow_origin = allowed_origin_value(s, origin);
    let outcome = if pending.allow_origin.is_some() {
        ACTUAL_ALLOWED
    } else {
        ACTUAL_DENIED
    };
    Decision {
        outcomes: Outcomes::one(outcome),
        ..Decision::default()
    }
}

pub fn on_response<'s>(
    s: &'s CorsSettings,
    response: &Headers,
    pending: &mut Pending,
) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    if pending.answered {
        return edits;
    }
    for name in OWNED_RESPONSE_HEADERS {
        if response.contains(name) {
            edits.remove(name);
        }
    }
    if let Some(origin) = pending.allow_origin.take() {
        edits.set("access-control-allow-origin", origin);
        if s.allow_credentials {
            edits.set("access-control-allow-credentials", "true");
        }
        if !s.expose_value.is_empty() {
            edits.set("access-control-expose-headers", s.expose_value.as_str());
        }
    }
    if vary_on_origin(s) {
        let already = response
            .get_all("vary")
            .flat_map(|v| v.split(','))
            .any(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case("origin"));
        if !already {
            edits.append("vary", "Origin");
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse_json;
    use serde_json::json;

    fn settings(v: serde_json::Value) -> &'static CorsSettings {
        let (s, e) = parse_json(v);
        assert_eq!(e, "");
        Box::leak(Box::new(s))
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn acme() -> &'static CorsSettings {
        settings(json!({
            "allowed_origins": ["https://app.acme.example", "https://*.acme.example"],
            "allowed_methods": ["GET", "POST", "PUT"],
            "allowed_headers": ["X-Custom", "content-type"],
            "exposed_headers": ["x-request-id"],
            "allow_credentials": true,
            "max_age": 300
        }))
    }

    fn reply_header<'a>(d: &'a Decision<'_>, name: &str) -> Option<&'a str> {
        d.reply
            .as_ref()?
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_only() {
        let s = acme();
        let d = on_request(
            s,
            &h(&[
                (":method", "OPTIONS"),
                ("origin", "https://shop.acme.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-custom, Content-Type"),
            ]),
            &mut Pending::default(),
        );
        assert_eq!(d.reply.as_ref().unwrap().status, 204);
        assert_eq!(
            reply_header(&d, "access-control-allow-origin"),
            Some("https://shop.acme.example")
        );
        assert_eq!(
            reply_header(&d, "access-control-allow-methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            reply_header(&d, "access-control-allow-headers"),
            Some("x-custom, content-type")
        );
        assert_eq!(
            reply_header(&d, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(reply_header(&d, "access-control-max-age"), Some("300"));
        assert!(reply_header(&d, "vary").unwrap().starts_with("Origin"));
        for (origin, method, hdrs) in [
            ("https://evil.acme.example.attacker.test", "PUT", ""),
            ("https://shop.acme.example", "DELETE", ""),
            ("https://shop.acme.example", "PUT", "x-other"),
        ] {
            let d = on_request(
                s,
                &h(&[
                    (":method", "OPTIONS"),
                    ("origin", origin),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", hdrs),
                ]),
                &mut Pending::default(),
            );
            assert_eq!(
                d.reply.as_ref().unwrap().status,
                403,
                "{origin} {method} {hdrs}"
            );
            // No CORS header, but the Vary every answer of the tenant has.
            let headers = &d.reply.as_ref().unwrap().headers;
            assert!(
                headers.iter().all(|(k, _)| *k == "vary")
                    && headers
                        .iter()
                        .any(|(k, v)| *k == "vary" && v.starts_with("Origin")),
                "{headers:?}"
            );
            assert!(d.outcomes.contains(PREFLIGHT_DENIED));
        }
    }

    #[test]
    fn actual_requests_get_headers_only_when_allowed() {
        let s = acme();
        let mut p = Pending::default();
        let d = on_request(
            s,
            &h(&[(":method", "GET"), ("origin", "https://shop.acme.example")]),
            &mut p,
        );
        assert!(d.outcomes.contains(ACTUAL_ALLOWED));
        let upstream = h(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "DELETE"),
            ("access-control-max-age", "86400"),
            ("access-control-allow-private-network", "true"),
            ("vary", "Accept"),
        ]);
        let e = on_response(s, &upstream, &mut p);
        assert!(e.removes("access-control-allow-origin"));
        // Every CORS response header is the filter's, not only the allow-* ones.
        for h in [
            "access-control-allow-methods",
            "access-control-max-age",
            "access-control-allow-private-network",
        ] {
            assert!(e.removes(h), "{h}");
        }
        assert_eq!(
            e.value_of("access-control-allow-origin"),
            Some("https://shop.acme.example")
        );
        assert_eq!(e.value_of("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            e.value_of("access-control-expose-headers"),
            Some("x-request-id")
        );
        assert_eq!(e.value_of("vary"), Some("Origin"));

        let mut p = Pending::default();
        let d = on_request(
            s,
            &h(&[(":method", "GET"), ("origin", "https://attacker.test")]),
            &mut p,
        );
        assert!(d.outcomes.contains(ACTUAL_DENIED) && d.reply.is_none());
        let e = on_response(s, &upstream, &mut p);
        assert_eq!(e.value_of("access-control-allow-origin"), None);
        assert!(e.removes("access-control-allow-origin"));
        assert_eq!(e.value_of("vary"), Some("Origin"));
    }

    #[test]
    fn null_needs_listing_and_star_is_never_reflected() {
        let any = settings(json!({"allowed_origins": ["*"]}));
        let mut p = Pending::default();
        on_request(
            any,
            &h(&[(":method", "GET"), ("origin", "https://x.test")]),
            &mut p,
        );
        let e = on_response(any, &Headers::default(), &mut p);
        assert_eq!(e.value_of("access-control-allow-origin"), Some("*"));
        assert_eq!(e.value_of("vary"), None);
        let strict = settings(json!({"allowed_origins": ["https://a.test"]}));
        let mut p = Pending::default();
        let d = on_request(
            strict,
            &h(&[(":method", "GET"), ("origin", "null")]),
            &mut p,
        );
        assert!(d.outcomes.contains(ACTUAL_DENIED));
        // Listed (without credentials): answered as `null`.
        let listed = settings(json!({"allowed_origins": ["null"]}));
        let mut p = Pending::default();
        on_request(
            listed,
            &h(&[(":method", "GET"), ("origin", "null")]),
            &mut p,
        );
        let e = on_response(listed, &Headers::default(), &mut p);
        assert_eq!(e.value_of("access-control-allow-origin"), Some("null"));
        assert_eq!(e.value_of("access-control-allow-credentials"), None);
    }
}
