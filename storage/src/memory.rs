//! Process-wide tuning of the C allocator, applied once at start by every icestream process.
//!
//! Compaction and Produce work in buffers of megabytes that live for one round or one
//! request: decompressed batches, Arrow columns, Parquet column chunks and row groups. With
//! its defaults, glibc's malloc maps allocations above a threshold (128 KiB, raised as
//! large blocks are freed, to at most 32 MiB) afresh and unmaps them when freed, and gives
//! the top of a heap back to the kernel as soon as more than twice that is free: the next
//! round's buffers are page-faulted in and zeroed by the kernel again, and growing ones are
//! copied by `realloc` instead of extended in place. Fixing the mapping threshold at 32 MiB
//! and keeping up to 128 MiB of freed memory per arena for reuse removes most of that work:
//! `tablebench compact` folds ~30 % more WAL per CPU-second, for a larger resident set
//! (a process holds on to what it freed, up to the trim threshold per arena).
//!
//! An operator's own choice wins: nothing is changed when `GLIBC_TUNABLES` sets a malloc
//! tunable or `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` is set.

/// Allocations at least this large are mapped on their own, and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 32 * 1024 * 1024;
/// Freed memory kept at the top of an arena for reuse before it is returned to the kernel.
pub const TRIM_THRESHOLD: usize = 128 * 1024 * 1024;

/// Whether the environment already tunes malloc (then [`tune_allocator`] leaves it alone).
fn operator_tuned(var: impl Fn(&str) -> Option<String>) -> bool {
    var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc."))
        || var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("MALLOC_TRIM_THRESHOLD_").is_some()
}

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] to glibc's malloc; returns whether it
/// did (not on other C libraries, nor when the operator tunes malloc). Call it first in
/// `main`, before threads start.
pub fn tune_allocator() -> bool {
    if operator_tuned(|name| std::env::var(name).ok()) {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> bool {
    // SAFETY: `mallopt` only sets allocator parameters; it takes the allocator's own lock
    // and is safe to call at any time, with any value (an unsupported one returns 0).
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
    let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) };
    mmap == 1 && trim == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_malloc_settings_are_left_alone() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!operator_tuned(env(&[])));
        assert!(!operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0"
        )])));
        assert!(operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2"
        )])));
        assert!(operator_tuned(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
        assert!(operator_tuned(env(&[("MALLOC_MMAP_THRESHOLD_", "131072")])));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_thresholds() {
        assert!(apply());
    }
}
