//! Live tenant configuration from a key-value store (etcd v3 through its
//! JSON gateway): the `config_source` section of the plugin configuration,
//! the store's protocol, and how a change is judged and applied. Pure: the
//! host adapter (`host::live`) sends the calls, shares the result between
//! workers and reconfigures the filters.
//!
//! Layout under the prefix: `tenancy`, `defaults`, `tenants/<name>`; each a
//! JSON document, the profile's section of that name. One tenant's change
//! touches only its key. Other keys under the prefix are ignored.

use crate::errors::ConfigErrors;
use crate::CalloutResponse;
use serde_json::Value;

/// A small map kept as a vector sorted by key: the few operations the
/// snapshot needs, without a B-tree's code in every module (about 25 KB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed<T>(Vec<(String, T)>);

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Keyed(Vec::new())
    }
}

impl<T> Keyed<T> {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
    pub fn get(&self, key: &str) -> Option<&T> {
        self.find(key)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| v)
    }
    pub fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        let i = self.find(key).ok()?;
        self.0.get_mut(i).map(|(_, v)| v)
    }
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }
    pub fn insert(&mut self, key: String, value: T) -> Option<T> {
        match self.find(&key) {
            Ok(i) => self
                .0
                .get_mut(i)
                .map(|slot| std::mem::replace(&mut slot.1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }
    pub fn remove(&mut self, key: &str) -> Option<T> {
        let i = self.find(key).ok()?;
        Some(self.0.remove(i).1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> IntoIterator for Keyed<T> {
    type Item = (String, T);
    type IntoIter = std::vec::IntoIter<(String, T)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The bootstrap profile's top-level section naming the store.
pub const SECTION: &str = "config_source";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSettings {
    /// The Envoy cluster of etcd's client port (HTTP/1.1 or h2c).
    pub cluster: String,
    /// The `:authority` of the calls (etcd ignores it; a mesh may route on it).
    pub authority: String,
    /// Every key starts with it, e.g. `/meshware/prod/`.
    pub prefix: String,
    pub poll_ms: u64,
    pub timeout_ms: u64,
    /// An HTTP/2 cluster of the same etcd: the poller watches the prefix
    /// through etcd's gRPC Watch and polls as soon as anything changes.
    pub watch_cluster: Option<String>,
    /// While the watch is open, the store is polled only this often (a
    /// safety net); `poll_ms` again when it is not.
    pub resync_ms: u64,
    /// A document (one key's value) larger than this is rejected.
    pub max_document_bytes: usize,
    /// The status endpoint: a path the filters answer themselves (JSON)...
    pub status_path: String,
    /// ...to clients from these ranges only (others get a 404).
    pub status_allow_cidrs: Vec<crate::net::Cidr>,
    /// The same ranges as written (for `to_json`).
    status_allow_text: Vec<String>,
    /// The header a status token comes in (`x-admin-token`).
    pub status_token_header: String,
    /// Tokens that open the status endpoint from anywhere, read from the
    /// VM's environment (`status_admin_tokens: [{"env": "NAME"}]`).
    pub status_tokens: StatusTokens,
    /// The variables they came from (for `to_json`).
    status_token_vars: Vec<String>,
}

/// Status tokens, never printed (`Debug` shows how many).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StatusTokens(pub Vec<String>);

impl std::fmt::Debug for StatusTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} status token(s)", self.0.len())
    }
}

impl StatusTokens {
    /// Whether `presented` is one of the tokens: every token compared in
    /// full, without an early exit.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut any = false;
        for token in &self.0 {
            let t = token.as_bytes();
            let mut diff = u8::from(t.len() != presented.len());
            for (i, b) in t.iter().enumerate() {
                diff |= b ^ presented.get(i).copied().unwrap_or(0);
            }
            any |= diff == 0;
        }
        any
    }
}

impl SourceSettings {
    /// The section as JSON text, carried into every profile assembled from
    /// the store so a reconfigured filter keeps its source and endpoint.
    pub fn to_json(&self) -> String {
        use crate::jsontext::quoted;
        let cidrs: Vec<String> = self.status_allow_text.iter().map(|c| quoted(c)).collect();
        // The references, never the tokens.
        let tokens: Vec<String> = self
            .status_token_vars
            .iter()
            .map(|v| format!("{{\"env\":{}}}", quoted(v)))
            .collect();
        format!(
            "{{\"cluster\":{},\"authority\":{},\"prefix\":{},\"poll_ms\":{},\"timeout_ms\":{},{}\"resync_ms\":{},\"max_document_bytes\":{},\"status_path\":{},\"status_allow_cidrs\":[{}],\"status_token_header\":{},\"status_admin_tokens\":[{}]}}",
            quoted(&self.cluster),
            quoted(&self.authority),
            quoted(&self.prefix),
            self.poll_ms,
            self.timeout_ms,
            self.watch_cluster
                .as_deref()
                .map_or_else(String::new, |c| format!("\"watch_cluster\":{},", quoted(c))),
            self.resync_ms,
            self.max_document_bytes,
            quoted(&self.status_path),
            crate::errors::joined(&cidrs, ","),
            quoted(&self.status_token_header),
            crate::errors::joined(&tokens, ",")
        )
    }
}

/// Where the status endpoint is unless `status_path` says otherwise.
pub const DEFAULT_STATUS_PATH: &str = "/.well-known/meshware/status";

/// Reads `config_source` (absent: `Ok(None)`); problems are pushed to `errors`.
pub fn parse_settings(root: &Value, errors: &mut ConfigErrors) -> Option<SourceSettings> {
    let value = root.get(SECTION)?;
    let Some(fields) = value.as_object() else {
        errors.push(SECTION, "must be an object {cluster, prefix, ...}");
        return None;
    };
    let layer = crate::section::Layer {
        fields,
        path: SECTION,
    };
    let mut r = crate::section::SectionReader::new(vec![layer], errors);
    let cluster = r.opt_string("cluster", |c| {
        if c.is_empty() {
            Err("must name an Envoy cluster".into())
        } else {
            Ok(())
        }
    });
    let authority = r.opt_string("authority", |_| Ok(()));
    let prefix = r.opt_string("prefix", |p| {
        if p.is_empty() || p.len() > 256 {
            Err("must be 1 to 256 characters, e.g. \"/meshware/\"".into())
        } else {
            Ok(())
        }
    });
    let poll_ms = r.u64_in("poll_ms", 1000, 100, 60_000);
    let timeout_ms = r.u64_in("timeout_ms", 2000, 100, 30_000);
    let watch_cluster = r.opt_string("watch_cluster", |c| {
        if !c.is_empty() && c.len() <= 100 && c.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(())
        } else {
            Err("must name an HTTP/2 Envoy cluster (1 to 100 printable characters)".into())
        }
    });
    let resync_ms = r.u64_in("resync_ms", 30_000, 1000, 3_600_000);
    let max_document_bytes = r.u64_in("max_document_bytes", 65_536, 1024, 1 << 20) as usize;
    let status_path = r
        .opt_string("status_path", crate::section::check_path_prefix)
        .unwrap_or_else(|| DEFAULT_STATUS_PATH.to_string());
    let status_allow_text =
        r.string_list("status_allow_cidrs", &["127.0.0.1/32", "::1/128"], |c| {
            crate::net::Cidr::parse(c).map(|_| ())
        });
    let status_allow_cidrs = status_allow_text
        .iter()
        .filter_map(|c| crate::net::Cidr::parse(c).ok())
        .collect();
    let status_token_header = r
        .opt_string("status_token_header", crate::section::check_header_name)
        .unwrap_or_else(|| crate::request::DEFAULT_ADMIN_TOKEN_HEADER.to_string());
    let (status_tokens, status_token_vars) =
        read_env_tokens(&mut r, "status_admin_tokens", "a status token");
    r.finish();
    let missing = |errors: &mut ConfigErrors, key: &str| {
        errors.push(format!("{SECTION}.{key}"), "is required");
    };
    let cluster = match cluster {
        Some(c) => c,
        None => {
            missing(errors, "cluster");
            return None;
        }
    };
    let prefix = match prefix {
        Some(p) => p,
        None => {
            missing(errors, "prefix");
            return None;
        }
    };
    Some(SourceSettings {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        prefix,
        poll_ms,
        timeout_ms,
        watch_cluster,
        resync_ms,
        max_document_bytes,
        status_path,
        status_allow_cidrs,
        status_allow_text,
        status_token_header,
        status_tokens,
        status_token_vars,
    })
}

/// Tokens given as environment references only (`{"env": "NAME"}`, the
/// `status_admin_tokens`, fault's `drill_tokens`), so the profile never
/// holds one; each at least 16 printable characters. Returns the tokens
/// and the variables they came from.
pub fn read_env_tokens(
    r: &mut crate::section::SectionReader<'_>,
    key: &'static str,
    what: &str,
) -> (StatusTokens, Vec<String>) {
    let (mut tokens, mut vars) = (Vec::new(), Vec::new());
    let Some((value, path)) = r.raw(key) else {
        return (StatusTokens::default(), vars);
    };
    let Value::Array(items) = value else {
        r.error(path, "must be an array of {\"env\": \"NAME\"}");
        return (StatusTokens::default(), vars);
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = match crate::secret::source(item) {
            Ok(crate::secret::SecretSource::Env(name)) => name,
            Ok(crate::secret::SecretSource::Inline(_)) => {
                r.error(
                    at,
                    format!("{what} is given as {{\"env\": \"NAME\"}}, never inline"),
                );
                continue;
            }
            Err(e) => {
                r.error(at, e);
                continue;
            }
        };
        vars.push(name.to_string());
        match crate::secret::resolve(item) {
            Ok(Some(t)) if t.len() >= 16 && t.bytes().all(|b| b.is_ascii_graphic()) => tokens.push(t),
            Ok(Some(_)) => r.error(
                at,
                format!("environment variable {name}: {what} is 16+ printable characters without spaces"),
            ),
            Ok(None) => {} // shape only (CLI)
            Err(e) => r.error(at, e),
        }
    }
    (StatusTokens(tokens), vars)
}

/// One accepted document: the key's `mod_revision` and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub mod_revision: u64,
    pub text: String,
}

/// A document the proxy refused, and why (the errors name JSON paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub mod_revision: u64,
    pub errors: String,
}

/// What the proxy runs on: the store revision it last judged, the accepted
/// documents by key (`tenancy`, `defaults`, `tenants/<name>`) and the
/// refused ones. Shared between workers as JSON (`to_json`/`from_json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: u64,
    pub docs: Keyed<Doc>,
    pub rejected: Keyed<Rejection>,
}

impl Snapshot {
    /// Written directly (no serializer in the modules, see `jsontext`).
    pub fn to_json(&self) -> String {
        use crate::jsontext::{object, quoted};
        let docs = object(self.docs.iter().map(|(k, d)| {
            (
                k,
                format!("{{\"m\":{},\"t\":{}}}", d.mod_revision, quoted(&d.text)),
            )
        }));
        let rejected = object(self.rejected.iter().map(|(k, r)| {
            (
                k,
                format!("{{\"m\":{},\"e\":{}}}", r.mod_revision, quoted(&r.errors)),
            )
        }));
        format!(
            "{{\"revision\":{},\"docs\":{docs},\"rejected\":{rejected}}}",
            self.revision
        )
    }

    pub fn from_json(bytes: &[u8]) -> Option<Snapshot> {
        let v: Value = crate::json::parse(bytes).ok()?;
        let mut s = Snapshot {
            revision: v.get("revision")?.as_u64()?,
            ..Snapshot::default()
        };
        for (k, d) in v.get("docs")?.as_object()? {
            let doc = Doc {
                mod_revision: d.get("m")?.as_u64()?,
                text: d.get("t")?.as_str()?.to_string(),
            };
            s.docs.insert(k.clone(), doc);
        }
        for (k, r) in v.get("rejected")?.as_object()? {
            let rejection = Rejection {
                mod_revision: r.get("m")?.as_u64()?,
                errors: r.get("e")?.as_str()?.to_string(),
            };
            s.rejected.insert(k.clone(), rejection);
        }
        Some(s)
    }

    /// The profile these documents make; `None` until the store holds a
    /// `tenancy` key (the bootstrap profile serves meanwhile).
    pub fn profile(&self, source: &str) -> Option<String> {
        profile_of(&self.docs, source)
    }
}

/// The profile text of accepted documents: each is a JSON object already
/// (checked when judged), so they are put together as they are.
/// `source` is the `config_source` section's JSON text (empty: none).
fn profile_of(docs: &Keyed<Doc>, source: &str) -> Option<String> {
    use crate::jsontext::quoted;
    let tenancy = &docs.get("tenancy")?.text;
    let defaults = docs.get("defaults").map_or("{}", |d| d.text.as_str());
    let mut out = format!("{{\"tenancy\":{tenancy},\"defaults\":{defaults},\"tenants\":{{");
    let tenants = docs
        .iter()
        .filter_map(|(k, d)| Some((k.strip_prefix("tenants/")?, d)));
    for (i, (name, d)) in tenants.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(name));
        out.push(':');
        out.push_str(&d.text);
    }
    out.push('}');
    if !source.is_empty() {
        out.push_str(",\"config_source\":");
        out.push_str(source);
    }
    out.push('}');
    Some(out)
}

/// Whether a key (after the prefix) is one of the layout's.
pub fn is_profile_key(key: &str) -> bool {
    key == "tenancy"
        || key == "defaults"
        || key
            .strip_prefix("tenants/")
            .is_some_and(|t| !t.is_empty() && !t.contains('/'))
}

/// The JSON path a key's document is reported at.
pub fn key_path(key: &str) -> String {
    match key.strip_prefix("tenants/") {
        Some(t) => crate::errors::join("tenants", t),
        None => key.to_string(),
    }
}

/// A call to the store: `POST path` with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCall {
    pub path: &'static str,
    pub body: String,
}

/// What the store said about the keys under the prefix since the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub revision: u64,
    /// Keys whose document is new or changed: (key, mod_revision, value).
    pub updated: Vec<(String, u64, Vec<u8>)>,
    /// Keys the snapshot has and the store no longer does.
    pub deleted: Vec<String>,
}

/// The outcome of one answer from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Another call is needed (`next_call`).
    Continue,
    /// Nothing changed since the snapshot.
    Unchanged,
    Changed(Changes),
    /// The store's revision is older than the one already accepted (a store
    /// restored from an older snapshot): nothing is applied.
    Regressed {
        store: u64,
        accepted: u64,
    },
    /// No usable answer (down, slow, junk): the last good config stays.
    Failed(String),
}

/// A source of profile documents: the etcd one now; a Consul KV source
/// would answer the same calls (`next_call`, `answer`) with its own
/// protocol (blocking queries on the prefix, `X-Consul-Index` as revision).
pub trait ConfigSource {
    /// The call to send now, starting or continuing a poll.
    fn next_call(&mut self, snapshot: &Snapshot) -> SourceCall;
    /// The answer to the last call (`None`: the call failed).
    fn answer(&mut self, snapshot: &Snapshot, response: Option<&CalloutResponse>) -> Step;
}

/// etcd v3's JSON gateway (`/v3/kv/range`): a poll first asks for the
/// revision only (a count, a few bytes); when it moved, it lists the keys
/// with their `mod_revision`s (deleted keys are missing), then fetches
/// the values of the changed keys only, at that listing's revision.
#[derive(Debug)]
pub struct EtcdSource {
    key: String,
    range_end: String,
    phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Revision,
    Listing,
    Values { revision: u64, changes: Changes },
}

/// The end of the range of keys starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented, dropping trailing 0xff bytes).
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// etcd's gRPC Watch (`etcdserverpb.Watch/Watch`, a bidirectional stream),
/// the few fields the poller sends and reads. A watch only says *that*
/// something under the prefix changed: what changed is read by the same
/// poll as always, so a watch event is judged exactly as a polled change.
pub mod watch {
    use crate::protowire::{put_bytes, put_message, put_varint, Fields, Value};

    pub const SERVICE: &str = "etcdserverpb.Watch";
    pub const METHOD: &str = "Watch";

    /// `WatchRequest { create_request (1): WatchCreateRequest { key (1),
    /// range_end (2), start_revision (3) } }`: every key under `prefix`,
    /// from `start_revision` on (0: from now), so nothing between the last
    /// poll and the watch's start is missed.
    pub fn create_request(prefix: &str, start_revision: u64) -> Vec<u8> {
        let mut create = Vec::new();
        put_bytes(&mut create, 1, prefix.as_bytes());
        put_bytes(&mut create, 2, &super::prefix_range_end(prefix.as_bytes()));
        if start_revision > 0 {
            put_varint(&mut create, 3 << 3, start_revision);
        }
        let mut request = Vec::new();
        put_message(&mut request, 1, &create);
        request
    }

    /// What one `WatchResponse` says.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Response {
        /// `header.revision`: the store's revision when it was sent.
        pub revision: u64,
        pub created: bool,
        pub canceled: bool,
        /// Set when the start revision was compacted away (then canceled).
        pub compact_revision: u64,
        /// How many events it carries (`events`, field 11).
        pub events: usize,
    }

    /// Reads a `WatchResponse`; `None` when malformed.
    pub fn decode(bytes: &[u8]) -> Option<Response> {
        let mut r = Response::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(header)) => {
                    for f in Fields::new(header) {
                        if let (3, Value::Varint(v)) = f? {
                            r.revision = v;
                        }
                    }
                }
                (3, Value::Varint(v)) => r.created = v != 0,
                (4, Value::Varint(v)) => r.canceled = v != 0,
                (5, Value::Varint(v)) => r.compact_revision = v,
                (11, Value::Bytes(_)) => r.events = r.events.saturating_add(1),
                _ => {}
            }
        }
        Some(r)
    }

    /// What the poller does on a message of its watch.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Step {
        /// The watch is open: the safety-net period applies.
        Opened,
        /// Something changed past what the proxy runs on: poll now.
        Poll,
        /// Nothing to do (a progress notice, an event already applied).
        Nothing,
        /// etcd ended the watch (compacted start, canceled): poll and
        /// watch again later.
        Closed,
    }

    /// Decides on one message, given the revision the proxy runs on.
    pub fn step(message: Option<&Response>, running: u64) -> Step {
        match message {
            None => Step::Closed,
            Some(m) if m.canceled || m.compact_revision > 0 => Step::Closed,
            Some(m) if m.events > 0 && m.revision > running => Step::Poll,
            Some(m) if m.created => Step::Opened,
            Some(_) => Step::Nothing,
        }
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    // int64 fields are JSON strings in the gateway's output; absent is 0.
    match v {
        None => Some(0),
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => None,
    }
}

/// The header revision and the key-values of a range answer.
type RangeAnswer = (u64, Vec<(Vec<u8>, u64, Option<Vec<u8>>)>);

fn parse_range(response: Option<&CalloutResponse>) -> Result<RangeAnswer, String> {
    let r = response.ok_or("no answer (timeout, reset or no such cluster)")?;
    if r.status != 200 {
        return Err(format!("HTTP {}", r.status));
    }
    let v: Value = crate::json::parse(&r.body).map_err(|_| "a body that is not JSON")?;
    // Two lookups, not `Value::pointer`: its escape handling linked
    // `str::replace` (about 2 KB) into every module.
    let revision = v
        .get("header")
        .and_then(|h| h.get("revision"))
        .and_then(|n| number(Some(n)))
        .filter(|r| *r > 0)
        .ok_or("an answer without a revision")?;
    let mut kvs = Vec::new();
    for kv in v.get("kvs").and_then(Value::as_array).into_iter().flatten() {
        let key = kv
            .get("key")
            .and_then(Value::as_str)
            .and_then(crate::base64::decode)
            .ok_or("a key that is not base64")?;
        let mod_revision = number(kv.get("mod_revision")).ok_or("a bad mod_revision")?;
        let value = match kv.get("value") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(crate::base64::decode)
                    .ok_or("a value that is not base64")?,
            ),
        };
        kvs.push((key, mod_revision, value));
    }
    Ok((revision, kvs))
}

impl EtcdSource {
    pub fn new(prefix: &str) -> Self {
        EtcdSource {
            key: crate::base64::encode(prefix.as_bytes()),
            range_end: crate::base64::encode(&prefix_range_end(prefix.as_bytes())),
            phase: Phase::Revision,
        }
    }

    /// A range request over the prefix; `extra` adds members (`"a":1`).
    fn range(&self, extra: &str) -> SourceCall {
        SourceCall {
            path: "/v3/kv/range",
            body: format!(
                "{{\"key\":\"{}\",\"range_end\":\"{}\",{extra}}}",
                self.key, self.range_end
            ),
        }
    }

    /// The key after the prefix, when it is one of the layout's.
    fn layout_key(&self, prefix: &str, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
        is_profile_key(key).then(|| key.to_string())
    }
}

/// An etcd source bound to its prefix (the prefix is needed to read keys).
#[derive(Debug)]
pub struct Etcd {
    prefix: String,
    inner: EtcdSource,
}

impl Etcd {
    pub fn new(prefix: &str) -> Self {
        Etcd {
            prefix: prefix.to_string(),
            inner: EtcdSource::new(prefix),
        }
    }
}

impl ConfigSource for Etcd {
    fn next_call(&mut self, _snapshot: &Snapshot) -> SourceCall {
        let e = &self.inner;
        match &e.phase {
            Phase::Revision => e.range("\"count_only\":true"),
            Phase::Listing => e.range("\"keys_only\":true"),
            Phase::Values { revision, changes } => {
                let oldest = changes
                    .updated
                    .iter()
                    .map(|(_, m, _)| *m)
                    .min()
                    .unwrap_or(0);
                e.range(&format!(
                    "\"revision\":\"{revision}\",\"min_mod_revision\":\"{oldest}\""
                ))
            }
        }
    }

    fn answer(&mut self, snapshot: &Snapshot, response: Option<&CalloutResponse>) -> Step {
        let phase = std::mem::replace(&mut self.inner.phase, Phase::Revision);
        let (revision, kvs) = match parse_range(response) {
            Ok(a) => a,
            Err(e) => return Step::Failed(e.to_string()),
        };
        if revision < snapshot.revision {
            return Step::Regressed {
                store: revision,
                accepted: snapshot.revision,
            };
        }
        match phase {
            Phase::Revision => {
                if revision == snapshot.revision {
                    Step::Unchanged
                } else {
                    self.inner.phase = Phase::Listing;
                    Step::Continue
                }
            }
            Phase::Listing => {
                let mut listed: Keyed<u64> = Keyed::default();
                for (key, mod_revision, _) in kvs {
                    if let Some(k) = self.inner.layout_key(&self.prefix, &key) {
                        listed.insert(k, mod_revision);
                    }
                }
                // Accepted keys, then refused keys that have no accepted
                // document: each once.
                let deleted: Vec<String> = snapshot
                    .docs
                    .keys()
                    .chain(
                        snapshot
                            .rejected
                            .keys()
                            .filter(|k| !snapshot.docs.contains_key(k)),
                    )
                    .filter(|k| !listed.contains_key(k))
                    .cloned()
                    .collect();
                let updated: Vec<(String, u64, Vec<u8>)> = listed
                    .into_iter()
                    .filter(|(k, m)| {
                        let known = snapshot.docs.get(k).map(|d| d.mod_revision);
                        let refused = snapshot.rejected.get(k).map(|r| r.mod_revision);
                        known != Some(*m) && refused != Some(*m)
                    })
                    .map(|(k, m)| (k, m, Vec::new()))
                    .collect();
                let changes = Changes {
                    revision,
                    updated,
                    deleted,
                };
                if changes.updated.is_empty() {
                    return Step::Changed(changes);
                }
                self.inner.phase = Phase::Values { revision, changes };
                Step::Continue
            }
            Phase::Values {
                revision: at,
                mut changes,
            } => {
                let mut values: Keyed<(u64, Vec<u8>)> = Keyed::default();
                for (key, mod_revision, value) in kvs {
                    if let (Some(k), Some(v)) = (self.inner.layout_key(&self.prefix, &key), value) {
                        values.insert(k, (mod_revision, v));
                    }
                }
                for (key, mod_revision, value) in changes.updated.iter_mut() {
                    match values.remove(key.as_str()) {
                        Some((m, v)) if m == *mod_revision => *value = v,
                        // Gone or changed again since the listing: the next
                        // poll sees it.
                        _ => *mod_revision = 0,
                    }
                }
                changes.updated.retain(|(_, m, _)| *m != 0);
                changes.revision = at;
                Step::Changed(changes)
            }
        }
    }
}

/// The result of judging a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub snapshot: Snapshot,
    /// Keys whose new document (or deletion) is now in force.
    pub accepted: Vec<String>,
    /// Keys whose new document (or deletion) was refused, with the errors.
    pub rejected: Vec<(String, String)>,
    /// The profile to run on, when the documents make one.
    pub profile: Option<String>,
}

/// Which key's document a configuration error is about.
fn blame(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("tenants.") {
        // `tenants.acme.rate_limit...` or `tenants["a.b"]...`: the tenant
        // name ends at the first '.' or '[' (names are identifiers).
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        return format!("tenants/{}", rest.get(..end).unwrap_or(rest));
    }
    if path.starts_with("defaults") {
        return "defaults".into();
    }
    "tenancy".into()
}

/// Applies a change set to the snapshot, judged with `compile` (the same
/// code `on_configure` runs): documents that do not parse, are too large or
/// make the profile invalid keep their key's last good document (a new key
/// is left out); the other changes apply. A change the errors cannot be
/// pinned on (a tenancy naming a deleted tenant) is undone: the deletion
/// when the tenancy did not change, else the tenancy change.
pub fn judge(
    snapshot: &Snapshot,
    changes: Changes,
    max_document_bytes: usize,
    source: &str,
    compile: &dyn Fn(&str) -> Result<(), ConfigErrors>,
) -> Judged {
    let mut docs = snapshot.docs.clone();
    let mut rejected = snapshot.rejected.clone();
    let mut refused: Vec<(String, String)> = Vec::new();
    // What each changed key held before (None: it was new).
    let mut undo: Keyed<Option<Doc>> = Keyed::default();
    for (key, mod_revision, value) in changes.updated {
        let problem = if value.len() > max_document_bytes {
            Some(format!(
                "{}: the document is {} bytes, over max_document_bytes ({max_document_bytes})",
                key_path(&key),
                value.len()
            ))
        } else {
            // (The reader checks UTF-8 too.)
            match crate::json::parse(&value).ok() {
                Some(Value::Object(_)) => None,
                _ => Some(format!(
                    "{}: the document is not a JSON object",
                    key_path(&key)
                )),
            }
        };
        if let Some(p) = problem {
            rejected.insert(
                key.clone(),
                Rejection {
                    mod_revision,
                    errors: p.clone(),
                },
            );
            refused.push((key, p));
            continue;
        }
        let text = String::from_utf8_lossy(&value).into_owned();
        undo.insert(key.clone(), docs.get(&key).cloned());
        docs.insert(key.clone(), Doc { mod_revision, text });
        rejected.remove(&key);
    }
    for key in changes.deleted {
        rejected.remove(&key);
        if key == "tenancy" && docs.contains_key(&key) {
            // A profile needs one: the last good tenancy stays.
            refused.push((
                key,
                "tenancy: deleting it is refused (a profile needs one)".into(),
            ));
            continue;
        }
        if let Some(old) = docs.remove(&key) {
            undo.insert(key, Some(old));
        }
    }
    let revert = |key: &str, docs: &mut Keyed<Doc>| match undo.get(key) {
        Some(Some(old)) => {
            docs.insert(key.to_string(), old.clone());
        }
        _ => {
            docs.remove(key);
        }
    };
    let mut pending: Vec<String> = undo.keys().cloned().collect();
    let mut outcome = None;
    // Each round undoes at least one change; bounded by their number.
    for _ in 0..=pending.len() {
        let Some(profile) = profile_of(&docs, source) else {
            outcome = Some(None);
            break;
        };
        let errors = match compile(&profile) {
            Ok(()) => {
                outcome = Some(Some(profile));
                break;
            }
            Err(e) => e,
        };
        let mut blamed: Keyed<Vec<String>> = Keyed::default();
        for e in errors.iter() {
            let key = blame(&e.path);
            match blamed.get_mut(&key) {
                Some(list) => list.push(e.to_string()),
                None => {
                    blamed.insert(key, vec![e.to_string()]);
                }
            }
        }
        let mut to_undo: Vec<(String, Vec<String>)> = pending
            .iter()
            .filter_map(|k| blamed.get(k).map(|e| (k.clone(), e.clone())))
            .collect();
        if to_undo.is_empty() {
            // Errors on keys that did not change here: the deletions (or,
            // when there is none, every change) caused them.
            let why: Vec<String> = blamed.values().flatten().cloned().collect();
            let deletions: Vec<String> = pending
                .iter()
                .filter(|k| !docs.contains_key(k))
                .cloned()
                .collect();
            let culprits = if deletions.is_empty() {
                pending.clone()
            } else {
                deletions
            };
            to_undo = culprits.into_iter().map(|k| (k, why.clone())).collect();
        }
        for (key, why) in to_undo {
            let mod_revision = docs.get(&key).map_or(0, |d| d.mod_revision);
            revert(&key, &mut docs);
            let errors = crate::errors::joined(&why, "\n");
            if mod_revision != 0
                && undo
                    .get(&key)
                    .is_some_and(|old| old.as_ref().map(|d| d.mod_revision) != Some(mod_revision))
            {
                rejected.insert(
                    key.clone(),
                    Rejection {
                        mod_revision,
                        errors: errors.clone(),
                    },
                );
            }
            refused.push((key.clone(), errors));
            pending.retain(|k| *k != key);
        }
    }
    let profile = match outcome {
        Some(p) => p,
        None => {
            // Could not settle: nothing of this change set applies.
            for key in &pending {
                revert(key, &mut docs);
                refused.push((
                    key.clone(),
                    "refused with the rest of its change set".into(),
                ));
            }
            pending.clear();
            profile_of(&docs, source)
        }
    };
    Judged {
        snapshot: Snapshot {
            revision: changes.revision,
            docs,
            rejected,
        },
        accepted: pending,
        rejected: refused,
        profile,
    }
}

/// The status endpoint's `filter` query parameter, if any (`?filter=rate_limit`).
pub fn filter_query(raw_path: &str) -> Option<&str> {
    let (_, query) = raw_path.split_once('?')?;
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("filter="))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn answer(body: Value) -> CalloutResponse {
        CalloutResponse {
            status: 200,
            headers: crate::headers::Headers::default(),
            body: body.to_string().into_bytes(),
        }
    }

    fn kv(key: &str, m: u64, value: Option<&str>) -> Value {
        let mut kv = json!({
            "key": crate::base64::encode(format!("/mw/{key}").as_bytes()),
            "mod_revision": m.to_string(),
        });
        if let (Some(v), Some(o)) = (value, kv.as_object_mut()) {
            o.insert("value".into(), json!(crate::base64::encode(v.as_bytes())));
        }
        kv
    }

    fn range(revision: u64, kvs: Vec<Value>) -> CalloutResponse {
        answer(json!({"header": {"revision": revision.to_string()}, "kvs": kvs}))
    }

    /// The compile a filter would run: tenancy and tenants checked, plus a
    /// `rate_limit.burst` per tenant.
    fn compile(text: &str) -> Result<(), ConfigErrors> {
        crate::profile::compile(text.as_bytes(), "rate_limit", |r| {
            r.u64_in("burst", 1, 1, 100)
        })
        .map(|_| ())
    }

    fn doc(m: u64, text: &str) -> Doc {
        Doc {
            mod_revision: m,
            text: text.into(),
        }
    }

    fn good() -> Snapshot {
        let mut s = Snapshot {
            revision: 10,
            ..Snapshot::default()
        };
        s.docs.insert(
            "tenancy".into(),
            doc(3, r#"{"default": "a", "hosts": {"b.example": "b"}}"#),
        );
        s.docs.insert(
            "tenants/a".into(),
            doc(4, r#"{"rate_limit": {"burst": 5}}"#),
        );
        s.docs.insert(
            "tenants/b".into(),
            doc(5, r#"{"rate_limit": {"burst": 6}}"#),
        );
        s
    }

    #[test]
    fn settings_name_their_paths() {
        let mut errors = ConfigErrors::default();
        let s = parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/"}}),
            &mut errors,
        )
        .unwrap();
        assert_eq!(
            (s.poll_ms, s.timeout_ms, s.authority.as_str()),
            (1000, 2000, "etcd")
        );
        let mut errors = ConfigErrors::default();
        let none = parse_settings(
            &json!({"config_source": {"prefix": "", "poll_ms": 5, "color": 1}}),
            &mut errors,
        );
        assert!(none.is_none());
        let text = errors.finish().to_string();
        for e in [
            "config_source.cluster: is required",
            "config_source.prefix: must be 1 to 256 characters",
            "config_source.poll_ms: must be >= 100",
            "config_source.color: unknown field",
        ] {
            assert!(text.contains(e), "{e} in {text}");
        }
        // Status tokens: references only, resolved, never printed.
        let mut errors = ConfigErrors::default();
        let path = std::env::var("PATH").unwrap_or_default();
        let t = parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/",
                "status_admin_tokens": [{"env": "PATH"}]}}),
            &mut errors,
        );
        if path.len() >= 16 && !path.contains(' ') {
            let t = t.unwrap();
            assert!(t.status_tokens.accepts(path.as_bytes()));
            assert!(!t.status_tokens.accepts(b"nope"));
            assert!(!format!("{t:?}").contains(&path), "never in Debug");
            let text = t.to_json();
            assert!(
                text.contains(r#"{"env":"PATH"}"#) && !text.contains(&path),
                "{text}"
            );
        }
        let mut errors = ConfigErrors::default();
        let _ = parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/",
                "status_admin_tokens": ["inline-token-0123456789", {"env": "MESHWARE_NEVER_SET"}]}}),
            &mut errors,
        );
        let text = errors.finish().to_string();
        assert!(
            text.contains("config_source.status_admin_tokens[0]: a status token is given as"),
            "{text}"
        );
        assert!(text.contains("config_source.status_admin_tokens[1]: environment variable MESHWARE_NEVER_SET is not set"), "{text}");
        assert!(!text.contains("inline-token-0123456789"), "{text}");
        // Carried into assembled profiles: it reads back the same.
        let text = format!("{{\"config_source\":{}}}", s.to_json());
        let mut errors = ConfigErrors::default();
        let again = parse_settings(&serde_json::from_str(&text).unwrap(), &mut errors);
        assert_eq!(again, Some(s));
        let mut errors = ConfigErrors::default();
        assert_eq!(parse_settings(&json!({}), &mut errors), None);
        assert!(errors.is_empty());
    }

    #[test]
    fn watch_create_request_is_etcds_wire_format() {
        // WatchRequest{create_request(1){key(1) "/mw/", range_end(2) "/mw0",
        // start_revision(3) 300}}: field keys 0x0a, 0x0a, 0x12, 0x18; 300 is
        // the varint ac 02.
        let bytes = watch::create_request("/mw/", 300);
        assert_eq!(
            bytes,
            b"\x0a\x0f\x0a\x04/mw/\x12\x04/mw0\x18\xac\x02".to_vec()
        );
        // From now: no start_revision.
        assert_eq!(
            watch::create_request("/mw/", 0),
            b"\x0a\x0c\x0a\x04/mw/\x12\x04/mw0".to_vec()
        );
    }

    #[test]
    fn watch_responses_decide_the_poll() {
        // header(1){cluster_id(1) 7, revision(3) 42}, created(3) true
        let created = b"\x0a\x04\x08\x07\x18\x2a\x18\x01";
        let r = watch::decode(created).unwrap();
        assert_eq!((r.revision, r.created, r.events), (42, true, 0));
        assert_eq!(watch::step(Some(&r), 40), watch::Step::Opened);
        // header{revision 43}, watch_id(2) 0, events(11) x2 (opaque to us)
        let events = b"\x0a\x02\x18\x2b\x10\x00\x5a\x02\x08\x01\x5a\x00";
        let r = watch::decode(events).unwrap();
        assert_eq!((r.revision, r.events), (43, 2));
        assert_eq!(watch::step(Some(&r), 42), watch::Step::Poll);
        assert_eq!(
            watch::step(Some(&r), 43),
            watch::Step::Nothing,
            "applied already"
        );
        // canceled(4) with compact_revision(5) 10 and a cancel_reason(6)
        let canceled = b"\x20\x01\x28\x0a\x32\x03old";
        let r = watch::decode(canceled).unwrap();
        assert!(r.canceled && r.compact_revision == 10);
        assert_eq!(watch::step(Some(&r), 0), watch::Step::Closed);
        // Malformed: a length past the end.
        assert_eq!(watch::decode(b"\x0a\x09\x18"), None);
        assert_eq!(watch::step(None, 0), watch::Step::Closed);
    }

    #[test]
    fn watch_settings_are_checked() {
        let mut errors = ConfigErrors::default();
        let s = parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/",
                "watch_cluster": "etcd-grpc", "resync_ms": 60000}}),
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(
            (s.watch_cluster.as_deref(), s.resync_ms),
            (Some("etcd-grpc"), 60_000)
        );
        // Carried into assembled profiles unchanged.
        let again: Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(again["watch_cluster"], "etcd-grpc");
        assert_eq!(again["resync_ms"], 60000);
        let mut errors = ConfigErrors::default();
        parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/",
                "watch_cluster": "", "resync_ms": 5}}),
            &mut errors,
        );
        let text = errors.to_string();
        assert!(
            text.contains("config_source.watch_cluster: must name an HTTP/2"),
            "{text}"
        );
        assert!(
            text.contains("config_source.resync_ms: must be >= 1000"),
            "{text}"
        );
        // Without a watch: polling only, and no watch_cluster written.
        let mut errors = ConfigErrors::default();
        let s = parse_settings(
            &json!({"config_source": {"cluster": "etcd", "prefix": "/mw/"}}),
            &mut errors,
        )
        .unwrap();
        assert_eq!((s.watch_cluster.as_deref(), s.resync_ms), (None, 30_000));
        assert!(!s.to_json().contains("watch_cluster"));
    }

    #[test]
    fn range_end_follows_etcd() {
        assert_eq!(prefix_range_end(b"/mw/"), b"/mw0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff"), b"\0");
    }

    #[test]
    fn an_unchanged_store_costs_one_count() {
        let mut etcd = Etcd::new("/mw/");
        let snapshot = good();
        let call = etcd.next_call(&snapshot);
        assert_eq!(call.path, "/v3/kv/range");
        let body: Value = serde_json::from_str(&call.body).unwrap();
        assert_eq!(body["count_only"], true);
        assert_eq!(body["key"], crate::base64::encode(b"/mw/"));
        assert_eq!(body["range_end"], crate::base64::encode(b"/mw0"));
        let step = etcd.answer(&snapshot, Some(&range(10, vec![])));
        assert_eq!(step, Step::Unchanged);
        assert_eq!(
            etcd.answer(&snapshot, Some(&range(9, vec![]))),
            Step::Regressed {
                store: 9,
                accepted: 10
            }
        );
        for bad in [
            None,
            Some(CalloutResponse {
                status: 503,
                headers: crate::headers::Headers::default(),
                body: Vec::new(),
            }),
            Some(answer(json!({"oops": 1}))),
        ] {
            assert!(matches!(
                etcd.answer(&snapshot, bad.as_ref()),
                Step::Failed(_)
            ));
        }
    }

    #[test]
    fn a_poll_fetches_only_changed_values_and_notices_deletions() {
        let mut etcd = Etcd::new("/mw/");
        let snapshot = good();
        let _ = etcd.next_call(&snapshot);
        assert_eq!(
            etcd.answer(&snapshot, Some(&range(12, vec![]))),
            Step::Continue
        );
        let listing = etcd.next_call(&snapshot);
        assert!(listing.body.contains("\"keys_only\":true"));
        let listed = range(
            12,
            vec![
                kv("tenancy", 3, None),
                kv("tenants/a", 11, None),
                kv("tenants/c", 12, None),
                kv("_push", 12, None),
            ],
        );
        assert_eq!(etcd.answer(&snapshot, Some(&listed)), Step::Continue);
        let values = etcd.next_call(&snapshot);
        let body: Value = serde_json::from_str(&values.body).unwrap();
        assert_eq!(
            (body["revision"].as_str(), body["min_mod_revision"].as_str()),
            (Some("12"), Some("11"))
        );
        let fetched = range(
            12,
            vec![
                kv("tenants/a", 11, Some(r#"{"rate_limit": {"burst": 9}}"#)),
                kv("tenants/c", 12, Some("{}")),
            ],
        );
        let Step::Changed(changes) = etcd.answer(&snapshot, Some(&fetched)) else {
            panic!("changes expected");
        };
        assert_eq!(changes.revision, 12);
        assert_eq!(changes.deleted, ["tenants/b"]);
        let keys: Vec<&str> = changes.updated.iter().map(|u| u.0.as_str()).collect();
        assert_eq!(keys, ["tenants/a", "tenants/c"]);
    }

    fn change(key: &str, m: u64, text: &str) -> (String, u64, Vec<u8>) {
        (key.to_string(), m, text.as_bytes().to_vec())
    }

    #[test]
    fn a_bad_tenant_document_keeps_its_last_good_and_others_apply() {
        let changes = Changes {
            revision: 12,
            updated: vec![
                change("tenants/a", 11, r#"{"rate_limit": {"burst": 0}}"#),
                change("tenants/b", 12, r#"{"rate_limit": {"burst": 7}}"#),
            ],
            deleted: vec![],
        };
        let j = judge(&good(), changes, 1024, "", &compile);
        assert_eq!(j.accepted, ["tenants/b"]);
        assert_eq!(j.rejected.len(), 1);
        assert_eq!(j.rejected[0].0, "tenants/a");
        assert!(
            j.rejected[0]
                .1
                .contains("tenants.a.rate_limit.burst: must be >= 1"),
            "{:?}",
            j.rejected
        );
        assert_eq!(j.snapshot.docs.get("tenants/a").unwrap().mod_revision, 4);
        assert_eq!(j.snapshot.docs.get("tenants/b").unwrap().mod_revision, 12);
        assert_eq!(
            j.snapshot.rejected.get("tenants/a").unwrap().mod_revision,
            11
        );
        assert_eq!(j.snapshot.revision, 12);
        let profile: Value = serde_json::from_str(j.profile.as_deref().unwrap()).unwrap();
        assert_eq!(profile["tenants"]["a"]["rate_limit"]["burst"], 5);
        assert_eq!(profile["tenants"]["b"]["rate_limit"]["burst"], 7);
        // The refused document is not fetched again until it changes.
        let again = Snapshot::from_json(j.snapshot.to_json().as_bytes()).unwrap();
        assert_eq!(again, j.snapshot);
    }

    #[test]
    fn junk_oversize_and_orphaning_changes_are_refused() {
        let changes = Changes {
            revision: 13,
            updated: vec![
                change("tenants/a", 11, "not json"),
                change(
                    "tenants/c",
                    12,
                    &format!(r#"{{"x": "{}"}}"#, "y".repeat(2000)),
                ),
            ],
            // tenancy still routes b.example to b: deleting b is refused.
            deleted: vec!["tenants/b".into()],
        };
        let j = judge(&good(), changes, 1024, "", &compile);
        assert!(j.accepted.is_empty(), "{:?}", j.accepted);
        let why: BTreeMap<String, String> = j.rejected.into_iter().collect();
        assert!(why["tenants/a"].contains("tenants.a: the document is not a JSON object"));
        assert!(why["tenants/c"].contains("over max_document_bytes (1024)"));
        assert!(
            why["tenants/b"].contains("tenancy.hosts"),
            "{}",
            why["tenants/b"]
        );
        assert_eq!(j.snapshot.docs, good().docs);
        // A tenancy naming an unknown tenant is refused as a whole.
        let changes = Changes {
            revision: 14,
            updated: vec![change(
                "tenancy",
                14,
                r#"{"default": "a", "hosts": {"x.example": "ghost"}}"#,
            )],
            deleted: vec![],
        };
        let j = judge(&good(), changes, 1024, "", &compile);
        assert_eq!(j.rejected.len(), 1);
        assert!(j.rejected[0].1.contains("unknown tenant \"ghost\""));
        assert_eq!(j.snapshot.docs.get("tenancy").unwrap().mod_revision, 3);
        // Deleting a tenant nothing routes to is fine.
        let mut s = good();
        s.docs
            .insert("tenancy".into(), doc(3, r#"{"default": "a"}"#));
        let changes = Changes {
            revision: 15,
            updated: vec![],
            deleted: vec!["tenants/b".into()],
        };
        let j = judge(&s, changes, 1024, "", &compile);
        assert_eq!(j.accepted, ["tenants/b"]);
        assert!(!j.snapshot.docs.contains_key("tenants/b"));
        // The tenancy itself is never deleted.
        let changes = Changes {
            revision: 16,
            updated: vec![],
            deleted: vec!["tenancy".into()],
        };
        let j = judge(&good(), changes, 1024, "", &compile);
        assert_eq!(j.rejected[0].0, "tenancy");
        assert!(j.snapshot.docs.contains_key("tenancy"));
        assert!(j.profile.is_some());
    }

    #[test]
    fn no_tenancy_key_means_the_bootstrap_serves() {
        let changes = Changes {
            revision: 2,
            updated: vec![change("tenants/a", 2, "{}")],
            deleted: vec![],
        };
        let j = judge(&Snapshot::default(), changes, 1024, "", &compile);
        assert_eq!(j.profile, None);
        assert_eq!(j.accepted, ["tenants/a"]);
    }

    #[test]
    fn the_filter_query_names_one_filter() {
        assert_eq!(filter_query("/s?filter=rate_limit"), Some("rate_limit"));
        assert_eq!(filter_query("/s?x=1&filter=jwt_auth#f"), Some("jwt_auth"));
        assert_eq!(filter_query("/s?filter="), None);
        assert_eq!(filter_query("/s"), None);
        assert_eq!(filter_query("/s?filters=a"), None);
    }
}
