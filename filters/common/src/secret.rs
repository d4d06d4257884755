//! Secret-bearing fields of the profile: inline text, or a reference to an
//! environment variable of the VM, `{"env": "NAME"}`, resolved once at
//! configure time. The profile (and every Istio resource rendered from it)
//! then holds only the variable's name; Envoy passes the value to the VM
//! (`vm_config.environment_variables`, Istio's WasmPlugin `vmConfig.env`).
//!
//! Error messages name the field's path and the variable, never the value.

use serde_json::Value;

/// The one key of an environment reference.
pub const ENV_KEY: &str = "env";

/// Where a secret field's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    Inline(&'a str),
    Env(&'a str),
}

impl SecretSource<'_> {
    /// How errors refer to the value: never the value itself.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline(_) => "the value".to_string(),
            SecretSource::Env(name) => format!("environment variable {name}"),
        }
    }
}

/// An environment variable name as POSIX shells and Kubernetes accept it.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && name.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "{{\"env\": {}}}: an environment variable name is letters, digits and _ (not starting with a digit)",
            crate::jsontext::quoted(name)
        ))
    }
}

/// Reads the shape of a secret field: a string, or `{"env": "NAME"}`.
pub fn source(value: &Value) -> Result<SecretSource<'_>, String> {
    match value {
        Value::String(s) => Ok(SecretSource::Inline(s)),
        Value::Object(fields) => {
            let name = match (fields.len(), fields.get(ENV_KEY)) {
                (1, Some(Value::String(name))) => name,
                _ => return Err("must be a string or {\"env\": \"NAME\"}".to_string()),
            };
            check_env_name(name)?;
            Ok(SecretSource::Env(name))
        }
        _ => Err("must be a string or {\"env\": \"NAME\"}".to_string()),
    }
}

/// The value of a secret field, looking environment variables up with
/// `lookup`. An unset or empty variable is an error that says how to
/// pass it to the VM.
pub fn resolve_with(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match source(value)? {
        SecretSource::Inline(s) => Ok(s.to_string()),
        SecretSource::Env(name) => match lookup(name) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(format!("environment variable {name} is empty")),
            None => Err(format!(
                "environment variable {name} is not set in the VM (Envoy: vm_config.environment_variables.host_env_keys; Istio: WasmPlugin vmConfig.env)"
            )),
        },
    }
}

/// The VM's environment: WASI's `environ_get` in the wasm build, which
/// Envoy fills from `vm_config.environment_variables`.
pub fn vm_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

thread_local! {
    /// Set while the CLI validates a profile away from the VM.
    static SHAPE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `check` with environment references checked for their shape only
/// (`resolve` answers `Ok(None)`): `meshware validate` and `meshware istio`
/// judge a profile without the secrets, which only the proxy has.
pub fn shape_only<T>(check: impl FnOnce() -> T) -> T {
    let before = SHAPE_ONLY.with(|s| s.replace(true));
    let out = check();
    SHAPE_ONLY.with(|s| s.set(before));
    out
}

/// A secret field's value from the VM's environment or inline; `None`
/// for an environment reference under `shape_only`.
pub fn resolve(value: &Value) -> Result<Option<String>, String> {
    if SHAPE_ONLY.with(std::cell::Cell::get) {
        if let SecretSource::Env(_) = source(value)? {
            return Ok(None);
        }
    }
    resolve_with(value, &vm_env).map(Some)
}

/// Every environment variable a profile document refers to, sorted and
/// unique: what the rendered bootstrap and Istio resources pass to the VM.
/// Only secret fields accept `{"env": ...}` (any other object with that one
/// key is an unknown-field error), so a walk finds exactly the references.
pub fn env_names(profile: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(fields) => {
                if let Ok(SecretSource::Env(name)) = source(v) {
                    out.push(name.to_string());
                    return;
                }
                fields.values().for_each(|f| walk(f, out));
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(profile, &mut out);
    crate::order::sort(&mut out);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn env(name: &str) -> Option<String> {
        match name {
            "HS_KEY" => Some("c2VjcmV0".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn inline_and_env_values_resolve() {
        assert_eq!(resolve_with(&json!("abc"), &env).unwrap(), "abc");
        assert_eq!(
            resolve_with(&json!({"env": "HS_KEY"}), &env).unwrap(),
            "c2VjcmV0"
        );
    }

    #[test]
    fn errors_name_the_variable_and_never_a_value() {
        let unset = resolve_with(&json!({"env": "NOPE"}), &env).unwrap_err();
        assert!(unset.contains("NOPE is not set"), "{unset}");
        assert!(unset.contains("host_env_keys") && unset.contains("vmConfig.env"));
        let empty = resolve_with(&json!({"env": "EMPTY"}), &env).unwrap_err();
        assert_eq!(empty, "environment variable EMPTY is empty");
        for bad in [
            json!({"env": "1X"}),
            json!({"env": "A-B"}),
            json!({"env": ""}),
        ] {
            let e = resolve_with(&bad, &env).unwrap_err();
            assert!(e.contains("environment variable name"), "{e}");
        }
        for bad in [
            json!({"env": "A", "x": 1}),
            json!({"ENV": "A"}),
            json!({"env": 3}),
            json!(7),
            json!(null),
        ] {
            let e = resolve_with(&bad, &env).unwrap_err();
            assert_eq!(e, "must be a string or {\"env\": \"NAME\"}", "{bad}");
        }
        assert_eq!(
            source(&json!({"env": "HS_KEY"})).unwrap().describe(),
            "environment variable HS_KEY"
        );
    }

    #[test]
    fn shape_only_defers_environment_references() {
        let reference = json!({"env": "MESHWARE_NEVER_SET_IN_TESTS"});
        assert!(resolve(&reference).unwrap_err().contains("is not set"));
        assert_eq!(shape_only(|| resolve(&reference)), Ok(None));
        assert_eq!(shape_only(|| resolve(&json!("x"))), Ok(Some("x".into())));
        assert!(shape_only(|| resolve(&json!({"env": "1"}))).is_err());
        assert!(
            resolve(&reference).is_err(),
            "the mode ends with the closure"
        );
    }

    #[test]
    fn env_names_finds_every_reference_once() {
        let profile = json!({
            "tenants": {
                "a": {"jwt_auth": {"providers": [{"jwks": {"keys": [
                    {"kty": "oct", "k": {"env": "B_KEY"}},
                    {"kty": "oct", "k": {"env": "A_KEY"}}
                ]}}]}},
                "b": {"endpoint_guard": {"admin_tokens": [{"env": "B_KEY"}, "sha256:00"]}}
            }
        });
        assert_eq!(env_names(&profile), ["A_KEY", "B_KEY"]);
        assert!(env_names(&json!({"env": "x-y"})).is_empty());
    }
}
