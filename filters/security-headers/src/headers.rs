//! Which security headers a response gets, and which fingerprints it loses.

use crate::config::{Mode, SecuritySettings};
use meshware_common::{HeaderEdits, Headers};

pub const OUTCOMES: &[&str] = &["applied"];

/// How much an X-Frame-Options value forbids: `DENY` 2, `SAMEORIGIN` 1,
/// anything else (`ALLOWALL`, `ALLOW-FROM`, garbage: ignored by browsers) 0.
fn frame_rank(value: &str) -> u8 {
    let v = value.trim();
    if v.eq_ignore_ascii_case("deny") {
        2
    } else if v.eq_ignore_ascii_case("sameorigin") {
        1
    } else {
        0
    }
}

pub fn on_response<'s>(s: &'s SecuritySettings, response: &Headers) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    for rule in &s.rules {
        let upstream = response.contains(rule.name);
        match rule.mode {
            Mode::Overwrite => edits.set(rule.name, rule.value.as_str()),
            Mode::SetIfAbsent | Mode::Combine | Mode::Stricter if !upstream => {
                edits.set(rule.name, rule.value.as_str())
            }
            Mode::SetIfAbsent => {}
            // One more header line: the browser enforces both policies.
            Mode::Combine => edits.append(rule.name, rule.value.as_str()),
            Mode::Stricter => {
                let mut values = response.get_all(rule.name);
                let theirs = match (values.next(), values.next()) {
                    (Some(v), None) => frame_rank(v),
                    _ => 0, // several: browsers ignore them
                };
                if theirs == 0 || theirs < frame_rank(&rule.value) {
                    edits.set(rule.name, rule.value.as_str());
                }
            }
        }
    }
    for name in &s.remove {
        if response.contains(name) {
            edits.remove(name);
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse_json;
    use serde_json::json;

    #[test]
    fn set_keep_overwrite_and_remove() {
        let (s, e) = parse_json(json!({
            "strict_transport_security": {"value": "max-age=600", "mode": "overwrite"},
            "content_security_policy": "default-src 'self'"
        }));
        assert_eq!(e, "");
        let upstream = Headers::new(vec![
            ("strict-transport-security".into(), "max-age=0".into()),
            ("content-security-policy".into(), "default-src *".into()),
            ("server".into(), "gunicorn".into()),
            ("x-powered-by".into(), "PHP".into()),
        ]);
        let edits = on_response(&s, &upstream);
        assert_eq!(
            edits.value_of("strict-transport-security"),
            Some("max-age=600")
        );
        // Both CSPs go out: the browser enforces each, the stricter wins.
        assert!(edits.ops.contains(&meshware_common::HeaderOp::Append(
            "content-security-policy".into(),
            "default-src 'self'".into()
        )));
        assert_eq!(edits.value_of("x-content-type-options"), Some("nosniff"));
        assert_eq!(edits.value_of("x-frame-options"), Some("SAMEORIGIN"));
        assert!(edits.removes("server") && edits.removes("x-powered-by"));
        assert!(!edits.removes("x-aspnet-version"));
    }
}

#[cfg(test)]
mod stricter_tests {
    use super::*;
    use crate::config::tests::parse_json;
    use serde_json::json;

    fn frame_options(upstream: &[&str], ours: serde_json::Value) -> Option<String> {
        let (s, e) = parse_json(json!({"x_frame_options": ours}));
        assert_eq!(e, "");
        let h = Headers::new(
            upstream
                .iter()
                .map(|v| ("x-frame-options".to_string(), v.to_string()))
                .collect(),
        );
        on_response(&s, &h)
            .value_of("x-frame-options")
            .map(str::to_string)
    }

    #[test]
    fn the_stricter_frame_option_wins_and_ignored_values_are_replaced() {
        assert_eq!(
            frame_options(&["ALLOWALL"], json!("SAMEORIGIN")).as_deref(),
            Some("SAMEORIGIN")
        );
        assert_eq!(
            frame_options(&["DENY"], json!("SAMEORIGIN")),
            None,
            "the upstream's is stricter"
        );
        assert_eq!(
            frame_options(&["sameorigin"], json!("DENY")).as_deref(),
            Some("DENY")
        );
        assert_eq!(
            frame_options(&["DENY", "DENY"], json!("SAMEORIGIN")).as_deref(),
            Some("SAMEORIGIN")
        );
        assert_eq!(frame_options(&[], json!("DENY")).as_deref(), Some("DENY"));
        // Opting back into the upstream's value.
        assert_eq!(
            frame_options(
                &["ALLOWALL"],
                json!({"value": "DENY", "mode": "set_if_absent"})
            ),
            None
        );
    }

    #[test]
    fn modes_are_checked_per_header() {
        let (_, e) = parse_json(json!({
            "x_frame_options": {"value": "DENY", "mode": "combine"},
            "referrer_policy": {"value": "no-referrer", "mode": "stricter"}
        }));
        assert!(e.contains("t.x_frame_options.mode: \"combine\": expected \"set_if_absent\" or \"overwrite\" or \"stricter\""), "{e}");
        assert!(e.contains("t.referrer_policy.mode: \"stricter\""), "{e}");
    }
}
