# mmfuzz: the everyday commands. `just --list` is the menu.

# Run the built-in fuzzer on the correct reference (add e.g. `--bugs NAME` or `--seed N`).
fuzz *ARGS:
    cargo run --release -- fuzz {{ARGS}}

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

# Formatting, lints and tests exactly as CI runs them.
ci:
    bash .ci/run

# Review changed insta snapshots after a behaviour change.
review:
    cargo insta review
