//! Other client/operator values: Idempotency-Key, CORS origin patterns and
//! origins, CIDR ranges, header names, access-log path redaction.
#![no_main]
use meshware_common::section::check_header_name;
use meshware_common::Cidr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, "https://a.example"));
    if let Ok(rule) = cors::config::OriginRule::parse(a) {
        let _ = rule.matches(b);
    }
    if let Ok(c) = Cidr::parse(a) {
        let _ = c.contains(std::net::IpAddr::from([10, 1, 2, 3]));
        let _ = c.contains(std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
    }
    let _ = check_header_name(a);
    let idem: idempotency::config::IdempotencySettings =
        meshware_common::section::parse_alone(&serde_json::json!({}), "t", idempotency::config::parse).0;
    let _ = idempotency::replay::parse_key(a, &idem);
    let log = meshware_common::section::parse_alone(&serde_json::json!({"max_path_bytes": 16}), "t", access_log::config::parse).0;
    let logged = access_log::record::logged_path(&log, &text);
    // Cut at max_path_bytes, plus the "..." marker.
    assert!(logged.len() <= 16 + 3, "{logged}");
});
