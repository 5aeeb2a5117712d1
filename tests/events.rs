//! The event log (`mmfuzz replay --events`): snapshotted (insta) for two regressions that
//! deadlock in different ways and a seed with TLB fills, flushes and interrupts; the same on
//! every run; and recording it changes nothing the run does.

mod common;

use common::mmfuzz;
use mm_reference::events::Event;
use mm_reference::RunOptions;
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
    // in the fault on its own buffer.
    assert!(lines.contains(&"  task 0 takes the page lock of frame 128 (write) in generic_perform_write"));
    assert!(lines.contains(&"  task 0 waits for the page lock of frame 128 (write) in handle_mm_fault"));
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
