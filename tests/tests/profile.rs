//! Profile validation through real Envoy: a bad profile is rejected by Envoy
//! with the same path-naming messages the CLI prints; shipped configs pass
//! `envoy --mode validate`.

use meshware_e2e::envoy::{expect_rejected, validate};
use meshware_e2e::suite::{bootstrap, Suite};

const WRONG_TYPE: &str = r#"{
  "tenancy": {"default": "acme"},
  "tenants": {"acme": {"trace_context": {"sample_rate": "high", "echo_everything": true}}}
}"#;

#[test]
fn envoy_rejects_a_bad_profile_with_the_cli_messages() {
    let cli = meshware_cli::validate_profile(WRONG_TYPE.as_bytes()).unwrap_err();
    let expected: Vec<String> = cli.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        expected,
        [
            "tenants.acme.trace_context.echo_everything: unknown field (expected one of: enabled, sample_rate, trust_incoming_sampling, translate_b3, translate_jaeger, generate_request_id, baggage_tenant_key, echo_request_id, echo_traceparent, traceresponse)",
            "tenants.acme.trace_context.sample_rate: must be a number",
        ]
    );
    let (config, _, _) = bootstrap(WRONG_TYPE, &["trace_context"], 1);
    let (code, log) = expect_rejected(&config);
    assert!(
        matches!(code, Some(c) if c != 0),
        "envoy did not exit non-zero: {code:?}\n{log}"
    );
    for line in &expected {
        assert!(
            log.contains(line.as_str()),
            "envoy log lacks {line:?}:\n{log}"
        );
    }
}

#[test]
fn envoy_rejects_invalid_json_duplicate_names_and_bad_tenancy() {
    for (profile, message) in [
        ("{not json", "(root): invalid JSON"),
        // A name twice in one object is ambiguous (which burst?): refused,
        // where a reader keeping the last one would run with 9.
        (
            "{\"tenancy\": {\"default\": \"a\"},\n \"tenants\": {\"a\": {\"rate_limit\": {\"burst\": 1, \"burst\": 9}}}}",
            "(root): invalid JSON: duplicate name in an object at line 2 column 47",
        ),
        (
            r#"{"tenancy": {"default": "nobody"}, "tenants": {}}"#,
            "tenancy.default: unknown tenant \"nobody\"",
        ),
    ] {
        let (config, _, _) = bootstrap(profile, &["trace_context"], 1);
        let (code, log) = expect_rejected(&config);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{profile}: {code:?}\n{log}"
        );
        assert!(
            log.contains(message),
            "{profile}: log lacks {message:?}:\n{log}"
        );
    }
}

#[test]
fn demo_bootstrap_passes_envoy_validate_mode() {
    let profile =
        std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap();
    let names: Vec<&str> = meshware_cli::FILTERS.iter().map(|f| f.name).collect();
    let (config, _, _) = bootstrap(&profile, &names, 8080);
    let (ok, out) = validate(&config);
    assert!(ok, "{out}");
}

#[test]
fn a_valid_profile_serves() {
    let profile =
        std::fs::read_to_string(meshware_e2e::root().join("examples/tenants.json")).unwrap();
    let s = Suite::start(&profile, &["trace_context"]);
    assert_eq!(s.get("/", &[]).status, 200);
    let tenants = serde_json::from_str::<serde_json::Value>(&profile).unwrap()["tenants"]
        .as_object()
        .unwrap()
        .len();
    let line = format!("[trace_context] configured {tenants} tenants");
    assert!(s.envoy.log().contains(&line), "{line}");
    if meshware_e2e::suite::suite_module() {
        // The profile narrowed to trace_context: the other concerns are not
        // even created.
        assert!(
            s.envoy.log().contains("[suite] concerns: trace_context\n")
                || s.envoy.log().contains("[suite] concerns: trace_context\r"),
            "{}",
            s.envoy.log()
        );
    }
}

#[test]
fn envoy_validate_mode_rejects_a_bad_profile_too() {
    let (config, _, _) = bootstrap(WRONG_TYPE, &["trace_context"], 1);
    let (ok, out) = validate(&config);
    assert!(!ok, "validate mode accepted a bad profile:\n{out}");
    assert!(
        out.contains("tenants.acme.trace_context.sample_rate: must be a number"),
        "{out}"
    );
}

/// Envoy stops at the first filter that rejects its configuration, so each
/// filter is checked in a bootstrap of its own: Envoy must exit non-zero and
/// log every expected line.
fn rejected_per_filter(profile: &str, cases: &[(&str, Vec<&str>)]) {
    for (filter, lines) in cases {
        let (config, _, _) = bootstrap(profile, &[filter], 1);
        let (code, log) = expect_rejected(&config);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{filter}: {code:?}\n{log}"
        );
        for line in lines {
            assert!(log.contains(line), "envoy log lacks {line:?}:\n{log}");
        }
    }
}

#[test]
fn envoy_rejects_bad_security_headers_and_idempotency_sections_with_their_paths() {
    let profile = r#"{"tenancy": {"default": "a"}, "tenants": {"a": {
        "security_headers": {"referrer_policy": {"value": "no-referrer", "mode": "sometimes"}, "content_security_policy": 5},
        "idempotency": {"ttl_s": 0, "over_limit": "drop", "routes": [{"prefix": "orders"}],
                        "grpc_replay": "sometimes"}}}}"#;
    rejected_per_filter(
        profile,
        &[
            (
                "security_headers",
                vec![
                    "tenants.a.security_headers.referrer_policy.mode: \"sometimes\"",
                    "tenants.a.security_headers.content_security_policy: must be a string",
                ],
            ),
            (
                "idempotency",
                vec![
                    "tenants.a.idempotency.ttl_s: must be >= 1",
                    "tenants.a.idempotency.over_limit: \"drop\"",
                    "tenants.a.idempotency.routes[0].prefix: \"orders\": a path starts with",
                    "tenants.a.idempotency.grpc_replay: \"sometimes\": expected \"trailers_only\" or \"full\"",
                ],
            ),
        ],
    );
}

/// The live configuration's watch settings are judged by every module
/// when Envoy configures it, like the rest of `config_source`.
#[test]
fn envoy_rejects_bad_watch_settings_with_their_paths() {
    let profile = r#"{"tenancy": {"default": "a"}, "tenants": {"a": {}},
        "config_source": {"cluster": "etcd", "prefix": "/mw/", "watch_cluster": "",
                          "resync_ms": 5}}"#;
    let lines = vec![
        "config_source.watch_cluster: must name an HTTP/2",
        "config_source.resync_ms: must be >= 1000",
    ];
    rejected_per_filter(profile, &[("rate_limit", lines.clone()), ("cors", lines)]);
}

#[test]
fn envoy_rejects_bad_access_log_and_jwt_callout_sections_with_their_paths() {
    let profile = r#"{"tenancy": {"default": "a"}, "tenants": {"a": {
        "access_log": {"sample_rate": 1.5, "query": "hide", "redact_params": ["bad name"], "colour": 1},
        "jwt_auth": {
            "providers": [{"issuer": "i", "algorithms": ["RS256"],
                           "remote_jwks": {"path": "jwks", "unavailable_status": 404, "ttl": 5}}],
            "external": {"timeout_ms": 0, "on_error": "allow"}}}}}"#;
    rejected_per_filter(
        profile,
        &[
        (
            "access_log",
            vec![
                "tenants.a.access_log.sample_rate:",
                "tenants.a.access_log.query: \"hide\": expected \"redact\", \"strip\" or \"keep\"",
                "tenants.a.access_log.redact_params",
                "tenants.a.access_log.colour: unknown field",
            ],
        ),
        (
            "jwt_auth",
            vec![
                "tenants.a.jwt_auth.providers[0].remote_jwks.cluster: is required",
                "tenants.a.jwt_auth.providers[0].remote_jwks.path:",
                "tenants.a.jwt_auth.providers[0].remote_jwks.unavailable_status:",
                "tenants.a.jwt_auth.providers[0].remote_jwks.ttl: unknown field",
                "tenants.a.jwt_auth.external.cluster: is required",
                "tenants.a.jwt_auth.external.timeout_ms:",
                "tenants.a.jwt_auth.external.on_error: \"allow\": expected \"deny\" or \"local_jwt\"",
            ],
        ),
    ],
    );
}

/// The suite module reports the problems of every concern it configures in
/// one rejection, and a problem in the shared parts once, not per concern.
#[test]
fn the_suite_module_rejects_every_concerns_problems_at_once() {
    let profile = r#"{"tenancy": {"default": "a", "hosts": {"x.example": "ghost"}},
        "tenants": {"a": {
            "cors": {"origins": 5},
            "rate_limit": {"limits": [{"name": "l", "rate": 0, "burst": 1}]},
            "canary": {"routing_header": "bad header"}}}}"#;
    let (config, _, _) = bootstrap(profile, &[meshware_cli::bootstrap::SUITE], 1);
    let (code, log) = expect_rejected(&config);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{log}");
    let cli: Vec<String> = meshware_cli::validate_profile(profile.as_bytes())
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for concern in ["tenants.a.cors", "tenants.a.rate_limit", "tenants.a.canary"] {
        assert!(
            cli.iter().any(|l| l.starts_with(concern)),
            "the CLI reports {concern}: {cli:?}"
        );
    }
    for line in &cli {
        assert!(
            log.contains(line.as_str()),
            "envoy log lacks {line:?}:\n{log}"
        );
    }
    let shared = "tenancy.hosts[\"x.example\"]: unknown tenant";
    let rejections = log.matches("[suite] invalid profile").count();
    assert!(rejections >= 1, "{log}");
    assert_eq!(log.matches(shared).count(), rejections, "{log}");
}
