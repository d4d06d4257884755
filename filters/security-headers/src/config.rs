//! The `security_headers` section of the profile.

use meshware_common::SectionReader;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep a value the upstream set; add ours otherwise.
    SetIfAbsent,
    /// Always ours.
    Overwrite,
    /// CSP: ours is sent beside the upstream's; a browser enforces every
    /// policy it gets, so the stricter wins wherever they differ.
    Combine,
    /// X-Frame-Options: the stricter of the upstream's and ours (`DENY` over
    /// `SAMEORIGIN`); a value browsers ignore (`ALLOWALL`) is replaced.
    Stricter,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::SetIfAbsent => "set_if_absent",
            Mode::Overwrite => "overwrite",
            Mode::Combine => "combine",
            Mode::Stricter => "stricter",
        }
    }
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

/// One header the filter manages.
pub struct Field {
    /// The profile field.
    pub field: &'static str,
    /// The response header.
    pub header: &'static str,
    /// The built-in value (`None`: off unless configured).
    pub default: Option<&'static str>,
    /// The mode of a plain string value: the safe one where a weaker
    /// upstream value would otherwise win.
    pub mode: Mode,
    /// The mode the field accepts besides `set_if_absent` and `overwrite`.
    pub extra_mode: Option<Mode>,
}

pub const FIELDS: &[Field] = &[
    Field {
        field: "strict_transport_security",
        header: "strict-transport-security",
        default: None,
        mode: Mode::SetIfAbsent,
        extra_mode: None,
    },
    Field {
        field: "content_security_policy",
        header: "content-security-policy",
        default: None,
        mode: Mode::Combine,
        extra_mode: Some(Mode::Combine),
    },
    Field {
        field: "content_security_policy_report_only",
        header: "content-security-policy-report-only",
        default: None,
        mode: Mode::Combine,
        extra_mode: Some(Mode::Combine),
    },
    Field {
        field: "x_content_type_options",
        header: "x-content-type-options",
        default: Some("nosniff"),
        mode: Mode::SetIfAbsent,
        extra_mode: None,
    },
    Field {
        field: "x_frame_options",
        header: "x-frame-options",
        default: Some("SAMEORIGIN"),
        mode: Mode::Stricter,
        extra_mode: Some(Mode::Stricter),
    },
    Field {
        field: "referrer_policy",
        header: "referrer-policy",
        default: Some("strict-origin-when-cross-origin"),
        mode: Mode::SetIfAbsent,
        extra_mode: None,
    },
    Field {
        field: "permissions_policy",
        header: "permissions-policy",
        default: None,
        mode: Mode::SetIfAbsent,
        extra_mode: None,
    },
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

fn read_rule(r: &mut SectionReader<'_>, f: &Field) -> Option<HeaderRule> {
    let (field, header, default, default_mode, extra_mode) =
        (f.field, f.header, f.default, &f.mode, &f.extra_mode);
    let (value, path) = match r.raw(field) {
        None => {
            return default.map(|d| HeaderRule {
                name: header,
                value: d.to_string(),
                mode: *default_mode,
            })
        }
        Some(v) => v,
    };
    let accepted: Vec<Mode> = [Mode::SetIfAbsent, Mode::Overwrite]
        .into_iter()
        .chain(*extra_mode)
        .collect();
    let (text, mode) = match value {
        Value::Null => return None,
        Value::String(s) => (s.clone(), *default_mode),
        Value::Object(m) => {
            let mut n = r.nested(m, &path);
            let text = n.opt_string("value", check_value);
            let mode = n.opt_string("mode", |m| {
                if accepted.iter().any(|a| a.name() == m) {
                    Ok(())
                } else {
                    let names: Vec<String> = accepted
                        .iter()
                        .map(|a| format!("\"{}\"", a.name()))
                        .collect();
                    Err(format!(
                        "\"{m}\": expected {}",
                        meshware_common::errors::joined(&names, " or ")
                    ))
                }
            });
            n.finish();
            let Some(text) = text else {
                r.error(format!("{path}.value"), "is required");
                return None;
            };
            let mode = mode
                .and_then(|m| accepted.iter().copied().find(|a| a.name() == m))
                .unwrap_or(*default_mode);
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
    let rules = FIELDS.iter().filter_map(|f| read_rule(r, f)).collect();
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
        assert_eq!(
            s.rules[1].mode,
            Mode::Combine,
            "CSP: both policies by default"
        );
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
