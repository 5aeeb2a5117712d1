//! The picture's model: a run's event log folded into lanes over scheduling steps. One lane
//! per task (its operations as spans from start to end, and a row per lock it held or
//! waited for), one per CPU (which task each step ran, interrupts, and the TLB entries of the
//! pages that matter), the violation with the tasks, CPUs and addresses it names, and the
//! columns: every step, or for a long run the steps that matter with the idle stretches
//! between them collapsed.
//!
//! What it keeps true: a pure function of the trace and its events (ordered maps only); every
//! task and CPU of the run has a lane; a span's ends are step indices (`0..steps.len()`), an
//! open span ends at `steps.len()` (the end of the run); nothing is invented: each span is an
//! event pair of the log (a lock span is a take or handoff and its release, or a wait and
//! its handoff; a TLB span a fill and its drop).

use mm_reference::events::{Event, Flush, Lock, LockMode};
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
    /// A task began to wait for a lock in it, or was handed one.
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
    pub locks: Vec<LockRow>,
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
    /// Interrupts: (the step they came before, the task the CPU last ran).
    pub irqs: Vec<(usize, Option<TaskId>)>,
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

/// Lays the spans of a row out on tracks: each on the first track where it overlaps nothing.
fn assign_tracks(row: &mut LockRow, end: usize) {
    let mut ends: Vec<usize> = Vec::new();
    for (s, track) in &mut row.spans {
        let stop = s.to.unwrap_or(end);
        let t = ends.iter().position(|&e| e <= s.from).unwrap_or(ends.len());
        if t == ends.len() {
            ends.push(stop);
        } else {
            ends[t] = stop;
        }
        *track = t;
    }
    row.tracks = ends.len().max(1);
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
                    locks: Vec::new(),
                })
                .collect(),
            cpus: (0..trace.config.cpus)
                .map(|id| CpuLane {
                    id,
                    irqs: Vec::new(),
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
        for e in &report.events {
            let line = event_line(trace, e);
            match e {
                Event::Step { step, task, cpu, mm } => {
                    tl.tasks[*task as usize].home = Some((*cpu, *mm));
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
                    tl.cpus[*cpu as usize].irqs.push((tl.steps.len(), *current));
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
            let Some(cur) = tl.steps.len().checked_sub(1) else {
                tl.before.push(line);
                continue;
            };
            let step = &mut tl.steps[cur];
            step.lines.push(line);
            step.ops |= matches!(e, Event::Start { .. } | Event::End { .. });
            step.waits |= matches!(e, Event::Wait { .. } | Event::Handoff { .. });
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
                _ => {}
            }
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

    /// How much step `i` matters to the picture: 3 near the violation, or a lock wait or
    /// handoff of an involved task; 2 an interrupt, or an operation of an involved task
    /// starting or ending; 1 any operation starting or ending, or any wait; 0 otherwise.
    fn weight(&self, i: usize) -> u8 {
        let s = &self.steps[i];
        let involved = self.involved_tasks.contains(&s.task);
        let irq = self.cpus.iter().any(|c| c.irqs.iter().any(|&(at, _)| at == i));
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

    /// Every step when they fit in [`MAX_COLUMNS`]; otherwise the steps of the highest
    /// weights that fit (the last ones first when even those do not), each run of the others
    /// collapsed into one gap column.
    fn choose_columns(&self) -> Vec<Column> {
        let n = self.steps.len();
        let weights: Vec<u8> = (0..n).map(|i| self.weight(i)).collect();
        let mut keep: Vec<bool> = vec![true; n];
        if n > MAX_COLUMNS {
            // Gaps take columns too: leave room for one between every two kept runs.
            let budget = MAX_COLUMNS * 2 / 3;
            let threshold = (0..=3u8)
                .find(|&w| weights.iter().filter(|&&x| x >= w).count() <= budget)
                .unwrap_or(3);
            let mut left = budget;
            for i in (0..n).rev() {
                keep[i] = weights[i] >= threshold && left > 0;
                if keep[i] {
                    left -= 1;
                }
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
