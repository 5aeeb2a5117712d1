//! `mmfuzz minimize FILE -o OUT`: shrinks a trace that gives a violation to a smaller one that
//! gives a violation of the same oracle (with the same bug switches), deterministically, and
//! prints the size before and after.

use mm_reference::{BugSet, Oracle, Outcome, Reference, RunOptions};
use mm_targets::minimize::{lines, minimize};
use mm_targets::trace::Trace;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The trace to shrink (it must give a violation).
    file: PathBuf,
    /// Where to write the minimized trace.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Replace the trace's `bugs` before minimizing.
    #[arg(long, value_name = "LIST")]
    bugs: Option<String>,
}

/// The oracle a trace's run ends with, if it ends with a violation.
/// A candidate that makes the model panic keeps nothing (the panic is the model's bug).
fn oracle_of(reference: &mut Reference, t: &Trace) -> Option<Oracle> {
    let report = mm_targets::engine::run_trace_with(reference, t, &RunOptions::default()).ok()?;
    match report.outcome {
        Outcome::Violation(v) => Some(v.oracle),
        Outcome::Ok => None,
    }
}

pub fn main(args: &Args) -> u8 {
    let mut trace = match crate::read_trace(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Some(list) = &args.bugs {
        match BugSet::parse(list) {
            Ok(b) => trace.config.bugs = b,
            Err(e) => {
                eprintln!("error: --bugs: {e}");
                return 2;
            }
        }
    }
    crate::warn_unmodelled(trace.config.bugs);
    let mut reference = Reference::new();
    let Some(oracle) = oracle_of(&mut reference, &trace) else {
        eprintln!(
            "error: {}: the trace gives no violation, so there is nothing to keep",
            args.file.display()
        );
        return 2;
    };
    let bugs = trace.config.bugs;
    let mut tries = 0u64;
    // Candidates that panic the model are rejected quietly.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let small = minimize(&trace, &mut |t| {
        tries += 1;
        t.config.bugs == bugs && oracle_of(&mut reference, t) == Some(oracle)
    });
    std::panic::set_hook(hook);
    let text = format!("# minimized by mmfuzz minimize: keeps violation {oracle}\n{small}");
    if let Err(e) = std::fs::write(&args.output, text) {
        eprintln!("error: {}: {e}", args.output.display());
        return 2;
    }
    println!(
        "minimize: {} lines ({} operations) -> {} lines ({} operations), {tries} candidates tried; violation {oracle} kept",
        lines(&trace),
        trace.ops.len(),
        lines(&small),
        small.ops.len()
    );
    println!(
        "wrote {}; replay: mmfuzz replay {}",
        args.output.display(),
        args.output.display()
    );
    0
}
