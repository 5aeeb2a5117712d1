//! The text of a run's event log (`mmfuzz replay --events`): one line per event of
//! [`mm_reference::events::Event`], operations printed as in a trace.
//!
//! What it keeps true: the text is a pure function of the trace and its events (the same run
//! gives the same text, byte for byte); every event gives exactly one line (a deadlock's
//! cycle adds one line per edge after its violation); a step's events are indented under its
//! `step N` line, and what happens between steps (the first frames, interrupts, the
//! violation) is not.

use crate::trace::{print_op, Trace};
use mm_reference::events::{frame_name, Event, Lin, LockMode, Pte, LEVEL_NAMES};
use mm_reference::{Call, RunReport};
use std::fmt::Write;

fn mode(m: LockMode) -> &'static str {
    match m {
        LockMode::Read => "read",
        LockMode::Write => "write",
    }
}

/// What a linearization point applies, in words.
pub fn lin_text(point: &Lin) -> String {
    match *point {
        Lin::Whole => "the whole operation".to_string(),
        Lin::Chunk { pos, n, user } => format!("{n} bytes between file offset {pos:#x} and user {user:#x}"),
        Lin::Grow { pos } => format!("i_size grows to {pos:#x}"),
        Lin::Populate { va } => format!("populated page {va:#x}"),
        Lin::Fault { va, write } => format!("{} fault at {va:#x}", if write { "write" } else { "read" }),
    }
}

/// One event as one line (without indentation or newline). `trace` gives the operations'
/// text.
pub fn event_line(trace: &Trace, e: &Event) -> String {
    let op = |task, call: usize| {
        print_op(&Call {
            task,
            op: trace.ops[call].op,
        })
        .to_string()
    };
    match e {
        Event::Step { step, task, cpu, mm } => format!("step {step}: task {task} (mm {mm}) on CPU {cpu}"),
        Event::Irq { cpu, current } => match current {
            Some(t) => format!("irq on CPU {cpu}, over task {t}"),
            None => format!("irq on CPU {cpu}, idle"),
        },
        Event::Start { task, call, .. } => format!("start {}", op(*task, *call)),
        Event::End { task, call, result } => format!("end {} -> {result}", op(*task, *call)),
        Event::Lin { task, point } => format!("task {task} linearizes {}", lin_text(point)),
        Event::Yield { task, at } => format!("task {task} yields in {at}"),
        Event::Lock {
            task,
            lock,
            mode: m,
            at,
        } => {
            let kind = if lock.spin { "spin" } else { mode(*m) };
            format!("task {task} takes {lock} ({kind}) in {at}")
        }
        Event::Wait {
            task,
            lock,
            mode: m,
            at,
        } => {
            format!("task {task} waits for {lock} ({}) in {at}", mode(*m))
        }
        Event::Unlock { task, lock, at } => format!("task {task} releases {lock} in {at}"),
        Event::Handoff { task, lock, from } => format!("task {task} gets {lock} from task {from}"),
        Event::Entry {
            mm,
            level,
            va,
            old,
            new,
            at,
        } => {
            let what = LEVEL_NAMES[*level as usize];
            // An upper entry points at the next table: its frame is all it says.
            let show = |p: &Pte| match level {
                0 => p.to_string(),
                _ => format!("{} table frame {}", LEVEL_NAMES[*level as usize - 1], p.pfn),
            };
            match (old, new) {
                (None, Some(n)) => format!("{what} of mm {mm} at {va:#x} set: {} in {at}", show(n)),
                (Some(o), None) => format!("{what} of mm {mm} at {va:#x} cleared (was {}) in {at}", show(o)),
                (Some(o), Some(n)) => format!(
                    "{what} of mm {mm} at {va:#x} changed: {} -> {} in {at}",
                    show(o),
                    show(n)
                ),
                (None, None) => format!("{what} of mm {mm} at {va:#x} stays empty in {at}"),
            }
        }
        Event::TlbFill(t) => format!(
            "CPU {} TLB fill: mm {} {:#x} -> {}{}",
            t.cpu,
            t.mm,
            t.va,
            frame_name(t.pfn),
            if t.write { " (write)" } else { "" }
        ),
        Event::TlbFlush(f) => {
            let on: Vec<String> = (0..32)
                .filter(|c| f.cpus & (1 << c) != 0)
                .map(|c| c.to_string())
                .collect();
            format!(
                "TLB flush: mm {} [{:#x}, {:#x}) on CPUs {{{}}} in {}",
                f.mm,
                f.start,
                f.end,
                on.join(","),
                f.at
            )
        }
        Event::TlbDrop(t) => format!(
            "CPU {} TLB drop: mm {} {:#x} ({})",
            t.cpu,
            t.mm,
            t.va,
            frame_name(t.pfn)
        ),
        Event::Alloc { pfn, owner } => format!("alloc frame {pfn}: {owner}"),
        Event::Free { pfn } => format!("free frame {pfn}"),
        Event::Violation { oracle, message, .. } => format!("violation {oracle}: {message}"),
    }
}

/// The whole log of `report` (recorded with `RunOptions::events`), one line per event.
pub fn events_text(trace: &Trace, report: &RunReport) -> String {
    let mut out = String::new();
    let mut in_step = false;
    for e in &report.events {
        let between = matches!(e, Event::Step { .. } | Event::Irq { .. } | Event::Violation { .. });
        let indent = if in_step && !between { "  " } else { "" };
        let _ = writeln!(out, "{indent}{}", event_line(trace, e));
        if let Event::Violation { cycle, .. } = e {
            for (t, lock, on) in cycle {
                let _ = writeln!(out, "  cycle: task {t} waits for {lock} on task {on}");
            }
        }
        if between {
            in_step = matches!(e, Event::Step { .. });
        }
    }
    out
}
