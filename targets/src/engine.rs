//! The first built-in fuzz loop: generate a trace, run it on the reference with every oracle,
//! repeat until a violation, a run limit or a time limit.
//!
//! Invariants kept here:
//! - Run `n` of seed `s` is a pure function of `s`, `n` and the option sets: its trace comes
//!   from a [`ChaCha8Rng`] seeded with `s` on stream `n` ([`trace_for`]), so a run can be
//!   regenerated alone, and two loops with the same seed and run limit do the same work and
//!   report the same counts. The clock only decides when a time limit is reached and how fast
//!   the loop goes; it never picks a trace.
//! - The loop stops at the first finding (an oracle's violation, or a panic of the reference,
//!   which is a bug of the model) and returns the whole trace that produced it, with
//!   `config.bugs` set as it was run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mm_reference::{BugSet, OpResult, Outcome, Reference, RunOptions, RunReport, Violation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gen::{generate, GenOptions};
use crate::trace::Trace;

/// Which generator option sets a fuzz loop draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// [`GenOptions::sequential`] only.
    Sequential,
    /// [`GenOptions::concurrent`] only.
    Concurrent,
    /// Both, each run choosing one at random (the default).
    Mixed,
    /// [`GenOptions::conform`] only: traces a real kernel could run too.
    Conform,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Sequential, Mode::Concurrent, Mode::Mixed, Mode::Conform];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Concurrent => "concurrent",
            Mode::Mixed => "mixed",
            Mode::Conform => "conform",
        }
    }

    /// The option sets of this mode (bugs off; [`fuzz`] sets them from [`FuzzConfig::bugs`]).
    pub fn gens(self) -> Vec<GenOptions> {
        match self {
            Mode::Sequential => vec![GenOptions::sequential()],
            Mode::Concurrent => vec![GenOptions::concurrent()],
            Mode::Mixed => vec![GenOptions::sequential(), GenOptions::concurrent()],
            Mode::Conform => vec![GenOptions::conform()],
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode `{s}` (expected sequential, concurrent, mixed or conform)"))
    }
}

/// What a fuzz loop does.
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    pub seed: u64,
    /// Stop after this long (checked between runs).
    pub time: Option<Duration>,
    /// Stop after this many runs.
    pub runs: Option<u64>,
    /// Switched on in every generated trace's config (overrides the option sets' `bugs`).
    pub bugs: BugSet,
    /// The generator option sets; each run draws one uniformly. Empty means [`Mode::Mixed`].
    pub gen: Vec<GenOptions>,
    /// The oracles that judge each run.
    pub options: RunOptions,
    /// Go on past a panic of the model (a bug of the reference, kept in
    /// [`FuzzResult::panics`]) and stop only at a violation or a limit.
    pub past_panics: bool,
}

impl FuzzConfig {
    /// A loop over [`Mode::Mixed`] with no bugs and no limits (set `time` or `runs`).
    pub fn new(seed: u64) -> FuzzConfig {
        FuzzConfig {
            seed,
            time: None,
            runs: None,
            bugs: BugSet::NONE,
            gen: Mode::Mixed.gens(),
            options: RunOptions::ALL,
            past_panics: false,
        }
    }
}

/// Counts of a fuzz loop so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Traces run.
    pub execs: u64,
    /// Wall-clock time since the loop started (the only non-deterministic field).
    pub elapsed: Duration,
    /// Operation lines generated, over all runs.
    pub ops: u64,
    /// Operations the reference completed, over all runs.
    pub completed: u64,
    /// Operations the reference completed with a non-error result (not an errno, SIGSEGV,
    /// SIGBUS or OOM).
    pub valid: u64,
}

impl Stats {
    /// Executions per second.
    pub fn exec_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.execs as f64 / s
        } else {
            0.0
        }
    }

    /// The share (0..=1) of generated operations that completed with a non-error result.
    pub fn valid_share(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            self.valid as f64 / self.ops as f64
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// An oracle judged the modelled kernel wrong.
    Violation(Violation),
    /// The reference panicked: a bug of the model itself. The panic's message.
    Panic(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Violation(v) => write!(f, "violation {v}"),
            Finding::Panic(m) => write!(f, "model panic: {m}"),
        }
    }
}

/// A run that found something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// The run's number (its rng stream).
    pub run: u64,
    /// The whole trace as run (with `config.bugs`).
    pub trace: Trace,
    pub finding: Finding,
}

/// How a fuzz loop ended.
#[derive(Clone, Debug)]
pub struct FuzzResult {
    pub stats: Stats,
    /// The finding that stopped the loop, if any; `None` when a limit was reached first.
    pub crash: Option<Crash>,
    /// With [`FuzzConfig::past_panics`]: the panics of the model the loop went on past (the
    /// first [`MAX_PANICS`]).
    pub panics: Vec<Crash>,
}

/// The most panics of the model a loop keeps while going on past them.
pub const MAX_PANICS: usize = 100;

/// What one run's result adds to the counts (operations completed, and completed with a
/// non-error result) and what it found, for every engine.
pub fn judge(result: &Result<RunReport, String>) -> (u64, u64, Option<Finding>) {
    match result {
        Ok(report) => {
            let valid = report.completed.iter().filter(|(_, r)| is_valid_result(r)).count();
            let finding = match &report.outcome {
                Outcome::Ok => None,
                Outcome::Violation(v) => Some(Finding::Violation(v.clone())),
            };
            (report.completed.len() as u64, valid as u64, finding)
        }
        Err(message) => (0, 0, Some(Finding::Panic(message.clone()))),
    }
}

/// The trace of run `run` of the loop `cfg` (as [`fuzz`] generates it).
pub fn trace_for(cfg: &FuzzConfig, run: u64) -> Trace {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(run);
    let default;
    let gens = if cfg.gen.is_empty() {
        default = Mode::Mixed.gens();
        &default
    } else {
        &cfg.gen
    };
    let i = if gens.len() == 1 {
        0
    } else {
        rng.gen_range(0..gens.len())
    };
    let opts = gens[i].clone().with_bugs(cfg.bugs);
    generate(&mut rng, &opts)
}

/// Runs a trace on the reference with every oracle; a panic of the reference becomes
/// `Err(message)`.
pub fn run_trace(trace: &Trace) -> Result<RunReport, String> {
    run_trace_on(&mut Reference::new(), trace)
}

/// As [`run_trace`], on a reference kept across runs (its memory is reused). After a panic the
/// reference is replaced: a model that panicked mid-run is not trusted again.
pub fn run_trace_on(reference: &mut Reference, trace: &Trace) -> Result<RunReport, String> {
    run_trace_with(reference, trace, &RunOptions::ALL)
}

/// As [`run_trace_on`], judged by the oracles `options` names.
pub fn run_trace_with(reference: &mut Reference, trace: &Trace, options: &RunOptions) -> Result<RunReport, String> {
    catch_unwind(AssertUnwindSafe(|| {
        reference.run(
            &trace.config,
            &trace.files,
            &trace.tasks,
            &trace.ops,
            &trace.schedule,
            options,
        )
    }))
    .inspect_err(|_| *reference = Reference::new())
    .map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-text payload".to_string()
        }
    })
}

/// Whether a result is a success (not an errno, a signal or OOM).
pub fn is_valid_result(r: &OpResult) -> bool {
    !matches!(
        r,
        OpResult::Err(_) | OpResult::Sigsegv | OpResult::Sigbus | OpResult::Oom
    )
}

/// The fuzz loop. Calls `on_progress` after every run (it decides itself how often to show
/// anything). Without `time` and `runs` it runs until it finds something.
pub fn fuzz(cfg: &FuzzConfig, on_progress: impl FnMut(&Stats)) -> FuzzResult {
    fuzz_until(cfg, &AtomicBool::new(false), on_progress)
}

/// As [`fuzz`], stopping also (between runs) once `interrupt` is set.
pub fn fuzz_until(cfg: &FuzzConfig, interrupt: &AtomicBool, mut on_progress: impl FnMut(&Stats)) -> FuzzResult {
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut reference = Reference::new();
    let mut panics = Vec::new();
    loop {
        stats.elapsed = start.elapsed();
        let out_of_runs = cfg.runs.is_some_and(|n| stats.execs >= n);
        let out_of_time = cfg.time.is_some_and(|t| stats.elapsed >= t);
        if out_of_runs || out_of_time || interrupt.load(Ordering::Relaxed) {
            return FuzzResult {
                stats,
                crash: None,
                panics,
            };
        }
        let n = stats.execs;
        let trace = trace_for(cfg, n);
        let result = run_trace_with(&mut reference, &trace, &cfg.options);
        let (completed, valid, finding) = judge(&result);
        stats.execs += 1;
        stats.ops += trace.ops.len() as u64;
        stats.completed += completed;
        stats.valid += valid;
        stats.elapsed = start.elapsed();
        on_progress(&stats);
        let Some(finding) = finding else { continue };
        let crash = Crash { run: n, trace, finding };
        if cfg.past_panics && matches!(crash.finding, Finding::Panic(_)) {
            if panics.len() < MAX_PANICS {
                panics.push(crash);
            }
            continue;
        }
        return FuzzResult {
            stats,
            crash: Some(crash),
            panics,
        };
    }
}
