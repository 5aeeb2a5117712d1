//! libFuzzer target `sequential`: `mm_targets::targets::run(Target::Sequential, data)`. Input that does not
//! decode to a trace is rejected (kept out of the corpus); a violation panics with the oracle's
//! verdict and the whole trace. `MMFUZZ_BUGS=name,name` switches on zoo bugs.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use mm_targets::targets::{run, Target, Verdict};

fuzz_target!(|data: &[u8]| -> Corpus {
    match run(Target::Sequential, data) {
        Verdict::Keep => Corpus::Keep,
        Verdict::Reject => Corpus::Reject,
    }
});
