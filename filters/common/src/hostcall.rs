//! Every host call of the adapter goes through here. Normally these are the
//! proxy-wasm SDK's own functions, unchanged. The benchmark's counting build
//! (feature `count-hostcalls`, `make bench-hostcalls`) counts each call by
//! function, and `flush` adds the counts to Envoy counters
//! `meshware_hostcalls.<function>`: host calls per request per configuration,
//! the profile the per-call costs of the probe module are multiplied by.

/// The native build: the same calls on Envoy's dynamic-module ABI.
#[cfg(feature = "native")]
pub use crate::native::hostcalls::*;
#[cfg(not(any(feature = "count-hostcalls", feature = "native")))]
pub use proxy_wasm::hostcalls::*;
#[cfg(not(any(feature = "count-hostcalls", feature = "native")))]
pub use raw::{get_map_serialized, get_map_value_checked, send_local_reply};

/// proxy-wasm replaces a response body and adds trailers at its end.
#[cfg(not(feature = "native"))]
pub const REPLACES_RESPONSES: bool = true;

/// Host calls the SDK only offers in a costlier shape.
#[cfg(not(feature = "native"))]
mod raw {
    use proxy_wasm::types::{MapType, Status};

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
        fn proxy_get_header_map_value(
            map_type: MapType,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> Status;
        fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> Status;
    }

    /// One header's value, or the host's status when the map cannot be
    /// read now (request headers Envoy already passed on: `BadArgument`),
    /// where the SDK's `get_map_value_bytes` panics.
    pub fn get_map_value_checked(map_type: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `get_map_serialized`: the host hands over a buffer
        // of `size` bytes from this module's allocator.
        match unsafe {
            proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size)
        } {
            Status::Ok if data.is_null() => Ok(Some(Vec::new())),
            Status::Ok => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
            Status::NotFound => Ok(None),
            status => Err(status),
        }
    }

    /// A local reply: `grpc_status` (>= 0) makes Envoy answer a gRPC
    /// request with that status, the body becoming `grpc-message` and the
    /// headers metadata; -1 leaves it an HTTP reply. Unlike the SDK's
    /// `send_http_response` it returns the host's status, never panics.
    pub fn send_local_reply(
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        grpc_status: i32,
    ) -> Result<(), Status> {
        let map = serialize_map(headers);
        // SAFETY: every pointer and size describes a live buffer the host
        // only reads during the call.
        match unsafe {
            proxy_send_local_response(
                status,
                std::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                map.as_ptr(),
                map.len(),
                grpc_status,
            )
        } {
            Status::Ok => Ok(()),
            status => Err(status),
        }
    }

    /// The proxy-wasm header map encoding: the pair count, each name's and
    /// value's length (u32 little-endian), then each name and value with a
    /// terminating NUL.
    fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
        let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
        let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&len32(pairs.len()));
        for (k, v) in pairs {
            out.extend_from_slice(&len32(k.len()));
            out.extend_from_slice(&len32(v.len()));
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// A header map as the host serializes it, in one buffer
    /// (`Headers::from_serialized` reads it). The SDK's `get_map_bytes`
    /// copies every name and value into its own `String`/`Vec` (two
    /// allocations per header) and panics on a status it does not expect.
    pub fn get_map_serialized(map_type: MapType) -> Result<Vec<u8>, Status> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer and a size; the pointer comes from
        // the SDK's `proxy_on_memory_allocate`, a boxed `[u8]` of exactly
        // `size` bytes from this module's allocator, now ours to own.
        match unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) } {
            Status::Ok if data.is_null() => Ok(Vec::new()),
            Status::Ok => Ok(unsafe { Vec::from_raw_parts(data, size, size) }),
            status => Err(status),
        }
    }
}

/// Publishes the calls counted since the last flush (counting build only).
#[cfg(not(feature = "count-hostcalls"))]
pub fn flush() {}

/// Runs `f`; the counting build also adds its wall time to
/// `meshware_stage_ns.<concern>.<phase>`.
#[cfg(not(feature = "count-hostcalls"))]
#[inline(always)]
pub fn timed<R>(_concern: &'static str, _phase: &'static str, f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(feature = "count-hostcalls")]
pub use counting::*;

#[cfg(feature = "count-hostcalls")]
mod counting {
    /// The SDK's host calls and ours, counted alike.
    mod host {
        pub use super::super::raw::{get_map_serialized, get_map_value_checked, send_local_reply};
        pub use proxy_wasm::hostcalls::*;
    }
    use proxy_wasm::types::{BufferType, Bytes, LogLevel, MapType, MetricType, Status};
    use std::cell::RefCell;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, SystemTime};

    macro_rules! counted {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            /// The counted functions, in counter order.
            pub const NAMES: &[&str] = &[$(stringify!($name)),*];

            #[allow(non_camel_case_types)]
            enum Kind { $($name),* }

            $(pub fn $name($($arg: $ty),*) -> $ret {
                bump(Kind::$name as usize);
                host::$name($($arg),*)
            })*
        };
    }

    counted! {
        log(level: LogLevel, message: &str) -> Result<(), Status>;
        get_log_level() -> Result<LogLevel, Status>;
        get_current_time() -> Result<SystemTime, Status>;
        set_tick_period(period: Duration) -> Result<(), Status>;
        get_buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Result<Option<Bytes>, Status>;
        get_map_bytes(map_type: MapType) -> Result<Vec<(String, Bytes)>, Status>;
        get_map_serialized(map_type: MapType) -> Result<Vec<u8>, Status>;
        get_map_value_checked(map_type: MapType, key: &str) -> Result<Option<Vec<u8>>, Status>;
        get_map_value_bytes(map_type: MapType, key: &str) -> Result<Option<Bytes>, Status>;
        set_buffer(buffer_type: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Status>;
        remove_map_value(map_type: MapType, key: &str) -> Result<(), Status>;
        set_map_value(map_type: MapType, key: &str, value: Option<&str>) -> Result<(), Status>;
        add_map_value(map_type: MapType, key: &str, value: &str) -> Result<(), Status>;
        get_property(path: Vec<&str>) -> Result<Option<Bytes>, Status>;
        set_property(path: Vec<&str>, value: Option<&[u8]>) -> Result<(), Status>;
        get_shared_data(key: &str) -> Result<(Option<Bytes>, Option<u32>), Status>;
        set_shared_data(key: &str, value: Option<&[u8]>, cas: Option<u32>) -> Result<(), Status>;
        resume_http_request() -> Result<(), Status>;
        send_http_response(status_code: u32, headers: Vec<(&str, &str)>, body: Option<&[u8]>) -> Result<(), Status>;
        send_local_reply(status: u32, headers: &[(&str, &str)], body: &[u8], grpc_status: i32) -> Result<(), Status>;
        dispatch_http_call(upstream: &str, headers: Vec<(&str, &str)>, body: Option<&[u8]>, trailers: Vec<(&str, &str)>, timeout: Duration) -> Result<u32, Status>;
        dispatch_grpc_call(upstream_name: &str, service_name: &str, method_name: &str, initial_metadata: Vec<(&str, &[u8])>, message: Option<&[u8]>, timeout: Duration) -> Result<u32, Status>;
        open_grpc_stream(cluster_name: &str, service_name: &str, method_name: &str, initial_metadata: Vec<(&str, &[u8])>) -> Result<u32, Status>;
        send_grpc_stream_message(token: u32, message: Option<&[u8]>, end_stream: bool) -> Result<(), Status>;
        cancel_grpc_stream(token: u32) -> Result<(), Status>;
        set_effective_context(context_id: u32) -> Result<(), Status>;
        call_foreign_function(function_name: &str, arguments: Option<&[u8]>) -> Result<Option<Bytes>, Status>;
        define_metric(metric_type: MetricType, name: &str) -> Result<u32, Status>;
        record_metric(metric_id: u32, value: u64) -> Result<(), Status>;
        increment_metric(metric_id: u32, offset: i64) -> Result<(), Status>;
    }

    /// Counters for the allocation figures of `alloc_count`.
    const ALLOCATION_COUNTERS: [&str; 2] = ["calls", "bytes"];

    struct Counts {
        calls: Vec<u64>,
        /// Counter ids by function, then the allocation counters; defined
        /// on the first flush.
        ids: Option<Vec<Option<u32>>>,
        /// Wall time and allocations by concern and phase since the last
        /// flush.
        stages: Vec<Stage>,
    }

    struct Stage {
        concern: &'static str,
        phase: &'static str,
        ns: u64,
        allocations: u64,
        /// Counter ids (time, allocations), defined when the pair first
        /// appears.
        ids: Option<(Option<u32>, Option<u32>)>,
    }

    thread_local! {
        static COUNTS: RefCell<Counts> = RefCell::new(Counts {
            calls: vec![0; NAMES.len()],
            ids: None,
            stages: Vec::new(),
        });
    }

    /// The host's clock in ns, not counted. Envoy reads its real-time clock
    /// for each call, so the resolution is the system's; a reading costs
    /// one host call, which the `clock.empty` interval measures (one per
    /// flush) so the reader can subtract it from each interval.
    fn now_ns() -> u64 {
        host::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn timed<R>(concern: &'static str, phase: &'static str, f: impl FnOnce() -> R) -> R {
        let allocated = || crate::alloc_count::CALLS.load(Ordering::Relaxed);
        let (start, start_allocations) = (now_ns(), allocated());
        let out = f();
        let ns = now_ns().saturating_sub(start);
        let allocations = allocated().saturating_sub(start_allocations);
        COUNTS.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                match c
                    .stages
                    .iter_mut()
                    .find(|s| s.concern == concern && s.phase == phase)
                {
                    Some(s) => {
                        s.ns += ns;
                        s.allocations += allocations;
                    }
                    None => c.stages.push(Stage {
                        concern,
                        phase,
                        ns,
                        allocations,
                        ids: None,
                    }),
                }
            }
        });
        out
    }

    fn bump(kind: usize) {
        COUNTS.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(n) = c.calls.get_mut(kind) {
                    *n += 1;
                }
            }
        });
    }

    fn define(name: String) -> Option<u32> {
        host::define_metric(MetricType::Counter, &name).ok()
    }

    fn add(id: Option<u32>, n: u64) {
        if let (Some(id), true) = (id, n > 0) {
            let _ = host::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Adds the calls and allocations counted since the last flush to Envoy
    /// counters. Its own host calls are not counted, and after the first
    /// flush it allocates nothing.
    pub fn flush() {
        COUNTS.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return;
            };
            let Counts { calls, ids, .. } = &mut *c;
            let ids = ids.get_or_insert_with(|| {
                NAMES
                    .iter()
                    .map(|name| define(format!("meshware_hostcalls.{name}")))
                    .chain(
                        ALLOCATION_COUNTERS
                            .iter()
                            .map(|name| define(format!("meshware_allocations.{name}"))),
                    )
                    .collect()
            });
            for (n, id) in calls.iter_mut().zip(ids.iter()) {
                add(*id, std::mem::take(n));
            }
            let (allocations, bytes) = crate::alloc_count::take();
            let mut rest = ids.iter().skip(NAMES.len());
            add(rest.next().copied().flatten(), allocations);
            add(rest.next().copied().flatten(), bytes);
        });
        // Outside the borrow above: `timed` records into the same cell.
        timed("clock", "empty", || ());
        COUNTS.with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return;
            };
            for s in &mut c.stages {
                let (concern, phase) = (s.concern, s.phase);
                let (ns_id, allocations_id) = *s.ids.get_or_insert_with(|| {
                    (
                        define(format!("meshware_stage_ns.{concern}.{phase}")),
                        define(format!("meshware_stage_allocs.{concern}.{phase}")),
                    )
                });
                add(ns_id, std::mem::take(&mut s.ns));
                add(allocations_id, std::mem::take(&mut s.allocations));
            }
        });
    }
}
