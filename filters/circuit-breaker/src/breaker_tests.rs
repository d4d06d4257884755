//! The circuit-breaker core against an in-memory store with Envoy's CAS rules.

use crate::breaker::*;
use crate::circuit::in_flight;
use crate::config::tests::parse_json;
use crate::config::BreakerSettings;
use meshware_common::path::RequestPath;
use meshware_common::store::MemoryStore;
use meshware_common::{Decision, Headers, SharedStore};
use serde_json::json;

fn settings() -> &'static BreakerSettings {
    let (s, e) = parse_json(json!({
        "failure_ratio": 0.5, "min_requests": 4, "window_s": 10, "open_for_ms": 1000,
        "half_open_probes": 2, "max_in_flight": 2,
        "fallback_body": "{\"cached\":true}", "fallback_content_type": "application/json",
        "routes": [{"prefix": "/pay", "timeout_ms": 800, "max_retries": 1, "retry_on": "5xx"}]
    }));
    assert_eq!(e, "");
    Box::leak(Box::new(s))
}

fn env() -> MemoryStore {
    let st = MemoryStore::default();
    *st.now.borrow_mut() = 1_700_000_000_000;
    st.properties
        .borrow_mut()
        .insert("xds.cluster_name".into(), b"payments".to_vec());
    st
}

fn request(
    s: &'static BreakerSettings,
    st: &MemoryStore,
    tenant: &str,
    path: &str,
) -> (Decision<'static>, Admitted) {
    let h = Headers::new(vec![(":path".into(), path.into())]);
    let mut a = Admitted::default();
    let read = RequestPath::read_all(path).unwrap();
    let d = on_request(s, tenant, &h, &read, None, st, &mut a);
    (d, a)
}

fn complete(
    s: &BreakerSettings,
    st: &MemoryStore,
    a: &mut Admitted,
    status: Option<u64>,
) -> meshware_common::Outcomes {
    match status {
        Some(code) => st
            .properties
            .borrow_mut()
            .insert("response.code".into(), code.to_le_bytes().to_vec()),
        None => st.properties.borrow_mut().remove("response.code"),
    };
    on_complete(s, a, st)
}

/// Runs one full request with the given upstream status; returns the decision.
fn run(
    s: &'static BreakerSettings,
    st: &MemoryStore,
    tenant: &str,
    status: Option<u64>,
) -> Decision<'static> {
    let (d, mut a) = request(s, st, tenant, "/x");
    if d.reply.is_none() {
        complete(s, st, &mut a, status);
    }
    d
}

#[test]
fn opens_rejects_half_opens_and_closes() {
    let s = settings();
    let st = env();
    run(s, &st, "a", Some(500));
    run(s, &st, "a", Some(200));
    // 1 of 2 failed, but min_requests is 4: still closed.
    assert!(run(s, &st, "a", Some(200)).reply.is_none());
    assert!(run(s, &st, "a", Some(200)).reply.is_none());
    assert!(run(s, &st, "a", Some(503)).reply.is_none());
    // 2 of 5 failed: closed. A reset makes it 3 of 6: open.
    let (d, mut a) = request(s, &st, "a", "/x");
    assert!(d.reply.is_none());
    assert!(
        complete(s, &st, &mut a, None).contains(OPENED),
        "a reset counts as failure"
    );
    let d = run(s, &st, "a", Some(200));
    let reply = d.reply.expect("open circuit rejects");
    assert_eq!(reply.status, 503);
    assert_eq!(&*reply.body, b"{\"cached\":true}");
    assert!(reply
        .headers
        .contains(&("x-circuit-state", "open".to_string())));
    assert!(reply.headers.contains(&("retry-after", "1".to_string())));
    assert!(d.outcomes.contains(REJECTED));
    // Another tenant's circuit is untouched.
    assert!(run(s, &st, "b", Some(200)).reply.is_none());
    // After open_for: two probes, a third request waits.
    st.advance_ms(1000);
    let (p1, mut a1) = request(s, &st, "a", "/x");
    assert!(p1.reply.is_none() && p1.outcomes.contains(HALF_OPENED));
    let (p2, mut a2) = request(s, &st, "a", "/x");
    assert!(p2.reply.is_none());
    let (p3, _) = request(s, &st, "a", "/x");
    assert!(p3
        .reply
        .unwrap()
        .headers
        .contains(&("x-circuit-state", "half-open".to_string())));
    assert!(complete(s, &st, &mut a1, Some(200)).contains(PROBE_SUCCEEDED));
    assert!(complete(s, &st, &mut a2, Some(204)).contains(CLOSED));
    assert!(run(s, &st, "a", Some(200)).reply.is_none());
}

#[test]
fn a_failed_probe_reopens() {
    let s = settings();
    let st = env();
    for _ in 0..4 {
        run(s, &st, "a", Some(502));
    }
    assert!(run(s, &st, "a", Some(200)).reply.is_some());
    st.advance_ms(1500);
    let (d, mut a) = request(s, &st, "a", "/x");
    assert!(d.reply.is_none());
    let o = complete(s, &st, &mut a, Some(504));
    assert!(o.contains(PROBE_FAILED) && o.contains(OPENED));
    assert!(run(s, &st, "a", Some(200)).reply.is_some());
}

#[test]
fn the_bulkhead_never_leaks() {
    let s = settings();
    let st = env();
    let key = "mw.cb.a.payments";
    let (_, mut a1) = request(s, &st, "a", "/x");
    let (_, mut a2) = request(s, &st, "a", "/x");
    assert_eq!(in_flight(&st, key), 2);
    let (d, mut a3) = request(s, &st, "a", "/x");
    assert!(d.outcomes.contains(BULKHEAD_REJECTED));
    assert_eq!(d.reply.as_ref().unwrap().status, 503);
    // A rejected stream holds nothing; completing it twice changes nothing.
    on_complete(s, &mut a3, &st);
    complete(s, &st, &mut a1, None);
    complete(s, &st, &mut a1, None);
    assert_eq!(in_flight(&st, key), 1);
    complete(s, &st, &mut a2, Some(200));
    assert_eq!(in_flight(&st, key), 0);
    // A client abort releases too, and is not an upstream failure.
    let (_, mut a5) = request(s, &st, "a", "/x");
    st.properties
        .borrow_mut()
        .insert("response.flags".into(), 0x4000u64.to_le_bytes().to_vec());
    let o = complete(s, &st, &mut a5, None);
    assert!(o.contains(CLIENT_ABORTED) && !o.contains(FAILURE_RECORDED));
    // With a response, its status decides, whatever the flags say (another
    // tenant: its own circuit).
    let (_, mut a6) = request(s, &st, "other", "/x");
    let o = complete(s, &st, &mut a6, Some(503));
    assert!(o.contains(FAILURE_RECORDED) && !o.contains(CLIENT_ABORTED));
    st.properties.borrow_mut().remove("response.flags");
    assert_eq!(in_flight(&st, key), 0);
    // Contention on release is retried long enough.
    let (_, mut a4) = request(s, &st, "a", "/x");
    *st.forced_conflicts.borrow_mut() = 20;
    complete(s, &st, &mut a4, Some(200));
    assert_eq!(in_flight(&st, key), 0);
    // So is contention on acquire: giving up would admit without a slot
    // (past the bulkhead's max) exactly when other workers are busy.
    let base = in_flight(&st, key);
    *st.forced_conflicts.borrow_mut() = 0;
    let (_, mut first) = request(s, &st, "a", "/x");
    *st.forced_conflicts.borrow_mut() = 20;
    let (_, mut contended) = request(s, &st, "a", "/x");
    assert_eq!(
        in_flight(&st, key),
        base + 2,
        "the contended request holds a slot"
    );
    complete(s, &st, &mut first, Some(200));
    complete(s, &st, &mut contended, Some(200));
    assert_eq!(in_flight(&st, key), base);
}

#[test]
fn budgets_are_set_and_client_budgets_stripped() {
    let s = settings();
    let st = env();
    let h = Headers::new(vec![
        (":path".into(), "/pay/now".into()),
        ("x-envoy-upstream-rq-timeout-ms".into(), "60000".into()),
        ("x-envoy-max-retries".into(), "10".into()),
    ]);
    let read = RequestPath::read("/pay/now").unwrap();
    let d = on_request(s, "a", &h, &read, None, &st, &mut Admitted::default());
    assert!(d.request.removes("x-envoy-upstream-rq-timeout-ms"));
    assert_eq!(
        d.request.value_of("x-envoy-upstream-rq-timeout-ms"),
        Some("800")
    );
    assert_eq!(d.request.value_of("x-envoy-max-retries"), Some("1"));
    assert_eq!(d.request.value_of("x-envoy-retry-on"), Some("5xx"));
    assert!(d.outcomes.contains(CLIENT_BUDGET_STRIPPED));
}

#[test]
fn a_bulkhead_slot_taken_by_another_worker_meanwhile_is_not_lost() {
    use crate::circuit::{admit, Admission, Circuit};
    let s = settings();
    let st = MemoryStore::default();
    // Another worker takes the first slot just after this one read the
    // circuit as absent: both slots must be counted.
    let mut taken = Circuit::closed(s.window_s);
    taken.in_flight = 1;
    *st.created_after_read.borrow_mut() = Some(("k".into(), taken.encode()));
    let first = admit(&st, "k", s, 0, Some(2));
    assert_eq!((first.admission, first.slot), (Admission::Allowed, true));
    assert_eq!(in_flight(&st, "k"), 2);
    let full = admit(&st, "k", s, 0, Some(2));
    assert_eq!(
        (full.admission, full.slot),
        (Admission::BulkheadFull, false)
    );
}

#[test]
fn a_full_bulkhead_takes_no_probe_and_a_window_change_keeps_the_slots() {
    use crate::circuit::{admit, Admission, Circuit};
    let s = settings();
    let st = env();
    for _ in 0..4 {
        run(s, &st, "a", Some(502));
    }
    let key = "mw.cb.a.payments";
    let (d, _) = request(s, &st, "a", "/x");
    assert!(d.outcomes.contains(REJECTED), "open");
    // Open long enough, but every slot taken elsewhere: no probe is used up.
    st.advance_ms(1500);
    let (bytes, cas) = st.get(key).unwrap();
    let mut c = Circuit::decode(&bytes, s.window_s).unwrap();
    c.in_flight = 2;
    st.set(key, &c.encode(), Some(cas)).unwrap();
    let (d, _) = request(s, &st, "a", "/x");
    assert!(d.outcomes.contains(BULKHEAD_REJECTED) && !d.outcomes.contains(HALF_OPENED));
    // Slots free again: the circuit is still open, so this one half-opens it.
    let (bytes, cas) = st.get(key).unwrap();
    let mut c = Circuit::decode(&bytes, s.window_s).unwrap();
    c.in_flight = 0;
    st.set(key, &c.encode(), Some(cas)).unwrap();
    let (d, _) = request(s, &st, "a", "/x");
    assert!(d.outcomes.contains(HALF_OPENED), "{:?}", d.outcomes);
    // Another window size (a config change) keeps the in-flight count: the
    // probe's slot.
    assert_eq!(in_flight(&st, key), 1);
    let (narrow, e) = parse_json(json!({"window_s": 3, "max_in_flight": 1}));
    assert_eq!(e, "");
    let full = admit(&st, key, &narrow, 0, Some(1));
    assert_eq!(full.admission, Admission::BulkheadFull);
}

fn grpc_request(
    s: &'static BreakerSettings,
    st: &MemoryStore,
    path: &str,
    timeout: Option<&str>,
) -> (Decision<'static>, Admitted) {
    let mut list = vec![
        (":path".to_string(), path.to_string()),
        ("content-type".to_string(), "application/grpc".to_string()),
    ];
    if let Some(t) = timeout {
        list.push(("grpc-timeout".to_string(), t.to_string()));
    }
    let h = Headers::new(list);
    let mut a = Admitted::default();
    let d = on_request(
        s,
        "g",
        &h,
        &RequestPath::read_all(path).unwrap(),
        None,
        st,
        &mut a,
    );
    (d, a)
}

#[test]
fn grpc_failures_open_the_circuit_although_http_says_200() {
    let s = settings();
    let st = env();
    st.properties
        .borrow_mut()
        .insert("response.grpc_status".into(), 14u64.to_le_bytes().to_vec());
    let mut opened = false;
    for _ in 0..4 {
        let (d, mut a) = grpc_request(s, &st, "/svc/M", None);
        assert!(d.reply.is_none());
        opened |= complete(s, &st, &mut a, Some(200)).contains(OPENED);
    }
    assert!(opened, "four UNAVAILABLE answers in a row open the circuit");
    let (d, _) = grpc_request(s, &st, "/svc/M", None);
    assert!(d.reply.is_some());

    // A status outside the failure list (NOT_FOUND: the caller's mistake)
    // is a success for the circuit; the same status on a plain HTTP
    // request is never read.
    let st = env();
    st.properties
        .borrow_mut()
        .insert("response.grpc_status".into(), 5u64.to_le_bytes().to_vec());
    for _ in 0..6 {
        let (_, mut a) = grpc_request(s, &st, "/svc/M", None);
        assert!(!complete(s, &st, &mut a, Some(200)).contains(FAILURE_RECORDED));
    }
    st.properties
        .borrow_mut()
        .insert("response.grpc_status".into(), 14u64.to_le_bytes().to_vec());
    let (_, mut a) = request(s, &st, "g", "/x");
    assert!(!complete(s, &st, &mut a, Some(200)).contains(FAILURE_RECORDED));
}

#[test]
fn a_grpc_deadline_longer_than_the_budget_is_lowered_to_it() {
    let s = settings(); // /pay: timeout_ms 800
    for (client, lowered) in [
        (None, true),
        (Some("5S"), true),
        (Some("bogus"), true),
        (Some("500m"), false),
        (Some("800000u"), false),
    ] {
        let (d, _) = grpc_request(s, &env(), "/pay/x", client);
        assert_eq!(
            d.request.value_of("grpc-timeout"),
            lowered.then_some("800m"),
            "{client:?}"
        );
        assert_eq!(d.outcomes.contains(GRPC_DEADLINE_LOWERED), lowered);
    }
    // Outside a route with a budget the client's deadline stands.
    let (d, _) = grpc_request(s, &env(), "/other", Some("5S"));
    assert_eq!(d.request.value_of("grpc-timeout"), None);
}

#[test]
fn grpc_retry_conditions_go_to_their_own_header() {
    let (s, e) = parse_json(json!({
        "routes": [{"prefix": "/a", "retry_on": "5xx,unavailable, deadline-exceeded", "max_retries": 2}],
        "grpc_failure_codes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    }));
    assert_eq!(e, "");
    let s: &'static BreakerSettings = Box::leak(Box::new(s));
    assert_eq!(s.grpc_failure_codes, 1 << 14 | 1 << 8);
    let (d, _) = grpc_request(s, &env(), "/a/b", None);
    assert_eq!(d.request.value_of("x-envoy-retry-on"), Some("5xx"));
    assert_eq!(
        d.request.value_of("x-envoy-retry-grpc-on"),
        Some("unavailable,deadline-exceeded")
    );
    let (_, e) = parse_json(json!({"grpc_failure_codes": ["OK", "NOPE"],
                                    "routes": [{"prefix": "/a", "retry_on": "grpc-oops"}]}));
    assert!(
        e.contains("grpc_failure_codes[0]: OK is never a failure"),
        "{e}"
    );
    assert!(e.contains("\"NOPE\": not a gRPC status name"), "{e}");
    assert!(e.contains("unknown retry condition \"grpc-oops\""), "{e}");
}

#[test]
fn slowness_is_the_time_to_the_response_not_the_length_of_the_stream() {
    let (s, e) = parse_json(json!({"slow_ms": 100, "min_requests": 1, "failure_ratio": 1.0}));
    assert_eq!(e, "");
    let s: &'static BreakerSettings = Box::leak(Box::new(s));
    let st = env();
    let start = *st.now.borrow();
    // A stream answered at once that lasts 5 s: healthy.
    let (_, mut a) = request(s, &st, "t", "/stream");
    *st.now.borrow_mut() = start + 10;
    on_response_start(s, &mut a, &st);
    *st.now.borrow_mut() = start + 5_000;
    assert!(!complete(s, &st, &mut a, Some(200)).contains(FAILURE_RECORDED));
    // Headers after 300 ms: slow, however short the rest.
    let (_, mut a) = request(s, &st, "t", "/slow");
    *st.now.borrow_mut() = start + 5_300;
    on_response_start(s, &mut a, &st);
    assert!(complete(s, &st, &mut a, Some(200)).contains(FAILURE_RECORDED));
}

#[test]
fn under_canary_each_version_has_its_own_circuit() {
    // Envoy still reports the cluster matched before canary wrote the
    // routing header: the version it wrote tells the upstreams apart.
    let s = settings();
    let st = env();
    let request_as = |version: Option<&str>| {
        let mut list = vec![(":path".to_string(), "/x".to_string())];
        if let Some(v) = version {
            list.push(("x-route-version".to_string(), v.to_string()));
        }
        let h = Headers::new(list);
        let mut a = Admitted::default();
        let read = RequestPath::read_all("/x").unwrap();
        let d = on_request(s, "t", &h, &read, Some("x-route-version"), &st, &mut a);
        (d, a)
    };
    // v2 fails until its circuit opens.
    for _ in 0..4 {
        let (d, mut a) = request_as(Some("v2"));
        if d.reply.is_none() {
            complete(s, &st, &mut a, Some(503));
        }
    }
    assert!(
        request_as(Some("v2")).0.reply.is_some(),
        "v2's circuit is open"
    );
    // v1 (and a tenant without canary's header) is served.
    let (d, mut a) = request_as(Some("v1"));
    assert!(d.reply.is_none(), "v1 is healthy");
    complete(s, &st, &mut a, Some(200));
    assert!(request_as(None).0.reply.is_none());
}

#[test]
fn a_client_resetting_its_stream_is_no_evidence_against_the_upstream() {
    let (s, e) = parse_json(json!({"min_requests": 2, "failure_ratio": 0.5}));
    assert_eq!(e, "");
    let s: &'static BreakerSettings = Box::leak(Box::new(s));
    let st = env();
    for flags in [DOWNSTREAM_REMOTE_RESET, DOWNSTREAM_CONNECTION_TERMINATION] {
        st.properties
            .borrow_mut()
            .insert("response.flags".into(), flags.to_le_bytes().to_vec());
        for _ in 0..5 {
            let (d, mut a) = request(s, &st, "t", "/x");
            assert!(d.reply.is_none(), "never opened by the client's resets");
            let o = complete(s, &st, &mut a, None);
            assert!(o.contains(CLIENT_ABORTED) && !o.contains(FAILURE_RECORDED));
        }
    }
    // An upstream reset (no downstream flag) is a failure.
    st.properties
        .borrow_mut()
        .insert("response.flags".into(), 0x10u64.to_le_bytes().to_vec());
    let (_, mut a) = request(s, &st, "t", "/x");
    assert!(complete(s, &st, &mut a, None).contains(FAILURE_RECORDED));
}

#[test]
fn the_status_lists_a_tenants_open_circuits_until_they_close() {
    use crate::circuit::{open_circuits, remember_opened, INDEX_LEN};
    let s = settings();
    let st = env();
    assert_eq!(open_circuits(&st, "a", s, 0), None, "nothing ever opened");
    for _ in 0..4 {
        run(s, &st, "a", Some(500));
    }
    let now = *st.now.borrow();
    st.advance_ms(250);
    let status: serde_json::Value =
        serde_json::from_str(&open_circuits(&st, "a", s, now + 250).unwrap()).unwrap();
    assert_eq!(
        status,
        json!({"open_circuits": [
            {"circuit": "payments", "state": "open", "open_for_ms": 250, "in_flight": 0}
        ]})
    );
    assert_eq!(open_circuits(&st, "b", s, now), None, "per tenant");
    // Opened again: remembered once.
    remember_opened(&st, "mw.cb.a.payments");
    let (index, _) = st.get("mw.cb.a.~opened").unwrap();
    assert_eq!(index, b"mw.cb.a.payments");
    // Half-open after open_for_ms, then closed by two good probes.
    st.advance_ms(1000);
    run(s, &st, "a", Some(200));
    run(s, &st, "a", Some(200));
    assert_eq!(
        open_circuits(&st, "a", s, now + 2000).as_deref(),
        Some("{\"open_circuits\":[]}")
    );
    // The index is bounded: the oldest is dropped.
    for i in 0..INDEX_LEN + 5 {
        remember_opened(&st, &format!("mw.cb.a.c{i}"));
    }
    let (index, _) = st.get("mw.cb.a.~opened").unwrap();
    let index = String::from_utf8(index).unwrap();
    assert_eq!(index.lines().count(), INDEX_LEN);
    assert_eq!(index.lines().next(), Some("mw.cb.a.c5"));
}
