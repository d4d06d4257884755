use super::*;
use crate::config::parse;
use meshware_common::rng::Rng;
use meshware_common::store::MemoryStore;
use serde_json::json;

fn settings(section: serde_json::Value) -> LogSettings {
    let (s, e) = meshware_common::section::parse_alone(&section, "t", parse);
    assert_eq!(e, "");
    s
}

fn headers(method: &str, path: &str) -> Headers {
    Headers::new(vec![
        (":method".into(), method.into()),
        (":path".into(), path.into()),
    ])
}

fn field<'d>(d: &'d Decision<'_>, name: &str) -> &'d str {
    d.log_fields
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

#[test]
fn query_values_of_secret_parameters_are_redacted_by_default() {
    let s = settings(json!({}));
    assert_eq!(
        logged_path(&s, "/a/b?x=1&Token=abc&y&api_key=k&code="),
        "/a/b?x=1&Token=[redacted]&y&api_key=[redacted]&code=[redacted]"
    );
    assert_eq!(logged_path(&s, "/plain"), "/plain");
    let strip = settings(json!({"query": "strip"}));
    assert_eq!(logged_path(&strip, "/a?token=abc"), "/a");
    let keep = settings(json!({"query": "keep"}));
    assert_eq!(logged_path(&keep, "/a?token=abc"), "/a?token=abc");
    let custom = settings(json!({"redact_params": ["session"]}));
    assert_eq!(
        logged_path(&custom, "/a?token=abc&session=s"),
        "/a?token=abc&session=[redacted]"
    );
    let short = settings(json!({"max_path_bytes": 16}));
    assert_eq!(
        logged_path(&short, "/0123456789abcdefghij"),
        "/0123456789abcde..."
    );
}

#[test]
fn sampling_keeps_the_configured_share() {
    let env = MemoryStore::default();
    let mut rng = Rng::from_seed(7);
    let count = |rate: f64, rng: &mut Rng| {
        let s = settings(json!({"sample_rate": rate}));
        (0..10_000)
            .filter(|_| {
                let d = on_request(
                    &s,
                    "acme",
                    &headers("GET", "/"),
                    rng,
                    &env,
                    &mut Started::default(),
                );
                field(&d, "sampled") == "1"
            })
            .count()
    };
    assert_eq!(count(1.0, &mut rng), 10_000);
    assert_eq!(count(0.0, &mut rng), 0);
    let half = count(0.25, &mut rng);
    assert!((2_300..2_700).contains(&half), "{half}");
}

#[test]
fn red_metrics_count_method_and_status_class_and_time() {
    let s = settings(json!({}));
    let env = MemoryStore::default();
    *env.now.borrow_mut() = 1_000;
    let mut rng = Rng::from_seed(1);
    let mut started = Started::default();
    let d = on_request(
        &s,
        "acme",
        &headers("PURGE", "/x?token=t"),
        &mut rng,
        &env,
        &mut started,
    );
    assert_eq!(field(&d, "tenant"), "acme");
    assert_eq!(field(&d, "path"), "/x?token=[redacted]");
    assert_eq!(d.metrics.iter().collect::<Vec<_>>(), vec![(IN_FLIGHT, 1)]);
    *env.now.borrow_mut() = 1_042;
    env.properties
        .borrow_mut()
        .insert("response.code".into(), 503u64.to_le_bytes().to_vec());
    let updates = on_complete(&mut started, &env).iter().collect::<Vec<_>>();
    let names = tenant_metrics("acme");
    let (counter, _) = updates[0];
    assert_eq!(
        names[counter].1,
        "meshware.requests.tenant.acme.method.other.status_class.5xx"
    );
    assert_eq!(
        names[DURATION].1,
        "meshware.request_duration_ms.tenant.acme"
    );
    assert_eq!(names[IN_FLIGHT].1, "meshware.in_flight.tenant.acme");
    assert_eq!(&updates[1..], &[(DURATION, 42), (IN_FLIGHT, -1)]);
    // Counted once, however often the log phase is reported.
    assert!(on_complete(&mut started, &env).is_empty());
    // No response at all: status class `none`.
    let mut started = Started::default();
    on_request(
        &s,
        "acme",
        &headers("GET", "/"),
        &mut rng,
        &env,
        &mut started,
    );
    env.properties.borrow_mut().clear();
    let (counter, _) = on_complete(&mut started, &env).iter().next().unwrap();
    assert_eq!(
        names[counter].1,
        "meshware.requests.tenant.acme.method.GET.status_class.none"
    );
}

#[test]
fn bad_settings_are_reported_with_paths() {
    let (_, e) = meshware_common::section::parse_alone(
        &json!({"sample_rate": 2, "query": "hide", "redact_params": ["bad name"], "x": 1}),
        "t",
        parse,
    );
    for want in [
        "t.sample_rate",
        "t.query",
        "t.redact_params",
        "t.x: unknown field",
    ] {
        assert!(e.contains(want), "missing {want} in {e}");
    }
}

#[test]
fn grpc_calls_are_classed_by_their_grpc_status() {
    let s = settings(json!({}));
    let env = MemoryStore::default();
    let mut rng = Rng::from_seed(1);
    let names = tenant_metrics("acme");
    let mut class_of = |content_type: &str, grpc_status: Option<u64>| {
        let mut started = Started::default();
        let h = Headers::new(vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/svc/M".into()),
            ("content-type".into(), content_type.into()),
        ]);
        on_request(&s, "acme", &h, &mut rng, &env, &mut started);
        let mut p = env.properties.borrow_mut();
        p.clear();
        p.insert("response.code".into(), 200u64.to_le_bytes().to_vec());
        if let Some(code) = grpc_status {
            p.insert("response.grpc_status".into(), code.to_le_bytes().to_vec());
        }
        drop(p);
        let (counter, _) = on_complete(&mut started, &env).iter().next().unwrap();
        names[counter].1.rsplit('.').next().unwrap().to_string()
    };
    assert_eq!(class_of("application/grpc", Some(14)), "5xx");
    assert_eq!(class_of("application/grpc+proto", Some(5)), "4xx");
    assert_eq!(class_of("application/grpc", Some(0)), "2xx");
    assert_eq!(class_of("application/grpc", None), "2xx");
    // A plain HTTP response that happens to carry the attribute: its status.
    assert_eq!(class_of("application/json", Some(14)), "2xx");
}
