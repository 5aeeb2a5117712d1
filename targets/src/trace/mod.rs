//! The mmtrace text format, version 1 (`shared/design/TRACE.md`): the syntax tree, its parser
//! and its canonical printer.
//!
//! Invariants kept here:
//! - A [`Trace`] that [`parse`] returns is valid: every key in range, tasks and files numbered
//!   in order, every operation's task declared or created by a `fork`, no operation of a task
//!   after its `exit`, every CPU and file id in range.
//! - Printing is canonical and `parse(&trace.to_string()) == Ok(trace)` for every valid trace.
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
}
