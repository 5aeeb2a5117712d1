//! The canonical mmtrace printer (TRACE.md, version 1).
//!
//! What it keeps true:
//! - The output for a trace is unique (canonical): one `config` line with only the keys that
//!   differ from [`Config::default`] (`highmem` compared with `frames/2`), in TRACE.md's table
//!   order; arguments in TRACE.md's order; byte quantities in lowercase `0x` hex (zero as `0`,
//!   as TRACE.md's replay example prints `off=0`); ids, CPUs and values in decimal; flags in a
//!   fixed order; `schedule` lines of at most [`SCHEDULE_TOKENS_PER_LINE`] tokens.
//! - `parse(&trace.to_string()) == Ok(trace)` for every valid trace.
//! - Printing never fails or panics, even for a trace that is not valid.

use std::fmt;

use mm_reference::{Call, Config, MmapFlags, MremapFlags, Op};

use super::{Trace, VERSION};

/// The most tokens the printer puts on one `schedule` line.
pub const SCHEDULE_TOKENS_PER_LINE: usize = 32;

/// Prints one operation line, `TASK: OP KEY=VALUE ...`, without a newline.
pub struct OpDisplay<'a>(pub &'a Call);

/// The canonical text of one operation line (as in a trace and in `replay` output).
pub fn print_op(call: &Call) -> OpDisplay<'_> {
    OpDisplay(call)
}

/// A byte quantity: lowercase hex with `0x`; zero is `0`.
struct Hex(u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("0")
        } else {
            write!(f, "{:#x}", self.0)
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn mmap_flags(f: &mut fmt::Formatter<'_>, flags: MmapFlags) -> fmt::Result {
    f.write_str(if flags.shared { "shared" } else { "private" })?;
    for (on, name) in [
        (flags.fixed, "fixed"),
        (flags.noreplace, "noreplace"),
        (flags.populate, "populate"),
    ] {
        if on {
            write!(f, ",{name}")?;
        }
    }
    Ok(())
}

fn mremap_flags(f: &mut fmt::Formatter<'_>, flags: MremapFlags) -> fmt::Result {
    match (flags.maymove, flags.fixed) {
        (true, true) => f.write_str("maymove,fixed"),
        (true, false) => f.write_str("maymove"),
        (false, true) => f.write_str("fixed"),
        (false, false) => Ok(()),
    }
}

impl fmt::Display for OpDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Call { task, op } = *self.0;
        write!(f, "{task}: {}", op.name())?;
        match op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                off,
            } => {
                write!(f, " addr={} len={} prot={prot} flags=", Hex(addr), Hex(len))?;
                mmap_flags(f, flags)?;
                match file {
                    Some(file) => write!(f, " file={file} off={}", Hex(off)),
                    None if off != 0 => write!(f, " off={}", Hex(off)),
                    None => Ok(()),
                }
            }
            Op::Munmap { addr, len } | Op::Pageout { addr, len } => {
                write!(f, " addr={} len={}", Hex(addr), Hex(len))
            }
            Op::Mprotect { addr, len, prot } => {
                write!(f, " addr={} len={} prot={prot}", Hex(addr), Hex(len))
            }
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            } => {
                write!(f, " addr={} old={} new={}", Hex(addr), Hex(old), Hex(new))?;
                if flags.maymove || flags.fixed {
                    f.write_str(" flags=")?;
                    mremap_flags(f, flags)?;
                }
                match to {
                    Some(to) => write!(f, " to={}", Hex(to)),
                    None => Ok(()),
                }
            }
            Op::Write { file, off, len, buf } | Op::Read { file, off, len, buf } => {
                write!(f, " file={file} off={} len={} buf={}", Hex(off), Hex(len), Hex(buf))
            }
            Op::Truncate { file, size } => write!(f, " file={file} size={}", Hex(size)),
            Op::Load { addr } => write!(f, " addr={}", Hex(addr)),
            Op::Store { addr, value } => write!(f, " addr={} value={value}", Hex(addr)),
            Op::Fork { task, cpu } => {
                write!(f, " task={task}")?;
                match cpu {
                    Some(cpu) => write!(f, " cpu={cpu}"),
                    None => Ok(()),
                }
            }
            Op::Exit => Ok(()),
        }
    }
}

/// The `key=value` pairs of the canonical `config` line: the keys that differ from the
/// default, in TRACE.md's table order.
fn config_pairs(c: &Config) -> Vec<String> {
    let d = Config::default();
    let mut out = Vec::new();
    if c.cpus != d.cpus {
        out.push(format!("cpus={}", c.cpus));
    }
    if c.ptrs != d.ptrs {
        out.push(format!("ptrs={}", c.ptrs));
    }
    if c.frames != d.frames {
        out.push(format!("frames={}", c.frames));
    }
    if c.highmem != c.frames / 2 {
        out.push(format!("highmem={}", c.highmem));
    }
    if c.pkmap != d.pkmap {
        out.push(format!("pkmap={}", c.pkmap));
    }
    if c.atomic != d.atomic {
        out.push(format!("atomic={}", c.atomic));
    }
    if c.highpte != d.highpte {
        out.push(format!("highpte={}", on_off(c.highpte)));
    }
    if c.ptshare != d.ptshare {
        out.push(format!("ptshare={}", on_off(c.ptshare)));
    }
    if c.hugeshare != d.hugeshare {
        out.push(format!("hugeshare={}", on_off(c.hugeshare)));
    }
    if c.bugs != d.bugs {
        out.push(format!("bugs={}", c.bugs));
    }
    if c.steps != d.steps {
        out.push(format!("steps={}", c.steps));
    }
    out
}

impl fmt::Display for Trace {
    /// The canonical text of the trace, each line ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mmtrace {VERSION}")?;
        let pairs = config_pairs(&self.config);
        if !pairs.is_empty() {
            writeln!(f, "config {}", pairs.join(" "))?;
        }
        for (id, file) in self.files.iter().enumerate() {
            write!(f, "file {id} size={}", Hex(file.size))?;
            writeln!(f, "{}", if file.huge { " huge" } else { "" })?;
        }
        for (id, task) in self.tasks.iter().enumerate() {
            writeln!(f, "task {id} mm={} cpu={}", task.mm, task.cpu)?;
        }
        for call in &self.ops {
            writeln!(f, "{}", print_op(call))?;
        }
        for chunk in self.schedule.chunks(SCHEDULE_TOKENS_PER_LINE) {
            f.write_str("schedule")?;
            for tok in chunk {
                write!(f, " {tok}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
