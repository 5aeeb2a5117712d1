//! The guided engine finds every modelled zoo bug, and the minimizer shrinks each raw crash
//! to no more lines than the bug's hand-minimized regression trace in
//! `corpus/regressions/` plus one (the longest of them where a bug has several and none
//! ends with the same oracle; else the shortest that does).

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mm_reference::{Bug, BugSet, Oracle, Outcome, Reference, RunOptions};
use mm_targets::engine::{run_trace_with, Finding};
use mm_targets::guided::{guided, GuidedConfig};
use mm_targets::minimize::{lines, minimize_finding};
use mm_targets::trace::{parse, Trace};

/// The oracle of the violation `t` ends with (`None` for ok, or a panic of the model: the
/// minimizer must not trade the bug for the model's own).
fn outcome_oracle(r: &mut Reference, t: &Trace) -> Option<Oracle> {
    match run_trace_with(r, t, &RunOptions::ALL).ok()?.outcome {
        Outcome::Violation(v) => Some(v.oracle),
        Outcome::Ok => None,
    }
}

/// The line budget for a minimized crash of `bug` ending with `oracle`.
fn budget(bug: Bug, oracle: Oracle, r: &mut Reference) -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/regressions");
    let mut same = Vec::new();
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).expect("corpus/regressions") {
        let path = e.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with(bug.name()) {
            continue;
        }
        let t = parse(&std::fs::read_to_string(&path).unwrap()).expect("a valid regression");
        let n = lines(&t);
        all.push(n);
        if outcome_oracle(r, &t) == Some(oracle) {
            same.push(n);
        }
    }
    assert!(!all.is_empty(), "no regression for {}", bug.name());
    same.into_iter().min().unwrap_or_else(|| all.into_iter().max().unwrap()) + 1
}

/// The seeds of the guided engine whose first crash of each bug is minimized: 312 crashes,
/// about 7 minutes in a debug build (seeds 1 to 36, measured once, are all within budget
/// too).
const SEEDS: u64 = 24;

/// The crashes the minimizer does not yet bring within budget (bug, seed, lines it reaches),
/// measured; issue 7 keeps them open. Each must stay at most that long, and leave this list
/// when it meets the budget. None today: the last five (shapes the engine built that the
/// regressions do not have: a private hugetlb mapping copied from a page-cache page that a
/// shared mapping's fault made, a process whose one exit only makes another task's exit the
/// last, reads and writes there only for their buffer's fault, a race of whole operations
/// kept in a schedule) closed with the huge-file, declared-task, buffer-access and
/// serial passes; the four of seeds 13 to 24 (memory pressure built from many lines, where a
/// pageout or fewer frames would do) with the pageout and scarce-memory passes.
const OVER_BUDGET: &[(&str, u64, usize)] = &[];

#[test]
fn every_zoo_crash_minimizes_to_the_regression_size() {
    let mut r = Reference::new();
    let mut failures = Vec::new();
    for bug in Bug::ALL.into_iter().filter(|b| b.modelled()) {
        let mut bugs = BugSet::NONE;
        bugs.insert(bug);
        let mut found = 0;
        for seed in 1..=SEEDS {
            let cfg = GuidedConfig {
                runs: Some(200_000),
                bugs,
                ..GuidedConfig::new(seed)
            };
            let res = guided(&cfg, &AtomicBool::new(false), Duration::from_secs(3600), |_| {});
            let crash = res
                .crashes
                .first()
                .unwrap_or_else(|| panic!("{} seed {seed}: not found", bug.name()));
            let Finding::Violation(v) = &crash.finding else {
                continue; // a panic of the model: reported by `mmfuzz fuzz`, not this test's subject
            };
            found += 1;
            let oracle = v.oracle;
            let (small, _) = minimize_finding(&crash.trace, &crash.finding, &RunOptions::ALL);
            let max = budget(bug, oracle, &mut r);
            let n = lines(&small);
            if let Some(&(_, _, known)) = OVER_BUDGET.iter().find(|k| (k.0, k.1) == (bug.name(), seed)) {
                // A known gap: it must not grow, and must leave the list once it closes.
                if n > known || n <= max {
                    failures.push(format!(
                        "{} seed {seed}: {n} lines, OVER_BUDGET says {known} (budget {max}): update the list",
                        bug.name()
                    ));
                }
                continue;
            }
            if n > max {
                failures.push(format!(
                    "{} seed {seed}: minimized to {} lines, more than {max}:\n{small}",
                    bug.name(),
                    lines(&small)
                ));
            }
        }
        if found * 4 < SEEDS * 3 {
            failures.push(format!(
                "{}: only {found} of {SEEDS} seeds gave a violation",
                bug.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
