//! The suite module's heap allocator: blocks of up to 1 KiB come from one free
//! list per size class, carved from 64 KiB chunks; everything else goes to
//! the system allocator (wasi-libc's dlmalloc).
//!
//! Why: a request allocates about 170 small blocks (header texts, keys,
//! decisions) and frees them all at its end. dlmalloc's general path (bins,
//! splitting, coalescing) was about a sixth of the suite's own time in the
//! VM (`make profile-vm`); popping and pushing a free list is a few
//! instructions. Measured in the suite: the VM's code runs 11% fewer
//! instructions per request (callgrind) and takes about a quarter less
//! time (perf). The methods stay out of line: inlined at every allocation
//! site they cost the suite twice the bytes. The price: memory freed into a size class stays in that
//! class (bounded by the peak of that size), and a chunk's last few hundred
//! bytes may go unused. Wasm memory never shrinks anyway.
//!
//! Single-threaded: the modules' VMs have one thread (wasm32 without the
//! atomics feature), so the lists are plain cells.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Block sizes; every one a multiple of `BLOCK_ALIGN`, so every block is
/// aligned to it.
const CLASS_SIZES: [usize; 12] = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024];
const CLASSES: usize = CLASS_SIZES.len();
const BLOCK_ALIGN: usize = 16;
const CHUNK_BYTES: usize = 64 * 1024;

/// The size class of a request, or `None` for the system allocator. The
/// same answer at allocation and at deallocation (Rust passes the same
/// layout) decides where a block goes back to.
fn class_of(layout: &Layout) -> Option<usize> {
    if layout.align() > BLOCK_ALIGN {
        return None;
    }
    let size = layout.size();
    if size <= 64 {
        return Some(size.saturating_sub(1) / 16);
    }
    CLASS_SIZES.iter().position(|&c| size <= c)
}

pub struct SmallAlloc {
    /// Head of each class's free list; a free block's first word is the
    /// next free block (or null).
    free: [Cell<*mut u8>; CLASSES],
    /// The unused rest of the current chunk, as addresses.
    next: Cell<usize>,
    end: Cell<usize>,
}

impl SmallAlloc {
    pub const fn new() -> SmallAlloc {
        SmallAlloc {
            free: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// A fresh block of `size` bytes from the current chunk, or a new one.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    unsafe fn carve(&self, size: usize) -> *mut u8 {
        if self.end.get().saturating_sub(self.next.get()) < size {
            // SAFETY: a non-zero size and a valid power-of-two alignment.
            let chunk_layout =
                unsafe { Layout::from_size_align_unchecked(CHUNK_BYTES, BLOCK_ALIGN) };
            // SAFETY: as above.
            let chunk = unsafe { System.alloc(chunk_layout) };
            if chunk.is_null() {
                return chunk;
            }
            // A chunk ending exactly at the top of a full 4 GiB wasm memory
            // would wrap: give it back and report no memory.
            let Some(end) = (chunk as usize).checked_add(CHUNK_BYTES) else {
                // SAFETY: just allocated with this layout.
                unsafe { System.dealloc(chunk, chunk_layout) };
                return ptr::null_mut();
            };
            self.next.set(chunk as usize);
            self.end.set(end);
        }
        let block = self.next.get();
        self.next.set(block + size);
        block as *mut u8
    }
}

impl Default for SmallAlloc {
    fn default() -> Self {
        SmallAlloc::new()
    }
}

// SAFETY: the modules run on one thread (wasm32 without atomics): no two
// calls ever overlap. Gated so that no multi-threaded build can share it.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl Sync for SmallAlloc {}

// SAFETY: a small block is handed out at most once until it is freed (free
// lists and the chunk's unused rest are disjoint), is at least the size
// asked and aligned to 16 (chunks are, and every class is a multiple of
// 16); every other request is the system allocator's, and `class_of` sends
// each block back to where it came from.
unsafe impl GlobalAlloc for SmallAlloc {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        let (Some(head), Some(&size)) = (self.free.get(class), CLASS_SIZES.get(class)) else {
            return ptr::null_mut();
        };
        let block = head.get();
        if block.is_null() {
            // SAFETY: as above.
            return unsafe { self.carve(size) };
        }
        // SAFETY: a free block holds the next free block in its first word
        // (written by `dealloc`; blocks are 16-aligned and at least 16 bytes).
        head.set(unsafe { block.cast::<*mut u8>().read() });
        block
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(head) = class_of(&layout).and_then(|c| self.free.get(c)) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: the block is ours, no longer in use, and large and
        // aligned enough for a pointer.
        unsafe { block.cast::<*mut u8>().write(head.get()) };
        head.set(block);
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(&layout).is_none() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`; a reused block is dirty, so it is cleared.
        unsafe {
            let block = self.alloc(layout);
            if !block.is_null() {
                block.write_bytes(0, layout.size());
            }
            block
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract makes this a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(&layout), class_of(&new_layout)) {
            // Still fits its block.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: the caller's contract, passed on.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a fresh block of the new layout, the old contents
                // copied (the smaller of the two sizes), the old block freed
                // where it came from.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn size_classes_cover_each_size_with_the_smallest_class_that_fits() {
        for size in 0..=1024 {
            let class = class_of(&layout(size, 1)).unwrap();
            let fits = CLASS_SIZES[class];
            assert!(size <= fits, "{size} in {fits}");
            if class > 0 {
                assert!(size > CLASS_SIZES[class - 1], "{size} fits a smaller class");
            }
        }
        assert_eq!(class_of(&layout(1025, 1)), None);
        assert_eq!(
            class_of(&layout(16, 32)),
            None,
            "over-aligned goes to System"
        );
        assert!(CLASS_SIZES.iter().all(|c| c.is_multiple_of(BLOCK_ALIGN)));
    }

    #[test]
    fn freed_blocks_are_reused_in_last_in_first_out_order_and_never_handed_out_twice() {
        let a = SmallAlloc::new();
        let l = layout(40, 8);
        unsafe {
            let blocks: Vec<*mut u8> = (0..100).map(|_| a.alloc(l)).collect();
            let mut sorted = blocks.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 100, "distinct blocks");
            for w in sorted.windows(2) {
                assert!(w[1] as usize - w[0] as usize >= 48, "blocks overlap");
            }
            assert!(blocks.iter().all(|b| (*b as usize).is_multiple_of(16)));
            a.dealloc(blocks[7], l);
            a.dealloc(blocks[3], l);
            assert_eq!(a.alloc(l), blocks[3]);
            assert_eq!(a.alloc(l), blocks[7]);
            for b in blocks {
                a.dealloc(b, l);
            }
        }
    }

    #[test]
    fn blocks_keep_their_contents_and_many_chunks_stay_disjoint() {
        let a = SmallAlloc::new();
        // More than one chunk's worth of several classes, each filled with
        // its own pattern, then checked: no block overwrote another.
        let sizes = [1usize, 17, 64, 100, 500, 1024];
        let mut blocks = Vec::new();
        unsafe {
            for i in 0..3000usize {
                let size = sizes[i % sizes.len()];
                let b = a.alloc(layout(size, 1));
                assert!(!b.is_null());
                b.write_bytes((i % 251) as u8, size);
                blocks.push((b, size, (i % 251) as u8));
            }
            for (b, size, fill) in &blocks {
                let s = std::slice::from_raw_parts(*b, *size);
                assert!(s.iter().all(|x| x == fill));
            }
            for (b, size, _) in blocks {
                a.dealloc(b, layout(size, 1));
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_to_and_from_the_system_allocator() {
        let a = SmallAlloc::new();
        unsafe {
            let mut b = a.alloc(layout(10, 1));
            for i in 0..10 {
                b.add(i).write(i as u8);
            }
            let mut size = 10;
            // Grow through every class and past 1 KiB, then shrink back.
            for new_size in [12, 16, 17, 100, 1024, 1025, 5000, 700, 20, 3] {
                let same_class = class_of(&layout(size, 1)) == class_of(&layout(new_size, 1))
                    && class_of(&layout(size, 1)).is_some();
                let moved = a.realloc(b, layout(size, 1), new_size);
                assert!(!moved.is_null());
                if same_class {
                    assert_eq!(moved, b, "{size} -> {new_size} stays in its block");
                }
                let kept = size.min(new_size).min(10);
                for i in 0..kept {
                    assert_eq!(moved.add(i).read(), i as u8, "{size} -> {new_size}");
                }
                b = moved;
                size = new_size;
            }
            a.dealloc(b, layout(size, 1));
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let a = SmallAlloc::new();
        let l = layout(64, 16);
        unsafe {
            let b = a.alloc(l);
            b.write_bytes(0xAB, 64);
            a.dealloc(b, l);
            let z = a.alloc_zeroed(l);
            assert_eq!(z, b);
            assert!(std::slice::from_raw_parts(z, 64).iter().all(|x| *x == 0));
            a.dealloc(z, l);
        }
    }
}
