//! CORS in a real browser: headless Chromium loads a page from one origin
//! that fetches the API through Envoy on another origin. The allowed origin's
//! fetches (simple, with credentials, preflighted with a custom header)
//! succeed in the page; the same page from a disallowed origin fails.

use meshware_e2e::page::{chromium_dom, PageServer};
use meshware_e2e::suite::Suite;
use serde_json::Value;

/// The page reads the API URL from its query string, so it can be served
/// before Envoy's port is known.
const PAGE: &str = r#"<!doctype html><html><body><pre id="result">pending</pre><script>
const api = new URLSearchParams(location.search).get("api");
async function attempt(name, init) {
  try {
    const r = await fetch(api, init);
    const exposed = r.headers.get("x-request-id") ? "exposed" : "hidden";
    return name + "=" + r.status + ":" + exposed;
  } catch (e) {
    return name + "=blocked";
  }
}
(async () => {
  const out = [];
  out.push(await attempt("simple", {}));
  out.push(await attempt("credentials", {credentials: "include"}));
  out.push(await attempt("preflighted", {method: "PUT", headers: {"X-Custom": "1"}, body: "x"}));
  document.getElementById("result").textContent = out.join(" ");
})();
</script></body></html>"#;

fn result_of(dom: &str) -> String {
    let marker = "<pre id=\"result\">";
    let Some(start) = dom.find(marker).map(|i| i + marker.len()) else {
        return format!("no result in DOM: {dom}");
    };
    let end = dom[start..].find("</pre>").map_or(dom.len(), |i| start + i);
    dom[start..end].to_string()
}

#[test]
fn allowed_origin_fetches_succeed_and_others_fail_in_chromium() {
    let allowed = PageServer::start(PAGE.to_string()).unwrap();
    let other = PageServer::start(PAGE.to_string()).unwrap();
    // Ports are picked at run time, so the test adds its page's origin to the
    // example tenant's list; every other CORS setting is the example's.
    let text = std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap();
    let mut profile: Value = serde_json::from_str(&text).unwrap();
    profile["tenants"]["initech"]["cors"]["allowed_origins"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(allowed.origin()));
    let s = Suite::start(&profile.to_string(), &["trace_context", "cors"]);
    // The API origin is `localhost:<envoy>`; the pages are `127.0.0.1:<port>`.
    let api = format!("http://localhost:{}/t/initech/api/items", s.port);

    let dom = chromium_dom(&format!("{}/?api={api}", allowed.origin()));
    assert_eq!(
        result_of(&dom),
        "simple=200:exposed credentials=200:exposed preflighted=200:exposed",
        "{dom}"
    );
    let seen = s.echo.requests();
    assert!(
        seen.iter().all(|r| r.method != "OPTIONS"),
        "a preflight reached the upstream"
    );
    assert!(seen.iter().any(|r| r.method == "PUT"));

    let dom = chromium_dom(&format!("{}/?api={api}", other.origin()));
    assert_eq!(
        result_of(&dom),
        "simple=blocked credentials=blocked preflighted=blocked",
        "{dom}"
    );
    // The disallowed preflighted PUT never reached the upstream.
    assert_eq!(
        s.echo
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        1
    );
}

/// A sandboxed document (as any site can make one: a sandboxed iframe, or
/// here the page's own `Content-Security-Policy: sandbox allow-scripts`)
/// has the origin `null`. Its fetches get what `"null"` in `allowed_origins`
/// grants: nothing where it is not listed; listed (credentials can never go
/// with it), reads without credentials only.
#[test]
fn a_null_origin_reads_only_where_listed_and_never_with_credentials_in_chromium() {
    let page = PageServer::start_with_headers(
        PAGE.to_string(),
        "content-security-policy: sandbox allow-scripts\r\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap();
    let example: Value = serde_json::from_str(&text).unwrap();
    // The example: initech does not list `null`.
    let s = Suite::start(&example.to_string(), &["trace_context", "cors"]);
    let api = format!("http://localhost:{}/t/initech/api/items", s.port);
    let dom = chromium_dom(&format!("{}/?api={api}", page.origin()));
    assert_eq!(
        result_of(&dom),
        "simple=blocked credentials=blocked preflighted=blocked",
        "{dom}"
    );
    drop(s);
    // Listed, without credentials (with them the profile is refused).
    let mut listed = example.clone();
    listed["tenants"]["initech"]["cors"]["allowed_origins"]
        .as_array_mut()
        .unwrap()
        .push(Value::String("null".into()));
    listed["tenants"]["initech"]["cors"]["allow_credentials"] = Value::Bool(false);
    let s = Suite::start(&listed.to_string(), &["trace_context", "cors"]);
    let api = format!("http://localhost:{}/t/initech/api/items", s.port);
    let dom = chromium_dom(&format!("{}/?api={api}", page.origin()));
    assert_eq!(
        result_of(&dom),
        "simple=200:exposed credentials=blocked preflighted=200:exposed",
        "{dom}"
    );
    assert!(s
        .echo
        .requests()
        .iter()
        .all(|r| r.header("origin") == Some("null")));
}
