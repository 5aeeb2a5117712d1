#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build script: builds every cargo-fuzz target in fuzz/ and copies
# one libFuzzer binary per target into $OUT, with a seed corpus where fuzz/seeds/TARGET exists.
#
# In OSS-Fuzz's base-builder-rust image the toolchain is nightly and cargo fuzz builds with
# the sanitizer OSS-Fuzz asks for (address). Run by hand on a stable toolchain (a local check:
# `SRC=$(mktemp -d) OUT=$(mktemp -d)`, the project at $SRC/mmfuzz) it builds without a
# sanitizer through RUSTC_BOOTSTRAP=1: the fuzzed code is safe Rust.
cd "$SRC/mmfuzz"

flags=(-O)
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
  flags+=(--sanitizer none)
fi
cargo fuzz build "${flags[@]}"

triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$triple/release"
for f in fuzz/fuzz_targets/*.rs; do
  name=$(basename "${f%.rs}")
  cp "$bin_dir/$name" "$OUT/$name"
  if [ -d "fuzz/seeds/$name" ]; then
    (cd "fuzz/seeds/$name" && zip -q -r "$OUT/${name}_seed_corpus.zip" .)
  fi
done
