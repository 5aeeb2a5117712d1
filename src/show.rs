//! `mmfuzz show FILE -o OUT.svg` (or `OUT.html`): runs a trace with its event log recorded
//! and draws the run as a picture: the interleaving of the tasks over scheduling steps, their
//! operations, the locks they hold and wait for, each CPU's steps, interrupts and TLB
//! entries, and the violation where the oracle fired (a deadlock's cycle as arrows).
//!
//! What it keeps true:
//! - The input is read exactly as `replay` reads it (`replay::Source`: trace text or a raw
//!   input for `--target`, `--bugs`); an invalid one is `error: line N: ...` on standard
//!   error with exit status 2, and nothing is written. Every oracle judges the run, but those
//!   `--without` switches off (as `fuzz --without` does), so a crash's picture shows the
//!   violation the fuzzer found.
//! - The picture is a pure function of the trace (the run is deterministic, and so are the
//!   timeline and the drawing): the same trace gives the same bytes.
//! - `.svg` is a standalone SVG; `.html` a self-contained page (no outside resources) with
//!   the same SVG, a panel that shows the details of the shape under the pointer, and the
//!   whole event log. Exit status 0 once the file is written (whatever the outcome), 2 for
//!   bad input or an output that cannot be written.

mod html;
mod svg;
mod timeline;

use mm_reference::RunOptions;
use mm_targets::events::events_text;
use mm_targets::exec::run_trace;
use mm_targets::trace::Trace;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The trace (mmtrace text, or a raw input of `--target`).
    file: PathBuf,
    /// Where to write the picture: a name ending in `.svg` (the picture) or `.html` (a page
    /// with the picture, details on hover, and the event log).
    #[arg(long, short, value_name = "OUT")]
    out: PathBuf,
    #[command(flatten)]
    source: crate::replay::Source,
    /// Oracles to switch off, as `mmfuzz fuzz --without` (the picture of a crash found with
    /// `--without lock-order` draws the deadlock it found).
    #[arg(long, value_name = "LIST")]
    without: Option<String>,
}

/// The two things `show` can write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Svg,
    Html,
}

impl Format {
    /// By the output's extension.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "svg" => Some(Format::Svg),
            "html" | "htm" => Some(Format::Html),
            _ => None,
        }
    }
}

/// The picture of a run of `trace` with the oracles of `oracles`, titled `title`, as
/// `format`.
pub fn picture(trace: &Trace, title: &str, format: Format, oracles: &RunOptions) -> String {
    let options = RunOptions {
        events: true,
        ..*oracles
    };
    let report = run_trace(trace, &options);
    let tl = timeline::Timeline::build(trace, &report);
    let svg = svg::render(&tl, title);
    match format {
        Format::Svg => svg,
        Format::Html => html::page(title, &svg, &events_text(trace, &report)),
    }
}

/// Writes the picture of `trace` run with `oracles`, titled `title`, to `out` (its format
/// by its extension).
pub fn write_picture(trace: &Trace, title: &str, out: &Path, oracles: &RunOptions) -> Result<(), String> {
    let format =
        Format::of(out).ok_or_else(|| format!("-o {}: the output must end in .svg or .html", out.display()))?;
    std::fs::write(out, picture(trace, title, format, oracles))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

pub fn main(args: &Args) -> u8 {
    let oracles = match crate::fuzz::oracles(args.without.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let Some(traces) = args.source.load(std::slice::from_ref(&args.file)) else {
        return 2;
    };
    let title = args
        .file
        .file_name()
        .map_or_else(|| args.file.display().to_string(), |s| s.to_string_lossy().into_owned());
    match write_picture(&traces[0], &title, &args.out, &oracles) {
        Ok(()) => {
            println!("wrote {}", args.out.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
