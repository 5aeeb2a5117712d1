//! Writes `$OUT_DIR/functions.rs`: for every source file of the crate, the line of each `fn`
//! and its name. The event log (`src/events.rs`) turns the caller location of a hook
//! (`#[track_caller]`) into the name of the kernel function it stands in with this table, so
//! the log says `generic_perform_write`, not `kernel/rw.rs:67`, and a function added anywhere
//! under `src/` is known without a list to keep.
//!
//! What it keeps true: the table is a pure function of the sources (files sorted by path,
//! lines in order), so the same sources give the same names.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The name of the function a line declares, if it declares one (`pub(crate) async fn name(`).
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
            "extern \"C\" ",
        ] {
            if let Some(r) = rest.strip_prefix(prefix) {
                rest = r;
            }
        }
        if rest == before {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

fn main() {
    let src = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("src");
    println!("cargo:rerun-if-changed=src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every source file under `src/` (path with `/`), with the line and name of each `fn` it declares, in order.\n\
         pub(crate) static FUNCTIONS: &[(&str, &[(u32, &str)])] = &[\n",
    );
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let rel = file.strip_prefix(&src).expect("under src/");
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let _ = write!(out, "    ({:?}, &[", rel.join("/"));
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = declared_fn(line) {
                let _ = write!(out, "({}, {:?}), ", i + 1, name);
            }
        }
        out.push_str("]),\n");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("functions.rs");
    std::fs::write(dest, out).expect("write functions.rs");
}
