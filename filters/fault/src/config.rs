//! The `fault` section: the faults a tenant's drills inject, compiled once.

use meshware_common::live::{read_env_tokens, StatusTokens};
use meshware_common::net::Cidr;
use meshware_common::path::PathPattern;
use meshware_common::section::{check_method, read_path_rule};
use meshware_common::SectionReader;
use serde_json::Value;

/// No injected delay is longer: a drill must not hold requests for good.
pub const MAX_DELAY_MS: u64 = 60_000;
pub const MAX_FAULTS: usize = 16;
const MAX_BODY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A local reply: HTTP `status`, or `grpc_status` for a gRPC call.
    Abort {
        status: u32,
        grpc_status: Option<u8>,
        body: String,
    },
    /// Hold the request this long (a uniform pick in `min..=max`).
    Delay { min_ms: u64, max_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every matching request.
    All,
    /// Only requests with a valid drill header (the default).
    Drill,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub name: String,
    pub action: Action,
    /// Of matching requests, in millionths (percent × 10 000).
    pub per_million: u64,
    pub scope: Scope,
    pub route: Option<PathPattern>,
    pub methods: Option<Vec<String>>,
    pub source_cidrs: Vec<Cidr>,
    /// Active from `start_ms` (inclusive) to `end_ms` (exclusive), epoch ms.
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    /// `x-fault-injected` value for drill requests, prepared once.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultSettings {
    /// The profile's kill switch (`defaults.fault.enabled: false`).
    pub enabled: bool,
    pub drill_tokens: StatusTokens,
    /// Requests delayed at once per tenant, across workers.
    pub max_delayed: u64,
    pub faults: Vec<Fault>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 date-time (`2026-12-06T10:00:00Z`, fractions and offsets
/// allowed) as epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = || format!("\"{text}\": expected an RFC 3339 date-time such as 2026-12-06T10:00:00Z");
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = text.get(from..from + len).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (y, mo, d, h, mi, s) = (
        num(0, 4)?,
        num(5, 2)?,
        num(8, 2)?,
        num(11, 2)?,
        num(14, 2)?,
        num(17, 2)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut millis = 0i64;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = text.get(start..i).ok_or_else(bad)?;
        if frac.is_empty() {
            return Err(bad());
        }
        let ms: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = ms.parse().map_err(|_| bad())?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs * 1000 + millis).map_err(|_| bad())
}

fn read_action(r: &mut SectionReader<'_>, path: &str) -> Option<Action> {
    let abort = match r.raw("abort") {
        None | Some((Value::Null, _)) => None,
        Some((Value::Object(fields), at)) => {
            let mut n = r.nested(fields, &at);
            let status = n.u64_in("status", 503, 200, 599) as u32;
            let grpc_status = n
                .opt_string("grpc_status", |v| {
                    meshware_common::grpc::code_named(v)
                        .filter(|c| *c != 0)
                        .map(|_| ())
                        .ok_or_else(|| format!("\"{v}\": expected a gRPC status name other than OK (UNAVAILABLE, ...)"))
                })
                .and_then(|v| meshware_common::grpc::code_named(&v));
            let body = n
                .opt_string("body", |b| {
                    if b.len() <= MAX_BODY {
                        Ok(())
                    } else {
                        Err(format!("at most {MAX_BODY} bytes"))
                    }
                })
                .unwrap_or_default();
            n.finish();
            Some(Action::Abort {
                status,
                grpc_status,
                body,
            })
        }
        Some((_, at)) => {
            r.error(at, "must be an object {status, grpc_status, body}");
            None
        }
    };
    let delay = match r.raw("delay") {
        None | Some((Value::Null, _)) => None,
        Some((Value::Object(fields), at)) => {
            let mut n = r.nested(fields, &at);
            let fixed = n.opt_u64_in("ms", 1, MAX_DELAY_MS);
            let min = n.opt_u64_in("min_ms", 0, MAX_DELAY_MS);
            let max = n.opt_u64_in("max_ms", 1, MAX_DELAY_MS);
            let action = match (fixed, min, max) {
                (Some(ms), None, None) => Some(Action::Delay {
                    min_ms: ms,
                    max_ms: ms,
                }),
                (None, Some(min_ms), Some(max_ms)) if min_ms <= max_ms => {
                    Some(Action::Delay { min_ms, max_ms })
                }
                (None, Some(_), Some(_)) => {
                    n.error(format!("{at}.min_ms"), "must be <= max_ms");
                    None
                }
                _ => {
                    if n.raw("ms").is_none()
                        || n.raw("min_ms").is_some()
                        || n.raw("max_ms").is_some()
                    {
                        n.error(
                            at.clone(),
                            format!(
                                "set \"ms\", or \"min_ms\" and \"max_ms\" (at most {MAX_DELAY_MS})"
                            ),
                        );
                    }
                    None
                }
            };
            n.finish();
            action
        }
        Some((_, at)) => {
            r.error(at, "must be an object {ms} or {min_ms, max_ms}");
            None
        }
    };
    match (abort, delay) {
        (Some(a), None) | (None, Some(a)) => Some(a),
        (Some(_), Some(_)) => {
            r.error(path.to_string(), "set one of abort, delay");
            None
        }
        (None, None) => {
            if r.raw("abort").is_none() && r.raw("delay").is_none() {
                r.error(format!("{path}.abort"), "is required (or \"delay\")");
            }
            None
        }
    }
}

fn read_fault(r: &mut SectionReader<'_>, path: &str) -> Option<Fault> {
    let name = r.opt_string("name", meshware_common::section::check_name("fault"));
    let action = read_action(r, path);
    let percent = match r.raw("percent") {
        None => {
            r.error(format!("{path}.percent"), "is required (0..100)");
            None
        }
        Some((Value::Number(n), at)) => match n.as_f64() {
            Some(p) if (0.0..=100.0).contains(&p) => Some(p),
            _ => {
                r.error(at, "must be a number in 0..100");
                None
            }
        },
        Some((_, at)) => {
            r.error(at, "must be a number in 0..100");
            None
        }
    };
    let scope = match r.one_of("scope", &["drill", "all"]) {
        Some("all") => Scope::All,
        _ => Scope::Drill,
    };
    let route = read_path_rule(r, path, false);
    let methods = r
        .raw("methods")
        .is_some()
        .then(|| r.string_list("methods", &[], check_method));
    let cidrs = r.string_list("source_cidrs", &[], |c| Cidr::parse(c).map(|_| ()));
    let source_cidrs: Vec<Cidr> = cidrs.iter().filter_map(|c| Cidr::parse(c).ok()).collect();
    let time = |r: &mut SectionReader<'_>, key: &'static str| {
        let text = r.opt_string(key, |t| parse_rfc3339(t).map(|_| ()))?;
        parse_rfc3339(&text).ok()
    };
    let start_ms = time(r, "start");
    let end_ms = time(r, "end");
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if e <= s {
            r.error(format!("{path}.end"), "must be after start");
        }
    }
    let Some(name) = name else {
        r.error(format!("{path}.name"), "is required");
        return None;
    };
    let action = action?;
    let label = match &action {
        Action::Abort { status, .. } => format!("{name}; abort={status}"),
        Action::Delay { min_ms, max_ms } if min_ms == max_ms => format!("{name}; delay={min_ms}ms"),
        Action::Delay { min_ms, max_ms } => format!("{name}; delay={min_ms}-{max_ms}ms"),
    };
    Some(Fault {
        name,
        action,
        per_million: (percent? * 10_000.0).round() as u64,
        scope,
        route,
        methods,
        source_cidrs,
        start_ms,
        end_ms,
        label,
    })
}

pub fn parse(r: &mut SectionReader<'_>) -> FaultSettings {
    // The kill switch is the profile's: set in `defaults` only, so one
    // switch turns every tenant's faults off.
    if let Some((_, at)) = r.raw("enabled") {
        if !at.starts_with("defaults.") {
            r.error(at, "the kill switch is set in defaults.fault only (it turns every tenant's faults off)");
        }
    }
    let enabled = r.bool("enabled", true);
    let (drill_tokens, _) = read_env_tokens(r, "drill_tokens", "a drill token");
    let max_delayed = r.u64_in("max_delayed", 100, 1, 100_000);
    let faults = r
        .unique_list("faults", "fault", MAX_FAULTS, read_fault, |f| &f.name)
        .unwrap_or_default();
    if faults.iter().any(|f| f.scope == Scope::Drill)
        && drill_tokens.0.is_empty()
        && r.raw("drill_tokens").is_none()
    {
        let at = r.path_of("drill_tokens");
        r.error(
            at,
            "is required by faults with scope \"drill\" (the default)",
        );
    }
    FaultSettings {
        enabled,
        drill_tokens,
        max_delayed,
        faults,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn parse_json(v: Value) -> (FaultSettings, String) {
        meshware_common::section::parse_alone(&v, "t", parse)
    }

    #[test]
    fn rfc3339_times_match_the_civil_calendar() {
        // Reference values: `date -u -d <time> +%s` (GNU coreutils).
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-06T10:00:00Z"), Ok(1_796_551_200_000));
        assert_eq!(parse_rfc3339("2000-02-29T23:59:59.5Z"), Ok(951_868_799_500));
        assert_eq!(
            parse_rfc3339("2026-12-06T11:00:00+01:00"),
            Ok(1_796_551_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-06T05:30:00-04:30"),
            Ok(1_796_551_200_000)
        );
        for bad in [
            "2026-12-06",
            "2026-13-01T00:00:00Z",
            "2026-12-06T10:00:00",
            "2026-12-06T10:00:00+0100",
            "x",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let (_, e) = parse_json(json!({
            "max_delayed": 0,
            "faults": [
                {"name": "a", "percent": -1, "delay": {"ms": 120000}},
                {"name": "b", "percent": 5, "abort": {"status": 99}, "delay": {"ms": 5}},
                {"name": "c", "percent": 5, "delay": {"min_ms": 50, "max_ms": 10}, "start": "tomorrow"},
                {"name": "d", "percent": 5, "abort": {"grpc_status": "OK"},
                 "start": "2026-12-06T10:00:00Z", "end": "2026-12-06T09:00:00Z"},
                {"percent": 5, "abort": {}, "source_cidrs": ["10.0.0.0/33"]}
            ]
        }));
        for want in [
            "t.max_delayed: must be >= 1",
            "t.faults[0].percent: must be a number in 0..100",
            "t.faults[0].delay.ms: must be <= 60000",
            "t.faults[1].abort.status: must be >= 200",
            "t.faults[1]: set one of abort, delay",
            "t.faults[2].delay.min_ms: must be <= max_ms",
            "t.faults[2].start: \"tomorrow\": expected an RFC 3339 date-time",
            "t.faults[3].abort.grpc_status: \"OK\": expected a gRPC status name",
            "t.faults[3].end: must be after start",
            "t.faults[4].name: is required",
            "t.faults[4].source_cidrs",
            "t.drill_tokens: is required by faults with scope \"drill\"",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let (_, e) = parse_json(json!({"enabled": false}));
        assert!(
            e.contains("t.enabled: the kill switch is set in defaults.fault only"),
            "{e}"
        );
    }

    #[test]
    fn faults_compile() {
        let (s, e) = parse_json(json!({"faults": [
            {"name": "slow", "percent": 12.5, "scope": "all", "prefix": "/checkout", "methods": ["POST"],
             "delay": {"min_ms": 100, "max_ms": 300}},
            {"name": "down", "percent": 100, "scope": "all", "abort": {"status": 503, "grpc_status": "UNAVAILABLE", "body": "drill"}}
        ]}));
        assert_eq!(e, "");
        assert_eq!(s.faults[0].per_million, 125_000);
        assert_eq!(s.faults[0].label, "slow; delay=100-300ms");
        assert_eq!(
            s.faults[1].action,
            Action::Abort {
                status: 503,
                grpc_status: Some(14),
                body: "drill".into()
            }
        );
        assert!(s.enabled);
    }
}
