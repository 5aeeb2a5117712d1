//! What the integration tests share: running the `mmfuzz` binary, and running a trace with
//! a configuration switch off and on. (Each test crate uses some of it.)
#![allow(dead_code)]

use mm_reference::{Config, RunOptions, RunReport};
use mm_targets::exec::run_trace;
use mm_targets::trace::Trace;
use std::process::Command;

/// `trace` run with every oracle, first with `switch(config, false)`, then with
/// `switch(config, true)`: the two reports, and the trace with the switch on.
pub fn off_and_on(trace: &Trace, switch: fn(&mut Config, bool)) -> (RunReport, RunReport, Trace) {
    let mut off = trace.clone();
    switch(&mut off.config, false);
    let mut on = trace.clone();
    switch(&mut on.config, true);
    let a = run_trace(&off, &RunOptions::default());
    let b = run_trace(&on, &RunOptions::default());
    (a, b, on)
}

/// Runs `mmfuzz ARGS`: (exit status, standard output, standard error).
pub fn mmfuzz(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmfuzz"))
        .args(args)
        .output()
        .expect("run mmfuzz");
    (
        out.status.code().expect("exit status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
