//! Configuration errors that name the JSON path of the offending value.

use std::fmt;

/// One problem in a profile, e.g. `tenants.acme.trace_context.sample_rate: must be <= 1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one pass; validation never stops at the first one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// Adds another pass's problems (each filter of the suite module checks
    /// the shared parts again; `finish` reports them once).
    pub fn merge(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }

    /// Sorted and de-duplicated: a bad `defaults` field is seen once per tenant
    /// while compiling but reported once.
    pub fn finish(mut self) -> Self {
        crate::order::sort(&mut self.0);
        self.0.dedup();
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Appends one key to a JSON path: plain identifiers with a dot, anything else
/// (hosts with dots, prefixes with slashes) quoted in brackets.
/// `parts` with `separator` between them: std's `join` instantiates about
/// 1 KB of code per element type (docs/PERFORMANCE.md, "Module sizes").
pub fn joined<S: AsRef<str>>(parts: &[S], separator: &str) -> String {
    let len = parts.iter().map(|p| p.as_ref().len()).sum::<usize>()
        + separator.len() * parts.len().saturating_sub(1);
    let mut out = String::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(part.as_ref());
    }
    out
}

pub fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", crate::jsontext::quoted(key)),
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn joins_plain_and_quoted_keys() {
        assert_eq!(join("", "tenants"), "tenants");
        assert_eq!(join("tenants", "acme"), "tenants.acme");
        assert_eq!(
            join("tenancy.hosts", "shop.acme.example"),
            "tenancy.hosts[\"shop.acme.example\"]"
        );
        assert_eq!(index("a.b", 3), "a.b[3]");
    }

    #[test]
    fn joined_is_std_join() {
        for parts in [&[][..], &["a"], &["a", ""], &["", "b", "c d"]] {
            assert_eq!(joined(parts, ", "), parts.join(", "));
            let owned: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
            assert_eq!(joined(&owned, "\n"), owned.join("\n"));
        }
    }

    #[test]
    fn errors_are_sorted_deduplicated_and_rendered_one_per_line() {
        let mut e = ConfigErrors::default();
        e.push("z", "late");
        e.push("a", "early");
        e.push("z", "late");
        let mut again = ConfigErrors::default();
        again.push("a", "early");
        e.merge(again);
        let e = e.finish();
        assert_eq!(e.len(), 2);
        assert_eq!(e.to_string(), "a: early\nz: late");
    }
}
