//! The suite module's one read of a request's headers per phase, shared by
//! its concerns; each concern's edits mirrored into it (docs/ARCHITECTURE.md,
//! "The suite module").

use super::*;

thread_local! {
    /// The suite module's one read of a request's headers (context id and
    /// map), shared by its concerns instead of a read per concern, and kept
    /// in step with the edits they apply. Set only while the suite runs a
    /// request phase (`chain`), so a module of one filter never sees it.
    static SHARED_HEADERS: RefCell<Option<(u32, Rc<Headers>)>> = const { RefCell::new(None) };
}

/// What the concerns of one suite phase (a request, response-headers or
/// log callback) read from the host once, for all of them: the clock
/// (one reading per phase) and properties (source address, response
/// code), read by the first concern asking.
#[derive(Default)]
struct PhaseReads {
    now_ms: Option<u64>,
    properties: Vec<(String, Option<Vec<u8>>)>,
}

/// Properties a phase keeps (the concerns read a handful).
const MAX_PHASE_PROPERTIES: usize = 8;

thread_local! {
    static PHASE_READS: RefCell<Option<PhaseReads>> = const { RefCell::new(None) };
}

/// Opens (`true`) or closes a phase whose concerns share host reads.
pub fn phase(open: bool) {
    PHASE_READS.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            *p = open.then(PhaseReads::default);
        }
    });
}

pub(super) fn now_ms(read: impl FnOnce() -> u64) -> u64 {
    PHASE_READS.with(|p| match p.try_borrow_mut().as_deref_mut() {
        Ok(Some(reads)) => *reads.now_ms.get_or_insert_with(read),
        _ => read(),
    })
}

pub(super) fn property(path: &[&str], read: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    PHASE_READS.with(|p| {
        let mut p = p.try_borrow_mut();
        let Ok(Some(reads)) = p.as_deref_mut() else {
            return read();
        };
        // Keys are the path's parts joined by NUL, compared part by part:
        // no key is built unless the value is new.
        let same = |key: &str| key.split('\u{0}').eq(path.iter().copied());
        if let Some((_, value)) = reads.properties.iter().find(|(k, _)| same(k)) {
            return value.clone();
        }
        let value = read();
        if reads.properties.len() < MAX_PHASE_PROPERTIES {
            reads
                .properties
                .push((crate::errors::joined(path, "\u{0}"), value.clone()));
        }
        value
    })
}

thread_local! {
    /// Whether the request of the current log phase gets an access-log
    /// line (set by the suite's `on_log` before its concerns run).
    static LINE_LOGGED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// The access logger we ship writes a line for an error, a stream
/// without a response and a request the access-log concern sampled
/// (`decision::LOGGED_FROM_STATUS`); only those lines read the
/// concerns' records, so the suite writes them only then.
/// A gRPC call (`grpc`) that did not end `OK` is an error too (its
/// HTTP status is 200): its status is read only for gRPC calls.
pub fn set_line_logged(sampled: bool, grpc: bool) {
    let logged = sampled || {
        let read = |attribute: &str| {
            super::EnvoyEnv
                .property(&["response", attribute])
                .and_then(|b| crate::store::property_u64(&b))
        };
        let status = read("code").unwrap_or(0);
        status == 0
            || status >= u64::from(crate::decision::LOGGED_FROM_STATUS)
            || (grpc && read("grpc_status").is_some_and(|g| g != 0))
    };
    LINE_LOGGED.with(|l| l.set(logged));
}

pub(super) fn line_logged() -> bool {
    LINE_LOGGED.with(std::cell::Cell::get)
}

/// Forgets the phase's properties: the route (and `xds.cluster_name`)
/// may change after a concern clears the route cache.
pub(super) fn forget_properties() {
    PHASE_READS.with(|p| {
        if let Ok(Some(reads)) = p.try_borrow_mut().as_deref_mut() {
            reads.properties.clear();
        }
    });
}

/// Reads the effective context's request headers once for the concerns
/// about to run (`None`: stop sharing).
pub fn share(context_id: Option<u32>) {
    phase(context_id.is_some());
    let read = context_id.and_then(|id| {
        let map = hostcalls::get_map_serialized(MapType::HttpRequestHeaders).ok()?;
        Some((id, Rc::new(Headers::from_serialized(map))))
    });
    SHARED_HEADERS.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = read;
        }
    });
}

pub(super) fn get(context_id: u32) -> Option<Rc<Headers>> {
    SHARED_HEADERS.with(|s| match &*s.try_borrow().ok()? {
        Some((id, h)) if *id == context_id => Some(h.clone()),
        _ => None,
    })
}

type PathRead = Result<crate::path::RequestPath, crate::path::Invalid>;

thread_local! {
    /// The request's path, read once for every concern of the suite
    /// (its tenant is resolved by each: jwt_auth may claim one).
    static SHARED_PATH: RefCell<Option<(u32, Rc<PathRead>)>> = const { RefCell::new(None) };
    /// The request whose owned headers the suite's first concern stripped.
    static FIRST_DONE: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The path of `context_id` read once (`raw` is its `:path`).
pub(super) fn path(context_id: u32, raw: &str) -> Option<Rc<PathRead>> {
    SHARED_PATH.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        if let Some((id, read)) = s.as_ref() {
            if *id == context_id {
                return Some(read.clone());
            }
        }
        let read = Rc::new(crate::path::RequestPath::read(raw));
        *s = Some((context_id, read.clone()));
        Some(read)
    })
}

/// `Some(true)`: an earlier concern of this suite request stripped the
/// owned headers; `None`: ask the host (the suite may follow a module).
pub(super) fn first_done(context_id: u32) -> Option<bool> {
    FIRST_DONE.with(|f| (f.get() == Some(context_id)).then_some(true))
}

pub(super) fn set_first_done(context_id: u32) {
    FIRST_DONE.with(|f| f.set(Some(context_id)));
}

thread_local! {
    /// The tenant a verified token claimed for the request in progress.
    static CLAIMED: RefCell<Option<(u32, String)>> = const { RefCell::new(None) };
}

pub(super) fn set_claimed(context_id: u32, tenant: &str) {
    CLAIMED.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = Some((context_id, tenant.to_string()));
        }
    });
}

pub(super) fn claimed(context_id: u32) -> Option<String> {
    CLAIMED.with(|c| match &*c.try_borrow().ok()? {
        Some((id, t)) if *id == context_id => Some(t.clone()),
        _ => None,
    })
}

thread_local! {
    /// The suite's response headers for the concerns of one response
    /// phase: read by the first concern that needs them, reused by the
    /// next ones (about 2 µs per whole-map read), kept in step with
    /// their edits.
    static SHARED_RESPONSE: RefCell<Option<(u32, Option<Rc<Headers>>)>> =
        const { RefCell::new(None) };
}

/// Opens (`Some`) or closes (`None`) a response-headers phase whose
/// concerns share one read.
pub fn share_response(context_id: Option<u32>) {
    phase(context_id.is_some());
    SHARED_RESPONSE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = context_id.map(|id| (id, None));
        }
    });
}

/// The response headers of `context_id` from the phase's shared read
/// (made now by the first concern asking); `None` outside such a phase.
pub(super) fn response(context_id: u32) -> Option<Rc<Headers>> {
    SHARED_RESPONSE.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        let (id, cached) = s.as_mut()?;
        if *id != context_id {
            return None;
        }
        if cached.is_none() {
            let map = hostcalls::get_map_serialized(MapType::HttpResponseHeaders).ok()?;
            *cached = Some(Rc::new(Headers::from_serialized(map)));
        }
        cached.clone()
    })
}

/// Mirrors a response header edit into the shared read; forgets the read
/// when it cannot, so the next concern reads the map again.
pub(super) fn edit_response(op: &HeaderOp<'_>) {
    SHARED_RESPONSE.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        if let Some((_, cached)) = s.as_mut() {
            let edited = cached
                .as_mut()
                .and_then(Rc::get_mut)
                .map(|h| h.apply(op))
                .is_some();
            if !edited {
                *cached = None;
            }
        }
    });
}

/// Mirrors a request header edit into the shared read; drops the read
/// when it cannot (still borrowed), so later concerns read the map again.
pub(super) fn edit(op: &HeaderOp<'_>) {
    SHARED_HEADERS.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        let edited = match s.as_mut() {
            None => return,
            Some((_, h)) => Rc::get_mut(h).map(|h| h.apply(op)).is_some(),
        };
        if !edited {
            *s = None;
        }
    });
}
