//! What a decision leaves for Envoy's access log: outcome labels and log
//! fields in filter state (`wasm.meshware.*`), now or kept for the log phase.

use super::*;

/// What the suite's decisions keep for the access log until the log phase:
/// their log fields in order, and the last decision's outcomes (written as
/// labels only if the line is logged: no text is made for the 99% that are
/// not).
#[cfg_attr(not(feature = "suite"), allow(dead_code))]
#[derive(Default)]
pub(super) struct LogRecord {
    pub(super) fields: Vec<(&'static str, String)>,
    /// The tenant slot and outcomes of the last decision with any.
    pub(super) outcomes: Option<(usize, Outcomes)>,
}

/// Where `act_in` puts a decision's record for the access log.
pub(super) enum Record<'a> {
    /// Written now.
    Now,
    /// Kept for the log phase (the suite module, `Stream::log`).
    #[cfg_attr(not(feature = "suite"), allow(dead_code))]
    Later(&'a mut LogRecord),
    /// Not recorded (decisions of the log phase itself).
    Skip,
}

/// The one convention by which filters tell the access log what they did:
/// Envoy filter state `wasm.meshware.<filter>` holds the decision's outcome
/// labels (comma-separated), `wasm.meshware.<field>` each of its `log_fields`.
/// Envoy's access log reads them with `%FILTER_STATE(wasm.meshware.x:PLAIN)%`.
pub(super) fn record_for_log<F: HttpFilter>(
    compiled: &Compiled<F>,
    fields: &[(&'static str, String)],
    outcomes: Option<(usize, Outcomes)>,
) {
    for (field, value) in fields {
        write_log_value(compiled, Some(field), value);
    }
    if let Some((slot, outcomes)) = outcomes.filter(|(_, o)| *o != Outcomes::default()) {
        write_log_value(
            compiled,
            None,
            &outcome_labels::<F>(compiled, slot, outcomes),
        );
    }
}

/// The outcome labels of the access log: the outcomes' names, in order,
/// comma-separated.
pub(super) fn outcome_labels<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    outcomes: Outcomes,
) -> String {
    let dynamic = compiled.tenant_outcomes.get(slot);
    let mut labels = String::new();
    for i in outcomes.iter() {
        let label = match F::OUTCOMES.get(i) {
            Some(name) => *name,
            None => dynamic
                .and_then(|d| d.get(i - F::OUTCOMES.len()))
                .map_or("", String::as_str),
        };
        if !labels.is_empty() {
            labels.push(',');
        }
        labels.push_str(label);
    }
    labels
}

/// Writes one record: a log field, or (`None`) the filter's outcome labels.
pub(super) fn write_log_value<F: HttpFilter>(
    compiled: &Compiled<F>,
    field: Option<&str>,
    value: &str,
) {
    let key;
    let key = match field {
        Some(field) => {
            key = format!("meshware.{field}");
            key.as_str()
        }
        None => compiled.log_key.as_str(),
    };
    let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
}
