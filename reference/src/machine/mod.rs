//! The machine: Linux memory management as the real mechanism. Physical frames, files with
//! their page cache and disk, address spaces with VMAs and four-level page tables whose pages
//! are frames, a TLB per CPU, and the kernel paths (fault, mmap, munmap, mprotect, mremap,
//! write, read, truncate, pageout, fork, exit) that change them.
//!
//! Invariants kept here (the oracles in `oracle.rs` check them from outside after every step;
//! the asserts here catch a model bug at the place it happens):
//! - Every mapped user pte holds one reference and one map count of its frame (the zero page
//!   excepted) and is counted once in its mm's rss counter of the frame's kind.
//! - A page-table frame's `maps` is its share count: the upper-level entries (across all mms)
//!   pointing at it (the pgd: 1, for `mm.pgd`). It is freed when the count drops to 0, which
//!   for an unshared table happens once no VMA of its mm overlaps the range it maps
//!   (free_pgtables' rule) and it is empty. Only hugetlb pmd tables are shared (hugetlb.rs).
//! - Ptes are cleared, then the TLBs of every CPU the mm ran on are flushed, then the frames
//!   are freed (asm-generic/tlb.h's order); no path frees a frame a TLB may still reach.
//! - VMAs of an mm are sorted, disjoint, non-empty and page aligned.
//! - No state depends on anything but the inputs: no clocks, no hashing, no randomness.
//!
//! Locking: this machine runs one operation at a time to completion (the sequential kernel);
//! each kernel path notes which locks Linux holds there, so the concurrent scheduler can make
//! them real. Lock order (as mm/rmap.c): mmap_lock -> page lock -> i_mmap_rwsem ->
//! page table lock.

mod cache;
mod counted;
mod fault;
pub(crate) mod frames;
pub(crate) mod hugetlb;
mod kmap;
mod locks;
mod mm;
mod ptshare;
mod syscalls;

pub(crate) use cache::PageCache;
pub(crate) use counted::Counted;
pub(crate) use fault::{page_rest, FaultStep};
pub(crate) use frames::{Entry, Frames, Owner, Pfn, Pools, ZERO_PFN};
pub(crate) use kmap::{Ctx, Kmap};
pub(crate) use locks::{LockId, Locks, Mode};
pub(crate) use mm::{Mm, Vma};

use crate::{Config, CpuId, FileId, FileInit, Oom, TaskId, TaskInit, Violation, PAGE_SIZE};
use frames::{Page, Zone};
use std::collections::BTreeMap;

/// Index of an rss counter.
pub(crate) const MM_FILEPAGES: usize = 0;
pub(crate) const MM_ANONPAGES: usize = 1;
pub(crate) const MM_SHMEMPAGES: usize = 2;
pub(crate) const RSS_NAMES: [&str; 3] = ["file", "anon", "shmem"];

/// A file: a trace file (disk-backed or hugetlbfs) or the shmem object behind a
/// `MAP_SHARED | MAP_ANONYMOUS` mapping.
pub(crate) struct File {
    pub size: u64,
    pub huge: bool,
    /// Anonymous shared memory: zero filled, never written back, never reclaimed.
    pub shmem: bool,
    /// The trace file id whose pattern the disk starts with.
    pub pattern_id: FileId,
    /// Bytes below this offset that the disk has never overwritten hold the initial pattern.
    pub pattern_end: u64,
    /// Page cache: page index -> frame (every change counted, `cache.rs`).
    pub cache: PageCache,
    /// Pages written back: page index -> content (`None`: all zeros).
    pub disk: BTreeMap<u64, Option<Box<Page>>>,
    /// A shmem object no mapping uses any more: its pages are gone.
    pub released: bool,
}

impl File {
    /// Pages inside the file size (a partial last page counts).
    pub fn size_pages(&self) -> u64 {
        self.size.div_ceil(PAGE_SIZE)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum TaskState {
    /// Will be created by a fork.
    Unborn,
    Alive,
    /// Exited, or its fork failed.
    Gone,
}

pub(crate) struct Task {
    pub mm: usize,
    pub cpu: CpuId,
    pub state: TaskState,
    /// Frames this task's kernel path keeps pinned across scheduling points.
    pub pins: Vec<Pfn>,
    /// Whether (and where) memory ran out in the task's current operation.
    pub oom: Oom,
    /// Scheduling steps this task has run.
    pub polls: u64,
    /// Asleep in kmap() on a full pool since the pool's wakeup count was this.
    pub kmap_wait: Option<u64>,
    /// Asleep until a frame is freed, since the free count was this.
    pub mem_wait: Option<u64>,
    /// Woken from `mem_wait` by the OOM path, not by a free.
    pub mem_oom: bool,
    /// Pte tables whose share count this task raised for a link it has not made yet
    /// (`ptshare-count-race` holds one across a scheduling point).
    pub share_pending: Vec<Pfn>,
}

impl Task {
    fn new(mm: usize, cpu: CpuId, state: TaskState) -> Task {
        Task {
            mm,
            cpu,
            state,
            pins: Vec::new(),
            oom: Oom::No,
            polls: 0,
            kmap_wait: None,
            mem_wait: None,
            mem_oom: false,
            share_pending: Vec::new(),
        }
    }
}

/// A linearization point of a running operation, handed to the flat spec in the order the
/// points happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lin {
    /// The whole operation takes effect now (its result is compared when it returns).
    Whole,
    /// A write or read copied `n` bytes between file offset `pos` and user address `user`.
    Chunk { pos: u64, n: u64, user: u64 },
    /// A write's write_end set `i_size = max(i_size, pos)` having copied nothing.
    Grow { pos: u64 },
    /// MAP_POPULATE faulted in the page at `va`.
    Populate { va: u64 },
    /// A user-access fault at `va` resolved (its effects happen now, even if the access that
    /// wanted it does not follow).
    Fault { va: u64, write: bool },
}

/// A cached translation: filled by user accesses, removed only by flushes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct TlbEntry {
    pub mm: u32,
    pub vpn: u64,
    pub pfn: Pfn,
    /// The frame's generation when the entry was filled.
    pub gen: u32,
    /// Filled by a write (the pte was writable and is now dirty).
    pub write: bool,
}

pub(crate) struct Cpu {
    /// Its TLB entries (counted: unchanged.rs).
    pub tlb: Counted<Vec<TlbEntry>>,
    /// The task running on this CPU (switched at each scheduling step).
    pub current: Option<TaskId>,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FaultError {
    Segv,
    Bus,
    Oom,
}

/// TRACE.md's file pattern, `(k % 251) + 1` for `k` in `0..251 + PAGE`: any page-sized run of
/// it is a slice starting at the page's first remainder.
const PATTERN: [u8; 251 + frames::PAGE] = {
    let mut t = [0u8; 251 + frames::PAGE];
    let mut k = 0;
    while k < t.len() {
        t[k] = (k % 251) as u8 + 1;
        k += 1;
    }
    t
};

/// Fills `buf` (at most a page) with the initial content of file `file` from offset `off`.
fn fill_pattern(buf: &mut [u8], file: FileId, off: u64) {
    let r = ((off + 17 * file as u64) % 251) as usize;
    buf.copy_from_slice(&PATTERN[r..r + buf.len()]);
}

pub(crate) struct Machine {
    pub cfg: Config,
    pub frames: Frames,
    pub files: Vec<File>,
    /// Every mm ever created; a torn-down mm stays with `live == false` (ids are never reused,
    /// so TLB tags stay unambiguous).
    pub mms: Vec<Mm>,
    pub tasks: Vec<Task>,
    pub cpus: Vec<Cpu>,
    next_anon_vma: u32,
    /// Set when the running operation ran out of memory (handed to the flat spec); saved
    /// in and restored from its task at each context switch.
    pub oom: Oom,
    /// Every lock held or waited for, and lockdep's record.
    pub locks: Locks,
    /// The pkmap pool and the per-CPU kmap_atomic stacks.
    pub kmap: Kmap,
    /// Linearization points reached in the current step, in order.
    pub lin: Vec<(TaskId, Lin)>,
    /// Scheduling steps run so far (all tasks).
    pub polls: u64,
    /// The task whose step is running.
    pub current: TaskId,
    /// A violation seen in the middle of an operation (a stale TLB entry used).
    pub violation: Option<Violation>,
    /// Pages evicted by reclaim so far (to tell a copy that memory pressure undid from a
    /// model bug).
    pub reclaims: u64,
    /// The event log, when the run records one (`events.rs`).
    pub events: Option<Box<crate::events::Recorder>>,
    /// A dirty highmem page reclaim skipped because its writeback would wait for a kmap.
    pub reclaim_needs_kmap: Option<Pfn>,
    /// Bumped by every TLB flush and change of a task's pins (`unchanged.rs`: the checker
    /// skips its walk while this, `Frames::changes`, each page cache's count of changes and a
    /// snapshot stay the same).
    pub epoch: u64,
    /// The frames of each hugetlb unit, by head frame (hugetlb.rs).
    pub units: hugetlb::Units,
    /// Shared pte tables: the (mm, base address) of every pmd entry linking each table
    /// linked more than once, or once while a task holds a count it has not linked yet
    /// (`ptshare.rs`).
    pub ptshare: BTreeMap<Pfn, Vec<(usize, u64)>>,
}

impl Machine {
    pub fn new(cfg: &Config, files: &[FileInit], tasks: &[TaskInit], pools: Pools) -> Machine {
        let mut m = Machine {
            cfg: *cfg,
            frames: Frames::new(cfg, pools),
            files: files
                .iter()
                .enumerate()
                .map(|(i, f)| File {
                    size: f.size,
                    huge: f.huge,
                    shmem: false,
                    pattern_id: i as FileId,
                    pattern_end: if f.huge { 0 } else { f.size },
                    cache: PageCache::default(),
                    disk: BTreeMap::new(),
                    released: false,
                })
                .collect(),
            mms: Vec::new(),
            tasks: Vec::new(),
            cpus: (0..cfg.cpus)
                .map(|_| Cpu {
                    tlb: Counted::default(),
                    current: None,
                })
                .collect(),
            next_anon_vma: 1,
            oom: Oom::No,
            locks: Locks::new(tasks.len()),
            kmap: Kmap::new(cfg.pkmap, cfg.cpus, tasks.len()),
            lin: Vec::new(),
            polls: 0,
            current: 0,
            violation: None,
            reclaims: 0,
            events: None,
            reclaim_needs_kmap: None,
            epoch: 0,
            units: hugetlb::Units::default(),
            ptshare: BTreeMap::new(),
        };
        // Tasks with the same `mm` number share one address space, in order of first use.
        let mut mm_of: Vec<(u32, usize)> = Vec::new();
        for t in tasks {
            let mm = match mm_of.iter().find(|(n, _)| *n == t.mm) {
                Some(&(_, i)) => {
                    m.mms[i].users += 1;
                    i
                }
                None => {
                    let pgd = m
                        .frames
                        .alloc(Zone::Low, Owner::Table { level: 3 })
                        .expect("frames for the initial pgds");
                    m.mms.push(Mm::new(pgd));
                    mm_of.push((t.mm, m.mms.len() - 1));
                    m.mms.len() - 1
                }
            };
            m.tasks.push(Task::new(mm, t.cpu, TaskState::Alive));
        }
        m
    }

    /// Tears the machine down into its reusable buffers.
    pub fn into_pools(self) -> Pools {
        let frames = self.cfg.frames as usize;
        let mut pools = self.frames.into_pools();
        // Written-back pages join the page pool, no more of them than the machine has frames
        // (a run never has more frame contents than that): the pool does not grow from one
        // run to the next with each run's disk pages.
        for f in self.files {
            for p in f.disk.into_values().flatten() {
                if pools.pages.len() >= frames {
                    break;
                }
                pools.pages.push(frames::Bytes::whole(p));
            }
        }
        pools.pages.truncate(frames);
        pools
    }

    /// Marks task `task` as one a fork will create (the executor declares forks up front).
    pub fn declare_unborn(&mut self, task: TaskId) {
        assert_eq!(task as usize, self.tasks.len(), "tasks are created in order");
        self.tasks.push(Task::new(usize::MAX, 0, TaskState::Unborn));
        self.locks.add_task(task);
        self.kmap.add_task();
    }

    /// Context switch: `cpu` now runs task `t` (switch_mm: its mm stays in the mm's cpumask
    /// from now on; other mms' TLB entries stay, tagged with their mm), with the task's
    /// per-operation state.
    pub fn switch_to(&mut self, t: TaskId) {
        let task = &self.tasks[t as usize];
        assert_eq!(task.state, TaskState::Alive, "task {t} is not alive");
        let (mm, cpu) = (task.mm, task.cpu);
        self.cpus[cpu as usize].current = Some(t);
        self.current = t;
        self.mms[mm].cpus |= 1 << cpu;
        self.oom = task.oom;
    }

    /// The end of task `t`'s step: its per-operation state goes back to the task.
    pub fn switch_from(&mut self, t: TaskId) {
        self.polls += 1;
        let task = &mut self.tasks[t as usize];
        task.polls += 1;
        task.oom = self.oom;
    }

    /// The task whose step is running, and its CPU.
    fn running(&self) -> (TaskId, CpuId) {
        (self.current, self.tasks[self.current as usize].cpu)
    }

    /// might_sleep() for task `t` about to sleep (`what`, formatted only for a violation):
    /// with a spinlock held or a kmap_atomic entry of its own on its CPU, that is an
    /// `atomic-sleep` violation (recorded; false returned).
    pub fn might_sleep(&mut self, t: TaskId, what: impl FnOnce() -> String) -> bool {
        let cpu = self.tasks[t as usize].cpu;
        let held = match self.locks.holds_spinlock(t) {
            Some(spin) => format!("{spin} (a spinlock)"),
            None if self.kmap.in_atomic(t, cpu) => format!("a kmap_atomic on CPU {cpu}"),
            None => return true,
        };
        self.violation.get_or_insert(Violation {
            oracle: crate::Oracle::AtomicSleep,
            message: format!("task {t} may sleep {} while it holds {held}", what()),
        });
        false
    }

    /// kmap_atomic of `pfn` by the running task on its CPU (a kernel touch of the page's
    /// contents begins); returns the entry's depth (`None` for lowmem). A violation is
    /// recorded for the scheduler.
    #[track_caller]
    pub fn kmap_atomic_here(&mut self, pfn: Pfn) -> Option<usize> {
        let (t, cpu) = self.running();
        match self.kmap_atomic(cpu, Ctx::Task(t), pfn) {
            Ok(d) => d,
            Err(v) => {
                self.violation.get_or_insert(v);
                None
            }
        }
    }

    /// kunmap_atomic of the running task's entry at `depth`.
    #[track_caller]
    pub fn kunmap_atomic_here(&mut self, depth: Option<usize>) {
        let (t, cpu) = self.running();
        if let Err(v) = self.kunmap_atomic(cpu, Ctx::Task(t), depth) {
            self.violation.get_or_insert(v);
        }
    }

    /// copy_user_highpage: `src` to `dst` under two kmap_atomic entries, unmapped in reverse
    /// order (with `kmap-atomic-unordered`, in the order they were mapped).
    pub fn copy_user_highpage(&mut self, src: Pfn, dst: Pfn) {
        let a = self.kmap_atomic_here(src);
        let b = self.kmap_atomic_here(dst);
        self.frames.copy_page(src, dst);
        if self.cfg.bugs.contains(crate::Bug::KmapAtomicUnordered) {
            self.kunmap_atomic_here(a);
            self.kunmap_atomic_here(b);
        } else {
            self.kunmap_atomic_here(b);
            self.kunmap_atomic_here(a);
        }
    }

    /// clear_user_highpage of a fresh page (its contents start zero in the model; the
    /// kmap_atomic is the kernel's touch).
    pub fn clear_user_highpage(&mut self, pfn: Pfn) {
        let d = self.kmap_atomic_here(pfn);
        self.kunmap_atomic_here(d);
    }

    /// An interrupt on `cpu` (an `irqC` token): its handler allocates a highmem page of its
    /// own (none free: it does nothing), kmap_atomic()s it on top of whatever the CPU's
    /// stack holds, writes and reads it back through the mapping, kunmap_atomic()s it and
    /// frees it. With `kmap-atomic-irq-slot` the handler's type-indexed slot is the one the
    /// interrupted task's top entry uses: it remaps that slot and leaves it so.
    pub fn irq(&mut self, cpu: CpuId) -> Result<(), Violation> {
        let Some(page) = self.frames.alloc_highmem(Owner::Anon) else {
            return Ok(());
        };
        self.ev_alloc(page);
        let stack = &mut self.kmap.stacks[cpu as usize];
        let r = if self.cfg.bugs.contains(crate::Bug::KmapAtomicIrqSlot) && !stack.is_empty() {
            let depth = stack.len() - 1;
            let top = stack.last_mut().expect("non-empty");
            let (holder, was) = (top.ctx, top.pfn);
            top.pfn = page;
            self.ev_kmap_remap(cpu, depth, holder, was, page);
            self.frames.bytes_mut(page, 0..1)[0] = 0xa5;
            Ok(())
        } else {
            self.kmap_atomic(cpu, Ctx::Irq, page).and_then(|d| {
                let at = self.atomic_access(cpu, d, page)?;
                self.frames.bytes_mut(at, 0..1)[0] = 0xa5;
                self.kunmap_atomic(cpu, Ctx::Irq, d)
            })
        };
        self.put_frame(page);
        r
    }

    /// spin_lock of `id` by the running task: never contended (no spinlock is held across a
    /// scheduling point), recorded for lockdep.
    #[track_caller]
    pub fn spin_lock(&mut self, id: LockId) {
        let t = self.current;
        let got = self.locks.acquire(t, id, Mode::Write);
        self.ev_lock(t, id, Mode::Write, std::panic::Location::caller());
        assert_eq!(got, locks::Acquired::Taken, "{id} is contended");
    }

    #[track_caller]
    pub fn spin_unlock(&mut self, id: LockId) {
        let woken = self.locks.release(self.current, id);
        self.ev_unlock(self.current, id, &woken, std::panic::Location::caller());
        assert!(woken.is_empty(), "a task slept on {id}");
    }

    /// How many bytes from file offset `pos` a reader holding `page` (the file's page there,
    /// or the zero page for a hugetlbfs hole) may still copy from it: up to the page's end and
    /// i_size, and none if the page is no longer the file's (or the hole was filled).
    pub fn cache_bytes_from(&self, f: usize, page: Pfn, pos: u64) -> u64 {
        let file = &self.files[f];
        let index = pos / PAGE_SIZE;
        let ours = if page == ZERO_PFN {
            !file.cache.contains(index)
        } else {
            file.cache.get(index) == Some(page)
        };
        if !ours || pos >= file.size {
            return 0;
        }
        (file.size - pos).min(PAGE_SIZE - pos % PAGE_SIZE)
    }

    /// The inode lock (i_rwsem) of file `f`, in its filesystem's lockdep class.
    pub fn inode_lock(&self, f: usize) -> LockId {
        if self.files[f].huge {
            LockId::IRwsemHuge(f as u32)
        } else {
            LockId::IRwsem(f as u32)
        }
    }

    /// Steps run by tasks other than `t` so far.
    pub fn polls_of_others(&self, t: TaskId) -> u64 {
        self.polls - self.tasks[t as usize].polls
    }

    // ---- page tables ------------------------------------------------------------------

    fn bits(&self) -> u32 {
        self.cfg.ptrs.trailing_zeros()
    }

    /// Index of `va` in a table of `level` (0 pte .. 3 pgd).
    pub fn index(&self, va: u64, level: u32) -> usize {
        ((va >> (12 + level * self.bits())) & (self.cfg.ptrs as u64 - 1)) as usize
    }

    /// Bytes one entry of a table of `level` maps.
    pub fn entry_span(&self, level: u32) -> u64 {
        1u64 << (12 + level * self.bits())
    }

    /// The table of `level` (1 pmd or 2 pud) and index mapping `va`, if every table above
    /// it exists (a hugetlb pmd leaf is an entry of the pmd table, so level 1 reaches it).
    pub fn table_slot(&self, mm: usize, va: u64, level: u32) -> Option<(Pfn, usize)> {
        self.table_walk(mm, va, level).ok()
    }

    /// [`Machine::table_slot`], or `Err(l)`: the entry of `va` at level `l` above it is empty,
    /// so nothing in the `entry_span(l)` bytes around `va` has a table of `level`.
    pub fn table_walk(&self, mm: usize, va: u64, level: u32) -> Result<(Pfn, usize), u32> {
        assert!((1..=2).contains(&level), "table_slot below a pmd: use leaf_slot");
        let mut t = self.mms[mm].pgd;
        for l in (level + 1..=3).rev() {
            let e = self.frames.table(t)[self.index(va, l)];
            if !e.mapped() {
                return Err(l);
            }
            assert!(!e.huge(), "a huge leaf above the pmd level");
            t = e.pfn;
        }
        Ok((t, self.index(va, level)))
    }

    /// The leaf slot mapping `va`: (table, index, level) of the pte (level 0) or of the
    /// hugetlb pmd leaf (level 1), if the tables down to it exist.
    pub fn leaf_slot(&self, mm: usize, va: u64) -> Option<(Pfn, usize, u32)> {
        let (t, i) = self.table_slot(mm, va, 1)?;
        let e = self.frames.table(t)[i];
        if !e.mapped() {
            return None;
        }
        if e.huge() {
            return Some((t, i, 1));
        }
        Some((e.pfn, self.index(va, 0), 0))
    }

    /// The pte table and index mapping `va`, if every upper table exists (`None` under a
    /// hugetlb pmd leaf too).
    pub fn pte_slot(&self, mm: usize, va: u64) -> Option<(Pfn, usize)> {
        match self.leaf_slot(mm, va)? {
            (t, i, 0) => Some((t, i)),
            _ => None,
        }
    }

    /// The translation of the page at `va` as a pte would give it: the pte, or for a hugetlb
    /// pmd leaf the leaf's bits with the unit's frame for `va`.
    pub fn pte(&self, mm: usize, va: u64) -> Entry {
        match self.leaf_slot(mm, va) {
            Some((t, i, 0)) => self.frames.table(t)[i],
            Some((t, i, _)) => self.huge_subpage(self.frames.table(t)[i], va),
            None => Entry::NONE,
        }
    }

    #[track_caller]
    pub fn set_pte(&mut self, slot: (Pfn, usize), e: Entry) {
        self.ev_entry(slot.0, slot.1, e);
        self.frames.table_mut(slot.0)[slot.1] = e;
    }

    /// Walks to the pte of `va`, allocating missing tables (`__pte_alloc` and friends).
    /// Caller holds mmap_lock (read at least); each allocation may reclaim.
    pub fn pte_alloc(&mut self, mm: usize, va: u64) -> Result<(Pfn, usize), FaultError> {
        self.table_alloc(mm, va, 0)
    }

    /// Frees every page table below the pgd of `mm` whose range no VMA overlaps any more
    /// (free_pgtables). Only empty tables can qualify; the TLB of the range was flushed by the
    /// caller after the ptes were cleared. Caller holds mmap_lock for writing.
    pub fn free_pgtables(&mut self, mm: usize, start: u64, end: u64) {
        let pgd = self.mms[mm].pgd;
        self.free_tables_under(mm, pgd, 3, 0, start, end);
    }

    fn free_tables_under(&mut self, mm: usize, table: Pfn, level: u32, base: u64, start: u64, end: u64) {
        let span = self.entry_span(level);
        for i in 0..self.cfg.ptrs as usize {
            let lo = base + i as u64 * span;
            let hi = lo + span;
            if hi <= start || lo >= end {
                continue;
            }
            let e = self.frames.table(table)[i];
            if !e.mapped() {
                continue;
            }
            if e.huge() {
                // A hugetlb leaf is zapped (or unshared) with its VMA, before this runs.
                assert!(
                    self.mms[mm].overlaps(lo, hi),
                    "hugetlb leaf for [{lo:#x}, {hi:#x}) of mm {mm} outlived its VMA"
                );
                continue;
            }
            if level > 1 {
                self.free_tables_under(mm, e.pfn, level - 1, lo, start, end);
            }
            if self.mms[mm].overlaps(lo, hi) {
                continue;
            }
            // Nothing maps [lo, hi): the lower table must be empty now, and no longer
            // shared (the paths that unmap unshare first).
            let child = e.pfn;
            assert!(
                self.frames.table(child).iter().all(|c| !c.mapped()),
                "page table {child} for [{lo:#x}, {hi:#x}) outlived its VMAs with entries in it"
            );
            self.ev_entry(table, i, Entry::NONE);
            self.frames.table_mut(table)[i] = Entry::NONE;
            self.unlink_table(child);
        }
    }

    /// Frees every table of `mm`, the pgd included (exit_mmap's last step).
    fn free_all_tables(&mut self, mm: usize) {
        let task_size = self.cfg.task_size();
        self.free_pgtables(mm, 0, task_size);
        let pgd = self.mms[mm].pgd;
        self.unlink_table(pgd);
    }

    /// The last entry linking `table` (or an mm's pgd pointer) is gone: its share count
    /// drops to 0 and the frame is freed.
    fn unlink_table(&mut self, table: Pfn) {
        let fr = self.frames.frame_mut(table);
        assert_eq!(fr.maps, 1, "freeing page table {table} still shared");
        fr.maps = 0;
        self.put_frame(table);
    }

    // ---- frames -----------------------------------------------------------------------

    /// Allocates a frame, reclaiming file pages when the zone is exhausted. Never sleeps in
    /// the sequential machine: with nothing reclaimable the allocation fails.
    pub fn alloc_frame(&mut self, zone: Zone, owner: Owner) -> Result<Pfn, FaultError> {
        loop {
            if let Some(pfn) = self.frames.alloc(zone, owner) {
                self.ev_alloc(pfn);
                return Ok(pfn);
            }
            if !self.reclaim_one(zone) {
                self.oom = Oom::After(0);
                return Err(FaultError::Oom);
            }
        }
    }

    /// Drops one reference; frees the frame with its last.
    pub fn put_frame(&mut self, pfn: Pfn) {
        if pfn == ZERO_PFN {
            return;
        }
        let fr = self.frames.frame_mut(pfn);
        assert!(fr.refs > 0, "put of frame {pfn} with no reference");
        fr.refs -= 1;
        if fr.refs == 0 {
            self.ev_free(pfn);
            self.frames.free(pfn);
        }
    }

    pub fn get_frame(&mut self, pfn: Pfn) {
        if pfn != ZERO_PFN {
            let fr = self.frames.frame_mut(pfn);
            assert!(fr.refs > 0 && fr.owner != Owner::Free, "get of free frame {pfn}");
            fr.refs += 1;
        }
    }

    /// The rss counter a mapped frame counts in.
    pub fn rss_kind(&self, pfn: Pfn) -> usize {
        let owner = self.frames.frame(pfn).owner;
        self.rss_kind_of(owner)
            .unwrap_or_else(|| panic!("user pte maps frame {pfn} owned by {owner:?}"))
    }

    /// The rss counter a user page of `owner` counts in (`None`: no user pte may map it).
    pub fn rss_kind_of(&self, owner: Owner) -> Option<usize> {
        match owner {
            Owner::Anon => Some(MM_ANONPAGES),
            Owner::Cache { file, .. } if self.files[file as usize].shmem => Some(MM_SHMEMPAGES),
            Owner::Cache { .. } => Some(MM_FILEPAGES),
            _ => None,
        }
    }

    // ---- TLB --------------------------------------------------------------------------

    /// flush_tlb_range: drops the translations of `[start, end)` of `mm` on every CPU the mm
    /// has run on. Called after the ptes are changed and before any frame is freed.
    #[track_caller]
    pub fn flush_tlb_range(&mut self, mm: usize, start: u64, end: u64) {
        self.epoch += 1; // unchanged.rs
        self.ev_flush(mm, start, end);
        let mask = self.mms[mm].cpus;
        let (lo, hi) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
        for (c, cpu) in self.cpus.iter_mut().enumerate() {
            if mask & (1 << c) != 0 {
                cpu.tlb.retain(|e| !(e.mm == mm as u32 && e.vpn >= lo && e.vpn < hi));
            }
        }
    }

    /// flush_tlb_mm: every translation of `mm`, everywhere it ran.
    #[track_caller]
    pub fn flush_tlb_mm(&mut self, mm: usize) {
        let task_size = self.cfg.task_size();
        self.flush_tlb_range(mm, 0, task_size);
    }

    // ---- files, page cache, reclaim ---------------------------------------------------

    /// find_get_page, reading the page in from disk (or zero filling it) when it is not
    /// cached. Returns the frame with a pin held (the caller puts it). Caller holds no page
    /// table lock (this may reclaim).
    pub fn get_cache_page(&mut self, f: usize, index: u64) -> Result<Pfn, FaultError> {
        if let Some(pfn) = self.files[f].cache.get(index) {
            self.get_frame(pfn);
            return Ok(pfn);
        }
        let pfn = self.alloc_frame(Zone::High, Owner::Cache { file: f as u32, index })?;
        // Read the page in from disk: a written-back page, or the initial pattern up to the
        // end it still has, or zeros.
        let file = &self.files[f];
        let base = index * PAGE_SIZE;
        match file.disk.get(&index) {
            Some(Some(p)) => {
                let mut buf = self.frames.take_for(0..frames::PAGE);
                buf.copy_from_slice(&p[..]);
                self.frames.put_bytes(pfn, buf, 0..frames::PAGE);
            }
            Some(None) => {}
            None if !file.shmem && base < file.pattern_end => {
                let (id, end) = (file.pattern_id, file.pattern_end);
                let n = (end - base).min(PAGE_SIZE) as usize;
                let mut buf = self.frames.take_for(0..n);
                fill_pattern(&mut buf[..n], id, base);
                self.frames.put_bytes(pfn, buf, 0..n);
            }
            None => {}
        }
        self.files[f].cache.insert(index, pfn);
        // One reference for the cache (taken by alloc), one pin for the caller.
        self.get_frame(pfn);
        Ok(pfn)
    }

    /// Writes a dirty cache page back to disk (the whole page, as the block layer would); a
    /// page wholly past EOF (a truncate is dropping it) is not written
    /// (block_write_full_folio).
    #[track_caller]
    fn writeback(&mut self, f: usize, index: u64, pfn: Pfn) {
        if index >= self.files[f].size_pages() {
            self.frames.frame_mut(pfn).dirty = false;
            return;
        }
        self.ev_writeback(f, index, pfn);
        // The disk copy in a pooled buffer (the pool gets it back when the machine goes).
        let content = self.frames.copy_out(pfn);
        self.files[f].disk.insert(index, content);
        self.frames.frame_mut(pfn).dirty = false;
    }

    /// try_to_unmap: removes every pte mapping file page `pfn` (at `index` of `f`), found
    /// through the file's mappings (i_mmap), flushing each mm's TLB before the reference
    /// goes. Caller holds the page (pinned) and, in Linux, its lock; takes i_mmap_rwsem.
    fn try_to_unmap(&mut self, f: usize, index: u64, pfn: Pfn) {
        for mm in 0..self.mms.len() {
            if !self.mms[mm].live {
                continue;
            }
            let hits: Vec<u64> = self.mms[mm]
                .vmas
                .iter()
                .filter(|v| v.file == Some(f as u32) && index >= v.pgoff && index < v.pgoff + v.pages())
                .map(|v| v.start + (index - v.pgoff) * PAGE_SIZE)
                .collect();
            for va in hits {
                let Some(slot) = self.pte_slot(mm, va) else { continue };
                let e = self.frames.table(slot.0)[slot.1];
                if !e.mapped() || e.pfn != pfn {
                    continue;
                }
                // A shared table is cleared once for all its sharers, and every one of them
                // is flushed.
                self.set_pte(slot, Entry::NONE);
                self.flush_links(mm, va, slot.0);
                self.unmap_accounting_at(mm, va, slot.0, e);
            }
        }
    }

    /// [`Machine::unmap_accounting`] of a pte cleared in table `table` that `mm` reaches
    /// at `va`: every other mm linking the table loses it from its rss too.
    pub fn unmap_accounting_at(&mut self, mm: usize, va: u64, table: Pfn, e: Entry) {
        if !e.special() && self.ptshare.contains_key(&table) {
            // Every other link's counter here (an mm may link one table at two places),
            // this one's in unmap_accounting.
            let kind = self.rss_kind(e.pfn);
            let base = va & !(self.pte_span() - 1);
            for link in self.table_links(table, mm, base) {
                if link != (mm, base) {
                    self.rss_add(link.0, kind, -1);
                }
            }
        }
        self.unmap_accounting(mm, e);
    }

    /// The bookkeeping of one cleared pte: dirty bit to the page, map count, rss, reference.
    /// The TLB must have been flushed already (or the caller defers the put until it is).
    pub fn unmap_accounting(&mut self, mm: usize, e: Entry) {
        if e.special() {
            return;
        }
        let kind = self.rss_kind(e.pfn);
        let fr = self.frames.frame_mut(e.pfn);
        if e.dirty() {
            fr.dirty = true;
        }
        assert!(fr.maps > 0, "unmapping frame {} with map count 0", e.pfn);
        fr.maps -= 1;
        let rss = &mut self.mms[mm].rss[kind];
        assert!(*rss > 0, "rss {} of mm {mm} going negative", RSS_NAMES[kind]);
        *rss -= 1;
        self.put_frame(e.pfn);
    }

    /// Evicts one page-cache page of a disk-backed file from `zone` (shrink_folio_list):
    /// unmaps it everywhere, writes it back if dirty, drops it. Pages held by a kernel path
    /// (a reference beyond cache and maps) or locked are skipped, and so is a dirty highmem
    /// page when no pool slot is free now (its writeback kmap()s it; `reclaim_needs_kmap`
    /// remembers it for a caller that can sleep). False when nothing could be evicted.
    fn reclaim_one(&mut self, zone: Zone) -> bool {
        let low_only = zone == Zone::Low;
        let t = self.current;
        let mut victim = None;
        'search: for (f, file) in self.files.iter().enumerate() {
            if file.shmem || file.huge {
                continue;
            }
            for (&index, &pfn) in &file.cache {
                let fr = &self.frames.frame(pfn);
                if low_only && self.frames.is_highmem(pfn) {
                    continue;
                }
                if self.reclaimable(pfn) {
                    if fr.dirty && self.frames.is_highmem(pfn) && !self.kmap.pool_has_room(pfn) {
                        self.reclaim_needs_kmap.get_or_insert(pfn);
                        continue;
                    }
                    victim = Some((f, index, pfn));
                    break 'search;
                }
            }
        }
        let Some((f, index, pfn)) = victim else { return false };
        self.get_frame(pfn);
        self.try_to_unmap(f, index, pfn);
        if self.frames.frame(pfn).maps != 0 {
            // The reverse map reaches every mapping, unless a bug left one it cannot see (a
            // pte page whose share count `ptshare-count-race` dropped with its ptes still in
            // it). shrink_folio_list: try_to_unmap failed, the folio stays (activate_locked).
            assert!(!self.cfg.bugs.is_empty(), "try_to_unmap left frame {pfn} mapped");
            self.put_frame(pfn);
            return false;
        }
        if self.frames.frame(pfn).dirty {
            if !self.kmap_try(t, pfn, std::panic::Location::caller()) {
                // The search saw a free slot; only a bug takes it meanwhile (try_to_unmap's
                // own kmaps of highpte tables are undone: `highpte-kmap-over-alloc` keeps
                // one). Leave the page unmapped and dirty for a caller that can sleep.
                assert!(!self.cfg.bugs.is_empty(), "a pool slot was free for frame {pfn}");
                self.reclaim_needs_kmap.get_or_insert(pfn);
                self.put_frame(pfn);
                return false;
            }
            self.writeback(f, index, pfn);
            self.kunmap(t, pfn).expect("reclaim unmaps the kmap it took");
        }
        self.files[f].cache.remove(index);
        self.put_frame(pfn); // the cache's reference
        self.put_frame(pfn); // ours: frees it
        self.reclaims += 1;
        true
    }

    /// A dirty highmem cache page reclaim passed over for want of a pool slot, still
    /// reclaimable but for that (the caller kmap()s it, sleeping if need be, and writes it
    /// back: [`Machine::writeback_kmapped`]).
    pub fn take_reclaim_needs_kmap(&mut self) -> Option<(usize, u64, Pfn)> {
        let pfn = self.reclaim_needs_kmap.take()?;
        let fr = &self.frames.frame(pfn);
        let Owner::Cache { file, index } = fr.owner else {
            return None;
        };
        (fr.dirty && self.reclaimable(pfn)).then_some((file as usize, index, pfn))
    }

    /// Whether reclaim may take cache page `pfn`: no kernel path holds it (a reference
    /// beyond cache and maps) and it is not locked (folio_trylock would fail).
    fn reclaimable(&self, pfn: Pfn) -> bool {
        let fr = &self.frames.frame(pfn);
        fr.refs == 1 + fr.maps && !self.locks.busy(LockId::Page(pfn))
    }

    /// pageout() of the locked, pinned, kmapped cache page `pfn` (`index` of file `f`) by
    /// direct reclaim: written back through the caller's kmap, so it is clean and can go.
    /// Caller holds the page lock and a kmap of it.
    pub fn writeback_kmapped(&mut self, f: usize, index: u64, pfn: Pfn) {
        let (t, cpu) = self.running();
        assert!(
            self.locks.holds(t, LockId::Page(pfn)),
            "writeback without the page lock"
        );
        let at = self.kmap_access(cpu, pfn);
        assert_eq!(at, pfn, "the kmap of frame {pfn} reaches frame {at}");
        if self.frames.frame(pfn).dirty && self.files[f].cache.get(index) == Some(pfn) {
            self.writeback(f, index, pfn);
        }
    }

    /// A new anon_vma id (anon_vma_prepare when no neighbour's can be reused).
    pub fn new_anon_vma(&mut self) -> u32 {
        let id = self.next_anon_vma;
        self.next_anon_vma += 1;
        id
    }

    /// Frees the shmem objects no VMA maps any more (their pages go with them). A released
    /// object keeps its slot (file ids are never reused) with `released` set.
    pub fn release_unused_shmem(&mut self) {
        for f in 0..self.files.len() {
            if !self.files[f].shmem || self.files[f].released {
                continue;
            }
            // A VMA an unmap has detached but not yet unlinked (it is between clearing its
            // ptes and its flush) still holds the object: its file reference goes last.
            let used = self
                .mms
                .iter()
                .any(|m| m.live && m.vmas.iter().chain(&m.unlinking).any(|v| v.file == Some(f as u32)));
            if used {
                continue;
            }
            let cache = self.files[f].cache.take();
            for (_, pfn) in cache {
                // As truncate_drop: only a bug's hidden mapping survives the last unmap.
                assert!(
                    self.frames.frame(pfn).maps == 0 || !self.cfg.bugs.is_empty(),
                    "shmem page {pfn} still mapped"
                );
                self.put_frame(pfn);
            }
            self.files[f].released = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fill_pattern;
    use crate::initial_file_byte;

    #[test]
    fn read_in_pattern_is_the_trace_format_pattern() {
        for file in [0, 1, 7] {
            for off in [0u64, 250, 251, 4095, 1 << 20] {
                let mut buf = [0u8; 4096];
                fill_pattern(&mut buf, file, off);
                for (i, &b) in buf.iter().enumerate() {
                    assert_eq!(
                        b,
                        initial_file_byte(file, off + i as u64),
                        "file {file} offset {}",
                        off + i as u64
                    );
                }
            }
        }
    }
}
