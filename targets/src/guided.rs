//! The guided engine: a corpus of traces that reached new model-level coverage features,
//! grown by trace-aware mutations (`mutate.rs`) and fresh swarm-configured generation, run by
//! one or more workers sharing the corpus.
//!
//! Each execution runs a trace on the reference with every oracle and with coverage on
//! (`RunOptions::coverage`: kernel path points, lock classes held together, kmap pool and
//! atomic stack states, stale TLB entries not yet judged, sleepers and chains of them, memory
//! states, interleavings). A trace that reaches a feature no earlier trace reached joins the
//! corpus. Most executions mutate a corpus trace (picked uniformly, or among the newest
//! quarter), the rest generate a fresh one from a *swarm* configuration: the mode's option
//! sets and the fuzz targets' (`targets::options`), with kinds of operation switched off at
//! random, so that rare combinations get whole traces to themselves.
//!
//! Invariants kept here:
//! - With one job, the engine is a pure function of the seed, the mode, the bugs and the
//!   option sets: every decision comes from one [`ChaCha8Rng`] and the reports, and the
//!   corpus grows in execution order, so `--runs N --seed S` does the same work every time
//!   (the clock only decides when a time limit is reached). With several jobs each worker has
//!   its own rng stream, and the order in which they share finds depends on timing.
//! - Every trace run is valid (generated, or a mutant that prints and parses back).
//! - A finding is kept: the first violation (or panic of the model) stops the engine and is
//!   returned; with `keep_going` every finding with a new signature (oracle and message with
//!   numbers blanked) is kept and the engine goes on. `interrupt` (Ctrl-C) stops it between
//!   executions, keeping everything found so far.
//! - Memory stays bounded: at most [`MAX_CORPUS`] traces are kept (a full corpus replaces a
//!   random older entry), the feature set is a set of `u32`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mm_reference::{BugSet, Outcome, Reference, RunOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::{judge, run_trace_with, Crash, Finding, Mode, Stats};
use crate::gen::{generate, GenOptions, Mix};
use crate::mutate::mutate;
use crate::targets::{options as target_options, Target};
use crate::trace::Trace;

/// The most traces the corpus keeps.
pub const MAX_CORPUS: usize = 20_000;

/// Percent of executions that generate a fresh trace once the corpus is not empty: more
/// while the engine is young (the first [`YOUNG`] executions of a worker), when fresh traces
/// still find new features fastest. At 12% the guided engine's median time to
/// `ptshare-mremap-newrange` was 13.5 s against random generation's 0.9 s; at 40%, 4.6 s
/// (`mmfuzz hunt --bug NAME --runs 10 --time 60`, BENCHMARKS.md).
const FRESH_PERCENT: u32 = 40;
const YOUNG_FRESH_PERCENT: u32 = 50;
const YOUNG: u64 = 2_000;

/// What a guided run does.
#[derive(Clone, Debug)]
pub struct GuidedConfig {
    pub seed: u64,
    /// Stop after this long (checked between executions).
    pub time: Option<Duration>,
    /// Stop after this many executions (all workers together).
    pub runs: Option<u64>,
    /// Switched on in every trace's config; mutations never change them.
    pub bugs: BugSet,
    /// Where fresh traces come from ([`Mode::Conform`] only generates: its traces must stay
    /// inside the conformance window, which mutations do not keep).
    pub mode: Mode,
    /// The oracles (coverage is switched on by the engine).
    pub options: RunOptions,
    /// Workers sharing the corpus (threads), at least 1.
    pub jobs: usize,
    /// Go on after a finding (keeping each new signature) instead of stopping.
    pub keep_going: bool,
    /// Go on after a panic of the model (keeping it) even without `keep_going`: for
    /// measuring the time to a violation on a model that also has a bug of its own.
    pub past_panics: bool,
}

impl GuidedConfig {
    pub fn new(seed: u64) -> GuidedConfig {
        GuidedConfig {
            seed,
            time: None,
            runs: None,
            bugs: BugSet::NONE,
            mode: Mode::Mixed,
            options: RunOptions::ALL,
            jobs: 1,
            keep_going: false,
            past_panics: false,
        }
    }
}

/// The engine's state as a status line shows it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub stats: Stats,
    /// Traces in the corpus.
    pub corpus: usize,
    /// Distinct features reached.
    pub features: usize,
    /// Findings kept.
    pub crashes: usize,
}

/// How a guided run ended.
#[derive(Clone, Debug)]
pub struct GuidedResult {
    pub status: Status,
    /// Findings in the order they were kept (at most one without `keep_going`).
    pub crashes: Vec<Crash>,
    /// Whether `interrupt` stopped it.
    pub interrupted: bool,
}

struct Entry {
    trace: Trace,
}

#[derive(Default)]
struct Corpus {
    entries: Vec<Entry>,
    features: HashSet<u32>,
}

/// Worker 0's status callback and how often to call it.
type StatusHook<'a> = (&'a mut dyn FnMut(&Status), Duration);

/// What the workers share.
struct Shared<'a> {
    cfg: &'a GuidedConfig,
    start: Instant,
    corpus: Mutex<Corpus>,
    crashes: Mutex<(Vec<Crash>, HashSet<String>)>,
    /// Executions claimed (a worker claims one before running it).
    claimed: AtomicU64,
    execs: AtomicU64,
    ops: AtomicU64,
    completed: AtomicU64,
    valid: AtomicU64,
    done: AtomicBool,
    interrupt: &'a AtomicBool,
}

/// A finding's signature: its oracle (or "panic") and message with every number blanked, so
/// that one bug found at other addresses or frames counts once.
pub fn signature(f: &Finding) -> String {
    let text = f.to_string();
    let mut out = String::with_capacity(text.len());
    let mut in_num = false;
    for ch in text.chars() {
        if ch.is_ascii_hexdigit() && (in_num || ch.is_ascii_digit()) || (in_num && ch == 'x') {
            if !in_num {
                out.push('#');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(ch);
        }
    }
    out
}

/// Fresh-generation options: the mode's option sets and the fuzz targets' (for the modes
/// with schedules), each kind of operation kept with probability 3/4 half the time (swarm).
pub fn swarm_options(rng: &mut ChaCha8Rng, mode: Mode, bugs: BugSet) -> GenOptions {
    let concurrent = |rng: &mut ChaCha8Rng| {
        let targets = [
            Target::Concurrent,
            Target::Highmem,
            Target::Ptshare,
            Target::Hugetlb,
            Target::Swarm,
        ];
        if rng.gen_bool(0.4) {
            GenOptions::concurrent()
        } else {
            let t = targets[rng.gen_range(0..targets.len())];
            target_options(t, rng, BugSet::NONE)
        }
    };
    let mut opts = match mode {
        Mode::Conform => return GenOptions::conform().with_bugs(bugs),
        Mode::Sequential => GenOptions::sequential(),
        Mode::Concurrent => concurrent(rng),
        Mode::Mixed => {
            if rng.gen_bool(0.5) {
                GenOptions::sequential()
            } else {
                concurrent(rng)
            }
        }
    };
    if rng.gen_bool(0.5) {
        let m = opts.mix;
        let mut on = |w: u32| if rng.gen_bool(0.75) { w } else { 0 };
        opts.mix = Mix {
            mmap: m.mmap,
            munmap: on(m.munmap),
            mprotect: on(m.mprotect),
            mremap: on(m.mremap),
            write: on(m.write),
            read: on(m.read),
            truncate: on(m.truncate),
            load: on(m.load),
            store: on(m.store),
            pageout: on(m.pageout),
            fork: on(m.fork),
            exit: on(m.exit),
            share: on(m.share),
            huge_file_percent: m.huge_file_percent,
        };
    }
    opts.with_bugs(bugs)
}

impl Shared<'_> {
    fn stopping(&self) -> bool {
        if self.done.load(Ordering::Relaxed) || self.interrupt.load(Ordering::Relaxed) {
            return true;
        }
        self.cfg.time.is_some_and(|t| self.start.elapsed() >= t)
    }

    fn status(&self) -> Status {
        let (corpus, features) = {
            let c = self.corpus.lock().expect("corpus lock");
            (c.entries.len(), c.features.len())
        };
        Status {
            stats: Stats {
                execs: self.execs.load(Ordering::Relaxed),
                elapsed: self.start.elapsed(),
                ops: self.ops.load(Ordering::Relaxed),
                completed: self.completed.load(Ordering::Relaxed),
                valid: self.valid.load(Ordering::Relaxed),
            },
            corpus,
            features,
            crashes: self.crashes.lock().expect("crash lock").0.len(),
        }
    }

    /// One worker's loop; worker 0 runs on the calling thread and calls `on_status` about
    /// every `every`.
    fn work(&self, worker: u64, mut on_status: Option<StatusHook<'_>>) {
        let cfg = self.cfg;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(worker);
        let mut reference = Reference::new();
        let options = RunOptions {
            coverage: true,
            ..cfg.options
        };
        let fresh_only = cfg.mode == Mode::Conform;
        let mut next_status = Instant::now();
        let mut mine = 0u64;
        loop {
            if let Some((show, every)) = on_status.as_mut() {
                if Instant::now() >= next_status {
                    next_status = Instant::now() + *every;
                    show(&self.status());
                }
            }
            if self.stopping() {
                return;
            }
            let n = self.claimed.fetch_add(1, Ordering::Relaxed);
            if cfg.runs.is_some_and(|r| n >= r) {
                return;
            }
            // A corpus trace to mutate (and one to splice with), or none: generate.
            let picked = {
                let c = self.corpus.lock().expect("corpus lock");
                let len = c.entries.len();
                let fresh = if mine < YOUNG {
                    YOUNG_FRESH_PERCENT
                } else {
                    FRESH_PERCENT
                };
                mine += 1;
                if len == 0 || fresh_only || rng.gen_range(0..100) < fresh {
                    None
                } else {
                    let i = if len > 16 && rng.gen_bool(0.4) {
                        rng.gen_range(len - len / 4..len)
                    } else {
                        rng.gen_range(0..len)
                    };
                    let j = rng.gen_range(0..len);
                    Some((c.entries[i].trace.clone(), c.entries[j].trace.clone()))
                }
            };
            let trace = match picked.and_then(|(a, b)| mutate(&mut rng, &a, Some(&b))) {
                Some(t) => t,
                None => {
                    let opts = swarm_options(&mut rng, cfg.mode, cfg.bugs);
                    generate(&mut rng, &opts)
                }
            };
            let result = run_trace_with(&mut reference, &trace, &options);
            let (completed, valid, finding) = judge(&result);
            self.execs.fetch_add(1, Ordering::Relaxed);
            self.ops.fetch_add(trace.ops.len() as u64, Ordering::Relaxed);
            self.completed.fetch_add(completed, Ordering::Relaxed);
            self.valid.fetch_add(valid, Ordering::Relaxed);
            if let Ok(report) = &result {
                let mut c = self.corpus.lock().expect("corpus lock");
                let mut new = 0;
                for &f in &report.features {
                    new += usize::from(c.features.insert(f));
                }
                if new > 0 && report.outcome == Outcome::Ok {
                    if c.entries.len() < MAX_CORPUS {
                        c.entries.push(Entry { trace: trace.clone() });
                    } else {
                        let i = rng.gen_range(0..MAX_CORPUS / 2);
                        c.entries[i] = Entry { trace: trace.clone() };
                    }
                }
            }
            if let Some(finding) = finding {
                let sig = signature(&finding);
                let mut crashes = self.crashes.lock().expect("crash lock");
                if crashes.1.insert(sig) {
                    crashes.0.push(Crash { run: n, trace, finding });
                }
                let panic = matches!(crashes.0.last(), Some(c) if matches!(c.finding, Finding::Panic(_)));
                let go_on = cfg.keep_going || (panic && cfg.past_panics);
                if !go_on {
                    self.done.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Runs the guided engine until a limit, a finding (without `keep_going`) or `interrupt`.
/// `on_status` is called about every `every` from the calling thread (and once at the end).
pub fn guided(
    cfg: &GuidedConfig,
    interrupt: &AtomicBool,
    every: Duration,
    mut on_status: impl FnMut(&Status),
) -> GuidedResult {
    let shared = Shared {
        cfg,
        start: Instant::now(),
        corpus: Mutex::new(Corpus::default()),
        crashes: Mutex::new((Vec::new(), HashSet::new())),
        claimed: AtomicU64::new(0),
        execs: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        valid: AtomicU64::new(0),
        done: AtomicBool::new(false),
        interrupt,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..cfg.jobs.max(1) as u64)
            .map(|w| {
                let shared = &shared;
                s.spawn(move || shared.work(w, None))
            })
            .collect();
        shared.work(0, Some((&mut on_status, every)));
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    let status = shared.status();
    on_status(&status);
    let crashes = shared.crashes.into_inner().expect("crash lock").0;
    GuidedResult {
        status,
        crashes,
        interrupted: interrupt.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(seed: u64, runs: u64) -> GuidedResult {
        let cfg = GuidedConfig {
            runs: Some(runs),
            ..GuidedConfig::new(seed)
        };
        guided(&cfg, &AtomicBool::new(false), Duration::from_secs(3600), |_| {})
    }

    #[test]
    fn one_job_is_deterministic_and_grows_a_corpus() {
        let a = quick(5, 400);
        let b = quick(5, 400);
        assert_eq!(a.status.stats.execs, 400);
        assert!(a.crashes.is_empty(), "the correct reference gave {:?}", a.crashes);
        assert_eq!(
            (
                a.status.corpus,
                a.status.features,
                a.status.stats.ops,
                a.status.stats.valid
            ),
            (
                b.status.corpus,
                b.status.features,
                b.status.stats.ops,
                b.status.stats.valid
            )
        );
        assert!(a.status.corpus > 20, "corpus of {}", a.status.corpus);
        assert!(a.status.features > 300, "{} features", a.status.features);
    }

    #[test]
    fn signatures_blank_numbers() {
        let f = |m: &str| {
            Finding::Violation(mm_reference::Violation {
                oracle: mm_reference::Oracle::Tlb,
                message: m.to_string(),
            })
        };
        assert_eq!(
            signature(&f("CPU 1: entry for 0x1000 of mm 2")),
            signature(&f("CPU 0: entry for 0xff000 of mm 0"))
        );
        assert_ne!(signature(&f("a deadlock")), signature(&f("a livelock")));
    }

    #[test]
    fn finds_a_zoo_bug() {
        let mut bugs = BugSet::NONE;
        bugs.insert(mm_reference::Bug::KmapAtomicUnordered);
        let cfg = GuidedConfig {
            runs: Some(20_000),
            bugs,
            ..GuidedConfig::new(1)
        };
        let r = guided(&cfg, &AtomicBool::new(false), Duration::from_secs(3600), |_| {});
        let c = r.crashes.first().expect("kmap-atomic-unordered found");
        assert!(matches!(&c.finding, Finding::Violation(v) if v.oracle == mm_reference::Oracle::Kmap));
        assert!(c.trace.config.bugs.contains(mm_reference::Bug::KmapAtomicUnordered));
    }
}
