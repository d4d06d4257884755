//! The canary decision: which version serves this request. The client's
//! routing header is never trusted; the chosen version is written to it and
//! Envoy's route cache is cleared so route matching sees the new value.

use crate::config::{CanarySettings, Condition, Source, Test};
use meshware_common::bucket::bucket;
use meshware_common::{Decision, HeaderEdits, Headers};

pub const OUTCOMES: &[&str] = &[
    "matched_rule",
    "default",
    "override",
    "override_denied",
    "routing_header_replaced",
];
pub const MATCHED_RULE: usize = 0;
pub const DEFAULT: usize = 1;
pub const OVERRIDE: usize = 2;
pub const OVERRIDE_DENIED: usize = 3;
pub const ROUTING_HEADER_REPLACED: usize = 4;

/// Per-version counters follow the static outcomes: `version_<name>`.
pub fn version_outcomes(s: &CanarySettings) -> Vec<String> {
    s.versions.iter().map(|v| format!("version_{v}")).collect()
}

/// The version chosen for the request, for the optional response echo.
#[derive(Debug, Default)]
pub struct Chosen(Option<usize>);

fn value<'h>(headers: &'h Headers, source: &Source) -> Option<&'h str> {
    match source {
        Source::Header(name) => headers.get(name),
        Source::Cookie(name) => headers.cookie(name),
    }
}

fn holds(condition: &Condition, headers: &Headers) -> bool {
    let Some(v) = value(headers, &condition.source) else {
        return false;
    };
    match &condition.test {
        Test::Equals(expected) => v == expected,
        Test::In(list) => list.iter().any(|e| e == v),
        Test::Prefix(p) => v.starts_with(p.as_str()),
        Test::Regex(re) => re.is_match(v),
    }
}

/// The first rule whose conditions all hold and whose percentage (if any)
/// holds the request's hash key; a request without a key is not in any slice.
fn first_matching_rule(s: &CanarySettings, headers: &Headers) -> Option<usize> {
    s.rules.iter().find_map(|rule| {
        if !rule.conditions.iter().all(|c| holds(c, headers)) {
            return None;
        }
        if let Some(p) = &rule.percentage {
            let key = value(headers, &p.hash_on).filter(|k| !k.is_empty())?;
            if bucket(&p.salt, key.as_bytes()) >= p.basis_points {
                return None;
            }
        }
        Some(rule.version)
    })
}

/// Whether the override header is honoured for this request.
fn override_allowed(allowed_groups: &[String], group_header: &str, headers: &Headers) -> bool {
    allowed_groups.is_empty()
        || headers
            .get_all(group_header)
            .flat_map(|v| v.split(','))
            .any(|g| allowed_groups.iter().any(|a| a == g.trim()))
}

pub fn on_request<'s>(
    s: &'s CanarySettings,
    headers: &Headers,
    chosen: &mut Chosen,
) -> Decision<'s> {
    let mut decision = Decision::default();
    let mut version = None;
    if let Some(o) = &s.override_ {
        if let Some(asked) = headers.get(&o.header) {
            // The override is for this proxy only.
            decision.request.remove(&o.header);
            let known = s.versions.iter().position(|v| v == asked.trim());
            match known {
                Some(i) if override_allowed(&o.allowed_groups, &o.group_header, headers) => {
                    decision.outcomes.add(OVERRIDE);
                    version = Some(i);
                }
                _ => decision.outcomes.add(OVERRIDE_DENIED),
            }
        }
    }
    let version = match version {
        Some(v) => v,
        None => match first_matching_rule(s, headers) {
            Some(v) => {
                decision.outcomes.add(MATCHED_RULE);
                v
            }
            None => {
                decision.outcomes.add(DEFAULT);
                CanarySettings::DEFAULT_VERSION
            }
        },
    };
    if headers.contains(&s.routing_header) {
        decision.outcomes.add(ROUTING_HEADER_REPLACED);
    }
    if let Some(name) = s.versions.get(version) {
        // `set` replaces every client value of the header.
        decision.request.set(&s.routing_header, name.as_str());
        decision.request.clear_route_cache = true;
        decision.outcomes.add(OUTCOMES.len() + version);
    }
    chosen.0 = Some(version);
    decision
}

pub fn on_response<'s>(s: &'s CanarySettings, chosen: &Chosen) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    if s.echo_version {
        if let Some(name) = chosen.0.and_then(|v| s.versions.get(v)) {
            edits.set(&s.routing_header, name.as_str());
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse_json;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn settings() -> CanarySettings {
        let (s, e) = parse_json(json!({
            "default_version": "v1",
            "override": {"header": "x-canary-override", "allowed_groups": ["qa"]},
            "echo_version": true,
            "rules": [
                {"version": "v3", "when": [{"header": "x-env-tag", "in": ["edge", "nightly"]}]},
                {"version": "v2", "when": [{"header": "x-user-group", "equals": "beta"}], "percent": 20},
                {"version": "v2", "when": [{"cookie": "build", "regex": "^rc-[0-9]+$"}]},
                {"version": "v2", "when": [{"header": "user-agent", "prefix": "CanaryBot/"}]},
                {"version": "v2", "percent": 5}
            ]
        }));
        assert_eq!(e, "");
        s
    }

    fn route(s: &CanarySettings, pairs: &[(&str, &str)]) -> (String, Decision<'static>) {
        let s: &'static CanarySettings = Box::leak(Box::new(s.clone()));
        let d = on_request(s, &headers(pairs), &mut Chosen::default());
        let v = d.request.value_of("x-route-version").unwrap().to_string();
        assert!(d.request.clear_route_cache);
        (v, d)
    }

    /// A user id inside (or outside) the `basis_points` slice for `salt`,
    /// found by brute force with the fixed hash.
    fn user(salt: &str, inside: bool, basis_points: u32) -> String {
        (0..)
            .map(|i| format!("u{i}"))
            .find(|u| (bucket(salt, u.as_bytes()) < basis_points) == inside)
            .unwrap()
    }

    #[test]
    fn header_cookie_and_in_list_rules() {
        let s = settings();
        assert_eq!(route(&s, &[("x-env-tag", "nightly")]).0, "v3");
        assert_eq!(route(&s, &[("x-env-tag", "prod")]).0, "v1");
        assert_eq!(route(&s, &[("cookie", "a=1; build=rc-12")]).0, "v2");
        assert_eq!(route(&s, &[("cookie", "build=rc-x")]).0, "v1");
        assert_eq!(route(&s, &[("user-agent", "CanaryBot/1.0")]).0, "v2");
        let (v, d) = route(&s, &[]);
        assert_eq!(v, "v1");
        assert!(d.outcomes.contains(DEFAULT) && d.outcomes.contains(OUTCOMES.len()));
    }

    #[test]
    fn group_and_percentage_combine_in_one_rule() {
        let s = settings();
        let in20 = user("v2", true, 2000);
        let out20 = user("v2", false, 2000);
        // Outside the 5% catch-all too, so only the beta rule can send it to v2.
        let out20_out5 = (0..)
            .map(|i| format!("w{i}"))
            .find(|u| bucket("v2", u.as_bytes()) >= 2000)
            .unwrap();
        assert_eq!(
            route(&s, &[("x-user-group", "beta"), ("x-user-id", &in20)]).0,
            "v2"
        );
        assert_eq!(
            route(&s, &[("x-user-group", "alpha"), ("x-user-id", &out20_out5)]).0,
            "v1"
        );
        assert_eq!(
            route(&s, &[("x-user-group", "beta"), ("x-user-id", &out20)]).0,
            "v1"
        );
    }

    #[test]
    fn spoofed_routing_header_is_replaced() {
        let s = settings();
        let (v, d) = route(&s, &[("x-route-version", "v2")]);
        assert_eq!(v, "v1");
        assert!(d.outcomes.contains(ROUTING_HEADER_REPLACED));
    }

    #[test]
    fn override_only_for_allowed_groups_and_known_versions() {
        let s = settings();
        let (v, d) = route(
            &s,
            &[("x-canary-override", "v3"), ("x-user-group", "dev, qa")],
        );
        assert_eq!(v, "v3");
        assert!(d.outcomes.contains(OVERRIDE));
        assert!(d.request.removes("x-canary-override"));
        let (v, d) = route(&s, &[("x-canary-override", "v3"), ("x-user-group", "beta")]);
        assert_eq!(v, "v1");
        assert!(d.outcomes.contains(OVERRIDE_DENIED));
        assert!(d.request.removes("x-canary-override"));
        let (v, _) = route(&s, &[("x-canary-override", "v9"), ("x-user-group", "qa")]);
        assert_eq!(v, "v1");
    }

    #[test]
    fn ramping_up_keeps_earlier_canary_users() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let at = |bp: u32| -> Vec<bool> {
            ids.iter()
                .map(|u| bucket("v2", u.as_bytes()) < bp)
                .collect()
        };
        let five = at(500);
        let ten = at(1000);
        assert!(five.iter().zip(&ten).all(|(a, b)| !*a || *b));
        let (n5, n10) = (
            five.iter().filter(|x| **x).count(),
            ten.iter().filter(|x| **x).count(),
        );
        assert!(
            n5 > 800 && n5 < 1200 && n10 > 1800 && n10 < 2200,
            "{n5} {n10}"
        );
    }

    #[test]
    fn the_chosen_version_is_echoed_when_asked() {
        let s: &'static CanarySettings = Box::leak(Box::new(settings()));
        let mut chosen = Chosen::default();
        on_request(s, &headers(&[("x-env-tag", "edge")]), &mut chosen);
        let e = on_response(s, &chosen);
        assert_eq!(e.value_of("x-route-version"), Some("v3"));
    }

    #[test]
    fn cookies_parse_from_every_header() {
        let h = headers(&[("cookie", "a=1"), ("cookie", "b=\"2\" ; c=3")]);
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), Some("3"));
        assert_eq!(h.cookie("d"), None);
    }
}
