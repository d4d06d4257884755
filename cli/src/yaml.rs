//! A small YAML writer for generated manifests (block style; every string is
//! written as a JSON string, which is valid YAML and never ambiguous).

use serde_json::Value;

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn key(k: &str) -> String {
    if plain_key(k) {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Array(a) if !a.is_empty()) || matches!(v, Value::Object(o) if !o.is_empty())
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                if is_block(child) {
                    out.push_str(&format!("{pad}{}:\n", key(k)));
                    let child_indent = if child.is_array() { indent } else { indent + 2 };
                    write(child, child_indent, out);
                } else {
                    out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(child)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    // First line of the item goes after "- ".
                    let mut inner = String::new();
                    write(item, indent + 2, &mut inner);
                    let trimmed = inner.get(indent + 2..).unwrap_or("");
                    out.push_str(&format!("{pad}- {trimmed}"));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// Documents separated by `---`.
pub fn documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write(d, 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_maps_and_lists_render_as_block_yaml() {
        let v = json!({"a": {"b": [1, {"c": "x y", "d": []}], "e": true}, "f g": "h"});
        assert_eq!(
            documents(&[v, json!({"k": "v"})]),
            "a:\n  b:\n  - 1\n  - c: \"x y\"\n    d: []\n  e: true\n\"f g\": \"h\"\n---\nk: \"v\"\n"
        );
    }
}
