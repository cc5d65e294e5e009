//! Software prefetch: ask the memory system for a cache line we will read soon.
//!
//! A set far larger than cache costs one DRAM round trip per touched line; issuing the loads for
//! a group of keys before reading any of them keeps many misses in flight at once.

/// Hint that the cache line holding `value` will be read soon. Never faults, even for addresses
/// that are not mapped, and is a no-op on targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch_read<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never dereferences in a way that can fault, and SSE is part
    // of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(value.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
