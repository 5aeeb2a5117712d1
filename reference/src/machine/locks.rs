//! Locks that really block: the sleeping locks of mm (mmap_lock, the page lock, i_rwsem,
//! i_mmap_rwsem) with their wait queues, the spinlocks (page table locks), lockdep's
//! lock-order record, and the wait-for graph the `deadlock` oracle reads.
//!
//! Lock order, as the comment at the top of mm/rmap.c (and mm/filemap.c) writes it:
//!
//! ```text
//! inode->i_rwsem                  (write, truncate)
//!   mm->mmap_lock                 (every address-space change; read for faults)
//!     inode->i_rwsem of hugetlbfs (hugetlbfs_file_mmap; its own lockdep class)
//!     hugetlb vma lock            (read: a hugetlb fault, huge_pte_alloc to huge_pte_lock;
//!                                  write: huge_pmd_unshare)
//!       mapping->i_mmap_rwsem     (vma link/unlink, unmap_mapping_range, the rmap walk,
//!                                  huge_pmd_share)
//!     folio_lock (the page lock)  (faults on file pages, write_begin, truncate)
//!       mapping->i_mmap_rwsem
//!         ptl (pte or pmd page lock), mm->page_table_lock   (spinlocks)
//! ```
//!
//! The hugetlb fault takes the vma lock, then i_mmap_rwsem inside huge_pmd_share (released
//! before it sleeps on the page lock), then the page lock, then the pmd page's ptl. hugetlbfs
//! truncate holds i_mmap_rwsem for writing and only *tries* the vma lock of each VMA
//! (hugetlb_vmdelete_list: a trylock adds no lockdep dependency, as in lockdep); a VMA whose
//! lock a fault holds is zapped without unsharing.
//!
//! Invariants kept here:
//! - A lock is held by one writer, or by any number of readers, never both; a page lock,
//!   i_rwsem and the spinlocks are only ever taken exclusively.
//! - Waiters queue in FIFO order and a release hands the lock over (Linux's handoff): a
//!   writer at the head gets it alone once it is free; a reader at the head gets it
//!   together with every reader queued (rwsem_mark_wake since 5.3; the writers queued
//!   among them keep their places). A new reader queues behind any waiter, so a waiting writer holds back new readers (the
//!   fair rwsem of kernel/locking/rwsem.c, without reader lock stealing).
//! - A task waits for at most one lock at a time, and holds what it took until it releases
//!   it; nothing is held when an operation returns to user space (asserted by the caller).
//! - Spinlocks are never held across a scheduling point: they cannot be contended in this
//!   machine, and taking one that is held is a model bug.
//! - lockdep: every pair of lock classes (A held while B is taken) is remembered with its
//!   first witness when B is granted; the first pair taken in both orders is a `lock-order`
//!   violation. (Lockdep proper checks before a task sleeps; recording at the grant lets a
//!   cycle that never completes be reported as the `deadlock` it is, naming its tasks.)

use crate::{TaskId, Violation};
use std::collections::VecDeque;

use super::Pfn;

/// One lock instance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum LockId {
    /// inode->i_rwsem of a file (a rwsem; write() and truncate take it for writing).
    IRwsem(u32),
    /// inode->i_rwsem of a hugetlbfs file: its own lockdep class (the key is per filesystem
    /// type), taken under mmap_lock by hugetlbfs_file_mmap.
    IRwsemHuge(u32),
    /// mm->mmap_lock (a fair rwsem).
    MmapLock(u32),
    /// The page lock (PG_locked) of a frame.
    Page(Pfn),
    /// mapping->i_mmap_rwsem of a file.
    IMmap(u32),
    /// The split page-table lock (ptl) of a pte page, or of a hugetlb pmd page
    /// (huge_pte_lock); named "the pte lock" either way.
    Ptl(Pfn),
    /// mm->page_table_lock (the upper levels).
    PageTableLock(u32),
    /// The hugetlb vma lock (struct hugetlb_vma_lock, a rwsem) of the shared hugetlb VMA of
    /// mm `mm` starting at `start`. VMAs change only under mmap_lock held for writing, and
    /// no task holds a vma lock of the mm then, so the start names the VMA for as long as
    /// its lock is held.
    HugetlbVma { mm: u32, start: u64 },
}

/// A lockdep class: every instance of a lock of one kind.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum LockClass {
    IRwsem,
    IRwsemHuge,
    MmapLock,
    Page,
    IMmap,
    Ptl,
    PageTableLock,
    HugetlbVma,
}

/// The number of lock classes (lockdep's pair matrix is this square).
const CLASSES: usize = 8;
const _: () = assert!(LockClass::HugetlbVma as usize + 1 == CLASSES);

impl LockClass {
    fn name(self) -> &'static str {
        match self {
            LockClass::IRwsem => "i_rwsem",
            LockClass::IRwsemHuge => "i_rwsem of hugetlbfs",
            LockClass::MmapLock => "mmap_lock",
            LockClass::Page => "the page lock",
            LockClass::IMmap => "i_mmap_rwsem",
            LockClass::Ptl => "the pte lock",
            LockClass::PageTableLock => "page_table_lock",
            LockClass::HugetlbVma => "the hugetlb vma lock",
        }
    }
}

impl LockId {
    pub fn class(self) -> LockClass {
        match self {
            LockId::IRwsem(_) => LockClass::IRwsem,
            LockId::IRwsemHuge(_) => LockClass::IRwsemHuge,
            LockId::MmapLock(_) => LockClass::MmapLock,
            LockId::Page(_) => LockClass::Page,
            LockId::IMmap(_) => LockClass::IMmap,
            LockId::Ptl(_) => LockClass::Ptl,
            LockId::PageTableLock(_) => LockClass::PageTableLock,
            LockId::HugetlbVma { .. } => LockClass::HugetlbVma,
        }
    }

    /// Spinlocks never sleep; the others are sleeping locks.
    pub fn spinning(self) -> bool {
        matches!(self, LockId::Ptl(_) | LockId::PageTableLock(_))
    }
}

impl std::fmt::Display for LockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LockId::IRwsem(file) | LockId::IRwsemHuge(file) => write!(f, "i_rwsem of file {file}"),
            LockId::MmapLock(mm) => write!(f, "mmap_lock of mm {mm}"),
            LockId::Page(pfn) => write!(f, "the page lock of frame {pfn}"),
            LockId::IMmap(file) => write!(f, "i_mmap_rwsem of file {file}"),
            LockId::Ptl(pfn) => write!(f, "the pte lock of table frame {pfn}"),
            LockId::PageTableLock(mm) => write!(f, "page_table_lock of mm {mm}"),
            LockId::HugetlbVma { mm, start } => write!(f, "the hugetlb vma lock of mm {mm} at {start:#x}"),
        }
    }
}

/// How a lock is wanted or held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Shared (down_read).
    Read,
    /// Exclusive (down_write, lock_page, spin_lock).
    Write,
}

#[derive(Default, Debug)]
struct LockState {
    holders: Vec<(TaskId, Mode)>,
    queue: VecDeque<(TaskId, Mode)>,
}

impl LockState {
    fn free_for(&self, mode: Mode) -> bool {
        match mode {
            Mode::Write => self.holders.is_empty(),
            Mode::Read => self.holders.iter().all(|&(_, m)| m == Mode::Read),
        }
    }
}

/// Where lockdep first saw one class taken while another was held.
#[derive(Clone, Debug)]
struct Witness {
    task: TaskId,
    held: LockId,
    taken: LockId,
}

/// The lock table: every lock that is held or waited for, each task's locks and wait, and
/// lockdep's record of lock-class pairs.
#[derive(Default)]
pub(crate) struct Locks {
    /// Every lock held or waited for, with its state; a lock nobody holds or waits for has no
    /// entry. A handful at a time: searched linearly, never iterated for an answer.
    table: Vec<(LockId, LockState)>,
    /// Emptied states of locks that left the table, kept for their buffers.
    spare: Vec<LockState>,
    /// Per task: the locks it holds, in the order it took them.
    held: Vec<Vec<(LockId, Mode)>>,
    /// Per task: the lock it waits for.
    waiting: Vec<Option<(LockId, Mode)>>,
    /// lockdep: `[held class][taken class]` -> first witness.
    order: [[Option<Witness>; CLASSES]; CLASSES],
    /// The first lock-order violation seen (taken by the scheduler after each step).
    pub violation: Option<Violation>,
}

/// What an acquisition did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Acquired {
    /// The task holds the lock now.
    Taken,
    /// The task sleeps in the lock's queue until a release hands the lock over.
    Queued,
}

impl Locks {
    pub fn new(tasks: usize) -> Locks {
        Locks {
            table: Vec::new(),
            spare: Vec::new(),
            held: vec![Vec::new(); tasks],
            waiting: vec![None; tasks],
            order: Default::default(),
            violation: None,
        }
    }

    /// Makes room for task `t` (created by a fork).
    pub fn add_task(&mut self, t: TaskId) {
        let n = t as usize + 1;
        if self.held.len() < n {
            self.held.resize(n, Vec::new());
            self.waiting.resize(n, None);
        }
    }

    pub fn held(&self, t: TaskId) -> &[(LockId, Mode)] {
        &self.held[t as usize]
    }

    pub fn holds(&self, t: TaskId, id: LockId) -> bool {
        self.held[t as usize].iter().any(|&(l, _)| l == id)
    }

    /// The lock task `t` sleeps on, if any.
    pub fn waiting(&self, t: TaskId) -> Option<LockId> {
        self.waiting[t as usize].map(|(l, _)| l)
    }

    /// Whether any task holds `id` (in any mode) or waits for it.
    pub fn busy(&self, id: LockId) -> bool {
        self.state(id).is_some()
    }

    /// Whether some task holds `id` for writing.
    pub fn write_held(&self, id: LockId) -> bool {
        self.state(id)
            .is_some_and(|s| s.holders.iter().any(|&(_, m)| m == Mode::Write))
    }

    /// The state of `id`, if anyone holds it or waits for it.
    fn state(&self, id: LockId) -> Option<&LockState> {
        self.table.iter().find(|(l, _)| *l == id).map(|(_, s)| s)
    }

    /// The state of `id`, made (empty) if nobody held it or waited for it.
    fn entry(&mut self, id: LockId) -> &mut LockState {
        let i = match self.table.iter().position(|(l, _)| *l == id) {
            Some(i) => i,
            None => {
                let s = self.spare.pop().unwrap_or_default();
                self.table.push((id, s));
                self.table.len() - 1
            }
        };
        &mut self.table[i].1
    }

    /// lockdep's record of task `t` taking `id` with what it holds: each (held class, `id`'s
    /// class) pair is remembered, and the first pair seen in both orders is reported.
    fn lockdep(&mut self, t: TaskId, id: LockId) -> Result<(), Violation> {
        let class = id.class();
        for &(h, _) in &self.held[t as usize] {
            let hc = h.class();
            if hc == class {
                continue; // nesting within one class: not an ordering between classes
            }
            if let Some(w) = &self.order[class as usize][hc as usize] {
                return Err(Violation {
                    oracle: crate::Oracle::LockOrder,
                    message: format!(
                        "task {t} takes {id} while holding {h}, but task {} took {} while holding {}: {} and {} taken in both orders",
                        w.task,
                        w.taken,
                        w.held,
                        hc.name(),
                        class.name()
                    ),
                });
            }
            self.order[hc as usize][class as usize].get_or_insert(Witness {
                task: t,
                held: h,
                taken: id,
            });
        }
        Ok(())
    }

    /// Task `t` takes `id` in `mode`, or queues for it. A task never waits for two locks.
    pub fn acquire(&mut self, t: TaskId, id: LockId, mode: Mode) -> Acquired {
        assert!(self.waiting[t as usize].is_none(), "task {t} waits twice");
        assert!(
            id.spinning()
                || mode == Mode::Write
                || matches!(
                    id,
                    LockId::MmapLock(_)
                        | LockId::IMmap(_)
                        | LockId::IRwsem(_)
                        | LockId::IRwsemHuge(_)
                        | LockId::HugetlbVma { .. }
                ),
            "{id} is not a rwsem"
        );
        let s = self.entry(id);
        if s.queue.is_empty() && s.free_for(mode) {
            s.holders.push((t, mode));
            self.granted(t, id, mode);
            Acquired::Taken
        } else {
            assert!(
                !id.spinning(),
                "task {t} spins on {id}, which is held across a scheduling point"
            );
            s.queue.push_back((t, mode));
            self.waiting[t as usize] = Some((id, mode));
            Acquired::Queued
        }
    }

    /// down_write_trylock / down_read_trylock: task `t` takes `id` if it is free for `mode`
    /// and nobody waits, else nothing happens. A trylock never waits, so lockdep records no
    /// dependency for it (the locks taken while it is held are recorded as usual).
    pub fn try_acquire(&mut self, t: TaskId, id: LockId, mode: Mode) -> bool {
        assert!(
            self.waiting[t as usize].is_none(),
            "task {t} tries a lock while it waits"
        );
        assert!(!self.holds(t, id), "task {t} tries {id}, which it holds");
        let s = self.entry(id);
        if !(s.queue.is_empty() && s.free_for(mode)) {
            return false; // held or waited for: the entry stays
        }
        s.holders.push((t, mode));
        self.held[t as usize].push((id, mode));
        true
    }

    /// Task `t` releases `id`; the lock is handed to the waiters at the head of its queue.
    /// Returns the tasks that were woken (they hold the lock now).
    pub fn release(&mut self, t: TaskId, id: LockId) -> Vec<TaskId> {
        let held = &mut self.held[t as usize];
        let i = held
            .iter()
            .rposition(|&(l, _)| l == id)
            .unwrap_or_else(|| panic!("task {t} releases {id}, which it does not hold"));
        held.remove(i);
        let at = self
            .table
            .iter()
            .position(|(l, _)| *l == id)
            .expect("a held lock is in the table");
        let s = &mut self.table[at].1;
        let j = s.holders.iter().position(|&(h, _)| h == t).expect("holder recorded");
        s.holders.remove(j);
        let mut woken = Vec::new();
        match s.queue.front() {
            Some(&(w, Mode::Write)) if s.free_for(Mode::Write) => {
                s.queue.pop_front();
                s.holders.push((w, Mode::Write));
                woken.push(w);
            }
            Some(&(_, Mode::Read)) if s.free_for(Mode::Read) => {
                // rwsem_mark_wake: a reader at the head wakes every queued reader, those
                // behind a waiting writer too (since 5.3); the writers keep their places.
                let holders = &mut s.holders;
                s.queue.retain(|&(w, mode)| {
                    if mode == Mode::Read {
                        holders.push((w, mode));
                        woken.push(w);
                    }
                    mode == Mode::Write
                });
            }
            _ => {}
        }
        if s.holders.is_empty() && s.queue.is_empty() {
            let (_, s) = self.table.swap_remove(at);
            self.spare.push(s);
        }
        for &w in &woken {
            let (_, mode) = self.waiting[w as usize].take().expect("a woken task waited");
            self.granted(w, id, mode);
        }
        woken
    }

    /// Task `t` now holds `id`: lockdep records it against what `t` already holds.
    fn granted(&mut self, t: TaskId, id: LockId, mode: Mode) {
        if let Err(v) = self.lockdep(t, id) {
            self.violation.get_or_insert(v);
        }
        self.held[t as usize].push((id, mode));
    }

    /// Whether task `t` holds a spinlock (preemption is off: it must not sleep).
    pub fn holds_spinlock(&self, t: TaskId) -> Option<LockId> {
        self.held[t as usize].iter().map(|&(l, _)| l).find(|l| l.spinning())
    }

    /// A cycle in the wait-for graph, as (task, the lock it waits for, the task it waits on
    /// next in the cycle): a sleeping task waits on the holders of its lock whose mode
    /// conflicts with its own and on the waiters queued ahead of it (they get the lock
    /// first). Found from the lowest task id, deterministically.
    pub fn cycle(&self) -> Option<Vec<(TaskId, LockId, TaskId)>> {
        let n = self.waiting.len();
        let edges = |t: usize| -> Vec<TaskId> {
            let Some((id, mode)) = self.waiting[t] else {
                return Vec::new();
            };
            let s = self.state(id).expect("a waited-for lock is in the table");
            // Holders in a conflicting mode, then everyone queued ahead (FIFO handoff).
            let mut out: Vec<TaskId> = s
                .holders
                .iter()
                .filter(|&&(_, m)| mode == Mode::Write || m == Mode::Write)
                .map(|&(h, _)| h)
                .collect();
            for &(w, _) in &s.queue {
                if w as usize == t {
                    break;
                }
                out.push(w);
            }
            out
        };
        // Depth-first search with colours (0 new, 1 on the path, 2 done); the path is short
        // (one entry per task).
        fn dfs(
            t: usize,
            edges: &dyn Fn(usize) -> Vec<TaskId>,
            colour: &mut [u8],
            path: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            colour[t] = 1;
            path.push(t);
            for next in edges(t) {
                let next = next as usize;
                match colour[next] {
                    0 => {
                        if let Some(c) = dfs(next, edges, colour, path) {
                            return Some(c);
                        }
                    }
                    1 => {
                        let from = path.iter().position(|&s| s == next).expect("on the path");
                        return Some(path[from..].to_vec());
                    }
                    _ => {}
                }
            }
            path.pop();
            colour[t] = 2;
            None
        }
        let mut colour = vec![0u8; n];
        for root in 0..n {
            if colour[root] != 0 || self.waiting[root].is_none() {
                continue;
            }
            if let Some(path) = dfs(root, &edges, &mut colour, &mut Vec::new()) {
                let cyc = path
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        let on = path[(i + 1) % path.len()] as TaskId;
                        (s as TaskId, self.waiting[s].expect("waits").0, on)
                    })
                    .collect();
                return Some(cyc);
            }
        }
        None
    }

    /// Describes how task `t` holds `id` (for messages).
    pub fn mode_held(&self, t: TaskId, id: LockId) -> Option<Mode> {
        self.held[t as usize].iter().find(|&&(l, _)| l == id).map(|&(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_writer_holds_back_new_readers() {
        let mut l = Locks::new(3);
        let m = LockId::MmapLock(0);
        assert_eq!(l.acquire(0, m, Mode::Read), Acquired::Taken);
        assert_eq!(l.acquire(1, m, Mode::Write), Acquired::Queued);
        assert_eq!(l.acquire(2, m, Mode::Read), Acquired::Queued);
        assert_eq!(l.release(0, m), vec![1]);
        assert_eq!(l.release(1, m), vec![2]);
        assert!(l.holds(2, m));
    }

    #[test]
    fn the_cycle_goes_through_a_queued_writer() {
        let mut l = Locks::new(3);
        let (m, p) = (LockId::MmapLock(0), LockId::Page(7));
        l.acquire(0, p, Mode::Write);
        l.acquire(2, m, Mode::Read);
        l.acquire(1, m, Mode::Write);
        l.acquire(0, m, Mode::Read);
        assert!(l.cycle().is_none(), "task 2 is running");
        l.acquire(2, p, Mode::Write);
        let c = l.cycle().expect("deadlock");
        let tasks: Vec<TaskId> = c.iter().map(|&(t, _, _)| t).collect();
        assert_eq!(tasks, vec![0, 1, 2]);
    }

    #[test]
    fn lockdep_reports_the_second_order() {
        let mut l = Locks::new(2);
        let (m, p) = (LockId::MmapLock(0), LockId::Page(7));
        l.acquire(0, m, Mode::Read);
        l.acquire(0, p, Mode::Write);
        l.release(0, p);
        l.release(0, m);
        assert!(l.violation.is_none());
        l.acquire(1, p, Mode::Write);
        l.acquire(1, m, Mode::Read);
        assert_eq!(l.violation.as_ref().map(|v| v.oracle), Some(crate::Oracle::LockOrder));
    }
}
