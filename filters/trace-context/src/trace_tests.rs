use super::*;
use crate::config::SAMPLE_SPACE;
use meshware_common::HeaderOp;

// Vectors below are the W3C Trace Context specification's own examples
// (traceparent/tracestate sections) and its test-suite cases, the B3 spec's
// examples (openzipkin/b3-propagation README) and Jaeger's documented format.
const SPEC_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SPEC_TP_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn settings() -> TraceSettings {
    TraceSettings {
        enabled: true,
        sample_rate: 1.0,
        sample_threshold: SAMPLE_SPACE,
        trust_incoming_sampling: true,
        translate_b3: true,
        translate_jaeger: true,
        generate_request_id: true,
        baggage_tenant_key: None,
        echo_request_id: false,
        echo_traceparent: false,
        traceresponse: false,
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn run(s: &TraceSettings, h: &[(&str, &str)]) -> (Decision<'static>, Echo) {
    // Leak is fine in tests: decisions borrow header names from settings.
    let s: &'static TraceSettings = Box::leak(Box::new(s.clone()));
    let mut rng = Rng::from_seed(42);
    let mut echo = Echo::default();
    let tenant = Tenant {
        slot: 0,
        name: "acme",
        source: meshware_common::tenancy::Source::Host,
    };
    let d = on_request(s, tenant, &headers(h), &mut rng, &mut echo);
    (d, echo)
}

fn outcome(d: &Decision<'_>) -> &'static str {
    OUTCOMES[d.outcomes.iter().next().unwrap()]
}

#[test]
fn spec_example_parses() {
    let tp = parse_traceparent(SPEC_TP).unwrap();
    assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(tp.parent_id, 0x00f067aa0ba902b7);
    assert!(tp.sampled());
    assert_eq!(tp.render(), SPEC_TP);
    assert!(!parse_traceparent(SPEC_TP_UNSAMPLED).unwrap().sampled());
}

#[test]
fn invalid_traceparents_are_rejected() {
    for bad in [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", // uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // v00 too long
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  // too short
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // misplaced dash
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", // future: needs '-'
        "00-ZZf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{fffd}",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad:?}");
    }
}

#[test]
fn future_versions_parse_their_known_prefix() {
    let tp = parse_traceparent(
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
    )
    .unwrap();
    assert_eq!(tp.version, 0xcc);
    let exact =
        parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
    assert_eq!(exact.flags, 9);
}

#[test]
fn valid_traceparent_continues_unchanged() {
    let (d, _) = run(
        &settings(),
        &[(TRACEPARENT, SPEC_TP), (REQUEST_ID, "abc-1")],
    );
    assert_eq!(outcome(&d), "continued");
    assert!(d.request.ops.is_empty(), "{:?}", d.request);
    // The W3C spec example's trace id, for the access log.
    assert_eq!(
        d.log_fields,
        vec![("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".to_string())]
    );
}

#[test]
fn future_version_is_rewritten_as_version_00() {
    let (d, _) = run(
        &settings(),
        &[(
            TRACEPARENT,
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-xyz",
        )],
    );
    assert_eq!(outcome(&d), "continued");
    assert_eq!(d.request.value_of(TRACEPARENT), Some(SPEC_TP));
}

#[test]
fn untrusted_sampled_flag_is_decided_by_the_tenant_rate() {
    let mut s = settings();
    s.trust_incoming_sampling = false;
    s.sample_rate = 0.0;
    s.sample_threshold = 0;
    let (d, _) = run(&s, &[(TRACEPARENT, SPEC_TP)]);
    // "Update sampled": the flag changes with a new parent-id.
    let out = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
    let spec = parse_traceparent(SPEC_TP_UNSAMPLED).unwrap();
    assert_eq!((out.trace_id, out.flags), (spec.trace_id, 0));
    assert_ne!(out.parent_id, spec.parent_id);
    // Trusted: the caller's flag stands.
    s.trust_incoming_sampling = true;
    let (d, _) = run(&s, &[(TRACEPARENT, SPEC_TP)]);
    assert_eq!(d.request.value_of(TRACEPARENT), None);
}

#[test]
fn invalid_or_duplicate_traceparent_starts_a_new_trace() {
    for h in [
        vec![(TRACEPARENT, "00-ZZ")],
        vec![(TRACEPARENT, SPEC_TP), (TRACEPARENT, SPEC_TP)],
        // An invalid traceparent is not rescued by B3: the caller's context is ambiguous.
        vec![
            (TRACEPARENT, "garbage"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ],
    ] {
        let (d, _) = run(&settings(), &h);
        assert_eq!(outcome(&d), "invalid_replaced");
        let tp = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
        assert_ne!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(tp.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    }
}

#[test]
fn missing_traceparent_starts_a_trace_with_the_tenant_rate() {
    let (d, _) = run(&settings(), &[]);
    assert_eq!(outcome(&d), "started");
    let tp = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
    assert!(tp.sampled());
    let mut s = settings();
    s.sample_threshold = 0;
    let (d, _) = run(&s, &[]);
    assert!(!parse_traceparent(d.request.value_of(TRACEPARENT).unwrap())
        .unwrap()
        .sampled());
}

#[test]
fn sample_rate_is_honoured_statistically() {
    let mut s = settings();
    s.sample_rate = 0.25;
    s.sample_threshold = (0.25 * SAMPLE_SPACE as f64) as u64;
    let mut rng = Rng::from_seed(9);
    let n = 20_000;
    let sampled = (0..n)
        .filter(|_| sampled_by_rate(&s, nonzero_u128(&mut rng)))
        .count();
    let share = sampled as f64 / n as f64;
    assert!((0.23..0.27).contains(&share), "{share}");
}

#[test]
fn tracestate_is_kept_only_with_a_valid_traceparent() {
    let (d, _) = run(
        &settings(),
        &[
            (TRACEPARENT, SPEC_TP),
            (TRACESTATE, "congo=t61rcWkgMzE"),
            (REQUEST_ID, "r"),
        ],
    );
    assert!(d.request.ops.is_empty(), "{:?}", d.request);
    let (d, _) = run(
        &settings(),
        &[(TRACEPARENT, "bad"), (TRACESTATE, "congo=t61rcWkgMzE")],
    );
    assert!(d.request.removes(TRACESTATE));
    let (d, _) = run(&settings(), &[(TRACESTATE, "congo=t61rcWkgMzE")]);
    assert!(d.request.removes(TRACESTATE));
}

#[test]
fn tracestate_members_are_combined_deduplicated_and_limited() {
    // Spec example: two headers combine in order.
    assert_eq!(
        clean_tracestate(["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"].into_iter()).as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );
    // Optional whitespace and empty members are allowed.
    assert_eq!(
        clean_tracestate([" a=1 ,, b@c=2\t"].into_iter()).as_deref(),
        Some("a=1,b@c=2")
    );
    // Later duplicates are dropped.
    assert_eq!(
        clean_tracestate(["a=1,b=2,a=3"].into_iter()).as_deref(),
        Some("a=1,b=2")
    );
    // 33 members: the right-most goes.
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let joined = many.join(",");
    let out = clean_tracestate([joined.as_str()].into_iter()).unwrap();
    assert_eq!(out.split(',').count(), 32);
    assert!(out.starts_with("k0=v,") && out.ends_with(",k31=v"));
    // Over 512 chars: members over 128 chars go first, wherever they are.
    let big = format!("big={}", "x".repeat(200));
    let mut list = vec![big.clone()];
    list.extend((0..20).map(|i| format!("m{i}={}", "y".repeat(20))));
    let joined = list.join(",");
    let out = clean_tracestate([joined.as_str()].into_iter()).unwrap();
    assert!(!out.contains("big="), "{out}");
    assert_eq!(out.split(',').count(), 20);
    assert!(out.len() <= 512);
}

#[test]
fn malformed_tracestate_is_dropped() {
    for bad in [
        "noequals", "UPPER=1", "a=", "a=b,c", "_a=x", "@a=x", "a@b=v=w", "a=\u{7f}", "a b=1",
    ] {
        assert_eq!(clean_tracestate([bad].into_iter()), None, "{bad:?}");
    }
    let (d, _) = run(
        &settings(),
        &[(TRACEPARENT, SPEC_TP), (TRACESTATE, "a=1,Bad=2")],
    );
    assert!(d.request.removes(TRACESTATE));
    let (d, _) = run(
        &settings(),
        &[
            (TRACEPARENT, SPEC_TP),
            (TRACESTATE, "a=1"),
            (TRACESTATE, "a=2"),
        ],
    );
    assert_eq!(d.request.value_of(TRACESTATE), Some("a=1"));
}

#[test]
fn b3_single_header_translates_and_wins_over_multi() {
    // From the B3 spec: single header with a 128-bit trace id, sampled, with parent.
    let (d, _) = run(
        &settings(),
        &[
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
    );
    assert_eq!(outcome(&d), "translated");
    assert_eq!(
        d.request.value_of(TRACEPARENT),
        Some("00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01")
    );
}

#[test]
fn b3_multi_and_64_bit_ids_translate() {
    let (d, _) = run(
        &settings(),
        &[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ],
    );
    assert_eq!(outcome(&d), "translated");
    assert_eq!(
        d.request.value_of(TRACEPARENT),
        Some("00-0000000000000000a3ce929d0e0e4736-a2fb4a1d1a96d312-00")
    );
    // Debug flag means sampled.
    let (d, _) = run(
        &settings(),
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ],
    );
    assert!(d.request.value_of(TRACEPARENT).unwrap().ends_with("-01"));
}

#[test]
fn bad_b3_is_not_translated() {
    for b3 in [
        "80f198ee56343ba864fe8b2a57d3eff7",                    // no span
        "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1", // uppercase
        "80f198ee56343ba8-e457b5a2e4d86bd1-x",                 // bad sampling
        "00000000000000000000000000000000-e457b5a2e4d86bd1",   // zero trace
        "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1",    // 31 chars
        "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-extra",
        "1",
    ] {
        assert_eq!(parse_b3_single(b3), None, "{b3}");
    }
    let mut s = settings();
    s.translate_b3 = false;
    let (d, _) = run(
        &s,
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    );
    assert_eq!(outcome(&d), "started");
}

#[test]
fn jaeger_uber_trace_id_translates() {
    let (d, _) = run(
        &settings(),
        &[("uber-trace-id", "5af7183fb1d4cf5f:6d1a3e6c5ee5ba3b:0:1")],
    );
    assert_eq!(outcome(&d), "translated");
    assert_eq!(
        d.request.value_of(TRACEPARENT),
        Some("00-00000000000000005af7183fb1d4cf5f-6d1a3e6c5ee5ba3b-01")
    );
    // URL-encoded, short ids (no leading zeros), unsampled.
    let f = parse_uber("abc%3Adef%3A0%3A0").unwrap();
    assert_eq!(
        (f.trace_id, f.span_id, f.sampled),
        (0xabc, 0xdef, Some(false))
    );
    for bad in [
        "a:b:c",
        "0:1:0:1",
        "a:0:0:1",
        "xyz:1:0:1",
        "a:b:0:1:2",
        "a:11112222333344445:0:1",
    ] {
        assert_eq!(parse_uber(bad), None, "{bad}");
    }
    // B3 wins over Jaeger.
    let (d, _) = run(
        &settings(),
        &[
            ("uber-trace-id", "5af7183fb1d4cf5f:6d1a3e6c5ee5ba3b:0:1"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"),
        ],
    );
    assert!(d
        .request
        .value_of(TRACEPARENT)
        .unwrap()
        .contains("80f198ee"));
}

#[test]
fn request_id_is_kept_when_well_formed_else_generated() {
    let (d, _) = run(
        &settings(),
        &[(REQUEST_ID, "2f1c6a4e-7d1b-4b3e-9a55-0d1e2f3a4b5c")],
    );
    assert_eq!(d.request.value_of(REQUEST_ID), None);
    for bad in ["", "has space", "<script>", &"x".repeat(129)] {
        let (d, _) = run(&settings(), &[(REQUEST_ID, bad)]);
        assert!(is_uuid_v4(d.request.value_of(REQUEST_ID).unwrap()), "{bad}");
    }
    let (d, _) = run(&settings(), &[(REQUEST_ID, "a"), (REQUEST_ID, "b")]);
    assert!(is_uuid_v4(d.request.value_of(REQUEST_ID).unwrap()));
    let mut s = settings();
    s.generate_request_id = false;
    let (d, _) = run(&s, &[]);
    assert_eq!(d.request.value_of(REQUEST_ID), None);
}

/// RFC 9562 layout: 8-4-4-4-12 lowercase hex, version 4, variant 10xx.
fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && parts[2].starts_with('4')
        && "89ab".contains(&parts[3][..1])
}

#[test]
fn uuids_are_v4_and_distinct() {
    let mut rng = Rng::from_seed(1);
    let a = uuid_v4(&mut rng);
    let b = uuid_v4(&mut rng);
    assert!(is_uuid_v4(&a) && is_uuid_v4(&b), "{a} {b}");
    assert_ne!(a, b);
}

#[test]
fn baggage_carries_the_tenant_and_drops_a_spoofed_member() {
    let mut s = settings();
    s.baggage_tenant_key = Some("tenant".into());
    let (d, _) = run(
        &s,
        &[(
            "baggage",
            "userId=alice, tenant=evil;p=1,serverNode=DF%2028",
        )],
    );
    assert_eq!(
        d.request.value_of(BAGGAGE),
        Some("userId=alice,serverNode=DF%2028,tenant=acme")
    );
    let (d, _) = run(&s, &[]);
    assert_eq!(d.request.value_of(BAGGAGE), Some("tenant=acme"));
}

#[test]
fn echo_returns_final_values_on_the_response() {
    let mut s = settings();
    s.echo_request_id = true;
    s.echo_traceparent = true;
    let (_, mut echo) = run(&s, &[(TRACEPARENT, SPEC_TP), (REQUEST_ID, "rid-1")]);
    let edits = on_response(&mut echo);
    assert_eq!(
        edits.ops,
        vec![
            HeaderOp::Set(REQUEST_ID.into(), "rid-1".into()),
            HeaderOp::Set(TRACEPARENT.into(), SPEC_TP.into())
        ]
    );
    let (_, mut echo) = run(&settings(), &[]);
    assert!(on_response(&mut echo).ops.is_empty());
}

#[test]
fn level_2_tracestate_keys_are_accepted() {
    // `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, `@` a keychar.
    for good in [
        "1abc=x",
        "a@=x",
        "a@b@c=1",
        "tenant@vendor=v",
        "0=1",
        "a/b*c_d-e=1",
    ] {
        assert_eq!(
            clean_tracestate([good].into_iter()).as_deref(),
            Some(good),
            "{good}"
        );
    }
    let long = format!("a{}=v", "b".repeat(255));
    assert!(clean_tracestate([long.as_str()].into_iter()).is_some());
    let too_long = format!("a{}=v", "b".repeat(256));
    assert_eq!(clean_tracestate([too_long.as_str()].into_iter()), None);
}

#[test]
fn only_known_flags_survive_and_a_new_trace_is_random() {
    // `-fc`: reserved bits set, sampled and random clear.
    let (d, _) = run(
        &settings(),
        &[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fd",
        )],
    );
    assert_eq!(
        d.request.value_of(TRACEPARENT),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    let (d, _) = run(
        &settings(),
        &[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        )],
    );
    assert_eq!(
        d.request.value_of(TRACEPARENT),
        None,
        "random and sampled kept"
    );
    let (d, _) = run(&settings(), &[]);
    let started = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
    assert_eq!(started.flags & FLAG_RANDOM, FLAG_RANDOM);
}

#[test]
fn b3_sampling_only_decisions_count_for_trusting_tenants() {
    for (h, want) in [
        (("b3", "0"), false),
        (("b3", "1"), true),
        (("b3", "d"), true),
        (("x-b3-sampled", "0"), false),
        (("x-b3-sampled", "1"), true),
        (("x-b3-flags", "1"), true),
    ] {
        let mut s = settings();
        // The tenant's own rate would say the opposite.
        let rate = if want { 0.0 } else { 1.0 };
        s.sample_rate = rate;
        s.sample_threshold = (rate * SAMPLE_SPACE as f64) as u64;
        let (d, _) = run(&s, &[h]);
        let tp = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
        assert_eq!(tp.sampled(), want, "{h:?}");
        assert_eq!(outcome(&d), "started");
        // Not trusted: the rate decides.
        s.trust_incoming_sampling = false;
        let (d, _) = run(&s, &[h]);
        let tp = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
        assert_eq!(tp.sampled(), !want, "{h:?} untrusted");
    }
}

#[test]
fn an_untrusted_caller_cannot_force_sampling_through_b3_or_jaeger() {
    let mut s = settings();
    s.trust_incoming_sampling = false;
    s.sample_rate = 0.0;
    s.sample_threshold = 0;
    let (d, _) = run(
        &s,
        &[
            (TRACEPARENT, SPEC_TP),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
            (
                "uber-trace-id",
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            ),
        ],
    );
    let tp = parse_traceparent(d.request.value_of(TRACEPARENT).unwrap()).unwrap();
    assert!(!tp.sampled());
    let span = hex(u128::from(tp.parent_id), 16);
    assert_eq!(
        d.request.value_of("b3"),
        Some(format!("4bf92f3577b34da6a3ce929d0e0e4736-{span}-0").as_str())
    );
    assert_eq!(d.request.value_of("x-b3-sampled"), Some("0"));
    assert_eq!(d.request.value_of("x-b3-spanid"), Some(span.as_str()));
    assert!(d.request.removes("x-b3-flags"));
    assert_eq!(
        d.request.value_of("uber-trace-id"),
        Some(format!("4bf92f3577b34da6a3ce929d0e0e4736:{span}:0:00").as_str())
    );
    // Trusted callers' headers pass untouched.
    s.trust_incoming_sampling = true;
    let (d, _) = run(&s, &[(TRACEPARENT, SPEC_TP), ("x-b3-sampled", "1")]);
    assert_eq!(d.request.value_of("x-b3-sampled"), None);
}

#[test]
fn traceresponse_carries_the_forwarded_context() {
    let mut s = settings();
    s.traceresponse = true;
    let (_, mut echo) = run(&s, &[(TRACEPARENT, SPEC_TP)]);
    let edits = on_response(&mut echo);
    assert_eq!(edits.value_of(TRACERESPONSE), Some(SPEC_TP));
}
