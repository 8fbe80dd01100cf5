//! Keeping libtorch's large freed blocks for reuse while a long run of forward passes lasts.
//!
//! glibc's `malloc` serves every block above its mmap threshold (128 KiB at start, rising by
//! itself to at most 32 MiB as large blocks are freed) with a fresh `mmap` and returns it to
//! the kernel on `free`. libtorch allocates and frees each activation of each forward pass,
//! so at 224² a batch's activations of tens to hundreds of MiB are mapped and unmapped at
//! every batch, and the kernel zeroes every page again on first touch. Measured (issue 26,
//! ResNet-50 1000 × 8 at 224², 2 cores): 2,357 of the process's 5,685 CPU seconds were
//! system time, 871 million minor page faults.
//!
//! [`ReuseFreedBlocks`] raises the threshold to [`REUSE_UP_TO`] for as long as it lives, so
//! the next batch reuses the blocks the last one freed. glibc serves such blocks from the
//! heap of the main arena, which is where the thread that runs the forward passes allocates
//! when it is the process's main thread; other threads' arenas hold at most 64 MiB each, and
//! their larger blocks keep their own mappings. On drop it returns what the heap holds free
//! to the kernel (`malloc_trim`) and leaves glibc at the values its own adjustment reaches
//! for blocks of libtorch's sizes at 224² (a 32 MiB mmap threshold, twice that to trim), fixed
//! from then on: glibc has no way back to its dynamic adjustment.
//!
//! Nothing is changed where the environment tunes glibc's allocator (`MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_MMAP_MAX_`, or `glibc.malloc`
//! tunables in `GLIBC_TUNABLES`): the user's settings stand. Elsewhere than glibc on Linux,
//! and where glibc refuses the threshold, it does nothing. A host process that called
//! `mallopt` itself (an embedding program) finds the settled values above after the last
//! guard, not its own.
//!
//! ```
//! let reuse = fair_runtime::ReuseFreedBlocks::new();
//! // … forward passes whose freed activations are reused by the next batch …
//! drop(reuse);
//! ```

use std::sync::Mutex;

/// Blocks up to this size come from the heap while a [`ReuseFreedBlocks`] lives (1 GiB:
/// above any activation of a scoring batch at 224²; larger blocks keep their own mapping,
/// which is returned to the kernel when freed).
pub const REUSE_UP_TO: usize = 1 << 30;

/// glibc's largest dynamic mmap threshold on 64-bit systems (`DEFAULT_MMAP_THRESHOLD_MAX`),
/// which a process freeing blocks of libtorch's sizes at 224² reaches; set again on drop.
const GLIBC_SETTLED_THRESHOLD: usize = 32 << 20;

/// Environment variables through which a user tunes glibc's allocator.
const ENVIRONMENT: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// How many guards that tuned the allocator live (the first one tunes it, the last one
/// restores it).
static LIVE: Mutex<usize> = Mutex::new(0);

/// What a [`ReuseFreedBlocks`] did to the process's allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// Blocks up to this many bytes are served from the heap and reused once freed.
    Reusing(usize),
    /// The environment tunes glibc's allocator: left as the user chose.
    FromEnvironment,
    /// glibc refused the threshold: nothing changed.
    Refused,
    /// Not glibc on Linux: nothing changed.
    Unsupported,
}

/// While it lives, glibc keeps freed blocks up to [`REUSE_UP_TO`] for reuse (see the module
/// documentation). Guards may nest and live on several threads: the first one raises the
/// threshold, the last one dropped restores glibc's settled values.
///
/// Under a memory bound, give the guard the memory it may leave free in the heap
/// ([`ReuseFreedBlocks::within`]) and call [`ReuseFreedBlocks::settle`] between batches: the
/// heap's free memory is returned to the kernel whenever it exceeds what the caller counts
/// as in use anyway plus that slack.
#[derive(Debug)]
#[must_use = "the allocator is restored when the guard is dropped"]
pub struct ReuseFreedBlocks {
    tuning: AllocatorTuning,
    slack: Option<usize>,
}

impl ReuseFreedBlocks {
    /// Raises glibc's mmap threshold to [`REUSE_UP_TO`] unless the environment tunes the
    /// allocator; the heap keeps any amount of free memory.
    pub fn new() -> Self {
        Self::within(None)
    }

    /// As [`ReuseFreedBlocks::new`], keeping at most about `slack` bytes free in the heap:
    /// each arena trims its top above its share of it (a guard that lives while another was
    /// made first shares that one's thresholds), and [`ReuseFreedBlocks::settle`] returns the
    /// rest.
    pub fn within(slack: Option<usize>) -> Self {
        let tuning = if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            AllocatorTuning::Unsupported
        } else if tuned_by_environment() {
            AllocatorTuning::FromEnvironment
        } else {
            let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
            if *live > 0 {
                *live += 1;
                AllocatorTuning::Reusing(REUSE_UP_TO)
            } else if set_thresholds(REUSE_UP_TO, trim_threshold(slack)) {
                *live = 1;
                AllocatorTuning::Reusing(REUSE_UP_TO)
            } else {
                AllocatorTuning::Refused
            }
        };
        Self { tuning, slack }
    }

    /// What this guard did.
    pub fn tuning(&self) -> AllocatorTuning {
        self.tuning
    }

    /// Returns the heap's free memory to the kernel (`malloc_trim`) when it exceeds `in_use`
    /// plus the guard's slack; `true` when it did. `in_use` is free memory the caller counts
    /// as taken anyway (for a forward pass, the activations the next batch will take again).
    /// The heap's free memory is glibc's `mallinfo2` over every arena, which still counts
    /// memory already returned, so a fragmented heap is trimmed at each call. Cheap enough to
    /// call after every forward batch; does nothing without a slack.
    pub fn settle(&self, in_use: usize) -> bool {
        match (self.tuning, self.slack) {
            (AllocatorTuning::Reusing(_), Some(slack))
                if heap_free() > in_use.saturating_add(slack) =>
            {
                trim();
                true
            }
            _ => false,
        }
    }
}

impl Default for ReuseFreedBlocks {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ReuseFreedBlocks {
    fn drop(&mut self) {
        if let AllocatorTuning::Reusing(_) = self.tuning {
            let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
            *live -= 1;
            if *live == 0 {
                set_thresholds(GLIBC_SETTLED_THRESHOLD, 2 * GLIBC_SETTLED_THRESHOLD);
                trim();
            }
        }
    }
}

/// Whether the environment tunes glibc's allocator.
fn tuned_by_environment() -> bool {
    ENVIRONMENT.iter().any(|v| std::env::var_os(v).is_some())
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
}

/// Each arena's trim threshold for a heap that keeps about `slack` bytes free in all: the
/// slack shared by the most arenas glibc makes (8 per online core on 64-bit systems).
fn trim_threshold(slack: Option<usize>) -> usize {
    let Some(slack) = slack else {
        return REUSE_UP_TO;
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sysconf only reads a system value.
    let cores = usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let cores = 1;
    (slack / (8 * cores.max(1))).min(REUSE_UP_TO)
}

/// Sets glibc's mmap and trim thresholds; `false` (and nothing set) where glibc refuses the
/// mmap threshold.
fn set_thresholds(mmap: usize, trim: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // mallopt's values are C ints: ours are at most 1 GiB.
        let as_int = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        // SAFETY: mallopt changes glibc tuning parameters under its own lock; a value it
        // refuses leaves the parameter as it was (glibc releases before 2.35 or so refuse
        // mmap thresholds above 32 MiB). glibc takes any trim threshold, so that call's
        // result is not read.
        unsafe {
            if libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(mmap)) == 0 {
                return false;
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(trim));
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (mmap, trim);
        false
    }
}

/// The bytes glibc's arenas hold free (their top chunks included), from `mallinfo2`, which
/// is looked up when first needed: glibc has it from 2.33 on, and libtorch's builds need
/// only 2.28. `usize::MAX` where it is missing, so [`ReuseFreedBlocks::settle`] then trims at
/// every call (the bound holds; less is reused).
fn heap_free() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
        static MALLINFO2: std::sync::OnceLock<Option<Mallinfo2>> = std::sync::OnceLock::new();
        let found = MALLINFO2.get_or_init(|| {
            // SAFETY: dlsym with RTLD_DEFAULT only looks the name up among the loaded objects.
            let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
            // SAFETY: where glibc defines `mallinfo2`, it has exactly this signature.
            (!symbol.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(symbol) })
        });
        match found {
            // SAFETY: mallinfo2 only reads glibc's statistics under its own locks.
            Some(mallinfo2) => unsafe { mallinfo2() }.fordblks,
            None => usize::MAX,
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// Returns the heap's free memory to the kernel.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes glibc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_the_last_one_restores() {
        // The only test of this crate's unit tests that makes guards.
        let before = *LIVE.lock().unwrap();
        let a = ReuseFreedBlocks::within(Some(1 << 20));
        let b = ReuseFreedBlocks::new();
        assert_eq!(a.tuning(), b.tuning());
        match a.tuning() {
            AllocatorTuning::Reusing(up_to) => {
                assert_eq!(up_to, REUSE_UP_TO);
                assert_eq!(*LIVE.lock().unwrap(), before + 2);
            }
            AllocatorTuning::FromEnvironment => assert!(tuned_by_environment()),
            other => assert!(
                other == AllocatorTuning::Unsupported || other == AllocatorTuning::Refused,
                "{other:?}"
            ),
        }
        drop(a);
        drop(b);
        assert_eq!(*LIVE.lock().unwrap(), before);
    }

    #[test]
    fn each_arena_trims_above_its_share_of_the_slack() {
        assert_eq!(trim_threshold(None), REUSE_UP_TO);
        let one = trim_threshold(Some(64 << 20));
        assert!(one > 0 && one <= 8 << 20, "{one}");
        assert_eq!(trim_threshold(Some(usize::MAX)), REUSE_UP_TO);
    }
}
