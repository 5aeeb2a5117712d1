//! Shared pte pages (`config ptshare=on`), in the design reviewed in seed 002 (Dave
//! McCracken's shared page tables, 2006, with Hugh Dickins' locking): a fault in a file
//! mapping that may share finds, through the file's i_mmap, another mm's VMA over the same
//! file range whose pte page is populated, and points its own pmd entry at that page
//! instead of allocating one.
//!
//! The rules kept here:
//! - **Eligibility** (pt_shareable): a file mapping (not hugetlb, which shares pmd pages by
//!   its own rules), shared or read-only (the patch's vm_flags test: a read-only private
//!   mapping of a file shares, as library text would), without an anon_vma (a private
//!   mapping that copied pages on write and was then made read-only passes the flags test
//!   but its ptes are its own: `ptshare-anon-vma` forgets this), covering the whole
//!   pte-page-aligned range (`vm_end - 1 >= base + span - 1`; `ptshare-end-wrap` computes
//!   `base + span`, which wraps to 0 at the top of the address space, and so judges a VMA
//!   that covers only the start of the last range as covering it). Two VMAs share only
//!   with the same file page at the range's base and the same protection and sharing
//!   flags.
//! - **The share count** is the table frame's `maps`: the number of upper entries, over
//!   every mm, pointing at the table (1 when not shared). A table is shared exactly when
//!   the count is above 1; a table is freed only when the count drops to 0.
//! - **Locking**: the search and the link happen under the file's i_mmap_rwsem (read) and
//!   the mm's page_table_lock, in one atomic section, so the count is raised only when the
//!   link is made (Hugh's fix: no "already mapped" backout). With `ptshare-count-race` the
//!   count is raised at the search, i_mmap_rwsem dropped, and the backout, finding the pmd
//!   populated meanwhile, lowers it again without freeing a table no one links any more.
//! - **rss**: every mm linking a shared table accounts every mapped pte in it, as if the
//!   table were its own (the rule written in ARCHITECTURE.md; the `rss` oracle's recount
//!   walks each mm's tables, shared ones included). Linking adds the table's ptes to the
//!   new sharer's counters (`ptshare-rss` forgets), unlinking takes them out, and a pte set
//!   or cleared in a shared table changes the counters of every mm linking it.
//! - **Unsharing**: every path that would change ptes for one mm only (munmap, mprotect,
//!   mremap's old range, fork's copy, exit) first unlinks the mm's entries to shared tables
//!   over the range: the entry is cleared and the mm's TLB for the table's range flushed
//!   before i_mmap_rwsem would be dropped (the mm's CPUs reached the other mms' pages
//!   through the table). The ptes stay with the other sharers; this mm faults its own back.
//!   mremap's move holds its new range unshared too (`ptshare-mremap-newrange` lets the
//!   destination's table allocation share, and the moved ptes land in another mm's table).
//! - **The reverse map** (truncate's unmap_mapping_range, pageout, reclaim) clears a pte in
//!   a shared table once for all its sharers and flushes the TLB of every mm linking the
//!   table (`ptshare-flush-own-mm` flushes only the mm it found the pte through).
//!
//! `links` is the model's index of the entries pointing at each shared table (the kernel
//! finds them through i_mmap; the model keeps them to account rss and flush TLBs). The
//! `share-count` oracle recounts the entries from the page tables themselves.

use super::frames::{Entry, Pfn, Zone, E_PRESENT};
use super::mm::Vma;
use super::{FaultError, LockId, Machine, Owner};
use crate::{Bug, PAGE_SIZE};

/// A pte table another mm links, found by [`Machine::pt_share_find`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Found {
    pub table: Pfn,
    /// The mm linking it and the base of the range it maps there.
    pub mm: usize,
    pub base: u64,
}

impl Machine {
    /// Bytes one pte page maps.
    pub(crate) fn pte_span(&self) -> u64 {
        self.entry_span(1)
    }

    /// pt_shareable: may VMA `v` share the pte page of the range starting at `base`?
    pub(crate) fn pt_shareable(&self, v: &Vma, base: u64) -> bool {
        let Some(f) = v.file else { return false };
        if v.hugetlb() || self.files[f as usize].huge {
            return false;
        }
        if !v.shared() && v.writable() {
            return false;
        }
        if v.anon_vma.is_some() && !self.cfg.bugs.contains(Bug::PtshareAnonVma) {
            return false;
        }
        let span = self.pte_span();
        if self.cfg.bugs.contains(Bug::PtshareEndWrap) {
            // `end = base + PMD_SIZE` in the width of the address space: 0 past the top.
            let end = (base + span) & (self.cfg.task_size() - 1);
            v.start <= base && v.end >= end
        } else {
            // Hugh's `vma->vm_end - 1 >= end` with `end = base + span - 1`: no wrap.
            #[allow(clippy::int_plus_one)]
            let covers = v.end - 1 >= base + span - 1;
            v.start <= base && covers
        }
    }

    /// The file whose i_mmap a fault at `va` of `mm` would search for a pte page to share:
    /// sharing is on, the VMA may share its range and the mm has no pte page there yet.
    /// Caller holds mmap_lock.
    pub(crate) fn pt_share_wanted(&self, mm: usize, va: u64) -> Option<u32> {
        if !self.cfg.ptshare {
            return None;
        }
        let v = self.mms[mm].vmas[self.mms[mm].find(va)?];
        let base = va & !(self.pte_span() - 1);
        if !self.pt_shareable(&v, base) || self.pmd_entry(mm, va).is_some_and(|e| e.mapped()) {
            return None;
        }
        v.file
    }

    /// pt_share_pte's search through the i_mmap of `v`'s file: another live mm's VMA over
    /// the same file page at a pte-page-aligned address, shareable, with the same flags,
    /// whose pte page there is populated. Caller holds i_mmap_rwsem.
    pub(crate) fn pt_share_find(&self, mm: usize, v: &Vma, va: u64) -> Option<Found> {
        let span = self.pte_span();
        let base = va & !(span - 1);
        if !self.pt_shareable(v, base) {
            return None;
        }
        let f = v.file?;
        let index = v.index_of(base);
        for (om, m) in self.mms.iter().enumerate() {
            if om == mm || !m.live {
                continue;
            }
            for s in &m.vmas {
                if s.file != Some(f) || s.share_flags() != v.share_flags() {
                    continue;
                }
                if index < s.pgoff || index >= s.pgoff + s.pages() {
                    continue;
                }
                let sbase = s.start + (index - s.pgoff) * PAGE_SIZE;
                if !sbase.is_multiple_of(span) || !self.pt_shareable(s, sbase) {
                    continue;
                }
                if let Some((table, _)) = self.pte_slot(om, sbase) {
                    return Some(Found {
                        table,
                        mm: om,
                        base: sbase,
                    });
                }
            }
        }
        None
    }

    /// pt_share_pte for a fault at `va` of `mm`, whole: search and link in one atomic
    /// section. Caller holds mmap_lock and i_mmap_rwsem of the VMA's file.
    pub(crate) fn pt_share(&mut self, mm: usize, va: u64) {
        let Some(vi) = self.mms[mm].find(va) else { return };
        let v = self.mms[mm].vmas[vi];
        self.pt_share_vma(mm, &v, va);
    }

    /// [`Machine::pt_share`] for a VMA `v` of `mm` covering `va`.
    /// An allocation failure of the tables above leaves the fault to allocate (and fail)
    /// on its own.
    pub(crate) fn pt_share_vma(&mut self, mm: usize, v: &Vma, va: u64) {
        let Some(found) = self.pt_share_find(mm, v, va) else {
            return;
        };
        let Some(pmd) = self.pmd_alloc_for_share(mm, va) else {
            return;
        };
        if !self.frames.table(pmd.0)[pmd.1].mapped() {
            self.frames.frame_mut(found.table).maps += 1;
            self.pt_link(mm, va, pmd, found);
        }
    }

    /// `ptshare-count-race`, first half: the search, raising the count of the table found
    /// at once. Caller holds i_mmap_rwsem (and drops it before the second half).
    pub(crate) fn pt_share_get(&mut self, mm: usize, va: u64) -> Option<Found> {
        let vi = self.mms[mm].find(va)?;
        let v = self.mms[mm].vmas[vi];
        let found = self.pt_share_find(mm, &v, va)?;
        self.frames.frame_mut(found.table).maps += 1;
        self.tasks[self.current as usize].share_pending.push(found.table);
        Some(found)
    }

    /// `ptshare-count-race`, second half, under page_table_lock only: link the table found,
    /// or, the pmd populated meanwhile ("Oops, already mapped"), lower its count again, and
    /// do nothing else. Caller holds mmap_lock.
    pub(crate) fn pt_share_finish(&mut self, mm: usize, va: u64, found: Found) {
        let pending = &mut self.tasks[self.current as usize].share_pending;
        let i = pending
            .iter()
            .position(|&p| p == found.table)
            .expect("a count raised by this task");
        pending.swap_remove(i);
        match self.pmd_alloc_for_share(mm, va) {
            Some(pmd) if !self.frames.table(pmd.0)[pmd.1].mapped() => self.pt_link(mm, va, pmd, found),
            // Already mapped (or no memory for the tables above): the count goes back.
            _ => {
                let fr = self.frames.frame_mut(found.table);
                fr.maps = fr.maps.saturating_sub(1);
                self.ptshare_tidy(found.table);
            }
        }
    }

    /// The pmd table of `va` for a share, allocating the tables above. A failure is not the
    /// caller's to report (the fault goes on and allocates, or fails, on its own), so the
    /// task's oom mark stays what it was: otherwise a fault that then finds the offset past
    /// i_size would report SIGBUS with the mark of an allocation failure it did not end on.
    fn pmd_alloc_for_share(&mut self, mm: usize, va: u64) -> Option<(Pfn, usize)> {
        let oom = self.oom;
        let r = self.table_alloc(mm, va, 1).ok();
        self.oom = oom;
        r
    }

    /// Points `mm`'s empty pmd entry for `va` (at `(pmd, i)`) at `found.table`, whose count
    /// the caller raised, and accounts the table's ptes in `mm`'s rss.
    fn pt_link(&mut self, mm: usize, va: u64, (pmd, i): (Pfn, usize), found: Found) {
        let lock = LockId::PageTableLock(mm as u32);
        self.spin_lock(lock);
        assert!(
            !self.frames.table(pmd)[i].mapped(),
            "pmd entry of {va:#x} populated under us"
        );
        self.frames.table_mut(pmd)[i] = Entry {
            pfn: found.table,
            flags: E_PRESENT,
        };
        self.ev_entry_set(pmd, i);
        self.spin_unlock(lock);
        let base = va & !(self.pte_span() - 1);
        let theirs = self.mms[found.mm].live
            && self
                .pmd_entry(found.mm, found.base)
                .is_some_and(|e| e.mapped() && e.pfn == found.table);
        let links = self.ptshare.entry(found.table).or_default();
        if links.is_empty() && theirs {
            links.push((found.mm, found.base));
        }
        links.push((mm, base));
        self.ptshare_tidy(found.table);
        if !self.cfg.bugs.contains(Bug::PtshareRss) {
            let rss = self.table_rss(found.table);
            for (k, n) in rss.into_iter().enumerate() {
                self.mms[mm].rss[k] += n;
            }
        }
    }

    /// The rss, by kind, of the ptes mapped in pte table `table`.
    fn table_rss(&self, table: Pfn) -> [u64; 3] {
        let mut rss = [0; 3];
        if self.frames.frame(table).owner != (Owner::Table { level: 0 }) {
            return rss;
        }
        for e in self.frames.table(table).iter() {
            if e.mapped() && !e.special() {
                rss[self.rss_kind(e.pfn)] += 1;
            }
        }
        rss
    }

    /// The entries linking pte table `table`, which `mm` reaches at `base`: every sharer's
    /// for a shared table, else `mm`'s alone.
    pub(crate) fn table_links(&self, table: Pfn, mm: usize, base: u64) -> Vec<(usize, u64)> {
        match self.ptshare.get(&table) {
            Some(links) => {
                debug_assert!(links.contains(&(mm, base)), "mm {mm} reaches table {table} unlinked");
                links.clone()
            }
            None => vec![(mm, base)],
        }
    }

    /// Adds `delta` to rss counter `kind` of every mm linking the table of `va` in `mm`.
    pub(crate) fn rss_add_links(&mut self, mm: usize, va: u64, table: Pfn, kind: usize, delta: i64) {
        let base = va & !(self.pte_span() - 1);
        if !self.ptshare.contains_key(&table) {
            self.rss_add(mm, kind, delta);
            return;
        }
        for (lm, _) in self.table_links(table, mm, base) {
            self.rss_add(lm, kind, delta);
        }
    }

    pub(crate) fn rss_add(&mut self, mm: usize, kind: usize, delta: i64) {
        let rss = &mut self.mms[mm].rss[kind];
        *rss = rss
            .checked_add_signed(delta)
            .unwrap_or_else(|| panic!("rss {} of mm {mm} going negative", super::RSS_NAMES[kind]));
    }

    /// Flushes the TLB for page `va` (reached through `mm`'s table `table`) in every mm
    /// linking the table (`ptshare-flush-own-mm`: in `mm` only).
    pub(crate) fn flush_links(&mut self, mm: usize, va: u64, table: Pfn) {
        let span = self.pte_span();
        let base = va & !(span - 1);
        if !self.ptshare.contains_key(&table) || self.cfg.bugs.contains(Bug::PtshareFlushOwnMm) {
            self.flush_tlb_range(mm, va, va + PAGE_SIZE);
            return;
        }
        for (lm, lbase) in self.table_links(table, mm, base) {
            let at = lbase + (va - base);
            self.flush_tlb_range(lm, at, at + PAGE_SIZE);
        }
    }

    /// Unlinks every shared pte page `mm` links over `[start, end)` (pt_unshare_range):
    /// the pmd entry cleared, the count lowered, the table's ptes out of `mm`'s rss, and
    /// `mm`'s TLB for the table's range flushed. Caller holds mmap_lock for writing (and,
    /// in Linux, i_mmap_rwsem across the clear and the flush).
    pub(crate) fn pt_unshare_range(&mut self, mm: usize, start: u64, end: u64) {
        if !self.cfg.ptshare || start >= end {
            return;
        }
        let span = self.pte_span();
        let mut base = start & !(span - 1);
        while base < end {
            let next = match self.table_walk(mm, base, 1) {
                Ok((pmd, i)) => {
                    let e = self.frames.table(pmd)[i];
                    if e.mapped() && !e.huge() && self.frames.frame(e.pfn).maps > 1 {
                        self.pt_unlink(mm, base, (pmd, i), e.pfn);
                    }
                    base.checked_add(span)
                }
                // No pmd table under the empty entry: skip the whole range it would map.
                Err(level) => (base | (self.entry_span(level) - 1)).checked_add(1),
            };
            let Some(next) = next else { break };
            base = next;
        }
    }

    fn pt_unlink(&mut self, mm: usize, base: u64, slot: (Pfn, usize), table: Pfn) {
        let lock = LockId::PageTableLock(mm as u32);
        self.spin_lock(lock);
        self.ev_entry(slot.0, slot.1, Entry::NONE);
        self.frames.table_mut(slot.0)[slot.1] = Entry::NONE;
        self.spin_unlock(lock);
        self.flush_tlb_range(mm, base, base + self.pte_span());
        let rss = self.table_rss(table);
        for (k, n) in rss.into_iter().enumerate() {
            self.rss_add(mm, k, -(n as i64));
        }
        let fr = self.frames.frame_mut(table);
        assert!(fr.maps > 1, "unsharing table {table}, which is not shared");
        fr.maps -= 1;
        if let Some(links) = self.ptshare.get_mut(&table) {
            links.retain(|&l| l != (mm, base));
        }
        self.ptshare_tidy(table);
    }

    /// Drops `table`'s entry in the link index once it is linked at most once and no task
    /// holds a count on it that it has not linked yet (`ptshare-count-race`'s pending
    /// counts): such a task, linking later, must find the one link left in the index.
    fn ptshare_tidy(&mut self, table: Pfn) {
        if let Some(links) = self.ptshare.get(&table) {
            if links.len() <= 1 && self.frames.frame(table).maps as usize <= links.len() {
                self.ptshare.remove(&table);
            }
        }
    }

    /// The pmd entry of `va` in `mm`, if the pmd table exists.
    pub(crate) fn pmd_entry(&self, mm: usize, va: u64) -> Option<Entry> {
        self.pmd_slot(mm, va).map(|(t, i)| self.frames.table(t)[i])
    }

    /// The pmd table and index of `va`, if the upper tables exist.
    pub(crate) fn pmd_slot(&self, mm: usize, va: u64) -> Option<(Pfn, usize)> {
        self.table_slot(mm, va, 1)
    }

    /// Walks down to the table of `level` mapping `va` (1: the pmd table), allocating the
    /// missing tables above it; returns it and the index of `va`'s entry in it. Caller holds
    /// mmap_lock; each allocation may reclaim (never a page table).
    pub(crate) fn table_alloc(&mut self, mm: usize, va: u64, level: u32) -> Result<(Pfn, usize), FaultError> {
        let mut t = self.mms[mm].pgd;
        for l in (level + 1..=3u32).rev() {
            let i = self.index(va, l);
            let e = self.frames.table(t)[i];
            if e.mapped() {
                assert!(!e.huge(), "a table wanted under the hugetlb leaf of {va:#x}");
                t = e.pfn;
                continue;
            }
            let zone = if l == 1 && self.cfg.highpte {
                Zone::High
            } else {
                Zone::Low
            };
            let new = self.alloc_frame(zone, Owner::Table { level: l as u8 - 1 })?;
            // pmd_populate/pud_populate under mm->page_table_lock.
            let lock = LockId::PageTableLock(mm as u32);
            self.spin_lock(lock);
            assert!(!self.frames.table(t)[i].mapped());
            self.frames.table_mut(t)[i] = Entry {
                pfn: new,
                flags: E_PRESENT,
            };
            self.ev_entry_set(t, i);
            self.spin_unlock(lock);
            t = new;
        }
        Ok((t, self.index(va, level)))
    }
}
