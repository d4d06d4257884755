//! A read-once view of a header map as Envoy hands it over (lowercase names,
//! duplicates kept in order).

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Headers {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Headers { pairs }
    }

    /// Builds from raw bytes: a value that is not UTF-8 is kept with U+FFFD in
    /// place of the bad bytes, so every validator downstream rejects it instead
    /// of the host adapter panicking on it.
    pub fn from_bytes(pairs: Vec<(String, Vec<u8>)>) -> Self {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| {
                let v = match String::from_utf8(v) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                };
                (k, v)
            })
            .collect();
        Headers { pairs }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name` from every `cookie` header (RFC 6265
    /// `name=value` pairs; surrounding double quotes removed).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.get_all("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    pub fn count(&self, name: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| k == name).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Applies one edit as Envoy applies it to its map: `Set` replaces every
    /// value (in place of the first), `Append` adds one, `Remove` drops all.
    /// Keeps a read shared by several filters in step with their edits.
    pub fn apply(&mut self, op: &crate::decision::HeaderOp<'_>) {
        use crate::decision::HeaderOp;
        match op {
            HeaderOp::Set(name, value) => {
                let name = name.to_ascii_lowercase();
                match self.pairs.iter().position(|(k, _)| *k == name) {
                    Some(first) => {
                        let mut i = 0;
                        self.pairs.retain(|(k, _)| {
                            let keep = *k != name || i == first;
                            i += 1;
                            keep
                        });
                        if let Some(pair) = self.pairs.get_mut(first) {
                            pair.1 = value.clone();
                        }
                    }
                    None => self.pairs.push((name, value.clone())),
                }
            }
            HeaderOp::Append(name, value) => {
                self.pairs.push((name.to_ascii_lowercase(), value.clone()));
            }
            HeaderOp::Remove(name) => {
                let name = name.to_ascii_lowercase();
                self.pairs.retain(|(k, _)| *k != name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn lookups_keep_duplicates_and_order() {
        let h = Headers::new(vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ]);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), vec!["1", "3"]);
        assert_eq!(h.count("a"), 2);
        assert!(h.contains("b") && !h.contains("c"));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn non_utf8_values_become_replacement_characters() {
        let h = Headers::from_bytes(vec![("x".into(), vec![b'a', 0xff, b'b'])]);
        assert_eq!(h.get("x"), Some("a\u{fffd}b"));
    }

    #[test]
    fn edits_apply_like_envoys_map() {
        use crate::decision::HeaderOp;
        let mut h = Headers::new(vec![
            ("a".into(), "1".into()),
            ("b".into(), "x".into()),
            ("a".into(), "2".into()),
        ]);
        h.apply(&HeaderOp::Set("A", "3".into()));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), vec!["3"]);
        assert_eq!(h.iter().next(), Some(("a", "3")), "replaced in place");
        h.apply(&HeaderOp::Append("b", "y".into()));
        assert_eq!(h.get_all("b").collect::<Vec<_>>(), vec!["x", "y"]);
        h.apply(&HeaderOp::Remove("b"));
        assert!(!h.contains("b"));
        h.apply(&HeaderOp::Set("c", "new".into()));
        assert_eq!(h.get("c"), Some("new"));
        assert_eq!(h.len(), 2);
    }
}
