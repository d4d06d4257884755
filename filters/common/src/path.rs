//! The canonical reading of a request path, and the one path matcher every
//! filter uses.
//!
//! Backends read the same `:path` differently: one decodes `%2F` before
//! routing and another does not, Tomcat strips `;params`, Express routes on
//! the raw text, Windows servers read `\` as `/`. A rule judged on one
//! reading can be walked around through another. So a path is read once:
//! its *forms* (every construct that backends read differently) are found,
//! and a tenant either refuses them (the default: 400) or opts in, and then
//! every rule is judged on every plausible reading of the path.
//!
//! A path with no such form has exactly one reading: itself, with the
//! percent-escapes of ordinary characters (`%20`, `%C3%A9`) decoded.

use std::fmt;

/// Constructs backends read differently (RFC 3986 §2, §3.3, §5.2.4 and the
/// known classes of proxy/backend confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Form {
    /// A complete `.` or `..` segment (Express and Envoy without
    /// `normalize_path` keep it; most servers resolve it).
    DotSegment = 1 << 0,
    /// `//`: merged by nginx and Envoy's `merge_slashes`, kept by others.
    EmptySegment = 1 << 1,
    /// A raw `\`: a separator to Windows servers and some Java stacks.
    Backslash = 1 << 2,
    /// A raw `;` (matrix parameters: stripped by Tomcat/Jetty/Spring).
    Semicolon = 1 << 3,
    /// `%2F`: a separator once decoded (Starlette, Flask, nginx), data to others.
    EncodedSlash = 1 << 4,
    /// `%5C`.
    EncodedBackslash = 1 << 5,
    /// `%3B`.
    EncodedSemicolon = 1 << 6,
    /// `%2E`: a dot segment once decoded.
    EncodedDot = 1 << 7,
    /// `%25`: a second round of decoding reads another path.
    EncodedPercent = 1 << 8,
    /// A percent-encoded unreserved character (`%78` for `x`): decoded by
    /// some routers before matching and not by others.
    EncodedUnreserved = 1 << 9,
    /// Bytes that are not UTF-8 once decoded (overlong forms such as `%C0%AE`).
    NonUtf8 = 1 << 10,
    /// Characters that Unicode compatibility folding turns into ASCII
    /// (fullwidth `／`, `．`, `Ａ`; division slash `∕`).
    Confusable = 1 << 11,
}

/// Every form, in the order names are listed.
pub const FORMS: &[(Form, &str, &str)] = &[
    (Form::DotSegment, "dot_segment", "dot segment"),
    (Form::EmptySegment, "empty_segment", "empty segment (//)"),
    (Form::Backslash, "backslash", "backslash"),
    (Form::Semicolon, "semicolon", "semicolon parameter"),
    (Form::EncodedSlash, "encoded_slash", "encoded slash (%2F)"),
    (
        Form::EncodedBackslash,
        "encoded_backslash",
        "encoded backslash (%5C)",
    ),
    (
        Form::EncodedSemicolon,
        "encoded_semicolon",
        "encoded semicolon (%3B)",
    ),
    (Form::EncodedDot, "encoded_dot", "encoded dot (%2E)"),
    (
        Form::EncodedPercent,
        "encoded_percent",
        "encoded percent (%25, multiple encoding)",
    ),
    (
        Form::EncodedUnreserved,
        "encoded_unreserved",
        "percent-encoded unreserved character",
    ),
    (Form::NonUtf8, "non_utf8", "bytes that are not UTF-8"),
    (
        Form::Confusable,
        "confusable",
        "Unicode character that folds to ASCII",
    ),
];

impl Form {
    /// The profile's name for the form (`allow_ambiguous_paths`).
    pub fn name(self) -> &'static str {
        FORMS
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("", |(_, n, _)| n)
    }

    /// Said in a 400's detail: what was found, never the path itself.
    pub fn describe(self) -> &'static str {
        FORMS
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("", |(_, _, d)| d)
    }

    pub fn by_name(name: &str) -> Option<Form> {
        FORMS
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, _)| *f)
    }
}

/// A set of forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forms(u16);

impl Forms {
    pub const NONE: Forms = Forms(0);
    pub const ALL: Forms = Forms(u16::MAX);

    pub fn add(&mut self, form: Form) {
        self.0 |= form as u16;
    }

    pub fn has(self, form: Form) -> bool {
        self.0 & form as u16 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The forms of `self` that `allowed` does not contain.
    pub fn outside(self, allowed: Forms) -> Forms {
        Forms(self.0 & !allowed.0)
    }

    /// The first form of the set, in `FORMS` order.
    pub fn first(self) -> Option<Form> {
        FORMS.iter().map(|(f, _, _)| *f).find(|f| self.has(*f))
    }
}

/// A path no backend can read sensibly: always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `%` not followed by two hex digits.
    BadEncoding,
    /// A control character, space or NUL, raw or encoded.
    ControlCharacter,
    /// Neither origin form (`/...`) nor `*`.
    NotOriginForm,
}

impl Invalid {
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::BadEncoding => "invalid percent-encoding",
            Invalid::ControlCharacter => "control character in the path",
            Invalid::NotOriginForm => "the path must start with \"/\"",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One way of reading the path, and its ASCII-lowercased copy (for rules
/// that match case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub path: String,
    pub lower: String,
}

impl Reading {
    fn new(path: String) -> Reading {
        let lower = path.to_ascii_lowercase();
        Reading { path, lower }
    }

    /// The text a rule compares: lowercased for a case-insensitive rule.
    pub fn text(&self, case_insensitive: bool) -> &str {
        if case_insensitive {
            &self.lower
        } else {
            &self.path
        }
    }
}

/// The request's path as the filters judge it: the canonical reading first,
/// then (only for forms the tenant allowed) every other plausible reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    readings: Vec<Reading>,
    forms: Forms,
}

impl Default for RequestPath {
    fn default() -> Self {
        RequestPath {
            readings: vec![Reading::new("/".to_string())],
            forms: Forms::NONE,
        }
    }
}

impl RequestPath {
    /// Reads a `:path` value (query and fragment are not part of the path).
    pub fn read(raw: &str) -> Result<RequestPath, Invalid> {
        let path = raw.split(['?', '#']).next().unwrap_or("");
        if path == "*" {
            return Ok(RequestPath {
                readings: vec![Reading::new("*".to_string())],
                forms: Forms::NONE,
            });
        }
        if !path.starts_with('/') {
            return Err(Invalid::NotOriginForm);
        }
        let forms = scan(path.as_bytes())?;
        let canonical = reading_of(path.as_bytes(), Decode::Safe, Variant::CANONICAL)?;
        Ok(RequestPath {
            readings: vec![canonical],
            forms,
        })
    }

    /// A path built from a rule or a test: read, with every form allowed.
    pub fn read_all(raw: &str) -> Result<RequestPath, Invalid> {
        let mut p = RequestPath::read(raw)?;
        p.allow(raw, Forms::ALL)?;
        Ok(p)
    }

    /// The forms the path holds.
    pub fn forms(&self) -> Forms {
        self.forms
    }

    /// Adds every plausible reading of the forms in `allowed` (the caller
    /// checked that the path holds no other form). `raw` is the `:path`
    /// this was read from.
    pub fn allow(&mut self, raw: &str, allowed: Forms) -> Result<(), Invalid> {
        let present = Forms(self.forms.0 & allowed.0);
        if present.is_empty() {
            return Ok(());
        }
        let path = raw.split(['?', '#']).next().unwrap_or("");
        let mut decodes = vec![Decode::Raw, Decode::Safe, Decode::Once];
        if present.has(Form::EncodedPercent) {
            decodes.push(Decode::Twice);
        }
        for decode in decodes {
            for variant in Variant::all() {
                let r = reading_of(path.as_bytes(), decode, variant)?;
                if !self.readings.contains(&r) {
                    self.readings.push(r);
                }
            }
        }
        Ok(())
    }

    /// The canonical reading: tenancy and logs use it.
    pub fn canonical(&self) -> &Reading {
        // `read` always makes one.
        self.readings.first().unwrap_or(&EMPTY_READING)
    }

    /// Every reading, the canonical one first.
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }
}

static EMPTY_READING: Reading = Reading {
    path: String::new(),
    lower: String::new(),
};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    match bytes.get(i..i + 3) {
        Some([b'%', h, l]) => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~'
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b' '
}

/// Characters Unicode compatibility folding (NFKC) turns into ASCII that
/// matters to a path: the fullwidth ASCII block and slash/dot look-alikes.
fn is_confusable(c: char) -> bool {
    matches!(
        c,
        '\u{FF01}'
            ..='\u{FF5E}'
                | '\u{2215}'
                | '\u{2044}'
                | '\u{FE68}'
                | '\u{FE52}'
                | '\u{2024}'
                | '\u{2025}'
    )
}

/// Finds every form in a raw path (origin form, query removed).
fn scan(bytes: &[u8]) -> Result<Forms, Invalid> {
    let mut forms = Forms::NONE;
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if is_control(b) {
            return Err(Invalid::ControlCharacter);
        }
        match b {
            b'%' => {
                let d = escape_at(bytes, i).ok_or(Invalid::BadEncoding)?;
                if is_control(d) && d != b' ' {
                    return Err(Invalid::ControlCharacter);
                }
                match d {
                    b'/' => forms.add(Form::EncodedSlash),
                    b'\\' => forms.add(Form::EncodedBackslash),
                    b';' => forms.add(Form::EncodedSemicolon),
                    b'.' => forms.add(Form::EncodedDot),
                    b'%' => forms.add(Form::EncodedPercent),
                    d if is_unreserved(d) => forms.add(Form::EncodedUnreserved),
                    _ => {}
                }
                decoded.push(d);
                i += 3;
                continue;
            }
            b'\\' => forms.add(Form::Backslash),
            b';' => forms.add(Form::Semicolon),
            _ => {}
        }
        decoded.push(b);
        i += 1;
    }
    // Segments of the raw text (the leading "/" opens the first one).
    let segments: Vec<&[u8]> = bytes.split(|&b| b == b'/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            b"." | b".." => forms.add(Form::DotSegment),
            // A trailing slash ends the path with one empty segment: normal.
            b"" if n != last => forms.add(Form::EmptySegment),
            _ => {}
        }
    }
    match std::str::from_utf8(&decoded) {
        Ok(text) => {
            if text.chars().any(is_confusable) {
                forms.add(Form::Confusable);
            }
        }
        Err(_) => forms.add(Form::NonUtf8),
    }
    Ok(forms)
}

/// How far percent-escapes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// None (Express and Envoy's router match the raw text); hex digits
    /// upper-cased.
    Raw,
    /// Escapes of characters that cannot change the path's structure;
    /// `%2F %5C %3B %25` stay as they are (RFC 3986 §6.2.2.2 decodes only
    /// what is equivalent).
    Safe,
    /// Every escape, once (Starlette, Flask, nginx).
    Once,
    /// Every escape, twice (a decoding proxy in front of a decoding backend).
    Twice,
}

/// The structural readings applied after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    backslash_is_slash: bool,
    strip_params: bool,
    merge_slashes: bool,
    resolve_dots: bool,
    fold_confusables: bool,
}

impl Variant {
    const CANONICAL: Variant = Variant {
        backslash_is_slash: false,
        strip_params: false,
        merge_slashes: false,
        resolve_dots: true,
        fold_confusables: false,
    };

    fn all() -> impl Iterator<Item = Variant> {
        (0u8..32).map(|bits| Variant {
            backslash_is_slash: bits & 1 != 0,
            strip_params: bits & 2 != 0,
            merge_slashes: bits & 4 != 0,
            resolve_dots: bits & 8 == 0,
            fold_confusables: bits & 16 != 0,
        })
    }
}

fn decode(bytes: &[u8], how: Decode) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if let Some(d) = escape_at(bytes, i) {
            let keep = how == Decode::Raw
                || (how == Decode::Safe && matches!(d, b'/' | b'\\' | b';' | b'%'));
            if keep {
                // Upper-case hex: `%2f` and `%2F` are one reading.
                let mut escape = String::with_capacity(3);
                escape.push('%');
                crate::digits::push_hex(&mut escape, u128::from(d), 2);
                out.extend(escape.to_ascii_uppercase().bytes());
            } else {
                out.push(d);
            }
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    if how == Decode::Twice {
        // The second round reads what the first produced; a `%` that starts
        // no escape there is a literal.
        return decode(&out, Decode::Once);
    }
    out
}

fn reading_of(bytes: &[u8], how: Decode, v: Variant) -> Result<Reading, Invalid> {
    let mut bytes = decode(bytes, how);
    if bytes.iter().any(|&b| is_control(b) && b != b' ') {
        return Err(Invalid::ControlCharacter);
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if v.fold_confusables {
        text = text
            .chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{2215}' | '\u{2044}' => '/',
                '\u{FE68}' => '\\',
                '\u{FE52}' => '.',
                '\u{2024}' => '.',
                _ => c,
            })
            .collect();
    }
    bytes = text.into_bytes();
    if v.backslash_is_slash {
        for b in bytes.iter_mut() {
            if *b == b'\\' {
                *b = b'/';
            }
        }
    }
    let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'/').skip(1).collect();
    if v.strip_params {
        for s in segments.iter_mut() {
            *s = s.split(|&b| b == b';').next().unwrap_or(&[]);
        }
    }
    if v.merge_slashes {
        let last = segments.len().saturating_sub(1);
        let mut n = 0;
        segments.retain(|s| {
            let keep = !s.is_empty() || n == last;
            n += 1;
            keep
        });
    }
    let out = if v.resolve_dots {
        remove_dot_segments(&segments)
    } else {
        join(&segments)
    };
    Ok(Reading::new(String::from_utf8_lossy(&out).into_owned()))
}

fn join(segments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path given as its segments: only complete
/// `.` and `..` segments are dot segments; a path ending in one ends in `/`.
fn remove_dot_segments(segments: &[&[u8]]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    for (n, s) in segments.iter().enumerate() {
        match *s {
            b"." => {
                if n == last {
                    kept.push(b"");
                }
            }
            b".." => {
                kept.pop();
                if n == last {
                    kept.push(b"");
                }
            }
            s => kept.push(s),
        }
    }
    join(&kept)
}

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// The path itself (a trailing `/` aside).
    Exact,
    /// The path and everything below it, on a segment boundary:
    /// `/debug/pprof` matches `/debug/pprof/heap`, not `/debug/pprofx`.
    Prefix,
    /// Any path starting with the text (`/.env*` matches `/.envrc`).
    AnySuffix,
}

/// A path rule: the one matcher of tenancy prefixes, protected paths,
/// authentication rules and route limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Canonical, and lowercased when the rule ignores case.
    text: String,
    kind: PatternKind,
    case_insensitive: bool,
}

impl PathPattern {
    /// `text` as configured: a prefix, or with a trailing `*` any suffix;
    /// `exact` asks for the path itself. The text is read like a request
    /// path with every form resolved, so `/Admin//x/` is `/admin/x`.
    pub fn compile(text: &str, exact: bool, case_insensitive: bool) -> Result<PathPattern, String> {
        let (body, any_suffix) = match text.strip_suffix('*') {
            Some(b) if !exact => (b, true),
            _ => (text, false),
        };
        if !body.starts_with('/') || body.contains(['?', '#', '*']) {
            return Err(format!(
                "\"{text}\": a path starts with \"/\", holds no query, and may end with one \"*\""
            ));
        }
        let mut segments_text = decode(body.as_bytes(), Decode::Once);
        for b in segments_text.iter_mut() {
            if *b == b'\\' {
                *b = b'/';
            }
        }
        let segments: Vec<&[u8]> = segments_text
            .split(|&b| b == b'/')
            .skip(1)
            .filter(|s| !s.is_empty())
            .collect();
        if segments_text.iter().any(|&b| is_control(b) && b != b' ') {
            return Err(format!("\"{text}\": holds a control character"));
        }
        let mut canonical = String::from_utf8_lossy(&remove_dot_segments(&segments)).into_owned();
        // `/app/*` and `/app/` mean below `/app`: a prefix on its boundary.
        let kind = if exact {
            PatternKind::Exact
        } else if any_suffix && !body.ends_with('/') {
            PatternKind::AnySuffix
        } else {
            PatternKind::Prefix
        };
        if kind != PatternKind::AnySuffix && canonical.len() > 1 && canonical.ends_with('/') {
            canonical.pop();
        }
        if case_insensitive {
            canonical.make_ascii_lowercase();
        }
        Ok(PathPattern {
            text: canonical,
            kind,
            case_insensitive,
        })
    }

    /// The canonical text (what another matcher, such as Envoy's RBAC in
    /// the benchmark's native chain, would use).
    pub fn prefix(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// How specific a match is (`None`: no match): longer texts win, an
    /// exact rule beats a prefix of the same text.
    pub fn specificity(&self, reading: &Reading) -> Option<usize> {
        let path = reading.text(self.case_insensitive);
        let matched = match self.kind {
            PatternKind::Exact => {
                path == self.text
                    || path
                        .strip_suffix('/')
                        .is_some_and(|p| p == self.text && !p.is_empty())
            }
            PatternKind::AnySuffix => path.starts_with(self.text.as_str()),
            PatternKind::Prefix => match path.strip_prefix(self.text.as_str()) {
                None => false,
                Some("") => true,
                Some(rest) => self.text == "/" || rest.starts_with('/'),
            },
        };
        matched.then(|| self.text.len() * 2 + usize::from(self.kind == PatternKind::Exact))
    }

    pub fn matches(&self, reading: &Reading) -> bool {
        self.specificity(reading).is_some()
    }

    /// Whether the path matches under any of its readings.
    pub fn matches_any(&self, path: &RequestPath) -> bool {
        path.readings().iter().any(|r| self.matches(r))
    }
}

/// Rules keyed by path: the most specific match wins (longest text, an
/// exact rule before a prefix of the same text), then list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRules<T> {
    rules: Vec<(PathPattern, T)>,
}

impl<T> Default for PathRules<T> {
    fn default() -> Self {
        PathRules { rules: Vec::new() }
    }
}

impl<T> PathRules<T> {
    pub fn new(rules: Vec<(PathPattern, T)>) -> Self {
        PathRules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(PathPattern, T)> {
        self.rules.iter()
    }

    /// The best rule for one reading among those `usable` accepts.
    pub fn best_where(&self, reading: &Reading, usable: impl Fn(&T) -> bool) -> Option<&T> {
        let mut best: Option<(usize, &T)> = None;
        for (pattern, value) in &self.rules {
            if let Some(score) = pattern.specificity(reading) {
                if usable(value) && best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, value));
                }
            }
        }
        best.map(|(_, v)| v)
    }

    pub fn best(&self, reading: &Reading) -> Option<&T> {
        self.best_where(reading, |_| true)
    }

    /// The best rule under each reading of the path, canonical first.
    pub fn best_each<'a>(
        &'a self,
        path: &'a RequestPath,
    ) -> impl Iterator<Item = Option<&'a T>> + 'a {
        path.readings().iter().map(|r| self.best(r))
    }

    /// Rules that can never apply: a later rule with the same pattern as an
    /// earlier one (`same` says whether their other conditions are equal).
    /// Returns `(earlier, later)` index pairs.
    pub fn shadowed(&self, same: impl Fn(&T, &T) -> bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, (pj, vj)) in self.rules.iter().enumerate() {
            let earlier = self
                .rules
                .iter()
                .take(j)
                .position(|(pi, vi)| pi == pj && same(vi, vj));
            if let Some(i) = earlier {
                out.push((i, j));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn forms_of(p: &str) -> Vec<&'static str> {
        let forms = RequestPath::read(p).unwrap().forms();
        FORMS
            .iter()
            .filter(|(f, _, _)| forms.has(*f))
            .map(|(_, n, _)| *n)
            .collect()
    }

    fn all_readings(p: &str) -> Vec<String> {
        RequestPath::read_all(p)
            .unwrap()
            .readings()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    #[test]
    fn plain_paths_have_one_reading_and_no_form() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/caf%C3%A9",
            "/a%20b?x=%2F",
            "/a.b/..c/.d",
        ] {
            let r = RequestPath::read(p).unwrap();
            assert!(r.forms().is_empty(), "{p}: {:?}", r.forms());
            assert_eq!(r.readings().len(), 1);
        }
        assert_eq!(
            RequestPath::read("/caf%C3%A9").unwrap().canonical().path,
            "/café"
        );
        assert_eq!(
            RequestPath::read("/a%20b?q").unwrap().canonical().path,
            "/a b"
        );
        assert_eq!(RequestPath::read("/A/B").unwrap().canonical().lower, "/a/b");
    }

    #[test]
    fn every_ambiguous_construct_is_a_form() {
        let cases: &[(&str, &[&str])] = &[
            ("/a/../b", &["dot_segment"]),
            ("/a/./b", &["dot_segment"]),
            ("/a/..", &["dot_segment"]),
            ("//a", &["empty_segment"]),
            ("/a//b", &["empty_segment"]),
            ("/a\\b", &["backslash"]),
            ("/a;x/b", &["semicolon"]),
            ("/debug/pprof/..;/", &["semicolon"]),
            ("/a%2fb", &["encoded_slash"]),
            ("/a%5Cb", &["encoded_backslash"]),
            ("/a..%3b/b", &["encoded_semicolon"]),
            ("/a/%2e%2e/b", &["encoded_dot"]),
            ("/a%252fb", &["encoded_percent"]),
            ("/t/%78/y", &["encoded_unreserved"]),
            ("/%c0%ae%c0%ae/x", &["non_utf8"]),
            ("/a\u{FF0F}b", &["confusable"]),
            ("/%EF%BC%8Fadmin", &["confusable"]),
            ("/a%2f..%2fb", &["encoded_slash"]),
            ("//..", &["dot_segment", "empty_segment"]),
        ];
        for (p, want) in cases {
            assert_eq!(&forms_of(p), want, "{p}");
        }
    }

    #[test]
    fn invalid_paths_are_refused() {
        assert_eq!(RequestPath::read("/a%zz"), Err(Invalid::BadEncoding));
        assert_eq!(RequestPath::read("/a%2"), Err(Invalid::BadEncoding));
        assert_eq!(RequestPath::read("/a%00"), Err(Invalid::ControlCharacter));
        assert_eq!(
            RequestPath::read("/a%0d%0a"),
            Err(Invalid::ControlCharacter)
        );
        assert_eq!(
            RequestPath::read("/a\u{7f}"),
            Err(Invalid::ControlCharacter)
        );
        assert_eq!(RequestPath::read("a/b"), Err(Invalid::NotOriginForm));
        assert_eq!(RequestPath::read(""), Err(Invalid::NotOriginForm));
        assert_eq!(RequestPath::read("*").unwrap().canonical().path, "*");
        // A NUL behind double encoding is found when that reading is made.
        let mut p = RequestPath::read("/a%2500").unwrap();
        assert_eq!(
            p.allow("/a%2500", Forms(u16::MAX)),
            Err(Invalid::ControlCharacter)
        );
    }

    #[test]
    fn dot_segments_resolve_per_rfc_3986() {
        // RFC 3986 §5.4's examples, as absolute paths.
        for (p, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../x", "/x"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(RequestPath::read(p).unwrap().canonical().path, want, "{p}");
        }
    }

    #[test]
    fn readings_cover_what_backends_do() {
        let r = all_readings("/debug/pprof/..;/");
        assert!(r.contains(&"/debug/".to_string()), "{r:?}"); // Tomcat
        assert!(r.contains(&"/debug/pprof/..;/".to_string()), "{r:?}"); // Express
        let r = all_readings("/public/..%2fadmin");
        assert!(r.contains(&"/admin".to_string()), "{r:?}"); // decoding router
        assert!(r.contains(&"/public/..%2Fadmin".to_string()), "{r:?}");
        let r = all_readings("/a%252fb");
        assert!(r.contains(&"/a/b".to_string()), "{r:?}");
        assert!(r.contains(&"/a%2fb".to_string()), "{r:?}");
        let r = all_readings("/x\\..\\admin");
        assert!(r.contains(&"/admin".to_string()), "{r:?}");
        let r = all_readings("//a/../b");
        assert!(
            r.contains(&"/b".to_string()) && r.contains(&"//b".to_string()),
            "{r:?}"
        );
        let r = all_readings("/\u{FF41}dmin");
        assert!(r.contains(&"/admin".to_string()), "{r:?}");
        let r = all_readings("/private/../public");
        assert!(r.contains(&"/public".to_string()), "{r:?}");
        assert!(r.contains(&"/private/../public".to_string()), "{r:?}");
    }

    fn p(text: &str, ci: bool) -> PathPattern {
        PathPattern::compile(text, false, ci).unwrap()
    }

    fn reading(path: &str) -> Reading {
        RequestPath::read(path).unwrap().canonical().clone()
    }

    #[test]
    fn patterns_match_on_segment_boundaries_any_suffix_or_exactly() {
        let pprof = p("/debug/pprof", true);
        assert!(pprof.matches(&reading("/debug/pprof")));
        assert!(pprof.matches(&reading("/debug/pprof/heap")));
        assert!(pprof.matches(&reading("/DEBUG/Pprof")));
        assert!(!pprof.matches(&reading("/debug/pprofx")));
        assert!(!pprof.matches(&reading("/debug")));
        let sensitive = p("/Debug", false);
        assert!(!sensitive.matches(&reading("/debug")));
        let env = p("/.env*", true);
        assert!(env.matches(&reading("/.env")) && env.matches(&reading("/.envrc")));
        assert!(!env.matches(&reading("/x/.env")));
        assert!(p("/", true).matches(&reading("/anything")));
        assert!(p("/Admin//x/", true).matches(&reading("/admin/x/y")));
        assert!(p("/app/*", true).matches(&reading("/app/z")));
        assert!(!p("/app/*", true).matches(&reading("/apple")));
        let exact = PathPattern::compile("/healthz", true, true).unwrap();
        assert!(exact.matches(&reading("/healthz")) && exact.matches(&reading("/healthz/")));
        assert!(!exact.matches(&reading("/healthz/x")));
        let public = p("/public", true);
        assert!(!public.matches(&reading("/publicity")));
        for bad in ["debug", "/a?b", "/a*b", ""] {
            assert!(PathPattern::compile(bad, false, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins_then_list_order() {
        let rules = PathRules::new(vec![
            (p("/metrics", true), "broad"),
            (p("/metrics/public", true), "narrow"),
            (
                PathPattern::compile("/metrics", true, true).unwrap(),
                "exact",
            ),
            (p("/metrics", true), "shadowed"),
        ]);
        assert_eq!(rules.best(&reading("/metrics/public/x")), Some(&"narrow"));
        assert_eq!(rules.best(&reading("/metrics")), Some(&"exact"));
        assert_eq!(rules.best(&reading("/metrics/x")), Some(&"broad"));
        assert_eq!(rules.best(&reading("/other")), None);
        assert_eq!(rules.shadowed(|_, _| true), vec![(0, 3)]);
    }
}
