//! endpoint-guard through real Envoy with the example profile: acme allows
//! 10.0.0.0/8 and an admin token, globex allows 127.0.0.0/8 and answers 403,
//! the public tenant has the default rules and nobody allowed.

use meshware_e2e::envoy::expect_rejected;
use meshware_e2e::http::send_chunked;
use meshware_e2e::suite::{bootstrap, Suite};

const ACME: (&str, &str) = ("host", "shop.acme.example");
const GLOBEX: (&str, &str) = ("host", "api.globex.example");
/// The demo token of acme in examples/tenants.json.
const ACME_TOKEN: &str = "demo-acme-admin-token-change-me";

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start() -> Suite {
    Suite::start(&profile(), &["trace_context", "endpoint_guard"])
}

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"endpoint_guard\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

/// `meshware_decisions{filter="request"}`: requests refused before any
/// filter's own work.
fn refused(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"request\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample).unwrap_or(0.0)
}

#[test]
fn every_bypass_variant_is_blocked_or_refused_and_never_reaches_upstream() {
    let s = start();
    // Envoy normalizes some (dot segments, `..;`, `//`, `\\`, encoded
    // unreserved) and rejects encoded slashes itself; the filters refuse the
    // ambiguous rest (400) and block what reads as a protected path (404).
    let variants = [
        "/debug/pprof",
        "/DEBUG/pprof",
        "//debug/pprof",
        "/debug/%70prof",
        "/debug%2Fpprof",
        "/debug%2fpprof/heap",
        "/debug%252Fpprof",
        "/debug%5Cpprof",
        "/x/../debug/pprof",
        "/x/%2E%2E/debug/pprof",
        "/debug/pprof;a=b",
        "/shop/..;/debug/pprof",
        "/debug/pprof/?x",
        "/Actuator/env",
        "/.git/config",
    ];
    let mut blocked = 0.0;
    for path in variants {
        let r = s.get(path, &[ACME]);
        assert!(
            matches!(r.status, 400 | 404),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 404 {
            blocked += 1.0;
            assert!(
                r.body.is_empty(),
                "{path}: a blocked path answers with no body"
            );
        }
    }
    assert_eq!(s.echo.count(), 0, "{:?}", s.echo.requests());
    assert_eq!(metric(&s, "acme", "blocked"), blocked);
    assert!(blocked >= 9.0, "{blocked}");
    // Neighbours of a rule are not rules.
    let r = s.get("/debug/pprofile", &[ACME]);
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().path, "/debug/pprofile");
}

#[test]
fn ambiguous_and_invalid_paths_are_refused_with_a_reason_and_counted() {
    let s = start();
    for (path, reason) in [
        ("/debug/pprof;a=b", "semicolon"),
        ("/shop;v=1/x", "semicolon"),
        ("/a%252fb", "%25"),
        ("/files/%01.txt", "control character"),
        ("/a%zz", "percent-encoding"),
        ("/%ef%bc%8fdebug/pprof", "folds to ASCII"),
    ] {
        let r = s.get(path, &[ACME]);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        let body = r.json();
        assert_eq!(body["status"], 400);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{path}: {detail}");
        assert!(!r.text().contains(path), "{path}: the path is not echoed");
    }
    assert_eq!(s.echo.count(), 0);
    assert_eq!(refused(&s, "acme", "ambiguous_path"), 4.0);
    assert_eq!(refused(&s, "acme", "invalid_path"), 2.0);
}

#[test]
fn an_allowed_range_passes_and_other_tenants_stay_closed() {
    let s = start();
    // The test client is 127.0.0.1: inside globex's range, outside acme's.
    let r = s.get("/debug/pprof/heap", &[GLOBEX]);
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().path, "/debug/pprof/heap");
    assert_eq!(metric(&s, "globex", "allowed_cidr"), 1.0);
    assert_eq!(s.get("/debug/pprof/heap", &[ACME]).status, 404);
    // The public tenant has the default rules and no allowed range.
    assert_eq!(s.get("/metrics", &[]).status, 404);
    assert_eq!(metric(&s, "public", "blocked"), 1.0);
    assert_eq!(s.echo.count(), 1);
}

#[test]
fn the_admin_token_opens_a_rule_and_is_never_forwarded() {
    let s = start();
    let r = s.get("/internal/state", &[ACME, ("x-admin-token", ACME_TOKEN)]);
    assert_eq!(r.status, 200);
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.path, "/internal/state");
    assert_eq!(seen.header("x-admin-token"), None);
    assert_eq!(metric(&s, "acme", "allowed_token"), 1.0);

    let wrong = format!("{ACME_TOKEN}x");
    for bad in ["demo-acme-admin-token-change-m", wrong.as_str(), "nope"] {
        let r = s.get("/internal/state", &[ACME, ("x-admin-token", bad)]);
        assert_eq!(r.status, 404, "{bad}");
    }
    // acme's token means nothing for globex's rules (globex has no token).
    let r = s.get(
        "/debug/vars",
        &[
            ("host", "api.globex.example"),
            ("x-admin-token", ACME_TOKEN),
        ],
    );
    assert_eq!(r.status, 200, "globex allows 127.0.0.0/8 anyway");
    // The token is stripped even where no rule applies.
    s.get("/shop", &[ACME, ("x-admin-token", "whatever")]);
    assert_eq!(s.echo.last().unwrap().header("x-admin-token"), None);
    assert_eq!(metric(&s, "acme", "blocked"), 3.0);
}

#[test]
fn block_status_403_is_per_tenant() {
    let profile = profile().replace("\"127.0.0.0/8\"", "\"192.0.2.0/24\"");
    let s = Suite::start(&profile, &["endpoint_guard"]);
    assert_eq!(s.get("/admin", &[GLOBEX]).status, 403);
    assert_eq!(s.get("/admin", &[ACME]).status, 404);
    assert_eq!(s.echo.count(), 0);
}

#[test]
fn a_chunked_oversize_body_is_rejected_and_never_reaches_upstream_whole() {
    let s = start();
    // acme allows 16 KiB outside /upload; send 40 KiB in 4 KiB chunks, no length.
    let chunks: Vec<Vec<u8>> = (0..10).map(|i| vec![b'a' + i as u8; 4096]).collect();
    let r = send_chunked(s.port, "POST", "/orders", &[ACME], &chunks).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    // The upstream may have seen the head and a part, never a complete request.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        s.echo.requests().iter().all(|q| q.path != "/orders"),
        "upstream received a complete request: {:?}",
        s.echo
            .requests()
            .iter()
            .map(|q| (q.path.clone(), q.body.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(metric(&s, "acme", "rejected_body_size"), 1.0);
    // A chunked body under the limit passes whole.
    let small: Vec<Vec<u8>> = (0..3).map(|_| vec![b'z'; 4096]).collect();
    let r = send_chunked(s.port, "POST", "/orders", &[ACME], &small).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().body.len(), 3 * 4096);
}

#[test]
fn limits_apply_per_route() {
    let s = start();
    let big = vec![b'x'; 100 * 1024];
    let host: (&str, &[u8]) = ("host", b"shop.acme.example");
    // /upload allows 1 MiB, PUT and POST only.
    let r = s.send("PUT", "/upload/photo", &[host], &big);
    assert_eq!(r.status, 200);
    assert_eq!(s.echo.last().unwrap().body.len(), big.len());
    let r = s.send("DELETE", "/upload/photo", &[host], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("PUT, POST"));
    // Elsewhere acme allows 16 KiB and any method.
    let r = s.send("POST", "/orders", &[host], &big);
    assert_eq!(r.status, 413);
    assert_eq!(s.send("DELETE", "/orders/1", &[host], b"").status, 200);
    // globex allows GET, HEAD, POST only.
    let r = s.send(
        "DELETE",
        "/orders/1",
        &[("host", b"api.globex.example")],
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    // Defaults for everyone: URL length 4096, 64 headers.
    let long = format!("/search?q={}", "a".repeat(4100));
    assert_eq!(s.get(&long, &[ACME]).status, 414);
    let names: Vec<String> = (0..70).map(|i| format!("x-h{i}")).collect();
    let mut many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    many.push(ACME);
    assert_eq!(s.get("/orders", &many).status, 431);
    assert_eq!(s.get("/orders", &many[50..]).status, 200);
    assert_eq!(metric(&s, "acme", "rejected_method"), 1.0);
    assert_eq!(metric(&s, "acme", "rejected_url_length"), 1.0);
    assert_eq!(metric(&s, "acme", "rejected_headers"), 1.0);
    assert_eq!(metric(&s, "globex", "rejected_method"), 1.0);
}

#[test]
fn invalid_ranges_and_rules_are_rejected_by_envoy_with_their_paths() {
    let profile = r#"{
      "tenancy": {"default": "acme"},
      "tenants": {"acme": {"endpoint_guard": {
        "allow_cidrs": ["10.0.0.0/33"],
        "protected_paths": ["debug", {"path": "/x", "allow_cidrs": ["nope"]}],
        "block_status": 500
      }}}
    }"#;
    let (config, _, _) = bootstrap(profile, &["endpoint_guard"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    for line in [
        "tenants.acme.endpoint_guard.allow_cidrs[0]: \"10.0.0.0/33\": prefix length must be 0..=32",
        "tenants.acme.endpoint_guard.protected_paths[0]: \"debug\": a path starts with \"/\"",
        "tenants.acme.endpoint_guard.protected_paths[1].allow_cidrs[0]: \"nope\" is not an IP address",
        "tenants.acme.endpoint_guard.block_status: must be <= 404",
    ] {
        assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
    }
}
