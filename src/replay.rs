//! `mmfuzz replay FILE...`: TRACE.md's replay output for each trace, and its exit status
//! (0 ok, 1 a violation, 2 an invalid trace). Every file is parsed before any runs, so a bad
//! input never leaves a half-run behind.
//!
//! A file is trace text when its name ends in `.trace` or it starts (after blank and comment
//! lines) with `mmtrace`; anything else is a raw input of a fuzz engine, decoded for
//! `--target` exactly as `mmfuzz decode` does (bugs: `--bugs`, else `MMFUZZ_BUGS`), so a
//! crash file replays to the outcome the fuzz target saw.
//!
//! `--events` prints each run's event log (`mm_targets::events`) before its replay output;
//! `--without LIST` switches oracles off as `mmfuzz fuzz --without` does.

use mm_reference::{Outcome, RunOptions};
use mm_targets::events::events_text;
use mm_targets::exec::{replay_text, run_trace};
use mm_targets::trace::Trace;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Trace files (mmtrace text).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    source: Source,
    /// Print the run's event log first: every step with its task and CPU, operations'
    /// starts, linearization points and ends, locks taken, waited for and released, page
    /// table entries, TLB fills and flushes per CPU, frames, interrupts, the violation.
    #[arg(long)]
    events: bool,
    /// Oracles to switch off, as `mmfuzz fuzz --without` (a crash found with some switched
    /// off replays to the same outcome with the same list).
    #[arg(long, value_name = "LIST")]
    without: Option<String>,
}

/// How input files are read: trace text, or raw inputs decoded for a fuzz target, with the
/// bugs replaced or not (shared by `replay` and `show`).
#[derive(clap::Args)]
pub struct Source {
    /// Replace the trace's `bugs` (e.g. `--bugs none` replays a regression on the correct
    /// reference).
    #[arg(long, value_name = "LIST")]
    bugs: Option<String>,
    /// The fuzz target that ran the raw inputs among the files: sequential, concurrent,
    /// highmem, ptshare, hugetlb or swarm.
    #[arg(long, value_name = "NAME", default_value = "sequential")]
    target: String,
}

impl Source {
    /// Every file parsed (or decoded), or `None` after printing each one's `error: ...` (the
    /// caller exits with status 2 and runs nothing).
    pub fn load(&self, files: &[PathBuf]) -> Option<Vec<Trace>> {
        // Raw inputs take --bugs, else MMFUZZ_BUGS; text traces keep their own unless --bugs.
        let (target, raw_bugs) = match crate::decode::target_and_bugs(&self.target, self.bugs.as_deref()) {
            Ok(tb) => tb,
            Err(e) => {
                eprintln!("error: {e}");
                return None;
            }
        };
        let bugs = self.bugs.as_ref().map(|_| raw_bugs);
        let mut traces = Vec::new();
        let mut bad = false;
        for path in files {
            match crate::decode::load(path, target, raw_bugs) {
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
            return None;
        }
        for t in &traces {
            crate::warn_unmodelled(t.config.bugs);
        }
        Some(traces)
    }
}

pub fn main(args: &Args) -> u8 {
    let oracles = match crate::fuzz::oracles(args.without.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let Some(traces) = args.source.load(&args.files) else {
        return 2;
    };
    let mut status = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (path, trace) in args.files.iter().zip(&traces) {
        if args.files.len() > 1 {
            let _ = writeln!(out, "# {}", path.display());
        }
        let options = RunOptions {
            events: args.events,
            ..oracles
        };
        let report = run_trace(trace, &options);
        if args.events {
            let _ = out.write_all(events_text(trace, &report).as_bytes());
        }
        let _ = out.write_all(replay_text(trace, &report).as_bytes());
        if matches!(report.outcome, Outcome::Violation(_)) {
            status = 1;
        }
    }
    status
}
