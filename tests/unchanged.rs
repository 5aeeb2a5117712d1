//! Skipping the checker's walks at steps that changed nothing it reads
//! (`RunOptions::skip_unchanged`, reference/src/unchanged.rs) gives the same reports, bit for
//! bit, as walking at every step, and every skipped walk would have read exactly what the
//! last passed one read (`RunOptions::audit_skip`); and recording coverage changes no result. Generated traces
//! of every mode and every fuzz target are run both ways, on the correct reference and with
//! every modelled zoo bug on (so that violations, found at the same step with the same
//! message, are compared too).

use mm_reference::{Bug, BugSet, Outcome, Reference, RunOptions, RunReport};
use mm_targets::gen::{generate, GenOptions};
use mm_targets::targets::{decode, Target};
use mm_targets::trace::Trace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn run(r: &mut Reference, t: &Trace, o: &RunOptions) -> RunReport {
    r.run(&t.config, &t.files, &t.tasks, &t.ops, &t.schedule, o)
}

fn traces() -> Vec<Trace> {
    let mut out = Vec::new();
    let mut bug_sets = vec![BugSet::NONE];
    for b in Bug::ALL.into_iter().filter(|b| b.modelled()) {
        let mut set = BugSet::NONE;
        set.insert(b);
        bug_sets.push(set);
    }
    for (i, bugs) in bug_sets.into_iter().enumerate() {
        for opts in [GenOptions::sequential(), GenOptions::concurrent()] {
            for seed in 0..60u64 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed * 31 + i as u64);
                out.push(generate(&mut rng, &opts.clone().with_bugs(bugs)));
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + i as u64);
        for target in Target::ALL {
            for _ in 0..30 {
                let n = rng.gen_range(64..1024);
                let data: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                out.extend(decode(target, &data, bugs));
            }
        }
    }
    out
}

#[test]
fn skipping_unchanged_state_changes_no_report() {
    let mut skip = Reference::new();
    let mut walk = Reference::new();
    let (mut violations, mut total) = (0, 0);
    let full = RunOptions {
        skip_unchanged: false,
        ..RunOptions::ALL
    };
    // The skipping run audits every skip: what a skipped walk reads must not have changed.
    let audited = RunOptions {
        audit_skip: true,
        ..RunOptions::ALL
    };
    for t in traces() {
        let a = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut skip, &t, &audited)))
            .unwrap_or_else(|_| panic!("the audit of skip_unchanged failed (message above) on\n{t}"));
        let b = run(&mut walk, &t, &full);
        assert_eq!(a, b, "skip_unchanged changed the report of\n{t}");
        violations += usize::from(a.outcome != Outcome::Ok);
        total += 1;
    }
    assert!(total > 1000, "only {total} traces");
    assert!(violations > 100, "only {violations} violations among {total} traces");
}

#[test]
fn coverage_changes_no_result_and_is_deterministic() {
    let mut r = Reference::new();
    let cov = RunOptions {
        coverage: true,
        ..RunOptions::ALL
    };
    let mut distinct = std::collections::BTreeSet::new();
    for t in traces().into_iter().step_by(4) {
        let plain = run(&mut r, &t, &RunOptions::ALL);
        let a = run(&mut r, &t, &cov);
        let b = run(&mut Reference::new(), &t, &cov);
        assert_eq!(a, b, "coverage differs between two runs of\n{t}");
        assert!(plain.features.is_empty());
        assert_eq!((&a.completed, &a.outcome), (&plain.completed, &plain.outcome));
        assert!(
            a.features.windows(2).all(|w| w[0] < w[1]),
            "features not sorted and unique"
        );
        if !t.ops.is_empty() {
            assert!(!a.features.is_empty(), "a run of operations reached no feature");
        }
        distinct.extend(a.features);
    }
    assert!(distinct.len() > 500, "only {} distinct features", distinct.len());
}
