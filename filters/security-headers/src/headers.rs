//! Which security headers a response gets, and which fingerprints it loses.

use crate::config::{Mode, SecuritySettings};
use meshware_common::{HeaderEdits, Headers};

pub const OUTCOMES: &[&str] = &["applied"];

pub fn on_response<'s>(s: &'s SecuritySettings, response: &Headers) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    for rule in &s.rules {
        if rule.mode == Mode::Overwrite || !response.contains(rule.name) {
            edits.set(rule.name, rule.value.as_str());
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
        assert_eq!(
            edits.value_of("content-security-policy"),
            None,
            "kept the upstream's"
        );
        assert_eq!(edits.value_of("x-content-type-options"), Some("nosniff"));
        assert_eq!(edits.value_of("x-frame-options"), Some("SAMEORIGIN"));
        assert!(edits.removes("server") && edits.removes("x-powered-by"));
        assert!(!edits.removes("x-aspnet-version"));
    }
}
