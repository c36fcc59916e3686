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
