//! The adapter's metrics: defined at configure time per tenant, counted per
//! decision into a per-VM batch, flushed to Envoy on the VM's tick.

use super::*;

pub(super) fn define_counters<F: HttpFilter>(
    profile: &Profile<F::Settings>,
    tenant_outcomes: &[Vec<String>],
) -> Vec<Vec<Option<u32>>> {
    let mut all = Vec::with_capacity(profile.tenant_names().len());
    for (slot, tenant) in profile.tenant_names().iter().enumerate() {
        let dynamic = tenant_outcomes.get(slot).map(Vec::as_slice).unwrap_or(&[]);
        let outcomes = F::OUTCOMES
            .iter()
            .copied()
            .chain(dynamic.iter().map(String::as_str));
        let mut ids = Vec::with_capacity(F::OUTCOMES.len() + dynamic.len());
        for outcome in outcomes {
            let name = decision_metric(F::NAME, tenant, outcome);
            let id = hostcalls::define_metric(MetricType::Counter, &name);
            if id.is_err() {
                log::warn!("[{}] could not define metric {name}", F::NAME);
            }
            ids.push(id.ok());
        }
        all.push(ids);
    }
    all
}

/// `meshware.decisions.filter.request.tenant.<t>.outcome.<reason>`: every
/// module defines the same names, so Envoy counts one metric however many
/// filters are loaded (only the first that runs refuses a request).
pub(super) fn define_request_counters<S>(profile: &Profile<S>) -> Vec<Vec<Option<u32>>> {
    profile
        .tenant_names()
        .iter()
        .map(|tenant| {
            crate::request::OUTCOMES
                .iter()
                .map(|outcome| {
                    let name = decision_metric("request", tenant, outcome);
                    hostcalls::define_metric(MetricType::Counter, &name).ok()
                })
                .collect()
        })
        .collect()
}

pub(super) fn define_extra_metrics<F: HttpFilter>(
    profile: &Profile<F::Settings>,
) -> Vec<Vec<(MetricKind, Option<u32>)>> {
    profile
        .tenant_names()
        .iter()
        .enumerate()
        .map(|(slot, tenant)| {
            let Some(settings) = profile.settings(slot) else {
                return Vec::new();
            };
            F::tenant_metrics(settings, tenant)
                .into_iter()
                .map(|(kind, name)| {
                    let host_kind = match kind {
                        MetricKind::Counter => MetricType::Counter,
                        MetricKind::Gauge => MetricType::Gauge,
                        MetricKind::Histogram => MetricType::Histogram,
                    };
                    let id = hostcalls::define_metric(host_kind, &name).ok();
                    if id.is_none() {
                        log::warn!("[{}] could not define metric {name}", F::NAME);
                    }
                    (kind, id)
                })
                .collect()
        })
        .collect()
}

pub(super) fn update_metrics<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    updates: &MetricUpdates,
) {
    let Some(metrics) = compiled.extra_metrics.get(slot) else {
        return;
    };
    for (index, value) in updates.iter() {
        if let Some((kind, Some(id))) = metrics.get(index) {
            let _ = match kind {
                MetricKind::Histogram => {
                    hostcalls::record_metric(*id, u64::try_from(value).unwrap_or(0))
                }
                MetricKind::Counter | MetricKind::Gauge => {
                    add_metric(*id, value);
                    Ok(())
                }
            };
        }
    }
}

thread_local! {
    /// This VM's counter and gauge increments since the last flush.
    static PENDING_METRICS: RefCell<crate::metrics::MetricBatch> =
        const { RefCell::new(crate::metrics::MetricBatch::new()) };
}

/// Counts into the VM's batch; Envoy sees it at the next flush (the root's
/// tick, every `metrics::FLUSH_MS`), or now when the batch is full.
pub(super) fn add_metric(id: u32, delta: i64) {
    let full = PENDING_METRICS.with(|b| b.try_borrow_mut().map(|mut b| b.add(id, delta)));
    match full {
        Ok(false) => {}
        Ok(true) => flush_metrics(),
        // Never lose a count: send it directly.
        Err(_) => {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }
}

/// Adds the VM's pending increments to Envoy's metrics.
pub fn flush_metrics() {
    PENDING_METRICS.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.drain(|id, delta| {
                let _ = hostcalls::increment_metric(id, delta);
            });
        }
    });
}

/// Whether a tick of `period` ms is due at `now` (then the next is
/// scheduled). Half a VM tick of slack, so a VM tick arriving a little early
/// still counts. A module of one filter and the suite's concerns share it.
pub fn tick_due(now: u64, next_due: &mut u64, period: u64) -> bool {
    if period == 0 || now < *next_due {
        return false;
    }
    let slack = vm_tick_period_ms(period) / 2;
    *next_due = now.saturating_add(period.saturating_sub(slack));
    true
}

/// The VM's tick period: the filter's own, or the metric flush period when
/// that is shorter (or the filter has none).
pub fn vm_tick_period_ms(filter_period_ms: u64) -> u64 {
    match filter_period_ms {
        0 => crate::metrics::FLUSH_MS,
        p => p.min(crate::metrics::FLUSH_MS),
    }
}

pub(super) fn count<F: HttpFilter>(compiled: &Compiled<F>, slot: usize, outcomes: Outcomes) {
    let counters = compiled
        .counters
        .get(slot)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for outcome in outcomes.iter() {
        if let Some(Some(id)) = counters.get(outcome) {
            add_metric(*id, 1);
        }
    }
}
