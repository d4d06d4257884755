//! The Istio deployment artifacts: generated manifests match the checked-in
//! ones, each EnvoyFilter's filter config passes `envoy --mode validate`, and
//! each OCI layout holds exactly the module the manifests pin by sha256.

use meshware_cli::bootstrap::SUITE;
use meshware_cli::istio::{
    envoy_filters, grpc_replay_envoy_filter, native_envoy_filters, render_all, suite_envoy_filters,
    IstioParams,
};
use meshware_cli::oci::{sha256_hex, write_layout, LAYER_MEDIA_TYPE, VARIANT_ANNOTATION};
use meshware_cli::{
    EXAMPLE_IMAGE, EXAMPLE_NAMESPACE, EXAMPLE_SELECTOR, EXAMPLE_SERVICE, EXAMPLE_TAG, FILTERS,
};
use meshware_e2e::envoy::validate;
use meshware_e2e::suite::bootstrap;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

/// Independent of the CLI's digest code: sha2 directly on the file.
fn digest_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn example_params() -> IstioParams {
    let dist = meshware_e2e::dist();
    IstioParams {
        namespace: EXAMPLE_NAMESPACE.into(),
        selector: BTreeMap::from([(
            EXAMPLE_SELECTOR.0.to_string(),
            EXAMPLE_SELECTOR.1.to_string(),
        )]),
        image: EXAMPLE_IMAGE.into(),
        tag: EXAMPLE_TAG.into(),
        sha256: modules()
            .map(|name| {
                (
                    name.to_string(),
                    digest_of(&dist.join(format!("{name}.wasm"))),
                )
            })
            .collect(),
    }
}

/// Every module with manifests and an image: the filters, then the suite.
fn modules() -> impl Iterator<Item = &'static str> {
    FILTERS.iter().map(|f| f.name).chain([SUITE])
}

/// Module digests depend on the build (toolchain, checkout path), so the
/// drift check compares everything but the 64-hex sha256 values.
fn without_digests(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().strip_prefix("sha256: ") {
            Some(_) => "sha256: <digest>".to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn checked_in_manifests_are_the_generators_output() {
    let files = render_all(&profile(), &example_params(), EXAMPLE_SERVICE).unwrap();
    assert_eq!(files.len(), 10);
    for (name, generated) in files {
        let path = meshware_e2e::root().join("istio").join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            without_digests(&committed) == without_digests(&generated),
            "{} drifted from the generator: run `make istio`",
            path.display()
        );
    }
}

#[test]
fn every_envoyfilter_patch_passes_envoy_validate() {
    let compact = serde_json::from_str::<Value>(&profile())
        .unwrap()
        .to_string();
    let filters = envoy_filters(&compact, &example_params());
    assert_eq!(filters.len(), FILTERS.len());
    validate_patches(&filters);
}

#[test]
fn the_suite_envoyfilter_patch_passes_envoy_validate() {
    let compact = serde_json::from_str::<Value>(&profile())
        .unwrap()
        .to_string();
    let filters = suite_envoy_filters(&compact, &example_params());
    assert_eq!(filters.len(), 1);
    let config =
        &filters[0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"];
    assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    assert_eq!(
        config["vm_config"]["code"]["local"]["filename"],
        "/var/lib/meshware/suite.wasm"
    );
    validate_patches(&filters);
}

#[test]
fn the_native_envoyfilter_patch_passes_envoy_validate() {
    if meshware_e2e::envoy::version() != meshware_e2e::envoy::NATIVE_ENVOY {
        // Only that Envoy takes (and loads) it: `native_abi` checks the rest.
        return;
    }
    let compact = serde_json::from_str::<Value>(&profile())
        .unwrap()
        .to_string();
    let filters = native_envoy_filters(&compact, &example_params());
    assert_eq!(filters.len(), 1);
    let config = &filters[0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
    assert_eq!(
        config["dynamic_module_config"]["module"]["local"]["filename"],
        "/var/lib/meshware/libmeshware.so"
    );
    assert_eq!(config["filter_config"]["value"], json!(compact));
    validate_patches(&filters);
}

/// The replay route's EnvoyFilter adds to Istio's proxies what the bootstrap
/// of the e2e tests (which replay through it: `grpc` tests) has, and that
/// bootstrap passes `envoy --mode validate`.
#[test]
fn the_grpc_replay_envoyfilter_adds_what_the_tested_bootstrap_has() {
    let filter = grpc_replay_envoy_filter(&example_params());
    let patches = filter["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(
        patches.len(),
        6,
        "listener, cluster, route; sidecar and gateway"
    );
    let (config, _, _) = bootstrap(&profile(), &["idempotency"], 1);
    let resources = &config["static_resources"];
    let named = |list: &Value, name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|item| item["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let routes = &resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"];
    for patch in patches {
        let value = &patch["patch"]["value"];
        let (expected, operation) = match patch["applyTo"].as_str().unwrap() {
            "LISTENER" => (named(&resources["listeners"], "meshware_replay"), "ADD"),
            "CLUSTER" => (named(&resources["clusters"], "meshware_replay"), "ADD"),
            "HTTP_ROUTE" => (routes[0].clone(), "INSERT_FIRST"),
            other => panic!("unexpected patch {other}"),
        };
        assert_eq!(value, &expected, "{patch}");
        assert_eq!(patch["patch"]["operation"], operation);
    }
    assert_eq!(
        config["bootstrap_extensions"][0]["name"],
        "envoy.bootstrap.internal_listener"
    );
    let (ok, log) = validate(&config);
    assert!(ok, "envoy --mode validate:\n{log}");
}

/// The patches' filter configs, pointed at the local build, in one
/// bootstrap that `envoy --mode validate` must accept.
fn validate_patches(filters: &[Value]) {
    let dist = meshware_e2e::dist();
    let mut http_filters = Vec::new();
    for ef in filters {
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        assert_eq!(patches.len(), 2, "SIDECAR_INBOUND and GATEWAY");
        assert_eq!(patches[0]["patch"]["operation"], "INSERT_BEFORE");
        let mut value = patches[0]["patch"]["value"].clone();
        // The pod path of the module, swapped for the local build.
        let native = value["typed_config"]["dynamic_module_config"].is_object();
        let code = if native {
            &mut value["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"]
        } else {
            &mut value["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
        };
        let file = code
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        *code = json!(dist.join(file));
        http_filters.push(value);
    }
    let (mut config, _, _) = bootstrap(&profile(), &[], 1);
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let router = hcm["http_filters"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    http_filters.push(router);
    hcm["http_filters"] = Value::Array(http_filters);
    let (ok, log) = validate(&config);
    assert!(
        ok,
        "envoy --mode validate rejected the EnvoyFilter configs:\n{log}"
    );
}

fn untar_single(tar: &[u8]) -> (String, Vec<u8>) {
    let name: String = tar[..100]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let size = usize::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap(), 8).unwrap();
    (name, tar[512..512 + size].to_vec())
}

#[test]
fn oci_layouts_hold_the_pinned_modules() {
    let out = std::env::temp_dir().join(format!("meshware-oci-{}", std::process::id()));
    let params = example_params();
    let manifests = render_all(&profile(), &params, EXAMPLE_SERVICE).unwrap();
    for name in modules() {
        let wasm = std::fs::read(meshware_e2e::dist().join(format!("{name}.wasm"))).unwrap();
        let dir = out.join(name);
        let digest = write_layout(&dir, &wasm, EXAMPLE_TAG).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest);
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            EXAMPLE_TAG
        );
        let blob = |d: &str| {
            std::fs::read(
                dir.join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap()
        };
        let manifest_bytes = blob(&digest);
        assert_eq!(format!("sha256:{}", sha256_hex(&manifest_bytes)), digest);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["annotations"][VARIANT_ANNOTATION], "compat");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        let gz = blob(layers[0]["digest"].as_str().unwrap());
        assert_eq!(gz.len() as u64, layers[0]["size"].as_u64().unwrap());
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        let (file_name, module) = untar_single(&tar);
        assert_eq!(file_name, "plugin.wasm");
        assert_eq!(module, wasm);
        // The module in the image is the one the manifests pin.
        let pinned = format!(
            "sha256: \"{}\"",
            digest_of(&meshware_e2e::dist().join(format!("{name}.wasm")))
        );
        let folder = if name == SUITE { "suite/" } else { "" };
        for kind in ["wasmplugin.yaml", "trafficextension.yaml"] {
            let file = format!("{folder}{kind}");
            assert!(
                manifests[file.as_str()].contains(&pinned),
                "{file} does not pin {name}"
            );
        }
        use sha2::Digest;
        let in_image: String = sha2::Sha256::digest(&module)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(pinned.contains(&in_image));
    }
    let _ = std::fs::remove_dir_all(&out);
}
