//! `mmfuzz`: the command-line program. Each subcommand lives in its own module and returns
//! the process exit status; this file only parses arguments and dispatches.
//!
//! Exit status everywhere: 0 ok, 1 a violation (or a conformance difference), 2 bad input.

mod bench;
mod conform;
mod decode;
mod fuzz;
mod hunt;
mod minimize;
mod replay;
mod show;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mmfuzz",
    version,
    about = "Fuzz a deterministic reference model of Linux memory management"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay traces on the reference: one line per completed operation, then the outcome.
    Replay(replay::Args),
    /// Run traces on this machine's Linux kernel and compare every result with the reference.
    Conform(conform::Args),
    /// Run the built-in fuzzer on the reference.
    Fuzz(fuzz::Args),
    /// Turn raw inputs of a fuzz engine into the .trace text that replays to the same outcome.
    Decode(decode::Args),
    /// Shrink a trace that gives a violation, keeping the same oracle.
    Minimize(minimize::Args),
    /// Executions per second of each fuzz target, with and without oracles, and each oracle's cost.
    Bench(bench::Args),
    /// Time to each zoo bug: N engine runs per bug, found / min / median / max (and a random baseline).
    Hunt(hunt::Args),
    /// Draw a trace's run as a picture (SVG, or an HTML page with details on hover): tasks,
    /// locks, CPUs, TLB entries and the violation.
    Show(show::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Replay(args) => replay::main(&args),
        Command::Conform(args) => conform::main(&args),
        Command::Fuzz(args) => fuzz::main(&args),
        Command::Decode(args) => decode::main(&args),
        Command::Minimize(args) => minimize::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Hunt(args) => hunt::main(&args),
        Command::Show(args) => show::main(&args),
    };
    ExitCode::from(status)
}

/// Warns on standard error about bugs switched on that the reference does not model yet
/// (their switch changes nothing).
pub fn warn_unmodelled(bugs: mm_reference::BugSet) {
    for b in bugs.iter().filter(|b| !b.modelled()) {
        eprintln!(
            "warning: bug `{}` is not modelled by this version of the reference; its switch changes nothing",
            b.name()
        );
    }
}

/// Reads a trace file for a subcommand: `Err` carries the `error: ...` text for stderr.
pub fn read_trace(path: &PathBuf) -> Result<mm_targets::trace::Trace, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("error: {}: {e}", path.display()))?;
    mm_targets::trace::parse(&text).map_err(|e| format!("error: {e} (in {})", path.display()))
}
