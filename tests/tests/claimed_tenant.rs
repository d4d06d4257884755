//! One tenant for the whole chain. On a shared host (its requests fall to
//! the default tenant), a verified token's claim picks the tenant, and every
//! filter after jwt_auth acts for that tenant: rate_limit charges its quota,
//! idempotency keeps its records. Where the host names a tenant, a token
//! claiming another is refused.

use meshware_e2e::suite::Suite;
use serde_json::json;

fn profile() -> String {
    let v = meshware_e2e::jwt_vectors();
    let claims = json!({"issuer": v["issuer"], "audiences": [v["audience"]], "jwks": v["jwks"],
                        "algorithms": ["RS256"], "tenant_claim": "tenant", "tenant_from_claim": true});
    json!({
        "tenancy": {"hosts": {"alpha.example": "alpha"}, "default": "shared",
                    "header": {"name": "x-tenant-id", "trusted": false}},
        "tenants": {
            "shared": {"jwt_auth": {"providers": [claims]},
                       "rate_limit": {"limits": [{"name": "t", "key": "tenant", "rate": 100, "burst": 100}]}},
            "alpha": {"jwt_auth": {"providers": [claims]}},
            "globex": {
                "rate_limit": {"limits": [{"name": "once", "key": "route", "prefix": "/limited",
                                           "rate": 1, "per": "hour", "burst": 1}]},
                "idempotency": {"routes": [{"prefix": "/orders", "methods": ["POST"]}]}
            }
        }
    })
    .to_string()
}

#[test]
fn the_claimed_tenant_is_the_tenant_of_every_later_filter() {
    let s = Suite::start(&profile(), &["jwt_auth", "rate_limit", "idempotency"]);
    // A valid token whose tenant claim is globex.
    let bearer = format!("Bearer {}", meshware_e2e::jwt_token("other tenant"));
    let shared: [(&str, &str); 2] = [("host", "shared.example"), ("authorization", &bearer)];
    let r = s.get("/limited", &shared);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.echo.last().unwrap().header("x-tenant-id"), Some("globex"));
    // globex's quota (1 an hour), not the shared tenant's (100 a second).
    let r = s.get("/limited", &shared);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        s.metric("meshware_decisions{filter=\"rate_limit\",tenant=\"globex\",outcome=\"limited\"}"),
        Some(1.0)
    );
    // globex's idempotency routes (the shared tenant has none).
    let key: (&str, &[u8]) = ("idempotency-key", b"\"k1\"");
    let headers: Vec<(&str, &[u8])> = vec![
        ("host", b"shared.example"),
        ("authorization", bearer.as_bytes()),
        key,
    ];
    assert_eq!(s.send("POST", "/orders", &headers, b"{}").status, 200);
    let again = s.send("POST", "/orders", &headers, b"{}");
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    // Where the host names the tenant, a token claiming another is refused.
    let r = s.get(
        "/limited",
        &[("host", "alpha.example"), ("authorization", &bearer)],
    );
    assert_eq!(r.status, 403);
}
