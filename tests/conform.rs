//! `mmfuzz conform`: the reference and this machine's Linux kernel agree on random conformance
//! traces and on hand-written traces whose kernel results are known (one with fork and
//! several processes); traces the host cannot reproduce are refused with exit status 2.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch directory under the system temp dir (the command writes `artifacts/` into
/// its working directory when it finds a difference).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmfuzz-conform-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Runs `mmfuzz conform ARGS` in `cwd`: (exit status, stdout, stderr).
fn conform(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmfuzz"))
        .arg("conform")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run mmfuzz");
    let status = out.status.code().expect("mmfuzz exited normally");
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first lines of a long output, for an assertion message.
fn head(text: &str) -> String {
    const LINES: usize = 80;
    let mut out: Vec<&str> = text.lines().take(LINES).collect();
    if text.lines().count() > LINES {
        out.push("...");
    }
    out.join("\n")
}

fn random(seed: u64, n: u64) {
    let dir = scratch(&format!("random-{seed}"));
    let (status, stdout, stderr) = conform(
        &dir,
        &["--random", &n.to_string(), "--seed", &seed.to_string(), "--quiet"],
    );
    assert!(
        status == 0,
        "conform --random {n} --seed {seed}: exit {status}\n{}\n{}",
        head(&stdout),
        head(&stderr)
    );
    let summary = format!("conform: {n} traces, 0 with differences");
    assert!(
        stdout.lines().any(|l| l == summary),
        "no `{summary}` in:\n{}",
        head(&stdout)
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with(" ! ")),
        "difference lines in:\n{}",
        head(&stdout)
    );
    assert!(
        !dir.join("artifacts").exists(),
        "artifacts written for a run without differences"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn random_traces_seed_1() {
    random(1, 500);
}

#[test]
fn random_traces_seed_2() {
    random(2, 100);
}

/// Every operation line ends in `# HOST`: what Linux (x86-64, no protection keys) returns,
/// checked by hand. Three files, fixed mmaps of all of them and of anonymous memory, loads and
/// stores, a SIGSEGV (read-only, unmapped), SIGBUS beyond EOF and after a truncate, a write
/// and a read cut short by an unmapped buffer page, a write that faults at once (EFAULT),
/// mprotect, mremap (moving, growing in place), pageout, munmap and exit.
const HAND_WRITTEN: &str = "\
mmtrace 1
config frames=65536
file 0 size=0x3000
file 1 size=0x1800
file 2 size=0x2000
task 0 mm=0 cpu=0
task 1 mm=0 cpu=1
0: mmap addr=0x100000 len=0x3000 prot=rw flags=shared,fixed file=0 off=0   # 0x100000
0: mmap addr=0x110000 len=0x2000 prot=r flags=private,fixed file=1 off=0   # 0x110000
0: mmap addr=0x120000 len=0x2000 prot=rw flags=private,fixed file=2 off=0x1000   # 0x120000
0: mmap addr=0x130000 len=0x2000 prot=rw flags=private,fixed   # 0x130000
0: load addr=0x100010   # 17
1: load addr=0x110000   # 18
0: load addr=0x120000   # 115
0: store addr=0x100010 value=200   # ok
1: load addr=0x100010   # 200
1: store addr=0x110000 value=1   # SIGSEGV
0: load addr=0x121000   # SIGBUS
0: load addr=0x140000   # SIGSEGV
0: store addr=0x130000 value=42   # ok
0: truncate file=0 size=0x1000   # 0
0: load addr=0x101000   # SIGBUS
0: store addr=0x102000 value=1   # SIGBUS
0: load addr=0x100fff   # 80
0: write file=1 off=0 len=0x3000 buf=0x131000   # 4096
1: load addr=0x110000   # 0
0: read file=0 off=0 len=0x1000 buf=0x131800   # 2048
0: load addr=0x131800   # 1
0: write file=2 off=0 len=0x10 buf=0x140000   # EFAULT
0: mprotect addr=0x130000 len=0x1000 prot=r   # 0
0: store addr=0x130000 value=1   # SIGSEGV
0: load addr=0x130000   # 42
0: mremap addr=0x130000 old=0x1000 new=0x1000 flags=maymove,fixed to=0x150000   # 0x150000
0: load addr=0x150000   # 42
0: load addr=0x130000   # SIGSEGV
0: mremap addr=0x150000 old=0x1000 new=0x3000   # 0x150000
0: load addr=0x152000   # 0
0: pageout addr=0x100000 len=0x1000   # 0
0: pageout addr=0x150000 len=0x3000   # 0
0: load addr=0x100010   # 200
0: load addr=0x150000   # 42
0: munmap addr=0x100000 len=0x60000   # 0
0: load addr=0x150000   # SIGSEGV
1: exit   # ok
0: exit   # ok
";

/// Three processes, two of them made by `fork`, and a process of its own from the start
/// (every line ends in `# HOST`, what Linux gives, checked by hand): after a fork the child
/// sees the parent's anonymous and privately copied pages and each side's stores are its own
/// (copy on write), a shared mapping stays shared, another process's private mapping of the
/// file sees the file, an munmap in the child leaves the parent's mapping, a truncate by the
/// parent cuts the child's uncopied file page (SIGBUS) but not its copy, and a grandchild
/// forked after its grandparent exited gets its own copy again.
const HAND_WRITTEN_FORK: &str = "\
mmtrace 1
config frames=65536
file 0 size=0x2000
task 0 mm=0 cpu=0
task 1 mm=1 cpu=1
0: mmap addr=0x100000 len=0x2000 prot=rw flags=shared,fixed file=0 off=0   # 0x100000
0: mmap addr=0x110000 len=0x2000 prot=rw flags=private,fixed   # 0x110000
0: mmap addr=0x120000 len=0x2000 prot=rw flags=private,fixed file=0 off=0   # 0x120000
0: store addr=0x110000 value=7   # ok
0: store addr=0x120000 value=9   # ok
1: mmap addr=0x110000 len=0x1000 prot=r flags=private,fixed file=0 off=0   # 0x110000
0: fork task=2   # ok
2: load addr=0x110000   # 7
2: store addr=0x110000 value=8   # ok
0: load addr=0x110000   # 7
2: load addr=0x120000   # 9
2: store addr=0x100001 value=5   # ok
0: load addr=0x100001   # 5
1: load addr=0x110001   # 5
0: store addr=0x120000 value=3   # ok
2: load addr=0x120000   # 9
2: munmap addr=0x110000 len=0x1000   # 0
0: load addr=0x110000   # 7
2: load addr=0x110000   # SIGSEGV
0: truncate file=0 size=0x1000   # 0
2: load addr=0x121000   # SIGBUS
2: load addr=0x120000   # 9
1: load addr=0x110001   # 5
0: exit   # ok
2: fork task=3   # ok
3: load addr=0x120000   # 9
3: store addr=0x120000 value=4   # ok
2: load addr=0x120000   # 9
3: exit   # ok
2: exit   # ok
1: exit   # ok
";

/// Runs a trace whose every operation line ends in `# HOST` (`ops` of them): the host gives
/// exactly those results, and the reference agrees on every one.
fn check_hand_written(name: &str, text: &str, ops: usize) {
    let dir = scratch(name);
    let path = dir.join(format!("{name}.trace"));
    std::fs::write(&path, text).expect("write the trace");
    let expected: Vec<&str> = text
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(t, _)| t.parse::<u32>().is_ok()))
        .map(|l| l.rsplit_once('#').expect("an expected host result").1.trim())
        .collect();
    assert_eq!(expected.len(), ops);

    let (status, stdout, stderr) = conform(&dir, &[path.to_str().expect("a UTF-8 path")]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() > expected.len(), "too few lines:\n{stdout}\n{stderr}");
    // The host's own results, whatever the reference says.
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        assert!(
            line.ends_with(&format!(" | {want}")),
            "operation {i}: the host should give {want}: `{line}`"
        );
    }
    // And the reference agrees on every one.
    let differing: Vec<&&str> = lines.iter().filter(|l| l.starts_with(" ! ")).collect();
    assert!(differing.is_empty(), "differences:\n{stdout}\n{stderr}");
    let summary = format!("conform: {}: {ops} operations, 0 differences", path.display());
    assert!(lines.contains(&summary.as_str()), "no `{summary}` in:\n{stdout}");
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hand_written_trace() {
    check_hand_written("hand", HAND_WRITTEN, 38);
}

#[test]
fn hand_written_fork_trace() {
    check_hand_written("hand-fork", HAND_WRITTEN_FORK, 31);
}

/// Found by `conform --random 60000 --seed 2212` (minimized by hand): the host does not run
/// a write whose buffer maps the bytes it writes (the copy order is not comparable), and
/// used to go on as if such a write had changed nothing when the reference's result was
/// EFAULT. But 6.18's write_end grows the file to the write's position even when nothing
/// was copied (here to 0xfde), so the last write, whose source maps page 0 of the file,
/// copied 3,395 bytes in the reference and faulted on the host (the file still empty
/// there). The host must stop following the trace at such a write instead.
const EFAULT_GROWS: &str = "\
mmtrace 1
file 0 size=0xb95b
task 0 mm=0 cpu=1
task 1 mm=0 cpu=0
1: truncate file=0 size=0
0: mmap addr=0x177000 len=0x1000 prot=r flags=shared,fixed file=0 off=0
0: mmap addr=0x150000 len=0x2000 prot=rw flags=private,fixed file=0 off=0
1: mmap addr=0x150000 len=0x1000 prot=wx flags=shared,fixed,populate file=0 off=0x1000
1: write file=0 off=0xfde len=0xe49 buf=0x1509a5
1: write file=0 off=0 len=0x2000 buf=0x1772bd
";

#[test]
fn an_uncompared_write_that_faults_stops_the_host() {
    let dir = scratch("efault-grows");
    let path = dir.join("efault-grows.trace");
    std::fs::write(&path, EFAULT_GROWS).expect("write the trace");
    let (status, stdout, stderr) = conform(&dir, &[path.to_str().expect("a UTF-8 path")]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(" ~ 1: write file=0 off=0xfde")
            && l.contains("EFAULT | -")
            && l.contains("the copy overwrites")),
        "the aliased write should not be compared:\n{stdout}\n{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(" ~ 1: write file=0 off=0 ")
            && l.contains("3395 | -")
            && l.contains("the host stopped following")),
        "the host should stop following after it:\n{stdout}\n{stderr}"
    );
    let summary = format!(
        "conform: {}: 6 operations, 0 differences, 2 not comparable",
        path.display()
    );
    assert!(lines.contains(&summary.as_str()), "no `{summary}` in:\n{stdout}");
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_traces_are_refused() {
    let dir = scratch("unsupported");
    let cases = [
        (
            "schedule",
            "task 0 mm=0 cpu=0\ntask 1 mm=0 cpu=1\n0: exit\n1: exit\nschedule 1 0\n",
            "schedule",
        ),
        ("huge", "file 0 size=0x8000 huge\ntask 0 mm=0 cpu=0\n0: exit\n", "huge"),
        ("ptrs", "config ptrs=512\ntask 0 mm=0 cpu=0\n0: exit\n", "ptrs=512"),
    ];
    for (name, body, reason) in cases {
        let path = dir.join(format!("{name}.trace"));
        std::fs::write(&path, format!("mmtrace 1\n{body}")).expect("write the trace");
        let (status, stdout, stderr) = conform(&dir, &[path.to_str().expect("a UTF-8 path")]);
        assert_eq!(status, 2, "{name}: {stdout}\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(": not supported: "))
            .unwrap_or_default();
        assert!(
            line.starts_with(&format!("conform: {}: not supported: ", path.display())) && line.contains(reason),
            "{name}: the refusal should name `{reason}`:\n{stderr}"
        );
        assert!(
            !stdout.lines().any(|l| l.contains(" -> ")),
            "{name}: an unsupported trace was run:\n{stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
