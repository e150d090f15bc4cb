//! A counting global allocator for the tests that measure heap use: how
//! many allocations a call makes, and how many bytes stay live. Install it
//! in a test binary of its own:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: uds_tests::alloc::Counting = uds_tests::alloc::Counting::new();
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Forwards to the system allocator, counting allocations (and
/// reallocations) and the bytes allocated and not yet freed.
#[derive(Debug)]
pub struct Counting {
    allocs: AtomicU64,
    live: AtomicI64,
}

impl Counting {
    /// A fresh counter.
    pub const fn new() -> Self {
        Counting {
            allocs: AtomicU64::new(0),
            live: AtomicI64::new(0),
        }
    }

    /// Allocations and reallocations so far.
    pub fn allocs(&self) -> u64 {
        self.allocs.load(Ordering::Relaxed)
    }

    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> i64 {
        self.live.load(Ordering::Relaxed)
    }
}

impl Default for Counting {
    fn default() -> Self {
        Self::new()
    }
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: forwards every call to the system allocator unchanged, with the
// caller's arguments; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.allocs.fetch_add(1, Ordering::Relaxed);
            self.live.fetch_add(size(layout.size()), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.allocs.fetch_add(1, Ordering::Relaxed);
            self.live.fetch_add(size(layout.size()), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(size(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.allocs.fetch_add(1, Ordering::Relaxed);
            self.live
                .fetch_add(size(new_size) - size(layout.size()), Ordering::Relaxed);
        }
        p
    }
}
