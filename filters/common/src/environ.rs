//! `getenv` for the wasm modules, read straight from WASI's `environ_get`
//! (which Envoy fills from `vm_config.environment_variables`), and a
//! `strdup` that never allocates.
//!
//! Why our own: wasi-libc's `getenv` builds its `environ` array with
//! `malloc`, and its `getcwd` would copy with `strdup` if std ever passed
//! it no buffer. Those two were all that kept dlmalloc, about 9 KB, in
//! every module (`heap`): std's panic path asks for `RUST_BACKTRACE` and
//! the working directory, and `secret::vm_env` for the profile's variables.
//! Defined here, the linker takes these and leaves libc's out (`getcwd`
//! itself cannot be replaced: its object defines other symbols libc needs);
//! `std::env::var` works as before.
//!
//! The environment is read once, on first use, and kept for the VM's life:
//! Envoy gives a VM its environment when it creates it.

#[cfg(target_os = "wasi")]
use std::cell::Cell;
#[cfg(target_os = "wasi")]
use std::ffi::{c_char, CStr};

#[cfg(target_os = "wasi")]
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn environ_sizes_get(count: *mut usize, bytes: *mut usize) -> u16;
    fn environ_get(entries: *mut *mut u8, text: *mut u8) -> u16;
}

/// `NAME=value\0` entries, one after the other; `None` until first read.
#[cfg(target_os = "wasi")]
struct Environ(Cell<Option<&'static [u8]>>);

// SAFETY: no threads can share it: wasm32 without atomics runs one thread.
#[cfg(all(target_os = "wasi", not(target_feature = "atomics")))]
unsafe impl Sync for Environ {}

#[cfg(target_os = "wasi")]
static ENVIRON: Environ = Environ(Cell::new(None));

/// The VM's environment as WASI gives it (empty if it gives none).
#[cfg(target_os = "wasi")]
fn read() -> Vec<u8> {
    let (mut count, mut bytes) = (0usize, 0usize);
    // SAFETY: two valid out-pointers.
    if unsafe { environ_sizes_get(&mut count, &mut bytes) } != 0 {
        return Vec::new();
    }
    let mut entries: Vec<*mut u8> = vec![std::ptr::null_mut(); count];
    let mut text = vec![0u8; bytes];
    // SAFETY: room for `count` entry pointers and `bytes` bytes of text, as
    // `environ_sizes_get` said.
    if unsafe { environ_get(entries.as_mut_ptr(), text.as_mut_ptr()) } != 0 {
        return Vec::new();
    }
    text
}

/// The value of `name` in `environ` (`NAME=value\0` entries), as the
/// offset of its first byte.
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
pub(crate) fn value_at(environ: &[u8], name: &[u8]) -> Option<usize> {
    let mut start = 0;
    for entry in environ.split(|&b| b == 0) {
        if let Some(rest) = entry.strip_prefix(name) {
            if rest.first() == Some(&b'=') {
                return Some(start + name.len() + 1);
            }
        }
        start += entry.len() + 1;
    }
    None
}

/// C's `getenv`: a pointer into the kept environment, NUL-terminated, or
/// null when `name` is not set.
///
/// # Safety
/// `name` is a NUL-terminated string (std passes one).
#[cfg(target_os = "wasi")]
#[no_mangle]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    let environ = match ENVIRON.0.get() {
        Some(kept) => kept,
        None => {
            let kept: &'static [u8] = Vec::leak(read());
            ENVIRON.0.set(Some(kept));
            kept
        }
    };
    // SAFETY: the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    match value_at(environ, name).and_then(|at| environ.get(at..)) {
        // Every entry ends with NUL (WASI writes them so), so the value does.
        Some(value) if !name.is_empty() && !name.contains(&b'=') => {
            value.as_ptr().cast_mut().cast()
        }
        _ => std::ptr::null_mut(),
    }
}

/// C's `strdup`, which wasi-libc's `getcwd` calls only when not given a
/// buffer (std always gives one): it answers "no memory", so `malloc`
/// stays out of the module.
///
/// # Safety
/// None needed: nothing is read.
#[cfg(target_os = "wasi")]
#[no_mangle]
pub unsafe extern "C" fn strdup(_text: *const c_char) -> *mut c_char {
    std::ptr::null_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_value_is_found_by_its_whole_name_only() {
        let env = b"A=1\0AB=two\0EMPTY=\0B=x=y\0";
        let value = |name: &str| {
            value_at(env, name.as_bytes()).map(|at| {
                let rest = &env[at..];
                std::str::from_utf8(&rest[..rest.iter().position(|&b| b == 0).unwrap()]).unwrap()
            })
        };
        assert_eq!(value("A"), Some("1"));
        assert_eq!(value("AB"), Some("two"));
        assert_eq!(value("EMPTY"), Some(""));
        assert_eq!(value("B"), Some("x=y"));
        assert_eq!(value("X"), None);
        assert_eq!(value("1"), None, "a value is not a name");
        assert_eq!(value_at(b"", b"A"), None);
    }
}
