//! The mmtrace text format, version 1 (`shared/design/TRACE.md`): the syntax tree, its parser
//! and its canonical printer.
//!
//! Invariants kept here:
//! - A [`Trace`] that [`parse`] returns is valid: every key in range, tasks and files numbered
//!   in order, every operation's task declared or created by a `fork`, no operation of a task
//!   after its `exit`, every CPU and file id in range.
//! - Printing is canonical and `parse(&trace.to_string()) == Ok(trace)` for every valid trace.
//! - [`Trace::check`] is the same validity judged on the tree: it accepts exactly the traces
//!   that print and parse back unchanged (held by a test on mutants and corrupted traces).
//! - Parsing never panics; every error names its 1-based line.

mod parse;
mod print;

pub use parse::{parse, ParseError};
pub use print::{print_op, OpDisplay};

use mm_reference::{Config, FileInit, Op, SchedToken, TaskInit};

/// The version this crate reads and writes.
pub const VERSION: u32 = 1;

/// A whole trace. `config` is fully resolved (defaults filled in), so two traces that differ
/// only in whether a default was spelled out are equal and print the same.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Trace {
    pub config: Config,
    /// `file ID ...` lines; the id is the index.
    pub files: Vec<FileInit>,
    /// `task ID ...` lines; the id is the index. Tasks created by `fork` are not listed here.
    pub tasks: Vec<TaskInit>,
    /// Operation lines, in file order.
    pub ops: Vec<OpLine>,
    /// Scheduling decisions of all `schedule` lines, concatenated. Empty: no schedule.
    pub schedule: Vec<SchedToken>,
}

/// One operation line: `TASK: OP KEY=VALUE ...`.
pub use mm_reference::Call as OpLine;

impl Trace {
    /// Every task id the trace can ever have: the declared tasks, then one per `fork`.
    pub fn task_count(&self) -> usize {
        self.tasks.len() + self.ops.iter().filter(|l| matches!(l.op, Op::Fork { .. })).count()
    }

    /// Whether the trace is valid, judged on the tree: the rules [`parse`] applies line by
    /// line (with the reason of the first broken one). `t.check().is_ok()` exactly when
    /// `parse(&t.to_string()) == Ok(t)` ([`Trace::round_trips`]); the tests compare the two
    /// on mutants and corrupted traces. It allocates nothing for a valid trace: the engine
    /// and the minimizer judge every candidate with it (printing and parsing back took an
    /// eighth of the built-in engine's time).
    pub fn check(&self) -> Result<(), &'static str> {
        let c = &self.config;
        c.check().map_err(|_| "a config key out of range")?;
        let hps = c.huge_page_size();
        if self.files.iter().any(|f| f.huge && f.size % hps != 0) {
            return Err("a huge file's size is not a multiple of the huge page size");
        }
        if self.tasks.is_empty() {
            return Err("no task");
        }
        // Every address space starts with a pgd in lowmem.
        let lowmem = (c.frames - c.highmem) as usize;
        let mut mms = 0;
        for (i, t) in self.tasks.iter().enumerate() {
            if t.mm > u32::from(u16::MAX) || t.cpu >= c.cpus {
                return Err("a task's mm or cpu out of range");
            }
            if !self.tasks[..i].iter().any(|u| u.mm == t.mm) {
                if mms >= lowmem {
                    return Err("more address spaces than lowmem frames");
                }
                mms += 1;
            }
        }
        let total = self.task_count();
        let mut forks = self.tasks.len();
        // Tasks that exited so far, as a bit per task id (at most 64 ids are tracked this
        // way; more fall back to a scan of the lines before).
        let mut exited = 0u64;
        for (i, line) in self.ops.iter().enumerate() {
            let t = line.task as usize;
            if t >= total {
                return Err("an operation of an unknown task");
            }
            let gone = if t < 64 {
                exited & 1 << t != 0
            } else {
                self.ops[..i].iter().any(|l| l.task == line.task && l.op == Op::Exit)
            };
            if gone {
                return Err("an operation after the task's exit");
            }
            let file_ok = |f: u32| (f as usize) < self.files.len();
            match line.op {
                Op::Mmap { file: Some(f), .. }
                | Op::Write { file: f, .. }
                | Op::Read { file: f, .. }
                | Op::Truncate { file: f, .. }
                    if !file_ok(f) =>
                {
                    return Err("a file id out of range");
                }
                Op::Mremap { flags, to: None, .. } if flags.fixed => return Err("mremap fixed without `to`"),
                Op::Fork { task, cpu } => {
                    if task as usize != forks || cpu.is_some_and(|x| x >= c.cpus) {
                        return Err("a fork's task or cpu out of order or range");
                    }
                    forks += 1;
                }
                Op::Exit if t < 64 => exited |= 1 << t,
                _ => {}
            }
        }
        for tok in &self.schedule {
            match *tok {
                SchedToken::Task(t) if t as usize >= total => return Err("a schedule token names an unknown task"),
                SchedToken::Irq(cpu) if cpu >= c.cpus => return Err("an interrupt token on a cpu out of range"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the trace prints and parses back to itself: the textual judge of validity,
    /// which [`Trace::check`] agrees with.
    pub fn round_trips(&self) -> bool {
        matches!(parse(&self.to_string()), Ok(back) if back == *self)
    }
}
