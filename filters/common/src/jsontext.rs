//! The little JSON the filters write (configuration error paths, problem
//! details bodies), written directly: `serde_json`'s serializer, float
//! printing included, would otherwise be linked into every module for these
//! few strings (about 7 KB of each module).

/// `text` as a JSON string literal (RFC 8259 section 7).
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u");
                crate::digits::push_hex(&mut out, u128::from(c), 4);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object from members whose values are JSON text already:
/// `{"k1":v1,"k2":v2}`, keys quoted here.
pub fn object<K: AsRef<str>>(members: impl IntoIterator<Item = (K, String)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(k.as_ref()));
        out.push(':');
        out.push_str(&v);
    }
    out.push('}');
    out
}

/// An RFC 9457 problem details body (`application/problem+json`), members
/// in the order serde_json writes them (sorted).
pub fn problem(kind: &str, title: &str, status: u32, detail: &str) -> String {
    format!(
        "{{\"detail\":{},\"status\":{status},\"title\":{},\"type\":{}}}",
        quoted(detail),
        quoted(title),
        quoted(kind)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// serde_json (an independent implementation) is the reference.
    #[test]
    fn objects_hold_their_members_in_order() {
        assert_eq!(object(Vec::<(&str, String)>::new()), "{}");
        let text = object([("b\"", "1".to_string()), ("a", "{\"x\":[2]}".to_string())]);
        assert_eq!(text, r#"{"b\"":1,"a":{"x":[2]}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["a"]["x"][0], 2);
    }

    #[test]
    fn strings_are_quoted_exactly_as_serde_json_quotes_them() {
        for key in [
            "shop.acme.example",
            "/api/v1",
            "quote\" and \\ backslash",
            "control \u{1} \u{1f} \n \r \t \u{8} \u{c} \u{7f}",
            "unicode é ✓ 😀",
            "",
        ] {
            assert_eq!(quoted(key), serde_json::Value::from(key).to_string());
        }
    }

    #[test]
    fn problem_bodies_match_serde_json() {
        let expected = serde_json::json!({
            "type": "urn:x:quota",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "quota \"per-client\" exceeded",
        })
        .to_string();
        assert_eq!(
            problem(
                "urn:x:quota",
                "Too Many Requests",
                429,
                "quota \"per-client\" exceeded"
            ),
            expected
        );
    }
}
