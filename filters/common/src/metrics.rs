//! Metric names. Every filter counts outcomes per tenant under one pattern,
//! `meshware.<kind>.filter.<filter>.tenant.<tenant>.outcome.<outcome>`, which
//! the stats tags below turn into the Prometheus metric `meshware_<kind>` with
//! labels `filter`, `tenant` and `outcome`. Envoy prefixes wasm-defined metrics
//! with `wasmcustom.`, and strips that namespace again in Prometheus output.

/// The metric kind used for per-request decisions.
pub const DECISIONS: &str = "decisions";

pub fn decision_metric(filter: &str, tenant: &str, outcome: &str) -> String {
    format!("meshware.{DECISIONS}.filter.{filter}.tenant.{tenant}.outcome.{outcome}")
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
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(\.tenant\.([^.]+))\.outcome\.",
        ),
        (
            "outcome",
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(?:\.tenant\.[^.]+)?(\.outcome\.([^.]+))$",
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
    }
}
