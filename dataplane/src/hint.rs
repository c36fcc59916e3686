//! Cache hints for the fast path.
#![allow(unsafe_code)]

/// Starts loading the cache line holding `p` into all cache levels, without waiting for it: a
/// burst's table lookups are issued together so their memory latencies overlap.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address, and changes no
    // architectural state; SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the kernel to back the untouched capacity of `v` with transparent huge pages, for a
/// large table read at random (a flow index): one TLB entry then covers 2 MiB instead of
/// 4 KiB, so a lookup that misses the cache does not also walk the page tables. Call it before
/// filling `v`; only whole 2 MiB pages inside the allocation are advised. A hint: where the
/// kernel has no huge pages to give, nothing changes.
pub fn huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start.saturating_add(v.capacity().saturating_mul(core::mem::size_of::<T>()));
        let lo = start.next_multiple_of(HUGE);
        let hi = end / HUGE * HUGE;
        if hi > lo {
            // SAFETY: MADV_HUGEPAGE changes how the range's pages are backed, never what they
            // hold; [lo, hi) lies inside `v`'s allocation, which outlives the call. An error
            // (no THP in this kernel) leaves the range as it was.
            let _ = unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}
