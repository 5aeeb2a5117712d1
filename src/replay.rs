//! `mmfuzz replay FILE...`: TRACE.md's replay output for each trace, and its exit status
//! (0 ok, 1 a violation, 2 an invalid trace). Every file is parsed before any runs, so a bad
//! input never leaves a half-run behind.

use mm_reference::{BugSet, Outcome, RunOptions};
use mm_targets::exec::{replay_text, run_trace};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Trace files (mmtrace text).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Replace the trace's `bugs` (e.g. `--bugs none` replays a regression on the correct
    /// reference).
    #[arg(long, value_name = "LIST")]
    bugs: Option<String>,
}

pub fn main(args: &Args) -> u8 {
    let bugs = match args.bugs.as_deref().map(BugSet::parse) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            eprintln!("error: --bugs: {e}");
            return 2;
        }
    };
    let mut traces = Vec::new();
    let mut bad = false;
    for path in &args.files {
        match crate::read_trace(path) {
            Ok(mut t) => {
                if let Some(b) = bugs {
                    t.config.bugs = b;
                }
                traces.push(t);
            }
            Err(e) => {
                eprintln!("{e}");
                bad = true;
            }
        }
    }
    if bad {
        return 2;
    }
    for t in &traces {
        crate::warn_unmodelled(t.config.bugs);
    }
    let mut status = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (path, trace) in args.files.iter().zip(&traces) {
        if args.files.len() > 1 {
            let _ = writeln!(out, "# {}", path.display());
        }
        let report = run_trace(trace, &RunOptions::default());
        let _ = out.write_all(replay_text(trace, &report).as_bytes());
        if matches!(report.outcome, Outcome::Violation(_)) {
            status = 1;
        }
    }
    status
}
