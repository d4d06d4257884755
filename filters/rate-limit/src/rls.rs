//! The messages of Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), in
//! protobuf's wire format, written by hand: the few fields the filter sends
//! and reads, without a protobuf runtime in the module. Unknown fields of an
//! answer are skipped, as protobuf requires; a malformed answer is `None`.
//!
//! The wire format's primitives are `meshware_common::protowire`'s.

use meshware_common::protowire::{put_bytes, put_message, put_varint, Fields, Value};

/// One descriptor: its entries, in order (`key`, `value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
}

/// `RateLimitRequest { domain = 1; descriptors = 2; hits_addend = 3 }`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits_addend: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        // RateLimitDescriptor { entries = 1 }, Entry { key = 1; value = 2 }
        let mut descriptor = Vec::new();
        for (key, value) in &d.entries {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_message(&mut descriptor, 1, &entry);
        }
        put_message(&mut out, 2, &descriptor);
    }
    if hits_addend != 0 {
        put_varint(&mut out, 3 << 3, u64::from(hits_addend));
    }
    out
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Code {
    #[default]
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// `RateLimitResponse.RateLimit`: the limit a descriptor met.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentLimit {
    pub name: String,
    pub requests_per_unit: u32,
    /// The unit in seconds (`SECOND` 1 ... `DAY` 86400, `WEEK`, `MONTH` as
    /// 30 days, `YEAR` as 365 days); `None` for `UNKNOWN`.
    pub unit_s: Option<u64>,
}

/// `RateLimitResponse.DescriptorStatus`, one per descriptor sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    /// `duration_until_reset` in whole milliseconds.
    pub until_reset_ms: Option<u64>,
}

/// The parts of `RateLimitResponse` the filter uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<DescriptorStatus>,
    pub response_headers: Vec<(String, String)>,
    pub request_headers: Vec<(String, String)>,
}

pub fn decode_response(bytes: &[u8]) -> Option<Response> {
    let mut r = Response::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Varint(v)) => r.overall = Code::from_wire(v),
            (2, Value::Bytes(b)) => r.statuses.push(decode_status(b)?),
            (3, Value::Bytes(b)) => r.response_headers.push(decode_header(b)?),
            (4, Value::Bytes(b)) => r.request_headers.push(decode_header(b)?),
            _ => {}
        }
    }
    Some(r)
}

fn decode_status(bytes: &[u8]) -> Option<DescriptorStatus> {
    let mut s = DescriptorStatus::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Varint(v)) => s.code = Code::from_wire(v),
            (2, Value::Bytes(b)) => s.current_limit = Some(decode_limit(b)?),
            (3, Value::Varint(v)) => s.limit_remaining = u32::try_from(v).ok()?,
            (4, Value::Bytes(b)) => s.until_reset_ms = Some(decode_duration_ms(b)?),
            _ => {}
        }
    }
    Some(s)
}

fn decode_limit(bytes: &[u8]) -> Option<CurrentLimit> {
    let mut l = CurrentLimit::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Varint(v)) => l.requests_per_unit = u32::try_from(v).ok()?,
            (2, Value::Varint(v)) => {
                l.unit_s = match v {
                    1 => Some(1),
                    2 => Some(60),
                    3 => Some(3600),
                    4 => Some(86_400),
                    5 => Some(30 * 86_400),
                    6 => Some(365 * 86_400),
                    7 => Some(7 * 86_400),
                    _ => None,
                }
            }
            (3, Value::Bytes(b)) => l.name = String::from_utf8(b.to_vec()).ok()?,
            _ => {}
        }
    }
    Some(l)
}

/// `google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2 }`, in
/// milliseconds (negative durations are malformed here).
fn decode_duration_ms(bytes: &[u8]) -> Option<u64> {
    let (mut seconds, mut nanos) = (0u64, 0u64);
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Varint(v)) => seconds = u64::try_from(v as i64).ok()?,
            (2, Value::Varint(v)) => nanos = u64::try_from(v as i64).ok()?,
            _ => {}
        }
    }
    seconds.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// `config.core.v3.HeaderValue { key = 1; value = 2; raw_value = 3 }`.
fn decode_header(bytes: &[u8]) -> Option<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Bytes(b)) => key = String::from_utf8(b.to_vec()).ok()?,
            (2, Value::Bytes(b)) | (3, Value::Bytes(b)) => {
                value = String::from_utf8(b.to_vec()).ok()?
            }
            _ => {}
        }
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Vectors serialized by Python's protobuf (tests/rls_vectors.py): an
    /// independent implementation of the same messages.
    fn vectors() -> Json {
        serde_json::from_str(include_str!("../testdata/rls_vectors.json")).unwrap()
    }

    #[test]
    fn requests_match_the_reference_encoding() {
        for case in vectors()["requests"].as_array().unwrap() {
            let descriptors: Vec<Descriptor> = case["descriptors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| Descriptor {
                    entries: d
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into()))
                        .collect(),
                })
                .collect();
            let hits = case["hits_addend"].as_u64().unwrap() as u32;
            let ours = encode_request(case["domain"].as_str().unwrap(), &descriptors, hits);
            assert_eq!(
                ours,
                hex(case["wire"].as_str().unwrap()),
                "{}",
                case["name"]
            );
        }
    }

    #[test]
    fn responses_decode_as_the_reference_wrote_them() {
        for case in vectors()["responses"].as_array().unwrap() {
            let r = decode_response(&hex(case["wire"].as_str().unwrap())).unwrap();
            let want = &case["fields"];
            let code = |c: &Json| match c.as_str().unwrap() {
                "OK" => Code::Ok,
                "OVER_LIMIT" => Code::OverLimit,
                _ => Code::Unknown,
            };
            assert_eq!(r.overall, code(&want["overall_code"]), "{}", case["name"]);
            let statuses = want["statuses"].as_array().unwrap();
            assert_eq!(r.statuses.len(), statuses.len());
            for (got, s) in r.statuses.iter().zip(statuses) {
                assert_eq!(got.code, code(&s["code"]));
                assert_eq!(
                    u64::from(got.limit_remaining),
                    s["limit_remaining"].as_u64().unwrap()
                );
                assert_eq!(got.until_reset_ms, s["until_reset_ms"].as_u64());
                match s.get("current_limit") {
                    Some(l) => {
                        let got = got.current_limit.as_ref().unwrap();
                        assert_eq!(got.name, l["name"].as_str().unwrap());
                        assert_eq!(
                            u64::from(got.requests_per_unit),
                            l["requests_per_unit"].as_u64().unwrap()
                        );
                        assert_eq!(got.unit_s, l["unit_s"].as_u64());
                    }
                    None => assert_eq!(got.current_limit, None),
                }
            }
            let pairs = |v: &Json| -> Vec<(String, String)> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                    .collect()
            };
            assert_eq!(r.response_headers, pairs(&want["response_headers_to_add"]));
            assert_eq!(r.request_headers, pairs(&want["request_headers_to_add"]));
        }
    }

    #[test]
    fn malformed_answers_are_none_never_a_panic() {
        let good = hex(vectors()["responses"][0]["wire"].as_str().unwrap());
        for cut in 1..good.len() {
            // A truncated message either still parses (cut between fields)
            // or is refused; it never panics.
            let _ = decode_response(&good[..cut]);
        }
        assert_eq!(
            decode_response(&[0x0a, 0x05, 0x01]),
            None,
            "length past the end"
        );
        assert_eq!(decode_response(&[0x0b]), None, "a group");
        assert_eq!(decode_response(&[0xff; 11]), None, "an endless varint");
        assert_eq!(decode_response(&[]), Some(Response::default()));
    }
}
