//! A global-allocator wrapper that asks Linux for transparent huge pages on large
//! allocations. Protocol buffers are tens of MB and live for one operation; with
//! 4 KiB pages their first touch costs thousands of page faults (expensive under
//! virtualisation), with 2 MiB pages a handful. Binaries and the Python extension
//! opt in with `#[global_allocator] static A: HugePageHint = HugePageHint;` and call
//! [`reuse_large_blocks`] once.

use std::alloc::{GlobalAlloc, Layout, System};

/// Keeps freed blocks of up to 32 MiB (glibc's largest mmap threshold) in the heap for
/// the next operation: by default glibc serves them with fresh mappings and returns
/// them on free, so every operation's buffers were page-faulted and zero-filled by the
/// kernel again (a fifth of a ReLU's time). The heap is trimmed once 256 MiB lie free
/// at its top. Process-wide; a no-op outside glibc.
pub fn reuse_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; both values are within glibc's limits.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Allocations at least this large get the huge-page hint.
const HUGE_MIN: usize = 4 << 20;

#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageHint;

#[cfg(target_os = "linux")]
fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < HUGE_MIN {
        return;
    }
    const PAGE: usize = 4096;
    let start = (p as usize).next_multiple_of(PAGE);
    let end = (p as usize + size) & !(PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE only
        // changes how the kernel backs it and never its contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_: *mut u8, _: usize) {}

// SAFETY: every call is forwarded to `System`; the hint does not touch the memory.
unsafe impl GlobalAlloc for HugePageHint {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}
