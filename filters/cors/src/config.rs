//! The `cors` section of the profile.

use meshware_common::section::check_method;
use meshware_common::SectionReader;

/// An allowed origin: exact (`https://app.acme.example`, `null`), one
/// wildcard label (`https://*.acme.example` matches `https://a.acme.example`,
/// never `https://a.b.acme.example` or `https://evil.acme.example.attacker.test`),
/// or `*` (any origin, answered with a literal `*`, never reflected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Exact(String),
    /// `scheme://` and `.rest-of-host[:port]` around one label.
    OneLabel {
        scheme: String,
        suffix: String,
    },
    Any,
}

impl OriginRule {
    pub fn parse(text: &str) -> Result<OriginRule, String> {
        if text == "*" {
            return Ok(OriginRule::Any);
        }
        if text == "null" {
            return Ok(OriginRule::Exact(text.to_string()));
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!(
                "\"{text}\": an origin is scheme://host[:port], \"null\" or \"*\""
            ));
        };
        let scheme_ok = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        let host_ok = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]*".contains(&b));
        if !scheme_ok || !host_ok || rest.ends_with('/') {
            return Err(format!(
                "\"{text}\": an origin is scheme://host[:port] without path, \"null\" or \"*\""
            ));
        }
        match rest.strip_prefix('*') {
            Some(suffix)
                if suffix.starts_with('.') && !suffix.contains('*') && suffix.len() > 1 =>
            {
                Ok(OriginRule::OneLabel {
                    scheme: format!("{scheme}://"),
                    suffix: suffix.to_string(),
                })
            }
            Some(_) => Err(format!(
                "\"{text}\": a wildcard is one leading label, as in https://*.example.com"
            )),
            None if rest.contains('*') => Err(format!(
                "\"{text}\": a wildcard is one leading label, as in https://*.example.com"
            )),
            None => Ok(OriginRule::Exact(lower)),
        }
    }

    /// `origin` as the browser sent it.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(e) => origin.eq_ignore_ascii_case(e),
            OriginRule::OneLabel { scheme, suffix } => {
                let lower = origin.to_ascii_lowercase();
                let Some(host) = lower.strip_prefix(scheme.as_str()) else {
                    return false;
                };
                let Some(label) = host.strip_suffix(suffix.as_str()) else {
                    return false;
                };
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorsSettings {
    pub enabled: bool,
    pub origins: Vec<OriginRule>,
    /// Upper-case; the preflight answer lists them.
    pub allowed_methods: Vec<String>,
    /// Lower-case.
    pub allowed_headers: Vec<String>,
    pub allow_credentials: bool,
    /// Prepared header values.
    pub methods_value: String,
    pub headers_value: String,
    pub expose_value: String,
    pub max_age_value: Option<String>,
}

impl CorsSettings {
    pub fn allows_any_origin(&self) -> bool {
        self.origins.contains(&OriginRule::Any)
    }
}

fn check_header(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("\"{h}\" is not a header name"))
    }
}

pub fn parse(r: &mut SectionReader<'_>) -> CorsSettings {
    let enabled = r.bool("enabled", true);
    let origin_texts = r.string_list("allowed_origins", &[], |o| OriginRule::parse(o).map(|_| ()));
    let origins: Vec<OriginRule> = origin_texts
        .iter()
        .filter_map(|o| OriginRule::parse(o).ok())
        .collect();
    let allowed_methods = r.string_list("allowed_methods", &["GET", "HEAD", "POST"], check_method);
    let allowed_headers: Vec<String> = r
        .string_list("allowed_headers", &[], check_header)
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let exposed_headers = r.string_list("exposed_headers", &[], check_header);
    let allow_credentials = r.bool("allow_credentials", false);
    let max_age = match r.raw("max_age") {
        Some((serde_json::Value::Null, _)) => None,
        _ => Some(r.u64_in("max_age", 600, 0, 86_400)),
    };
    if allow_credentials && origins.contains(&OriginRule::Any) {
        let path = r.path_of("allow_credentials");
        r.error(
            path,
            "cannot be true when allowed_origins contains \"*\" (credentials need an explicit origin)",
        );
    }
    if allow_credentials
        && origins
            .iter()
            .any(|o| *o == OriginRule::Exact("null".into()))
    {
        let path = r.path_of("allow_credentials");
        r.error(
            path,
            "cannot be true when allowed_origins contains \"null\": any site can make a document whose origin is null (a sandboxed iframe, a data: URL), so this would grant credentialed reads to every site",
        );
    }
    CorsSettings {
        enabled,
        methods_value: meshware_common::errors::joined(&allowed_methods, ", "),
        headers_value: meshware_common::errors::joined(&allowed_headers, ", "),
        expose_value: meshware_common::errors::joined(&exposed_headers, ", "),
        max_age_value: max_age.map(|m| m.to_string()),
        origins,
        allowed_methods,
        allowed_headers,
        allow_credentials,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn parse_json(v: Value) -> (CorsSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn wildcards_match_exactly_one_label() {
        let p = OriginRule::parse("https://*.acme.example").unwrap();
        assert!(p.matches("https://app.acme.example"));
        assert!(p.matches("HTTPS://App.Acme.Example"));
        assert!(!p.matches("https://acme.example"));
        assert!(!p.matches("https://a.b.acme.example"));
        assert!(!p.matches("https://evil.acme.example.attacker.test"));
        assert!(!p.matches("http://app.acme.example"));
        assert!(!p.matches("https://app.acme.example:8443"));
        assert!(!p.matches("https://evilacme.example"));
        let port = OriginRule::parse("http://*.local.test:8080").unwrap();
        assert!(port.matches("http://a.local.test:8080"));
        assert!(!port.matches("http://a.local.test:8081"));
        for bad in [
            "acme.example",
            "https://a.*.example",
            "https://*example",
            "https://x/",
            "https://*.",
            "*.acme",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_with_a_wildcard_origin_are_rejected() {
        let (_, e) = parse_json(json!({"allowed_origins": ["*"], "allow_credentials": true}));
        assert!(e.contains("t.allow_credentials: cannot be true"), "{e}");
        let (_, e) = parse_json(
            json!({"allowed_origins": ["https://a.example", "null"], "allow_credentials": true}),
        );
        assert!(
            e.contains(
                "t.allow_credentials: cannot be true when allowed_origins contains \"null\""
            ),
            "{e}"
        );
        let (_, e) = parse_json(json!({"allowed_origins": ["null"], "allow_credentials": false}));
        assert_eq!(e, "", "null without credentials stays possible");
        let (_, e) = parse_json(
            json!({"allowed_origins": ["https://ok.example", "bad"], "allowed_methods": ["get"], "max_age": -1}),
        );
        assert!(e.contains("t.allowed_origins[1]"), "{e}");
        assert!(e.contains("t.allowed_methods[0]"), "{e}");
        assert!(e.contains("t.max_age"), "{e}");
    }
}
