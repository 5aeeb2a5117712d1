//! The structure-aware trace generator: [`generate`] turns a seeded [`ChaCha8Rng`] and a
//! [`GenOptions`] into a [`Trace`]; [`generate_with`] does the same from any source of
//! [`Choices`] (the fuzz targets drive it with the fuzzer's bytes).
//!
//! Invariants kept here:
//! - Every trace [`generate`] returns is valid per TRACE.md, so that
//!   `parse(&t.to_string()) == Ok(t)`: the config passes [`Config::check`], files and tasks are
//!   numbered in order, a `fork` creates the next unused task id, no task has an operation after
//!   its `exit`, every CPU, file and schedule token is in range, mremap carries `to` exactly
//!   when it is `fixed`, anonymous mmaps have `off=0`, hugetlb file sizes are whole huge pages.
//! - [`generate`] is a pure function of the generator state and the options: no clock, no
//!   hash order, no global state. The same seed gives the same trace. Every decision goes
//!   through [`Choices`], and the [`ChaCha8Rng`] implementation makes exactly the rng calls the
//!   generator always made, so a seed gives the same trace as before the trait existed.
//! - Whatever the source answers (any value in the asked range), the trace is valid; a source
//!   that runs dry ([`Choices::exhausted`]) only ends the trace early (no more tasks,
//!   operations, final exits or schedule), never makes it invalid.
//! - With [`GenOptions::window`] set (the conformance generator) every address and every
//!   address range of every operation lies inside the window, every mmap is `fixed` and mremap
//!   moves a mapping only to a `fixed` `to` inside the window: nothing can touch memory outside
//!   it when the trace runs on a real kernel.
//!
//! Design: while generating, the generator keeps a running *picture* of what the trace has done
//! so far (per address space the mappings with their range, protection, shared/private, file
//! and offset; per file its size; which tasks are alive). Most arguments are aimed by that
//! picture: inside and at the edges of existing mappings, at page-table boundaries (`ptrs`
//! pages, `ptrs^2` pages), at file offsets around EOF and partial last pages, at the same file
//! range in several address spaces (so page tables get shared). A minority of operations get
//! one deliberately odd argument (unaligned, zero, huge, outside user space) so that error
//! paths run too. The picture is a prediction (it follows Linux's rules closely but not
//! exactly, and a schedule reorders operations), which is all aiming needs.

use mm_reference::{
    BugSet, Call, Config, FileId, FileInit, MmapFlags, MremapFlags, Op, Prot, SchedToken, TaskId, TaskInit, PAGE_SIZE,
    USER_BASE,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::trace::Trace;

const PAGE: u64 = PAGE_SIZE;

/// The lowest and highest address of the conformance window: `[0x100000, 0x180000)`.
pub const CONFORM_WINDOW: (u64, u64) = (0x10_0000, 0x18_0000);

/// How the generated trace's `config` is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChoice {
    /// `frames=65536`, `highmem` 0 or its default, `highpte` on or off; everything else default. What a run on a
    /// real kernel can be compared with (memory never runs out).
    Conform,
    /// TRACE.md's defaults: 256 frames, so memory pressure and reclaim happen.
    Default,
    /// Small random machines: `cpus` 1..4, `ptrs` 4 or 8, `frames` 32..512, `highmem`,
    /// `pkmap` 1..8, `atomic` 2..16 and the `highpte`/`ptshare`/`hugeshare` switches vary.
    Varied,
    /// Exactly this config (its `bugs` are replaced by [`GenOptions::bugs`]); it must pass
    /// [`Config::check`].
    Fixed(Config),
}

/// The source of every decision the generator makes. Each method answers a value in the
/// range it is asked for; which value is the source's business (an rng, or a fuzzer's bytes).
pub trait Choices {
    /// Uniform in `0..n`; `n > 0`.
    fn below(&mut self, n: u64) -> u64;
    /// In `lo..=hi`; `lo < hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64;
    /// In `0..n`, for percentages and weights; `n > 0`.
    fn below_u32(&mut self, n: u32) -> u32;
    /// In `0..n`, for picking from a slice; `n > 0`.
    fn index(&mut self, n: usize) -> usize;
    /// Any byte.
    fn byte(&mut self) -> u8;
    /// Whether the source has run dry: the generator then adds no more tasks, operations,
    /// final exits or schedule. An rng never runs dry.
    fn exhausted(&self) -> bool {
        false
    }
}

impl Choices for ChaCha8Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.gen_range(0..n)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.gen_range(lo..=hi)
    }
    fn below_u32(&mut self, n: u32) -> u32 {
        self.gen_range(0..n)
    }
    fn index(&mut self, n: usize) -> usize {
        self.gen_range(0..n)
    }
    fn byte(&mut self) -> u8 {
        self.gen()
    }
}

/// How often each kind of operation is chosen (relative weights; 0 switches a kind off), and
/// how many files are hugetlbfs files. The generator still applies its own conditions on top:
/// mmap is far more likely in an empty address space, `fork` needs room for a task, `exit`
/// another live task, `share` a file, and the [`GenOptions`] switches `fork`/`exit` and
/// `huge_files` win.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub mmap: u32,
    pub munmap: u32,
    pub mprotect: u32,
    pub mremap: u32,
    pub write: u32,
    pub read: u32,
    pub truncate: u32,
    pub load: u32,
    pub store: u32,
    pub pageout: u32,
    pub fork: u32,
    pub exit: u32,
    /// The sharing pattern: one file range mapped in several address spaces, then touched.
    pub share: u32,
    /// Percent of the declared files that are hugetlbfs files (when `huge_files` is set).
    pub huge_file_percent: u32,
}

impl Mix {
    /// The mix of every option set of [`GenOptions`]'s constructors.
    pub const DEFAULT: Mix = Mix {
        mmap: 13,
        munmap: 5,
        mprotect: 7,
        mremap: 6,
        write: 9,
        read: 7,
        truncate: 4,
        load: 17,
        store: 17,
        pageout: 5,
        fork: 3,
        exit: 1,
        share: 3,
        huge_file_percent: 25,
    };
}

impl Default for Mix {
    fn default() -> Mix {
        Mix::DEFAULT
    }
}

/// What [`generate`] produces. All fields are public; start from a constructor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOptions {
    /// How the config is chosen.
    pub config: ConfigChoice,
    /// Copied into `config.bugs`.
    pub bugs: BugSet,
    /// Operation lines to generate, inclusive (a final `exit` per task may come on top).
    pub ops: (usize, usize),
    /// Files, inclusive.
    pub files: (usize, usize),
    /// Largest initial size of a regular file, bytes.
    pub max_file_size: u64,
    /// Whether some files may be hugetlbfs files.
    pub huge_files: bool,
    /// Address spaces declared by `task` lines: 1..=`max_mms`.
    pub max_mms: u32,
    /// Fewest declared tasks.
    pub min_tasks: u32,
    /// Most tasks, counting those created by `fork`.
    pub max_tasks: u32,
    /// Whether tasks may `fork`.
    pub fork: bool,
    /// Whether a task may `exit` in the middle of the trace (never the last live one).
    pub exit: bool,
    /// Whether the trace sometimes ends with an `exit` of every live task.
    pub final_exit: bool,
    /// Confine every address and range to `[lo, hi)`; mmaps are all `fixed`, mremap moves
    /// only to a `fixed` `to` inside the window. `lo` and `hi` must be aligned to
    /// `ptrs^2` pages of the chosen config, `hi - lo` a power of two.
    pub window: Option<(u64, u64)>,
    /// Whether the trace gets a `schedule` (uniform random or PCT-style).
    pub schedule: bool,
    /// Whether the schedule may deliver interrupts (`irqC`).
    pub irq: bool,
    /// Percent of operations that get one deliberately odd argument.
    pub odd_percent: u32,
    /// Weights of the kinds of operation, and the share of hugetlbfs files.
    pub mix: Mix,
    /// How many times the generator's designed weight it gives to aiming an address, range
    /// or buffer *at* a mapping rather than just off it (a byte past its end, a range over
    /// the hole next to it, a buffer that straddles its end). 1 is the design; more makes
    /// more operations land, and every off-target branch stays possible.
    pub aim: u32,
}

impl GenOptions {
    /// Traces a real Linux kernel can run and be compared with: one or two address spaces,
    /// up to three tasks (threads, processes, and those `fork` makes), tasks that exit, no
    /// schedule, no hugetlb, 1..=3 small files, every address inside [`CONFORM_WINDOW`],
    /// every mmap fixed, 5..=40 operations.
    pub fn conform() -> GenOptions {
        GenOptions {
            config: ConfigChoice::Conform,
            bugs: BugSet::NONE,
            ops: (5, 40),
            files: (1, 3),
            max_file_size: 64 * 1024,
            huge_files: false,
            max_mms: 2,
            min_tasks: 1,
            max_tasks: 3,
            fork: true,
            exit: true,
            final_exit: true,
            window: Some(CONFORM_WINDOW),
            schedule: false,
            irq: false,
            odd_percent: 10,
            mix: Mix::DEFAULT,
            aim: 1,
        }
    }

    /// The fuzzer's sequential traces: like [`GenOptions::conform`] but with non-fixed mmaps,
    /// several tasks and address spaces, fork and exit, hugetlb files, the default config
    /// (256 frames: memory pressure) and no schedule.
    pub fn sequential() -> GenOptions {
        GenOptions {
            config: ConfigChoice::Default,
            bugs: BugSet::NONE,
            ops: (5, 60),
            files: (1, 3),
            max_file_size: 128 * 1024,
            huge_files: true,
            max_mms: 3,
            min_tasks: 1,
            max_tasks: 6,
            fork: true,
            exit: true,
            final_exit: true,
            window: None,
            schedule: false,
            irq: false,
            odd_percent: 10,
            mix: Mix::DEFAULT,
            aim: 1,
        }
    }

    /// The fuzzer's concurrent traces: several tasks (threads and processes) on small random
    /// machines, with a `schedule` (uniform random tokens, or PCT-style priorities with a few
    /// change points) and occasional interrupts.
    pub fn concurrent() -> GenOptions {
        GenOptions {
            config: ConfigChoice::Varied,
            bugs: BugSet::NONE,
            ops: (4, 48),
            files: (1, 3),
            max_file_size: 128 * 1024,
            huge_files: true,
            max_mms: 3,
            min_tasks: 2,
            max_tasks: 6,
            fork: true,
            exit: true,
            final_exit: true,
            window: None,
            schedule: true,
            irq: true,
            odd_percent: 8,
            mix: Mix::DEFAULT,
            aim: 1,
        }
    }

    /// The same options with `bugs` switched on.
    pub fn with_bugs(mut self, bugs: BugSet) -> GenOptions {
        self.bugs = bugs;
        self
    }
}

/// Generates one valid trace. Deterministic: the same rng state and options give the same
/// trace.
pub fn generate(rng: &mut ChaCha8Rng, opts: &GenOptions) -> Trace {
    generate_with(rng, opts)
}

/// Generates one valid trace from any source of choices. Deterministic: the same answers and
/// options give the same trace. A source that runs dry stops every optional addition: no
/// more declared tasks, operations (possibly none at all), final exits or schedule.
pub fn generate_with<C: Choices>(choices: &mut C, opts: &GenOptions) -> Trace {
    let mut g = Gen::new(choices, opts);
    g.declare();
    g.body();
    let schedule = if opts.schedule && !g.rng.exhausted() {
        g.schedule()
    } else {
        Vec::new()
    };
    Trace {
        config: g.config,
        files: g.files,
        tasks: g.task_inits,
        ops: g.ops,
        schedule,
    }
}

// ---------------------------------------------------------------------------------------------
// The picture.

/// One mapping as the generator predicts it.
#[derive(Clone, Copy, Debug)]
struct Vma {
    start: u64,
    end: u64,
    prot: Prot,
    shared: bool,
    file: Option<FileId>,
    /// File offset of `start` (0 for anonymous mappings).
    off: u64,
    huge: bool,
}

impl Vma {
    fn len(&self) -> u64 {
        self.end - self.start
    }
    /// The part `[start, end)` of this mapping (which must lie inside it).
    fn slice(&self, start: u64, end: u64) -> Vma {
        let off = if self.file.is_some() {
            self.off + (start - self.start)
        } else {
            0
        };
        Vma {
            start,
            end,
            off,
            ..*self
        }
    }
}

/// One address space: its mappings, sorted by address, disjoint.
#[derive(Clone, Debug, Default)]
struct Space {
    vmas: Vec<Vma>,
}

impl Space {
    fn is_free(&self, start: u64, end: u64) -> bool {
        self.vmas.iter().all(|v| v.end <= start || v.start >= end)
    }

    fn vma_at(&self, addr: u64) -> Option<Vma> {
        self.vmas.iter().copied().find(|v| v.start <= addr && addr < v.end)
    }

    fn unmap(&mut self, start: u64, end: u64) {
        let mut out = Vec::with_capacity(self.vmas.len() + 1);
        for v in self.vmas.drain(..) {
            if v.end <= start || v.start >= end {
                out.push(v);
                continue;
            }
            if v.start < start {
                out.push(v.slice(v.start, start));
            }
            if v.end > end {
                out.push(v.slice(end, v.end));
            }
        }
        self.vmas = out;
    }

    fn map(&mut self, v: Vma) {
        self.unmap(v.start, v.end);
        let at = self.vmas.partition_point(|w| w.start < v.start);
        self.vmas.insert(at, v);
    }

    /// Changes the protection of the mapped pages of `[start, end)` up to the first hole, as
    /// mprotect does before it fails with ENOMEM at the hole.
    fn protect(&mut self, start: u64, end: u64, prot: Prot) {
        let mut out = Vec::with_capacity(self.vmas.len() + 2);
        let mut cursor = start;
        for v in self.vmas.drain(..) {
            if v.end <= start || v.start >= end || v.start > cursor {
                out.push(v);
                continue;
            }
            let (s, e) = (v.start.max(start), v.end.min(end));
            if v.start < s {
                out.push(v.slice(v.start, s));
            }
            out.push(Vma { prot, ..v.slice(s, e) });
            if e < v.end {
                out.push(v.slice(e, v.end));
            }
            cursor = e;
        }
        self.vmas = out;
    }

    /// The highest `align`-aligned free range of `len` bytes below `top` (top-down mmap).
    fn gap_topdown(&self, len: u64, align: u64, top: u64) -> Option<u64> {
        let mut hi = top;
        for v in self.vmas.iter().rev().map(Some).chain(std::iter::once(None)) {
            let lo = v.map_or(USER_BASE, |v| v.end.max(USER_BASE));
            if hi >= len {
                let s = align_down(hi.min(top) - len, align);
                if s >= lo && s + len <= hi {
                    return Some(s);
                }
            }
            if let Some(v) = v {
                hi = hi.min(v.start);
            }
        }
        None
    }
}

#[derive(Clone, Copy, Debug)]
struct TaskPic {
    /// Index into `Gen::spaces`.
    space: usize,
    cpu: u32,
    alive: bool,
}

/// Whether a mapping has data at its start: anonymous, or a file mapping that starts before EOF.
fn backed(v: &Vma, sizes: &[u64]) -> bool {
    v.file.is_none_or(|f| sizes[f as usize] > v.off)
}

fn align_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_next_multiple_of(a)
}

// ---------------------------------------------------------------------------------------------
// The generator.

struct Gen<'r, C: Choices> {
    rng: &'r mut C,
    opts: &'r GenOptions,
    config: Config,
    files: Vec<FileInit>,
    task_inits: Vec<TaskInit>,
    ops: Vec<Call>,
    /// Current size of each file, as the operations so far leave it.
    sizes: Vec<u64>,
    /// One per address space: the declared ones, then one per `fork`.
    spaces: Vec<Space>,
    /// One per task id: the declared ones, then one per `fork`.
    tasks: Vec<TaskPic>,
    /// Operation lines to generate before the final exits.
    budget: usize,
    /// Where most chosen addresses go: the window, or a few pud spans above the bottom.
    focus: (u64, u64),
    /// The task that ran the last operation (sequential traces keep a task for a while).
    last: Option<TaskId>,
}

/// The operations the generator chooses between at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mmap,
    Munmap,
    Mprotect,
    Mremap,
    Write,
    Read,
    Truncate,
    Load,
    Store,
    Pageout,
    Fork,
    Exit,
    Share,
}

impl<'r, C: Choices> Gen<'r, C> {
    fn new(rng: &'r mut C, opts: &'r GenOptions) -> Gen<'r, C> {
        Gen {
            rng,
            opts,
            config: Config::default(),
            files: Vec::new(),
            task_inits: Vec::new(),
            ops: Vec::new(),
            sizes: Vec::new(),
            spaces: Vec::new(),
            tasks: Vec::new(),
            budget: 0,
            focus: (0, 0),
            last: None,
        }
    }

    // --- randomness helpers --------------------------------------------------------------

    /// True with probability `p` percent.
    fn pct(&mut self, p: u32) -> bool {
        self.rng.below_u32(100) < p
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.below(n)
        }
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.rng.between(lo, hi)
        }
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.index(xs.len())]
    }

    /// An index chosen with the given weights (at least one must be non-zero).
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.rng.below_u32(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    // --- derived sizes -------------------------------------------------------------------

    fn hps(&self) -> u64 {
        self.config.huge_page_size()
    }
    fn pud(&self) -> u64 {
        self.config.pud_span()
    }
    fn task_size(&self) -> u64 {
        self.config.task_size()
    }
    fn space_of(&self, task: TaskId) -> usize {
        self.tasks[task as usize].space
    }
    fn unit_of(&self, file: Option<FileId>) -> u64 {
        match file {
            Some(f) if self.files[f as usize].huge => self.hps(),
            _ => PAGE,
        }
    }

    // --- the declarations ----------------------------------------------------------------

    fn declare(&mut self) {
        self.config = self.choose_config();
        self.config.bugs = self.opts.bugs;
        let (lo, hi) = (USER_BASE.max(self.pud()), self.task_size().min(5 * self.pud()));
        self.focus = self.opts.window.unwrap_or((lo, hi));

        let nfiles = self.between(self.opts.files.0 as u64, self.opts.files.1 as u64) as usize;
        for _ in 0..nfiles {
            let f = self.choose_file();
            self.sizes.push(f.size);
            self.files.push(f);
        }

        let mms = self.between(1, u64::from(self.opts.max_mms.max(1))) as u32;
        let mut ntasks = mms.max(self.opts.min_tasks);
        while ntasks < self.opts.max_tasks && !self.rng.exhausted() && self.pct(30) {
            ntasks += 1;
        }
        for id in 0..ntasks {
            let mm = if id < mms {
                id
            } else {
                self.below(u64::from(mms)) as u32
            };
            let cpu = self.below(u64::from(self.config.cpus)) as u32;
            self.task_inits.push(TaskInit { mm, cpu });
            self.tasks.push(TaskPic {
                space: mm as usize,
                cpu,
                alive: true,
            });
        }
        self.spaces = vec![Space::default(); mms as usize];
        self.budget = self.between(self.opts.ops.0 as u64, self.opts.ops.1 as u64) as usize;
    }

    fn choose_config(&mut self) -> Config {
        let d = Config::default();
        match self.opts.config {
            ConfigChoice::Conform => {
                let frames = 65536;
                let highmem = if self.pct(50) { 0 } else { frames / 2 };
                let highpte = self.pct(50);
                let ptshare = self.pct(50);
                Config {
                    frames,
                    highmem,
                    highpte,
                    ptshare,
                    ..d
                }
            }
            ConfigChoice::Default => d,
            ConfigChoice::Fixed(c) => c,
            ConfigChoice::Varied => {
                // Few frames now and then: memory pressure, reclaim through kmaps, sleeping
                // for memory.
                let frames = self.pick(&[32, 48, 128, 256, 256, 512]);
                let highmem = self.pick(&[frames / 2, frames / 2, frames - 8, frames / 4, 0]);
                Config {
                    cpus: self.between(1, 4) as u32,
                    ptrs: if self.pct(75) { 8 } else { 4 },
                    frames,
                    highmem,
                    pkmap: self.pick(&[1, 2, 3, 4, 8, 8]),
                    atomic: self.pick(&[2, 3, 4, 16]),
                    highpte: self.pct(85),
                    ptshare: self.pct(85),
                    hugeshare: self.pct(85),
                    ..d
                }
            }
        }
    }

    fn choose_file(&mut self) -> FileInit {
        let hps = self.hps();
        let max = self.opts.max_file_size.max(1);
        if self.opts.huge_files && self.pct(self.opts.mix.huge_file_percent) {
            let ptrs = u64::from(self.config.ptrs);
            let n = self.pick(&[1, 2, ptrs, ptrs, 2 * ptrs]);
            return FileInit {
                size: n * hps,
                huge: true,
            };
        }
        let size = match self.weighted(&[1, 2, 2, 2, 2]) {
            0 => self.between(1, 100),
            1 => PAGE * self.between(1, 16),
            2 => self.between(1, max),
            3 => {
                let p = PAGE * self.between(1, 16);
                if self.pct(50) {
                    p + self.between(1, 100)
                } else {
                    p - self.between(1, 100)
                }
            }
            _ => hps * self.between(1, 4),
        };
        FileInit {
            size: size.clamp(1, max),
            huge: false,
        }
    }

    // --- the operations ------------------------------------------------------------------

    fn push(&mut self, task: TaskId, op: Op) {
        self.ops.push(Call { task, op });
        self.last = Some(task);
    }

    fn alive(&self) -> Vec<TaskId> {
        (0..self.tasks.len() as TaskId)
            .filter(|&t| self.tasks[t as usize].alive)
            .collect()
    }

    fn pick_task(&mut self) -> Option<TaskId> {
        let alive = self.alive();
        if alive.is_empty() {
            return None;
        }
        if !self.opts.schedule {
            if let Some(t) = self.last {
                if self.tasks[t as usize].alive && self.pct(70) {
                    return Some(t);
                }
            }
        }
        Some(self.pick(&alive))
    }

    fn body(&mut self) {
        while self.ops.len() < self.budget && !self.rng.exhausted() {
            let Some(task) = self.pick_task() else { break };
            self.step(task);
        }
        if self.opts.final_exit && !self.rng.exhausted() && self.pct(30) {
            let mut alive = self.alive();
            while !alive.is_empty() {
                let i = self.below(alive.len() as u64) as usize;
                let t = alive.remove(i);
                self.exit(t);
            }
        }
    }

    fn step(&mut self, task: TaskId) {
        let space = self.space_of(task);
        let empty = self.spaces[space].vmas.is_empty();
        let others_alive = self.alive().len() > 1;
        let can_fork = self.opts.fork && (self.tasks.len() as u32) < self.opts.max_tasks;
        let mix = self.opts.mix;
        let mut weights = [
            if empty && mix.mmap > 0 { 150 } else { mix.mmap },
            mix.munmap,
            mix.mprotect,
            mix.mremap,
            mix.write,
            mix.read,
            mix.truncate,
            mix.load,
            mix.store,
            mix.pageout,
            if can_fork { mix.fork } else { 0 },
            if self.opts.exit && others_alive { mix.exit } else { 0 },
            if self.files.is_empty() { 0 } else { mix.share },
        ];
        if weights.iter().all(|&w| w == 0) {
            weights[0] = 1; // a mix that leaves nothing possible here: mmap
        }
        const KINDS: [Kind; 13] = [
            Kind::Mmap,
            Kind::Munmap,
            Kind::Mprotect,
            Kind::Mremap,
            Kind::Write,
            Kind::Read,
            Kind::Truncate,
            Kind::Load,
            Kind::Store,
            Kind::Pageout,
            Kind::Fork,
            Kind::Exit,
            Kind::Share,
        ];
        let kind = KINDS[self.weighted(&weights)];
        let odd = self.pct(self.opts.odd_percent);
        match kind {
            Kind::Mmap => self.mmap(task, odd),
            Kind::Munmap => self.munmap(task, odd),
            Kind::Mprotect => self.mprotect(task, odd),
            Kind::Mremap => self.mremap(task, odd),
            Kind::Write => self.io(task, true, odd),
            Kind::Read => self.io(task, false, odd),
            Kind::Truncate => self.truncate(task, odd),
            Kind::Load => self.access(task, false, odd),
            Kind::Store => self.access(task, true, odd),
            Kind::Pageout => self.pageout(task, odd),
            Kind::Fork => self.fork(task),
            Kind::Exit => self.exit(task),
            Kind::Share => self.share(task),
        }
    }

    // --- address helpers -----------------------------------------------------------------

    /// Moves `addr` into the window (keeping its alignment) and cuts `len` to fit; outside
    /// the conformance mode, returns them unchanged.
    fn confine(&self, addr: u64, len: u64) -> (u64, u64) {
        let Some((lo, hi)) = self.opts.window else {
            return (addr, len);
        };
        let addr = if (lo..hi).contains(&addr) {
            addr
        } else {
            lo + addr.wrapping_sub(lo) % (hi - lo)
        };
        (addr, len.min(hi - addr))
    }

    /// A random `align`-aligned address in the focus region that leaves room for `len`.
    fn focus_addr(&mut self, len: u64, align: u64) -> u64 {
        let (lo, hi) = self.focus;
        let lo = align_up(lo, align).unwrap_or(lo);
        let top = hi.saturating_sub(len).max(lo);
        align_down(self.between(lo, top), align).max(lo)
    }

    /// A random mapping of the address space, if it has one.
    fn some_vma(&mut self, space: usize) -> Option<Vma> {
        let n = self.spaces[space].vmas.len();
        if n == 0 {
            return None;
        }
        let i = self.below(n as u64) as usize;
        Some(self.spaces[space].vmas[i])
    }

    /// A random mapping of the address space that satisfies `f`.
    /// `f` also sees the current file sizes.
    fn some_vma_where(&mut self, space: usize, f: impl Fn(&Vma, &[u64]) -> bool) -> Option<Vma> {
        let sizes = &self.sizes;
        let c: Vec<Vma> = self.spaces[space]
            .vmas
            .iter()
            .copied()
            .filter(|v| f(v, sizes))
            .collect();
        if c.is_empty() {
            None
        } else {
            Some(self.pick(&c))
        }
    }

    /// A page-aligned address that is interesting in this address space: at or near the
    /// edges of a mapping, at a page-table boundary, in the focus region, near the top.
    fn interesting_addr(&mut self, space: usize) -> u64 {
        let (hps, pud, ts) = (self.hps(), self.pud(), self.task_size());
        let has = !self.spaces[space].vmas.is_empty();
        let others = self.spaces.iter().any(|s| !s.vmas.is_empty());
        let top = if self.opts.window.is_none() { 1 } else { 0 };
        let addr = match self.weighted(&[if has { 6 } else { 0 }, 2, 2, 1, u32::from(others), top]) {
            0 => {
                let v = self.some_vma(space).expect("has a mapping");
                let pages = v.len() / PAGE;
                match self.below(9) {
                    0 => v.start,
                    1 => v.end,
                    2 => v.start + PAGE,
                    3 => v.end - PAGE,
                    4 => v.start + PAGE * self.below(pages),
                    5 => align_down(v.start, hps),
                    6 => align_up(v.end, hps).unwrap_or(v.end),
                    7 => align_down(v.start, pud),
                    _ => v.start.saturating_sub(PAGE),
                }
            }
            1 => self.focus_addr(PAGE, PAGE),
            2 => self.focus_addr(hps, hps),
            3 => self.focus_addr(pud, pud),
            4 => {
                let s = self.below(self.spaces.len() as u64) as usize;
                self.some_vma(s).map_or(self.focus.0, |v| v.start)
            }
            _ => ts - PAGE * self.between(1, 2 * u64::from(self.config.ptrs)),
        };
        self.confine(addr, PAGE).0
    }

    /// A page-aligned length: a few pages, a table's worth, a pmd's worth.
    fn interesting_len(&mut self) -> u64 {
        let (hps, pud, ptrs) = (self.hps(), self.pud(), u64::from(self.config.ptrs));
        match self.weighted(&[5, 3, 2, 1]) {
            0 => PAGE * self.between(1, 4),
            1 => hps * self.between(1, 2),
            2 => PAGE * self.between(1, 3 * ptrs),
            _ => pud,
        }
    }

    /// A range `(addr, len)` aimed at the mappings: whole, head, tail, middle, across a gap,
    /// table-aligned around one.
    fn interesting_range(&mut self, space: usize) -> (u64, u64) {
        let hps = self.hps();
        let aim = self.opts.aim.max(1);
        let v = if self.pct(8 / aim) { None } else { self.some_vma(space) };
        let Some(v) = v else {
            let a = self.interesting_addr(space);
            let l = self.interesting_len();
            return self.confine(a, l);
        };
        let pages = v.len() / PAGE;
        // Mostly inside one mapping; sometimes over its neighbourhood (holes: ENOMEM paths).
        let (addr, len) = match self.weighted(&[3 * aim, 2 * aim, 2 * aim, 3 * aim, 1, aim, 1]) {
            0 => (v.start, v.len()),
            1 => (v.start, PAGE * self.between(1, pages)),
            2 => {
                let k = self.between(1, pages);
                (v.end - k * PAGE, k * PAGE)
            }
            3 => {
                let a = self.below(pages);
                let b = self.between(1, pages - a);
                (v.start + a * PAGE, b * PAGE)
            }
            4 => {
                let a = v.start + PAGE * self.below(pages);
                let next = self.spaces[space].vmas.iter().copied().find(|w| w.start >= v.end);
                match next {
                    Some(n) => (a, n.start + PAGE * self.between(1, n.len() / PAGE) - a),
                    None => (a, v.end + PAGE - a),
                }
            }
            5 => {
                let s = align_down(v.start, hps);
                let e = align_up(v.end, hps).unwrap_or(v.end);
                (s, e - s)
            }
            _ => {
                let s = v.start.saturating_sub(PAGE).max(USER_BASE);
                (s, v.end + PAGE - s)
            }
        };
        self.confine(addr, len)
    }

    /// A deliberately odd address: unaligned, null, below user space, at or past its top.
    fn odd_addr(&mut self, space: usize) -> u64 {
        let ts = self.task_size();
        if let Some((lo, hi)) = self.opts.window {
            return lo + self.below(hi - lo);
        }
        match self.below(8) {
            0 => 0,
            1 => self.below(USER_BASE),
            2 => ts - PAGE,
            3 => ts,
            4 => ts + PAGE * self.below(16),
            5 => !(PAGE - 1),
            6 => 1 << 47,
            _ => self.interesting_addr(space) + self.between(1, PAGE - 1),
        }
    }

    /// A deliberately odd length for a range at `addr`: zero, unaligned, huge, wrapping.
    fn odd_len(&mut self, addr: u64) -> u64 {
        let ts = self.task_size();
        if let Some((_, hi)) = self.opts.window {
            let room = hi.saturating_sub(addr);
            return if self.pct(50) {
                0
            } else {
                self.between(1, room.min(3 * PAGE))
            };
        }
        match self.below(8) {
            0 => 0,
            1 => self.between(1, PAGE - 1),
            2 => PAGE * self.between(1, 4) + self.between(1, PAGE - 1),
            3 => u64::MAX,
            4 => u64::MAX - PAGE + 1,
            5 => 1 << 63,
            6 => ts,
            _ => ts.saturating_sub(addr) + PAGE,
        }
    }

    fn prot(&mut self) -> Prot {
        let bits = match self.weighted(&[45, 20, 8, 7, 5, 5, 5, 5]) {
            0 => 3,
            1 => 1,
            2 => 0,
            3 => 7,
            4 => 2,
            5 => 4,
            6 => 5,
            _ => 6,
        };
        Prot::from_bits(bits)
    }

    // --- mmap ----------------------------------------------------------------------------

    fn mmap(&mut self, task: TaskId, odd: bool) {
        let space = self.space_of(task);
        let file = if !self.files.is_empty() && self.pct(60) {
            Some(self.below(self.files.len() as u64) as FileId)
        } else {
            None
        };
        let unit = self.unit_of(file);
        let shared = self.pct(50);
        let prot = self.prot();
        let off = match file {
            Some(f) => self.map_off(f, unit),
            None => 0,
        };
        let len = self.map_len(file, off, unit);
        let fixed = self.opts.window.is_some() || self.pct(50);
        let flags = MmapFlags {
            shared,
            fixed,
            noreplace: self.pct(12),
            populate: self.pct(15),
        };
        let (addr, len) = if fixed || flags.noreplace || self.pct(40) {
            self.map_addr(space, len, unit, file)
        } else {
            (0, len)
        };
        let mut op = Op::Mmap {
            addr,
            len,
            prot,
            flags,
            file,
            off,
        };
        if odd {
            self.oddify_mmap(space, &mut op);
        }
        self.apply(task, &op);
        self.push(task, op);
    }

    /// A file offset for mmap: aligned to `unit`, at 0, inside, at the EOF page, past EOF.
    fn map_off(&mut self, f: FileId, unit: u64) -> u64 {
        let size = self.sizes[f as usize];
        let hps = self.hps();
        let units = size.div_ceil(unit).max(1);
        match self.weighted(&[20, 6, 4, 1, 4, 1]) {
            0 => 0,
            1 => unit * self.below(units),
            2 => align_down(size, unit),
            3 => align_up(size, unit).unwrap_or(0),
            4 => align_down(self.below(size.max(1)), hps.max(unit)),
            _ => align_up(size, unit).unwrap_or(0) + unit * self.between(1, 2),
        }
    }

    /// A length for mmap: the rest of the file, a few units, a table's worth, past EOF.
    fn map_len(&mut self, file: Option<FileId>, off: u64, unit: u64) -> u64 {
        let hps = self.hps();
        let len = match file {
            Some(f) => {
                let rest = self.sizes[f as usize].saturating_sub(off).max(1);
                let whole = align_up(rest, unit).unwrap_or(unit);
                let huge = unit != PAGE;
                match self.weighted(&[4, 3, 2, 1, u32::from(huge)]) {
                    0 => whole,
                    1 if self.pct(70) => (unit * self.between(1, 4)).min(whole),
                    1 => unit * self.between(1, 4),
                    2 => align_up(hps * self.between(1, 2), unit).unwrap_or(unit),
                    3 => whole + unit,
                    _ => self.pud(),
                }
            }
            None => align_up(self.interesting_len(), unit).unwrap_or(unit),
        };
        len.min(2 * self.pud()).max(unit)
    }

    /// An address for a mapping of `len`: a free aligned slot, right after or before a
    /// mapping, over one, where another address space maps the same file, near the top.
    /// Returns the (possibly confined) address and length.
    fn map_addr(&mut self, space: usize, len: u64, unit: u64, file: Option<FileId>) -> (u64, u64) {
        let (hps, pud, ts) = (self.hps(), self.pud(), self.task_size());
        let has = !self.spaces[space].vmas.is_empty();
        let same_file = |v: &Vma| file.is_some() && v.file == file;
        let peers: Vec<u64> = self
            .spaces
            .iter()
            .flat_map(|s| s.vmas.iter().filter(|v| same_file(v)).map(|v| v.start))
            .collect();
        let h = u32::from(has);
        let top = u32::from(self.opts.window.is_none());
        let addr = match self.weighted(&[5, 2 * h, h, 2 * h, 2 * u32::from(!peers.is_empty()), top]) {
            0 => {
                let align = self.pick(&[unit, hps.max(unit), pud.max(unit)]);
                let mut a = self.focus_addr(len, align);
                for _ in 0..8 {
                    if self.spaces[space].is_free(a, a.saturating_add(len)) {
                        break;
                    }
                    a = self.focus_addr(len, align);
                }
                a
            }
            1 => {
                let v = self.some_vma(space).expect("has a mapping");
                align_up(v.end, unit).unwrap_or(v.end)
            }
            2 => {
                let v = self.some_vma(space).expect("has a mapping");
                align_down(v.start.saturating_sub(len).max(USER_BASE), unit)
            }
            3 => {
                let v = self.some_vma(space).expect("has a mapping");
                align_down(v.start + PAGE * self.below(v.len() / PAGE), unit)
            }
            4 => self.pick(&peers),
            _ => align_down(ts.saturating_sub(len + unit * self.below(4)), unit),
        };
        let addr = addr.max(align_up(USER_BASE, unit).unwrap_or(USER_BASE));
        self.confine(addr, len)
    }

    fn oddify_mmap(&mut self, space: usize, op: &mut Op) {
        let Op::Mmap {
            addr,
            len,
            flags,
            file,
            off,
            ..
        } = op
        else {
            return;
        };
        let windowed = self.opts.window.is_some();
        match self.below(6) {
            0 => {
                let a = *addr + self.between(1, PAGE - 1);
                (*addr, *len) = self.confine(a, *len);
            }
            1 => *len = self.odd_len(*addr),
            2 if file.is_some() => *off += self.between(1, PAGE - 1),
            3 if file.is_some() => *off = self.pick(&[!(PAGE - 1), 1 << 62, 1 << 44]),
            4 if !windowed => {
                flags.fixed = true;
                *addr = self.odd_addr(space);
            }
            _ => {
                *len = if windowed {
                    (*len).saturating_sub(self.between(1, PAGE - 1)).max(1)
                } else {
                    self.odd_len(*addr)
                }
            }
        }
    }

    // --- munmap, mprotect, pageout -------------------------------------------------------

    fn range_maybe_odd(&mut self, space: usize, odd: bool) -> (u64, u64) {
        let (mut addr, mut len) = self.interesting_range(space);
        if odd {
            if self.pct(50) {
                addr = self.odd_addr(space);
                (addr, len) = self.confine(addr, len);
            } else {
                len = self.odd_len(addr);
            }
        }
        (addr, len)
    }

    fn munmap(&mut self, task: TaskId, odd: bool) {
        let space = self.space_of(task);
        let (addr, len) = self.range_maybe_odd(space, odd);
        let op = Op::Munmap { addr, len };
        self.apply(task, &op);
        self.push(task, op);
    }

    fn mprotect(&mut self, task: TaskId, odd: bool) {
        let space = self.space_of(task);
        let (addr, len) = self.range_maybe_odd(space, odd);
        let prot = if odd && self.pct(30) {
            Prot::from_bits(self.below(8) as u8)
        } else {
            self.prot()
        };
        let op = Op::Mprotect { addr, len, prot };
        self.apply(task, &op);
        self.push(task, op);
    }

    fn pageout(&mut self, task: TaskId, odd: bool) {
        let space = self.space_of(task);
        let (addr, len) = self.range_maybe_odd(space, odd);
        self.push(task, Op::Pageout { addr, len });
    }

    // --- mremap --------------------------------------------------------------------------

    fn mremap(&mut self, task: TaskId, odd: bool) {
        let space = self.space_of(task);
        let windowed = self.opts.window.is_some();
        let (addr, old, vma) = match self.some_vma(space) {
            Some(v) => {
                let pages = v.len() / PAGE;
                let addr = if self.pct(70) {
                    v.start
                } else {
                    v.start + PAGE * self.below(pages)
                };
                let rest = v.end - addr;
                let old = if self.pct(60) {
                    rest
                } else {
                    PAGE * self.between(1, rest / PAGE)
                };
                (addr, old, Some(v))
            }
            None => {
                let a = self.interesting_addr(space);
                (a, PAGE * self.between(1, 4), None)
            }
        };
        let unit = vma.map_or(PAGE, |v| if v.huge { self.hps() } else { PAGE });
        let mut new = match self.below(5) {
            0 | 1 => old + unit * self.between(1, 4),
            2 => old.saturating_sub(unit * self.between(1, 4)).max(unit),
            3 => old,
            _ => self.hps() * self.between(1, 2),
        };
        new = align_up(new, unit).unwrap_or(unit);
        let mut flags = MremapFlags::default();
        let mut to = None;
        match self.below(3) {
            0 => {}
            1 if !windowed => flags.maymove = true,
            _ => {
                flags = MremapFlags {
                    maymove: true,
                    fixed: true,
                };
                let (t, n) = self.map_addr(space, new, unit, vma.and_then(|v| v.file));
                // The new range may not overlap the old one: take another slot if it does.
                let t = if t < addr + old && addr < t + n {
                    let (t2, _) = self.confine(align_up(addr + old, unit).unwrap_or(addr), n);
                    t2
                } else {
                    t
                };
                let (t, n) = self.confine(t, n);
                to = Some(t);
                new = n;
            }
        }
        let (addr, old) = self.confine(addr, old);
        if let (Some((_, hi)), None) = (self.opts.window, to) {
            new = new.min(hi - addr);
        }
        let mut op = Op::Mremap {
            addr,
            old,
            new,
            flags,
            to,
        };
        if odd {
            self.oddify_mremap(space, &mut op);
        }
        self.apply(task, &op);
        self.push(task, op);
    }

    fn oddify_mremap(&mut self, space: usize, op: &mut Op) {
        let Op::Mremap {
            addr,
            old,
            new,
            flags,
            to,
        } = op
        else {
            return;
        };
        let windowed = self.opts.window.is_some();
        match self.below(6) {
            // old == 0 with maymove: duplicate a shared mapping (EINVAL for a private one).
            0 => {
                if let Some(v) = self.some_vma_where(space, |v, _| v.shared) {
                    *addr = v.start;
                    if let (Some((_, hi)), None) = (self.opts.window, *to) {
                        *new = (*new).min(hi - v.start);
                    }
                }
                *old = 0;
                if !windowed {
                    flags.maymove = true;
                }
            }
            1 => *new = 0,
            2 => {
                let a = self.odd_addr(space);
                *addr = a;
                let room = self.opts.window.map_or(u64::MAX, |w| w.1 - a);
                *old = (*old).min(room);
                *new = (*new).min(room);
            }
            3 if !windowed => {
                // fixed without maymove: EINVAL.
                flags.fixed = true;
                flags.maymove = self.pct(30);
                let a = self.interesting_addr(space);
                *to = Some(a);
            }
            4 if to.is_some() => {
                let t = to.unwrap_or(0) + self.between(1, PAGE - 1);
                let (t, n) = self.confine(t, *new);
                *to = Some(t);
                *new = n;
            }
            _ => {
                if windowed {
                    *new = (*new).saturating_sub(self.between(1, PAGE - 1)).max(1);
                } else {
                    *new = self.odd_len(*addr);
                }
            }
        }
    }

    // --- write, read, truncate -----------------------------------------------------------

    fn io(&mut self, task: TaskId, write: bool, odd: bool) {
        if self.files.is_empty() {
            return self.access(task, write, odd);
        }
        let space = self.space_of(task);
        let mut file = self.below(self.files.len() as u64) as FileId;
        if write && self.files[file as usize].huge && self.pct(85) {
            // hugetlbfs has no write(): EINVAL. Mostly write a regular file instead.
            let regular: Vec<FileId> = (0..self.files.len() as FileId)
                .filter(|&f| !self.files[f as usize].huge)
                .collect();
            if !regular.is_empty() {
                file = self.pick(&regular);
            }
        }
        let mut off = self.file_off(file);
        let mut len = self.io_len();
        let mut buf = self.buffer(space, len, write, file, off);
        if odd {
            match self.below(5) {
                0 => len = 0,
                1 if self.opts.window.is_none() => len = self.pick(&[u64::MAX, 1 << 40, 1 << 31]),
                2 => buf = self.odd_addr(space),
                3 if self.opts.window.is_none() => {
                    off = self.pick(&[u64::MAX, 1 << 63, (1 << 63) - 1, 1 << 44]);
                }
                _ => off += self.between(1, 1 << 20),
            }
        }
        let (buf, len) = self.confine(buf, len);
        let op = if write {
            Op::Write { file, off, len, buf }
        } else {
            Op::Read { file, off, len, buf }
        };
        self.apply(task, &op);
        self.push(task, op);
    }

    /// A byte offset for read/write: 0, EOF, just before EOF, across a page boundary, inside,
    /// the start of the EOF page, past EOF.
    fn file_off(&mut self, f: FileId) -> u64 {
        let size = self.sizes[f as usize];
        match self.weighted(&[3, 2, 2, 3, 2, 1, 1]) {
            0 => 0,
            1 => size,
            2 => size.saturating_sub(self.between(1, 16)),
            3 => self.between(0, size),
            4 => {
                let p = align_down(self.between(0, size), PAGE);
                p.saturating_sub(self.between(0, 64))
            }
            5 => align_down(size, PAGE),
            _ => size + PAGE * self.between(1, 3) + self.below(PAGE),
        }
    }

    fn io_len(&mut self) -> u64 {
        match self.weighted(&[3, 3, 2, 1, 2]) {
            0 => self.between(1, 16),
            1 => self.between(1, PAGE),
            2 => PAGE,
            3 => 2 * PAGE,
            _ => self.between(PAGE, 3 * PAGE),
        }
    }

    /// A user buffer for `len` bytes: a mapping of the same file at (or next to) the page
    /// being transferred, a mapping with the right protection, straddling the end of a
    /// mapping, or just an interesting address.
    fn buffer(&mut self, space: usize, len: u64, write: bool, file: FileId, off: u64) -> u64 {
        let prot_ok = move |v: &Vma| if write { v.prot.readable() } else { v.prot.writable() };
        let same = match self.some_vma_where(space, |v, _| v.file == Some(file) && prot_ok(v)) {
            Some(v) if self.pct(80) => Some(v),
            _ => self.some_vma_where(space, |v, _| v.file == Some(file)),
        };
        let fits = match self.some_vma_where(space, |v, sizes| prot_ok(v) && backed(v, sizes)) {
            Some(v) if self.pct(85) => Some(v),
            _ => self.some_vma_where(space, |v, _| prot_ok(v)),
        };
        let any = self.some_vma(space);
        let aim = self.opts.aim.max(1);
        let w = [
            if same.is_some() { 30 * aim } else { 0 },
            if fits.is_some() { 50 * aim } else { 0 },
            if any.is_some() { 12 } else { 0 },
            8,
        ];
        match self.weighted(&w) {
            0 => {
                let v = same.expect("weighted");
                let target = match self.below(3) {
                    0 => off,
                    1 => off + PAGE,
                    _ => off.saturating_sub(PAGE),
                };
                if target >= v.off && target - v.off < v.len() {
                    v.start + (target - v.off)
                } else {
                    v.start + self.below(v.len())
                }
            }
            1 => {
                let v = fits.expect("weighted");
                if len < v.len() {
                    v.start + self.between(0, v.len() - len)
                } else {
                    v.start
                }
            }
            2 => {
                let v = any.expect("weighted");
                v.end - self.between(1, len.min(v.len()))
            }
            _ => self.interesting_addr(space) + self.below(PAGE),
        }
    }

    fn truncate(&mut self, task: TaskId, odd: bool) {
        if self.files.is_empty() {
            return self.access(task, false, odd);
        }
        let f = self.below(self.files.len() as u64) as FileId;
        let size = self.sizes[f as usize];
        let huge = self.files[f as usize].huge;
        let max = self.opts.max_file_size.max(1);
        let mut new = if huge {
            self.hps() * self.between(0, size / self.hps() + 1)
        } else {
            match self.weighted(&[1, 3, 2, 2, 2, 1, 1]) {
                0 => 0,
                1 => {
                    let d = self.between(1, 100);
                    if self.pct(50) {
                        size.saturating_sub(d)
                    } else {
                        size + d
                    }
                }
                2 => align_down(size, PAGE),
                3 => align_up(size, PAGE).unwrap_or(size),
                4 => {
                    let p = PAGE * self.between(1, size / PAGE + 2);
                    p + self.pick(&[0, 1]) - self.pick(&[0, 1])
                }
                5 => size.saturating_mul(2).min(2 * max),
                _ => self.between(0, max),
            }
        };
        if odd {
            new = if self.opts.window.is_some() {
                self.between(1, 1 << 20)
            } else {
                let unaligned = size + self.between(1, PAGE - 1);
                self.pick(&[1 << 40, u64::MAX, 1 << 63, unaligned])
            };
        }
        let op = Op::Truncate { file: f, size: new };
        self.apply(task, &op);
        self.push(task, op);
    }

    // --- load, store ---------------------------------------------------------------------

    fn access(&mut self, task: TaskId, store: bool, odd: bool) {
        let space = self.space_of(task);
        let addr = if odd {
            self.odd_addr(space)
        } else {
            self.access_addr(space, store)
        };
        let addr = self.confine(addr, 1).0;
        let op = if store {
            let value = if self.pct(10) { 0 } else { self.rng.byte() };
            Op::Store { addr, value }
        } else {
            Op::Load { addr }
        };
        self.push(task, op);
    }

    /// A byte address for a user access: inside a mapping (first/last page, page edges),
    /// just outside one, at or past the EOF of a file mapping, or anywhere interesting.
    fn access_addr(&mut self, space: usize, store: bool) -> u64 {
        let aim = self.opts.aim.max(1);
        let v = match self.weighted(&[80 * aim, 13, 7]) {
            0 => {
                let fit = |v: &Vma| if store { v.prot.writable() } else { v.prot.readable() };
                self.some_vma_where(space, |v, sizes| fit(v) && backed(v, sizes))
                    .or_else(|| self.some_vma(space))
            }
            1 => self.some_vma(space),
            _ => None,
        };
        let Some(v) = v else {
            return self.interesting_addr(space) + self.below(PAGE);
        };
        let mut pages = v.len() / PAGE;
        if let Some(f) = v.file {
            // Mostly the pages that hold file data (past EOF is SIGBUS, aimed at below).
            let data = self.sizes[f as usize].saturating_sub(v.off).div_ceil(PAGE);
            if data > 0 && self.pct(85) {
                pages = pages.min(data);
            }
        }
        let page = match self.below(4) {
            0 => v.start,
            1 => v.start + (pages - 1) * PAGE,
            _ => v.start + PAGE * self.below(pages),
        };
        let in_page = match self.below(4) {
            0 => 0,
            1 => PAGE - 1,
            _ => self.below(PAGE),
        };
        match self.weighted(&[20 * aim, 1, 1, if v.file.is_some() { 2 } else { 0 }]) {
            0 => page + in_page,
            1 => v.end,
            2 => v.start.saturating_sub(1),
            _ => {
                // Around EOF: the last byte of the file, the byte after it, the next page.
                let size = self.sizes[v.file.expect("file mapping") as usize];
                let at = match self.below(3) {
                    0 => size.saturating_sub(1),
                    1 => size,
                    _ => align_up(size, PAGE).unwrap_or(size) + self.below(PAGE),
                };
                if at >= v.off && at - v.off < v.len() {
                    v.start + (at - v.off)
                } else {
                    page + in_page
                }
            }
        }
    }

    // --- fork, exit, share ---------------------------------------------------------------

    fn fork(&mut self, task: TaskId) {
        let child = self.tasks.len() as TaskId;
        let parent = self.tasks[task as usize];
        let cpu = if self.pct(50) {
            None
        } else {
            Some(self.below(u64::from(self.config.cpus)) as u32)
        };
        let space = self.spaces[parent.space].clone();
        self.spaces.push(space);
        self.tasks.push(TaskPic {
            space: self.spaces.len() - 1,
            cpu: cpu.unwrap_or(parent.cpu),
            alive: true,
        });
        self.push(task, Op::Fork { task: child, cpu });
    }

    fn exit(&mut self, task: TaskId) {
        self.push(task, Op::Exit);
        self.tasks[task as usize].alive = false;
        let space = self.space_of(task);
        if !self.tasks.iter().any(|t| t.alive && t.space == space) {
            self.spaces[space].vmas.clear();
        }
    }

    /// The sharing pattern: the same table-aligned range of one file mapped shared (sometimes
    /// private) at table-aligned addresses in several address spaces (or twice in one), then
    /// touched, so that page tables (pte pages, or hugetlb pmd pages) get shared.
    fn share(&mut self, task: TaskId) {
        if self.files.iter().any(|f| f.huge) && self.pct(50) && self.huge_share(task) {
            return;
        }
        let region_of = |g: &Gen<C>, f: usize| if g.files[f].huge { g.pud() } else { g.hps() };
        let big: Vec<FileId> = (0..self.files.len())
            .filter(|&f| self.sizes[f] >= region_of(self, f))
            .map(|f| f as FileId)
            .collect();
        let f = if !big.is_empty() && self.pct(70) {
            self.pick(&big)
        } else {
            self.below(self.files.len() as u64) as FileId
        };
        let region = region_of(self, f as usize);
        let unit = self.unit_of(Some(f));
        let size = self.sizes[f as usize];
        let off = if self.pct(60) {
            0
        } else {
            align_down(self.below(size.max(1)), region)
        };
        let len = region * self.between(1, 2);
        if size < off + len && self.pct(75) {
            // Grow the file so the whole shared range has data (else every access is SIGBUS).
            let op = Op::Truncate {
                file: f,
                size: off + len,
            };
            self.apply(task, &op);
            self.push(task, op);
        }
        let shared = self.pct(80);
        let prot = if self.pct(75) { Prot::RW } else { Prot::R };
        let same_addr = self.pct(50);
        let first = self.map_addr_aligned(task, len, region);

        // One live task per address space, starting with `task`'s.
        let mut who = vec![task];
        for t in self.alive() {
            if who.iter().all(|&w| self.space_of(w) != self.space_of(t)) {
                who.push(t);
            }
        }
        if who.len() == 1 {
            who.push(task); // a second mapping in the same address space
        }
        if !self.files[f as usize].huge && self.opts.window.is_none() && self.pct(20) {
            self.cow_share(&who, f, off, region, first);
            return;
        }
        let n = self.between(2, who.len().min(3) as u64) as usize;
        for (i, &t) in who.iter().take(n).enumerate() {
            if self.ops.len() >= self.budget {
                return;
            }
            let addr = if i == 0 || (same_addr && t != task) {
                first
            } else {
                self.map_addr_aligned(t, len, region)
            };
            let (addr, len) = self.confine(addr, len);
            let flags = MmapFlags {
                shared,
                fixed: true,
                noreplace: false,
                populate: self.pct(20),
            };
            let op = Op::Mmap {
                addr,
                len: align_up(len, unit).unwrap_or(len),
                prot,
                flags,
                file: Some(f),
                off,
            };
            self.apply(t, &op);
            self.push(t, op);
            if self.ops.len() < self.budget && self.pct(60) {
                let a = addr + self.below(len);
                let a = self.confine(a, 1).0;
                let op = self.touch(a, prot.writable());
                self.push(t, op);
            }
        }
    }

    /// A store (half the time, where `writable`) or a load at `addr`.
    fn touch(&mut self, addr: u64, writable: bool) -> Op {
        if writable && self.pct(50) {
            Op::Store {
                addr,
                value: self.rng.byte(),
            }
        } else {
            Op::Load { addr }
        }
    }

    /// The anon_vma pattern (seed 002's review): the first of `who` maps one pte page's range
    /// of file `f` private and writable at `first`, copies a page on write (the VMA gets an
    /// anon_vma), makes the whole range read-only, and the others map the same file range
    /// private read-only and read the copied page's address. A pte page with an anonymous
    /// copy in it must not be shared: the readers must see the file, not the copy.
    fn cow_share(&mut self, who: &[TaskId], f: FileId, off: u64, region: u64, first: u64) {
        if self.ops.len() + 3 + 2 * who.len() > self.budget {
            return;
        }
        let owner = who[0];
        let flags = MmapFlags {
            shared: false,
            fixed: true,
            noreplace: false,
            populate: false,
        };
        let map = |addr, prot| Op::Mmap {
            addr,
            len: region,
            prot,
            flags,
            file: Some(f),
            off,
        };
        let op = map(first, Prot::RW);
        self.apply(owner, &op);
        self.push(owner, op);
        let at = self.below(region);
        let op = Op::Store {
            addr: first + at,
            value: self.rng.byte(),
        };
        self.push(owner, op);
        let op = Op::Mprotect {
            addr: first,
            len: region,
            prot: Prot::R,
        };
        self.apply(owner, &op);
        self.push(owner, op);
        for &t in &who[1..] {
            let addr = if self.pct(50) && self.space_of(t) != self.space_of(owner) {
                first
            } else {
                self.map_addr_aligned(t, region, region)
            };
            let op = map(addr, Prot::R);
            self.apply(t, &op);
            self.push(t, op);
            self.push(t, Op::Load { addr: addr + at });
        }
    }

    /// The hugetlb pmd-sharing pattern (seed 004, CVE-2021-4002): one pud range of a
    /// hugetlbfs file mapped shared and writable at pud-aligned addresses in two or three
    /// address spaces (so each mapping covers a whole pud range and the pmd table the first
    /// fault makes is shared by the others), touched in each; then what unshares it raced
    /// against a fault: the sharer with the lowest address space (the one truncate's i_mmap
    /// walk meets first) faults another huge page while a truncate into the range and an
    /// munmap, mprotect or exit of another sharer run, and touches the range again. False
    /// (nothing generated) without a hugetlbfs file or a second task.
    fn huge_share(&mut self, task: TaskId) -> bool {
        let huge: Vec<FileId> = (0..self.files.len() as FileId)
            .filter(|&f| self.files[f as usize].huge)
            .collect();
        let mut who = vec![task];
        for t in self.alive() {
            if who.iter().all(|&w| self.space_of(w) != self.space_of(t)) {
                who.push(t);
            }
        }
        if huge.is_empty() || who.len() < 2 || self.opts.window.is_some() {
            return false;
        }
        let n = self.between(2, who.len().min(3) as u64) as usize;
        if self.ops.len() + 2 * n + 4 > self.budget {
            return false;
        }
        who.truncate(n);
        who.sort_by_key(|&t| self.space_of(t));
        let f = self.pick(&huge);
        let (pud, hps) = (self.pud(), self.hps());
        let units = pud / hps;
        let off = if self.pct(70) { 0 } else { pud * self.below(2) };
        // A writable hugetlb mapping grows the file to cover it.
        self.sizes[f as usize] = self.sizes[f as usize].max(off + pud);
        let same_addr = self.pct(50);
        let first = self.map_addr_aligned(who[0], pud, pud);
        let mut addrs = Vec::with_capacity(n);
        for (i, &t) in who.iter().enumerate() {
            let addr = if i == 0 || same_addr {
                first
            } else {
                self.map_addr_aligned(t, pud, pud)
            };
            addrs.push(addr);
            let op = Op::Mmap {
                addr,
                len: pud,
                prot: Prot::RW,
                flags: MmapFlags {
                    shared: true,
                    fixed: true,
                    noreplace: false,
                    populate: self.pct(10),
                },
                file: Some(f),
                off,
            };
            self.apply(t, &op);
            self.push(t, op);
            let a = addrs[i] + hps * self.below(units) + self.below(hps);
            let op = self.touch(a, true);
            self.push(t, op);
        }
        // The racing fault, and the operations that unshare and free the table.
        let racer = who[0];
        let a = addrs[0] + hps * self.below(units) + self.below(hps);
        self.push(racer, Op::Load { addr: a });
        if self.pct(80) {
            let size = off + hps * self.between(0, units - 1);
            let truncater = if self.pct(50) {
                who[n - 1]
            } else {
                self.pick(&self.alive())
            };
            let op = Op::Truncate { file: f, size };
            self.apply(truncater, &op);
            self.push(truncater, op);
        }
        let other = who[1];
        match self.weighted(&[6, 2, 2]) {
            0 => {
                let op = Op::Munmap {
                    addr: addrs[1],
                    len: pud,
                };
                self.apply(other, &op);
                self.push(other, op);
            }
            1 => {
                let op = Op::Mprotect {
                    addr: addrs[1],
                    len: pud,
                    prot: Prot::R,
                };
                self.apply(other, &op);
                self.push(other, op);
            }
            _ if self.opts.exit => self.exit(other),
            _ => {}
        }
        let a = addrs[0] + hps * self.below(units) + self.below(hps);
        let op = self.touch(a, true);
        self.push(racer, op);
        true
    }

    /// A `region`-aligned address of the task's address space for `len` bytes, free if a few
    /// tries find one.
    fn map_addr_aligned(&mut self, task: TaskId, len: u64, region: u64) -> u64 {
        let space = self.space_of(task);
        let mut a = self.focus_addr(len, region);
        for _ in 0..8 {
            if self.spaces[space].is_free(a, a + len) {
                break;
            }
            a = self.focus_addr(len, region);
        }
        a
    }

    // --- the picture's rules -------------------------------------------------------------

    /// Updates the picture with the effect `op` of `task` is predicted to have.
    fn apply(&mut self, task: TaskId, op: &Op) {
        let space = self.space_of(task);
        let ts = self.task_size();
        match *op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                off,
            } => {
                let unit = self.unit_of(file);
                let Some(len) = align_up(len, unit) else { return };
                if len == 0 || len > ts - USER_BASE || off % unit != 0 || off.checked_add(len).is_none() {
                    return;
                }
                let start = if flags.fixed || flags.noreplace {
                    if addr % unit != 0 || addr < USER_BASE || addr > ts - len {
                        return;
                    }
                    if flags.noreplace && !self.spaces[space].is_free(addr, addr + len) {
                        return;
                    }
                    addr
                } else {
                    let hint = align_up(addr, unit).unwrap_or(0);
                    if hint >= USER_BASE && hint <= ts - len && self.spaces[space].is_free(hint, hint + len) {
                        hint
                    } else {
                        match self.spaces[space].gap_topdown(len, unit, ts) {
                            Some(s) => s,
                            None => return,
                        }
                    }
                };
                let huge = unit != PAGE;
                let v = Vma {
                    start,
                    end: start + len,
                    prot,
                    shared: flags.shared,
                    file,
                    off,
                    huge,
                };
                self.spaces[space].map(v);
            }
            Op::Munmap { addr, len } => {
                if let Some(end) = self.range_end(addr, len) {
                    self.spaces[space].unmap(addr, end);
                }
            }
            Op::Mprotect { addr, len, prot } => {
                if let Some(end) = self.range_end(addr, len) {
                    if self.spaces[space].vma_at(addr).is_some() {
                        self.spaces[space].protect(addr, end, prot);
                    }
                }
            }
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            } => self.apply_mremap(space, addr, old, new, flags, to),
            Op::Write { file, off, len, .. } => {
                let f = file as usize;
                if !self.files[f].huge && len > 0 && len < (1 << 30) {
                    if let Some(end) = off.checked_add(len) {
                        if end < (1 << 40) {
                            self.sizes[f] = self.sizes[f].max(end);
                        }
                    }
                }
            }
            Op::Truncate { file, size } => {
                let f = file as usize;
                let ok = size < (1 << 40) && (!self.files[f].huge || size % self.hps() == 0);
                if ok {
                    self.sizes[f] = size;
                }
            }
            _ => {}
        }
    }

    /// The end of the page-aligned range `[addr, addr + len)` if munmap would accept it.
    fn range_end(&self, addr: u64, len: u64) -> Option<u64> {
        if !addr.is_multiple_of(PAGE) || len == 0 {
            return None;
        }
        let end = addr.checked_add(align_up(len, PAGE)?)?;
        (end <= self.task_size()).then_some(end)
    }

    fn apply_mremap(&mut self, space: usize, addr: u64, old: u64, new: u64, flags: MremapFlags, to: Option<u64>) {
        let ts = self.task_size();
        if !addr.is_multiple_of(PAGE) || new == 0 || old == 0 || (flags.fixed && !flags.maymove) {
            return;
        }
        let (Some(old), Some(new)) = (align_up(old, PAGE), align_up(new, PAGE)) else {
            return;
        };
        let Some(v) = self.spaces[space].vma_at(addr) else {
            return;
        };
        match addr.checked_add(old) {
            Some(end) if end <= v.end && new <= ts => {}
            _ => return,
        }
        let unit = if v.huge { self.hps() } else { PAGE };
        let place = |dest: u64| {
            let off = if v.file.is_some() { v.off + (addr - v.start) } else { 0 };
            Vma {
                start: dest,
                end: dest + new,
                off,
                ..v
            }
        };
        if flags.fixed {
            let Some(dest) = to else { return };
            if dest % unit != 0 || dest < USER_BASE || dest > ts - new {
                return;
            }
            if dest < addr + old && addr < dest + new {
                return;
            }
            let s = &mut self.spaces[space];
            s.unmap(dest, dest + new);
            s.unmap(addr, addr + old);
            s.map(place(dest));
        } else if new <= old {
            self.spaces[space].unmap(addr + new, addr + old);
        } else if addr + old == v.end && addr + new <= ts && self.spaces[space].is_free(v.end, addr + new) {
            let s = &mut self.spaces[space];
            s.unmap(v.start, v.end);
            s.map(Vma { end: addr + new, ..v });
        } else if flags.maymove {
            let Some(dest) = self.spaces[space].gap_topdown(new, unit, ts) else {
                return;
            };
            let s = &mut self.spaces[space];
            s.unmap(addr, addr + old);
            s.map(place(dest));
        }
    }

    // --- the schedule --------------------------------------------------------------------

    /// Scheduling decisions: uniform random tokens, or PCT-style (random priorities, the
    /// highest-priority task runs, a few change points demote the current top task), with
    /// occasional interrupts.
    fn schedule(&mut self) -> Vec<SchedToken> {
        let ntasks = self.tasks.len() as u64;
        let nops = self.ops.len().max(1) as u64;
        let len = self.between(nops, 12 * nops) as usize;
        let irq_pct = if self.opts.irq { self.pick(&[0, 2, 5, 10]) } else { 0 };
        let cpus = u64::from(self.config.cpus);
        let mut out = Vec::with_capacity(len);
        if self.pct(50) {
            for _ in 0..len {
                if self.pct(irq_pct) {
                    out.push(SchedToken::Irq(self.below(cpus) as u32));
                } else {
                    out.push(SchedToken::Task(self.below(ntasks) as TaskId));
                }
            }
            return out;
        }
        // PCT: a random priority order; at each change point the top task drops to the bottom.
        let mut order: Vec<TaskId> = (0..ntasks as TaskId).collect();
        for i in (1..order.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let depth = self.between(1, 4);
        let mut changes: Vec<usize> = (0..depth).map(|_| self.below(len as u64) as usize).collect();
        changes.sort_unstable();
        for i in 0..len {
            while changes.first() == Some(&i) {
                changes.remove(0);
                let top = order.remove(0);
                order.push(top);
            }
            if self.pct(irq_pct) {
                out.push(SchedToken::Irq(self.below(cpus) as u32));
                continue;
            }
            // Mostly the top task; otherwise a lower one, geometrically less likely, so that
            // the others progress when the top one is blocked or finished.
            let mut k = 0;
            while k + 1 < order.len() && self.pct(if k == 0 { 25 } else { 50 }) {
                k += 1;
            }
            out.push(SchedToken::Task(order[k]));
        }
        out
    }
}
