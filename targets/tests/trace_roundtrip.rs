//! Tests of the mmtrace parser and canonical printer against TRACE.md.
//!
//! What they keep true: every valid trace survives print -> parse unchanged, and so does any
//! other spelling of it TRACE.md allows; printing is canonical; parsing never panics and every
//! error names a line that exists; each malformed-trace rule fails at its exact line with a
//! precise message; TRACE.md's own examples parse.

use mm_reference::{Bug, BugSet, Call, Config, FileInit, MmapFlags, MremapFlags, Op, Prot, SchedToken, TaskInit};
use mm_targets::trace::{parse, print_op, ParseError, Trace};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Random valid traces.

fn bugs_from_mask(mask: u32) -> BugSet {
    let mut set = BugSet::NONE;
    for (i, bug) in Bug::ALL.into_iter().enumerate() {
        if mask >> i & 1 == 1 {
            set.insert(bug);
        }
    }
    set
}

/// Configs across TRACE.md's ranges, often keeping a key at its default.
fn config_strategy() -> impl Strategy<Value = Config> {
    let d = Config::default();
    (
        prop_oneof![Just(d.cpus), 1u32..=8],
        prop_oneof![Just(3u32), 2u32..=9],
        prop_oneof![Just(d.frames), 16u32..=300, 16u32..=65536],
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        prop_oneof![Just(d.pkmap), 1u32..=1024],
        prop_oneof![Just(d.atomic), 2u32..=64],
        prop_oneof![Just((true, true, true)), any::<(bool, bool, bool)>()],
        prop_oneof![Just(0u32), 0u32..(1 << Bug::ALL.len())],
        prop_oneof![Just(d.steps), 1u64..=10_000_000],
    )
        .prop_map(
            move |(cpus, ptrs_log, frames, highmem, pkmap, atomic, onoff, bugs, steps)| Config {
                cpus,
                ptrs: 1 << ptrs_log,
                frames,
                highmem: match highmem {
                    None => frames / 2,
                    Some(h) => h % (frames - 8 + 1),
                },
                pkmap,
                atomic,
                highpte: onoff.0,
                ptshare: onoff.1,
                hugeshare: onoff.2,
                bugs: bugs_from_mask(bugs),
                steps,
            },
        )
}

/// Byte quantities: zero, page multiples, small, and anything up to `u64::MAX`.
fn bytes() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (0u64..4096).prop_map(|p| p * 4096),
        (0u64..64).prop_map(|p| p * 1024 * 1024),
        0u64..0x0100_0000,
        any::<u64>(),
    ]
}

/// The raw material of one operation line, turned into a valid one by [`build`].
#[derive(Clone, Debug)]
struct RawOp {
    kind: u8,
    task: u32,
    nums: [u64; 4],
    prot: u8,
    bits: u8,
    small: u32,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    (
        0u8..12,
        any::<u32>(),
        [bytes(), bytes(), bytes(), bytes()],
        0u8..8,
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(|(kind, task, nums, prot, bits, small)| RawOp {
            kind,
            task,
            nums,
            prot,
            bits,
            small,
        })
}

type RawFile = (u64, bool, u64);
type RawTask = (u32, u32);

/// Builds a valid trace: file ops need a file, forks create the next id, no task gets an
/// operation after its exit, and no fork is lost (so every task id stays valid).
fn build(
    config: Config,
    raw_files: Vec<RawFile>,
    raw_tasks: Vec<RawTask>,
    raw_ops: Vec<RawOp>,
    raw_sched: Vec<(bool, u32)>,
) -> Trace {
    let files: Vec<FileInit> = raw_files
        .into_iter()
        .map(|(size, huge, pages)| FileInit {
            size: if huge {
                (pages % 64) * config.huge_page_size()
            } else {
                size
            },
            huge,
        })
        .collect();
    let tasks: Vec<TaskInit> = raw_tasks
        .into_iter()
        .map(|(mm, cpu)| TaskInit {
            mm: mm % 65536,
            cpu: cpu % config.cpus,
        })
        .collect();
    // Operations on files become loads when there is no file.
    let kinds: Vec<u8> = raw_ops
        .iter()
        .map(|r| {
            if files.is_empty() && (4..=6).contains(&r.kind) {
                7
            } else {
                r.kind
            }
        })
        .collect();
    let forks_after: Vec<usize> = (0..kinds.len())
        .map(|i| kinds[i + 1..].iter().filter(|k| **k == 10).count())
        .collect();
    let total = tasks.len() + kinds.iter().filter(|k| **k == 10).count();
    let mut exited = vec![false; total];
    let mut ops = Vec::new();
    let mut forks = 0u32;
    for (i, r) in raw_ops.iter().enumerate() {
        let live = exited.iter().filter(|e| !**e).count();
        if live == 0 {
            break; // no fork is left (see the exit rule below)
        }
        let mut task = r.task as usize % total;
        while exited[task] {
            task = (task + 1) % total;
        }
        let [a, b, c, d] = r.nums;
        let file = if files.is_empty() {
            0
        } else {
            r.small % files.len() as u32
        };
        let prot = Prot::from_bits(r.prot);
        let op = match kinds[i] {
            0 => Op::Mmap {
                addr: a,
                len: b,
                prot,
                flags: MmapFlags {
                    shared: r.bits & 1 != 0,
                    fixed: r.bits & 2 != 0,
                    noreplace: r.bits & 4 != 0,
                    populate: r.bits & 8 != 0,
                },
                file: (!files.is_empty() && r.bits & 16 != 0).then_some(file),
                off: if r.bits & 32 != 0 { c } else { 0 },
            },
            1 => Op::Munmap { addr: a, len: b },
            2 => Op::Mprotect { addr: a, len: b, prot },
            3 => {
                let flags = MremapFlags {
                    maymove: r.bits & 1 != 0,
                    fixed: r.bits & 2 != 0,
                };
                let to = (flags.fixed || r.bits & 4 != 0).then_some(d);
                Op::Mremap {
                    addr: a,
                    old: b,
                    new: c,
                    flags,
                    to,
                }
            }
            4 => Op::Write {
                file,
                off: a,
                len: b,
                buf: c,
            },
            5 => Op::Read {
                file,
                off: a,
                len: b,
                buf: c,
            },
            6 => Op::Truncate { file, size: a },
            7 => Op::Load { addr: a },
            8 => Op::Store {
                addr: a,
                value: r.small as u8,
            },
            9 => Op::Pageout { addr: a, len: b },
            10 => {
                let cpu = (r.bits & 1 != 0).then_some(r.small % config.cpus);
                let op = Op::Fork {
                    task: tasks.len() as u32 + forks,
                    cpu,
                };
                forks += 1;
                op
            }
            // The last live task exits only when no fork follows, so no fork is ever dropped.
            _ if live > 1 || forks_after[i] == 0 => {
                exited[task] = true;
                Op::Exit
            }
            _ => Op::Load { addr: a },
        };
        ops.push(Call { task: task as u32, op });
    }
    let task_count = tasks.len() as u32 + forks;
    let schedule = raw_sched
        .into_iter()
        .map(|(irq, n)| {
            if irq {
                SchedToken::Irq(n % config.cpus)
            } else {
                SchedToken::Task(n % task_count)
            }
        })
        .collect();
    Trace {
        config,
        files,
        tasks,
        ops,
        schedule,
    }
}

fn trace_strategy() -> impl Strategy<Value = Trace> {
    (
        config_strategy(),
        prop::collection::vec((bytes(), any::<bool>(), any::<u64>()), 0..4),
        prop::collection::vec((prop_oneof![0u32..4, any::<u32>()], any::<u32>()), 1..4),
        prop::collection::vec(raw_op(), 0..40),
        prop::collection::vec((any::<bool>(), any::<u32>()), 0..80),
    )
        .prop_map(|(config, files, tasks, ops, sched)| build(config, files, tasks, ops, sched))
}

// ---------------------------------------------------------------------------------------------
// Another spelling of a trace, as a person might write it: defaults spelled out, keys in any
// order, decimal or suffixed numbers, split config and schedule lines, comments, tabs.

/// splitmix64: a small deterministic generator for the respelling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn spell_plain(rng: &mut Rng, v: u64) -> String {
    match rng.below(3) {
        0 => format!("{v}"),
        1 => format!("{v:#x}"),
        _ => format!("0x{v:X}"),
    }
}

fn spell_bytes(rng: &mut Rng, v: u64) -> String {
    match rng.below(4) {
        0 if v.trailing_zeros() >= 20 => format!("{}m", spell_plain(rng, v / (1024 * 1024))),
        1 if v.trailing_zeros() >= 10 => format!("{}k", spell_plain(rng, v / 1024)),
        _ => spell_plain(rng, v),
    }
}

fn spell_prot(rng: &mut Rng, p: Prot) -> String {
    if p.is_none() {
        return "none".into();
    }
    let mut letters: Vec<char> = [(p.read(), 'r'), (p.write(), 'w'), (p.exec(), 'x')]
        .iter()
        .filter(|x| x.0)
        .map(|x| x.1)
        .collect();
    rng.shuffle(&mut letters);
    letters.into_iter().collect()
}

fn spell_list(rng: &mut Rng, mut names: Vec<&str>) -> String {
    rng.shuffle(&mut names);
    names.join(",")
}

fn sep(rng: &mut Rng) -> &'static str {
    [" ", "  ", "\t", " \t "][rng.below(4)]
}

fn spell_line(rng: &mut Rng, head: String, mut args: Vec<String>) -> String {
    rng.shuffle(&mut args);
    let mut line = head;
    for a in args {
        line.push_str(sep(rng));
        line.push_str(&a);
    }
    if rng.below(4) == 0 {
        line.push_str(" # a comment, with = and : and 0x1");
    }
    line
}

fn respell(t: &Trace, seed: u64) -> String {
    let rng = &mut Rng(seed);
    let c = &t.config;
    let d = Config::default();
    let mut out = Vec::new();
    if rng.coin() {
        out.push("# leading comment".to_string());
        out.push(String::new());
    }
    out.push(format!("mmtrace{}1", sep(rng)));
    let onoff = |b: bool| if b { "on" } else { "off" }.to_string();
    let bug_names: Vec<&str> = c.bugs.iter().map(|b| b.name()).collect();
    let mut pairs: Vec<(bool, String)> = vec![
        (c.cpus != d.cpus, format!("cpus={}", spell_plain(rng, c.cpus.into()))),
        (c.ptrs != d.ptrs, format!("ptrs={}", spell_plain(rng, c.ptrs.into()))),
        (
            c.frames != d.frames,
            format!("frames={}", spell_plain(rng, c.frames.into())),
        ),
        (
            c.highmem != c.frames / 2,
            format!("highmem={}", spell_plain(rng, c.highmem.into())),
        ),
        (
            c.pkmap != d.pkmap,
            format!("pkmap={}", spell_plain(rng, c.pkmap.into())),
        ),
        (
            c.atomic != d.atomic,
            format!("atomic={}", spell_plain(rng, c.atomic.into())),
        ),
        (c.highpte != d.highpte, format!("highpte={}", onoff(c.highpte))),
        (c.ptshare != d.ptshare, format!("ptshare={}", onoff(c.ptshare))),
        (c.hugeshare != d.hugeshare, format!("hugeshare={}", onoff(c.hugeshare))),
        (
            !c.bugs.is_empty(),
            if bug_names.is_empty() {
                "bugs=none".to_string()
            } else {
                format!("bugs={}", spell_list(rng, bug_names))
            },
        ),
        (c.steps != d.steps, format!("steps={}", spell_plain(rng, c.steps))),
    ];
    // Keys at their default may be spelled out or not.
    pairs.retain(|(needed, _)| *needed || rng.below(3) == 0);
    let mut pairs: Vec<String> = pairs.into_iter().map(|(_, p)| p).collect();
    rng.shuffle(&mut pairs);
    while !pairs.is_empty() {
        let n = 1 + rng.below(pairs.len());
        let rest = pairs.split_off(n);
        out.push(spell_line(rng, "config".into(), pairs));
        pairs = rest;
    }
    for (i, f) in t.files.iter().enumerate() {
        let mut args = vec![format!("size={}", spell_bytes(rng, f.size))];
        if f.huge {
            args.push("huge".into());
        }
        let head = format!("file{}{i}", sep(rng));
        out.push(spell_line(rng, head, args));
    }
    for (i, task) in t.tasks.iter().enumerate() {
        let args = vec![format!("mm={}", task.mm), format!("cpu={}", task.cpu)];
        out.push(spell_line(rng, format!("task {i}"), args));
    }
    for call in &t.ops {
        let mut args = Vec::new();
        let mut b = |k: &str, v: u64, rng: &mut Rng| args.push(format!("{k}={}", spell_bytes(rng, v)));
        match call.op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                off,
            } => {
                b("addr", addr, rng);
                b("len", len, rng);
                if file.is_some() || off != 0 || rng.coin() {
                    b("off", off, rng);
                }
                let mut names = vec![if flags.shared { "shared" } else { "private" }];
                for (on, n) in [
                    (flags.fixed, "fixed"),
                    (flags.noreplace, "noreplace"),
                    (flags.populate, "populate"),
                ] {
                    if on {
                        names.push(n);
                    }
                }
                args.push(format!("prot={}", spell_prot(rng, prot)));
                args.push(format!("flags={}", spell_list(rng, names)));
                if let Some(f) = file {
                    args.push(format!("file={f}"));
                }
            }
            Op::Munmap { addr, len } | Op::Pageout { addr, len } => {
                b("addr", addr, rng);
                b("len", len, rng);
            }
            Op::Mprotect { addr, len, prot } => {
                b("addr", addr, rng);
                b("len", len, rng);
                args.push(format!("prot={}", spell_prot(rng, prot)));
            }
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            } => {
                b("addr", addr, rng);
                b("old", old, rng);
                b("new", new, rng);
                if let Some(to) = to {
                    b("to", to, rng);
                }
                let mut names = Vec::new();
                if flags.maymove {
                    names.push("maymove");
                }
                if flags.fixed {
                    names.push("fixed");
                }
                if !names.is_empty() {
                    args.push(format!("flags={}", spell_list(rng, names)));
                }
            }
            Op::Write { file, off, len, buf } | Op::Read { file, off, len, buf } => {
                b("off", off, rng);
                b("len", len, rng);
                b("buf", buf, rng);
                args.push(format!("file={}", spell_plain(rng, file.into())));
            }
            Op::Truncate { file, size } => {
                b("size", size, rng);
                args.push(format!("file={file}"));
            }
            Op::Load { addr } => b("addr", addr, rng),
            Op::Store { addr, value } => {
                b("addr", addr, rng);
                args.push(format!("value={}", spell_plain(rng, value.into())));
            }
            Op::Fork { task, cpu } => {
                args.push(format!("task={task}"));
                if let Some(cpu) = cpu {
                    args.push(format!("cpu={cpu}"));
                }
            }
            Op::Exit => {}
        }
        let head = format!("{}:{}{}", call.task, sep(rng), call.op.name());
        out.push(spell_line(rng, head, args));
        if rng.below(8) == 0 {
            out.push("   # between operations".into());
        }
    }
    let mut sched: Vec<String> = t.schedule.iter().map(|s| s.to_string()).collect();
    while !sched.is_empty() {
        let n = 1 + rng.below(sched.len().min(70));
        let rest = sched.split_off(n);
        out.push(format!("schedule{}{}", sep(rng), sched.join(sep(rng))));
        sched = rest;
    }
    if rng.coin() {
        out.push("schedule".into()); // an empty schedule line adds nothing
    }
    let mut text = out.join(if rng.coin() { "\n" } else { "\r\n" });
    if rng.coin() {
        text.push('\n');
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Properties.

/// Whatever `parse` answers is sound: a trace survives printing, an error names a real line.
fn check_outcome(text: &str) {
    match parse(text) {
        Ok(t) => {
            let printed = t.to_string();
            assert_eq!(parse(&printed), Ok(t), "accepted text:\n{text}\nprinted:\n{printed}");
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {e}", e.line);
            assert!(!e.message.is_empty());
            assert_eq!(e.to_string(), format!("line {}: {}", e.line, e.message));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(t in trace_strategy()) {
        let printed = t.to_string();
        let parsed = parse(&printed);
        prop_assert_eq!(parsed.as_ref(), Ok(&t), "printed:\n{}", printed);
        let reprinted = parsed.map(|p| p.to_string());
        prop_assert_eq!(reprinted, Ok(printed));
    }

    #[test]
    fn any_spelling_parses_to_the_same_trace(t in trace_strategy(), seed in any::<u64>()) {
        let text = respell(&t, seed);
        prop_assert_eq!(parse(&text), Ok(t), "text:\n{}", text);
    }

    #[test]
    fn canonical_lines_are_within_limits(t in trace_strategy()) {
        let printed = t.to_string();
        prop_assert!(printed.starts_with("mmtrace 1\n"));
        prop_assert!(printed.ends_with('\n'));
        prop_assert!(printed.lines().filter(|l| l.starts_with("config")).count() <= 1);
        for line in printed.lines().filter(|l| l.starts_with("schedule")) {
            prop_assert!(line.split(' ').count() - 1 <= 32, "{}", line);
        }
        let scheduled: usize = printed
            .lines()
            .filter(|l| l.starts_with("schedule"))
            .map(|l| l.split(' ').count() - 1)
            .sum();
        prop_assert_eq!(scheduled, t.schedule.len());
    }

    #[test]
    fn random_strings_never_panic(text in "\\PC*") {
        check_outcome(&text);
    }

    #[test]
    fn random_token_soup_never_panics(
        toks in prop::collection::vec(prop::sample::select(SOUP.to_vec()), 0..60)
    ) {
        let text: String = toks.concat();
        check_outcome(&text);
    }

    #[test]
    fn mutated_traces_never_panic(
        t in trace_strategy(),
        which in any::<usize>(),
        kind in 0u8..7,
        pos in any::<usize>(),
        ch in prop::sample::select(MUTANT_CHARS.to_vec()),
    ) {
        let text = mutate(&t.to_string(), which, kind, pos, ch);
        check_outcome(&text);
    }
}

const SOUP: [&str; 40] = [
    "mmtrace 1\n",
    "mmtrace 1\n",
    "config ",
    "file 0 ",
    "file 1 ",
    "task 0 ",
    "task 1 ",
    "0: ",
    "1: ",
    "2: ",
    "mmap ",
    "munmap ",
    "mremap ",
    "fork ",
    "exit ",
    "load ",
    "store ",
    "schedule ",
    "addr=0x1000 ",
    "len=4k ",
    "prot=rw ",
    "flags=shared,fixed ",
    "file=0 ",
    "task=1 ",
    "task=2 ",
    "cpu=1 ",
    "size=32k ",
    "huge ",
    "value=7 ",
    "old=1 ",
    "new=2m ",
    "flags=maymove ",
    "to=0 ",
    "irq0 ",
    "1 ",
    "\n",
    "\n",
    "# c\n",
    "cpus=1 ",
    "highmem=300 ",
];

const MUTANT_CHARS: [char; 16] = [
    '0', '1', '9', 'x', 'k', 'm', '=', ',', ':', '#', ' ', '\t', 'é', 'Z', '-', '\u{0}',
];

/// One random mutation of one line of `text`.
fn mutate(text: &str, which: usize, kind: u8, pos: usize, ch: char) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = which % lines.len();
    let toks: Vec<String> = lines[i].split(' ').map(str::to_string).collect();
    let j = pos % toks.len();
    match kind {
        0 => {
            let mut t = toks;
            t.remove(j);
            lines[i] = t.join(" ");
        }
        1 => {
            let mut t = toks.clone();
            t.insert(j, toks[j].clone());
            lines[i] = t.join(" ");
        }
        2 | 3 => {
            // Replace (2) or insert (3) one character; the printed text is ASCII.
            let mut chars: Vec<char> = lines[i].chars().collect();
            let k = pos % (chars.len() + 1);
            if kind == 2 && k < chars.len() {
                chars[k] = ch;
            } else {
                chars.insert(k, ch);
            }
            lines[i] = chars.into_iter().collect();
        }
        4 => {
            lines.remove(i);
        }
        5 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        _ => {
            let k = pos % lines.len();
            lines.swap(i, k);
        }
    }
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Malformed traces: each fails at its exact line with a precise message.

const BASE: &str = "\
mmtrace 1
config cpus=2
file 0 size=64k
file 1 size=64k huge
task 0 mm=0 cpu=0
task 1 mm=1 cpu=1
0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0
1: load addr=0x100010
0: fork task=2
2: exit
schedule 0 1 irq1 2
";

/// BASE with line `n` (1-based) replaced by `text`.
fn replace(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[n - 1] = text;
    lines.join("\n") + "\n"
}

/// BASE with `text` inserted so that it becomes line `n`.
fn insert(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines.insert(n - 1, text);
    lines.join("\n") + "\n"
}

fn fails(text: &str, line: usize, fragment: &str) {
    match parse(text) {
        Ok(t) => panic!("accepted, expected line {line}: {fragment}\n{text}\nparsed: {t:?}"),
        Err(ParseError { line: l, message }) => {
            assert_eq!(l, line, "wrong line for `{message}` in:\n{text}");
            assert!(message.contains(fragment), "`{message}` lacks `{fragment}` in:\n{text}");
        }
    }
}

#[test]
fn base_of_the_table_is_valid() {
    let t = parse(BASE).expect("BASE parses");
    assert_eq!(t.task_count(), 3);
    assert_eq!(t.ops.len(), 4);
    assert_eq!(
        t.schedule,
        vec![
            SchedToken::Task(0),
            SchedToken::Task(1),
            SchedToken::Irq(1),
            SchedToken::Task(2)
        ]
    );
}

#[test]
fn malformed_traces_fail_at_their_line() {
    // Header.
    fails("", 1, "missing header `mmtrace 1`");
    fails("# only\n\n# comments\n", 3, "missing header");
    fails(&replace(1, "mmtrace 2"), 1, "unsupported version");
    fails(&replace(1, "mmtrace"), 1, "missing version");
    fails(&replace(1, "mmtrace 1 2"), 1, "unexpected `2`");
    fails(&replace(1, "mmtrac 1"), 1, "expected header `mmtrace 1`");
    fails(&insert(1, "config cpus=2"), 1, "expected header");
    fails(&insert(3, "mmtrace 1"), 3, "repeated header");
    // Unknown things.
    fails(&replace(8, "1: lod addr=0x100010"), 8, "unknown operation `lod`");
    fails(
        &replace(8, "1: munmap addr=0x1000 lenn=4k"),
        8,
        "unknown key `lenn` for munmap",
    );
    fails(&replace(2, "config cpu=2"), 2, "unknown key `cpu` for config");
    fails(&replace(8, "1: exit now=1"), 8, "unknown key `now` for exit");
    fails(
        &replace(8, "1: load 0x100010"),
        8,
        "expected KEY=VALUE, found `0x100010`",
    );
    fails(&replace(8, "frobnicate"), 8, "unknown line `frobnicate`");
    fails(&replace(8, "1:load addr=0"), 8, "expected a space after `:`");
    fails(&replace(8, "1:"), 8, "missing operation after `1:`");
    fails(&replace(8, "x: load addr=0"), 8, "bad task id `x`");
    // Repeated keys, also across config lines.
    fails(&replace(8, "1: load addr=1 addr=2"), 8, "repeated key `addr`");
    fails(&insert(3, "config ptrs=8 cpus=1"), 3, "repeated key `cpus`");
    fails(&replace(3, "file 0 size=4k huge huge"), 3, "repeated `huge`");
    fails(&replace(3, "file 0 size=4k size=4k"), 3, "repeated key `size`");
    // Numbers.
    fails(&replace(8, "1: load addr=0x10g"), 8, "bad number `0x10g` for `addr`");
    fails(&replace(8, "1: load addr="), 8, "bad number `` for `addr`");
    fails(&replace(8, "1: load addr=0x"), 8, "bad number `0x` for `addr`");
    fails(&replace(8, "1: load addr=+5"), 8, "bad number `+5`");
    fails(&replace(8, "1: load addr=-5"), 8, "bad number `-5`");
    fails(&replace(8, "1: load addr=0X10"), 8, "bad number `0X10`");
    fails(&replace(8, "1: load addr=4K"), 8, "bad number `4K`");
    fails(&replace(8, "1: load addr=18446744073709551616"), 8, "overflows");
    fails(&replace(8, "1: load addr=0x10000000000000000"), 8, "overflows");
    fails(&replace(8, "1: load addr=0xffffffffffffffffk"), 8, "overflows");
    fails(&replace(8, "1: load addr=17592186044416m"), 8, "overflows");
    fails(&replace(6, "task 1 mm=1 cpu=1k"), 6, "bad number `1k` for `cpu`");
    fails(&replace(2, "config cpus=0x2k"), 2, "bad number `0x2k` for `cpus`");
    fails(
        &replace(8, "1: store addr=0 value=1k"),
        8,
        "bad number `1k` for `value`",
    );
    // Missing arguments.
    fails(&replace(8, "1: munmap addr=0x1000"), 8, "missing key `len` for munmap");
    fails(
        &replace(8, "1: mmap addr=0 len=4k prot=r"),
        8,
        "missing key `flags` for mmap",
    );
    fails(
        &replace(8, "1: write file=0 off=0 len=1"),
        8,
        "missing key `buf` for write",
    );
    fails(&replace(9, "0: fork cpu=1"), 9, "missing key `task` for fork");
    fails(&replace(3, "file 0"), 3, "missing key `size` for file");
    fails(&replace(3, "file size=4k"), 3, "missing file id");
    fails(&replace(6, "task 1 mm=1"), 6, "missing key `cpu` for task");
    // Out of range.
    fails(&replace(2, "config cpus=9"), 2, "cpus=9 is out of range 1..8");
    fails(&replace(2, "config cpus=0"), 2, "cpus=0 is out of range 1..8");
    fails(&replace(2, "config ptrs=12"), 2, "ptrs=12 is not a power of two");
    fails(&replace(2, "config ptrs=1024"), 2, "ptrs=1024 is out of range 4..512");
    fails(
        &replace(2, "config frames=15"),
        2,
        "frames=15 is out of range 16..65536",
    );
    fails(
        &replace(2, "config highmem=249"),
        2,
        "highmem=249 is out of range 0..248",
    );
    fails(&replace(2, "config pkmap=1025"), 2, "pkmap=1025");
    fails(&replace(2, "config atomic=1"), 2, "atomic=1");
    fails(&replace(2, "config steps=0"), 2, "steps=0");
    fails(&replace(2, "config steps=10000001"), 2, "steps=10000001");
    fails(&replace(2, "config highpte=yes"), 2, "bad value `yes` for `highpte`");
    fails(&replace(2, "config bugs=kmap-nested,nope"), 2, "unknown bug `nope`");
    fails(&replace(2, "config bugs=none,kmap-nested"), 2, "unknown bug `none`");
    // highmem is checked against frames after all config lines, at the highmem line.
    let late_frames = replace(2, "config highmem=100\nconfig frames=64");
    fails(&late_frames, 2, "highmem=100 is out of range 0..56");
    fails(&replace(6, "task 1 mm=1 cpu=2"), 6, "cpu=2 is out of range 0..1");
    fails(
        &replace(6, "task 1 mm=65536 cpu=1"),
        6,
        "mm=65536 is out of range 0..65535",
    );
    fails(
        &replace(8, "1: store addr=0 value=256"),
        8,
        "value=256 is out of range 0..255",
    );
    fails(
        &replace(8, "1: read file=2 off=0 len=1 buf=0"),
        8,
        "file=2 is out of range 0..1",
    );
    fails(&replace(9, "0: fork task=2 cpu=2"), 9, "cpu=2 is out of range 0..1");
    fails(
        &replace(4, "file 1 size=36k huge"),
        4,
        "not a multiple of the huge page size 0x8000",
    );
    fails(&replace(11, "schedule 0 irq2"), 11, "cpu 2 is out of range 0..1");
    fails(&replace(11, "schedule 0 3"), 11, "unknown task 3");
    fails(&replace(11, "schedule 0 irq"), 11, "bad schedule token `irq`");
    fails(&replace(11, "schedule 0 t1"), 11, "bad schedule token `t1`");
    // Values of other kinds.
    fails(&replace(8, "1: mprotect addr=0 len=4k prot=rr"), 8, "repeated `r`");
    fails(&replace(8, "1: mprotect addr=0 len=4k prot=rwz"), 8, "bad prot `rwz`");
    fails(&replace(8, "1: mprotect addr=0 len=4k prot="), 8, "bad prot ``");
    fails(
        &replace(8, "1: mmap addr=0 len=4k prot=r flags=fixed"),
        8,
        "exactly one of",
    );
    fails(
        &replace(8, "1: mmap addr=0 len=4k prot=r flags=shared,private"),
        8,
        "exactly one of",
    );
    fails(
        &replace(8, "1: mmap addr=0 len=4k prot=r flags=shared,shared"),
        8,
        "repeated flag",
    );
    fails(
        &replace(8, "1: mmap addr=0 len=4k prot=r flags=shared,huge"),
        8,
        "unknown mmap flag",
    );
    fails(&replace(8, "1: mremap addr=0 old=1 new=2 flags=fixed"), 8, "needs `to`");
    fails(
        &replace(8, "1: mremap addr=0 old=1 new=2 flags=maymove,maymove"),
        8,
        "repeated flag",
    );
    fails(
        &replace(8, "1: mremap addr=0 old=1 new=2 flags="),
        8,
        "unknown mremap flag ``",
    );
    // Tasks.
    fails(&replace(8, "3: load addr=0"), 8, "unknown task 3 (tasks are 0..2)");
    fails(
        &replace(8, "99999999999999999999999: load addr=0"),
        8,
        "unknown task 99999999999999999999999",
    );
    fails(&replace(8, "0x3: load addr=0"), 8, "unknown task 3");
    fails(
        &replace(11, "schedule 0 99999999999999999999999"),
        11,
        "unknown task 9999",
    );
    fails(
        &replace(11, "schedule irq99999999999999999999999"),
        11,
        "out of range 0..1",
    );
    fails(
        &replace(6, "task 99999999999999999999999 mm=1 cpu=1"),
        6,
        "out of order: expected 1",
    );
    fails(&replace(6, "task one mm=1 cpu=1"), 6, "bad task id `one`");
    fails(&insert(11, "2: load addr=0"), 11, "operation after exit of task 2");
    fails(&insert(11, "2: exit"), 11, "operation after exit of task 2");
    fails(
        &replace(9, "0: fork task=3"),
        9,
        "fork must create task 2 (the next unused id), not 3",
    );
    fails(&replace(9, "0: fork task=1"), 9, "fork must create task 2");
    fails(
        &replace(6, "task 2 mm=1 cpu=1"),
        6,
        "task id 2 out of order: expected 1",
    );
    fails(
        &replace(4, "file 0 size=64k huge"),
        4,
        "file id 0 out of order: expected 1",
    );
    fails(&replace(5, "task 0 mm=0"), 5, "missing key `cpu` for task");
    // Sections out of order.
    fails(&insert(7, "file 2 size=4k"), 7, "`file` line after `task` lines");
    fails(&insert(4, "config ptrs=8"), 4, "`config` line after `file` lines");
    fails(&insert(12, "0: load addr=0"), 12, "operation after `schedule` lines");
    fails(&insert(8, "task 2 mm=0 cpu=0"), 8, "`task` line after operation lines");
    fails(&insert(12, "file 2 size=4k"), 12, "`file` line after `schedule` lines");
    fails(
        "mmtrace 1\n0: exit\ntask 0 mm=0 cpu=0\n",
        2,
        "operation before any `task` line",
    );
    fails("mmtrace 1\nschedule 0\n", 2, "`schedule` line before any `task` line");
    fails(
        "mmtrace 1\nconfig cpus=1\nfile 0 size=1\n\n# end\n",
        5,
        "no `task` line",
    );
    fails("mmtrace 1", 1, "no `task` line");
    // highmem too big with no task line at all: the config error, at its line, comes first.
    fails(
        "mmtrace 1\nconfig frames=16 highmem=9\n",
        2,
        "highmem=9 is out of range 0..8",
    );
}

#[test]
fn display_of_an_error_is_line_colon_message() {
    let e = parse(&replace(8, "1: munmap addr=0 lenn=4k")).unwrap_err();
    assert_eq!(e.to_string(), "line 8: unknown key `lenn` for munmap");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("line 8: "));
}

// ---------------------------------------------------------------------------------------------
// Accepted spellings and the canonical form.

#[test]
fn numbers_take_suffixes_and_hex() {
    let t = parse(
        "mmtrace 1\ntask 0 mm=0 cpu=0\n\
         0: load addr=16k\n0: load addr=0x10k\n0: load addr=2m\n0: load addr=0xFf\n\
         0: load addr=00017\n0: load addr=18446744073709551615\n0: load addr=0xffffffffffffffff\n\
         0: load addr=0k\n",
    )
    .unwrap();
    let addrs: Vec<u64> = t
        .ops
        .iter()
        .map(|c| match c.op {
            Op::Load { addr } => addr,
            other => panic!("not a load: {other:?}"),
        })
        .collect();
    assert_eq!(addrs, vec![16384, 16384, 2 * 1048576, 255, 17, u64::MAX, u64::MAX, 0]);
}

#[test]
fn config_is_resolved_and_printed_canonically() {
    let t = parse(
        "mmtrace 1\nconfig frames=64\nconfig bugs=ptshare-rss,kmap-nested highpte=off\n\
         task 0 mm=0 cpu=0\n",
    )
    .unwrap();
    assert_eq!(t.config.frames, 64);
    assert_eq!(t.config.highmem, 32);
    assert!(!t.config.highpte);
    assert!(t.config.bugs.contains(Bug::KmapNested) && t.config.bugs.contains(Bug::PtshareRss));
    assert_eq!(
        t.to_string(),
        "mmtrace 1\nconfig frames=64 highpte=off bugs=kmap-nested,ptshare-rss\ntask 0 mm=0 cpu=0\n"
    );
    // Defaults spelled out vanish from the canonical form.
    let d = parse(
        "mmtrace 1\nconfig cpus=2 ptrs=8 frames=256 highmem=128 pkmap=8 atomic=16 highpte=on \
         ptshare=on hugeshare=on bugs=none steps=100000\ntask 0 mm=0 cpu=0\n",
    )
    .unwrap();
    assert_eq!(d.config, Config::default());
    assert_eq!(d.to_string(), "mmtrace 1\ntask 0 mm=0 cpu=0\n");
    // A highmem equal to a non-default frames/2 is not printed; any other is.
    let h = parse("mmtrace 1\nconfig frames=64 highmem=56\ntask 0 mm=0 cpu=0\n").unwrap();
    assert_eq!(
        h.to_string(),
        "mmtrace 1\nconfig frames=64 highmem=56\ntask 0 mm=0 cpu=0\n"
    );
    let every = "mmtrace 1\nconfig cpus=8 ptrs=512 frames=65536 highmem=0 pkmap=1024 atomic=2 \
                 highpte=off ptshare=off hugeshare=off bugs=kmap-nested steps=1\ntask 0 mm=0 cpu=7\n";
    assert_eq!(parse(every).unwrap().to_string(), every);
}

#[test]
fn canonical_text_of_a_full_trace() {
    let text = "\
mmtrace 1
config cpus=3 ptrs=4
file 0 size=0x5000
file 1 size=0x8000 huge
file 2 size=0
task 0 mm=0 cpu=0
task 1 mm=7 cpu=2
0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0
0: mmap addr=0 len=0x1000 prot=none flags=private,fixed,noreplace,populate
1: mmap addr=0 len=0x1000 prot=rwx flags=private off=0x2000
1: munmap addr=0x10000 len=0x1000
0: mprotect addr=0x10000 len=0x1000 prot=x
0: mremap addr=0x10000 old=0x1000 new=0x2000
0: mremap addr=0x10000 old=0x1000 new=0x2000 flags=maymove,fixed to=0x40000
0: mremap addr=0x10000 old=0x1000 new=0x2000 to=0x40000
0: write file=0 off=0x10 len=0x20 buf=0x100000
0: read file=1 off=0 len=0x20 buf=0x100000
0: truncate file=2 size=0x3000
0: load addr=0x100010
0: store addr=0x100010 value=255
0: pageout addr=0x100000 len=0x4000
0: fork task=2
2: fork task=3 cpu=1
2: exit
3: exit
schedule 0 1 2 3 irq0 irq2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
schedule 1
";
    let t = parse(text).unwrap();
    assert_eq!(t.to_string(), text);
    assert_eq!(
        t.files[1],
        FileInit {
            size: 0x8000,
            huge: true
        }
    );
    assert_eq!(t.tasks[1], TaskInit { mm: 7, cpu: 2 });
    assert_eq!(
        t.ops[1].op,
        Op::Mmap {
            addr: 0,
            len: 0x1000,
            prot: Prot::NONE,
            flags: MmapFlags {
                shared: false,
                fixed: true,
                noreplace: true,
                populate: true
            },
            file: None,
            off: 0,
        }
    );
    assert_eq!(t.ops[14].op, Op::Fork { task: 2, cpu: None });
    assert_eq!(
        t.ops[15],
        Call {
            task: 2,
            op: Op::Fork { task: 3, cpu: Some(1) }
        }
    );
    assert_eq!(t.schedule.len(), 33);
}

#[test]
fn forked_tasks_may_have_lines_before_their_fork() {
    let t = parse(
        "mmtrace 1\ntask 0 mm=0 cpu=0\n\
         1: load addr=0x10000\n2: exit\n0: fork task=1\n1: fork task=2 cpu=0\n",
    )
    .unwrap();
    assert_eq!(t.task_count(), 3);
    assert_eq!(t.ops[0].task, 1);
    // A task with no operations is fine, and an exited task may still be scheduled.
    let u = parse("mmtrace 1\ntask 0 mm=0 cpu=0\ntask 1 mm=0 cpu=1\n0: exit\nschedule 0 1 0\n").unwrap();
    assert_eq!(u.ops, vec![Call { task: 0, op: Op::Exit }]);
}

#[test]
fn long_schedules_wrap_at_32_tokens() {
    let mut t = parse("mmtrace 1\ntask 0 mm=0 cpu=0\n").unwrap();
    t.schedule = (0..70)
        .map(|i| {
            if i % 7 == 0 {
                SchedToken::Irq(1)
            } else {
                SchedToken::Task(0)
            }
        })
        .collect();
    let printed = t.to_string();
    let lines: Vec<&str> = printed.lines().filter(|l| l.starts_with("schedule ")).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].split(' ').count(), 33);
    assert_eq!(lines[1].split(' ').count(), 33);
    assert_eq!(lines[2].split(' ').count(), 7);
    assert_eq!(parse(&printed), Ok(t));
}

// ---------------------------------------------------------------------------------------------
// TRACE.md's own examples.

#[test]
fn trace_md_examples_parse() {
    // The lines TRACE.md shows, assembled into one trace (tasks 0 and 1 added before its
    // `task 2 mm=0 cpu=1`, and ops of its table with example arguments).
    let text = "\
mmtrace 1                          # header: required, first non-comment line
config cpus=2 ptrs=8 frames=256 highmem=128 pkmap=8 atomic=16 highpte=on ptshare=on hugeshare=on bugs=none steps=100000
file 0 size=20000
file 1 size=64k huge
task 0 mm=0 cpu=0
task 1 mm=0 cpu=0
task 2 mm=0 cpu=1
0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0
1: load addr=0x100010
2: munmap addr=0x100000 len=16k
2: mprotect addr=0x100000 len=0x1000 prot=r
2: mremap addr=0x100000 old=0x1000 new=0x2000 flags=maymove,fixed to=0x200000
2: write file=0 off=0 len=100 buf=0x100000
2: read file=1 off=0 len=100 buf=0x100000
2: truncate file=0 size=8k
2: store addr=0x100010 value=7
2: pageout addr=0x100000 len=0x4000
2: fork task=3 cpu=1
3: exit
schedule 0 1 irq1 2
schedule 3
";
    let t = parse(text).unwrap();
    assert_eq!(t.config, Config::default());
    assert_eq!(
        t.files,
        vec![
            FileInit {
                size: 20000,
                huge: false
            },
            FileInit {
                size: 65536,
                huge: true
            },
        ]
    );
    assert_eq!(t.tasks[2], TaskInit { mm: 0, cpu: 1 });
    assert_eq!(
        t.ops[0],
        Call {
            task: 0,
            op: Op::Mmap {
                addr: 0x100000,
                len: 0x4000,
                prot: Prot::RW,
                flags: MmapFlags {
                    shared: true,
                    fixed: true,
                    noreplace: false,
                    populate: false
                },
                file: Some(0),
                off: 0,
            },
        }
    );
    assert_eq!(
        t.ops[2].op,
        Op::Munmap {
            addr: 0x100000,
            len: 16384
        }
    );
    assert_eq!(
        t.ops[4].op,
        Op::Mremap {
            addr: 0x100000,
            old: 0x1000,
            new: 0x2000,
            flags: MremapFlags {
                maymove: true,
                fixed: true
            },
            to: Some(0x200000),
        }
    );
    // TRACE.md's replay output prints the operations exactly like this.
    assert_eq!(
        print_op(&t.ops[0]).to_string(),
        "0: mmap addr=0x100000 len=0x4000 prot=rw flags=shared,fixed file=0 off=0"
    );
    assert_eq!(print_op(&t.ops[1]).to_string(), "1: load addr=0x100010");
    assert_eq!(parse(&t.to_string()), Ok(t));
}

#[test]
fn the_strategy_covers_every_kind_of_line() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = trace_strategy();
    let mut ops_seen = std::collections::BTreeSet::new();
    let (mut huge, mut config_lines, mut irqs, mut fork_cpu, mut forked_ops) = (0, 0, 0, 0, 0);
    for _ in 0..300 {
        let t = strategy.new_tree(&mut runner).unwrap().current();
        ops_seen.extend(t.ops.iter().map(|c| c.op.name()));
        huge += t.files.iter().filter(|f| f.huge && f.size > 0).count();
        config_lines += usize::from(t.to_string().contains("\nconfig "));
        irqs += t.schedule.iter().filter(|s| matches!(s, SchedToken::Irq(_))).count();
        fork_cpu += t
            .ops
            .iter()
            .filter(|c| matches!(c.op, Op::Fork { cpu: Some(_), .. }))
            .count();
        forked_ops += t.ops.iter().filter(|c| c.task as usize >= t.tasks.len()).count();
    }
    assert_eq!(ops_seen.len(), 12, "{ops_seen:?}");
    assert!(huge > 0 && config_lines > 0 && irqs > 0 && fork_cpu > 0 && forked_ops > 0);
}
