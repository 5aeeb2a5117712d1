//! The host side of `conform`: runs one trace's operations on this machine's own Linux kernel,
//! in a child process of its own, and reports what the kernel did.
//!
//! What it keeps true:
//! - Every trace runs in a fresh child made by `fork()` (the CLI is single-threaded), so one
//!   trace's mappings, memfds and signal handlers never reach another trace or the CLI. The
//!   child talks to the parent only through a pipe, one text line per operation, and ends
//!   with `_exit` (no destructors, no double-flushed stdio).
//! - One host process per address space of the trace, each running the operations of its
//!   tasks (threads of one mm run one after the other in it, as the reference runs them
//!   without a schedule): the child hosts the first declared address space and forks one
//!   process per other declared one before any operation runs (their windows as empty as a
//!   new mm), and a trace's `fork` is a real `fork()` of the process of the forking task,
//!   the new process hosting the new task. Operations run one at a time in file order: a
//!   turn counter in a shared page says which is next, and the process whose task it is runs
//!   it, reports it and passes the turn on. Each process reaps its own children before it
//!   exits; a child that died of a signal makes its parent die of the same signal (and tell
//!   every process to stop), so the signal reaches the parent CLI with the first operation
//!   left unreported. A flag in the same page stops every process once one of them cannot
//!   follow the trace. No core dumps are written.
//! - Trace address `a` is host address `W + a`, where the window `[W, W + TASK_SIZE)` was
//!   free in the child when it started; an inaccessible guard mapping right above it stands
//!   in for the end of user space (nothing grows or is placed past it in place). On a trace's
//!   behalf the child maps, unmaps and touches host memory only inside the window, except for
//!   the placements of non-fixed `mmap` and moving `mremap`, which it moves to the
//!   reference's address in the window (or undoes) before anything else runs.
//! - An operation is not run on the host when the host cannot reproduce what Linux would do
//!   with the trace's own address space: an address range reaching outside user space
//!   `[0x10000, TASK_SIZE)`; a user access the reference could not back with a frame; a read
//!   of an execute-only mapping on a CPU with protection keys; a copy whose buffer maps the
//!   file bytes it overwrites less than a page ahead of where it reads. If the reference says
//!   such an operation may have changed state, nothing after it is run either.
//! - A one-byte user access that faults inside the window while the child expects it is
//!   turned into `SIGSEGV`/`SIGBUS` results by a handler that skips the faulting instruction;
//!   any other fault restores the default action and kills the child, which the parent reports.
//! - Every system call is made with `syscall(2)` directly, so the results are the kernel's,
//!   not a C library's. Files are memfds (shmem), filled with TRACE.md's initial bytes.

use std::fmt;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use mm_reference::{initial_file_byte, Errno, FileId, Op, OpResult, TaskId, PAGE_SIZE, USER_BASE};
use mm_targets::trace::{print_op, Trace};

/// The largest user space (`TASK_SIZE` of the trace's config) the host window can hold.
pub const MAX_TASK_SIZE: u64 = 1 << 40;

/// Where a host window may start, tried in this order: far from the program, its heap and the
/// top-down mmap area, and aligned to 16 TiB so host addresses read as `W | a`.
const WINDOW_CANDIDATES: [u64; 6] = [
    0x2000_0000_0000,
    0x3000_0000_0000,
    0x1000_0000_0000,
    0x4000_0000_0000,
    0x5000_0000_0000,
    0x6000_0000_0000,
];

/// The most trace files the runner recognises in /proc/self/maps.
const MAX_FILES: FileId = 1024;

/// Distance kept free around the window when it is chosen.
const WINDOW_GUARD: u64 = 1 << 30;

/// What the kernel did with one operation, in the trace's terms.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Observed {
    /// A result as the reference would print it (addresses translated back out of the window).
    Result(OpResult),
    /// An address result that lies outside the window (a host address, untranslated).
    Foreign(u64),
    /// An errno that [`Errno`] has no name for.
    UnknownErrno(i32),
    /// The operation was not run on the host.
    NotRun,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Result(r) => write!(f, "{r}"),
            Observed::Foreign(a) => write!(f, "host {a:#x}"),
            Observed::UnknownErrno(n) => write!(f, "errno {n}"),
            Observed::NotRun => f.write_str("-"),
        }
    }
}

/// How an observation may be compared with the reference's result.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Note {
    /// Compare as is.
    Plain,
    /// Not run: an address range reaches outside `[0x10000, TASK_SIZE)`.
    Outside,
    /// Both placed a non-fixed mmap or moved an mremap, at different addresses; the host's
    /// mapping was moved to the reference's address.
    Placement,
    /// The host placed (moved) a mapping where the reference found no room in its smaller
    /// address space (`ENOMEM`); the host's mapping was undone.
    NoRoom,
    /// Not run: the reference ran out of page frames for this user access.
    RefOom,
    /// Not run: the access reads an execute-only mapping, which protection keys make
    /// unreadable on this host.
    ExecOnly,
    /// Not run: a write's or read's user buffer maps the bytes of the same file that the copy
    /// writes before it reads them; which bytes it then reads depends on how the CPU's string
    /// copy is carried out, not on Linux.
    Aliased,
    /// Not run: an earlier operation left the host unable to follow the trace.
    Stopped,
    /// Not run: the operation is outside what `conform` supports.
    Unsupported,
    /// The host's placement could not be moved to the reference's address: a difference, and
    /// nothing after it is run.
    RelocateFailed,
}

impl Note {
    const ALL: [Note; 10] = [
        Note::Plain,
        Note::Outside,
        Note::Placement,
        Note::NoRoom,
        Note::RefOom,
        Note::ExecOnly,
        Note::Aliased,
        Note::Stopped,
        Note::Unsupported,
        Note::RelocateFailed,
    ];

    fn code(self) -> &'static str {
        match self {
            Note::Plain => "plain",
            Note::Outside => "outside",
            Note::Placement => "placement",
            Note::NoRoom => "noroom",
            Note::RefOom => "refoom",
            Note::ExecOnly => "execonly",
            Note::Aliased => "aliased",
            Note::Stopped => "stopped",
            Note::Unsupported => "unsupported",
            Note::RelocateFailed => "relocfail",
        }
    }

    fn from_code(s: &str) -> Option<Note> {
        Note::ALL.into_iter().find(|n| n.code() == s)
    }
}

/// The host's account of one operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Record {
    pub observed: Observed,
    pub note: Note,
}

impl Record {
    fn plain(observed: Observed) -> Record {
        Record {
            observed,
            note: Note::Plain,
        }
    }
    fn not_run(note: Note) -> Record {
        Record {
            observed: Observed::NotRun,
            note,
        }
    }
}

/// Everything the host run produced.
#[derive(Debug)]
pub struct HostRun {
    /// One entry per operation of the trace, in file order; `None` if the child never
    /// reported it (it died first).
    pub records: Vec<Option<Record>>,
    /// Why the host run did not finish normally, if it did not.
    pub failure: Option<String>,
}

/// Runs `trace` on the host kernel in a child process. `reference[i]` is the reference's
/// result for operation `i` (`None`: it did not complete); the child needs it to follow the
/// reference's placements. The trace must be one `conform` supports.
pub fn run(trace: &Trace, reference: &[Option<OpResult>]) -> HostRun {
    let mut records = vec![None; trace.ops.len()];
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = std::io::Error::last_os_error();
        return HostRun {
            records,
            failure: Some(format!("cannot create a pipe: {e}")),
        };
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // Nothing buffered may be duplicated into the child.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the CLI is single-threaded, so the child is a complete copy of a consistent
    // process; it only runs `child_main`, which ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: both descriptors were just created by pipe2 and are owned here.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return HostRun {
            records,
            failure: Some(format!("cannot fork: {e}")),
        };
    }
    if pid == 0 {
        // SAFETY: the read end belongs to the parent; the child drops its copy.
        unsafe { libc::close(read_fd) };
        child_main(trace, reference, write_fd);
    }
    // SAFETY: the write end belongs to the child now; closing ours lets EOF arrive.
    unsafe { libc::close(write_fd) };
    // SAFETY: `read_fd` is an open descriptor owned by nobody else; the File takes it over.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let mut text = String::new();
    let read_error = pipe.read_to_string(&mut text).err();
    drop(pipe);
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid int to fill.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };

    let mut failure = None;
    let mut setup_error = None;
    for line in text.lines() {
        if let Some(msg) = line.strip_prefix("E ") {
            setup_error = Some(msg.to_string());
        } else if let Some(msg) = line.strip_prefix("F ") {
            failure = Some(format!("the host processes failed: {msg}"));
        } else if let Some((i, rec)) = decode(line) {
            if i < records.len() {
                records[i] = Some(rec);
            }
        } else {
            failure = Some(format!("the host runner sent an unreadable line `{line}`"));
        }
    }
    let first_missing = records.iter().position(Option::is_none);
    let during = || match first_missing {
        Some(i) => format!(" while running `{}`", print_op(&trace.ops[i])),
        None => String::new(),
    };
    if let Some(msg) = setup_error {
        failure = Some(format!("the host runner could not start: {msg}"));
    } else if let Some(e) = read_error {
        failure = Some(format!("cannot read from the host runner: {e}"));
    } else if waited != pid {
        failure = Some(format!(
            "cannot wait for the host runner: {}",
            std::io::Error::last_os_error()
        ));
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        failure = Some(format!(
            "the host runner was killed by signal {sig} ({}){}",
            signal_name(sig),
            during()
        ));
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        failure = Some(format!(
            "the host runner exited with status {}{}",
            libc::WEXITSTATUS(status),
            during()
        ));
    } else if failure.is_none() && first_missing.is_some() {
        failure = Some(format!("the host runner stopped early{}", during()));
    }
    HostRun { records, failure }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL, perhaps the OOM killer",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "?",
    }
}

/// `R INDEX KIND VALUE NOTE`.
fn encode(index: usize, rec: &Record) -> String {
    let (kind, value): (&str, u64) = match rec.observed {
        Observed::Result(r) => match r {
            OpResult::Addr(a) => ("addr", a),
            OpResult::Zero => ("zero", 0),
            OpResult::Count(n) => ("count", n),
            OpResult::Byte(b) => ("byte", u64::from(b)),
            OpResult::Done => ("done", 0),
            OpResult::Err(e) => ("err", e.number() as u64),
            OpResult::Sigsegv => ("segv", 0),
            OpResult::Sigbus => ("bus", 0),
            OpResult::Oom => ("oom", 0),
        },
        Observed::Foreign(a) => ("foreign", a),
        Observed::UnknownErrno(n) => ("errno", n as u64),
        Observed::NotRun => ("notrun", 0),
    };
    format!("R {index} {kind} {value} {}\n", rec.note.code())
}

fn decode(line: &str) -> Option<(usize, Record)> {
    let toks: Vec<&str> = line.split(' ').collect();
    let [tag, index, kind, value, note] = toks[..] else {
        return None;
    };
    if tag != "R" {
        return None;
    }
    let index: usize = index.parse().ok()?;
    let value: u64 = value.parse().ok()?;
    let observed = match kind {
        "addr" => Observed::Result(OpResult::Addr(value)),
        "zero" => Observed::Result(OpResult::Zero),
        "count" => Observed::Result(OpResult::Count(value)),
        "byte" => Observed::Result(OpResult::Byte(u8::try_from(value).ok()?)),
        "done" => Observed::Result(OpResult::Done),
        "err" => Observed::Result(OpResult::Err(Errno::from_number(i32::try_from(value).ok()?)?)),
        "segv" => Observed::Result(OpResult::Sigsegv),
        "bus" => Observed::Result(OpResult::Sigbus),
        "oom" => Observed::Result(OpResult::Oom),
        "foreign" => Observed::Foreign(value),
        "errno" => Observed::UnknownErrno(i32::try_from(value).ok()?),
        "notrun" => Observed::NotRun,
        _ => return None,
    };
    Some((
        index,
        Record {
            observed,
            note: Note::from_code(note)?,
        },
    ))
}

/// The child: sets up the host, runs every operation (forking a process per address
/// space), reports each on `fd`, and exits.
fn child_main(trace: &Trace, reference: &[Option<OpResult>], fd: i32) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit; a runner killed by a signal writes no core dump.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let code = match Runner::new(trace) {
        Err(msg) => {
            write_all(fd, format!("E {}\n", msg.replace('\n', " ")).as_bytes());
            3
        }
        Ok(mut runner) => run_processes(trace, reference, fd, &mut runner),
    };
    // SAFETY: ends the child at once, without running the parent's atexit handlers or
    // flushing stdio buffers it inherited.
    unsafe { libc::_exit(code) }
}

/// What the host processes of one trace share: a page of their own, mapped shared before
/// the first of them forks.
#[repr(C)]
struct Control {
    /// The index of the next operation to run.
    turn: AtomicU64,
    /// Some process died or lost its turn: every process stops and exits.
    abort: AtomicBool,
    /// Some process could not follow the trace: nothing more is run (`Note::Stopped`).
    stopped: AtomicBool,
}

impl Control {
    fn new() -> Result<&'static Control, String> {
        // SAFETY: a fresh shared anonymous page, placed by the kernel; zero-filled memory is
        // a valid `Control` (atomics of 0 and false), and it is never unmapped, so the
        // reference lives as long as the process.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return Err(format!("cannot map a shared page: {}", std::io::Error::last_os_error()));
            }
            Ok(&*(page as *const Control))
        }
    }
}

/// How long a process waits for its turn before it gives up on the others.
const TURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the operations of this process's tasks (see the module's invariants) and returns its
/// exit status, once its children are reaped.
fn run_processes(trace: &Trace, reference: &[Option<OpResult>], fd: i32, runner: &mut Runner) -> i32 {
    let ctl = runner.ctl;
    // The declared address spaces, in order of first appearance, with their tasks.
    let mut spaces: Vec<(u32, Vec<TaskId>)> = Vec::new();
    for (t, task) in trace.tasks.iter().enumerate() {
        match spaces.iter_mut().find(|(mm, _)| *mm == task.mm) {
            Some((_, tasks)) => tasks.push(t as TaskId),
            None => spaces.push((task.mm, vec![t as TaskId])),
        }
    }
    let mut mine = spaces.first().map(|(_, tasks)| tasks.clone()).unwrap_or_default();
    for (_, tasks) in spaces.iter().skip(1) {
        // SAFETY: this process is single-threaded; the child goes on with the loop below.
        match unsafe { libc::fork() } {
            0 => {
                mine = tasks.clone();
                break;
            }
            pid if pid > 0 => {}
            _ => {
                let e = std::io::Error::last_os_error();
                write_all(fd, format!("F cannot fork a host process: {e}\n").as_bytes());
                ctl.abort.store(true, Ordering::SeqCst);
                return finish(ctl, 4);
            }
        }
    }
    for (i, call) in trace.ops.iter().enumerate() {
        if !mine.contains(&call.task) {
            continue;
        }
        if let Err(code) = wait_turn(ctl, i as u64, fd) {
            return finish(ctl, code);
        }
        let expected = reference.get(i).copied().flatten();
        let rec = match call.op {
            Op::Fork { task: child, .. } => {
                // Forked only when the reference forked and the host still follows.
                let can = !runner.stopped() && expected == Some(OpResult::Done);
                // SAFETY: single-threaded; the child hosts the new task from here on.
                match can.then(|| unsafe { libc::fork() }) {
                    Some(0) => {
                        mine = vec![child];
                        continue;
                    }
                    Some(pid) if pid > 0 => Record::plain(Observed::Result(OpResult::Done)),
                    // Not forked: the new task's operations are reported here, not run.
                    forked => {
                        mine.push(child);
                        if forked.is_none() && runner.stopped() {
                            Record::not_run(Note::Stopped)
                        } else {
                            runner.stop(); // nothing after a fork that did not happen
                            Record::not_run(Note::Unsupported)
                        }
                    }
                }
            }
            _ => runner.step(&call.op, expected),
        };
        write_all(fd, encode(i, &rec).as_bytes());
        ctl.turn.store(i as u64 + 1, Ordering::SeqCst);
    }
    finish(ctl, 0)
}

/// Waits until operation `i` is next. `Err(status)`: this process must stop (another one
/// died, or the turn never came).
fn wait_turn(ctl: &Control, i: u64, fd: i32) -> Result<(), i32> {
    let start = std::time::Instant::now();
    loop {
        let turn = ctl.turn.load(Ordering::SeqCst);
        if turn == i {
            return Ok(());
        }
        debug_assert!(turn < i, "operation {i} was passed over");
        if ctl.abort.load(Ordering::SeqCst) {
            return Err(0);
        }
        reap(ctl, false);
        if start.elapsed() > TURN_TIMEOUT {
            write_all(
                fd,
                format!(
                    "F no host process ran operation {turn} for {} s\n",
                    TURN_TIMEOUT.as_secs()
                )
                .as_bytes(),
            );
            ctl.abort.store(true, Ordering::SeqCst);
            return Err(4);
        }
        // SAFETY: no arguments, no memory.
        unsafe { libc::sched_yield() };
    }
}

/// Reaps this process's children (waiting for all of them), then returns `status`.
fn finish(ctl: &Control, status: i32) -> i32 {
    reap(ctl, true);
    status
}

/// Reaps the children that have ended (`block`: every child, waiting for each). One that
/// ended abnormally stops every process, and this one ends the same way: killed by the same
/// signal, or exiting with the same status.
fn reap(ctl: &Control, block: bool) {
    loop {
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: `status` is a valid int to fill.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid <= 0 {
            return; // no child left, or none has ended
        }
        if libc::WIFSIGNALED(status) {
            ctl.abort.store(true, Ordering::SeqCst);
            let sig = libc::WTERMSIG(status);
            // SAFETY: the default action for `sig` ends this process, as it ended the child.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                libc::_exit(128 + sig);
            }
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
            ctl.abort.store(true, Ordering::SeqCst);
            // SAFETY: ends this process with the child's status, as `child_main` would.
            unsafe { libc::_exit(libc::WEXITSTATUS(status)) };
        }
    }
}

fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice of the given length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

// --- Faults --------------------------------------------------------------------------------

/// Set only around a one-byte user access: a fault inside the window is expected.
static EXPECTING: AtomicBool = AtomicBool::new(false);
/// The signal the expected access took (0: none).
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The window `[WIN_LO, WIN_HI)` in host addresses.
static WIN_LO: AtomicU64 = AtomicU64::new(0);
static WIN_HI: AtomicU64 = AtomicU64::new(0);

/// SIGSEGV/SIGBUS handler. An expected fault of our access instruction (its address is in
/// `rcx`, its end in `rdx`, see [`access`]) inside the window is recorded and skipped;
/// anything else restores the default action, so the instruction faults again and kills.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to an SA_SIGINFO handler;
    // only this thread touches them, for the handler's duration.
    unsafe {
        let addr = (*info).si_addr() as u64;
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let gregs = &mut uc.uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize];
        let ours = rip == gregs[libc::REG_RCX as usize];
        let inside = addr >= WIN_LO.load(Ordering::SeqCst) && addr < WIN_HI.load(Ordering::SeqCst);
        if ours && inside && EXPECTING.swap(false, Ordering::SeqCst) {
            CAUGHT.store(sig, Ordering::SeqCst);
            gregs[libc::REG_RIP as usize] = gregs[libc::REG_RDX as usize];
            return;
        }
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs [`on_fault`] for SIGSEGV and SIGBUS on an alternate signal stack.
fn install_fault_handlers() -> Result<(), String> {
    const ALT_STACK: usize = 256 * 1024;
    // SAFETY: a fresh private anonymous mapping, placed by the kernel (never in the window).
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(format!(
            "cannot allocate a signal stack: {}",
            std::io::Error::last_os_error()
        ));
    }
    let ss = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `ss` describes the mapping above, which lives until the child exits.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(format!("sigaltstack: {}", std::io::Error::last_os_error()));
    }
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler has the
        // SA_SIGINFO signature and only touches atomics and the context it is given.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// A one-byte user access at host address `addr`: a load (`store: None`) or a store.
/// Returns the loaded byte (0 for a store), or the signal it took.
fn access(addr: u64, store: Option<u8>) -> Result<u8, i32> {
    CAUGHT.store(0, Ordering::SeqCst);
    EXPECTING.store(true, Ordering::SeqCst);
    let mut value: u8 = store.unwrap_or(0);
    // SAFETY: `addr` lies inside the window, which holds only the trace's own mappings: no
    // Rust object lives there, so reading or writing it cannot break any reference. If the
    // access faults, `on_fault` sees rip == rcx (the access instruction) and resumes at rdx
    // (the instruction after it), so control always reaches the end of the asm block.
    unsafe {
        match store {
            None => std::arch::asm!(
                "lea rcx, [rip + 2f]",
                "lea rdx, [rip + 3f]",
                "2:",
                "mov al, byte ptr [rdi]",
                "3:",
                in("rdi") addr,
                inout("al") value,
                out("rcx") _,
                out("rdx") _,
                options(nostack, preserves_flags),
            ),
            Some(_) => std::arch::asm!(
                "lea rcx, [rip + 2f]",
                "lea rdx, [rip + 3f]",
                "2:",
                "mov byte ptr [rdi], al",
                "3:",
                in("rdi") addr,
                in("al") value,
                out("rcx") _,
                out("rdx") _,
                options(nostack, preserves_flags),
            ),
        }
    }
    EXPECTING.store(false, Ordering::SeqCst);
    match CAUGHT.swap(0, Ordering::SeqCst) {
        0 => Ok(if store.is_some() { 0 } else { value }),
        sig => Err(sig),
    }
}

// --- System calls --------------------------------------------------------------------------

/// A raw system call's result: the value, or the errno.
fn sys(ret: libc::c_long) -> Result<u64, i32> {
    if ret == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret as u64)
    }
}

/// Calls the kernel directly with six arguments.
fn syscall6(nr: libc::c_long, a: [u64; 6]) -> Result<u64, i32> {
    // SAFETY: every call made through here (mmap, munmap, mprotect, mremap, pwrite64,
    // pread64, ftruncate, madvise) only touches host memory inside the window or memory the
    // child owns and no Rust object lives in; bad arguments are the kernel's to reject.
    sys(unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) })
}

fn sys_mmap(addr: u64, len: u64, prot: u64, flags: i32, fd: i32, off: u64) -> Result<u64, i32> {
    syscall6(
        libc::SYS_mmap,
        [addr, len, prot, flags as u32 as u64, fd as i64 as u64, off],
    )
}

fn sys_munmap(addr: u64, len: u64) -> Result<u64, i32> {
    syscall6(libc::SYS_munmap, [addr, len, 0, 0, 0, 0])
}

fn sys_mremap(addr: u64, old: u64, new: u64, flags: i32, to: u64) -> Result<u64, i32> {
    syscall6(libc::SYS_mremap, [addr, old, new, flags as u32 as u64, to, 0])
}

fn page_up(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

// --- The runner ----------------------------------------------------------------------------

struct Runner {
    /// The window base W: trace address `a` is host address `W + a`.
    w: u64,
    task_size: u64,
    /// One memfd per trace file.
    fds: Vec<i32>,
    /// Protection keys are active: `x`-only mappings are execute-only.
    pku: bool,
    /// Shared by every host process of the trace: the turn, and whether the host can still
    /// follow the trace.
    ctl: &'static Control,
}

impl Runner {
    fn new(trace: &Trace) -> Result<Runner, String> {
        let task_size = trace.config.task_size();
        if task_size > MAX_TASK_SIZE {
            return Err(format!("a user space of {task_size:#x} bytes does not fit the window"));
        }
        // The shared page first, so that the window is chosen around it.
        let ctl = Control::new()?;
        let w = choose_window(task_size)?;
        // The guard: an inaccessible mapping right above the window, so that nothing grows
        // or is placed past TASK_SIZE in place (mremap, a non-fixed mmap's hint), as in Linux.
        let guard = w + task_size;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
        if sys_mmap(guard, WINDOW_GUARD, 0, flags, -1, 0) != Ok(guard) {
            return Err(format!("cannot map the guard above the window at {guard:#x}"));
        }
        WIN_LO.store(w, Ordering::SeqCst);
        WIN_HI.store(w + task_size, Ordering::SeqCst);
        install_fault_handlers()?;
        let mut fds = Vec::new();
        for (f, file) in trace.files.iter().enumerate() {
            fds.push(make_file(f as FileId, file.size)?);
        }
        Ok(Runner {
            w,
            task_size,
            fds,
            pku: protection_keys(),
            ctl,
        })
    }

    /// Whether some host process can no longer follow the trace (nothing more is run).
    fn stopped(&self) -> bool {
        self.ctl.stopped.load(Ordering::SeqCst)
    }

    /// This process can no longer follow the trace: every host process stops.
    fn stop(&self) {
        self.ctl.stopped.store(true, Ordering::SeqCst);
    }

    /// The host address of trace range `[addr, addr + len)`, if the range lies inside user
    /// space `[USER_BASE, task_size)` (an empty range: `addr` in `[USER_BASE, task_size]`).
    fn span(&self, addr: u64, len: u64) -> Option<u64> {
        let end = addr.checked_add(len)?;
        (addr >= USER_BASE && end <= self.task_size).then_some(self.w + addr)
    }

    /// Like [`Runner::span`] for a length the kernel rounds up to pages.
    fn span_pages(&self, addr: u64, len: u64) -> Option<u64> {
        self.span(addr, page_up(len)?)
    }

    /// An address result of the host, translated back when it lies in the window.
    fn addr_result(&self, h: u64) -> Observed {
        if h >= self.w && h < self.w + self.task_size {
            Observed::Result(OpResult::Addr(h - self.w))
        } else {
            Observed::Foreign(h)
        }
    }

    fn result(&self, r: Result<u64, i32>, ok: impl FnOnce(u64) -> Observed) -> Observed {
        match r {
            Ok(v) => ok(v),
            Err(e) => errno(e),
        }
    }

    fn fd(&self, file: FileId) -> i32 {
        self.fds[file as usize]
    }

    /// Runs one operation; `reference` is the reference's result for it.
    fn step(&mut self, op: &Op, reference: Option<OpResult>) -> Record {
        if self.stopped() {
            return Record::not_run(Note::Stopped);
        }
        match *op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                off,
            } => {
                let mut mflags = if flags.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                if flags.fixed {
                    mflags |= libc::MAP_FIXED;
                }
                if flags.noreplace {
                    mflags |= libc::MAP_FIXED_NOREPLACE;
                }
                if flags.populate {
                    mflags |= libc::MAP_POPULATE;
                }
                if file.is_none() {
                    mflags |= libc::MAP_ANONYMOUS;
                }
                let fd = file.map_or(-1, |f| self.fd(f));
                let prot = u64::from(prot.bits());
                if flags.fixed || flags.noreplace {
                    let Some(h) = self.span_pages(addr, len) else {
                        return self.outside(op, reference);
                    };
                    let r = sys_mmap(h, len, prot, mflags, fd, off);
                    return Record::plain(self.result(r, |v| self.addr_result(v)));
                }
                let hint = if (USER_BASE..self.task_size).contains(&addr) {
                    self.w + addr
                } else {
                    0
                };
                match sys_mmap(hint, len, prot, mflags, fd, off) {
                    Err(e) => Record::plain(errno(e)),
                    Ok(h) => {
                        let observed = self.addr_result(h);
                        match reference {
                            Some(OpResult::Addr(x)) if h == self.w.wrapping_add(x) => Record::plain(observed),
                            Some(OpResult::Addr(x)) => {
                                let _ = sys_munmap(h, len);
                                let placed = self.span_pages(x, len).map(|hx| {
                                    (hx, sys_mmap(hx, len, prot, mflags | libc::MAP_FIXED_NOREPLACE, fd, off))
                                });
                                match placed {
                                    Some((hx, Ok(got))) if got == hx => Record {
                                        observed,
                                        note: Note::Placement,
                                    },
                                    _ => {
                                        self.stop();
                                        Record {
                                            observed,
                                            note: Note::RelocateFailed,
                                        }
                                    }
                                }
                            }
                            Some(OpResult::Err(Errno::ENOMEM)) => {
                                let _ = sys_munmap(h, len);
                                Record {
                                    observed,
                                    note: Note::NoRoom,
                                }
                            }
                            Some(_) => {
                                // A difference: undo it so that the rest still follows the trace.
                                let _ = sys_munmap(h, len);
                                Record::plain(observed)
                            }
                            None => Record::plain(observed),
                        }
                    }
                }
            }
            Op::Munmap { addr, len } => {
                let Some(h) = self.span_pages(addr, len) else {
                    return self.outside(op, reference);
                };
                Record::plain(self.result(sys_munmap(h, len), |_| Observed::Result(OpResult::Zero)))
            }
            Op::Mprotect { addr, len, prot } => {
                let Some(h) = self.span_pages(addr, len) else {
                    return self.outside(op, reference);
                };
                let r = syscall6(libc::SYS_mprotect, [h, len, u64::from(prot.bits()), 0, 0, 0]);
                Record::plain(self.result(r, |_| Observed::Result(OpResult::Zero)))
            }
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            } => self.mremap(op, reference, addr, old, new, flags, to),
            Op::Write { file, off, len, buf } | Op::Read { file, off, len, buf } => {
                let Some(h) = self.span(buf, len) else {
                    return self.outside(op, reference);
                };
                let is_write = matches!(op, Op::Write { .. });
                if is_write && self.pku && self.touches_exec_only(h, len) {
                    return self.unknown_effect(op, reference, Note::ExecOnly);
                }
                if self.aliased_copy(is_write, file, off, len, h) {
                    return self.unknown_effect(op, reference, Note::Aliased);
                }
                let nr = if is_write {
                    libc::SYS_pwrite64
                } else {
                    libc::SYS_pread64
                };
                let r = syscall6(nr, [self.fd(file) as u64, h, len, off, 0, 0]);
                Record::plain(self.result(r, |n| Observed::Result(OpResult::Count(n))))
            }
            Op::Truncate { file, size } => {
                let r = syscall6(libc::SYS_ftruncate, [self.fd(file) as u64, size, 0, 0, 0, 0]);
                Record::plain(self.result(r, |_| Observed::Result(OpResult::Zero)))
            }
            Op::Load { addr } | Op::Store { addr, .. } => {
                let Some(h) = self.span(addr, 1) else {
                    return self.outside(op, reference);
                };
                if reference == Some(OpResult::Oom) {
                    return Record::not_run(Note::RefOom);
                }
                let store = match *op {
                    Op::Store { value, .. } => Some(value),
                    _ => None,
                };
                if store.is_none() && self.pku && self.touches_exec_only(h, 1) {
                    return Record::not_run(Note::ExecOnly);
                }
                let observed = match access(h, store) {
                    Ok(b) if store.is_none() => OpResult::Byte(b),
                    Ok(_) => OpResult::Done,
                    Err(libc::SIGBUS) => OpResult::Sigbus,
                    Err(_) => OpResult::Sigsegv,
                };
                Record::plain(Observed::Result(observed))
            }
            Op::Pageout { addr, len } => {
                let Some(h) = self.span_pages(addr, len) else {
                    return self.outside(op, reference);
                };
                let r = syscall6(libc::SYS_madvise, [h, len, libc::MADV_PAGEOUT as u64, 0, 0, 0]);
                Record::plain(self.result(r, |_| Observed::Result(OpResult::Zero)))
            }
            Op::Exit => Record::plain(Observed::Result(OpResult::Done)),
            Op::Fork { .. } => unreachable!("a fork is run by `run_processes`"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mremap(
        &mut self,
        op: &Op,
        reference: Option<OpResult>,
        addr: u64,
        old: u64,
        new: u64,
        flags: mm_reference::MremapFlags,
        to: Option<u64>,
    ) -> Record {
        let Some(h) = self.span_pages(addr, old) else {
            return self.outside(op, reference);
        };
        let mut mflags = 0;
        if flags.maymove {
            mflags |= libc::MREMAP_MAYMOVE;
        }
        if flags.fixed {
            mflags |= libc::MREMAP_FIXED;
            let Some(ht) = self.span_pages(to.unwrap_or(0), new) else {
                return self.outside(op, reference);
            };
            let r = sys_mremap(h, old, new, mflags, ht);
            return Record::plain(self.result(r, |v| self.addr_result(v)));
        }
        // Growing in place past the window's end fails on the guard above the window, as it
        // fails at TASK_SIZE in Linux.
        let r = sys_mremap(h, old, new, mflags, 0);
        let Ok(got) = r else {
            return Record::plain(self.result(r, |_| Observed::NotRun));
        };
        let observed = self.addr_result(got);
        if !flags.maymove || got == h {
            return Record::plain(observed);
        }
        // The host moved the mapping.
        let Some(new_pages) = page_up(new) else {
            return Record::plain(observed);
        };
        match reference {
            Some(OpResult::Addr(x)) if x != addr => {
                // Both moved: where to is not comparable; follow the reference.
                if got == self.w.wrapping_add(x) {
                    return Record::plain(observed);
                }
                let moved = self.span(x, new_pages).and_then(|hx| {
                    // Claim the target first, so that a host that no longer follows the
                    // reference is noticed instead of having a mapping clobbered.
                    let claim = sys_mmap(
                        hx,
                        new_pages,
                        0,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    );
                    (claim == Ok(hx))
                        .then(|| sys_mremap(got, new_pages, new_pages, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, hx))
                });
                match moved {
                    Some(Ok(v)) if v == self.w + x => Record {
                        observed,
                        note: Note::Placement,
                    },
                    _ => {
                        self.stop();
                        Record {
                            observed,
                            note: Note::RelocateFailed,
                        }
                    }
                }
            }
            Some(OpResult::Err(Errno::ENOMEM)) => {
                // The reference found no room to move to: put the host's mapping back.
                let old_pages = page_up(old).unwrap_or(0);
                let undone = if old_pages == 0 {
                    sys_munmap(got, new_pages).is_ok()
                } else {
                    sys_mremap(got, old_pages, old_pages, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, h) == Ok(h)
                        && (new_pages <= old_pages || sys_munmap(got + old_pages, new_pages - old_pages).is_ok())
                };
                if !undone {
                    self.stop();
                }
                Record {
                    observed,
                    note: Note::NoRoom,
                }
            }
            _ => Record::plain(observed),
        }
    }

    /// An operation that reaches outside the window: not run. Nothing is ever mapped outside
    /// user space, so a munmap that succeeded is the munmap of its part inside user space,
    /// which the host does too. Otherwise, if the reference says the operation may have
    /// changed state inside user space, the host cannot follow the rest of the trace.
    fn outside(&mut self, op: &Op, reference: Option<OpResult>) -> Record {
        if let (Op::Munmap { addr, len }, Some(OpResult::Zero)) = (*op, reference) {
            let lo = addr.max(USER_BASE);
            let hi = page_up(len)
                .and_then(|l| addr.checked_add(l))
                .unwrap_or(u64::MAX)
                .min(self.task_size);
            if lo < hi && sys_munmap(self.w + lo, hi - lo).is_err() {
                self.stop();
            }
            return Record::not_run(Note::Outside);
        }
        self.unknown_effect(op, reference, Note::Outside)
    }

    fn unknown_effect(&mut self, op: &Op, reference: Option<OpResult>, note: Note) -> Record {
        if may_have_changed(op, reference) && self.reaches_user_space(op) {
            self.stop();
        }
        Record::not_run(note)
    }

    /// Whether `op` could change anything inside user space: its range (the buffer of a write
    /// or read, whose count says what changed) meets `[USER_BASE, task_size)`.
    fn reaches_user_space(&self, op: &Op) -> bool {
        let (addr, len) = match *op {
            Op::Load { addr } | Op::Store { addr, .. } => (addr, 1),
            Op::Munmap { addr, len } | Op::Mprotect { addr, len, .. } | Op::Pageout { addr, len } => {
                (addr, page_up(len).unwrap_or(u64::MAX))
            }
            // A successful mmap or mremap, a copy that moved bytes: the reference changed.
            _ => return true,
        };
        addr < self.task_size && addr.saturating_add(len) > USER_BASE
    }

    /// Whether host range `[h, h + len)` overlaps an execute-only (`--x`) mapping.
    fn touches_exec_only(&self, h: u64, len: u64) -> bool {
        let end = h.saturating_add(len.max(1));
        mappings()
            .iter()
            .any(|m| m.lo < end && h < m.hi && m.perms.starts_with("--x"))
    }

    /// Whether a write (`is_write`) or read of `len` bytes at offset `off` of `file`, with its
    /// user buffer at host address `h`, may copy a byte of the file that the same copy
    /// instruction has already overwritten, so that the result is the CPU's choice, not
    /// Linux's.
    ///
    /// That needs a buffer page that is the file's page-cache page (a shared mapping of the
    /// file; for a write also a private one whose page has not been copied on write), with
    /// the source behind the destination by less than a page. Linux copies one page-cache page
    /// at a time (one `rep movsb` of at most a page on this host, whose shmem folios are
    /// single pages), front to back, so with the source a page or more behind, or ahead, the
    /// result is exactly a forward byte-by-byte copy. Closer than that, the instruction copies
    /// through two virtual addresses of the same memory in chunks of the CPU's choosing.
    fn aliased_copy(&self, is_write: bool, file: FileId, off: u64, len: u64, h: u64) -> bool {
        let end = h.saturating_add(len);
        let page = i128::from(PAGE_SIZE);
        mappings().iter().any(|m| {
            if m.file != Some(file) || m.hi <= h || m.lo >= end || !(is_write || m.shared) {
                return false;
            }
            // Buffer bytes [a, b) are file bytes [p, p + b - a).
            let a = i128::from(m.lo.max(h) - h);
            let b = i128::from(m.hi.min(end) - h);
            let p = i128::from(m.offset) + i128::from(m.lo.max(h) - m.lo);
            if is_write {
                // Buffer byte j (file byte p + j - a) is read after file byte off + i was
                // written, i < j, when off + i == p + j - a: j = i + d.
                let d = i128::from(off) - (p - a);
                if d <= 0 || d >= page || a.max(d) >= b {
                    return false;
                }
                // Only buffer pages that are page-cache pages read what the copy wrote.
                let (lo, hi) = (h + a.max(d) as u64, h + b as u64);
                m.shared
                    || lo < hi
                        && (lo & !(PAGE_SIZE - 1)..hi)
                            .step_by(PAGE_SIZE as usize)
                            .any(|v| !private_copy(v))
            } else {
                // File byte off + j is read after buffer byte i (file byte p + i - a) was
                // written, i < j, when p + i - a == off + j: j = i + d.
                let d = (p - a) - i128::from(off);
                d > 0 && d < page && a < b.min(i128::from(len) - d)
            }
        })
    }
}

/// Whether the page at host address `v` of a private mapping has been copied on write (it is
/// present and anonymous, per /proc/self/pagemap). A page that is not present yet will be
/// faulted in from the page cache by the copy itself.
fn private_copy(v: u64) -> bool {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let mut entry = [0u8; 8];
    let read = std::fs::File::open("/proc/self/pagemap").and_then(|f| f.read_exact_at(&mut entry, (v / PAGE_SIZE) * 8));
    let bits = u64::from_le_bytes(entry);
    read.is_ok() && bits & PRESENT != 0 && bits & FILE_OR_SHARED == 0
}

/// Whether the reference's state may have changed through `op`, given its result.
fn may_have_changed(op: &Op, reference: Option<OpResult>) -> bool {
    if matches!(op, Op::Load { .. } | Op::Pageout { .. }) {
        return false;
    }
    let Some(r) = reference else { return true };
    match op {
        Op::Load { .. } | Op::Pageout { .. } => false,
        Op::Store { .. } => r == OpResult::Done,
        Op::Mmap { .. } | Op::Mremap { .. } => matches!(r, OpResult::Addr(_)),
        Op::Munmap { .. } => r == OpResult::Zero,
        // mprotect applies to the part of the range before a hole or a refusal.
        Op::Mprotect { .. } => matches!(r, OpResult::Zero | OpResult::Err(Errno::ENOMEM | Errno::EACCES)),
        // A write that fails with EFAULT may still have grown the file: 6.18's write_end
        // sets i_size to the position even when nothing was copied.
        Op::Write { .. } => matches!(r, OpResult::Count(n) if n > 0) || r == OpResult::Err(Errno::EFAULT),
        Op::Read { .. } => matches!(r, OpResult::Count(n) if n > 0),
        Op::Truncate { .. } | Op::Exit | Op::Fork { .. } => true,
    }
}

fn errno(e: i32) -> Observed {
    match Errno::from_number(e) {
        Some(e) => Observed::Result(OpResult::Err(e)),
        None => Observed::UnknownErrno(e),
    }
}

/// One line of /proc/self/maps.
struct Mapping {
    lo: u64,
    hi: u64,
    perms: String,
    shared: bool,
    /// File offset of `lo`.
    offset: u64,
    /// The trace file this maps, if it maps one of the runner's memfds.
    file: Option<FileId>,
}

/// The memfd name of trace file `f` (shown in /proc/self/maps as `/memfd:NAME (deleted)`).
fn memfd_name(f: FileId) -> String {
    format!("mmfuzz-file-{f}")
}

/// `lo-hi perms offset dev inode [path]`.
fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut toks = line.split_whitespace();
    let (lo, hi) = toks.next()?.split_once('-')?;
    let perms = toks.next()?;
    let offset = u64::from_str_radix(toks.next()?, 16).ok()?;
    let path = toks.nth(2).unwrap_or("");
    let file = path
        .strip_prefix("/memfd:")
        .and_then(|name| (0..MAX_FILES).find(|&f| memfd_name(f) == name));
    Some(Mapping {
        lo: u64::from_str_radix(lo, 16).ok()?,
        hi: u64::from_str_radix(hi, 16).ok()?,
        shared: perms.ends_with('s'),
        perms: perms.to_string(),
        offset,
        file,
    })
}

/// The child's mappings now (none if /proc/self/maps cannot be read).
fn mappings() -> Vec<Mapping> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|text| text.lines().filter_map(parse_maps_line).collect())
        .unwrap_or_default()
}

/// A window base W such that `[W - guard, W + task_size + guard)` holds no mapping now.
fn choose_window(task_size: u64) -> Result<u64, String> {
    std::fs::metadata("/proc/self/maps").map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    let taken = mappings();
    WINDOW_CANDIDATES
        .into_iter()
        .find(|&w| {
            let (lo, hi) = (w - WINDOW_GUARD, w + task_size + WINDOW_GUARD);
            taken.iter().all(|m| m.hi <= lo || m.lo >= hi)
        })
        .ok_or_else(|| "no free window for the trace's address space".to_string())
}

/// Protection keys are supported by the CPU and enabled by the kernel (`pku` and `ospke`):
/// then Linux makes `PROT_EXEC`-only mappings execute-only.
fn protection_keys() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    info.lines().filter(|l| l.starts_with("flags")).any(|l| {
        let flags: Vec<&str> = l.split_whitespace().collect();
        flags.contains(&"pku") && flags.contains(&"ospke")
    })
}

/// A memfd of `size` bytes holding TRACE.md's initial content of file `f`.
fn make_file(f: FileId, size: u64) -> Result<i32, String> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let name = format!("{}\0", memfd_name(f));
    let create = |flags: libc::c_uint| {
        // SAFETY: `name` is NUL-terminated and outlives the call.
        unsafe { libc::memfd_create(name.as_ptr().cast(), flags) }
    };
    // MFD_EXEC keeps PROT_EXEC mappings of the file allowed (and silences the kernel's
    // warning); kernels before 6.3 do not know it and allow exec anyway.
    let mut fd = create(libc::MFD_CLOEXEC | MFD_EXEC);
    if fd < 0 {
        fd = create(libc::MFD_CLOEXEC);
    }
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    syscall6(libc::SYS_ftruncate, [fd as u64, size, 0, 0, 0, 0])
        .map_err(|e| format!("ftruncate of file {f}: errno {e}"))?;
    const CHUNK: u64 = 1 << 16;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = CHUNK.min(size - off);
        for (i, b) in buf[..n as usize].iter_mut().enumerate() {
            *b = initial_file_byte(f, off + i as u64);
        }
        let mut done = 0;
        while done < n {
            let w = syscall6(
                libc::SYS_pwrite64,
                [fd as u64, buf.as_ptr() as u64 + done, n - done, off + done, 0, 0],
            )
            .map_err(|e| format!("filling file {f}: errno {e}"))?;
            if w == 0 {
                return Err(format!("filling file {f}: short write"));
            }
            done += w;
        }
        off += n;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a host process that forks a child ending with `child_end` (a signal to raise,
    /// or an exit status) and then reaps it; returns how that host process ended and whether
    /// it told the others to stop.
    fn host_reaping(child_end: Result<i32, i32>) -> (i32, bool) {
        let ctl = Control::new().expect("a shared page");
        // SAFETY: between fork and `_exit` the forked processes make only raw system calls
        // (no allocation, no lock), as a fork of the multi-threaded test harness requires.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                match libc::fork() {
                    0 => match child_end {
                        Ok(sig) => {
                            libc::raise(sig);
                            libc::_exit(20)
                        }
                        Err(status) => libc::_exit(status),
                    },
                    p if p > 0 => {
                        reap(ctl, true);
                        libc::_exit(0) // only when the child ended normally
                    }
                    _ => libc::_exit(21),
                }
            }
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid int to fill.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (status, ctl.abort.load(Ordering::SeqCst))
    }

    #[test]
    fn a_host_process_ends_as_its_child_did_and_stops_the_others() {
        let (status, abort) = host_reaping(Ok(libc::SIGTERM));
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM,
            "status {status:#x}"
        );
        assert!(abort, "the others were not told to stop");
        let (status, abort) = host_reaping(Err(7));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
            "status {status:#x}"
        );
        assert!(abort, "the others were not told to stop");
        let (status, abort) = host_reaping(Err(0));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        assert!(!abort, "a child that ended normally stopped the others");
    }
}
