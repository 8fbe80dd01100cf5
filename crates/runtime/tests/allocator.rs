//! `ReuseFreedBlocks` as the process's resident memory sees it. Runs without the test
//! harness, on the main thread: glibc serves blocks this large from the heap only in the main
//! thread's arena (other threads' arenas hold at most 64 MiB), and no other test allocates
//! (or holds a guard) while the resident memory is read.

use fair_runtime::{AllocatorTuning, REUSE_UP_TO, ReuseFreedBlocks};

/// The process's resident memory in bytes (Linux), if known.
fn resident() -> Option<u64> {
    fair_testkit::status_bytes("VmRSS:")
}

const BIG: usize = 256 << 20;
const MIB: u64 = 1 << 20;

/// A touched block of `BIG` bytes with an 8 MiB block allocated after it (too large for any
/// free chunk the process already has, so it comes from above the big one), then the big
/// one freed: the 8 MiB block keeps the freed one from being the heap's top. Returns the
/// resident memory with the block and after freeing it, and the 8 MiB block.
fn freed_below_a_live_block() -> (u64, u64, Vec<u8>) {
    let big = vec![1u8; BIG];
    let pin = vec![1u8; 8 << 20];
    let with = resident().unwrap();
    drop(std::hint::black_box(big));
    (with, resident().unwrap(), pin)
}

fn main() {
    if resident().is_none() {
        eprintln!("no VmRSS in /proc/self/status on this system: skipped");
        return;
    }
    let guard = ReuseFreedBlocks::within(Some(MIB as usize));
    match guard.tuning() {
        AllocatorTuning::Reusing(up_to) => assert_eq!(up_to, REUSE_UP_TO),
        other => {
            eprintln!("the allocator is not tuned here ({other:?}): skipped");
            return;
        }
    }
    // Kept: freeing the block leaves the process's resident memory where it was.
    let (with, freed, pin) = freed_below_a_live_block();
    assert!(
        freed + 16 * MIB > with,
        "the freed block was returned at once: {with} → {freed} bytes resident"
    );
    // Counted as in use, the freed block stays; beyond that plus the slack, it goes back to
    // the kernel.
    assert!(!guard.settle(BIG + (64 << 20)));
    assert!(resident().unwrap() + 16 * MIB > with);
    assert!(guard.settle(0), "256 MiB free against a 1 MiB slack");
    let settled = resident().unwrap();
    assert!(
        settled + 200 * MIB < freed,
        "settle left the freed block resident: {freed} → {settled} bytes"
    );
    drop(pin);

    // Dropped: glibc's settled thresholds again, so a block this large has its own mapping
    // and is returned as soon as it is freed.
    drop(guard);
    let (with, freed, pin) = freed_below_a_live_block();
    assert!(
        freed + 200 * MIB < with,
        "after the guard, the freed block stayed resident: {with} → {freed} bytes"
    );
    drop(pin);

    // Without a slack, nothing is ever settled.
    assert!(!ReuseFreedBlocks::new().settle(0));
    println!("allocator: ok");
}
