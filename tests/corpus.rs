//! Every trace under `corpus/` replayed and snapshotted (insta): adding a `.trace` file adds a
//! test. A regression (a trace whose config names bugs) is replayed twice: with its bugs, where
//! it must give a violation, and with `bugs=none`, where it must give `ok`. Every replay runs
//! twice and must give the same text (determinism).

use mm_reference::{BugSet, Outcome, RunOptions};
use mm_targets::exec::{replay_text, run_trace};
use mm_targets::trace::parse;

fn replay(trace: &mm_targets::trace::Trace) -> (String, Outcome) {
    let report = run_trace(trace, &RunOptions::default());
    let text = replay_text(trace, &report);
    let again = replay_text(trace, &run_trace(trace, &RunOptions::default()));
    assert_eq!(text, again, "the same trace replayed twice gave different output");
    (text, report.outcome)
}

#[test]
fn corpus_traces_replay_as_snapshotted() {
    insta::glob!("../corpus", "**/*.trace", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let trace = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (out, outcome) = replay(&trace);
        if trace.config.bugs.is_empty() {
            assert_eq!(
                outcome,
                Outcome::Ok,
                "{}: the correct reference must give ok:\n{out}",
                path.display()
            );
            insta::assert_snapshot!(out);
        } else {
            assert!(
                matches!(outcome, Outcome::Violation(_)),
                "{}: its bugs must give a violation:\n{out}",
                path.display()
            );
            let mut fixed = trace.clone();
            fixed.config.bugs = BugSet::NONE;
            let (fixed_out, fixed_outcome) = replay(&fixed);
            assert_eq!(
                fixed_outcome,
                Outcome::Ok,
                "{}: with bugs=none it must give ok:\n{fixed_out}",
                path.display()
            );
            insta::assert_snapshot!(format!(
                "## bugs={}\n{out}\n## bugs=none\n{fixed_out}",
                trace.config.bugs
            ));
        }
    });
}
