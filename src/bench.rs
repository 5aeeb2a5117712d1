//! `mmfuzz bench`: executions per second of each fuzz target, with every oracle and with none,
//! and the cost of each oracle, measured on one core.
//!
//! What it keeps true: the inputs are the same for every measurement of a target (random
//! bytes from a seeded ChaCha8 RNG, decoded once up front), so the columns differ only in the
//! oracles switched on; the clock is read only around whole batches. The configurations are
//! measured interleaved: each of [`PASSES`] passes runs every configuration once over all the
//! traces, and each figure is its configuration's best pass, so a disturbance of the machine
//! (another process, a frequency change) lasting seconds hits every column alike instead of
//! the few that happened to run then. Decoding is measured separately, as an engine pays it
//! once per input. An oracle's cost is the difference of two rates, so on a busy machine it
//! can still come out slightly negative: measure on an idle one.

use mm_reference::{BugSet, Reference, RunOptions};
use mm_targets::targets::{decode, Target};
use mm_targets::trace::Trace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Inputs per target.
    #[arg(long, default_value_t = 20_000)]
    runs: u64,
    /// Seed of the input bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these targets (default: all).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Measure only one configuration, for a profiler (`valgrind --tool=callgrind` counts the
    /// instructions of exactly that): all, walk, cov, none, or no-ORACLE for every oracle but
    /// one (no-spec, no-tables, no-tlb, no-leak, no-order).
    #[arg(long, value_name = "CONFIG")]
    only: Option<String>,
    /// The same as `--only all`.
    #[arg(long, conflicts_with = "only")]
    all_only: bool,
}

/// Passes over the traces per configuration; a figure is the best of them.
const PASSES: usize = 3;

/// The measured configurations, by name, in the order of the table's columns.
fn configs() -> [(&'static str, RunOptions); 9] {
    let all = RunOptions::ALL;
    [
        ("all", all),
        // Every oracle, walking the tables at every step (no skip of unchanged state).
        (
            "walk",
            RunOptions {
                skip_unchanged: false,
                ..all
            },
        ),
        // Every oracle and the coverage a guided engine records.
        ("cov", RunOptions { coverage: true, ..all }),
        ("none", RunOptions::NONE),
        ("no-spec", RunOptions { spec: false, ..all }),
        ("no-tables", RunOptions { tables: false, ..all }),
        ("no-tlb", RunOptions { tlb: false, ..all }),
        ("no-leak", RunOptions { leak: false, ..all }),
        (
            "no-order",
            RunOptions {
                lock_order: false,
                ..all
            },
        ),
    ]
}

/// Runs every trace once with `options`; returns the runs per second.
fn pass(reference: &mut Reference, traces: &[Trace], options: &RunOptions) -> f64 {
    let start = Instant::now();
    for t in traces {
        let report = reference.run(&t.config, &t.files, &t.tasks, &t.ops, &t.schedule, options);
        std::hint::black_box(report);
    }
    traces.len() as f64 / start.elapsed().as_secs_f64()
}

/// The best of [`PASSES`] rates of each of `options`, the passes interleaved.
fn rates(reference: &mut Reference, traces: &[Trace], options: &[RunOptions]) -> Vec<f64> {
    let mut best = vec![0.0f64; options.len()];
    for _ in 0..PASSES {
        for (b, o) in best.iter_mut().zip(options) {
            *b = b.max(pass(reference, traces, o));
        }
    }
    best
}

pub fn main(args: &Args) -> u8 {
    let mut targets = Vec::new();
    for name in &args.targets {
        match Target::from_name(name) {
            Some(t) => targets.push(t),
            None => {
                eprintln!("error: unknown target `{name}` (targets: {})", Target::names());
                return 2;
            }
        }
    }
    if targets.is_empty() {
        targets = Target::ALL.to_vec();
    }
    if args.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        return 2;
    }
    let configs = configs();
    let only = match (&args.only, args.all_only) {
        (Some(name), _) => match configs.iter().position(|(n, _)| n == name) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = configs.iter().map(|(n, _)| *n).collect();
                eprintln!(
                    "error: unknown configuration `{name}` (configurations: {})",
                    names.join(", ")
                );
                return 2;
            }
        },
        (None, true) => Some(0),
        (None, false) => None,
    };
    println!(
        "bench: {} inputs per target, seed {}, one core; exec/s of the reference (decoding apart)",
        args.runs, args.seed
    );
    match only {
        Some(i) => println!(
            "{:<11} {:>9} {:>9} {:>7}",
            "target", "decode/s", configs[i].0, "ops/run"
        ),
        None => println!(
            "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "target", "decode/s", "all", "walk", "cov", "none", "spec", "tables", "tlb", "leak", "order", "ops/run"
        ),
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    for target in targets {
        // Raw inputs of 64 to 1024 bytes, decoded once; rejected inputs are not run.
        let inputs: Vec<Vec<u8>> = (0..args.runs)
            .map(|_| {
                let n = rng.gen_range(64..1024);
                (0..n).map(|_| rng.gen()).collect()
            })
            .collect();
        let start = Instant::now();
        let traces: Vec<Trace> = inputs.iter().filter_map(|d| decode(target, d, BugSet::NONE)).collect();
        let decode_rate = inputs.len() as f64 / start.elapsed().as_secs_f64();
        if traces.is_empty() {
            println!("{:<11} no input decoded", target.name());
            continue;
        }
        let ops = traces.iter().map(|t| t.ops.len()).sum::<usize>() as f64 / traces.len() as f64;
        let mut reference = Reference::new();
        // A warm-up pass so the reference's pools are grown before timing.
        pass(&mut reference, &traces, &RunOptions::NONE);
        if let Some(i) = only {
            let r = rates(&mut reference, &traces, &[configs[i].1])[0];
            println!("{:<11} {:>9.0} {:>9.0} {:>7.1}", target.name(), decode_rate, r, ops);
            continue;
        }
        let options: Vec<RunOptions> = configs.iter().map(|(_, o)| *o).collect();
        let r = rates(&mut reference, &traces, &options);
        let (all, walk, cov, none) = (r[0], r[1], r[2], r[3]);
        // The cost of an oracle: microseconds per run it adds to the others.
        let cost = |without: f64| 1e6 / all - 1e6 / without;
        let (spec, tables, tlb, leak, order) = (cost(r[4]), cost(r[5]), cost(r[6]), cost(r[7]), cost(r[8]));
        println!(
            "{:<11} {:>9.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>6.1}us {:>6.1}us {:>6.1}us {:>6.1}us {:>6.1}us {:>7.1}",
            target.name(),
            decode_rate,
            all,
            walk,
            cov,
            none,
            spec,
            tables,
            tlb,
            leak,
            order,
            ops
        );
    }
    if let Some(i) = only {
        println!("({}: exec/s with that configuration)", configs[i].0);
    } else {
        println!(
            "(all: exec/s with every oracle; walk: the same, walking the tables at every step (no skip of unchanged \
             state); cov: every oracle and coverage recorded; none: no oracle; an oracle's column: microseconds per \
             run it costs)"
        );
    }
    0
}
