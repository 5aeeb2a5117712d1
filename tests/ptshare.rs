//! Shared page tables change no observable result: generated multi-process traces (several
//! address spaces mapping the same files, fork, exit, mremap, mprotect, truncate, pageout),
//! run in file order, give the same results with `ptshare=on` as with `ptshare=off`; and so
//! do the sequential fuzz traces. Sharing must really happen in them: the `ptshare-rss`
//! switch (a link that forgets the new sharer's rss) turns a trace into a violation exactly
//! when a populated pte page was linked, so it counts the traces that shared.

mod common;

use common::off_and_on;
use mm_reference::{Bug, BugSet, Oracle, Outcome, RunOptions};
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions};
use mm_targets::targets::{generate_from, Target};
use mm_targets::trace::Trace;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn traces() -> Vec<(String, Trace)> {
    let mut out = Vec::new();
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut bytes = vec![0u8; 2048];
        rng.fill_bytes(&mut bytes);
        if let Some(t) = generate_from(Target::Ptshare, &bytes, BugSet::NONE) {
            out.push((format!("ptshare seed {seed}"), t));
        }
        let t = generate(&mut ChaCha8Rng::seed_from_u64(seed), &GenOptions::sequential());
        out.push((format!("sequential seed {seed}"), t));
    }
    out
}

#[test]
fn sharing_pte_pages_changes_no_result() {
    let mut shared = 0;
    let all = traces();
    for (name, mut trace) in all.iter().cloned() {
        trace.schedule.clear();
        trace.config.bugs = BugSet::NONE;
        let (a, b, mut on) = off_and_on(&trace, |c, on| c.ptshare = on);
        assert_eq!(a.outcome, Outcome::Ok, "{name}: {:?}", a.outcome);
        assert_eq!(a, b, "{name}: sharing pte pages changed a result");
        on.config.bugs = BugSet::NONE;
        on.config.bugs.insert(Bug::PtshareRss);
        let c = run_trace(&on, &RunOptions::default());
        if let Outcome::Violation(v) = &c.outcome {
            assert_eq!(v.oracle, Oracle::Rss, "{name}: {v:?}");
            shared += 1;
        }
    }
    assert!(
        shared >= 100,
        "only {shared} of {} traces linked a shared pte page",
        all.len()
    );
}
