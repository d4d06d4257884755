//! JSON Web Keys (RFC 7517/7518/8037) parsed once, at configure time, into
//! verifying keys. Only public material and HMAC secrets; never fetched from a
//! token's `jku`/`x5u`.

use serde_json::{Map, Value};

/// base64url without padding (RFC 7515 section 2); padding and other
/// alphabets are rejected.
pub fn b64url(text: &str) -> Option<Vec<u8>> {
    meshware_common::base64::decode_url(text)
}

#[derive(Clone)]
pub enum KeyMaterial {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    // Never print key material (HMAC secrets especially).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            KeyMaterial::Rsa(_) => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
            KeyMaterial::Hmac(_) => "oct",
        };
        f.write_str(kind)
    }
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub key: KeyMaterial,
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing \"{name}\""))
}

fn bytes(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    b64url(field(m, name)?).ok_or_else(|| format!("\"{name}\" is not base64url"))
}

fn ec_point(m: &Map<String, Value>, len: usize) -> Result<Vec<u8>, String> {
    let (x, y) = (bytes(m, "x")?, bytes(m, "y")?);
    if x.len() != len || y.len() != len {
        return Err(format!("x and y must be {len} bytes"));
    }
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    Ok(sec1)
}

/// Where a JWK comes from: the profile may give an HMAC key (`k`) as
/// `{"env": "NAME"}`; a fetched JWKS may not name our environment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Profile,
    Fetched,
}

/// The bytes of an `oct` key's `k`: inline base64url, or (in the profile)
/// an environment variable holding the same text. `None`: an environment
/// reference while the CLI checks shapes only.
fn hmac_key(m: &Map<String, Value>, origin: KeyOrigin) -> Result<Option<Vec<u8>>, String> {
    let Some(value @ Value::Object(_)) = m.get("k") else {
        return bytes(m, "k").map(Some);
    };
    if origin == KeyOrigin::Fetched {
        return Err("\"k\" must be a string".into());
    }
    let from = meshware_common::secret::source(value)
        .map_err(|e| format!("\"k\" {e}"))?
        .describe();
    match meshware_common::secret::resolve(value).map_err(|e| format!("\"k\": {e}"))? {
        None => Ok(None),
        Some(text) => b64url(text.trim())
            .map(Some)
            .ok_or_else(|| format!("\"k\": {from} is not base64url")),
    }
}

pub fn parse_jwk(m: &Map<String, Value>, origin: KeyOrigin) -> Result<Jwk, String> {
    let kid = m.get("kid").and_then(Value::as_str).map(str::to_string);
    let key = match field(m, "kty")? {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&bytes(m, "n")?);
            let e = rsa::BigUint::from_bytes_be(&bytes(m, "e")?);
            let key = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
            if rsa::traits::PublicKeyParts::size(&key) < 256 {
                return Err("RSA keys must be at least 2048 bits".into());
            }
            KeyMaterial::Rsa(key)
        }
        "EC" => match field(m, "crv")? {
            "P-256" => KeyMaterial::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&ec_point(m, 32)?)
                    .map_err(|_| "bad P-256 point".to_string())?,
            ),
            "P-384" => KeyMaterial::P384(
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&ec_point(m, 48)?)
                    .map_err(|_| "bad P-384 point".to_string())?,
            ),
            other => return Err(format!("unsupported curve \"{other}\"")),
        },
        "OKP" => match field(m, "crv")? {
            "Ed25519" => {
                let x: [u8; 32] = bytes(m, "x")?
                    .try_into()
                    .map_err(|_| "x must be 32 bytes".to_string())?;
                KeyMaterial::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "bad Ed25519 key".to_string())?,
                )
            }
            other => return Err(format!("unsupported curve \"{other}\"")),
        },
        "oct" => {
            // Checked for its shape only: a placeholder never verifies, the
            // CLI does not build a filter from it.
            let Some(k) = hmac_key(m, origin)? else {
                return Ok(Jwk {
                    kid,
                    key: KeyMaterial::Hmac(Vec::new()),
                });
            };
            if k.len() < 32 {
                return Err("HMAC keys must be at least 32 bytes".into());
            }
            KeyMaterial::Hmac(k)
        }
        other => return Err(format!("unsupported key type \"{other}\"")),
    };
    Ok(Jwk { kid, key })
}

/// A JWKS document (`{"keys": [...]}`); each error names the key's index.
pub fn parse_jwks(v: &Value) -> Result<Vec<Jwk>, Vec<(usize, String)>> {
    let Some(keys) = v.get("keys").and_then(Value::as_array) else {
        return Err(vec![(0, "a JWKS is {\"keys\": [...]}".into())]);
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match k
            .as_object()
            .ok_or_else(|| "a key is an object".to_string())
            .and_then(|m| parse_jwk(m, KeyOrigin::Profile))
        {
            Ok(j) => out.push(j),
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The keys of a fetched JWKS that this filter can use; `None` when the
/// document is not a JWKS. Unusable keys are skipped, not fatal.
pub fn parse_jwks_lenient(v: &Value) -> Option<Vec<Jwk>> {
    let keys = v.get("keys").and_then(Value::as_array)?;
    Some(
        keys.iter()
            .filter_map(|k| {
                k.as_object()
                    .and_then(|m| parse_jwk(m, KeyOrigin::Fetched).ok())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_follows_rfc_4648_vectors() {
        // RFC 4648 section 10, url alphabet, no padding.
        for (text, plain) in [
            ("", ""),
            ("Zg", "f"),
            ("Zm8", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg", "foob"),
            ("Zm9vYmE", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(b64url(text).as_deref(), Some(plain.as_bytes()), "{text}");
        }
        assert_eq!(b64url("-_8"), Some(vec![0xfb, 0xff]));
        for bad in ["Zg==", "Z", "a+b", "a/b", "a b"] {
            assert_eq!(b64url(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_minted_jwks_parses_and_bad_keys_are_explained() {
        let v: Value = serde_json::from_str(include_str!("../testdata/vectors.json")).unwrap();
        let keys = parse_jwks(&v["jwks"]).unwrap();
        assert_eq!(keys.len(), 5);
        let bad = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-521", "x": "", "y": ""}, {"kty": "oct", "k": "c2hvcnQ"}, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]});
        let errors = parse_jwks(&bad).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].1.contains("P-521") && errors[1].1.contains("32 bytes"));
        assert!(
            format!("{:?}", keys[4].key) == "oct",
            "no key material in Debug"
        );
    }

    #[test]
    fn hmac_keys_may_come_from_the_environment_of_the_profile_only() {
        let reference = serde_json::json!({"keys": [{"kty": "oct", "kid": "h", "k": {"env": "MESHWARE_NEVER_SET"}}]});
        let errors = parse_jwks(&reference).unwrap_err();
        assert!(
            errors[0]
                .1
                .starts_with("\"k\": environment variable MESHWARE_NEVER_SET is not set"),
            "{errors:?}"
        );
        let keys = meshware_common::secret::shape_only(|| parse_jwks(&reference)).unwrap();
        assert!(
            !crate::verify::Alg::HS256.fits(&keys[0].key),
            "the shape-only placeholder never verifies"
        );
        // A fetched JWKS cannot make the proxy read its environment.
        assert_eq!(parse_jwks_lenient(&reference).map(|k| k.len()), Some(0));
        let not_b64 = serde_json::json!({"keys": [{"kty": "oct", "k": {"env": "PATH"}}]});
        if std::env::var("PATH").is_ok_and(|p| p.contains('/')) {
            let errors = parse_jwks(&not_b64).unwrap_err();
            assert_eq!(
                errors[0].1,
                "\"k\": environment variable PATH is not base64url"
            );
        }
    }
}
