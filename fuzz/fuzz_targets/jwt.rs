//! JWT segments and JWKS documents. The input is split at the first NUL:
//! a token verified against the minted key set, then a JWKS to parse.
#![no_main]
use jwt_auth::jwk::{parse_jwks, parse_jwks_lenient};
use jwt_auth::verify::{verify, Alg, Provider};
use std::sync::OnceLock;

fn provider() -> &'static Provider {
    static P: OnceLock<Provider> = OnceLock::new();
    P.get_or_init(|| {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../filters/jwt-auth/testdata/vectors.json")).unwrap();
        Provider {
            issuer: v["issuer"].as_str().unwrap().into(),
            audiences: vec![v["audience"].as_str().unwrap().into()],
            algorithms: ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"]
                .iter()
                .filter_map(|a| Alg::parse(a))
                .collect(),
            keys: parse_jwks(&v["jwks"]).unwrap(),
            leeway_s: 60,
            max_token_bytes: 8192,
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (token, jwks) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(token) = std::str::from_utf8(token) {
        let _ = verify(provider(), &[], token, 1_800_000_000);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(jwks) {
        let _ = parse_jwks(&v);
        let _ = parse_jwks_lenient(&v);
    }
});
