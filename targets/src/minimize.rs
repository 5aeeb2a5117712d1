//! The domain-aware minimizer: shrinks a trace while a predicate (usually "the same oracle
//! still fires, with the same bug switches") keeps holding.
//!
//! Invariants kept here:
//! - Every candidate it keeps is a valid trace ([`Trace::check`], which agrees with printing
//!   and parsing back, before it is tried), and the predicate held for it; the result is never
//!   larger than the input.
//! - It is deterministic: the passes, their order and the candidate values are fixed, and it
//!   uses no randomness, so the same input and predicate give the same result.
//! - It stops at a fixpoint (no pass changes anything) or after `MAX_ROUNDS` rounds.
//!
//! Passes, in order: schedule tokens (chunks, then one by one), operations (chunks, then one
//! by one, a fork together with every operation of the task it creates), tasks (on CPU 0,
//! merged into an earlier task, a forked one into its parent or made a thread of its parent's
//! process, unused ones renumbered),
//! mappings (a file mapping made anonymous, an mmap populated instead of the accesses its
//! task makes in it), files (merged into an earlier file, a first truncate folded into the initial size,
//! unused ones renumbered, smaller), configuration keys (back to their defaults, then
//! smaller), and the numbers of each operation (towards 0, page and table boundaries,
//! simpler addresses). Only when none of these changes anything, a second tier: the
//! schedule dropped with the operations in the order the run completed (or started) them, a
//! declared task with everything it does, a read or write made the first access to its
//! buffer, a hugetlbfs file made a regular one, a file's first write folded into its size,
//! an mremap that resizes a mapping in place folded into its mmap, an mprotect of a whole
//! mapping folded into its mmap, a line that decides where the kernel places later mappings
//! gone with those mappings kept where they were (an mmap, munmap or mremap, the later mmaps
//! given the addresses they got as hints; an mremap the kernel moved, with the later
//! addresses moved back), a reclaim of a mapped page made a pageout of it (and the lines
//! that made the memory pressure gone), a line gone with memory made scarcer (the frames it
//! allocated taken from the configuration); then the first tier again. The second tier
//! never makes the result longer than the first alone.

use crate::engine::{run_trace_with, Finding};
use crate::guided::signature;
use crate::trace::{OpLine, Trace};
use mm_reference::events::Event;
use mm_reference::{Config, Op, OpResult, Outcome, Reference, RunOptions, SchedToken, PAGE_SIZE};

/// An upper bound on the rounds of all passes (each round that changes nothing ends it).
const MAX_ROUNDS: usize = 32;

/// The size of a trace as a person reads it: the lines of its canonical text.
pub fn lines(trace: &Trace) -> usize {
    trace.to_string().lines().count()
}

/// Shrinks `trace` while `keep` holds. `keep(trace)` must hold for the input.
pub fn minimize(trace: &Trace, keep: &mut dyn FnMut(&Trace) -> bool) -> Trace {
    let mut m = Minimizer {
        best: trace.clone(),
        keep,
        reference: Reference::new(),
    };
    for _ in 0..MAX_ROUNDS {
        let before = m.best.clone();
        m.first_tier();
        m.numbers();
        if m.best == before {
            // Only at a fixpoint of the passes above, a second tier: passes that reshape
            // the trace (a schedule into the order of the operations, a read or write into
            // the access it makes, a hugetlbfs file into a regular one) or take away more at
            // once (a declared task and all it does, a write folded into a file's size, an
            // mremap or mprotect into the mmap before it, a line that placed later mappings
            // with those mappings kept where they were, memory pressure made a pageout, a
            // line that used up frames gone with fewer frames). Run here, they never lead the
            // passes above away from a trace those would have shrunk further on their own:
            // the first tier reaches the fixpoint it reaches alone, and no pass makes a
            // trace longer, so the result is never longer.
            m.serial();
            m.declared_tasks();
            m.accesses();
            m.huge_files();
            m.grown_files();
            m.resized_mmaps();
            m.protected_mmaps();
            m.placed();
            m.pageouts();
            m.scarcer();
            if m.best == before {
                break;
            }
        }
    }
    m.best
}

/// Shrinks the trace of a crash keeping what it found: the same bug switches, and a
/// violation of the same oracle as judged with `options` (a candidate that panics the model
/// keeps nothing), or, for a panic of the model, the same panic (its [`signature`]). The
/// process's panic hook is silenced meanwhile, so that no candidate's panic is printed: call
/// it where no other thread's panic message matters. Returns the result and the number of
/// candidates tried.
pub fn minimize_finding(trace: &Trace, finding: &Finding, options: &RunOptions) -> (Trace, u64) {
    let mut reference = Reference::new();
    let bugs = trace.config.bugs;
    let want = signature(finding);
    let mut tries = 0u64;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let small = minimize(trace, &mut |t| {
        tries += 1;
        if t.config.bugs != bugs {
            return false;
        }
        match (finding, run_trace_with(&mut reference, t, options)) {
            (Finding::Violation(v), Ok(r)) => matches!(r.outcome, Outcome::Violation(w) if w.oracle == v.oracle),
            (Finding::Panic(_), Err(m)) => signature(&Finding::Panic(m)) == want,
            _ => false,
        }
    });
    std::panic::set_hook(hook);
    (small, tries)
}

struct Minimizer<'a> {
    best: Trace,
    keep: &'a mut dyn FnMut(&Trace) -> bool,
    /// Runs the candidates' event logs (which schedule token ran which operation).
    reference: Reference,
}

impl Minimizer<'_> {
    /// The first tier's passes but the numbers', in order.
    fn first_tier(&mut self) {
        self.schedule();
        self.ops();
        self.tasks();
        self.mappings();
        self.files();
        self.config();
    }

    /// Takes `cand` if it is valid, different and keeps the property.
    fn try_take(&mut self, cand: Trace) -> bool {
        if cand == self.best {
            return false;
        }
        // Valid traces only (those the printer and parser would give back unchanged).
        if cand.check().is_err() {
            return false;
        }
        if (self.keep)(&cand) {
            self.best = cand;
            true
        } else {
            false
        }
    }

    /// Removes chunks of a list (halving the chunk size), then single elements.
    fn shrink_list<T: Clone>(&mut self, get: impl Fn(&Trace) -> &Vec<T>, set: impl Fn(&mut Trace, Vec<T>)) {
        let mut chunk = get(&self.best).len().div_ceil(2).max(1);
        loop {
            let mut i = 0;
            while i < get(&self.best).len() {
                let list = get(&self.best);
                let end = (i + chunk).min(list.len());
                let mut shorter = list[..i].to_vec();
                shorter.extend_from_slice(&list[end..]);
                let mut cand = self.best.clone();
                set(&mut cand, shorter);
                if !self.try_take(cand) {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// Schedule tokens; then each interrupt moved earlier while that keeps the property (so
    /// the tokens after it can go).
    fn schedule(&mut self) {
        self.shrink_list(|t| &t.schedule, |t, s| t.schedule = s);
        for p in 1..self.best.schedule.len() {
            let mut q = p;
            while q > 0 && matches!(self.best.schedule[q], SchedToken::Irq(_)) {
                let mut cand = self.best.clone();
                cand.schedule.swap(q - 1, q);
                if !self.try_take(cand) {
                    break;
                }
                q -= 1;
            }
        }
        self.shrink_list(|t| &t.schedule, |t, s| t.schedule = s);
    }

    /// The schedule gone, the operation lines put in the order the run completed them (else
    /// started them): a race that needs no step of one operation inside another is a
    /// sequence of whole operations, which needs no schedule, and tasks that then run one
    /// after another may merge. Each task's operations complete, and start, in its program
    /// order, so the reordering keeps it; forked ids are renumbered to the new order of the
    /// forks (each fork still creates the next unused id).
    fn serial(&mut self) {
        if self.best.schedule.is_empty() {
            return;
        }
        let Some((ends, starts)) = op_order(&mut self.reference, &self.best) else {
            return;
        };
        for order in [ends, starts] {
            if let Some(cand) = reordered(&self.best, &order) {
                if self.try_take(cand) {
                    return;
                }
            }
        }
    }

    /// Operations; a fork goes together with the task it creates (removed and renumbered).
    /// An operation that cannot go alone is tried again with the schedule tokens that ran its
    /// steps (read off the run's event log: without them, the rest of the schedule keeps its
    /// timing), then with the first one to three tokens of its task, and an mremap that moved
    /// a mapping with every later address in its new range moved back to the old one.
    fn ops(&mut self) {
        self.shrink_list(|t| &t.ops, |t, o| t.ops = o);
        // The token map of `best`, run once per change of `best` (not once per operation).
        let mut map: Option<Vec<Option<usize>>> = None;
        let mut i = 0;
        while i < self.best.ops.len() {
            let line = self.best.ops[i];
            let mut taken = false;
            if !matches!(line.op, Op::Fork { .. }) {
                let ran = map.get_or_insert_with(|| token_ops(&mut self.reference, &self.best));
                if let Some(cand) = without_op_and_its_tokens(&self.best, i, ran) {
                    taken = self.try_take(cand);
                }
            }
            if !taken && !matches!(line.op, Op::Fork { .. }) {
                for k in 1..=3 {
                    let mut cand = self.best.clone();
                    cand.ops.remove(i);
                    if !drop_tokens(&mut cand.schedule, line.task, k) {
                        break;
                    }
                    if self.try_take(cand) {
                        taken = true;
                        break;
                    }
                }
            }
            if !taken {
                if let Some(cand) = without_mremap(&self.best, i) {
                    taken = self.try_take(cand);
                }
            }
            if taken {
                map = None;
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.best.ops.len() {
            if let Op::Fork { task, .. } = self.best.ops[i].op {
                if self.try_take(without_forked_task(&self.best, i, task)) {
                    continue;
                }
            }
            i += 1;
        }
    }

    /// A declared task with everything it does (the tasks its forks create too), the last
    /// first, renumbered: a task whose one operation cannot go while the task stays declared
    /// (an exit that makes another task's exit the last of its process: without it the
    /// process would outlive that exit) goes together with its declaration.
    fn declared_tasks(&mut self) {
        let mut t = self.best.tasks.len();
        while t > 1 {
            t -= 1;
            if let Some(cand) = without_declared_task(&self.best, t as u32) {
                self.try_take(cand);
            }
        }
    }

    /// Every task, fork and interrupt on CPU 0 where that keeps the property; then declared
    /// tasks with no operations (the last ones first) go, renumbered.
    fn tasks(&mut self) {
        for t in 0..self.best.tasks.len() {
            let mut cand = self.best.clone();
            cand.tasks[t].cpu = 0;
            self.try_take(cand);
        }
        for i in 0..self.best.ops.len() {
            if let Op::Fork { task, cpu: Some(_) } = self.best.ops[i].op {
                let mut cand = self.best.clone();
                cand.ops[i].op = Op::Fork { task, cpu: None };
                self.try_take(cand);
            }
        }
        for i in 0..self.best.schedule.len() {
            if let SchedToken::Irq(c) = self.best.schedule[i] {
                if c != 0 {
                    let mut cand = self.best.clone();
                    cand.schedule[i] = SchedToken::Irq(0);
                    self.try_take(cand);
                }
            }
        }
        // A declared task's operations run by another declared task instead (its schedule
        // tokens too), the last tasks first; the emptied task then goes below.
        let mut t = self.best.tasks.len();
        while t > 1 {
            t -= 1;
            for into in 0..t {
                if let Some(cand) = merged_task(&self.best, t as u32, into as u32) {
                    if self.try_take(cand) {
                        break;
                    }
                }
            }
        }
        // A forked task's operations run by its parent instead, the fork gone; else by a
        // declared thread of the parent's process (a race between two processes is often one
        // between two threads, which needs no fork).
        let mut i = self.best.ops.len();
        while i > 0 {
            i -= 1;
            if let Some(cand) = merged_child(&self.best, i) {
                if self.try_take(cand) {
                    continue;
                }
            }
            if let Some(cand) = forked_as_thread(&self.best, i) {
                self.try_take(cand);
            }
        }
        let mut t = self.best.tasks.len();
        while t > 1 {
            t -= 1;
            if let Some(cand) = without_task(&self.best, t as u32) {
                self.try_take(cand);
            }
        }
    }

    /// A read or write made the first user access it makes to its buffer: a read stores
    /// into `buf`, a write loads from it. Many reads and writes are there only for the fault
    /// they take on their buffer (a page faulted in, a table allocated, a copy on write); the
    /// access is one page of that, with no file, so a file that only buffers used may go.
    fn accesses(&mut self) {
        for i in 0..self.best.ops.len() {
            let op = match self.best.ops[i].op {
                Op::Read { buf, .. } => Op::Store { addr: buf, value: 0 },
                Op::Write { buf, .. } => Op::Load { addr: buf },
                _ => continue,
            };
            let mut cand = self.best.clone();
            cand.ops[i].op = op;
            self.try_take(cand);
        }
    }

    /// Mappings made simpler: a file mapping made anonymous (over whole huge pages for a
    /// hugetlbfs file), so the file may go; a fixed mapping populated at mmap in place of the
    /// loads and stores its task makes in it afterwards (all of them, else the first).
    fn mappings(&mut self) {
        let hps = self.best.config.huge_page_size();
        for i in 0..self.best.ops.len() {
            if let Op::Mmap { file: Some(f), len, .. } = self.best.ops[i].op {
                let huge = self.best.files.get(f as usize).is_some_and(|f| f.huge);
                let mut cand = self.best.clone();
                if let Op::Mmap { file, off, len: l, .. } = &mut cand.ops[i].op {
                    *file = None;
                    *off = 0;
                    if huge {
                        *l = len.div_ceil(hps).saturating_mul(hps);
                    }
                }
                self.try_take(cand);
            }
        }
        let mut i = 0;
        while i < self.best.ops.len() {
            let line = self.best.ops[i];
            if let Op::Mmap { addr, len, flags, .. } = line.op {
                if !flags.populate && (flags.fixed || flags.noreplace) {
                    let end = addr.saturating_add(len);
                    let touches: Vec<usize> = (i + 1..self.best.ops.len())
                        .filter(|&j| {
                            let l = self.best.ops[j];
                            let at = match l.op {
                                Op::Load { addr } | Op::Store { addr, .. } => addr,
                                _ => return false,
                            };
                            l.task == line.task && (addr..end).contains(&at)
                        })
                        .collect();
                    for gone in [&touches[..], &touches[..touches.len().min(1)]] {
                        if gone.is_empty() {
                            break;
                        }
                        let mut cand = self.best.clone();
                        if let Op::Mmap { flags, .. } = &mut cand.ops[i].op {
                            flags.populate = true;
                        }
                        for &j in gone.iter().rev() {
                            cand.ops.remove(j);
                        }
                        if self.try_take(cand) {
                            break;
                        }
                    }
                }
            }
            i += 1;
        }
    }

    /// A hugetlbfs file made a regular one, its mappings kept whole huge pages long and the
    /// file as long as they reach: the same pages mapped, but read in from the file, so a
    /// page-cache page that only a shared mapping's fault made exists without it (a private
    /// mapping's copy on write copies from it), and the mappings are plain file mappings
    /// that the other passes know how to shrink.
    fn huge_files(&mut self) {
        let hps = self.best.config.huge_page_size();
        for f in 0..self.best.files.len() {
            if !self.best.files[f].huge {
                continue;
            }
            let mut cand = self.best.clone();
            cand.files[f].huge = false;
            for l in &mut cand.ops {
                if let Op::Mmap {
                    file: Some(g),
                    len,
                    off,
                    ..
                } = &mut l.op
                {
                    if *g == f as u32 {
                        *len = len.div_ceil(hps).saturating_mul(hps);
                        let reach = off.saturating_add(*len);
                        let size = &mut cand.files[f].size;
                        *size = (*size).max(reach);
                    }
                }
            }
            self.try_take(cand);
        }
    }

    /// A file's first change of size, a write, folded into its initial size (as far as the
    /// write would reach, else as far as its offset: a write from a bad buffer still grows
    /// the file to it) and gone: many writes are there only to make a file long enough for
    /// a later fault in a mapping of it.
    fn grown_files(&mut self) {
        for f in 0..self.best.files.len() {
            if self.best.files[f].huge {
                continue;
            }
            let sizes = |op: &Op| match *op {
                Op::Write { file, .. } | Op::Truncate { file, .. } => file == f as u32,
                _ => false,
            };
            let Some(i) = self.best.ops.iter().position(|l| sizes(&l.op)) else {
                continue;
            };
            let Op::Write { off, len, .. } = self.best.ops[i].op else {
                continue;
            };
            for reach in [off.saturating_add(len), off] {
                let mut cand = self.best.clone();
                cand.files[f].size = cand.files[f].size.max(reach);
                cand.ops.remove(i);
                if self.try_take(cand) {
                    break;
                }
            }
        }
    }

    /// An mremap that resizes a mapping where it is (not `fixed`) folded into the mmap of
    /// the same task at that address before it, which maps the new length at once: a mapping
    /// grown after the fact is, for what comes after, a mapping made that long.
    fn resized_mmaps(&mut self) {
        self.fold_into_mmaps(|op, mmap| match (op, mmap) {
            (
                Op::Mremap {
                    addr,
                    new,
                    flags,
                    to: None,
                    ..
                },
                Op::Mmap { addr: a, .. },
            ) if a == addr && !flags.fixed => {
                let mut m = mmap;
                if let Op::Mmap { len, .. } = &mut m {
                    *len = new;
                }
                Some(m)
            }
            _ => None,
        });
    }

    /// An mprotect of a whole mapping folded into the mmap of the same task at that address
    /// before it, which maps it with that protection at once (for what comes after the
    /// mprotect, a mapping made so).
    fn protected_mmaps(&mut self) {
        let pages = |len: u64| len.div_ceil(PAGE_SIZE);
        self.fold_into_mmaps(|op, mmap| match (op, mmap) {
            (Op::Mprotect { addr, len, prot }, Op::Mmap { addr: a, len: l, .. })
                if a == addr && pages(l) == pages(len) =>
            {
                let mut m = mmap;
                if let Op::Mmap { prot: p, .. } = &mut m {
                    *p = prot;
                }
                Some(m)
            }
            _ => None,
        });
    }

    /// Each operation that `fold(op, mmap)` folds into the last earlier mmap of the same task
    /// it fits (returning that mmap changed), folded there and gone.
    fn fold_into_mmaps(&mut self, fold: impl Fn(Op, Op) -> Option<Op>) {
        let mut i = 0;
        while i < self.best.ops.len() {
            let line = self.best.ops[i];
            let made = self.best.ops[..i]
                .iter()
                .rposition(|l| l.task == line.task && fold(line.op, l.op).is_some());
            if let Some(j) = made {
                let mut cand = self.best.clone();
                cand.ops[j].op = fold(line.op, cand.ops[j].op).expect("it fits (found above)");
                cand.ops.remove(i);
                if self.try_take(cand) {
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Where the kernel chose an address, the address it chose: an mmap, munmap or mremap
    /// gone with every later mmap that is not `fixed` given the address it got as its hint
    /// (a hint is taken where the range is free, and it was: without the line gone, the run
    /// is the same; with it gone, the later mappings stay where the accesses to them are);
    /// and an mremap that moved a mapping to an address the kernel chose gone, with the
    /// later addresses in its new range moved back into the old one and the later mmaps
    /// pinned too (the mapping stays where it was, and what came after finds it there).
    fn placed(&mut self) {
        // The results of `best`'s operations, run once per change of `best`.
        let mut results = None;
        let mut i = 0;
        while i < self.best.ops.len() {
            if matches!(
                self.best.ops[i].op,
                Op::Mmap { .. } | Op::Munmap { .. } | Op::Mremap { .. }
            ) {
                let r = results.get_or_insert_with(|| op_results(&mut self.reference, &self.best));
                if let Some(cand) = without_placing(&self.best, r, i) {
                    if self.try_take(cand) {
                        results = None;
                        continue;
                    }
                }
            }
            i += 1;
        }
    }

    /// Memory pressure made a pageout: a file page that reclaim took from a mapping (its pte
    /// cleared by try_to_unmap while no pageout ran) paged out instead by a pageout of that
    /// page, made by the task that last ran in that address space; then the other operations
    /// one by one (the last first) and the first tier's passes on that, kept only if they
    /// make the trace shorter than it was. Pressure takes many lines (mappings, faults and
    /// forks that fill the frames, fewer frames), a pageout one, and both take the page the
    /// same way (try_to_unmap, then writeback), so what raced with the reclaim may race with
    /// the pageout. The pageout makes the trace one line longer only until the passes after
    /// it are done: kept, the trace is shorter.
    fn pageouts(&mut self) {
        let before = self.best.clone();
        let n = lines(&before);
        for (cand, mut k) in paged_out(&mut self.reference, &before).into_iter().take(4) {
            if !self.try_take(cand) {
                continue;
            }
            // The other operations first, the last first (the pageout stays: without it the
            // trace is the one before), then the first tier.
            let mut j = self.best.ops.len();
            while j > 0 {
                j -= 1;
                if j == k || matches!(self.best.ops[j].op, Op::Fork { .. }) {
                    continue;
                }
                let mut shorter = self.best.clone();
                shorter.ops.remove(j);
                if self.try_take(shorter) && j < k {
                    k -= 1;
                }
            }
            for _ in 0..MAX_ROUNDS {
                let round = self.best.clone();
                self.first_tier();
                if self.best == round {
                    break;
                }
            }
            if lines(&self.best) < n {
                return;
            }
            self.best = before.clone();
        }
    }

    /// A line gone with memory made scarcer: many lines are there only to use up frames
    /// (mappings populated or faulted in, address spaces that take page tables) so that an
    /// allocation sleeps or fails where the bug needs it, and the configuration line can take
    /// those frames away instead. Each operation (a fork with its task; with the schedule
    /// tokens that ran its steps, else alone), then each declared task with everything it
    /// does, gone with one of: as many lowmem and highmem frames fewer as it allocated (read
    /// off the run's event log; a declared task's page directory too), pte tables from lowmem
    /// (`highpte=off`), one or two lowmem frames fewer, one or two highmem frames fewer;
    /// taken only where the trace is shorter.
    fn scarcer(&mut self) {
        let fixed: [fn(&mut Config) -> bool; 5] = [
            |c| std::mem::replace(&mut c.highpte, false),
            |c| fewer_frames(c, 1, 0),
            |c| fewer_frames(c, 2, 0),
            |c| fewer_frames(c, 0, 1),
            |c| fewer_frames(c, 0, 2),
        ];
        let take = |m: &mut Self, shorter: Vec<Trace>, took: (u32, u32)| {
            let n = lines(&m.best);
            for base in shorter {
                let mut cand = base.clone();
                if fewer_frames(&mut cand.config, took.0, took.1) && lines(&cand) < n && m.try_take(cand) {
                    return true;
                }
                for tighten in fixed {
                    let mut cand = base.clone();
                    if tighten(&mut cand.config) && lines(&cand) < n && m.try_take(cand) {
                        return true;
                    }
                }
            }
            false
        };
        // What each operation allocated and which tokens ran it: runs of `best`, made once
        // per change of it.
        let mut maps = None;
        let mut i = 0;
        while i < self.best.ops.len() {
            let (took, ran) = maps.get_or_insert_with(|| {
                (
                    allocated(&mut self.reference, &self.best),
                    token_ops(&mut self.reference, &self.best),
                )
            });
            let took = took[i];
            let mut shorter = Vec::new();
            if let Op::Fork { task, .. } = self.best.ops[i].op {
                shorter.push(without_forked_task(&self.best, i, task));
            } else {
                let mut cand = self.best.clone();
                cand.ops.remove(i);
                shorter.push(cand);
                shorter.extend(without_op_and_its_tokens(&self.best, i, ran));
            }
            if take(self, shorter, took) {
                maps = None;
            } else {
                i += 1;
            }
        }
        let mut took = None;
        let mut t = self.best.tasks.len();
        while t > 1 {
            t -= 1;
            let took_now = took.get_or_insert_with(|| allocated(&mut self.reference, &self.best));
            let mut all = (0, 0);
            for (l, &(low, high)) in self.best.ops.iter().zip(took_now.iter()) {
                if l.task == t as u32 {
                    all = (all.0 + low, all.1 + high);
                }
            }
            let tasks = &self.best.tasks;
            if tasks.iter().filter(|x| x.mm == tasks[t].mm).count() == 1 {
                all.0 += 1; // its page directory
            }
            if let Some(cand) = without_declared_task(&self.best, t as u32) {
                if take(self, vec![cand], all) {
                    took = None;
                }
            }
        }
    }

    /// Files: one file's uses moved to an earlier file, files no operation uses gone
    /// (renumbered), a first truncate folded into the initial size, smaller sizes.
    fn files(&mut self) {
        let mut f = self.best.files.len();
        while f > 1 {
            f -= 1;
            for into in 0..f {
                if self.best.files[into].huge != self.best.files[f].huge {
                    continue;
                }
                let mut cand = self.best.clone();
                for l in &mut cand.ops {
                    rename_file(&mut l.op, f as u32, into as u32);
                }
                if let Some(cand) = without_file(&cand, f as u32) {
                    if self.try_take(cand) {
                        break;
                    }
                }
            }
        }
        let mut f = self.best.files.len();
        while f > 0 {
            f -= 1;
            if let Some(cand) = without_file(&self.best, f as u32) {
                self.try_take(cand);
            }
        }
        // A file's first change of size, a truncate, becomes its initial size.
        for f in 0..self.best.files.len() {
            let sizes = |op: &Op| match *op {
                Op::Write { file, .. } | Op::Truncate { file, .. } => file == f as u32,
                _ => false,
            };
            let first = self.best.ops.iter().position(|l| sizes(&l.op));
            if let Some(i) = first {
                if let Op::Truncate { size, .. } = self.best.ops[i].op {
                    let mut cand = self.best.clone();
                    cand.files[f].size = size;
                    cand.ops.remove(i);
                    self.try_take(cand);
                }
            }
        }
        // Smaller files: towards one page, then half.
        for f in 0..self.best.files.len() {
            let size = self.best.files[f].size;
            for s in smaller_sizes(size, self.best.files[f].huge, self.best.config.huge_page_size()) {
                let mut cand = self.best.clone();
                cand.files[f].size = s;
                if self.try_take(cand) {
                    break;
                }
            }
        }
    }

    /// Each configuration key back to its default, then smaller CPU and frame counts.
    fn config(&mut self) {
        let d = Config::default();
        let resets: [fn(&mut Config, &Config); 9] = [
            |c, d| c.cpus = d.cpus,
            |c, d| c.ptrs = d.ptrs,
            |c, d| {
                c.frames = d.frames;
                c.highmem = c.highmem.min(d.frames - 8);
            },
            |c, _| c.highmem = c.frames / 2,
            |c, d| c.pkmap = d.pkmap,
            |c, d| c.atomic = d.atomic,
            |c, d| c.highpte = d.highpte,
            |c, d| c.ptshare = d.ptshare,
            |c, d| c.hugeshare = d.hugeshare,
        ];
        for reset in resets {
            let mut cand = self.best.clone();
            reset(&mut cand.config, &d);
            self.try_take(cand);
        }
        let mut cand = self.best.clone();
        cand.config.steps = d.steps;
        self.try_take(cand);
        // The fewest CPUs the trace names, where the default would not do.
        let used = self.max_cpu() + 1;
        if used < self.best.config.cpus && self.best.config.cpus != d.cpus {
            let mut cand = self.best.clone();
            cand.config.cpus = used.max(1);
            self.try_take(cand);
        }
        // Fewer frames and slots, only where the default would not do: halving while the
        // property holds.
        loop {
            let mut cand = self.best.clone();
            let c = &mut cand.config;
            if c.frames == d.frames || c.frames / 2 < 16 {
                break;
            }
            c.frames /= 2;
            c.highmem = c.highmem.min(c.frames - 8);
            if !self.try_take(cand) {
                break;
            }
        }
        type Shrink = (fn(&Config) -> bool, fn(&mut Config));
        let shrinks: [Shrink; 2] = [
            (
                |c| c.pkmap != Config::default().pkmap,
                |c| c.pkmap = (c.pkmap / 2).max(1),
            ),
            (
                |c| c.atomic != Config::default().atomic,
                |c| c.atomic = (c.atomic / 2).max(2),
            ),
        ];
        for (changed, shrink) in shrinks {
            while changed(&self.best.config) {
                let mut cand = self.best.clone();
                shrink(&mut cand.config);
                if !self.try_take(cand) {
                    break;
                }
            }
        }
    }

    fn max_cpu(&self) -> u32 {
        let t = &self.best;
        let tasks = t.tasks.iter().map(|t| t.cpu);
        let forks = t.ops.iter().filter_map(|l| match l.op {
            Op::Fork { cpu, .. } => cpu,
            _ => None,
        });
        let irqs = t.schedule.iter().filter_map(|s| match s {
            SchedToken::Irq(c) => Some(*c),
            SchedToken::Task(_) => None,
        });
        tasks.chain(forks).chain(irqs).max().unwrap_or(0)
    }

    /// Every numeric argument of every operation, towards simpler values.
    fn numbers(&mut self) {
        for i in 0..self.best.ops.len() {
            for slot in 0..6 {
                let Some(v) = arg(&self.best.ops[i].op, slot) else {
                    continue;
                };
                for c in simpler(v) {
                    let mut cand = self.best.clone();
                    set_arg(&mut cand.ops[i].op, slot, c);
                    if self.try_take(cand) {
                        break;
                    }
                }
            }
        }
    }
}

/// Candidate values simpler than `v`, simplest first: 0, 1, the page-aligned value, small
/// powers of two and page multiples below it, half of it.
fn simpler(v: u64) -> Vec<u64> {
    let mut out = vec![0, 1, PAGE_SIZE];
    out.push(v & !(PAGE_SIZE - 1));
    out.push(v / 2);
    out.push((v / 2) & !(PAGE_SIZE - 1));
    let mut p = PAGE_SIZE;
    while p < v {
        out.push(p);
        // Past 2^63 the doubling would wrap to 0 and never reach `v`.
        let Some(next) = p.checked_mul(2) else { break };
        p = next;
    }
    // Round numbers near v (fewer significant hex digits).
    let mut mask = 0xfu64;
    while mask < v {
        out.push(v & !mask);
        mask = (mask << 4) | 0xf;
    }
    out.retain(|&c| c < v);
    let mut seen = Vec::new();
    out.retain(|c| {
        let fresh = !seen.contains(c);
        seen.push(*c);
        fresh
    });
    out
}

fn smaller_sizes(size: u64, huge: bool, hps: u64) -> Vec<u64> {
    let unit = if huge { hps } else { 1 };
    simpler(size).into_iter().filter(|s| s % unit == 0).collect()
}

/// The numeric arguments of an operation, by slot (`None` where the slot has none). Ids
/// (files, tasks, CPUs) are not numbers to shrink.
pub(crate) fn arg(op: &Op, slot: usize) -> Option<u64> {
    let v = match (op, slot) {
        (Op::Mmap { addr, .. }, 0) => *addr,
        (Op::Mmap { len, .. }, 1) => *len,
        (Op::Mmap { off, .. }, 2) => *off,
        (Op::Munmap { addr, .. } | Op::Mprotect { addr, .. } | Op::Pageout { addr, .. }, 0) => *addr,
        (Op::Munmap { len, .. } | Op::Mprotect { len, .. } | Op::Pageout { len, .. }, 1) => *len,
        (Op::Mremap { addr, .. }, 0) => *addr,
        (Op::Mremap { old, .. }, 1) => *old,
        (Op::Mremap { new, .. }, 2) => *new,
        (Op::Mremap { to: Some(to), .. }, 3) => *to,
        (Op::Write { off, .. } | Op::Read { off, .. }, 0) => *off,
        (Op::Write { len, .. } | Op::Read { len, .. }, 1) => *len,
        (Op::Write { buf, .. } | Op::Read { buf, .. }, 2) => *buf,
        (Op::Truncate { size, .. }, 0) => *size,
        (Op::Load { addr } | Op::Store { addr, .. }, 0) => *addr,
        (Op::Store { value, .. }, 1) => *value as u64,
        _ => return None,
    };
    Some(v)
}

pub(crate) fn set_arg(op: &mut Op, slot: usize, v: u64) {
    match (op, slot) {
        (Op::Mmap { addr, .. }, 0) => *addr = v,
        (Op::Mmap { len, .. }, 1) => *len = v,
        (Op::Mmap { off, .. }, 2) => *off = v,
        (Op::Munmap { addr, .. } | Op::Mprotect { addr, .. } | Op::Pageout { addr, .. }, 0) => *addr = v,
        (Op::Munmap { len, .. } | Op::Mprotect { len, .. } | Op::Pageout { len, .. }, 1) => *len = v,
        (Op::Mremap { addr, .. }, 0) => *addr = v,
        (Op::Mremap { old, .. }, 1) => *old = v,
        (Op::Mremap { new, .. }, 2) => *new = v,
        (Op::Mremap { to: Some(to), .. }, 3) => *to = v,
        (Op::Write { off, .. } | Op::Read { off, .. }, 0) => *off = v,
        (Op::Write { len, .. } | Op::Read { len, .. }, 1) => *len = v,
        (Op::Write { buf, .. } | Op::Read { buf, .. }, 2) => *buf = v,
        (Op::Truncate { size, .. }, 0) => *size = v,
        (Op::Load { addr } | Op::Store { addr, .. }, 0) => *addr = v,
        (Op::Store { value, .. }, 1) => *value = v.min(255) as u8,
        _ => unreachable!("slot {slot} has no number"),
    }
}

/// For each schedule token of `t`, the operation (index into `t.ops`) whose step it chose,
/// from a run's event log; `None` for a token the scheduler skipped or never reached.
fn token_ops(reference: &mut Reference, t: &Trace) -> Vec<Option<usize>> {
    let mut ran = vec![None; t.schedule.len()];
    let options = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    let Ok(report) = run_trace_with(reference, t, &options) else {
        return ran;
    };
    // A step's operation is known once its `Start` (if it starts one) has been seen: the
    // token of the step before is settled at each `Step` and at the end.
    let mut current: Vec<Option<usize>> = Vec::new();
    let mut step: Option<(usize, Option<u32>)> = None;
    let mut settle = |step: Option<(usize, Option<u32>)>, current: &Vec<Option<usize>>| {
        if let Some((task, Some(k))) = step {
            if let Some(slot) = ran.get_mut(k as usize) {
                *slot = current.get(task).copied().flatten();
            }
        }
    };
    for e in &report.events {
        match *e {
            Event::Step { task, token, .. } => {
                settle(step, &current);
                step = Some((task as usize, token));
            }
            Event::Start { task, call, .. } => {
                let task = task as usize;
                if current.len() <= task {
                    current.resize(task + 1, None);
                }
                current[task] = Some(call);
            }
            _ => {}
        }
    }
    settle(step, &current);
    ran
}

/// `t` without operation `i` and the schedule tokens that ran its steps (`ran`: the token
/// map of `t`, [`token_ops`]), if any token ran it.
fn without_op_and_its_tokens(t: &Trace, i: usize, ran: &[Option<usize>]) -> Option<Trace> {
    if !ran.contains(&Some(i)) {
        return None;
    }
    let mut cand = t.clone();
    cand.ops.remove(i);
    let mut k = 0;
    cand.schedule.retain(|_| {
        k += 1;
        ran[k - 1] != Some(i)
    });
    Some(cand)
}

/// Removes the first `k` schedule tokens naming `task`; false if there are fewer.
fn drop_tokens(s: &mut Vec<SchedToken>, task: u32, k: usize) -> bool {
    let mut left = k;
    let mut out = Vec::with_capacity(s.len());
    for &tok in s.iter() {
        if left > 0 && tok == SchedToken::Task(task) {
            left -= 1;
        } else {
            out.push(tok);
        }
    }
    *s = out;
    left == 0
}

/// The trace without the moving mremap at op `i`, every later address of its task's mm
/// inside the new range moved back into the old one (the mapping stays where it was).
fn without_mremap(t: &Trace, i: usize) -> Option<Trace> {
    let Op::Mremap { to: Some(to), .. } = t.ops[i].op else {
        return None;
    };
    moved_back(t, i, to)
}

/// The trace without the mremap at op `i`, every later address inside `[to, to + new)` (its
/// new range) moved back by `to - addr` (into the old range).
fn moved_back(t: &Trace, i: usize, to: u64) -> Option<Trace> {
    let Op::Mremap { addr, new, .. } = t.ops[i].op else {
        return None;
    };
    let mut cand = t.clone();
    cand.ops.remove(i);
    let inside = |a: u64| a >= to && a - to < new;
    for l in &mut cand.ops[i..] {
        for slot in [0, 2, 3] {
            if let Some(a) = arg(&l.op, slot) {
                let is_addr = matches!(
                    (&l.op, slot),
                    (Op::Write { .. } | Op::Read { .. }, 2)
                        | (Op::Mremap { .. }, 3)
                        | (
                            Op::Mmap { .. }
                                | Op::Munmap { .. }
                                | Op::Mprotect { .. }
                                | Op::Pageout { .. }
                                | Op::Mremap { .. }
                                | Op::Load { .. }
                                | Op::Store { .. },
                            0
                        )
                );
                if is_addr && inside(a) {
                    set_arg(&mut l.op, slot, a - to + addr);
                }
            }
        }
    }
    Some(cand)
}

/// The result of each operation of a run of `t` (by index into `t.ops`; `None` where it did
/// not complete, or the run failed).
fn op_results(reference: &mut Reference, t: &Trace) -> Vec<Option<OpResult>> {
    let mut out = vec![None; t.ops.len()];
    if let Ok(report) = run_trace_with(reference, t, &RunOptions::ALL) {
        for (i, r) in report.completed {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    out
}

/// The trace without op `i` (an mmap, munmap or mremap), every later mmap that is not
/// `fixed` and got an address other than its hint in `results` (a run of `t`) given that
/// address as its hint; an mremap that the kernel moved (`maymove`, not `fixed`) also has
/// the later addresses in its new range moved back into the old one. `None` where that
/// changes nothing but the removal (which the operations pass tries on its own).
fn without_placing(t: &Trace, results: &[Option<OpResult>], i: usize) -> Option<Trace> {
    let mut cand = t.clone();
    let mut pinned = false;
    for (l, r) in cand.ops.iter_mut().zip(results).skip(i + 1) {
        if let (Op::Mmap { addr, flags, .. }, Some(OpResult::Addr(got))) = (&mut l.op, *r) {
            if !flags.fixed && !flags.noreplace && *addr != got {
                *addr = got;
                pinned = true;
            }
        }
    }
    match t.ops[i].op {
        Op::Mremap {
            addr, flags, to: None, ..
        } if flags.maymove && !flags.fixed => match results[i] {
            Some(OpResult::Addr(to)) if to != addr => moved_back(&cand, i, to),
            _ if pinned => moved_back(&cand, i, addr),
            _ => None,
        },
        _ if pinned => {
            cand.ops.remove(i);
            Some(cand)
        }
        _ => None,
    }
}

/// For each mapped page that a run of `t` reclaimed (a pte cleared by try_to_unmap while the
/// running operation was no pageout), in the order of the run, the trace with a pageout of
/// that page (`len=0x1000`) by the task that last ran in its address space (whose last
/// started operation is not an exit): right after the line of the reclaiming operation (as
/// long as that keeps it before the task's next operation), then right after the task's
/// last started operation; with the index of the pageout's line.
fn paged_out(reference: &mut Reference, t: &Trace) -> Vec<(Trace, usize)> {
    let options = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    let Ok(report) = run_trace_with(reference, t, &options) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = Vec::new();
    // The task that last ran in each mm, each task's last started operation, the running task.
    let mut last_in_mm: Vec<Option<u32>> = Vec::new();
    let mut started: Vec<Option<usize>> = Vec::new();
    let mut running = None;
    for e in &report.events {
        match *e {
            Event::Step { task, mm, .. } => {
                let mm = mm as usize;
                if last_in_mm.len() <= mm {
                    last_in_mm.resize(mm + 1, None);
                }
                last_in_mm[mm] = Some(task);
                running = Some(task);
            }
            Event::Start { task, call, .. } => {
                let task = task as usize;
                if started.len() <= task {
                    started.resize(task + 1, None);
                }
                started[task] = Some(call);
            }
            Event::Entry {
                mm,
                level: 0,
                va,
                old: Some(_),
                new: None,
                at: "try_to_unmap",
            } => {
                let current = |task: u32| started.get(task as usize).copied().flatten();
                let Some(r) = running.and_then(current) else { continue };
                let Some(task) = last_in_mm.get(mm as usize).copied().flatten() else {
                    continue;
                };
                let Some(i) = current(task) else { continue };
                let pageout = matches!(t.ops[r].op, Op::Pageout { .. });
                if pageout || matches!(t.ops[i].op, Op::Exit) || seen.contains(&(mm, va)) {
                    continue;
                }
                seen.push((mm, va));
                // Right after the reclaiming operation's line (before the task's next one),
                // else right after the task's own.
                let next = (i + 1..t.ops.len()).find(|&j| t.ops[j].task == task);
                let late = (r + 1).max(i + 1).min(next.unwrap_or(t.ops.len()));
                let mut at = vec![late];
                if late != i + 1 {
                    at.push(i + 1);
                }
                for k in at {
                    let mut cand = t.clone();
                    let op = Op::Pageout {
                        addr: va,
                        len: PAGE_SIZE,
                    };
                    cand.ops.insert(k, OpLine { task, op });
                    out.push((cand, k));
                }
            }
            _ => {}
        }
    }
    out
}

/// `config` with `low` lowmem and `high` highmem frames fewer, as far as the ranges allow
/// (at least 8 lowmem frames and 16 in all): what one kind cannot give, the other does (an
/// allocation falls back from highmem to lowmem, and pressure on one often stands for
/// pressure on both); false if that changes nothing.
fn fewer_frames(config: &mut Config, low: u32, high: u32) -> bool {
    let lowmem = config.frames - config.highmem;
    let highmem = config.highmem;
    let new_low = lowmem.saturating_sub(low).max(8).min(lowmem);
    let short = low - (lowmem - new_low);
    let new_high = highmem.saturating_sub(high + short);
    let short = (high + short).saturating_sub(highmem);
    let new_low = new_low.saturating_sub(short).max(8).min(new_low);
    let new_high = new_high.max(16u32.saturating_sub(new_low)).min(highmem);
    config.frames = new_low + new_high;
    config.highmem = new_high;
    (new_low, new_high) != (lowmem, highmem)
}

/// The frames each operation of a run of `t` allocated (by index into `t.ops`): lowmem,
/// highmem.
fn allocated(reference: &mut Reference, t: &Trace) -> Vec<(u32, u32)> {
    let mut out = vec![(0, 0); t.ops.len()];
    let options = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    let Ok(report) = run_trace_with(reference, t, &options) else {
        return out;
    };
    let low_count = t.config.frames - t.config.highmem;
    let mut started: Vec<Option<usize>> = Vec::new();
    let mut running = None;
    for e in &report.events {
        match *e {
            Event::Step { task, .. } => running = Some(task as usize),
            Event::Start { task, call, .. } => {
                let task = task as usize;
                if started.len() <= task {
                    started.resize(task + 1, None);
                }
                started[task] = Some(call);
            }
            Event::Alloc { pfn, .. } => {
                let Some(i) = running.and_then(|r| started.get(r).copied().flatten()) else {
                    continue;
                };
                if let Some(slot) = out.get_mut(i) {
                    if pfn < low_count {
                        slot.0 += 1;
                    } else {
                        slot.1 += 1;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Renumbers task ids above `gone` down by one (ops, forks, schedule).
fn renumber_tasks(t: &mut Trace, gone: u32) {
    let down = |id: u32| if id > gone { id - 1 } else { id };
    for l in &mut t.ops {
        l.task = down(l.task);
        if let Op::Fork { task, .. } = &mut l.op {
            *task = down(*task);
        }
    }
    t.schedule.retain(|s| *s != SchedToken::Task(gone));
    for s in &mut t.schedule {
        if let SchedToken::Task(id) = s {
            *id = down(*id);
        }
    }
}

/// The trace without the fork at op `i` (creating `child`) and everything `child` does
/// (forks it makes go too, recursively).
pub(crate) fn without_forked_task(t: &Trace, i: usize, child: u32) -> Trace {
    let mut cand = t.clone();
    cand.ops.remove(i);
    let mut gone = vec![child];
    let mut k = 0;
    while k < gone.len() {
        let g = gone[k];
        for l in &cand.ops {
            if l.task == g {
                if let Op::Fork { task, .. } = l.op {
                    gone.push(task);
                }
            }
        }
        cand.ops.retain(|l| l.task != g);
        k += 1;
    }
    gone.sort_unstable();
    for &g in gone.iter().rev() {
        renumber_tasks(&mut cand, g);
    }
    cand
}

/// The trace without declared task `gone`, if it has no operations.
fn without_task(t: &Trace, gone: u32) -> Option<Trace> {
    if t.ops.iter().any(|l| l.task == gone) {
        return None;
    }
    let mut cand = t.clone();
    cand.tasks.remove(gone as usize);
    renumber_tasks(&mut cand, gone);
    Some(cand)
}

/// The trace with declared task `from`'s operations and schedule tokens given to declared
/// task `into` (`from` is left with none), if `from` has operations and is not forked.
fn merged_task(t: &Trace, from: u32, into: u32) -> Option<Trace> {
    let declared = t.tasks.len() as u32;
    if from >= declared || into >= declared || !t.ops.iter().any(|l| l.task == from) {
        return None;
    }
    let mut cand = t.clone();
    give_task(&mut cand, from, into);
    Some(cand)
}

/// Task `from`'s operations and schedule tokens become task `into`'s.
fn give_task(t: &mut Trace, from: u32, into: u32) {
    for l in &mut t.ops {
        if l.task == from {
            l.task = into;
        }
    }
    for s in &mut t.schedule {
        if *s == SchedToken::Task(from) {
            *s = SchedToken::Task(into);
        }
    }
}

/// The trace without the fork at op `i`, the forked task's operations and schedule tokens
/// given to the forking task (renumbered); `None` if op `i` is not a fork.
fn merged_child(t: &Trace, i: usize) -> Option<Trace> {
    let Op::Fork { task: child, .. } = t.ops[i].op else {
        return None;
    };
    let parent = t.ops[i].task;
    let mut cand = t.clone();
    cand.ops.remove(i);
    give_task(&mut cand, child, parent);
    renumber_tasks(&mut cand, child);
    Some(cand)
}

/// The trace without the fork at op `i`, the task it created declared instead as a thread of
/// the forking (declared) task's process, on the fork's CPU; `None` if op `i` is not a fork
/// by a declared task. The new task takes the first forked id; the forked ids before the
/// child's move up one, so forks still create the next unused id in order.
fn forked_as_thread(t: &Trace, i: usize) -> Option<Trace> {
    let Op::Fork { task: child, cpu } = t.ops[i].op else {
        return None;
    };
    let parent = t.tasks.get(t.ops[i].task as usize)?;
    let declared = t.tasks.len() as u32;
    let id = |x: u32| match x {
        x if x == child => declared,
        x if x >= declared && x < child => x + 1,
        x => x,
    };
    let mut cand = t.clone();
    cand.ops.remove(i);
    cand.tasks.push(mm_reference::TaskInit {
        mm: parent.mm,
        cpu: cpu.unwrap_or(parent.cpu),
    });
    for l in &mut cand.ops {
        l.task = id(l.task);
        if let Op::Fork { task, .. } = &mut l.op {
            *task = id(*task);
        }
    }
    for s in &mut cand.schedule {
        if let SchedToken::Task(x) = s {
            *x = id(*x);
        }
    }
    Some(cand)
}

/// Makes `op` name file `to` where it names file `from`.
fn rename_file(op: &mut Op, from: u32, to: u32) {
    match op {
        Op::Mmap { file: Some(f), .. } if *f == from => *f = to,
        Op::Write { file, .. } | Op::Read { file, .. } | Op::Truncate { file, .. } if *file == from => *file = to,
        _ => {}
    }
}

/// Whether `op` names file `f`.
fn uses_file(op: &Op, f: u32) -> bool {
    match *op {
        Op::Mmap { file, .. } => file == Some(f),
        Op::Write { file, .. } | Op::Read { file, .. } | Op::Truncate { file, .. } => file == f,
        _ => false,
    }
}

/// The trace without file `gone`, if no operation uses it.
fn without_file(t: &Trace, gone: u32) -> Option<Trace> {
    if t.ops.iter().any(|l| uses_file(&l.op, gone)) {
        return None;
    }
    let mut cand = t.clone();
    cand.files.remove(gone as usize);
    for l in &mut cand.ops {
        let down = |f: &mut u32| {
            if *f > gone {
                *f -= 1
            }
        };
        match &mut l.op {
            Op::Mmap { file: Some(f), .. } => down(f),
            Op::Write { file, .. } | Op::Read { file, .. } | Op::Truncate { file, .. } => down(file),
            _ => {}
        }
    }
    Some(cand)
}

/// The order in which a run of `t` completed its operations, and the order in which it
/// started them (indices into `t.ops`); operations that never completed (or never started)
/// follow in the order they started (or in file order). `None` if the run fails.
fn op_order(reference: &mut Reference, t: &Trace) -> Option<(Vec<usize>, Vec<usize>)> {
    let options = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    let report = run_trace_with(reference, t, &options).ok()?;
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    for e in &report.events {
        match *e {
            Event::Start { call, .. } if !starts.contains(&call) => starts.push(call),
            Event::End { call, .. } if !ends.contains(&call) => ends.push(call),
            _ => {}
        }
    }
    let rest = |order: &mut Vec<usize>, then: &[usize]| {
        for i in then.iter().copied().chain(0..t.ops.len()) {
            if i < t.ops.len() && !order.contains(&i) {
                order.push(i);
            }
        }
    };
    let started = starts.clone();
    rest(&mut ends, &started);
    rest(&mut starts, &[]);
    Some((ends, starts))
}

/// The trace with its operation lines in `order` (a permutation of their indices) and no
/// schedule, forked ids renumbered in the new order of the forks; `None` if `order` is not
/// a permutation or breaks a task's program order.
fn reordered(t: &Trace, order: &[usize]) -> Option<Trace> {
    let n = t.ops.len();
    let mut seen = vec![false; n];
    for &i in order {
        if i >= n || std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    if order.len() != n {
        return None;
    }
    let mut cand = t.clone();
    cand.schedule.clear();
    cand.ops = order.iter().map(|&i| t.ops[i]).collect();
    // Program order: each task's operations keep their relative order.
    for task in 0..t.task_count() as u32 {
        let before = t.ops.iter().filter(|l| l.task == task);
        let after = cand.ops.iter().filter(|l| l.task == task);
        if !before.eq(after) {
            return None;
        }
    }
    // Forks create the next unused id, in file order.
    let mut new_id: Vec<u32> = (0..t.task_count() as u32).collect();
    let mut next = t.tasks.len() as u32;
    for l in &cand.ops {
        if let Op::Fork { task, .. } = l.op {
            *new_id.get_mut(task as usize)? = next;
            next += 1;
        }
    }
    for l in &mut cand.ops {
        l.task = *new_id.get(l.task as usize)?;
        if let Op::Fork { task, .. } = &mut l.op {
            *task = *new_id.get(*task as usize)?;
        }
    }
    Some(cand)
}

/// The trace without declared task `gone`: its operations, the tasks its forks create (and
/// everything they do) and its declaration, the later ids renumbered.
fn without_declared_task(t: &Trace, gone: u32) -> Option<Trace> {
    if gone as usize >= t.tasks.len() {
        return None;
    }
    let mut cand = t.clone();
    while let Some(i) = cand
        .ops
        .iter()
        .rposition(|l| l.task == gone && matches!(l.op, Op::Fork { .. }))
    {
        let Op::Fork { task, .. } = cand.ops[i].op else {
            unreachable!()
        };
        cand = without_forked_task(&cand, i, task);
    }
    cand.ops.retain(|l| l.task != gone);
    without_task(&cand, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse;

    fn trace(text: &str) -> Trace {
        parse(text).expect("a valid trace")
    }

    #[test]
    fn reordering_renumbers_forks_and_keeps_program_order() {
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
task 1 mm=1 cpu=0
0: fork task=2
1: fork task=3
2: load addr=0x10000
3: store addr=0x10000 value=1
0: exit
schedule 1 0
",
        );
        let r = reordered(&t, &[1, 0, 3, 2, 4]).expect("a permutation in program order");
        assert_eq!(
            r,
            trace(
                "mmtrace 1
task 0 mm=0 cpu=0
task 1 mm=1 cpu=0
1: fork task=2
0: fork task=3
2: store addr=0x10000 value=1
3: load addr=0x10000
0: exit
",
            )
        );
        // Task 0's exit before its fork; not a permutation.
        assert_eq!(reordered(&t, &[4, 1, 0, 3, 2]), None);
        assert_eq!(reordered(&t, &[0, 1, 2, 3]), None);
        assert_eq!(reordered(&t, &[0, 0, 1, 2, 3]), None);
    }

    #[test]
    fn a_mapping_grown_in_place_is_mapped_that_long_at_once() {
        // The property: some store succeeds past the mapping's first page.
        let mut keep = |t: &Trace| {
            let report = crate::exec::run_trace(t, &RunOptions::default());
            report.completed.iter().any(|&(i, r)| {
                matches!(t.ops[i].op, Op::Store { addr, .. } if addr >= 0x101000) && r == mm_reference::OpResult::Done
            })
        };
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
0: mmap addr=0x100000 len=0x1000 prot=rw flags=private,fixed
0: mremap addr=0x100000 old=0x1000 new=0x3000
0: store addr=0x102000 value=1
",
        );
        assert!(keep(&t));
        let small = minimize(&t, &mut keep);
        assert_eq!(small.ops.len(), 2, "{small}");
        assert!(matches!(small.ops[0].op, Op::Mmap { len: 0x3000, .. }), "{small}");
    }

    /// The property of the tests below: some store succeeds.
    fn a_store_succeeds(t: &Trace) -> bool {
        let report = crate::exec::run_trace(t, &RunOptions::default());
        report
            .completed
            .iter()
            .any(|&(i, r)| matches!(t.ops[i].op, Op::Store { .. }) && r == mm_reference::OpResult::Done)
    }

    #[test]
    fn a_mapping_the_kernel_placed_stays_where_it_was() {
        // Without the first mmap, the second would be placed at 0xfff000, away from the store.
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
0: mmap addr=0 len=0x1000 prot=rw flags=private
0: mmap addr=0 len=0x1000 prot=rw flags=private
0: store addr=0xffe000 value=1
",
        );
        assert!(a_store_succeeds(&t));
        let small = minimize(&t, &mut a_store_succeeds);
        assert_eq!(small.ops.len(), 2, "{small}");
        assert!(matches!(small.ops[0].op, Op::Mmap { addr: 0xffe000, .. }), "{small}");
    }

    #[test]
    fn a_mapping_the_kernel_moved_stays_where_it_was() {
        // The mremap cannot grow the mapping in place (its next page is mapped) and moves it
        // to the top of the address space.
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
0: mmap addr=0x100000 len=0x2000 prot=rw flags=private,fixed
0: mremap addr=0x100000 old=0x1000 new=0x2000 flags=maymove
0: store addr=0xffe000 value=1
",
        );
        assert!(a_store_succeeds(&t));
        let small = minimize(&t, &mut a_store_succeeds);
        assert_eq!(small.ops.len(), 2, "{small}");
        assert!(matches!(small.ops[1].op, Op::Store { .. }), "{small}");
    }

    #[test]
    fn a_mapping_protected_after_the_fact_is_mapped_so_at_once() {
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
0: mmap addr=0x100000 len=0x1000 prot=none flags=private,fixed
0: mprotect addr=0x100000 len=0x1000 prot=rw
0: store addr=0x100000 value=1
",
        );
        assert!(a_store_succeeds(&t));
        let small = minimize(&t, &mut a_store_succeeds);
        assert_eq!(small.ops.len(), 2, "{small}");
        assert!(
            matches!(
                small.ops[0].op,
                Op::Mmap {
                    prot: mm_reference::Prot::RW,
                    ..
                }
            ),
            "{small}"
        );
    }

    #[test]
    fn a_filler_goes_with_memory_made_scarcer() {
        // The property: a store runs out of memory. The second mapping's page and tables
        // are there only to use up frames.
        let mut keep = |t: &Trace| {
            let report = crate::exec::run_trace(t, &RunOptions::default());
            report.completed.iter().any(|&(_, r)| r == mm_reference::OpResult::Oom)
        };
        let t = trace(
            "mmtrace 1
config frames=20 highmem=10
task 0 mm=0 cpu=0
0: mmap addr=0x40000 len=0x9000 prot=rw flags=private,fixed,populate
0: mmap addr=0x10000 len=0x1000 prot=rw flags=private,fixed,populate
0: mmap addr=0x200000 len=0x1000 prot=rw flags=private,fixed
0: store addr=0x200000 value=1
",
        );
        assert!(keep(&t));
        let small = minimize(&t, &mut keep);
        assert_eq!(small.ops.len(), 3, "{small}");
        assert!(small.config.frames < 20, "{small}");
    }

    #[test]
    fn reclaim_of_a_mapped_page_is_made_a_pageout() {
        // The property: reclaim unmaps a mapped page (try_to_unmap clears a pte).
        let mut keep = |t: &Trace| {
            let options = RunOptions {
                events: true,
                ..RunOptions::default()
            };
            let report = crate::exec::run_trace(t, &options);
            report.events.iter().any(|e| {
                matches!(
                    e,
                    Event::Entry {
                        level: 0,
                        new: None,
                        at: "try_to_unmap",
                        ..
                    }
                )
            })
        };
        let t = trace(
            "mmtrace 1
config frames=16 highmem=0
file 0 size=4k
task 0 mm=0 cpu=0
0: mmap addr=0x100000 len=0x1000 prot=r flags=shared,fixed file=0 off=0
0: load addr=0x100000
0: mmap addr=0x200000 len=0x10000 prot=rw flags=private,fixed,populate
",
        );
        assert!(keep(&t));
        let small = minimize(&t, &mut keep);
        assert!(small.config == Config::default(), "{small}");
    }

    #[test]
    fn a_declared_task_goes_with_its_forks_and_their_tasks() {
        let t = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
task 1 mm=1 cpu=0
task 2 mm=1 cpu=0
1: fork task=3
0: fork task=4
3: fork task=5
2: exit
4: load addr=0x10000
5: load addr=0x10000
schedule 1 2 3 4 5 0
",
        );
        let want = trace(
            "mmtrace 1
task 0 mm=0 cpu=0
task 1 mm=1 cpu=0
0: fork task=2
1: exit
2: load addr=0x10000
schedule 1 2 0
",
        );
        assert_eq!(without_declared_task(&t, 1), Some(want));
        assert_eq!(without_declared_task(&t, 3), None);
    }
}
