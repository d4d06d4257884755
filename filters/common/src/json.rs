//! The JSON reader of every document the modules parse: profiles, live
//! configuration, etcd answers, JWT segments, JWKS bodies.
//!
//! It builds `serde_json::Value`s, so everything downstream stays as it is,
//! but it is not serde_json's deserializer: that one (with its visitor,
//! number and error machinery) is about 14 KB of every module; this is about
//! a quarter of that (docs/PERFORMANCE.md, "Module sizes").
//!
//! Strict RFC 8259: one value, optional whitespace around it, UTF-8, no
//! comments, no trailing commas, no lone surrogates. Two things are stricter
//! than serde_json, on purpose:
//! - a name repeated in one object is refused (serde_json keeps the last):
//!   a profile with `"burst"` twice, or a token with `"sub"` twice, is
//!   ambiguous, and RFC 7519 (JWT) allows refusing it;
//! - nesting is limited to 128 levels, as serde_json's default.
//!
//! Numbers read as serde_json reads them: an integer that fits `u64` (or,
//! negative, `i64`) stays an integer; anything else is an `f64`, exact when
//! the digits and the power of ten are both exactly representable (every
//! number a profile sets), within a few units in the last place otherwise.

use serde_json::{Map, Number, Value};
use std::fmt;

/// Deeper documents are refused (the reader recurses once per level).
const MAX_DEPTH: usize = 128;

/// Why a document is not JSON, and where: 1-based line and column (in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: &'static str,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

/// Parses one JSON document.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut r = Reader { bytes, at: 0 };
    let result = r.value(0).and_then(|v| {
        r.skip_space();
        if r.at < bytes.len() {
            Err("trailing characters")
        } else {
            Ok(v)
        }
    });
    result.map_err(|message| r.error(message))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Step<T> = Result<T, &'static str>;

impl Reader<'_> {
    fn error(&self, message: &'static str) -> JsonError {
        let before = self.bytes.get(..self.at).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        JsonError {
            message,
            line,
            column: self.at.saturating_sub(line_start) + 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `word` (after its first byte, already matched).
    fn keyword(&mut self, word: &[u8], value: Value) -> Step<Value> {
        match self.bytes.get(self.at..self.at + word.len()) {
            Some(w) if w == word => {
                self.at += word.len();
                Ok(value)
            }
            _ => Err("expected value"),
        }
    }

    fn value(&mut self, depth: usize) -> Step<Value> {
        self.skip_space();
        match self.peek() {
            None => Err("EOF while parsing a value"),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                self.at += 1;
                self.string().map(Value::String)
            }
            Some(b't') => self.keyword(b"true", Value::Bool(true)),
            Some(b'f') => self.keyword(b"false", Value::Bool(false)),
            Some(b'n') => self.keyword(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(_) => Err("expected value"),
        }
    }

    /// After `[` or `{` (not yet consumed): whether the container is empty,
    /// its `close` consumed too.
    fn open(&mut self, depth: usize, close: u8) -> Step<bool> {
        if depth > MAX_DEPTH {
            return Err("recursion limit exceeded");
        }
        self.at += 1;
        self.skip_space();
        let empty = self.peek() == Some(close);
        if empty {
            self.at += 1;
        }
        Ok(empty)
    }

    /// Consumes the next byte, which must be `want`.
    fn expect(&mut self, want: u8, at_end: &'static str, other: &'static str) -> Step<()> {
        match self.next() {
            Some(b) if b == want => Ok(()),
            None => Err(at_end),
            Some(_) => Err(other),
        }
    }

    /// After a member: `,` (false) or the container's `close` (true).
    fn member_end(&mut self, close: u8, at_end: &'static str, other: &'static str) -> Step<bool> {
        self.skip_space();
        match self.next() {
            Some(b',') => Ok(false),
            Some(b) if b == close => Ok(true),
            None => Err(at_end),
            Some(_) => Err(other),
        }
    }

    fn array(&mut self, depth: usize) -> Step<Value> {
        let mut items = Vec::new();
        if self.open(depth, b']')? {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            if self.member_end(b']', "EOF while parsing a list", "expected `,` or `]`")? {
                return Ok(Value::Array(items));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Step<Value> {
        const AT_END: &str = "EOF while parsing an object";
        let mut fields = Map::new();
        if self.open(depth, b'}')? {
            return Ok(Value::Object(fields));
        }
        loop {
            self.skip_space();
            self.expect(b'"', AT_END, "key must be a string")?;
            let name_at = self.at - 1; // its opening quote
            let name = self.string()?;
            self.skip_space();
            self.expect(b':', AT_END, "expected `:`")?;
            let value = self.value(depth)?;
            if fields.insert(name, value).is_some() {
                self.at = name_at;
                return Err("duplicate name in an object");
            }
            if self.member_end(b'}', AT_END, "expected `,` or `}`")? {
                return Ok(Value::Object(fields));
            }
        }
    }

    /// The rest of a string, after its opening quote.
    fn string(&mut self) -> Step<String> {
        let mut out = Vec::new();
        loop {
            // Copy the run up to the next quote, backslash or control byte.
            let rest = self.bytes.get(self.at..).unwrap_or_default();
            let run = rest
                .iter()
                .position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(rest.len());
            out.extend_from_slice(rest.get(..run).unwrap_or_default());
            self.at += run;
            match self.next() {
                None => return Err("EOF while parsing a string"),
                Some(b'"') => break,
                Some(b'\\') => {}
                Some(_) => {
                    self.at -= 1;
                    return Err("control character (\\u0000-\\u001F) found while parsing a string");
                }
            }
            let c = match self.next() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => self.unicode_escape()?,
                None => return Err("EOF while parsing a string"),
                Some(_) => return Err("invalid escape"),
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8 in a string")
    }

    /// After `\u`: four hex digits, and a second escape for a surrogate pair.
    fn unicode_escape(&mut self) -> Step<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                    return Err("lone leading surrogate in hex escape");
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err("lone leading surrogate in hex escape");
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err("lone trailing surrogate in hex escape"),
            other => other,
        };
        char::from_u32(code).ok_or("invalid unicode code point")
    }

    fn hex4(&mut self) -> Step<u32> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = match self.next() {
                Some(b) => char::from(b).to_digit(16),
                None => return Err("unexpected end of hex escape"),
            };
            code = code * 16 + digit.ok_or("invalid escape")?;
        }
        Ok(code)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Step<Number> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.digits() {
            0 => return Err("invalid number"),
            n if n > 1 && self.bytes.get(int_start) == Some(&b'0') => {
                self.at = int_start + 1;
                return Err("invalid number");
            }
            _ => {}
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integral = false;
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        let text = self.bytes.get(start..self.at).unwrap_or_default();
        if integral {
            let magnitude = text.get(usize::from(negative)..).unwrap_or_default();
            if let Some(m) = decimal_u64(magnitude) {
                if !negative {
                    return Ok(Number::from(m));
                }
                if m != 0 {
                    if let Some(n) = 0i64.checked_sub_unsigned(m) {
                        return Ok(Number::from(n));
                    }
                }
            }
        }
        Number::from_f64(to_f64(text)).ok_or("number out of range")
    }
}

/// `digits` (ASCII digits only) as a `u64`, `None` when it overflows.
fn decimal_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// A JSON number's text (already checked against the grammar) as an `f64`.
fn to_f64(text: &[u8]) -> f64 {
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa_text, exponent_text) = match text.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(i) => (
            text.get(..i).unwrap_or_default(),
            text.get(i + 1..).unwrap_or_default(),
        ),
        None => (text, &[][..]),
    };
    // Up to 19 significant digits in a u64; the power of ten absorbs the
    // rest and the position of the point.
    let mut mantissa = 0u64;
    let mut power: i64 = 0;
    let mut after_point = false;
    for b in mantissa_text {
        match b {
            b'.' => after_point = true,
            d => {
                if mantissa < 1_000_000_000_000_000_000 {
                    mantissa = mantissa * 10 + u64::from(d.wrapping_sub(b'0'));
                    power -= i64::from(after_point);
                } else {
                    power += i64::from(!after_point);
                }
            }
        }
    }
    let (exp_negative, exp_digits) = match exponent_text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, exponent_text),
    };
    // Saturate: anything past 10^±400 is infinite or zero anyway.
    let exponent = exp_digits.iter().fold(0i64, |n, d| {
        (n * 10 + i64::from(d.wrapping_sub(b'0'))).min(100_000)
    });
    power += if exp_negative { -exponent } else { exponent };
    let magnitude = scale(mantissa, power);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `mantissa × 10^power`. Exact (one correctly rounded operation on exact
/// operands) when the mantissa is below 2^53 and |power| <= 22.
fn scale(mantissa: u64, power: i64) -> f64 {
    let m = mantissa as f64;
    if mantissa == 0 {
        return 0.0;
    }
    if (-22..=22).contains(&power) && mantissa < 1 << 53 {
        let p = ten_to(power.unsigned_abs());
        return if power < 0 { m / p } else { m * p };
    }
    // Outside the exact range: in steps that keep the intermediate finite
    // as long as the result is.
    let mut value = m;
    let mut left = power;
    while left > 0 {
        let step = left.min(22);
        value *= ten_to(step.unsigned_abs());
        left -= step;
        if value.is_infinite() {
            break;
        }
    }
    while left < 0 {
        let step = (-left).min(22);
        value /= ten_to(step.unsigned_abs());
        left += step;
        if value == 0.0 {
            break;
        }
    }
    value
}

/// 10^n for n <= 22, exact in an f64.
fn ten_to(n: u64) -> f64 {
    (0..n).fold(1.0, |p, _| p * 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// serde_json is the independent reader ours is checked against.
    fn same_as_serde(text: &str) {
        let ours = parse(text.as_bytes());
        let theirs = serde_json::from_str::<Value>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{text}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    #[test]
    fn reads_documents_as_serde_json_does() {
        for text in [
            r#"{"tenancy":{"header":"x-tenant"},"tenants":{"acme":{"rate_limit":{"burst":5,"rate":2.5}}}}"#,
            r#" [1, -2, 3.25, -0.5, 1e3, 1E-2, 2.5e+2, 0, 18446744073709551615, -9223372036854775808] "#,
            r#"["\"\\\/\b\f\n\r\t", "\u00e9\u20ac", "\ud83d\ude00", "é€😀", ""]"#,
            r#"{"a":[{},[],{"b":null}],"c":true,"d":false}"#,
            "\t\r\n{}\n",
            "0.1",
            "123456789012345678",
            "-123456789012345678",
            "1e-400",
            "0.000001",
            "3.141592653589793",
            "1234567.125",
        ] {
            same_as_serde(text);
        }
    }

    #[test]
    fn big_integers_and_long_mantissas_become_close_floats() {
        for text in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.1234567890123456789012345",
            "1e300",
            "2.2250738585072014e-308",
            "1.7e308",
            "-4.5e-300",
        ] {
            let ours = parse(text.as_bytes()).unwrap().as_f64().unwrap();
            let theirs: f64 = text.parse().unwrap();
            assert!(
                ((ours - theirs) / theirs).abs() < 1e-14,
                "{text}: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "[1 2]",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "NaN",
            "Infinity",
            "1e999",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\u12\"",
            "\"a\u{1}b\"",
            "\"unterminated",
            "{} {}",
            "[] x",
            "// comment\n{}",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text:?} accepted");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        // Not UTF-8 inside a string.
        assert!(parse(b"\"\xff\"").is_err());
        assert!(serde_json::from_slice::<Value>(b"\"\xff\"").is_err());
    }

    #[test]
    fn a_repeated_name_is_refused_where_serde_json_keeps_the_last() {
        let text = "{\"burst\": 1,\n \"burst\": 2}";
        let e = parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "duplicate name in an object at line 2 column 2"
        );
        assert!(serde_json::from_str::<Value>(text).is_ok());
        // The same name in different objects is fine.
        assert!(parse(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn errors_say_where() {
        let e = parse(b"{\n  \"a\": [1, 2,,]\n}").unwrap_err();
        assert_eq!((e.message, e.line, e.column), ("expected value", 2, 14));
        let e = parse(b"{\"a\":1} x").unwrap_err();
        assert_eq!(e.to_string(), "trailing characters at line 1 column 9");
    }

    #[test]
    fn nesting_is_limited_like_serde_json() {
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().message,
            "recursion limit exceeded"
        );
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        let objects = "{\"a\":".repeat(200) + "1" + &"}".repeat(200);
        assert!(parse(objects.as_bytes()).is_err());
    }

    /// Random documents built from JSON fragments, valid and broken alike:
    /// accepted and read exactly as serde_json does (duplicates aside).
    #[test]
    fn random_fragments_agree_with_serde_json() {
        let parts = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"k\"",
            "\"k2\"",
            "1",
            "-0",
            "2.5e3",
            "true",
            "null",
            " ",
            "\"\\u00e9\"",
            "\"\\n\"",
            "0.1",
            "-7",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(seed % 9 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(parts.get((seed % parts.len() as u64) as usize).unwrap());
            }
            let ours = parse(text.as_bytes());
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => {
                    if let Ok(o) = ours {
                        assert_eq!(o, v, "{text}");
                    } else {
                        assert!(
                            text.matches("\"k\"").count() > 1 || text.matches("\"k2\"").count() > 1,
                            "{text}"
                        );
                    }
                }
                Err(_) => assert!(ours.is_err(), "{text} accepted"),
            }
        }
    }
}
