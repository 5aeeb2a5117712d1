//! The text of a run's event log (`mmfuzz replay --events`): one line per event of
//! [`mm_reference::events::Event`], operations printed as in a trace.
//!
//! What it keeps true: the text is a pure function of the trace and its events (the same run
//! gives the same text, byte for byte); every event gives exactly one line (a deadlock's
//! cycle adds one line per edge after its violation); a step's events are indented under its
//! `step N` line and an interrupt handler's under its `irq` line, and what happens between
//! steps (the first frames, the interrupt itself, an OOM wake, the violation) is not.

use crate::trace::{print_op, Trace};
use mm_reference::events::{frame_name, Event, Lin, LockMode, Pte, LEVEL_NAMES};
use mm_reference::{Call, RunReport, TaskId};
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
        Event::Step {
            step, task, cpu, mm, ..
        } => format!("step {step}: task {task} (mm {mm}) on CPU {cpu}"),
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
        Event::Kmap { task, pfn, slot, at } => format!("task {task} kmaps frame {pfn} in pkmap slot {slot} in {at}"),
        Event::Kunmap {
            task,
            pfn,
            slot,
            woken,
            at,
        } => {
            let mut line = format!("task {task} kunmaps frame {pfn} from pkmap slot {slot} in {at}");
            if !woken.is_empty() {
                let _ = write!(line, ", waking {}", tasks_text(woken));
            }
            line
        }
        Event::KmapFlush { task, freed } => {
            let freed: Vec<String> = freed
                .iter()
                .map(|(slot, pfn)| format!("slot {slot} (frame {pfn})"))
                .collect();
            format!(
                "task {task} flushes the pkmap pool (flush_all_zero_pkmaps): {}",
                if freed.is_empty() {
                    "no slot freed".to_string()
                } else {
                    format!("frees {}", freed.join(", "))
                }
            )
        }
        Event::KmapSleep { task, pfn, at } => {
            format!("task {task} sleeps in kmap of frame {pfn}, every pkmap slot in use, in {at}")
        }
        Event::KmapAtomic {
            cpu,
            by,
            pfn,
            depth,
            at,
        } => format!("CPU {cpu} kmap_atomic depth {depth}: frame {pfn} by {by} in {at}"),
        Event::KunmapAtomic {
            cpu,
            by,
            pfn,
            depth,
            at,
        } => format!("CPU {cpu} kunmap_atomic depth {depth}: frame {pfn} by {by} in {at}"),
        Event::KmapAtomicRemap {
            cpu,
            depth,
            holder,
            was,
            pfn,
        } => format!(
            "CPU {cpu} the interrupt handler remaps kmap_atomic depth {depth} ({holder}'s frame {was}) to frame {pfn}"
        ),
        Event::MemSleep { task, at } => format!("task {task} sleeps for memory in {at}"),
        Event::OomWake { task } => format!("OOM: task {task} woken to fail its allocation"),
        Event::Writeback {
            task,
            pfn,
            file,
            index,
            at,
        } => format!("task {task} writes back frame {pfn} (file {file} page {index}) in {at}"),
        Event::Alloc { pfn, owner } => format!("alloc frame {pfn}: {owner}"),
        Event::Free { pfn } => format!("free frame {pfn}"),
        Event::Violation { oracle, message, .. } => format!("violation {oracle}: {message}"),
    }
}

/// `task 1`, `tasks 1, 2`.
fn tasks_text(tasks: &[TaskId]) -> String {
    let ids: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    format!("task{} {}", if ids.len() == 1 { "" } else { "s" }, ids.join(", "))
}

/// The whole log of `report` (recorded with `RunOptions::events`), one line per event.
pub fn events_text(trace: &Trace, report: &RunReport) -> String {
    let mut out = String::new();
    // Inside a step or an interrupt: its events are indented under its line.
    let mut inside = false;
    for e in &report.events {
        let between = matches!(
            e,
            Event::Step { .. } | Event::Irq { .. } | Event::OomWake { .. } | Event::Violation { .. }
        );
        let indent = if inside && !between { "  " } else { "" };
        let _ = writeln!(out, "{indent}{}", event_line(trace, e));
        if let Event::Violation { cycle, .. } = e {
            for (t, lock, on) in cycle {
                let _ = writeln!(out, "  cycle: task {t} waits for {lock} on task {on}");
            }
        }
        if between {
            inside = matches!(e, Event::Step { .. } | Event::Irq { .. });
        }
    }
    out
}
