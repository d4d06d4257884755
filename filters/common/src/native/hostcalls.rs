//! The host calls of `crate::hostcall`, in the proxy-wasm SDK's shapes, on
//! Envoy's dynamic-module ABI: the whole adapter above them (`host`,
//! `chain`, `live_host`) runs unchanged in the native build.
//!
//! Each call acts on the stream in scope: the hook in progress sets it
//! (`Scope`), and `set_effective_context` switches to another stream of the
//! same worker, as in proxy-wasm.

use super::abi::{self, Buffer, EnvoyPtr};
use super::entry::{current_config, Config, MetricDef};
use super::store;
use hashbrown::HashMap;
use proxy_wasm::types::{BufferType, Bytes, LogLevel, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

/// One stream's host side: Envoy's filter object and what the adapter
/// wrote to filter state (written to Envoy once, when the stream completes:
/// Envoy's byte filter state cannot be overwritten).
pub struct StreamHost {
    pub envoy: EnvoyPtr,
    pub context_id: u32,
    pub properties: Vec<(String, Vec<u8>)>,
    /// A local reply the adapter sent, held until this stream's response
    /// phase has seen it (`Reply`).
    pub reply: Option<Reply>,
    /// While the response phase runs on `reply`: its headers stand for
    /// the response headers.
    pub replying: bool,
}

/// A local reply on its way: Envoy does not run a dynamic module's own
/// response hooks on the replies it sends (unlike a wasm filter's), so the
/// adapter runs them itself (`entry::send_replies`) and sends the reply
/// with their edits: CORS, security headers and trace headers reach local
/// replies as in the wasm build.
pub struct Reply {
    pub status: u32,
    /// Name and value, `:status` first.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A gRPC trailers-only answer (sent as response headers).
    pub grpc: bool,
}

/// Who gets a callout's answer: proxy-wasm's effective context when it
/// was dispatched.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Owner {
    Stream(u32),
    Root,
}

/// A callout in flight, by the filter that carries it and Envoy's id.
#[derive(Clone, Debug)]
pub struct Pending {
    pub token: u32,
    pub owner: Owner,
    pub grpc: bool,
    /// A root's callout keeps its request: when the stream carrying it
    /// ends, it moves to another stream of the worker (`move_root_callouts`).
    pub request: Option<std::rc::Rc<Request>>,
}

#[derive(Debug)]
pub struct Request {
    cluster: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// The answer being delivered (`get_map_*` and `get_buffer` read it).
#[derive(Default)]
pub struct Answer {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

thread_local! {
    /// The stream the host calls act on (null: none, a root's work).
    static CURRENT: Cell<*const RefCell<StreamHost>> = const { Cell::new(std::ptr::null()) };
    /// Streams of this worker by proxy-wasm context id.
    static CONTEXTS: RefCell<HashMap<u32, *const RefCell<StreamHost>>> = RefCell::new(HashMap::new());
    /// The plugin configuration a root reads in `on_configure`.
    static PLUGIN_CONFIGURATION: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Metrics defined while a configuration is compiled on the main
    /// thread (Envoy refuses definitions afterwards).
    static DEFINING: RefCell<Option<(EnvoyPtr, Vec<MetricDef>)>> = const { RefCell::new(None) };
    /// The tick period the root in scope asked for, in ms.
    static TICK_MS: Cell<u64> = const { Cell::new(0) };
    /// The filter whose hook runs a root's work: Envoy's callouts belong
    /// to a filter, so a root's callouts ride on it.
    static CARRIER: Cell<EnvoyPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// Callouts in flight on this worker.
    static CALLOUTS: RefCell<HashMap<(usize, u64), Pending>> = RefCell::new(HashMap::new());
    static NEXT_TOKEN: Cell<u32> = const { Cell::new(1) };
    static ANSWER: RefCell<Answer> = RefCell::new(Answer::default());
    /// Streams whose local reply waits for their response phase.
    static HELD_REPLIES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// On the main thread, while a configuration's own root runs: the
    /// configuration that carries its callouts.
    static MAIN_CONFIG: Cell<EnvoyPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// A per-thread pointer set until the guard drops (hooks nest).
pub struct Setting {
    key: &'static std::thread::LocalKey<Cell<EnvoyPtr>>,
    previous: EnvoyPtr,
}

impl Setting {
    fn new(key: &'static std::thread::LocalKey<Cell<EnvoyPtr>>, value: EnvoyPtr) -> Setting {
        Setting {
            key,
            previous: key.with(|c| c.replace(value)),
        }
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        self.key.with(|c| c.set(self.previous));
    }
}

/// Makes `config` the carrier of the main-thread root's callouts.
pub fn main_config(config: EnvoyPtr) -> Setting {
    Setting::new(&MAIN_CONFIG, config)
}

/// Makes filter `envoy` the carrier of a worker root's callouts.
pub fn carrier(envoy: EnvoyPtr) -> Setting {
    Setting::new(&CARRIER, envoy)
}

/// The callout `callout_id` carried by `envoy`, no longer in flight.
pub fn take_pending(envoy: EnvoyPtr, callout_id: u64) -> Option<Pending> {
    CALLOUTS.with(|c| {
        c.try_borrow_mut()
            .ok()?
            .remove(&(envoy as usize, callout_id))
    })
}

/// Every callout carried by `envoy` (Envoy cancels them with the filter).
pub fn take_all_pending(envoy: EnvoyPtr) -> Vec<Pending> {
    CALLOUTS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return Vec::new();
        };
        let keys: Vec<(usize, u64)> = c
            .keys()
            .filter(|(e, _)| *e == envoy as usize)
            .copied()
            .collect();
        keys.iter().filter_map(|k| c.remove(k)).collect()
    })
}

/// Sets the answer `get_map_*`/`get_buffer` show while it is delivered.
pub fn set_answer(answer: Answer) {
    ANSWER.with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            *a = answer;
        }
    });
}

/// Makes `stream` the one host calls act on until the guard drops (hooks
/// nest: a resumed request can be answered inside another's hook).
pub struct Scope {
    previous: *const RefCell<StreamHost>,
}

impl Scope {
    pub fn enter(stream: *const RefCell<StreamHost>) -> Scope {
        Scope {
            previous: CURRENT.with(|c| c.replace(stream)),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

pub fn register_context(context_id: u32, stream: *const RefCell<StreamHost>) {
    CONTEXTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.insert(context_id, stream);
        }
    });
}

pub fn unregister_context(context_id: u32) {
    CONTEXTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.remove(&context_id);
        }
    });
}

pub fn set_plugin_configuration(config: &[u8]) {
    PLUGIN_CONFIGURATION.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.clear();
            p.extend_from_slice(config);
        }
    });
}

/// Starts collecting metric definitions for the configuration `envoy`.
pub fn begin_definitions(envoy: EnvoyPtr) {
    DEFINING.with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            *d = Some((envoy, Vec::new()));
        }
    });
}

/// The metrics defined since `begin_definitions`.
pub fn end_definitions() -> Vec<MetricDef> {
    DEFINING.with(|d| {
        d.try_borrow_mut()
            .ok()
            .and_then(|mut d| d.take())
            .map(|(_, defs)| defs)
            .unwrap_or_default()
    })
}

pub fn take_tick_ms() -> u64 {
    TICK_MS.with(|t| t.replace(0))
}

/// Envoy's filter object of the stream in scope.
fn envoy() -> Result<EnvoyPtr, Status> {
    let stream = CURRENT.with(|c| c.get());
    if stream.is_null() {
        return Err(Status::BadArgument);
    }
    // SAFETY: a scope's stream outlives the scope (`entry` drops a stream
    // only after its last hook, and unregisters its context first).
    let stream = unsafe { &*stream };
    stream
        .try_borrow()
        .map(|s| s.envoy)
        .map_err(|_| Status::InternalFailure)
}

fn with_stream<R>(f: impl FnOnce(&mut StreamHost) -> R) -> Result<R, Status> {
    let stream = CURRENT.with(|c| c.get());
    if stream.is_null() {
        return Err(Status::BadArgument);
    }
    // SAFETY: as in `envoy`.
    let stream = unsafe { &*stream };
    let mut stream = stream
        .try_borrow_mut()
        .map_err(|_| Status::InternalFailure)?;
    Ok(f(&mut stream))
}

fn header_kind(map: MapType) -> Result<u32, Status> {
    match map {
        MapType::HttpRequestHeaders => Ok(abi::header_kind::REQUEST),
        MapType::HttpRequestTrailers => Ok(abi::header_kind::REQUEST_TRAILERS),
        MapType::HttpResponseHeaders => Ok(abi::header_kind::RESPONSE),
        MapType::HttpResponseTrailers => Ok(abi::header_kind::RESPONSE_TRAILERS),
        _ => Err(Status::InternalFailure),
    }
}

pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    super::logger::write(level as u32, message);
    Ok(())
}

pub fn get_log_level() -> Result<LogLevel, Status> {
    Ok(super::logger::level())
}

pub fn get_current_time() -> Result<SystemTime, Status> {
    Ok(SystemTime::now())
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    TICK_MS.with(|t| t.set(ms));
    Ok(())
}

/// A body as proxy-wasm shows it: what Envoy buffered, then the chunk
/// being delivered.
fn body(buffered: u32, received: u32) -> Result<Vec<u8>, Status> {
    let envoy = envoy()?;
    let mut out = Vec::new();
    for kind in [buffered, received] {
        // SAFETY: `envoy` is the live filter of the hook in progress.
        let count =
            unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks_size(envoy, kind) };
        if count == 0 {
            continue;
        }
        let mut chunks = vec![Buffer::EMPTY; count];
        // SAFETY: `chunks` has room for the `count` buffers Envoy writes.
        if unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks(
                envoy,
                kind,
                chunks.as_mut_ptr(),
            )
        } {
            for chunk in &chunks {
                // SAFETY: Envoy's slices stay valid during the hook.
                out.extend_from_slice(unsafe { chunk.as_slice() });
            }
        }
    }
    Ok(out)
}

/// The size `on_http_*_body` reports: buffered plus the chunk delivered.
pub fn body_size(request: bool) -> usize {
    let Ok(envoy) = envoy() else {
        return 0;
    };
    let (buffered, received) = if request {
        (
            abi::body_kind::BUFFERED_REQUEST,
            abi::body_kind::RECEIVED_REQUEST,
        )
    } else {
        (
            abi::body_kind::BUFFERED_RESPONSE,
            abi::body_kind::RECEIVED_RESPONSE,
        )
    };
    // SAFETY: `envoy` is the live filter of the hook in progress.
    unsafe {
        abi::envoy_dynamic_module_callback_http_get_body_size(envoy, buffered)
            + abi::envoy_dynamic_module_callback_http_get_body_size(envoy, received)
    }
}

pub fn get_buffer(
    buffer_type: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Bytes>, Status> {
    let whole = match buffer_type {
        BufferType::PluginConfiguration => {
            PLUGIN_CONFIGURATION.with(|p| p.try_borrow().map(|p| p.clone()).unwrap_or_default())
        }
        BufferType::HttpRequestBody => body(
            abi::body_kind::BUFFERED_REQUEST,
            abi::body_kind::RECEIVED_REQUEST,
        )?,
        BufferType::HttpResponseBody => body(
            abi::body_kind::BUFFERED_RESPONSE,
            abi::body_kind::RECEIVED_RESPONSE,
        )?,
        BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => {
            ANSWER.with(|a| a.try_borrow().map(|a| a.body.clone()).unwrap_or_default())
        }
        _ => return Ok(None),
    };
    let end = start.saturating_add(max_size).min(whole.len());
    Ok(whole.get(start.min(end)..end).map(<[u8]>::to_vec))
}

/// Envoy's headers of one map, as the ABI lends them.
fn headers(kind: u32) -> Result<Vec<abi::Header>, Status> {
    let envoy = envoy()?;
    // SAFETY: `envoy` is the live filter of the hook in progress.
    let count = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(envoy, kind) };
    if count == 0 {
        return Err(Status::BadArgument);
    }
    let empty = abi::Header {
        key: Buffer::EMPTY,
        value: Buffer::EMPTY,
    };
    let mut out = vec![empty; count];
    // SAFETY: `out` has room for the `count` headers Envoy writes.
    if unsafe { abi::envoy_dynamic_module_callback_http_get_headers(envoy, kind, out.as_mut_ptr()) }
    {
        Ok(out)
    } else {
        Err(Status::BadArgument)
    }
}

/// proxy-wasm's map serialization (`Headers::from_serialized` reads it).
fn serialize<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let count = pairs.clone().count();
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&len32(count));
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The headers of the callout answer being delivered.
fn answer_headers() -> Vec<(Vec<u8>, Vec<u8>)> {
    ANSWER.with(|a| {
        a.try_borrow()
            .map(|a| a.headers.clone())
            .unwrap_or_default()
    })
}

fn is_answer(map_type: MapType) -> bool {
    matches!(
        map_type,
        MapType::HttpCallResponseHeaders | MapType::GrpcReceiveInitialMetadata
    )
}

/// The reply's headers when the response phase runs on a held reply.
fn reply_headers(map_type: MapType) -> Option<Vec<(String, String)>> {
    if map_type != MapType::HttpResponseHeaders {
        return None;
    }
    with_stream(|s| {
        s.replying
            .then(|| s.reply.as_ref().map(|r| r.headers.clone()))
            .flatten()
    })
    .ok()
    .flatten()
}

/// Edits the held reply's headers (`None`: no reply is being replied).
fn edit_reply(map_type: MapType, edit: impl FnOnce(&mut Vec<(String, String)>)) -> Option<()> {
    if map_type != MapType::HttpResponseHeaders {
        return None;
    }
    with_stream(|s| {
        if !s.replying {
            return None;
        }
        s.reply.as_mut().map(|r| edit(&mut r.headers))
    })
    .ok()
    .flatten()
}

/// A header map in proxy-wasm's serialization (`Headers::from_serialized`).
pub fn get_map_serialized(map_type: MapType) -> Result<Vec<u8>, Status> {
    if let Some(pairs) = reply_headers(map_type) {
        return Ok(serialize(
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        ));
    }
    if is_answer(map_type) {
        let pairs = answer_headers();
        return Ok(serialize(
            pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        ));
    }
    let pairs = headers(header_kind(map_type)?)?;
    // SAFETY: Envoy's header views stay valid during the hook.
    Ok(serialize(pairs.iter().map(|h| unsafe {
        (h.key.as_slice(), h.value.as_slice())
    })))
}

pub fn get_map_bytes(map_type: MapType) -> Result<Vec<(String, Bytes)>, Status> {
    if let Some(pairs) = reply_headers(map_type) {
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect());
    }
    let lossy = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    if is_answer(map_type) {
        return Ok(answer_headers()
            .into_iter()
            .map(|(k, v)| (lossy(&k), v))
            .collect());
    }
    let pairs = headers(header_kind(map_type)?)?;
    Ok(pairs
        .iter()
        .map(|h| {
            // SAFETY: Envoy's header views stay valid during the hook.
            let (k, v) = unsafe { (h.key.as_slice(), h.value.as_slice()) };
            (lossy(k), v.to_vec())
        })
        .collect())
}

/// One header's first value; `Err` when the map cannot be read now.
pub fn get_map_value_checked(map_type: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
    if let Some(pairs) = reply_headers(map_type) {
        return Ok(pairs
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.into_bytes()));
    }
    if is_answer(map_type) {
        return Ok(answer_headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes()))
            .map(|(_, v)| v));
    }
    let kind = header_kind(map_type)?;
    let envoy = envoy()?;
    let mut out = Buffer::EMPTY;
    let mut count = 0usize;
    // SAFETY: `envoy` is the live filter; `out` and `count` are writable.
    let found = unsafe {
        abi::envoy_dynamic_module_callback_http_get_header(
            envoy,
            kind,
            Buffer::of(key.as_bytes()),
            &mut out,
            0,
            &mut count,
        )
    };
    if found {
        // SAFETY: Envoy's value view stays valid during the hook.
        return Ok(Some(unsafe { out.as_slice() }.to_vec()));
    }
    // SAFETY: as above.
    if unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(envoy, kind) } == 0 {
        return Err(Status::BadArgument);
    }
    Ok(None)
}

pub fn get_map_value_bytes(map_type: MapType, key: &str) -> Result<Option<Bytes>, Status> {
    get_map_value_checked(map_type, key)
}

pub fn set_map_value(map_type: MapType, key: &str, value: Option<&str>) -> Result<(), Status> {
    let edited = edit_reply(map_type, |headers| {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        if let Some(v) = value {
            headers.push((key.to_ascii_lowercase(), v.to_string()));
        }
    });
    if edited.is_some() {
        return Ok(());
    }
    let kind = header_kind(map_type)?;
    let envoy = envoy()?;
    let value = value.map_or(Buffer::EMPTY, |v| Buffer::of(v.as_bytes()));
    // SAFETY: `envoy` is the live filter; Envoy copies both buffers.
    if unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            envoy,
            kind,
            Buffer::of(key.as_bytes()),
            value,
        )
    } {
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}

/// The ABI here lends bodies to read only: no replay needs it
/// (`HostEnv::replaces_responses`).
pub const REPLACES_RESPONSES: bool = false;

pub fn set_buffer(
    _kind: BufferType,
    _start: usize,
    _size: usize,
    _value: &[u8],
) -> Result<(), Status> {
    Err(Status::InternalFailure)
}

pub fn remove_map_value(map_type: MapType, key: &str) -> Result<(), Status> {
    set_map_value(map_type, key, None)
}

pub fn add_map_value(map_type: MapType, key: &str, value: &str) -> Result<(), Status> {
    let edited = edit_reply(map_type, |headers| {
        headers.push((key.to_ascii_lowercase(), value.to_string()));
    });
    if edited.is_some() {
        return Ok(());
    }
    let kind = header_kind(map_type)?;
    let envoy = envoy()?;
    // SAFETY: `envoy` is the live filter; Envoy copies both buffers.
    if unsafe {
        abi::envoy_dynamic_module_callback_http_add_header(
            envoy,
            kind,
            Buffer::of(key.as_bytes()),
            Buffer::of(value.as_bytes()),
        )
    } {
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}

fn attribute_int(id: u32) -> Result<Option<Bytes>, Status> {
    let envoy = envoy()?;
    let mut value = 0u64;
    // SAFETY: `envoy` is the live filter; `value` is writable.
    let ok = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(envoy, id, &mut value)
    };
    // proxy-wasm serializes integers as 8 bytes little-endian.
    Ok(ok.then(|| value.to_le_bytes().to_vec()))
}

fn attribute_string(id: u32) -> Result<Option<Bytes>, Status> {
    let envoy = envoy()?;
    let mut out = Buffer::EMPTY;
    // SAFETY: `envoy` is the live filter; `out` is writable.
    let ok = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(envoy, id, &mut out)
    };
    // SAFETY: Envoy's view stays valid during the hook.
    Ok(ok.then(|| unsafe { out.as_slice() }.to_vec()))
}

/// The attributes the adapter and the cores read, by proxy-wasm path.
pub fn get_property(path: Vec<&str>) -> Result<Option<Bytes>, Status> {
    match path.as_slice() {
        ["source", "address"] => attribute_string(abi::attribute::SOURCE_ADDRESS),
        ["request", "protocol"] => attribute_string(abi::attribute::REQUEST_PROTOCOL),
        ["response", "code"] => {
            let replying = with_stream(|s| {
                s.replying
                    .then(|| s.reply.as_ref().map(|r| u64::from(r.status)))
                    .flatten()
            })
            .ok()
            .flatten();
            match replying {
                Some(code) => Ok(Some(code.to_le_bytes().to_vec())),
                None => attribute_int(abi::attribute::RESPONSE_CODE),
            }
        }
        ["response", "flags"] => attribute_int(abi::attribute::RESPONSE_FLAGS),
        ["response", "grpc_status"] => attribute_int(abi::attribute::RESPONSE_GRPC_STATUS),
        ["xds", "cluster_name"] => {
            let envoy = envoy()?;
            let mut out = Buffer::EMPTY;
            // SAFETY: `envoy` is the live filter; `out` is writable.
            let ok = unsafe {
                abi::envoy_dynamic_module_callback_http_get_cluster_name(envoy, &mut out)
            };
            // SAFETY: Envoy's view stays valid during the hook.
            Ok(ok.then(|| unsafe { out.as_slice() }.to_vec()))
        }
        [key] => {
            // What this module wrote earlier in the stream (the suite's
            // first-filter mark); Envoy's copy appears at completion.
            let key = *key;
            with_stream(|s| {
                s.properties
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            })
        }
        _ => Ok(None),
    }
}

/// Filter state `wasm.<key>`, as Envoy's wasm filter names it (the access
/// log reads it there); kept until the stream completes (`flush_properties`).
pub fn set_property(path: Vec<&str>, value: Option<&[u8]>) -> Result<(), Status> {
    let [key] = path.as_slice() else {
        return Err(Status::InternalFailure);
    };
    let value = value.unwrap_or_default().to_vec();
    with_stream(|s| match s.properties.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => s.properties.push(((*key).to_string(), value)),
    })
}

/// Writes the stream's properties to Envoy's filter state, once each.
pub fn flush_properties() {
    let Ok(properties) = with_stream(|s| std::mem::take(&mut s.properties)) else {
        return;
    };
    let Ok(envoy) = envoy() else {
        return;
    };
    for (key, value) in properties {
        let key = format!("wasm.{key}");
        // SAFETY: `envoy` is the live filter; Envoy copies both buffers.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                envoy,
                Buffer::of(key.as_bytes()),
                Buffer::of(&value),
            );
        }
    }
}

pub fn get_shared_data(key: &str) -> Result<(Option<Bytes>, Option<u32>), Status> {
    Ok(store::get(key))
}

pub fn set_shared_data(key: &str, value: Option<&[u8]>, cas: Option<u32>) -> Result<(), Status> {
    store::set(key, value.unwrap_or_default(), cas)
}

pub fn resume_http_request() -> Result<(), Status> {
    let envoy = envoy()?;
    // SAFETY: `envoy` is a live filter of this worker.
    unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(envoy) };
    Ok(())
}

/// `grpc-message`: printable ASCII but `%` as is, other bytes
/// percent-encoded (gRPC over HTTP/2).
fn grpc_message(body: &[u8]) -> String {
    let mut out = String::with_capacity(body.len());
    for &b in body {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A local reply, held for the stream's response phase (`Reply`; sent by
/// `send_reply`). `grpc_status >= 0` answers a gRPC call with that status
/// in a trailers-only response (headers `grpc-status`, `grpc-message`), as
/// Envoy's wasm host does.
pub fn send_local_reply(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
    grpc_status: i32,
) -> Result<(), Status> {
    let grpc = grpc_status >= 0;
    let mut all: Vec<(String, String)> = Vec::with_capacity(headers.len() + 4);
    let mut set = |k: &str, v: &str| {
        // A later value replaces an earlier one (the adapter passes
        // `grpc-status` and `grpc-message` itself too): each appears once.
        match all
            .iter_mut()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
        {
            Some(h) => h.1 = v.to_string(),
            None => all.push((k.to_ascii_lowercase(), v.to_string())),
        }
    };
    if grpc {
        set(":status", "200");
        set("content-type", "application/grpc");
        set("grpc-status", &grpc_status.to_string());
        let message = grpc_message(body);
        if !message.is_empty() {
            set("grpc-message", &message);
        }
    } else {
        set(":status", &status.to_string());
    }
    for (k, v) in headers {
        set(k, v);
    }
    let reply = Reply {
        status: if grpc { 200 } else { status },
        headers: all,
        body: if grpc { Vec::new() } else { body.to_vec() },
        grpc,
    };
    with_stream(|s| s.reply = Some(reply))?;
    let context_id = with_stream(|s| s.context_id)?;
    HELD_REPLIES.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            h.push(context_id);
        }
    });
    Ok(())
}

/// The streams of this worker with a held reply, oldest first.
pub fn take_held_replies() -> Vec<u32> {
    HELD_REPLIES.with(|h| {
        h.try_borrow_mut()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    })
}

/// Sends the held reply of the stream in scope, as its response phase
/// left it.
pub fn send_reply() {
    let Ok(Some(reply)) = with_stream(|s| {
        s.replying = false;
        s.reply.take()
    }) else {
        return;
    };
    let Ok(envoy) = envoy() else {
        return;
    };
    let header = |k: &str, v: &str| abi::Header {
        key: Buffer::of(k.as_bytes()),
        value: Buffer::of(v.as_bytes()),
    };
    if reply.grpc {
        let all: Vec<abi::Header> = reply.headers.iter().map(|(k, v)| header(k, v)).collect();
        // SAFETY: `envoy` is the live filter; Envoy copies every buffer.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response_headers(
                envoy,
                all.as_ptr(),
                all.len(),
                true,
            )
        };
        return;
    }
    let all: Vec<abi::Header> = reply
        .headers
        .iter()
        .filter(|(k, _)| k != ":status")
        .map(|(k, v)| header(k, v))
        .collect();
    // SAFETY: `envoy` is the live filter; Envoy copies every buffer.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            envoy,
            reply.status,
            all.as_ptr(),
            all.len(),
            Buffer::of(&reply.body),
            Buffer::of(b"meshware"),
        )
    };
}

/// Starts the response phase on the held reply of the stream in scope:
/// whether there is one.
pub fn begin_reply() -> bool {
    with_stream(|s| {
        s.replying = s.reply.is_some();
        s.replying
    })
    .unwrap_or(false)
}

pub fn send_http_response(
    status_code: u32,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
) -> Result<(), Status> {
    send_local_reply(status_code, &headers, body.unwrap_or_default(), -1)
}

/// What carries a callout: a filter (its answer comes to that filter's
/// hook, on its worker) or, on the main thread, a filter configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Filter(EnvoyPtr),
    Config(EnvoyPtr),
}

/// Starts `request` on Envoy's async client, carried by filter `envoy`:
/// Envoy's id for it.
fn start(envoy: EnvoyPtr, request: &Request) -> Option<u64> {
    start_via(Via::Filter(envoy), request)
}

fn start_via(via: Via, request: &Request) -> Option<u64> {
    let all: Vec<abi::Header> = request
        .headers
        .iter()
        .map(|(k, v)| abi::Header {
            key: Buffer::of(k),
            value: Buffer::of(v),
        })
        .collect();
    let mut id = 0u64;
    let timeout_ms = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX);
    // The same call, on a filter or on its configuration (the main thread).
    type Callout =
        unsafe fn(EnvoyPtr, *mut u64, Buffer, *const abi::Header, usize, Buffer, u64) -> u32;
    let (carrier, callout): (EnvoyPtr, Callout) = match via {
        Via::Filter(envoy) => (
            envoy,
            abi::envoy_dynamic_module_callback_http_filter_http_callout,
        ),
        Via::Config(config) => (
            config,
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout,
        ),
    };
    // SAFETY: `carrier` is a live filter of this worker or a live
    // configuration; Envoy copies every buffer before returning.
    let result = unsafe {
        callout(
            carrier,
            &mut id,
            Buffer::of(request.cluster.as_bytes()),
            all.as_ptr(),
            all.len(),
            Buffer::of(&request.body),
            timeout_ms,
        )
    };
    if result != abi::CALLOUT_SUCCESS {
        log::debug!(
            "[meshware] callout to cluster {} refused by Envoy (init result {result})",
            request.cluster
        );
    }
    (result == abi::CALLOUT_SUCCESS).then_some(id)
}

fn track(envoy: EnvoyPtr, id: u64, pending: Pending) {
    CALLOUTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.insert((envoy as usize, id), pending);
        }
    });
}

/// Starts a callout on Envoy's async client, carried by the stream in
/// scope (whose hooks get the answer) or, for a root's work, by the
/// carrier: the answer goes to the effective context, as in proxy-wasm.
fn callout(
    cluster: &str,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    timeout: Duration,
    grpc: bool,
) -> Result<u32, Status> {
    let current = with_stream(|s| (s.envoy, s.context_id)).ok();
    let (via, owner) = match current {
        Some((envoy, context_id)) => (Via::Filter(envoy), Owner::Stream(context_id)),
        None => {
            let carrier = CARRIER.with(|c| c.get());
            let main = MAIN_CONFIG.with(|c| c.get());
            match (carrier.is_null(), main.is_null()) {
                (false, _) => (Via::Filter(carrier), Owner::Root),
                (true, false) => (Via::Config(main), Owner::Root),
                (true, true) => return Err(Status::BadArgument),
            }
        }
    };
    let request = Request {
        cluster: cluster.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        body: body.to_vec(),
        timeout,
    };
    let id = start_via(via, &request).ok_or(Status::BadArgument)?;
    let envoy = match via {
        Via::Filter(e) | Via::Config(e) => e,
    };
    let token = NEXT_TOKEN.with(|n| {
        let t = n.get();
        n.set(t.wrapping_add(1).max(1));
        t
    });
    let request = (owner == Owner::Root).then(|| std::rc::Rc::new(request));
    track(
        envoy,
        id,
        Pending {
            token,
            owner,
            grpc,
            request,
        },
    );
    Ok(token)
}

/// The stream of `from` ends and Envoy cancels the callouts it carries:
/// a root's move to another stream of this worker (started again there:
/// the key set a held request waits for must still arrive). Returns those
/// that found no other stream (they failed).
pub fn move_root_callouts(from: EnvoyPtr) -> Vec<Pending> {
    let carried = take_all_pending(from);
    let others: Vec<EnvoyPtr> = CONTEXTS.with(|c| {
        c.try_borrow()
            .map(|c| {
                c.values()
                    // SAFETY: registered streams are alive (unregistered
                    // before they are dropped).
                    .filter_map(|s| unsafe { &**s }.try_borrow().ok().map(|s| s.envoy))
                    .filter(|e| *e != from)
                    .collect()
            })
            .unwrap_or_default()
    });
    let mut failed = Vec::new();
    for pending in carried {
        let Some(request) = pending
            .request
            .clone()
            .filter(|_| pending.owner == Owner::Root)
        else {
            continue; // a stream's own callout ends with it
        };
        let moved = others
            .iter()
            .find_map(|envoy| start(*envoy, &request).map(|id| (*envoy, id)));
        match moved {
            Some((envoy, id)) => track(envoy, id, pending),
            None => failed.push(pending),
        }
    }
    failed
}

pub fn dispatch_http_call(
    upstream: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    _trailers: Vec<(&str, &str)>,
    timeout: Duration,
) -> Result<u32, Status> {
    let headers: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    callout(upstream, &headers, body.unwrap_or_default(), timeout, false)
}

/// The cluster a gRPC call goes to: proxy-wasm's target is a cluster name
/// or a serialized `envoy.config.core.v3.GrpcService` (the rate-limit
/// filter passes one): `envoy_grpc` (field 1) { `cluster_name` (field 1) }.
fn grpc_cluster(upstream: &str) -> &str {
    // One length-delimited field 1 holding `len` bytes: `[0x0a, len, ...]`
    // (names of at most 127 bytes: one varint byte).
    fn field1(bytes: &[u8]) -> Option<&[u8]> {
        match bytes {
            [0x0a, len, rest @ ..] if usize::from(*len) <= rest.len() && *len < 0x80 => {
                rest.get(..usize::from(*len))
            }
            _ => None,
        }
    }
    field1(upstream.as_bytes())
        .and_then(field1)
        .and_then(|name| std::str::from_utf8(name).ok())
        .unwrap_or(upstream)
}

/// A unary gRPC call as an HTTP/2 callout: Envoy's async client speaks
/// HTTP/2 to a gRPC cluster; the message goes in one length-prefixed frame.
pub fn dispatch_grpc_call(
    upstream_name: &str,
    service_name: &str,
    method_name: &str,
    initial_metadata: Vec<(&str, &[u8])>,
    message: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    let upstream_name = grpc_cluster(upstream_name);
    let path = format!("/{service_name}/{method_name}");
    let deadline = format!("{}m", timeout.as_millis().clamp(1, 99_999_999));
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":path", path.as_bytes()),
        (b":authority", upstream_name.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", deadline.as_bytes()),
    ];
    headers.extend(initial_metadata.iter().map(|(k, v)| (k.as_bytes(), *v)));
    let message = message.unwrap_or_default();
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    callout(upstream_name, &headers, &frame, timeout, true)
}

/// gRPC streams (the live configuration's etcd watch) are not offered on
/// the native ABI: the caller polls instead.
pub fn open_grpc_stream(
    _upstream_name: &str,
    _service_name: &str,
    _method_name: &str,
    _initial_metadata: Vec<(&str, &[u8])>,
) -> Result<u32, Status> {
    Err(Status::InternalFailure)
}

pub fn send_grpc_stream_message(
    _token_id: u32,
    _message: Option<&[u8]>,
    _end_stream: bool,
) -> Result<(), Status> {
    Err(Status::NotFound)
}

pub fn cancel_grpc_stream(_token_id: u32) -> Result<(), Status> {
    Err(Status::NotFound)
}

/// A gRPC answer from an HTTP/2 one: the status (`grpc-status` of a
/// trailers-only answer; UNAVAILABLE without an answer or on a non-200
/// status) and the message of its first frame. The ABI hands over no
/// trailers: a complete message frame with HTTP 200 counts as OK.
pub fn grpc_answer(answered: bool, headers: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> (u32, Vec<u8>) {
    const UNAVAILABLE: u32 = 14;
    if !answered {
        return (UNAVAILABLE, Vec::new());
    }
    let header = |name: &[u8]| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    if let Some(status) = header(b"grpc-status") {
        let code = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(2);
        if code != 0 {
            return (code, Vec::new());
        }
    }
    if header(b":status") != Some(b"200") {
        return (UNAVAILABLE, Vec::new());
    }
    let Some(len) = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
    else {
        return (UNAVAILABLE, Vec::new());
    };
    match body.get(5..5 + len as usize) {
        Some(message) => (0, message.to_vec()),
        None => (UNAVAILABLE, Vec::new()),
    }
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    let stream = CONTEXTS.with(|c| {
        c.try_borrow()
            .ok()
            .and_then(|c| c.get(&context_id).copied())
    });
    match stream {
        Some(stream) => {
            CURRENT.with(|c| c.set(stream));
            Ok(())
        }
        None => Err(Status::BadArgument),
    }
}

pub fn call_foreign_function(
    function_name: &str,
    _arguments: Option<&[u8]>,
) -> Result<Option<Bytes>, Status> {
    match function_name {
        "clear_route_cache" => {
            let envoy = envoy()?;
            // SAFETY: `envoy` is the live filter of the hook in progress.
            unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(envoy) };
            Ok(None)
        }
        _ => Err(Status::NotFound),
    }
}

/// A labelled metric Envoy defines at configure time for names that
/// appear later (a tenant added by live configuration, a store key's
/// update counter): Envoy freezes a dynamic module's metric definitions
/// after configure time, where a wasm VM defines metrics at any time.
/// `meshware.<family>.<label>.<value>...` maps onto family `<family>`
/// with those labels, which Envoy names the same way.
pub struct Family {
    kind: u32,
    name: String,
    labels: Vec<String>,
    id: usize,
}

/// The label names of our metric names (`crate::metrics::stats_tags`).
const LABELS: [&str; 6] = [
    "filter",
    "tenant",
    "limit",
    "outcome",
    "method",
    "status_class",
];

/// `meshware.<family>(.<label>.<value>)+` split into the family and its
/// label/value pairs.
fn family_of(name: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let rest = name.strip_prefix("meshware.")?;
    let mut parts = rest.split('.');
    let family = parts.next()?;
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() || !parts.len().is_multiple_of(2) {
        return None;
    }
    let pairs: Vec<(&str, &str)> = parts
        .chunks(2)
        .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
        .collect();
    pairs
        .iter()
        .all(|(label, _)| LABELS.contains(label))
        .then_some((family, pairs))
}

/// Defines, for configuration `config`, a family for every shape of the
/// names defined at configure time, and for the live configuration's
/// update counters.
pub(super) fn define_families(config: EnvoyPtr, defined: &[MetricDef]) -> Vec<Family> {
    let mut shapes: Vec<(u32, String, Vec<String>)> = Vec::new();
    let updates = "meshware.config_updates.filter.x.tenant.x.outcome.x";
    let names = defined
        .iter()
        .map(|d| (d.kind, d.name.as_str()))
        .chain(std::iter::once((MetricType::Counter as u32, updates)));
    for (kind, name) in names {
        let Some((family, pairs)) = family_of(name) else {
            continue;
        };
        let labels: Vec<String> = pairs.iter().map(|(l, _)| (*l).to_string()).collect();
        if !shapes
            .iter()
            .any(|(k, f, l)| *k == kind && f == family && *l == labels)
        {
            shapes.push((kind, family.to_string(), labels));
        }
    }
    shapes
        .into_iter()
        .filter_map(|(kind, name, labels)| {
            let label_buffers: Vec<Buffer> =
                labels.iter().map(|l| Buffer::of(l.as_bytes())).collect();
            let mut id = 0usize;
            let name_buffer = Buffer::of(name.as_bytes());
            // SAFETY: `config` is the filter config being created; Envoy
            // copies the name and the label names.
            let result = unsafe {
                match kind {
                    0 => abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                        config,
                        name_buffer,
                        label_buffers.as_ptr(),
                        label_buffers.len(),
                        &mut id,
                    ),
                    1 => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                        config,
                        name_buffer,
                        label_buffers.as_ptr(),
                        label_buffers.len(),
                        &mut id,
                    ),
                    _ => abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                        config,
                        name_buffer,
                        label_buffers.as_ptr(),
                        label_buffers.len(),
                        &mut id,
                    ),
                }
            };
            (result == abi::METRICS_SUCCESS).then_some(Family {
                kind,
                name,
                labels,
                id,
            })
        })
        .collect()
}

/// Metric ids from here on name a family's labelled metric
/// (`LABELLED`, per worker).
const LABELLED_BASE: u32 = 1 << 24;

thread_local! {
    /// Labelled metrics defined after configure time: the configuration's
    /// generation, the family's index in it and the label values.
    static LABELLED: RefCell<Vec<(u64, usize, Vec<String>)>> = const { RefCell::new(Vec::new()) };
}

/// A metric defined after configure time, as a family's labelled metric.
fn define_labelled(config: &Config, kind: u32, name: &str) -> Option<u32> {
    let (family, pairs) = family_of(name)?;
    let index = config.families.iter().position(|f| {
        f.kind == kind
            && f.name == family
            && f.labels.len() == pairs.len()
            && f.labels.iter().zip(&pairs).all(|(l, (p, _))| l == p)
    })?;
    let values: Vec<String> = pairs.iter().map(|(_, v)| (*v).to_string()).collect();
    LABELLED.with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        let generation = config.generation;
        if let Some(i) = l
            .iter()
            .position(|(g, f, v)| *g == generation && *f == index && *v == values)
        {
            return u32::try_from(i).ok().map(|i| LABELLED_BASE + i);
        }
        l.push((generation, index, values));
        u32::try_from(l.len() - 1).ok().map(|i| LABELLED_BASE + i)
    })
}

/// Metric names lose their `meshware.` prefix: the bootstrap names the
/// module's stats scope `meshware` (`metrics_namespace`), so Envoy's stat
/// names are the wasm build's.
fn scoped(name: &str) -> &str {
    name.strip_prefix("meshware.").unwrap_or(name)
}

pub fn define_metric(metric_type: MetricType, name: &str) -> Result<u32, Status> {
    // On the main thread, while Envoy accepts definitions: define.
    let defined = DEFINING.with(|d| {
        let mut d = d.try_borrow_mut().ok()?;
        let (config, defs) = d.as_mut()?;
        let index = defs.len();
        let mut id = 0usize;
        let name_buffer = Buffer::of(scoped(name).as_bytes());
        // SAFETY: `config` is the filter config being created; Envoy copies the name.
        let result = unsafe {
            match metric_type {
                MetricType::Counter => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                        *config,
                        name_buffer,
                        std::ptr::null(),
                        0,
                        &mut id,
                    )
                }
                MetricType::Gauge => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                        *config,
                        name_buffer,
                        std::ptr::null(),
                        0,
                        &mut id,
                    )
                }
                _ => abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                    *config,
                    name_buffer,
                    std::ptr::null(),
                    0,
                    &mut id,
                ),
            }
        };
        defs.push(MetricDef {
            name: name.to_string(),
            kind: metric_type as u32,
            id: (result == abi::METRICS_SUCCESS).then_some(id),
        });
        Some(index)
    });
    if let Some(index) = defined {
        return u32::try_from(index).map_err(|_| Status::InternalFailure);
    }
    // Later (a worker, or a name first seen now): the definition made at
    // configure time, or a family's labelled metric.
    let config = current_config().ok_or(Status::BadArgument)?;
    config
        .metric_index(metric_type as u32, name)
        .or_else(|| define_labelled(config, metric_type as u32, name))
        .ok_or(Status::NotFound)
}

/// Envoy's id, kind and label values of metric `metric_id`.
fn metric(metric_id: u32) -> Result<(&'static Config, MetricType, usize, Vec<String>), Status> {
    let config = current_config().ok_or(Status::BadArgument)?;
    let kind_of = |k: u32| match k {
        0 => MetricType::Counter,
        1 => MetricType::Gauge,
        _ => MetricType::Histogram,
    };
    if metric_id >= LABELLED_BASE {
        let (generation, family, values) = LABELLED
            .with(|l| {
                l.try_borrow()
                    .ok()?
                    .get((metric_id - LABELLED_BASE) as usize)
                    .cloned()
            })
            .ok_or(Status::NotFound)?;
        if generation != config.generation {
            return Err(Status::NotFound);
        }
        let family = config.families.get(family).ok_or(Status::NotFound)?;
        return Ok((config, kind_of(family.kind), family.id, values));
    }
    let def = config
        .metrics
        .get(metric_id as usize)
        .ok_or(Status::NotFound)?;
    let id = def.id.ok_or(Status::NotFound)?;
    Ok((config, kind_of(def.kind), id, Vec::new()))
}

pub fn increment_metric(metric_id: u32, offset: i64) -> Result<(), Status> {
    let (config, kind, id, values) = metric(metric_id)?;
    let labels: Vec<Buffer> = values.iter().map(|v| Buffer::of(v.as_bytes())).collect();
    let magnitude = offset.unsigned_abs();
    let envoy = config.envoy.0;
    // SAFETY: the config outlives its streams and roots; Envoy's stats are
    // atomic, so any worker may update them.
    unsafe {
        match (kind, offset < 0) {
            (MetricType::Counter, false) => {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    envoy,
                    id,
                    labels.as_ptr(),
                    labels.len(),
                    magnitude,
                );
            }
            (MetricType::Gauge, false) => {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                    envoy,
                    id,
                    labels.as_ptr(),
                    labels.len(),
                    magnitude,
                );
            }
            (MetricType::Gauge, true) => {
                abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                    envoy,
                    id,
                    labels.as_ptr(),
                    labels.len(),
                    magnitude,
                );
            }
            _ => return Err(Status::BadArgument),
        }
    }
    Ok(())
}

pub fn record_metric(metric_id: u32, value: u64) -> Result<(), Status> {
    let (config, kind, id, values) = metric(metric_id)?;
    let labels: Vec<Buffer> = values.iter().map(|v| Buffer::of(v.as_bytes())).collect();
    let envoy = config.envoy.0;
    // SAFETY: as in `increment_metric`.
    unsafe {
        match kind {
            MetricType::Gauge => {
                abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    envoy,
                    id,
                    labels.as_ptr(),
                    labels.len(),
                    value,
                );
            }
            MetricType::Histogram => {
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                    envoy,
                    id,
                    labels.as_ptr(),
                    labels.len(),
                    value,
                );
            }
            _ => return Err(Status::BadArgument),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_split_into_family_and_labels() {
        assert_eq!(
            family_of("meshware.config_updates.filter.suite.tenant.acme.outcome.rejected"),
            Some((
                "config_updates",
                vec![
                    ("filter", "suite"),
                    ("tenant", "acme"),
                    ("outcome", "rejected")
                ]
            ))
        );
        assert_eq!(
            family_of("meshware.decisions.filter.cors"),
            Some(("decisions", vec![("filter", "cors")]))
        );
        // Not ours, an odd tail, an unknown label: no family.
        assert_eq!(family_of("other.x.filter.y"), None);
        assert_eq!(family_of("meshware.decisions.filter"), None);
        assert_eq!(family_of("meshware.decisions.color.red"), None);
    }

    #[test]
    fn grpc_targets_are_cluster_names_or_grpc_services() {
        assert_eq!(grpc_cluster("rls"), "rls");
        // GrpcService { envoy_grpc { cluster_name: "rls" } }
        assert_eq!(grpc_cluster("\n\u{5}\n\u{3}rls"), "rls");
        // Truncated: taken as a name.
        assert_eq!(grpc_cluster("\n\u{9}\n\u{3}rls"), "\n\u{9}\n\u{3}rls");
    }

    #[test]
    fn grpc_answers_read_status_and_first_frame() {
        let ok = vec![(b":status".to_vec(), b"200".to_vec())];
        assert_eq!(
            grpc_answer(true, &ok, &[0, 0, 0, 0, 2, 8, 1]),
            (0, vec![8, 1])
        );
        // Truncated frame, no answer, a trailers-only error, an HTTP error.
        assert_eq!(grpc_answer(true, &ok, &[0, 0, 0, 0, 9, 8]).0, 14);
        assert_eq!(grpc_answer(false, &[], &[]).0, 14);
        let refused = vec![
            (b":status".to_vec(), b"200".to_vec()),
            (b"grpc-status".to_vec(), b"8".to_vec()),
        ];
        assert_eq!(grpc_answer(true, &refused, &[]).0, 8);
        assert_eq!(
            grpc_answer(true, &[(b":status".to_vec(), b"503".to_vec())], &[]).0,
            14
        );
    }

    #[test]
    fn metric_names_lose_the_scope_prefix() {
        assert_eq!(scoped("meshware.decisions.filter.x"), "decisions.filter.x");
        assert_eq!(scoped("other.name"), "other.name");
    }

    #[test]
    fn grpc_messages_are_percent_encoded_like_envoy() {
        assert_eq!(grpc_message(b"rate limited"), "rate limited");
        assert_eq!(grpc_message(b"100% \xc3\xa9\n"), "100%25 %C3%A9%0A");
    }
}
