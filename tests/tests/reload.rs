//! Configuration reload under load: Envoy reads its listener (the filters
//! and the profile) from a watched file (LDS). While clients keep sending
//! requests for two tenants, the profile changes, then an invalid profile is
//! pushed. No request fails, no tenant ever sees another tenant's settings,
//! the new settings take over, and the rejected profile leaves the previous
//! one serving.

use meshware_e2e::echo::Echo;
use meshware_e2e::envoy::Envoy;
use meshware_e2e::http;
use meshware_e2e::suite::bootstrap;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TENANTS: [&str; 2] = ["acme", "globex"];

/// (phase, tenant, status, csp) in the order each client saw them.
type Seen = (usize, &'static str, u16, String);

/// A profile whose CSP names the tenant and the generation, e.g. `gen-a acme`.
fn profile(generation: &str) -> String {
    let mut tenants = serde_json::Map::new();
    for t in TENANTS {
        tenants.insert(
            t.to_string(),
            json!({"security_headers": {"content_security_policy": format!("default-src 'none'; report-to {generation}-{t}")}}),
        );
    }
    json!({
        "tenancy": {"hosts": {"acme.example": "acme", "globex.example": "globex"}, "default": "acme"},
        "tenants": tenants
    })
    .to_string()
}

const FILTERS: [&str; 3] = ["access_log", "trace_context", "security_headers"];

fn listener(profile: &str, echo_port: u16) -> (Value, Value, u16, u16) {
    let (config, port, admin) = bootstrap(profile, &FILTERS, echo_port);
    let listener = config["static_resources"]["listeners"][0].clone();
    (config, listener, port, admin)
}

/// Atomically replaces the LDS file (Envoy watches its directory).
fn push(dir: &Path, listener: &Value) {
    let mut l = listener.clone();
    l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    let doc = json!({"resources": [l]});
    let tmp = dir.join("lds.json.tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("lds.json")).unwrap();
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    let text = http::get(envoy.admin_port, "/stats", &[]).unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_profile_change_under_load_loses_no_request_and_mixes_no_tenants() {
    let echo = Echo::start(0).unwrap();
    let dir = std::env::temp_dir().join(format!("meshware-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut config, first, port, admin) = listener(&profile("gen-a"), echo.port);
    push(&dir, &first);
    config["static_resources"]["listeners"] = json!([]);
    config["node"] = json!({"id": "meshware-reload-test", "cluster": "meshware"});
    config["dynamic_resources"] = json!({"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": dir.join("lds.json"), "watched_directory": {"path": dir}}
    }});
    let envoy = Envoy::start(&config, admin).unwrap_or_else(|e| panic!("{e}"));
    let wait_listening = Instant::now();
    while http::get(port, "/", &[("host", "acme.example")]).is_err() {
        assert!(
            wait_listening.elapsed() < Duration::from_secs(20),
            "{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = TENANTS
        .iter()
        .map(|tenant| {
            let (seen, stop, phase) = (seen.clone(), stop.clone(), phase.clone());
            let host = format!("{tenant}.example");
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::Relaxed);
                    let r = http::get(port, "/", &[("host", host.as_str())]);
                    let (status, csp) = match r {
                        Ok(r) => (
                            r.status,
                            r.header("content-security-policy")
                                .unwrap_or("")
                                .to_string(),
                        ),
                        Err(e) => (0, e.to_string()),
                    };
                    seen.lock().unwrap().push((p, tenant, status, csp));
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    let (_, second, _, _) = listener(&profile("gen-b"), echo.port);
    let mut second = second;
    second["address"] = first["address"].clone();
    phase.store(1, Ordering::Relaxed);
    push(&dir, &second);
    // Wait until the new profile answers, then keep the load a while.
    let switched = Instant::now();
    while stat(&envoy, "listener_manager.lds.update_success") < 2 {
        assert!(
            switched.elapsed() < Duration::from_secs(20),
            "{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    phase.store(2, Ordering::Relaxed);

    // An invalid profile: Envoy rejects the listener update.
    let (_, mut broken, _, _) = listener(&profile("gen-b"), echo.port);
    broken["address"] = first["address"].clone();
    let hcm = &mut broken["filter_chains"][0]["filters"][0]["typed_config"];
    // The module holding security_headers: its own, or the suite module.
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    let holder = filters
        .iter_mut()
        .find(|f| f["name"] == "meshware.security_headers" || f["name"] == "meshware.suite")
        .unwrap();
    let broken_profile =
        json!(profile("gen-c").replace("content_security_policy", "content_security_polcy"));
    if meshware_e2e::suite::native_module() {
        holder["typed_config"]["filter_config"]["value"] = broken_profile;
    } else {
        holder["typed_config"]["config"]["configuration"]["value"] = broken_profile;
    }
    push(&dir, &broken);
    let rejected = Instant::now();
    while stat(&envoy, "listener_manager.lds.update_rejected") < 1 {
        assert!(
            rejected.elapsed() < Duration::from_secs(20),
            "{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    phase.store(3, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    assert!(seen.len() > 50, "{} requests", seen.len());
    for (p, tenant, status, csp) in seen.iter() {
        assert_eq!(*status, 200, "phase {p} {tenant}: {csp}");
        assert!(
            csp.ends_with(&format!("gen-a-{tenant}")) || csp.ends_with(&format!("gen-b-{tenant}")),
            "phase {p} {tenant} saw {csp}"
        );
    }
    // Before the change: the first profile; once the update was acknowledged
    // (phases 2 and 3): only the second, also after the rejected push.
    assert!(seen
        .iter()
        .filter(|s| s.0 == 0)
        .all(|s| s.3.contains("gen-a")));
    let late: Vec<_> = seen.iter().filter(|s| s.0 >= 2).collect();
    assert!(
        !late.is_empty() && late.iter().all(|s| s.3.contains("gen-b")),
        "{late:?}"
    );
    assert!(
        envoy.log().contains("content_security_polcy"),
        "the rejection names the field"
    );
}

/// The filters' configurations as ECDS files (`meshware bootstrap
/// --ecds-dir`): rewriting them reaches the next request on connections
/// that were open before, on every worker, where an LDS update leaves
/// them on the old listener until they close. An invalid profile is
/// refused and the previous one keeps serving.
#[test]
fn an_ecds_profile_change_reaches_open_keep_alive_connections() {
    let echo = Echo::start(0).unwrap();
    let dir = std::env::temp_dir().join(format!("meshware-ecds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let params_for = |generation: &str| {
        let edit =
            |p: &mut meshware_cli::bootstrap::BootstrapParams| p.ecds_dir = Some(dir.clone());
        meshware_e2e::suite::bootstrap_params(
            &profile(generation),
            &FILTERS,
            echo.port,
            None,
            &edit,
        )
    };
    let (config, port, admin) = params_for("gen-a");
    // The files of that bootstrap: written the way the CLI writes them.
    let write = |generation: &str| {
        let p = meshware_e2e::suite::params(&profile(generation), &FILTERS, echo.port, &dir);
        meshware_cli::bootstrap::write_ecds_files(&p).unwrap();
    };
    write("gen-a");
    let envoy = Envoy::start(&config, admin).unwrap_or_else(|e| panic!("{e}"));
    let csp = |r: &http::Response| {
        r.header("content-security-policy")
            .unwrap_or("")
            .to_string()
    };
    let mut conns: Vec<http::KeepAlive> = (0..8)
        .map(|_| http::KeepAlive::connect(port).unwrap())
        .collect();
    for c in conns.iter_mut() {
        let r = c.get("/", &[("host", "acme.example")]).unwrap();
        assert!(
            csp(&r).ends_with("gen-a-acme"),
            "{}\n{}",
            csp(&r),
            envoy.log()
        );
    }
    let changed = Instant::now();
    write("gen-b");
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    while !pending.is_empty() && changed.elapsed() < Duration::from_secs(10) {
        pending.retain(|i| {
            let r = conns[*i]
                .get("/", &[("host", "acme.example")])
                .expect("stays open");
            assert_eq!(r.status, 200);
            !csp(&r).ends_with("gen-b-acme")
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = changed.elapsed();
    eprintln!("ECDS: all keep-alive connections on the new profile after {took:?}");
    assert!(
        pending.is_empty(),
        "still old: {pending:?}\n{}",
        envoy.log()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An invalid profile: refused (the filter rejects its configuration),
    // the previous one keeps serving on the same connections.
    let broken = profile("gen-c").replace("content_security_policy", "content_security_polcy");
    let p = meshware_e2e::suite::params(&broken, &FILTERS, echo.port, &dir);
    meshware_cli::bootstrap::write_ecds_files(&p).unwrap();
    assert!(
        meshware_e2e::eventually(10, || envoy.log().contains("content_security_polcy")),
        "{}",
        envoy.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    for c in conns.iter_mut() {
        let r = c.get("/", &[("host", "acme.example")]).unwrap();
        assert_eq!(r.status, 200);
        assert!(csp(&r).ends_with("gen-b-acme"), "{}", csp(&r));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
