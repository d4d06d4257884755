//! The `security_headers` section of the profile.

use meshware_common::SectionReader;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep a value the upstream set; add ours otherwise.
    SetIfAbsent,
    /// Always ours.
    Overwrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: &'static str,
    pub value: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    pub enabled: bool,
    pub rules: Vec<HeaderRule>,
    /// Lower-case names removed from every response.
    pub remove: Vec<String>,
}

/// Profile field, response header, built-in default.
pub const FIELDS: &[(&str, &str, Option<&str>)] = &[
    (
        "strict_transport_security",
        "strict-transport-security",
        None,
    ),
    ("content_security_policy", "content-security-policy", None),
    (
        "content_security_policy_report_only",
        "content-security-policy-report-only",
        None,
    ),
    (
        "x_content_type_options",
        "x-content-type-options",
        Some("nosniff"),
    ),
    ("x_frame_options", "x-frame-options", Some("SAMEORIGIN")),
    (
        "referrer_policy",
        "referrer-policy",
        Some("strict-origin-when-cross-origin"),
    ),
    ("permissions_policy", "permissions-policy", None),
];

pub const DEFAULT_REMOVE: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

fn check_value(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.len() <= 4096
        && v.bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err("a header value is 1..4096 printable ASCII characters".to_string())
    }
}

fn check_name(n: &str) -> Result<(), String> {
    if !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("\"{n}\" is not a header name"))
    }
}

fn read_rule(
    r: &mut SectionReader<'_>,
    field: &'static str,
    header: &'static str,
    default: Option<&str>,
) -> Option<HeaderRule> {
    let (value, path) = match r.raw(field) {
        None => {
            return default.map(|d| HeaderRule {
                name: header,
                value: d.to_string(),
                mode: Mode::SetIfAbsent,
            })
        }
        Some(v) => v,
    };
    let (text, mode) = match value {
        Value::Null => return None,
        Value::String(s) => (s.clone(), Mode::SetIfAbsent),
        Value::Object(m) => {
            let mut n = r.nested(m, &path);
            let text = n.opt_string("value", check_value);
            let mode = n.opt_string("mode", |m| match m {
                "set_if_absent" | "overwrite" => Ok(()),
                _ => Err(format!(
                    "\"{m}\": expected \"set_if_absent\" or \"overwrite\""
                )),
            });
            n.finish();
            let Some(text) = text else {
                r.error(format!("{path}.value"), "is required");
                return None;
            };
            let mode = if mode.as_deref() == Some("overwrite") {
                Mode::Overwrite
            } else {
                Mode::SetIfAbsent
            };
            (text, mode)
        }
        _ => {
            r.error(path, "must be a string, {\"value\", \"mode\"} or null");
            return None;
        }
    };
    if let Err(msg) = check_value(&text) {
        r.error(path, msg);
        return None;
    }
    Some(HeaderRule {
        name: header,
        value: text,
        mode,
    })
}

pub fn parse(r: &mut SectionReader<'_>) -> SecuritySettings {
    let enabled = r.bool("enabled", true);
    let rules = FIELDS
        .iter()
        .filter_map(|(field, header, default)| read_rule(r, field, header, *default))
        .collect();
    let remove = r
        .string_list("remove_headers", DEFAULT_REMOVE, check_name)
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    SecuritySettings {
        enabled,
        rules,
        remove,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn parse_json(v: Value) -> (SecuritySettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_and_modes() {
        let (s, e) = parse_json(json!({
            "strict_transport_security": {"value": "max-age=31536000; includeSubDomains", "mode": "overwrite"},
            "x_frame_options": null,
            "content_security_policy": "default-src 'self'"
        }));
        assert_eq!(e, "");
        let names: Vec<&str> = s.rules.iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "strict-transport-security",
                "content-security-policy",
                "x-content-type-options",
                "referrer-policy"
            ]
        );
        assert_eq!(s.rules[0].mode, Mode::Overwrite);
        assert_eq!(s.rules[1].mode, Mode::SetIfAbsent);
        assert_eq!(s.remove, DEFAULT_REMOVE);
    }

    #[test]
    fn bad_values_name_their_path() {
        let (_, e) = parse_json(json!({
            "referrer_policy": {"value": "no-referrer", "mode": "sometimes"},
            "permissions_policy": 5,
            "content_security_policy": "a\nb",
            "remove_headers": ["x powered"]
        }));
        assert!(e.contains("t.referrer_policy.mode: \"sometimes\""), "{e}");
        assert!(e.contains("t.permissions_policy: must be a string"), "{e}");
        assert!(
            e.contains("t.content_security_policy: a header value"),
            "{e}"
        );
        assert!(e.contains("t.remove_headers[0]"), "{e}");
    }
}
