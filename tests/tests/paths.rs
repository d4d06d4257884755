//! The differential path test: real routers nobody here wrote (Flask,
//! Express, nginx) behind Envoy with the filters, each reporting which of
//! its handlers served a request. A corpus of path forms built from RFC 3986
//! and the known classes of proxy/backend confusion (semicolons, encoded
//! separators and dots, double and triple encoding, backslashes, empty
//! segments, case, overlong UTF-8, fullwidth forms, absolute-form targets,
//! HTTP/2 `:path` sent verbatim) is sent without credentials against four
//! guarded handlers. The test fails when any router serves one of them:
//!
//! - `protected`: endpoint_guard's default protected paths (`/debug/pprof`, `/admin`);
//! - `private`: a jwt_auth `required` route (the rest of the tenant is `bypass`);
//! - `tenant_x`: the path prefix of tenant `x`, whose every route needs a token;
//! - `fast`: a rate_limit route whose one token per hour is already spent.
//!
//! Three Envoys: the shipped bootstrap (Envoy's normalization on), the same
//! without Envoy's normalization (the filters alone), and without it for a
//! tenant that allows every ambiguous form (every reading judged).

use meshware_e2e::routers::Router;
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};

const FILTERS: &[&str] = &["endpoint_guard", "jwt_auth", "rate_limit"];

/// The guarded targets: (handler a router reports, the path, where one
/// request is made first to spend the route's quota).
const TARGETS: &[(&str, &str)] = &[
    ("protected", "/debug/pprof/heap"),
    ("protected", "/admin/users"),
    ("private", "/private/data"),
    ("tenant_x", "/t/x/data"),
    ("fast", "/fast"),
];

fn profile(allow_all_forms: bool) -> String {
    let v = meshware_e2e::jwt_vectors();
    let provider = json!({"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                          "algorithms": ["RS256"]});
    let mut p = json!({
        "tenancy": {"path_prefixes": {"/t/x": "x"}, "default": "d"},
        "tenants": {
            "d": {
                "endpoint_guard": {},
                "jwt_auth": {"providers": [provider], "default_requirement": "bypass",
                             "rules": [{"prefix": "/private", "requirement": "required"}]},
                "rate_limit": {"limits": [{"name": "fast", "key": "route", "prefix": "/fast",
                                           "rate": 1, "per": "hour", "burst": 1}]}
            },
            "x": {
                "endpoint_guard": {},
                "jwt_auth": {"providers": [provider], "default_requirement": "required"}
            }
        }
    });
    if allow_all_forms {
        let forms: Vec<&str> = meshware_common::path::FORMS
            .iter()
            .map(|(_, name, _)| *name)
            .collect();
        p["defaults"] = json!({"request": {"allow_ambiguous_paths": forms}});
    }
    p.to_string()
}

/// Percent-encodes every byte of `text`.
fn encode_all(text: &str, lower: bool) -> String {
    text.bytes()
        .map(|b| {
            if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every spelling of `target` the corpus tries.
fn corpus(target: &str) -> Vec<String> {
    let segments: Vec<&str> = target.trim_start_matches('/').split('/').collect();
    let first = segments[0];
    let rest = segments[1..].join("/");
    let tail = if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    };
    let f0 = &first[..1];
    let f_rest = &first[1..];
    let joined = |sep: &str| segments.join(sep);
    let fullwidth = |c: char| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c).to_string();
    let mut out = vec![
        target.to_string(),
        target.to_ascii_uppercase(),
        format!("/{}{}", first.to_ascii_uppercase(), tail),
        format!("/{target}"),
        format!("//{}", joined("//")),
        format!("/{}/", joined("/")),
        format!("/./{}", joined("/./")),
        format!("/z/..{target}"),
        format!("/z/../../{}", joined("/")),
        format!("/{first}/z/..{tail}"),
        format!("/z/..;{target}"),
        format!("/z;p/..{target}"),
        format!("{target};p"),
        format!("/{first};p{tail}"),
        format!("/{first}/..;/{}", joined("/")),
        format!("/z%2f..%2f{}", joined("%2f")),
        format!("/z%2F..%2F{}", joined("%2F")),
        format!("/{}", joined("%2F")),
        format!("/{}", joined("%5C")),
        format!("/{}", joined("\\")),
        format!("/z\\..\\{}", joined("\\")),
        format!("/{}", joined("%252F")),
        format!("/{}", joined("%25252F")),
        format!("/z/%2e%2e/{}", joined("/")),
        format!("/z/%2E%2E/{}", joined("/")),
        format!("/z/.%2e/{}", joined("/")),
        format!("/z/%252e%252e/{}", joined("/")),
        format!("/z/..%3B/{}", joined("/")),
        format!("/z/..%3b{target}"),
        format!("/z/..%5C{}", joined("%5C")),
        format!("/{}{f_rest}{tail}", encode_all(f0, false)),
        format!("/{}{f_rest}{tail}", encode_all(f0, true)),
        format!("/{}{tail}", encode_all(first, false)),
        format!("/%25{:02X}{f_rest}{tail}", f0.as_bytes()[0]),
        format!("/z/%c0%ae%c0%ae/{}", joined("/")),
        format!("/z%c0%af..%c0%af{}", joined("%c0%af")),
        format!("/{}", joined("%EF%BC%8F")),
        format!("/z/%EF%BC%8E%EF%BC%8E/{}", joined("/")),
        format!(
            "/{}{f_rest}{tail}",
            encode_all(&fullwidth(f0.chars().next().unwrap_or('a')), false)
        ),
        format!(
            "/{}{f_rest}{tail}",
            fullwidth(f0.chars().next().unwrap_or('a'))
        ),
        format!("{target}?x=1"),
        format!("{target}#frag"),
        format!("{target}/."),
        format!("{target}/%2e"),
        format!("http://localhost{target}"),
        format!("http://localhost/z/..{target}"),
    ];
    out.dedup();
    out
}

/// The router's report of a request, if it reached one.
fn served(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("router").is_some())
}

/// Sends one spelling over HTTP/1.1 and returns a violation, if any.
fn check_h1(s: &Suite, backend: &str, handler: &str, path: &str) -> Option<String> {
    let h: Vec<(&str, &[u8])> = vec![("x-backend", backend.as_bytes())];
    let r = match meshware_e2e::http::send(s.port, "GET", path, &h, b"") {
        Ok(r) => r,
        // Envoy closed the connection on a request line it refuses.
        Err(_) => return None,
    };
    let report = served(&r.body)?;
    (r.status == 200 && report["handler"] == handler).then(|| {
        format!(
            "{backend} served {handler} for {path:?} (it routed {})",
            report["path"]
        )
    })
}

/// The same over HTTP/2 with `:path` sent verbatim (tests/h2_client.py).
fn check_h2(s: &Suite, backend: &str, handler: &str, path: &str) -> Option<String> {
    let out = std::process::Command::new(meshware_e2e::python())
        .arg(meshware_e2e::root().join("tests/h2_client.py"))
        .args([&s.port.to_string(), "GET", path, "localhost"])
        .args(["--header", &format!("x-backend:{backend}")])
        .output()
        .expect("run tests/h2_client.py (make setup installs h2)");
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let report = served(v["body"].as_str().unwrap_or("").as_bytes())?;
    (v["status"] == 200 && report["handler"] == handler).then(|| {
        format!(
            "{backend} served {handler} for HTTP/2 :path {path:?} (it routed {})",
            report["path"]
        )
    })
}

/// Envoy with the filters and a route per router (chosen by `x-backend`),
/// with or without Envoy's own path normalization.
fn start(routers: &[Router], allow_all_forms: bool, envoy_normalizes: bool) -> Suite {
    start_with(routers, allow_all_forms, envoy_normalizes, true)
}

fn start_with(
    routers: &[Router],
    allow_all_forms: bool,
    envoy_normalizes: bool,
    with_filters: bool,
) -> Suite {
    Suite::start_edited(&profile(allow_all_forms), FILTERS, |config| {
        let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        if !with_filters {
            if let Some(filters) = hcm["http_filters"].as_array_mut() {
                filters.retain(|f| f["name"] == "envoy.filters.http.router");
            }
        }
        if !envoy_normalizes {
            hcm["normalize_path"] = json!(false);
            hcm["merge_slashes"] = json!(false);
            hcm["path_with_escaped_slashes_action"] = json!("KEEP_UNCHANGED");
        }
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .expect("routes");
        for r in routers {
            routes.insert(
                0,
                json!({"match": {"prefix": "/", "headers": [
                          {"name": "x-backend", "string_match": {"exact": r.name}}]},
                       "route": {"cluster": r.name}}),
            );
        }
        let clusters = config["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters");
        for r in routers {
            clusters.push(meshware_cli::bootstrap::static_cluster(r.name, r.port));
        }
    })
}

fn differential(allow_all_forms: bool, envoy_normalizes: bool) {
    let routers = Router::all();
    let s = start(&routers, allow_all_forms, envoy_normalizes);
    // The filters pass what they should: each router serves its handlers
    // to a client with what they ask for, and the plain paths elsewhere.
    let token = format!("Bearer {}", meshware_e2e::jwt_token("valid RS256"));
    for r in &routers {
        let h: Vec<(&str, &[u8])> = vec![
            ("x-backend", r.name.as_bytes()),
            ("authorization", token.as_bytes()),
        ];
        for (path, handler) in [
            ("/private/data", "private"),
            ("/t/x/data", "tenant_x"),
            ("/shop", "other"),
        ] {
            let resp = meshware_e2e::http::send(s.port, "GET", path, &h, b"").expect("request");
            let report =
                served(&resp.body).unwrap_or_else(|| panic!("{}: {}", r.name, resp.text()));
            assert_eq!(report["handler"], handler, "{} {path}", r.name);
        }
    }
    // The rate-limited route's one token is spent.
    let spent =
        meshware_e2e::http::get(s.port, "/fast", &[("x-backend", "flask")]).expect("request");
    assert_eq!(
        served(&spent.body).map(|v| v["handler"].clone()),
        Some(json!("fast"))
    );

    let mut violations = Vec::new();
    let mut sent = 0;
    for r in &routers {
        for (handler, target) in TARGETS {
            for path in corpus(target) {
                sent += 1;
                violations.extend(check_h1(&s, r.name, handler, &path));
            }
            // HTTP/2 carries `:path` as sent (no request-line parsing).
            if *handler != "fast" {
                for path in corpus(target).iter().filter(|p| !p.contains(' ')).take(20) {
                    if path.starts_with('/') {
                        violations.extend(check_h2(&s, r.name, handler, path));
                    }
                }
            }
        }
    }
    assert!(sent > 600, "{sent} requests");
    assert!(
        violations.is_empty(),
        "{} of {sent} spellings reached a guarded handler:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn no_spelling_reaches_a_guarded_handler_with_envoys_normalization() {
    differential(false, true);
}

#[test]
fn no_spelling_reaches_a_guarded_handler_on_the_filters_alone() {
    differential(false, false);
}

#[test]
fn no_spelling_reaches_a_guarded_handler_when_every_form_is_allowed() {
    differential(true, false);
}

/// The control: without the filters, the corpus reaches every guarded
/// handler on every router, by many spellings (so the test above can fail).
#[test]
fn without_the_filters_the_corpus_reaches_every_guarded_handler() {
    let routers = Router::all();
    let s = start_with(&routers, false, false, false);
    for r in &routers {
        for (handler, target) in TARGETS {
            let reached: Vec<String> = corpus(target)
                .into_iter()
                .filter(|p| check_h1(&s, r.name, handler, p).is_some())
                .collect();
            assert!(
                reached.len() >= 5,
                "{}: only {reached:?} reached {handler} ({target})",
                r.name
            );
        }
    }
}

#[test]
fn the_corpus_holds_every_class_of_confusion() {
    let c = corpus("/debug/pprof");
    for needle in [
        ";",
        "%2f",
        "%2F",
        "%5C",
        "\\",
        "%252F",
        "%2e%2e",
        "%c0%ae",
        "%EF%BC%8F",
        "//",
        "/./",
        "..",
        "http://",
        "%64",
    ] {
        assert!(c.iter().any(|p| p.contains(needle)), "{needle}");
    }
}
