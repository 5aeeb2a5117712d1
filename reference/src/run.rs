//! Driving the reference: the scheduler of TRACE.md and the entry point [`run`].
//!
//! Invariants kept here: each task's operations run in program order; one scheduling step
//! polls one task's kernel path from where it stands to its next scheduling point; the
//! decisions follow the `schedule` tokens (skipping tasks that sleep, are finished or not yet
//! created), then the file-order rule; a step that finds no runnable task while some task is
//! unfinished is a deadlock. The flat spec follows the linearization points in the order they
//! happen; every step is judged by every oracle, and the first violation ends the run.
use crate::coverage::Coverage;
use crate::events::Event;
use crate::kernel::{self, Kernel, Lin, Path};
use crate::machine::{Machine, Mode, Pools, TaskState};
use crate::oracle::Checker;
use crate::spec::Spec;
use crate::unchanged::Unchanged;
use crate::{Call, Config, FileInit, Oom, Op, OpResult, Oracle, SchedToken, TaskId, TaskInit, Violation};
use std::future::Future;
use std::task::Poll;

/// Which oracles judge each step. Every one is on by default; switching some off is for
/// measuring their cost (`mmfuzz bench`). A stale TLB entry used to reach a reused frame is
/// caught by the machine itself and always reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The flat spec: every result agrees with it (`spec`).
    pub spec: bool,
    /// The walk of every page table and allocated frame: `use-after-free`, `rss`, `refcount`.
    pub tables: bool,
    /// No TLB entry outlives or exceeds its pte (`tlb`).
    pub tlb: bool,
    /// Only page cache is left when every task has exited (`leak`).
    pub leak: bool,
    /// No two lock classes taken in both orders (`lock-order`). Off, a lock inversion that
    /// deadlocks is reported as the `deadlock` it becomes.
    pub lock_order: bool,
    /// Record the run's model-level coverage in [`RunReport::features`] (`coverage.rs`).
    pub coverage: bool,
    /// Skip the `tables` and `tlb` walks at a step when nothing they read changed since they
    /// last passed (`unchanged.rs`); the verdicts are the same either way.
    pub skip_unchanged: bool,
    /// Record the event log ([`RunReport::events`]). Not an oracle: off in `ALL` and `NONE`
    /// (fuzzing), on for `replay --events` and `show`.
    pub events: bool,
    /// Audit `skip_unchanged` (tests): at every step it skips a walk, hash everything that
    /// walk reads and panic, as a model bug, if it differs from the last walk that passed.
    pub audit_skip: bool,
}

impl RunOptions {
    pub const ALL: RunOptions = RunOptions {
        spec: true,
        tables: true,
        tlb: true,
        leak: true,
        lock_order: true,
        coverage: false,
        skip_unchanged: true,
        events: false,
        audit_skip: false,
    };
    pub const NONE: RunOptions = RunOptions {
        spec: false,
        tables: false,
        tlb: false,
        leak: false,
        lock_order: false,
        coverage: false,
        skip_unchanged: true,
        events: false,
        audit_skip: false,
    };
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions::ALL
    }
}

/// How a run ended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    Ok,
    Violation(Violation),
}

/// The observable record of a run.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RunReport {
    /// Completed operations in the order they completed: (index into `calls`, result).
    pub completed: Vec<(usize, OpResult)>,
    pub outcome: Outcome,
    /// With [`RunOptions::coverage`]: the features the run reached, sorted (else empty).
    pub features: Vec<u32>,
    /// What the executor did, in order, when [`RunOptions::events`] asked for it (empty
    /// otherwise).
    pub events: Vec<Event>,
}

/// Runs `calls` (each task's operations in program order) under `schedule` (TRACE.md's
/// scheduling rules) and judges every step. The inputs must be valid (as a parsed trace is:
/// tasks numbered in order, forks creating the next ids, no operation after an exit);
/// anything else is a caller bug and panics. A fresh [`Reference`] each time: use one
/// `Reference` for many runs to reuse its memory.
pub fn run(
    config: &Config,
    files: &[FileInit],
    tasks: &[TaskInit],
    calls: &[Call],
    schedule: &[SchedToken],
    options: &RunOptions,
) -> RunReport {
    Reference::new().run(config, files, tasks, calls, schedule, options)
}

/// A reference that runs one trace after another and keeps its buffers (frame array, page
/// contents, page tables, the oracles' scratch) between runs, so that a run allocates little
/// and touches no memory for pages it never uses. Runs are independent: the result of a run
/// never depends on the runs before it.
#[derive(Default)]
pub struct Reference {
    pools: Pools,
    checker: Option<Checker>,
    coverage: Coverage,
    unchanged: Unchanged,
}

impl Reference {
    pub fn new() -> Reference {
        Reference::default()
    }

    /// As [`run`].
    pub fn run(
        &mut self,
        config: &Config,
        files: &[FileInit],
        tasks: &[TaskInit],
        calls: &[Call],
        schedule: &[SchedToken],
        options: &RunOptions,
    ) -> RunReport {
        let mut machine = Machine::new(config, files, tasks, std::mem::take(&mut self.pools));
        if options.events {
            machine.record_events();
        }
        let mut checker = self.checker.take().unwrap_or_else(|| Checker::new(0));
        checker.resize(config.frames as usize);
        let kernel = Kernel::new(machine);
        self.coverage.reset();
        self.unchanged.reset();
        let mut judge = Judge {
            checker: &mut checker,
            coverage: &mut self.coverage,
            unchanged: &mut self.unchanged,
        };
        let mut report =
            Scheduler::new(&kernel, kernel::exec, config, files, tasks, calls).run(&mut judge, schedule, options);
        if options.coverage {
            report.features = self.coverage.take();
        }
        report.events = kernel.m().take_events(&report.outcome);
        self.pools = kernel.into_machine().into_pools();
        self.checker = Some(checker);
        report
    }
}

/// An operation in flight (its kernel path is in the task's slot) and its linearization so
/// far.
struct Running {
    /// Index into `calls`.
    idx: usize,
    /// The flat spec's result, when the operation linearized as a whole before returning.
    expect: Option<OpResult>,
    /// Bytes a write or read has copied (and the spec applied) so far.
    copied: u64,
    /// Scheduling steps it has run.
    steps: u32,
}

/// The per-step judges: the checker, the coverage recorder, the skip of unchanged state.
struct Judge<'a> {
    checker: &'a mut Checker,
    coverage: &'a mut Coverage,
    unchanged: &'a mut Unchanged,
}

/// TRACE.md's scheduler over the kernel's task paths.
struct Scheduler<'k, 'c, F> {
    k: &'k Kernel,
    /// The kernel path of an operation ([`kernel::exec`]; a parameter only so that its
    /// future's type has a name here).
    exec: fn(&'k Kernel, TaskId, Op) -> F,
    /// Per task: the slot its running operation's path lives in.
    paths: Vec<Path<F>>,
    config: &'c Config,
    calls: &'c [Call],
    spec: Spec,
    /// Each task's program: indices into `calls`, and the next to start.
    program: Vec<Vec<usize>>,
    next: Vec<usize>,
    running: Vec<Option<Running>>,
    /// The linearization points of the step being judged (a buffer kept across steps).
    lin: Vec<(TaskId, Lin)>,
    report: RunReport,
    /// The run records its event log (`events.rs`).
    recording: bool,
}

impl<'k, 'c, F: Future<Output = OpResult>> Scheduler<'k, 'c, F> {
    fn new(
        k: &'k Kernel,
        exec: fn(&'k Kernel, TaskId, Op) -> F,
        config: &'c Config,
        files: &[FileInit],
        tasks: &[TaskInit],
        calls: &'c [Call],
    ) -> Self {
        let forks = calls.iter().filter(|c| matches!(c.op, Op::Fork { .. })).count();
        for t in 0..forks {
            k.m().declare_unborn((tasks.len() + t) as TaskId);
        }
        let ntasks = tasks.len() + forks;
        let mut program: Vec<Vec<usize>> = vec![Vec::new(); ntasks];
        for (i, c) in calls.iter().enumerate() {
            program[c.task as usize].push(i);
        }
        Scheduler {
            k,
            exec,
            paths: (0..ntasks).map(|_| Box::pin(None)).collect(),
            config,
            calls,
            spec: Spec::new(config, files, tasks),
            program,
            next: vec![0; ntasks],
            running: (0..ntasks).map(|_| None).collect(),
            lin: Vec::new(),
            report: RunReport {
                completed: Vec::with_capacity(calls.len()),
                outcome: Outcome::Ok,
                features: Vec::new(),
                events: Vec::new(),
            },
            recording: k.m().events.is_some(),
        }
    }

    /// Hands the machine to an event hook, only when the run records (no borrow otherwise).
    fn log(&self, hook: impl FnOnce(&mut Machine)) {
        if self.recording {
            hook(&mut self.k.m());
        }
    }

    /// Whether task `t` has an operation in flight or still to start.
    fn unfinished(&self, m: &Machine, t: usize) -> bool {
        m.tasks[t].state == TaskState::Alive && (self.running[t].is_some() || self.next[t] < self.program[t].len())
    }

    /// Whether task `t` can run a step now: it is not asleep (on a lock, on the full kmap
    /// pool, for memory), and its CPU is not held by another task's kmap_atomic
    /// (preemption is off there).
    fn runnable(&self, m: &Machine, t: usize) -> bool {
        let task = &m.tasks[t];
        self.unfinished(m, t)
            && m.locks.waiting(t as TaskId).is_none()
            && task.kmap_wait.is_none_or(|w| w != m.kmap.wakeups)
            && task.mem_wait.is_none_or(|f| f != m.frames.frees)
            && m.kmap.atomic_owner(task.cpu).is_none_or(|o| o as usize == t)
    }

    /// No task can run, but some sleep for memory: the OOM path wakes the first of them (in
    /// file order) to fail its allocation, since nothing will free a frame.
    fn oom_wake(&self) -> Option<usize> {
        let mut m = self.k.m();
        let t = (0..self.program.len())
            .filter(|&t| self.unfinished(&m, t) && m.tasks[t].mem_wait.is_some())
            .min_by_key(|&t| self.current_call(t))?;
        let task = &mut m.tasks[t];
        task.mem_wait = None;
        task.mem_oom = true;
        m.ev_oom_wake(t as TaskId);
        Some(t)
    }

    /// The call task `t` runs or will run next.
    fn current_call(&self, t: usize) -> usize {
        match &self.running[t] {
            Some(r) => r.idx,
            None => self.program[t][self.next[t]],
        }
    }

    fn end(mut self, oracle: Oracle, message: String) -> RunReport {
        self.report.outcome = Outcome::Violation(Violation { oracle, message });
        self.report
    }

    fn run(mut self, judge: &mut Judge, schedule: &[SchedToken], options: &RunOptions) -> RunReport {
        let ntasks = self.program.len();
        let mut tokens = schedule.iter().enumerate();
        let mut steps: u64 = 0;
        loop {
            // Pick the task for this scheduling point: the next token naming a runnable task
            // (tokens naming blocked, finished or unborn tasks are skipped), then the
            // file-order rule.
            let chosen = {
                let mut m = self.k.m();
                let mut chosen = None;
                for (k, tok) in tokens.by_ref() {
                    match *tok {
                        SchedToken::Task(t) if (t as usize) < ntasks && self.runnable(&m, t as usize) => {
                            chosen = Some((t as usize, Some(k as u32)));
                            break;
                        }
                        SchedToken::Task(_) => {}
                        SchedToken::Irq(c) => {
                            if (c as usize) < m.cpus.len() {
                                if options.coverage {
                                    judge.coverage.irq(&m, c);
                                }
                                m.ev_irq(c);
                                if let Err(v) = m.irq(c) {
                                    drop(m);
                                    self.report.outcome = Outcome::Violation(v);
                                    return self.report;
                                }
                            }
                        }
                    }
                }
                chosen.or_else(|| {
                    (0..ntasks)
                        .filter(|&t| self.runnable(&m, t))
                        .min_by_key(|&t| self.current_call(t))
                        .map(|t| (t, None))
                })
            };
            let Some((t, token)) = chosen.or_else(|| self.oom_wake().map(|t| (t, None))) else {
                return match self.deadlock() {
                    Some(message) => self.end(Oracle::Deadlock, message),
                    None => self.report,
                };
            };
            steps += 1;
            if steps > self.config.steps {
                let message = format!("the run did not finish within {} scheduling steps", self.config.steps);
                return self.end(Oracle::Livelock, message);
            }
            self.log(|m| m.ev_step(steps, t as TaskId, token));
            if self.running[t].is_none() {
                let idx = self.program[t][self.next[t]];
                self.next[t] += 1;
                self.k.m().tasks[t].oom = Oom::No;
                self.log(|m| m.ev_start(t as TaskId, idx, self.calls[idx].op));
                self.paths[t].set(Some((self.exec)(self.k, t as TaskId, self.calls[idx].op)));
                self.running[t] = Some(Running {
                    idx,
                    expect: None,
                    copied: 0,
                    steps: 0,
                });
            }
            self.k.m().switch_to(t as TaskId);
            let polled = kernel::poll(&mut self.paths[t]);
            self.k.m().switch_from(t as TaskId);
            if options.coverage {
                let run = self.running[t].as_mut().expect("running");
                run.steps += 1;
                let result = match &polled {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                };
                judge
                    .coverage
                    .step(&self.k.m(), t as TaskId, &self.calls[run.idx].op, run.steps, result);
            }
            self.log(Machine::ev_polled);
            let violation = {
                let mut m = self.k.m();
                let v = m.violation.take();
                let order = m.locks.violation.take();
                v.or(order.filter(|_| options.lock_order))
            };
            if let Some(v) = violation {
                self.report.outcome = Outcome::Violation(v);
                return self.report;
            }
            if options.spec {
                if let Err(message) = self.linearize(t) {
                    return self.end(Oracle::Spec, message);
                }
            } else {
                self.k.m().lin.clear();
            }
            if let Poll::Ready(result) = polled {
                if let Err(v) = self.kmaps_released(t) {
                    self.report.outcome = Outcome::Violation(v);
                    return self.report;
                }
                if let Err(message) = self.complete(t, result, options) {
                    return self.end(Oracle::Spec, message);
                }
            }
            let checked = {
                let m = self.k.m();
                // Walk only what may have changed since the last passed check (unchanged.rs).
                let skip = options.skip_unchanged;
                let same = skip && judge.unchanged.tables_same(&m);
                let tables = options.tables && !same;
                let tlb = options.tlb && !(same && judge.unchanged.tlb_same(&m));
                let kmap = !(skip && judge.unchanged.kmap_same(&m));
                if options.audit_skip {
                    judge
                        .unchanged
                        .audit(&m, !tables && options.tables, !tlb && options.tlb, steps);
                    if !kmap {
                        judge.unchanged.audit_kmap(&m, steps);
                    }
                }
                let r = judge.checker.check(&m, tables, tlb, kmap);
                if skip && r.is_ok() {
                    if tables || tlb {
                        judge.unchanged.record(&m, options.audit_skip);
                    }
                    if kmap {
                        judge.unchanged.record_kmap(&m, options.audit_skip);
                    }
                }
                r.and_then(|()| {
                    if options.leak {
                        crate::oracle::check_leak(&m)
                    } else {
                        Ok(())
                    }
                })
            };
            if let Err(v) = checked {
                self.report.outcome = Outcome::Violation(v);
                return self.report;
            }
        }
    }

    /// Hands the linearization points of task `t`'s step to the flat spec, in order.
    fn linearize(&mut self, t: usize) -> Result<(), String> {
        std::mem::swap(&mut self.lin, &mut self.k.m().lin);
        for (lt, ev) in self.lin.drain(..) {
            assert_eq!(lt as usize, t, "task {lt} linearized during task {t}'s step");
            let run = self.running[t].as_mut().expect("a linearizing task runs");
            let call = &self.calls[run.idx];
            match ev {
                Lin::Whole => {
                    assert!(run.expect.is_none(), "{} linearized twice", call.op.name());
                    let mut op = call.op;
                    let oom = if let Op::Mmap { flags, .. } = &mut op {
                        // Each populated page linearizes on its own, after the mmap, and
                        // memory running out there does not change the mmap's result.
                        flags.populate = false;
                        Oom::No
                    } else {
                        self.k.m().tasks[t].oom
                    };
                    run.expect = Some(self.spec.apply(&Call { task: call.task, op }, oom));
                }
                Lin::Chunk { pos, n, user } => {
                    let want = self.spec.copy_piece(call, pos, n, user);
                    if want != OpResult::Count(n) {
                        return Err(format!(
                            "task {}: {} copied {n} bytes between file offset {pos:#x} and {user:#x}, but the flat spec gives {want} there",
                            call.task,
                            call.op.name()
                        ));
                    }
                    run.copied += n;
                }
                Lin::Grow { pos } => match call.op {
                    Op::Write { file, .. } => self.spec.write_grow(file, pos),
                    _ => panic!("{} grew a file", call.op.name()),
                },
                Lin::Populate { va } => self.spec.populate_page(call.task, va),
                Lin::Fault { va, write } => {
                    if !self.spec.fault(call.task, va, write) {
                        return Err(format!(
                            "task {}: a {} fault at {va:#x} during {} was resolved, but the flat spec says the access faults",
                            call.task,
                            if write { "write" } else { "read" },
                            call.op.name()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The `kmap` oracle's rule at the return to user space: task `t` holds no kmap (of
    /// the pool, or kmap_atomic on its CPU).
    fn kmaps_released(&self, t: usize) -> Result<(), Violation> {
        let m = self.k.m();
        let cpu = m.tasks[t].cpu;
        let op = self.calls[self.running[t].as_ref().expect("a completing task runs").idx]
            .op
            .name();
        let held = m.kmap.held(t);
        let message = if !held.is_empty() {
            format!("task {t} returns from {op} holding a kmap of frames {held:?}")
        } else if m.kmap.in_atomic(t as TaskId, cpu) {
            format!("task {t} returns from {op} holding a kmap_atomic on CPU {cpu}")
        } else {
            return Ok(());
        };
        Err(Violation {
            oracle: Oracle::Kmap,
            message,
        })
    }

    /// Task `t`'s operation returned `result`: recorded and judged by the flat spec.
    fn complete(&mut self, t: usize, result: OpResult, options: &RunOptions) -> Result<(), String> {
        let run = self.running[t].take().expect("a completing task runs");
        self.paths[t].set(None);
        let call = &self.calls[run.idx];
        {
            let m = self.k.m();
            assert!(
                m.locks.held(t as TaskId).is_empty(),
                "task {t} returns from {} holding {:?}",
                call.op.name(),
                m.locks.held(t as TaskId)
            );
            if m.tasks[t].state == TaskState::Alive {
                m.mms[m.tasks[t].mm].assert_sorted();
                assert!(
                    m.tasks[t].pins.is_empty(),
                    "task {t} returns from {} keeping pins {:?}",
                    call.op.name(),
                    m.tasks[t].pins
                );
            }
        }
        self.report.completed.push((run.idx, result));
        self.log(|m| m.ev_end(t as TaskId, run.idx, result));
        if !options.spec {
            return Ok(());
        }
        let oom = self.k.m().tasks[t].oom;
        let want = match (call.op, run.expect) {
            (Op::Write { .. } | Op::Read { .. }, _) => self.spec.finish_copy(call, run.copied, oom),
            (_, Some(want)) => want,
            (_, None) => self.spec.apply(call, oom),
        };
        if want != result {
            return Err(format!(
                "task {}: {} returned {result} but the flat spec says {want}",
                call.task,
                call.op.name()
            ));
        }
        Ok(())
    }

    /// No task can run: a deadlock if some task has not finished (the message names the
    /// cycle of the wait-for graph, or every sleeping task), `None` if every task is done.
    fn deadlock(&self) -> Option<String> {
        let m = self.k.m();
        let stuck: Vec<usize> = (0..self.program.len()).filter(|&t| self.unfinished(&m, t)).collect();
        if stuck.is_empty() {
            return None;
        }
        let holds = |t: TaskId| -> String {
            let mut names: Vec<String> = m
                .locks
                .held(t)
                .iter()
                .map(|&(l, mode)| match mode {
                    Mode::Read => format!("{l} (read)"),
                    Mode::Write => l.to_string(),
                })
                .collect();
            names.extend(m.kmap.held(t as usize).iter().map(|p| format!("a kmap of frame {p}")));
            if names.is_empty() {
                "holds nothing".to_string()
            } else {
                format!("holds {}", names.join(", "))
            }
        };
        let op = |t: TaskId| self.calls[self.current_call(t as usize)].op.name();
        if let Some(cycle) = m.locks.cycle() {
            let parts: Vec<String> = cycle
                .iter()
                .map(|&(t, lock, on)| {
                    let how = if m.locks.mode_held(on, lock).is_some() {
                        format!("held by task {on}")
                    } else {
                        format!("queued behind task {on}")
                    };
                    format!("task {t} ({}) {}, waits for {lock} {how}", op(t), holds(t))
                })
                .collect();
            return Some(format!("wait-for cycle: {}", parts.join("; ")));
        }
        let parts: Vec<String> = stuck
            .iter()
            .map(|&t| {
                let t = t as TaskId;
                match m.locks.waiting(t) {
                    Some(l) => format!("task {t} ({}) {}, waits for {l}", op(t), holds(t)),
                    None if m.tasks[t as usize].kmap_wait.is_some() => format!(
                        "task {t} ({}) {}, waits for a kmap slot (all {} in use)",
                        op(t),
                        holds(t),
                        m.cfg.pkmap
                    ),
                    None => format!("task {t} ({}) {}", op(t), holds(t)),
                }
            })
            .collect();
        Some(format!("every unfinished task is asleep: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MmapFlags, Outcome, Prot};

    /// The buffers a reference keeps do not grow from run to run: pages written back to disk
    /// (here by MADV_PAGEOUT of dirty shared file pages) go back to the page pool, which keeps
    /// no more buffers than the machine has frames.
    #[test]
    fn the_page_pool_stays_bounded_across_runs() {
        let config = Config {
            frames: 32,
            highmem: 16,
            ..Config::default()
        };
        let files = [FileInit {
            size: 0x8000,
            huge: false,
        }];
        let tasks = [TaskInit { mm: 0, cpu: 0 }];
        let base = 0x100000;
        let mut calls = vec![Call {
            task: 0,
            op: Op::Mmap {
                addr: base,
                len: 0x8000,
                prot: Prot::RW,
                flags: MmapFlags {
                    shared: true,
                    fixed: true,
                    ..MmapFlags::default()
                },
                file: Some(0),
                off: 0,
            },
        }];
        for page in 0..8 {
            calls.push(Call {
                task: 0,
                op: Op::Store {
                    addr: base + page * 0x1000 + 7,
                    value: 1,
                },
            });
        }
        calls.push(Call {
            task: 0,
            op: Op::Pageout {
                addr: base,
                len: 0x8000,
            },
        });
        let options = RunOptions {
            events: true,
            ..RunOptions::ALL
        };
        let mut r = Reference::new();
        let mut sizes = Vec::new();
        for _ in 0..40 {
            let report = r.run(&config, &files, &tasks, &calls, &[], &options);
            assert_eq!(report.outcome, Outcome::Ok);
            let written = report
                .events
                .iter()
                .filter(|e| matches!(e, Event::Writeback { .. }))
                .count();
            assert_eq!(written, 8, "every dirty page is written back");
            sizes.push(r.pools.pages.len());
        }
        assert!(sizes.iter().all(|&n| n <= config.frames as usize), "{sizes:?}");
        assert!(sizes[2..].iter().all(|&n| n == sizes[2]), "the pool grows: {sizes:?}");
    }
}
