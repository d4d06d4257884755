//! The `canary` section of the profile.

use crate::pattern::Pattern;
use meshware_common::section::check_header_name;
use meshware_common::SectionReader;
use serde_json::{Map, Value};

pub const DEFAULT_ROUTING_HEADER: &str = "x-route-version";
/// The user header jwt-auth sets from the token subject.
pub const DEFAULT_USER_HEADER: &str = "x-user-id";
pub const DEFAULT_GROUP_HEADER: &str = "x-user-group";
/// Versions are metric labels (`version_<v>`) and bounded per tenant.
pub const MAX_VERSIONS: usize = 16;
pub const MAX_RULES: usize = 64;

/// Where a value comes from: a request header or a cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone)]
pub enum Test {
    Equals(String),
    In(Vec<String>),
    Prefix(String),
    Regex(Pattern),
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub source: Source,
    pub test: Test,
}

/// The sticky slice of a rule: keys whose bucket is below `basis_points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Percentage {
    /// 0..=10000 (100.00%).
    pub basis_points: u32,
    pub hash_on: Source,
    pub salt: String,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Index into `CanarySettings::versions`.
    pub version: usize,
    /// All must hold.
    pub conditions: Vec<Condition>,
    pub percentage: Option<Percentage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub header: String,
    /// Empty: anyone may override. Otherwise the group header must name one.
    pub allowed_groups: Vec<String>,
    pub group_header: String,
}

#[derive(Debug, Clone)]
pub struct CanarySettings {
    pub enabled: bool,
    pub routing_header: String,
    /// Every version named by the tenant; index 0 is the default.
    pub versions: Vec<String>,
    pub rules: Vec<Rule>,
    pub override_: Option<Override>,
    pub echo_version: bool,
}

impl CanarySettings {
    pub const DEFAULT_VERSION: usize = 0;
}

fn check_version(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{v}\": versions are 1..32 chars of [a-z0-9_-] (they become metric labels)"
        ))
    }
}

fn check_cookie_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("\"{name}\" is not a cookie name"))
    }
}

/// Reads `{"header": ..}` or `{"cookie": ..}` from an object already being read.
fn read_source(r: &mut SectionReader<'_>, context: &str) -> Option<Source> {
    let header = r.opt_string("header", check_header_name);
    let cookie = r.opt_string("cookie", check_cookie_name);
    match (header, cookie) {
        (Some(h), None) => Some(Source::Header(h)),
        (None, Some(c)) => Some(Source::Cookie(c)),
        (Some(_), Some(_)) => {
            let path = r.path_of("cookie");
            r.error(
                path,
                format!("{context}: set \"header\" or \"cookie\", not both"),
            );
            None
        }
        (None, None) => None,
    }
}

fn read_condition(r: &mut SectionReader<'_>, path: &str) -> Option<Condition> {
    let source = read_source(r, "a condition");
    let equals = r.opt_string("equals", |_| Ok(()));
    let prefix = r.opt_string("prefix", |_| Ok(()));
    let in_list = r
        .raw("in")
        .is_some()
        .then(|| r.string_list("in", &[], |_| Ok(())));
    let regex = match r.opt_string("regex", |_| Ok(())) {
        None => None,
        Some(pattern) => match Pattern::new(&pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                let p = r.path_of("regex");
                r.error(p, format!("invalid regex: {e}"));
                return None;
            }
        },
    };
    let tests: Vec<Test> = [
        equals.map(Test::Equals),
        prefix.map(Test::Prefix),
        in_list.map(Test::In),
        regex.map(Test::Regex),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(source) = source else {
        r.error(
            path.to_string(),
            "a condition needs \"header\" or \"cookie\"",
        );
        return None;
    };
    if tests.len() != 1 {
        r.error(
            path.to_string(),
            "a condition needs exactly one of \"equals\", \"in\", \"prefix\", \"regex\"",
        );
        return None;
    }
    let test = tests.into_iter().next()?;
    Some(Condition { source, test })
}

fn read_rule(r: &mut SectionReader<'_>, path: &str, versions: &mut Vec<String>) -> Option<Rule> {
    let version = r.opt_string("version", check_version);
    // A rule with any broken condition is dropped, never half-applied.
    let expected = match r.raw("when") {
        None => 0,
        Some((Value::Array(items), _)) => items.len(),
        Some(_) => usize::MAX,
    };
    let conditions = r
        .object_list(
            "when",
            "an array of conditions",
            "a condition object",
            |n, item_path, _| read_condition(n, item_path),
        )
        .unwrap_or_default();
    let mut ok = conditions.len() == expected;
    // Percent with up to two decimals: 0.05 is 5 basis points.
    let percent = r
        .raw("percent")
        .is_some()
        .then(|| r.f64_in("percent", 0.0, 0.0, 100.0));
    let hash_on = match r.raw("hash_on") {
        None => Source::Header(DEFAULT_USER_HEADER.to_string()),
        Some((Value::Object(fields), hash_path)) => {
            let mut n = r.nested(fields, &hash_path);
            let source = read_source(&mut n, "hash_on");
            n.finish();
            match source {
                Some(s) => s,
                None => {
                    r.error(hash_path, "needs \"header\" or \"cookie\"");
                    ok = false;
                    Source::Header(DEFAULT_USER_HEADER.to_string())
                }
            }
        }
        Some((_, hash_path)) => {
            r.error(hash_path, "must be {\"header\": ..} or {\"cookie\": ..}");
            ok = false;
            Source::Header(DEFAULT_USER_HEADER.to_string())
        }
    };
    let salt = r.opt_string("salt", |_| Ok(()));
    let Some(version) = version else {
        r.error(format!("{path}.version"), "is required");
        return None;
    };
    if conditions.is_empty() && percent.is_none() {
        r.error(
            path.to_string(),
            "a rule needs \"when\" conditions, a \"percent\", or both",
        );
        return None;
    }
    if !ok {
        return None;
    }
    let index = match versions.iter().position(|v| *v == version) {
        Some(i) => i,
        None => {
            versions.push(version.clone());
            versions.len() - 1
        }
    };
    Some(Rule {
        version: index,
        conditions,
        percentage: percent.map(|p| Percentage {
            basis_points: (p * 100.0).round() as u32,
            hash_on,
            salt: salt.unwrap_or(version),
        }),
    })
}

fn read_override(
    r: &mut SectionReader<'_>,
    fields: &Map<String, Value>,
    path: &str,
) -> Option<Override> {
    let mut n = r.nested(fields, path);
    let header = n.opt_string("header", check_header_name);
    let allowed_groups = n.string_list("allowed_groups", &[], |_| Ok(()));
    let group_header = n
        .opt_string("group_header", check_header_name)
        .unwrap_or_else(|| DEFAULT_GROUP_HEADER.to_string());
    n.finish();
    let Some(header) = header else {
        r.error(format!("{path}.header"), "is required");
        return None;
    };
    Some(Override {
        header,
        allowed_groups,
        group_header,
    })
}

pub fn parse(r: &mut SectionReader<'_>) -> CanarySettings {
    let enabled = r.bool("enabled", true);
    let routing_header = r
        .opt_string("routing_header", check_header_name)
        .unwrap_or_else(|| DEFAULT_ROUTING_HEADER.to_string());
    let default_version = r
        .opt_string("default_version", check_version)
        .unwrap_or_else(|| "stable".to_string());
    let mut versions = vec![default_version];
    let rules = r
        .object_list(
            "rules",
            "an array of rules",
            "a rule object",
            |n, item_path, _| read_rule(n, item_path, &mut versions),
        )
        .unwrap_or_default();
    if rules.len() > MAX_RULES {
        let path = r.path_of("rules");
        r.error(path, format!("at most {MAX_RULES} rules"));
    }
    if versions.len() > MAX_VERSIONS {
        let path = r.path_of("rules");
        r.error(path, format!("at most {MAX_VERSIONS} versions per tenant"));
    }
    let override_ = match r.raw("override") {
        None | Some((Value::Null, _)) => None,
        Some((Value::Object(fields), path)) => read_override(r, fields, &path),
        Some((_, path)) => {
            r.error(
                path,
                "must be {\"header\", \"allowed_groups\", \"group_header\"} or null",
            );
            None
        }
    };
    if let Some(o) = &override_ {
        if o.header == routing_header {
            let p = r.path_of("override");
            r.error(p, "the override header must differ from routing_header");
        }
    }
    CanarySettings {
        enabled,
        routing_header,
        versions,
        rules,
        override_,
        echo_version: r.bool("echo_version", false),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn parse_json(v: Value) -> (CanarySettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn defaults_route_everyone_to_stable() {
        let (s, e) = parse_json(json!({}));
        assert_eq!(e, "");
        assert_eq!(s.routing_header, "x-route-version");
        assert_eq!(s.versions, ["stable"]);
        assert!(s.rules.is_empty() && s.override_.is_none() && !s.echo_version);
    }

    #[test]
    fn rules_compile_with_versions_and_percentages() {
        let (s, e) = parse_json(json!({
            "default_version": "v1",
            "rules": [
                {"version": "v2", "when": [{"header": "x-user-group", "equals": "beta"}], "percent": 20},
                {"version": "v3", "when": [{"cookie": "env", "regex": "^canary-[0-9]+$"}]},
                {"version": "v2", "percent": 5.25, "hash_on": {"cookie": "uid"}, "salt": "exp1"}
            ]
        }));
        assert_eq!(e, "");
        assert_eq!(s.versions, ["v1", "v2", "v3"]);
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[0].version, 1);
        let p0 = s.rules[0].percentage.as_ref().unwrap();
        assert_eq!((p0.basis_points, p0.salt.as_str()), (2000, "v2"));
        assert_eq!(p0.hash_on, Source::Header("x-user-id".into()));
        let p2 = s.rules[2].percentage.as_ref().unwrap();
        assert_eq!(p2.basis_points, 525);
        assert_eq!(p2.hash_on, Source::Cookie("uid".into()));
        assert_eq!(p2.salt, "exp1");
    }

    #[test]
    fn every_bad_rule_names_its_path() {
        let (_, e) = parse_json(json!({
            "default_version": "V1",
            "rules": [
                {"version": "v2", "when": [{"header": "x-g", "regex": "(unclosed"}]},
                {"version": "v2", "percent": 120},
                {"version": "v2", "when": [{"header": "x-g"}]},
                {"version": "v2", "when": [{"header": "x-g", "equals": "a", "prefix": "b"}]},
                {"when": [{"header": "x-g", "equals": "a"}]},
                {"version": "v2"},
                {"version": "v2", "percent": 5, "hash_on": {}, "colour": 1},
                "nope"
            ],
            "override": {"allowed_groups": ["qa"]}
        }));
        for expected in [
            "t.default_version: \"V1\": versions are",
            "t.rules[0].when[0].regex: invalid regex",
            "t.rules[1].percent: must be <= 100",
            "t.rules[2].when[0]: a condition needs exactly one of",
            "t.rules[3].when[0]: a condition needs exactly one of",
            "t.rules[4].version: is required",
            "t.rules[5]: a rule needs \"when\" conditions, a \"percent\", or both",
            "t.rules[6].hash_on: needs \"header\" or \"cookie\"",
            "t.rules[6].colour: unknown field",
            "t.rules[7]: must be a rule object",
            "t.override.header: is required",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }
}
