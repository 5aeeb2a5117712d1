//! `mmfuzz fuzz`: the built-in fuzzer on the reference: the guided engine
//! (`mm_targets::guided`: coverage-guided corpus, trace-aware mutations, swarm generation,
//! `--jobs N` workers sharing one corpus) or, with `--engine random`, plain generation
//! (`mm_targets::engine`).
//!
//! What it keeps true:
//! - A run is reproducible: the seed is always printed (at the start, and in the name and
//!   header of a crash file), and the same `--seed`, `--mode`, `--bugs`, `--engine` and
//!   `--runs` do the same work with one job. Without `--seed` the seed is taken from the
//!   clock (and printed).
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
//! - Every finding is also minimized (same oracle, same bug switches) and saved beside the
//!   raw one as `crash-SEED-RUN.min.trace`, with the command that replays it.
//! - Progress goes to standard error as a status line rewritten in place every second
//!   (elapsed, exec/s, corpus, features, crashes), only on a terminal; elsewhere only the
//!   summary is printed.
//! - Ctrl-C stops the engine between executions; what it found so far is saved and
//!   reported as at any other end.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mm_reference::{BugSet, RunOptions};
use mm_targets::engine::{fuzz_until, Crash, Finding, FuzzConfig, Mode};
use mm_targets::guided::{guided, GuidedConfig, Status};

/// Set by Ctrl-C: the engine stops between executions.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (once per process).
pub fn catch_interrupt() -> &'static AtomicBool {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| INTERRUPT.store(true, Ordering::Relaxed)) {
            eprintln!("warning: Ctrl-C will not stop cleanly: {e}");
        }
    });
    &INTERRUPT
}

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
    /// The engine: guided (coverage feedback, a corpus, mutations) or random (generation only).
    #[arg(long, default_value = "guided")]
    engine: String,
    /// Workers sharing one corpus (guided engine).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Go on after a finding, keeping each new one (oracle and message shape), until a limit.
    #[arg(long)]
    keep_going: bool,
}

/// Which engine `mmfuzz fuzz` runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Guided,
    Random,
}

impl Engine {
    pub fn parse(s: &str) -> Result<Engine, String> {
        match s {
            "guided" => Ok(Engine::Guided),
            "random" => Ok(Engine::Random),
            _ => Err(format!("unknown engine `{s}` (expected guided or random)")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Engine::Guided => "guided",
            Engine::Random => "random",
        }
    }
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

/// The `--without` flag that gives `o` (with its leading space; empty for every oracle on),
/// for the commands a crash report prints.
pub fn without_flag(o: &RunOptions) -> String {
    let off: Vec<&str> = [
        (o.lock_order, "lock-order"),
        (o.spec, "spec"),
        (o.tlb, "tlb"),
        (o.leak, "leak"),
        (o.tables, "rss"),
    ]
    .into_iter()
    .filter(|&(on, _)| !on)
    .map(|(_, name)| name)
    .collect();
    if off.is_empty() {
        String::new()
    } else {
        format!(" --without {}", off.join(","))
    }
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("`{s}` is not a seed: {e}"))
}

pub fn main(args: &Args) -> u8 {
    let engine = match Engine::parse(&args.engine) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if args.jobs == 0 || (args.jobs > 1 && engine == Engine::Random) {
        eprintln!("error: --jobs must be at least 1 (and 1 with --engine random)");
        return 2;
    }
    match configure(args) {
        Ok((cfg, mode)) => run(&cfg, mode, engine, args, &args.artifacts),
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
            past_panics: false,
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

fn status(s: &Status) -> String {
    let st = &s.stats;
    format!(
        "fuzz: {:.0} s, {} execs, {:.0} exec/s, corpus {}, features {}, crashes {}",
        st.elapsed.as_secs_f64(),
        st.execs,
        st.exec_per_sec(),
        s.corpus,
        s.features,
        s.crashes
    )
}

/// The status line on a terminal, rewritten in place: `show` prints one, `done` ends it.
pub struct StatusLine {
    terminal: bool,
    shown: bool,
}

impl StatusLine {
    pub fn new() -> StatusLine {
        StatusLine {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }
    pub fn show(&mut self, line: &str) {
        if self.terminal {
            let mut err = std::io::stderr().lock();
            // Pad so that a shorter line covers the previous one.
            let _ = write!(err, "\r{line:<90}");
            let _ = err.flush();
            self.shown = true;
        }
    }
    pub fn done(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprintln!();
        }
    }
}

fn run(cfg: &FuzzConfig, mode: Mode, engine: Engine, args: &Args, artifacts: &Path) -> u8 {
    eprintln!(
        "fuzz: seed {}, mode {}, bugs {}, engine {}, jobs {}",
        cfg.seed,
        mode.name(),
        cfg.bugs,
        engine.name(),
        args.jobs
    );
    crate::warn_unmodelled(cfg.bugs);
    let interrupt = catch_interrupt();
    let mut line = StatusLine::new();
    let (status, crashes, interrupted) = match engine {
        Engine::Guided => {
            let gcfg = GuidedConfig {
                seed: cfg.seed,
                time: cfg.time,
                runs: cfg.runs,
                bugs: cfg.bugs,
                mode,
                options: cfg.options,
                jobs: args.jobs,
                keep_going: args.keep_going,
                past_panics: false,
            };
            let r = guided(&gcfg, interrupt, Duration::from_secs(1), |s| line.show(&status(s)));
            (r.status, r.crashes, r.interrupted)
        }
        Engine::Random => {
            let every = Duration::from_secs(1);
            let mut next = Instant::now() + every;
            let r = fuzz_until(cfg, interrupt, |s| {
                if Instant::now() >= next {
                    next = Instant::now() + every;
                    line.show(&status(&Status {
                        stats: s.clone(),
                        ..Status::default()
                    }));
                }
            });
            let status = Status {
                stats: r.stats,
                ..Status::default()
            };
            (status, r.crash.into_iter().collect(), interrupt.load(Ordering::Relaxed))
        }
    };
    line.done();
    let s = &status.stats;
    let mut summary = format!(
        "{} executions in {:.1} s ({:.0} exec/s)",
        s.execs,
        s.elapsed.as_secs_f64(),
        s.exec_per_sec()
    );
    if engine == Engine::Guided {
        summary.push_str(&format!(", corpus {}, features {}", status.corpus, status.features));
    }
    if interrupted {
        summary.push_str(", interrupted");
    }
    eprintln!(
        "fuzz: valid ops {:.1}% ({} of {} generated operations completed without an error)",
        100.0 * s.valid_share(),
        s.valid,
        s.ops
    );
    let how = How {
        seed: cfg.seed,
        mode,
        engine,
        bugs: cfg.bugs,
        options: cfg.options,
    };
    for crash in &crashes {
        report(&how, artifacts, crash);
    }
    if crashes.is_empty() {
        println!("fuzz: {summary}, no violation");
        0
    } else {
        println!("fuzz: {summary}, {} finding(s)", crashes.len());
        1
    }
}

/// How a finding was found (for its file's header).
pub struct How {
    pub seed: u64,
    pub mode: Mode,
    pub engine: Engine,
    pub bugs: BugSet,
    pub options: RunOptions,
}

/// Writes the crash trace and prints the finding and the command that replays it.
pub fn report(how: &How, artifacts: &Path, crash: &Crash) {
    let mut text = String::new();
    let headline = crash.finding.to_string();
    for (i, line) in headline.lines().enumerate() {
        text.push_str(if i == 0 { "# " } else { "#   " });
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "# found by: mmfuzz fuzz --seed {} --mode {} --engine {} --bugs {}{} (execution {})\n",
        how.seed,
        how.mode.name(),
        how.engine.name(),
        how.bugs,
        without_flag(&how.options),
        crash.run
    ));
    text.push_str(&crash.trace.to_string());

    println!("{headline}");
    let path = artifacts.join(format!("crash-{}-{}.trace", how.seed, crash.run));
    let written = std::fs::create_dir_all(artifacts).and_then(|()| std::fs::write(&path, &text));
    match written {
        Ok(()) => {
            println!("saved {}", path.display());
            println!("replay: mmfuzz replay{} {}", without_flag(&how.options), path.display());
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}; the trace follows", path.display());
            print!("{text}");
        }
    }
    if let Finding::Panic(_) = &crash.finding {
        println!("(a panic of the reference is a bug of the model, not of the modelled kernel)");
    }
    minimize_crash(&crash.trace, &crash.finding, &path, &how.options);
}

/// Minimizes a crash keeping its oracle (and bug switches) and saves it beside the raw one.
fn minimize_crash(trace: &mm_targets::trace::Trace, finding: &Finding, raw: &Path, options: &RunOptions) {
    let (small, _) = mm_targets::minimize::minimize_finding(trace, finding, options);
    let path = raw.with_extension("min.trace");
    let keeps = match finding {
        Finding::Violation(v) => format!("violation {}", v.oracle),
        Finding::Panic(_) => "the same model panic".to_string(),
    };
    let text = format!("# minimized from {}: keeps {keeps}\n{small}", raw.display());
    match std::fs::write(&path, text) {
        Ok(()) => {
            println!(
                "minimized: {} -> {} lines, saved {}",
                mm_targets::minimize::lines(trace),
                mm_targets::minimize::lines(&small),
                path.display()
            );
            println!("replay: mmfuzz replay{} {}", without_flag(options), path.display());
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
