//! AFL++ harness `highmem`: `mm_targets::targets::run(Target::Highmem, data)`. A violation panics
//! (with the oracle's verdict and the whole trace), which `afl::fuzz!` turns into an abort, a
//! crash for AFL; input that does not decode is simply uninteresting. `MMFUZZ_BUGS=name,name`
//! switches on zoo bugs.

use mm_targets::targets::{run, Target};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = run(Target::Highmem, data);
    });
}
