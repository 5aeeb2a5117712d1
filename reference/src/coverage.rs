//! Model-level coverage: the features a run reached, for a guided fuzzer
//! (`RunOptions::coverage`, returned in `RunReport::features`).
//!
//! A feature is a `u32`: its kind in the top 8 bits, a hash of what was seen in the low 24.
//! The kinds, each recorded at the end of every scheduling step (or at an interrupt):
//! - `STEP`: the operation that ran, how many steps it has run (up to 15), and what its step
//!   ended on (returned, took or waits for a lock of some class, waits for a kmap slot or for
//!   memory, a preemption point): the points of each kernel path.
//! - `RESULT`: an operation's kind and the class of its result (errno, signal, OOM, a count
//!   of nothing, of part or of whole pages).
//! - `LOCKS`: two lock classes (and modes) one task holds together, in the order taken.
//! - `WAIT`: the class a task sleeps for, its operation and the classes it holds; with the
//!   number of sleepers and whether some sleeper waits on a task that sleeps too (a chain: one
//!   step from a deadlock).
//! - `KMAP`: pool slots in use, the pool's size, tasks sleeping for a slot; the deepest
//!   kmap_atomic stack and its distance from `atomic`; a kmap_atomic held across a step.
//! - `STALE`: TLB entries that no longer match their pte while the writer of the mm still
//!   holds mmap_lock (stale, not yet judged), by count and by whether the pte is gone.
//! - `MEMORY`: free frames (0, 1, 2-3, more), tasks sleeping for memory, reclaim so far.
//! - `IRQ`: an interrupt on a CPU whose stack holds entries (how many), and whose owner task.
//! - `PAIR`: the operations of two consecutive steps of different tasks (an interleaving).
//!
//! Invariants kept here: recording reads the machine and never changes it; a run's features
//! are a deterministic function of the run (a sorted list without duplicates); when
//! coverage is off none of this runs (one test of a flag per step).

use crate::machine::{Machine, Mode, TaskState};
use crate::{Op, OpResult, TaskId, PAGE_SIZE};

const STEP: u32 = 1;
const RESULT: u32 = 2;
const LOCKS: u32 = 3;
const WAIT: u32 = 4;
const KMAP: u32 = 5;
const STALE: u32 = 6;
const MEMORY: u32 = 7;
const IRQ: u32 = 8;
const PAIR: u32 = 9;

/// Bits of the seen-set (hashed features; a collision only merges two features).
const SEEN_BITS: usize = 1 << 20;

/// The features of the run in progress: a bit set for de-duplication and the list of the
/// features seen, both kept across runs (cleared through the list).
pub(crate) struct Coverage {
    seen: Vec<u64>,
    list: Vec<u32>,
    /// The operation kind of the previous step and its task.
    last: Option<(TaskId, u32)>,
}

impl Default for Coverage {
    fn default() -> Coverage {
        Coverage {
            seen: vec![0; SEEN_BITS / 64],
            list: Vec::new(),
            last: None,
        }
    }
}

fn mix(x: u64) -> u32 {
    // splitmix64's finalizer: every input bit moves many output bits.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// The kind of an operation, 0..12.
pub(crate) fn op_kind(op: &Op) -> u32 {
    match op {
        Op::Mmap { .. } => 0,
        Op::Munmap { .. } => 1,
        Op::Mprotect { .. } => 2,
        Op::Mremap { .. } => 3,
        Op::Write { .. } => 4,
        Op::Read { .. } => 5,
        Op::Truncate { .. } => 6,
        Op::Load { .. } => 7,
        Op::Store { .. } => 8,
        Op::Pageout { .. } => 9,
        Op::Fork { .. } => 10,
        Op::Exit => 11,
    }
}

fn mode_bit(mode: Mode) -> u64 {
    match mode {
        Mode::Read => 0,
        Mode::Write => 1,
    }
}

impl Coverage {
    /// Starts a run.
    pub fn reset(&mut self) {
        for &f in &self.list {
            let h = f as usize % SEEN_BITS;
            self.seen[h / 64] = 0;
        }
        self.list.clear();
        self.last = None;
    }

    /// The run's features, sorted, and a fresh start.
    pub fn take(&mut self) -> Vec<u32> {
        let mut out = self.list.clone();
        self.reset();
        out.sort_unstable();
        out
    }

    fn hit(&mut self, kind: u32, payload: u64) {
        let f = (kind << 24) | (mix(payload) & 0x00ff_ffff);
        let h = f as usize % SEEN_BITS;
        let (w, b) = (h / 64, 1u64 << (h % 64));
        if self.seen[w] & b == 0 {
            self.seen[w] |= b;
            self.list.push(f);
        }
    }

    /// The end of task `t`'s step, in which it ran operation `op` for the `steps`-th time;
    /// `result` if the operation returned.
    pub fn step(&mut self, m: &Machine, t: TaskId, op: &Op, steps: u32, result: Option<&OpResult>) {
        let kind = op_kind(op) as u64;
        let ti = t as usize;
        // What the step ended on.
        let end: u64 = match (result, m.locks.waiting(t)) {
            (Some(_), _) => 1,
            (None, Some(l)) => 0x100 | l.class() as u64,
            (None, None) if m.tasks[ti].kmap_wait.is_some() => 2,
            (None, None) if m.tasks[ti].mem_wait.is_some() => 3,
            (None, None) => match m.locks.held(t).last() {
                Some(&(l, mode)) => 0x200 | (l.class() as u64) << 1 | mode_bit(mode),
                None => 4,
            },
        };
        self.hit(STEP, kind | u64::from(steps.min(15)) << 4 | end << 8);
        if let Some(r) = result {
            let class = match *r {
                OpResult::Err(e) => 0x100 | e as u64,
                OpResult::Sigsegv => 2,
                OpResult::Sigbus => 3,
                OpResult::Oom => 4,
                OpResult::Count(0) => 5,
                OpResult::Count(n) if n % PAGE_SIZE == 0 => 6,
                OpResult::Count(_) => 7,
                _ => 1,
            };
            self.hit(RESULT, kind | class << 4);
        }
        // Lock classes held together, in the order taken.
        let held = m.locks.held(t);
        for (i, &(a, ma)) in held.iter().enumerate() {
            for &(b, mb) in &held[i + 1..] {
                let pair = (a.class() as u64) << 8 | mode_bit(ma) << 7 | (b.class() as u64) << 1 | mode_bit(mb);
                self.hit(LOCKS, pair);
            }
        }
        // Sleepers: what each waits for, and chains of them.
        let mut sleepers = 0u64;
        let mut chain = false;
        for (u, task) in m.tasks.iter().enumerate() {
            if task.state != TaskState::Alive {
                continue;
            }
            let Some(l) = m.locks.waiting(u as TaskId) else {
                continue;
            };
            sleepers += 1;
            let mut classes = 0u64;
            for &(h, _) in m.locks.held(u as TaskId) {
                classes |= 1 << (h.class() as u64);
            }
            self.hit(WAIT, (l.class() as u64) | classes << 8);
            chain |= m
                .tasks
                .iter()
                .enumerate()
                .any(|(v, _)| v != u && m.locks.holds(v as TaskId, l) && m.locks.waiting(v as TaskId).is_some());
        }
        if sleepers > 0 {
            self.hit(WAIT, 0x1_0000 | sleepers.min(4) | u64::from(chain) << 4 | kind << 8);
        }
        // The kmap pool and the atomic stacks.
        let in_use = m.kmap.count().iter().filter(|&&c| c > 1).count() as u64;
        let waiters = m.tasks.iter().filter(|t| t.kmap_wait.is_some()).count() as u64;
        let pkmap = m.cfg.pkmap as u64;
        self.hit(
            KMAP,
            in_use.min(8) | (pkmap - in_use.min(pkmap)).min(3) << 4 | waiters.min(3) << 8 | pkmap.min(9) << 12,
        );
        let depth = m.kmap.stacks.iter().map(Vec::len).max().unwrap_or(0) as u64;
        let atomic = m.cfg.atomic as u64;
        let cpu = m.tasks[ti].cpu;
        let mine = m.kmap.in_atomic(t, cpu);
        self.hit(
            KMAP,
            0x10_0000 | depth.min(8) | (atomic - depth.min(atomic)).min(3) << 4 | u64::from(mine) << 8 | kind << 12,
        );
        // TLB entries outliving a pte change their writer has not flushed yet.
        let mut stale = 0u64;
        let mut gone = false;
        let writing = |mm: usize| m.mms[mm].live && m.locks.write_held(crate::machine::LockId::MmapLock(mm as u32));
        // (Most steps have no writer: then no entry needs looking at.)
        let cpus = if (0..m.mms.len()).any(writing) {
            &m.cpus[..]
        } else {
            &[]
        };
        for c in cpus {
            for e in &c.tlb {
                let mm = e.mm as usize;
                if !writing(mm) {
                    continue;
                }
                let pte = m.pte(mm, e.vpn * PAGE_SIZE);
                if !pte.present() || pte.pfn != e.pfn || (e.write && !pte.writable()) {
                    stale += 1;
                    gone |= !pte.present();
                }
            }
        }
        if stale > 0 {
            self.hit(STALE, stale.min(4) | u64::from(gone) << 4 | kind << 8);
        }
        // Memory.
        let allocated = m.frames.allocated_count() as u64;
        let free = u64::from(m.cfg.frames).saturating_sub(allocated);
        let bucket = match free {
            0 => 0,
            1 => 1,
            2..=3 => 2,
            _ => 3,
        };
        let mem_waiters = m.tasks.iter().filter(|t| t.mem_wait.is_some()).count() as u64;
        self.hit(
            MEMORY,
            bucket | mem_waiters.min(3) << 4 | m.reclaims.min(3) << 8 | u64::from(m.reclaim_needs_kmap.is_some()) << 12,
        );
        // Interleavings.
        let k = kind as u32;
        if let Some((lt, lk)) = self.last {
            if lt != t {
                self.hit(PAIR, u64::from(lk) | u64::from(k) << 4);
            }
        }
        self.last = Some((t, k));
    }

    /// An interrupt about to be delivered on `cpu`.
    pub fn irq(&mut self, m: &Machine, cpu: u32) {
        let Some(stack) = m.kmap.stacks.get(cpu as usize) else {
            return;
        };
        let owner = m.kmap.atomic_owner(cpu).is_some();
        self.hit(IRQ, (stack.len() as u64).min(8) | u64::from(owner) << 4);
    }
}
