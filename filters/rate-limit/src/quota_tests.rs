//! The rate-limit core against an in-memory store with Envoy's CAS rules.

use crate::config::tests::parse_json;
use crate::config::RateLimitSettings;
use crate::limiter::{sweep, Slot};
use crate::quota::*;
use meshware_common::path::RequestPath;
use meshware_common::store::MemoryStore;
use meshware_common::{Decision, Headers, SourceAddress};
use serde_json::{json, Value};

fn settings(v: Value) -> &'static RateLimitSettings {
    let (s, e) = parse_json(v);
    assert_eq!(e, "");
    Box::leak(Box::new(s))
}

fn tiered() -> &'static RateLimitSettings {
    settings(json!({
        "response_headers": true,
        "limits": [
            {"name": "tenant", "key": "tenant", "rate": 10, "burst": 10},
            {"name": "client", "key": "client_address", "rate": 2, "burst": 3}
        ]
    }))
}

fn request(
    s: &'static RateLimitSettings,
    store: &MemoryStore,
    tenant: &str,
    from: &str,
    extra: &[(&str, &str)],
) -> Decision<'static> {
    let mut pairs = vec![(":method".to_string(), "GET".to_string())];
    if !extra.iter().any(|(k, _)| *k == ":path") {
        pairs.push((":path".to_string(), "/x".to_string()));
    }
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let headers = Headers::new(pairs);
    let mut source = SourceAddress::known(from.parse().ok());
    let path = RequestPath::read_all(headers.get(":path").unwrap_or("/")).unwrap();
    on_request(
        s,
        tenant,
        &headers,
        &path,
        &mut source,
        store,
        &mut Fields::default(),
    )
}

fn status(d: &Decision<'_>) -> Option<u32> {
    d.reply.as_ref().map(|r| r.status)
}

fn store() -> MemoryStore {
    let s = MemoryStore::default();
    *s.now.borrow_mut() = 1_700_000_000_000;
    s
}

#[test]
fn burst_then_refill() {
    let s = tiered();
    let st = store();
    for i in 0..3 {
        assert_eq!(
            status(&request(s, &st, "acme", "10.0.0.1", &[])),
            None,
            "request {i}"
        );
    }
    let d = request(s, &st, "acme", "10.0.0.1", &[]);
    assert_eq!(status(&d), Some(429));
    let reply = d.reply.unwrap();
    let header = |n: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        header("ratelimit-policy").as_deref(),
        Some("\"client\";q=2;w=1")
    );
    // `t`: seconds until the quota is whole again (3 tokens at 2/s: 1.5 s),
    // the same definition as on allowed answers; Retry-After: one token.
    assert_eq!(header("ratelimit").as_deref(), Some("\"client\";r=0;t=2"));
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "urn:meshware:problem:quota-exceeded");
    assert_eq!(body["status"], 429);
    assert!(d.outcomes.contains(LIMITED));
    // 2 per second: after 500 ms one token is back, and only one.
    st.advance_ms(500);
    assert_eq!(status(&request(s, &st, "acme", "10.0.0.1", &[])), None);
    assert_eq!(status(&request(s, &st, "acme", "10.0.0.1", &[])), Some(429));
}

#[test]
fn two_limits_apply_and_clients_are_isolated() {
    let s = tiered();
    let st = store();
    // Four clients x 3 = 12 > tenant burst 10: the tenant-wide limit bites.
    let mut allowed = 0;
    for c in 1..=4 {
        for _ in 0..3 {
            if status(&request(s, &st, "acme", &format!("10.0.0.{c}"), &[])).is_none() {
                allowed += 1;
            }
        }
    }
    assert_eq!(allowed, 10);
    let d = request(s, &st, "acme", "10.0.0.9", &[]);
    let reply = d.reply.unwrap();
    assert!(reply
        .headers
        .contains(&("ratelimit-policy", "\"tenant\";q=10;w=1".to_string())));
    // Another tenant has its own buckets.
    assert_eq!(status(&request(s, &st, "globex", "10.0.0.1", &[])), None);
}

#[test]
fn forwarded_for_cannot_change_the_client_key() {
    let s = tiered();
    let st = store();
    for i in 0..3 {
        let spoof = format!("198.51.100.{i}");
        assert_eq!(
            status(&request(
                s,
                &st,
                "acme",
                "10.0.0.1",
                &[("x-forwarded-for", &spoof)]
            )),
            None
        );
    }
    let d = request(
        s,
        &st,
        "acme",
        "10.0.0.1",
        &[("x-forwarded-for", "203.0.113.7")],
    );
    assert_eq!(status(&d), Some(429));
}

#[test]
fn trusted_hops_pick_the_address_left_of_the_proxies() {
    let h = Headers::new(vec![(
        "x-forwarded-for".into(),
        "1.1.1.1, 203.0.113.5, 10.0.0.2".into(),
    )]);
    let mut src = SourceAddress::known("10.0.0.2".parse().ok());
    let ip = |text: &str| text.parse::<std::net::IpAddr>().ok();
    assert_eq!(client_address(&h, &mut src, 0), ip("10.0.0.2"));
    assert_eq!(client_address(&h, &mut src, 1), ip("203.0.113.5"));
    assert_eq!(client_address(&h, &mut src, 2), ip("1.1.1.1"));
    // Fewer entries than hops: the request did not come through the proxies.
    assert_eq!(client_address(&h, &mut src, 3), ip("10.0.0.2"));
    let junk = Headers::new(vec![("x-forwarded-for".into(), "evil, 10.0.0.2".into())]);
    assert_eq!(client_address(&junk, &mut src, 1), ip("10.0.0.2"));
}

#[test]
fn shadow_limits_count_but_never_reject() {
    let s = settings(json!({"limits": [
        {"name": "strict", "key": "tenant", "rate": 1, "burst": 1, "shadow": true}
    ]}));
    let st = store();
    assert!(request(s, &st, "a", "10.0.0.1", &[])
        .outcomes
        .contains(ALLOWED));
    let d = request(s, &st, "a", "10.0.0.1", &[]);
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(SHADOW_LIMITED) && d.outcomes.contains(ALLOWED));
    assert!(
        d.outcomes.contains(OUTCOMES.len() + 2),
        "per-limit shadow_limited"
    );
}

#[test]
fn keys_stay_bounded_under_thousands_of_random_values() {
    let s = settings(json!({"max_keys": 100, "limits": [
        {"name": "per_key", "key": {"header": "x-api-key"}, "rate": 1, "per": "hour", "burst": 5}
    ]}));
    let st = store();
    let mut overflowed = 0;
    for i in 0..5000u64 {
        let value = format!("{:x}", meshware_common::bucket::splitmix64_finalize(i));
        let d = request(s, &st, "a", "10.0.0.1", &[("x-api-key", &value)]);
        if d.outcomes.contains(KEY_OVERFLOW) {
            overflowed += 1;
        }
    }
    // 100 slots plus the overflow bucket, whatever the traffic.
    assert!(st.len() <= 101, "{} keys", st.len());
    assert!(overflowed > 4000, "{overflowed}");
    // A value without a header is not limited by this limit.
    let d = request(s, &st, "a", "10.0.0.1", &[]);
    assert!(d.outcomes.contains(NO_KEY));
    // Once the buckets are idle (full) again the sweep clears them.
    st.advance_ms(5 * 3_600_000);
    for _ in 0..1 {
        sweep(&st, "a", s);
    }
    assert_eq!(st.occupied(), 1, "only the overflow bucket is left");
}

#[test]
fn cas_conflicts_are_retried_then_fail_open() {
    let s = tiered();
    let st = store();
    request(s, &st, "acme", "10.0.0.1", &[]); // creates both buckets
    *st.forced_conflicts.borrow_mut() = 3;
    let d = request(s, &st, "acme", "10.0.0.1", &[]);
    assert!(!d.outcomes.contains(STORE_CONTENTION));
    *st.forced_conflicts.borrow_mut() = 1000;
    let d = request(s, &st, "acme", "10.0.0.1", &[]);
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(STORE_CONTENTION));
}

#[test]
fn allowed_responses_carry_the_tightest_limit() {
    let s = tiered();
    let st = store();
    let mut fields = Fields::default();
    let headers = Headers::new(vec![(":path".into(), "/".into())]);
    let mut src = SourceAddress::known("10.0.0.1".parse().ok());
    let root = RequestPath::read("/").unwrap();
    on_request(s, "acme", &headers, &root, &mut src, &st, &mut fields);
    let e = on_response(s, &mut fields);
    assert_eq!(e.value_of("ratelimit-policy"), Some("\"client\";q=2;w=1"));
    assert_eq!(e.value_of("ratelimit"), Some("\"client\";r=2;t=1"));
}

#[test]
fn slots_round_trip_and_reject_foreign_bytes() {
    let slot = Slot {
        key_hash: 42,
        tat_us: 7,
    };
    assert_eq!(Slot::decode(&slot.encode()), Some(slot));
    assert_eq!(Slot::decode(b""), None);
    assert_eq!(Slot::decode(&[0u8; 17]), None);
}

#[test]
fn bucket_keys_name_tenant_limit_and_slot() {
    use crate::limiter::{bucket_key, SlotName};
    assert_eq!(bucket_key("acme", "client", None), "mw.rl.acme.client");
    assert_eq!(
        bucket_key("acme", "client", Some(SlotName::Number(u64::MAX))),
        "mw.rl.acme.client.18446744073709551615"
    );
    assert_eq!(
        bucket_key("acme", "client", Some(SlotName::Overflow)),
        "mw.rl.acme.client.overflow"
    );
}

#[test]
fn route_limits_hold_for_every_reading_of_the_path() {
    let (s, e) = meshware_common::section::parse_alone(
        &serde_json::json!({"limits": [
            {"name": "fast", "key": "route", "prefix": "/fast", "rate": 1, "per": "hour", "burst": 1}
        ]}),
        "t",
        crate::config::parse,
    );
    assert_eq!(e, "");
    let s: &'static RateLimitSettings = Box::leak(Box::new(s));
    let st = store();
    assert_eq!(
        status(&request(s, &st, "acme", "10.0.0.1", &[(":path", "/fast")])),
        None
    );
    for p in [
        "/fast",
        "//fast",
        "/FAST",
        "/./fast",
        "/x/../fast",
        "/fast;x",
        "/%66ast",
        "/fast/",
    ] {
        let d = request(s, &st, "acme", "10.0.0.1", &[(":path", p)]);
        assert_eq!(status(&d), Some(429), "{p}");
    }
    assert_eq!(
        status(&request(
            s,
            &st,
            "acme",
            "10.0.0.1",
            &[(":path", "/faster")]
        )),
        None
    );
}

/// draft-ietf-httpapi-ratelimit-headers: `t` is when the quota resets, one
/// definition for every answer: at one instant, the last admitted request
/// and the refused one after it say the same, and it counts down with time.
#[test]
fn t_is_the_same_on_the_last_allowed_answer_and_the_429() {
    use crate::limiter::{take, Verdict};
    let s = settings(json!({"limits": [
        {"name": "slow", "key": "tenant", "rate": 1, "per": "minute", "burst": 3}
    ]}));
    let st = store();
    let limit = &s.limits[0];
    let mut last_t = 0;
    for _ in 0..3 {
        match take(&st, "acme", limit, None, 10).verdict {
            Verdict::Allowed { reset_s, .. } => last_t = reset_s,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(last_t, 180, "three tokens at one a minute");
    match take(&st, "acme", limit, None, 10).verdict {
        Verdict::Limited {
            retry_after_s,
            reset_s,
        } => {
            assert_eq!(reset_s, last_t);
            assert_eq!(retry_after_s, 60);
        }
        other => panic!("{other:?}"),
    }
    st.advance_ms(30_000);
    match take(&st, "acme", limit, None, 10).verdict {
        Verdict::Limited { reset_s, .. } => assert_eq!(reset_s, 150),
        other => panic!("{other:?}"),
    }
}

#[test]
fn occupancy_counts_busy_buckets_over_a_full_sweep_pass() {
    use crate::limiter::occupancy;
    let s = settings(json!({
        "max_keys": 300,
        "limits": [
            {"name": "tenant", "key": "tenant", "rate": 100, "burst": 100},
            {"name": "client", "key": "client_address", "rate": 1, "per": "minute", "burst": 1}
        ]
    }));
    let st = store();
    let parse = |v: Option<String>| -> Value { serde_json::from_str(&v.unwrap()).unwrap() };
    assert_eq!(
        parse(occupancy(&st, "a", s)),
        json!({"limits": {"client": {"slots": 300, "occupied": null, "overflow_busy": false}}}),
        "no pass has ended yet; tenant-wide limits have no slots"
    );
    for i in 0..20 {
        request(s, &st, "a", &format!("10.0.1.{i}"), &[]);
    }
    let busy = st.occupied() - 1; // less the tenant-wide bucket
    assert!((18..=20).contains(&busy), "{busy}");
    // 300 slots, 256 a tick: the second tick ends the first pass.
    sweep(&st, "a", s);
    assert_eq!(
        parse(occupancy(&st, "a", s))["limits"]["client"]["occupied"],
        Value::Null
    );
    sweep(&st, "a", s);
    assert_eq!(
        parse(occupancy(&st, "a", s))["limits"]["client"]["occupied"],
        json!(busy as u64)
    );
    // Idle again: the next full pass clears and counts none.
    st.advance_ms(120_000);
    sweep(&st, "a", s);
    sweep(&st, "a", s);
    assert_eq!(
        parse(occupancy(&st, "a", s))["limits"]["client"]["occupied"],
        json!(0)
    );
}
