//! The dynamic module's event hooks: Envoy's filter config and filter
//! lifecycle mapped onto proxy-wasm's root and HTTP contexts, so `host` and
//! `chain` run as they do in a wasm VM.
//!
//! - `config_new` (main thread) compiles the profile once with a root of
//!   its own: a bad profile is refused there, with the errors in Envoy's
//!   log, and the metrics are defined (Envoy accepts definitions only then).
//! - Each worker thread gets its own root per configuration on its first
//!   stream, as each worker has its own wasm VM: roots and streams are
//!   single-threaded, state shared across workers lives in `store`.
//! - A worker's root ticks when a hook runs after its period is due, and a
//!   paused stream is woken every `WAKE_MS` by a timer thread through
//!   Envoy's scheduler, so parked requests resume without traffic.
//! - Every hook catches panics: a panicking concern fails its request
//!   (503), the worker's root is rebuilt on the next stream, the process
//!   lives on.

use super::abi::{self, EnvoyPtr};
use super::hostcalls::{self, Answer, Owner, Pending, Scope, StreamHost};
use hashbrown::{HashMap, HashSet};
use proxy_wasm::traits::{HttpContext, RootContext};
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Makes the root context of the module (the suite's, or one filter's).
pub type RootFactory = fn(u32) -> Box<dyn RootContext>;

static FACTORY: OnceLock<RootFactory> = OnceLock::new();

/// How often a paused stream is woken to let its worker's root tick (the
/// proxy-wasm build's park resolution is its filters' tick, 20 ms).
const WAKE_MS: u64 = 20;

/// A pointer Envoy owns, shared by the threads Envoy calls us on.
#[derive(Clone, Copy)]
pub struct EnvoyRef(pub EnvoyPtr);
// SAFETY: Envoy's filter config outlives every filter made from it and its
// callbacks used here (metrics) are thread-safe.
unsafe impl Send for EnvoyRef {}
// SAFETY: as above.
unsafe impl Sync for EnvoyRef {}

/// A metric the main thread defined for a configuration.
pub struct MetricDef {
    pub name: String,
    pub kind: u32,
    /// Envoy's id; `None` when Envoy refused the definition.
    pub id: Option<usize>,
}

/// One filter configuration (Envoy's `DynamicModuleFilter`): the profile
/// and the metrics defined for it.
pub struct Config {
    /// Distinguishes configurations whose memory is reused.
    pub generation: u64,
    pub envoy: EnvoyRef,
    profile: Vec<u8>,
    pub metrics: Vec<MetricDef>,
    metric_index: HashMap<(u32, String), u32>,
    /// Labelled metrics ("vecs") for names first defined after configure
    /// time (`hostcalls::define_metric`).
    pub families: Vec<hostcalls::Family>,
}

impl Config {
    pub fn metric_index(&self, kind: u32, name: &str) -> Option<u32> {
        self.metric_index.get(&(kind, name.to_string())).copied()
    }
}

/// Configurations alive now, by generation.
fn live_generations() -> &'static Mutex<HashSet<u64>> {
    static LIVE: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A worker's root for one configuration.
struct WorkerRoot {
    root: Box<dyn RootContext>,
    tick_ms: u64,
    next_tick: Instant,
}

thread_local! {
    /// This worker's streams by context id (held replies name theirs).
    static FILTERS: RefCell<HashMap<u32, *mut Filter>> = RefCell::new(HashMap::new());
    static CONFIG: Cell<*const Config> = const { Cell::new(std::ptr::null()) };
    static ROOTS: RefCell<HashMap<u64, WorkerRoot>> = RefCell::new(HashMap::new());
    static NEXT_CONTEXT: Cell<u32> = const { Cell::new(1) };
}

/// The configuration of the hook in progress.
pub fn current_config() -> Option<&'static Config> {
    let config = CONFIG.with(|c| c.get());
    // SAFETY: set only while a hook of a live configuration runs (Envoy
    // destroys a configuration after its last filter).
    unsafe { config.as_ref() }
}

struct ConfigScope(*const Config);

impl ConfigScope {
    fn enter(config: *const Config) -> ConfigScope {
        ConfigScope(CONFIG.with(|c| c.replace(config)))
    }
}

impl Drop for ConfigScope {
    fn drop(&mut self) {
        CONFIG.with(|c| c.set(self.0));
    }
}

fn next_context_id() -> u32 {
    NEXT_CONTEXT.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1).max(1));
        id
    })
}

/// `envoy_dynamic_module_on_program_init`, called by `export_native!`:
/// refuses to load into an Envoy without the callbacks this build uses.
pub fn program_init(factory: RootFactory) -> *const u8 {
    let missing = abi::resolve();
    if !missing.is_empty() {
        // Envoy's logger may be what is missing: stderr is what is left.
        eprintln!(
            "meshware: this module was built for Envoy {} (dynamic modules ABI {}); \
             this Envoy lacks {} of its callbacks ({}): refusing to load",
            abi::ENVOY_VERSION,
            String::from_utf8_lossy(abi::ABI_VERSION.strip_suffix(b"\0").unwrap_or_default()),
            missing.len(),
            missing.join(", ")
        );
        return std::ptr::null();
    }
    super::logger::install();
    std::panic::set_hook(Box::new(|info| {
        super::logger::write(
            abi::log_level::CRITICAL,
            &format!("[meshware] panic: {info}"),
        );
    }));
    let _ = FACTORY.set(factory);
    let _ = MAIN_THREAD.set(std::thread::current().id());
    abi::ABI_VERSION.as_ptr()
}

/// Envoy's main thread: the one that loads the module.
static MAIN_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

/// Whether the caller runs on Envoy's main thread (not a worker).
pub fn on_main_thread() -> bool {
    MAIN_THREAD.get() == Some(&std::thread::current().id())
}

fn guarded<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            log::error!(
                "[meshware] {what} panicked; the request fails, the worker's state is rebuilt"
            );
            fallback
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    _name: abi::Buffer,
    profile: abi::Buffer,
) -> *const c_void {
    guarded("configure", std::ptr::null(), || {
        let Some(factory) = FACTORY.get() else {
            return std::ptr::null();
        };
        // SAFETY: Envoy lends the configuration for the call.
        let profile = unsafe { profile.as_slice() }.to_vec();
        hostcalls::set_plugin_configuration(&profile);
        hostcalls::begin_definitions(config_envoy);
        let mut root = factory(next_context_id());
        let ok = {
            let _main = hostcalls::main_config(config_envoy);
            root.on_configure(profile.len())
        };
        let tick_ms = hostcalls::take_tick_ms();
        let metrics = hostcalls::end_definitions();
        let families = hostcalls::define_families(config_envoy, &metrics);
        if !ok {
            root.on_done();
            return std::ptr::null();
        }
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let metric_index = metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some(((m.kind, m.name.clone()), u32::try_from(i).ok()?)))
            .collect();
        live_generations()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(generation);
        let config = Box::new(Config {
            generation,
            envoy: EnvoyRef(config_envoy),
            profile,
            metrics,
            metric_index,
            families,
        });
        // The main thread keeps this root, as Envoy keeps a wasm plugin's
        // main-thread VM: its ticks do the background work (key set
        // fetches, live configuration polls) with or without traffic.
        main_root::keep(generation, config_envoy, root, tick_ms);
        Box::into_raw(config) as *const c_void
    })
}

/// The main thread's root per configuration, ticked by Envoy's config
/// scheduler (`timer`), its callouts carried by the configuration.
mod main_root {
    use super::*;

    thread_local! {
        static ROOTS: RefCell<HashMap<u64, Box<dyn RootContext>>> = RefCell::new(HashMap::new());
    }

    pub fn keep(generation: u64, config: EnvoyPtr, root: Box<dyn RootContext>, tick_ms: u64) {
        ROOTS.with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                r.insert(generation, root);
            }
        });
        if tick_ms == 0 {
            return;
        }
        // SAFETY: `config` is the configuration being created (main thread).
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if !scheduler.is_null() {
            timer::add(
                key(generation),
                scheduler,
                true,
                Duration::from_millis(tick_ms),
            );
        }
    }

    /// Timer keys of configurations, apart from the streams' (addresses).
    fn key(generation: u64) -> usize {
        usize::MAX - generation as usize
    }

    /// Runs `f` on the configuration's main-thread root with its scopes;
    /// a panic drops the root (its background work stops, the workers
    /// serve on).
    pub fn with(config: &Config, what: &str, f: impl FnOnce(&mut dyn RootContext)) {
        let _config_scope = ConfigScope::enter(config);
        let _scope = Scope::enter(std::ptr::null());
        let _carrier = hostcalls::carrier(std::ptr::null_mut());
        let _main = hostcalls::main_config(config.envoy.0);
        let ran = ROOTS.with(|r| {
            let Ok(mut r) = r.try_borrow_mut() else {
                return true;
            };
            let Some(root) = r.get_mut(&config.generation) else {
                return true;
            };
            catch_unwind(AssertUnwindSafe(|| f(root.as_mut()))).is_ok()
        });
        if !ran {
            log::error!("[meshware] the main thread's {what} panicked: its background work stops");
            drop_root(config.generation);
        }
    }

    pub fn drop_root(generation: u64) {
        timer::remove(key(generation));
        let root = ROOTS.with(|r| {
            r.try_borrow_mut()
                .ok()
                .and_then(|mut r| r.remove(&generation))
        });
        if let Some(mut root) = root {
            let _ = catch_unwind(AssertUnwindSafe(|| root.on_done()));
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: EnvoyPtr,
    config: *const c_void,
    _event_id: u64,
) {
    // SAFETY: Envoy passes the pointer `config_new` returned, alive.
    let Some(config) = (unsafe { config.cast::<Config>().as_ref() }) else {
        return;
    };
    main_root::with(config, "tick", |root| root.on_tick());
}

/// # Safety
/// Envoy passes `headers_len` headers and `body_len` chunks it owns for
/// the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: EnvoyPtr,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const abi::Header,
    headers_len: usize,
    body: *const abi::Buffer,
    body_len: usize,
) {
    // SAFETY: Envoy passes the pointer `config_new` returned, alive.
    let Some(config) = (unsafe { config.cast::<Config>().as_ref() }) else {
        return;
    };
    let Some(pending) = hostcalls::take_pending(config_envoy, callout_id) else {
        return;
    };
    // SAFETY: the caller's contract.
    let answer = (result == abi::CALLOUT_SUCCESS)
        .then(|| unsafe { answer_of(headers, headers_len, body, body_len) });
    let (token, grpc) = (pending.token, pending.grpc);
    let (status, size) = prepare_answer(grpc, answer);
    main_root::with(config, "callout answer", |root| {
        if grpc {
            root.on_grpc_call_response(token, status, size.1);
        } else {
            root.on_http_call_response(token, size.0, size.1, 0);
        }
    });
    hostcalls::set_answer(Answer::default());
}

/// An answer's headers and body, copied out of Envoy's.
///
/// # Safety
/// `headers` and `body` point to `headers_len` and `body_len` items Envoy
/// owns for the call (or are null).
unsafe fn answer_of(
    headers: *const abi::Header,
    headers_len: usize,
    body: *const abi::Buffer,
    body_len: usize,
) -> Answer {
    let mut answer = Answer::default();
    if !headers.is_null() {
        // SAFETY: the caller's contract.
        for h in unsafe { std::slice::from_raw_parts(headers, headers_len) } {
            // SAFETY: as above.
            let (k, v) = unsafe { (h.key.as_slice(), h.value.as_slice()) };
            answer.headers.push((k.to_vec(), v.to_vec()));
        }
    }
    if !body.is_null() {
        // SAFETY: the caller's contract.
        for chunk in unsafe { std::slice::from_raw_parts(body, body_len) } {
            // SAFETY: as above.
            answer.body.extend_from_slice(unsafe { chunk.as_slice() });
        }
    }
    answer
}

/// Sets the answer host calls read while it is delivered; returns the gRPC
/// status and (headers, body size) the context is told.
fn prepare_answer(grpc: bool, answer: Option<Answer>) -> (u32, (usize, usize)) {
    let answered = answer.is_some();
    let answer = answer.unwrap_or_default();
    if grpc {
        let (status, message) = hostcalls::grpc_answer(answered, &answer.headers, &answer.body);
        let sizes = (answer.headers.len(), message.len());
        hostcalls::set_answer(Answer {
            headers: answer.headers,
            body: message,
        });
        (status, sizes)
    } else {
        let sizes = (answer.headers.len(), answer.body.len());
        hostcalls::set_answer(answer);
        (0, sizes)
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *mut c_void) {
    if config.is_null() {
        return;
    }
    // SAFETY: made by `config_new` with `Box::into_raw`; Envoy destroys it once.
    let config = unsafe { Box::from_raw(config.cast::<Config>()) };
    main_root::drop_root(config.generation);
    live_generations()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&config.generation);
}

/// This worker's root for `config`, made (and configured) on first use;
/// roots of configurations gone are dropped then too.
fn with_root<R>(config: &Config, f: impl FnOnce(&mut WorkerRoot) -> R) -> Option<R> {
    ROOTS.with(|roots| {
        let mut roots = roots.try_borrow_mut().ok()?;
        if !roots.contains_key(&config.generation) {
            let live = live_generations()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            roots.retain(|generation, _| live.contains(generation));
            let factory = FACTORY.get()?;
            hostcalls::set_plugin_configuration(&config.profile);
            let mut root = factory(next_context_id());
            if !root.on_configure(config.profile.len()) {
                return None;
            }
            let tick_ms = hostcalls::take_tick_ms();
            roots.insert(
                config.generation,
                WorkerRoot {
                    root,
                    tick_ms,
                    next_tick: Instant::now() + Duration::from_millis(tick_ms),
                },
            );
        }
        roots.get_mut(&config.generation).map(f)
    })
}

/// Runs the worker root's tick if its period is due; `carrier` (the filter
/// whose hook runs it) carries the callouts the tick starts.
fn tick_if_due(config: &Config, carrier: EnvoyPtr) {
    let now = Instant::now();
    let due = ROOTS.with(|roots| {
        roots.try_borrow().ok().and_then(|r| {
            r.get(&config.generation)
                .map(|w| w.tick_ms > 0 && now >= w.next_tick)
        })
    });
    if due != Some(true) {
        return;
    }
    let _ = with_root(config, |w| {
        w.next_tick = now + Duration::from_millis(w.tick_ms);
        let _scope = Scope::enter(std::ptr::null());
        let _carrier = hostcalls::carrier(carrier);
        w.root.on_tick();
    });
}

/// Drops this worker's root for `config` after a panic: the next stream
/// makes a fresh one (proxy-wasm's VM reload).
fn drop_root(config: &Config) {
    ROOTS.with(|roots| {
        if let Ok(mut roots) = roots.try_borrow_mut() {
            roots.remove(&config.generation);
        }
    });
}

/// One stream: its HTTP context and its host side.
struct Filter {
    config: *const Config,
    context_id: u32,
    context: Option<Box<dyn HttpContext>>,
    host: Box<RefCell<StreamHost>>,
    /// Envoy's scheduler while the request is paused (`waker`).
    scheduler: Option<usize>,
    /// Set after a panic: the stream is left alone.
    failed: bool,
    /// The failed request was answered (once: the answer passes the
    /// response hooks too).
    answered: bool,
    /// The adapter answered this stream itself (`send_replies`): its
    /// response phase already ran on that answer.
    replied: bool,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter_envoy: EnvoyPtr,
) -> *mut c_void {
    guarded("new stream", std::ptr::null_mut(), || {
        let config = config.cast::<Config>();
        // SAFETY: Envoy passes the pointer `config_new` returned, alive.
        let Some(config_ref) = (unsafe { config.as_ref() }) else {
            return std::ptr::null_mut();
        };
        let _config_scope = ConfigScope::enter(config);
        let context_id = next_context_id();
        let host = Box::new(RefCell::new(StreamHost {
            envoy: filter_envoy,
            context_id,
            properties: Vec::new(),
            reply: None,
            replying: false,
        }));
        let host_ptr: *const RefCell<StreamHost> = &*host;
        hostcalls::register_context(context_id, host_ptr);
        // The worker's tick first: a stream holds the settings its root has
        // when it is made, so what a due tick adopts (live configuration)
        // must already be there.
        let _ = with_root(config_ref, |_| ());
        // A panic there fails this stream's request, as in any hook.
        let ticked = catch_unwind(AssertUnwindSafe(|| tick_if_due(config_ref, filter_envoy)));
        if ticked.is_err() {
            log::error!(
                "[meshware] tick panicked: the request fails, the worker's state is rebuilt"
            );
            drop_root(config_ref);
        }
        let _scope = Scope::enter(host_ptr);
        let context = with_root(config_ref, |w| w.root.create_http_context(context_id)).flatten();
        let filter = Box::new(Filter {
            config,
            context_id,
            context,
            host,
            scheduler: None,
            failed: ticked.is_err(),
            answered: false,
            replied: false,
        });
        let filter = Box::into_raw(filter);
        FILTERS.with(|f| {
            if let Ok(mut f) = f.try_borrow_mut() {
                f.insert(context_id, filter);
            }
        });
        filter.cast::<c_void>()
    })
}

/// Runs one hook of a stream: config and stream in scope, the worker's
/// tick first, panics caught. `None`: no context, or it panicked.
fn on_stream<R>(
    filter: *mut c_void,
    what: &str,
    f: impl FnOnce(&mut dyn HttpContext) -> R,
) -> Option<R> {
    // SAFETY: Envoy passes the pointer `filter_new` returned until destroy.
    let filter = unsafe { filter.cast::<Filter>().as_mut() }?;
    if filter.failed {
        return None;
    }
    // SAFETY: the config outlives its filters.
    let config = unsafe { filter.config.as_ref() }?;
    let _config_scope = ConfigScope::enter(filter.config);
    let host_ptr: *const RefCell<StreamHost> = &*filter.host;
    let envoy = filter
        .host
        .try_borrow()
        .map(|h| h.envoy)
        .unwrap_or(std::ptr::null_mut());
    let result = catch_unwind(AssertUnwindSafe(|| {
        tick_if_due(config, envoy);
        let _scope = Scope::enter(host_ptr);
        let context = filter.context.as_mut()?;
        Some(f(context.as_mut()))
    }));
    match result {
        Ok(r) => r,
        Err(_) => {
            log::error!(
                "[meshware] {what} panicked: the request fails, the worker's state is rebuilt"
            );
            filter.failed = true;
            drop_root(config);
            None
        }
    }
}

/// After a panic: the request fails closed (503), as under the wasm
/// build's FAIL_CLOSED policy; once, then the stream is left alone.
/// Returns whether it answered now.
fn fail_request(filter: *mut c_void) -> bool {
    // SAFETY: as in `on_stream`.
    let Some(filter) = (unsafe { filter.cast::<Filter>().as_mut() }) else {
        return false;
    };
    if !filter.failed || filter.answered {
        return false;
    }
    filter.answered = true;
    let host_ptr: *const RefCell<StreamHost> = &*filter.host;
    let _scope = Scope::enter(host_ptr);
    // Straight out: no response phase for a stream that panicked.
    let _ = hostcalls::send_local_reply(503, &[], b"meshware: internal error\n", -1);
    hostcalls::send_reply();
    true
}

/// Wakes paused streams and ticks the main thread's roots: a timer thread
/// commits an event to each registered scheduler when its period is due
/// (Envoy runs the event on the scheduler's thread). A paused stream's
/// event lets its worker's root tick, resuming parked requests.
mod timer {
    use super::*;

    struct Entry {
        scheduler: usize,
        /// A filter configuration's scheduler (main thread), not a stream's.
        config: bool,
        period: Duration,
        due: Instant,
    }

    fn entries() -> &'static Mutex<HashMap<usize, Entry>> {
        static ENTRIES: OnceLock<Mutex<HashMap<usize, Entry>>> = OnceLock::new();
        ENTRIES.get_or_init(|| {
            let _ = std::thread::Builder::new()
                .name("meshware-timer".to_string())
                .spawn(|| loop {
                    std::thread::sleep(Duration::from_millis(WAKE_MS));
                    let now = Instant::now();
                    let mut entries = entries().lock().unwrap_or_else(|p| p.into_inner());
                    for e in entries.values_mut().filter(|e| now >= e.due) {
                        e.due = now + e.period;
                        let scheduler = e.scheduler as *mut c_void;
                        // SAFETY: a scheduler stays registered only until
                        // `remove` deletes it, under this lock; commits are
                        // thread-safe.
                        unsafe {
                            if e.config {
                                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler, 0);
                            } else {
                                abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler, 0);
                            }
                        }
                    }
                });
            Mutex::new(HashMap::new())
        })
    }

    pub fn add(key: usize, scheduler: *mut c_void, config: bool, period: Duration) {
        entries().lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            Entry {
                scheduler: scheduler as usize,
                config,
                period,
                due: Instant::now() + period,
            },
        );
    }

    /// Unregisters `key` and deletes its scheduler, under the lock the
    /// timer thread commits under.
    pub fn remove(key: usize) {
        let mut entries = entries().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.remove(&key) {
            let scheduler = e.scheduler as *mut c_void;
            // SAFETY: made by `scheduler_new`, deleted once.
            unsafe {
                if e.config {
                    abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                        scheduler,
                    );
                } else {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler);
                }
            }
        }
    }
}

/// Paused streams are woken every `WAKE_MS` (`timer`).
mod waker {
    use super::*;

    pub fn pause(filter: &mut Filter) {
        if filter.scheduler.is_some() {
            return;
        }
        let envoy = filter.host.try_borrow().map(|h| h.envoy).ok();
        let Some(envoy) = envoy else {
            return;
        };
        // SAFETY: `envoy` is the live filter of the hook in progress.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(envoy) };
        if scheduler.is_null() {
            return;
        }
        let key = filter as *mut Filter as usize;
        filter.scheduler = Some(scheduler as usize);
        timer::add(key, scheduler, false, Duration::from_millis(WAKE_MS));
    }

    pub fn resume(filter: &mut Filter) {
        if filter.scheduler.take().is_some() {
            timer::remove(filter as *mut Filter as usize);
        }
    }
}

/// Sends the local replies the adapter held (`hostcalls::Reply`), each
/// after its stream's response phase ran on it, as Envoy runs a wasm
/// filter's: what that phase adds (CORS, security and trace headers)
/// reaches the reply. Runs at the end of every hook.
fn send_replies() {
    for context_id in hostcalls::take_held_replies() {
        let filter = FILTERS.with(|f| {
            f.try_borrow()
                .ok()
                .and_then(|f| f.get(&context_id).copied())
        });
        let Some(filter) = filter else {
            continue;
        };
        let filter = filter.cast::<c_void>();
        let _ = on_stream(filter, "local reply", |c| {
            if hostcalls::begin_reply() {
                c.on_http_response_headers(0, true);
            }
        });
        // SAFETY: registered filters are alive (removed before dropped).
        let Some(f) = (unsafe { filter.cast::<Filter>().as_mut() }) else {
            continue;
        };
        f.replied = true;
        let host_ptr: *const RefCell<StreamHost> = &*f.host;
        let _scope = Scope::enter(host_ptr);
        if f.failed {
            // Its response phase panicked: the 503 instead.
            if let Ok(mut h) = f.host.try_borrow_mut() {
                h.reply = None;
            }
            drop(_scope);
            fail_request(filter);
        } else {
            hostcalls::send_reply();
        }
    }
}

fn replied(filter: *mut c_void) -> bool {
    // SAFETY: as in `on_stream`.
    unsafe { filter.cast::<Filter>().as_ref() }.is_some_and(|f| f.replied)
}

fn note_action(filter: *mut c_void, action: Option<Action>) {
    // SAFETY: as in `on_stream`.
    let Some(filter) = (unsafe { filter.cast::<Filter>().as_mut() }) else {
        return;
    };
    match action {
        Some(Action::Pause) => waker::pause(filter),
        _ => waker::resume(filter),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
    end_of_stream: bool,
) -> u32 {
    let action = on_stream(filter, "request headers", |c| {
        c.on_http_request_headers(0, end_of_stream)
    });
    send_replies();
    if fail_request(filter) {
        return abi::status::HEADERS_STOP;
    }
    note_action(filter, action);
    match action {
        Some(Action::Pause) => abi::status::HEADERS_STOP,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
    end_of_stream: bool,
) -> u32 {
    let action = on_stream(filter, "request body", |c| {
        c.on_http_request_body(hostcalls::body_size(true), end_of_stream)
    });
    send_replies();
    if fail_request(filter) {
        return abi::status::BODY_STOP_AND_BUFFER;
    }
    note_action(filter, action);
    match action {
        Some(Action::Pause) => abi::status::BODY_STOP_AND_BUFFER,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
) -> u32 {
    let action = on_stream(filter, "request trailers", |c| {
        c.on_http_request_trailers(0)
    });
    if fail_request(filter) {
        return abi::status::TRAILERS_STOP;
    }
    note_action(filter, action);
    match action {
        Some(Action::Pause) => abi::status::TRAILERS_STOP,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
    end_of_stream: bool,
) -> u32 {
    note_action(filter, None);
    if replied(filter) {
        return abi::status::CONTINUE;
    }
    let action = on_stream(filter, "response headers", |c| {
        c.on_http_response_headers(0, end_of_stream)
    });
    send_replies();
    if fail_request(filter) {
        return abi::status::HEADERS_STOP;
    }
    match action {
        Some(Action::Pause) => abi::status::HEADERS_STOP,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
    end_of_stream: bool,
) -> u32 {
    if replied(filter) {
        return abi::status::CONTINUE;
    }
    let action = on_stream(filter, "response body", |c| {
        c.on_http_response_body(hostcalls::body_size(false), end_of_stream)
    });
    match action {
        Some(Action::Pause) => abi::status::BODY_STOP_AND_BUFFER,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
) -> u32 {
    let action = on_stream(filter, "response trailers", |c| {
        c.on_http_response_trailers(0)
    });
    match action {
        Some(Action::Pause) => abi::status::TRAILERS_STOP,
        _ => abi::status::CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
) {
    note_action(filter, None);
    let _ = on_stream(filter, "stream completion", |c| {
        c.on_log();
        hostcalls::flush_properties();
        crate::host::flush_metrics();
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *mut c_void) {
    if filter.is_null() {
        return;
    }
    note_action(filter, None);
    // Envoy cancels the callouts this filter carried: a root's move to
    // another stream, or fail when there is none (a stream's own go away
    // with it).
    // SAFETY: as in `on_stream`.
    let envoy = unsafe { filter.cast::<Filter>().as_ref() }
        .and_then(|f| f.host.try_borrow().ok().map(|h| h.envoy));
    if let Some(envoy) = envoy {
        // This stream's context goes first: it carries nothing more.
        // SAFETY: as in `on_stream`.
        if let Some(f) = unsafe { filter.cast::<Filter>().as_ref() } {
            hostcalls::unregister_context(f.context_id);
        }
        for pending in hostcalls::move_root_callouts(envoy) {
            deliver(filter, pending, None);
        }
    }
    let _ = on_stream(filter, "stream end", |c| {
        c.on_done();
    });
    // SAFETY: made by `filter_new` with `Box::into_raw`; Envoy destroys it once.
    let filter = unsafe { Box::from_raw(filter.cast::<Filter>()) };
    hostcalls::unregister_context(filter.context_id);
    FILTERS.with(|f| {
        if let Ok(mut f) = f.try_borrow_mut() {
            f.remove(&filter.context_id);
        }
    });
    guarded("stream drop", (), move || drop(filter));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: EnvoyPtr,
    filter: *mut c_void,
    _event_id: u64,
) {
    // The wake-up of a paused stream: `on_stream` ticks the worker's root.
    // SAFETY: as in `on_stream`.
    let Some(f) = (unsafe { filter.cast::<Filter>().as_ref() }) else {
        return;
    };
    let envoy = f
        .host
        .try_borrow()
        .map(|h| h.envoy)
        .unwrap_or(std::ptr::null_mut());
    // SAFETY: the config outlives its filters.
    if let Some(config) = unsafe { f.config.as_ref() } {
        let _config_scope = ConfigScope::enter(f.config);
        if catch_unwind(AssertUnwindSafe(|| tick_if_due(config, envoy))).is_err() {
            log::error!("[meshware] tick panicked: the worker's state is rebuilt");
            drop_root(config);
        }
    }
    send_replies();
}

/// Hands a callout's answer (`None`: it failed) to whoever dispatched it:
/// the stream of `filter`, or the worker's root.
fn deliver(filter: *mut c_void, pending: Pending, answer: Option<Answer>) {
    let (status, (headers, body)) = prepare_answer(pending.grpc, answer);
    let token = pending.token;
    let call = |context: &mut dyn proxy_wasm::traits::Context| {
        if pending.grpc {
            context.on_grpc_call_response(token, status, body);
        } else {
            context.on_http_call_response(token, headers, body, 0);
        }
    };
    match pending.owner {
        Owner::Stream(_) => {
            let _ = on_stream(filter, "callout answer", |c| call(c));
            fail_request(filter);
        }
        Owner::Root => {
            // SAFETY: as in `on_stream`.
            let Some(f) = (unsafe { filter.cast::<Filter>().as_ref() }) else {
                return;
            };
            // SAFETY: the config outlives its filters.
            let Some(config) = (unsafe { f.config.as_ref() }) else {
                return;
            };
            let envoy = f
                .host
                .try_borrow()
                .map(|h| h.envoy)
                .unwrap_or(std::ptr::null_mut());
            let _config_scope = ConfigScope::enter(f.config);
            let delivered = catch_unwind(AssertUnwindSafe(|| {
                let _ = with_root(config, |w| {
                    let _scope = Scope::enter(std::ptr::null());
                    let _carrier = hostcalls::carrier(envoy);
                    call(w.root.as_mut());
                });
            }));
            if delivered.is_err() {
                log::error!("[meshware] a callout answer panicked: the worker's state is rebuilt");
                drop_root(config);
            }
        }
    }
    hostcalls::set_answer(Answer::default());
    send_replies();
}

// Hooks this build does not use yet (callouts and streams of its own,
// watermarks); Envoy requires every one to exist.

/// # Safety
/// Envoy passes `headers_len` headers and `body_len` chunks it owns for
/// the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: EnvoyPtr,
    filter: *mut c_void,
    callout_id: u64,
    result: u32,
    headers: *const abi::Header,
    headers_len: usize,
    body: *const abi::Buffer,
    body_len: usize,
) {
    let Some(pending) = hostcalls::take_pending(envoy, callout_id) else {
        return;
    };
    // SAFETY: the caller's contract.
    let answer = (result == abi::CALLOUT_SUCCESS)
        .then(|| unsafe { answer_of(headers, headers_len, body, body_len) });
    deliver(filter, pending, answer);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_len: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _data: *const c_void,
    _data_len: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_len: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
) {
}
