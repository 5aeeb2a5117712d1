//! The fuzz targets: one plain function per focus, shared by every engine (cargo-fuzz, AFL,
//! bolero, the tests). [`decode`] turns an engine's bytes into a trace, [`run`] decodes and
//! runs it and panics on an oracle's violation.
//!
//! Invariants kept here:
//! - Decoding is structure-aware and total. The bytes answer the choices of the trace
//!   generator ([`generate_with`], through [`arbitrary::Unstructured`]): first the target's
//!   own choices (the machine's config, and for `swarm` which generator features are on), then
//!   every choice of the generator, which aims operations at the mappings and file ranges the
//!   trace has made so far. Any bytes give either a valid trace (`parse(&t.to_string()) ==
//!   Ok(t)`, checked by [`Trace::check`] before it is returned) or `None`; nothing panics.
//! - [`decode`] is a pure function of the target, the bytes and the bugs: no clock, no thread,
//!   no global state. The same bytes give the same trace on every engine and machine, so a
//!   crash file of any engine decodes (`mmfuzz decode`) to a trace that replays to the same
//!   outcome. What bytes mean depends on the generator's choices and on
//!   `Unstructured::int_in_range` (unchanged since arbitrary 1.1.6): a raw corpus means
//!   something only to the decoder that made it.
//! - [`run`] returns [`Verdict::Reject`] for bytes that decode to nothing, [`Verdict::Keep`]
//!   for a run whose outcome is `ok`, and panics only on a violation, with the outcome line
//!   and the whole canonical trace text (or when the reference itself panics: a bug of the
//!   model, also worth a crash). The bugs come from `MMFUZZ_BUGS`, the same for every engine.

use std::fmt;

use arbitrary::Unstructured;
use mm_reference::{Bug, BugSet, Config, Outcome, RunOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::is_valid_result;
use crate::exec::{outcome_line, run_trace};
use crate::gen::{generate_with, Choices, ConfigChoice, GenOptions, Mix};
use crate::trace::Trace;

/// The environment variable that switches bugs on for every engine: `MMFUZZ_BUGS=name,name`.
pub const BUGS_ENV: &str = "MMFUZZ_BUGS";

/// A fuzz target: what the decoded traces focus on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The built-in fuzzer's sequential traces: TRACE.md's default machine (256 frames:
    /// memory pressure), several address spaces, fork and exit, hugetlb files, no schedule.
    Sequential,
    /// Several tasks (threads and processes) on small varied machines, with a schedule and
    /// interrupts.
    Concurrent,
    /// Small frame pools that are mostly highmem, pte pages in highmem, few kmap slots, a
    /// shallow kmap_atomic stack, several CPUs, a schedule with interrupts; write and read
    /// (the kernel's kmapped copies) weighted up.
    Highmem,
    /// Several address spaces mapping the same ranges of shared regular files (pte page
    /// sharing), with fork, truncate, mremap and mprotect over them; a schedule or not.
    Ptshare,
    /// Mostly hugetlbfs files, mapped in several address spaces (pmd page sharing); a
    /// schedule or not.
    Hugetlb,
    /// The configuration itself drawn from the input: every machine key, and each generator
    /// feature (each kind of operation but mmap, fork, exit, schedule, interrupts, hugetlb
    /// files, odd arguments) on or off, so that one campaign explores many configurations.
    Swarm,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Sequential,
        Target::Concurrent,
        Target::Highmem,
        Target::Ptshare,
        Target::Hugetlb,
        Target::Swarm,
    ];

    /// The target's name (the fuzz target's and the `--target` value).
    pub fn name(self) -> &'static str {
        match self {
            Target::Sequential => "sequential",
            Target::Concurrent => "concurrent",
            Target::Highmem => "highmem",
            Target::Ptshare => "ptshare",
            Target::Hugetlb => "hugetlb",
            Target::Swarm => "swarm",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The names of every target, comma separated (for error messages).
    pub fn names() -> String {
        Target::ALL.map(Target::name).join(", ")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fuzz engine should do with an input (libFuzzer's `Corpus::Keep` / `Reject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The input decoded and ran to `ok`: worth keeping if it found new coverage.
    Keep,
    /// The input decodes to no trace: not a sensible input, keep it out of the corpus.
    Reject,
}

// ---------------------------------------------------------------------------------------------
// The bytes as the generator's choices.

/// The fuzzer's bytes answer the generator's choices: each answer takes as few bytes as its
/// range needs (none for a range of one value). When the bytes run out every answer is the
/// lowest value, and the generator stops adding operations.
impl Choices for Unstructured<'_> {
    fn below(&mut self, n: u64) -> u64 {
        self.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.int_in_range(lo..=hi.max(lo)).unwrap_or(lo)
    }
    fn below_u32(&mut self, n: u32) -> u32 {
        self.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }
    fn index(&mut self, n: usize) -> usize {
        self.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }
    fn byte(&mut self) -> u8 {
        self.int_in_range(0..=u8::MAX).unwrap_or(0)
    }
    fn exhausted(&self) -> bool {
        self.is_empty()
    }
}

fn pick<T: Copy>(c: &mut impl Choices, xs: &[T]) -> T {
    xs[c.index(xs.len())]
}

fn pct(c: &mut impl Choices, p: u32) -> bool {
    c.below_u32(100) < p
}

// ---------------------------------------------------------------------------------------------
// The targets' option sets.

/// The generator options of `target`, with the target's own choices answered by `c`.
pub fn options(target: Target, c: &mut impl Choices, bugs: BugSet) -> GenOptions {
    let opts = match target {
        Target::Sequential => focused(GenOptions::sequential()),
        Target::Concurrent => focused(GenOptions::concurrent()),
        Target::Highmem => highmem(c),
        Target::Ptshare => ptshare(c),
        Target::Hugetlb => hugetlb(c),
        Target::Swarm => swarm(c),
    };
    opts.with_bugs(bugs)
}

/// What every target changes in the generator's design: arguments aimed at mappings four
/// times as often as just off them, and 3% odd arguments (the built-in fuzzer's 8-10% would
/// make a quarter of the operations fail); every error path stays reachable from the bytes.
fn focused(opts: GenOptions) -> GenOptions {
    GenOptions {
        aim: AIM,
        odd_percent: ODD_PERCENT,
        ..opts
    }
}

/// [`GenOptions::aim`] of every target.
const AIM: u32 = 4;
/// [`GenOptions::odd_percent`] of every target but `swarm` (which draws it).
const ODD_PERCENT: u32 = 3;

fn highmem(c: &mut impl Choices) -> GenOptions {
    let frames = pick(c, &[48, 64, 96, 128]);
    let config = Config {
        cpus: c.between(2, 4) as u32,
        ptrs: pick(c, &[4, 8]),
        frames,
        highmem: pick(c, &[frames - 8, frames * 3 / 4, frames / 2]),
        pkmap: c.between(1, 4) as u32,
        atomic: pick(c, &[2, 3, 4, 8]),
        highpte: true,
        ptshare: pct(c, 50),
        ..Config::default()
    };
    GenOptions {
        config: ConfigChoice::Fixed(config),
        max_file_size: 32 * 1024,
        huge_files: false,
        mix: Mix {
            write: 14,
            read: 12,
            ..Mix::DEFAULT
        },
        ..focused(GenOptions::concurrent())
    }
}

fn ptshare(c: &mut impl Choices) -> GenOptions {
    let config = Config {
        cpus: c.between(1, 4) as u32,
        ptrs: pick(c, &[4, 8, 8]),
        frames: pick(c, &[512, 1024]),
        highpte: pct(c, 70),
        ..Config::default()
    };
    let config = Config {
        highmem: config.frames / 2,
        ..config
    };
    let schedule = pct(c, 50);
    GenOptions {
        config: ConfigChoice::Fixed(config),
        files: (1, 2),
        max_file_size: 64 * 1024,
        huge_files: false,
        max_mms: 3,
        min_tasks: 2,
        schedule,
        irq: schedule,
        mix: Mix {
            share: 16,
            fork: 5,
            exit: 2,
            truncate: 5,
            mremap: 8,
            mprotect: 8,
            ..Mix::DEFAULT
        },
        ..focused(GenOptions::concurrent())
    }
}

fn hugetlb(c: &mut impl Choices) -> GenOptions {
    let config = Config {
        cpus: c.between(1, 4) as u32,
        ptrs: pick(c, &[4, 8, 8]),
        frames: 1024,
        highmem: 512,
        highpte: pct(c, 70),
        ptshare: pct(c, 70),
        ..Config::default()
    };
    let schedule = pct(c, 50);
    GenOptions {
        config: ConfigChoice::Fixed(config),
        files: (1, 3),
        huge_files: true,
        max_mms: 3,
        min_tasks: 2,
        schedule,
        irq: schedule,
        mix: Mix {
            share: 14,
            fork: 4,
            exit: 2,
            truncate: 6,
            write: 4,
            huge_file_percent: 85,
            ..Mix::DEFAULT
        },
        ..focused(GenOptions::concurrent())
    }
}

fn swarm(c: &mut impl Choices) -> GenOptions {
    let frames = pick(c, &[32, 64, 128, 256, 512, 1024]);
    let config = Config {
        cpus: c.between(1, 4) as u32,
        ptrs: pick(c, &[4, 8, 8, 16]),
        frames,
        highmem: pick(c, &[0, frames / 4, frames / 2, frames - 8]),
        pkmap: pick(c, &[1, 2, 4, 8, 16]),
        atomic: pick(c, &[2, 4, 8, 16]),
        highpte: pct(c, 50),
        ptshare: pct(c, 50),
        hugeshare: pct(c, 50),
        ..Config::default()
    };
    let mut on = |w: u32| if pct(c, 50) { w } else { 0 };
    let d = Mix::DEFAULT;
    let mix = Mix {
        mmap: d.mmap, // without mmap nearly everything else fails
        munmap: on(d.munmap),
        mprotect: on(d.mprotect),
        mremap: on(d.mremap),
        write: on(d.write),
        read: on(d.read),
        truncate: on(d.truncate),
        load: on(d.load),
        store: on(d.store),
        pageout: on(d.pageout),
        fork: on(d.fork),
        exit: on(d.exit),
        share: on(d.share),
        huge_file_percent: pick(c, &[10, 25, 50, 90]),
    };
    let schedule = pct(c, 50);
    let min_tasks = c.between(1, 3) as u32;
    GenOptions {
        config: ConfigChoice::Fixed(config),
        ops: (1, 60),
        files: (c.below(2) as usize, 3),
        huge_files: pct(c, 50),
        max_mms: c.between(1, 3) as u32,
        min_tasks,
        max_tasks: c.between(u64::from(min_tasks), 6) as u32,
        fork: mix.fork > 0,
        exit: mix.exit > 0,
        final_exit: pct(c, 50),
        schedule,
        irq: schedule && pct(c, 50),
        odd_percent: pick(c, &[0, 2, 5, 10]),
        mix,
        ..focused(GenOptions::sequential())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding and running.

/// Decodes fuzz input bytes into a valid trace (`None`: not a sensible input, to be rejected:
/// the bytes ran out before the first operation). `bugs` go into the trace's config.
pub fn decode(target: Target, data: &[u8], bugs: BugSet) -> Option<Trace> {
    let trace = generate_from(target, data, bugs)?;
    // The generator keeps every trace valid (tests check `generate_from` for it); a trace
    // that would not round-trip is rejected rather than run.
    trace.check().is_ok().then_some(trace)
}

/// The trace the generator makes from the bytes, without [`decode`]'s round-trip check
/// (`None`: the bytes ran out before the first operation). Exposed so that tests can check
/// that every trace it gives round-trips, i.e. that [`decode`] rejects nothing else.
pub fn generate_from(target: Target, data: &[u8], bugs: BugSet) -> Option<Trace> {
    let mut u = Unstructured::new(data);
    let opts = options(target, &mut u, bugs);
    let trace = generate_with(&mut u, &opts);
    (!trace.ops.is_empty()).then_some(trace)
}

/// Decodes and runs, with the bugs of `MMFUZZ_BUGS`. On a violation panics with the oracle's
/// verdict line and the whole canonical trace text.
pub fn run(target: Target, data: &[u8]) -> Verdict {
    run_with(target, data, bugs_from_env())
}

/// [`run`] with the bugs given instead of taken from the environment.
pub fn run_with(target: Target, data: &[u8], bugs: BugSet) -> Verdict {
    match decode(target, data, bugs) {
        None => Verdict::Reject,
        Some(trace) => {
            judge(&trace);
            Verdict::Keep
        }
    }
}

/// Runs a trace with every oracle; on a violation panics with the outcome line
/// (`outcome: violation ORACLE: MESSAGE`), then the whole canonical trace text.
pub fn judge(trace: &Trace) {
    let report = run_trace(trace, &RunOptions::ALL);
    if let Outcome::Violation(_) = report.outcome {
        panic!("{}\n{}", outcome_line(&report.outcome), crash_trace_text(trace));
    }
}

/// The trace text a crash report carries: a comment line, then the canonical trace.
fn crash_trace_text(trace: &Trace) -> String {
    format!("# the decoded trace (save it as a .trace file and `mmfuzz replay` it):\n{trace}")
}

/// The bugs `MMFUZZ_BUGS` names (unset or empty: none); the error names the unknown bug.
pub fn env_bugs() -> Result<BugSet, String> {
    match std::env::var(BUGS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(BugSet::NONE),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{BUGS_ENV} is not valid UTF-8")),
        Ok(list) if list.trim().is_empty() => Ok(BugSet::NONE),
        Ok(list) => BugSet::parse(list.trim()).map_err(|e| {
            let known: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("{BUGS_ENV}={list}: {e} (known bugs: {}; or none)", known.join(", "))
        }),
    }
}

/// The bugs `MMFUZZ_BUGS` names. An unknown name is a usage error: panics with a message
/// that names it and lists the known ones (every engine stops at its first input).
pub fn bugs_from_env() -> BugSet {
    env_bugs().unwrap_or_else(|e| panic!("{e}"))
}

/// Whether a file holds trace text rather than raw fuzz input: valid UTF-8 whose first line
/// that is neither blank nor only a comment starts with the `mmtrace` header word.
pub fn looks_like_trace(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.split_whitespace().next() == Some("mmtrace"))
}

/// The share (0..=1) of decoded operations that complete with a non-error result (not an
/// errno, SIGSEGV, SIGBUS or OOM), over `samples` inputs of random bytes (64 to 2048 of them,
/// from a ChaCha8 stream fixed per target, so the figure is reproducible). Rejected inputs
/// count no operations.
pub fn valid_share(target: Target, samples: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d6d_667a);
    rng.set_stream(target as u64);
    let (mut ops, mut valid) = (0u64, 0u64);
    let mut data = Vec::new();
    for _ in 0..samples {
        let len = rng.gen_range(64..=2048);
        data.clear();
        data.extend((0..len).map(|_| rng.gen::<u8>()));
        let Some(trace) = decode(target, &data, BugSet::NONE) else {
            continue;
        };
        let report = run_trace(&trace, &RunOptions::ALL);
        ops += trace.ops.len() as u64;
        valid += report.completed.iter().filter(|(_, r)| is_valid_result(r)).count() as u64;
    }
    if ops == 0 {
        0.0
    } else {
        valid as f64 / ops as f64
    }
}
