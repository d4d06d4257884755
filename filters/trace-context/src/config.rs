//! The `trace_context` section of the profile.

use meshware_common::SectionReader;

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub enabled: bool,
    /// Share of new traces marked sampled, 0.0..=1.0.
    pub sample_rate: f64,
    /// `sample_rate` as a threshold on the low 56 bits of the trace id.
    pub sample_threshold: u64,
    /// Honour the caller's sampled flag (traceparent, B3, Jaeger). When false
    /// the tenant's rate decides, so callers cannot force 100% sampling.
    pub trust_incoming_sampling: bool,
    pub translate_b3: bool,
    pub translate_jaeger: bool,
    /// Replace a missing or malformed `x-request-id` with a UUIDv4.
    pub generate_request_id: bool,
    /// Baggage member key that carries the tenant, e.g. `tenant`; None: off.
    pub baggage_tenant_key: Option<String>,
    pub echo_request_id: bool,
    pub echo_traceparent: bool,
    /// Trace Context Level 2's `traceresponse` response header.
    pub traceresponse: bool,
}

pub const SAMPLE_SPACE: u64 = 1 << 56;

/// RFC 9110 token characters: W3C baggage keys are tokens.
fn check_token(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be an HTTP token (1..64 chars, no spaces or separators)".to_string())
    }
}

pub fn parse(r: &mut SectionReader<'_>) -> TraceSettings {
    let enabled = r.bool("enabled", true);
    let sample_rate = r.f64_in("sample_rate", 1.0, 0.0, 1.0);
    TraceSettings {
        enabled,
        sample_rate,
        sample_threshold: (sample_rate * SAMPLE_SPACE as f64) as u64,
        trust_incoming_sampling: r.bool("trust_incoming_sampling", false),
        translate_b3: r.bool("translate_b3", true),
        translate_jaeger: r.bool("translate_jaeger", true),
        generate_request_id: r.bool("generate_request_id", true),
        baggage_tenant_key: r.opt_string("baggage_tenant_key", check_token),
        echo_request_id: r.bool("echo_request_id", false),
        echo_traceparent: r.bool("echo_traceparent", false),
        traceresponse: r.bool("traceresponse", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse_json(v: Value) -> (TraceSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_apply_when_empty() {
        let (s, e) = parse_json(json!({}));
        assert!(e.is_empty());
        assert!(s.enabled && s.translate_b3 && s.translate_jaeger && s.generate_request_id);
        assert!(!s.trust_incoming_sampling && !s.echo_request_id && !s.echo_traceparent);
        assert_eq!(s.sample_rate, 1.0);
        assert_eq!(s.sample_threshold, SAMPLE_SPACE);
        assert_eq!(s.baggage_tenant_key, None);
    }

    #[test]
    fn bad_values_name_their_path() {
        let (_, e) = parse_json(json!({
            "sample_rate": -0.5, "baggage_tenant_key": "a b", "echo_traceparent": "yes", "x": 1
        }));
        assert!(e.contains("t.sample_rate: must be >= 0"), "{e}");
        assert!(
            e.contains("t.baggage_tenant_key: must be an HTTP token"),
            "{e}"
        );
        assert!(e.contains("t.echo_traceparent: must be a boolean"), "{e}");
        assert!(e.contains("t.x: unknown field"), "{e}");
    }
}
