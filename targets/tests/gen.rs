//! Tests of the trace generator and the built-in fuzz loop: every generated trace is valid and
//! round-trips through the canonical printer and the parser, generation is deterministic for
//! a seed, conformance traces keep their constraints, and the fuzz loop is reproducible.

use mm_reference::{Bug, BugSet, Config, Op, SchedToken, USER_BASE};
use mm_targets::engine::{fuzz, trace_for, FuzzConfig, Mode};
use mm_targets::gen::{generate, GenOptions, CONFORM_WINDOW};
use mm_targets::trace::{parse, Trace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEEDS: u64 = 400;

fn all_options() -> Vec<(&'static str, GenOptions)> {
    vec![
        ("conform", GenOptions::conform()),
        ("sequential", GenOptions::sequential()),
        ("concurrent", GenOptions::concurrent()),
    ]
}

fn gen(seed: u64, opts: &GenOptions) -> Trace {
    generate(&mut ChaCha8Rng::seed_from_u64(seed), opts)
}

/// A valid trace (`Trace::check`, TRACE.md's rules on the tree) with the generator's own
/// stricter shape: no operation of a task before the fork that creates it, no offset on an
/// anonymous mmap, an mremap `to` exactly with `fixed`.
fn check_valid(t: &Trace) -> Result<(), String> {
    t.check()?;
    let mut created = t.tasks.len();
    for (i, call) in t.ops.iter().enumerate() {
        let task = call.task as usize;
        if task >= created {
            return Err(format!("op {i}: task {task} not created yet"));
        }
        match call.op {
            Op::Fork { .. } => created += 1,
            Op::Mmap { file: None, off, .. } if off != 0 => {
                return Err(format!("op {i}: anonymous mmap with an offset"));
            }
            Op::Mremap { flags, to, .. } if flags.fixed != to.is_some() => {
                return Err(format!("op {i}: mremap `to` without `fixed` or the reverse"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn generated_traces_are_valid() {
    for (name, opts) in all_options() {
        for seed in 0..SEEDS {
            let t = gen(seed, &opts);
            if let Err(e) = check_valid(&t) {
                panic!("{name} seed {seed}: {e}\n{t}");
            }
        }
    }
}

#[test]
fn generated_traces_round_trip_through_print_and_parse() {
    for (name, opts) in all_options() {
        for seed in 0..SEEDS {
            let t = gen(seed, &opts);
            let text = t.to_string();
            match parse(&text) {
                Ok(back) => assert_eq!(back, t, "{name} seed {seed} changed in a round trip:\n{text}"),
                Err(e) => panic!("{name} seed {seed} does not parse: {e}\n{text}"),
            }
        }
    }
}

#[test]
fn generation_is_deterministic_and_seeds_differ() {
    for (name, opts) in all_options() {
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let a = gen(seed, &opts);
            let b = gen(seed, &opts);
            assert_eq!(a, b, "{name} seed {seed} is not deterministic");
            distinct.insert(a.to_string());
        }
        assert!(
            distinct.len() >= 45,
            "{name}: only {} distinct traces of 50 seeds",
            distinct.len()
        );
    }
}

#[test]
fn bugs_are_copied_into_the_config() {
    let mut bugs = BugSet::NONE;
    bugs.insert(Bug::PtshareRss);
    bugs.insert(Bug::KmapNested);
    for (name, opts) in all_options() {
        let t = gen(7, &opts.with_bugs(bugs));
        assert_eq!(t.config.bugs, bugs, "{name}");
    }
}

fn inside(lo: u64, hi: u64, addr: u64, len: u64) -> bool {
    addr >= lo && addr <= hi && len <= hi - addr
}

#[test]
fn conform_traces_keep_their_constraints() {
    let (lo, hi) = CONFORM_WINDOW;
    let opts = GenOptions::conform();
    let (mut two_threads, mut two_spaces, mut forks) = (0, 0, 0);
    let mut final_exits = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..SEEDS {
        let t = gen(seed, &opts);
        let ctx = format!("seed {seed}:\n{t}");
        assert!(t.schedule.is_empty(), "{ctx}");
        // One or two declared address spaces; at most three tasks, counting forked ones.
        assert!(t.tasks.iter().all(|task| task.mm <= 1), "{ctx}");
        let forked = t.ops.iter().filter(|c| matches!(c.op, Op::Fork { .. })).count();
        assert!((1..=3).contains(&(t.tasks.len() + forked)), "{ctx}");
        two_threads += usize::from(t.tasks.iter().filter(|task| task.mm == 0).count() == 2);
        two_spaces += usize::from(t.tasks.iter().any(|task| task.mm == 1));
        forks += usize::from(forked > 0);
        assert!((1..=3).contains(&t.files.len()), "{ctx}");
        assert!(
            t.files.iter().all(|f| !f.huge && f.size >= 1 && f.size <= 64 * 1024),
            "{ctx}"
        );
        assert_eq!(t.config.frames, 65536, "{ctx}");
        assert!(t.config.highmem == 0 || t.config.highmem == 32768, "{ctx}");
        assert_eq!(
            Config {
                frames: 256,
                highmem: 128,
                highpte: true,
                ptshare: true,
                ..t.config
            },
            Config::default(),
            "{ctx}"
        );

        // 5 to 40 operations besides the exits of the tasks still alive at the end.
        let finals = t.ops.iter().rev().take_while(|c| c.op == Op::Exit).count();
        assert!((5..=40).contains(&(t.ops.len() - finals)), "{ctx}");
        final_exits += usize::from(finals > 0);

        for c in &t.ops {
            kinds.insert(c.op.name());
            let ok = match c.op {
                Op::Mmap { addr, len, flags, .. } => flags.fixed && inside(lo, hi, addr, len),
                Op::Munmap { addr, len } | Op::Mprotect { addr, len, .. } | Op::Pageout { addr, len } => {
                    inside(lo, hi, addr, len)
                }
                Op::Mremap {
                    addr,
                    old,
                    new,
                    flags,
                    to,
                } => {
                    let old_ok = inside(lo, hi, addr, old);
                    let new_ok = match (flags.maymove, flags.fixed, to) {
                        (true, true, Some(to)) => inside(lo, hi, to, new),
                        (false, false, None) => inside(lo, hi, addr, new),
                        (false, true, Some(to)) => inside(lo, hi, to, new),
                        _ => false,
                    };
                    old_ok && new_ok
                }
                Op::Write { buf, len, .. } | Op::Read { buf, len, .. } => inside(lo, hi, buf, len),
                Op::Load { addr } | Op::Store { addr, .. } => (lo..hi).contains(&addr),
                Op::Truncate { size, .. } => size <= 2 << 20,
                Op::Exit | Op::Fork { .. } => true,
            };
            assert!(
                ok,
                "seed {seed}: {} leaves the window or breaks a rule\n{t}",
                mm_targets::trace::print_op(c)
            );
        }
    }
    assert!(
        two_threads > 0 && two_threads < SEEDS as usize / 2,
        "two threads in {two_threads} traces"
    );
    assert!(
        two_spaces > 0 && forks > 0,
        "two address spaces in {two_spaces} traces, a fork in {forks}"
    );
    assert!(final_exits > 0, "no trace ends with an exit");
    for k in [
        "mmap", "munmap", "mprotect", "mremap", "write", "read", "truncate", "load", "store", "pageout", "fork", "exit",
    ] {
        assert!(kinds.contains(k), "conform never generates {k}");
    }
}

#[test]
fn most_arguments_are_aimed_and_a_minority_are_odd() {
    // Page alignment of the addresses of the address-range calls: mostly aligned (aimed at
    // mappings and table boundaries), but not always (error paths).
    for (name, opts) in all_options() {
        let (mut aligned, mut total, mut zero_len) = (0u64, 0u64, 0u64);
        let mut hits = 0u64;
        let mut accesses = 0u64;
        for seed in 0..SEEDS {
            let t = gen(seed, &opts);
            for c in &t.ops {
                match c.op {
                    Op::Mmap { addr, len, flags, .. } if flags.fixed => {
                        total += 1;
                        aligned += u64::from(addr % 4096 == 0);
                        zero_len += u64::from(len == 0);
                    }
                    Op::Munmap { addr, len } | Op::Mprotect { addr, len, .. } => {
                        total += 1;
                        aligned += u64::from(addr % 4096 == 0);
                        zero_len += u64::from(len == 0);
                    }
                    _ => {}
                }
            }
            // Loads and stores mostly land inside something mapped earlier in the trace (checked
            // where every mmap is fixed, so the mapped ranges are known without a model).
            if opts.window.is_none() {
                continue;
            }
            let mut mapped: Vec<(u64, u64)> = Vec::new();
            for c in &t.ops {
                match c.op {
                    Op::Mmap { addr, len, flags, .. } if flags.fixed && addr % 4096 == 0 => {
                        mapped.push((addr, addr.saturating_add(len)))
                    }
                    Op::Load { addr } | Op::Store { addr, .. } if !mapped.is_empty() => {
                        accesses += 1;
                        hits += u64::from(mapped.iter().any(|&(s, e)| s <= addr && addr < e));
                    }
                    _ => {}
                }
            }
        }
        let share = aligned as f64 / total as f64;
        assert!(
            share > 0.75 && share < 1.0,
            "{name}: {aligned} of {total} range addresses aligned"
        );
        assert!(zero_len > 0, "{name}: never a zero length");
        let hit = if accesses == 0 {
            1.0
        } else {
            hits as f64 / accesses as f64
        };
        assert!(opts.window.is_none() || accesses > 100, "{name}: too few accesses");
        assert!(
            hit > 0.6,
            "{name}: only {hits} of {accesses} accesses inside fixed mappings"
        );
    }
}

#[test]
fn sequential_and_concurrent_shapes() {
    let (mut forks, mut mid_exits, mut several_mms, mut huge, mut irqs) = (0, 0, 0, 0, 0);
    for seed in 0..SEEDS {
        let s = gen(seed, &GenOptions::sequential());
        assert!(s.schedule.is_empty());
        assert_eq!(s.config, Config::default());
        forks += usize::from(s.ops.iter().any(|c| matches!(c.op, Op::Fork { .. })));
        several_mms += usize::from(s.tasks.iter().any(|t| t.mm > 0));
        huge += usize::from(s.files.iter().any(|f| f.huge));
        let last_exit = s.ops.iter().rposition(|c| c.op != Op::Exit).unwrap_or(0);
        mid_exits += usize::from(s.ops[..last_exit].iter().any(|c| c.op == Op::Exit));
        // Non-fixed mmaps appear too.
        let c = gen(seed, &GenOptions::concurrent());
        assert!(c.tasks.len() >= 2, "seed {seed}: a concurrent trace with one task");
        assert!(
            !c.schedule.is_empty(),
            "seed {seed}: a concurrent trace without a schedule"
        );
        irqs += usize::from(c.schedule.iter().any(|t| matches!(t, SchedToken::Irq(_))));
    }
    for (what, n) in [
        ("fork", forks),
        ("mid exit", mid_exits),
        ("2 mms", several_mms),
        ("huge", huge),
        ("irq", irqs),
    ] {
        assert!(n > 0, "never a {what}");
    }
    let nonfixed = (0..SEEDS)
        .flat_map(|s| gen(s, &GenOptions::sequential()).ops)
        .filter(|c| matches!(c.op, Op::Mmap { flags, .. } if !flags.fixed && !flags.noreplace))
        .count();
    assert!(nonfixed > 0, "sequential never makes a non-fixed mmap");
    // Every address of a sequential trace is an address a process could pass.
    let odd = (0..SEEDS)
        .flat_map(|s| gen(s, &GenOptions::sequential()).ops)
        .filter(|c| matches!(c.op, Op::Load { addr } if addr < USER_BASE || addr >= Config::default().task_size()))
        .count();
    assert!(odd > 0, "loads never try outside user space");
}

#[test]
fn the_fuzz_loop_is_reproducible() {
    let cfg = FuzzConfig {
        runs: Some(30),
        ..FuzzConfig::new(42)
    };
    let a = fuzz(&cfg, |_| {});
    let b = fuzz(&cfg, |_| {});
    assert_eq!(a.stats.execs, b.stats.execs);
    assert_eq!(
        (a.stats.ops, a.stats.completed, a.stats.valid),
        (b.stats.ops, b.stats.completed, b.stats.valid)
    );
    assert_eq!(a.crash, b.crash);
    if a.crash.is_none() {
        assert_eq!(a.stats.execs, 30);
    }
    // The traces it ran are the ones `trace_for` regenerates, drawn from both modes.
    let ops: u64 = (0..a.stats.execs).map(|n| trace_for(&cfg, n).ops.len() as u64).sum();
    assert_eq!(ops, a.stats.ops);
    let scheduled = (0..30).filter(|&n| !trace_for(&cfg, n).schedule.is_empty()).count();
    assert!(
        scheduled > 0 && scheduled < 30,
        "mixed mode used one generator only ({scheduled} of 30)"
    );
    assert_ne!(trace_for(&cfg, 0), trace_for(&FuzzConfig::new(43), 0));
}

#[test]
fn the_fuzz_loop_stops_at_its_limits_and_sets_bugs() {
    let mut progress = 0;
    let mut bugs = BugSet::NONE;
    bugs.insert(Bug::HugetlbUnshareNoFlush);
    let cfg = FuzzConfig {
        runs: Some(5),
        bugs,
        gen: Mode::Conform.gens(),
        ..FuzzConfig::new(1)
    };
    let r = fuzz(&cfg, |s| {
        progress += 1;
        assert_eq!(s.execs, progress);
    });
    assert!(r.stats.execs <= 5 && r.stats.execs == progress);
    assert!(trace_for(&cfg, 3).config.bugs == bugs);
    let timed = FuzzConfig {
        time: Some(std::time::Duration::ZERO),
        ..FuzzConfig::new(1)
    };
    assert_eq!(fuzz(&timed, |_| {}).stats.execs, 0);
    assert_eq!("mixed".parse::<Mode>(), Ok(Mode::Mixed));
    assert!("sideways".parse::<Mode>().is_err());
}
