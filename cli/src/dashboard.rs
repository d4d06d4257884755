//! The Grafana dashboard (`istio/grafana-dashboard.json`): per-tenant rate,
//! errors, p50/p99 latency, in-flight, and every filter's outcomes, built on
//! exactly the metric names the filters define (docs/CONFIG.md, `access_log`).

use serde_json::{json, Value};

/// Every Prometheus metric the dashboard queries (real Envoy exports each:
/// `tests/tests/live_config.rs`, `every_metric_the_dashboard_queries_is_exported`).
pub const METRICS: &[&str] = &[
    "meshware_requests",
    "meshware_request_duration_ms_bucket",
    "meshware_in_flight",
    "meshware_decisions",
    "meshware_config_revision",
    "meshware_config_staleness_ms",
    "meshware_config_updates",
    "meshware_config_watch_open",
];

const RATE: &str = "$__rate_interval";

fn panel(
    id: usize,
    title: &str,
    unit: &str,
    targets: Vec<(String, &str)>,
    x: u32,
    y: u32,
    w: u32,
) -> Value {
    let targets: Vec<Value> = targets
        .into_iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({
                "refId": char::from(b'A' + i as u8).to_string(),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"}
            })
        })
        .collect();
    json!({
        "id": id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets
    })
}

pub fn grafana() -> Value {
    let sel = "tenant=~\"$tenant\"";
    let mut panels = vec![
        panel(
            1,
            "Requests per second by tenant",
            "reqps",
            vec![(
                format!("sum by (tenant) (rate(meshware_requests{{{sel}}}[{RATE}]))"),
                "{{tenant}}",
            )],
            0,
            0,
            12,
        ),
        panel(
            2,
            "Error ratio by tenant (5xx, 4xx; gRPC calls by their grpc-status)",
            "percentunit",
            vec![
                (
                    format!("sum by (tenant) (rate(meshware_requests{{{sel},status_class=\"5xx\"}}[{RATE}])) / sum by (tenant) (rate(meshware_requests{{{sel}}}[{RATE}]))"),
                    "{{tenant}} 5xx",
                ),
                (
                    format!("sum by (tenant) (rate(meshware_requests{{{sel},status_class=\"4xx\"}}[{RATE}])) / sum by (tenant) (rate(meshware_requests{{{sel}}}[{RATE}]))"),
                    "{{tenant}} 4xx",
                ),
            ],
            12,
            0,
            12,
        ),
        panel(
            3,
            "Latency p50 / p99 by tenant",
            "ms",
            vec![
                (
                    format!("histogram_quantile(0.5, sum by (tenant, le) (rate(meshware_request_duration_ms_bucket{{{sel}}}[{RATE}])))"),
                    "{{tenant}} p50",
                ),
                (
                    format!("histogram_quantile(0.99, sum by (tenant, le) (rate(meshware_request_duration_ms_bucket{{{sel}}}[{RATE}])))"),
                    "{{tenant}} p99",
                ),
            ],
            0,
            8,
            12,
        ),
        panel(
            4,
            "In flight by tenant",
            "short",
            vec![(format!("sum by (tenant) (meshware_in_flight{{{sel}}})"), "{{tenant}}")],
            12,
            8,
            6,
        ),
        panel(
            5,
            "Requests by method and status class",
            "reqps",
            vec![(
                format!("sum by (method, status_class) (rate(meshware_requests{{{sel}}}[{RATE}]))"),
                "{{method}} {{status_class}}",
            )],
            18,
            8,
            6,
        ),
    ];
    for (i, f) in crate::FILTERS.iter().enumerate() {
        panels.push(panel(
            10 + i,
            &format!("{} outcomes", f.name),
            "ops",
            vec![(
                format!(
                    "sum by (tenant, outcome) (rate(meshware_decisions{{filter=\"{}\",{sel}}}[{RATE}]))",
                    f.name
                ),
                "{{tenant}} {{outcome}}",
            )],
            (i as u32 % 3) * 8,
            16 + (i as u32 / 3) * 8,
            8,
        ));
    }
    // The "config" row: live configuration from etcd (docs/CONFIG.md).
    let y = 16 + (crate::FILTERS.len() as u32).div_ceil(3) * 8;
    panels.push(json!({
        "id": 40, "type": "row", "title": "config", "collapsed": false,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []
    }));
    panels.push(panel(
        41,
        "Store revision each proxy runs on",
        "none",
        vec![(
            "max by (pod, filter) (meshware_config_revision)".to_string(),
            "{{pod}} {{filter}}",
        )],
        0,
        y + 1,
        6,
    ));
    panels.push(panel(
        42,
        "Since the store last answered",
        "ms",
        vec![(
            "max by (pod, filter) (meshware_config_staleness_ms)".to_string(),
            "{{pod}} {{filter}}",
        )],
        6,
        y + 1,
        6,
    ));
    panels.push(panel(
        43,
        "Config updates by tenant (accepted / rejected)",
        "ops",
        vec![(
            format!("sum by (tenant, outcome) (rate(meshware_config_updates[{RATE}]))"),
            "{{tenant}} {{outcome}}",
        )],
        12,
        y + 1,
        6,
    ));
    panels.push(panel(
        44,
        "Watching the store (1 open, 0 polling)",
        "none",
        vec![(
            "min by (pod, filter) (meshware_config_watch_open)".to_string(),
            "{{pod}} {{filter}}",
        )],
        18,
        y + 1,
        6,
    ));
    json!({
        "title": "meshware: per-tenant middleware",
        "uid": "meshware-tenants",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "tags": ["meshware", "envoy", "istio"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {
                "name": "datasource",
                "type": "datasource",
                "query": "prometheus",
                "label": "Prometheus"
            },
            {
                "name": "tenant",
                "type": "query",
                "label": "Tenant",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": "label_values(meshware_requests, tenant)", "refId": "tenants"},
                "definition": "label_values(meshware_requests, tenant)",
                "includeAll": true,
                "multi": true,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2
            }
        ]},
        "panels": panels
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_uses_only_the_listed_metrics_and_every_filter_has_a_panel() {
        let d = grafana();
        let panels = d["panels"].as_array().unwrap();
        for f in crate::FILTERS {
            assert!(panels
                .iter()
                .any(|p| p["title"] == format!("{} outcomes", f.name)));
        }
        assert!(panels
            .iter()
            .any(|p| p["type"] == "row" && p["title"] == "config"));
        for p in panels.iter().filter(|p| p["type"] != "row") {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let names: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("meshware_"))
                    .collect();
                assert!(!names.is_empty(), "{expr}");
                assert!(names.iter().all(|n| METRICS.contains(n)), "{expr}");
            }
        }
    }
}
