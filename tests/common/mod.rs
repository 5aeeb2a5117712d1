//! What the command-line tests share: running the `mmfuzz` binary.

use std::process::Command;

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
