//! hugetlb pmd sharing changes no observable result: generated multi-process traces full of
//! hugetlbfs mappings shared between address spaces (the generator's sharing patterns, with
//! truncate, munmap, mprotect, mremap, fork and exit over them) give the same results with
//! `hugeshare=on` as with `hugeshare=off`, run in file order with memory to spare (sharing
//! saves page tables, so under memory pressure it may rightly change which call runs out).
//! That sharing really happens is checked through `hugetlb-unshare-no-flush`: enough of the
//! traces must unshare a table under it and show the missing flush.

mod common;

use common::off_and_on;
use mm_reference::{BugSet, Outcome, RunOptions};
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions, Mix};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn hugeshare_changes_no_result() {
    let opts = GenOptions {
        max_mms: 3,
        min_tasks: 2,
        mix: Mix {
            share: 14,
            fork: 4,
            exit: 2,
            truncate: 6,
            mremap: 6,
            mprotect: 6,
            huge_file_percent: 85,
            ..Mix::DEFAULT
        },
        ..GenOptions::sequential()
    };
    let (mut ran, mut shared) = (0, 0);
    for seed in 0..300u64 {
        let mut trace = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
        trace.schedule.clear();
        trace.config.frames = 65536;
        trace.config.highmem = 32768;
        if seed % 2 == 1 {
            trace.config.ptrs = 4;
        }
        let (a, b, on) = off_and_on(&trace, |c, on| c.hugeshare = on);
        assert_eq!(a.outcome, Outcome::Ok, "seed {seed}: {:?}", a.outcome);
        assert_eq!(a, b, "seed {seed}: hugeshare changed a result\n{trace}");
        ran += usize::from(trace.files.iter().any(|f| f.huge) && a.completed.len() > 4);
        // Tables were shared (and unshared) if the missing flush of an unshare shows.
        let mut bug = on.clone();
        bug.config.bugs = BugSet::parse("hugetlb-unshare-no-flush").unwrap();
        shared += usize::from(run_trace(&bug, &RunOptions::default()).outcome != Outcome::Ok);
    }
    assert!(ran > 150, "too few traces with hugetlbfs files ran: {ran}");
    assert!(
        shared > 20,
        "too few traces shared (and unshared) a pmd table: {shared}"
    );
}
