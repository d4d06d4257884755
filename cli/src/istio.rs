//! Istio resources generated from the profile, so routing and filter agree:
//! EnvoyFilter, WasmPlugin and TrafficExtension per filter (in the suite's
//! order) or for the single suite module, and the canary VirtualService +
//! DestinationRule.

use crate::bootstrap::{
    has_section, native_filter, replay_cluster, replay_listener, replay_route,
    wasm_filter_with_code, SUITE,
};
use crate::{Failure, Phase, FILTERS};
use meshware_common::filter::compile;
use meshware_common::ConfigErrors;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Where the sidecar finds the modules for EnvoyFilter (mounted, see
/// docs/DEPLOY.md); WasmPlugin/TrafficExtension pull OCI images instead.
pub const POD_WASM_DIR: &str = "/var/lib/meshware";

pub struct IstioParams {
    pub namespace: String,
    /// `matchLabels` of the workloads (sidecars or gateway pods).
    pub selector: BTreeMap<String, String>,
    /// OCI repository prefix: `oci://<image>/<filter>:<tag>`.
    pub image: String,
    pub tag: String,
    /// Filter name -> sha256 (hex) of its module (`plugin.wasm` in the image).
    pub sha256: BTreeMap<String, String>,
}

fn metadata(name: &str, p: &IstioParams) -> Value {
    json!({
        "name": format!("meshware-{}", name.replace('_', "-")),
        "namespace": p.namespace,
        "labels": {"app.kubernetes.io/managed-by": "meshware", "app.kubernetes.io/part-of": "meshware"}
    })
}

/// Within a phase Istio runs higher priorities first: descending in suite order.
fn priority(index: usize) -> i64 {
    1000 - 10 * index as i64
}

/// One wasm module a manifest deploys: a filter, or the suite module.
struct Module {
    name: &'static str,
    phase: Phase,
    failure: Failure,
}

/// The ten filters as separate modules, in the suite's order.
fn separate_modules() -> Vec<Module> {
    FILTERS
        .iter()
        .map(|f| Module {
            name: f.name,
            phase: f.phase,
            failure: f.failure,
        })
        .collect()
}

/// The suite module alone: it holds jwt_auth and endpoint_guard, so it
/// authenticates (first phase) and fails closed.
fn suite_module() -> Vec<Module> {
    vec![Module {
        name: SUITE,
        phase: Phase::Authn,
        failure: Failure::Closed,
    }]
}

/// One EnvoyFilter per filter, inserting it before the router on sidecar
/// inbound listeners and on gateways. `priority` orders the patches so
/// repeated "insert before router" yields the suite's order.
pub fn envoy_filters(profile: &str, p: &IstioParams) -> Vec<Value> {
    envoy_filters_of(&separate_modules(), profile, p)
}

/// The EnvoyFilter inserting the suite module (instead of `envoy_filters`).
pub fn suite_envoy_filters(profile: &str, p: &IstioParams) -> Vec<Value> {
    envoy_filters_of(&suite_module(), profile, p)
}

/// The EnvoyFilter inserting the native suite (`libmeshware.so`, Envoy's
/// dynamic modules) from `POD_WASM_DIR`: for an istio-proxy built on Envoy
/// 1.40.0 only (docs/DEPLOY.md). Instead of the wasm manifests.
pub fn native_envoy_filters(profile: &str, p: &IstioParams) -> Vec<Value> {
    let value = native_filter(std::path::Path::new(POD_WASM_DIR), profile);
    vec![envoy_filter("native", 0, value, p)]
}

fn envoy_filters_of(modules: &[Module], profile: &str, p: &IstioParams) -> Vec<Value> {
    modules
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let code = json!({"local": {"filename": format!("{POD_WASM_DIR}/{}.wasm", f.name)}});
            let value = wasm_filter_with_code(f.name, code, profile, &[]);
            envoy_filter(f.name, i, value, p)
        })
        .collect()
}

/// One EnvoyFilter: `value` inserted before the router on sidecar inbound
/// listeners and on gateways, at `priority`.
fn envoy_filter(name: &str, priority: usize, value: Value, p: &IstioParams) -> Value {
    let patches: Vec<Value> = ["SIDECAR_INBOUND", "GATEWAY"]
        .iter()
        .map(|context| {
            json!({
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": context,
                    "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"}
                    }}}
                },
                "patch": {"operation": "INSERT_BEFORE", "value": value}
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(name, p),
        "spec": {
            "workloadSelector": {"labels": p.selector},
            "priority": priority,
            "configPatches": patches
        }
    })
}

/// The idempotency filter's replay route for Istio (`grpc_replay: full`):
/// the replay listener and its cluster added, the route first in every
/// route configuration of the selected workloads. Istio's proxies already
/// run Envoy's internal listeners. Deployed with any of the module sets.
pub fn grpc_replay_envoy_filter(p: &IstioParams) -> Value {
    let mut patches = Vec::new();
    // Istio builds a sidecar's clusters in its outbound pass, its listeners
    // and inbound routes in the inbound one; a gateway's in its own.
    for (listeners, clusters) in [
        ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND"),
        ("GATEWAY", "GATEWAY"),
    ] {
        patches.push(
            json!({"applyTo": "LISTENER", "match": {"context": listeners},
            "patch": {"operation": "ADD", "value": replay_listener()}}),
        );
        patches.push(json!({"applyTo": "CLUSTER", "match": {"context": clusters},
            "patch": {"operation": "ADD", "value": replay_cluster()}}));
        patches.push(json!({"applyTo": "HTTP_ROUTE",
            "match": {"context": listeners, "routeConfiguration": {"vhost": {}}},
            "patch": {"operation": "INSERT_FIRST", "value": replay_route()}}));
    }
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("grpc_replay", p),
        "spec": {
            "workloadSelector": {"labels": p.selector},
            "configPatches": patches
        }
    })
}

fn wasm_fields(f: &Module, index: usize, profile: &Value, p: &IstioParams) -> Value {
    let mut fields = json!({
        "url": format!("{}/{}:{}", p.image, f.name.replace('_', "-"), p.tag),
        "sha256": p.sha256.get(f.name).cloned().unwrap_or_default(),
        "pluginName": f.name,
        "pluginConfig": profile,
        "failStrategy": f.failure.istio(),
        "phase": f.phase.istio(),
        "priority": priority(index),
        "type": "HTTP"
    });
    // The secrets the profile references reach the VM from the sidecar's
    // environment (fed by a Kubernetes Secret, docs/DEPLOY.md), never
    // through this resource.
    let env: Vec<Value> = meshware_common::secret::env_names(profile)
        .into_iter()
        .map(|name| json!({"name": name, "valueFrom": "HOST"}))
        .collect();
    if let (false, Some(obj)) = (env.is_empty(), fields.as_object_mut()) {
        obj.insert("vmConfig".into(), json!({ "env": env }));
    }
    fields
}

/// One WasmPlugin per filter (Istio pulls the OCI image; phase and priority
/// give the suite's order).
pub fn wasm_plugins(profile: &Value, p: &IstioParams) -> Vec<Value> {
    wasm_plugins_of(&separate_modules(), profile, p)
}

fn wasm_plugins_of(modules: &[Module], profile: &Value, p: &IstioParams) -> Vec<Value> {
    modules
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut spec = wasm_fields(f, i, profile, p);
            if let Some(obj) = spec.as_object_mut() {
                obj.insert("selector".into(), json!({"matchLabels": p.selector}));
            }
            json!({
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": metadata(f.name, p),
                "spec": spec
            })
        })
        .collect()
}

/// The same as TrafficExtension resources (Istio's successor API).
pub fn traffic_extensions(profile: &Value, p: &IstioParams) -> Vec<Value> {
    traffic_extensions_of(&separate_modules(), profile, p)
}

fn traffic_extensions_of(modules: &[Module], profile: &Value, p: &IstioParams) -> Vec<Value> {
    modules
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut wasm = wasm_fields(f, i, profile, p);
            let (phase, priority) = match wasm.as_object_mut() {
                Some(obj) => (obj.remove("phase"), obj.remove("priority")),
                None => (None, None),
            };
            let phase = match phase.as_ref().and_then(Value::as_str) {
                Some("UNSPECIFIED_PHASE") => json!("UNSPECIFIED"),
                _ => phase.unwrap_or(Value::Null),
            };
            json!({
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "TrafficExtension",
                "metadata": metadata(f.name, p),
                "spec": {
                    "selector": {"matchLabels": p.selector},
                    "phase": phase,
                    "priority": priority,
                    "wasm": wasm
                }
            })
        })
        .collect()
}

/// A VirtualService that routes on the canary routing header to one subset
/// per version, and the DestinationRule defining those subsets (pods
/// labelled `version: <v>`). Every version the profile can choose gets a
/// route; requests without the header go to the default tenant's default.
pub fn canary_routing(
    profile: &[u8],
    service: &str,
    namespace: &str,
) -> Result<Vec<Value>, ConfigErrors> {
    let compiled = compile::<canary::Canary>(profile)?;
    let mut routes: Vec<(String, String)> = Vec::new();
    for slot in 0..compiled.tenant_names().len() {
        if let Some(s) = compiled.settings(slot).filter(|s| s.enabled) {
            for v in &s.versions {
                routes.push((s.routing_header.clone(), v.clone()));
            }
        }
    }
    routes.sort();
    routes.dedup();
    let fallback = compiled
        .settings(compiled.tenancy.default_slot())
        .and_then(|s| s.versions.first().cloned())
        .unwrap_or_else(|| "stable".to_string());
    let mut versions: Vec<String> = routes.iter().map(|(_, v)| v.clone()).collect();
    versions.push(fallback.clone());
    versions.sort();
    versions.dedup();

    let name = service.split('.').next().unwrap_or(service);
    let destination = |subset: &str| json!({"destination": {"host": service, "subset": subset}});
    let mut http: Vec<Value> = routes
        .iter()
        .map(|(header, version)| {
            json!({
                "name": format!("{version}-by-{header}"),
                "match": [{"headers": {header.as_str(): {"exact": version}}}],
                "route": [destination(version)]
            })
        })
        .collect();
    http.push(json!({"name": "default", "route": [destination(&fallback)]}));
    let subsets: Vec<Value> = versions
        .iter()
        .map(|v| json!({"name": v, "labels": {"version": v}}))
        .collect();
    let metadata = json!({
        "name": format!("{name}-canary"),
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "meshware"}
    });
    Ok(vec![
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": {"hosts": [service], "http": http}
        }),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": metadata,
            "spec": {"host": service, "subsets": subsets}
        }),
    ])
}

/// Every generated manifest file of `istio/`, by file name.
pub fn render_all(
    profile_text: &str,
    p: &IstioParams,
    service: &str,
) -> Result<BTreeMap<&'static str, String>, ConfigErrors> {
    let profile: Value = serde_json::from_str(profile_text).unwrap_or(Value::Null);
    // The EnvoyFilter carries the profile as Envoy's StringValue: compact JSON.
    let compact = profile.to_string();
    let header = crate::GENERATED_HEADER;
    let mut files = BTreeMap::new();
    let doc = |docs: Vec<Value>| format!("{header}{}", crate::yaml::documents(&docs));
    files.insert("envoyfilter.yaml", doc(envoy_filters(&compact, p)));
    files.insert("wasmplugin.yaml", doc(wasm_plugins(&profile, p)));
    files.insert(
        "trafficextension.yaml",
        doc(traffic_extensions(&profile, p)),
    );
    // The same three shapes for the suite module: deploy one set or the other.
    let suite = suite_module();
    files.insert(
        "suite/envoyfilter.yaml",
        doc(envoy_filters_of(&suite, &compact, p)),
    );
    files.insert(
        "suite/wasmplugin.yaml",
        doc(wasm_plugins_of(&suite, &profile, p)),
    );
    files.insert(
        "suite/trafficextension.yaml",
        doc(traffic_extensions_of(&suite, &profile, p)),
    );
    // The native suite (Envoy's dynamic modules): an EnvoyFilter only.
    files.insert(
        "native/envoyfilter.yaml",
        doc(native_envoy_filters(&compact, p)),
    );
    if has_section(profile_text, "idempotency") {
        files.insert("grpc-replay.yaml", doc(vec![grpc_replay_envoy_filter(p)]));
    }
    files.insert(
        "grafana-dashboard.json",
        format!("{:#}\n", crate::dashboard::grafana()),
    );
    files.insert(
        "canary-routing.yaml",
        doc(canary_routing(
            profile_text.as_bytes(),
            service,
            &p.namespace,
        )?),
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_profile_routes_v1_and_v2() {
        let json = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tenants.json"
        ))
        .unwrap();
        let docs = canary_routing(&json, "shop.demo.svc.cluster.local", "demo").unwrap();
        let http = docs[0]["spec"]["http"].as_array().unwrap();
        let matched: Vec<(&str, &str)> = http
            .iter()
            .filter(|r| r.get("match").is_some())
            .map(|r| {
                (
                    r["match"][0]["headers"]["x-route-version"]["exact"]
                        .as_str()
                        .unwrap(),
                    r["route"][0]["destination"]["subset"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(matched, [("v1", "v1"), ("v2", "v2")]);
        assert_eq!(
            http.last().unwrap()["route"][0]["destination"]["subset"],
            "v1"
        );
        let subsets = docs[1]["spec"]["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[1]["labels"]["version"], "v2");
    }
}
