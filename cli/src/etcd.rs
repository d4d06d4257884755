//! `meshware push | get | rollback`: the profile's documents in etcd, laid
//! out as the filters read them (`<prefix>tenancy`, `<prefix>defaults`,
//! `<prefix>tenants/<name>`), through etcd's v3 JSON gateway.
//!
//! A push writes only the keys whose document changed, in one transaction
//! guarded by what it read: the guard key `<prefix>_push` (every push
//! rewrites it) and every key it touches must still be at the revision
//! read, so of two concurrent pushes exactly one lands and the other
//! writes nothing.

use meshware_common::base64;
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The key every push rewrites, so concurrent pushes conflict.
pub const GUARD_KEY: &str = "_push";

/// Where etcd's client port is: `http://host:port` (plain HTTP: reach a TLS
/// etcd through a local proxy, e.g. `etcd grpc-proxy`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--etcd {url}: expected http://host:port"))?;
        // host:port as the bootstrap's --upstream reads it.
        let at = crate::bootstrap::Upstream::parse("etcd", rest.trim_end_matches('/'))
            .map_err(|e| format!("--etcd {e}"))?;
        Ok(Endpoint {
            host: at.address,
            port: at.port,
        })
    }

    /// POSTs a JSON body to the gateway; the JSON answer, or the problem.
    fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let text = body.to_string();
        let mut s = TcpStream::connect((self.host.as_str(), self.port))
            .map_err(|e| format!("etcd {}:{}: {e}", self.host, self.port))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            self.host,
            self.port,
            text.len()
        );
        s.write_all(request.as_bytes())
            .map_err(|e| format!("etcd: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| format!("etcd: {e}"))?;
        let (status, body) = parse_http(&raw).ok_or("etcd: not an HTTP answer")?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| format!("etcd: HTTP {status} with a body that is not JSON"))?;
        if status != 200 {
            let why = v
                .get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(format!("etcd: HTTP {status}: {why}"));
        }
        Ok(v)
    }
}

/// Status and body of a complete HTTP/1.1 answer (content-length, chunked
/// or read to the end).
fn parse_http(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(raw.get(..end)?).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw.get(end + 4..)?.to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(rest.get(..i)?).trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(i + 2..i + 2 + size)?);
            rest = rest.get(i + 4 + size..).unwrap_or(&[]);
        }
        body = out;
    }
    Some((status, body))
}

fn b64(text: &str) -> String {
    base64::encode(text.as_bytes())
}

/// A member of an object (`Null` when absent), without indexing.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn number(v: &Value) -> u64 {
    // The gateway writes int64s as strings and leaves zeros out.
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// What the store holds under a prefix at one revision.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub revision: u64,
    /// Key (after the prefix) -> (mod_revision, value).
    pub keys: std::collections::BTreeMap<String, (u64, String)>,
}

/// Reads every key under `prefix` (at `revision`, or the latest).
pub fn read(etcd: &Endpoint, prefix: &str, revision: Option<u64>) -> Result<Stored, String> {
    let end = base64::encode(&meshware_common::live::prefix_range_end(prefix.as_bytes()));
    let mut body = json!({"key": b64(prefix), "range_end": end});
    if let (Some(r), Some(obj)) = (revision, body.as_object_mut()) {
        obj.insert("revision".into(), json!(r.to_string()));
    }
    let v = etcd.call("/v3/kv/range", &body)?;
    let mut stored = Stored {
        revision: number(at(&v, "/header/revision")),
        ..Stored::default()
    };
    for kv in at(&v, "/kvs").as_array().into_iter().flatten() {
        let key = at(kv, "/key")
            .as_str()
            .and_then(base64::decode)
            .and_then(|k| String::from_utf8(k).ok())
            .ok_or("etcd: a key that is not base64 UTF-8")?;
        let value = at(kv, "/value")
            .as_str()
            .map_or(Some(Vec::new()), base64::decode)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| format!("etcd: {key}: a value that is not base64 UTF-8"))?;
        if let Some(k) = key.strip_prefix(prefix) {
            stored
                .keys
                .insert(k.to_string(), (number(at(kv, "/mod_revision")), value));
        }
    }
    Ok(stored)
}

/// The profile the documents under a prefix make (what the filters run).
pub fn profile_of(stored: &Stored) -> Result<Value, String> {
    let mut tenants = Map::new();
    let mut profile = Map::new();
    for (key, (_, text)) in &stored.keys {
        if !meshware_common::live::is_profile_key(key) {
            continue;
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("{}: not JSON: {e}", meshware_common::live::key_path(key)))?;
        match key.strip_prefix("tenants/") {
            Some(name) => {
                tenants.insert(name.to_string(), v);
            }
            None => {
                profile.insert(key.clone(), v);
            }
        }
    }
    if !profile.contains_key("tenancy") {
        return Err("the store holds no tenancy document under this prefix".into());
    }
    profile.insert("tenants".into(), Value::Object(tenants));
    Ok(Value::Object(profile))
}

/// The documents a profile is stored as: key (after the prefix) -> JSON text.
pub fn documents(profile: &Value) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for key in ["tenancy", "defaults"] {
        if let Some(v) = profile.get(key) {
            out.push((key.to_string(), v.to_string()));
        }
    }
    let tenants = profile
        .get("tenants")
        .and_then(Value::as_object)
        .ok_or("tenants: is required")?;
    for (name, v) in tenants {
        if name.contains('/') {
            return Err(format!("tenants.{name}: a stored tenant name has no '/'"));
        }
        out.push((format!("tenants/{name}"), v.to_string()));
    }
    Ok(out)
}

/// JSON equality where numbers compare by value (`1.0` written by one tool
/// and `1` by another are the same setting).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What a push will do, and the revisions it read (its guard).
#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: String,
    pub read_revision: u64,
    pub puts: Vec<(String, String)>,
    pub deletes: Vec<String>,
    /// Every touched key (and the guard key) with the mod_revision read
    /// (0: absent).
    guards: Vec<(String, u64)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.puts.is_empty() {
            let keys: Vec<&str> = self.puts.iter().map(|(k, _)| k.as_str()).collect();
            parts.push(format!("writes {}", keys.join(", ")));
        }
        if !self.deletes.is_empty() {
            parts.push(format!("deletes {}", self.deletes.join(", ")));
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Compares a profile with the store: the keys to write (documents that
/// differ as JSON, not as text) and the layout keys to delete.
pub fn plan(etcd: &Endpoint, prefix: &str, profile: &Value) -> Result<Plan, String> {
    let stored = read(etcd, prefix, None)?;
    let wanted = documents(profile)?;
    let same = |a: &str, b: &str| match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => same_json(&a, &b),
        _ => false,
    };
    let mut plan = Plan {
        prefix: prefix.to_string(),
        read_revision: stored.revision,
        puts: Vec::new(),
        deletes: Vec::new(),
        guards: vec![(
            GUARD_KEY.to_string(),
            stored.keys.get(GUARD_KEY).map_or(0, |(m, _)| *m),
        )],
    };
    for (key, text) in &wanted {
        match stored.keys.get(key) {
            Some((_, old)) if same(old, text) => {}
            found => {
                plan.puts.push((key.clone(), text.clone()));
                plan.guards
                    .push((key.clone(), found.map_or(0, |(m, _)| *m)));
            }
        }
    }
    for (key, (m, _)) in &stored.keys {
        if meshware_common::live::is_profile_key(key) && !wanted.iter().any(|(k, _)| k == key) {
            plan.deletes.push(key.clone());
            plan.guards.push((key.clone(), *m));
        }
    }
    Ok(plan)
}

/// Writes a plan in one transaction; the store's new revision. Fails, and
/// writes nothing, when anything it read changed meanwhile.
pub fn commit(etcd: &Endpoint, plan: &Plan) -> Result<u64, String> {
    let full = |k: &str| b64(&format!("{}{k}", plan.prefix));
    let compare: Vec<Value> = plan
        .guards
        .iter()
        .map(|(k, m)| {
            if *m == 0 {
                // Still absent: never created since.
                json!({"key": full(k), "target": "VERSION", "result": "EQUAL", "version": "0"})
            } else {
                json!({"key": full(k), "target": "MOD", "result": "EQUAL", "mod_revision": m.to_string()})
            }
        })
        .collect();
    let mut success: Vec<Value> = plan
        .puts
        .iter()
        .map(|(k, text)| json!({"requestPut": {"key": full(k), "value": b64(text)}}))
        .collect();
    success.extend(
        plan.deletes
            .iter()
            .map(|k| json!({"requestDeleteRange": {"key": full(k)}})),
    );
    let stamp = format!("read at revision {}", plan.read_revision);
    success.push(json!({"requestPut": {"key": full(GUARD_KEY), "value": b64(&stamp)}}));
    let operations = success.len();
    let v = etcd
        .call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success}),
        )
        .map_err(|e| {
            if e.contains("too many operations in txn request") {
                format!(
                    "{e}: this push writes {operations} keys in one transaction, more than the store allows (etcd's --max-txn-ops, default 128); raise it on the etcd servers (e.g. --max-txn-ops 4096 for 1,000+ tenants); nothing was written"
                )
            } else {
                e
            }
        })?;
    if at(&v, "/succeeded") != &Value::Bool(true) {
        return Err(format!(
            "the store changed since it was read at revision {} (another push?): nothing was written; run the command again",
            plan.read_revision
        ));
    }
    Ok(number(at(&v, "/header/revision")))
}

/// `meshware push`: validates a profile with the filters' own code, then
/// writes what changed in one guarded transaction. What it did, one line.
pub fn push(etcd: &Endpoint, prefix: &str, profile: &Value, what: &str) -> Result<String, String> {
    let text = profile.to_string();
    if let Err(errors) = crate::validate_profile(text.as_bytes()) {
        return Err(format!("{what} is invalid, nothing was written:\n{errors}"));
    }
    let plan = plan(etcd, prefix, profile)?;
    if plan.is_empty() {
        return Ok(format!(
            "{what}: no change (store revision {})",
            plan.read_revision
        ));
    }
    let revision = commit(etcd, &plan)?;
    Ok(format!(
        "{what}: {} (store revision {revision})",
        plan.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_documents() {
        let e = Endpoint::parse("http://127.0.0.1:2379/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2379));
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://x").is_err());
        let docs = documents(&json!({"tenancy": {"default": "a"}, "tenants": {"a": {}}})).unwrap();
        assert_eq!(
            docs,
            [
                ("tenancy".to_string(), "{\"default\":\"a\"}".to_string()),
                ("tenants/a".to_string(), "{}".to_string())
            ]
        );
        assert_eq!(
            parse_http(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
            Some((200, b"abc".to_vec()))
        );
    }
}
