//! What every meshware filter checks before its own work, whichever filters
//! are loaded: the request's path is one the upstream cannot read
//! differently (`path`), and headers that only meshware may set never come
//! from the client.
//!
//! The profile's per-tenant `request` section opts a tenant into ambiguous
//! path forms and method override headers; the owned headers are gathered
//! from every section of the profile, so even a module that does not read
//! `jwt_auth` strips a client's `x-user-id`.

use crate::path::{Form, Forms, Invalid, RequestPath, FORMS};
use crate::profile::Profile;
use crate::section::SectionReader;
use crate::tenancy::{Slot, Source, TenantHeader};
use serde_json::{Map, Value};

/// The section name.
pub const SECTION: &str = "request";

/// Headers frameworks read as the request's real method (Rails, Laravel,
/// Express's method-override, Spring's HiddenHttpMethodFilter variants).
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// jwt_auth's default identity header (`user_header`).
pub const DEFAULT_USER_HEADER: &str = "x-user-id";
/// endpoint_guard's default admin token header.
pub const DEFAULT_ADMIN_TOKEN_HEADER: &str = "x-admin-token";
/// The fault filter's drill header: a secret, owned by meshware for every
/// tenant (stripped before the upstream, fault section or not).
pub const FAULT_DRILL_HEADER: &str = "x-fault-drill";
/// idempotency's replay route (docs/CONFIG.md, `grpc_replay`): a duplicate
/// gRPC call carrying it is routed to the replay listener, which answers
/// with `REPLAY_CARRIER` in the same header; owned for every tenant, so no
/// client sets it.
pub const REPLAY_HEADER: &str = "x-meshware-replay";
pub const REPLAY_ROUTED: &str = "1";
pub const REPLAY_CARRIER: &str = "carrier";
/// The method and content type a replayed gRPC call goes to the replay
/// route with: were the route missing, no server would run it as a call.
pub const REPLAY_METHOD: &str = "OPTIONS";
pub const REPLAY_CONTENT_TYPE: &str = "application/x-meshware-replay";
/// canary's default routing header (Envoy routes on it).
pub const DEFAULT_ROUTING_HEADER: &str = "x-route-version";

/// Router headers a client could use to raise its own upstream budget;
/// circuit_breaker sets them from the profile.
pub const CLIENT_BUDGET_HEADERS: &[&str] = &[
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-stream-duration-ms",
];

/// What to do with method override headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodOverride {
    /// Removed from the request (the default).
    #[default]
    Strip,
    /// Kept; endpoint_guard checks their value against the route's methods.
    Check,
}

/// One tenant's request policy, compiled at configure time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Ambiguous path forms this tenant's traffic may use.
    pub allowed_forms: Forms,
    pub method_override: MethodOverride,
    /// Every header a meshware filter sets or reads as a credential for
    /// this tenant, lowercase: removed from the request by the first
    /// meshware filter that runs.
    pub owned_headers: Vec<String>,
    /// The owned headers that are credentials a later filter reads (the
    /// admin token): removed from the request all the same, and handed to
    /// the later filters through filter state (`handoff`).
    pub credential_headers: Vec<String>,
    /// canary's routing header when the tenant has a canary section: the
    /// header Envoy's route (and so the upstream cluster) follows.
    pub routing_header: Option<String>,
}

/// The filter-state value by which the first meshware filter hands the
/// credentials it removed to the filters after it: one `name:value` per
/// line after a first line `1` (header values hold no line breaks).
pub fn handoff(credentials: &[(&str, &str)]) -> String {
    let mut out = String::from("1");
    for (name, value) in credentials {
        out.push('\n');
        out.push_str(name);
        out.push(':');
        out.push_str(value);
    }
    out
}

/// The line of a `handoff` value that names the tenant a verified token
/// claimed (jwt_auth): `@` cannot begin a header name.
const CLAIMED_TENANT: &str = "@tenant:";

/// `mark` (a `handoff` value, or none yet) with `tenant` as the claimed
/// tenant: the filters after jwt_auth act for it.
pub fn with_claimed_tenant(mark: Option<&str>, tenant: &str) -> String {
    let mut out: String = match mark {
        Some(m) => {
            let kept: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with(CLAIMED_TENANT))
                .collect();
            crate::errors::joined(&kept, "\n")
        }
        None => "1".to_string(),
    };
    out.push('\n');
    out.push_str(CLAIMED_TENANT);
    out.push_str(tenant);
    out
}

/// The tenant a `handoff` value says a verified token claimed.
pub fn claimed_tenant(mark: &str) -> Option<&str> {
    mark.lines().find_map(|l| l.strip_prefix(CLAIMED_TENANT))
}

/// The credentials in a `handoff` value.
pub fn handed(value: &str) -> Vec<(String, String)> {
    value
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('@'))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Reads the tenant's `request` section (layered over `defaults.request`).
pub fn parse(r: &mut SectionReader<'_>) -> RequestPolicy {
    let mut allowed_forms = Forms::NONE;
    let names: Vec<&str> = FORMS.iter().map(|(_, n, _)| *n).collect();
    for name in r.string_list("allow_ambiguous_paths", &[], |n| {
        if Form::by_name(n).is_some() {
            Ok(())
        } else {
            Err(format!(
                "unknown path form \"{n}\" (expected one of: {})",
                crate::errors::joined(&names, ", ")
            ))
        }
    }) {
        if let Some(form) = Form::by_name(&name) {
            allowed_forms.add(form);
        }
    }
    let method_override = match r.raw("method_override") {
        None => MethodOverride::Strip,
        Some((Value::String(s), _)) if s == "strip" => MethodOverride::Strip,
        Some((Value::String(s), _)) if s == "check" => MethodOverride::Check,
        Some((_, path)) => {
            r.error(path, "must be \"strip\" or \"check\"");
            MethodOverride::Strip
        }
    };
    RequestPolicy {
        allowed_forms,
        method_override,
        owned_headers: Vec::new(),
        credential_headers: Vec::new(),
        routing_header: None,
    }
}

/// A field of `section`, from the tenant's sections or else `defaults`.
fn field<'a>(
    layers: &[Option<&'a Map<String, Value>>],
    section: &str,
    key: &str,
) -> Option<&'a Value> {
    layers
        .iter()
        .flatten()
        .find_map(|sections| sections.get(section)?.as_object()?.get(key))
}

fn has_section(layers: &[Option<&Map<String, Value>>], section: &str) -> bool {
    layers.iter().flatten().any(|s| s.contains_key(section))
}

/// canary's routing header for one tenant (see `RequestPolicy`).
pub fn routing_header(
    tenant: Option<&Map<String, Value>>,
    defaults: Option<&Map<String, Value>>,
) -> Option<String> {
    let layers = [tenant, defaults];
    has_section(&layers, "canary").then(|| {
        field(&layers, "canary", "routing_header")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_ROUTING_HEADER)
            .to_ascii_lowercase()
    })
}

/// The credential headers of one tenant (see `RequestPolicy`).
pub fn credential_headers(
    tenant: Option<&Map<String, Value>>,
    defaults: Option<&Map<String, Value>>,
) -> Vec<String> {
    let layers = [tenant, defaults];
    let name = field(&layers, "endpoint_guard", "admin_token_header")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_ADMIN_TOKEN_HEADER);
    vec![name.to_ascii_lowercase(), FAULT_DRILL_HEADER.to_string()]
}

/// The headers meshware owns for one tenant (its sections, then
/// `defaults`'), lowercase and without repeats. The owning filter
/// validates the names; this only gathers them.
pub fn owned_headers(
    tenant: Option<&Map<String, Value>>,
    defaults: Option<&Map<String, Value>>,
    tenant_header: Option<&TenantHeader>,
    policy: &RequestPolicy,
) -> Vec<String> {
    let layers = [tenant, defaults];
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.to_ascii_lowercase();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    if let Some(h) = tenant_header.filter(|h| !h.trusted) {
        add(&h.name);
    }
    // The admin token is a secret for endpoint_guard only, enabled or not;
    // the drill header one for fault only.
    add(
        &text(field(&layers, "endpoint_guard", "admin_token_header"))
            .unwrap_or_else(|| DEFAULT_ADMIN_TOKEN_HEADER.to_string()),
    );
    add(FAULT_DRILL_HEADER);
    // Routed on by the bootstrap whenever the chain has idempotency: owned
    // for every tenant, whichever sections it has.
    add(REPLAY_HEADER);
    if has_section(&layers, "jwt_auth") {
        add(&text(field(&layers, "jwt_auth", "user_header"))
            .unwrap_or_else(|| DEFAULT_USER_HEADER.to_string()));
        if let Some(claims) =
            field(&layers, "jwt_auth", "claim_to_headers").and_then(Value::as_object)
        {
            claims.values().filter_map(Value::as_str).for_each(&mut add);
        }
        if let Some(copied) = field(&layers, "jwt_auth", "external")
            .and_then(|e| e.get("copy_headers"))
            .and_then(Value::as_array)
        {
            copied.iter().filter_map(Value::as_str).for_each(&mut add);
        }
    }
    if let Some(h) = routing_header(tenant, defaults) {
        add(&h);
    }
    let strip_budget = field(&layers, "circuit_breaker", "strip_client_envoy_headers")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if has_section(&layers, "circuit_breaker") && strip_budget {
        CLIENT_BUDGET_HEADERS.iter().for_each(|h| add(h));
    }
    if policy.method_override == MethodOverride::Strip {
        METHOD_OVERRIDE_HEADERS.iter().for_each(|h| add(h));
    }
    out
}

/// Why a request is refused before any filter's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Invalid(Invalid),
    Ambiguous(Form),
    /// Readings of the path name different tenants.
    AmbiguousTenant,
    /// A gRPC call whose `grpc-timeout` is not one: Envoy would ignore it
    /// (no deadline) while the upstream may read it otherwise.
    GrpcTimeout(crate::grpc::BadTimeout),
}

impl Refusal {
    /// The outcome label of `meshware_decisions{filter="request"}`.
    pub fn outcome(self) -> usize {
        match self {
            Refusal::Invalid(_) => INVALID_PATH,
            Refusal::Ambiguous(_) => AMBIGUOUS_PATH,
            Refusal::AmbiguousTenant => AMBIGUOUS_TENANT,
            Refusal::GrpcTimeout(_) => INVALID_GRPC_TIMEOUT,
        }
    }

    /// The 400's problem+json body (RFC 9457): the reason, never the path.
    pub fn body(self) -> String {
        let detail = match self {
            Refusal::Invalid(i) => i.describe().to_string(),
            Refusal::Ambiguous(f) => format!(
                "ambiguous path: {} (backends read it differently; see the tenant's request.allow_ambiguous_paths)",
                f.describe()
            ),
            Refusal::AmbiguousTenant => "ambiguous path: its readings belong to different tenants".to_string(),
            Refusal::GrpcTimeout(why) => format!(
                "invalid grpc-timeout: {} (1 to 8 digits, then H, M, S, m, u or n)",
                why.describe()
            ),
        };
        crate::jsontext::problem("about:blank", "Bad Request", 400, &detail)
    }
}

/// One request as every filter judges it: its path's readings, its tenant,
/// and whether it is refused before any filter's own work.
#[derive(Debug, Clone)]
pub struct Judged {
    pub path: RequestPath,
    pub slot: Slot,
    /// What chose the tenant (host, path prefix, trusted header, default).
    pub source: Source,
    pub refusal: Option<Refusal>,
}

/// Reads the request's path (`read`: already read, as the suite shares
/// it), resolves its tenant on it and applies the tenant's policy: a form
/// the tenant did not allow refuses the request; allowed forms add their
/// readings, which must all name the same tenant.
pub fn judge<S>(
    profile: &Profile<S>,
    authority: Option<&str>,
    raw_path: &str,
    read: Option<&Result<RequestPath, Invalid>>,
    tenant_header: Option<&str>,
) -> Judged {
    let owned;
    let read = match read {
        Some(r) => r,
        None => {
            owned = RequestPath::read(raw_path);
            &owned
        }
    };
    let mut path = match read {
        Ok(p) => p.clone(),
        Err(invalid) => {
            let path = RequestPath::default();
            let (slot, source) = profile.resolve(authority, &path, tenant_header);
            return Judged {
                path,
                slot,
                source,
                refusal: Some(Refusal::Invalid(*invalid)),
            };
        }
    };
    let (slot, source) = profile.resolve(authority, &path, tenant_header);
    let forms = path.forms();
    if forms.is_empty() {
        return Judged {
            path,
            slot,
            source,
            refusal: None,
        };
    }
    let policy = profile.request_policy(slot);
    if let Some(form) = forms.outside(policy.allowed_forms).first() {
        return Judged {
            path,
            slot,
            source,
            refusal: Some(Refusal::Ambiguous(form)),
        };
    }
    if let Err(invalid) = path.allow(raw_path, policy.allowed_forms) {
        return Judged {
            path,
            slot,
            source,
            refusal: Some(Refusal::Invalid(invalid)),
        };
    }
    let (again, again_source) = profile.resolve(authority, &path, tenant_header);
    let refusal = (again != slot || again_source == Source::AmbiguousPath)
        .then_some(Refusal::AmbiguousTenant);
    Judged {
        path,
        slot,
        source,
        refusal,
    }
}

pub const OUTCOMES: &[&str] = &[
    "invalid_path",
    "ambiguous_path",
    "ambiguous_tenant",
    "invalid_grpc_timeout",
];
pub const INVALID_PATH: usize = 0;
pub const AMBIGUOUS_PATH: usize = 1;
pub const AMBIGUOUS_TENANT: usize = 2;
pub const INVALID_GRPC_TIMEOUT: usize = 3;

/// A gRPC call's `grpc-timeout` (`value`) judged: `content_type` says
/// whether the request is gRPC (asked only when the value is malformed).
pub fn judge_grpc_timeout(
    value: Option<&str>,
    content_type: impl FnOnce() -> bool,
) -> Option<Refusal> {
    let bad = crate::grpc::parse_timeout(value?).err()?;
    content_type().then_some(Refusal::GrpcTimeout(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_tenant_rides_with_the_handed_credentials() {
        let mark = handoff(&[("x-admin-token", "t0k")]);
        let claimed = with_claimed_tenant(Some(&mark), "globex");
        assert_eq!(claimed_tenant(&claimed), Some("globex"));
        assert_eq!(
            handed(&claimed),
            vec![("x-admin-token".to_string(), "t0k".to_string())]
        );
        let again = with_claimed_tenant(Some(&claimed), "acme");
        assert_eq!(claimed_tenant(&again), Some("acme"));
        assert_eq!(again.matches("@tenant:").count(), 1);
        assert_eq!(claimed_tenant(&with_claimed_tenant(None, "x")), Some("x"));
        assert_eq!(claimed_tenant(&mark), None);
    }

    #[test]
    fn a_malformed_grpc_timeout_refuses_only_a_grpc_call() {
        let grpc = || true;
        assert_eq!(judge_grpc_timeout(None, grpc), None);
        assert_eq!(judge_grpc_timeout(Some("5S"), || panic!("not asked")), None);
        assert_eq!(
            judge_grpc_timeout(Some("5s"), grpc),
            Some(Refusal::GrpcTimeout(crate::grpc::BadTimeout::UnknownUnit))
        );
        assert_eq!(judge_grpc_timeout(Some("soon"), || false), None);
        let refusal = Refusal::GrpcTimeout(crate::grpc::BadTimeout::TooManyDigits);
        assert_eq!(
            OUTCOMES.get(refusal.outcome()),
            Some(&"invalid_grpc_timeout")
        );
        assert!(refusal
            .body()
            .contains("invalid grpc-timeout: more than 8 digits"));
    }
    use crate::section::parse_alone;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_policy_reads_forms_and_names_bad_ones() {
        let (p, errors) = parse_alone(
            &json!({"allow_ambiguous_paths": ["semicolon", "encoded_slash"], "method_override": "check"}),
            "t",
            parse,
        );
        assert_eq!(errors, "");
        assert!(p.allowed_forms.has(Form::Semicolon) && p.allowed_forms.has(Form::EncodedSlash));
        assert!(!p.allowed_forms.has(Form::Backslash));
        assert_eq!(p.method_override, MethodOverride::Check);
        let (_, errors) = parse_alone(
            &json!({"allow_ambiguous_paths": ["semicolons"], "method_override": "keep", "x": 1}),
            "t",
            parse,
        );
        assert!(
            errors.contains("t.allow_ambiguous_paths[0]: unknown path form \"semicolons\""),
            "{errors}"
        );
        assert!(
            errors.contains("t.method_override: must be \"strip\" or \"check\""),
            "{errors}"
        );
        assert!(errors.contains("t.x: unknown field"), "{errors}");
    }

    #[test]
    fn owned_headers_come_from_every_section() {
        let tenant = json!({
            "jwt_auth": {"claim_to_headers": {"email": "X-Email"}, "external": {"copy_headers": ["x-groups"]}},
            "canary": {"routing_header": "x-version"},
        });
        let defaults =
            json!({"endpoint_guard": {"admin_token_header": "x-ops-token"}, "circuit_breaker": {}});
        let header = TenantHeader {
            name: "x-tenant-id".into(),
            trusted: false,
        };
        let owned = owned_headers(
            tenant.as_object(),
            defaults.as_object(),
            Some(&header),
            &RequestPolicy::default(),
        );
        for h in [
            "x-tenant-id",
            "x-ops-token",
            "x-user-id",
            "x-email",
            "x-groups",
            "x-version",
            "x-envoy-max-retries",
            "x-http-method-override",
            "x-fault-drill",
            "x-meshware-replay",
        ] {
            assert!(owned.iter().any(|o| o == h), "{h} in {owned:?}");
        }
        let trusted = TenantHeader {
            name: "x-tenant-id".into(),
            trusted: true,
        };
        let check = RequestPolicy {
            method_override: MethodOverride::Check,
            ..RequestPolicy::default()
        };
        let owned = owned_headers(None, None, Some(&trusted), &check);
        assert_eq!(
            owned,
            vec![
                "x-admin-token".to_string(),
                "x-fault-drill".to_string(),
                "x-meshware-replay".to_string()
            ]
        );
    }

    fn profile() -> Profile<()> {
        let v = json!({
            "tenancy": {"path_prefixes": {"/t/x": "x"}, "default": "d"},
            "tenants": {
                "d": {},
                "x": {"request": {"allow_ambiguous_paths": ["semicolon", "encoded_unreserved"]}}
            }
        });
        crate::profile::compile(v.to_string().as_bytes(), "", |_| ()).unwrap()
    }

    fn judged(p: &Profile<()>, raw: &str) -> (String, Option<Refusal>) {
        let j = judge(p, None, raw, None, None);
        (p.tenant_name(j.slot).to_string(), j.refusal)
    }

    #[test]
    fn forms_are_refused_unless_the_tenant_allows_them() {
        let p = profile();
        assert_eq!(judged(&p, "/a/b"), ("d".into(), None));
        assert_eq!(
            judged(&p, "/a;b"),
            ("d".into(), Some(Refusal::Ambiguous(Form::Semicolon)))
        );
        assert_eq!(
            judged(&p, "/a%zz"),
            ("d".into(), Some(Refusal::Invalid(Invalid::BadEncoding)))
        );
        assert_eq!(judged(&p, "/t/x/a;b"), ("x".into(), None));
        assert_eq!(judged(&p, "/T/X/y"), ("x".into(), None));
        assert_eq!(
            judged(&p, "/t/x/a%2fb"),
            ("x".into(), Some(Refusal::Ambiguous(Form::EncodedSlash)))
        );
        // Allowed forms whose readings leave the tenant's prefix.
        assert_eq!(
            judged(&p, "/t/x/..;/y"),
            ("x".into(), Some(Refusal::AmbiguousTenant))
        );
        assert_eq!(judged(&p, "/t/%78/y").1, Some(Refusal::AmbiguousTenant));
        let j = judge(&p, None, "/t/x/a;b", None, None);
        assert!(j.path.readings().iter().any(|r| r.path == "/t/x/a"));
    }

    #[test]
    fn credentials_are_handed_on_through_one_value() {
        let value = handoff(&[("x-admin-token", "a:b c"), ("x-ops", "1")]);
        assert_eq!(
            handed(&value),
            vec![
                ("x-admin-token".to_string(), "a:b c".to_string()),
                ("x-ops".to_string(), "1".to_string())
            ]
        );
        assert!(handed(&handoff(&[])).is_empty());
        assert!(handed("1").is_empty());
    }

    #[test]
    fn refusals_explain_without_echoing_the_path() {
        let body = Refusal::Ambiguous(Form::EncodedSlash).body();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 400);
        assert!(v["detail"].as_str().unwrap().contains("%2F"));
        assert!(Refusal::Invalid(crate::path::Invalid::BadEncoding)
            .body()
            .contains("percent-encoding"));
    }
}
