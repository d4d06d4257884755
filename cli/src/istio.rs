//! Istio resources generated from the profile, so routing and filter agree.

use meshware_common::filter::compile;
use meshware_common::ConfigErrors;
use serde_json::{json, Value};

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

    /// `istio/canary-routing.yaml` is generated (`make istio`); it must not drift.
    #[test]
    fn the_committed_manifest_is_the_generated_one() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let json = std::fs::read(format!("{root}/examples/tenants.json")).unwrap();
        let docs = canary_routing(&json, crate::EXAMPLE_SERVICE, crate::EXAMPLE_NAMESPACE).unwrap();
        let expected = format!(
            "{}{}",
            crate::GENERATED_HEADER,
            crate::yaml::documents(&docs)
        );
        let committed = std::fs::read_to_string(format!("{root}/istio/canary-routing.yaml"))
            .unwrap_or_default();
        assert!(
            committed == expected,
            "istio/canary-routing.yaml is stale: run `make istio`"
        );
    }
}
