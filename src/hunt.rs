//! `mmfuzz hunt --bug NAME --runs N --time T [--baseline random]`: the time-to-bug benchmark.
//! Runs the guided engine N times (seeds `--seed`, `--seed + 1`, ...) on the named zoo bug
//! (`all`: every bug of `Bug::ALL` the reference models, so new bugs join by themselves),
//! each run stopping at its first violation or after T seconds, and prints per bug how many
//! runs found it and the minimum, median and maximum time to the first violation. With
//! `--baseline random` the same runs with pure generation (no feedback) follow in the same
//! invocation, and the ratio of the medians.
//!
//! What it keeps true:
//! - Each run is one single-threaded engine (`--jobs J` runs J of them side by side); a
//!   run is reproducible from its seed with `mmfuzz fuzz --bugs BUG --seed S`
//!   (`--engine random` for the baseline).
//! - A run that does not find the bug counts as the time limit in the median and maximum
//!   (printed with `>`). A panic of the model (a bug of the reference, not of the modelled
//!   kernel) is reported on standard error and the run goes on past it.
//! - Exit status: 0 when every run of the guided engine found its bug, 1 otherwise, 2 for
//!   bad arguments.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mm_reference::{Bug, BugSet};
use mm_targets::engine::{fuzz_until, Finding, FuzzConfig, Mode};
use mm_targets::guided::{guided, GuidedConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The zoo bug (MODEL.md), or `all` for every modelled one.
    #[arg(long)]
    bug: String,
    /// Runs per bug (and per engine).
    #[arg(long, default_value_t = 10)]
    runs: u64,
    /// Seconds each run may take.
    #[arg(long, default_value_t = 60.0)]
    time: f64,
    /// Also run this baseline: `random` (pure generation, no feedback).
    #[arg(long)]
    baseline: Option<String>,
    /// The first run's seed (run i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs side by side (each single-threaded).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// The generator mode of fresh traces.
    #[arg(long, default_value = "mixed")]
    mode: String,
}

/// The outcome of one run: seconds and executions to the first violation, if found.
#[derive(Clone, Copy, Debug)]
struct Run {
    found: Option<(f64, u64)>,
}

fn one_run(bug: Bug, seed: u64, time: Duration, mode: Mode, random: bool, interrupt: &AtomicBool) -> Run {
    let mut bugs = BugSet::NONE;
    bugs.insert(bug);
    let report_panic = |m: &str| eprintln!("hunt: {} seed {seed}: model panic: {m}", bug.name());
    if random {
        let cfg = FuzzConfig {
            time: Some(time),
            bugs,
            gen: mode.gens(),
            past_panics: true,
            ..FuzzConfig::new(seed)
        };
        let r = fuzz_until(&cfg, interrupt, |_| {});
        for c in &r.panics {
            if let Finding::Panic(m) = &c.finding {
                report_panic(m);
            }
        }
        return Run {
            found: r.crash.map(|_| (r.stats.elapsed.as_secs_f64(), r.stats.execs)),
        };
    }
    let cfg = GuidedConfig {
        time: Some(time),
        bugs,
        mode,
        past_panics: true,
        ..GuidedConfig::new(seed)
    };
    let r = guided(&cfg, interrupt, Duration::from_secs(3600), |_| {});
    let mut found = None;
    for c in r.crashes {
        match c.finding {
            Finding::Violation(_) => found = Some((r.status.stats.elapsed.as_secs_f64(), r.status.stats.execs)),
            Finding::Panic(m) => report_panic(&m),
        }
    }
    Run { found }
}

/// Runs `n` seeds of one engine on `bug`, `jobs` at a time.
fn runs(bug: Bug, a: &Args, time: Duration, mode: Mode, random: bool, interrupt: &AtomicBool) -> Vec<Run> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(vec![Run { found: None }; a.runs as usize]);
    std::thread::scope(|s| {
        for _ in 0..a.jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.runs as usize || interrupt.load(Ordering::Relaxed) {
                    return;
                }
                let r = one_run(bug, a.seed + i as u64, time, mode, random, interrupt);
                out.lock().expect("results")[i] = r;
            });
        }
    });
    out.into_inner().expect("results")
}

/// Median, minimum and maximum seconds (a run that missed counts as the limit).
fn summary(rs: &[Run], limit: f64) -> (usize, f64, f64, f64, f64) {
    let mut t: Vec<f64> = rs.iter().map(|r| r.found.map_or(limit, |(s, _)| s)).collect();
    t.sort_by(f64::total_cmp);
    let found = rs.iter().filter(|r| r.found.is_some()).count();
    let median = if t.is_empty() {
        0.0
    } else if t.len() % 2 == 1 {
        t[t.len() / 2]
    } else {
        (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2.0
    };
    let mut execs: Vec<u64> = rs.iter().filter_map(|r| r.found.map(|(_, e)| e)).collect();
    execs.sort_unstable();
    let median_execs = execs.get(execs.len() / 2).copied().unwrap_or(0) as f64;
    (
        found,
        t.first().copied().unwrap_or(0.0),
        median,
        t.last().copied().unwrap_or(0.0),
        median_execs,
    )
}

fn secs(v: f64, limit: f64, missed: bool) -> String {
    if missed && v >= limit {
        format!(">{limit:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn main(a: &Args) -> u8 {
    let bugs: Vec<Bug> = if a.bug == "all" {
        Bug::ALL.into_iter().filter(|b| b.modelled()).collect()
    } else {
        match Bug::from_name(&a.bug) {
            Some(b) => vec![b],
            None => {
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                eprintln!("error: unknown bug `{}` (bugs: all, {})", a.bug, names.join(", "));
                return 2;
            }
        }
    };
    let random = match a.baseline.as_deref() {
        None => false,
        Some("random") => true,
        Some(other) => {
            eprintln!("error: unknown baseline `{other}` (expected random)");
            return 2;
        }
    };
    let mode: Mode = match a.mode.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let Ok(time) = Duration::try_from_secs_f64(a.time) else {
        eprintln!("error: --time {} is not a duration", a.time);
        return 2;
    };
    if a.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        return 2;
    }
    for b in bugs.iter().filter(|b| !b.modelled()) {
        crate::warn_unmodelled({
            let mut s = BugSet::NONE;
            s.insert(*b);
            s
        });
    }
    let interrupt = crate::fuzz::catch_interrupt();
    let limit = a.time;
    println!(
        "hunt: {} run(s) per bug and engine, {limit} s each, seeds {}..{}, mode {}, {} at a time; times in seconds to the first violation",
        a.runs,
        a.seed,
        a.seed + a.runs - 1,
        mode.name(),
        a.jobs.max(1)
    );
    let mut header = format!(
        "{:<28} {:>6} {:>7} {:>7} {:>7} {:>9}",
        "bug", "found", "min", "median", "max", "execs"
    );
    if random {
        header.push_str(&format!(
            "   {:>6} {:>7} {:>7} {:>7} {:>9} {:>7}",
            "random", "min", "median", "max", "execs", "ratio"
        ));
    }
    println!("{header}");
    let mut all_found = true;
    for bug in bugs {
        let g = runs(bug, a, time, mode, false, interrupt);
        let (found, min, median, max, execs) = summary(&g, limit);
        all_found &= found == g.len();
        let missed = found < g.len();
        let mut line = format!(
            "{:<28} {:>6} {:>7} {:>7} {:>7} {:>9.0}",
            bug.name(),
            format!("{found}/{}", g.len()),
            secs(min, limit, missed),
            secs(median, limit, missed),
            secs(max, limit, missed),
            execs
        );
        if random {
            let r = runs(bug, a, time, mode, true, interrupt);
            let (rfound, rmin, rmedian, rmax, rexecs) = summary(&r, limit);
            let rmissed = rfound < r.len();
            // The ratio of the medians; at least 0.01 s each, the clock's resolution here.
            let ratio = rmedian.max(0.01) / median.max(0.01);
            line.push_str(&format!(
                "   {:>6} {:>7} {:>7} {:>7} {:>9.0} {:>6.1}x",
                format!("{rfound}/{}", r.len()),
                secs(rmin, limit, rmissed),
                secs(rmedian, limit, rmissed),
                secs(rmax, limit, rmissed),
                rexecs,
                ratio
            ));
        }
        println!("{line}");
        if interrupt.load(Ordering::Relaxed) {
            println!("hunt: interrupted");
            break;
        }
    }
    if random {
        println!("(ratio: the random median over the guided one; a run that missed counts as the time limit; execs: median executions of the runs that found it)");
    }
    u8::from(!all_found)
}
