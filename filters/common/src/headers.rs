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
}
