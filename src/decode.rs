//! `mmfuzz decode FILE...`: turns raw inputs of any fuzz engine (a libFuzzer artifact, an AFL
//! crash, a bolero corpus file) into the `.trace` text that replays to the same outcome.
//!
//! What it keeps true:
//! - The trace printed for a file is exactly the one `mm_targets::targets::decode` gives for
//!   its bytes, the target and the bugs, which is the trace the fuzz target ran: `mmfuzz
//!   replay` of it gives the outcome the target saw (its panic message starts with the same
//!   outcome line). It is canonical, after one comment line that says where it came from.
//! - The bugs are `--bugs LIST` if given, else `MMFUZZ_BUGS` as every engine reads it, else
//!   none; they are in the trace's `config bugs=...`.
//! - Every file is read and decoded before anything is printed or written: an unreadable
//!   file, an input the target rejects, an unknown target or bug is an `error: ...` on
//!   standard error with exit status 2, and nothing is output.
//!
//! [`load`] is also how `mmfuzz replay` reads its files: trace text, or a raw input decoded
//! for a target.

use std::io::Write;
use std::path::{Path, PathBuf};

use mm_reference::BugSet;
use mm_targets::targets::{self, looks_like_trace, Target};
use mm_targets::trace::{parse, Trace};

#[derive(clap::Args)]
pub struct Args {
    /// Raw inputs of a fuzz engine (libFuzzer or AFL crash files, corpus entries).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The fuzz target that ran them: sequential, concurrent, highmem, ptshare, hugetlb or
    /// swarm.
    #[arg(long, value_name = "NAME", default_value = "sequential")]
    target: String,
    /// Bugs to put in the trace's config (a comma list, or `none`). Default: `MMFUZZ_BUGS`,
    /// as the engines read it.
    #[arg(long, value_name = "LIST")]
    bugs: Option<String>,
    /// Write each trace to DIR/NAME.trace (NAME: the input's file name) instead of standard
    /// output.
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn main(args: &Args) -> u8 {
    let (target, bugs) = match target_and_bugs(&args.target, args.bugs.as_deref()) {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut traces = Vec::new();
    let mut bad = false;
    for path in &args.files {
        match std::fs::read(path) {
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                bad = true;
            }
            Ok(bytes) => match decode_raw(path, &bytes, target, bugs) {
                Ok(t) => traces.push(t),
                Err(e) => {
                    eprintln!("{e}");
                    bad = true;
                }
            },
        }
    }
    if bad {
        return 2;
    }
    crate::warn_unmodelled(bugs);
    let texts: Vec<String> = args
        .files
        .iter()
        .zip(&traces)
        .map(|(path, trace)| {
            format!(
                "# decoded from {} by `mmfuzz decode --target {target}`\n{trace}",
                path.display()
            )
        })
        .collect();
    match &args.out {
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for (i, text) in texts.iter().enumerate() {
                if i > 0 {
                    let _ = writeln!(out);
                }
                let _ = out.write_all(text.as_bytes());
            }
            0
        }
        Some(dir) => write_all(dir, &args.files, &texts),
    }
}

/// Writes each text to `dir/NAME.trace` and prints the paths written.
fn write_all(dir: &Path, files: &[PathBuf], texts: &[String]) -> u8 {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: {}: {e}", dir.display());
        return 2;
    }
    for (path, text) in files.iter().zip(texts) {
        let name = path.file_name().map_or_else(|| "input".into(), |n| n.to_string_lossy());
        let dest = dir.join(format!("{name}.trace"));
        if let Err(e) = std::fs::write(&dest, text) {
            eprintln!("error: {}: {e}", dest.display());
            return 2;
        }
        println!("{}", dest.display());
    }
    0
}

/// The target named `name`, and the bugs of a raw input: `bugs` if given, else
/// `MMFUZZ_BUGS`, else none.
pub fn target_and_bugs(name: &str, bugs: Option<&str>) -> Result<(Target, BugSet), String> {
    let target = Target::from_name(name).ok_or_else(|| {
        format!(
            "--target: unknown target `{name}` (expected one of {})",
            Target::names()
        )
    })?;
    let bugs = match bugs {
        Some(list) => BugSet::parse(list).map_err(|e| format!("--bugs: {e}"))?,
        None => targets::env_bugs()?,
    };
    Ok((target, bugs))
}

/// Decodes one raw input; the error is the `error: ...` line for standard error.
fn decode_raw(path: &Path, bytes: &[u8], target: Target, bugs: BugSet) -> Result<Trace, String> {
    targets::decode(target, bytes, bugs).ok_or_else(|| {
        format!(
            "error: {}: target `{target}` rejects this input ({} bytes decode to no operation)",
            path.display(),
            bytes.len()
        )
    })
}

/// Reads a file for `replay`: trace text if its name ends in `.trace` or its first line that
/// is not blank or a comment starts with `mmtrace`; otherwise a raw input of `target`,
/// decoded with `raw_bugs`. The error is the `error: ...` text for standard error.
pub fn load(path: &Path, target: Target, raw_bugs: BugSet) -> Result<Trace, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("error: {}: {e}", path.display()))?;
    let named_trace = path.extension().is_some_and(|e| e == "trace");
    if named_trace || looks_like_trace(&bytes) {
        let text =
            std::str::from_utf8(&bytes).map_err(|e| format!("error: {}: not UTF-8 text: {e}", path.display()))?;
        return parse(text).map_err(|e| format!("error: {e} (in {})", path.display()));
    }
    decode_raw(path, &bytes, target, raw_bugs)
}
