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

/// Kinds of the extra per-tenant metrics a filter may define
/// (`HttpFilter::tenant_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Updates to a tenant's extra metrics, by index into `tenant_metrics`:
/// counters and gauges add the value (gauges may go down), histograms
/// record it. A fixed array: no allocation per request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricUpdates {
    items: [(u16, i64); 4],
    len: usize,
}

impl MetricUpdates {
    /// Ignored past four updates (a filter never needs more per phase).
    pub fn push(&mut self, index: usize, value: i64) {
        if let (Some(slot), Ok(index)) = (self.items.get_mut(self.len), u16::try_from(index)) {
            *slot = (index, value);
            self.len += 1;
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.items
            .iter()
            .take(self.len)
            .map(|(i, v)| (usize::from(*i), *v))
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The RED metrics of the access-log filter, `meshware.<name>.tenant.<t>...`;
/// the stats tags below make `tenant`, `method` and `status_class` labels.
pub fn red_requests(tenant: &str, method: &str, status_class: &str) -> String {
    format!("meshware.requests.tenant.{tenant}.method.{method}.status_class.{status_class}")
}
pub fn red_duration(tenant: &str) -> String {
    format!("meshware.request_duration_ms.tenant.{tenant}")
}
pub fn red_in_flight(tenant: &str) -> String {
    format!("meshware.in_flight.tenant.{tenant}")
}

/// Envoy `stats_config.stats_tags`: `(tag_name, regex)`. The first capture
/// group is removed from the name, the second is the label value.
pub fn stats_tags() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "filter",
            r"^(?:wasmcustom\.)?meshware\.\w+(\.filter\.([^.]+))(?:\.tenant\.|$)",
        ),
        (
            "tenant",
            r"^(?:wasmcustom\.)?meshware\.\w+(?:\.filter\.[^.]+)?(\.tenant\.([^.]+))(?:\.(?:limit|outcome|method)\.|$)",
        ),
        (
            "method",
            r"^(?:wasmcustom\.)?meshware\.requests(?:\.tenant\.[^.]+)?(\.method\.([^.]+))\.status_class\.",
        ),
        (
            "status_class",
            r"^(?:wasmcustom\.)?meshware\.requests(?:\.tenant\.[^.]+)?(?:\.method\.[^.]+)?(\.status_class\.([^.]+))$",
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

/// How often a VM adds its pending counter and gauge increments to Envoy's
/// metrics (its root's tick): at most this late, never lost while the VM
/// lives (flushed when the plugin is removed too).
pub const FLUSH_MS: u64 = 100;

/// Counter and gauge increments kept in the VM between flushes: one host
/// call per metric touched per flush instead of one per increment per
/// request (about 16 per request in the suite). Bounded: past `MAX` metrics
/// pending, the caller flushes at once.
#[derive(Debug, Default)]
pub struct MetricBatch {
    pending: Vec<(u32, i64)>,
}

impl MetricBatch {
    /// Metrics pending at most (more: flush now).
    pub const MAX: usize = 256;

    pub const fn new() -> Self {
        MetricBatch {
            pending: Vec::new(),
        }
    }

    /// Adds `delta` to metric `id`; true when the batch is full.
    pub fn add(&mut self, id: u32, delta: i64) -> bool {
        match self.pending.iter_mut().find(|(m, _)| *m == id) {
            Some((_, d)) => *d = d.wrapping_add(delta),
            None => self.pending.push((id, delta)),
        }
        self.pending.len() >= Self::MAX
    }

    /// Hands every non-zero pending delta to `apply` and empties the batch
    /// (keeping its capacity: no allocation in steady state).
    pub fn drain(&mut self, mut apply: impl FnMut(u32, i64)) {
        for &(id, delta) in &self.pending {
            if delta != 0 {
                apply(id, delta);
            }
        }
        self.pending.clear();
    }
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

    #[test]
    fn a_batch_sums_per_metric_and_drains_once() {
        let mut b = MetricBatch::default();
        assert!(!b.add(7, 1));
        b.add(9, 1);
        b.add(7, 1);
        b.add(11, 1); // a gauge going up ...
        b.add(11, -1); // ... and down again: nothing to send
        let mut sent = Vec::new();
        b.drain(|id, d| sent.push((id, d)));
        assert_eq!(sent, vec![(7, 2), (9, 1)]);
        b.drain(|id, d| sent.push((id, d)));
        assert_eq!(sent.len(), 2, "drained");
        let full = (0..MetricBatch::MAX as u32)
            .map(|i| b.add(i, 1))
            .collect::<Vec<_>>();
        assert_eq!(
            full.iter().filter(|f| **f).count(),
            1,
            "full exactly at MAX"
        );
        assert_eq!(full.last(), Some(&true));
    }
}
