//! The page-fault path (handle_mm_fault) and user memory access through the CPU's TLB and
//! page tables, for user loads and stores and for the kernel's copy_{from,to}_user.
//!
//! Invariants kept here:
//! - A translation enters a TLB only from a present pte that grants the access, and records
//!   the frame's generation, so an entry that outlives its frame is caught when used.
//! - A fault resolves or fails without leaving a half-installed pte: rss, map count and
//!   reference are taken together with the pte, under the (modelled) page table lock.
//! - Copy-on-write clears the old pte and flushes every CPU of the mm before the old page
//!   loses its reference (ptep_clear_flush), so no CPU keeps reading the old copy.
//! - A hugetlb pmd leaf is walked like a pte: the TLB gets the unit's 4k frame of the
//!   address (TLB entries stay per page), with that frame's generation. hugetlb faults are
//!   in hugetlb.rs.

use super::frames::{Entry, Pfn, Zone, E_DIRTY, E_PRESENT, E_SPECIAL, E_WRITE, PAGE, ZERO_PFN};
use super::mm::{VM_EXEC, VM_READ, VM_WRITE};
use super::{FaultError, LockId, Machine, Owner, TlbEntry};
use crate::{CpuId, Oracle, Violation, PAGE_SIZE};

/// How far [`Machine::fault_begin`] got.
pub(crate) enum FaultStep {
    /// The fault is resolved (or failed).
    Done(Result<(), FaultError>),
    /// The fault needs this file page (pinned) locked before it goes on. `filemap`: the
    /// lock is filemap_fault's (lock_folio_maybe_drop_mmap, which may drop mmap_lock to
    /// sleep for it); otherwise it is shmem_fault's or page_mkwrite's, taken under mmap_lock.
    LockPage { page: Pfn, filemap: bool },
    /// A hugetlb VMA: the access is allowed and inside the file; hugetlb_fault (an async
    /// path of its own, `kernel/hugetlb.rs`) resolves it.
    Hugetlb,
}

impl Machine {
    /// handle_mm_fault for a user access at `va`, up to the point where it needs a file page
    /// locked: everything that takes no sleeping lock is done here (anonymous faults, copy on
    /// write, hugetlb units); a fault on a file page returns the page pinned, for the caller
    /// to lock and hand to [`Machine::fault_locked`]. Caller holds mmap_lock (read, or write
    /// for populate).
    pub(crate) fn fault_begin(&mut self, mm: usize, va: u64, write: bool) -> FaultStep {
        let Some(vi) = self.mms[mm].find(va) else {
            return FaultStep::Done(Err(FaultError::Segv));
        };
        let vma = self.mms[mm].vmas[vi];
        if (write && !vma.writable()) || (!write && !vma.readable()) {
            return FaultStep::Done(Err(FaultError::Segv));
        }
        let va = va & !(PAGE_SIZE - 1);
        if let Some(f) = vma.file {
            // The SIGBUS check needs no page table (filemap_fault checks i_size first).
            if vma.index_of(va) >= self.files[f as usize].size_pages() {
                return FaultStep::Done(Err(FaultError::Bus));
            }
        }
        if vma.hugetlb() {
            return FaultStep::Hugetlb;
        }
        let slot = match self.pte_alloc(mm, va) {
            Ok(s) => s,
            Err(e) => return FaultStep::Done(Err(e)),
        };
        // pte_offset_map: the pte page is kmap_atomic()ed to read the entry (highpte).
        let d = self.kmap_atomic_here(slot.0);
        let e = self.frames.table(slot.0)[slot.1];
        self.kunmap_atomic_here(d);
        if !e.mapped() {
            let Some(f) = vma.file else {
                return FaultStep::Done(self.fault_anon(mm, vi, va, write));
            };
            // filemap_fault: find (or read in) the page, then lock it.
            return match self.get_cache_page(f as usize, vma.index_of(va)) {
                Ok(page) => FaultStep::LockPage {
                    page,
                    filemap: !self.files[f as usize].shmem,
                },
                Err(err) => FaultStep::Done(Err(err)),
            };
        }
        if write && !e.writable() {
            if vma.shared() && vma.file.is_some_and(|f| !self.files[f as usize].shmem) {
                // do_page_mkwrite: filemap_page_mkwrite locks the page.
                self.get_frame(e.pfn);
                return FaultStep::LockPage {
                    page: e.pfn,
                    filemap: false,
                };
            }
            return FaultStep::Done(self.fault_wp(mm, vi, va));
        }
        // PROT_NONE ptes are changed by mprotect together with the VMA, so a pte that is
        // mapped, allowed by the VMA and not walkable cannot exist here.
        assert!(
            e.present(),
            "pte {e:?} at {va:#x} not present though its VMA allows the access"
        );
        FaultStep::Done(Ok(()))
    }

    /// The rest of a file fault with `page` (pinned by [`Machine::fault_begin`]) locked by
    /// the caller: filemap_fault's checks under the page lock (truncated meanwhile: the fault
    /// is retried; now past EOF: SIGBUS), then finish_fault (or wp_page_shared after
    /// page_mkwrite). A pte another thread installed meanwhile is left alone (the access is
    /// retried). Consumes the pin. Caller holds mmap_lock and the page lock.
    pub(crate) fn fault_locked(&mut self, mm: usize, va: u64, write: bool, page: Pfn) -> Result<(), FaultError> {
        let va = va & !(PAGE_SIZE - 1);
        let vi = self.mms[mm]
            .find(va)
            .expect("mmap_lock is held: the VMA is still there");
        let vma = self.mms[mm].vmas[vi];
        let f = vma.file.expect("a file fault") as usize;
        let index = vma.index_of(va);
        if self.files[f].cache.get(index) != Some(page) {
            self.put_frame(page); // truncated or reclaimed while we slept: retry
            return Ok(());
        }
        if index >= self.files[f].size_pages() {
            self.put_frame(page);
            return Err(FaultError::Bus);
        }
        let slot = self
            .pte_slot(mm, va)
            .expect("tables go only under mmap_lock for writing");
        let e = self.frames.table(slot.0)[slot.1];
        if !e.mapped() {
            return self.fault_file(mm, vi, va, write, page);
        }
        if write && !e.writable() && vma.shared() && e.pfn == page {
            // wp_page_shared: the page becomes dirty and writable in place.
            self.set_pte(
                slot,
                Entry {
                    pfn: page,
                    flags: e.flags | E_WRITE | E_DIRTY,
                },
            );
            self.frames.frame_mut(page).dirty = true;
        }
        self.put_frame(page);
        Ok(())
    }

    /// do_anonymous_page: the zero page for a read, a new zeroed page for a write.
    fn fault_anon(&mut self, mm: usize, vi: usize, va: u64, write: bool) -> Result<(), FaultError> {
        if !write {
            // The shared zero page, read-only: no rss, no map count.
            let slot = self.pte_slot(mm, va).expect("tables allocated by the caller");
            self.set_pte(
                slot,
                Entry {
                    pfn: ZERO_PFN,
                    flags: E_PRESENT | E_SPECIAL,
                },
            );
            return Ok(());
        }
        let page = self.alloc_frame(Zone::High, Owner::Anon)?;
        self.clear_user_highpage(page);
        self.anon_vma_prepare(mm, vi);
        self.install_ref(mm, va, page, E_PRESENT | E_WRITE | E_DIRTY);
        Ok(())
    }

    /// do_read_fault / do_cow_fault / do_shared_fault on the locked, pinned cache `page`
    /// (the pin is consumed).
    fn fault_file(&mut self, mm: usize, vi: usize, va: u64, write: bool, page: Pfn) -> Result<(), FaultError> {
        let vma = self.mms[mm].vmas[vi];
        let f = vma.file.expect("a file fault") as usize;
        if !vma.shared() && write {
            // Private write: copy the file page into a new anonymous page.
            let copy = match self.alloc_frame(Zone::High, Owner::Anon) {
                Ok(c) => c,
                Err(e) => {
                    self.put_frame(page);
                    return Err(e);
                }
            };
            self.anon_vma_prepare(mm, vi);
            self.copy_user_highpage(page, copy);
            self.put_frame(page);
            self.install_ref(mm, va, copy, E_PRESENT | E_WRITE | E_DIRTY);
            return Ok(());
        }
        // Map the cache page. Shared mappings of disk files are write-notified: a read maps
        // it read-only and the first write marks the page dirty (shmem needs no notify).
        let shmem = self.files[f].shmem;
        let writable = vma.shared() && vma.writable() && (write || shmem);
        let mut bits = E_PRESENT | if writable { E_WRITE } else { 0 };
        if write {
            bits |= E_DIRTY;
            self.frames.frame_mut(page).dirty = true;
        }
        // The pin becomes the mapping's reference.
        self.install_ref(mm, va, page, bits);
        Ok(())
    }

    /// Sets the pte of `va` to `page`, turning a reference the caller holds (a fresh page's
    /// allocation, a cache page's pin) into the mapping's, and accounts it. Caller holds the
    /// (modelled) pte lock.
    fn install_ref(&mut self, mm: usize, va: u64, page: Pfn, bits: u8) {
        let slot = self.pte_slot(mm, va).expect("tables allocated by the caller");
        // pte_offset_map_lock: the pte page kmap_atomic()ed (highpte), then its lock.
        let d = self.kmap_atomic_here(slot.0);
        self.spin_lock(LockId::Ptl(slot.0));
        assert!(
            !self.frames.table(slot.0)[slot.1].mapped(),
            "pte of {va:#x} already mapped"
        );
        self.set_pte(slot, Entry { pfn: page, flags: bits });
        self.frames.frame_mut(page).maps += 1;
        let kind = self.rss_kind(page);
        // In a shared pte page, the pte counts in the rss of every mm linking it.
        self.rss_add_links(mm, va, slot.0, kind, 1);
        self.spin_unlock(LockId::Ptl(slot.0));
        self.kunmap_atomic_here(d);
    }

    /// do_wp_page: a write to a present read-only pte of a writable VMA.
    fn fault_wp(&mut self, mm: usize, vi: usize, va: u64) -> Result<(), FaultError> {
        let vma = self.mms[mm].vmas[vi];
        let slot = self.pte_slot(mm, va).expect("present pte has tables");
        let e = self.frames.table(slot.0)[slot.1];
        if vma.shared() {
            // wp_page_shared: the page becomes dirty and writable in place.
            self.set_pte(
                slot,
                Entry {
                    pfn: e.pfn,
                    flags: e.flags | E_WRITE | E_DIRTY,
                },
            );
            self.frames.frame_mut(e.pfn).dirty = true;
            return Ok(());
        }
        let old = e.pfn;
        if old != ZERO_PFN && self.exclusive_anon(old) {
            // The only user of an anonymous page: reuse it.
            self.set_pte(
                slot,
                Entry {
                    pfn: old,
                    flags: e.flags | E_WRITE | E_DIRTY,
                },
            );
            return Ok(());
        }
        // wp_page_copy: pin the old page across the allocation, copy, then replace.
        self.get_frame(old);
        let copy = match self.alloc_frame(Zone::High, Owner::Anon) {
            Ok(c) => c,
            Err(err) => {
                self.put_frame(old);
                return Err(err);
            }
        };
        self.anon_vma_prepare(mm, vi);
        self.copy_user_highpage(old, copy);
        // The allocation may have reclaimed and unmapped the old page: re-check the pte.
        let slot = self.pte_slot(mm, va).expect("tables are never reclaimed");
        let now = self.frames.table(slot.0)[slot.1];
        self.put_frame(old);
        if now != e {
            self.put_frame(copy);
            return Ok(()); // the fault is retried by the caller
        }
        // ptep_clear_flush, then the new pte, then the old page's reference goes.
        self.set_pte(slot, Entry::NONE);
        self.flush_tlb_range(mm, va, va + PAGE_SIZE);
        self.unmap_accounting(mm, e);
        self.install_ref(mm, va, copy, E_PRESENT | E_WRITE | E_DIRTY);
        Ok(())
    }

    /// An anonymous page mapped once and held by nothing else: a write may reuse it.
    pub(crate) fn exclusive_anon(&self, pfn: Pfn) -> bool {
        let fr = &self.frames.frame(pfn);
        fr.owner == Owner::Anon && fr.refs == 1 && fr.maps == 1
    }

    /// anon_vma_prepare: gives the VMA an anon_vma, reusing a mergeable neighbour's
    /// (find_mergeable_anon_vma: next first, then prev).
    pub(crate) fn anon_vma_prepare(&mut self, mm: usize, vi: usize) {
        if self.mms[mm].vmas[vi].anon_vma.is_some() {
            return;
        }
        let vmas = &self.mms[mm].vmas;
        let v = vmas[vi];
        // anon_vma_compatible: adjacent, same file, contiguous offsets, and the same flags
        // except the access bits (a neighbour differing only in protection qualifies).
        let access = VM_READ | VM_WRITE | VM_EXEC;
        let compatible = |a: &super::Vma, b: &super::Vma| {
            a.end == b.start && a.file == b.file && (a.flags ^ b.flags) & !access == 0 && b.pgoff == a.pgoff + a.pages()
        };
        let mut reuse = None;
        if let Some(n) = vmas.get(vi + 1) {
            if n.anon_vma.is_some() && !n.forked && compatible(&v, n) {
                reuse = n.anon_vma;
            }
        }
        if reuse.is_none() && vi > 0 {
            let p = &vmas[vi - 1];
            if p.anon_vma.is_some() && !p.forked && compatible(p, &v) {
                reuse = p.anon_vma;
            }
        }
        let id = match reuse {
            Some(id) => id,
            None => self.new_anon_vma(),
        };
        self.mms[mm].vmas[vi].anon_vma = Some(id);
    }

    /// The translation of `va` for a read or write by `cpu` running `mm`, without faulting:
    /// the CPU's TLB, then the hardware walk (which fills the TLB and sets the dirty bit on a
    /// write). `None`: the access faults (the caller takes the fault, or under
    /// pagefault_disable() fails). An access through a TLB entry whose frame has been freed
    /// or reused since it was filled is a `tlb` violation at once (and faults).
    pub(crate) fn walk(&mut self, mm: usize, cpu: CpuId, va: u64, write: bool) -> Option<Pfn> {
        let vpn = va / PAGE_SIZE;
        let hit = self.cpus[cpu as usize]
            .tlb
            .iter()
            .find(|e| e.mm == mm as u32 && e.vpn == vpn)
            .copied();
        if let Some(e) = hit {
            if !write || e.write {
                if e.pfn != ZERO_PFN && self.frames.frame(e.pfn).gen != e.gen {
                    self.violation.get_or_insert(Violation {
                        oracle: Oracle::Tlb,
                        message: format!(
                            "CPU {cpu} accessed {va:#x} of mm {mm} through a stale TLB entry to frame {} (freed or reused since the entry was filled)",
                            e.pfn
                        ),
                    });
                    return None;
                }
                return Some(e.pfn);
            }
        }
        if va >= self.cfg.task_size() {
            return None;
        }
        let (table, i, level) = self.leaf_slot(mm, va)?;
        let e = self.frames.table(table)[i];
        if !e.present() || (write && !e.writable()) {
            return None;
        }
        let mut ne = e;
        if write {
            ne.flags |= E_DIRTY;
        }
        self.set_pte((table, i), ne);
        // A hugetlb pmd leaf maps the unit: the TLB entry is the 4k page of it at `va`.
        let e = if level == 1 { self.huge_subpage(e, va) } else { e };
        let gen = if e.pfn == ZERO_PFN {
            0
        } else {
            self.frames.frame(e.pfn).gen
        };
        let tlb = &mut self.cpus[cpu as usize].tlb;
        tlb.retain(|t| !(t.mm == mm as u32 && t.vpn == vpn));
        tlb.push(TlbEntry {
            mm: mm as u32,
            vpn,
            pfn: e.pfn,
            gen,
            write,
        });
        self.ev_tlb_fill(cpu, mm, vpn, e.pfn, write);
        Some(e.pfn)
    }

    /// A one-byte access at `va` through `pfn` (a translation [`Machine::walk`] gave).
    pub(crate) fn touch(&mut self, pfn: Pfn, va: u64, store: Option<u8>) -> u8 {
        let off = (va % PAGE_SIZE) as usize;
        match store {
            None => self.frames.byte(pfn, off),
            Some(v) => {
                self.frames.bytes_mut(pfn, off..off + 1)[0] = v;
                v
            }
        }
    }
}

/// Bytes from `off` to the end of its page.
pub(crate) fn page_rest(off: u64) -> u64 {
    PAGE as u64 - off % PAGE as u64
}
