//! The minimizer keeps its predicate, only shrinks, returns valid traces, and is deterministic.

use mm_reference::{OpResult, RunOptions};
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions};
use mm_targets::minimize::{lines, minimize};
use mm_targets::trace::{parse, Trace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The property kept in these tests: some operation's result is `want`.
fn gives(t: &Trace, want: OpResult) -> bool {
    run_trace(t, &RunOptions::default())
        .completed
        .iter()
        .any(|&(_, r)| r == want)
}

#[test]
fn keeps_the_property_shrinks_and_is_deterministic() {
    let mut checked = 0;
    for seed in 0..60u64 {
        let t = generate(&mut ChaCha8Rng::seed_from_u64(seed), &GenOptions::sequential());
        for want in [OpResult::Sigbus, OpResult::Err(mm_reference::Errno::EFAULT)] {
            if !gives(&t, want) {
                continue;
            }
            let small = minimize(&t, &mut |c| gives(c, want));
            assert!(gives(&small, want), "seed {seed}: the property was lost");
            assert!(lines(&small) <= lines(&t), "seed {seed}: grew");
            assert_eq!(
                parse(&small.to_string()),
                Ok(small.clone()),
                "seed {seed}: invalid result"
            );
            let again = minimize(&t, &mut |c| gives(c, want));
            assert_eq!(small, again, "seed {seed}: not deterministic");
            checked += 1;
        }
    }
    assert!(checked >= 10, "too few generated traces had the property ({checked})");
}

#[test]
fn shrinks_to_the_operations_that_matter() {
    let t = parse(
        "mmtrace 1
config cpus=4 frames=512 pkmap=5
file 0 size=0x8000
file 1 size=0x3000
task 0 mm=0 cpu=3
task 1 mm=1 cpu=2
1: mmap addr=0x200000 len=0x2000 prot=rw flags=private,fixed
1: store addr=0x200123 value=9
0: mmap addr=0x123456 len=0x5123 prot=rw flags=shared file=1 off=0
0: mmap addr=0x100000 len=0x8000 prot=r flags=shared,fixed file=0
0: load addr=0x100010
0: write file=1 off=0x10 len=0x20 buf=0x100000
1: fork task=2 cpu=1
2: load addr=0x200123
0: truncate file=0 size=0x1234
0: read file=1 off=0 len=0x100 buf=0x100000
0: load addr=0x107abc
1: munmap addr=0x200000 len=0x2000
",
    )
    .unwrap();
    let small = minimize(&t, &mut |c| gives(c, OpResult::Sigbus));
    // A mapping of an empty file and a load of it are all a SIGBUS needs.
    assert_eq!(small.ops.len(), 2, "{small}");
    assert_eq!(small.files.len(), 1, "{small}");
    assert_eq!(small.tasks.len(), 1, "{small}");
    assert_eq!(small.config, mm_reference::Config::default(), "{small}");
}
