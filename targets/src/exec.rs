//! The executor: drives the reference by a trace and renders the replay output of TRACE.md.
//!
//! Invariants kept here: a trace runs exactly as parsed (the executor adds no decisions of its
//! own), and the replay text is a pure function of the trace: the same trace gives the same
//! text, byte for byte.

use crate::trace::{print_op, Trace};
use mm_reference::{run, Outcome, RunOptions, RunReport};
use std::fmt::Write;

/// Runs a (valid) trace on the reference.
pub fn run_trace(trace: &Trace, options: &RunOptions) -> RunReport {
    run(
        &trace.config,
        &trace.files,
        &trace.tasks,
        &trace.ops,
        &trace.schedule,
        options,
    )
}

/// The outcome line: `outcome: ok` or `outcome: violation ORACLE: MESSAGE`.
pub fn outcome_line(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok => "outcome: ok".to_string(),
        Outcome::Violation(v) => format!("outcome: violation {}: {}", v.oracle, v.message),
    }
}

/// TRACE.md's replay output: each completed operation with ` -> RESULT`, in completion order,
/// then the outcome line.
pub fn replay_text(trace: &Trace, report: &RunReport) -> String {
    let mut out = String::new();
    for &(i, result) in &report.completed {
        let _ = writeln!(out, "{} -> {result}", print_op(&trace.ops[i]));
    }
    let _ = writeln!(out, "{}", outcome_line(&report.outcome));
    out
}
