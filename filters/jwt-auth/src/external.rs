//! External authorization: an HTTP check against an auth service cluster.
//! 2xx allows (copying configured answer headers upstream), 401/403 deny
//! with that status, anything else (timeout, 5xx, no cluster) follows
//! `on_error`: deny with 503, or fall back to local JWT verification.

use meshware_common::section::check_header_name;
use meshware_common::{Callout, CalloutResponse, Headers, SectionReader};

/// The callout tag of the external check (JWKS fetches use provider indices).
pub const TAG: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Deny,
    LocalJwt,
}

#[derive(Debug)]
pub struct External {
    pub cluster: String,
    /// Prepended to the request's path in the check.
    pub path_prefix: String,
    /// `:authority` of the check; by default the cluster's name.
    pub authority: String,
    pub timeout_ms: u64,
    /// Request headers sent to the auth service (when present).
    pub forward_headers: Vec<String>,
    /// Answer headers copied to the upstream request on allow; also
    /// identity headers, so always stripped from the client's request.
    pub copy_headers: Vec<String>,
    pub on_error: OnError,
}

/// How the auth service answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'r> {
    Allow(Vec<(usize, &'r str)>),
    Deny(u32, Option<&'r str>),
    Error,
}

pub fn parse(r: &mut SectionReader<'_>) -> External {
    let cluster = r.opt_string("cluster", |c| {
        if c.is_empty() || c.len() > 200 {
            Err("must name an Envoy cluster".into())
        } else {
            Ok(())
        }
    });
    if cluster.is_none() {
        let at = r.path_of("cluster");
        r.error(at, "is required");
    }
    let path_prefix = r
        .opt_string("path_prefix", |p| {
            if p.is_empty() || (p.starts_with('/') && !p.ends_with('/')) {
                Ok(())
            } else {
                Err(
                    "must start with \"/\" and not end with \"/\" (the request path follows)"
                        .into(),
                )
            }
        })
        .unwrap_or_default();
    let authority = r.opt_string("authority", |_| Ok(()));
    let timeout_ms = r.u64_in("timeout_ms", 200, 10, 60_000);
    let forward_headers = r
        .string_list(
            "forward_headers",
            &["authorization", "cookie"],
            check_header_name,
        )
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let copy_headers = r
        .string_list("copy_headers", &[], check_header_name)
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let on_error = match r.one_of("on_error", &["deny", "local_jwt"]) {
        Some("local_jwt") => OnError::LocalJwt,
        _ => OnError::Deny,
    };
    let cluster = cluster.unwrap_or_default();
    External {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path_prefix,
        timeout_ms,
        forward_headers,
        copy_headers,
        on_error,
    }
}

impl External {
    /// The check for one request: its method and path (under the prefix),
    /// the forwarded headers, and who asks.
    pub fn callout<'s>(&'s self, headers: &Headers, tenant: &str) -> Callout<'s> {
        let path = headers.get(":path").unwrap_or("/");
        let mut out: Vec<(&'s str, String)> = vec![
            (
                ":method",
                headers.get(":method").unwrap_or("GET").to_string(),
            ),
            (":path", format!("{}{path}", self.path_prefix)),
            (":authority", self.authority.clone()),
            (
                "x-forwarded-host",
                headers.get(":authority").unwrap_or("").to_string(),
            ),
            ("x-meshware-tenant", tenant.to_string()),
        ];
        for name in &self.forward_headers {
            for v in headers.get_all(name) {
                out.push((name.as_str(), v.to_string()));
            }
        }
        Callout {
            cluster: &self.cluster,
            headers: out,
            timeout_ms: self.timeout_ms,
            tag: TAG,
            grpc: None,
        }
    }

    /// Reads the answer; `Allow` lists (copy header index, value).
    pub fn verdict<'r>(&self, response: Option<&'r CalloutResponse>) -> Verdict<'r> {
        let Some(r) = response else {
            return Verdict::Error;
        };
        match r.status {
            200..=299 => Verdict::Allow(
                self.copy_headers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| r.headers.get(h).map(|v| (i, v)))
                    .collect(),
            ),
            401 | 403 => Verdict::Deny(r.status, r.headers.get("www-authenticate")),
            _ => Verdict::Error,
        }
    }
}
