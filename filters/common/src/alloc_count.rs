//! Benchmark builds only (feature `count-hostcalls`): the module's heap
//! allocations (calls to `alloc` and `realloc`, and their bytes), published
//! with the host-call counts as `meshware_allocations.{calls,bytes}`, so
//! `make bench-hostcalls` reports allocations per request too.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator the module has without counting (lib.rs).
type Inner = crate::heap::Heap;

/// Wraps the module's allocator; counts, nothing else.
pub struct Counting(Inner);

pub static CALLS: AtomicU64 = AtomicU64::new(0);
pub static BYTES: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the module's allocator, which upholds
// `GlobalAlloc`'s contract; the counters have no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(feature = "suite")]
#[global_allocator]
static GLOBAL: Counting = Counting(crate::heap::Heap::new());
#[cfg(not(feature = "suite"))]
#[global_allocator]
static GLOBAL: Counting = Counting(std::alloc::System);

/// Calls and bytes since the last `take`.
pub fn take() -> (u64, u64) {
    (
        CALLS.swap(0, Ordering::Relaxed),
        BYTES.swap(0, Ordering::Relaxed),
    )
}
