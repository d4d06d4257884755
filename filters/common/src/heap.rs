//! Every wasm module's heap allocator: one free list per size class, taken
//! straight from wasm memory (`memory.grow`), so no module links wasi-libc's
//! dlmalloc (with `getenv` below, nothing else in libc asks for it).
//!
//! - Blocks of up to 1 KiB: twelve classes, carved one after the other
//!   from 64 KiB chunks.
//! - Larger blocks, and any alignment over 16: a power of two from 2 KiB up.
//!   Up to 32 KiB a fresh 64 KiB page is split into blocks of the class;
//!   from 64 KiB a block is whole pages. Every such block is aligned to its
//!   size (at most a page), which covers any alignment up to 64 KiB.
//!
//! Why: a request allocates many small blocks (about 170 in the suite:
//! header texts, keys, decisions) and frees them all at its end. dlmalloc's
//! general path (bins, splitting, coalescing) was about a sixth of the
//! suite's own time in the VM (`make profile-vm`); popping and pushing a
//! free list is a few instructions. And dlmalloc is about 9 KB of every
//! module (docs/PERFORMANCE.md, "Module sizes"). The methods stay out of
//! line: inlined at every allocation site they cost the suite twice the
//! bytes.
//!
//! The price: memory freed into a class stays in that class (bounded by the
//! peak of that size), a chunk's last few hundred bytes may go unused, and
//! a large block may be up to twice what was asked. Wasm memory never
//! shrinks anyway.
//!
//! Single-threaded: the modules' VMs have one thread (wasm32 without the
//! atomics feature), so the lists are plain cells.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;

/// Small block sizes; every one a multiple of `BLOCK_ALIGN`, so every block
/// is aligned to it.
const SMALL_SIZES: [usize; 12] = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024];
const SMALL: usize = SMALL_SIZES.len();
const BLOCK_ALIGN: usize = 16;
/// The first large class is 2^11 bytes, the last 2^31 (wasm32's memory is
/// at most 4 GiB, and sizes are below 2^31 by `Layout`'s rules).
const LARGE_SHIFT: u32 = 11;
const LARGE: usize = 21;
const CLASSES: usize = SMALL + LARGE;
const PAGE: usize = 64 * 1024;

/// The class of a request, or `None` when no class can hold it. The same
/// answer at allocation and at deallocation (Rust passes the same layout)
/// decides where a block goes back to. Inlined: it runs on every
/// allocation and free, and nearly all are small.
#[inline(always)]
fn class_of(layout: &Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() <= BLOCK_ALIGN {
        if size <= 64 {
            return Some(size.saturating_sub(1) / 16);
        }
        if size <= 1024 {
            return SMALL_SIZES.iter().position(|&c| size <= c);
        }
    }
    large_class_of(layout)
}

/// The power-of-two class of a large or over-aligned request.
#[inline(never)]
fn large_class_of(layout: &Layout) -> Option<usize> {
    if layout.align() > PAGE {
        return None;
    }
    let bits = layout
        .size()
        .max(layout.align())
        .max(1 << LARGE_SHIFT)
        .checked_next_power_of_two()?
        .trailing_zeros();
    let class = SMALL + (bits - LARGE_SHIFT) as usize;
    (class < CLASSES).then_some(class)
}

/// The size of a block of `class`.
fn block_size(class: usize) -> usize {
    match SMALL_SIZES.get(class) {
        Some(&size) => size,
        None => 1 << (LARGE_SHIFT as usize + (class - SMALL)),
    }
}

/// `pages` fresh pages of wasm memory, or null.
#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> *mut u8 {
    let first = core::arch::wasm32::memory_grow(0, pages);
    if first == usize::MAX {
        return ptr::null_mut();
    }
    // A page index times the page size: at most 4 GiB - 64 KiB.
    first.wrapping_mul(PAGE) as *mut u8
}

/// Native builds (the unit tests) take page-aligned memory from the system
/// instead, never given back.
#[cfg(not(target_arch = "wasm32"))]
fn grow(pages: usize) -> *mut u8 {
    match Layout::from_size_align(pages.saturating_mul(PAGE), PAGE) {
        // SAFETY: a non-zero size (pages >= 1) and a valid alignment.
        Ok(layout) if pages > 0 => unsafe { std::alloc::System.alloc(layout) },
        _ => ptr::null_mut(),
    }
}

pub struct Heap {
    /// Head of each class's free list; a free block's first word is the
    /// next free block (or null).
    free: [Cell<*mut u8>; CLASSES],
    /// The unused rest of the current small-block chunk, as addresses.
    next: Cell<usize>,
    end: Cell<usize>,
}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            free: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// A fresh block of a class with an empty free list.
    fn fresh(&self, class: usize) -> *mut u8 {
        let size = block_size(class);
        if class < SMALL {
            if self.end.get().saturating_sub(self.next.get()) < size {
                let chunk = grow(1);
                if chunk.is_null() {
                    return chunk;
                }
                self.next.set(chunk as usize);
                // The last page ends at 4 GiB at most, which wraps to 0 in
                // wasm32: then the chunk is taken as empty, never overrun.
                self.end.set((chunk as usize).wrapping_add(PAGE));
            }
            let block = self.next.get();
            self.next.set(block + size);
            return block as *mut u8;
        }
        if size >= PAGE {
            return grow(size / PAGE);
        }
        // A page split into blocks of this class: the first is returned,
        // the others go on the (empty) free list.
        let page = grow(1);
        if page.is_null() {
            return page;
        }
        let Some(head) = self.free.get(class) else {
            return ptr::null_mut();
        };
        let mut offset = PAGE;
        while offset > size {
            offset -= size;
            // SAFETY: `page + offset` is inside the fresh page, a block's
            // start, aligned to the class size (>= a pointer's alignment).
            unsafe {
                let block = page.add(offset);
                block.cast::<*mut u8>().write(head.get());
                head.set(block);
            }
        }
        page
    }
}

impl Default for Heap {
    fn default() -> Self {
        Heap::new()
    }
}

// SAFETY: no threads can share it: wasm32 without atomics runs one thread.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl Sync for Heap {}

// SAFETY: a block is handed out only once until freed (a free list holds
// each freed block once; fresh blocks never overlap: chunks, pages and
// splits are disjoint), and is at least as large and as aligned as its
// layout asks (`class_of`, `block_size`).
unsafe impl GlobalAlloc for Heap {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            return ptr::null_mut();
        };
        let Some(head) = self.free.get(class) else {
            return ptr::null_mut();
        };
        let block = head.get();
        if block.is_null() {
            return self.fresh(class);
        }
        // SAFETY: a free block holds the next free block in its first word.
        head.set(unsafe { block.cast::<*mut u8>().read() });
        block
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if let Some(head) = class_of(&layout).and_then(|c| self.free.get(c)) {
            // SAFETY: the block is ours, of this class, and no longer used.
            unsafe { block.cast::<*mut u8>().write(head.get()) };
            head.set(block);
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on; a reused block is zeroed.
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
        if class_of(&layout) == class_of(&new_layout) {
            // Still fits its block.
            return block;
        }
        // SAFETY: a fresh block of the new layout, the old contents copied
        // (the smaller of the two sizes), the old block freed to its class.
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// The alignment every block of `class` has.
    fn aligned_to(class: usize) -> usize {
        if class < SMALL {
            BLOCK_ALIGN
        } else {
            block_size(class).min(PAGE)
        }
    }

    #[test]
    fn each_request_gets_the_smallest_class_that_fits_it() {
        let cases = (0..=70_000)
            .flat_map(|size| [1, 8, 16, 32, 4096].map(|align| (size, align)))
            .chain([(1 << 20, 1), ((1 << 20) + 1, 8), ((1 << 31) - 1, 1)]);
        for (size, align) in cases {
            let class = class_of(&layout(size, align)).unwrap();
            let fits = |c: usize| size <= block_size(c) && align <= aligned_to(c);
            assert!(fits(class), "{size}/{align} in class {class}");
            assert!(
                class == 0 || !fits(class - 1),
                "{size}/{align} fits class {}",
                class - 1
            );
        }
        assert_eq!(block_size(SMALL), 2048);
        assert_eq!(block_size(CLASSES - 1), 1 << 31);
        assert_eq!(
            class_of(&layout(16, 1 << 17)),
            None,
            "alignment over a page"
        );
        assert!(SMALL_SIZES.iter().all(|c| c.is_multiple_of(BLOCK_ALIGN)));
    }

    #[test]
    fn freed_blocks_are_reused_in_last_in_first_out_order_and_never_handed_out_twice() {
        let a = Heap::new();
        for l in [layout(40, 8), layout(3000, 8), layout(100_000, 8)] {
            unsafe {
                let blocks: Vec<*mut u8> = (0..100).map(|_| a.alloc(l)).collect();
                let mut sorted = blocks.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 100, "distinct blocks");
                let size = block_size(class_of(&l).unwrap());
                for w in sorted.windows(2) {
                    assert!(w[1] as usize - w[0] as usize >= size, "blocks overlap");
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
    }

    #[test]
    fn blocks_keep_their_contents_across_chunks_pages_and_classes() {
        let a = Heap::new();
        // More than one chunk's or page's worth of many classes, each filled
        // with its own pattern, then checked: no block overwrote another.
        let sizes = [
            1usize, 17, 64, 100, 500, 1024, 1025, 2048, 5000, 40_000, 65_536, 70_000,
        ];
        let mut blocks = Vec::new();
        unsafe {
            for i in 0..1200usize {
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
    fn over_aligned_requests_are_aligned() {
        let a = Heap::new();
        unsafe {
            for align in [32, 64, 256, 4096, 65_536] {
                for size in [1, 100, 5000, 70_000] {
                    let l = layout(size, align);
                    let blocks: Vec<*mut u8> = (0..5).map(|_| a.alloc(l)).collect();
                    for b in &blocks {
                        assert!(!b.is_null());
                        assert!((*b as usize).is_multiple_of(align), "{size}/{align}");
                    }
                    for b in blocks {
                        a.dealloc(b, l);
                    }
                }
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_across_every_kind_of_class() {
        let a = Heap::new();
        unsafe {
            let mut b = a.alloc(layout(10, 1));
            for i in 0..10 {
                b.add(i).write(i as u8);
            }
            let mut size = 10;
            // Grow through small, split and whole-page classes, then shrink.
            for new_size in [
                12, 16, 17, 100, 1024, 1025, 2048, 5000, 70_000, 300_000, 700, 20, 3,
            ] {
                let same_class = class_of(&layout(size, 1)) == class_of(&layout(new_size, 1));
                let moved = a.realloc(b, layout(size, 1), new_size);
                assert!(!moved.is_null());
                if same_class {
                    assert_eq!(moved, b, "{size} -> {new_size} stays in its block");
                } else {
                    assert_ne!(moved, b, "{size} -> {new_size} moves");
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
        let a = Heap::new();
        for l in [layout(64, 16), layout(4096, 8)] {
            unsafe {
                let b = a.alloc(l);
                b.write_bytes(0xAB, l.size());
                a.dealloc(b, l);
                let z = a.alloc_zeroed(l);
                assert_eq!(z, b);
                assert!(std::slice::from_raw_parts(z, l.size())
                    .iter()
                    .all(|x| *x == 0));
                a.dealloc(z, l);
            }
        }
    }

    #[test]
    fn a_request_no_class_holds_gets_null() {
        let a = Heap::new();
        unsafe {
            assert!(a.alloc(layout(8, 1 << 17)).is_null());
        }
    }
}
