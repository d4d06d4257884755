//! The JSON reader (profiles, live documents, JWT segments, key sets),
//! against serde_json: never a panic; what ours accepts serde_json accepts as
//! the same value (floats within rounding); what serde_json accepts ours
//! accepts unless an object repeats a name.
#![no_main]
use serde_json::Value;

/// Equal, with floats compared to 1e-12 (ours rounds outside the exact range).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || ((x - y) / y).abs() < 1e-12,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, x), (l, y))| k == l && same(x, y))
        }
        _ => a == b,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ours = meshware_common::json::parse(data);
    let theirs = serde_json::from_slice::<Value>(data);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => assert!(same(&a, &b), "{a} vs {b}"),
        (Ok(a), Err(e)) => panic!("accepted what serde_json refuses ({e}): {a}"),
        (Err(e), Ok(_)) => assert_eq!(e.message, "duplicate name in an object"),
        (Err(_), Err(_)) => {}
    }
});
