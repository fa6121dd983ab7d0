//! The process's allocator: jemalloc, with the options compiled in and the arena choice for
//! backfills.

/// jemalloc instead of glibc's malloc. The gateway allocates many small, short-lived buffers
/// on several threads at once, where glibc's arena locks cost about a tenth of its CPU per
/// request; pipelines and backfills free and reallocate batch buffers every few milliseconds,
/// which jemalloc keeps for reuse (returning them to the system after its decay time) instead
/// of mapping fresh pages. The comparison with glibc and mimalloc is in docs/dependencies.md's
/// dependency table.
///
/// On Linux jemalloc also replaces `malloc` itself (the `unprefixed_malloc_on_supported_platforms`
/// feature), so librdkafka's per-message allocations (a message, its op, its header list)
/// take jemalloc's thread caches instead of glibc's locked arenas: about 6% of a scoring
/// pipeline's CPU was glibc malloc and free called from librdkafka.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options compiled into the binary. `MALLOC_CONF` in the environment wins on Linux,
/// where jemalloc replaces `malloc`; elsewhere the variable is `_RJEM_MALLOC_CONF`.
///
/// `oversize_threshold:0`: by default jemalloc serves requests of 8 MiB and more from a
/// dedicated arena that hands their pages back to the system as soon as they are freed, so a
/// pipeline catching up on a backlog faulted in and zeroed fresh pages for its large batch
/// buffers again and again. With the threshold off, large buffers are reused like any other
/// until their decay time. Measured on the fraud benchmark's `streamgate run` (1M records,
/// alternating runs): minor faults 104-119k -> 47-74k, CPU 5.7-5.8 -> 5.1-5.5 s; a 10M-row
/// backfill's CPU and peak memory are unchanged.
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(JEMALLOC_OPTIONS.as_ptr());

/// The same options under the prefixed name jemalloc reads on the platforms where it cannot
/// replace `malloc` (macOS, Windows, musl): there it serves Rust's allocations only.
#[unsafe(export_name = "_rjem_malloc_conf")]
static PREFIXED_MALLOC_CONF: MallocConf = MallocConf(JEMALLOC_OPTIONS.as_ptr());

const JEMALLOC_OPTIONS: &std::ffi::CStr = c"oversize_threshold:0";

/// A C string pointer jemalloc reads once at start-up.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a static, immutable C string.
unsafe impl Sync for MallocConf {}

/// Makes the calling thread allocate from jemalloc's first arena.
///
/// jemalloc gives threads arenas of their own (four per core by default), each keeping the
/// memory its thread freed for reuse. A backfill's threads take turns with the same large
/// batch buffers, so per-thread arenas mostly hold copies of memory another arena also holds:
/// sharing one arena cut a 10M-row backfill's peak from 197 to about 160 MiB at the same CPU.
/// The gateway and pipelines keep the default, where separate arenas avoid lock contention.
pub(crate) fn allocate_from_first_arena() {
    set_thread_arena(0);
}

/// Binds the calling thread to jemalloc arena `arena`; false if jemalloc refused.
fn set_thread_arena(mut arena: u32) -> bool {
    // SAFETY: "thread.arena" takes an unsigned int; jemalloc reads it during the call.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.arena".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::from_mut(&mut arena).cast(),
            std::mem::size_of::<u32>(),
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    /// Reads jemalloc setting `name`, a value of type `T`.
    fn read_mallctl<T: Copy>(name: &std::ffi::CStr, mut value: T) -> T {
        let mut len = std::mem::size_of::<T>();
        // SAFETY: jemalloc writes at most `len` bytes, the size of `value`.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }

    /// The arena the calling thread allocates from.
    fn thread_arena() -> u32 {
        read_mallctl(c"thread.arena", u32::MAX)
    }

    #[test]
    fn large_allocations_are_not_handed_back_at_once() {
        let threshold = read_mallctl(c"opt.oversize_threshold", usize::MAX);
        assert_eq!(threshold, 0, "the compiled-in malloc_conf was not read");
    }

    /// C code in the process (librdkafka, OpenSSL) allocates from jemalloc too, and memory
    /// one side allocates the other may free.
    #[cfg(target_os = "linux")]
    #[test]
    fn c_allocations_come_from_jemalloc() {
        unsafe extern "C" {
            fn malloc(size: usize) -> *mut std::ffi::c_void;
            fn free(ptr: *mut std::ffi::c_void);
        }
        // SAFETY: a live allocation of 4000 bytes, freed once, by the other side's function.
        unsafe {
            let ptr = malloc(4000);
            assert!(!ptr.is_null());
            assert_eq!(
                tikv_jemalloc_sys::malloc_usable_size(ptr),
                4096,
                "a 4000-byte malloc was not served from jemalloc's 4 KiB size class"
            );
            tikv_jemalloc_sys::free(ptr);
            let ptr = tikv_jemalloc_sys::malloc(100);
            free(ptr);
        }
    }

    #[test]
    fn backfill_threads_allocate_from_the_first_arena() {
        std::thread::spawn(|| {
            assert!(super::set_thread_arena(1), "jemalloc has a second arena");
            assert_eq!(thread_arena(), 1);
            super::allocate_from_first_arena();
            assert_eq!(thread_arena(), 0);
        })
        .join()
        .unwrap();
    }
}
