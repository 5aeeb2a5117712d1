//! Driving the reference: the scheduler of TRACE.md and the entry point [`run`].
//!
//! Invariants kept here: each task's operations run in program order; scheduling decisions
//! follow the `schedule` tokens, then the file-order rule; every completed operation is
//! judged by every oracle before the next one starts, and the first violation ends the run.
//! Operations are atomic in this sequential machine: one step runs one operation to its end.
use crate::machine::{Machine, Pools, TaskState};
use crate::oracle::Checker;
use crate::spec::Spec;
use crate::{Call, Config, FileInit, Op, OpResult, Oracle, SchedToken, TaskInit, Violation};

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
}

impl RunOptions {
    pub const ALL: RunOptions = RunOptions {
        spec: true,
        tables: true,
        tlb: true,
        leak: true,
    };
    pub const NONE: RunOptions = RunOptions {
        spec: false,
        tables: false,
        tlb: false,
        leak: false,
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
        let mut checker = match self.checker.take() {
            Some(c) if c.frames() == config.frames as usize => c,
            _ => Checker::new(config.frames as usize),
        };
        let report = run_on(
            &mut machine,
            &mut checker,
            config,
            files,
            tasks,
            calls,
            schedule,
            options,
        );
        self.pools = machine.into_pools();
        self.checker = Some(checker);
        report
    }
}

#[allow(clippy::too_many_arguments)]
fn run_on(
    machine: &mut Machine,
    checker: &mut Checker,
    config: &Config,
    files: &[FileInit],
    tasks: &[TaskInit],
    calls: &[Call],
    schedule: &[SchedToken],
    options: &RunOptions,
) -> RunReport {
    let mut spec = Spec::new(config, files, tasks);
    let forks = calls.iter().filter(|c| matches!(c.op, Op::Fork { .. })).count();
    for t in 0..forks {
        machine.declare_unborn((tasks.len() + t) as u32);
    }
    let ntasks = tasks.len() + forks;
    // Each task's program: indices into `calls`, and how far it has got.
    let mut program: Vec<Vec<usize>> = vec![Vec::new(); ntasks];
    for (i, c) in calls.iter().enumerate() {
        program[c.task as usize].push(i);
    }
    let mut next = vec![0usize; ntasks];
    let mut report = RunReport {
        completed: Vec::with_capacity(calls.len()),
        outcome: Outcome::Ok,
    };
    let mut tokens = schedule.iter();
    let mut steps: u64 = 0;

    let runnable = |machine: &Machine, next: &[usize], t: usize| {
        machine.tasks[t].state == TaskState::Alive && next[t] < program[t].len()
    };

    loop {
        // Pick the task for this scheduling point.
        let mut chosen = None;
        for tok in tokens.by_ref() {
            match *tok {
                SchedToken::Task(t) if (t as usize) < ntasks && runnable(machine, &next, t as usize) => {
                    chosen = Some(t as usize);
                    break;
                }
                SchedToken::Task(_) => {} // blocked, finished or not yet created: skipped
                SchedToken::Irq(_) => {
                    // The interrupt handler's kmap_atomic of a page of its own needs the
                    // highmem model; without it the handler touches nothing of the mm state.
                }
            }
        }
        let chosen = chosen.or_else(|| {
            (0..ntasks)
                .filter(|&t| runnable(machine, &next, t))
                .min_by_key(|&t| program[t][next[t]])
        });
        let Some(t) = chosen else { break };
        steps += 1;
        if steps > config.steps {
            report.outcome = Outcome::Violation(Violation {
                oracle: Oracle::Livelock,
                message: format!("the run did not finish within {} scheduling steps", config.steps),
            });
            return report;
        }
        let idx = program[t][next[t]];
        let call = &calls[idx];
        let result = machine.exec(call.task, &call.op);
        next[t] += 1;
        if let Some(v) = machine.violation.take() {
            report.outcome = Outcome::Violation(v);
            return report;
        }
        report.completed.push((idx, result));
        if options.spec {
            let want = spec.apply(call, machine.oom);
            if want != result {
                report.outcome = Outcome::Violation(Violation {
                    oracle: Oracle::Spec,
                    message: format!(
                        "task {}: {} returned {result} but the flat spec says {want}",
                        call.task,
                        call.op.name()
                    ),
                });
                return report;
            }
        }
        let checked = checker.check(machine, options.tables, options.tlb).and_then(|()| {
            if options.leak {
                crate::oracle::check_leak(machine)
            } else {
                Ok(())
            }
        });
        if let Err(v) = checked {
            report.outcome = Outcome::Violation(v);
            return report;
        }
    }
    // Every live task ran out of operations: tasks never created (their fork never ran or
    // failed) are not waiting on anything. A live task that waits forever is a deadlock, which
    // the sequential machine, whose operations never block, cannot produce.
    report
}
