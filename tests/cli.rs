//! The command line as a user runs it: exit statuses (0 ok, 1 violation, 2 bad input) and
//! `error: line N: ...` messages for malformed traces, with nothing run.

mod common;

use common::mmfuzz;
use std::path::{Path, PathBuf};

fn write_trace(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmfuzz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "mmtrace 1
file 0 size=20000
task 0 mm=0 cpu=0
0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0
0: load addr=0x100010
";

#[test]
fn replay_prints_results_and_outcome() {
    let path = write_trace("good.trace", GOOD);
    let (code, out, err) = mmfuzz(&["replay", path.to_str().unwrap()]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out,
        "0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0 -> 0x100000\n\
         0: load addr=0x100010 -> 17\n\
         outcome: ok\n"
    );
}

#[test]
fn malformed_traces_exit_2_with_the_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("header", "mmtrace 2\ntask 0 mm=0 cpu=0\n", 1, "version"),
        ("no-header", "task 0 mm=0 cpu=0\n", 1, "mmtrace"),
        (
            "unknown-op",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n0: mmapp addr=0x1000\n",
            3,
            "mmapp",
        ),
        (
            "unknown-key",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n0: munmap addr=0x1000 lenn=4\n",
            3,
            "lenn",
        ),
        (
            "bad-number",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n0: load addr=0x10zz\n",
            3,
            "addr",
        ),
        (
            "missing-arg",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n# comment\n0: munmap addr=0x1000\n",
            4,
            "len",
        ),
        (
            "out-of-range",
            "mmtrace 1\nconfig cpus=9\ntask 0 mm=0 cpu=0\n",
            2,
            "cpus",
        ),
        (
            "unknown-task",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n1: load addr=0x1000\n",
            3,
            "task",
        ),
        (
            "value-range",
            "mmtrace 1\ntask 0 mm=0 cpu=0\n0: store addr=0x1000 value=256\n",
            3,
            "value",
        ),
    ];
    for (name, text, line, fragment) in cases {
        let path = write_trace(&format!("{name}.trace"), text);
        let (code, out, err) = mmfuzz(&["replay", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: exit status; stderr: {err}");
        assert!(out.is_empty(), "{name}: nothing may run, but stdout was {out:?}");
        let want = format!("error: line {line}: ");
        assert!(
            err.starts_with(&want),
            "{name}: stderr {err:?} should start with {want:?}"
        );
        assert!(
            err.contains(fragment),
            "{name}: stderr {err:?} should mention {fragment:?}"
        );
    }
}

#[test]
fn one_bad_file_runs_nothing() {
    let good = write_trace("good2.trace", GOOD);
    let bad = write_trace("bad2.trace", "mmtrace 1\n");
    let (code, out, _) = mmfuzz(&["replay", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
}

#[test]
fn unknown_bug_is_bad_input() {
    let path = write_trace("good3.trace", GOOD);
    let (code, _, err) = mmfuzz(&["replay", "--bugs", "no-such-bug", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-bug"), "{err}");
}

#[test]
fn bench_all_only_measures_one_column() {
    let (code, out, err) = mmfuzz(&["bench", "--runs", "20", "--target", "concurrent", "--all-only"]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["target", "decode/s", "all", "ops/run"]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row.len(), 4, "{out}");
    assert_eq!(row[0], "concurrent");
    let all: f64 = row[2].parse().expect("a rate");
    assert!(all > 0.0, "{out}");
    assert_eq!(
        lines[3], "(all: exec/s with that configuration)",
        "the legend names only the column shown"
    );
    let (code, _, err) = mmfuzz(&["bench", "--runs", "0", "--all-only"]);
    assert_eq!(code, 2);
    assert!(err.contains("--runs"), "{err}");
}

#[test]
fn bench_only_measures_the_named_configuration() {
    let (code, out, err) = mmfuzz(&["bench", "--runs", "20", "--target", "hugetlb", "--only", "no-tables"]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["target", "decode/s", "no-tables", "ops/run"]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[0], "hugetlb", "{out}");
    assert!(row[2].parse::<f64>().expect("a rate") > 0.0, "{out}");
    // An unknown configuration is refused before anything runs, naming the known ones.
    let (code, out, err) = mmfuzz(&["bench", "--runs", "20", "--only", "no-such"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no-such") && err.contains("no-tables"), "{err}");
}

#[test]
fn replay_without_switches_oracles_off() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/regressions/ptshare-flush-own-mm.trace");
    let path = path.to_str().unwrap();
    let (code, out, _) = mmfuzz(&["replay", path]);
    assert_eq!(code, 1);
    assert!(out.contains("outcome: violation tlb:"), "{out}");
    let (_, out, _) = mmfuzz(&["replay", "--without", "tlb", path]);
    assert!(!out.contains("outcome: violation tlb:"), "{out}");
    let (code, out, err) = mmfuzz(&["replay", "--without", "tlb,no-such", path]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "nothing runs: {out}");
    assert!(err.contains("`no-such` cannot be switched off"), "{err}");
}

#[test]
fn minimize_keeps_the_oracle_and_honours_without() {
    let dir = std::env::temp_dir().join(format!("mmfuzz-cli-minimize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/regressions/ptshare-flush-own-mm.trace");
    let path = path.to_str().unwrap();
    let out = dir.join("small.trace");
    let out = out.to_str().unwrap();
    let (code, stdout, err) = mmfuzz(&["minimize", path, "-o", out]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("violation tlb kept"), "{stdout}");
    assert!(stdout.contains(&format!("replay: mmfuzz replay {out}")), "{stdout}");
    let (code, replayed, _) = mmfuzz(&["replay", out]);
    assert_eq!(code, 1);
    assert!(replayed.contains("outcome: violation tlb:"), "{replayed}");
    // With the tlb oracle off the trace gives no violation: nothing to keep, nothing written.
    let none = dir.join("none.trace");
    let (code, _, err) = mmfuzz(&["minimize", "--without", "tlb", path, "-o", none.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("gives no violation"), "{err}");
    assert!(!none.exists());
    let (code, _, err) = mmfuzz(&["minimize", "--without", "nope", path, "-o", none.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("`nope` cannot be switched off"), "{err}");
}
