//! trace-context through real Envoy with the example profile.

use meshware_e2e::suite::Suite;

const SPEC_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn profile() -> String {
    std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap()
}

fn start() -> Suite {
    Suite::start(&profile(), &["trace_context"])
}

/// A traceparent as the W3C spec draws it, checked independently of the filter.
fn assert_fresh_traceparent(tp: &str) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [2, 32, 16, 2],
        "{tp}"
    );
    assert_eq!(parts[0], "00");
    assert!(
        tp.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{tp}"
    );
    assert_ne!(parts[1], "0".repeat(32));
    assert_ne!(parts[2], "0".repeat(16));
}

fn assert_uuid_v4(id: &str) {
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]),
        "{id}"
    );
}

const ACME: (&str, &str) = ("host", "shop.acme.example");
const GLOBEX: (&str, &str) = ("host", "api.globex.example");

fn metric(s: &Suite, tenant: &str, outcome: &str) -> f64 {
    let sample = format!(
        "meshware_decisions{{filter=\"trace_context\",tenant=\"{tenant}\",outcome=\"{outcome}\"}}"
    );
    s.metric(&sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", s.envoy.prometheus()))
}

#[test]
fn invalid_traceparent_is_replaced_and_request_id_added() {
    let s = start();
    let r = s.get("/x", &[ACME, ("traceparent", "00-ZZ")]);
    assert_eq!(r.status, 200);
    let seen = s.echo.last().unwrap();
    let tp = seen.header("traceparent").unwrap();
    assert_fresh_traceparent(tp);
    assert!(seen.header("x-request-id").is_some());
    // The example profile echoes both for acme.
    assert_eq!(r.header("traceparent"), Some(tp));
    assert_eq!(r.header("x-request-id"), seen.header("x-request-id"));
    assert_eq!(metric(&s, "acme", "invalid_replaced"), 1.0);
    assert_eq!(metric(&s, "acme", "started"), 0.0);
}

#[test]
fn every_bad_traceparent_starts_a_new_trace() {
    let s = start();
    let bad = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x",
    ];
    for tp in bad {
        s.get(
            "/",
            &[
                ACME,
                ("traceparent", tp),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        );
        let seen = s.echo.last().unwrap();
        let out = seen.header("traceparent").unwrap();
        assert_fresh_traceparent(out);
        assert!(
            !out.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{tp} kept: {out}"
        );
        assert_eq!(seen.header("tracestate"), None, "tracestate kept for {tp}");
    }
    // Two traceparent headers: ambiguous, so a new single one.
    s.get(
        "/",
        &[ACME, ("traceparent", SPEC_TP), ("traceparent", SPEC_TP)],
    );
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.header_count("traceparent"), 1);
    assert_ne!(seen.header("traceparent"), Some(SPEC_TP));
    assert_eq!(
        metric(&s, "acme", "invalid_replaced"),
        (bad.len() + 1) as f64
    );
}

#[test]
fn non_utf8_header_bytes_do_not_break_the_filter() {
    let s = start();
    let r = s.send(
        "GET",
        "/",
        &[
            ("host", b"shop.acme.example"),
            ("traceparent", b"00-\xff\xfe-01"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_fresh_traceparent(s.echo.last().unwrap().header("traceparent").unwrap());
    // The VM is still alive for the next request.
    assert_eq!(s.get("/", &[ACME]).status, 200);
}

#[test]
fn valid_context_continues_with_clean_tracestate() {
    let s = start();
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let state = format!("dup=1,{},dup=2", many.join(","));
    s.get(
        "/",
        &[ACME, ("traceparent", SPEC_TP), ("tracestate", &state)],
    );
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.header("traceparent"), Some(SPEC_TP));
    let out = seen.header("tracestate").unwrap();
    let members: Vec<&str> = out.split(',').collect();
    assert_eq!(members.len(), 32, "{out}");
    assert_eq!(members[0], "dup=1");
    assert!(!out.contains("dup=2") && !out.contains("k31="), "{out}");
    // Two tracestate headers combine in order.
    s.get(
        "/",
        &[
            ACME,
            ("traceparent", SPEC_TP),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ],
    );
    assert_eq!(s.echo.last().unwrap().header("tracestate"), Some("a=1,b=2"));
    assert_eq!(metric(&s, "acme", "continued"), 2.0);
}

#[test]
fn sampled_flag_from_untrusted_callers_follows_the_tenant_rate() {
    let s = start();
    // globex: rate 0, caller's flag not trusted -> not sampled, and the
    // flag changes with a new parent-id (W3C "Update sampled").
    s.get("/", &[GLOBEX, ("traceparent", SPEC_TP)]);
    let tp = s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(tp.ends_with("-00"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "a new parent-id: {tp}");
    assert_fresh_traceparent(&tp);
    // acme trusts the caller's flag.
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    s.get("/", &[ACME, ("traceparent", unsampled)]);
    assert_eq!(
        s.echo.last().unwrap().header("traceparent"),
        Some(unsampled)
    );
    // New traces: acme samples everything, globex nothing; both random
    // (Level 2's random flag, 0x02: the filter made the ids).
    s.get("/", &[ACME]);
    assert!(s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .ends_with("-03"));
    s.get("/", &[GLOBEX]);
    assert!(s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .ends_with("-02"));
}

#[test]
fn b3_and_jaeger_are_translated_per_tenant() {
    let s = start();
    s.get(
        "/",
        &[
            ACME,
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
        ],
    );
    assert_eq!(
        s.echo.last().unwrap().header("traceparent"),
        Some("00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01")
    );
    s.get(
        "/",
        &[
            ACME,
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!(
        s.echo.last().unwrap().header("traceparent"),
        Some("00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01")
    );
    s.get(
        "/",
        &[
            ACME,
            ("uber-trace-id", "5af7183fb1d4cf5f:6d1a3e6c5ee5ba3b:0:1"),
        ],
    );
    assert_eq!(
        s.echo.last().unwrap().header("traceparent"),
        Some("00-00000000000000005af7183fb1d4cf5f-6d1a3e6c5ee5ba3b-01")
    );
    assert_eq!(metric(&s, "acme", "translated"), 3.0);
    // globex turned Jaeger translation off.
    s.get(
        "/",
        &[
            GLOBEX,
            ("uber-trace-id", "5af7183fb1d4cf5f:6d1a3e6c5ee5ba3b:0:1"),
        ],
    );
    assert!(!s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .contains("5af7183fb1d4cf5f"));
    assert_eq!(metric(&s, "globex", "started"), 1.0);
    assert_eq!(metric(&s, "globex", "translated"), 0.0);
}

#[test]
fn request_id_kept_when_valid_replaced_when_not() {
    let s = start();
    s.get("/", &[GLOBEX, ("x-request-id", "order-42.retry:1")]);
    assert_eq!(
        s.echo.last().unwrap().header("x-request-id"),
        Some("order-42.retry:1")
    );
    let r = s.get(
        "/",
        &[GLOBEX, ("x-request-id", "<script>alert(1)</script>")],
    );
    let id = s
        .echo
        .last()
        .unwrap()
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert_uuid_v4(&id);
    // globex echoes the request id but not the traceparent.
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_eq!(r.header("traceparent"), None);
}

#[test]
fn tenant_baggage_replaces_a_spoofed_member_and_tenant_header_is_stripped() {
    let s = start();
    s.get(
        "/",
        &[
            ACME,
            ("baggage", "user=alice,tenant=evil"),
            ("x-tenant-id", "globex"),
        ],
    );
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.header("baggage"), Some("user=alice,tenant=acme"));
    // The profile does not trust x-tenant-id: it never reaches the upstream
    // and does not pick the tenant.
    assert_eq!(seen.header("x-tenant-id"), None);
    s.get("/", &[("x-tenant-id", "globex")]);
    assert_eq!(s.echo.last().unwrap().header("x-tenant-id"), None);
    assert_eq!(metric(&s, "public", "started"), 1.0);
    assert_eq!(metric(&s, "globex", "started"), 0.0);
}

#[test]
fn metrics_have_a_bounded_label_set() {
    let s = start();
    s.get("/", &[("host", "random-1.example")]);
    s.get("/", &[("host", "random-2.example")]);
    let text = s.envoy.prometheus();
    let tenants: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("meshware_decisions{"))
        .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next())
        .collect();
    // The declared tenants plus `other`, whatever hosts arrive.
    let profile: serde_json::Value = serde_json::from_str(&profile()).unwrap();
    let mut expected: Vec<&str> = profile["tenants"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .chain(["other"])
        .collect();
    expected.sort();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(metric(&s, "public", "started"), 2.0);
}

#[test]
fn oversized_and_malformed_tracestate_follow_the_spec_rules() {
    let s = start();
    // Over 512 chars: the member over 128 chars goes first, the rest stays.
    let big = format!("big={}", "x".repeat(200));
    let small: Vec<String> = (0..20)
        .map(|i| format!("m{i}={}", "y".repeat(20)))
        .collect();
    let state = format!("{},{big},{}", small[..10].join(","), small[10..].join(","));
    s.get(
        "/",
        &[ACME, ("traceparent", SPEC_TP), ("tracestate", &state)],
    );
    let out = s
        .echo
        .last()
        .unwrap()
        .header("tracestate")
        .unwrap()
        .to_string();
    assert_eq!(out, small.join(","));
    // A malformed member drops the whole header.
    s.get(
        "/",
        &[
            ACME,
            ("traceparent", SPEC_TP),
            ("tracestate", "good=1,Bad Key=2"),
        ],
    );
    assert_eq!(s.echo.last().unwrap().header("tracestate"), None);
}

#[test]
fn invalid_b3_and_jaeger_headers_start_a_new_trace() {
    let s = start();
    for (name, value) in [
        ("b3", "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("uber-trace-id", "0:6d1a3e6c5ee5ba3b:0:1"),
        ("uber-trace-id", "not-hex:1:0:1"),
    ] {
        s.get("/", &[ACME, (name, value)]);
        assert_fresh_traceparent(s.echo.last().unwrap().header("traceparent").unwrap());
    }
    assert_eq!(metric(&s, "acme", "started"), 4.0);
    assert_eq!(metric(&s, "acme", "translated"), 0.0);
}

#[test]
fn a_disabled_tenant_passes_through_untouched() {
    let profile = r#"{
      "tenancy": {"default": "quiet"},
      "tenants": {"quiet": {"trace_context": {"enabled": false}}}
    }"#;
    let s = Suite::start(profile, &["trace_context"]);
    s.get(
        "/",
        &[("traceparent", "00-ZZ"), ("x-request-id", "keep me")],
    );
    let seen = s.echo.last().unwrap();
    assert_eq!(seen.header("traceparent"), Some("00-ZZ"));
    assert_eq!(seen.header("x-request-id"), Some("keep me"));
}

#[test]
fn decisions_are_logged_with_filter_tenant_and_request_id() {
    let s = start();
    s.get(
        "/",
        &[
            ACME,
            ("x-request-id", "log-check-1"),
            ("traceparent", SPEC_TP),
        ],
    );
    let line = "[trace_context tenant=acme rid=log-check-1] outcome=continued";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !s.envoy.log().contains(line) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(s.envoy.log().contains(line), "no {line:?} in the envoy log");
}

/// The W3C spec's rules a vendor MUST follow when it rewrites a traceparent,
/// and the B3 and Jaeger headers of callers a tenant does not trust.
#[test]
fn rewritten_contexts_follow_the_spec_and_untrusted_callers_cannot_force_sampling() {
    let s = start();
    // Reserved flag bits are zeroed (acme trusts the sampled bit).
    s.get(
        "/",
        &[
            ACME,
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fd",
            ),
        ],
    );
    assert_eq!(
        s.echo.last().unwrap().header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    // globex (rate 0, untrusting): the caller's B3 and Jaeger headers carry
    // the tenant's decision and the forwarded ids, not the caller's "1".
    s.get(
        "/",
        &[
            GLOBEX,
            ("traceparent", SPEC_TP),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("x-b3-sampled", "1"),
            (
                "uber-trace-id",
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            ),
        ],
    );
    let seen = s.echo.last().unwrap();
    let tp = seen.header("traceparent").unwrap().to_string();
    let span = &tp[36..52];
    assert!(tp.ends_with("-00"), "{tp}");
    assert_eq!(
        seen.header("b3"),
        Some(format!("4bf92f3577b34da6a3ce929d0e0e4736-{span}-0").as_str())
    );
    assert_eq!(seen.header("x-b3-sampled"), Some("0"));
    assert_eq!(
        seen.header("uber-trace-id"),
        Some(format!("4bf92f3577b34da6a3ce929d0e0e4736:{span}:0:00").as_str())
    );
    // A Level 2 tracestate key (digit first, `@` inside) keeps every entry.
    s.get(
        "/",
        &[
            ACME,
            ("traceparent", SPEC_TP),
            ("tracestate", "1vendor@x=a,rojo=00f067aa0ba902b7"),
        ],
    );
    assert_eq!(
        s.echo.last().unwrap().header("tracestate"),
        Some("1vendor@x=a,rojo=00f067aa0ba902b7")
    );
}

#[test]
fn b3_sampling_only_headers_decide_for_a_trusting_tenant() {
    // acme trusts callers and samples everything: `b3: 0` (B3's deny) wins.
    let s = start();
    s.get("/", &[ACME, ("b3", "0")]);
    let tp = s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert_fresh_traceparent(&tp);
    assert!(tp.ends_with("-02"), "not sampled, random ids: {tp}");
    s.get("/", &[ACME, ("x-b3-sampled", "0")]);
    let tp = s
        .echo
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(tp.ends_with("-02"), "{tp}");
}

#[test]
fn traceresponse_is_offered_when_asked() {
    let mut p: serde_json::Value = serde_json::from_str(&profile()).unwrap();
    p["tenants"]["acme"]["trace_context"]["traceresponse"] = serde_json::json!(true);
    let s = Suite::start(&p.to_string(), &["trace_context"]);
    let r = s.get("/", &[ACME, ("traceparent", SPEC_TP)]);
    assert_eq!(r.header("traceresponse"), Some(SPEC_TP));
    let r = s.get("/", &[GLOBEX, ("traceparent", SPEC_TP)]);
    assert_eq!(r.header("traceresponse"), None);
}
