//! Path normalization for matching: the one canonical form of a request path
//! that every encoding trick collapses to, so a rule cannot be bypassed.
//!
//! The normalized path is used only for matching; the request is forwarded
//! unchanged. Normalizing more aggressively than the upstream would can only
//! make a rule match more often, never less.

/// Why a path cannot be normalized (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEncoding,
    /// A NUL byte, raw or encoded.
    Nul,
    /// Still percent-encoded after `MAX_DECODE_ROUNDS` decodings.
    TooDeeplyEncoded,
}

/// Double encoding (`%252F`) is a classic bypass; triple is never legitimate.
pub const MAX_DECODE_ROUNDS: usize = 3;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XY` escape at `bytes[i]` encodes, if it is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    match bytes.get(i..i + 3) {
        Some([b'%', h, l]) => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

fn has_escape(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| escape_at(bytes, i).is_some())
}

/// One round of percent-decoding. Strict rounds reject a `%` that starts no
/// escape; later rounds treat it as a literal (it came from a decoded `%25`).
fn decode_round(bytes: &[u8], strict: bool) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Some(decoded) = escape_at(bytes, i) {
                out.push(decoded);
                i += 3;
                continue;
            }
            if strict {
                return Err(PathError::BadEncoding);
            }
        }
        out.push(b);
        i += 1;
    }
    Ok(out)
}

/// Normalizes the path of a `:path` value: query and fragment dropped,
/// percent-decoding repeated (double encoding), `\` read as `/`, `;`
/// parameters stripped from every segment, empty and `.` segments dropped,
/// `..` applied, no trailing slash; ASCII-lowercased if `lowercase`.
/// Always starts with `/`.
pub fn normalize(raw: &str, lowercase: bool) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let mut bytes = decode_round(path.as_bytes(), true)?;
    let mut rounds = 1;
    while has_escape(&bytes) {
        if rounds == MAX_DECODE_ROUNDS {
            return Err(PathError::TooDeeplyEncoded);
        }
        bytes = decode_round(&bytes, false)?;
        rounds += 1;
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in bytes.split(|&b| b == b'/' || b == b'\\') {
        let segment = segment.split(|&b| b == b';').next().unwrap_or(&[]);
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    if lowercase {
        out.make_ascii_lowercase();
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A path rule: `/debug/pprof` matches that path and everything below it
/// (segment boundary, so `/debug/pprofx` does not match); a trailing `*`
/// (`/.env*`) matches any path starting with the text before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Normalized (and lowercased when matching is case-insensitive).
    prefix: String,
    any_suffix: bool,
}

impl PathPattern {
    /// Compiles a configured pattern with the same normalization requests get,
    /// so `/Debug//pprof/` and `/debug/pprof` are the same rule.
    pub fn compile(text: &str, lowercase: bool) -> Result<PathPattern, String> {
        let (body, any_suffix) = match text.strip_suffix('*') {
            Some(b) => (b, true),
            None => (text, false),
        };
        if !body.starts_with('/') || body.contains(['?', '#', '*']) {
            return Err(format!(
                "\"{text}\": a path starts with \"/\", holds no query, and may end with one \"*\""
            ));
        }
        let prefix = normalize(body, lowercase)
            .map_err(|e| format!("\"{text}\" cannot be normalized: {e:?}"))?;
        // `/.env*` must keep matching `/.envrc`; normalize would keep it as is,
        // but `/app/*` normalizes to `/app` and should match below `/app` only.
        let any_suffix = any_suffix && !body.ends_with('/');
        Ok(PathPattern { prefix, any_suffix })
    }

    /// `path` must be normalized the same way the pattern was.
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some("") => true,
            Some(rest) => self.any_suffix || self.prefix == "/" || rest.starts_with('/'),
        }
    }

    /// The normalized path the pattern starts with (what another matcher,
    /// such as Envoy's RBAC in the benchmark's native chain, would use).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn len(&self) -> usize {
        self.prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, true)
    }

    #[test]
    fn every_bypass_variant_normalizes_to_the_rule() {
        for p in [
            "/debug/pprof",
            "/DEBUG/pprof",
            "//debug/pprof",
            "/debug/%70prof",
            "/debug%2Fpprof",
            "/debug%2fpprof",
            "/debug%252Fpprof",
            "/debug%5Cpprof",
            "/debug\\pprof",
            "/x/../debug/pprof",
            "/x/%2e%2e/debug/pprof",
            "/./debug/./pprof",
            "/debug/pprof;a=b",
            "/debug;x/pprof",
            "/debug/pprof/?x",
            "/debug/pprof#frag",
            "/../../debug/pprof",
        ] {
            assert_eq!(n(p).as_deref(), Ok("/debug/pprof"), "{p}");
        }
    }

    #[test]
    fn invalid_encodings_and_nul_are_errors() {
        assert_eq!(n("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%2"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
        assert_eq!(n("/a%2500b"), Err(PathError::Nul));
        assert_eq!(n("/a\0b"), Err(PathError::Nul));
        assert_eq!(n("/a%2525252Fb"), Err(PathError::TooDeeplyEncoded));
        // A literal percent that came from %25 is fine.
        assert_eq!(n("/100%25zz").as_deref(), Ok("/100%zz"));
    }

    #[test]
    fn case_is_kept_unless_asked() {
        assert_eq!(normalize("/A/B", false).as_deref(), Ok("/A/B"));
        assert_eq!(normalize("", false).as_deref(), Ok("/"));
        assert_eq!(normalize("*", false).as_deref(), Ok("/*"));
    }

    #[test]
    fn patterns_match_on_segment_boundaries_or_any_suffix() {
        let p = PathPattern::compile("/debug/pprof", true).unwrap();
        assert!(p.matches("/debug/pprof"));
        assert!(p.matches("/debug/pprof/heap"));
        assert!(!p.matches("/debug/pprofx"));
        assert!(!p.matches("/debug"));
        let env = PathPattern::compile("/.env*", true).unwrap();
        assert!(env.matches("/.env") && env.matches("/.env.bak") && env.matches("/.env/x"));
        assert!(!env.matches("/x/.env"));
        let root = PathPattern::compile("/", true).unwrap();
        assert!(root.matches("/anything"));
        let messy = PathPattern::compile("/Admin//x/", true).unwrap();
        assert!(messy.matches("/admin/x/y"));
        for bad in ["debug", "/a?b", "/a*b", "/a%zz", ""] {
            assert!(PathPattern::compile(bad, true).is_err(), "{bad}");
        }
    }
}
