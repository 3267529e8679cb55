//! How the allocator of a long-running, many-threaded process gives memory
//! back: [`bound_allocator`], called once by the heart before its threads
//! start.
//!
//! glibc's malloc gives each thread that contends for the heap an arena of
//! its own (up to 8 per core) and keeps what they free; and after the first
//! large block is freed it raises its mmap threshold (up to 32 MiB), so
//! later large blocks, such as the answer of a `GET /instances` at 5,000
//! instances, are carved from those arenas and stay resident. With 32
//! worker threads answering in turn, the heart grew from 15 MiB to 60-80
//! MiB under 10 s of concurrent reads. Two arenas and a fixed threshold
//! keep large blocks in their own mappings, returned when freed. musl's
//! allocator already does both; there the call does nothing.

/// Blocks this large or larger get a mapping of their own, unmapped when
/// freed; fixing the threshold also stops glibc from raising it.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// At most this many malloc arenas, whatever the number of threads.
#[cfg(target_env = "gnu")]
const ARENA_MAX: i32 = 2;

/// Bounds the allocator's arenas and fixes its mmap threshold (glibc);
/// nothing elsewhere. Call before the process starts threads.
pub(crate) fn bound_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // the heart starts its threads, with valid parameter numbers and values.
    // A value it refuses leaves glibc's defaults (the return value is then
    // 0), which are correct, only larger.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, ARENA_MAX);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
    }
}
