//! `mmfuzz minimize FILE -o OUT`: shrinks a trace that gives a violation to a smaller one that
//! gives a violation of the same oracle (with the same bug switches), deterministically, and
//! prints the size before and after.

use mm_reference::{BugSet, Outcome, Reference};
use mm_targets::engine::{run_trace_with, Finding};
use mm_targets::minimize::{lines, minimize_finding};
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
    /// Oracles to switch off, as `mmfuzz fuzz --without` (for a crash a fuzz run found
    /// with them off).
    #[arg(long, value_name = "LIST")]
    without: Option<String>,
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
    let options = match crate::fuzz::oracles(args.without.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    crate::warn_unmodelled(trace.config.bugs);
    // What to keep: the violation the trace gives (a panic of the model is not a finding to
    // minimize here: it is the model's bug).
    let violation = match run_trace_with(&mut Reference::new(), &trace, &options).map(|r| r.outcome) {
        Ok(Outcome::Violation(v)) => v,
        _ => {
            eprintln!(
                "error: {}: the trace gives no violation, so there is nothing to keep",
                args.file.display()
            );
            return 2;
        }
    };
    let oracle = violation.oracle;
    let (small, tries) = minimize_finding(&trace, &Finding::Violation(violation), &options);
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
        "wrote {}; replay: mmfuzz replay{} {}",
        args.output.display(),
        crate::fuzz::without_flag(&options),
        args.output.display()
    );
    0
}
