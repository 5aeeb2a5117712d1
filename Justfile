# mmfuzz: the everyday commands. `just --list` is the menu.
#
# Fuzz targets (TARGET): sequential, concurrent, highmem, ptshare, hugetlb, swarm. Zoo bugs are
# switched on for every engine by the environment: `MMFUZZ_BUGS=name,name just fuzz ptshare`.
# The engines' own tools come from crates.io: `just tools` installs them.

# cargo fuzz with a nightly toolchain when rustup has one, else on stable through
# RUSTC_BOOTSTRAP=1; both without a sanitizer (`-s none`): the fuzzed code is safe Rust.
cargo_fuzz := if `rustup toolchain list 2>/dev/null | grep -c '^nightly' || true` == "0" { "RUSTC_BOOTSTRAP=1 cargo fuzz" } else { "cargo +nightly fuzz" }

# AFL++ in a container or on a machine set up for something else: don't insist on the
# performance CPU governor, and go on when core_pattern pipes core dumps to a helper.
afl_env := "AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1"

# List the recipes.
default:
    @just --list

# Install the fuzzing tools from crates.io: cargo-fuzz, cargo-afl with AFL++ built from its source, just.
tools:
    cargo install cargo-fuzz --version 0.13.2 --locked
    cargo install cargo-afl --version 0.18.2 --locked
    cargo afl config --build --force
    cargo install just --locked

# Run the built-in fuzzer (`mmfuzz fuzz`) on the correct reference (add e.g. `--bugs NAME` or `--seed N`).
builtin *ARGS:
    cargo run --release -- fuzz {{ARGS}}

# libFuzzer (cargo fuzz) on TARGET from fuzz/seeds/TARGET; libFuzzer flags after it, e.g. `-max_total_time=60 -fork=2`.
fuzz TARGET *ARGS:
    mkdir -p fuzz/corpus/{{TARGET}}
    {{cargo_fuzz}} run -s none {{TARGET}} fuzz/corpus/{{TARGET}} fuzz/seeds/{{TARGET}} -- {{ARGS}}

# Shrink a crashing raw input of TARGET with libFuzzer (cargo fuzz tmin; same MMFUZZ_BUGS as the crash).
tmin TARGET INPUT *ARGS:
    {{cargo_fuzz}} tmin -s none {{TARGET}} {{INPUT}} -- {{ARGS}}

# Shrink TARGET's libFuzzer corpus (fuzz/corpus/TARGET, or a folder given) to the inputs that keep its coverage (cargo fuzz cmin).
cmin TARGET *ARGS:
    {{cargo_fuzz}} cmin -s none {{TARGET}} {{ARGS}}

# Regrow the raw seed corpus fuzz/seeds/TARGET: RUNS libFuzzer runs from nothing (seed 1, inputs up to 512 bytes), then cmin.
seeds TARGET RUNS="200":
    rm -rf fuzz/seeds/{{TARGET}}
    mkdir -p fuzz/seeds/{{TARGET}}
    {{cargo_fuzz}} run -s none {{TARGET}} fuzz/seeds/{{TARGET}} -- -runs={{RUNS}} -seed=1 -max_len=512 -len_control=0
    {{cargo_fuzz}} cmin -s none {{TARGET}} fuzz/seeds/{{TARGET}}

# Shrink a violating .trace to OUT, keeping its oracle (mmfuzz minimize; for a raw crash, `just decode` it first).
minimize FILE OUT:
    cargo run --release -- minimize {{FILE}} -o {{OUT}}

# Build the AFL++ harnesses (fuzz/afl/, one binary per target) with cargo afl.
afl-build:
    cd fuzz/afl && cargo afl build --release

# AFL++ on TARGET, one instance, from fuzz/seeds/TARGET; afl-fuzz flags after it, e.g. `-V 60` to stop after 60 s.
afl TARGET *ARGS: afl-build
    mkdir -p fuzz/afl/out
    {{afl_env}} cargo afl fuzz -i fuzz/seeds/{{TARGET}} -o fuzz/afl/out/{{TARGET}} {{ARGS}} fuzz/afl/target/release/{{TARGET}}

# AFL++ on TARGET: a main instance and N secondaries sharing the sync folder fuzz/afl/out/TARGET-sync.
afl-parallel TARGET N *ARGS: afl-build
    #!/usr/bin/env bash
    set -euo pipefail
    export {{afl_env}}
    out=fuzz/afl/out/{{TARGET}}-sync
    bin=fuzz/afl/target/release/{{TARGET}}
    mkdir -p "$out"
    # Each secondary in its own session, so that stopping it stops its afl-fuzz too.
    pids=()
    trap 'for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done' EXIT
    for i in $(seq 1 {{N}}); do
        AFL_NO_UI=1 setsid cargo afl fuzz -i fuzz/seeds/{{TARGET}} -o "$out" -S "secondary$i" {{ARGS}} "$bin" > "$out/secondary$i.log" 2>&1 &
        pids+=($!)
    done
    cargo afl fuzz -i fuzz/seeds/{{TARGET}} -o "$out" -M main {{ARGS}} "$bin"

# Turn raw inputs of TARGET (libFuzzer artifacts, AFL crashes) into the .trace text that replays the same.
decode TARGET +FILES:
    cargo run --release -- decode --target {{TARGET}} {{FILES}}

# Replay traces on the reference (TRACE.md's replay output).
replay +FILES:
    cargo run --release -- replay {{FILES}}

# Run traces on this machine's Linux kernel and compare every result with the reference.
conform +ARGS:
    cargo run --release -- conform {{ARGS}}

# Check 500 generated sequential traces against this machine's kernel.
conform-random N="500" SEED="1":
    cargo run --release -- conform --random {{N}} --seed {{SEED}} --quiet

# The whole test suite (what CI runs, with fmt and clippy).
test:
    cargo test --workspace

# Throughput: exec/s of every fuzz target with and without oracles and each oracle's cost, then the built-in fuzzer for 200,000 runs.
bench:
    cargo run --release -- bench
    cargo run --release -- fuzz --runs 200000 --seed 12345

# Formatting, lints and tests exactly as CI runs them.
ci:
    bash .ci/run

# Review changed insta snapshots after a behaviour change.
review:
    cargo insta review

# Draw a trace's run as a picture: OUT ends in .svg, or .html for a page with details on hover and the event log (add e.g. `--without lock-order`).
show FILE OUT *ARGS:
    cargo run --release -- show {{FILE}} -o {{OUT}} {{ARGS}}

# Print a trace's event log (steps, locks, ptes, TLBs, kmaps, frames, the violation), then its replay output.
events +FILES:
    cargo run --release -- replay --events {{FILES}}

# Render every regression trace and screenshot each SVG with headless Chromium (Debian's, installed if missing) into target/show/.
show-check:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! [ -x /usr/bin/chromium ]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    fi
    cargo build --release
    mkdir -p target/show
    for trace in corpus/regressions/*.trace; do
        name=$(basename "$trace" .trace)
        ./target/release/mmfuzz show "$trace" -o "target/show/$name.svg"
        profile=$(mktemp -d)
        /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
            --disable-background-networking --disable-component-update --disable-sync \
            --user-data-dir="$profile" --screenshot="$PWD/target/show/$name.png" --window-size=1600,1000 \
            "file://$PWD/target/show/$name.svg" 2>/dev/null
        rm -rf "$profile"
        test -s "target/show/$name.png"
        echo "target/show/$name.png"
    done

# Regenerate the README's picture (docs/) from its regression trace.
docs-picture:
    cargo run --release -- show corpus/regressions/write-fault-under-page-lock-mmap-lock.trace -o docs/write-fault-under-page-lock-mmap-lock.svg
