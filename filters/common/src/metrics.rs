//! Metric names. Every filter counts outcomes per tenant under one pattern,
//! `meshware.<kind>.filter.<filter>.tenant.<tenant>.outcome.<outcome>`, which
//! the stats tags below turn into the Prometheus metric `meshware_<kind>` with
//! labels `filter`, `tenant` and `outcome`. Envoy prefixes wasm-defined metrics
//! with `wasmcustom.`, and strips that namespace again in Prometheus output.

/// The metric kind used for per-request decisions.
pub const DECISIONS: &str = "decisions";

/// `outcome` is a plain label (`started`) or qualified by one extra dimension,
/// `limit.<name>.<outcome>`, which becomes a `limit` label.
pub fn decision_metric(filter: &str, tenant: &str, outcome: &str) -> String {
    match outcome.split_once('.') {
        Some((dimension, rest)) => match rest.rsplit_once('.') {
            Some((value, outcome)) => format!(
                "meshware.{DECISIONS}.filter.{filter}.tenant.{tenant}.{dimension}.{value}.outcome.{outcome}"
            ),
            None => format!("meshware.{DECISIONS}.filter.{filter}.tenant.{tenant}.outcome.{rest}"),
        },
        None => format!("meshware.{DECISIONS}.filter.{filter}.tenant.{tenant}.outcome.{outcome}"),
    }
}

/// Envoy `stats_config.stats_tags`: `(tag_name, regex)`. The first capture
/// group is removed from the name, the second is the label value.
pub fn stats_tags() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "filter",
            r"^(?:wasmcustom\.)?meshware\.\w+(\.filter\.([^.]+))\.tenant\.",
        ),
        (
            "tenant",
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(\.tenant\.([^.]+))\.(?:limit\.[^.]+\.)?outcome\.",
        ),
        (
            "limit",
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(?:\.tenant\.[^.]+)?(\.limit\.([^.]+))\.outcome\.",
        ),
        (
            "outcome",
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(?:\.tenant\.[^.]+)?(?:\.limit\.[^.]+)?(\.outcome\.([^.]+))$",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn decision_metric_name_has_every_label_segment() {
        assert_eq!(
            decision_metric("trace_context", "acme", "started"),
            "meshware.decisions.filter.trace_context.tenant.acme.outcome.started"
        );
        assert_eq!(
            decision_metric("rate_limit", "acme", "limit.per_client.limited"),
            "meshware.decisions.filter.rate_limit.tenant.acme.limit.per_client.outcome.limited"
        );
    }
}
