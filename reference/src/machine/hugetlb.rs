//! hugetlb: huge pages mapped by pmd leaves, and pmd pages shared between mms (mm/hugetlb.c:
//! huge_pte_alloc, want_pmd_share, huge_pmd_share, page_table_shareable, huge_pmd_unshare,
//! hugetlb_no_page, hugetlb_wp, __unmap_hugepage_range, copy_hugetlb_page_range,
//! hugetlb_change_protection, move_hugetlb_page_tables, hugetlb_unshare_pmds;
//! fs/hugetlbfs/inode.c: hugetlb_vmdelete_list). The fault's locking is the async path in
//! `kernel/hugetlb.rs`; this module is its synchronous sections.
//!
//! Representation: a huge page is a *unit* of `ptrs` frames (not contiguous: a compound
//! list, [`Units`], by head frame, valid while the head keeps the generation it had when the
//! unit was made). A hugetlbfs file's page cache holds a unit's frames at their 4k indices
//! `idx0 .. idx0 + ptrs` (idx0 a multiple of `ptrs`), so read(2) and truncate see pages as
//! for any file; a private copy is a unit of anonymous frames. One pmd entry with `E_HUGE`
//! maps a unit: its `pfn` is the head, its bits are the unit's protection.
//!
//! Invariants kept here (the oracles check them from outside):
//! - A pmd leaf counts as one map and holds one reference on *each* frame of its unit, as
//!   the `ptrs` ptes it replaces would; a leaf inside a shared pmd table counts once, however
//!   many mms link the table. Huge pages are not rss: each mm's `hugetlb` counter is `ptrs`
//!   per leaf in every pmd table it links (so a shared table's leaves count in every sharer).
//! - A pmd table's `maps` is its share count (the pud entries linking it, all mms). A pmd
//!   table is linked from more than one entry only if every linking VMA is eligible
//!   ([`Machine::pmd_share_violation`]): VM_MAYSHARE, covering the whole pud-aligned range,
//!   the same file at the same offset at the pud base, the same flags (hugeshare on).
//! - Unsharing (huge_pmd_unshare) clears the pud entry, drops the share count (never to 0:
//!   a shared table has another sharer) and flushes the TLB of the whole pud range of the
//!   unsharing mm before the operation can let another task run (CVE-2021-4002's fix), since
//!   the entries of the range outside the operation's own range vanish too.
//! - Every change of a shared table's leaves flushes every sharer's TLB for that range.
//!
//! Locking: a hugetlb fault holds mmap_lock (read) and the VMA's hugetlb vma lock (read)
//! from before huge_pte_alloc until it has installed its leaf under the pmd page's ptl;
//! huge_pmd_share runs under i_mmap_rwsem (read). Unsharing runs either under mmap_lock held
//! for writing (munmap, mprotect, mremap, split, exit: no fault of the mm can hold its vma
//! lock then, asserted) or in hugetlbfs truncate under i_mmap_rwsem (write) with the VMA's
//! vma lock taken by trylock; a VMA whose lock a fault holds is zapped in place instead.
//! Lock order: mmap_lock -> hugetlb vma lock -> i_mmap_rwsem; page lock -> ptl
//! (see locks.rs).

use super::frames::{Entry, Pfn, Zone, E_DIRTY, E_HUGE, E_PRESENT, E_PROTNONE, E_WRITE};
use super::{FaultError, LockId, Machine, Mode, Owner, Vma};
use crate::{Bug, Oracle, TaskId, Violation, PAGE_SIZE};
use std::collections::BTreeMap;

/// The frames of one huge page.
struct Unit {
    /// The head frame's generation when the unit was made.
    gen: u32,
    frames: Box<[Pfn]>,
}

/// Every hugetlb unit made so far, by head frame. A record whose head has been freed (its
/// generation moved on) is dead; a new unit with the same head replaces it.
#[derive(Default)]
pub(crate) struct Units(BTreeMap<Pfn, Unit>);

/// What a hugetlb fault does once it holds the page lock of `lock` (decided before it sleeps
/// for it: hugetlb_no_page's page-cache lookup or allocation, hugetlb_wp's copy).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HugePlan {
    /// Map the file's unit at page `idx0` (pinned, head `head`): a shared fault, or a
    /// private read of an instantiated unit (read-only).
    Cache { head: Pfn, idx0: u64 },
    /// Map `new`, a private unit allocated for the fault (its references are the fault's),
    /// copied from the file's unit `src` (pinned) or zero.
    Anon { new: Pfn, src: Option<Pfn> },
    /// Copy on write of the mapped unit `old` (pinned) into `new` (allocated), or reuse `old`
    /// if the mapping is its only user by then.
    Wp { old: Pfn, new: Option<Pfn> },
}

/// A hugetlb fault between huge_pte_alloc and huge_pte_lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HugeFault {
    /// The pmd table huge_pte_alloc returned, the index of the address in it, and the
    /// table's generation then (what a stale pointer is told by).
    pub table: Pfn,
    pub idx: usize,
    pub gen: u32,
    /// The entry as it was then (pte_same is checked under the ptl).
    pub orig: Entry,
    pub plan: HugePlan,
}

impl HugeFault {
    /// The frame whose page lock the fault sleeps for.
    pub fn lock_page(&self) -> Pfn {
        match self.plan {
            HugePlan::Cache { head, .. } => head,
            HugePlan::Anon { new, .. } => new,
            HugePlan::Wp { old, .. } => old,
        }
    }
}

impl Machine {
    // ---- units ----------------------------------------------------------------------------

    /// The frames of the live unit whose head is `head` (a model bug otherwise).
    pub(crate) fn unit(&self, head: Pfn) -> &[Pfn] {
        self.unit_checked(head)
            .unwrap_or_else(|| panic!("frame {head} heads no live hugetlb unit"))
    }

    /// The frames of the unit headed by `head`, if it is live.
    pub(crate) fn unit_checked(&self, head: Pfn) -> Option<&[Pfn]> {
        let u = self.units.0.get(&head)?;
        let fr = self.frames.get(head)?;
        (u.gen == fr.gen && fr.owner != Owner::Free).then_some(&u.frames[..])
    }

    /// The translation of `va` through the hugetlb leaf `leaf`: its bits, the unit's frame.
    pub(crate) fn huge_subpage(&self, leaf: Entry, va: u64) -> Entry {
        let i = (va % self.cfg.huge_page_size() / PAGE_SIZE) as usize;
        Entry {
            pfn: self.unit(leaf.pfn)[i],
            flags: leaf.flags & !E_HUGE,
        }
    }

    /// Allocates a unit of `ptrs` frames owned as `owner(i)` (all or nothing), zero filled
    /// (folio_zero_user); its frames' references are the caller's.
    fn alloc_unit(&mut self, owner: impl Fn(u64) -> Owner) -> Result<Pfn, FaultError> {
        let n = self.cfg.ptrs as u64;
        let mut frames = Vec::with_capacity(n as usize);
        for i in 0..n {
            match self.alloc_frame(Zone::High, owner(i)) {
                Ok(p) => frames.push(p),
                Err(e) => {
                    for p in frames {
                        self.put_frame(p);
                    }
                    return Err(e);
                }
            }
        }
        for &p in &frames {
            self.clear_user_highpage(p);
        }
        let head = frames[0];
        let gen = self.frames.frame(head).gen;
        self.units.0.insert(
            head,
            Unit {
                gen,
                frames: frames.into_boxed_slice(),
            },
        );
        Ok(head)
    }

    /// One more reference on every frame of the unit (a pin or a mapping's).
    fn get_unit(&mut self, head: Pfn) {
        for i in 0..self.cfg.ptrs as usize {
            let p = self.unit(head)[i];
            self.get_frame(p);
        }
    }

    /// Drops one reference of every frame of the unit (a unit no longer referenced is
    /// freed frame by frame).
    fn put_unit(&mut self, head: Pfn) {
        let frames: Vec<Pfn> = self.unit(head).to_vec();
        for p in frames {
            self.put_frame(p);
        }
    }

    /// The frames of the unit with one reference each held by the caller (for `hold`).
    pub(crate) fn unit_frames(&self, head: Pfn) -> Vec<Pfn> {
        self.unit(head).to_vec()
    }

    /// An anonymous unit mapped by one leaf only: a write may reuse it (hugetlb_wp's reuse
    /// goes by the map count; pins other paths hold, another fault's included, do not share
    /// it). Under mmap_lock a unit can become exclusive (another mapping goes) but not stop
    /// being so (only a fork of this mm maps it again).
    fn unit_exclusive(&self, head: Pfn) -> bool {
        self.unit(head).iter().all(|&p| {
            let fr = &self.frames.frame(p);
            fr.owner == Owner::Anon && fr.maps == 1
        })
    }

    // ---- page-table walks -----------------------------------------------------------------

    /// The table of `level` (0 pte .. 3 pgd) whose entry maps `va` in `mm`, if the tables
    /// above it exist (none under a hugetlb leaf).
    pub(crate) fn table_of(&self, mm: usize, va: u64, level: u32) -> Option<Pfn> {
        let mut t = self.mms[mm].pgd;
        for l in (level + 1..=3).rev() {
            let e = self.frames.table(t)[self.index(va, l)];
            if !e.mapped() || e.huge() {
                return None;
            }
            t = e.pfn;
        }
        Some(t)
    }

    /// hugetlb leaves in pmd table `t`.
    fn huge_leaves(&self, t: Pfn) -> u64 {
        self.frames.table(t).iter().filter(|e| e.mapped() && e.huge()).count() as u64
    }

    /// Every pud entry linking pmd table `t`: (mm, the address the table maps from), in mm
    /// and address order.
    pub(crate) fn table_linkers(&self, t: Pfn) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        let (s3, s2) = (self.entry_span(3), self.entry_span(2));
        for (mi, mm) in self.mms.iter().enumerate() {
            if !mm.live {
                continue;
            }
            for (i, e) in self.frames.table(mm.pgd).iter().enumerate() {
                if !e.mapped() {
                    continue;
                }
                for (j, pe) in self.frames.table(e.pfn).iter().enumerate() {
                    if pe.mapped() && pe.pfn == t {
                        out.push((mi, i as u64 * s3 + j as u64 * s2));
                    }
                }
            }
        }
        out
    }

    /// Whether a task holds, for reading, the vma lock of the VMA of `mm` at `va` (a fault
    /// in progress there); the VMA may be one an unmap is detaching.
    fn vma_lock_read_held(&self, mm: usize, va: u64) -> bool {
        let m = &self.mms[mm];
        let Some(v) = m.vmas.iter().chain(&m.unlinking).find(|v| v.start <= va && va < v.end) else {
            return false;
        };
        let lock = LockId::HugetlbVma {
            mm: mm as u32,
            start: v.start,
        };
        (0..self.tasks.len() as TaskId).any(|t| self.locks.mode_held(t, lock) == Some(Mode::Read))
    }

    // ---- sharing --------------------------------------------------------------------------

    /// want_pmd_share / vma_shareable: pmd sharing is on, and the VMA may share
    /// (VM_MAYSHARE) and covers the whole pud-aligned range around `va`.
    pub(crate) fn want_pmd_share(&self, v: &Vma, va: u64) -> bool {
        let pud = self.cfg.pud_span();
        let base = va & !(pud - 1);
        self.cfg.hugeshare && v.hugetlb() && v.shared() && v.start <= base && base + pud <= v.end
    }

    /// page_table_shareable: the address at which `svma` maps file page `idx` (which `vma`
    /// maps at `addr`), if `svma`'s pmd table there could serve `vma` at `addr`: the same pmd
    /// index, the same flags, `svma` covering the whole pud range and having a vma lock
    /// (shared).
    fn page_table_shareable(&self, svma: &Vma, vma: &Vma, addr: u64, idx: u64) -> Option<u64> {
        let pud = self.cfg.pud_span();
        let saddr = (idx - svma.pgoff) * PAGE_SIZE + svma.start;
        let sbase = saddr & !(pud - 1);
        let ok = self.index(addr, 1) == self.index(saddr, 1)
            && vma.flags == svma.flags
            && svma.shared()
            && svma.start <= sbase
            && sbase + pud <= svma.end;
        ok.then_some(saddr)
    }

    /// huge_pmd_share: looks through the file's i_mmap (every live mm's VMAs of the file over
    /// the page `va` maps, in mm and address order) for a VMA whose pmd table could serve
    /// VMA `vi` of `mm` at `va`, and links the pud entry of `va` to the first such table that
    /// exists (its share count + 1, its leaves counted in `mm`). Returns whether it linked
    /// one. Caller holds i_mmap_rwsem (read), the VMA's vma lock (read) and mmap_lock (read);
    /// the pud table of `va` exists.
    pub(crate) fn huge_pmd_share(&mut self, mm: usize, vi: usize, va: u64) -> bool {
        let v = self.mms[mm].vmas[vi];
        let f = v.file.expect("hugetlb VMAs map a file");
        assert!(
            self.want_pmd_share(&v, va),
            "huge_pmd_share for a VMA that may not share"
        );
        let idx = v.index_of(va);
        let mut found = None;
        'search: for (smm, m) in self.mms.iter().enumerate() {
            if !m.live {
                continue;
            }
            for sv in &m.vmas {
                if (smm == mm && sv.start == v.start)
                    || sv.file != Some(f)
                    || idx < sv.pgoff
                    || idx >= sv.pgoff + sv.pages()
                {
                    continue;
                }
                if let Some(saddr) = self.page_table_shareable(sv, &v, va, idx) {
                    // hugetlb_walk(svma, saddr): its pmd table, if it has one.
                    if let Some(t) = self.table_of(smm, saddr, 1) {
                        found = Some(t);
                        break 'search;
                    }
                }
            }
        }
        let Some(t) = found else { return false };
        let pud = self.table_of(mm, va, 2).expect("the caller allocated the pud table");
        let i = self.index(va, 2);
        let lock = LockId::PageTableLock(mm as u32);
        self.spin_lock(lock);
        let linked = !self.frames.table(pud)[i].mapped();
        if linked {
            let link = Entry {
                pfn: t,
                flags: E_PRESENT,
            };
            self.ev_entry(pud, i, link);
            self.frames.table_mut(pud)[i] = link;
            self.frames.frame_mut(t).maps += 1;
            let pages = self.huge_leaves(t) * self.cfg.ptrs as u64;
            self.mms[mm].hugetlb += pages;
        }
        self.spin_unlock(lock);
        linked
    }

    /// huge_pmd_unshare of the pud entry of `mm` at `base` (pud aligned), which links a
    /// shared pmd table: the entry is cleared, the share count drops (the table stays, with
    /// its other sharers), the table's leaves leave `mm`'s count. The caller flushes the
    /// TLB of the pud range (or, with `hugetlb-unshare-no-flush` on the zap path, does not).
    /// Caller holds mmap_lock for writing, or the VMA's vma lock for writing and
    /// i_mmap_rwsem for writing.
    fn huge_pmd_unshare(&mut self, mm: usize, base: u64) {
        assert!(
            !self.vma_lock_read_held(mm, base),
            "unsharing a pmd table of mm {mm} while a fault holds its vma lock"
        );
        let pud = self.table_of(mm, base, 2).expect("an unshared pud entry has its table");
        let i = self.index(base, 2);
        let e = self.frames.table(pud)[i];
        let t = e.pfn;
        assert!(
            e.mapped() && !e.huge() && self.frames.frame(t).maps > 1,
            "unsharing pmd table {t} of mm {mm} at {base:#x}, which is not shared"
        );
        // pud_clear under the pmd page's lock (huge_pte_lock of the caller).
        self.spin_lock(LockId::Ptl(t));
        self.ev_entry(pud, i, Entry::NONE);
        self.frames.table_mut(pud)[i] = Entry::NONE;
        self.frames.frame_mut(t).maps -= 1;
        let pages = self.huge_leaves(t) * self.cfg.ptrs as u64;
        let c = &mut self.mms[mm].hugetlb;
        assert!(*c >= pages, "hugetlb count of mm {mm} going negative");
        *c -= pages;
        self.spin_unlock(LockId::Ptl(t));
    }

    /// The pmd tables of `mm` for the pud ranges overlapping `[start, end)`: (pud range
    /// base, table). (One mm may link one shared table at two ranges: whether a table is
    /// shared is asked when it is reached, [`Machine::shared_table`].)
    fn pmd_tables(&self, mm: usize, start: u64, end: u64) -> Vec<(u64, Pfn)> {
        let pud = self.cfg.pud_span();
        let mut out = Vec::new();
        let mut base = start & !(pud - 1);
        while base < end {
            if let Some(t) = self.table_of(mm, base, 1) {
                out.push((base, t));
            }
            base += pud;
        }
        out
    }

    /// Whether page table `t` is linked from more than one entry now.
    fn shared_table(&self, t: Pfn) -> bool {
        self.frames.frame(t).maps > 1
    }

    /// The hugetlb leaves of pmd table `t` (mapping from `base`) inside `[start, end)`:
    /// (address, index).
    fn leaves_in(&self, t: Pfn, base: u64, start: u64, end: u64) -> Vec<(u64, usize)> {
        let hps = self.cfg.huge_page_size();
        self.frames
            .table(t)
            .iter()
            .enumerate()
            .filter(|(_, e)| e.mapped() && e.huge())
            .map(|(i, _)| (base + i as u64 * hps, i))
            .filter(|&(va, _)| va + hps > start && va < end)
            .collect()
    }

    /// Clears the hugetlb leaf at index `i` of pmd table `t` and unaccounts it in every mm
    /// linking the table (map counts, hugetlb counters); the mapping's references of the
    /// unit's frames go to `pages`, to be dropped after the TLB flush. Returns the leaf.
    fn clear_leaf(&mut self, t: Pfn, i: usize, pages: &mut Vec<Pfn>) -> Entry {
        let e = self.frames.table(t)[i];
        assert!(
            e.mapped() && e.huge(),
            "clearing a pmd entry that is not a hugetlb leaf"
        );
        self.set_pte((t, i), Entry::NONE);
        let n = self.cfg.ptrs as u64;
        for (mm, _) in self.table_linkers(t) {
            let c = &mut self.mms[mm].hugetlb;
            assert!(*c >= n, "hugetlb count of mm {mm} going negative");
            *c -= n;
        }
        for k in 0..n as usize {
            let p = self.unit(e.pfn)[k];
            let fr = self.frames.frame_mut(p);
            if e.dirty() {
                fr.dirty = true;
            }
            assert!(fr.maps > 0, "unmapping hugetlb frame {p} with map count 0");
            fr.maps -= 1;
            pages.push(p);
        }
        e
    }

    /// Sets the hugetlb leaf at index `i` of pmd table `t` to unit `head` with `bits`: one
    /// map of each frame (the references are the caller's: its pins or a new unit's), and
    /// `ptrs` pages in the count of every mm linking the table. Caller holds the table's ptl.
    fn install_leaf(&mut self, t: Pfn, i: usize, head: Pfn, bits: u8) {
        assert!(
            !self.frames.table(t)[i].mapped(),
            "pmd entry {i} of table {t} already mapped"
        );
        self.set_pte(
            (t, i),
            Entry {
                pfn: head,
                flags: bits | E_HUGE,
            },
        );
        let n = self.cfg.ptrs as u64;
        for k in 0..n as usize {
            let p = self.unit(head)[k];
            self.frames.frame_mut(p).maps += 1;
        }
        for (mm, _) in self.table_linkers(t) {
            self.mms[mm].hugetlb += n;
        }
    }

    /// Flushes every sharer's TLB for the part `[va, va + len)` of pmd table `t`'s range
    /// (`va` as `mm` sees it, `base` the start of `mm`'s pud range).
    fn flush_sharers(&mut self, t: Pfn, base: u64, va: u64, len: u64) {
        for (mm, b) in self.table_linkers(t) {
            let s = b + (va - base);
            self.flush_tlb_range(mm, s, s + len);
        }
    }

    // ---- unmapping ------------------------------------------------------------------------

    /// The hugetlb half of zap_clear (__unmap_hugepage_range) over `[start, end)` of `mm`:
    /// a shared pmd table in the range is unshared (with `unshare`; its whole pud range
    /// flushed at once, CVE-2021-4002's fix), or, when the vma lock could not be had, its
    /// leaves in the range are cleared in place (every sharer flushed); the leaves of `mm`'s
    /// own tables in the range are cleared and unaccounted, their frames' references go to
    /// `pages` for after the caller's flush of `[start, end)`. Returns whether anything
    /// changed (a flush is due).
    pub(crate) fn huge_zap_clear(
        &mut self,
        mm: usize,
        start: u64,
        end: u64,
        unshare: bool,
        pages: &mut Vec<Pfn>,
    ) -> bool {
        let mut any = false;
        let pud = self.cfg.pud_span();
        let hps = self.cfg.huge_page_size();
        for (base, t) in self.pmd_tables(mm, start, end) {
            let shared = self.shared_table(t);
            if shared && unshare {
                self.huge_pmd_unshare(mm, base);
                if !self.cfg.bugs.contains(Bug::HugetlbUnshareNoFlush) {
                    self.flush_tlb_range(mm, base, base + pud);
                }
                any = true;
                continue;
            }
            let leaves = self.leaves_in(t, base, start, end);
            for &(va, i) in &leaves {
                self.clear_leaf(t, i, pages);
                if shared {
                    self.flush_sharers(t, base, va, hps);
                }
            }
            any |= !leaves.is_empty();
        }
        any
    }

    /// hugetlb_vmdelete_list for the VMA of `mm` containing `[start, end)` (a truncate's
    /// unmap_mapping_range): the vma lock is tried for writing; with it, shared pmd tables
    /// are unshared, without it (a fault holds it) the leaves in the range are cleared in the
    /// shared table itself. Caller (truncate) holds i_mmap_rwsem for writing.
    pub(crate) fn hugetlb_zap_vma(&mut self, mm: usize, start: u64, end: u64) {
        let t = self.current;
        let vi = self.mms[mm].find(start).expect("a VMA of the file is here");
        let v = self.mms[mm].vmas[vi];
        let f = v.file.expect("hugetlb VMAs map a file");
        assert_eq!(
            self.locks.mode_held(t, LockId::IMmap(f)),
            Some(Mode::Write),
            "hugetlbfs truncate without i_mmap_rwsem for writing"
        );
        // Only shared VMAs have a vma lock (and may share tables).
        let lock = LockId::HugetlbVma {
            mm: mm as u32,
            start: v.start,
        };
        let locked = v.shared() && self.locks.try_acquire(t, lock, Mode::Write);
        let mut pages = Vec::new();
        if self.huge_zap_clear(mm, start, end, locked || !v.shared(), &mut pages) {
            self.flush_tlb_range(mm, start, end);
        }
        for p in pages {
            self.put_frame(p);
        }
        if locked {
            let woken = self.locks.release(t, lock);
            assert!(woken.is_empty(), "a task slept on {lock} inside an atomic section");
        }
    }

    /// hugetlb_vm_op_split's unsharing: a hugetlb VMA split at `addr` (huge page aligned,
    /// not pud aligned) no longer covers the pud range around it, so a pmd table shared there
    /// is unshared first, and that range flushed (hugetlb_unshare_pmds).
    /// Caller holds mmap_lock for writing.
    pub(crate) fn hugetlb_split_unshare(&mut self, mm: usize, v: Vma, addr: u64) {
        let pud = self.cfg.pud_span();
        if addr & (pud - 1) == 0 {
            return;
        }
        let floor = addr & !(pud - 1);
        let ceil = floor + pud;
        if floor < v.start || ceil > v.end {
            return;
        }
        if let Some(&(base, t)) = self.pmd_tables(mm, floor, ceil).first() {
            if !self.shared_table(t) {
                return;
            }
            self.huge_pmd_unshare(mm, base);
            self.flush_tlb_range(mm, floor, ceil);
        }
    }

    // ---- mprotect, mremap, fork -----------------------------------------------------------

    /// hugetlb_change_protection over `[start, end)` of `mm`: shared pmd tables in the range
    /// are unshared (and their pud ranges flushed; the mapping refaults), the leaves of the
    /// mm's own tables lose write (and become PROT_NONE with `none`). Returns whether a leaf
    /// changed (the caller flushes the range). Caller holds mmap_lock for writing.
    pub(crate) fn hugetlb_change_protection(&mut self, mm: usize, start: u64, end: u64, none: bool) -> bool {
        let pud = self.cfg.pud_span();
        let mut changed = false;
        for (base, t) in self.pmd_tables(mm, start, end) {
            if self.shared_table(t) {
                self.huge_pmd_unshare(mm, base);
                self.flush_tlb_range(mm, base, base + pud);
                continue;
            }
            for (_, i) in self.leaves_in(t, base, start, end) {
                let e = self.frames.table(t)[i];
                let mut n = e;
                n.flags &= !(E_WRITE | E_PRESENT | E_PROTNONE);
                n.flags |= if none { E_PROTNONE } else { E_PRESENT };
                if n != e {
                    self.set_pte((t, i), n);
                    changed = true;
                }
            }
        }
        changed
    }

    /// move_hugetlb_page_tables for `len` bytes from `addr` to `dest`: the destination pmd
    /// tables are allocated first (a failure moves nothing), shared source tables are
    /// unshared (their pud ranges flushed; those pages refault at the destination), the
    /// leaves of the mm's own tables move. The destination never shares (it is a free range:
    /// no VMA covers a whole pud range there). Caller holds mmap_lock for writing and
    /// flushes nothing else for the leaves.
    pub(crate) fn move_hugetlb_tables(&mut self, mm: usize, addr: u64, len: u64, dest: u64) -> Result<(), FaultError> {
        let pud = self.cfg.pud_span();
        let end = addr + len;
        // The range lies in one VMA, whose pud ranges map different file offsets: no table
        // is linked twice from it, so a table shared now is still shared when unshared below.
        let mut moving = Vec::new();
        for (base, t) in self.pmd_tables(mm, addr, end) {
            if !self.shared_table(t) {
                moving.extend(self.leaves_in(t, base, addr, end).into_iter().map(|(va, i)| (va, t, i)));
            }
        }
        for &(va, _, _) in &moving {
            let (dt, _) = self.table_alloc(mm, dest + (va - addr), 1)?;
            assert_eq!(self.frames.frame(dt).maps, 1, "an mremap destination table is shared");
        }
        for (base, t) in self.pmd_tables(mm, addr, end) {
            if self.shared_table(t) {
                self.huge_pmd_unshare(mm, base);
                self.flush_tlb_range(mm, base, base + pud);
            }
        }
        for &(va, t, i) in &moving {
            let e = self.frames.table(t)[i];
            self.set_pte((t, i), Entry::NONE);
            let nva = dest + (va - addr);
            let dt = self.table_of(mm, nva, 1).expect("allocated above");
            let di = self.index(nva, 1);
            assert!(!self.frames.table(dt)[di].mapped(), "mremap onto a mapped pmd entry");
            self.set_pte((dt, di), e);
        }
        if !moving.is_empty() {
            self.flush_tlb_range(mm, addr, end);
        }
        Ok(())
    }

    /// copy_hugetlb_page_range for private VMA `v` of `src` into the child `dst`: each leaf
    /// is copied (the child's pmd tables are its own: a private VMA never shares), a writable
    /// anonymous unit write-protected in both (COW; `wrprotected` tells the caller to flush
    /// the parent). Caller holds the parent's mmap_lock for writing.
    pub(crate) fn copy_hugetlb_range(
        &mut self,
        src: usize,
        dst: usize,
        v: &Vma,
        wrprotected: &mut bool,
    ) -> Result<(), FaultError> {
        assert!(!v.shared(), "fork copies the leaves of private hugetlb VMAs only");
        let n = self.cfg.ptrs as u64;
        for (base, t) in self.pmd_tables(src, v.start, v.end) {
            assert!(!self.shared_table(t), "a private hugetlb VMA's pmd table is shared");
            for (va, i) in self.leaves_in(t, base, v.start, v.end) {
                let (dt, di) = self.table_alloc(dst, va, 1)?;
                // Reclaim never touches hugetlb units: the leaf is still there.
                let e = self.frames.table(t)[i];
                let mut ne = e;
                let anon = self.frames.frame(e.pfn).owner == Owner::Anon;
                if anon && e.writable() {
                    ne.flags &= !E_WRITE;
                    self.set_pte((t, i), ne);
                    *wrprotected = true;
                }
                self.set_pte((dt, di), ne);
                self.get_unit(e.pfn);
                for k in 0..n as usize {
                    let p = self.unit(e.pfn)[k];
                    self.frames.frame_mut(p).maps += 1;
                }
                self.mms[dst].hugetlb += n;
            }
        }
        Ok(())
    }

    // ---- the fault ------------------------------------------------------------------------

    /// huge_pte_alloc's pud level: the pud table of `va` (allocated if missing) and whether
    /// its entry for `va` is still empty (huge_pmd_share may fill it). Caller holds mmap_lock.
    pub(crate) fn huge_pud_alloc(&mut self, mm: usize, va: u64) -> Result<bool, FaultError> {
        let (pud, i) = self.table_alloc(mm, va, 2)?;
        Ok(!self.frames.table(pud)[i].mapped())
    }

    /// hugetlb_fault from huge_pte_alloc's result (pmd table `table`, index `idx`) up to
    /// the page lock: reads the entry, then hugetlb_no_page's lookup of the file's unit (or
    /// allocation of one: added to the page cache for a shared mapping, a private unit
    /// otherwise) or hugetlb_wp's preparation. The units it will map or copy are pinned, one
    /// reference per frame (the caller records them). `None`: the fault is resolved (the
    /// entry grants the access, or a shared mapping's leaf was made writable in place).
    /// Caller holds mmap_lock (read) and the vma lock (read).
    pub(crate) fn hugetlb_fault_prepare(
        &mut self,
        mm: usize,
        va: u64,
        write: bool,
        table: Pfn,
        idx: usize,
    ) -> Result<Option<HugeFault>, FaultError> {
        let vi = self.mms[mm]
            .find(va)
            .expect("mmap_lock is held: the VMA is still there");
        let v = self.mms[mm].vmas[vi];
        let f = v.file.expect("hugetlb VMAs map a file") as usize;
        let n = self.cfg.ptrs as u64;
        let idx0 = v.index_of(va) / n * n;
        let gen = self.frames.frame(table).gen;
        let orig = self.frames.table(table)[idx];
        let plan = if !orig.mapped() {
            // hugetlb_no_page: i_size again (a truncate may have run since fault_begin
            // looked): nothing is instantiated past EOF.
            if v.index_of(va) >= self.files[f].size_pages() {
                return Err(FaultError::Bus);
            }
            let cached = self.files[f].cache.get(idx0);
            if v.shared() || (!write && cached.is_some()) {
                let head = match cached {
                    Some(h) => h,
                    None => {
                        // alloc_hugetlb_folio + hugetlb_add_to_page_cache.
                        let head = self.alloc_unit(|i| Owner::Cache {
                            file: f as u32,
                            index: idx0 + i,
                        })?;
                        let frames = self.unit_frames(head);
                        for (i, p) in frames.into_iter().enumerate() {
                            let old = self.files[f].cache.insert(idx0 + i as u64, p);
                            assert!(old.is_none(), "a unit of file {f} at {idx0} is half instantiated");
                        }
                        head
                    }
                };
                self.get_unit(head);
                HugePlan::Cache { head, idx0 }
            } else {
                if let Some(src) = cached {
                    self.get_unit(src);
                }
                match self.alloc_unit(|_| Owner::Anon) {
                    Ok(new) => HugePlan::Anon { new, src: cached },
                    Err(e) => {
                        if let Some(src) = cached {
                            self.put_unit(src);
                        }
                        return Err(e);
                    }
                }
            }
        } else if write && !orig.writable() {
            assert!(orig.present(), "a PROT_NONE leaf in a VMA that allows the access");
            if v.shared() {
                // hugetlb_wp on a shared mapping: writable in place, under the ptl.
                self.spin_lock(LockId::Ptl(table));
                let mut w = orig;
                w.flags |= E_WRITE | E_DIRTY;
                self.set_pte((table, idx), w);
                self.spin_unlock(LockId::Ptl(table));
                return Ok(None);
            }
            let old = orig.pfn;
            self.get_unit(old);
            let new = if self.unit_exclusive(old) {
                None
            } else {
                match self.alloc_unit(|_| Owner::Anon) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.put_unit(old);
                        return Err(e);
                    }
                }
            };
            HugePlan::Wp { old, new }
        } else {
            return Ok(None);
        };
        Ok(Some(HugeFault {
            table,
            idx,
            gen,
            orig,
            plan,
        }))
    }

    /// The frames a prepared fault holds a reference of (what it keeps across its sleep).
    pub(crate) fn huge_fault_pins(&self, hf: &HugeFault) -> Vec<Pfn> {
        let mut out = Vec::new();
        let (a, b) = match hf.plan {
            HugePlan::Cache { head, .. } => (Some(head), None),
            HugePlan::Anon { new, src } => (Some(new), src),
            HugePlan::Wp { old, new } => (Some(old), new),
        };
        for h in [a, b].into_iter().flatten() {
            out.extend_from_slice(self.unit(h));
        }
        out
    }

    /// Drops every reference a prepared fault holds (its backout).
    fn huge_fault_release(&mut self, hf: &HugeFault) {
        match hf.plan {
            HugePlan::Cache { head, .. } => self.put_unit(head),
            HugePlan::Anon { new, src } => {
                self.put_unit(new);
                if let Some(s) = src {
                    self.put_unit(s);
                }
            }
            HugePlan::Wp { old, new } => {
                self.put_unit(old);
                if let Some(c) = new {
                    self.put_unit(c);
                }
            }
        }
    }

    /// Whether the file's unit at `idx0` is still `head`'s (not truncated meanwhile).
    fn unit_cached(&self, f: usize, idx0: u64, head: Pfn) -> bool {
        let frames = self.unit(head);
        frames
            .iter()
            .enumerate()
            .all(|(i, &p)| self.files[f].cache.get(idx0 + i as u64) == Some(p))
    }

    /// The rest of the fault, holding the page lock of `hf.lock_page()`: huge_pte_lock (the
    /// pmd page's ptl, through the pointer huge_pte_alloc gave: a table freed since is a
    /// `use-after-free`), pte_same, i_size and page-cache re-checks, then the leaf is set
    /// (hugetlb_no_page) or the unit copied or reused (hugetlb_wp). Consumes the pins.
    /// Caller holds mmap_lock (read), the page lock, and (unless `hugetlb-fault-unlocked`)
    /// the vma lock (read).
    pub(crate) fn hugetlb_fault_finish(
        &mut self,
        mm: usize,
        va: u64,
        write: bool,
        hf: HugeFault,
    ) -> Result<(), FaultError> {
        let t = hf.table;
        let fr = &self.frames.frame(t);
        if fr.gen != hf.gen {
            let now = match fr.owner {
                Owner::Free => "is free".to_string(),
                Owner::Table { level } => format!("is reused as a level-{level} page table"),
                Owner::Anon => "is reused as an anonymous page".to_string(),
                Owner::Cache { file, index } => format!("is reused as page {index} of file {file}"),
            };
            self.violation.get_or_insert(Violation {
                oracle: Oracle::UseAfterFree,
                message: format!(
                    "task {} faulting {va:#x} of mm {mm} takes the pmd lock of table frame {t} through the pointer huge_pte_alloc gave, but the pmd page was unshared and freed since: the frame {now}",
                    self.current
                ),
            });
            self.huge_fault_release(&hf);
            return Ok(());
        }
        let vi = self.mms[mm]
            .find(va)
            .expect("mmap_lock is held: the VMA is still there");
        let v = self.mms[mm].vmas[vi];
        let f = v.file.expect("hugetlb VMAs map a file") as usize;
        let hps = self.cfg.huge_page_size();
        let base = va & !(hps - 1);
        self.spin_lock(LockId::Ptl(t));
        let now = self.frames.table(t)[hf.idx];
        let beyond = v.index_of(va) >= self.files[f].size_pages();
        // The file's unit the plan was made for is still the file's (or the file still has
        // none, for a private zero unit): the copy happens now, as the flat spec sees it.
        let n = self.cfg.ptrs as u64;
        let idx0 = v.index_of(va) / n * n;
        let stale = match hf.plan {
            HugePlan::Cache { head, idx0 } => !self.unit_cached(f, idx0, head),
            HugePlan::Anon { src: Some(s), .. } => !self.unit_cached(f, idx0, s),
            HugePlan::Anon { src: None, .. } => self.files[f].cache.contains(idx0),
            HugePlan::Wp { .. } => false,
        };
        if now != hf.orig || beyond || stale {
            // Changed under us (another fault, a truncate): back out, retry or SIGBUS.
            self.spin_unlock(LockId::Ptl(t));
            self.huge_fault_release(&hf);
            return if beyond { Err(FaultError::Bus) } else { Ok(()) };
        }
        match hf.plan {
            HugePlan::Cache { head, .. } => {
                let writable = v.shared() && v.writable();
                let bits = E_PRESENT | if writable { E_WRITE } else { 0 } | if write { E_DIRTY } else { 0 };
                self.install_leaf(t, hf.idx, head, bits);
            }
            HugePlan::Anon { new, src } => {
                if let Some(s) = src {
                    for k in 0..self.cfg.ptrs as usize {
                        let (a, b) = (self.unit(s)[k], self.unit(new)[k]);
                        self.copy_user_highpage(a, b);
                    }
                    self.put_unit(s);
                }
                self.anon_vma_prepare(mm, vi);
                let bits = E_PRESENT | if v.writable() && write { E_WRITE | E_DIRTY } else { 0 };
                self.install_leaf(t, hf.idx, new, bits);
            }
            HugePlan::Wp { old, new } => {
                if self.unit_exclusive(old) {
                    // The only user: writable in place; a copy made meanwhile is not needed.
                    let mut w = now;
                    w.flags |= E_WRITE | E_DIRTY;
                    self.set_pte((t, hf.idx), w);
                    self.put_unit(old);
                    if let Some(c) = new {
                        self.put_unit(c);
                    }
                } else {
                    let new = new.expect("a unit shared when prepared stays shared under mmap_lock");
                    for k in 0..self.cfg.ptrs as usize {
                        let (a, b) = (self.unit(old)[k], self.unit(new)[k]);
                        self.copy_user_highpage(a, b);
                    }
                    self.anon_vma_prepare(mm, vi);
                    // huge_ptep_clear_flush, then the new leaf, then the old unit's
                    // references (the mapping's and the pins) go.
                    let mut pages = Vec::new();
                    self.clear_leaf(t, hf.idx, &mut pages);
                    self.flush_sharers(t, base & !(self.cfg.pud_span() - 1), base, hps);
                    self.install_leaf(t, hf.idx, new, E_PRESENT | E_WRITE | E_DIRTY);
                    for p in pages {
                        self.put_frame(p);
                    }
                    self.put_unit(old);
                }
            }
        }
        self.spin_unlock(LockId::Ptl(t));
        Ok(())
    }

    // ---- the oracle's eligibility rule ----------------------------------------------------

    /// `share-count`'s eligibility rule for a pmd table linked from more than one pud entry
    /// (want_pmd_share and page_table_shareable): pmd sharing on, and every linking mm's VMA
    /// at the range is a shared hugetlb VMA covering the whole pud range, all of the same
    /// file at the same offset, with the same flags. The reason it is not, if it is not.
    pub(crate) fn pmd_share_violation(&self, t: Pfn) -> Option<String> {
        if !self.cfg.hugeshare {
            return Some(format!("pmd table {t} is shared with hugeshare off"));
        }
        let pud = self.cfg.pud_span();
        let mut first: Option<(usize, u64, Vma)> = None;
        for (mm, base) in self.table_linkers(t) {
            let Some(v) = self.mms[mm].find(base).map(|i| self.mms[mm].vmas[i]) else {
                return Some(format!(
                    "pmd table {t} is shared by mm {mm} at {base:#x}, where it has no VMA"
                ));
            };
            if !self.want_pmd_share(&v, base) {
                return Some(format!(
                    "pmd table {t} is shared by mm {mm} at {base:#x}, whose VMA [{:#x}, {:#x}) may not share it (not a shared hugetlb VMA covering [{base:#x}, {:#x}))",
                    v.start,
                    v.end,
                    base + pud
                ));
            }
            match first {
                None => first = Some((mm, base, v)),
                Some((m0, b0, v0)) => {
                    if v0.file != v.file || v0.index_of(b0) != v.index_of(base) || v0.flags != v.flags {
                        return Some(format!(
                            "pmd table {t} is shared by mm {m0} at {b0:#x} and mm {mm} at {base:#x}, whose VMAs differ in file, offset or flags"
                        ));
                    }
                }
            }
        }
        None
    }
}
