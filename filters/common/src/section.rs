//! Reading one filter's section of the profile with path-naming errors.
//!
//! A tenant's section overrides the `defaults` section field by field: a field
//! is read from the tenant's section when present there, else from `defaults`,
//! else the built-in default applies. Errors name the layer the value came from.

use crate::errors::{join, ConfigErrors};
use serde_json::{Map, Value};

/// One layer of a section: its JSON object and the path it lives at.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    pub fields: &'a Map<String, Value>,
    pub path: &'a str,
}

pub struct SectionReader<'a> {
    /// Most specific first: the tenant's section, then `defaults`.
    layers: Vec<Layer<'a>>,
    errors: &'a mut ConfigErrors,
    known: Vec<&'static str>,
}

/// How a numeric setting is read from JSON and how its bounds are written.
type NumberKind<T> = (fn(&serde_json::Number) -> Option<T>, fn(T) -> String);

impl<'a> SectionReader<'a> {
    pub fn new(layers: Vec<Layer<'a>>, errors: &'a mut ConfigErrors) -> Self {
        SectionReader {
            layers,
            errors,
            known: Vec::new(),
        }
    }

    /// The value of `key` from the most specific layer that sets it, with its path.
    pub fn raw(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.layers
            .iter()
            .find_map(|l| l.fields.get(key).map(|v| (v, join(l.path, key))))
    }

    /// Records an error at a path.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(path, message);
    }

    /// Where a field would be reported: the most specific layer's path.
    pub fn path_of(&self, key: &str) -> String {
        let base = self.layers.first().map(|l| l.path).unwrap_or("");
        join(base, key)
    }

    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some((Value::Bool(b), _)) => *b,
            Some((_, path)) => {
                self.error(path, "must be a boolean");
                default
            }
        }
    }

    /// A number in `min..=max`; `extract` picks the numeric type, `show`
    /// writes a bound, `kind` names the type in errors.
    fn number_in<T: PartialOrd + Copy>(
        &mut self,
        key: &'static str,
        default: T,
        (min, max): (T, T),
        (extract, show): NumberKind<T>,
        kind: &str,
    ) -> T {
        let Some((value, path)) = self.raw(key) else {
            return default;
        };
        match value {
            Value::Number(n) => match extract(n) {
                Some(v) if v < min => self.error(path, format!("must be >= {}", show(min))),
                Some(v) if v > max => self.error(path, format!("must be <= {}", show(max))),
                Some(v) => return v,
                None => self.error(path, format!("must be {kind}")),
            },
            _ => self.error(path, format!("must be {kind}")),
        }
        default
    }

    pub fn f64_in(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        self.number_in(
            key,
            default,
            (min, max),
            (serde_json::Number::as_f64, decimal),
            "a number",
        )
    }

    pub fn u64_in(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let kind = "a non-negative integer";
        let show = |v: u64| v.to_string();
        self.number_in(
            key,
            default,
            (min, max),
            (serde_json::Number::as_u64, show),
            kind,
        )
    }

    /// An optional integer in `min..=max`; absent or `null` -> None (feature off).
    pub fn opt_u64_in(&mut self, key: &'static str, min: u64, max: u64) -> Option<u64> {
        match self.raw(key) {
            None | Some((Value::Null, _)) => None,
            Some(_) => Some(self.u64_in(key, min, min, max)),
        }
    }

    /// An array of strings, each checked by `check`; absent -> `default`.
    /// Errors name the element: `path.key[2]`.
    pub fn string_list(
        &mut self,
        key: &'static str,
        default: &[&str],
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let Some((value, path)) = self.raw(key) else {
            return default.iter().map(|s| s.to_string()).collect();
        };
        let Value::Array(items) = value else {
            self.error(path, "must be an array of strings");
            return default.iter().map(|s| s.to_string()).collect();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => match check(s) {
                    Ok(()) => out.push(s.clone()),
                    Err(msg) => self.error(format!("{path}[{i}]"), msg),
                },
                _ => self.error(format!("{path}[{i}]"), "must be a string"),
            }
        }
        out
    }

    /// An array of objects (`routes`, `rules`, ...): each element is read by
    /// `each(reader, path, index)` with a reader of its own at `key[i]`, which reports unknown
    /// fields. `None` when the key is absent. `array` and `element` describe
    /// the expected shapes in errors (`must be <array>`, `must be <element>`).
    pub fn object_list<T>(
        &mut self,
        key: &'static str,
        array: &str,
        element: &str,
        mut each: impl FnMut(&mut SectionReader<'_>, &str, usize) -> Option<T>,
    ) -> Option<Vec<T>> {
        let (value, path) = self.raw(key)?;
        let Value::Array(items) = value else {
            self.error(path, format!("must be {array}"));
            return Some(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Value::Object(fields) = item else {
                self.error(item_path, format!("must be {element}"));
                continue;
            };
            let mut reader = self.nested(fields, &item_path);
            let read = each(&mut reader, &item_path, i);
            reader.finish();
            out.extend(read);
        }
        Some(out)
    }

    /// An array of named objects (`limits`, `faults`, `descriptors`): each
    /// read by `each` as `object_list` does, a repeated `name` reported at
    /// `key[i].name`, at most `max` of them. `what` names one element.
    pub fn unique_list<T>(
        &mut self,
        key: &'static str,
        what: &str,
        max: usize,
        mut each: impl FnMut(&mut SectionReader<'_>, &str) -> Option<T>,
        name: impl Fn(&T) -> &str,
    ) -> Option<Vec<T>> {
        let mut names: Vec<String> = Vec::new();
        let list = self.object_list(
            key,
            &format!("an array of {what} objects"),
            &format!("a {what} object"),
            |n, at, _| {
                let item = each(n, at)?;
                let item_name = name(&item);
                if names.iter().any(|x| x == item_name) {
                    n.error(
                        format!("{at}.name"),
                        format!("duplicate {what} name \"{item_name}\""),
                    );
                    return None;
                }
                names.push(item_name.to_string());
                Some(item)
            },
        )?;
        if list.len() > max {
            let at = self.path_of(key);
            self.error(at, format!("at most {max} {what}s per tenant"));
        }
        Some(list)
    }

    /// A reader over one nested object (an array element, say) at `path`,
    /// reporting into the same error list; call `finish` on it for unknown fields.
    pub fn nested<'b>(
        &'b mut self,
        fields: &'b Map<String, Value>,
        path: &'b str,
    ) -> SectionReader<'b> {
        SectionReader::new(vec![Layer { fields, path }], self.errors)
    }

    /// An optional string that must be one of `options` (absent or `null` ->
    /// None); the error lists the accepted values.
    pub fn one_of(&mut self, key: &'static str, options: &[&'static str]) -> Option<&'static str> {
        let value = self.opt_string(key, |v| {
            if options.contains(&v) {
                return Ok(());
            }
            let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
            let list = match quoted.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", crate::errors::joined(rest, ", ")),
                None => String::new(),
            };
            Err(format!("\"{v}\": expected {list}"))
        })?;
        options.iter().copied().find(|o| *o == value)
    }

    /// An optional string (absent or `null` -> None) checked by `check`.
    pub fn opt_string(
        &mut self,
        key: &'static str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        match self.raw(key) {
            None | Some((Value::Null, _)) => None,
            Some((Value::String(s), path)) => match check(s) {
                Ok(()) => Some(s.clone()),
                Err(msg) => {
                    self.error(path, msg);
                    None
                }
            },
            Some((_, path)) => {
                self.error(path, "must be a string or null");
                None
            }
        }
    }

    /// Reports fields no reader asked for, in every layer: unknown fields are errors.
    pub fn finish(self) {
        for layer in &self.layers {
            for key in layer.fields.keys() {
                if !self.known.contains(&key.as_str()) {
                    self.errors.push(
                        join(layer.path, key),
                        format!(
                            "unknown field (expected one of: {})",
                            crate::errors::joined(&self.known, ", ")
                        ),
                    );
                }
            }
        }
    }
}

/// An HTTP method as rules list it: an upper-case token.
/// A name that becomes a label (a limit's, a fault's, a descriptor's):
/// 1..32 characters of `[a-z0-9_-]`; `what` names the kind in the error.
pub fn check_name(what: &'static str) -> impl Fn(&str) -> Result<(), String> {
    move |n: &str| {
        let ok = !n.is_empty()
            && n.len() <= 32
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{n}\": {what} names are 1..32 chars of [a-z0-9_-]"
            ))
        }
    }
}

pub fn check_method(m: &str) -> Result<(), String> {
    if !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "\"{m}\": methods are upper-case tokens such as GET"
        ))
    }
}

/// A path prefix in a rule: starts with `/`.
pub fn check_path_prefix(p: &str) -> Result<(), String> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err("a path prefix starts with \"/\"".to_string())
    }
}

/// A rule's path, read the same way in every section: `prefix` (the path
/// and below it, on a segment boundary; a trailing `*` matches any suffix)
/// or `path` (that path only), and `case_sensitive` (default false: paths
/// match ignoring ASCII case, as case-insensitive backends route them).
/// `None` when neither is set (an error when `required`) or it is invalid.
pub fn read_path_rule(
    r: &mut SectionReader<'_>,
    item_path: &str,
    required: bool,
) -> Option<crate::path::PathPattern> {
    let prefix = r.opt_string("prefix", |_| Ok(()));
    let exact = r.opt_string("path", |_| Ok(()));
    let case_sensitive = r.bool("case_sensitive", false);
    let (text, is_exact, field) = match (prefix, exact) {
        (Some(p), None) => (p, false, "prefix"),
        (None, Some(p)) => (p, true, "path"),
        (None, None) => {
            if required {
                r.error(format!("{item_path}.prefix"), "is required (or \"path\")");
            }
            return None;
        }
        (Some(_), Some(_)) => {
            r.error(item_path.to_string(), "set one of prefix, path");
            return None;
        }
    };
    match crate::path::PathPattern::compile(&text, is_exact, !case_sensitive) {
        Ok(p) => Some(p),
        Err(msg) => {
            r.error(format!("{item_path}.{field}"), msg);
            None
        }
    }
}

/// Rules read from the array at `key`, each with its index there: a rule
/// that can never apply (the same path as an earlier one, and `same` other
/// conditions) is an error naming both (`what`: "route", "rule").
pub fn path_rules<T>(
    r: &mut SectionReader<'_>,
    key: &str,
    what: &str,
    items: Vec<(usize, crate::path::PathPattern, T)>,
    same: impl Fn(&T, &T) -> bool,
) -> crate::path::PathRules<T> {
    let indices: Vec<usize> = items.iter().map(|(i, _, _)| *i).collect();
    let rules = crate::path::PathRules::new(items.into_iter().map(|(_, p, t)| (p, t)).collect());
    let index = |i: usize| indices.get(i).copied().unwrap_or(i);
    for (earlier, later) in rules.shadowed(same) {
        let at = format!("{}[{}]", r.path_of(key), index(later));
        r.error(
            at,
            format!(
                "the same path as {key}[{}]: this {what} can never apply",
                index(earlier)
            ),
        );
    }
    rules
}

/// Parses one section object alone at `path` (filters' config tests): the
/// settings and every error, one per line.
pub fn parse_alone<S>(
    section: &Value,
    path: &str,
    parse: impl FnOnce(&mut SectionReader<'_>) -> S,
) -> (S, String) {
    let empty = Map::new();
    let fields = section.as_object().unwrap_or(&empty);
    let mut errors = ConfigErrors::default();
    let mut r = SectionReader::new(vec![Layer { fields, path }], &mut errors);
    let settings = parse(&mut r);
    r.finish();
    (settings, errors.finish().to_string())
}

/// HTTP header names as Envoy stores them: lowercase tokens.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be a lowercase header name ([a-z0-9-_.], 1..128 chars)".to_string())
    }
}

/// A bound in an error message, as Rust prints it for the bounds the
/// filters use (`0`, `0.01`, `1`, `100`: up to six decimals). Written here
/// because `Display for f64` links core's float printing (Grisu and Dragon
/// with their tables, about 20 KB) into every module with a float setting.
fn decimal(x: f64) -> String {
    let negative = x < 0.0;
    let micros = (x.abs() * 1e6).round() as u64;
    let (whole, mut frac) = (micros / 1_000_000, micros % 1_000_000);
    let mut out = if negative {
        format!("-{whole}")
    } else {
        whole.to_string()
    };
    if frac > 0 {
        let mut digits = 6;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        out.push_str(&format!(".{frac:0digits$}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Rust's own float printing is the reference.
    #[test]
    fn bounds_print_as_rust_prints_them() {
        for x in [0.0, 0.01, 0.5, 1.0, 100.0, 2.25, 0.000001, 12345.125, -0.5] {
            assert_eq!(decimal(x), format!("{x}"), "{x}");
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn tenant_layer_overrides_defaults_field_by_field() {
        let t = obj(json!({"rate": 0.5}));
        let d = obj(json!({"rate": 0.1, "on": false}));
        let mut errors = ConfigErrors::default();
        let mut r = SectionReader::new(
            vec![
                Layer {
                    fields: &t,
                    path: "tenants.a.s",
                },
                Layer {
                    fields: &d,
                    path: "defaults.s",
                },
            ],
            &mut errors,
        );
        assert_eq!(r.f64_in("rate", 1.0, 0.0, 1.0), 0.5);
        assert!(!r.bool("on", true));
        assert!(r.bool("missing", true));
        r.finish();
        assert!(errors.is_empty(), "{errors}");
    }

    #[test]
    fn errors_name_the_layer_the_value_came_from() {
        let t = obj(json!({"rate": "x", "typo": 1}));
        let d = obj(json!({"on": 3}));
        let mut errors = ConfigErrors::default();
        let mut r = SectionReader::new(
            vec![
                Layer {
                    fields: &t,
                    path: "tenants.a.s",
                },
                Layer {
                    fields: &d,
                    path: "defaults.s",
                },
            ],
            &mut errors,
        );
        r.f64_in("rate", 1.0, 0.0, 1.0);
        r.bool("on", true);
        r.finish();
        let text = errors.finish().to_string();
        assert!(text.contains("defaults.s.on: must be a boolean"), "{text}");
        assert!(
            text.contains("tenants.a.s.rate: must be a number"),
            "{text}"
        );
        assert!(text.contains("tenants.a.s.typo: unknown field"), "{text}");
    }

    #[test]
    fn ranges_are_enforced() {
        let t = obj(json!({"rate": 1.5, "n": 0}));
        let mut errors = ConfigErrors::default();
        let mut r = SectionReader::new(
            vec![Layer {
                fields: &t,
                path: "p",
            }],
            &mut errors,
        );
        r.f64_in("rate", 1.0, 0.0, 1.0);
        r.u64_in("n", 1, 1, 10);
        r.finish();
        let text = errors.finish().to_string();
        assert_eq!(text, "p.n: must be >= 1\np.rate: must be <= 1");
    }

    #[test]
    fn header_names_must_be_lowercase_tokens() {
        assert!(check_header_name("x-tenant-id").is_ok());
        assert!(check_header_name("X-Tenant").is_err());
        assert!(check_header_name("").is_err());
        assert!(check_header_name("a b").is_err());
    }

    #[test]
    fn one_of_names_every_accepted_value() {
        let (v, e) = parse_alone(&serde_json::json!({"m": "c"}), "t", |r| {
            r.one_of("m", &["a", "b"])
        });
        assert_eq!(v, None);
        assert_eq!(e, "t.m: \"c\": expected \"a\" or \"b\"");
        let (v, e) = parse_alone(&serde_json::json!({"m": "b"}), "t", |r| {
            r.one_of("m", &["a", "b", "c"])
        });
        assert_eq!((v, e.as_str()), (Some("b"), ""));
        let (v, _) = parse_alone(&serde_json::json!({}), "t", |r| r.one_of("m", &["a"]));
        assert_eq!(v, None);
    }
}
