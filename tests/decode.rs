//! Crash decoding: for random byte strings, the trace `decode` gives (and `mmfuzz decode`
//! prints) replays to the outcome the fuzz target saw when it ran the same bytes: rejected,
//! `ok`, or a panic whose first line is the replay's outcome line. `mmfuzz replay` of the raw
//! bytes gives the same output as `mmfuzz replay` of the decoded trace.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;

use mm_reference::{Bug, BugSet, Outcome, RunOptions};
use mm_targets::exec::{outcome_line, replay_text, run_trace};
use mm_targets::targets::{self, Target, Verdict};
use mm_targets::trace::parse;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What running a target on some bytes gave.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Reject,
    Ok,
    /// The first line of the panic message.
    Panic(String),
}

fn run_target(target: Target, data: &[u8], bugs: Option<BugSet>) -> Seen {
    let result = catch_unwind(AssertUnwindSafe(|| match bugs {
        None => targets::run(target, data),
        Some(b) => targets::run_with(target, data, b),
    }));
    match result {
        Ok(Verdict::Reject) => Seen::Reject,
        Ok(Verdict::Keep) => Seen::Ok,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Seen::Panic(message.lines().next().unwrap_or("").to_string())
        }
    }
}

/// Decode, print, parse back and replay: what the decoded trace says.
fn replay_decoded(target: Target, data: &[u8], bugs: BugSet) -> Seen {
    let Some(trace) = targets::decode(target, data, bugs) else {
        return Seen::Reject;
    };
    let text = trace.to_string();
    let back = parse(&text).expect("a decoded trace parses");
    let report = run_trace(&back, &RunOptions::default());
    match report.outcome {
        Outcome::Ok => Seen::Ok,
        Outcome::Violation(_) => Seen::Panic(outcome_line(&report.outcome)),
    }
}

fn random_inputs(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = match rng.gen_range(0..4) {
                0 => rng.gen_range(0..32),
                _ => rng.gen_range(32..2500),
            };
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect()
}

#[test]
fn decode_then_replay_gives_the_targets_outcome() {
    let env_bugs = targets::bugs_from_env();
    let mut all = BugSet::NONE;
    for b in Bug::ALL {
        all.insert(b);
    }
    for target in Target::ALL {
        let mut seen_ok = 0;
        let mut seen_reject = 0;
        for data in random_inputs(target as u64 + 100, 120) {
            // As the engines run it: bugs from MMFUZZ_BUGS.
            let ran = run_target(target, &data, None);
            assert_eq!(ran, replay_decoded(target, &data, env_bugs), "{target}: {data:?}");
            match ran {
                Seen::Ok => seen_ok += 1,
                Seen::Reject => seen_reject += 1,
                Seen::Panic(_) => {}
            }
            // With every bug on (a violation there must decode to the same violation).
            let ran = run_target(target, &data, Some(all));
            assert_eq!(
                ran,
                replay_decoded(target, &data, all),
                "{target} with all bugs: {data:?}"
            );
        }
        assert!(seen_ok > 60, "{target}: only {seen_ok} inputs ran to ok");
        assert!(seen_reject > 0, "{target}: no input was rejected");
    }
}

// ---------------------------------------------------------------------------------------------
// The command line.

fn mmfuzz(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmfuzz"));
    cmd.args(args).env_remove("MMFUZZ_BUGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run mmfuzz");
    (
        out.status.code().expect("exit status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmfuzz-decode-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn mmfuzz_decode_and_replay_of_raw_inputs_agree() {
    let dir = temp_dir("agree");
    for target in Target::ALL {
        for (i, data) in random_inputs(target as u64 + 200, 4).iter().enumerate() {
            let Some(trace) = targets::decode(target, data, BugSet::NONE) else {
                continue;
            };
            let raw = dir.join(format!("crash-{target}-{i}"));
            std::fs::write(&raw, data).unwrap();
            let raw = raw.to_str().unwrap();

            let (code, text, err) = mmfuzz(&["decode", "--target", target.name(), raw], &[]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(parse(&text).as_ref(), Ok(&trace), "{target}: decode printed:\n{text}");
            let file = dir.join(format!("crash-{target}-{i}.trace"));
            std::fs::write(&file, &text).unwrap();

            let expected = replay_text(&trace, &run_trace(&trace, &RunOptions::default()));
            let (code, from_text, err) = mmfuzz(&["replay", file.to_str().unwrap()], &[]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(from_text, expected);
            let (code, from_raw, err) = mmfuzz(&["replay", "--target", target.name(), raw], &[]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(from_raw, expected, "{target}: replay of the raw input");
        }
    }
}

#[test]
fn mmfuzz_decode_takes_bugs_from_the_environment_or_the_flag() {
    let dir = temp_dir("bugs");
    let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
    let raw = dir.join("input");
    std::fs::write(&raw, &data).unwrap();
    let raw = raw.to_str().unwrap();

    let (code, text, err) = mmfuzz(&["decode", raw], &[("MMFUZZ_BUGS", "ptshare-rss")]);
    assert_eq!(code, 0, "{err}");
    let t = parse(&text).unwrap();
    assert_eq!(t.config.bugs.to_string(), "ptshare-rss");
    assert!(text.contains("bugs=ptshare-rss"), "{text}");

    let (code, text, _) = mmfuzz(&["decode", "--bugs", "none", raw], &[("MMFUZZ_BUGS", "ptshare-rss")]);
    assert_eq!(code, 0);
    assert_eq!(parse(&text).unwrap().config.bugs, BugSet::NONE);

    let (code, out, err) = mmfuzz(&["decode", raw], &[("MMFUZZ_BUGS", "no-such-bug")]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("no-such-bug") && err.contains("MMFUZZ_BUGS"), "{err}");
}

#[test]
fn mmfuzz_decode_rejects_bad_input_and_writes_files() {
    let dir = temp_dir("files");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let good = dir.join("good");
    std::fs::write(&good, (0..900u32).map(|i| (i * 31 + 5) as u8).collect::<Vec<u8>>()).unwrap();
    let (empty, good) = (empty.to_str().unwrap(), good.to_str().unwrap());

    // A rejected input: exit 2, nothing printed, not even for the good file.
    let (code, out, err) = mmfuzz(&["decode", good, empty], &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("rejects"), "{err}");
    let (code, _, err) = mmfuzz(&["replay", empty], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("rejects"), "{err}");

    // An unknown target.
    let (code, _, err) = mmfuzz(&["decode", "--target", "nope", good], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("nope") && err.contains("swarm"), "{err}");

    // --out writes NAME.trace.
    let out_dir = dir.join("out");
    let (code, out, err) = mmfuzz(
        &["decode", "--target", "swarm", "--out", out_dir.to_str().unwrap(), good],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let written = out_dir.join("good.trace");
    assert_eq!(out.trim(), written.to_str().unwrap());
    let text = std::fs::read_to_string(&written).unwrap();
    let want = targets::decode(Target::Swarm, &std::fs::read(good).unwrap(), BugSet::NONE).unwrap();
    assert_eq!(parse(&text), Ok(want));
}
