//! Address spaces: VMAs with the state that decides Linux's splits and merges (mm/vma.c), and
//! the private pages of each address space.

use std::collections::BTreeMap;

use super::object::Private;
use crate::{Errno, Prot, PAGE_SHIFT, PAGE_SIZE};

/// The `anon_vma` of a VMA: which one (shared by the VMAs that may hold each other's anonymous
/// pages) and whether the VMA's anon_vma chain has more than one link (a fork child), which
/// makes Linux refuse some merges (`vma_is_fork_child`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct AnonVma {
    pub id: u64,
    pub forked: bool,
}

/// The vm_flags that decide merging, plus what the VMA maps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Flags {
    /// VM_READ / VM_WRITE / VM_EXEC.
    pub prot: Prot,
    /// VM_SHARED | VM_MAYSHARE.
    pub shared: bool,
    /// VM_ACCOUNT.
    pub account: bool,
    /// VM_HUGETLB (with VM_DONTEXPAND, which makes the VMA "special": it never merges).
    pub huge: bool,
}

/// One VMA of an address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: Flags,
    /// The object mapped (a file or a hidden shmem object), `None` for private anonymous memory.
    pub obj: Option<usize>,
    /// vm_pgoff: the object's page at `start`, or `start >> 12` at mmap time for anonymous memory.
    pub pgoff: u64,
    pub anon: Option<AnonVma>,
}

impl Vma {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }
    /// The object byte offset mapped at `addr`.
    pub fn obj_offset(&self, addr: u64) -> u64 {
        (self.pgoff << PAGE_SHIFT) + (addr - self.start)
    }
    /// `vma_is_anonymous`: private anonymous memory (no vm_ops).
    pub fn is_anonymous(&self) -> bool {
        self.obj.is_none()
    }
    fn fork_child(&self) -> bool {
        self.anon.is_some_and(|a| a.forked)
    }
}

/// What a merge proposes: the new range's properties (`struct vma_merge_struct`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Proposal {
    pub start: u64,
    pub end: u64,
    pub flags: Flags,
    pub obj: Option<usize>,
    pub pgoff: u64,
    /// vmg->anon_vma.
    pub anon: Option<AnonVma>,
    /// vmg->middle is a fork child (an existing VMA being modified).
    pub middle_forked: bool,
    /// vmg->copied_from is a fork child (mremap's copy of a VMA).
    pub copied_forked: bool,
    /// mremap copies this anon_vma into the target when the merge succeeds.
    pub copied_anon: Option<AnonVma>,
}

/// An address space.
#[derive(Clone, Debug, Default)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub(super) struct Mm {
    /// VMAs by start address; they never overlap.
    pub vmas: BTreeMap<u64, Vma>,
    /// Private pages (anonymous pages and copy-on-write copies), by virtual page number.
    pub anon: BTreeMap<u64, Private>,
}

impl Mm {
    /// The VMA containing `addr`.
    pub fn find(&self, addr: u64) -> Option<Vma> {
        self.vmas
            .range(..=addr)
            .next_back()
            .map(|(_, v)| *v)
            .filter(|v| addr < v.end)
    }

    /// The first VMA ending after `addr` (`find_vma`).
    pub fn find_from(&self, addr: u64) -> Option<Vma> {
        if let Some(v) = self.find(addr) {
            return Some(v);
        }
        self.vmas.range(addr..).next().map(|(_, v)| *v)
    }

    /// The first VMA intersecting `[start, end)`.
    pub fn first_in(&self, start: u64, end: u64) -> Option<Vma> {
        self.find_from(start).filter(|v| v.start < end)
    }

    /// The VMA before the one starting at `start` (not necessarily adjacent).
    pub fn prev_of(&self, start: u64) -> Option<Vma> {
        self.vmas.range(..start).next_back().map(|(_, v)| *v)
    }

    /// The VMA after the one ending at `end` (not necessarily adjacent).
    pub fn next_of(&self, end: u64) -> Option<Vma> {
        self.vmas.range(end..).next().map(|(_, v)| *v)
    }

    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.first_in(start, end).is_some()
    }

    pub fn put(&mut self, v: Vma) {
        debug_assert!(v.start < v.end);
        self.vmas.insert(v.start, v);
    }

    fn replace(&mut self, old_start: u64, v: Vma) {
        self.vmas.remove(&old_start);
        self.put(v);
    }

    /// `__split_vma`: splits the VMA strictly containing `at`, if any. hugetlb VMAs only split
    /// at huge page boundaries (`hugetlb_vm_op_split`).
    pub fn split(&mut self, at: u64, huge_page_size: u64) -> Result<(), Errno> {
        let Some(v) = self.find(at) else { return Ok(()) };
        if v.start == at {
            return Ok(());
        }
        if v.flags.huge && !at.is_multiple_of(huge_page_size) {
            return Err(Errno::EINVAL);
        }
        let low = Vma { end: at, ..v };
        let high = Vma {
            start: at,
            pgoff: v.pgoff + ((at - v.start) >> PAGE_SHIFT),
            ..v
        };
        self.put(low);
        self.put(high);
        Ok(())
    }

    /// Splits at `start` and `end` and removes every VMA in between, with their private pages
    /// (`do_vmi_align_munmap`). A failed split leaves the earlier split in place, as in Linux.
    pub fn unmap(&mut self, start: u64, end: u64, huge_page_size: u64) -> Result<(), Errno> {
        if !self.intersects(start, end) {
            return Ok(());
        }
        self.split(start, huge_page_size)?;
        self.split(end, huge_page_size)?;
        let doomed: Vec<u64> = self.vmas.range(start..end).map(|(&s, _)| s).collect();
        for s in doomed {
            self.vmas.remove(&s);
        }
        let pages: Vec<u64> = self
            .anon
            .range(start >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .map(|(&p, _)| p)
            .collect();
        for p in pages {
            self.anon.remove(&p);
        }
        Ok(())
    }

    /// `is_mergeable_vma` and `is_mergeable_anon_vma` of a proposal against a neighbour.
    fn compatible(p: &Proposal, tgt: &Vma) -> bool {
        if p.flags != tgt.flags || p.obj != tgt.obj {
            return false;
        }
        match (tgt.anon, p.anon) {
            (None, Some(_)) => !(p.middle_forked || p.copied_forked),
            (Some(_), None) => !tgt.fork_child(),
            (t, s) => t.map(|a| a.id) == s.map(|a| a.id),
        }
    }

    fn can_merge_left(p: &Proposal, prev: Option<&Vma>) -> bool {
        prev.is_some_and(|prev| {
            prev.end == p.start && Self::compatible(p, prev) && prev.pgoff + prev.pages() == p.pgoff
        })
    }

    fn can_merge_right(p: &Proposal, prev: Option<&Vma>, next: Option<&Vma>, left: bool) -> bool {
        let Some(next) = next else { return false };
        let pglen = (p.end - p.start) >> PAGE_SHIFT;
        if next.start != p.end || !Self::compatible(p, next) || next.pgoff != p.pgoff + pglen {
            return false;
        }
        if !left {
            return true;
        }
        let prev = prev.expect("left merge has a prev");
        match (prev.anon, next.anon) {
            (Some(a), Some(b)) => a.id == b.id,
            _ => true,
        }
    }

    /// `dup_anon_vma`: an unfaulted target takes the source's anon_vma (and its chain).
    fn dup_anon(dst: &mut Vma, src: Option<AnonVma>) {
        if dst.anon.is_none() {
            dst.anon = src;
        }
    }

    /// `vma_merge_new_range` for a range that is free (mmap, mremap's copy and in-place
    /// growth): expands a neighbour over it if possible and returns the merged VMA's start.
    pub fn merge_new(&mut self, p: &Proposal) -> Option<u64> {
        if p.flags.huge {
            return None;
        }
        let prev = self.vmas.range(..p.start).next_back().map(|(_, v)| *v);
        let next = self.vmas.range(p.start..).next().map(|(_, v)| *v);
        if prev.is_none() && next.is_none() {
            return None;
        }
        let left = Self::can_merge_left(p, prev.as_ref());
        let right = Self::can_merge_right(p, prev.as_ref(), next.as_ref(), left);
        match (left, right) {
            (true, true) => {
                let (mut prev, next) = (
                    prev.unwrap_or_else(|| unreachable!()),
                    next.unwrap_or_else(|| unreachable!()),
                );
                prev.end = next.end;
                Self::dup_anon(&mut prev, next.anon);
                Self::dup_anon(&mut prev, p.copied_anon);
                self.vmas.remove(&next.start);
                self.put(prev);
                Some(prev.start)
            }
            (true, false) => {
                let mut prev = prev.unwrap_or_else(|| unreachable!());
                prev.end = p.end;
                Self::dup_anon(&mut prev, p.copied_anon);
                self.put(prev);
                Some(prev.start)
            }
            (false, true) => {
                let mut next = next.unwrap_or_else(|| unreachable!());
                let old_start = next.start;
                next.start = p.start;
                next.pgoff = p.pgoff;
                Self::dup_anon(&mut next, p.copied_anon);
                self.replace(old_start, next);
                Some(next.start)
            }
            (false, false) => None,
        }
    }

    /// `vma_merge_existing_range`: `[start, end)` of the VMA at `middle` gets `flags`; merges
    /// it into `prev` and/or the next VMA if possible and returns the merged VMA's start.
    pub fn merge_existing(
        &mut self,
        prev: Option<Vma>,
        middle: Vma,
        start: u64,
        end: u64,
        flags: Flags,
    ) -> Option<u64> {
        if flags.huge {
            return None;
        }
        let left_side = start == middle.start;
        let right_side = end == middle.end;
        if !left_side && !right_side {
            return None;
        }
        let p = Proposal {
            start,
            end,
            flags,
            obj: middle.obj,
            pgoff: middle.pgoff + ((start - middle.start) >> PAGE_SHIFT),
            anon: middle.anon,
            middle_forked: middle.fork_child(),
            copied_forked: false,
            copied_anon: None,
        };
        let left = left_side && Self::can_merge_left(&p, prev.as_ref());
        let next = if right_side { self.next_of(middle.end) } else { None };
        let right = right_side && Self::can_merge_right(&p, prev.as_ref(), next.as_ref(), left);
        let remove_middle = left_side && right_side;
        match (left, right) {
            (false, false) => None,
            (true, true) => {
                let (mut prev, next) = (
                    prev.unwrap_or_else(|| unreachable!()),
                    next.unwrap_or_else(|| unreachable!()),
                );
                prev.end = next.end;
                Self::dup_anon(&mut prev, if next.anon.is_some() { next.anon } else { middle.anon });
                self.vmas.remove(&middle.start);
                self.vmas.remove(&next.start);
                self.put(prev);
                Some(prev.start)
            }
            (true, false) => {
                let mut prev = prev.unwrap_or_else(|| unreachable!());
                prev.end = end;
                Self::dup_anon(&mut prev, middle.anon);
                self.vmas.remove(&middle.start);
                if !remove_middle {
                    let rest = Vma {
                        start: end,
                        pgoff: middle.pgoff + ((end - middle.start) >> PAGE_SHIFT),
                        ..middle
                    };
                    self.put(rest);
                }
                self.put(prev);
                Some(prev.start)
            }
            (false, true) => {
                let mut next = next.unwrap_or_else(|| unreachable!());
                let old_start = next.start;
                Self::dup_anon(&mut next, middle.anon);
                self.vmas.remove(&middle.start);
                if !remove_middle {
                    self.put(Vma { end: start, ..middle });
                }
                next.start = start;
                next.pgoff = p.pgoff;
                self.replace(old_start, next);
                Some(next.start)
            }
        }
    }

    /// `find_mergeable_anon_vma`: a neighbour's anon_vma that the VMA at `start` may share.
    fn mergeable_anon(&self, v: &Vma) -> Option<AnonVma> {
        fn compatible(a: &Vma, b: &Vma) -> bool {
            let (fa, fb) = (a.flags, b.flags);
            a.end == b.start
                && a.obj == b.obj
                && fa.shared == fb.shared
                && fa.account == fb.account
                && fa.huge == fb.huge
                && b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT)
        }
        let reusable = |old: &Vma, a: &Vma, b: &Vma| {
            if compatible(a, b) {
                old.anon.filter(|x| !x.forked)
            } else {
                None
            }
        };
        if let Some(next) = self.next_of(v.end) {
            if let Some(a) = reusable(&next, v, &next) {
                return Some(a);
            }
        }
        self.prev_of(v.start).and_then(|prev| reusable(&prev, &prev, v))
    }

    /// `anon_vma_prepare` for the VMA at `start`.
    pub fn anon_vma_prepare(&mut self, start: u64, next_id: &mut u64) {
        let Some(mut v) = self.vmas.get(&start).copied() else {
            unreachable!("no vma at {start:#x}")
        };
        if v.anon.is_some() {
            return;
        }
        v.anon = Some(self.mergeable_anon(&v).unwrap_or_else(|| {
            *next_id += 1;
            AnonVma {
                id: *next_id,
                forked: false,
            }
        }));
        self.put(v);
    }

    /// Moves the private pages of `[from, from + len)` to `to`.
    pub fn move_pages(&mut self, from: u64, len: u64, to: u64) {
        let moved: Vec<(u64, Private)> = {
            let keys: Vec<u64> = self
                .anon
                .range(from >> PAGE_SHIFT..(from + len) >> PAGE_SHIFT)
                .map(|(&k, _)| k)
                .collect();
            keys.into_iter()
                .filter_map(|k| self.anon.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (k, p) in moved {
            self.anon.insert(k - (from >> PAGE_SHIFT) + (to >> PAGE_SHIFT), p);
        }
    }
}

/// Rounds up to a multiple of `PAGE_SIZE`, `None` on overflow.
pub(super) fn page_align(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|y| y & !(PAGE_SIZE - 1))
}
