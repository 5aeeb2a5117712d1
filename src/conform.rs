//! `mmfuzz conform`: runs traces on this machine's own Linux kernel and compares every result
//! with the reference's.
//!
//! What it keeps true:
//! - Only traces the host can reproduce are run: one operation at a time in file order, as
//!   the reference runs them without a schedule (the tasks of an address space are threads
//!   of one host process, each address space a process of its own, `fork` a real fork: see
//!   [`host`]), no `schedule`, no `huge` file, a user space that fits the host window, files
//!   small enough to fill. Anything else is refused up front with
//!   `conform: FILE: not supported: REASON` and exit status 2; nothing is half-run.
//! - The reference runs first, in this process; the host runs each trace in a fresh child
//!   process (see [`host`]), so traces cannot disturb each other or the CLI.
//! - Every operation gets one line, `T: op ... -> REF | HOST`, prefixed `   ` when the results
//!   are equal, ` ! ` when they differ and ` ~ ` when they cannot be compared by design (the
//!   reason is shown, see [`host::Note`]); only ` ! ` lines count as differences. An
//!   operation the reference did not complete (its run ended in a violation) is a difference.
//!   A host runner that dies, or a reference that panics, is a difference too.
//! - Exit status: 2 if any input was bad or unsupported, else 1 if any trace had a
//!   difference, else 0.
//!
//! Not comparable by design (` ~ `, never a difference): where a non-fixed mmap or a moving
//! mremap puts its mapping (TRACE.md's deviation; whether an mremap moved is compared, and
//! the host's mapping is then moved to the reference's address); an `ENOMEM` of the
//! reference where the host found room (its user space is `TASK_SIZE`, the host's is not);
//! an operation reaching outside `[0x10000, TASK_SIZE)`; a user access that is `OOM` in the
//! reference; a read of an execute-only mapping when the host CPU has protection keys; a
//! write or read whose buffer maps file bytes it overwrites less than a page before reading
//! them (x86 copies those in chunks of the CPU's choosing); and everything after an operation
//! the host could not follow.
//!
//! `--random N --seed S` checks N traces from `mm_targets::gen::generate` with
//! `GenOptions::conform()`; trace I is generated from `ChaCha8Rng::seed_from_u64(S)` with its
//! stream set to I, so any one of them can be regenerated alone. Each trace with a difference
//! is printed and written to `artifacts/conform-S-I.trace`.

mod host;

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use host::{Note, Observed, Record};
use mm_reference::{OpResult, Outcome, RunOptions};
use mm_targets::trace::{print_op, Trace};
use rand::SeedableRng;

/// The largest total size of a trace's files the host fills in (each byte is written).
const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(clap::Args)]
#[command(after_help = "\
Each operation prints `T: op ... -> REFERENCE | HOST`, marked ` ! ` when the two differ and ` ~ ` when \
they cannot be compared by design (the reason follows).

Supported: traces without a schedule (operations run one at a time in file order; each address \
space is a host process, fork is fork(2)), no huge files, ptrs <= 128. Others are refused: `conform: FILE: not supported: REASON`.

Exit status: 0 no difference, 1 a difference, 2 a bad or unsupported trace.")]
pub struct Args {
    /// Trace files to run on the host and the reference.
    pub files: Vec<PathBuf>,
    /// Also generate and check N random conformance traces.
    #[arg(long, value_name = "N")]
    pub random: Option<u64>,
    /// The seed of `--random`.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Print only differences and summaries.
    #[arg(long)]
    pub quiet: bool,
}

/// Exit statuses, in increasing order of precedence.
const OK: u8 = 0;
const DIFFERENT: u8 = 1;
const BAD_INPUT: u8 = 2;

pub fn main(args: &Args) -> u8 {
    if args.files.is_empty() && args.random.is_none() {
        eprintln!("error: conform: give trace files, or --random N");
        return BAD_INPUT;
    }
    let mut status = OK;
    let mut traces = 0u64;
    let mut differing = 0u64;
    for path in &args.files {
        let trace = match crate::read_trace(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                status = status.max(BAD_INPUT);
                continue;
            }
        };
        traces += 1;
        let label = path.display().to_string();
        match check(&trace) {
            Err(reason) => {
                eprintln!("conform: {label}: not supported: {reason}");
                status = status.max(BAD_INPUT);
            }
            Ok(report) => {
                print!("{}", report.render(&label, args.quiet));
                if report.differences > 0 {
                    differing += 1;
                    status = status.max(DIFFERENT);
                }
            }
        }
    }
    if let Some(n) = args.random {
        for i in 0..n {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            rng.set_stream(i);
            let trace = mm_targets::gen::generate(&mut rng, &mm_targets::gen::GenOptions::conform());
            traces += 1;
            let result = check(&trace);
            if matches!(&result, Ok(r) if r.differences == 0) {
                continue;
            }
            let artifact = PathBuf::from(format!("artifacts/conform-{}-{i}.trace", args.seed));
            let label = match save(&artifact, &trace) {
                Ok(()) => artifact.display().to_string(),
                Err(e) => {
                    eprintln!("conform: cannot write {}: {e}", artifact.display());
                    format!("random trace {i} of seed {}", args.seed)
                }
            };
            match result {
                Err(reason) => {
                    eprintln!("conform: {label}: not supported: {reason}");
                    status = status.max(BAD_INPUT);
                }
                Ok(report) => {
                    print!("{}", report.render(&label, args.quiet));
                    differing += 1;
                    status = status.max(DIFFERENT);
                }
            }
        }
    }
    if args.random.is_some() || traces > 1 {
        println!("conform: {traces} traces, {differing} with differences");
    }
    status
}

fn save(path: &Path, trace: &Trace) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, trace.to_string())
}

/// Why `conform` cannot run `trace` on the host, if it cannot.
fn unsupported(trace: &Trace) -> Option<String> {
    if !trace.schedule.is_empty() {
        return Some("a schedule (the host runs operations one at a time in file order)".into());
    }
    if let Some(f) = trace.files.iter().position(|f| f.huge) {
        return Some(format!("file {f} is a huge (hugetlbfs) file"));
    }
    let task_size = trace.config.task_size();
    if task_size > host::MAX_TASK_SIZE {
        return Some(format!(
            "ptrs={} gives a user space of {task_size:#x} bytes, more than the host window's {:#x}",
            trace.config.ptrs,
            host::MAX_TASK_SIZE
        ));
    }
    let file_bytes = trace.files.iter().fold(0u64, |s, f| s.saturating_add(f.size));
    if file_bytes > MAX_FILE_BYTES {
        return Some(format!(
            "the files hold {file_bytes:#x} bytes, more than the {MAX_FILE_BYTES:#x} the host fills in"
        ));
    }
    None
}

/// The comparison of one trace.
struct Report {
    /// One per operation, in file order.
    lines: Vec<Line>,
    differences: usize,
    not_comparable: usize,
    /// Anything about the run as a whole that is itself a difference.
    failures: Vec<String>,
    /// The reference's violation, if its run ended in one.
    violation: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Same,
    Differ,
    NotComparable,
}

struct Line {
    verdict: Verdict,
    text: String,
}

impl Report {
    fn render(&self, label: &str, quiet: bool) -> String {
        let mut out = String::new();
        for line in &self.lines {
            if !quiet || line.verdict == Verdict::Differ {
                let mark = match line.verdict {
                    Verdict::Same => "   ",
                    Verdict::Differ => " ! ",
                    Verdict::NotComparable => " ~ ",
                };
                let _ = writeln!(out, "{mark}{}", line.text);
            }
        }
        for f in &self.failures {
            let _ = writeln!(out, " ! {f}");
        }
        let _ = write!(
            out,
            "conform: {label}: {} operations, {} differences",
            self.lines.len(),
            self.differences
        );
        if self.not_comparable > 0 {
            let _ = write!(out, ", {} not comparable", self.not_comparable);
        }
        if let Some(v) = &self.violation {
            let _ = write!(out, "; reference outcome: violation {v}");
        }
        out.push('\n');
        out
    }
}

/// Runs `trace` on the reference and on the host and compares them; `Err` says why the trace
/// is not supported.
fn check(trace: &Trace) -> Result<Report, String> {
    if let Some(reason) = unsupported(trace) {
        return Err(reason);
    }
    let mut failures = Vec::new();
    let mut reference: Vec<Option<OpResult>> = vec![None; trace.ops.len()];
    let mut violation = None;
    let run = catch_unwind(AssertUnwindSafe(|| {
        mm_reference::run(
            &trace.config,
            &trace.files,
            &trace.tasks,
            &trace.ops,
            &trace.schedule,
            &RunOptions::default(),
        )
    }));
    match run {
        Ok(report) => {
            for (i, r) in report.completed {
                if let Some(slot) = reference.get_mut(i) {
                    *slot = Some(r);
                }
            }
            if let Outcome::Violation(v) = report.outcome {
                violation = Some(v.to_string());
            }
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            failures.push(format!("the reference panicked: {msg}"));
        }
    }

    let host = host::run(trace, &reference);
    if let Some(f) = host.failure {
        failures.push(f);
    }
    let mut report = Report {
        lines: Vec::new(),
        differences: 0,
        not_comparable: 0,
        failures,
        violation,
    };
    for (i, call) in trace.ops.iter().enumerate() {
        let (verdict, text) = compare(reference[i], host.records[i]);
        match verdict {
            Verdict::Same => {}
            Verdict::Differ => report.differences += 1,
            Verdict::NotComparable => report.not_comparable += 1,
        }
        report.lines.push(Line {
            verdict,
            text: format!("{} {text}", print_op(call)),
        });
    }
    // A whole-run failure with no operation line marked is still a difference.
    if !report.failures.is_empty() && report.differences == 0 {
        report.differences = report.failures.len();
    }
    Ok(report)
}

/// The verdict on one operation and its `-> REF | HOST ...` text.
fn compare(reference: Option<OpResult>, host: Option<Record>) -> (Verdict, String) {
    let ref_text = match reference {
        Some(r) => r.to_string(),
        None => "(not completed)".to_string(),
    };
    let Some(rec) = host else {
        return (
            Verdict::Differ,
            format!("-> {ref_text} | (the host runner never reported it)"),
        );
    };
    let host_text = match rec.observed {
        Observed::Foreign(_) => format!("{} (outside the window)", rec.observed),
        o => o.to_string(),
    };
    let text = format!("-> {ref_text} | {host_text}");
    let not_comparable = |why: &str| (Verdict::NotComparable, format!("{text}  (not comparable: {why})"));
    match rec.note {
        Note::Plain => {
            let same = matches!((reference, rec.observed), (Some(r), Observed::Result(h)) if r == h);
            (if same { Verdict::Same } else { Verdict::Differ }, text)
        }
        Note::Outside => not_comparable("outside the window"),
        Note::Placement => not_comparable("placement; the host's mapping was moved to the reference's address"),
        Note::NoRoom => not_comparable("the reference's address space is smaller; the host's mapping was undone"),
        Note::RefOom => not_comparable("the reference ran out of page frames"),
        Note::ExecOnly => not_comparable("an execute-only mapping under protection keys"),
        Note::Aliased => not_comparable("the buffer maps file bytes the copy overwrites before it reads them"),
        Note::Stopped => not_comparable("the host stopped following the trace earlier"),
        Note::Unsupported => not_comparable("not supported"),
        Note::RelocateFailed => (
            Verdict::Differ,
            format!("{text}  (the host could not move its mapping to the reference's address; the host stops here)"),
        ),
    }
}
