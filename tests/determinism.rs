//! Determinism: the same trace gives the same result, bit for bit, every run. Generated traces
//! of every mode are each run twice on fresh references and the whole reports compared.

use mm_reference::RunOptions;
use mm_targets::exec::{replay_text, run_trace};
use mm_targets::gen::{generate, GenOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn generated_traces_replay_identically() {
    for (name, opts) in [
        ("conform", GenOptions::conform()),
        ("sequential", GenOptions::sequential()),
        ("concurrent", GenOptions::concurrent()),
    ] {
        for seed in 0..150u64 {
            let trace = generate(&mut ChaCha8Rng::seed_from_u64(seed), &opts);
            let a = run_trace(&trace, &RunOptions::default());
            let b = run_trace(&trace, &RunOptions::default());
            assert_eq!(a, b, "{name} seed {seed}: two runs of the same trace differ");
            assert_eq!(replay_text(&trace, &a), replay_text(&trace, &b));
        }
    }
}
