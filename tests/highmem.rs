//! Highmem and highpte change no observable result: generated traces (with memory to spare,
//! run in file order) give the same results with `highmem=0 highpte=off` as with half the
//! frames in highmem and pte pages there too, where every kernel touch of a page goes
//! through a kmap.

use mm_reference::{Outcome, RunOptions};
use mm_targets::exec::run_trace;
use mm_targets::gen::{generate, GenOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn highmem_and_highpte_change_no_result() {
    let mut kmapped = 0;
    for (name, opts) in [
        ("conform", GenOptions::conform()),
        ("sequential", GenOptions::sequential()),
    ] {
        for seed in 0..200u64 {
            let mut trace = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
            trace.schedule.clear();
            trace.config.frames = 65536;
            let mut low = trace.clone();
            low.config.highmem = 0;
            low.config.highpte = false;
            let mut high = trace.clone();
            high.config.highmem = 32768;
            high.config.highpte = true;
            high.config.pkmap = 1;
            high.config.atomic = 2;
            let a = run_trace(&low, &RunOptions::default());
            let b = run_trace(&high, &RunOptions::default());
            assert_eq!(a.outcome, Outcome::Ok, "{name} seed {seed}: {:?}", a.outcome);
            assert_eq!(a, b, "{name} seed {seed}: highmem and highpte changed a result");
            kmapped += usize::from(!b.completed.is_empty());
        }
    }
    assert!(kmapped > 300, "too few traces ran anything: {kmapped}");
}
