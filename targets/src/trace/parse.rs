//! The mmtrace parser (TRACE.md, version 1).
//!
//! What it keeps true:
//! - [`parse`] never panics, whatever the input: every number is parsed with checked
//!   arithmetic, every index is range-checked before use.
//! - A returned [`Trace`] is valid: the header is `mmtrace 1`, sections come in TRACE.md's
//!   order, the config is fully resolved and passes [`Config::check`], files and tasks are
//!   numbered `0, 1, 2, ...`, every operation's task is declared or created by a `fork` of the
//!   file, every `fork` creates the next unused id, no operation of a task follows its `exit`
//!   (file order), and every CPU, file id and schedule token is in range.
//! - An error names the 1-based line where the problem is; a problem only visible at the end
//!   of the input (no header, no task) names the last line (1 for empty input).

use std::fmt;

use mm_reference::{
    limits, BugSet, Call, Config, CpuId, FileId, FileInit, MmapFlags, MremapFlags, Op, Prot, SchedToken, TaskId,
    TaskInit,
};

use super::{Trace, VERSION};

/// Why a text is not a valid trace: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    /// `line N: MESSAGE` (the CLI prints `error: ` before it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

type Res<T> = Result<T, ParseError>;

fn err<T>(line: usize, message: impl Into<String>) -> Res<T> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Parses an mmtrace text into a valid [`Trace`], or names the first line that is wrong.
pub fn parse(text: &str) -> Result<Trace, ParseError> {
    // `fork` lines anywhere in the file create task ids that operation lines may use before
    // the fork itself: count them first. A malformed fork line is rejected by the main pass.
    let forks = text
        .lines()
        .filter(|raw| raw.contains("fork"))
        .filter(|raw| {
            let mut toks = tokens(raw);
            toks.next().is_some_and(|t| t.ends_with(':')) && toks.next() == Some("fork")
        })
        .count();
    let mut parser = Parser {
        section: Section::Header,
        config: ConfigLines::default(),
        trace: Trace::default(),
        forks_in_file: forks,
        forks_seen: 0,
        total_tasks: 0,
        exited: Vec::new(),
    };
    // One token buffer for every line (a trace is parsed at every mutation the fuzzer tries).
    let mut toks = Vec::new();
    let mut count = 0;
    for (i, raw) in text.lines().enumerate() {
        count = i + 1;
        toks.clear();
        toks.extend(tokens(raw));
        if !toks.is_empty() {
            parser.line(i + 1, &toks)?;
        }
    }
    parser.finish(count.max(1))
}

/// The tokens of one line (separated by spaces and tabs), its comment removed. Byte by
/// byte: the separators and `#` are ASCII, which never occurs inside a multi-byte character,
/// so every token is a whole `str`.
fn tokens(raw: &str) -> impl Iterator<Item = &str> {
    let code = match raw.find('#') {
        Some(i) => &raw[..i],
        None => raw,
    };
    let bytes = code.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t') {
            at += 1;
        }
        if at == bytes.len() {
            return None;
        }
        let start = at;
        while at < bytes.len() && !matches!(bytes[at], b' ' | b'\t') {
            at += 1;
        }
        Some(&code[start..at])
    })
}

/// The sections of a trace, in the order they must come.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Section {
    Header,
    Config,
    File,
    Task,
    Ops,
    Schedule,
}

impl Section {
    /// How an error message names the lines of this section.
    fn lines_name(self) -> &'static str {
        match self {
            Section::Header => "the header",
            Section::Config => "`config` lines",
            Section::File => "`file` lines",
            Section::Task => "`task` lines",
            Section::Ops => "operation lines",
            Section::Schedule => "`schedule` lines",
        }
    }
}

/// `config` keys seen so far. Every value except `highmem` is range-checked on its line;
/// `highmem` depends on `frames`, which a later line may give, so it waits for
/// [`ConfigLines::resolve`].
#[derive(Default)]
struct ConfigLines {
    config: Config,
    seen: Vec<&'static str>,
    highmem: Option<(usize, u64)>,
    last_line: Option<usize>,
}

const CONFIG_KEYS: [&str; 11] = [
    "cpus",
    "ptrs",
    "frames",
    "highmem",
    "pkmap",
    "atomic",
    "highpte",
    "ptshare",
    "hugeshare",
    "bugs",
    "steps",
];

impl ConfigLines {
    fn line(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        self.last_line = Some(line);
        let args = Args::new(line, "config", toks, &CONFIG_KEYS)?;
        for &(key, value) in args.pairs() {
            let Some(&key) = CONFIG_KEYS.iter().find(|k| **k == key) else {
                return err(line, format!("unknown key `{key}` for config"));
            };
            if self.seen.contains(&key) {
                return err(line, format!("repeated key `{key}`"));
            }
            self.seen.push(key);
            let c = &mut self.config;
            match key {
                "cpus" => c.cpus = args.ranged_u32(key, limits::CPUS)?,
                "ptrs" => {
                    c.ptrs = args.ranged_u32(key, limits::PTRS)?;
                    if !c.ptrs.is_power_of_two() {
                        return err(line, format!("ptrs={} is not a power of two", c.ptrs));
                    }
                }
                "frames" => c.frames = args.ranged_u32(key, limits::FRAMES)?,
                "highmem" => self.highmem = Some((line, number(line, key, value, false)?)),
                "pkmap" => c.pkmap = args.ranged_u32(key, limits::PKMAP)?,
                "atomic" => c.atomic = args.ranged_u32(key, limits::ATOMIC)?,
                "highpte" => c.highpte = on_off(line, key, value)?,
                "ptshare" => c.ptshare = on_off(line, key, value)?,
                "hugeshare" => c.hugeshare = on_off(line, key, value)?,
                "bugs" => {
                    c.bugs = match BugSet::parse(value) {
                        Ok(set) => set,
                        Err(e) => return err(line, format!("{e} in `bugs`")),
                    }
                }
                "steps" => {
                    let (lo, hi) = limits::STEPS;
                    c.steps = ranged(line, key, number(line, key, value, false)?, lo, hi)?;
                }
                _ => return err(line, format!("unknown key `{key}` for config")),
            }
        }
        Ok(())
    }

    /// The resolved config: `highmem` checked against `frames` (default `frames/2`).
    fn resolve(&self) -> Res<Config> {
        let mut config = self.config;
        // `frames` is already within limits::FRAMES, so `frames - 8` cannot underflow.
        let high_max = config.frames.saturating_sub(8);
        config.highmem = match self.highmem {
            None => config.frames / 2,
            Some((line, v)) => ranged(line, "highmem", v, 0, u64::from(high_max))? as u32,
        };
        if let Err(e) = config.check() {
            return err(self.last_line.unwrap_or(1), e);
        }
        Ok(config)
    }
}

struct Parser {
    section: Section,
    config: ConfigLines,
    trace: Trace,
    /// `fork` lines in the whole file (counted before the main pass).
    forks_in_file: usize,
    /// `fork` lines so far.
    forks_seen: usize,
    /// Declared tasks plus `forks_in_file`: set when the first operation line is reached.
    total_tasks: usize,
    /// Per task id (`0..total_tasks`): whether its `exit` line has been read.
    exited: Vec<bool>,
}

impl Parser {
    fn line(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        let Some(&head) = toks.first() else {
            return Ok(()); // `lines` yields no empty line; nothing to do for one anyway
        };
        if self.section == Section::Header {
            return self.header(line, toks);
        }
        match head {
            "mmtrace" => err(line, "repeated header `mmtrace`"),
            "config" => {
                self.enter(line, Section::Config, "`config` line")?;
                self.config.line(line, &toks[1..])
            }
            "file" => {
                self.enter(line, Section::File, "`file` line")?;
                self.file(line, &toks[1..])
            }
            "task" => {
                self.enter(line, Section::Task, "`task` line")?;
                self.task(line, &toks[1..])
            }
            "schedule" => {
                self.enter(line, Section::Schedule, "`schedule` line")?;
                self.schedule(line, &toks[1..])
            }
            _ if head.ends_with(':') => {
                self.enter(line, Section::Ops, "operation")?;
                self.op(line, toks)
            }
            _ if head.contains(':') => err(line, format!("expected a space after `:` in `{head}`")),
            _ => err(line, format!("unknown line `{head}`")),
        }
    }

    fn header(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        let head = toks.first().copied().unwrap_or("");
        if head != "mmtrace" {
            return err(line, format!("expected header `mmtrace {VERSION}`, found `{head}`"));
        }
        let Some(&version) = toks.get(1) else {
            return err(line, "missing version after `mmtrace`");
        };
        match parse_number(version, false) {
            Ok(v) if v == u64::from(VERSION) => {}
            _ => return err(line, format!("unsupported version `{version}`")),
        }
        if let Some(extra) = toks.get(2) {
            return err(line, format!("unexpected `{extra}` after the version"));
        }
        self.section = Section::Config;
        Ok(())
    }

    /// Moves to section `to`, or rejects a line (`what`) that comes out of order.
    fn enter(&mut self, line: usize, to: Section, what: &str) -> Res<()> {
        if self.section > to {
            return err(line, format!("{what} after {}", self.section.lines_name()));
        }
        if to >= Section::Ops && self.trace.tasks.is_empty() {
            return err(line, format!("{what} before any `task` line"));
        }
        if self.section <= Section::Config && to > Section::Config {
            self.trace.config = self.config.resolve()?;
        }
        if self.section < Section::Ops && to >= Section::Ops {
            self.total_tasks = self.trace.tasks.len().saturating_add(self.forks_in_file);
            self.exited = vec![false; self.total_tasks];
        }
        self.section = to;
        Ok(())
    }

    fn file(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        let id = self.trace.files.len();
        declared_id(line, "file", toks.first().copied(), id)?;
        let toks = toks.get(1..).unwrap_or(&[]);
        let huge_count = toks.iter().filter(|t| **t == "huge").count();
        if huge_count > 1 {
            return err(line, "repeated `huge`");
        }
        let rest: Vec<&str> = toks.iter().copied().filter(|t| *t != "huge").collect();
        let args = Args::new(line, "file", &rest, &["size"])?;
        let size = args.bytes("size")?;
        let huge = huge_count == 1;
        let hps = self.trace.config.huge_page_size();
        if huge && size % hps != 0 {
            return err(
                line,
                format!("size={size:#x} of huge file {id} is not a multiple of the huge page size {hps:#x}"),
            );
        }
        self.trace.files.push(FileInit { size, huge });
        Ok(())
    }

    fn task(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        declared_id(line, "task", toks.first().copied(), self.trace.tasks.len())?;
        let args = Args::new(line, "task", toks.get(1..).unwrap_or(&[]), &["mm", "cpu"])?;
        let mm = args.ranged_u32("mm", (0, u32::from(u16::MAX)))?;
        let cpu = args.cpu("cpu", self.trace.config.cpus)?;
        // Every address space starts with a pgd in lowmem: more than the lowmem frames cannot
        // even be set up.
        let c = &self.trace.config;
        let lowmem = c.frames - c.highmem;
        let new_mm = !self.trace.tasks.iter().any(|t| t.mm == mm);
        let mms = self.trace.tasks.iter().fold(Vec::new(), |mut v, t| {
            if !v.contains(&t.mm) {
                v.push(t.mm);
            }
            v
        });
        if new_mm && mms.len() as u32 >= lowmem {
            return err(
                line,
                format!("address space {mm} does not fit: each needs a lowmem frame and there are {lowmem} (frames - highmem)"),
            );
        }
        self.trace.tasks.push(TaskInit { mm, cpu });
        Ok(())
    }

    fn op(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        let id_tok = toks[0];
        let id_text = &id_tok[..id_tok.len() - 1];
        let unknown = |task: &str| {
            err(
                line,
                format!("unknown task {task} (tasks are 0..{})", self.total_tasks - 1),
            )
        };
        let task = match parse_number(id_text, false) {
            Ok(t) => t,
            Err(NumError::Overflow) => return unknown(id_text),
            Err(NumError::Bad) => return err(line, format!("bad task id `{id_text}`")),
        };
        let index = match usize::try_from(task) {
            Ok(i) if i < self.total_tasks => i,
            _ => return unknown(&task.to_string()),
        };
        if self.exited[index] {
            return err(line, format!("operation after exit of task {task}"));
        }
        let Some(&name) = toks.get(1) else {
            return err(line, format!("missing operation after `{id_tok}`"));
        };
        let op = self.op_args(line, name, &toks[2..])?;
        match op {
            Op::Fork { .. } => self.forks_seen += 1,
            Op::Exit => self.exited[index] = true,
            _ => {}
        }
        // `index < total_tasks`, which is at most one per line of the text: it fits a u32.
        let task = task as TaskId;
        self.trace.ops.push(Call { task, op });
        Ok(())
    }

    fn op_args(&self, line: usize, name: &str, toks: &[&str]) -> Res<Op> {
        let files = self.trace.files.len();
        let cpus = self.trace.config.cpus;
        let keys: &[&str] = match name {
            "mmap" => &["addr", "len", "prot", "flags", "file", "off"],
            "munmap" | "pageout" => &["addr", "len"],
            "mprotect" => &["addr", "len", "prot"],
            "mremap" => &["addr", "old", "new", "flags", "to"],
            "write" | "read" => &["file", "off", "len", "buf"],
            "truncate" => &["file", "size"],
            "load" => &["addr"],
            "store" => &["addr", "value"],
            "fork" => &["task", "cpu"],
            "exit" => &[],
            _ => return err(line, format!("unknown operation `{name}`")),
        };
        let a = Args::new(line, name, toks, keys)?;
        let op = match name {
            "mmap" => Op::Mmap {
                addr: a.bytes("addr")?,
                len: a.bytes("len")?,
                prot: a.prot("prot")?,
                flags: mmap_flags(line, a.req("flags")?)?,
                file: match a.get("file") {
                    Some(_) => Some(a.file("file", files)?),
                    None => None,
                },
                off: match a.get("off") {
                    Some(_) => a.bytes("off")?,
                    None => 0,
                },
            },
            "munmap" => Op::Munmap {
                addr: a.bytes("addr")?,
                len: a.bytes("len")?,
            },
            "pageout" => Op::Pageout {
                addr: a.bytes("addr")?,
                len: a.bytes("len")?,
            },
            "mprotect" => Op::Mprotect {
                addr: a.bytes("addr")?,
                len: a.bytes("len")?,
                prot: a.prot("prot")?,
            },
            "mremap" => {
                let addr = a.bytes("addr")?;
                let old = a.bytes("old")?;
                let new = a.bytes("new")?;
                let flags = match a.get("flags") {
                    Some(v) => mremap_flags(line, v)?,
                    None => MremapFlags::default(),
                };
                let to = match a.get("to") {
                    Some(_) => Some(a.bytes("to")?),
                    None => None,
                };
                if flags.fixed && to.is_none() {
                    return err(line, "mremap with flags=fixed needs `to`");
                }
                Op::Mremap {
                    addr,
                    old,
                    new,
                    flags,
                    to,
                }
            }
            "write" => Op::Write {
                file: a.file("file", files)?,
                off: a.bytes("off")?,
                len: a.bytes("len")?,
                buf: a.bytes("buf")?,
            },
            "read" => Op::Read {
                file: a.file("file", files)?,
                off: a.bytes("off")?,
                len: a.bytes("len")?,
                buf: a.bytes("buf")?,
            },
            "truncate" => Op::Truncate {
                file: a.file("file", files)?,
                size: a.bytes("size")?,
            },
            "load" => Op::Load { addr: a.bytes("addr")? },
            "store" => Op::Store {
                addr: a.bytes("addr")?,
                value: a.ranged_u32("value", (0, u32::from(u8::MAX)))? as u8,
            },
            "fork" => {
                let want = self.trace.tasks.len() + self.forks_seen;
                let task = a.num("task")?;
                if task != want as u64 {
                    return err(
                        line,
                        format!("fork must create task {want} (the next unused id), not {task}"),
                    );
                }
                let cpu = match a.get("cpu") {
                    Some(_) => Some(a.cpu("cpu", cpus)?),
                    None => None,
                };
                // `want` counts lines of the text, so it fits a u32.
                Op::Fork {
                    task: want as TaskId,
                    cpu,
                }
            }
            _ => Op::Exit,
        };
        Ok(op)
    }

    fn schedule(&mut self, line: usize, toks: &[&str]) -> Res<()> {
        let tasks = self.trace.task_count();
        let cpus = self.trace.config.cpus;
        for &tok in toks {
            let sched = if let Some(c) = tok.strip_prefix("irq") {
                match parse_number(c, false) {
                    Ok(c) if c < u64::from(cpus) => SchedToken::Irq(c as CpuId),
                    Ok(_) | Err(NumError::Overflow) => {
                        return err(line, format!("`{tok}`: cpu {c} is out of range 0..{}", cpus - 1))
                    }
                    Err(NumError::Bad) => return err(line, format!("bad schedule token `{tok}`")),
                }
            } else {
                match parse_number(tok, false) {
                    Ok(t) if t < tasks as u64 => SchedToken::Task(t as TaskId),
                    Ok(_) | Err(NumError::Overflow) => {
                        return err(
                            line,
                            format!("schedule names unknown task {tok} (tasks are 0..{})", tasks - 1),
                        )
                    }
                    Err(NumError::Bad) => return err(line, format!("bad schedule token `{tok}`")),
                }
            };
            self.trace.schedule.push(sched);
        }
        Ok(())
    }

    fn finish(mut self, last_line: usize) -> Res<Trace> {
        match self.section {
            Section::Header => return err(last_line, format!("missing header `mmtrace {VERSION}`")),
            Section::Config => self.trace.config = self.config.resolve()?,
            _ => {}
        }
        if self.trace.tasks.is_empty() {
            return err(last_line, "no `task` line: a trace needs at least one task");
        }
        Ok(self.trace)
    }
}

/// Checks the `ID` token of a `file` or `task` line: present, a number, the next id.
fn declared_id(line: usize, what: &str, tok: Option<&str>, want: usize) -> Res<()> {
    let tok = match tok {
        Some(t) if !t.contains('=') && t != "huge" => t,
        _ => return err(line, format!("missing {what} id")),
    };
    match parse_number(tok, false) {
        Ok(id) if id == want as u64 => Ok(()),
        Ok(_) | Err(NumError::Overflow) => err(line, format!("{what} id {tok} out of order: expected {want}")),
        Err(NumError::Bad) => err(line, format!("bad {what} id `{tok}`")),
    }
}

/// The most keys any line allows (`config`'s).
const MAX_KEYS: usize = CONFIG_KEYS.len();

/// The `key=value` arguments of one line, checked against the keys allowed there. Each key
/// is allowed and given once, so there are at most `MAX_KEYS` (no allocation per line).
struct Args<'a> {
    line: usize,
    /// The operation or line kind, for messages.
    what: &'a str,
    pairs: [(&'a str, &'a str); MAX_KEYS],
    len: usize,
}

impl<'a> Args<'a> {
    fn new(line: usize, what: &'a str, toks: &[&'a str], allowed: &[&str]) -> Res<Args<'a>> {
        assert!(allowed.len() <= MAX_KEYS, "{what} allows more than MAX_KEYS keys");
        let mut args = Args {
            line,
            what,
            pairs: [("", ""); MAX_KEYS],
            len: 0,
        };
        for &tok in toks {
            let Some((key, value)) = tok.split_once('=') else {
                return err(line, format!("expected KEY=VALUE, found `{tok}`"));
            };
            if !allowed.contains(&key) {
                return err(line, format!("unknown key `{key}` for {what}"));
            }
            if args.pairs().iter().any(|(k, _)| *k == key) {
                return err(line, format!("repeated key `{key}`"));
            }
            args.pairs[args.len] = (key, value);
            args.len += 1;
        }
        Ok(args)
    }

    /// The arguments given, in line order.
    fn pairs(&self) -> &[(&'a str, &'a str)] {
        &self.pairs[..self.len]
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs().iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn req(&self, key: &str) -> Res<&'a str> {
        match self.get(key) {
            Some(v) => Ok(v),
            None => err(self.line, format!("missing key `{key}` for {}", self.what)),
        }
    }

    /// A required byte quantity (`k`/`m` suffixes allowed).
    fn bytes(&self, key: &str) -> Res<u64> {
        number(self.line, key, self.req(key)?, true)
    }

    /// A required plain number (no suffix).
    fn num(&self, key: &str) -> Res<u64> {
        number(self.line, key, self.req(key)?, false)
    }

    fn ranged_u32(&self, key: &str, (lo, hi): (u32, u32)) -> Res<u32> {
        let v = ranged(self.line, key, self.num(key)?, u64::from(lo), u64::from(hi))?;
        Ok(v as u32)
    }

    fn cpu(&self, key: &str, cpus: u32) -> Res<CpuId> {
        self.ranged_u32(key, (0, cpus.saturating_sub(1)))
    }

    fn file(&self, key: &str, files: usize) -> Res<FileId> {
        let id = self.num(key)?;
        if files == 0 {
            return err(self.line, format!("{key}={id} but the trace has no files"));
        }
        Ok(ranged(self.line, key, id, 0, files as u64 - 1)? as FileId)
    }

    fn prot(&self, key: &str) -> Res<Prot> {
        let v = self.req(key)?;
        if v == "none" {
            return Ok(Prot::NONE);
        }
        let bad = || {
            err(
                self.line,
                format!("bad {key} `{v}`: expected `none` or letters of `rwx`"),
            )
        };
        if v.is_empty() {
            return bad();
        }
        let mut bits = 0u8;
        for c in v.chars() {
            let bit = match c {
                'r' => Prot::R.bits(),
                'w' => Prot::W.bits(),
                'x' => Prot::X.bits(),
                _ => return bad(),
            };
            if bits & bit != 0 {
                return err(self.line, format!("repeated `{c}` in {key}=`{v}`"));
            }
            bits |= bit;
        }
        Ok(Prot::from_bits(bits))
    }
}

fn ranged(line: usize, key: &str, v: u64, lo: u64, hi: u64) -> Res<u64> {
    if v < lo || v > hi {
        return err(line, format!("{key}={v} is out of range {lo}..{hi}"));
    }
    Ok(v)
}

fn on_off(line: usize, key: &str, value: &str) -> Res<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => err(line, format!("bad value `{value}` for `{key}`: expected `on` or `off`")),
    }
}

/// Why a token is not a number.
enum NumError {
    /// Not a number of TRACE.md's syntax.
    Bad,
    /// A number, but more than 64 bits.
    Overflow,
}

/// A number of TRACE.md: decimal or `0x` hex; with `bytes`, optionally ending in `k` or `m`.
fn parse_number(text: &str, bytes: bool) -> Result<u64, NumError> {
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'k') if bytes => (&text[..text.len() - 1], 1024u64),
        Some(b'm') if bytes => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    let (digits, radix) = match digits.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumError::Bad);
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = u64::from(c.to_digit(radix).unwrap_or(0));
        v = v
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
            .ok_or(NumError::Overflow)?;
    }
    v.checked_mul(scale).ok_or(NumError::Overflow)
}

/// [`parse_number`], with an error naming `key`.
fn number(line: usize, key: &str, text: &str, bytes: bool) -> Res<u64> {
    match parse_number(text, bytes) {
        Ok(v) => Ok(v),
        Err(NumError::Bad) => err(line, format!("bad number `{text}` for `{key}`")),
        Err(NumError::Overflow) => err(line, format!("number `{text}` for `{key}` overflows 64 bits")),
    }
}

/// `mmap` flags: exactly one of `shared`/`private`, plus any of `fixed`, `noreplace`,
/// `populate`, each at most once.
fn mmap_flags(line: usize, value: &str) -> Res<MmapFlags> {
    let mut flags = MmapFlags::default();
    let (mut shared, mut private) = (false, false);
    let mut seen: Vec<&str> = Vec::new();
    for name in value.split(',') {
        if seen.contains(&name) {
            return err(line, format!("repeated flag `{name}`"));
        }
        seen.push(name);
        match name {
            "shared" => shared = true,
            "private" => private = true,
            "fixed" => flags.fixed = true,
            "noreplace" => flags.noreplace = true,
            "populate" => flags.populate = true,
            _ => return err(line, format!("unknown mmap flag `{name}`")),
        }
    }
    if shared == private {
        return err(line, "mmap flags need exactly one of `shared` or `private`");
    }
    flags.shared = shared;
    Ok(flags)
}

/// `mremap` flags: any of `maymove`, `fixed`, each at most once.
fn mremap_flags(line: usize, value: &str) -> Res<MremapFlags> {
    let mut flags = MremapFlags::default();
    let mut seen: Vec<&str> = Vec::new();
    for name in value.split(',') {
        if seen.contains(&name) {
            return err(line, format!("repeated flag `{name}`"));
        }
        seen.push(name);
        match name {
            "maymove" => flags.maymove = true,
            "fixed" => flags.fixed = true,
            _ => return err(line, format!("unknown mremap flag `{name}`")),
        }
    }
    Ok(flags)
}
