//! The endpoint-guard core, driven natively.

use crate::config::tests::parse_json;
use crate::config::GuardSettings;
use crate::guard::*;
use meshware_common::path::RequestPath;
use meshware_common::{Decision, Headers, SourceAddress};
use serde_json::json;

const TOKEN: &str = "s3cret-admin-token-0123";

fn settings() -> GuardSettings {
    let (s, e) = parse_json(json!({
        "allow_cidrs": ["10.0.0.0/8"],
        "protected_paths": ["/debug/pprof", {"path": "/metrics", "allow_cidrs": ["192.168.1.0/24"]}],
        "extra_protected_paths": ["/.env*"],
        "admin_tokens": [TOKEN],
        "allowed_methods": ["GET", "POST"],
        "max_body_bytes": 100,
        "max_header_count": 5,
        "max_url_length": 64,
        "routes": [{"prefix": "/upload", "max_body_bytes": 1000, "allowed_methods": ["PUT"]}]
    }));
    assert_eq!(e, "");
    s
}

fn request(
    s: &GuardSettings,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    from: &str,
) -> (Decision<'static>, BodyBudget) {
    let mut pairs = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let headers = Headers::new(pairs);
    let mut source = SourceAddress::known(from.parse().ok());
    let mut budget = BodyBudget::default();
    // Settings outlive the decision in the adapter; tests leak to keep it simple.
    let s: &'static GuardSettings = Box::leak(Box::new(s.clone()));
    // As for a tenant that allows every ambiguous form: every reading counts.
    let path = RequestPath::read_all(path).unwrap();
    let checks = extra.iter().any(|(k, _)| *k == "x-check-overrides");
    let d = on_request(s, &headers, &path, checks, &mut source, &mut budget);
    (d, budget)
}

fn status(d: &Decision<'_>) -> Option<u32> {
    d.reply.as_ref().map(|r| r.status)
}

#[test]
fn protected_paths_are_hidden_from_outsiders() {
    let s = settings();
    for p in [
        "/debug/pprof",
        "/DEBUG/pprof/heap",
        "/debug%2Fpprof",
        "/metrics",
        "/.env.local",
    ] {
        let (d, _) = request(&s, "GET", p, &[], "203.0.113.9");
        assert_eq!(status(&d), Some(404), "{p}");
        assert!(d.outcomes.contains(BLOCKED));
        assert!(d.reply.unwrap().body.is_empty());
    }
    let (d, _) = request(&s, "GET", "/debug/pprofile", &[], "203.0.113.9");
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(PASSED));
}

#[test]
fn allowed_ranges_are_per_rule() {
    let s = settings();
    let (d, _) = request(&s, "GET", "/debug/pprof", &[], "10.1.2.3");
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(ALLOWED_CIDR) && !d.outcomes.contains(PASSED));
    // /metrics has its own range: the section's 10/8 does not apply.
    let (d, _) = request(&s, "GET", "/metrics", &[], "10.1.2.3");
    assert_eq!(status(&d), Some(404));
    let (d, _) = request(&s, "GET", "/metrics", &[], "192.168.1.20");
    assert!(d.outcomes.contains(ALLOWED_CIDR));
    // No known source address: never allowed by range.
    let (d, _) = request(&s, "GET", "/debug/pprof", &[], "not-an-ip");
    assert_eq!(status(&d), Some(404));
}

#[test]
fn the_admin_token_opens_and_is_never_forwarded() {
    let s = settings();
    let (d, _) = request(
        &s,
        "GET",
        "/debug/pprof",
        &[("x-admin-token", TOKEN)],
        "203.0.113.9",
    );
    assert_eq!(status(&d), None);
    assert!(d.outcomes.contains(ALLOWED_TOKEN));
    assert!(d.request.removes("x-admin-token"));
    let wrong = format!("{TOKEN}x");
    for bad in [
        "",
        "s3cret-admin-token-012",
        wrong.as_str(),
        "S3CRET-ADMIN-TOKEN-0123",
    ] {
        let (d, _) = request(
            &s,
            "GET",
            "/debug/pprof",
            &[("x-admin-token", bad)],
            "203.0.113.9",
        );
        assert_eq!(status(&d), Some(404), "{bad:?}");
    }
    // Stripped on ordinary paths too.
    let (d, _) = request(&s, "GET", "/", &[("x-admin-token", "x")], "203.0.113.9");
    assert!(d.request.removes("x-admin-token"));
}

#[test]
fn token_comparison_checks_every_byte_and_length() {
    use crate::config::token_digest;
    let tokens = vec![
        token_digest(b"aaaaaaaaaaaaaaaa"),
        token_digest(b"bbbbbbbbbbbbbbbbbb"),
    ];
    assert!(token_matches(b"aaaaaaaaaaaaaaaa", &tokens));
    assert!(token_matches(b"bbbbbbbbbbbbbbbbbb", &tokens));
    assert!(!token_matches(b"aaaaaaaaaaaaaaa", &tokens));
    assert!(!token_matches(b"aaaaaaaaaaaaaaaaa", &tokens));
    assert!(!token_matches(b"", &tokens));
    assert!(!token_matches(b"aaaaaaaaaaaaaaaa", &[]));
}

#[test]
fn token_comparison_has_no_early_exit() {
    use crate::guard::digest_scan;
    let first = [7u8; 32];
    let mut last = [7u8; 32];
    if let Some(b) = last.last_mut() {
        *b = 8;
    }
    let other = [9u8; 32];
    // Every digest is compared in full whether the presented one matches
    // the first, the last, none, or differs in the first or the last byte.
    for (presented, digests, matched) in [
        (first, vec![first, other, last], true),
        (last, vec![first, other, last], true),
        (other, vec![first, last], false),
        ([0u8; 32], vec![first, last], false),
    ] {
        assert_eq!(
            digest_scan(&presented, &digests),
            (matched, 32 * digests.len())
        );
    }
}

#[test]
fn a_token_given_as_its_sha256_is_accepted_and_never_stored_plain() {
    use crate::config::{parse_token_hash, tests::parse_json};
    // FIPS 180-2's example: SHA-256("abc").
    let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(
        parse_token_hash(abc).map(|d| d[0]),
        Some(0xba),
        "hex digits decode"
    );
    assert!(token_matches(b"abc", &[parse_token_hash(abc).unwrap()]));
    assert!(token_matches(
        b"abc",
        &[parse_token_hash(&abc.to_ascii_uppercase().replace("SHA256:", "sha256:")).unwrap()]
    ));
    for bad in ["sha256:", "sha256:xyz", &abc[..70], &format!("{abc}00")] {
        assert_eq!(parse_token_hash(bad), None, "{bad}");
    }
    let (s, e) = parse_json(serde_json::json!({"admin_tokens": [abc, "a-plain-token-of-20-ch"]}));
    assert_eq!(e, "");
    assert!(token_matches(b"abc", &s.admin_tokens));
    assert!(token_matches(b"a-plain-token-of-20-ch", &s.admin_tokens));
    let (_, e) = parse_json(serde_json::json!({"admin_tokens": ["sha256:1234"]}));
    assert!(
        e.contains("t.admin_tokens[0]: a hashed admin token is"),
        "{e}"
    );
}

#[test]
fn every_reading_of_an_allowed_ambiguous_path_is_judged() {
    let s = settings();
    for p in [
        "/debug/pprof/..;/",
        "/x/..;/debug/pprof",
        "/x%2f..%2fdebug/pprof",
        "/x%5c..%5cdebug/pprof",
        "/x%252f..%252fdebug/pprof",
        "/x/..%3b/debug/pprof",
        "/debug;x/pprof",
        "//debug//pprof",
        "/x\\..\\debug\\pprof",
        "/%64ebug/pprof",
        "/\u{FF44}ebug/pprof",
        "/x/%2e%2e/debug/pprof",
    ] {
        let (d, _) = request(&s, "GET", p, &[], "203.0.113.9");
        assert_eq!(status(&d), Some(404), "{p}");
    }
}

#[test]
fn the_most_specific_protected_path_decides() {
    let (s, e) = parse_json(json!({
        "protected_paths": [
            {"path": "/metrics", "allow_cidrs": ["10.0.0.0/8"]},
            {"path": "/metrics/public", "allow_cidrs": ["0.0.0.0/0"]}
        ],
        "extra_protected_paths": [{"path": "/metrics", "allow_cidrs": ["192.168.0.0/16"]}]
    }));
    assert_eq!(e, "");
    let (d, _) = request(&s, "GET", "/metrics/public/x", &[], "203.0.113.9");
    assert_eq!(status(&d), None);
    // The later entry for the same path replaced the earlier one.
    let (d, _) = request(&s, "GET", "/metrics", &[], "10.1.1.1");
    assert_eq!(status(&d), Some(404));
    let (d, _) = request(&s, "GET", "/metrics", &[], "192.168.3.4");
    assert_eq!(status(&d), None);
}

#[test]
fn limits_follow_every_reading_and_checked_method_overrides() {
    let s = settings();
    // Tomcat reads /upload (PUT allowed); Express reads /orders/..;/upload.
    let (d, _) = request(&s, "PUT", "/orders/..;/upload", &[], "10.0.0.1");
    assert_eq!(status(&d), Some(405));
    let (d, _) = request(
        &s,
        "POST",
        "/x",
        &[("x-http-method-override", "DELETE")],
        "10.0.0.1",
    );
    assert_eq!(
        status(&d),
        None,
        "unchecked overrides are stripped before, not judged"
    );
    let (d, _) = request(
        &s,
        "POST",
        "/x",
        &[
            ("x-http-method-override", "DELETE"),
            ("x-check-overrides", "1"),
        ],
        "10.0.0.1",
    );
    assert_eq!(status(&d), Some(405));
}

#[test]
fn limits_apply_per_route() {
    let s = settings();
    let (d, _) = request(&s, "DELETE", "/x", &[], "10.0.0.1");
    assert_eq!(status(&d), Some(405));
    let reply = d.reply.unwrap();
    assert!(reply.headers.contains(&("allow", "GET, POST".to_string())));
    // The upload route allows PUT only, and bigger bodies.
    let (d, _) = request(
        &s,
        "PUT",
        "/upload/file",
        &[("content-length", "500")],
        "10.0.0.1",
    );
    assert_eq!(status(&d), None);
    let (d, _) = request(&s, "POST", "/upload", &[], "10.0.0.1");
    assert_eq!(status(&d), Some(405));
    let (d, _) = request(&s, "POST", "/x", &[("content-length", "101")], "10.0.0.1");
    assert_eq!(status(&d), Some(413));
    assert!(d.outcomes.contains(REJECTED_BODY_SIZE));
    let long = format!("/{}", "a".repeat(64));
    let (d, _) = request(&s, "GET", &long, &[], "10.0.0.1");
    assert_eq!(status(&d), Some(414));
    let many: Vec<(&str, &str)> = vec![
        ("a", "1"),
        ("b", "1"),
        ("c", "1"),
        ("d", "1"),
        ("e", "1"),
        ("f", "1"),
    ];
    let (d, _) = request(&s, "GET", "/x", &many, "10.0.0.1");
    assert_eq!(status(&d), Some(431));
    let (d, _) = request(&s, "GET", "/x", &many[..5], "10.0.0.1");
    assert_eq!(status(&d), None);
}

#[test]
fn streamed_bodies_are_counted_until_the_limit() {
    let s = settings();
    let (d, mut budget) = request(&s, "POST", "/x", &[], "10.0.0.1");
    assert_eq!(status(&d), None);
    assert!(on_body(&mut budget, 60).reply.is_none());
    assert!(on_body(&mut budget, 40).reply.is_none());
    let d = on_body(&mut budget, 1);
    assert_eq!(status(&d), Some(413));
    // Answered once; later chunks are not counted again.
    assert!(on_body(&mut budget, 1000).reply.is_none());
}
