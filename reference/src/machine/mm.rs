//! Address spaces: the VMA list of an mm, its split and merge rules (mm/vma.c), and its
//! counters.
//!
//! Invariants kept here: `vmas` is sorted by start, VMAs are disjoint, non-empty and page
//! aligned; two adjacent VMAs that Linux would have merged at the operation that made them
//! adjacent are merged (and no others: Linux never merges at munmap). Caller holds mmap_lock
//! for writing for every change.

use super::frames::Pfn;
use super::Counted;
use crate::{Errno, Prot, PAGE_SIZE};

pub(crate) const VM_READ: u32 = 1;
pub(crate) const VM_WRITE: u32 = 2;
pub(crate) const VM_EXEC: u32 = 4;
pub(crate) const VM_SHARED: u32 = 8;
pub(crate) const VM_ACCOUNT: u32 = 16;
pub(crate) const VM_HUGETLB: u32 = 32;

/// `PROT_*` to `VM_*`.
pub(crate) fn prot_flags(prot: Prot) -> u32 {
    (if prot.read() { VM_READ } else { 0 })
        | (if prot.write() { VM_WRITE } else { 0 })
        | (if prot.exec() { VM_EXEC } else { 0 })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    /// The file (trace file or shmem object) mapped; `None` for private anonymous memory.
    pub file: Option<u32>,
    /// Page offset in the file of `start` (for anonymous memory: `start >> 12` at mmap).
    pub pgoff: u64,
    pub anon_vma: Option<u32>,
    /// The anon_vma chain is not singular: the VMA was copied by fork from a parent that had
    /// an anon_vma ("had uncowed parents"), which forbids merging it into a VMA without one.
    pub forked: bool,
}

impl Vma {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE_SIZE
    }
    pub fn shared(&self) -> bool {
        self.flags & VM_SHARED != 0
    }
    pub fn hugetlb(&self) -> bool {
        self.flags & VM_HUGETLB != 0
    }
    pub fn readable(&self) -> bool {
        self.flags & (VM_READ | VM_WRITE | VM_EXEC) != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & VM_WRITE != 0
    }
    /// The flags two VMAs sharing a page table must agree on (their entries carry them).
    pub fn share_flags(&self) -> u32 {
        self.flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)
    }
    /// The file page index `va` maps.
    pub fn index_of(&self, va: u64) -> u64 {
        self.pgoff + (va - self.start) / PAGE_SIZE
    }

    /// The part `[start, end)` of this VMA, its pgoff adjusted.
    pub fn slice(&self, start: u64, end: u64) -> Vma {
        assert!(self.start <= start && start < end && end <= self.end);
        Vma {
            start,
            end,
            pgoff: self.pgoff + (start - self.start) / PAGE_SIZE,
            ..*self
        }
    }
}

/// is_mergeable_vma + is_mergeable_anon_vma + pgoff contiguity: may `a` and `b` (with
/// `a.end == b.start`) become one VMA?
pub(crate) fn can_merge(a: &Vma, b: &Vma) -> bool {
    if a.end != b.start || a.flags != b.flags || a.file != b.file || a.hugetlb() {
        return false;
    }
    if a.pgoff + a.pages() != b.pgoff {
        return false;
    }
    match (a.anon_vma, b.anon_vma) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y,
        (Some(_), None) => !a.forked,
        (None, Some(_)) => !b.forked,
    }
}

/// Merges `b` into `a` (they passed [`can_merge`]).
fn merged(a: &Vma, b: &Vma) -> Vma {
    Vma {
        end: b.end,
        anon_vma: a.anon_vma.or(b.anon_vma),
        forked: a.forked || b.forked,
        ..*a
    }
}

pub(crate) struct Mm {
    /// Sorted and disjoint (counted: unchanged.rs).
    pub vmas: Counted<Vec<Vma>>,
    pub pgd: Pfn,
    /// rss counters: file, anon, shmem (`MM_*` in machine/mod.rs).
    pub rss: [u64; 3],
    /// Pages mapped by hugetlb pmd leaves in the tables this mm links (hugetlb_count_add;
    /// not rss): `ptrs` per leaf, a leaf of a shared pmd table counted in every mm linking it.
    pub hugetlb: u64,
    /// CPUs the mm has run on (mm_cpumask): the targets of its TLB shootdowns.
    pub cpus: u32,
    /// Tasks using the mm.
    pub users: u32,
    pub live: bool,
    /// VMAs an unmap has detached but not yet unlinked from their files' i_mmap (it is
    /// between clearing their ptes and flushing the TLBs); the rmap walks still see them.
    pub unlinking: Vec<Vma>,
    /// Unmaps between their pte changes and their TLB flush (mm->tlb_flush_pending).
    pub tlb_flush_pending: u32,
}

impl Mm {
    pub fn new(pgd: Pfn) -> Mm {
        Mm {
            vmas: Counted::default(),
            pgd,
            rss: [0; 3],
            hugetlb: 0,
            cpus: 0,
            users: 1,
            live: true,
            unlinking: Vec::new(),
            tlb_flush_pending: 0,
        }
    }

    /// The VMA containing `va` (vma_lookup).
    pub fn find(&self, va: u64) -> Option<usize> {
        let i = self.vmas.partition_point(|v| v.end <= va);
        (i < self.vmas.len() && self.vmas[i].start <= va).then_some(i)
    }

    /// The first VMA ending after `va` (find_vma).
    pub fn find_after(&self, va: u64) -> Option<usize> {
        let i = self.vmas.partition_point(|v| v.end <= va);
        (i < self.vmas.len()).then_some(i)
    }

    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.find_after(start).is_some_and(|i| self.vmas[i].start < end)
    }

    /// Splits so that no VMA crosses `addr`.
    pub fn split_at(&mut self, addr: u64) {
        if let Some(i) = self.find(addr) {
            let v = self.vmas[i];
            if v.start < addr {
                self.vmas[i] = v.slice(v.start, addr);
                self.vmas.insert(i + 1, v.slice(addr, v.end));
            }
        }
    }

    /// __split_vma at `addr` with hugetlb's rule (hugetlb_vm_op_split: only on a huge page
    /// boundary). A split made before a later one fails stays made, as in Linux.
    pub fn split_checked(&mut self, addr: u64, huge_page_size: u64) -> Result<(), Errno> {
        if let Some(i) = self.find(addr) {
            let v = &self.vmas[i];
            if v.start < addr && v.hugetlb() && addr & (huge_page_size - 1) != 0 {
                return Err(Errno::EINVAL);
            }
        }
        self.split_at(addr);
        Ok(())
    }

    /// Removes every VMA part inside `[start, end)` and returns them (in order).
    pub fn remove_range(&mut self, start: u64, end: u64) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let lo = self.vmas.partition_point(|v| v.end <= start);
        let hi = self.vmas.partition_point(|v| v.start < end);
        self.vmas.drain(lo..hi).collect()
    }

    /// Inserts `vma` into a free range and merges it with its neighbours where Linux would
    /// (vma_merge_new_range: prev first; next too only if prev's and next's anon_vmas agree).
    /// Returns the index of the VMA now containing `vma.start`.
    pub fn insert_merge(&mut self, vma: Vma) -> usize {
        assert!(
            !self.overlaps(vma.start, vma.end),
            "inserting {vma:?} over a mapped range"
        );
        let i = self.vmas.partition_point(|v| v.end <= vma.start);
        self.vmas.insert(i, vma);
        self.merge_around(i)
    }

    /// Merges the VMA at `i` with its neighbours where allowed; returns its new index.
    pub fn merge_around(&mut self, mut i: usize) -> usize {
        let left = i > 0 && can_merge(&self.vmas[i - 1], &self.vmas[i]);
        let right = i + 1 < self.vmas.len() && can_merge(&self.vmas[i], &self.vmas[i + 1]);
        let right = right
            && (!left || {
                let (p, n) = (&self.vmas[i - 1], &self.vmas[i + 1]);
                p.anon_vma.is_none() || n.anon_vma.is_none() || p.anon_vma == n.anon_vma
            });
        if left {
            let m = merged(&self.vmas[i - 1], &self.vmas[i]);
            self.vmas[i - 1] = m;
            self.vmas.remove(i);
            i -= 1;
        }
        if right {
            let m = merged(&self.vmas[i], &self.vmas[i + 1]);
            self.vmas[i] = m;
            self.vmas.remove(i + 1);
        }
        i
    }

    /// Asserts the list invariants (model bug otherwise).
    pub fn assert_sorted(&self) {
        for w in self.vmas.windows(2) {
            assert!(w[0].end <= w[1].start, "VMAs out of order: {:?} {:?}", w[0], w[1]);
        }
        for v in &self.vmas {
            assert!(
                v.start < v.end && v.start % PAGE_SIZE == 0 && v.end % PAGE_SIZE == 0,
                "bad VMA {v:?}"
            );
        }
    }
}
