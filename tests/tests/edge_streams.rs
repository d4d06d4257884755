//! Unusual streams through every filter of the suite with the example
//! profile: streams that end without response headers, HTTP/2 with request
//! trailers, non-UTF-8 header bytes, empty versus absent headers, and
//! thousands of headers. No panic (the filters keep serving) and a defined
//! result for each.

use meshware_e2e::envoy::Envoy;
use meshware_e2e::suite::{bootstrap, Suite};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const ACME: (&str, &str) = ("host", "shop.acme.example");
const UMBRELLA: (&str, &str) = ("host", "api.umbrella.example");

fn profile() -> String {
    meshware_e2e::example_profile()
}

fn all_filters() -> Vec<&'static str> {
    meshware_e2e::all_filters()
}

fn start() -> Suite {
    Suite::start(&profile(), &all_filters())
}

fn b<'a>(h: (&'a str, &'a str)) -> (&'a str, &'a [u8]) {
    (h.0, h.1.as_bytes())
}

/// No filter crashed: a plain request is still served with every filter.
fn still_serving(s: &Suite) {
    let r = s.get("/orders", &[ACME]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(s.echo.last().unwrap().header("traceparent").is_some());
    assert!(!s.envoy.log().contains("panic"), "{}", s.envoy.log());
}

fn metric_sum(s: &Suite, prefix: &str) -> f64 {
    s.envoy
        .prometheus()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn streams_that_end_without_response_headers_leave_nothing_behind() {
    let s = start();
    for host in ["shop.acme.example", "api.globex.example", "www.example.org"] {
        for _ in 0..3 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            write!(
                c,
                "GET /slow HTTP/1.1\r\nhost: {host}\r\nx-echo-delay-ms: 1500\r\n\r\n"
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(c); // the client goes away before any response header
        }
    }
    // Upstream requests are reset; every stream ends in the log phase.
    let mut settled = false;
    for _ in 0..40 {
        if metric_sum(&s, "meshware_in_flight{") == 0.0
            && metric_sum(&s, "meshware_requests{") >= 9.0
        {
            settled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(settled, "in-flight back to zero:\n{}", s.envoy.prometheus());
    assert!(
        s.metric("meshware_requests{tenant=\"acme\",method=\"GET\",status_class=\"none\"}")
            >= Some(3.0),
        "counted as ended without a status"
    );
    still_serving(&s);
}

fn h2(port: u16, method: &str, path: &str, host: &str, args: &[&str]) -> Value {
    meshware_e2e::http::h2(port, method, path, host, args)
}

fn h2_header<'v>(r: &'v Value, name: &str) -> Option<&'v str> {
    r["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[test]
fn http2_requests_with_trailers_are_decided_like_any_other() {
    let s = start();
    // Idempotency holds the request for its whole body: with trailers the
    // body ends at the trailers, not at a data frame.
    let args = [
        "--header",
        "idempotency-key:\"h2-key-1\"",
        "--body",
        "{\"sku\": 1}",
        "--trailer",
        "x-checksum:abc",
    ];
    let first = h2(s.port, "POST", "/orders", "shop.acme.example", &args);
    assert_eq!(first["status"], 200, "{first}");
    let upstream = s.echo.last().unwrap();
    assert_eq!(upstream.body, b"{\"sku\": 1}");
    let again = h2(s.port, "POST", "/orders", "shop.acme.example", &args);
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(
        h2_header(&again, "idempotency-replayed"),
        Some("true"),
        "{again}"
    );
    assert_eq!(
        s.echo
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        1
    );
    // jwt-auth over HTTP/2 with trailers: refused like HTTP/1.1.
    let r = h2(
        s.port,
        "GET",
        "/orders",
        "api.umbrella.example",
        &["--trailer", "x-t:1"],
    );
    assert_eq!(r["status"], 401, "{r}");
    still_serving(&s);
}

#[test]
fn non_utf8_header_bytes_get_a_defined_answer_from_every_filter() {
    let s = start();
    let junk: &[u8] = &[b'a', 0xff, 0xfe, b'z'];
    for (host, name) in [
        ("shop.acme.example", "origin"),
        ("shop.acme.example", "idempotency-key"),
        ("shop.acme.example", "x-route-version"),
        ("shop.acme.example", "cookie"),
        ("api.umbrella.example", "authorization"),
        ("api.globex.example", "traceparent"),
        ("api.globex.example", "x-tenant-id"),
        ("www.example.org", "x-api-key"),
    ] {
        let r = s.send(
            "POST",
            "/orders",
            &[("host", host.as_bytes()), (name, junk)],
            b"{}",
        );
        assert!(r.status < 500, "{host} {name}: {} {}", r.status, r.text());
    }
    still_serving(&s);
}

#[test]
fn an_empty_header_is_defined_per_filter() {
    let s = start();
    // jwt-auth: an empty Authorization is no token at all.
    let empty = s.send(
        "GET",
        "/orders",
        &[b(UMBRELLA), ("authorization", b"")],
        b"",
    );
    let absent = s.send("GET", "/orders", &[b(UMBRELLA)], b"");
    assert_eq!((empty.status, absent.status), (401, 401));
    assert_eq!(
        empty.header("www-authenticate"),
        absent.header("www-authenticate")
    );
    // idempotency: an empty key is a malformed key (400); no key is allowed
    // on /orders (the key is optional there).
    let empty = s.send(
        "POST",
        "/orders",
        &[b(ACME), ("idempotency-key", b"")],
        b"{}",
    );
    assert_eq!(empty.status, 400, "{}", empty.text());
    let absent = s.send("POST", "/orders", &[b(ACME)], b"{}");
    assert!(
        absent.status == 200 || absent.status == 429,
        "{}",
        absent.status
    );
    // cors: an empty Origin is not an origin: no CORS headers either way.
    let r = s.send("GET", "/", &[b(ACME), ("origin", b"")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // trace-context: an empty traceparent starts a new trace, like none.
    s.send("GET", "/", &[b(ACME), ("traceparent", b"")], b"");
    let tp = s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert_eq!(tp.len(), 55, "{tp}");
    still_serving(&s);
}

#[test]
fn thousands_of_headers_are_refused_by_envoy_or_handled_by_every_filter() {
    let many: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| (format!("x-h-{i}"), format!("v{i}").into_bytes()))
        .collect();
    let headers = |host: &'static str| -> Vec<(&str, &[u8])> {
        let mut h: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        h.push(("host", host.as_bytes()));
        h
    };
    // Envoy's defaults (100 headers, 60 KiB) refuse them before any filter.
    let s = start();
    let r = s.send("GET", "/", &headers("shop.acme.example"), b"");
    assert_eq!(r.status, 431);
    still_serving(&s);
    drop(s);

    // Raised limits: all 3000 reach the filters, which decide as usual
    // (acme's endpoint guard allows 64 headers: 431 from the filter; the
    // public tenant here allows 5000).
    let mut p: Value = serde_json::from_str(&profile()).unwrap();
    p["tenants"]["public"]["endpoint_guard"] =
        json!({"max_header_count": 5000, "max_header_bytes": 1_048_576});
    let echo = meshware_e2e::echo::Echo::start(0).unwrap();
    let (mut config, port, admin) = bootstrap(&p.to_string(), &all_filters(), echo.port);
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    hcm["common_http_protocol_options"] = json!({"max_headers_count": 5000});
    hcm["max_request_headers_kb"] = json!(1024);
    let envoy = Envoy::start(&config, admin).unwrap_or_else(|e| panic!("{e}"));
    let acme =
        meshware_e2e::http::send(port, "GET", "/", &headers("shop.acme.example"), b"").unwrap();
    assert_eq!(acme.status, 431, "{}", acme.text());
    assert_eq!(echo.count(), 0);
    let public =
        meshware_e2e::http::send(port, "GET", "/", &headers("www.example.org"), b"").unwrap();
    assert_eq!(public.status, 200, "{}", public.text());
    assert_eq!(echo.last().unwrap().header("x-h-2999"), Some("v2999"));
    assert!(!envoy.log().contains("panic"));
}
