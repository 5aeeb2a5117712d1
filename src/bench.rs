//! `mmfuzz bench`: executions per second of each fuzz target, with every oracle and with none,
//! and the cost of each oracle, measured on one core.
//!
//! What it keeps true: the inputs are the same for every measurement of a target (random
//! bytes from a seeded ChaCha8 RNG, decoded once up front), so the columns differ only in the
//! oracles switched on; the clock is read only around whole batches, and each figure is the
//! best of three passes. Decoding is measured separately, as an engine pays it once per input.
//! An oracle's cost is the difference of two rates, so on a busy machine it can come out
//! slightly negative: measure on an idle one.

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
    /// Measure only the `all` column (every oracle on): one configuration, for a profiler
    /// (`valgrind --tool=callgrind` counts the instructions of exactly that).
    #[arg(long)]
    all_only: bool,
}

/// Runs every trace with `options`, three times; returns the best pass's runs per second
/// (the least disturbed by anything else on the machine).
fn rate(reference: &mut Reference, traces: &[Trace], options: &RunOptions) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for t in traces {
                let report = reference.run(&t.config, &t.files, &t.tasks, &t.ops, &t.schedule, options);
                std::hint::black_box(report);
            }
            traces.len() as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
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
    println!(
        "bench: {} inputs per target, seed {}, one core; exec/s of the reference (decoding apart)",
        args.runs, args.seed
    );
    if args.all_only {
        println!("{:<11} {:>9} {:>8} {:>7}", "target", "decode/s", "all", "ops/run");
    } else {
        println!(
            "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "target", "decode/s", "all", "walk", "cov", "none", "spec", "tables", "tlb", "leak", "order", "ops/run"
        );
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
        rate(&mut reference, &traces, &RunOptions::NONE);
        let all = rate(&mut reference, &traces, &RunOptions::ALL);
        if args.all_only {
            println!("{:<11} {:>9.0} {:>8.0} {:>7.1}", target.name(), decode_rate, all, ops);
            continue;
        }
        let none = rate(&mut reference, &traces, &RunOptions::NONE);
        // Every oracle, walking the tables at every step (no skip of unchanged state).
        let walk = rate(
            &mut reference,
            &traces,
            &RunOptions {
                skip_unchanged: false,
                ..RunOptions::ALL
            },
        );
        // Every oracle and the coverage a guided engine records.
        let cov = rate(
            &mut reference,
            &traces,
            &RunOptions {
                coverage: true,
                ..RunOptions::ALL
            },
        );
        // The cost of an oracle: microseconds per run it adds to the others.
        let without = |o: RunOptions, reference: &mut Reference| {
            let r = rate(reference, &traces, &o);
            1e6 / all - 1e6 / r
        };
        let spec = without(
            RunOptions {
                spec: false,
                ..RunOptions::ALL
            },
            &mut reference,
        );
        let tables = without(
            RunOptions {
                tables: false,
                ..RunOptions::ALL
            },
            &mut reference,
        );
        let tlb = without(
            RunOptions {
                tlb: false,
                ..RunOptions::ALL
            },
            &mut reference,
        );
        let leak = without(
            RunOptions {
                leak: false,
                ..RunOptions::ALL
            },
            &mut reference,
        );
        let order = without(
            RunOptions {
                lock_order: false,
                ..RunOptions::ALL
            },
            &mut reference,
        );
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
    if args.all_only {
        println!("(all: exec/s with every oracle)");
    } else {
        println!(
            "(all: exec/s with every oracle; walk: the same, walking the tables at every step (no skip of unchanged \
             state); cov: every oracle and coverage recorded; none: no oracle; an oracle's column: microseconds per \
             run it costs)"
        );
    }
    0
}
