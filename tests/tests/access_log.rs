//! access-log through real Envoy with every filter and the example profile:
//! the JSON line Envoy's own file access logger writes from what the filters
//! recorded (decisions of an allowed, a rate-limited and a JWT-denied
//! request), redaction, per-tenant sampling, and the RED metrics with their
//! labels and bounded cardinality in /stats/prometheus.

use meshware_e2e::suite::Suite;
use serde_json::{json, Value};

const ACME: (&str, &str) = ("host", "shop.acme.example");
const UMBRELLA: (&str, &str) = ("host", "api.umbrella.example");

fn profile() -> String {
    meshware_e2e::example_profile()
}

fn all_filters() -> Vec<&'static str> {
    meshware_e2e::all_filters()
}

fn token(name: &str) -> String {
    let text = std::fs::read_to_string(meshware_e2e::root().join("examples/tokens.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[name].as_str().unwrap().to_string()
}

fn line_for<'l>(lines: &'l [Value], request_id: &str) -> Option<&'l Value> {
    lines.iter().find(|l| l["request_id"] == request_id)
}

/// Sends a request with a request id of our own, waits for its log line.
fn logged(s: &Suite, method: &str, path: &str, headers: &[(&str, &str)], id: &str) -> (u16, Value) {
    let mut h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    h.push(("x-request-id", id.as_bytes()));
    let r = s.send(method, path, &h, b"");
    let lines = s.access_log_until(|l| line_for(l, id).is_some());
    let line = line_for(&lines, id)
        .unwrap_or_else(|| panic!("no log line for {id} among {lines:#?}\n{}", s.envoy.log()))
        .clone();
    (r.status, line)
}

#[test]
fn log_lines_carry_the_decisions_of_every_filter() {
    let s = Suite::start(&profile(), &all_filters());

    // Allowed.
    let (status, line) = logged(
        &s,
        "GET",
        "/orders?token=abc&page=2",
        &[ACME],
        "req-allowed-1",
    );
    assert_eq!(status, 200);
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/orders?token=[redacted]&page=2");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "default");
    assert_eq!(line["response_flags"], "-");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["duration_ms"].is_number() && line["bytes_out"].as_u64() > Some(0));
    let seen = s.echo.last().unwrap();
    let traceparent = seen.header("traceparent").unwrap().to_string();
    assert_eq!(line["trace_id"].as_str(), traceparent.split('-').nth(1));
    let d = &line["decisions"];
    assert!(
        d["rate_limit"].as_str().unwrap().starts_with("allowed"),
        "{d}"
    );
    assert_eq!(d["canary"], "default,version_v1", "{d}");
    assert_eq!(d["circuit_breaker"], "allowed", "{d}");
    assert!(
        d["trace_context"].is_string() && d["endpoint_guard"].is_string(),
        "{d}"
    );
    assert_eq!(d["jwt_auth"], Value::Null, "acme has no jwt_auth section");

    // Rate-limited: acme allows two POST /orders per minute.
    let mut limited = None;
    for i in 0..5 {
        let id = format!("req-post-{i}");
        let key = format!("key-{i}");
        let (status, line) = logged(
            &s,
            "POST",
            "/orders",
            &[ACME, ("idempotency-key", &key)],
            &id,
        );
        if status == 429 {
            limited = Some(line);
            break;
        }
    }
    let line = limited.expect("a POST was rate limited");
    assert_eq!(line["status"], 429);
    assert!(
        line["decisions"]["rate_limit"]
            .as_str()
            .unwrap()
            .contains("limited"),
        "{line}"
    );
    assert_eq!(
        line["upstream_ms"],
        Value::Null,
        "never reached the upstream"
    );

    // JWT-denied (missing, expired) and JWT-allowed with the user.
    let (status, line) = logged(&s, "GET", "/orders", &[UMBRELLA], "req-jwt-missing");
    assert_eq!(status, 401);
    assert_eq!(line["decisions"]["jwt_auth"], "denied_missing");
    assert_eq!(line["tenant"], "umbrella");
    let expired = format!("Bearer {}", token("expired"));
    let (status, line) = logged(
        &s,
        "GET",
        "/orders",
        &[UMBRELLA, ("authorization", &expired)],
        "req-jwt-expired",
    );
    assert_eq!(status, 401);
    assert_eq!(line["decisions"]["jwt_auth"], "denied_expired");
    assert_eq!(line["user"], Value::Null);
    let valid = format!("Bearer {}", token("valid RS256"));
    let (status, line) = logged(
        &s,
        "GET",
        "/orders",
        &[UMBRELLA, ("authorization", &valid)],
        "req-jwt-ok",
    );
    assert_eq!(status, 200);
    assert_eq!(line["user"], "alice");
    assert!(line["decisions"]["jwt_auth"]
        .as_str()
        .unwrap()
        .contains("allowed"));
}

#[test]
fn credentials_and_cookies_never_reach_the_log() {
    let s = Suite::start(&profile(), &all_filters());
    let bearer = format!("Bearer {}", token("valid RS256"));
    let secrets = [
        ("authorization", bearer.as_str()),
        ("cookie", "session=s3cr3t-cookie"),
        ("x-api-key", "k3y-value"),
        ("proxy-authorization", "Basic cHJveHk6cGFzcw=="),
        ("x-echo-response-header", "set-cookie: sid=set-c00kie"),
    ];
    let mut h = vec![UMBRELLA];
    h.extend_from_slice(&secrets);
    let (status, _) = logged(
        &s,
        "GET",
        "/orders?access_token=qs-t0ken&x=1",
        &h,
        "req-secrets",
    );
    assert_eq!(status, 200);
    let raw = std::fs::read_to_string(meshware_e2e::suite::access_log_path(s.port)).unwrap();
    for secret in [
        token("valid RS256").as_str(),
        "s3cr3t-cookie",
        "k3y-value",
        "cHJveHk6cGFzcw",
        "set-c00kie",
        "qs-t0ken",
    ] {
        assert!(!raw.contains(secret), "{secret} leaked into:\n{raw}");
    }
    assert!(raw.contains("access_token=[redacted]&x=1"));
}

#[test]
fn successes_are_sampled_per_tenant_and_errors_always_logged() {
    let mut p: Value = serde_json::from_str(&profile()).unwrap();
    p["tenants"]["acme"]["access_log"] = json!({"sample_rate": 0.0});
    p["tenants"]["globex"]["access_log"] = json!({"sample_rate": 0.5});
    let s = Suite::start(&p.to_string(), &["access_log", "trace_context"]);
    for i in 0..5 {
        s.get("/", &[ACME, ("x-request-id", &format!("acme-ok-{i}"))]);
    }
    let err = s.get(
        "/",
        &[ACME, ("x-request-id", "acme-err"), ("x-echo-status", "503")],
    );
    assert_eq!(err.status, 503);
    let globex = ("host", "api.globex.example");
    for i in 0..200 {
        s.get("/", &[globex, ("x-request-id", &format!("globex-{i}"))]);
    }
    // The last request of a batch is flushed with the others once its line is there.
    s.get(
        "/",
        &[
            ACME,
            ("x-request-id", "acme-err-2"),
            ("x-echo-status", "404"),
        ],
    );
    let lines = s.access_log_until(|l| line_for(l, "acme-err-2").is_some());
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"acme-err"),
        "errors are always logged: {ids:?}"
    );
    assert!(
        !ids.iter().any(|i| i.starts_with("acme-ok")),
        "sample_rate 0: {ids:?}"
    );
    // Every line written carries the records (in the suite module they are
    // written in the log phase, and only for lines the logger writes).
    for line in lines.iter().filter(|l| {
        l["request_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("globex-") || i.starts_with("acme-err"))
    }) {
        assert!(line["tenant"].is_string(), "{line}");
        assert!(line["trace_id"].is_string(), "{line}");
        assert!(line["decisions"]["trace_context"].is_string(), "{line}");
    }
    let globex_logged = ids.iter().filter(|i| i.starts_with("globex-")).count();
    // Binomial(200, 0.5): 70..130 is beyond 4 standard deviations.
    assert!(
        (70..=130).contains(&globex_logged),
        "{globex_logged} of 200 logged"
    );
    let sampled = s
        .metric("meshware_decisions{filter=\"access_log\",tenant=\"globex\",outcome=\"sampled\"}")
        .unwrap();
    assert_eq!(sampled as usize, globex_logged);
}

#[test]
fn red_metrics_are_labelled_and_bounded() {
    let s = Suite::start(&profile(), &["access_log", "trace_context"]);
    for i in 0..20 {
        let host = format!("random-{i}.unknown.example");
        let path = format!("/random/{i}/{}", i * 7919);
        s.get(&path, &[("host", &host)]);
    }
    for _ in 0..3 {
        s.send("PURGE", "/x", &[ACME.into_bytes()], b"");
    }
    s.send(
        "POST",
        "/x",
        &[ACME.into_bytes(), ("x-echo-status", b"503")],
        b"body",
    );
    let text = s.envoy.prometheus();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("meshware_requests{"))
        .collect();
    let tenants = ["acme", "globex", "initech", "public", "umbrella", "other"];
    assert_eq!(
        series.len(),
        tenants.len() * 8 * 6,
        "one series per tenant x method x class"
    );
    for l in &series {
        assert!(!l.contains("random"), "no raw path or host in labels: {l}");
        assert!(
            tenants
                .iter()
                .any(|t| l.contains(&format!("tenant=\"{t}\""))),
            "{l}"
        );
    }
    // Unknown hosts are the default tenant (public); PURGE is `other`.
    let get = |sample: &str| {
        s.metric(sample)
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
    };
    assert_eq!(
        get("meshware_requests{tenant=\"public\",method=\"GET\",status_class=\"2xx\"}"),
        20.0
    );
    assert_eq!(
        get("meshware_requests{tenant=\"acme\",method=\"other\",status_class=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        get("meshware_requests{tenant=\"acme\",method=\"POST\",status_class=\"5xx\"}"),
        1.0
    );
    assert_eq!(get("meshware_in_flight{tenant=\"acme\"}"), 0.0);
    // Histograms reach the admin output at Envoy's stats flush (5 s).
    let mut count = None;
    for _ in 0..40 {
        count = s.metric("meshware_request_duration_ms_count{tenant=\"acme\"}");
        if count == Some(4.0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(count, Some(4.0), "{}", s.envoy.prometheus());
    assert!(s
        .envoy
        .prometheus()
        .contains("meshware_request_duration_ms_bucket{tenant=\"acme\",le=\"5\"}"));
}

trait IntoBytes<'a> {
    fn into_bytes(self) -> (&'a str, &'a [u8]);
}

impl<'a> IntoBytes<'a> for (&'a str, &'a str) {
    fn into_bytes(self) -> (&'a str, &'a [u8]) {
        (self.0, self.1.as_bytes())
    }
}
