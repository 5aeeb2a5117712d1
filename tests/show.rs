//! `mmfuzz show` as a user runs it: every corpus trace (each regression and each seed) drawn
//! as an SVG that is well-formed XML and names each task, each CPU and the oracle; the HTML
//! page around the same picture; the same picture for the same trace; a fuzzing crash drawn
//! beside its minimized trace, with the oracles it was found with; the kmaps of the kmap
//! regressions drawn with what their violation involves; and an invalid trace (or output, or
//! `--without`) rejected like `replay` rejects it.

mod common;

use common::mmfuzz;
use mm_reference::Outcome;
use mm_targets::exec::run_trace;
use mm_targets::trace::{parse, Trace};
use std::path::{Path, PathBuf};

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmfuzz-show-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file of the corpus (`corpus/REL`).
fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(rel)
}

fn traces(dir: &str) -> Vec<PathBuf> {
    let root = corpus(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "trace"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no traces under {}", root.display());
    files
}

/// Draws `trace` into `out` with `mmfuzz show`.
fn show(trace: &Path, out: &Path) -> String {
    let (code, stdout, stderr) = mmfuzz(&["show", trace.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: stderr {stderr}", trace.display());
    assert!(stdout.contains("wrote"), "{stdout}");
    std::fs::read_to_string(out).unwrap()
}

/// Every text of the SVG document, one string per `<text>` and `<title>`.
fn texts(svg: &str, path: &Path) -> Vec<String> {
    let doc =
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{}: not well-formed XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    for attr in ["width", "height", "viewBox"] {
        assert!(root.attribute(attr).is_some(), "{}: no {attr}", path.display());
    }
    root.descendants()
        .filter(|n| n.is_element() && matches!(n.tag_name().name(), "text" | "title"))
        .map(|n| {
            n.descendants()
                .filter(|t| t.is_text())
                .filter_map(|t| t.text())
                .collect::<String>()
        })
        .collect()
}

/// The tasks a trace has (its own and those its forks create).
fn task_count(t: &Trace) -> usize {
    t.tasks.len()
        + t.ops
            .iter()
            .filter(|c| matches!(c.op, mm_reference::Op::Fork { .. }))
            .count()
}

fn check_picture(path: &Path, out: &Path) {
    let trace = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let svg = show(path, out);
    let texts = texts(&svg, path);
    let labels: Vec<&str> = texts.iter().map(String::as_str).collect();
    for t in 0..task_count(&trace) {
        let name = format!("task {t}");
        assert!(
            labels.contains(&name.as_str()),
            "{}: no lane label {name}",
            path.display()
        );
    }
    for c in 0..trace.config.cpus {
        let name = format!("CPU {c}");
        assert!(
            labels.contains(&name.as_str()),
            "{}: no lane label {name}",
            path.display()
        );
    }
    let report = run_trace(&trace, &mm_reference::RunOptions::ALL);
    match report.outcome {
        Outcome::Violation(v) => {
            let headline = format!("violation {}", v.oracle);
            assert!(
                labels.contains(&headline.as_str()),
                "{}: no {headline:?}",
                path.display()
            );
            let marker = format!("✗ {}", v.oracle);
            assert!(
                labels.contains(&marker.as_str()),
                "{}: no violation marker",
                path.display()
            );
            assert!(
                texts.iter().any(|t| t.contains(&v.message)),
                "{}: the message is not in the picture",
                path.display()
            );
        }
        Outcome::Ok => assert!(labels.contains(&"outcome: ok"), "{}", path.display()),
    }
}

#[test]
fn every_regression_is_drawn_with_its_tasks_cpus_and_oracle() {
    let dir = out_dir();
    for path in traces("regressions") {
        check_picture(&path, &dir.join("regression.svg"));
    }
}

#[test]
fn every_seed_is_drawn_with_its_tasks_and_cpus() {
    let dir = out_dir();
    for path in traces("seeds") {
        check_picture(&path, &dir.join("seed.svg"));
    }
}

#[test]
fn a_deadlock_draws_its_cycle() {
    let path = corpus("regressions/write-fault-under-page-lock-mmap-lock.trace");
    let svg = show(&path, &out_dir().join("cycle.svg"));
    let texts = texts(&svg, &path);
    // One arrow per edge of the cycle 0 -> 1 -> 2 -> 0, each labelled and explained.
    for edge in ["0→1", "1→2", "2→0"] {
        assert!(texts.iter().any(|t| t == edge), "no cycle arrow {edge}");
    }
    assert!(texts
        .iter()
        .any(|t| t == "task 1 waits for mmap_lock of mm 0 held by task 2"));
    assert!(texts
        .iter()
        .any(|t| t == "task 0 waits for mmap_lock of mm 0 queued behind task 1"));
    assert!(svg.contains("url(#arrow-red)"));
}

/// The texts of the picture of regression `name`.
fn regression_texts(name: &str) -> Vec<String> {
    let path = corpus(&format!("regressions/{name}.trace"));
    let svg = show(&path, &out_dir().join(format!("{name}.svg")));
    texts(&svg, &path)
}

fn has(texts: &[String], want: &str, what: &str) {
    assert!(texts.iter().any(|t| t == want), "{what}: no {want:?} in {texts:#?}");
}

#[test]
fn the_kmap_regressions_draw_their_kmaps_and_what_the_violation_involves() {
    // The interrupt handler's remap of the slot task 0's write holds, named at the right.
    let t = regression_texts("kmap-atomic-irq-slot");
    has(&t, "kmap_atomic depth 0", "irq-slot");
    has(
        &t,
        "the interrupt handler on CPU 0 before step 8 remaps the slot of depth 0: task 0's kmap_atomic of frame 130 reaches frame 131 from then on",
        "irq-slot",
    );
    has(&t, "t0 kmap_atomic f130 → irq's f131", "irq-slot");
    // Both entries of the copy: the source never popped, the destination popped first.
    let t = regression_texts("kmap-atomic-unordered");
    has(&t, "kmap_atomic depth 1", "unordered");
    has(&t, "t0 kmap_atomic f129, held", "unordered");
    has(&t, "t0 kmap_atomic f130, popped", "unordered");
    // Each task holds one slot of two and sleeps for another: arrows to both slots.
    let t = regression_texts("kmap-nested");
    for label in ["kmap pool", "pkmap slot 0", "pkmap slot 1", "sleeps"] {
        has(&t, label, "nested");
    }
    has(&t, "task 0 holds kmap of f132", "nested");
    has(&t, "task 1 holds kmap of f129", "nested");
    has(&t, "task 0 sleeps for kmap of f133", "nested");
    has(&t, "task 1 sleeps for kmap of f130", "nested");
    has(
        &t,
        "task 0 sleeps for a pkmap slot: slot 1 is held by task 1 (frame 129)",
        "nested",
    );
    has(
        &t,
        "task 1 sleeps for a pkmap slot: slot 0 is held by task 0 (frame 132)",
        "nested",
    );
    // The fault's own kmap of its pte page holds the only slot its reclaim needs.
    let t = regression_texts("highpte-kmap-over-alloc");
    has(&t, "task 0 holds kmap of f8", "highpte");
    has(&t, "task 0 sleeps for kmap of f9", "highpte");
    has(
        &t,
        "task 0 sleeps for a pkmap slot: slot 0 is held by task 0 (frame 8)",
        "highpte",
    );
}

#[test]
fn the_picture_repeats_and_the_html_page_holds_it_with_the_event_log() {
    let path = corpus("regressions/write-fault-under-page-lock-same-page.trace");
    let dir = out_dir();
    let html = show(&path, &dir.join("page.html"));
    let svg = show(&path, &dir.join("page.svg"));
    assert_eq!(
        show(&path, &dir.join("again.svg")),
        svg,
        "the same trace gives the same picture"
    );
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&svg), "the page embeds the SVG as drawn");
    assert!(
        !html.replace("http://www.w3.org/2000/svg", "").contains("://"),
        "the page loads nothing from outside"
    );
    let (_, log, _) = mmfuzz(&["replay", "--events", path.to_str().unwrap()]);
    let first = log.lines().find(|l| l.starts_with("step 1:")).expect("a step");
    assert!(html.contains(first), "the page has the event log");
}

#[test]
fn an_invalid_trace_is_rejected_with_its_line() {
    let dir = out_dir();
    let bad = dir.join("bad.trace");
    std::fs::write(&bad, "mmtrace 1\ntask 0 mm=0 cpu=0\n0: mmapp addr=0x1000\n").unwrap();
    let out = dir.join("bad.svg");
    let (code, stdout, stderr) = mmfuzz(&["show", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("error: line 3: "), "{stderr}");
    assert!(!out.exists(), "nothing is written for an invalid trace");
    let good = corpus("seeds/shared-file.trace");
    let (code, _, stderr) = mmfuzz(&[
        "show",
        good.to_str().unwrap(),
        "-o",
        dir.join("x.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains(".svg or .html"), "{stderr}");
    let out = dir.join("y.svg");
    let (code, _, stderr) = mmfuzz(&[
        "show",
        good.to_str().unwrap(),
        "--without",
        "deadlock",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be switched off"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn a_fuzzing_crash_gets_its_picture_beside_it() {
    let dir = out_dir().join("fuzz");
    let (code, stdout, stderr) = mmfuzz(&[
        "fuzz",
        "--bugs",
        "write-fault-under-page-lock",
        "--without",
        "lock-order",
        "--seed",
        "3",
        "--runs",
        "5000",
        "--artifacts",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout {stdout} stderr {stderr}");
    let min = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".min.trace"))
        .expect("a minimized crash");
    let svg_path = PathBuf::from(min.to_string_lossy().replace(".min.trace", ".min.svg"));
    assert!(stdout.contains(&format!("picture: {}", svg_path.display())), "{stdout}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let texts = texts(&svg, &svg_path);
    assert!(
        texts.iter().any(|t| t == "violation deadlock"),
        "the picture names the oracle"
    );
    // It is the picture of the minimized trace, as `show` draws it with the fuzz run's
    // oracles.
    let again = dir.join("again.svg");
    let (code, _, stderr) = mmfuzz(&[
        "show",
        min.to_str().unwrap(),
        "--without",
        "lock-order",
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&again).unwrap(), svg);
    // The replay command printed for it switches off what the run switched off, and replays
    // to the violation found.
    assert!(
        stdout.contains(&format!("replay: mmfuzz replay --without lock-order {}", min.display())),
        "{stdout}"
    );
    let (code, out, stderr) = mmfuzz(&["replay", "--without", "lock-order", min.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(out.contains("outcome: violation deadlock"), "{out}");
    // `mmfuzz minimize` with the same list keeps the deadlock, and prints the replay command
    // with it.
    let again = dir.join("again.min.trace");
    let (code, out, stderr) = mmfuzz(&[
        "minimize",
        "--without",
        "lock-order",
        min.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("violation deadlock kept"), "{out}");
    assert!(
        out.contains(&format!(
            "replay: mmfuzz replay --without lock-order {}",
            again.display()
        )),
        "{out}"
    );
}
