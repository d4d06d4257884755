//! The suite as a whole: the documented filter order, profile validation with
//! the filters' own code, and the one Envoy bootstrap template used by the
//! demo (`make run`), the e2e tests and `func-e run -c`.

pub mod bootstrap;

use meshware_common::filter::compile;
use meshware_common::ConfigErrors;

/// One filter of the suite.
pub struct FilterSpec {
    /// Profile section, metric label and `dist/<name>.wasm`.
    pub name: &'static str,
    /// Validates a profile with exactly the code the filter runs in `on_configure`.
    pub validate: fn(&[u8]) -> Result<(), ConfigErrors>,
}

fn validate_with<F: meshware_common::HttpFilter>(json: &[u8]) -> Result<(), ConfigErrors> {
    compile::<F>(json).map(|_| ())
}

/// The suite's filters in request order (docs/ARCHITECTURE.md explains it).
/// The demo bootstrap, the tests and the Istio manifests all take this order.
pub const FILTERS: &[FilterSpec] = &[
    FilterSpec {
        name: "trace_context",
        validate: validate_with::<trace_context::TraceContext>,
    },
    FilterSpec {
        name: "endpoint_guard",
        validate: validate_with::<endpoint_guard::EndpointGuard>,
    },
    FilterSpec {
        name: "canary",
        validate: validate_with::<canary::Canary>,
    },
];

/// Every `(routing header, version)` the profile's canary rules can choose
/// besides a tenant's default version, sorted and unique: what a bootstrap
/// or an Istio VirtualService must route. Empty for an invalid profile.
pub fn canary_routes(json: &[u8]) -> Vec<(String, String)> {
    let Ok(profile) = compile::<canary::Canary>(json) else {
        return Vec::new();
    };
    let mut routes: Vec<(String, String)> = (0..profile.tenant_names().len())
        .filter_map(|slot| profile.settings(slot))
        .filter(|s| s.enabled)
        .flat_map(|s| {
            s.versions
                .iter()
                .skip(1)
                .map(|v| (s.routing_header.clone(), v.clone()))
        })
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

pub fn filter(name: &str) -> Option<&'static FilterSpec> {
    FILTERS.iter().find(|f| f.name == name)
}

/// Validates a profile for every filter; returns every distinct problem.
pub fn validate_profile(json: &[u8]) -> Result<(), ConfigErrors> {
    let mut all = ConfigErrors::default();
    for f in FILTERS {
        if let Err(errors) = (f.validate)(json) {
            for e in errors.iter() {
                all.push(e.path.clone(), e.message.clone());
            }
        }
    }
    let all = all.finish();
    if all.is_empty() {
        Ok(())
    } else {
        Err(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_has_a_known_section_and_order_is_unique() {
        for f in FILTERS {
            assert!(
                meshware_common::KNOWN_SECTIONS.contains(&f.name),
                "{}",
                f.name
            );
            assert_eq!(FILTERS.iter().filter(|g| g.name == f.name).count(), 1);
        }
        assert_eq!(FILTERS.len(), meshware_common::KNOWN_SECTIONS.len());
    }

    #[test]
    fn the_example_profile_is_valid() {
        let json = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tenants.json"
        ))
        .unwrap();
        validate_profile(&json).unwrap();
    }

    #[test]
    fn errors_from_all_filters_are_merged_once() {
        let bad =
            br#"{"tenancy":{"default":"a"},"tenants":{"a":{"trace_context":{"sample_rate":"x"}}}}"#;
        let e = validate_profile(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tenants.a.trace_context.sample_rate: must be a number"
        );
    }
}
