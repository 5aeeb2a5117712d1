//! Plain types shared by the machine, the flat spec and everything outside the reference.
//!
//! Nothing here has behaviour beyond construction, naming and range checks: the machine
//! (`machine/`) and the flat spec (`spec/`) must not share logic, only these types. Every
//! value here is `Copy` or cheaply cloned, and none of them refers to reference state.

use std::fmt;

/// Bytes in a page (x86-64, 4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Lowest user address: `mmap_min_addr`. User space is `[USER_BASE, task_size)`.
pub const USER_BASE: u64 = 0x10000;

/// Identifies a task (a thread); dense, 0-based, in order of creation.
pub type TaskId = u32;
/// Identifies a CPU; `0..cpus`.
pub type CpuId = u32;
/// Identifies a file of the trace; `0..files`.
pub type FileId = u32;

/// Page protection, as `PROT_READ | PROT_WRITE | PROT_EXEC`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    pub const NONE: Prot = Prot(0);
    pub const R: Prot = Prot(1);
    pub const W: Prot = Prot(2);
    pub const X: Prot = Prot(4);
    pub const RW: Prot = Prot(3);

    /// From the `PROT_*` bits (read 1, write 2, exec 4); other bits are dropped.
    pub const fn from_bits(bits: u8) -> Prot {
        Prot(bits & 7)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn read(self) -> bool {
        self.0 & 1 != 0
    }
    pub const fn write(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn exec(self) -> bool {
        self.0 & 4 != 0
    }
    /// x86-64 without protection keys: any of `rwx` makes the page readable.
    pub const fn readable(self) -> bool {
        self.0 != 0
    }
    /// Writable pages: `w` (which implies `r` on x86-64).
    pub const fn writable(self) -> bool {
        self.write()
    }
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Prot {
    /// `none`, or the letters of `rwx` present, in that order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        if self.read() {
            f.write_str("r")?;
        }
        if self.write() {
            f.write_str("w")?;
        }
        if self.exec() {
            f.write_str("x")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `mmap` flags: exactly one of shared/private (`shared` says which), plus modifiers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MmapFlags {
    /// MAP_SHARED when true, MAP_PRIVATE when false.
    pub shared: bool,
    /// MAP_FIXED.
    pub fixed: bool,
    /// MAP_FIXED_NOREPLACE.
    pub noreplace: bool,
    /// MAP_POPULATE.
    pub populate: bool,
}

/// `mremap` flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MremapFlags {
    /// MREMAP_MAYMOVE.
    pub maymove: bool,
    /// MREMAP_FIXED.
    pub fixed: bool,
}

/// One operation: a system call or a user access, with Linux's arguments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Op {
    /// mmap(2). `file: None` is an anonymous mapping.
    Mmap {
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MmapFlags,
        file: Option<FileId>,
        off: u64,
    },
    /// munmap(2).
    Munmap { addr: u64, len: u64 },
    /// mprotect(2).
    Mprotect { addr: u64, len: u64, prot: Prot },
    /// mremap(2); `to` is the new address (used with `fixed`).
    Mremap {
        addr: u64,
        old: u64,
        new: u64,
        flags: MremapFlags,
        to: Option<u64>,
    },
    /// pwrite(2) of `len` bytes at `off` of `file` from the user buffer at `buf`.
    Write { file: FileId, off: u64, len: u64, buf: u64 },
    /// pread(2) of `len` bytes at `off` of `file` into the user buffer at `buf`.
    Read { file: FileId, off: u64, len: u64, buf: u64 },
    /// ftruncate(2).
    Truncate { file: FileId, size: u64 },
    /// A one-byte user read.
    Load { addr: u64 },
    /// A one-byte user write.
    Store { addr: u64, value: u8 },
    /// madvise(MADV_PAGEOUT).
    Pageout { addr: u64, len: u64 },
    /// fork(2): creates task `task` in a copy of the caller's address space, on `cpu`
    /// (the parent's when `None`).
    Fork { task: TaskId, cpu: Option<CpuId> },
    /// exit(2) of the calling task.
    Exit,
}

impl Op {
    /// The trace name of the operation.
    pub const fn name(&self) -> &'static str {
        match self {
            Op::Mmap { .. } => "mmap",
            Op::Munmap { .. } => "munmap",
            Op::Mprotect { .. } => "mprotect",
            Op::Mremap { .. } => "mremap",
            Op::Write { .. } => "write",
            Op::Read { .. } => "read",
            Op::Truncate { .. } => "truncate",
            Op::Load { .. } => "load",
            Op::Store { .. } => "store",
            Op::Pageout { .. } => "pageout",
            Op::Fork { .. } => "fork",
            Op::Exit => "exit",
        }
    }
}

/// One operation of one task: a line of the program.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Call {
    pub task: TaskId,
    pub op: Op,
}

/// Whether memory ran out during an operation: the machine's account, handed to the flat spec.
///
/// Linux promises nothing about when memory runs out, so the spec cannot predict it: the
/// machine tells it, and the spec still judges everything else (a failed access still has to
/// be one that would otherwise have succeeded; a short copy still has to be a prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Oom {
    /// Memory did not run out.
    #[default]
    No,
    /// A kernel allocation failed after `n` bytes of the operation:
    /// - write: at write_begin of the page holding `off + n` (no size change there), read: at
    ///   the read-in of that page; the result is `Count(n)`, or `ENOMEM` when `n == 0`;
    /// - mmap with populate: populate stopped at `addr + n` (the mmap itself succeeded);
    /// - mremap: the page-table move of the piece whose source starts at `addr + n` failed,
    ///   after everything before it (the fixed target's unmap, the shrink, earlier pieces);
    ///   the result is `ENOMEM`;
    /// - fork: `n == 0`, no child, `ENOMEM`; load and store: `n == 0`, the access gives `OOM`.
    After(u64),
    /// As `After(n)` for a write whose write_begin failed on a retry of the page holding
    /// `off + n` (after a copy of nothing and a fault-in of the source): the first round's
    /// write_end had already grown the file to `off + n`.
    AfterGrow(u64),
    /// A fault on the user buffer of a write or read ran out of memory at byte `n`: in Linux
    /// a kernel-mode fault that cannot get memory fails like a bad address, so the copy stops
    /// there as at any faulting byte (`Count(n)`, or `EFAULT` when `n == 0`).
    Fault(u64),
}

/// An error number, as the system call returns it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Errno {
    EPERM,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENODEV,
    EINVAL,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    EOVERFLOW,
}

impl Errno {
    pub const ALL: [Errno; 14] = [
        Errno::EPERM,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EEXIST,
        Errno::ENODEV,
        Errno::EINVAL,
        Errno::ETXTBSY,
        Errno::EFBIG,
        Errno::ENOSPC,
        Errno::EOVERFLOW,
    ];

    /// The symbolic name (`EINVAL`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::EBADF => "EBADF",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::ENODEV => "ENODEV",
            Errno::EINVAL => "EINVAL",
            Errno::ETXTBSY => "ETXTBSY",
            Errno::EFBIG => "EFBIG",
            Errno::ENOSPC => "ENOSPC",
            Errno::EOVERFLOW => "EOVERFLOW",
        }
    }

    /// The x86-64 Linux number.
    pub const fn number(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::EBADF => 9,
            Errno::EAGAIN => 11,
            Errno::ENOMEM => 12,
            Errno::EACCES => 13,
            Errno::EFAULT => 14,
            Errno::EBUSY => 16,
            Errno::EEXIST => 17,
            Errno::ENODEV => 19,
            Errno::EINVAL => 22,
            Errno::ETXTBSY => 26,
            Errno::EFBIG => 27,
            Errno::ENOSPC => 28,
            Errno::EOVERFLOW => 75,
        }
    }

    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn from_number(n: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.number() == n)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The observable result of one operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OpResult {
    /// An address (mmap, mremap), printed in hex.
    Addr(u64),
    /// Success of a call that returns 0 (munmap, mprotect, truncate, pageout), printed `0`.
    Zero,
    /// A byte count (write, read), printed in decimal.
    Count(u64),
    /// The byte a load read, printed in decimal.
    Byte(u8),
    /// Success of store, fork and exit, printed `ok`.
    Done,
    /// A failed system call.
    Err(Errno),
    /// A user access killed by SIGSEGV (the task goes on).
    Sigsegv,
    /// A user access killed by SIGBUS (the task goes on).
    Sigbus,
    /// A user access that found no memory (the task goes on).
    Oom,
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OpResult::Addr(a) => write!(f, "{a:#x}"),
            OpResult::Zero => f.write_str("0"),
            OpResult::Count(n) => write!(f, "{n}"),
            OpResult::Byte(b) => write!(f, "{b}"),
            OpResult::Done => f.write_str("ok"),
            OpResult::Err(e) => f.write_str(e.name()),
            OpResult::Sigsegv => f.write_str("SIGSEGV"),
            OpResult::Sigbus => f.write_str("SIGBUS"),
            OpResult::Oom => f.write_str("OOM"),
        }
    }
}

/// A file of the trace, as it is when the run starts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileInit {
    pub size: u64,
    /// A hugetlbfs file: zero-filled, no backing store, size a multiple of the huge page.
    pub huge: bool,
}

/// A task present when the run starts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TaskInit {
    /// The address space; tasks with the same `mm` are threads of one process.
    pub mm: u32,
    pub cpu: CpuId,
}

/// Byte `o` of file `f` as the run starts (TRACE.md): never 0.
pub const fn initial_file_byte(file: FileId, offset: u64) -> u8 {
    ((offset + 17 * file as u64) % 251 + 1) as u8
}

/// A historic kernel bug that can be switched back on (MODEL.md's bug zoo).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Bug {
    KmapNested,
    WriteFaultUnderPageLock,
    HighpteKmapOverAlloc,
    KmapAtomicUnordered,
    KmapAtomicIrqSlot,
    PtshareAnonVma,
    PtshareFlushOwnMm,
    PtshareCountRace,
    PtshareRss,
    PtshareEndWrap,
    PtshareMremapNewrange,
    HugetlbFaultUnlocked,
    HugetlbUnshareNoFlush,
}

impl Bug {
    /// Every bug, in MODEL.md's order (which is also the order of its bit in [`BugSet`]).
    pub const ALL: [Bug; 13] = [
        Bug::KmapNested,
        Bug::WriteFaultUnderPageLock,
        Bug::HighpteKmapOverAlloc,
        Bug::KmapAtomicUnordered,
        Bug::KmapAtomicIrqSlot,
        Bug::PtshareAnonVma,
        Bug::PtshareFlushOwnMm,
        Bug::PtshareCountRace,
        Bug::PtshareRss,
        Bug::PtshareEndWrap,
        Bug::PtshareMremapNewrange,
        Bug::HugetlbFaultUnlocked,
        Bug::HugetlbUnshareNoFlush,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Bug::KmapNested => "kmap-nested",
            Bug::WriteFaultUnderPageLock => "write-fault-under-page-lock",
            Bug::HighpteKmapOverAlloc => "highpte-kmap-over-alloc",
            Bug::KmapAtomicUnordered => "kmap-atomic-unordered",
            Bug::KmapAtomicIrqSlot => "kmap-atomic-irq-slot",
            Bug::PtshareAnonVma => "ptshare-anon-vma",
            Bug::PtshareFlushOwnMm => "ptshare-flush-own-mm",
            Bug::PtshareCountRace => "ptshare-count-race",
            Bug::PtshareRss => "ptshare-rss",
            Bug::PtshareEndWrap => "ptshare-end-wrap",
            Bug::PtshareMremapNewrange => "ptshare-mremap-newrange",
            Bug::HugetlbFaultUnlocked => "hugetlb-fault-unlocked",
            Bug::HugetlbUnshareNoFlush => "hugetlb-unshare-no-flush",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether the reference models this bug yet: the switch of a bug that is not modelled
    /// changes nothing (the kernel paths it lives in come with later work: MODEL.md's table
    /// names the subsystem of each).
    pub const fn modelled(self) -> bool {
        match self {
            Bug::WriteFaultUnderPageLock
            | Bug::KmapNested
            | Bug::HighpteKmapOverAlloc
            | Bug::KmapAtomicUnordered
            | Bug::KmapAtomicIrqSlot
            | Bug::PtshareAnonVma
            | Bug::PtshareFlushOwnMm
            | Bug::PtshareCountRace
            | Bug::PtshareRss
            | Bug::PtshareEndWrap
            | Bug::PtshareMremapNewrange
            | Bug::HugetlbFaultUnlocked
            | Bug::HugetlbUnshareNoFlush => true,
        }
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of [`Bug`]s. Prints as a comma list in MODEL.md's order, or `none`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BugSet(u32);

impl BugSet {
    pub const NONE: BugSet = BugSet(0);

    pub const fn contains(self, bug: Bug) -> bool {
        self.0 & bug.bit() != 0
    }
    pub fn insert(&mut self, bug: Bug) {
        self.0 |= bug.bit();
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Bug> {
        Bug::ALL.into_iter().filter(move |b| self.contains(*b))
    }

    /// Parses `none` or a comma list of bug names; the error names the unknown bug.
    pub fn parse(list: &str) -> Result<BugSet, String> {
        let mut set = BugSet::NONE;
        if list == "none" {
            return Ok(set);
        }
        for name in list.split(',') {
            match Bug::from_name(name) {
                Some(b) => set.insert(b),
                None => return Err(format!("unknown bug `{name}`")),
            }
        }
        Ok(set)
    }
}

impl fmt::Display for BugSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(b.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for BugSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The run's configuration (TRACE.md's `config` keys), always fully resolved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Config {
    pub cpus: u32,
    pub ptrs: u32,
    pub frames: u32,
    pub highmem: u32,
    pub pkmap: u32,
    pub atomic: u32,
    pub highpte: bool,
    pub ptshare: bool,
    pub hugeshare: bool,
    pub bugs: BugSet,
    pub steps: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cpus: 2,
            ptrs: 8,
            frames: 256,
            highmem: 128,
            pkmap: 8,
            atomic: 16,
            highpte: true,
            ptshare: true,
            hugeshare: true,
            bugs: BugSet::NONE,
            steps: 100_000,
        }
    }
}

/// Limits of the configuration keys (TRACE.md), shared by the parser and [`Config::check`].
pub mod limits {
    pub const CPUS: (u32, u32) = (1, 8);
    pub const PTRS: (u32, u32) = (4, 512);
    pub const FRAMES: (u32, u32) = (16, 65536);
    pub const PKMAP: (u32, u32) = (1, 1024);
    pub const ATOMIC: (u32, u32) = (2, 64);
    pub const STEPS: (u64, u64) = (1, 10_000_000);
}

impl Config {
    /// Bytes in a huge page: one pmd entry maps `ptrs` pages.
    pub const fn huge_page_size(&self) -> u64 {
        self.ptrs as u64 * PAGE_SIZE
    }
    /// Bytes mapped by one pud entry (one pmd page): `ptrs` huge pages.
    pub const fn pud_span(&self) -> u64 {
        self.ptrs as u64 * self.huge_page_size()
    }
    /// The end of user space: `ptrs^4 * 4096`.
    pub const fn task_size(&self) -> u64 {
        let p = self.ptrs as u64;
        p * p * p * p * PAGE_SIZE
    }

    /// Checks every key against TRACE.md's ranges; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        fn within<T: PartialOrd + fmt::Display>(key: &str, v: T, (lo, hi): (T, T)) -> Result<(), String> {
            if v < lo || v > hi {
                return Err(format!("{key}={v} is out of range {lo}..{hi}"));
            }
            Ok(())
        }
        within("cpus", self.cpus, limits::CPUS)?;
        within("ptrs", self.ptrs, limits::PTRS)?;
        if !self.ptrs.is_power_of_two() {
            return Err(format!("ptrs={} is not a power of two", self.ptrs));
        }
        within("frames", self.frames, limits::FRAMES)?;
        within("highmem", self.highmem, (0, self.frames - 8))?;
        within("pkmap", self.pkmap, limits::PKMAP)?;
        within("atomic", self.atomic, limits::ATOMIC)?;
        within("steps", self.steps, limits::STEPS)?;
        Ok(())
    }
}

/// The oracles: each is an outcome name of TRACE.md.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Oracle {
    Rss,
    ShareCount,
    Refcount,
    Tlb,
    Kmap,
    Deadlock,
    LockOrder,
    AtomicSleep,
    UseAfterFree,
    Leak,
    Spec,
    Livelock,
}

impl Oracle {
    pub const ALL: [Oracle; 12] = [
        Oracle::Rss,
        Oracle::ShareCount,
        Oracle::Refcount,
        Oracle::Tlb,
        Oracle::Kmap,
        Oracle::Deadlock,
        Oracle::LockOrder,
        Oracle::AtomicSleep,
        Oracle::UseAfterFree,
        Oracle::Leak,
        Oracle::Spec,
        Oracle::Livelock,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Oracle::Rss => "rss",
            Oracle::ShareCount => "share-count",
            Oracle::Refcount => "refcount",
            Oracle::Tlb => "tlb",
            Oracle::Kmap => "kmap",
            Oracle::Deadlock => "deadlock",
            Oracle::LockOrder => "lock-order",
            Oracle::AtomicSleep => "atomic-sleep",
            Oracle::UseAfterFree => "use-after-free",
            Oracle::Leak => "leak",
            Oracle::Spec => "spec",
            Oracle::Livelock => "livelock",
        }
    }

    pub fn from_name(name: &str) -> Option<Oracle> {
        Oracle::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl fmt::Display for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A violation found in the modelled kernel: an oracle's verdict, never a model bug.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Violation {
    pub oracle: Oracle,
    /// Names the tasks, CPUs, addresses, frames and locks involved.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.oracle, self.message)
    }
}

/// One scheduling decision of a `schedule` (TRACE.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SchedToken {
    /// Run this task for one step (skipped if it is blocked, finished or not yet created).
    Task(TaskId),
    /// Deliver an interrupt on this CPU now.
    Irq(CpuId),
}

impl fmt::Display for SchedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedToken::Task(t) => write!(f, "{t}"),
            SchedToken::Irq(c) => write!(f, "irq{c}"),
        }
    }
}
