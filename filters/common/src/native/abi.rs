//! Envoy's dynamic-module ABI as this build uses it, declared by hand from
//! the ABI's C header (`source/extensions/dynamic_modules/abi/abi.h`) of
//! Envoy 1.40.0, whose ABI version string is `v0.2.0`. Only the callbacks
//! the adapter calls are declared (`callbacks!`); they are resolved at load
//! time, so an Envoy without them is refused with a message, not a crash.
//!
//! Enums are C `int`s (`u32` here); Envoy's and the module's buffers are a
//! pointer and a length (two registers on x86-64, as the header's structs).

use std::ffi::c_void;

/// The ABI version this build was written against (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";
/// The Envoy release whose ABI this is (docs/DEPLOY.md).
pub const ENVOY_VERSION: &str = "1.40.0";

/// Envoy's object behind a hook or callback (filter, filter config).
pub type EnvoyPtr = *mut c_void;

/// Bytes one side lends the other for the duration of a call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl Buffer {
    pub const EMPTY: Buffer = Buffer {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(bytes: &[u8]) -> Buffer {
        Buffer {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes Envoy lent: valid until the hook returns.
    ///
    /// # Safety
    /// `ptr` must be null or point to `len` readable bytes.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// One header, either side's.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub key: Buffer,
    pub value: Buffer,
}

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_kind {
    pub const REQUEST: u32 = 0;
    pub const REQUEST_TRAILERS: u32 = 1;
    pub const RESPONSE: u32 = 2;
    pub const RESPONSE_TRAILERS: u32 = 3;
}

/// `envoy_dynamic_module_type_http_body_type`.
pub mod body_kind {
    pub const RECEIVED_REQUEST: u32 = 0;
    pub const BUFFERED_REQUEST: u32 = 1;
    pub const RECEIVED_RESPONSE: u32 = 2;
    pub const BUFFERED_RESPONSE: u32 = 3;
}

/// `envoy_dynamic_module_type_attribute_id` (the values this build reads).
pub mod attribute {
    pub const REQUEST_PROTOCOL: u32 = 10;
    pub const RESPONSE_CODE: u32 = 15;
    pub const RESPONSE_FLAGS: u32 = 17;
    pub const RESPONSE_GRPC_STATUS: u32 = 18;
    pub const SOURCE_ADDRESS: u32 = 24;
}

/// Hook results: headers (`..._headers_status`), bodies (`..._body_status`)
/// and trailers (`..._trailers_status`).
pub mod status {
    pub const CONTINUE: u32 = 0;
    /// Headers: `StopIteration`, what proxy-wasm's `Pause` means in
    /// Envoy's wasm filter with `allow_on_headers_stop_iteration` (the
    /// bootstrap's setting): body callbacks still arrive, so a request
    /// held for its body gets it.
    pub const HEADERS_STOP: u32 = 1;
    /// Bodies: `StopIterationAndBuffer`.
    pub const BODY_STOP_AND_BUFFER: u32 = 1;
    /// Trailers: `StopIteration`.
    pub const TRAILERS_STOP: u32 = 1;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

/// `envoy_dynamic_module_type_http_callout_init_result_Success` and
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

/// Declares Envoy's callbacks this build calls: each resolved once, at
/// load time, from the process's symbols (`resolve`), and called through
/// a function of the same name. A shared library linked against them
/// directly would not even load into an Envoy that lacks one (the loader
/// refuses it with a bare "undefined symbol"); resolved here, the module
/// loads, finds what is missing and refuses with a message.
macro_rules! callbacks {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        #[allow(non_snake_case)]
        struct Table {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();

        $(
            $(#[$doc])*
            /// # Safety
            /// As Envoy's ABI requires of this callback (valid pointers).
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                match TABLE.get() {
                    // SAFETY: the caller upholds the callback's contract.
                    Some(t) => unsafe { (t.$name)($($arg),*) },
                    // Never reached: Envoy uses the module only after
                    // `resolve` found every callback. A zeroed answer
                    // (false, 0, null) is what a failed call returns.
                    // SAFETY: bools, integers and raw pointers are valid zeroed.
                    None => unsafe { std::mem::zeroed() },
                }
            }
        )*

        /// Resolves every callback; the names of those the process lacks.
        pub fn resolve() -> Vec<&'static str> {
            let mut missing = Vec::new();
            $(
                let $name = lookup(stringify!($name));
                if $name.is_null() {
                    missing.push(stringify!($name));
                }
            )*
            if missing.is_empty() {
                let _ = TABLE.set(Table {
                    // SAFETY: a symbol of Envoy's with this ABI's signature
                    // (the ABI version this build was written for).
                    $($name: unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>($name) },)*
                });
            }
            missing
        }
    };
}

callbacks! {
    fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        kind: u32,
        key: Buffer,
        out: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: EnvoyPtr,
        kind: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyPtr,
        kind: u32,
        out: *mut Header,
    ) -> bool;
    /// A null value removes the header.
    fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        kind: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyPtr,
        kind: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr,
        status: u32,
        headers: *const Header,
        headers_len: usize,
        body: Buffer,
        details: Buffer,
    );
    fn envoy_dynamic_module_callback_http_send_response_headers(
        filter: EnvoyPtr,
        headers: *const Header,
        headers_len: usize,
        end_stream: bool,
    );
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: EnvoyPtr,
        kind: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyPtr,
        kind: u32,
        out: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_size(filter: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr,
        id: u32,
        out: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyPtr,
        id: u32,
        out: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyPtr,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: EnvoyPtr,
        key: Buffer,
        out: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: EnvoyPtr,
        out: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: Buffer,
        labels: *const Buffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyPtr,
        name: Buffer,
        labels: *const Buffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyPtr,
        name: Buffer,
        labels: *const Buffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    /// With labels: a counter per label-value combination ("vec").
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: EnvoyPtr)
        -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: EnvoyPtr,
        callout_id: *mut u64,
        cluster: Buffer,
        headers: *const Header,
        headers_len: usize,
        body: Buffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: EnvoyPtr,
        callout_id: *mut u64,
        cluster: Buffer,
        headers: *const Header,
        headers_len: usize,
        body: Buffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyPtr,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: *mut c_void,
    );
    fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
}

/// A symbol of the process (RTLD_DEFAULT: Envoy's binary), or null.
fn lookup(name: &str) -> *mut c_void {
    let Ok(symbol) = std::ffi::CString::new(name) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a valid NUL-terminated name; dlsym only reads it.
    unsafe { dlsym(std::ptr::null_mut(), symbol.as_ptr()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_without_envoy_lacks_every_callback() {
        let missing = super::resolve();
        assert!(missing.contains(&"envoy_dynamic_module_callback_http_get_header"));
        assert!(missing.contains(&"envoy_dynamic_module_callback_log"));
        // Nothing resolved: a call answers zeroed instead of jumping anywhere.
        // SAFETY: the table is empty, so no Envoy function is called.
        assert!(!unsafe { super::envoy_dynamic_module_callback_log_enabled(0) });
    }
}
