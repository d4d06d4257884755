//! JWS compact token verification (RFC 7515/7519): structure, algorithm
//! allow-list, key selection by `kid` and key type, signature, then the
//! registered claims. Never follows `jku`/`x5u`; `alg: none` never passes.

use crate::jwk::{b64url, Jwk, KeyMaterial};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    /// Whether a key can verify this algorithm: no algorithm/key-type
    /// confusion (an RSA public key is never an HMAC secret).
    pub(crate) fn fits(self, key: &KeyMaterial) -> bool {
        use Alg::*;
        // An empty HMAC key is the CLI's shape-only placeholder: never a key.
        matches!(
            (self, key),
            (
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512,
                KeyMaterial::Rsa(_)
            ) | (ES256, KeyMaterial::P256(_))
                | (ES384, KeyMaterial::P384(_))
                | (EdDSA, KeyMaterial::Ed25519(_))
        ) || matches!((self, key), (HS256 | HS384 | HS512, KeyMaterial::Hmac(k)) if !k.is_empty())
    }
}

/// Why a token was refused (metric outcome `denied_<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    TooLarge,
    BadAlgorithm,
    UnknownKid,
    BadSignature,
    MissingExp,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    /// `crit` names an extension this verifier does not implement (RFC 7515
    /// §4.1.11: then the token MUST be rejected), or `b64: false` (RFC 7797,
    /// an unencoded payload this verifier does not read).
    UnsupportedCrit,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::TooLarge => "too_large",
            Reject::BadAlgorithm => "bad_algorithm",
            Reject::UnknownKid => "unknown_kid",
            Reject::BadSignature => "bad_signature",
            Reject::MissingExp => "missing_exp",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::BadIssuer => "bad_issuer",
            Reject::BadAudience => "bad_audience",
            Reject::UnsupportedCrit => "unsupported_crit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub keys: Vec<Jwk>,
    pub leeway_s: u64,
    pub max_token_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub exp: u64,
}

fn signature_ok(alg: Alg, key: &KeyMaterial, signed: &[u8], sig: &[u8]) -> bool {
    use hmac::Mac;
    use rsa::signature::Verifier;
    match (alg, key) {
        (Alg::RS256, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha256>(k, signed, sig),
        (Alg::RS384, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha384>(k, signed, sig),
        (Alg::RS512, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha512>(k, signed, sig),
        (Alg::PS256, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha256>(k, signed, sig),
        (Alg::PS384, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha384>(k, signed, sig),
        (Alg::PS512, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha512>(k, signed, sig),
        (Alg::ES256, KeyMaterial::P256(k)) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(signed, &s).is_ok())
        }
        (Alg::ES384, KeyMaterial::P384(k)) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(signed, &s).is_ok())
        }
        (Alg::EdDSA, KeyMaterial::Ed25519(k)) => ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_strict(signed, &s).is_ok()),
        (Alg::HS256, KeyMaterial::Hmac(k)) => hmac::Hmac::<sha2::Sha256>::new_from_slice(k)
            .is_ok_and(|mut m| {
                m.update(signed);
                m.verify_slice(sig).is_ok()
            }),
        (Alg::HS384, KeyMaterial::Hmac(k)) => hmac::Hmac::<sha2::Sha384>::new_from_slice(k)
            .is_ok_and(|mut m| {
                m.update(signed);
                m.verify_slice(sig).is_ok()
            }),
        (Alg::HS512, KeyMaterial::Hmac(k)) => hmac::Hmac::<sha2::Sha512>::new_from_slice(k)
            .is_ok_and(|mut m| {
                m.update(signed);
                m.verify_slice(sig).is_ok()
            }),
        _ => false,
    }
}

fn rsa_pkcs1<D>(k: &rsa::RsaPublicKey, signed: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    use rsa::signature::Verifier;
    rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| {
        rsa::pkcs1v15::VerifyingKey::<D>::new(k.clone())
            .verify(signed, &s)
            .is_ok()
    })
}

fn rsa_pss<D>(k: &rsa::RsaPublicKey, signed: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    use rsa::signature::Verifier;
    rsa::pss::Signature::try_from(sig).is_ok_and(|s| {
        rsa::pss::VerifyingKey::<D>::new(k.clone())
            .verify(signed, &s)
            .is_ok()
    })
}

fn segment_json(text: &str) -> Result<Map<String, Value>, Reject> {
    let bytes = b64url(text).ok_or(Reject::Malformed)?;
    match meshware_common::json::parse(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Reject::Malformed),
    }
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Reject> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| *n >= 0.0)
            .map(|n| Some(n as u64))
            .ok_or(Reject::Malformed),
    }
}

/// The issuer a token claims, unverified: which provider's verdict about
/// it is the relevant one when every provider refused it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let claims = segment_json(token.split('.').nth(1)?).ok()?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Verifies `token` against the provider's inline keys plus `fetched` keys.
pub fn verify(p: &Provider, fetched: &[Jwk], token: &str, now_s: u64) -> Result<Verified, Reject> {
    if token.len() > p.max_token_bytes {
        return Err(Reject::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed);
    };
    let header = segment_json(h)?;
    // No JWS extension is implemented: any `crit` (well-formed or not) and
    // an unencoded payload are refused before anything else is read.
    if header.contains_key("crit") || header.get("b64").is_some_and(|b| b != &Value::Bool(true)) {
        return Err(Reject::UnsupportedCrit);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .filter(|a| p.algorithms.contains(a))
        .ok_or(Reject::BadAlgorithm)?;
    let sig = b64url(s).ok_or(Reject::Malformed)?;
    let claims = segment_json(c)?;
    let signed = token.len() - s.len() - 1;
    let signed = token.as_bytes().get(..signed).ok_or(Reject::Malformed)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Jwk> = p
        .keys
        .iter()
        .chain(fetched)
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        return Err(Reject::UnknownKid);
    }
    let fitting: Vec<&Jwk> = candidates
        .into_iter()
        .filter(|k| alg.fits(&k.key))
        .collect();
    if fitting.is_empty() {
        // The named key exists but is of another type: algorithm confusion.
        return Err(Reject::BadAlgorithm);
    }
    if !fitting
        .iter()
        .any(|k| signature_ok(alg, &k.key, signed, &sig))
    {
        return Err(Reject::BadSignature);
    }
    let exp = number(&claims, "exp")?.ok_or(Reject::MissingExp)?;
    if now_s > exp.saturating_add(p.leeway_s) {
        return Err(Reject::Expired);
    }
    if number(&claims, "nbf")?.is_some_and(|nbf| nbf > now_s.saturating_add(p.leeway_s)) {
        return Err(Reject::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(p.issuer.as_str()) {
        return Err(Reject::BadIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => p.audiences.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| p.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !p.audiences.is_empty() && !aud_ok {
        return Err(Reject::BadAudience);
    }
    Ok(Verified { claims, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::parse_jwks;

    /// Vectors minted by PyJWT + cryptography (tests/mint_tokens.py).
    fn vectors() -> Value {
        serde_json::from_str(include_str!("../testdata/vectors.json")).unwrap()
    }

    fn provider(v: &Value) -> Provider {
        Provider {
            issuer: v["issuer"].as_str().unwrap().into(),
            audiences: vec![v["audience"].as_str().unwrap().into()],
            algorithms: [
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
                "HS256", "HS384", "HS512",
            ]
            .iter()
            .filter_map(|a| Alg::parse(a))
            .collect(),
            keys: parse_jwks(&v["jwks"]).unwrap(),
            leeway_s: 60,
            max_token_bytes: 8192,
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn every_minted_case_gets_its_expected_verdict() {
        let v = vectors();
        let p = provider(&v);
        for case in v["cases"].as_array().unwrap() {
            let got = match verify(&p, &[], case["token"].as_str().unwrap(), NOW) {
                Ok(_) => "ok",
                Err(r) => r.label(),
            };
            assert_eq!(got, case["expect"].as_str().unwrap(), "{}", case["name"]);
        }
    }

    #[test]
    fn a_provider_accepts_only_the_algorithms_it_lists() {
        let v = vectors();
        let mut p = provider(&v);
        p.algorithms = vec![Alg::ES256];
        let rs = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "valid RS256")
            .unwrap();
        assert_eq!(
            verify(&p, &[], rs["token"].as_str().unwrap(), NOW).unwrap_err(),
            Reject::BadAlgorithm
        );
        p.max_token_bytes = 100;
        assert_eq!(
            verify(&p, &[], rs["token"].as_str().unwrap(), NOW).unwrap_err(),
            Reject::TooLarge
        );
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let v = vectors();
        let p = provider(&v);
        let ok = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "valid ES256")
            .unwrap();
        // exp is 2100-01-01: valid 60 s past it, not 61.
        assert!(verify(&p, &[], ok["token"].as_str().unwrap(), 4_102_444_860).is_ok());
        assert_eq!(
            verify(&p, &[], ok["token"].as_str().unwrap(), 4_102_444_861).unwrap_err(),
            Reject::Expired
        );
    }
}
