//! The `access_log` section of the profile.

use meshware_common::section::check_header_name;
use meshware_common::SectionReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Keep the query, with the values of `redact_params` replaced.
    Redact,
    /// Drop the query.
    Strip,
    /// Log it as sent.
    Keep,
}

#[derive(Debug)]
pub struct LogSettings {
    pub enabled: bool,
    /// Share of successful (status < 400) requests logged; errors always are.
    pub sample_rate: f64,
    /// `sample_rate` as a threshold on a uniform u64 draw (computed once).
    pub sample_threshold: u64,
    pub query: Query,
    /// Lowercase query parameter names whose values are never logged.
    pub redact_params: Vec<String>,
    pub max_path_bytes: usize,
}

pub const DEFAULT_REDACT: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "code",
    "id_token",
    "key",
    "password",
    "secret",
    "sig",
    "signature",
    "token",
];

pub fn parse(r: &mut SectionReader<'_>) -> LogSettings {
    let enabled = r.bool("enabled", true);
    let sample_rate = r.f64_in("sample_rate", 1.0, 0.0, 1.0);
    let query = match r.one_of("query", &["redact", "strip", "keep"]) {
        Some("strip") => Query::Strip,
        Some("keep") => Query::Keep,
        _ => Query::Redact,
    };
    // Parameter names follow the header-name character rules closely enough
    // (tokens); the check keeps control characters out of the profile.
    let redact_params = r
        .string_list("redact_params", DEFAULT_REDACT, check_header_name)
        .iter()
        .map(|p| p.to_ascii_lowercase())
        .collect();
    let max_path_bytes = r.u64_in("max_path_bytes", 1024, 16, 16384) as usize;
    LogSettings {
        enabled,
        sample_rate,
        sample_threshold: threshold(sample_rate),
        query,
        redact_params,
        max_path_bytes,
    }
}

fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else {
        // Exact enough: 2^64 * rate, computed in f64.
        (rate * 18_446_744_073_709_551_616.0) as u64
    }
}
