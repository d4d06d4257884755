//! A read-once view of a header map as Envoy hands it over (lowercase names,
//! duplicates kept in order).

/// Where a name or value is: a span of the host's serialized map, or text
/// of its own (an edit, or a value that was not UTF-8).
#[derive(Debug, Clone)]
enum Text {
    Span(usize, usize),
    Own(String),
}

/// The header map. Read from the host, it keeps the host's one serialized
/// buffer and points into it: two allocations per read instead of two per
/// header (docs/PERFORMANCE.md).
#[derive(Debug, Default, Clone)]
pub struct Headers {
    /// The host's serialized map (proxy-wasm's layout, its binary count and
    /// lengths blanked) as text, checked once when read; empty otherwise.
    buf: String,
    pairs: Vec<(Text, Text)>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// Header names and hosts are almost always lowercase already (configured
/// names are lowered at configure time): borrow those, lower the rest.
pub(crate) fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Whether `t` (a span of `buf`, or its own text) is `name`. A free
/// function, so an edit can compare while it changes the pairs. Inlined
/// in the suite, built at opt-level "s", which would call it per pair (a
/// tenth of its instructions per request); the single modules stay small.
#[cfg_attr(feature = "suite", inline(always))]
fn names(buf: &str, t: &Text, name: &str) -> bool {
    let candidate = match t {
        Text::Span(from, to) => buf.as_bytes().get(*from..*to).unwrap_or_default(),
        Text::Own(s) => s.as_bytes(),
    };
    same_name(candidate, name.as_bytes())
}

/// Byte equality, the length and last byte first: most names a lookup
/// passes differ there (`x-…` names share their start), which skips the
/// call to `memcmp` (in wasm a real call) for them.
#[cfg_attr(feature = "suite", inline(always))]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.last() == b.last() && a == b
}

fn le_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    let b: [u8; 4] = b.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize)
}

impl Headers {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Headers {
            buf: String::new(),
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (Text::Own(k), Text::Own(v)))
                .collect(),
        }
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
                (Text::Own(k), Text::Own(v))
            })
            .collect();
        Headers {
            buf: String::new(),
            pairs,
        }
    }

    /// Builds on the host's serialized map: a count, then a (name length,
    /// value length) pair per header, all u32 little-endian, then each name
    /// and value followed by a NUL. Text that is not UTF-8 is kept with
    /// U+FFFD (as `from_bytes`); a buffer that ends early keeps the headers
    /// read so far (never a panic).
    pub fn from_serialized(mut buf: Vec<u8>) -> Self {
        let count = le_u32(&buf, 0).unwrap_or(0);
        // Each header takes at least 10 bytes: bounds a bogus count.
        let mut pairs = Vec::with_capacity(count.min(buf.len() / 10));
        let texts_start = count.saturating_mul(8).saturating_add(4);
        let mut at = texts_start;
        for n in 0..count {
            let lengths = n.checked_mul(8).and_then(|o| o.checked_add(4));
            let Some((name_len, value_len)) =
                lengths.and_then(|o| Some((le_u32(&buf, o)?, le_u32(&buf, o.checked_add(4)?)?)))
            else {
                break;
            };
            let Some(name_end) = at.checked_add(name_len) else {
                break;
            };
            let Some(value_start) = name_end.checked_add(1) else {
                break;
            };
            let Some(value_end) = value_start.checked_add(value_len) else {
                break;
            };
            if value_end > buf.len() {
                break;
            }
            pairs.push((Text::Span(at, name_end), Text::Span(value_start, value_end)));
            at = value_end.saturating_add(1);
        }
        // The count and lengths are binary, and what follows the last whole
        // header is unread: blank the one, drop the other, and the buffer is
        // text exactly when every name and value is UTF-8 (the NULs between
        // them are). One check here instead of one per header per lookup.
        let texts_start = texts_start.min(buf.len());
        if let Some(binary) = buf.get_mut(..texts_start) {
            binary.fill(0);
        }
        buf.truncate(at.max(texts_start));
        match String::from_utf8(buf) {
            Ok(buf) => Headers { buf, pairs },
            Err(e) => Self::with_replacements(e.as_bytes(), pairs),
        }
    }

    /// A read with text that is not UTF-8 (rare): every name and value
    /// copied into a new buffer, the bad bytes replaced.
    fn with_replacements(bytes: &[u8], mut pairs: Vec<(Text, Text)>) -> Self {
        let mut buf = String::with_capacity(bytes.len());
        let mut copy = |t: &mut Text| {
            if let Text::Span(from, to) = *t {
                let start = buf.len();
                buf.push_str(&String::from_utf8_lossy(
                    bytes.get(from..to).unwrap_or_default(),
                ));
                *t = Text::Span(start, buf.len());
            }
        };
        for (name, value) in pairs.iter_mut() {
            copy(name);
            copy(value);
        }
        Headers { buf, pairs }
    }

    #[cfg_attr(feature = "suite", inline(always))]
    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            // Spans of text checked when read (`from_serialized`).
            Text::Span(from, to) => self.buf.get(*from..*to).unwrap_or(""),
            Text::Own(s) => s,
        }
    }

    #[cfg_attr(feature = "suite", inline(always))]
    fn is(&self, t: &Text, name: &str) -> bool {
        names(&self.buf, t, name)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| self.is(k, name))
            .map(|(_, v)| self.text(v))
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| self.is(k, name))
            .map(|(_, v)| self.text(v))
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
        self.pairs.iter().filter(|(k, _)| self.is(k, name)).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| self.is(k, name))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (self.text(k), self.text(v)))
    }

    /// Applies one edit as Envoy applies it to its map: `Set` replaces every
    /// value (in place of the first), `Append` adds one, `Remove` drops all.
    /// Keeps a read shared by several filters in step with their edits.
    pub fn apply(&mut self, op: &crate::decision::HeaderOp<'_>) {
        use crate::decision::HeaderOp;
        match op {
            HeaderOp::Set(name, value) => {
                let name = lowercase(name);
                let buf = &self.buf;
                let is = |t: &Text| names(buf, t, &name);
                match self.pairs.iter().position(|(k, _)| is(k)) {
                    Some(first) => {
                        let mut i = 0;
                        self.pairs.retain(|(k, _)| {
                            let keep = !is(k) || i == first;
                            i += 1;
                            keep
                        });
                        if let Some(pair) = self.pairs.get_mut(first) {
                            pair.1 = Text::Own(value.to_string());
                        }
                    }
                    None => self
                        .pairs
                        .push((Text::Own(name.into_owned()), Text::Own(value.to_string()))),
                }
            }
            HeaderOp::Append(name, value) => {
                self.pairs.push((
                    Text::Own(lowercase(name).into_owned()),
                    Text::Own(value.to_string()),
                ));
            }
            HeaderOp::Remove(name) => {
                let name = lowercase(name);
                let buf = &self.buf;
                self.pairs.retain(|(k, _)| !names(buf, k, &name));
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

    /// The ABI's layout written out by hand (proxy-wasm spec, "header map
    /// pairs"): count, (name length, value length) per header, then each
    /// name and value with a NUL after it.
    fn serialized(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(*k);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_the_hosts_serialized_map() {
        // Two headers, bytes as the host sends them.
        let literal: Vec<u8> = [
            &[2, 0, 0, 0][..],
            &[5, 0, 0, 0, 3, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            b":path\0/ok\0a\0\0",
        ]
        .concat();
        let h = Headers::from_serialized(literal);
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![(":path", "/ok"), ("a", "")]
        );
        let h = Headers::from_serialized(serialized(&[
            (b":authority", b"shop.acme.example"),
            (b"cookie", b"a=1"),
            (b"x", &[b'a', 0xff, b'b']),
            (b"cookie", b"session=\"s\""),
        ]));
        assert_eq!(h.get(":authority"), Some("shop.acme.example"));
        assert_eq!(
            h.get_all("cookie").collect::<Vec<_>>(),
            ["a=1", "session=\"s\""]
        );
        assert_eq!(h.cookie("session"), Some("s"));
        assert_eq!(h.get("x"), Some("a\u{fffd}b"), "as from_bytes does");
        assert_eq!(h.len(), 4);
        assert_eq!(Headers::from_serialized(Vec::new()), Headers::default());
    }

    #[test]
    fn bad_bytes_outside_names_and_values_do_not_touch_them() {
        // A separator that is not NUL, and length bytes >= 0x80 (a 200-byte
        // value): neither is text, and neither may change a header.
        let long = vec![b'v'; 200];
        let mut bytes = serialized(&[(b"a", b"1"), (b"b", &long), (b"c", b"3")]);
        let separator = 4 + 3 * 8 + 1;
        assert_eq!(bytes[separator], 0);
        bytes[separator] = 0xff;
        let h = Headers::from_serialized(bytes);
        let long = String::from_utf8(long).unwrap();
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("b", long.as_str()), ("c", "3")]
        );
    }

    #[test]
    fn a_short_or_bogus_buffer_keeps_what_it_could_read() {
        let pairs: [(&[u8], &[u8]); 3] = [(b"a", b"1"), (b"bb", b"22"), (b"c", b"")];
        let full = serialized(&pairs);
        for cut in 0..full.len() {
            let h = Headers::from_serialized(full[..cut].to_vec());
            let read: Vec<(&str, &str)> = h.iter().collect();
            let expected: Vec<(&str, &str)> = [("a", "1"), ("bb", "22"), ("c", "")]
                .into_iter()
                .take(read.len())
                .collect();
            assert_eq!(read, expected, "cut at {cut}");
        }
        assert_eq!(Headers::from_serialized(full).len(), 3);
        let mut huge = serialized(&pairs);
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::from_serialized(huge).is_empty());
        let mut long = serialized(&pairs);
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::from_serialized(long).is_empty());
    }

    #[test]
    fn edits_apply_to_a_serialized_read() {
        use crate::decision::HeaderOp;
        let mut h =
            Headers::from_serialized(serialized(&[(b"a", b"1"), (b"b", b"x"), (b"a", b"2")]));
        h.apply(&HeaderOp::Set("A".into(), "3".into()));
        h.apply(&HeaderOp::Append("b".into(), "y".into()));
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("a", "3"), ("b", "x"), ("b", "y")]
        );
        h.apply(&HeaderOp::Remove("B".into()));
        assert_eq!(h, Headers::new(vec![("a".into(), "3".into())]));
    }

    #[test]
    fn edits_apply_like_envoys_map() {
        use crate::decision::HeaderOp;
        let mut h = Headers::new(vec![
            ("a".into(), "1".into()),
            ("b".into(), "x".into()),
            ("a".into(), "2".into()),
        ]);
        h.apply(&HeaderOp::Set("A".into(), "3".into()));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), vec!["3"]);
        assert_eq!(h.iter().next(), Some(("a", "3")), "replaced in place");
        h.apply(&HeaderOp::Append("b".into(), "y".into()));
        assert_eq!(h.get_all("b").collect::<Vec<_>>(), vec!["x", "y"]);
        h.apply(&HeaderOp::Remove("b".into()));
        assert!(!h.contains("b"));
        h.apply(&HeaderOp::Set("c".into(), "new".into()));
        assert_eq!(h.get("c"), Some("new"));
        assert_eq!(h.len(), 2);
    }
}
