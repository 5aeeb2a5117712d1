//! Trace-aware mutations for the guided engine (`guided.rs`): each takes a valid trace and
//! makes a nearby one that is still valid.
//!
//! Mutations: delete, duplicate, swap and insert operations (a fork goes with everything its
//! child does); nudge a numeric argument to page and page-table boundaries, to a value the
//! trace already uses, up or down by a byte, a page, a factor of two; change a protection,
//! a flag, a file or a stored value; splice two traces; rewrite the schedule (insert,
//! delete, repeat and change tokens, interrupts, preemption runs, a fresh schedule, none);
//! flip configuration features and bug-irrelevant knobs (cpus, frames, highmem, pkmap,
//! atomic, highpte, ptshare, hugeshare); move tasks to other CPUs; resize files.
//!
//! Invariants kept here:
//! - Every trace [`mutate`] returns is valid ([`Trace::check`]: it would print and parse
//!   back unchanged; the tests compare the two judges on mutants and corrupted traces);
//!   after a few failed tries it gives up (`None`).
//! - The bug switches never change: `config.bugs` is what the input had.
//! - Mutants stay small: at most [`MAX_OPS`] operations and [`MAX_TOKENS`] schedule tokens.
//! - Deterministic: every decision comes from the rng passed in.

use mm_reference::{Config, MmapFlags, MremapFlags, Op, Prot, SchedToken, TaskId, PAGE_SIZE, USER_BASE};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::minimize::{arg, set_arg, without_forked_task};
use crate::trace::{OpLine, Trace};

/// Attempts at a valid mutant before [`mutate`] gives up.
const TRIES: usize = 8;
/// The most operation lines and schedule tokens a mutant may have (mutants that only ever
/// grew would make every execution slower).
pub const MAX_OPS: usize = 48;
pub const MAX_TOKENS: usize = 192;

/// One to four stacked mutations of `base` (with `other`, a second corpus trace, for
/// splicing). `None` if no valid mutant came out of a few tries.
pub fn mutate(rng: &mut ChaCha8Rng, base: &Trace, other: Option<&Trace>) -> Option<Trace> {
    for _ in 0..TRIES {
        let mut t = base.clone();
        let n = 1 + (rng.gen_range(0..8u32)).trailing_ones().min(3);
        for _ in 0..n {
            mutate_once(rng, &mut t, other);
        }
        t.config.bugs = base.config.bugs;
        t.schedule.truncate(MAX_TOKENS);
        if t != *base && t.ops.len() <= MAX_OPS && t.check().is_ok() {
            return Some(t);
        }
    }
    None
}

fn mutate_once(rng: &mut ChaCha8Rng, t: &mut Trace, other: Option<&Trace>) {
    match rng.gen_range(0..100u32) {
        0..=11 => delete_op(rng, t),
        12..=19 => duplicate_op(rng, t),
        20..=27 => swap_ops(rng, t),
        28..=39 => insert_op(rng, t),
        40..=57 => nudge_arg(rng, t),
        58..=65 => change_op(rng, t),
        66..=71 => {
            if let Some(o) = other {
                splice(rng, t, o)
            } else {
                insert_op(rng, t)
            }
        }
        72..=85 => schedule(rng, t),
        86..=93 => config(rng, t),
        94..=96 => task_cpu(rng, t),
        _ => file_size(rng, t),
    }
}

fn delete_op(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.ops.is_empty() {
        return;
    }
    let i = rng.gen_range(0..t.ops.len());
    if let Op::Fork { task, .. } = t.ops[i].op {
        *t = without_forked_task(t, i, task);
    } else {
        t.ops.remove(i);
    }
}

fn duplicate_op(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.ops.is_empty() {
        return;
    }
    let i = rng.gen_range(0..t.ops.len());
    let line = t.ops[i];
    if matches!(line.op, Op::Fork { .. } | Op::Exit) {
        return;
    }
    let j = rng.gen_range(i + 1..=t.ops.len());
    t.ops.insert(j, line);
}

fn swap_ops(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.ops.len() < 2 {
        return;
    }
    let i = rng.gen_range(0..t.ops.len() - 1);
    let j = if rng.gen_bool(0.6) {
        i + 1
    } else {
        rng.gen_range(0..t.ops.len())
    };
    t.ops.swap(i, j);
}

/// Values a trace already uses or that sit on boundaries of its machine: where mutations
/// aim addresses, lengths and offsets.
fn dictionary(t: &Trace) -> Vec<u64> {
    let c = &t.config;
    let mut d = vec![
        0,
        1,
        PAGE_SIZE,
        c.huge_page_size(),
        c.pud_span(),
        USER_BASE,
        c.task_size(),
        c.task_size() - PAGE_SIZE,
    ];
    for l in &t.ops {
        for slot in 0..4 {
            if let Some(v) = arg(&l.op, slot) {
                d.push(v);
            }
        }
    }
    for f in &t.files {
        d.push(f.size);
    }
    d
}

/// `v` rounded up to a multiple of `a` (`v` itself where that would overflow).
fn up(v: u64, a: u64) -> u64 {
    v.checked_next_multiple_of(a).unwrap_or(v)
}

/// A value near `v` or from the dictionary: a page or table boundary, a byte or a page off,
/// twice or half.
fn nudge(rng: &mut ChaCha8Rng, v: u64, c: &Config, dict: &[u64]) -> u64 {
    let hps = c.huge_page_size();
    let pud = c.pud_span();
    match rng.gen_range(0..14u32) {
        0 => v.wrapping_add(1),
        1 => v.wrapping_sub(1),
        2 => v.wrapping_add(PAGE_SIZE),
        3 => v.saturating_sub(PAGE_SIZE),
        4 => v & !(PAGE_SIZE - 1),
        5 => up(v, hps),
        6 => v & !(hps - 1),
        7 => up(v, pud),
        8 => v.saturating_mul(2),
        9 => v / 2,
        10 => (v & !(hps - 1)).wrapping_sub(PAGE_SIZE),
        11 => PAGE_SIZE * rng.gen_range(1..=2 * u64::from(c.ptrs)),
        _ => dict[rng.gen_range(0..dict.len())],
    }
}

fn nudge_arg(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.ops.is_empty() {
        return;
    }
    let i = rng.gen_range(0..t.ops.len());
    let slots: Vec<usize> = (0..6).filter(|&s| arg(&t.ops[i].op, s).is_some()).collect();
    if slots.is_empty() {
        return;
    }
    let slot = slots[rng.gen_range(0..slots.len())];
    let v = arg(&t.ops[i].op, slot).expect("a slot with a number");
    let dict = dictionary(t);
    let n = nudge(rng, v, &t.config, &dict);
    set_arg(&mut t.ops[i].op, slot, n);
}

fn random_prot(rng: &mut ChaCha8Rng) -> Prot {
    [
        Prot::NONE,
        Prot::R,
        Prot::RW,
        Prot::RW,
        Prot::from_bits(5),
        Prot::from_bits(7),
    ][rng.gen_range(0..6)]
}

fn change_op(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.ops.is_empty() {
        return;
    }
    let nfiles = t.files.len() as u32;
    let i = rng.gen_range(0..t.ops.len());
    match &mut t.ops[i].op {
        Op::Mmap {
            prot, flags, file, off, ..
        } => match rng.gen_range(0..5u32) {
            0 => *prot = random_prot(rng),
            1 => flags.shared = !flags.shared,
            2 => flags.populate = !flags.populate,
            3 => {
                *file = if file.is_some() || nfiles == 0 {
                    *off = 0;
                    None
                } else {
                    Some(rng.gen_range(0..nfiles))
                }
            }
            _ => flags.fixed = !flags.fixed,
        },
        Op::Mprotect { prot, .. } => *prot = random_prot(rng),
        Op::Mremap { flags, to, addr, .. } => {
            *flags = match rng.gen_range(0..3u32) {
                0 => MremapFlags::default(),
                1 => MremapFlags {
                    maymove: true,
                    fixed: false,
                },
                _ => MremapFlags {
                    maymove: true,
                    fixed: true,
                },
            };
            *to = flags.fixed.then(|| to.unwrap_or(addr.wrapping_add(0x10_0000)));
        }
        Op::Write { file, .. } | Op::Read { file, .. } | Op::Truncate { file, .. } if nfiles > 0 => {
            *file = rng.gen_range(0..nfiles)
        }
        Op::Store { value, .. } => *value = rng.gen(),
        Op::Fork { cpu, .. } => *cpu = Some(rng.gen_range(0..t.config.cpus)),
        _ => {}
    }
}

/// A new operation for a task that has operations (or task 0), aimed with the dictionary.
fn insert_op(rng: &mut ChaCha8Rng, t: &mut Trace) {
    let dict = dictionary(t);
    let pick = |rng: &mut ChaCha8Rng| {
        let v = dict[rng.gen_range(0..dict.len())];
        if rng.gen_bool(0.3) {
            nudge(rng, v, &t.config, &dict)
        } else {
            v
        }
    };
    let addr = pick(rng) & !(PAGE_SIZE - 1);
    let len = pick(rng).max(1);
    let nfiles = t.files.len() as u32;
    let file = (nfiles > 0).then(|| rng.gen_range(0..nfiles));
    let page_len = up(len, PAGE_SIZE).min(64 * PAGE_SIZE);
    let op = match rng.gen_range(0..11u32) {
        0 | 1 => Op::Mmap {
            addr,
            len: page_len,
            prot: random_prot(rng),
            flags: MmapFlags {
                shared: rng.gen_bool(0.5),
                fixed: rng.gen_bool(0.7),
                noreplace: false,
                populate: rng.gen_bool(0.15),
            },
            file: if rng.gen_bool(0.6) { file } else { None },
            off: 0,
        },
        2 => Op::Munmap { addr, len: page_len },
        3 => Op::Mprotect {
            addr,
            len: page_len,
            prot: random_prot(rng),
        },
        4 => Op::Mremap {
            addr,
            old: page_len,
            new: up(pick(rng), PAGE_SIZE).clamp(PAGE_SIZE, 64 * PAGE_SIZE),
            flags: MremapFlags {
                maymove: true,
                fixed: false,
            },
            to: None,
        },
        5 | 6 => match file {
            Some(file) => {
                let w = rng.gen_bool(0.6);
                let (off, len, buf) = (pick(rng) % (1 << 20), len.min(3 * PAGE_SIZE), pick(rng));
                if w {
                    Op::Write { file, off, len, buf }
                } else {
                    Op::Read { file, off, len, buf }
                }
            }
            None => Op::Load { addr: pick(rng) },
        },
        7 => match file {
            Some(file) => Op::Truncate {
                file,
                size: pick(rng) % (1 << 20),
            },
            None => Op::Store {
                addr: pick(rng),
                value: rng.gen(),
            },
        },
        8 => Op::Load { addr: pick(rng) },
        9 => Op::Store {
            addr: pick(rng),
            value: rng.gen(),
        },
        _ => Op::Pageout { addr, len: page_len },
    };
    let task = match t.ops.len() {
        0 => 0,
        n => t.ops[rng.gen_range(0..n)].task,
    };
    let at = rng.gen_range(0..=t.ops.len());
    t.ops.insert(at, OpLine { task, op });
}

/// Operations of `other` into `t`: a prefix of `t` then a suffix of `other` when their tasks
/// and files line up, else a run of `other`'s operations with tasks and files folded into
/// `t`'s.
fn splice(rng: &mut ChaCha8Rng, t: &mut Trace, other: &Trace) {
    if other.ops.is_empty() {
        return;
    }
    let ntasks = t.tasks.len().max(1) as TaskId;
    let nfiles = t.files.len() as u32;
    let i = rng.gen_range(0..other.ops.len());
    let j = rng.gen_range(i..other.ops.len()).min(i + 8);
    let mut run: Vec<OpLine> = Vec::new();
    for l in &other.ops[i..=j] {
        let mut l = *l;
        if matches!(l.op, Op::Fork { .. } | Op::Exit) {
            continue;
        }
        l.task %= ntasks;
        match &mut l.op {
            Op::Mmap { file: Some(f), .. }
            | Op::Write { file: f, .. }
            | Op::Read { file: f, .. }
            | Op::Truncate { file: f, .. } => {
                if nfiles == 0 {
                    continue;
                }
                *f %= nfiles;
            }
            _ => {}
        }
        run.push(l);
    }
    let at = rng.gen_range(0..=t.ops.len());
    if rng.gen_bool(0.5) {
        // Replace the tail from `at` (the forks and exits kept: their children stay valid).
        let tail: Vec<OpLine> = t.ops[at..]
            .iter()
            .copied()
            .filter(|l| matches!(l.op, Op::Fork { .. } | Op::Exit))
            .collect();
        t.ops.truncate(at);
        t.ops.extend(run);
        t.ops.extend(tail);
    } else {
        t.ops.splice(at..at, run);
    }
}

fn schedule(rng: &mut ChaCha8Rng, t: &mut Trace) {
    let ntasks = t.task_count() as TaskId;
    let cpus = t.config.cpus;
    let token = |rng: &mut ChaCha8Rng| {
        if rng.gen_bool(0.1) {
            SchedToken::Irq(rng.gen_range(0..cpus))
        } else {
            SchedToken::Task(rng.gen_range(0..ntasks.max(1)))
        }
    };
    let s = &mut t.schedule;
    if s.is_empty() || rng.gen_bool(0.05) {
        // A fresh schedule: runs of each task (a few steps, then preempted), some interrupts.
        s.clear();
        let len = rng.gen_range(1..=4 * t.ops.len().max(2));
        while s.len() < len {
            let tok = token(rng);
            for _ in 0..rng.gen_range(1..=4) {
                s.push(tok);
            }
        }
        return;
    }
    let i = rng.gen_range(0..s.len());
    match rng.gen_range(0..8u32) {
        0 => {
            let tok = token(rng);
            s.insert(i, tok);
        }
        1 => {
            let end = (i + rng.gen_range(1..=4)).min(s.len());
            s.drain(i..end);
        }
        2 => {
            // A preemption point moved: the token repeated (its task runs longer).
            let tok = s[i];
            for _ in 0..rng.gen_range(1..=3) {
                s.insert(i, tok);
            }
        }
        3 => s[i] = token(rng),
        4 => {
            let j = rng.gen_range(0..s.len());
            s.swap(i, j);
        }
        5 => s.insert(i, SchedToken::Irq(rng.gen_range(0..cpus))),
        6 => s.truncate(i),
        _ => {
            if rng.gen_bool(0.2) {
                s.clear();
            } else {
                let end = (i + rng.gen_range(1..=6)).min(s.len());
                let run: Vec<SchedToken> = s[i..end].to_vec();
                s.splice(i..i, run);
            }
        }
    }
}

/// One configuration knob to another value (the bug switches never).
fn config(rng: &mut ChaCha8Rng, t: &mut Trace) {
    let c = &mut t.config;
    match rng.gen_range(0..9u32) {
        0 => c.highpte = !c.highpte,
        1 => c.ptshare = !c.ptshare,
        2 => c.hugeshare = !c.hugeshare,
        3 => c.pkmap = [1, 2, 3, 4, 8][rng.gen_range(0..5)],
        4 => c.atomic = [2, 3, 4, 16][rng.gen_range(0..4)],
        5 | 6 => {
            c.frames = [16, 24, 32, 48, 64, 128, 256, 512][rng.gen_range(0..8)];
            c.highmem = c.highmem.min(c.frames - 8);
        }
        7 => {
            c.highmem = [0, c.frames / 4, c.frames / 2, c.frames - 8][rng.gen_range(0..4)];
        }
        _ => {
            let cpus = rng.gen_range(1..=4u32);
            c.cpus = cpus;
            for task in &mut t.tasks {
                task.cpu %= cpus;
            }
            for l in &mut t.ops {
                if let Op::Fork { cpu: Some(c), .. } = &mut l.op {
                    *c %= cpus;
                }
            }
            for s in &mut t.schedule {
                if let SchedToken::Irq(c) = s {
                    *c %= cpus;
                }
            }
        }
    }
}

fn task_cpu(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.tasks.is_empty() {
        return;
    }
    let i = rng.gen_range(0..t.tasks.len());
    t.tasks[i].cpu = rng.gen_range(0..t.config.cpus);
}

fn file_size(rng: &mut ChaCha8Rng, t: &mut Trace) {
    if t.files.is_empty() {
        return;
    }
    let i = rng.gen_range(0..t.files.len());
    let f = &mut t.files[i];
    if f.huge {
        let hps = t.config.huge_page_size();
        f.size = hps * rng.gen_range(1..=4);
        return;
    }
    let dict = dictionary(t);
    let v = nudge(rng, t.files[i].size, &t.config, &dict);
    t.files[i].size = v.clamp(1, 1 << 22);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{generate, GenOptions};
    use rand::SeedableRng;

    #[test]
    fn mutants_are_valid_and_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut made = 0;
        for seed in 0..100 {
            let opts = if seed % 2 == 0 {
                GenOptions::concurrent()
            } else {
                GenOptions::sequential()
            };
            let a = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
            let b = generate(&mut ChaCha8Rng::seed_from_u64(seed + 1000), &opts);
            for _ in 0..20 {
                if let Some(m) = mutate(&mut rng, &a, Some(&b)) {
                    assert!(m.round_trips());
                    assert_ne!(m, a);
                    assert_eq!(m.config.bugs, a.config.bugs);
                    made += 1;
                }
            }
        }
        assert!(made > 1800, "only {made} of 2000 mutations gave a valid trace");
    }

    /// One field of `t` set to a value that may break one of the parser's rules.
    fn corrupt(rng: &mut ChaCha8Rng, t: &mut Trace) {
        let tasks = t.task_count() as u32;
        let files = t.files.len() as u32;
        let cpus = t.config.cpus;
        let at = |rng: &mut ChaCha8Rng, n: usize| rng.gen_range(0..=n);
        match rng.gen_range(0..15u32) {
            0 => t.config.cpus = rng.gen_range(0..10),
            1 => t.config.ptrs = [2, 4, 6, 8, 16, 1024][rng.gen_range(0..6)],
            2 => t.config.frames = rng.gen_range(8..40),
            3 => t.config.highmem = t.config.frames.saturating_sub(rng.gen_range(0..12)),
            4 => {
                let hps = t.config.huge_page_size();
                if let Some(f) = t.files.first_mut() {
                    f.huge = true;
                    f.size = [0, PAGE_SIZE, hps, 2 * hps, hps + PAGE_SIZE][rng.gen_range(0..5)];
                }
            }
            5 => {
                if let Some(task) = t.tasks.last_mut() {
                    task.cpu = rng.gen_range(0..cpus + 2);
                }
            }
            6 => {
                let mm = [0, 1, 7, 65535, 65536, 1 << 20][rng.gen_range(0..6)];
                t.tasks.push(mm_reference::TaskInit { mm, cpu: 0 });
            }
            7 => {
                if !t.ops.is_empty() {
                    let i = rng.gen_range(0..t.ops.len());
                    t.ops[i].task = rng.gen_range(0..tasks + 2);
                }
            }
            8 => {
                let i = at(rng, t.ops.len());
                let task = rng.gen_range(0..tasks.max(1));
                t.ops.insert(i, OpLine { task, op: Op::Exit });
            }
            9 => {
                let file = rng.gen_range(0..files + 2);
                let i = at(rng, t.ops.len());
                let op = [
                    Op::Truncate { file, size: 0 },
                    Op::Write {
                        file,
                        off: 0,
                        len: 1,
                        buf: USER_BASE,
                    },
                    Op::Mmap {
                        addr: 0,
                        len: PAGE_SIZE,
                        prot: Prot::RW,
                        flags: MmapFlags::default(),
                        file: Some(file),
                        off: 0,
                    },
                ][rng.gen_range(0..3)];
                t.ops.insert(i, OpLine { task: 0, op });
            }
            10 => {
                let i = at(rng, t.ops.len());
                let flags = MremapFlags {
                    maymove: rng.gen(),
                    fixed: rng.gen(),
                };
                let to = rng.gen::<bool>().then_some(USER_BASE);
                let op = Op::Mremap {
                    addr: USER_BASE,
                    old: PAGE_SIZE,
                    new: PAGE_SIZE,
                    flags,
                    to,
                };
                t.ops.insert(i, OpLine { task: 0, op });
            }
            11 => {
                let i = at(rng, t.ops.len());
                let task = tasks + rng.gen_range(0..2) - rng.gen_range(0..2);
                let cpu = [None, Some(0), Some(cpus), Some(cpus + 1)][rng.gen_range(0..4)];
                t.ops.insert(
                    i,
                    OpLine {
                        task: 0,
                        op: Op::Fork { task, cpu },
                    },
                );
            }
            12 => {
                let i = at(rng, t.schedule.len());
                let tok = if rng.gen() {
                    SchedToken::Task(rng.gen_range(0..tasks + 2))
                } else {
                    SchedToken::Irq(rng.gen_range(0..cpus + 2))
                };
                t.schedule.insert(i, tok);
            }
            13 => {
                // Many address spaces in few lowmem frames.
                t.config.frames = 16;
                t.config.highmem = rng.gen_range(0..=8);
                for (i, task) in t.tasks.iter_mut().enumerate() {
                    task.mm = i as u32;
                }
                for _ in 0..rng.gen_range(0..10) {
                    let mm = t.tasks.len() as u32;
                    t.tasks.push(mm_reference::TaskInit { mm, cpu: 0 });
                }
            }
            _ => {
                if rng.gen_range(0..4) == 0 {
                    t.tasks.clear();
                }
            }
        }
    }

    /// `Trace::check` judges exactly as printing and parsing back does, on mutants (most of
    /// them valid) and on traces with a field corrupted (many of them not): every rule of
    /// the parser is broken by some of them.
    #[test]
    fn the_tree_check_agrees_with_the_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut valid_seen, mut invalid_seen) = (0, 0);
        let mut reasons = std::collections::BTreeSet::new();
        for seed in 0..400u64 {
            let opts = match seed % 3 {
                0 => GenOptions::concurrent(),
                1 => GenOptions::sequential(),
                _ => GenOptions::conform(),
            };
            let base = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
            let other = generate(&mut ChaCha8Rng::seed_from_u64(seed + 1000), &opts);
            for _ in 0..40 {
                // Mutations expect a valid trace: the corruption, if any, comes last.
                let mut t = base.clone();
                for _ in 0..rng.gen_range(1..4) {
                    mutate_once(&mut rng, &mut t, Some(&other));
                }
                if rng.gen_range(0..2) == 0 {
                    corrupt(&mut rng, &mut t);
                }
                let check = t.check();
                assert_eq!(
                    check.is_ok(),
                    t.round_trips(),
                    "check says {check:?} but the round trip says otherwise for:\n{t}"
                );
                match check {
                    Ok(()) => valid_seen += 1,
                    Err(why) => {
                        invalid_seen += 1;
                        reasons.insert(why);
                    }
                }
            }
        }
        assert!(
            valid_seen > 4000 && invalid_seen > 2000,
            "{valid_seen} valid, {invalid_seen} invalid"
        );
        assert_eq!(reasons.len(), 12, "every rule broken: {reasons:?}");
    }

    #[test]
    fn mutation_is_deterministic() {
        let a = generate(&mut ChaCha8Rng::seed_from_u64(3), &GenOptions::concurrent());
        let run = || {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            (0..50).map(|_| mutate(&mut rng, &a, None)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
