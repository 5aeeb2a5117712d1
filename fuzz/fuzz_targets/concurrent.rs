//! libFuzzer target `concurrent`: `mm_targets::targets::run(Target::Concurrent, data)`. Input that does not
//! decode to a trace is rejected (kept out of the corpus); a violation panics with the oracle's
//! verdict and the whole trace. `MMFUZZ_BUGS=name,name` switches on zoo bugs.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use mm_targets::targets::{run, Target, Verdict};

fuzz_target!(|data: &[u8]| -> Corpus {
    match run(Target::Concurrent, data) {
        Verdict::Keep => Corpus::Keep,
        Verdict::Reject => Corpus::Reject,
    }
});
