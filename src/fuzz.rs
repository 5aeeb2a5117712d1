//! `mmfuzz fuzz`: the built-in fuzzer on the reference (`mm_targets::engine`).
//!
//! What it keeps true:
//! - A run is reproducible: the seed is always printed (at the start, and in the name and
//!   header of a crash file), and the same `--seed`, `--mode`, `--bugs` and `--runs` do the
//!   same work. Without `--seed` the seed is taken from the clock (and printed).
//! - Limits: `--runs N` stops after N executions, `--time SECONDS` after that long; without
//!   either it runs for 60 seconds. With both, whichever comes first.
//! - A finding is never lost: the whole canonical trace, as run (its `config bugs=...`
//!   included), is written to `ARTIFACTS/crash-SEED-RUN.trace` under a `# violation ORACLE:
//!   MESSAGE` comment, with the command that replays it printed. If the file cannot be
//!   written the trace goes to standard output instead. A violation is minimized beside it
//!   (`crash-SEED-RUN.min.trace`) and drawn there too (`crash-SEED-RUN.min.svg`, as
//!   `mmfuzz show` draws it).
//! - Exit status: 0 no finding, 1 a violation (or a panic of the reference, a bug of the
//!   model, reported the same way with `# model panic: ...`), 2 bad arguments.
//! - Progress goes to standard error: a line rewritten in place every second on a terminal,
//!   otherwise a plain line every 10 seconds.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mm_reference::{BugSet, RunOptions};
use mm_targets::engine::{fuzz, Crash, Finding, FuzzConfig, Mode, Stats};

/// Without `--time` and `--runs`, the fuzzer runs this long.
const DEFAULT_SECONDS: u64 = 60;

#[derive(clap::Args)]
pub struct Args {
    /// Seed (decimal or 0x hex). Default: taken from the clock, and printed.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Stop after this many seconds (default 60 when --runs is not given either).
    #[arg(long, value_name = "SECONDS")]
    time: Option<f64>,
    /// Stop after this many executions.
    #[arg(long, value_name = "N")]
    runs: Option<u64>,
    /// Historic bugs to switch on: a comma list of names (MODEL.md), or `none`.
    #[arg(long, value_name = "LIST", default_value = "none")]
    bugs: String,
    /// Where crash traces are written.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    artifacts: PathBuf,
    /// Which trace generator to use: sequential, concurrent, mixed (both) or conform.
    #[arg(long, default_value = "mixed")]
    mode: String,
    /// Oracles to switch off, a comma list: lock-order (a lock inversion is then reported
    /// only if it deadlocks), spec, tlb, leak, or rss (which also switches off refcount and
    /// use-after-free: one walk checks all three).
    #[arg(long, value_name = "LIST")]
    without: Option<String>,
}

/// The oracles left on by `--without` (also `show`'s).
pub fn oracles(without: Option<&str>) -> Result<RunOptions, String> {
    let mut o = RunOptions::ALL;
    for name in without.into_iter().flat_map(|w| w.split(',')).filter(|n| !n.is_empty()) {
        match name {
            "lock-order" => o.lock_order = false,
            "spec" => o.spec = false,
            "tlb" => o.tlb = false,
            "leak" => o.leak = false,
            "rss" | "refcount" | "use-after-free" => o.tables = false,
            _ => {
                return Err(format!(
                    "--without: `{name}` cannot be switched off (lock-order, spec, tlb, leak, rss)"
                ))
            }
        }
    }
    Ok(o)
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("`{s}` is not a seed: {e}"))
}

pub fn main(args: &Args) -> u8 {
    match configure(args) {
        Ok((cfg, mode)) => run(&cfg, mode, &args.artifacts),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn configure(args: &Args) -> Result<(FuzzConfig, Mode), String> {
    let bugs = BugSet::parse(&args.bugs)?;
    let mode: Mode = args.mode.parse()?;
    let time = match args.time {
        Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| format!("--time {t} is not a duration"))?),
        None if args.runs.is_none() => Some(Duration::from_secs(DEFAULT_SECONDS)),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(clock_seed);
    let options = oracles(args.without.as_deref())?;
    Ok((
        FuzzConfig {
            seed,
            time,
            runs: args.runs,
            bugs,
            gen: mode.gens(),
            options,
        },
        mode,
    ))
}

/// A seed from the clock, for runs that did not ask for one.
fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Fold the 128-bit count so that runs started close together still differ widely.
    let x = (nanos as u64) ^ ((nanos >> 64) as u64);
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

fn status(s: &Stats) -> String {
    format!(
        "fuzz: {:.0} s, {} execs, {:.0} exec/s, valid ops {:.1}%",
        s.elapsed.as_secs_f64(),
        s.execs,
        s.exec_per_sec(),
        100.0 * s.valid_share()
    )
}

fn run(cfg: &FuzzConfig, mode: Mode, artifacts: &Path) -> u8 {
    eprintln!("fuzz: seed {}, mode {}, bugs {}", cfg.seed, mode.name(), cfg.bugs);
    crate::warn_unmodelled(cfg.bugs);
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 10 });
    let mut next = Instant::now() + every;
    let mut shown = false;
    let result = fuzz(cfg, |s| {
        if Instant::now() < next {
            return;
        }
        next = Instant::now() + every;
        let mut err = std::io::stderr().lock();
        if terminal {
            // Pad so a shorter line covers the previous one.
            let _ = write!(err, "\r{:<72}", status(s));
            let _ = err.flush();
            shown = true;
        } else {
            let _ = writeln!(err, "{}", status(s));
        }
    });
    if shown {
        eprintln!();
    }
    let s = &result.stats;
    let summary = format!(
        "{} executions in {:.1} s ({:.0} exec/s)",
        s.execs,
        s.elapsed.as_secs_f64(),
        s.exec_per_sec()
    );
    eprintln!(
        "fuzz: valid ops {:.1}% ({} of {} generated operations completed without an error)",
        100.0 * s.valid_share(),
        s.valid,
        s.ops
    );
    match &result.crash {
        None => {
            println!("fuzz: {summary}, no violation");
            0
        }
        Some(crash) => {
            report(cfg, mode, artifacts, crash);
            println!("fuzz: {summary}");
            1
        }
    }
}

/// Writes the crash trace and prints the finding and the command that replays it.
fn report(cfg: &FuzzConfig, mode: Mode, artifacts: &Path, crash: &Crash) {
    let mut text = String::new();
    let headline = crash.finding.to_string();
    for (i, line) in headline.lines().enumerate() {
        text.push_str(if i == 0 { "# " } else { "#   " });
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "# found by: mmfuzz fuzz --seed {} --mode {} --bugs {}{} (run {})\n",
        cfg.seed,
        mode.name(),
        cfg.bugs,
        if cfg.options.lock_order {
            ""
        } else {
            " --without lock-order"
        },
        crash.run
    ));
    text.push_str(&crash.trace.to_string());

    println!("{headline}");
    let path = artifacts.join(format!("crash-{}-{}.trace", cfg.seed, crash.run));
    let written = std::fs::create_dir_all(artifacts).and_then(|()| std::fs::write(&path, &text));
    match written {
        Ok(()) => {
            println!("saved {}", path.display());
            println!("replay: mmfuzz replay {}", path.display());
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}; the trace follows", path.display());
            print!("{text}");
        }
    }
    match &crash.finding {
        Finding::Panic(_) => {
            println!("(a panic of the reference is a bug of the model, not of the modelled kernel)");
        }
        Finding::Violation(v) => minimize_crash(&crash.trace, v.oracle, &path, &cfg.options),
    }
}

/// Minimizes a crash keeping its oracle (and bug switches) and saves it beside the raw one.
fn minimize_crash(trace: &mm_targets::trace::Trace, oracle: mm_reference::Oracle, raw: &Path, options: &RunOptions) {
    use mm_reference::{Outcome, Reference};
    let mut reference = Reference::new();
    let bugs = trace.config.bugs;
    let small = mm_targets::minimize::minimize(trace, &mut |t| {
        let r = reference.run(&t.config, &t.files, &t.tasks, &t.ops, &t.schedule, options);
        t.config.bugs == bugs && matches!(r.outcome, Outcome::Violation(v) if v.oracle == oracle)
    });
    let path = raw.with_extension("min.trace");
    let text = format!("# minimized from {}: keeps violation {oracle}\n{small}", raw.display());
    match std::fs::write(&path, text) {
        Ok(()) => {
            println!(
                "minimized: {} -> {} lines, saved {}",
                mm_targets::minimize::lines(trace),
                mm_targets::minimize::lines(&small),
                path.display()
            );
            println!("replay: mmfuzz replay {}", path.display());
        }
        Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
    }
    // Its picture beside it (`mmfuzz show`, with the oracles of this run: the violation it
    // keeps is the one drawn).
    let picture = raw.with_extension("min.svg");
    let title = path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    match crate::show::write_picture(&small, &title, &picture, options) {
        Ok(()) => println!("picture: {}", picture.display()),
        Err(e) => eprintln!("error: {e}"),
    }
}
