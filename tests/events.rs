//! The event log (`mmfuzz replay --events`): snapshotted (insta) for two regressions that
//! deadlock in different ways, two kmap regressions (an interrupt handler remapping a task's
//! kmap_atomic slot; two tasks each holding a pool slot and sleeping for another) and a seed
//! with TLB fills, flushes and interrupts; the same on every run; recording it changes
//! nothing the run does; and the kmap events of generated runs tell a consistent story (each
//! pop the top of its CPU's stack, each kunmap a kmap held, a flush frees only unused slots).

mod common;

use common::mmfuzz;
use mm_reference::events::{AtomicBy, Event};
use mm_reference::{Bug, Outcome, RunOptions, TaskId};
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// `mmfuzz replay --events` of a corpus trace: (exit status, standard output).
fn replay_events(trace: &str) -> (i32, String) {
    let path = format!("{}/corpus/{trace}", env!("CARGO_MANIFEST_DIR"));
    let (code, out, _) = mmfuzz(&["replay", "--events", &path]);
    (code, out)
}

#[test]
fn event_logs_are_as_snapshotted() {
    for (trace, status) in [
        ("regressions/write-fault-under-page-lock-mmap-lock.trace", 1),
        ("regressions/write-fault-under-page-lock-two-pages.trace", 1),
        ("regressions/kmap-atomic-irq-slot.trace", 1),
        ("regressions/kmap-nested.trace", 1),
        ("seeds/schedule-irq.trace", 0),
    ] {
        let (code, out) = replay_events(trace);
        assert_eq!(code, status, "{trace}");
        assert_eq!(replay_events(trace), (code, out.clone()), "{trace}: two runs differ");
        let name = trace.trim_end_matches(".trace").replace('/', "__");
        insta::assert_snapshot!(name, out);
    }
}

#[test]
fn the_log_ends_with_the_replay_output_and_names_the_cycle() {
    let (_, out) = replay_events("regressions/write-fault-under-page-lock-same-page.trace");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("alloc frame 0: pgd table"), "{out}");
    assert!(lines.last().unwrap().starts_with("outcome: violation deadlock: "));
    let v = lines
        .iter()
        .position(|l| l.starts_with("violation deadlock: "))
        .expect("the violation");
    assert_eq!(
        lines[v + 1],
        "  cycle: task 0 waits for the page lock of frame 128 on task 0"
    );
    // The task waits for the page lock it holds: taken in generic_perform_write, waited for
    // in the fault on its own buffer (handle_mm_fault's one try, which takes the page lock).
    let took = lines
        .iter()
        .position(|l| *l == "  task 0 takes the page lock of frame 128 (write) in generic_perform_write")
        .expect("the page lock taken by the write");
    let waits = lines
        .iter()
        .position(|l| *l == "  task 0 waits for the page lock of frame 128 (write) in handle_mm_fault_once")
        .expect("the page lock waited for by the fault");
    let fault = lines
        .iter()
        .position(|l| *l == "  task 0 takes mmap_lock of mm 0 (read) in user_fault")
        .expect("the fault on the write's buffer");
    assert!(took < fault && fault < waits, "{out}");
}

#[test]
fn an_interrupt_handlers_remap_is_logged_under_its_interrupt() {
    let (_, out) = replay_events("regressions/kmap-atomic-irq-slot.trace");
    let lines: Vec<&str> = out.lines().collect();
    let push = lines
        .iter()
        .position(|l| *l == "  CPU 0 kmap_atomic depth 0: frame 130 by task 0 in generic_perform_write")
        .expect("the write's kmap_atomic");
    // The interrupt comes while the entry is held, and its handler remaps that very slot.
    assert_eq!(lines[push + 1], "irq on CPU 0, over task 0");
    assert_eq!(lines[push + 2], "  alloc frame 131: anon");
    assert_eq!(
        lines[push + 3],
        "  CPU 0 the interrupt handler remaps kmap_atomic depth 0 (task 0's frame 130) to frame 131"
    );
    assert_eq!(lines[push + 4], "  free frame 131");
    assert!(lines[push + 5].starts_with("step "), "{out}");
    assert!(lines.contains(
        &"violation kmap: CPU 0: task 0 reaches frame 131 through its kmap_atomic slot 0 of frame 130 (clobbered)"
    ));
}

/// A pool slot: the frame it maps (until a flush frees it), and its users (task, frame).
type Slot = (Option<u32>, Vec<(TaskId, u32)>);

/// What the kmap events of a log say, replayed: per CPU the kmap_atomic stack (holder and the
/// frame the holder mapped, the frame the slot maps now); per pool slot its page and users;
/// the tasks asleep on the pool and for memory. Panics at the first event that contradicts
/// the story so far; returns counts of what it saw.
#[derive(Default)]
struct KmapStory {
    stacks: Vec<Vec<(AtomicBy, u32, u32)>>,
    slots: BTreeMap<u32, Slot>,
    kmap_sleepers: BTreeSet<TaskId>,
    mem_sleepers: BTreeSet<TaskId>,
    pushes: usize,
    irq_pushes: usize,
    kmaps: usize,
    flushes: usize,
    kmap_sleeps: usize,
}

impl KmapStory {
    fn follow(&mut self, e: &Event, what: &str) {
        match e {
            Event::KmapAtomic {
                cpu, by, pfn, depth, ..
            } => {
                let c = *cpu as usize;
                if self.stacks.len() <= c {
                    self.stacks.resize(c + 1, Vec::new());
                }
                let stack = &mut self.stacks[c];
                assert_eq!(*depth as usize, stack.len(), "{what}: push at the wrong depth: {e:?}");
                stack.push((*by, *pfn, *pfn));
                self.pushes += 1;
                self.irq_pushes += usize::from(*by == AtomicBy::Irq);
            }
            Event::KunmapAtomic {
                cpu, by, pfn, depth, ..
            } => {
                let stack = &mut self.stacks[*cpu as usize];
                assert_eq!(*depth as usize + 1, stack.len(), "{what}: a pop not of the top: {e:?}");
                let (holder, mapped, _) = stack.pop().expect("an entry");
                assert_eq!((holder, mapped), (*by, *pfn), "{what}: {e:?}");
            }
            Event::KmapAtomicRemap {
                cpu,
                depth,
                holder,
                was,
                pfn,
            } => {
                let stack = &mut self.stacks[*cpu as usize];
                assert_eq!(
                    *depth as usize + 1,
                    stack.len(),
                    "{what}: a remap not of the top: {e:?}"
                );
                let top = stack.last_mut().expect("an entry");
                assert_eq!((top.0, top.2), (*holder, *was), "{what}: {e:?}");
                top.2 = *pfn;
            }
            Event::Kmap { task, pfn, slot, .. } => {
                let (page, users) = self.slots.entry(*slot).or_default();
                assert!(
                    page.is_none_or(|p| p == *pfn),
                    "{what}: slot {slot} maps {page:?}: {e:?}"
                );
                *page = Some(*pfn);
                users.push((*task, *pfn));
                self.kmap_sleepers.remove(task);
                self.kmaps += 1;
            }
            Event::Kunmap {
                task, pfn, slot, woken, ..
            } => {
                let (_, users) = self.slots.get_mut(slot).expect("a slot kmapped before");
                let i = users
                    .iter()
                    .rposition(|u| *u == (*task, *pfn))
                    .unwrap_or_else(|| panic!("{what}: a kunmap of a kmap not held: {e:?}"));
                users.remove(i);
                assert!(
                    woken.is_empty() || users.is_empty(),
                    "{what}: woke with users left: {e:?}"
                );
                for w in woken {
                    assert!(self.kmap_sleepers.remove(w), "{what}: woke task {w}, not asleep: {e:?}");
                }
            }
            Event::KmapFlush { freed, .. } => {
                for (slot, pfn) in freed {
                    let (page, users) = self.slots.get_mut(slot).expect("a slot kmapped before");
                    assert_eq!(
                        (*page, users.len()),
                        (Some(*pfn), 0),
                        "{what}: freed a used slot: {e:?}"
                    );
                    *page = None;
                }
                self.flushes += 1;
            }
            Event::KmapSleep { task, .. } => {
                assert!(self.kmap_sleepers.insert(*task), "{what}: asleep twice: {e:?}");
                self.kmap_sleeps += 1;
            }
            Event::MemSleep { task, .. } => {
                assert!(self.mem_sleepers.insert(*task), "{what}: asleep twice: {e:?}");
            }
            Event::OomWake { task } => {
                assert!(
                    self.mem_sleepers.remove(task),
                    "{what}: OOM woke task {task}, not asleep"
                );
            }
            Event::Step { task, .. } => {
                // A sleeper for memory runs again once a frame was freed.
                self.mem_sleepers.remove(task);
            }
            _ => {}
        }
    }
}

#[test]
fn kmap_events_tell_a_consistent_story() {
    let with = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    let mut total = KmapStory::default();
    for seed in 0..150u64 {
        let mut trace = generate(&mut ChaCha8Rng::seed_from_u64(seed), &GenOptions::concurrent());
        // Every other run with a pool of one or two slots and the bugs that kmap() from it where
        // the correct kernel uses kmap_atomic (the write's source page, the fault's pte
        // page), so that tasks kmap, sleep on the pool and flush it.
        if seed % 2 == 1 {
            trace.config.pkmap = 1 + u32::from(seed % 4 == 1);
            trace.config.bugs.insert(Bug::KmapNested);
            trace.config.bugs.insert(Bug::HighpteKmapOverAlloc);
        }
        let report = run_trace(&trace, &with);
        let mut story = KmapStory::default();
        let what = format!("seed {seed}");
        for e in &report.events {
            story.follow(e, &what);
        }
        if report.outcome == Outcome::Ok {
            assert!(story.stacks.iter().all(Vec::is_empty), "{what}: entries left");
            assert!(
                story.slots.values().all(|(_, users)| users.is_empty()),
                "{what}: kmaps left"
            );
            assert!(story.kmap_sleepers.is_empty(), "{what}: still asleep on the pool");
        }
        total.pushes += story.pushes;
        total.irq_pushes += story.irq_pushes;
        total.kmaps += story.kmaps;
        total.flushes += story.flushes;
        total.kmap_sleeps += story.kmap_sleeps;
    }
    // The runs did kmap: atomically, in interrupt handlers and from the pool, with flushes.
    assert!(total.pushes > 1000, "pushes {}", total.pushes);
    assert!(total.irq_pushes > 10, "irq pushes {}", total.irq_pushes);
    assert!(total.kmaps > 200, "pool kmaps {}", total.kmaps);
    assert!(total.flushes > 20, "flushes {}", total.flushes);
    assert!(total.kmap_sleeps > 10, "sleeps on the pool {}", total.kmap_sleeps);
}

#[test]
fn recording_changes_nothing_and_repeats_exactly() {
    let with = RunOptions {
        events: true,
        ..RunOptions::ALL
    };
    for (name, opts) in [
        ("concurrent", GenOptions::concurrent()),
        ("sequential", GenOptions::sequential()),
    ] {
        for seed in 0..60u64 {
            let trace = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
            let plain = run_trace(&trace, &RunOptions::ALL);
            let a = run_trace(&trace, &with);
            let b = run_trace(&trace, &with);
            assert!(plain.events.is_empty(), "{name} seed {seed}: events recorded while off");
            assert_eq!(
                (&plain.completed, &plain.outcome),
                (&a.completed, &a.outcome),
                "{name} seed {seed}: recording changed the run"
            );
            assert_eq!(a.events, b.events, "{name} seed {seed}: two logs differ");
            // Every step's operation starts before it ends, and each completed operation has
            // its end event, in completion order.
            let ends: Vec<usize> = a
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::End { call, .. } => Some(*call),
                    _ => None,
                })
                .collect();
            let completed: Vec<usize> = a.completed.iter().map(|&(i, _)| i).collect();
            assert_eq!(ends, completed, "{name} seed {seed}");
            let steps = a.events.iter().filter(|e| matches!(e, Event::Step { .. })).count();
            assert!(
                steps >= completed.len(),
                "{name} seed {seed}: fewer steps than operations"
            );
        }
    }
}
