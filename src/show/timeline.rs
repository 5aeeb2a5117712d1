//! The picture's model: a run's event log folded into lanes over scheduling steps. One lane
//! per task (its operations as spans from start to end, its sleeps on the kmap pool and for
//! memory, and a row per lock it held or waited for), the kmap pool (a row per slot used,
//! each kmap a span from kmap to kunmap, and its flushes), one lane per CPU (which task each
//! step ran, interrupts with what their handler did, its kmap_atomic stack with a track per
//! depth, and the TLB entries of the pages that matter), the violation with the tasks, CPUs,
//! addresses and kmaps it names, and the columns: every step, or for a long run the steps
//! that matter with the idle stretches between them collapsed.
//!
//! What it keeps true: a pure function of the trace and its events (ordered maps only); every
//! task and CPU of the run has a lane; a span's ends are step indices (`0..steps.len()`), an
//! open span ends at `steps.len()` (the end of the run), and what an interrupt handler did
//! sits at the index of the step it came before; nothing is invented: each span is an event
//! pair of the log (a lock span is a take or handoff and its release, or a wait and its
//! handoff; a TLB span a fill and its drop; a kmap span a kmap and its kunmap, a
//! kmap_atomic span a push and its pop; a sleep span a sleep and the task's next step).

use mm_reference::events::{AtomicBy, Event, Flush, Lock, LockMode};
use mm_reference::{Call, CpuId, Op, OpResult, Oracle, RunReport, TaskId};
use mm_targets::events::{event_line, lin_text};
use mm_targets::trace::{print_op, Trace};
use std::collections::{BTreeMap, BTreeSet};

/// Columns at most before idle stretches are collapsed.
pub const MAX_COLUMNS: usize = 90;
/// The steps before the violation that are always shown.
const LAST_STEPS: usize = 30;
/// Lock rows of a task before the locks that matter little share a row per class.
const MAX_LOCK_ROWS: usize = 6;
/// TLB rows at most per CPU.
const MAX_TLB_ROWS: usize = 6;

/// One scheduling step.
pub struct Step {
    /// Its number in the run (TRACE.md's step count).
    pub n: u64,
    pub task: TaskId,
    pub cpu: CpuId,
    /// The text of its events (the `step` line first).
    pub lines: Vec<String>,
    /// An operation started or ended in it.
    pub ops: bool,
    /// A task began to wait for a lock in it or was handed one, slept on the kmap pool or
    /// for memory, or was woken from the pool by a kunmap.
    pub waits: bool,
}

/// An operation of a task, from the step it started in to the step it returned in.
pub struct OpSpan {
    pub call: usize,
    pub from: usize,
    /// `None`: it never returned (blocked or cut short by the violation).
    pub to: Option<usize>,
    /// The operation as in the trace, without its task prefix.
    pub text: String,
    pub name: &'static str,
    pub result: Option<OpResult>,
    /// Linearization points: (step, what).
    pub lins: Vec<(usize, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpanKind {
    Holds(LockMode),
    Waits(LockMode),
}

/// A lock held or waited for by one task.
pub struct LockSpan {
    pub lock: Lock,
    pub kind: SpanKind,
    pub from: usize,
    pub to: Option<usize>,
    /// The kernel function that took it or waited.
    pub at: &'static str,
    /// For a wait: the tasks that held the lock when it began.
    pub holders: Vec<TaskId>,
}

impl LockSpan {
    fn new(kind: SpanKind, lock: &Lock, from: usize, at: &'static str, holders: Vec<TaskId>) -> LockSpan {
        LockSpan {
            lock: lock.clone(),
            kind,
            from,
            to: None,
            at,
            holders,
        }
    }
}

/// A lock a task touched (or, in a busy lane, every lock of one class that matters little),
/// its spans laid out on tracks that do not overlap.
pub struct LockRow {
    /// The lock (the first of a merged row).
    pub lock: Lock,
    /// A short label (`page lock f128 (file 0 page 0)`, `page lock ×64`).
    pub label: String,
    /// Track index of each span, and the number of tracks.
    pub spans: Vec<(LockSpan, usize)>,
    pub tracks: usize,
    /// How many locks share the row, and whether it takes others of its class.
    pub count: usize,
    merged: bool,
}

pub struct TaskLane {
    pub id: TaskId,
    /// Its CPU and address space, once known (a task a fork creates is known from its first
    /// step; `None` if it never ran).
    pub home: Option<(CpuId, u32)>,
    pub ops: Vec<OpSpan>,
    /// Its sleeps on the full kmap pool and for memory, in order (they never overlap).
    pub sleeps: Vec<Sleep>,
    pub locks: Vec<LockRow>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SleepKind {
    /// In kmap() of this frame, every pool slot in use.
    Kmap(u32),
    /// Until a frame is freed.
    Memory,
}

/// A task asleep (not on a lock), from the step it went to sleep in to the step it ran again.
pub struct Sleep {
    pub kind: SleepKind,
    pub from: usize,
    pub to: Option<usize>,
    /// The kernel function it sleeps in.
    pub at: &'static str,
    /// For a kmap sleep: the pool's kmaps held when it began (slot, task, frame).
    pub holders: Vec<(u32, TaskId, u32)>,
    /// The kunmap that woke it: (step, task).
    pub woken_by: Option<(usize, TaskId)>,
    /// The OOM path woke it (a sleep for memory).
    pub oom: bool,
    /// Open at the end of a run that ended in a deadlock.
    pub involved: bool,
}

impl Sleep {
    fn new(kind: SleepKind, from: usize, at: &'static str, holders: Vec<(u32, TaskId, u32)>) -> Sleep {
        Sleep {
            kind,
            from,
            to: None,
            at,
            holders,
            woken_by: None,
            oom: false,
            involved: false,
        }
    }
}

/// A kmap of the pool held by a task, from its kmap() to its kunmap().
pub struct PoolSpan {
    pub task: TaskId,
    pub pfn: u32,
    pub from: usize,
    pub to: Option<usize>,
    /// Where it was taken.
    pub at: &'static str,
    /// The tasks its kunmap woke.
    pub woken: Vec<TaskId>,
    pub track: usize,
    /// Held when the violation fired (or let go in its step), of a frame the violation names.
    pub involved: bool,
}

/// One slot of the pool, with its kmaps laid out on tracks that do not overlap (a page's
/// slot has one kmap per user).
pub struct PoolRow {
    pub slot: u32,
    pub spans: Vec<PoolSpan>,
    pub tracks: usize,
}

/// The persistent kmap pool: the slots the run used.
pub struct Pool {
    /// LAST_PKMAP (the trace's `pkmap`).
    pub size: u32,
    pub rows: Vec<PoolRow>,
    pub flushes: Vec<PoolFlush>,
}

/// A flush_all_zero_pkmaps run.
pub struct PoolFlush {
    pub at: usize,
    /// The task whose kmap ran it.
    pub task: TaskId,
    /// The slots it freed, with their frames.
    pub freed: Vec<(u32, u32)>,
}

impl Pool {
    fn new(size: u32) -> Pool {
        Pool {
            size,
            rows: Vec::new(),
            flushes: Vec::new(),
        }
    }

    fn row(&mut self, slot: u32) -> &mut PoolRow {
        let i = match self.rows.binary_search_by_key(&slot, |r| r.slot) {
            Ok(i) => i,
            Err(i) => {
                self.rows.insert(
                    i,
                    PoolRow {
                        slot,
                        spans: Vec::new(),
                        tracks: 1,
                    },
                );
                i
            }
        };
        &mut self.rows[i]
    }

    /// The kmaps held now: (slot, task, frame).
    fn held(&self) -> Vec<(u32, TaskId, u32)> {
        self.rows
            .iter()
            .flat_map(|r| {
                r.spans
                    .iter()
                    .filter(|s| s.to.is_none())
                    .map(move |s| (r.slot, s.task, s.pfn))
            })
            .collect()
    }
}

/// A kmap_atomic entry of a CPU that outlived the step (or interrupt) that pushed it, or was
/// remapped: from its push to its pop.
pub struct AtomicSpan {
    pub depth: u32,
    pub by: AtomicBy,
    pub pfn: u32,
    pub from: usize,
    pub to: Option<usize>,
    /// Where it was pushed.
    pub at: &'static str,
    /// The interrupt handler remapped its slot: (where, the frame it maps from then on).
    pub remap: Option<(usize, u32)>,
    /// On the stack when the violation fired (or popped in its step), on a CPU it names,
    /// of a frame it names if it names any.
    pub involved: bool,
}

/// kmap_atomic entries pushed and popped within one step or one interrupt, at one depth:
/// drawn as one mark (keyed in [`CpuLane::marks`] by step, depth and whether an interrupt
/// handler pushed them).
pub struct AtomicMark {
    /// Each entry, in words.
    pub entries: Vec<String>,
}

/// An interrupt on a CPU.
pub struct Irq {
    /// The step it came before.
    pub at: usize,
    /// The task the CPU last ran.
    pub current: Option<TaskId>,
    /// What its handler did, one line per event.
    pub lines: Vec<String>,
}

/// A TLB entry of a CPU for one page, from its fill to its drop.
pub struct TlbSpan {
    pub from: usize,
    pub to: Option<usize>,
    pub pfn: u32,
    pub write: bool,
}

pub struct TlbRow {
    pub mm: u32,
    pub va: u64,
    pub spans: Vec<TlbSpan>,
    /// Flushes that covered this page on this CPU: (step, the function that flushed).
    pub flushes: Vec<(usize, &'static str)>,
    /// Named by the violation.
    pub involved: bool,
}

pub struct CpuLane {
    pub id: CpuId,
    pub irqs: Vec<Irq>,
    /// Its kmap_atomic stack: entries that lasted, and marks of those that did not, by
    /// (step, depth, pushed by an interrupt handler); `depths` tracks (the deepest entry + 1).
    pub atomic: Vec<AtomicSpan>,
    pub marks: BTreeMap<(usize, u32, bool), AtomicMark>,
    pub depths: u32,
    pub tlb: Vec<TlbRow>,
    /// TLB rows left out (beyond [`MAX_TLB_ROWS`]).
    pub tlb_hidden: usize,
}

/// A column of the picture: one step, or a run of steps collapsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Column {
    Step(usize),
    /// Steps `from..=to`, none of which matters to the picture.
    Gap {
        from: usize,
        to: usize,
    },
}

pub struct Violation {
    pub oracle: Oracle,
    pub message: String,
    pub cycle: Vec<(TaskId, Lock, TaskId)>,
}

pub struct Timeline {
    pub steps: Vec<Step>,
    pub columns: Vec<Column>,
    pub tasks: Vec<TaskLane>,
    /// The kmap pool, when the run kmapped from it (or slept on it).
    pub pool: Option<Pool>,
    pub cpus: Vec<CpuLane>,
    pub violation: Option<Violation>,
    /// Tasks and CPUs the violation names (or whose lanes it happened in).
    pub involved_tasks: BTreeSet<TaskId>,
    pub involved_cpus: BTreeSet<CpuId>,
    /// Events before the first step (the first page tables).
    pub before: Vec<String>,
}

/// The numbers that follow `word ` in `text` (`task 3`, `CPU 1`).
fn numbers_after(text: &str, word: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let pat = format!("{word} ");
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        rest = &rest[i + pat.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.insert(n);
        }
    }
    out
}

/// The frames `text` names: `frame 130`, `frames [129, 130]`.
fn frames_in(text: &str) -> BTreeSet<u32> {
    let mut out = numbers_after(text, "frame");
    let mut rest = text;
    while let Some(i) = rest.find("frames [") {
        rest = &rest[i + "frames [".len()..];
        let list = rest.split(']').next().unwrap_or("");
        out.extend(list.split(", ").filter_map(|n| n.trim().parse::<u32>().ok()));
    }
    out
}

/// The page addresses (`0x...`) in `text`.
fn pages_in(text: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("0x") {
        rest = &rest[i + 2..];
        let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if let Ok(v) = u64::from_str_radix(&hex, 16) {
            out.insert(v & !0xfff);
        }
    }
    out
}

/// The class of a lock, in short: `the page lock of frame 128` -> `page lock`.
fn lock_class(lock: &Lock) -> &str {
    let name = lock.name.strip_prefix("the ").unwrap_or(&lock.name);
    name.split(" of ").next().unwrap_or(name)
}

/// `the page lock of frame 128` -> `page lock f128 (file 0 page 0)`.
fn lock_label(lock: &Lock, owners: &BTreeMap<u32, String>) -> String {
    let name = lock.name.strip_prefix("the ").unwrap_or(&lock.name);
    let short = name
        .replace(" of table frame ", " f")
        .replace(" of frame ", " f")
        .replace(" of ", " ");
    let frame = lock.name.rsplit(' ').next().and_then(|n| n.parse::<u32>().ok());
    match frame.and_then(|f| owners.get(&f)) {
        Some(owner) if lock.name.contains("frame") => format!("{short} ({owner})"),
        _ => short,
    }
}

impl TaskLane {
    fn row(&mut self, lock: &Lock, owners: &BTreeMap<u32, String>) -> &mut LockRow {
        let i = match self.locks.iter().position(|r| &r.lock == lock) {
            Some(i) => i,
            None => {
                self.locks.push(LockRow {
                    lock: lock.clone(),
                    label: lock_label(lock, owners),
                    spans: Vec::new(),
                    tracks: 0,
                    count: 1,
                    merged: false,
                });
                self.locks.len() - 1
            }
        };
        &mut self.locks[i]
    }

    /// Closes the open wait (or hold) span on `lock` at step `at`; returns its mode.
    fn close(&mut self, lock: &Lock, waits: bool, at: usize) -> Option<LockMode> {
        let row = self.locks.iter_mut().find(|r| &r.lock == lock)?;
        let (span, _) = row
            .spans
            .iter_mut()
            .rev()
            .find(|(s, _)| s.to.is_none() && matches!(s.kind, SpanKind::Waits(_)) == waits)?;
        span.to = Some(at);
        match span.kind {
            SpanKind::Waits(m) | SpanKind::Holds(m) => Some(m),
        }
    }
}

impl TlbRow {
    /// The open entry ends at step `at` (dropped by a flush, or replaced by a new fill).
    fn close(&mut self, at: usize) {
        if let Some(open) = self.spans.iter_mut().find(|s| s.to.is_none()) {
            open.to = Some(at);
        }
    }
}

impl CpuLane {
    fn row(&mut self, mm: u32, va: u64) -> &mut TlbRow {
        let i = match self.tlb.iter().position(|r| r.mm == mm && r.va == va) {
            Some(i) => i,
            None => {
                self.tlb.push(TlbRow {
                    mm,
                    va,
                    spans: Vec::new(),
                    flushes: Vec::new(),
                    involved: false,
                });
                self.tlb.len() - 1
            }
        };
        &mut self.tlb[i]
    }
}

/// A kmap_atomic push, pop or remap on CPU `lane` at step `at`: `stack` holds the entries
/// pushed and not yet popped; a popped one joins the lane's spans.
fn atomic_event(lane: &mut CpuLane, stack: &mut Vec<AtomicSpan>, e: &Event, at: usize) {
    match e {
        Event::KmapAtomic {
            by,
            pfn,
            depth,
            at: func,
            ..
        } => stack.push(AtomicSpan {
            depth: *depth,
            by: *by,
            pfn: *pfn,
            from: at,
            to: None,
            at: func,
            remap: None,
            involved: false,
        }),
        Event::KunmapAtomic { depth, .. } => {
            let Some(i) = stack.iter().rposition(|s| s.depth == *depth) else {
                return;
            };
            let mut span = stack.remove(i);
            span.to = Some(at);
            lane.atomic.push(span);
        }
        Event::KmapAtomicRemap { depth, pfn, .. } => {
            if let Some(span) = stack.iter_mut().rev().find(|s| s.depth == *depth) {
                span.remap = Some((at, *pfn));
            }
        }
        _ => {}
    }
}

/// Lays spans `(from, to)` (in order of `from`) out on tracks: each on the first track where
/// it overlaps nothing. Returns each span's track and the number of tracks (at least 1).
fn lay_out(spans: impl Iterator<Item = (usize, Option<usize>)>, end: usize) -> (Vec<usize>, usize) {
    let mut ends: Vec<usize> = Vec::new();
    let mut tracks = Vec::new();
    for (from, to) in spans {
        let stop = to.unwrap_or(end);
        let t = ends.iter().position(|&e| e <= from).unwrap_or(ends.len());
        if t == ends.len() {
            ends.push(stop);
        } else {
            ends[t] = stop;
        }
        tracks.push(t);
    }
    (tracks, ends.len().max(1))
}

fn assign_tracks(row: &mut LockRow, end: usize) {
    let (tracks, n) = lay_out(row.spans.iter().map(|(s, _)| (s.from, s.to)), end);
    for ((_, track), t) in row.spans.iter_mut().zip(tracks) {
        *track = t;
    }
    row.tracks = n;
}

impl Timeline {
    /// Folds `report`'s events (recorded with `RunOptions::events`) of a run of `trace`.
    pub fn build(trace: &Trace, report: &RunReport) -> Timeline {
        let forks = trace.ops.iter().filter(|c| matches!(c.op, Op::Fork { .. })).count();
        let homes = initial_homes(trace);
        let mut tl = Timeline {
            steps: Vec::new(),
            columns: Vec::new(),
            tasks: (0..trace.tasks.len() + forks)
                .map(|id| TaskLane {
                    id: id as TaskId,
                    home: homes.get(id).copied(),
                    ops: Vec::new(),
                    sleeps: Vec::new(),
                    locks: Vec::new(),
                })
                .collect(),
            pool: None,
            cpus: (0..trace.config.cpus)
                .map(|id| CpuLane {
                    id,
                    irqs: Vec::new(),
                    atomic: Vec::new(),
                    marks: BTreeMap::new(),
                    depths: 0,
                    tlb: Vec::new(),
                    tlb_hidden: 0,
                })
                .collect(),
            violation: None,
            involved_tasks: BTreeSet::new(),
            involved_cpus: BTreeSet::new(),
            before: Vec::new(),
        };
        let mut owners: BTreeMap<u32, String> = BTreeMap::new();
        let mut holders: BTreeMap<Lock, BTreeSet<TaskId>> = BTreeMap::new();
        let mut flushes: Vec<(usize, Flush)> = Vec::new();
        let pkmap = trace.config.pkmap;
        // The kmap_atomic entries on each CPU's stack now, bottom first.
        let mut stacks: Vec<Vec<AtomicSpan>> = tl.cpus.iter().map(|_| Vec::new()).collect();
        // The interrupt being handled: its CPU and its place (the step it comes before).
        let mut in_irq: Option<(usize, usize)> = None;
        for e in &report.events {
            let line = event_line(trace, e);
            match e {
                Event::Step {
                    step, task, cpu, mm, ..
                } => {
                    in_irq = None;
                    let lane = &mut tl.tasks[*task as usize];
                    // The task runs again: its sleep ends here.
                    if let Some(sleep) = lane.sleeps.last_mut().filter(|s| s.to.is_none()) {
                        sleep.to = Some(tl.steps.len());
                    }
                    lane.home = Some((*cpu, *mm));
                    tl.steps.push(Step {
                        n: *step,
                        task: *task,
                        cpu: *cpu,
                        lines: vec![line],
                        ops: false,
                        waits: false,
                    });
                    continue;
                }
                Event::Irq { cpu, current } => {
                    in_irq = Some((*cpu as usize, tl.steps.len()));
                    tl.cpus[*cpu as usize].irqs.push(Irq {
                        at: tl.steps.len(),
                        current: *current,
                        lines: vec![line],
                    });
                    continue;
                }
                Event::OomWake { task } => {
                    if let Some(sleep) = tl.tasks[*task as usize].sleeps.last_mut().filter(|s| s.to.is_none()) {
                        sleep.oom = true;
                    }
                    continue;
                }
                Event::Violation { oracle, message, cycle } => {
                    tl.violation = Some(Violation {
                        oracle: *oracle,
                        message: message.clone(),
                        cycle: cycle.clone(),
                    });
                    continue;
                }
                Event::Alloc { pfn, owner } => {
                    owners.insert(*pfn, owner.clone());
                }
                _ => {}
            }
            if let Some((c, at)) = in_irq {
                // The interrupt handler's work, at the interrupt's place.
                let lane = &mut tl.cpus[c];
                if let Some(irq) = lane.irqs.last_mut() {
                    irq.lines.push(line);
                }
                atomic_event(lane, &mut stacks[c], e, at);
                continue;
            }
            let Some(cur) = tl.steps.len().checked_sub(1) else {
                tl.before.push(line);
                continue;
            };
            let step = &mut tl.steps[cur];
            step.lines.push(line);
            step.ops |= matches!(e, Event::Start { .. } | Event::End { .. });
            step.waits |= match e {
                Event::Wait { .. } | Event::Handoff { .. } | Event::KmapSleep { .. } | Event::MemSleep { .. } => true,
                Event::Kunmap { woken, .. } => !woken.is_empty(),
                _ => false,
            };
            match e {
                Event::Start { task, call, op } => {
                    let full = print_op(&Call { task: *task, op: *op }).to_string();
                    let text = full.split_once(": ").map_or(full.clone(), |(_, rest)| rest.to_string());
                    tl.tasks[*task as usize].ops.push(OpSpan {
                        call: *call,
                        from: cur,
                        to: None,
                        text,
                        name: op.name(),
                        result: None,
                        lins: Vec::new(),
                    });
                }
                Event::End { task, call, result } => {
                    if let Some(op) = tl.tasks[*task as usize].ops.iter_mut().rev().find(|o| o.call == *call) {
                        op.to = Some(cur);
                        op.result = Some(*result);
                    }
                }
                Event::Lin { task, point } => {
                    if let Some(op) = tl.tasks[*task as usize].ops.last_mut() {
                        op.lins.push((cur, lin_text(point)));
                    }
                }
                Event::Lock { task, lock, mode, at } => {
                    holders.entry(lock.clone()).or_default().insert(*task);
                    let span = LockSpan::new(SpanKind::Holds(*mode), lock, cur, at, Vec::new());
                    tl.tasks[*task as usize].row(lock, &owners).spans.push((span, 0));
                }
                Event::Wait { task, lock, mode, at } => {
                    let held: Vec<TaskId> = holders.get(lock).into_iter().flatten().copied().collect();
                    let span = LockSpan::new(SpanKind::Waits(*mode), lock, cur, at, held);
                    tl.tasks[*task as usize].row(lock, &owners).spans.push((span, 0));
                }
                Event::Handoff { task, lock, from } => {
                    holders.entry(lock.clone()).or_default().insert(*task);
                    let lane = &mut tl.tasks[*task as usize];
                    let mode = lane.close(lock, true, cur).unwrap_or(LockMode::Write);
                    let span = LockSpan::new(SpanKind::Holds(mode), lock, cur, "a handoff", vec![*from]);
                    lane.row(lock, &owners).spans.push((span, 0));
                }
                Event::Unlock { task, lock, .. } => {
                    if let Some(h) = holders.get_mut(lock) {
                        h.remove(task);
                    }
                    tl.tasks[*task as usize].close(lock, false, cur);
                }
                Event::TlbFill(t) => {
                    let row = tl.cpus[t.cpu as usize].row(t.mm, t.va);
                    row.close(cur);
                    row.spans.push(TlbSpan {
                        from: cur,
                        to: None,
                        pfn: t.pfn,
                        write: t.write,
                    });
                }
                Event::TlbDrop(t) => tl.cpus[t.cpu as usize].row(t.mm, t.va).close(cur),
                Event::TlbFlush(f) => flushes.push((cur, *f)),
                Event::Kmap { task, pfn, slot, at } => {
                    let pool = tl.pool.get_or_insert_with(|| Pool::new(pkmap));
                    pool.row(*slot).spans.push(PoolSpan {
                        task: *task,
                        pfn: *pfn,
                        from: cur,
                        to: None,
                        at,
                        woken: Vec::new(),
                        track: 0,
                        involved: false,
                    });
                }
                Event::Kunmap {
                    task, pfn, slot, woken, ..
                } => {
                    let pool = tl.pool.get_or_insert_with(|| Pool::new(pkmap));
                    let row = pool.row(*slot);
                    if let Some(span) = row
                        .spans
                        .iter_mut()
                        .rev()
                        .find(|s| s.to.is_none() && s.task == *task && s.pfn == *pfn)
                    {
                        span.to = Some(cur);
                        span.woken = woken.clone();
                    }
                    for &w in woken {
                        if let Some(sleep) = tl.tasks[w as usize].sleeps.last_mut().filter(|s| s.to.is_none()) {
                            sleep.woken_by = Some((cur, *task));
                        }
                    }
                }
                Event::KmapFlush { task, freed } => {
                    let pool = tl.pool.get_or_insert_with(|| Pool::new(pkmap));
                    pool.flushes.push(PoolFlush {
                        at: cur,
                        task: *task,
                        freed: freed.clone(),
                    });
                }
                Event::KmapSleep { task, pfn, at } => {
                    let holders = tl.pool.get_or_insert_with(|| Pool::new(pkmap)).held();
                    tl.tasks[*task as usize]
                        .sleeps
                        .push(Sleep::new(SleepKind::Kmap(*pfn), cur, at, holders));
                }
                Event::MemSleep { task, at } => {
                    tl.tasks[*task as usize]
                        .sleeps
                        .push(Sleep::new(SleepKind::Memory, cur, at, Vec::new()));
                }
                Event::KmapAtomic { cpu, .. }
                | Event::KunmapAtomic { cpu, .. }
                | Event::KmapAtomicRemap { cpu, .. } => {
                    let c = *cpu as usize;
                    atomic_event(&mut tl.cpus[c], &mut stacks[c], e, cur);
                }
                _ => {}
            }
        }
        // Entries still on a stack at the end of the run stay open.
        for (lane, stack) in tl.cpus.iter_mut().zip(stacks) {
            lane.atomic.extend(stack);
        }
        tl.finish(&flushes);
        tl
    }

    /// Tracks, the tasks and pages involved, TLB rows chosen, and the columns.
    /// `flushes`: each TLB flush with its step.
    fn finish(&mut self, flushes: &[(usize, Flush)]) {
        let end = self.steps.len();
        let named: Vec<&Lock> = self
            .violation
            .iter()
            .flat_map(|v| v.cycle.iter().map(|(_, l, _)| l))
            .collect();
        let message = self.violation.as_ref().map_or("", |v| v.message.as_str());
        for lane in &mut self.tasks {
            // A spinlock's spans open and close within one step: only one still held shows.
            lane.locks
                .retain(|r| !r.lock.spin || r.spans.iter().any(|(s, _)| s.to.is_none()));
            if lane.locks.len() > MAX_LOCK_ROWS {
                // Locks that matter keep their rows: named by the violation, waited for, or
                // still held; the others share one row per class.
                let matters = |r: &LockRow| {
                    named.contains(&&r.lock)
                        || message.contains(&r.lock.name)
                        || r.spans
                            .iter()
                            .any(|(s, _)| s.to.is_none() || matches!(s.kind, SpanKind::Waits(_)))
                };
                let mut rows: Vec<LockRow> = Vec::new();
                for row in std::mem::take(&mut lane.locks) {
                    let class = lock_class(&row.lock);
                    let merge = !matters(&row);
                    match rows
                        .iter_mut()
                        .find(|r| r.merged && merge && lock_class(&r.lock) == class)
                    {
                        Some(into) => {
                            into.spans.extend(row.spans);
                            into.count += 1;
                        }
                        None => rows.push(LockRow { merged: merge, ..row }),
                    }
                }
                for row in rows.iter_mut().filter(|r| r.count > 1) {
                    row.label = format!("{} ×{}", lock_class(&row.lock), row.count);
                    row.spans.sort_by_key(|(s, _)| s.from);
                }
                lane.locks = rows;
            }
            for row in &mut lane.locks {
                assign_tracks(row, end);
            }
        }
        let mut pages = BTreeSet::new();
        if let Some(v) = &self.violation {
            let mut tasks: BTreeSet<TaskId> = numbers_after(&v.message, "task");
            tasks.extend(v.cycle.iter().flat_map(|(t, _, on)| [*t, *on]));
            if tasks.is_empty() {
                tasks.extend(self.steps.last().map(|s| s.task));
            }
            self.involved_cpus = numbers_after(&v.message, "CPU");
            for &t in &tasks {
                if let Some((cpu, _)) = self.tasks.get(t as usize).and_then(|l| l.home) {
                    self.involved_cpus.insert(cpu);
                }
            }
            self.involved_tasks = tasks;
            pages = pages_in(&v.message);
        }
        self.kmaps_involved(end);
        // The pages the involved tasks' operations touch come next.
        let mut touched = BTreeSet::new();
        for lane in self.tasks.iter().filter(|l| self.involved_tasks.contains(&l.id)) {
            for op in &lane.ops {
                touched.extend(pages_in(&op.text));
            }
        }
        for cpu in &mut self.cpus {
            let cid = cpu.id;
            for row in &mut cpu.tlb {
                row.involved = pages.contains(&row.va);
                row.flushes = flushes
                    .iter()
                    .filter(|(_, f)| f.mm == row.mm && (f.start..f.end).contains(&row.va) && f.cpus & (1 << cid) != 0)
                    .map(|&(step, f)| (step, f.at))
                    .collect();
            }
            // Rows named by the violation first, then pages the involved tasks touch, then
            // the others, each by address; at most MAX_TLB_ROWS.
            cpu.tlb
                .sort_by_key(|r| (!r.involved, !touched.contains(&r.va), r.mm, r.va));
            cpu.tlb_hidden = cpu.tlb.len().saturating_sub(MAX_TLB_ROWS);
            cpu.tlb.truncate(MAX_TLB_ROWS);
            cpu.tlb.sort_by_key(|r| (r.mm, r.va));
        }
        self.columns = self.choose_columns();
    }

    /// Lays out the pool's tracks, marks the kmaps, kmap_atomic entries and sleeps the
    /// violation involves, and folds the kmap_atomic entries that did not last into marks.
    ///
    /// Involved: held when the violation fired (or let go in its step), of a frame its message
    /// names; a kmap_atomic entry also on a CPU it involves (any such entry for a `kmap` or
    /// `atomic-sleep` message that names no frame, and a remapped one always); a sleep still
    /// open when the run ended in a deadlock. An entry pushed and popped within one step or
    /// one interrupt, never remapped and not involved, becomes part of the mark of its place
    /// and depth.
    fn kmaps_involved(&mut self, end: usize) {
        if let Some(pool) = &mut self.pool {
            for row in &mut pool.rows {
                let (tracks, n) = lay_out(row.spans.iter().map(|s| (s.from, s.to)), end);
                for (span, t) in row.spans.iter_mut().zip(tracks) {
                    span.track = t;
                }
                row.tracks = n;
            }
        }
        if let Some(v) = &self.violation {
            let frames = frames_in(&v.message);
            let at_end = |to: Option<usize>| to.is_none_or(|t| t + 1 == end);
            let any_entry = frames.is_empty() && matches!(v.oracle, Oracle::Kmap | Oracle::AtomicSleep);
            for cpu in &mut self.cpus {
                let on_cpu = self.involved_cpus.contains(&cpu.id);
                for span in &mut cpu.atomic {
                    let named = frames.contains(&span.pfn) || span.remap.is_some_and(|(_, p)| frames.contains(&p));
                    span.involved = on_cpu && at_end(span.to) && (named || any_entry || span.remap.is_some());
                }
            }
            if let Some(pool) = &mut self.pool {
                for span in pool.rows.iter_mut().flat_map(|r| &mut r.spans) {
                    span.involved = at_end(span.to) && frames.contains(&span.pfn);
                }
            }
            let deadlock = v.oracle == Oracle::Deadlock;
            for sleep in self.tasks.iter_mut().flat_map(|l| &mut l.sleeps) {
                sleep.involved = deadlock && sleep.to.is_none();
            }
        }
        for cpu in &mut self.cpus {
            let (brief, lasting): (Vec<AtomicSpan>, Vec<AtomicSpan>) = std::mem::take(&mut cpu.atomic)
                .into_iter()
                .partition(|s| s.to == Some(s.from) && s.remap.is_none() && !s.involved);
            cpu.atomic = lasting;
            for span in brief {
                let irq = span.by == AtomicBy::Irq;
                let mark = cpu
                    .marks
                    .entry((span.from, span.depth, irq))
                    .or_insert_with(|| AtomicMark { entries: Vec::new() });
                mark.entries
                    .push(format!("frame {} by {} in {}", span.pfn, span.by, span.at));
            }
            let deepest = cpu
                .atomic
                .iter()
                .map(|s| s.depth)
                .chain(cpu.marks.keys().map(|&(_, d, _)| d))
                .max();
            cpu.depths = deepest.map_or(0, |d| d + 1);
        }
    }

    /// How much step `i` matters to the picture: 3 near the violation, or a lock wait or
    /// handoff of an involved task; 2 an interrupt, or an operation of an involved task
    /// starting or ending; 1 any operation starting or ending, or any wait; 0 otherwise.
    fn weight(&self, i: usize) -> u8 {
        let s = &self.steps[i];
        let involved = self.involved_tasks.contains(&s.task);
        let irq = self.cpus.iter().any(|c| c.irqs.iter().any(|q| q.at == i));
        if i + LAST_STEPS >= self.steps.len() || (involved && s.waits) {
            3
        } else if irq || (involved && s.ops) {
            2
        } else if s.ops || s.waits {
            1
        } else {
            0
        }
    }

    /// Every step when they fit in [`MAX_COLUMNS`]; otherwise as many steps as fit, the
    /// highest weights first and, among equals, the last ones first (idle steps, of weight
    /// 0, never), each run of the others collapsed into one gap column.
    fn choose_columns(&self) -> Vec<Column> {
        let n = self.steps.len();
        let weights: Vec<u8> = (0..n).map(|i| self.weight(i)).collect();
        let mut keep: Vec<bool> = vec![true; n];
        if n > MAX_COLUMNS {
            // Gaps take columns too: leave room for one between every two kept runs.
            let budget = MAX_COLUMNS * 2 / 3;
            let mut order: Vec<usize> = (0..n).filter(|&i| weights[i] > 0).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(weights[i]), std::cmp::Reverse(i)));
            keep.fill(false);
            for &i in order.iter().take(budget) {
                keep[i] = true;
            }
        }
        let mut cols = Vec::new();
        let mut i = 0;
        while i < n {
            if keep[i] {
                cols.push(Column::Step(i));
                i += 1;
            } else {
                let from = i;
                while i < n && !keep[i] {
                    i += 1;
                }
                cols.push(Column::Gap { from, to: i - 1 });
            }
        }
        cols
    }
}

/// The CPU and address space of each task the trace declares: the machine numbers address
/// spaces in the order the tasks first name them.
fn initial_homes(trace: &Trace) -> Vec<(CpuId, u32)> {
    let mut labels: Vec<u32> = Vec::new();
    trace
        .tasks
        .iter()
        .map(|t| {
            let mm = labels.iter().position(|&l| l == t.mm).unwrap_or_else(|| {
                labels.push(t.mm);
                labels.len() - 1
            });
            (t.cpu, mm as u32)
        })
        .collect()
}
