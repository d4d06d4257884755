//! gRPC through real Envoy, with grpcio's server behind it and grpcio's
//! client in front (`tests/grpc/`): every stream shape passes every filter
//! with its statuses and trailers; calls longer than Envoy's 15 s route
//! timeout follow the client's deadline; the filters' own answers carry
//! the gRPC status each concern documents (docs/CONFIG.md, "gRPC"); the
//! circuit opens on gRPC failures; a route budget lowers the deadline the
//! upstream sees; failed calls are logged and counted as errors; gRPC-Web
//! from a browser origin passes CORS and gets the same statuses; a
//! duplicate unary call with an Idempotency-Key never runs twice and a
//! streaming one is never held.

use meshware_cli::bootstrap::Protocol;
use meshware_e2e::grpc::{call, GrpcServer};
use meshware_e2e::suite::Suite;
use serde_json::{json, Value};

const ALL: &[&str] = &[
    "access_log",
    "trace_context",
    "cors",
    "jwt_auth",
    "endpoint_guard",
    "rate_limit",
    "idempotency",
    "circuit_breaker",
];
const SVC: &str = "/meshware.test.Echo";

fn profile() -> String {
    let v = meshware_e2e::jwt_vectors();
    let provider = json!({"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                          "algorithms": ["RS256"]});
    json!({
        "tenancy": {"hosts": {"retry.example": "retry"}, "default": "g"},
        "defaults": {
            "access_log": {"sample_rate": 0.0},
            "trace_context": {},
            "cors": {"allowed_origins": ["https://app.example"], "allowed_methods": ["POST"],
                     "allowed_headers": ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"],
                     "exposed_headers": ["grpc-status", "grpc-message"]},
            "jwt_auth": {"providers": [provider], "default_requirement": "bypass",
                         "rules": [{"prefix": format!("{SVC}/Private"), "requirement": "required"}]},
            "endpoint_guard": {"extra_protected_paths": [format!("{SVC}/Hidden")],
                               "max_body_bytes": 256},
            "idempotency": {"routes": [{"prefix": format!("{SVC}/"), "methods": ["POST"]}]},
            "circuit_breaker": {"key": "route", "min_requests": 4, "failure_ratio": 0.5,
                                "open_for_ms": 60000,
                                "routes": [{"prefix": format!("{SVC}/Fail")}]}
        },
        "tenants": {
            "g": {"rate_limit": {"limits": [{"name": "once", "key": {"header": "x-limit-key"},
                                             "rate": 1, "per": "hour", "burst": 1}]}},
            "retry": {"idempotency": {"grpc_replay": "trailers_only"},
                      "rate_limit": {"grpc_status": "UNAVAILABLE",
                                     "limits": [{"name": "once", "key": {"header": "x-limit-key"},
                                                 "rate": 1, "per": "hour", "burst": 1}]},
                      "circuit_breaker": {"routes": [{"prefix": format!("{SVC}/Slow"), "timeout_ms": 1500}]}}
        }
    })
    .to_string()
}

fn start() -> (GrpcServer, Suite) {
    start_speaking(Protocol::Downstream)
}

fn start_speaking(protocol: Protocol) -> (GrpcServer, Suite) {
    let server = GrpcServer::start();
    let suite = Suite::start_grpc(&profile(), ALL, server.port, protocol);
    (server, suite)
}

/// The tenant with a 1.5 s budget on `Slow` and UNAVAILABLE for limits.
const RETRY_TENANT: [&str; 2] = ["--authority", "retry.example"];

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// The call's number the server counted (`x-call`), from grpcio's view of a
/// call or a raw HTTP/2 response's trailers.
fn call_number(v: &Value) -> u64 {
    let raw = v["trailers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p[0] == "x-call")
        .and_then(|p| p[1].as_str());
    raw.unwrap_or_else(|| trailer(v, "x-call"))
        .parse()
        .unwrap_or(0)
}

fn trailer<'v>(v: &'v Value, name: &str) -> &'v str {
    v["trailing_metadata"][name].as_str().unwrap_or("")
}

#[test]
fn every_stream_shape_passes_every_filter_with_its_trailers() {
    let (_server, s) = start();
    let unary = call(s.port, "Unary", "hi", &["--metadata", "x-user-id=mallory"]);
    assert_eq!(code(&unary), "OK", "{unary}");
    assert_eq!(unary["responses"], json!(["hi"]));
    // The server's trailers arrive; the owned header never reached it.
    let seen = trailer(&unary, "x-seen-headers");
    assert!(seen.contains("traceparent"), "{unary}");
    assert!(!seen.contains("x-user-id"), "{unary}");

    let stream = call(s.port, "ServerStream", "5", &[]);
    assert_eq!(code(&stream), "OK", "{stream}");
    assert_eq!(stream["responses"], json!(["0", "1", "2", "3", "4"]));
    assert!(!trailer(&stream, "x-seen-headers").is_empty());

    let bidi = call(s.port, "Bidi", "", &["--messages", "a,b,c,d"]);
    assert_eq!(code(&bidi), "OK", "{bidi}");
    assert_eq!(bidi["responses"], json!(["a", "b", "c", "d"]));

    // The upstream's own failure reaches the client unchanged.
    let fail = call(s.port, "Fail", "NOT_FOUND", &[]);
    assert_eq!(code(&fail), "NOT_FOUND", "{fail}");
    assert_eq!(fail["details"], "failed on purpose");
}

#[test]
fn a_call_longer_than_envoys_route_timeout_follows_the_client_deadline() {
    let (_server, s) = start();
    let long = call(s.port, "Slow", "16", &["--timeout", "40"]);
    assert_eq!(code(&long), "OK", "{long}");
    // A deadline shorter than the call: the client's deadline, not 15 s.
    let started = std::time::Instant::now();
    let short = call(s.port, "Slow", "5", &["--timeout", "1"]);
    assert_eq!(code(&short), "DEADLINE_EXCEEDED", "{short}");
    assert!(started.elapsed().as_secs() < 5);
}

#[test]
fn the_filters_answer_grpc_clients_with_grpc_statuses() {
    let (_server, s) = start();
    let key = ["--metadata", "x-limit-key=k1"];
    assert_eq!(code(&call(s.port, "Unary", "a", &key)), "OK");
    let limited = call(s.port, "Unary", "a", &key);
    assert_eq!(code(&limited), "RESOURCE_EXHAUSTED", "{limited}");
    assert!(
        limited["details"]
            .as_str()
            .unwrap_or("")
            .starts_with("rate_limit: "),
        "{limited}"
    );
    assert!(
        limited["initial_metadata"]["retry-after"].is_string()
            || limited["trailing_metadata"]["retry-after"].is_string(),
        "{limited}"
    );

    // The tenant that asks for it gets UNAVAILABLE (clients retry it).
    let retry = [
        "--metadata",
        "x-limit-key=k1",
        "--authority",
        "retry.example",
    ];
    assert_eq!(code(&call(s.port, "Unary", "a", &retry)), "OK");
    let limited = call(s.port, "Unary", "a", &retry);
    assert_eq!(code(&limited), "UNAVAILABLE", "{limited}");

    let anonymous = call(s.port, "Private", "x", &[]);
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    assert!(anonymous["details"]
        .as_str()
        .unwrap_or("")
        .starts_with("jwt_auth: "));

    let hidden = call(s.port, "Hidden", "x", &[]);
    assert_eq!(code(&hidden), "UNIMPLEMENTED", "{hidden}");
    assert!(hidden["details"]
        .as_str()
        .unwrap_or("")
        .starts_with("endpoint_guard: "));
}

#[test]
fn grpc_failures_open_the_circuit() {
    let (_server, s) = start();
    for _ in 0..4 {
        let f = call(s.port, "Fail", "UNAVAILABLE", &[]);
        assert_eq!(f["details"], "failed on purpose", "{f}");
    }
    let rejected = call(s.port, "Fail", "UNAVAILABLE", &[]);
    assert_eq!(code(&rejected), "UNAVAILABLE", "{rejected}");
    assert!(
        rejected["details"]
            .as_str()
            .unwrap_or("")
            .starts_with("circuit_breaker: "),
        "the fifth call is answered by the open circuit: {rejected}"
    );
    // Caller mistakes (NOT_FOUND) are not upstream failures: another route's
    // circuit would stay closed; here the Unary route was never affected.
    assert_eq!(code(&call(s.port, "Unary", "ok", &[])), "OK");
}

#[test]
fn a_route_budget_lowers_the_deadline_the_upstream_sees() {
    let (_server, s) = start();
    let within = call(
        s.port,
        "Slow",
        "0",
        &["--timeout", "30", RETRY_TENANT[0], RETRY_TENANT[1]],
    );
    assert_eq!(code(&within), "OK", "{within}");
    let remaining: i64 = trailer(&within, "x-time-remaining-ms")
        .parse()
        .unwrap_or(-1);
    assert!(
        (0..=1500).contains(&remaining),
        "server saw {remaining} ms: {within}"
    );
    // Without a budget the client's deadline reaches the server unchanged.
    let free = call(s.port, "Slow", "0", &["--timeout", "30"]);
    let remaining: i64 = trailer(&free, "x-time-remaining-ms").parse().unwrap_or(-1);
    assert!(remaining > 20_000, "{free}");
    // A client deadline shorter than the budget stands: the client's ends
    // the call, not the budget.
    let short = call(
        s.port,
        "Slow",
        "3",
        &["--timeout", "0.4", RETRY_TENANT[0], RETRY_TENANT[1]],
    );
    assert_eq!(code(&short), "DEADLINE_EXCEEDED", "{short}");
    // Measured by the client around the call: its 0.4 s, not the 1.5 s budget.
    assert!(
        short["elapsed_ms"].as_u64().is_some_and(|ms| ms < 1200),
        "{short}"
    );
    // Past the budget the call ends, with a gRPC status, not a hang.
    let started = std::time::Instant::now();
    let over = call(
        s.port,
        "Slow",
        "4",
        &["--timeout", "30", RETRY_TENANT[0], RETRY_TENANT[1]],
    );
    assert!(
        matches!(code(&over), "DEADLINE_EXCEEDED" | "UNAVAILABLE"),
        "{over}"
    );
    assert!(started.elapsed().as_secs() < 4);
}

#[test]
fn failed_calls_are_logged_and_counted_as_errors() {
    let (_server, s) = start();
    assert_eq!(code(&call(s.port, "Unary", "ok", &[])), "OK");
    assert_eq!(code(&call(s.port, "Fail", "INTERNAL", &[])), "INTERNAL");
    assert_eq!(code(&call(s.port, "Fail", "NOT_FOUND", &[])), "NOT_FOUND");
    // sample_rate 0: only the failures are logged, with their gRPC status.
    let lines = s.access_log_until(|l| l.len() >= 2);
    let statuses: Vec<String> = lines.iter().map(|l| l["grpc_status"].to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(statuses.iter().any(|g| g.contains("13")), "{statuses:?}");
    assert!(statuses.iter().any(|g| g.contains('5')), "{statuses:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == 200 || l["status"] == "200"),
        "{lines:?}"
    );
    // The filters' records are on those lines (the suite writes them only
    // for lines the logger writes: it must count a failed gRPC call too).
    assert!(lines.iter().all(|l| l["tenant"] == "g"), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["decisions"]["circuit_breaker"].is_string()),
        "{lines:?}"
    );
    let red = |class: &str| {
        s.metric(&format!(
            "meshware_requests{{tenant=\"g\",method=\"POST\",status_class=\"{class}\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert!(
        meshware_e2e::eventually(5, || red("5xx") == 1.0
            && red("4xx") == 1.0
            && red("2xx") == 1.0),
        "2xx {} 4xx {} 5xx {}",
        red("2xx"),
        red("4xx"),
        red("5xx")
    );
}

/// A gRPC-Web frame: flag byte, big-endian length, payload.
/// A gRPC call to `Unary` from a raw HTTP/2 client (`tests/h2_client.py`):
/// what grpcio never sends, and the frames as they travel.
fn raw_unary(port: u16, args: &[&str]) -> Value {
    raw_call(port, &format!("{SVC}/Unary"), args)
}

/// As `raw_unary`, to any spelling of a path.
fn raw_call(port: u16, path: &str, args: &[&str]) -> Value {
    let mut all = vec![
        "--header",
        "content-type:application/grpc",
        "--header",
        "te:trailers",
    ];
    all.extend_from_slice(args);
    meshware_e2e::http::h2(port, "POST", path, "127.0.0.1", &all)
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn grpc_web_from_a_browser_origin_passes_cors_and_gets_grpc_statuses() {
    // A browser's gRPC-Web call may come over HTTP/1.1: the upstream is
    // spoken to in HTTP/2 whatever the client spoke.
    let (_server, s) = start_speaking(Protocol::Http2);
    let origin: (&str, &[u8]) = ("origin", b"https://app.example");
    let preflight = s.send(
        "OPTIONS",
        &format!("{SVC}/Unary"),
        &[
            origin,
            ("access-control-request-method", b"POST"),
            ("access-control-request-headers", b"content-type,x-grpc-web"),
        ],
        b"",
    );
    assert!(matches!(preflight.status, 200 | 204), "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let web = |path: &str, extra: &[(&str, &[u8])]| {
        let mut headers: Vec<(&str, &[u8])> = vec![
            origin,
            ("content-type", b"application/grpc-web+proto"),
            ("x-grpc-web", b"1"),
        ];
        headers.extend_from_slice(extra);
        s.send("POST", path, &headers, &frame(0, b"web"))
    };
    let ok = web(&format!("{SVC}/Unary"), &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let body = String::from_utf8_lossy(&ok.body).to_string();
    assert!(ok.body.starts_with(&frame(0, b"web")), "{body}");
    assert!(body.contains("grpc-status:0"), "the trailers frame: {body}");

    // A duplicate gRPC-Web call gets the first one's answer, message and
    // trailers frame (the server's call number in it) byte for byte.
    let idempotent: (&str, &[u8]) = ("idempotency-key", b"\"web\"");
    let first = web(&format!("{SVC}/Unary"), &[idempotent]);
    let again = web(&format!("{SVC}/Unary"), &[idempotent]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        String::from_utf8_lossy(&first.body).contains("x-call:"),
        "{first:?}"
    );
    if meshware_e2e::suite::native_module() {
        // Held to its end, not taken for a stream: told it already ran.
        assert_eq!(again.header("grpc-status"), Some("6"), "{again:?}");
    } else {
        let text = |r: &meshware_e2e::http::Response| String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(text(&again), text(&first), "{again:?}");
        assert_eq!(again.header("idempotency-replayed"), Some("true"));
    }

    let key: (&str, &[u8]) = ("x-limit-key", b"web");
    assert_eq!(web(&format!("{SVC}/Unary"), &[key]).status, 200);
    let limited = web(&format!("{SVC}/Unary"), &[key]);
    let status = limited
        .header("grpc-status")
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&limited.body).to_string());
    assert!(
        status.contains('8'),
        "RESOURCE_EXHAUSTED in gRPC-Web form: {limited:?}"
    );
    assert_eq!(
        limited.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn a_duplicate_grpc_call_never_runs_twice_and_streams_are_never_held() {
    let (_server, s) = start();
    let key = |k: &str| format!("idempotency-key=\"{k}\"");
    // A failure the caller caused is stored and replayed with its status,
    // message and trailing metadata, by the proxy.
    let k1 = key("k1");
    let first = call(s.port, "Fail", "INVALID_ARGUMENT", &["--metadata", &k1]);
    assert_eq!(code(&first), "INVALID_ARGUMENT", "{first}");
    assert!(first["trailing_metadata"]
        .get("idempotency-replayed")
        .is_none());
    let again = call(s.port, "Fail", "INVALID_ARGUMENT", &["--metadata", &k1]);
    assert_eq!(code(&again), "INVALID_ARGUMENT", "{again}");
    assert_eq!(again["details"], "failed on purpose");
    assert_eq!(trailer(&again, "idempotency-replayed"), "true", "{again}");
    assert_eq!(
        trailer(&again, "x-seen-headers"),
        trailer(&first, "x-seen-headers")
    );

    // A success with a message (`grpc_replay: full`, the default): the duplicate gets
    // the stored message and trailers through the replay route, and the
    // server's call counter shows it never ran again. The native build
    // cannot replace a response: its duplicate is told it already ran.
    let k2 = key("k2");
    let paid = call(s.port, "Unary", "pay", &["--metadata", &k2]);
    assert_eq!(code(&paid), "OK", "{paid}");
    let dup = call(s.port, "Unary", "pay", &["--metadata", &k2]);
    assert_replayed(&dup, &paid);
    let next = call(s.port, "Unary", "next", &[]);
    assert_eq!(call_number(&next), call_number(&paid) + 1, "{paid} {next}");
    if !meshware_e2e::suite::native_module() {
        // Byte for byte: the message frames and the trailers, as HTTP/2 carries them.
        let raw = || {
            raw_unary(
                s.port,
                &[
                    "--header",
                    "idempotency-key:\"raw\"",
                    "--grpc-message",
                    "bytes",
                ],
            )
        };
        let (first, replayed) = (raw(), raw());
        assert_eq!(first["body"], "\0\0\0\0\u{5}bytes", "{first}");
        assert_eq!(replayed["body"], first["body"], "{replayed}");
        assert_eq!(replayed["trailers"], first["trailers"], "{replayed}");
        let names = |r: &Value| -> Vec<String> {
            let mut n: Vec<String> = r["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p[0].as_str().map(str::to_string))
                // Envoy's timing of the upstream: a replay has none.
                .filter(|n| n != "idempotency-replayed" && n != "x-envoy-upstream-service-time")
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&replayed), names(&first), "{first} {replayed}");
        // Other spellings of the path with the same key, as Envoy and the
        // server read them: `//` merged (the same call: replayed), `..;`
        // (below), `%2f` refused by Envoy, another case another call (same
        // key: FAILED_PRECONDITION).
        // None runs `Unary` again.
        let keyed = [
            "--header",
            "idempotency-key:\"raw\"",
            "--grpc-message",
            "bytes",
        ];
        let status = |r: &Value| {
            let all = r["headers"]
                .as_array()
                .into_iter()
                .chain(r["trailers"].as_array());
            all.flatten()
                .find(|p| p[0] == "grpc-status")
                .and_then(|p| p[1].as_str())
                .unwrap_or("")
                .to_string()
        };
        let merged = raw_call(s.port, &format!("/{SVC}//Unary"), &keyed);
        assert_eq!(merged["body"], first["body"], "{merged}");
        assert_eq!(merged["trailers"], first["trailers"], "{merged}");
        // `..;`: Envoy 1.40 resolves it to `/Unary` (UNIMPLEMENTED, from
        // the server); 1.36 passes it on and the request checks refuse it
        // as ambiguous (INVALID_ARGUMENT).
        for (path, codes) in [
            (format!("{SVC}/..;/Unary"), &["12", "3"][..]),
            (format!("{SVC}%2fUnary"), &["13"][..]),
            (format!("{}/Unary", SVC.to_lowercase()), &["9"][..]),
        ] {
            let r = raw_call(s.port, &path, &keyed);
            assert!(codes.contains(&status(&r).as_str()), "{path}: {r}");
        }
        let after = call(s.port, "Unary", "after", &[]);
        assert_eq!(
            call_number(&after),
            call_number(&first) + 1,
            "{first} {after}"
        );
    }
    // The replay route's header from a client is stripped: the call runs.
    let spoofed = call(
        s.port,
        "Unary",
        "mine",
        &["--metadata", "x-meshware-replay=1"],
    );
    assert_eq!(spoofed["responses"], json!(["mine"]), "{spoofed}");
    assert!(call_number(&spoofed) > call_number(&next), "{spoofed}");
    assert!(!trailer(&spoofed, "x-seen-headers").contains("x-meshware-replay"));
    // Same key, another payload.
    let other = call(s.port, "Unary", "refund", &["--metadata", &k2]);
    assert_eq!(code(&other), "FAILED_PRECONDITION", "{other}");
    // `trailers_only` (the default): the duplicate is told it already ran.
    let k2b = key("k2b");
    let retry_tenant = ["--metadata", &k2b, RETRY_TENANT[0], RETRY_TENANT[1]];
    assert_eq!(code(&call(s.port, "Unary", "pay", &retry_tenant)), "OK");
    let dup = call(s.port, "Unary", "pay", &retry_tenant);
    assert_eq!(code(&dup), "ALREADY_EXISTS", "{dup}");

    // The upstream's own failure frees the key: the retry runs.
    let k3 = key("k3");
    call(s.port, "Fail", "UNAVAILABLE", &["--metadata", &k3]);
    let retry = call(s.port, "Fail", "UNAVAILABLE", &["--metadata", &k3]);
    assert!(
        retry["trailing_metadata"]
            .get("idempotency-replayed")
            .is_none(),
        "{retry}"
    );

    // Streams with a key pass at once, both ways.
    let k4 = key("k4");
    let started = std::time::Instant::now();
    // Ping-pong: the client sends the next message only after an answer,
    // so the request body cannot end before the upstream answers.
    let bidi = call(
        s.port,
        "Bidi",
        "",
        &["--metadata", &k4, "--timeout", "10", "--pingpong"],
    );
    assert_eq!(code(&bidi), "OK", "{bidi}");
    assert_eq!(bidi["responses"], json!(["a", "b", "c"]));
    assert!(started.elapsed().as_secs() < 5);
    let k5 = key("k5");
    let stream = call(s.port, "ServerStream", "3", &["--metadata", &k5]);
    assert_eq!(code(&stream), "OK", "{stream}");
}

/// The gRPC service behind Envoy with the idempotency filter alone, its
/// bootstrap changed by `edit` first.
fn start_idempotency_alone(edit: impl Fn(&mut Value)) -> (GrpcServer, Suite) {
    let server = GrpcServer::start();
    let suite = Suite::start_grpc_edited(
        &profile(),
        &["idempotency"],
        server.port,
        Protocol::Downstream,
        edit,
    );
    (server, suite)
}

/// The ingress listener's HTTP connection manager in a bootstrap.
fn hcm(config: &mut Value) -> &mut Value {
    &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]
}

/// A client's replay header is stripped and the route chosen again without
/// it, even when an Envoy filter before ours (CORS) chose it already, and
/// with idempotency alone (no other filter of ours re-routes): the call
/// reaches the server and runs.
#[test]
fn a_client_cannot_send_its_call_to_the_replay_route() {
    // Envoy's CORS filter first: it asks for the route (per-route CORS
    // policies) before ours strip.
    let (_server, s) = start_idempotency_alone(|config| {
        let filters = hcm(config)["http_filters"].as_array_mut().unwrap();
        filters.insert(
            0,
            json!({"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        );
    });
    let before = call(s.port, "Unary", "one", &[]);
    let spoofed = call(
        s.port,
        "Unary",
        "two",
        &["--metadata", "x-meshware-replay=1"],
    );
    assert_eq!(code(&spoofed), "OK", "{spoofed}");
    assert_eq!(spoofed["responses"], json!(["two"]), "{spoofed}");
    assert_eq!(
        call_number(&spoofed),
        call_number(&before) + 1,
        "{before} {spoofed}"
    );
}

/// A replay needs no upstream: an open circuit (and any filter judging the
/// upstream call) lets it pass, as it lets an HTTP replay, which the
/// idempotency filter answers itself.
#[test]
fn an_open_circuit_does_not_stop_a_replay() {
    let server = GrpcServer::start();
    let profile = json!({
        "tenancy": {"default": "g"},
        "tenants": {"g": {}},
        "defaults": {
            "idempotency": {"routes": [{"prefix": format!("{SVC}/"), "methods": ["POST"]}]},
            "circuit_breaker": {"key": "route", "min_requests": 4, "failure_ratio": 0.5,
                                "open_for_ms": 60000, "routes": [{"prefix": format!("{SVC}/")}]}
        }
    })
    .to_string();
    let s = Suite::start_grpc(
        &profile,
        &["idempotency", "circuit_breaker"],
        server.port,
        Protocol::Downstream,
    );
    let key = ["--metadata", "idempotency-key=\"open\""];
    let paid = call(s.port, "Unary", "pay", &key);
    assert_eq!(code(&paid), "OK", "{paid}");
    for _ in 0..6 {
        call(s.port, "Fail", "UNAVAILABLE", &[]);
    }
    let fresh = call(s.port, "Unary", "fresh", &[]);
    assert_eq!(code(&fresh), "UNAVAILABLE", "the circuit is open: {fresh}");
    assert_replayed(&call(s.port, "Unary", "pay", &key), &paid);
    // Counted once the replay route's answer arrived (the native build,
    // which cannot replay it, tells the client it already ran).
    let (counted, other) = if meshware_e2e::suite::native_module() {
        ("not_replayable", "replayed")
    } else {
        ("replayed", "not_replayable")
    };
    assert_counted(&s, "g", counted, 1.0);
    assert_counted(&s, "g", other, 0.0);
}

/// The idempotency filter's `outcome` counter for `tenant` reaches `value`.
fn assert_counted(s: &Suite, tenant: &str, outcome: &str, value: f64) {
    let sample = format!(
        "meshware_decisions{{filter=\"idempotency\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    let reached = meshware_e2e::eventually(5, || s.metric(&sample) == Some(value));
    assert!(
        reached,
        "{sample} is not {value}:\n{}",
        s.envoy.prometheus()
    );
}

/// `dup` got the answer of `first` (a `pay` call) replayed in full; in the
/// native build, which cannot replace a response, ALREADY_EXISTS.
fn assert_replayed(dup: &Value, first: &Value) {
    if meshware_e2e::suite::native_module() {
        assert_eq!(code(dup), "ALREADY_EXISTS", "{dup}");
        return;
    }
    assert_eq!(code(dup), "OK", "{dup}");
    assert_eq!(dup["responses"], json!(["pay"]), "{dup}");
    assert_eq!(
        dup["trailing_metadata"], first["trailing_metadata"],
        "{dup}"
    );
    assert_eq!(dup["initial_metadata"]["idempotency-replayed"], "true");
}

/// An Envoy without the replay route (a configuration written by hand, an
/// Istio mesh without `grpc-replay.yaml`): the marked duplicate reaches the
/// server as an OPTIONS request, which grpcio refuses (it runs a POST of any
/// content type), so the call never runs again, and the client is told it
/// already ran.
#[test]
fn without_the_replay_route_a_duplicate_is_told_it_already_ran() {
    let (_server, s) = start_idempotency_alone(|config| {
        let routes = hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .unwrap();
        assert_eq!(routes[0]["name"], "idempotency-replay");
        routes.remove(0);
    });
    let key = ["--metadata", "idempotency-key=\"gone\""];
    let first = call(s.port, "Unary", "pay", &key);
    assert_eq!(code(&first), "OK", "{first}");
    let dup = call(s.port, "Unary", "pay", &key);
    assert_eq!(code(&dup), "ALREADY_EXISTS", "{dup}");
    // Not counted as replayed: nothing carried the replay.
    assert_counted(&s, "g", "not_replayable", 1.0);
    assert_counted(&s, "g", "replayed", 0.0);
    let next = call(s.port, "Unary", "next", &[]);
    assert_eq!(
        call_number(&next),
        call_number(&first) + 1,
        "{first} {next}"
    );
}

#[test]
fn a_malformed_grpc_timeout_gets_invalid_argument_at_once() {
    let (_server, s) = start();
    // grpcio never sends a bad deadline: a raw HTTP/2 gRPC request does.
    // Refused on its headers: the body is never read.
    for bad in ["5s", "123456789m", "soon"] {
        let timeout = format!("grpc-timeout:{bad}");
        let r = raw_unary(s.port, &["--header", &timeout, "--body", "unread"]);
        let header = |name: &str| {
            r["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|p| p[0] == name))
                .and_then(|p| p[1].as_str())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(
            header("grpc-status"),
            "3",
            "INVALID_ARGUMENT for {bad}: {r}"
        );
        assert_eq!(
            header("grpc-message"),
            "request: invalid_grpc_timeout",
            "{r}"
        );
    }
    // A well-formed one passes.
    let ok = call(s.port, "Unary", "fine", &["--timeout", "5"]);
    assert_eq!(code(&ok), "OK", "{ok}");
}

#[test]
fn a_message_over_the_size_limit_gets_resource_exhausted() {
    let (_server, s) = start();
    let big = "x".repeat(1000);
    let r = call(s.port, "Unary", &big, &["--timeout", "10"]);
    assert_eq!(code(&r), "RESOURCE_EXHAUSTED", "{r}");
    assert!(
        r["details"]
            .as_str()
            .unwrap_or("")
            .starts_with("endpoint_guard: "),
        "{r}"
    );
    assert_eq!(code(&call(s.port, "Unary", "small", &[])), "OK");
}
