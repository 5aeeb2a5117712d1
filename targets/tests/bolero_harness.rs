//! bolero harnesses over the fuzz targets (`mm_targets::targets`): one `check!` per target,
//! running exactly the function every other engine runs, so a bolero finding is the same
//! panic (oracle verdict and whole trace) as a libFuzzer or AFL crash, and decodes with
//! `mmfuzz decode --target NAME`.
//!
//! Under plain `cargo test` each harness runs a bounded number of random inputs (bolero's
//! random engine: fresh seeds every run, printed on a failure as `BOLERO_RANDOM_SEED`, inputs
//! of at most 64 bytes, so short traces) and finishes well within a second. Under
//! `cargo bolero test -p mm-targets -e random --rustc-bootstrap -s NONE --profile release NAME`
//! the same harness runs with no iteration limit. (cargo-bolero's libFuzzer engine builds every
//! test target of the package with coverage instrumentation, and the test targets that do not
//! link bolero do not link then: libFuzzer runs the same targets through cargo fuzz.)
//! `MMFUZZ_BUGS=name,name` switches zoo bugs on, as for every engine.

use bolero::check;
use mm_targets::targets::{run, Target};

/// Random inputs per harness under plain `cargo test`.
const ITERATIONS: usize = 1000;
/// Longest input: about 60 operations' worth of choices and a schedule.
const MAX_LEN: usize = 4096;

macro_rules! harness {
    ($name:ident, $target:expr) => {
        #[test]
        fn $name() {
            check!()
                .with_iterations(ITERATIONS)
                .with_max_len(MAX_LEN)
                .for_each(|data: &[u8]| {
                    run($target, data);
                });
        }
    };
}

harness!(sequential, Target::Sequential);
harness!(concurrent, Target::Concurrent);
harness!(highmem, Target::Highmem);
harness!(ptshare, Target::Ptshare);
harness!(hugetlb, Target::Hugetlb);
harness!(swarm, Target::Swarm);

/// The harnesses and the targets are one to one, by name.
#[test]
fn one_harness_per_target() {
    let harnesses = ["sequential", "concurrent", "highmem", "ptshare", "hugetlb", "swarm"];
    let targets: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(targets, harnesses);
}
