//! The event log of a run: what the executor did, step by step, in the order it did it. Each
//! scheduling step with its task and CPU; each operation's start, linearization points and
//! end with its result; every lock taken, waited for, handed over and released, with the
//! kernel function that did it; every page-table entry set or cleared; every TLB entry filled
//! and dropped per CPU, and every flush; kmaps of the pool taken and released (with the
//! sleepers a release wakes), its flushes (flush_all_zero_pkmaps), and sleeps on a full
//! pool; kmap_atomic entries pushed and popped per CPU, by a task or an interrupt handler,
//! and a handler's remap of a slot it does not own; sleeps for memory and OOM wakes;
//! writebacks; frames allocated and freed; interrupts; and the violation that ended the run,
//! with a deadlock's wait-for cycle. `mmfuzz replay --events` prints it and `mmfuzz show`
//! draws it.
//!
//! What it keeps true:
//! - Recording is off unless a run asks for it ([`crate::RunOptions::events`]). Each hook is an
//!   inlined test of `Machine::events`, `None` while fuzzing: nothing is computed, allocated
//!   or looked up then.
//! - Events are recorded where things happen (the scheduler, the kernel paths' locks, kmaps,
//!   sleeps and preemption points, the machine's pte writes, TLB walks and flushes, the kmap
//!   pool and stacks, writeback, the frame allocator), never rebuilt afterwards from the
//!   oracles, and in the order they happen (a linearization point the kernel queued for the
//!   spec is logged before the next event).
//! - Recording changes nothing the run does: the hooks only read the machine.
//! - The log is a pure function of the run: no clocks, no hash order. The same trace gives the
//!   same events, bit for bit.
//!
//! Adding an event: a variant of [`Event`], a one-line hook where the thing happens (an
//! `ev_*` method below), a line of the text log (`mm_targets::events`) and, if it belongs in
//! the picture, `src/show/`. Not modelled yet, so not here: shared page tables
//! (`Share`/`Unshare` of a pte or pmd page, hooked where issue 5 links and unlinks a table;
//! the links show as entries set and cleared).

use crate::machine::frames::{E_DIRTY, E_PRESENT, E_PROTNONE, E_SPECIAL, E_WRITE};
use crate::machine::{Ctx, Entry, LockId, Machine, Mode, Owner, Pfn, ZERO_PFN};
use crate::{CpuId, Op, OpResult, Oracle, Outcome, TaskId, PAGE_SIZE};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::Location;

pub use crate::machine::Lin;

mod functions {
    include!(concat!(env!("OUT_DIR"), "/functions.rs"));
}

/// One thing the executor did. `at` names the kernel (or machine) function it happened in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// Scheduling step `step` (counted from 1, as TRACE.md's `steps` counts them) runs `task`
    /// (a thread of address space `mm`) on `cpu`, from where it stands to its next
    /// scheduling point.
    Step {
        step: u64,
        task: TaskId,
        cpu: CpuId,
        mm: u32,
        /// The schedule token that chose the task (its index among the run's tokens), or
        /// `None` when the file-order rule did (no token left naming a runnable task).
        token: Option<u32>,
    },
    /// An `irqC` token: an interrupt on `cpu`, on top of `current` (the task it last ran).
    Irq { cpu: CpuId, current: Option<TaskId> },
    /// `task` starts operation `call` (an index into the trace's operations).
    Start { task: TaskId, call: usize, op: Op },
    /// `task`'s operation `call` returns `result`.
    End {
        task: TaskId,
        call: usize,
        result: OpResult,
    },
    /// A linearization point of `task`'s operation: the flat spec applies it here.
    Lin { task: TaskId, point: Lin },
    /// `task` reaches a preemption point (cond_resched) in `at`: its step ends.
    Yield { task: TaskId, at: &'static str },
    /// `task` takes `lock` at once, in `at` (a sleeping lock ends the step there).
    Lock {
        task: TaskId,
        lock: Lock,
        mode: LockMode,
        at: &'static str,
    },
    /// `task` finds `lock` held (or waiters queued) and sleeps in its queue, in `at`.
    Wait {
        task: TaskId,
        lock: Lock,
        mode: LockMode,
        at: &'static str,
    },
    /// `task` releases `lock`, in `at`.
    Unlock { task: TaskId, lock: Lock, at: &'static str },
    /// The release by `from` handed `lock` to `task`, which slept for it: it holds it now.
    Handoff { task: TaskId, lock: Lock, from: TaskId },
    /// A page-table entry of `mm` changed: the entry for `va` in a table of `level` (0 pte,
    /// 1 pmd, 2 pud, 3 pgd), from `old` to `new` (`None`: empty), in `at`.
    Entry {
        mm: u32,
        level: u8,
        va: u64,
        old: Option<Pte>,
        new: Option<Pte>,
        at: &'static str,
    },
    /// A hardware walk cached an entry in its CPU's TLB.
    TlbFill(TlbEntry),
    /// A TLB flush; each entry it drops follows as a [`Event::TlbDrop`].
    TlbFlush(Flush),
    /// The flush before dropped this entry.
    TlbDrop(TlbEntry),
    /// `task` kmap()s frame `pfn`: pool slot `slot` maps it (a new mapping of a free slot,
    /// or one more user of the slot the page has), in `at`.
    Kmap {
        task: TaskId,
        pfn: u32,
        slot: u32,
        at: &'static str,
    },
    /// `task` kunmap()s frame `pfn` from pool slot `slot`, in `at`. `woken`: the tasks asleep
    /// on the full pool that this kunmap wakes (the slot's count dropped to 1).
    Kunmap {
        task: TaskId,
        pfn: u32,
        slot: u32,
        woken: Vec<TaskId>,
        at: &'static str,
    },
    /// flush_all_zero_pkmaps, run by `task`'s kmap when its scan of the pool wraps: every
    /// slot no one uses is freed (`freed`: slot and the frame it mapped) and every CPU's
    /// kernel TLB of the pool flushed.
    KmapFlush { task: TaskId, freed: Vec<(u32, u32)> },
    /// `task` sleeps in kmap() of frame `pfn`: every pool slot is in use, in `at`.
    KmapSleep { task: TaskId, pfn: u32, at: &'static str },
    /// kmap_atomic on `cpu` by `by`: the entry at `depth` of the CPU's stack maps frame `pfn`,
    /// in `at`.
    KmapAtomic {
        cpu: CpuId,
        by: AtomicBy,
        pfn: u32,
        depth: u32,
        at: &'static str,
    },
    /// kunmap_atomic on `cpu` by `by` pops the entry at `depth`, which its holder mapped to
    /// frame `pfn`, in `at`.
    KunmapAtomic {
        cpu: CpuId,
        by: AtomicBy,
        pfn: u32,
        depth: u32,
        at: &'static str,
    },
    /// The interrupt handler on `cpu` remaps the slot of the entry at `depth` (type-indexed
    /// slots, `kmap-atomic-irq-slot`): `holder`'s entry of frame `was` now maps frame `pfn`,
    /// and the handler leaves it so.
    KmapAtomicRemap {
        cpu: CpuId,
        depth: u32,
        holder: AtomicBy,
        was: u32,
        pfn: u32,
    },
    /// `task` sleeps until a frame is freed (its allocation found nothing free and nothing
    /// reclaim could take), in `at`.
    MemSleep { task: TaskId, at: &'static str },
    /// No task could run: the OOM path wakes `task`, asleep for memory, for one last try
    /// before its allocation fails.
    OomWake { task: TaskId },
    /// `task` writes dirty page-cache frame `pfn` (page `index` of `file`) back to disk, in
    /// `at` (reclaim, direct reclaim through a kmap, pageout).
    Writeback {
        task: TaskId,
        pfn: u32,
        file: u32,
        index: u64,
        at: &'static str,
    },
    /// Frame `pfn` was allocated for `owner` (`anon`, `file F page I`, `pte table`, ...).
    Alloc { pfn: u32, owner: String },
    /// Frame `pfn` lost its last reference and is free.
    Free { pfn: u32 },
    /// The run ends with a violation of `oracle`; for a deadlock, its wait-for cycle as (task,
    /// the lock it waits for, the task it waits on next in the cycle).
    Violation {
        oracle: Oracle,
        message: String,
        cycle: Vec<(TaskId, Lock, TaskId)>,
    },
}

/// Who holds (or pushed, or popped) a kmap_atomic entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtomicBy {
    Task(TaskId),
    /// The interrupt handler running on the CPU.
    Irq,
}

impl From<Ctx> for AtomicBy {
    fn from(c: Ctx) -> AtomicBy {
        match c {
            Ctx::Task(t) => AtomicBy::Task(t),
            Ctx::Irq => AtomicBy::Irq,
        }
    }
}

impl fmt::Display for AtomicBy {
    /// `task 3`, `the interrupt handler`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtomicBy::Task(t) => write!(f, "task {t}"),
            AtomicBy::Irq => f.write_str("the interrupt handler"),
        }
    }
}

/// A TLB entry of one CPU: `va` (a page) of `mm` -> `pfn`, filled by a read or a `write`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TlbEntry {
    pub cpu: CpuId,
    pub mm: u32,
    pub va: u64,
    pub pfn: u32,
    pub write: bool,
}

/// A TLB flush of `[start, end)` of `mm` on the CPUs in the mask `cpus`, in `at`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flush {
    pub mm: u32,
    pub start: u64,
    pub end: u64,
    pub cpus: u32,
    pub at: &'static str,
}

/// A lock instance, as the oracles' messages name it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Lock {
    /// `mmap_lock of mm 0`, `the page lock of frame 130`, ...
    pub name: String,
    /// A spinlock (taken and released inside one atomic section), not a sleeping lock.
    pub spin: bool,
}

impl From<LockId> for Lock {
    fn from(id: LockId) -> Lock {
        Lock {
            name: id.to_string(),
            spin: id.spinning(),
        }
    }
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How a lock is wanted or held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockMode {
    /// Shared (down_read).
    Read,
    /// Exclusive (down_write, lock_page, spin_lock).
    Write,
}

impl From<Mode> for LockMode {
    fn from(m: Mode) -> LockMode {
        match m {
            Mode::Read => LockMode::Read,
            Mode::Write => LockMode::Write,
        }
    }
}

/// A page-table entry that maps something: a frame (a page, or the next table for the upper
/// levels) and its bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Pte {
    /// The frame; `u32::MAX` is the shared zero page.
    pub pfn: u32,
    pub present: bool,
    pub write: bool,
    pub dirty: bool,
    /// Maps the zero page (pte_special).
    pub special: bool,
    /// Mapped but inaccessible (PROT_NONE).
    pub protnone: bool,
}

impl Pte {
    fn of(e: Entry) -> Option<Pte> {
        e.mapped().then_some(Pte {
            pfn: e.pfn,
            present: e.flags & E_PRESENT != 0,
            write: e.flags & E_WRITE != 0,
            dirty: e.flags & E_DIRTY != 0,
            special: e.flags & E_SPECIAL != 0,
            protnone: e.flags & E_PROTNONE != 0,
        })
    }
}

/// A frame by name: `frame 130`, or `the zero page`.
pub fn frame_name(pfn: u32) -> String {
    if pfn == ZERO_PFN {
        "the zero page".to_string()
    } else {
        format!("frame {pfn}")
    }
}

impl fmt::Display for Pte {
    /// `frame 130 rwd` (`r` present, `w` writable, `d` dirty), `the zero page r`,
    /// `frame 9 none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", frame_name(self.pfn))?;
        if self.protnone {
            return f.write_str("none");
        }
        for (on, c) in [(self.present, 'r'), (self.write, 'w'), (self.dirty, 'd')] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The name of the function that a source location stands in (the nearest `fn` above it in
/// its file), or the file's path when the file is not one of this crate's.
fn function_at(loc: &'static Location<'static>) -> &'static str {
    let file = loc.file();
    for &(path, fns) in functions::FUNCTIONS {
        let ours = file
            .strip_suffix(path)
            .is_some_and(|pre| pre.ends_with("src/") || pre.ends_with("src\\"));
        if ours {
            let i = fns.partition_point(|&(line, _)| line <= loc.line());
            return if i == 0 { file } else { fns[i - 1].1 };
        }
    }
    file
}

/// What frame owner `o` is, in words.
fn owner_name(o: Owner) -> String {
    match o {
        Owner::Free => "nothing".to_string(),
        Owner::Anon => "anon".to_string(),
        Owner::Cache { file, index } => format!("file {file} page {index}"),
        Owner::Table { level } => format!("{} table", LEVEL_NAMES[level as usize]),
    }
}

/// The name of a table of each level, and of an entry in it.
pub const LEVEL_NAMES: [&str; 4] = ["pte", "pmd", "pud", "pgd"];

/// The log being recorded, kept in the machine while it runs.
#[derive(Default)]
pub(crate) struct Recorder {
    events: Vec<Event>,
    /// Where each page table below a pgd sits: table frame -> (mm, level, first address).
    tables: BTreeMap<Pfn, (u32, u8, u64)>,
    /// Entries of `Machine::lin` already logged (they are drained after every step).
    lins: usize,
}

impl Machine {
    /// Starts recording: the frames allocated before the run (the first pgds) come first.
    pub(crate) fn record_events(&mut self) {
        let mut r = Recorder::default();
        for pfn in self.frames.allocated() {
            let owner = owner_name(self.frames.frame(pfn).owner);
            r.events.push(Event::Alloc { pfn, owner });
        }
        self.events = Some(Box::new(r));
    }

    /// The log so far, ended by the violation of `outcome` if there is one (a deadlock with
    /// its cycle, read from the lock table as the run left it). Empty when not recording.
    pub(crate) fn take_events(&mut self, outcome: &Outcome) -> Vec<Event> {
        if self.events.is_none() {
            return Vec::new();
        }
        self.ev_lins();
        if let Outcome::Violation(v) = outcome {
            let cycle = match v.oracle {
                Oracle::Deadlock => self.locks.cycle().unwrap_or_default(),
                _ => Vec::new(),
            };
            let cycle = cycle.into_iter().map(|(t, l, on)| (t, Lock::from(l), on)).collect();
            self.record(Event::Violation {
                oracle: v.oracle,
                message: v.message.clone(),
                cycle,
            });
        }
        self.events.take().map(|r| r.events).unwrap_or_default()
    }

    /// Logs `e`, after the linearization points queued before it.
    fn record(&mut self, e: Event) {
        self.ev_lins();
        if let Some(r) = self.events.as_deref_mut() {
            r.events.push(e);
        }
    }

    /// Logs the linearization points queued in `lin` since the last call.
    fn ev_lins(&mut self) {
        let Some(r) = self.events.as_deref_mut() else { return };
        for &(task, point) in &self.lin[r.lins.min(self.lin.len())..] {
            r.events.push(Event::Lin { task, point });
        }
        r.lins = self.lin.len();
    }

    /// Runs `log` (which records) out of line: a hook inlined into a hot path is a test of
    /// `events` and a call, nothing more.
    #[cold]
    #[inline(never)]
    fn logged(&mut self, log: impl FnOnce(&mut Machine)) {
        log(self);
    }

    /// The end of a step's poll: its last linearization points are logged before the
    /// scheduler hands them to the spec (and empties `lin`).
    #[inline]
    pub(crate) fn ev_polled(&mut self) {
        if self.events.is_some() {
            self.logged(Machine::ev_lins);
        }
    }

    /// Step `step` of `task` begins (`lin` is empty again).
    #[inline]
    pub(crate) fn ev_step(&mut self, step: u64, task: TaskId, token: Option<u32>) {
        if self.events.is_some() {
            self.logged(|m| {
                if let Some(r) = m.events.as_deref_mut() {
                    r.lins = 0;
                }
                let (cpu, mm) = (m.tasks[task as usize].cpu, m.tasks[task as usize].mm as u32);
                m.record(Event::Step {
                    step,
                    task,
                    cpu,
                    mm,
                    token,
                });
            });
        }
    }

    #[inline]
    pub(crate) fn ev_irq(&mut self, cpu: CpuId) {
        if self.events.is_some() {
            self.logged(|m| {
                let current = m.cpus.get(cpu as usize).and_then(|c| c.current);
                m.record(Event::Irq { cpu, current });
            });
        }
    }

    #[inline]
    pub(crate) fn ev_start(&mut self, task: TaskId, call: usize, op: Op) {
        if self.events.is_some() {
            self.logged(|m| m.record(Event::Start { task, call, op }));
        }
    }

    #[inline]
    pub(crate) fn ev_end(&mut self, task: TaskId, call: usize, result: OpResult) {
        if self.events.is_some() {
            self.logged(|m| m.record(Event::End { task, call, result }));
        }
    }

    /// The running task reaches a preemption point at the caller's location.
    #[inline]
    #[track_caller]
    pub(crate) fn ev_yield(&mut self) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                let task = m.current;
                m.record(Event::Yield {
                    task,
                    at: function_at(at),
                });
            });
        }
    }

    /// Task `t` asked for `id` in `mode` at `at` and has it now, or sleeps in its queue.
    #[inline]
    pub(crate) fn ev_lock(&mut self, t: TaskId, id: LockId, mode: Mode, at: &'static Location<'static>) {
        if self.events.is_some() {
            self.logged(|m| {
                let (lock, mode, at) = (Lock::from(id), LockMode::from(mode), function_at(at));
                m.record(match m.locks.waiting(t) {
                    Some(w) if w == id => Event::Wait {
                        task: t,
                        lock,
                        mode,
                        at,
                    },
                    _ => Event::Lock {
                        task: t,
                        lock,
                        mode,
                        at,
                    },
                });
            });
        }
    }

    /// Task `t` released `id` at `at`, handing it to `woken`.
    #[inline]
    pub(crate) fn ev_unlock(&mut self, t: TaskId, id: LockId, woken: &[TaskId], at: &'static Location<'static>) {
        if self.events.is_some() {
            self.logged(|m| {
                let lock = Lock::from(id);
                m.record(Event::Unlock {
                    task: t,
                    lock: lock.clone(),
                    at: function_at(at),
                });
                for &w in woken {
                    m.record(Event::Handoff {
                        task: w,
                        lock: lock.clone(),
                        from: t,
                    });
                }
            });
        }
    }

    /// Entry `i` of page table `table` is about to become `new` (called before the write).
    #[inline]
    #[track_caller]
    pub(crate) fn ev_entry(&mut self, table: Pfn, i: usize, new: Entry) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                let old = m.frames.table(table)[i];
                m.record_entry(table, i, old, new, function_at(at));
            });
        }
    }

    /// Entry `i` of page table `table`, empty before, has just been set.
    #[inline]
    #[track_caller]
    pub(crate) fn ev_entry_set(&mut self, table: Pfn, i: usize) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                let new = m.frames.table(table)[i];
                m.record_entry(table, i, Entry::NONE, new, function_at(at));
            });
        }
    }

    fn record_entry(&mut self, table: Pfn, i: usize, old: Entry, new: Entry, at: &'static str) {
        if old == new {
            return;
        }
        let place = self
            .events
            .as_deref()
            .and_then(|r| r.tables.get(&table).copied())
            .or_else(|| {
                let mm = self.mms.iter().rposition(|m| m.live && m.pgd == table)?;
                Some((mm as u32, 3, 0))
            });
        let (mm, level, base) = place.unwrap_or_else(|| panic!("page table {table} is in no mm"));
        let va = base + i as u64 * self.entry_span(level as u32);
        // A shared pte page (`ptshare.rs`) or hugetlb pmd page (`hugetlb.rs`) is placed
        // where its first remaining link is. A hugetlb pmd leaf links no table.
        let other_link = if level == 1 && old.mapped() && !old.huge() {
            self.ptshare
                .get(&old.pfn)
                .and_then(|links| links.iter().find(|&&l| l != (mm as usize, va)).copied())
        } else if level == 2 && old.mapped() && self.frames.frame(old.pfn).maps > 1 {
            self.table_linkers(old.pfn)
                .into_iter()
                .find(|&l| l != (mm as usize, va))
        } else {
            None
        };
        let Some(r) = self.events.as_deref_mut() else { return };
        if level > 0 {
            if old.mapped() && !old.huge() {
                match other_link {
                    Some((om, obase)) => {
                        r.tables.insert(old.pfn, (om as u32, level - 1, obase));
                    }
                    None => {
                        r.tables.remove(&old.pfn);
                    }
                }
            }
            if new.mapped() && !new.huge() {
                r.tables.entry(new.pfn).or_insert((mm, level - 1, va));
            }
        }
        self.record(Event::Entry {
            mm,
            level,
            va,
            old: Pte::of(old),
            new: Pte::of(new),
            at,
        });
    }

    /// `cpu`'s hardware walk cached page `vpn` of `mm` -> `pfn`.
    #[inline]
    pub(crate) fn ev_tlb_fill(&mut self, cpu: CpuId, mm: usize, vpn: u64, pfn: Pfn, write: bool) {
        if self.events.is_some() {
            self.logged(|m| {
                m.record(Event::TlbFill(TlbEntry {
                    cpu,
                    mm: mm as u32,
                    va: vpn * PAGE_SIZE,
                    pfn,
                    write,
                }))
            });
        }
    }

    /// A flush of `[start, end)` of `mm` is about to drop its entries on every CPU of the
    /// mm's mask (called before it does).
    #[inline]
    #[track_caller]
    pub(crate) fn ev_flush(&mut self, mm: usize, start: u64, end: u64) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| m.record_flush(mm, start, end, function_at(at)));
        }
    }

    fn record_flush(&mut self, mm: usize, start: u64, end: u64, at: &'static str) {
        let cpus = self.mms[mm].cpus;
        let mm = mm as u32;
        self.record(Event::TlbFlush(Flush {
            mm,
            start,
            end,
            cpus,
            at,
        }));
        let (lo, hi) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
        let mut dropped = Vec::new();
        for (c, cpu) in self.cpus.iter().enumerate() {
            if cpus & (1 << c) != 0 {
                for e in cpu.tlb.iter().filter(|e| e.mm == mm && e.vpn >= lo && e.vpn < hi) {
                    dropped.push(Event::TlbDrop(TlbEntry {
                        cpu: c as CpuId,
                        mm,
                        va: e.vpn * PAGE_SIZE,
                        pfn: e.pfn,
                        write: e.write,
                    }));
                }
            }
        }
        for e in dropped {
            self.record(e);
        }
    }

    /// Task `t` has kmap()ed `pfn` into pool slot `slot`, at `at`.
    #[inline]
    pub(crate) fn ev_kmap(&mut self, t: TaskId, pfn: Pfn, slot: usize, at: &'static Location<'static>) {
        if self.events.is_some() {
            self.logged(|m| {
                m.record(Event::Kmap {
                    task: t,
                    pfn,
                    slot: slot as u32,
                    at: function_at(at),
                })
            });
        }
    }

    /// Task `t` has kunmap()ed `pfn` from pool slot `slot` at the caller's location; `woke`:
    /// the slot's count dropped to 1 (the pool's wakeup count was just bumped).
    #[inline]
    #[track_caller]
    pub(crate) fn ev_kunmap(&mut self, t: TaskId, pfn: Pfn, slot: usize, woke: bool) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                // The sleepers this wakeup wakes: those that went to sleep at the count before.
                let before = Some(m.kmap.wakeups.wrapping_sub(1));
                let woken = m
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, task)| woke && task.kmap_wait == before)
                    .map(|(i, _)| i as TaskId)
                    .collect();
                m.record(Event::Kunmap {
                    task: t,
                    pfn,
                    slot: slot as u32,
                    woken,
                    at: function_at(at),
                });
            });
        }
    }

    /// The running task's kmap is about to run flush_all_zero_pkmaps (called before it does).
    #[inline]
    pub(crate) fn ev_kmap_flush(&mut self) {
        if self.events.is_some() {
            self.logged(|m| {
                let freed = (0..m.kmap.count().len())
                    .filter(|&s| m.kmap.count()[s] == 1)
                    .filter_map(|s| Some((s as u32, m.kmap.page()[s]?)))
                    .collect();
                m.record(Event::KmapFlush { task: m.current, freed });
            });
        }
    }

    /// Task `t` sleeps in kmap() of `pfn` on a full pool, at `at`.
    #[inline]
    pub(crate) fn ev_kmap_sleep(&mut self, t: TaskId, pfn: Pfn, at: &'static Location<'static>) {
        if self.events.is_some() {
            self.logged(|m| {
                m.record(Event::KmapSleep {
                    task: t,
                    pfn,
                    at: function_at(at),
                })
            });
        }
    }

    /// `ctx` has pushed an entry of `pfn` at `depth` of `cpu`'s kmap_atomic stack, at the
    /// caller's location.
    #[inline]
    #[track_caller]
    pub(crate) fn ev_kmap_atomic(&mut self, cpu: CpuId, ctx: Ctx, pfn: Pfn, depth: usize) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                m.record(Event::KmapAtomic {
                    cpu,
                    by: ctx.into(),
                    pfn,
                    depth: depth as u32,
                    at: function_at(at),
                })
            });
        }
    }

    /// `ctx` has popped its entry of `pfn` (the frame it mapped) at `depth` of `cpu`'s stack,
    /// at the caller's location.
    #[inline]
    #[track_caller]
    pub(crate) fn ev_kunmap_atomic(&mut self, cpu: CpuId, ctx: Ctx, pfn: Pfn, depth: usize) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                m.record(Event::KunmapAtomic {
                    cpu,
                    by: ctx.into(),
                    pfn,
                    depth: depth as u32,
                    at: function_at(at),
                })
            });
        }
    }

    /// The interrupt handler on `cpu` has remapped the slot of `holder`'s entry at `depth`
    /// from `was` to `pfn`.
    #[inline]
    pub(crate) fn ev_kmap_remap(&mut self, cpu: CpuId, depth: usize, holder: Ctx, was: Pfn, pfn: Pfn) {
        if self.events.is_some() {
            self.logged(|m| {
                m.record(Event::KmapAtomicRemap {
                    cpu,
                    depth: depth as u32,
                    holder: holder.into(),
                    was,
                    pfn,
                })
            });
        }
    }

    /// Task `t` sleeps for memory, at `at`.
    #[inline]
    pub(crate) fn ev_mem_sleep(&mut self, t: TaskId, at: &'static Location<'static>) {
        if self.events.is_some() {
            self.logged(|m| {
                m.record(Event::MemSleep {
                    task: t,
                    at: function_at(at),
                })
            });
        }
    }

    /// The OOM path has woken task `t` from its sleep for memory.
    #[inline]
    pub(crate) fn ev_oom_wake(&mut self, t: TaskId) {
        if self.events.is_some() {
            self.logged(|m| m.record(Event::OomWake { task: t }));
        }
    }

    /// The running task writes cache page `pfn` (`index` of file `f`) back, at the caller's
    /// location (called before the write).
    #[inline]
    #[track_caller]
    pub(crate) fn ev_writeback(&mut self, f: usize, index: u64, pfn: Pfn) {
        if self.events.is_some() {
            let at = Location::caller();
            self.logged(|m| {
                m.record(Event::Writeback {
                    task: m.current,
                    pfn,
                    file: f as u32,
                    index,
                    at: function_at(at),
                })
            });
        }
    }

    /// Frame `pfn` has just been allocated.
    #[inline]
    pub(crate) fn ev_alloc(&mut self, pfn: Pfn) {
        if self.events.is_some() {
            self.logged(|m| {
                let owner = owner_name(m.frames.frame(pfn).owner);
                m.record(Event::Alloc { pfn, owner });
            });
        }
    }

    /// Frame `pfn` is about to be freed.
    #[inline]
    pub(crate) fn ev_free(&mut self, pfn: Pfn) {
        if self.events.is_some() {
            self.logged(|m| m.record(Event::Free { pfn }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_names_its_function() {
        assert_eq!(function_at(Location::caller()), "a_location_names_its_function");
    }

    #[test]
    fn every_kernel_path_is_in_the_function_table() {
        let files: Vec<&str> = functions::FUNCTIONS.iter().map(|&(p, _)| p).collect();
        for f in [
            "kernel/fault.rs",
            "kernel/rw.rs",
            "kernel/vm.rs",
            "machine/mod.rs",
            "events.rs",
        ] {
            assert!(files.contains(&f), "{f} missing from {files:?}");
        }
        let (_, fns) = functions::FUNCTIONS
            .iter()
            .find(|&&(p, _)| p == "kernel/rw.rs")
            .expect("rw.rs");
        assert!(fns.iter().any(|&(_, n)| n == "generic_perform_write"));
        assert!(fns.windows(2).all(|w| w[0].0 < w[1].0), "lines in order");
    }

    #[test]
    fn ptes_print_their_bits() {
        let e = Entry {
            pfn: 130,
            flags: E_PRESENT | E_WRITE | E_DIRTY,
        };
        assert_eq!(Pte::of(e).map(|p| p.to_string()).as_deref(), Some("frame 130 rwd"));
        assert_eq!(Pte::of(Entry::NONE), None);
    }
}
