//! The binary's memory allocator: mimalloc, with transparent huge pages for large blocks only.
//!
//! mimalloc is built without transparent huge pages (THP): with them on for every page, zeroing
//! 2 MiB pages took 23 % of `ocean run` (its rows come and go each epoch), and with glibc malloc
//! allocation and free took ~30 % on 2 workers (perf). But the KG index's tables — the alias
//! trie, the interners, the adjacency rows: hundreds of MB at Wikidata5m's size — are read at
//! random, and on these (virtual) machines a miss that also misses the TLB costs ≈ 600 ns
//! against ≈ 390 ns on huge pages (a pointer chase over 1 GB). So blocks of at least
//! [`HUGE_BLOCK`] are aligned to 2 MiB and advised `MADV_HUGEPAGE` (the kernel's THP mode
//! `madvise`, the common default, honours it; `never` ignores it); everything smaller is
//! mimalloc's as before. `OCEAN_HUGE_PAGES=0` turns the advice off (for comparisons).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// Blocks this large or larger get huge pages: only the big tables, whose misses matter; the
/// dataflow's batches and rows stay below it.
const HUGE_BLOCK: usize = 32 << 20;
/// A transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Whether large blocks are advised huge pages (see the module docs).
static HUGE_PAGES: AtomicBool = AtomicBool::new(true);

/// mimalloc, with large blocks on huge pages (see the module docs).
#[derive(Debug)]
pub struct Allocator;

impl Allocator {
    /// A large block, 2 MiB-aligned, advised huge pages before anything touches it: a new one
    /// (`zeroed` or not), or `old` (a block of this allocator, or null) reallocated to the
    /// layout's size, its contents kept up to the smaller size.
    #[allow(unsafe_code)]
    fn huge(layout: Layout, zeroed: bool, old: *mut u8) -> *mut u8 {
        let align = layout.align().max(HUGE_PAGE);
        // SAFETY: mimalloc's aligned (re)allocation takes any size and power-of-two alignment
        // and returns null on failure (leaving `old` as it was); `old` is live and its own, as
        // the caller's contract says; `mi_free` (MiMalloc::dealloc) frees aligned blocks too.
        let p = unsafe {
            if !old.is_null() {
                libmimalloc_sys::mi_realloc_aligned(old.cast(), layout.size(), align)
            } else if zeroed {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), align)
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), align)
            }
        }
        .cast::<u8>();
        if !p.is_null() {
            // SAFETY: the range lies inside the block just allocated (its start is 2 MiB-aligned,
            // its length rounded down to whole huge pages); the advice changes how the kernel
            // backs those pages, never their contents. A failure (THP not compiled in) is
            // harmless and ignored.
            unsafe { libc::madvise(p.cast(), layout.size() & !(HUGE_PAGE - 1), libc::MADV_HUGEPAGE) };
        }
        p
    }

    fn is_huge(size: usize) -> bool {
        size >= HUGE_BLOCK && HUGE_PAGES.load(Ordering::Relaxed)
    }
}

// SAFETY: every block comes from mimalloc (directly or through its aligned allocation, with at
// least the layout's alignment) and goes back to it through `mi_free`, which takes both kinds.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::is_huge(layout.size()) {
            return Self::huge(layout, false, std::ptr::null_mut());
        }
        // SAFETY: the caller's contract (non-zero size) is passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::is_huge(layout.size()) {
            return Self::huge(layout, true, std::ptr::null_mut());
        }
        // SAFETY: as in `alloc`.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::is_huge(new_size) {
            // SAFETY: the caller's contract is passed on; mimalloc reallocates blocks of either
            // kind (a shrunk huge block keeps its alignment, more than the layout's).
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size`, rounded to `layout.align()`, fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        Self::huge(new_layout, false, ptr)
    }
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3 alike; libmimalloc-sys names
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Settings read once at start-up, before other threads exist.
///
/// mimalloc keeps freed pages for reuse instead of returning them to the OS after 1 s (its
/// default purge delay): the dataflow frees each epoch's rows and allocates the next epoch's
/// at the same sizes, and returning then faulting them back in cost ≈ 10 % of `ocean run` on
/// 2 workers (200k CoTs, alternating runs; peak RSS ≈ 0.1 GB higher). Memory stays bounded by
/// the epoch limits, as before. `MIMALLOC_PURGE_DELAY` in the environment (read by mimalloc at
/// load) takes precedence. `OCEAN_HUGE_PAGES=0` keeps large blocks off huge pages.
#[allow(unsafe_code)]
pub fn settings() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options; thread-safe, and nothing has started
        // other threads yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    if std::env::var("OCEAN_HUGE_PAGES").is_ok_and(|v| v == "0") {
        HUGE_PAGES.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// Fills `len` bytes at `p` with a pattern of `seed`.
    fn fill(p: *mut u8, len: usize, seed: u8) {
        // SAFETY: the tests pass blocks of at least `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8 ^ seed);
    }

    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: as in `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
        bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8 ^ seed)
    }

    #[test]
    fn large_blocks_are_aligned_to_huge_pages_and_keep_their_contents_through_realloc() {
        let a = Allocator;
        let size = HUGE_BLOCK + 12_345;
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: a non-zero size; every block is freed once, with the layout it has.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert!((p as usize).is_multiple_of(HUGE_PAGE), "a large block starts on a huge page");
            fill(p, size, 7);
            // Grows (mimalloc's aligned realloc, in place or moved), then shrinks below the
            // threshold (its plain realloc).
            let grown = a.realloc(p, layout, 2 * size);
            assert!(!grown.is_null() && (grown as usize).is_multiple_of(HUGE_PAGE));
            assert!(holds(grown, size, 7), "growing keeps the contents");
            let small = a.realloc(grown, Layout::from_size_align(2 * size, 16).unwrap(), 1 << 20);
            assert!(!small.is_null() && (small as usize).is_multiple_of(16));
            assert!(holds(small, 1 << 20, 7), "shrinking keeps the prefix");
            a.dealloc(small, Layout::from_size_align(1 << 20, 16).unwrap());

            // A small block grown into a large one.
            let small_layout = Layout::from_size_align(4096, 64).unwrap();
            let q = a.alloc(small_layout);
            fill(q, 4096, 3);
            let big = a.realloc(q, small_layout, size);
            assert!(!big.is_null() && (big as usize).is_multiple_of(HUGE_PAGE));
            assert!(holds(big, 4096, 3));
            a.dealloc(big, Layout::from_size_align(size, 64).unwrap());
        }
    }

    #[test]
    fn large_zeroed_blocks_are_zero() {
        let a = Allocator;
        let layout = Layout::from_size_align(HUGE_BLOCK, 4096).unwrap();
        // SAFETY: a non-zero size; freed once with its layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(HUGE_PAGE));
            assert!(std::slice::from_raw_parts(p, HUGE_BLOCK).iter().all(|b| *b == 0));
            a.dealloc(p, layout);
        }
        // And through a collection, as the KG index allocates.
        let v = vec![0u64; HUGE_BLOCK / 8 + 1];
        assert!(v.iter().all(|x| *x == 0));
        assert!((v.as_ptr() as usize).is_multiple_of(HUGE_PAGE));
    }
}
