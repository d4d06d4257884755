#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test helpers outside #[test] fns
//! Live tenant configuration from a real etcd (started per test on free
//! ports) through real Envoy with two workers: changes reach requests on
//! already-open keep-alive connections, bad documents keep their tenant's
//! last good settings, and the store's failures keep the last good config.

use meshware_e2e::envoy::Envoy;
use meshware_e2e::etcd::Etcd;
use meshware_e2e::http::{self, KeepAlive, Response};
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PREFIX: &str = "/mw/";
const ACME: (&str, &str) = ("host", "a.example");
const BETA: (&str, &str) = ("host", "b.example");

fn tenant(quota: u64) -> Value {
    json!({"rate_limit": {"response_headers": true, "limits": [
        {"name": "tenant", "key": "tenant", "rate": quota, "per": "minute", "burst": quota}
    ]}})
}

/// The documents the store holds: two tenants with their quotas.
fn store_profile(acme: u64, beta: u64) -> Value {
    json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme", "b.example": "beta"}},
        "defaults": {},
        "tenants": {"acme": tenant(acme), "beta": tenant(beta), "public": {}}
    })
}

/// The bootstrap's profile: the same tenants with quota 50 (what serves
/// until the store answers), and the store to poll.
fn bootstrap_profile() -> String {
    let mut p = store_profile(50, 50);
    p["config_source"] =
        json!({"cluster": "etcd", "prefix": PREFIX, "poll_ms": 250, "timeout_ms": 1000});
    p.to_string()
}

/// The `filter` label of the live configuration's metrics.
fn module() -> &'static str {
    if meshware_e2e::suite::suite_module() {
        "suite"
    } else {
        "rate_limit"
    }
}

fn status(s: &Suite) -> Value {
    let r = s.get("/.well-known/meshware/status", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn start(etcd: &Etcd) -> Suite {
    start_on(&bootstrap_profile(), &["rate_limit"], etcd, false)
}

/// Envoy with `profile` for `filters`, etcd's JSON gateway as the cluster
/// `etcd` and, with `grpc`, its gRPC side as the HTTP/2 cluster `etcd-grpc`
/// (the watch's).
fn start_on(profile: &str, filters: &[&str], etcd: &Etcd, grpc: bool) -> Suite {
    let port = etcd.port;
    Suite::start_edited(profile, filters, move |config| {
        meshware_e2e::suite::add_cluster(
            config,
            meshware_cli::bootstrap::static_cluster("etcd", port),
        );
        if grpc {
            meshware_e2e::suite::add_cluster(
                config,
                meshware_cli::bootstrap::grpc_cluster("etcd-grpc", port),
            );
        }
    })
}

/// Whether the status says the watch is open within `secs`.
fn watch_opens(s: &Suite, secs: u64) -> bool {
    meshware_e2e::eventually(secs, || status(s)["source"]["watch"] == "open")
}

/// The quota a response was judged under (`RateLimit-Policy: "tenant";q=N;w=60`).
fn quota(r: &Response) -> Option<u64> {
    let policy = r.header("ratelimit-policy")?;
    policy
        .split(';')
        .find_map(|p| p.strip_prefix("q=")?.parse().ok())
}

fn quota_of(s: &Suite, host: (&str, &str)) -> Option<u64> {
    quota(&s.get("/", &[host]))
}

/// Waits until a fresh connection's request for `host` sees `want`.
fn wait_quota(s: &Suite, host: (&str, &str), want: u64, what: &str) {
    assert!(
        meshware_e2e::eventually(10, || quota_of(s, host) == Some(want)),
        "{what}: quota {:?}, not {want}\n{}",
        quota_of(s, host),
        s.envoy.log()
    );
}

#[test]
fn a_pushed_quota_reaches_open_keep_alive_connections_on_every_worker() {
    let etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(3000, 4000));
    let s = start(&etcd);
    wait_quota(
        &s,
        ACME,
        3000,
        "the store's profile replaces the bootstrap's",
    );
    // Eight connections opened before the change, kept open: with two
    // workers, both serve some of them.
    let mut conns: Vec<KeepAlive> = (0..8)
        .map(|_| KeepAlive::connect(s.port).unwrap())
        .collect();
    // Every worker adopts the store's profile within a tick of the poller.
    assert!(meshware_e2e::eventually(5, || conns
        .iter_mut()
        .all(|c| quota(&c.get("/", &[ACME]).unwrap()) == Some(3000))));
    let pushed = Instant::now();
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(7000).to_string());
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    let mut statuses = Vec::new();
    while !pending.is_empty() && pushed.elapsed() < Duration::from_secs(10) {
        pending.retain(|i| {
            let r = conns[*i]
                .get("/", &[ACME])
                .expect("the connection stays open");
            statuses.push(r.status);
            quota(&r) != Some(7000)
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = pushed.elapsed();
    eprintln!("all keep-alive connections on the new quota after {took:?}");
    assert!(
        pending.is_empty(),
        "connections {pending:?} still on the old quota after {took:?}\n{}",
        s.envoy.log()
    );
    // Within the documented bound (docs/CONFIG.md: two poll periods plus
    // the store's answer; 5 s leaves room for a loaded machine).
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        statuses.iter().all(|st| *st == 200),
        "no failed request: {statuses:?}"
    );
    // The other tenant is untouched, on the old connections too.
    for c in conns.iter_mut() {
        assert_eq!(quota(&c.get("/", &[BETA]).unwrap()), Some(4000));
    }
    let log = s.envoy.log();
    assert!(log.contains("applied tenants/acme"), "{log}");
}

#[test]
fn bad_documents_keep_the_last_good_and_others_still_update() {
    let etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(30, 40));
    let s = start(&etcd);
    wait_quota(&s, ACME, 30, "start");
    // acme's new document is invalid, beta's is fine: beta moves, acme stays.
    let mut bad = tenant(31);
    bad["rate_limit"]["limits"][0]["burst"] = json!(0);
    etcd.put(&format!("{PREFIX}tenants/acme"), &bad.to_string());
    etcd.put(&format!("{PREFIX}tenants/beta"), &tenant(41).to_string());
    wait_quota(&s, BETA, 41, "beta updated");
    assert_eq!(quota_of(&s, ACME), Some(30), "acme keeps its last good");
    assert!(
        meshware_e2e::eventually(5, || s
            .envoy
            .log()
            .contains("tenants/acme refused, its last good document stays")),
        "{}",
        s.envoy.log()
    );
    assert!(s
        .envoy
        .log()
        .contains("tenants.acme.rate_limit.limits[0].burst: must be >= 1"));
    // The status endpoint names the refusal; the metrics count it.
    let st = status(&s);
    assert_eq!(st["module"], module());
    assert!(
        st["rejected"]["tenants/acme"]["errors"]
            .as_str()
            .is_some_and(|e| e.contains("tenants.acme.rate_limit.limits[0].burst: must be >= 1")),
        "{st}"
    );
    assert!(
        st["documents"]["tenants/beta"]["revision"].as_u64()
            > st["documents"]["tenants/acme"]["revision"].as_u64(),
        "{st}"
    );
    assert_eq!(st["revision"].as_u64(), etcd.revision(), "{st}");
    let m = module();
    assert!(
        meshware_e2e::eventually(5, || s
            .metric(&format!(
                "meshware_config_updates{{filter=\"{m}\",tenant=\"acme\",outcome=\"rejected\"}}"
            ))
            .is_some_and(|v| v >= 1.0)),
        "{}",
        s.envoy.prometheus()
    );
    assert!(s
        .metric(&format!(
            "meshware_config_updates{{filter=\"{m}\",tenant=\"beta\",outcome=\"accepted\"}}"
        ))
        .is_some_and(|v| v >= 1.0));
    // Junk and an oversized document: refused the same way.
    etcd.put(&format!("{PREFIX}tenants/acme"), "{not json");
    etcd.put(&format!("{PREFIX}tenants/beta"), &tenant(42).to_string());
    wait_quota(&s, BETA, 42, "beta updated again");
    let mut huge = tenant(32);
    huge["rate_limit"]["limits"][0]["name"] = json!("x".repeat(70_000));
    etcd.put(&format!("{PREFIX}tenants/acme"), &huge.to_string());
    etcd.put(&format!("{PREFIX}tenants/beta"), &tenant(43).to_string());
    wait_quota(&s, BETA, 43, "beta updated a third time");
    assert_eq!(quota_of(&s, ACME), Some(30));
    let log = s.envoy.log();
    assert!(
        log.contains("tenants.acme: the document is not a JSON object"),
        "{log}"
    );
    assert!(log.contains("over max_document_bytes (65536)"), "{log}");
    // A tenant key deleted while the tenancy still routes to it: refused;
    // the tenant keeps serving.
    etcd.delete(&format!("{PREFIX}tenants/beta"));
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(33).to_string());
    wait_quota(&s, ACME, 33, "acme fixed");
    assert_eq!(quota_of(&s, BETA), Some(43), "beta still served");
    assert!(
        s.envoy.log().contains("unknown tenant \\\"beta\\\"")
            || s.envoy.log().contains("unknown tenant \"beta\"")
    );
    // Once the tenancy stops routing to it, the deletion applies: b.example
    // falls to the default tenant (no limits).
    etcd.put(
        &format!("{PREFIX}tenancy"),
        &json!({"default": "public", "hosts": {"a.example": "acme"}}).to_string(),
    );
    assert!(
        meshware_e2e::eventually(10, || quota_of(&s, BETA).is_none()),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn the_store_down_at_start_or_later_or_going_back_keeps_the_last_good() {
    let mut etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(30, 40));
    etcd.stop();
    let s = start(&etcd);
    // Down at start: the bootstrap's profile serves.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(quota_of(&s, ACME), Some(50));
    assert!(
        meshware_e2e::eventually(5, || s.envoy.log().contains("poll failed")),
        "{}",
        s.envoy.log()
    );
    // Back: its documents apply.
    etcd.restart(false);
    wait_quota(&s, ACME, 30, "the store is back");
    assert!(s.envoy.log().contains("answering again"));
    // Down later: the last good stays; staleness rises.
    etcd.stop();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(quota_of(&s, ACME), Some(30));
    let m = module();
    assert!(
        meshware_e2e::eventually(5, || s
            .metric(&format!("meshware_config_staleness_ms{{filter=\"{m}\"}}"))
            .is_some_and(|v| v >= 1500.0)),
        "{}",
        s.envoy.prometheus()
    );
    let st = status(&s);
    assert!(st["source"]["problem"].is_string(), "{st}");
    assert!(
        st["staleness_ms"].as_u64().is_some_and(|v| v >= 1000),
        "{st}"
    );
    // Back with an empty store (restored from an older snapshot): its
    // revision went backwards; nothing is applied, the proxy says so.
    etcd.restart(true);
    assert!(
        meshware_e2e::eventually(10, || s.envoy.log().contains("is older than the accepted")),
        "{}",
        s.envoy.log()
    );
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(60).to_string());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(quota_of(&s, ACME), Some(30));
    assert_eq!(quota_of(&s, BETA), Some(40));
}

#[test]
fn junk_from_the_store_keeps_the_bootstrap_profile() {
    // The "store" is the echo upstream: 200s that are not etcd's answers.
    // The status endpoint is open to another range only: 404 here.
    // A token from the environment opens it from anywhere.
    let mut profile: Value = serde_json::from_str(&bootstrap_profile()).unwrap();
    profile["config_source"]["status_allow_cidrs"] = json!(["10.0.0.0/8"]);
    profile["config_source"]["status_admin_tokens"] =
        json!([{"env": "MESHWARE_TEST_STATUS_TOKEN"}]);
    let token = "status-token-from-the-environment-1";
    let env = [("MESHWARE_TEST_STATUS_TOKEN", token)];
    let s = Suite::start_edited_env(&profile.to_string(), &["rate_limit"], &env, |config| {
        let echo_cluster = config["static_resources"]["clusters"][0].clone();
        let mut etcd = echo_cluster;
        etcd["name"] = json!("etcd");
        config["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(etcd);
    });
    assert!(
        meshware_e2e::eventually(5, || s.envoy.log().contains("poll failed")),
        "{}",
        s.envoy.log()
    );
    assert_eq!(quota_of(&s, ACME), Some(50));
    let r = s.get("/.well-known/meshware/status", &[]);
    assert_eq!((r.status, r.body.len()), (404, 0));
    let r = s.get(
        "/.well-known/meshware/status",
        &[("x-admin-token", "status-token-from-the-environment-2")],
    );
    assert_eq!((r.status, r.body.len()), (404, 0), "a wrong token");
    let r = s.get("/.well-known/meshware/status", &[("x-admin-token", token)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["module"], module());
    assert!(!s.envoy.log().contains(token), "the token is never logged");
    assert!(
        s.echo.requests_to("/.well-known").is_empty(),
        "never forwarded"
    );
}

/// A VM that crashes and is reloaded (FAIL_RELOAD) comes back on the
/// revision it had adopted, not on the bootstrap's profile.
#[test]
fn a_reloaded_vm_comes_back_on_the_pushed_revision() {
    let etcd = Etcd::start();
    let trace = |rate: f64| json!({"trace_context": {"sample_rate": rate}});
    let store = json!({"tenancy": {"default": "acme"}, "tenants": {"acme": trace(1.0)}});
    etcd.put_profile(PREFIX, &store);
    let mut bootstrap = json!({"tenancy": {"default": "acme"}, "tenants": {"acme": trace(0.0)}});
    bootstrap["config_source"] =
        json!({"cluster": "etcd", "prefix": PREFIX, "poll_ms": 250, "timeout_ms": 1000});
    let echo = meshware_e2e::echo::Echo::start(0).unwrap();
    let (mut config, port, admin) =
        meshware_e2e::suite::bootstrap(&bootstrap.to_string(), &["trace_context"], echo.port);
    meshware_e2e::suite::use_test_panic_module(&mut config, "trace_context", "FAIL_RELOAD");
    config["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(meshware_cli::bootstrap::static_cluster("etcd", etcd.port));
    // One worker: the crashing VM is the one every request meets.
    let envoy = Envoy::start_with(&config, admin, 1, "info").unwrap_or_else(|e| panic!("{e}"));
    let sampled = || {
        let r = http::get(port, "/", &[]).ok()?;
        (r.status == 200).then_some(())?;
        let tp = echo.last()?.header("traceparent")?.to_string();
        // The flags' low bit (the random-trace-id bit is set too).
        let flags = u8::from_str_radix(tp.rsplit('-').next()?, 16).ok()?;
        Some(flags & 1 == 1)
    };
    assert!(
        meshware_e2e::eventually(10, || sampled() == Some(true)),
        "the store's sample_rate 1 applies: {:?}\n{}",
        echo.last()
            .map(|r| r.header("traceparent").map(str::to_string)),
        envoy.log()
    );
    // Crash the VM; Envoy reloads it on a later request.
    let _ = http::get(port, "/", &[("x-meshware-test-panic", "request_headers")]);
    let reloaded = || {
        if meshware_e2e::suite::native_module() {
            // No VM to reload: the worker's state is rebuilt on the next
            // request after the panic (entry.rs).
            return envoy.log().contains("panicked");
        }
        http::get(admin, "/stats", &[])
            .map(|r| {
                r.text()
                    .lines()
                    .any(|l| l.contains(".vm_reload_success: 1"))
            })
            .unwrap_or(false)
    };
    assert!(
        meshware_e2e::eventually(10, || {
            let _ = sampled();
            reloaded()
        }),
        "no reload\n{}",
        envoy.log()
    );
    // The first requests of the new VM are sampled: it started on the
    // store's revision, not the bootstrap's sample_rate 0.
    for _ in 0..5 {
        assert_eq!(sampled(), Some(true), "{}", envoy.log());
    }
    // It adopted the shared snapshot when it started, as the first VM did.
    let adoptions = envoy.log().matches("adopting config revision").count();
    assert!(adoptions >= 2, "{adoptions} adoptions\n{}", envoy.log());
}

fn endpoint(etcd: &Etcd) -> meshware_cli::etcd::Endpoint {
    meshware_cli::etcd::Endpoint::parse(&format!("http://127.0.0.1:{}", etcd.port)).unwrap()
}

/// `meshware push` writes only what changed, the proxy applies it, and
/// `meshware rollback` restores an earlier revision the same way.
#[test]
fn push_then_rollback_through_the_proxy() {
    let etcd = Etcd::start();
    let store = endpoint(&etcd);
    let first = store_profile(30, 40);
    let out = meshware_cli::etcd::push(&store, PREFIX, &first, "first").unwrap();
    assert!(
        out.contains("writes tenancy, defaults, tenants/acme, tenants/beta, tenants/public"),
        "{out}"
    );
    let before = etcd.revision().unwrap();
    let s = start(&etcd);
    wait_quota(&s, ACME, 30, "pushed");
    // Only acme's document changes.
    let out = meshware_cli::etcd::push(&store, PREFIX, &store_profile(35, 40), "second").unwrap();
    assert!(
        out.starts_with("second: writes tenants/acme (store revision"),
        "{out}"
    );
    wait_quota(&s, ACME, 35, "second push");
    assert_eq!(quota_of(&s, BETA), Some(40));
    // The same profile again: nothing written.
    let out = meshware_cli::etcd::push(&store, PREFIX, &store_profile(35, 40), "again").unwrap();
    assert!(out.contains("no change"), "{out}");
    // An invalid profile: refused before anything is written, with its path.
    let mut bad = store_profile(36, 40);
    bad["tenants"]["acme"]["rate_limit"]["limits"][0]["burst"] = json!(0);
    let revision = etcd.revision();
    let err = meshware_cli::etcd::push(&store, PREFIX, &bad, "bad").unwrap_err();
    assert!(
        err.contains("tenants.acme.rate_limit.limits[0].burst: must be >= 1"),
        "{err}"
    );
    assert_eq!(etcd.revision(), revision, "nothing written");
    // Back to the first push's revision.
    let out = meshware_cli::etcd::push(
        &store,
        PREFIX,
        &meshware_cli::etcd::profile_of(
            &meshware_cli::etcd::read(&store, PREFIX, Some(before)).unwrap(),
        )
        .unwrap(),
        "rollback",
    )
    .unwrap();
    assert!(out.contains("writes tenants/acme"), "{out}");
    wait_quota(&s, ACME, 30, "rolled back");
}

/// Two pushes that read the same revision: the first lands, the second
/// fails and writes nothing.
#[test]
fn concurrent_pushes_one_wins_the_other_writes_nothing() {
    let etcd = Etcd::start();
    let store = endpoint(&etcd);
    meshware_cli::etcd::push(&store, PREFIX, &store_profile(30, 40), "base").unwrap();
    let a = meshware_cli::etcd::plan(&store, PREFIX, &store_profile(31, 40)).unwrap();
    let b = meshware_cli::etcd::plan(&store, PREFIX, &store_profile(30, 41)).unwrap();
    meshware_cli::etcd::commit(&store, &a).unwrap();
    let after_a = etcd.revision();
    let err = meshware_cli::etcd::commit(&store, &b).unwrap_err();
    assert!(err.contains("the store changed since it was read"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(etcd.revision(), after_a);
    let now =
        meshware_cli::etcd::profile_of(&meshware_cli::etcd::read(&store, PREFIX, None).unwrap())
            .unwrap();
    assert_eq!(
        now["tenants"]["acme"]["rate_limit"]["limits"][0]["rate"],
        31
    );
    assert_eq!(
        now["tenants"]["beta"]["rate_limit"]["limits"][0]["rate"],
        40
    );
    // Two pushes racing from two threads: whatever the interleaving, both
    // either land one after the other or one is refused; never a lost
    // write (the final state is one of the two profiles).
    let t1 = {
        let store = store.clone();
        std::thread::spawn(move || {
            meshware_cli::etcd::push(&store, PREFIX, &store_profile(50, 60), "t1")
        })
    };
    let t2 = {
        let store = store.clone();
        std::thread::spawn(move || {
            meshware_cli::etcd::push(&store, PREFIX, &store_profile(70, 80), "t2")
        })
    };
    let (r1, r2) = (t1.join().unwrap(), t2.join().unwrap());
    assert!(r1.is_ok() || r2.is_ok(), "{r1:?} {r2:?}");
    let end =
        meshware_cli::etcd::profile_of(&meshware_cli::etcd::read(&store, PREFIX, None).unwrap())
            .unwrap();
    let pair = (
        end["tenants"]["acme"]["rate_limit"]["limits"][0]["rate"].as_u64(),
        end["tenants"]["beta"]["rate_limit"]["limits"][0]["rate"].as_u64(),
    );
    assert!(
        pair == (Some(50), Some(60)) || pair == (Some(70), Some(80)),
        "{pair:?}"
    );
}

/// A tenant's rate-limit bucket lives in shared data under its name: a
/// changed quota applies to the bucket's current level, it does not refill it.
#[test]
fn rate_limit_buckets_survive_a_quota_change() {
    let etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(5, 40));
    let s = start(&etcd);
    wait_quota(&s, ACME, 5, "start");
    // The other worker adopts within a tick of the poller.
    std::thread::sleep(Duration::from_millis(500));
    let allowed = |s: &Suite| {
        (0..20)
            .take_while(|_| s.get("/", &[ACME]).status == 200)
            .count()
    };
    // wait_quota spent some of the 5; the rest go, then 429s.
    assert!(allowed(&s) <= 5);
    assert_eq!(s.get("/", &[ACME]).status, 429);
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(7).to_string());
    assert!(
        meshware_e2e::eventually(10, || {
            let r = s.get("/", &[ACME]);
            quota(&r) == Some(7)
        }),
        "{}",
        s.envoy.log()
    );
    // A refilled bucket would allow 7 (minus the probe); the carried one
    // allows at most the 2 the larger burst adds.
    let more = allowed(&s);
    assert!(
        more <= 2,
        "{more} allowed after the change: the bucket was reset"
    );
}

/// The status endpoint reports the filters' shared state: remote key-set
/// ages (jwt_auth), open circuits (circuit_breaker) and bucket occupancy
/// (rate_limit). `?filter=` asks for one filter's: in separate modules the
/// module that runs it answers.
#[test]
fn the_status_reports_key_set_ages_open_circuits_and_bucket_occupancy() {
    use meshware_e2e::echo::{Canned, Echo};
    let v = meshware_e2e::jwt_vectors();
    let provider = json!({"name": "idp", "issuer": v["issuer"], "audiences": [v["audience"]],
        "algorithms": ["RS256"],
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "timeout_ms": 1000}});
    let profile = json!({
        "tenancy": {"default": "public", "hosts": {"a.example": "acme"}},
        "config_source": {"cluster": "idp", "prefix": PREFIX, "poll_ms": 1000, "timeout_ms": 500},
        "tenants": {
            "acme": {
                "jwt_auth": {"providers": [provider]},
                "rate_limit": {"max_keys": 16, "limits": [
                    {"name": "per-key", "key": {"header": "x-api-key"}, "rate": 100, "per": "minute", "burst": 100}
                ]},
                "circuit_breaker": {"min_requests": 2, "failure_ratio": 0.5, "open_for_ms": 60000}
            },
            "public": {}
        }
    });
    let idp = Echo::start(0).expect("idp");
    let keys: Vec<Value> = v["jwks"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"] == "rsa-1")
        .cloned()
        .collect();
    idp.script(
        "/jwks",
        Canned::new(200, json!({ "keys": keys }).to_string().as_bytes()),
    );
    let filters = ["jwt_auth", "rate_limit", "circuit_breaker"];
    let s = Suite::start_with_services(&profile.to_string(), &filters, idp, &["idp"]);
    s.echo.script("/fail", Canned::new(500, b"down"));
    let bearer = format!("Bearer {}", meshware_e2e::jwt_token("valid RS256"));
    let auth = ("authorization", bearer.as_str());
    let r = s.get("/ok", &[ACME, auth, ("x-api-key", "k1")]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log());
    s.get("/ok", &[ACME, auth, ("x-api-key", "k2")]);
    for _ in 0..4 {
        s.get("/fail", &[ACME, auth, ("x-api-key", "k3")]);
    }
    assert_eq!(
        s.get("/ok", &[ACME, auth]).header("x-circuit-state"),
        Some("open")
    );
    let state = |filter: &str| -> Value {
        let r = s.get(
            &format!("/.well-known/meshware/status?filter={filter}"),
            &[],
        );
        assert_eq!(r.status, 200, "{filter}: {}", r.text());
        r.json()["state"][filter]["acme"].clone()
    };
    let jwks = state("jwt_auth")["remote_jwks"]["idp"].clone();
    assert_eq!(jwks["cluster"], "idp", "{jwks}");
    assert_eq!(jwks["keys"], 1, "{jwks}");
    assert!(
        jwks["age_ms"].as_u64().is_some_and(|a| a < 60_000),
        "{jwks}"
    );
    let circuits = state("circuit_breaker")["open_circuits"].clone();
    assert_eq!(circuits.as_array().map(Vec::len), Some(1), "{circuits}");
    assert_eq!(circuits[0]["state"], "open", "{circuits}");
    assert!(circuits[0]["open_for_ms"].as_u64().is_some(), "{circuits}");
    // 16 slots, 256 a tick: every tick (1 s) ends a pass, on each worker.
    assert!(
        meshware_e2e::eventually(5, || state("rate_limit")["limits"]["per-key"]["occupied"]
            == 3),
        "{}",
        state("rate_limit")
    );
    assert_eq!(state("rate_limit")["limits"]["per-key"]["slots"], 16);
    if meshware_e2e::suite::suite_module() {
        // One answer holds every concern's state.
        let all = s.get("/.well-known/meshware/status", &[]).json()["state"].clone();
        for f in filters {
            assert!(all[f]["acme"].is_object(), "{f}: {all}");
        }
    }
    // Unknown filters are nobody's: the request goes on (here: the
    // default tenant, no rules, the upstream answers).
    let r = s.get("/.well-known/meshware/status?filter=nope", &[]);
    assert!(
        s.echo.requests_to("/.well-known/meshware/status").len() == 1,
        "{}",
        r.text()
    );
}

/// gRPC clients are judged under the pushed settings too: a quota pushed
/// to the store limits gRPC calls with `RESOURCE_EXHAUSTED`.
#[test]
fn a_pushed_quota_limits_grpc_calls() {
    use meshware_e2e::grpc::{call, GrpcServer};
    let etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(1000, 1000));
    let server = GrpcServer::start();
    let port = etcd.port;
    let s = Suite::start_grpc_edited(
        &bootstrap_profile(),
        &["rate_limit"],
        server.port,
        meshware_cli::bootstrap::Protocol::Http2,
        move |config| {
            meshware_e2e::suite::add_cluster(
                config,
                meshware_cli::bootstrap::static_cluster("etcd", port),
            );
        },
    );
    let acme = ["--authority", "a.example"];
    let policy = |v: &Value| {
        v["initial_metadata"]["ratelimit-policy"]
            .as_str()
            .or_else(|| v["trailing_metadata"]["ratelimit-policy"].as_str())
            .unwrap_or("")
            .to_string()
    };
    // The store's profile (quota 1000) replaces the bootstrap's (50).
    assert!(
        meshware_e2e::eventually(10, || policy(&call(s.port, "Unary", "hi", &acme))
            .contains("q=1000")),
        "{}",
        s.envoy.log()
    );
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(2).to_string());
    // Every worker adopts it; then two calls a minute pass, the third is limited.
    assert!(meshware_e2e::eventually(10, || {
        let r = call(s.port, "Unary", "hi", &acme);
        r["code"] == "RESOURCE_EXHAUSTED"
    }));
    let r = call(s.port, "Unary", "hi", &acme);
    assert_eq!(r["code"], "RESOURCE_EXHAUSTED", "{r}");
    assert!(policy(&r).contains("q=2"), "{r}");
    // The other tenant is untouched.
    let beta = call(s.port, "Unary", "hi", &["--authority", "b.example"]);
    assert_eq!(beta["code"], "OK", "{beta}");
}

/// With `watch_cluster`, the poller watches the prefix through etcd's gRPC
/// Watch: a change applies at once (here well inside one poll period), the
/// store is not polled at rest (only every `resync_ms`), and when the watch
/// breaks (etcd restarted) polling takes over and the watch comes back.
/// The native build has no gRPC streams: it polls, and says so.
#[test]
fn a_watched_store_applies_changes_at_once_and_is_not_polled_at_rest() {
    let mut etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(3000, 4000));
    let mut profile = store_profile(50, 50);
    profile["config_source"] = json!({"cluster": "etcd", "watch_cluster": "etcd-grpc",
        "prefix": PREFIX, "poll_ms": 6000, "resync_ms": 600000, "timeout_ms": 1000});
    let s = start_on(&profile.to_string(), &["rate_limit"], &etcd, true);
    wait_quota(
        &s,
        ACME,
        3000,
        "the store's profile replaces the bootstrap's",
    );
    let polls = || {
        s.metric("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"etcd\"}")
            .unwrap_or(0.0)
    };
    // Until ten fresh connections in a row (both workers) see the quota.
    let push_and_time = |etcd: &Etcd, quota: u64| {
        let pushed = Instant::now();
        etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(quota).to_string());
        let mut in_a_row = 0;
        while in_a_row < 10 && pushed.elapsed() < Duration::from_secs(20) {
            if quota_of(&s, ACME) == Some(quota) {
                in_a_row += 1;
            } else {
                in_a_row = 0;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert_eq!(in_a_row, 10, "quota {quota} not applied\n{}", s.envoy.log());
        pushed.elapsed()
    };
    let watch_open = || {
        s.metric(&format!(
            "meshware_config_watch_open{{filter=\"{}\"}}",
            module()
        ))
    };
    if meshware_e2e::suite::native_module() {
        // Polling every poll_ms instead, and said once.
        assert!(meshware_e2e::eventually(5, || watch_open() == Some(0.0)));
        let took = push_and_time(&etcd, 7000);
        assert!(took < Duration::from_secs(15), "{took:?}");
        assert!(s.envoy.log().contains("config store watch on etcd-grpc"));
        return;
    }
    let opened = "config store watch on etcd-grpc: open";
    assert!(
        meshware_e2e::eventually(10, || s.envoy.log().contains(opened)),
        "{}",
        s.envoy.log()
    );
    assert!(watch_opens(&s, 5), "{}", status(&s));
    assert!(
        meshware_e2e::eventually(5, || watch_open() == Some(1.0)),
        "{}",
        s.envoy.prometheus()
    );
    // At rest: no poll for 3 s (poll_ms is 6 s, but the watch is open).
    let before = polls();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(polls(), before, "polled at rest with the watch open");
    // Not stale meanwhile: an open watch keeps the proxy current.
    let st = status(&s);
    assert!(
        st["staleness_ms"].as_u64().is_some_and(|v| v < 1000),
        "{st}"
    );
    // A change applies well inside one poll period, on the watch's word.
    let took = push_and_time(&etcd, 7000);
    eprintln!("applied {took:?} after the push, watched");
    assert!(took < Duration::from_secs(3), "{took:?}\n{}", s.envoy.log());
    assert_eq!(quota_of(&s, BETA), Some(4000), "others untouched");
    // The watch breaks: etcd restarts (same data). Polling takes over and
    // the watch is opened again.
    etcd.restart(false);
    assert!(
        meshware_e2e::eventually(20, || s.envoy.log().contains("the stream closed")),
        "{}",
        s.envoy.log()
    );
    assert!(watch_opens(&s, 20), "{}", status(&s));
    assert!(
        meshware_e2e::eventually(20, || s.envoy.log().matches(opened).count() >= 2),
        "the watch was not opened again\n{}",
        s.envoy.log()
    );
    let took = push_and_time(&etcd, 8000);
    assert!(took < Duration::from_secs(3), "{took:?}\n{}", s.envoy.log());
}

/// A `watch_cluster` that speaks HTTP/1.1 (the JSON gateway's cluster, not
/// an HTTP/2 one) cannot carry etcd's gRPC Watch: the watch stays closed,
/// the proxy says so, and polling every `poll_ms` keeps it current.
#[test]
fn a_watch_cluster_without_http2_falls_back_to_polling() {
    let etcd = Etcd::start();
    etcd.put_profile(PREFIX, &store_profile(3000, 4000));
    let mut profile = store_profile(50, 50);
    profile["config_source"] = json!({"cluster": "etcd", "watch_cluster": "etcd",
        "prefix": PREFIX, "poll_ms": 500, "timeout_ms": 1000});
    let s = start_on(&profile.to_string(), &["rate_limit"], &etcd, false);
    wait_quota(
        &s,
        ACME,
        3000,
        "the store's profile replaces the bootstrap's",
    );
    if !meshware_e2e::suite::native_module() {
        assert!(
            meshware_e2e::eventually(10, || s
                .envoy
                .log()
                .contains("config store watch on etcd: etcd did not confirm it")),
            "{}",
            s.envoy.log()
        );
        assert_eq!(status(&s)["source"]["watch"], "closed", "{}", status(&s));
    }
    etcd.put(&format!("{PREFIX}tenants/acme"), &tenant(7000).to_string());
    wait_quota(&s, ACME, 7000, "polled, the watch closed");
    assert_ne!(status(&s)["source"]["watch"], "open");
}

/// Every metric the Grafana dashboard queries (`meshware_cli::dashboard::
/// METRICS`) is one real Envoy exports, with live configuration on.
#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let etcd = Etcd::start();
    let mut stored = store_profile(3000, 4000);
    stored["defaults"] = json!({"access_log": {"sample_rate": 1.0}});
    etcd.put_profile(PREFIX, &stored);
    let mut profile = stored.clone();
    profile["config_source"] =
        json!({"cluster": "etcd", "prefix": PREFIX, "poll_ms": 250, "timeout_ms": 1000});
    let s = start_on(
        &profile.to_string(),
        &["access_log", "rate_limit"],
        &etcd,
        false,
    );
    for _ in 0..3 {
        assert_eq!(s.get("/", &[ACME]).status, 200);
    }
    let text = s.envoy.prometheus();
    let missing: Vec<&&str> = meshware_cli::dashboard::METRICS
        .iter()
        .filter(|m| {
            !text
                .lines()
                .any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} ")))
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
}
