//! The system calls: mmap, munmap, mprotect, mremap, pwrite, pread, ftruncate,
//! madvise(MADV_PAGEOUT), fork and exit, each with Linux's argument checks in Linux's order
//! (mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/mremap.c, mm/madvise.c, mm/filemap.c,
//! mm/shmem.c, fs/read_write.c, kernel/fork.c).
//!
//! Invariants kept here: a failed call changes nothing it has not reported (as Linux:
//! mprotect applies itself to the VMAs before a hole, mremap with MREMAP_FIXED unmaps the
//! destination before it can fail); unmapping clears ptes, flushes every CPU of the mm, and
//! only then drops the pages and frees the tables. Every syscall runs with mmap_lock held as
//! Linux takes it (write for the address-space changes, read for pageout and the copies'
//! faults).

use super::fault::page_rest;
use super::frames::{Entry, Pfn, Zone, E_PRESENT, E_PROTNONE, E_WRITE};
use super::mm::{prot_flags, Vma, VM_ACCOUNT, VM_HUGETLB, VM_SHARED, VM_WRITE};
use super::{File, LockId, Machine, Mm, Owner, PageCache, TaskState};
use crate::{Bug, CpuId, Errno, FileId, MmapFlags, MremapFlags, Oom, OpResult, Prot, TaskId, PAGE_SIZE, USER_BASE};
use std::collections::BTreeMap;

/// An mremap request as it is refined by the checks (hugetlb rounds the lengths).
#[derive(Clone, Copy, Debug)]
struct Remap {
    addr: u64,
    old_len: u64,
    new_len: u64,
    to: u64,
}

/// The pages of an unmap, kept allocated between clearing their ptes and flushing the TLBs
/// (struct mmu_gather).
pub(crate) struct Gather {
    pub start: u64,
    pub end: u64,
    pub pages: Vec<Pfn>,
}

/// MAX_RW_COUNT: the most one read or write transfers.
const MAX_RW_COUNT: u64 = 0x7fff_f000;
const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

fn page_align(len: u64) -> u64 {
    len.wrapping_add(PAGE_SIZE - 1) & PAGE_MASK
}

fn err(e: Errno) -> OpResult {
    OpResult::Err(e)
}

impl Machine {
    /// Every mapped pte in `[start, end)` of `mm`: (address, slot, entry). hugetlb pmd leaves
    /// are not ptes: hugetlb.rs handles them.
    pub(crate) fn mapped_ptes(&self, mm: usize, start: u64, end: u64) -> Vec<(u64, (Pfn, usize), Entry)> {
        let mut out = Vec::new();
        let pgd = self.mms[mm].pgd;
        self.collect_ptes(pgd, 3, 0, start, end, &mut out);
        out
    }

    fn collect_ptes(
        &self,
        table: Pfn,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        out: &mut Vec<(u64, (Pfn, usize), Entry)>,
    ) {
        let span = self.entry_span(level);
        let first = if start > base {
            ((start - base) / span) as usize
        } else {
            0
        };
        for i in first..self.cfg.ptrs as usize {
            let lo = base + i as u64 * span;
            if lo >= end {
                break;
            }
            let e = self.frames.table(table)[i];
            if !e.mapped() || lo + span <= start || e.huge() {
                continue;
            }
            if level == 0 {
                out.push((lo, (table, i), e));
            } else {
                self.collect_ptes(e.pfn, level - 1, lo, start, end, out);
            }
        }
    }

    /// Unmaps `[start, end)` (page aligned) of `mm`: removes the VMAs (splitting at the
    /// ends), clears the ptes, flushes the TLBs, drops the pages, frees the tables nothing
    /// maps any more (unmap_region). Caller holds mmap_lock for writing.
    pub(crate) fn do_munmap(&mut self, mm: usize, start: u64, end: u64) {
        let removed = self.mms[mm].remove_range(start, end);
        if removed.is_empty() {
            return;
        }
        self.pt_unshare_range(mm, start, end);
        self.zap_range(mm, start, end);
        self.free_pgtables(mm, start, end);
        self.release_unused_shmem();
    }

    /// zap_page_range: clears every pte of `[start, end)`, flushes, then drops the pages.
    pub(crate) fn zap_range(&mut self, mm: usize, start: u64, end: u64) {
        if let Some(pages) = self.zap_clear(mm, start, end) {
            self.flush_tlb_range(mm, start, end);
            for p in pages {
                self.put_frame(p);
            }
        }
    }

    /// The first half of a zap (zap_pte_range): clears every pte of `[start, end)` and
    /// unaccounts its page (map count, rss) at once; the pages' references are returned,
    /// for the caller to drop after the TLB flush (the mmu_gather). `None`: nothing was
    /// mapped, so nothing needs a flush.
    fn zap_clear(&mut self, mm: usize, start: u64, end: u64) -> Option<Vec<Pfn>> {
        let mut pages = Vec::new();
        // __unmap_hugepage_range for the hugetlb leaves (unsharing shared pmd tables).
        let huge = self.huge_zap_clear(mm, start, end, true, &mut pages);
        let ptes = self.mapped_ptes(mm, start, end);
        if ptes.is_empty() && !huge {
            return None;
        }
        for (va, slot, e) in ptes {
            self.set_pte(slot, Entry::NONE);
            if self.ptshare.contains_key(&slot.0) {
                // Only the reverse map zaps a shared table (the paths of one mm unshare
                // first): every sharer's TLB goes now, before the caller's flush and puts.
                self.flush_links(mm, va, slot.0);
            }
            if !e.special() {
                self.get_frame(e.pfn);
                self.unmap_accounting_at(mm, va, slot.0, e);
                pages.push(e.pfn);
            }
        }
        Some(pages)
    }

    /// The highest free range of `len` bytes below the task size, at or above USER_BASE,
    /// aligned to `align` (TRACE.md's placement rule).
    fn top_down(&self, mm: usize, len: u64, align: u64) -> Option<u64> {
        let vmas = &self.mms[mm].vmas;
        let mut gap_end = self.cfg.task_size();
        for i in (0..=vmas.len()).rev() {
            let gap_start = if i == 0 { 0 } else { vmas[i - 1].end }.max(USER_BASE);
            if gap_end >= len {
                let a = (gap_end - len) & !(align - 1);
                if a >= gap_start && gap_end >= gap_start {
                    return Some(a);
                }
            }
            if i > 0 {
                gap_end = vmas[i - 1].start;
            }
        }
        None
    }

    /// get_unmapped_area for a non-fixed request: the hint if it is free and inside user
    /// space, else the highest free gap.
    fn place(&self, mm: usize, hint: u64, len: u64, align: u64) -> Option<u64> {
        let task_size = self.cfg.task_size();
        if hint != 0 {
            let a = hint.checked_add(align - 1).map(|h| h & !(align - 1));
            if let Some(a) = a {
                if a >= USER_BASE && a <= task_size && len <= task_size - a && !self.mms[mm].overlaps(a, a + len) {
                    return Some(a);
                }
            }
        }
        self.top_down(mm, len, align)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sys_mmap(
        &mut self,
        mm: usize,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MmapFlags,
        file: Option<FileId>,
        off: u64,
    ) -> (OpResult, Option<(u64, u64)>) {
        // arch sys_mmap
        if off & !PAGE_MASK != 0 {
            return (err(Errno::EINVAL), None);
        }
        let huge = file.is_some_and(|f| self.files[f as usize].huge);
        let hps = self.cfg.huge_page_size();
        let mut len = len;
        if huge {
            // ksys_mmap_pgoff: len = ALIGN(len, huge_page_size)
            len = len.wrapping_add(hps - 1) & !(hps - 1);
        }
        // do_mmap
        if len == 0 {
            return (err(Errno::EINVAL), None);
        }
        let fixed = flags.fixed || flags.noreplace;
        let mut addr = addr;
        if !fixed {
            addr &= PAGE_MASK;
            if addr != 0 && addr < USER_BASE {
                addr = USER_BASE;
            }
        }
        let len = page_align(len);
        if len == 0 {
            return (err(Errno::ENOMEM), None);
        }
        let pgoff = off >> 12;
        if pgoff.checked_add(len >> 12).is_none() {
            return (err(Errno::EOVERFLOW), None);
        }
        // __get_unmapped_area
        let task_size = self.cfg.task_size();
        if len > task_size {
            return (err(Errno::ENOMEM), None);
        }
        if fixed {
            if huge && addr & (hps - 1) != 0 {
                return (err(Errno::EINVAL), None);
            }
        } else {
            match self.place(mm, addr, len, if huge { hps } else { PAGE_SIZE }) {
                Some(a) => addr = a,
                None => return (err(Errno::ENOMEM), None),
            }
        }
        if addr > task_size - len {
            return (err(Errno::ENOMEM), None);
        }
        if addr & !PAGE_MASK != 0 {
            return (err(Errno::EINVAL), None);
        }
        if addr < USER_BASE {
            // security_mmap_addr: below mmap_min_addr without CAP_SYS_RAWIO.
            return (err(Errno::EPERM), None);
        }
        if flags.noreplace && self.mms[mm].overlaps(addr, addr + len) {
            return (err(Errno::EEXIST), None);
        }
        // file_mmap_ok: the mapping must end below MAX_LFS_FILESIZE.
        const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;
        if file.is_some() && (len > MAX_LFS_FILESIZE || pgoff > (MAX_LFS_FILESIZE - len) >> 12) {
            return (err(Errno::EOVERFLOW), None);
        }
        // mmap_region
        let mut vflags = prot_flags(prot);
        if flags.shared {
            vflags |= VM_SHARED;
        }
        if huge {
            vflags |= VM_HUGETLB;
        }
        if !huge && vflags & (VM_SHARED | VM_WRITE) == VM_WRITE {
            vflags |= VM_ACCOUNT;
        }
        // MAP_FIXED replaces what was there: a hugetlb VMA can only be split on huge pages.
        if let Err(e) = self.split_for_unmap(mm, addr, addr + len) {
            return (err(e), None);
        }
        self.do_munmap(mm, addr, addr + len);
        if huge && pgoff & (self.cfg.ptrs as u64 - 1) != 0 {
            // hugetlbfs_file_mmap rejects an unaligned offset after the old mappings went:
            // the range stays a gap.
            return (err(Errno::EINVAL), None);
        }
        if huge && vflags & VM_WRITE != 0 {
            // hugetlbfs_file_mmap: a writable mapping grows the file to cover it.
            let need = off + len;
            let f = &mut self.files[file.expect("huge implies a file") as usize];
            f.size = f.size.max(need);
        }
        let (vfile, vpgoff) = match file {
            Some(f) => (Some(f), pgoff),
            None if flags.shared => {
                // shmem_zero_setup: a new shmem object the size of the mapping.
                self.files.push(File {
                    size: len,
                    huge: false,
                    shmem: true,
                    pattern_id: 0,
                    pattern_end: 0,
                    cache: PageCache::default(),
                    disk: BTreeMap::new(),
                    released: false,
                });
                (Some(self.files.len() as u32 - 1), 0)
            }
            None => (None, addr >> 12),
        };
        let vma = Vma {
            start: addr,
            end: addr + len,
            flags: vflags,
            file: vfile,
            pgoff: vpgoff,
            anon_vma: None,
            forked: false,
        };
        if vfile.is_some_and(|f| self.files[f as usize].shmem) {
            // A new shmem object never merges (no neighbour maps the same object).
            let i = self.mms[mm].vmas.partition_point(|v| v.end <= addr);
            self.mms[mm].vmas.insert(i, vma);
        } else {
            self.mms[mm].insert_merge(vma);
        }
        self.oom = Oom::No;
        let populate = flags.populate.then_some((addr, addr + len));
        (OpResult::Addr(addr), populate)
    }

    /// How MAP_POPULATE faults the page at `va`: `Some(write)` (a write fault for a private
    /// writable mapping, to break COW), `None` where populate stops (no VMA, or one that
    /// cannot be read).
    pub(crate) fn populate_access(&self, mm: usize, va: u64) -> Option<bool> {
        let v = self.mms[mm].vmas[self.mms[mm].find(va)?];
        v.readable().then_some(v.flags & (VM_WRITE | VM_SHARED) == VM_WRITE)
    }

    /// Whether the pte of `va` is present and grants the access (get_user_pages' software
    /// walk: no TLB is filled).
    pub(crate) fn pte_grants(&self, mm: usize, va: u64, write: bool) -> bool {
        let e = self.pte(mm, va);
        e.present() && (!write || e.writable())
    }

    /// munmap(2) up to unmap_region's preemption point: the checks, the splits, the VMAs
    /// removed, the ptes cleared and their pages unaccounted. The pages stay allocated in the
    /// returned gather until [`Machine::munmap_finish`] has flushed the TLBs. `None`: nothing
    /// was mapped. Caller holds mmap_lock for writing.
    pub(crate) fn munmap_begin(&mut self, mm: usize, addr: u64, len: u64) -> Result<Option<Gather>, Errno> {
        let task_size = self.cfg.task_size();
        if addr & !PAGE_MASK != 0 || addr > task_size || len > task_size - addr {
            return Err(Errno::EINVAL);
        }
        let end = addr + page_align(len);
        if end == addr {
            return Err(Errno::EINVAL);
        }
        self.split_for_unmap(mm, addr, end)?;
        let removed = self.mms[mm].remove_range(addr, end);
        if removed.is_empty() {
            return Ok(None);
        }
        // tlb_gather_mmu: the flush is pending from now; the VMAs stay in i_mmap until
        // free_pgtables.
        let m = &mut self.mms[mm];
        m.tlb_flush_pending += 1;
        m.unlinking.extend(removed.iter().copied());
        // zap_pxd_range's pt_check_unshare: a shared pte page over the range is unlinked,
        // not zapped (its ptes stay with the other sharers).
        self.pt_unshare_range(mm, addr, end);
        let pages = self.zap_clear(mm, addr, end).unwrap_or_default();
        Ok(Some(Gather {
            start: addr,
            end,
            pages,
        }))
    }

    /// The rest of munmap: flush every CPU the mm ran on, free the gathered pages, free the
    /// tables nothing maps any more. Caller holds mmap_lock for writing.
    pub(crate) fn munmap_finish(&mut self, mm: usize, g: Gather) {
        self.flush_tlb_range(mm, g.start, g.end);
        let m = &mut self.mms[mm];
        m.tlb_flush_pending -= 1;
        m.unlinking.retain(|v| v.end <= g.start || v.start >= g.end);
        for p in g.pages {
            self.put_frame(p);
        }
        self.free_pgtables(mm, g.start, g.end);
        self.release_unused_shmem();
    }

    /// do_vmi_munmap: munmap's checks, then the unmap, in one go (mremap's unmaps).
    fn do_vmi_munmap(&mut self, mm: usize, addr: u64, len: u64) -> Result<(), Errno> {
        if let Some(g) = self.munmap_begin(mm, addr, len)? {
            self.munmap_finish(mm, g);
        }
        Ok(())
    }

    /// The splits at both ends of a range about to be unmapped or changed (the start first;
    /// it stays if the end then fails), if anything is mapped there.
    fn split_for_unmap(&mut self, mm: usize, start: u64, end: u64) -> Result<(), Errno> {
        if !self.mms[mm].overlaps(start, end) {
            return Ok(());
        }
        self.split_vma(mm, start)?;
        self.split_vma(mm, end)
    }

    /// __split_vma at `addr` with hugetlb's rules (hugetlb_vm_op_split: only on a huge page
    /// boundary, and the pmd tables shared around `addr` are unshared first).
    fn split_vma(&mut self, mm: usize, addr: u64) -> Result<(), Errno> {
        let hps = self.cfg.huge_page_size();
        if let Some(i) = self.mms[mm].find(addr) {
            let v = self.mms[mm].vmas[i];
            if v.start < addr && v.hugetlb() && addr & (hps - 1) == 0 {
                self.hugetlb_split_unshare(mm, v, addr);
            }
        }
        self.mms[mm].split_checked(addr, hps)
    }

    pub(crate) fn sys_mprotect(&mut self, mm: usize, start: u64, len: u64, prot: Prot) -> OpResult {
        if start & !PAGE_MASK != 0 {
            return err(Errno::EINVAL);
        }
        if len == 0 {
            return OpResult::Zero;
        }
        let len = page_align(len);
        let end = start.wrapping_add(len);
        if end <= start {
            return err(Errno::ENOMEM);
        }
        let Some(first) = self.mms[mm].find_after(start) else {
            return err(Errno::ENOMEM);
        };
        if self.mms[mm].vmas[first].start > start {
            return err(Errno::ENOMEM);
        }
        let newbits = prot_flags(prot);
        let mut nstart = start;
        loop {
            let Some(i) = self.mms[mm].find(nstart) else {
                return err(Errno::ENOMEM);
            };
            let v = self.mms[mm].vmas[i];
            let tmp = v.end.min(end);
            if let Err(e) = self.mprotect_fixup(mm, i, nstart, tmp, newbits) {
                return err(e);
            }
            // Continue after the VMA now holding the range (a merge may have grown it).
            let j = self.mms[mm].find(tmp - 1).expect("the range just changed is mapped");
            nstart = self.mms[mm].vmas[j].end;
            if nstart >= end {
                return OpResult::Zero;
            }
            // The next VMA must start exactly here.
            match self.mms[mm].find_after(nstart) {
                Some(j) if self.mms[mm].vmas[j].start == nstart => {}
                _ => return err(Errno::ENOMEM),
            }
        }
    }

    /// mprotect_fixup: gives `[start, end)` of VMA `i` the protection `bits`, splitting and
    /// merging (vma_modify_flags), then changes the ptes and flushes.
    fn mprotect_fixup(&mut self, mm: usize, i: usize, start: u64, end: u64, bits: u32) -> Result<(), Errno> {
        let v = self.mms[mm].vmas[i];
        let mut newflags = (v.flags & !(prot_flags(Prot::from_bits(7)))) | bits;
        if newflags == v.flags {
            return Ok(());
        }
        self.split_vma(mm, start)?;
        self.split_vma(mm, end)?;
        if newflags & VM_WRITE != 0 {
            if v.flags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED) == 0 {
                newflags |= VM_ACCOUNT;
            }
        } else if v.flags & VM_ACCOUNT != 0 && v.file.is_none() && v.anon_vma.is_none() {
            // An anonymous VMA never faulted stops being accounted when it loses write.
            newflags &= !VM_ACCOUNT;
        }
        // pt_unshare_lock_range above vma_merge: the ptes are about to disagree with the
        // other sharers' VMAs.
        self.pt_unshare_range(mm, start, end);
        let m = &mut self.mms[mm];
        let j = m.find(start).expect("split piece");
        m.vmas[j].flags = newflags;
        m.merge_around(j);
        // change_protection: rewrite the ptes of the range; write permission is dropped and
        // comes back through a write fault (COW reuse or write-notify), PROT_NONE ptes stay
        // mapped but unwalkable.
        let none = newflags & 7 == 0;
        let ptes = self.mapped_ptes(mm, start, end);
        // hugetlb_change_protection for the hugetlb leaves.
        let mut changed = v.hugetlb() && self.hugetlb_change_protection(mm, start, end, none);
        for (_, slot, e) in ptes {
            let mut n = e;
            n.flags &= !(E_WRITE | E_PRESENT | E_PROTNONE);
            n.flags |= if none { E_PROTNONE } else { E_PRESENT };
            if n != e {
                self.set_pte(slot, n);
                changed = true;
            }
        }
        if changed {
            self.flush_tlb_range(mm, start, end);
        }
        Ok(())
    }

    /// mremap(2) as Linux 6.18's do_mremap: check_mremap_params, then a pure move of a range
    /// (`fixed` with equal lengths, possibly over several VMAs: remap_move), or the checks on
    /// the VMA at `addr` (check_prep_vma) followed by mremap_to or mremap_at.
    pub(crate) fn sys_mremap(
        &mut self,
        mm: usize,
        addr: u64,
        old: u64,
        new: u64,
        flags: MremapFlags,
        to: u64,
    ) -> OpResult {
        let (old_len, new_len) = (page_align(old), page_align(new));
        let task_size = self.cfg.task_size();
        if addr & !PAGE_MASK != 0 || new_len == 0 || new_len > task_size {
            return err(Errno::EINVAL);
        }
        if flags.fixed {
            if to > task_size - new_len || to & !PAGE_MASK != 0 || !flags.maymove {
                return err(Errno::EINVAL);
            }
            // vrm_overlaps, with C's wrapping arithmetic.
            if addr.wrapping_add(old_len) > to && to + new_len > addr {
                return err(Errno::EINVAL);
            }
            if old_len == new_len {
                return self.remap_move(mm, addr, old_len, to);
            }
        }
        let Some(vi) = self.mms[mm].find(addr) else {
            return err(Errno::EFAULT);
        };
        let mut r = Remap {
            addr,
            old_len,
            new_len,
            to,
        };
        if let Err(e) = self.check_prep_vma(mm, vi, &mut r, flags.fixed) {
            return err(e);
        }
        let res = if flags.fixed {
            self.mremap_to(mm, r, 0)
        } else if r.new_len == r.old_len {
            Ok(r.addr)
        } else if r.new_len < r.old_len {
            self.do_vmi_munmap(mm, r.addr + r.new_len, r.old_len - r.new_len)
                .map(|()| r.addr)
        } else {
            self.expand_vma(mm, r, flags.maymove)
        };
        match res {
            Ok(a) => OpResult::Addr(a),
            Err(e) => err(e),
        }
    }

    /// check_prep_vma: hugetlb alignment, then (for a remap that maps anything new) the old
    /// range must lie in the VMA and a private mapping cannot be duplicated with old_len 0.
    fn check_prep_vma(&self, mm: usize, vi: usize, r: &mut Remap, fixed: bool) -> Result<(), Errno> {
        let v = self.mms[mm].vmas[vi];
        if v.hugetlb() {
            let hps = self.cfg.huge_page_size();
            r.old_len = r.old_len.wrapping_add(hps - 1) & !(hps - 1);
            r.new_len = r.new_len.wrapping_add(hps - 1) & !(hps - 1);
            if r.addr & (hps - 1) != 0 || r.to & (hps - 1) != 0 || r.new_len > r.old_len {
                return Err(Errno::EINVAL);
            }
        }
        if !(r.new_len > r.old_len || fixed) {
            return Ok(());
        }
        if r.old_len == 0 && !v.shared() {
            return Err(Errno::EINVAL);
        }
        // A shrink may cross VMA boundaries: only the part that stays must be in this VMA.
        if r.old_len.min(r.new_len) > v.end - r.addr {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// remap_move: every VMA piece of `[addr, addr+len)` moves to the same offset from `to`,
    /// gaps kept; the range must start inside a VMA.
    fn remap_move(&mut self, mm: usize, addr: u64, len: u64, to: u64) -> OpResult {
        // C's wrapping sum: a range past the top of the address space has no VMAs (EFAULT).
        let end = addr.wrapping_add(len);
        let (mut res, mut last_end, mut target, mut pos) = (None, 0, to, addr);
        while let Some(vi) = self.mms[mm]
            .find_after(pos)
            .filter(|&i| self.mms[mm].vmas[i].start < end)
        {
            let v = self.mms[mm].vmas[vi];
            if res.is_none() && addr < v.start {
                return err(Errno::EFAULT);
            }
            let a = v.start.max(addr);
            let l = v.end.min(end) - a;
            let offset = if res.is_some() { v.start - last_end } else { 0 };
            last_end = v.end;
            let mut r = Remap {
                addr: a,
                old_len: l,
                new_len: l,
                to: target + offset,
            };
            if let Err(e) = self.check_prep_vma(mm, vi, &mut r, true) {
                return err(e);
            }
            let moved = match self.mremap_to(mm, r, a - addr) {
                Ok(m) => m,
                Err(e) => return err(e),
            };
            res.get_or_insert(moved);
            target = moved + r.new_len;
            pos = a + l;
        }
        match res {
            Some(a) => OpResult::Addr(a),
            None => err(Errno::EFAULT),
        }
    }

    /// mremap_to: unmap the target, shrink the source, then move.
    fn mremap_to(&mut self, mm: usize, mut r: Remap, progress: u64) -> Result<u64, Errno> {
        self.do_vmi_munmap(mm, r.to, r.new_len)?;
        if self.mms[mm].find(r.addr).is_none() {
            return Err(Errno::EFAULT);
        }
        if r.new_len < r.old_len {
            self.do_vmi_munmap(mm, r.addr + r.new_len, r.old_len - r.new_len)?;
            if self.mms[mm].find(r.addr).is_none() {
                return Err(Errno::EFAULT);
            }
            r.old_len = r.new_len;
        }
        self.move_vma(mm, r.addr, r.old_len, r.new_len, r.to, progress)
    }

    /// expand_vma: grow in place when the range ends the VMA and the space after it is free
    /// (then merge with the next VMA where allowed), else move if allowed.
    fn expand_vma(&mut self, mm: usize, r: Remap, maymove: bool) -> Result<u64, Errno> {
        let task_size = self.cfg.task_size();
        let vi = self.mms[mm].find(r.addr).expect("checked by the caller");
        let v = self.mms[mm].vmas[vi];
        let delta = r.new_len - r.old_len;
        let grow = v
            .end
            .checked_add(delta)
            .filter(|&e| e <= task_size && !self.mms[mm].overlaps(v.end, e));
        if v.end - r.addr == r.old_len {
            if let Some(ne) = grow {
                let m = &mut self.mms[mm];
                m.vmas[vi].end = ne;
                m.merge_around(vi);
                return Ok(r.addr);
            }
        }
        if !maymove {
            return Err(Errno::ENOMEM);
        }
        let align = if v.hugetlb() {
            self.cfg.huge_page_size()
        } else {
            PAGE_SIZE
        };
        let dest = self.top_down(mm, r.new_len, align).ok_or(Errno::ENOMEM)?;
        self.move_vma(mm, r.addr, r.old_len, r.new_len, dest, 0)
    }

    /// move_vma: a copy of the VMA part `[addr, addr+old_len)` grown to `new_len` at `dest`
    /// (merged with its new neighbours where allowed), the ptes moved there, the old range
    /// unmapped. If page tables cannot be had at the destination, nothing moves and the call
    /// fails with ENOMEM; the flat spec is told how far the whole remap had got (`progress`).
    fn move_vma(
        &mut self,
        mm: usize,
        addr: u64,
        old_len: u64,
        new_len: u64,
        dest: u64,
        progress: u64,
    ) -> Result<u64, Errno> {
        let vi = self.mms[mm].find(addr).expect("checked by the caller");
        let v = self.mms[mm].vmas[vi];
        let mut nv = Vma {
            start: dest,
            end: dest + new_len,
            pgoff: v.index_of(addr),
            ..v
        };
        if v.file.is_none() && v.anon_vma.is_none() {
            // copy_vma: an anonymous VMA never faulted takes the pgoff of its new place.
            nv.pgoff = dest >> 12;
        }
        // The old range is held unshared (its ptes move for this mm only); so is the new
        // one: its tables are this mm's own (`ptshare-mremap-newrange` lets the allocation
        // share another mm's table there, the new VMA being in i_mmap already).
        self.pt_unshare_range(mm, addr, addr + old_len);
        let share_new = self.cfg.ptshare && self.cfg.bugs.contains(Bug::PtshareMremapNewrange);
        if v.hugetlb() {
            // move_hugetlb_page_tables.
            if self.move_hugetlb_tables(mm, addr, old_len.min(new_len), dest).is_err() {
                self.free_pgtables(mm, dest, dest + new_len);
                self.oom = Oom::After(progress);
                return Err(Errno::ENOMEM);
            }
        }
        // Allocate the destination tables for every source pte first (move_page_tables'
        // undo leaves the source as it was).
        let moving = self.mapped_ptes(mm, addr, addr + old_len.min(new_len));
        for &(va, _, _) in &moving {
            let to = dest + (va - addr);
            if share_new && self.pmd_entry(mm, to).is_none_or(|e| !e.mapped()) {
                self.pt_share_vma(mm, &nv, to);
            }
            if self.pte_alloc(mm, to).is_err() {
                self.free_pgtables(mm, dest, dest + new_len);
                self.oom = Oom::After(progress);
                return Err(Errno::ENOMEM);
            }
        }
        // The allocations may have reclaimed (unmapped) source pages: read the ptes again,
        // as move_ptes does under the page table lock. Only fewer can be left, and reclaim
        // never frees tables, so every destination table is there.
        let moving = self.mapped_ptes(mm, addr, addr + old_len.min(new_len));
        for &(va, slot, e) in &moving {
            self.set_pte(slot, Entry::NONE);
            let ns = self.pte_slot(mm, dest + (va - addr)).expect("allocated above");
            self.set_pte(ns, e);
        }
        if !moving.is_empty() {
            self.flush_tlb_range(mm, addr, addr + old_len);
        }
        // The VMAs: the old range goes (its ptes are gone already), the new one comes.
        if old_len > 0 {
            self.mms[mm].remove_range(addr, addr + old_len);
        }
        self.mms[mm].insert_merge(nv);
        self.free_pgtables(mm, addr, addr + old_len);
        self.release_unused_shmem();
        Ok(dest)
    }

    /// Checks common to pwrite and pread (ksys_pread64/pwrite64, vfs_read/write,
    /// rw_verify_area); the count clamped to MAX_RW_COUNT.
    pub(crate) fn rw_checks(&self, off: u64, len: u64, buf: u64) -> Result<u64, Errno> {
        if off > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        match buf.checked_add(len) {
            Some(e) if e <= self.cfg.task_size() => {}
            _ => return Err(Errno::EFAULT),
        }
        if len > i64::MAX as u64 || off.checked_add(len).is_none_or(|e| e > i64::MAX as u64) {
            return Err(Errno::EINVAL);
        }
        Ok(len.min(MAX_RW_COUNT))
    }

    /// pwrite(2)'s checks before i_rwsem (vfs_write, rw_verify_area): the count to write.
    pub(crate) fn write_checks(&self, f: usize, off: u64, len: u64, buf: u64) -> Result<u64, Errno> {
        if off <= i64::MAX as u64 && self.files[f].huge {
            return Err(Errno::EINVAL); // hugetlbfs can't write (vfs_write: no FMODE_CAN_WRITE)
        }
        self.rw_checks(off, len, buf)
    }

    /// The end of a copy stopped by a user-buffer fault after `done` bytes: the count, or
    /// EFAULT when nothing was copied; a fault that found no memory is told to the spec.
    pub(crate) fn copy_fault(&mut self, done: u64) -> OpResult {
        self.oom = if self.oom != Oom::No { Oom::Fault(done) } else { Oom::No };
        if done == 0 {
            err(Errno::EFAULT)
        } else {
            OpResult::Count(done)
        }
    }

    /// copy_from_user with page faults disabled into `page` at `off`: stops at the first
    /// source byte whose page is not present and readable. Forward byte order, so a source
    /// that maps the destination page itself behaves as the kernel's copy does.
    pub(crate) fn copy_from_user_atomic(
        &mut self,
        mm: usize,
        cpu: CpuId,
        page: Pfn,
        off: u64,
        src: u64,
        bytes: u64,
    ) -> u64 {
        let mut done = 0;
        while done < bytes {
            let s = src + done;
            let Some(spfn) = self.walk(mm, cpu, s, false) else {
                break;
            };
            let n = page_rest(s).min(bytes - done);
            let (so, d) = ((s % PAGE_SIZE) as usize, (off + done) as usize);
            self.copy_bytes(spfn, so, page, d, n as usize);
            done += n;
        }
        done
    }

    /// Copies `n` bytes forward, byte by byte in effect (the frames may be the same).
    pub(crate) fn copy_bytes(&mut self, from: Pfn, fo: usize, to: Pfn, to_off: usize, n: usize) {
        self.frames.copy_bytes(from, fo, to, to_off, n);
    }

    /// ftruncate(2)'s checks before i_rwsem.
    pub(crate) fn truncate_checks(&self, f: usize, size: u64) -> Result<(), Errno> {
        if size > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        if self.files[f].huge && size & (self.cfg.huge_page_size() - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// The atomic part of a truncate to `size` (not past the current size): the new size,
    /// unmap_mapping_range of the pages past it (COW copies included), the tail of the new
    /// last page zeroed (in the cache and on disk), the disk cut. Returns the cache pages past
    /// the end, for the caller to drop under their locks. Caller holds i_rwsem, the partial
    /// page's lock (if cached) and i_mmap_rwsem.
    pub(crate) fn truncate_commit(&mut self, f: usize, size: u64) -> Vec<(u64, Pfn)> {
        let old = self.files[f].size;
        assert!(size <= old, "truncate_commit grows file {f}");
        self.files[f].size = size;
        // shmem_setattr: a truncate to the same size still zeroes the tail of the last page.
        let holebegin = size.div_ceil(PAGE_SIZE);
        if old.div_ceil(PAGE_SIZE) > holebegin {
            self.unmap_mapping_range(f, holebegin);
        }
        let tail = (size % PAGE_SIZE) as usize;
        let last = size / PAGE_SIZE;
        if tail != 0 {
            if let Some(pfn) = self.files[f].cache.get(last) {
                // zero_user_segment: the page kmap_atomic()ed for the zeroing.
                let d = self.kmap_atomic_here(pfn);
                if self.frames.bytes(pfn).is_some() {
                    self.frames.bytes_mut(pfn, tail..super::frames::PAGE).fill(0);
                }
                self.kunmap_atomic_here(d);
            }
            if let Some(Some(p)) = self.files[f].disk.get_mut(&last) {
                p[tail..].fill(0);
            }
        }
        let file = &mut self.files[f];
        file.disk.retain(|&i, _| i < holebegin);
        file.pattern_end = file.pattern_end.min(size);
        file.cache.range(holebegin..).map(|(&i, &p)| (i, p)).collect()
    }

    /// truncate_inode_pages_range for one page past the end: dropped from the cache if it
    /// is still there (reclaim may have taken it meanwhile). Caller holds its lock and a pin.
    pub(crate) fn truncate_drop(&mut self, f: usize, index: u64, pfn: Pfn) {
        assert!(
            index >= self.files[f].size_pages(),
            "truncating page {index} inside the file"
        );
        if self.files[f].cache.get(index) == Some(pfn) {
            // unmap_mapping_range reached every mapping, unless a bug hid one from the
            // reverse map (`ptshare-count-race`'s orphaned pte page): the page then leaves
            // the cache still mapped, and the census reports the mapping.
            assert!(
                self.frames.frame(pfn).maps == 0 || !self.cfg.bugs.is_empty(),
                "truncated page {pfn} still mapped"
            );
            self.files[f].cache.remove(index);
            self.put_frame(pfn);
        }
    }

    /// The end of a truncate to `size`: nothing past it is cached or on disk (faults past
    /// EOF give SIGBUS and writeback skips such pages, so nothing came back meanwhile).
    pub(crate) fn truncate_done(&mut self, f: usize, size: u64) {
        let holebegin = size.div_ceil(PAGE_SIZE);
        let file = &self.files[f];
        assert!(
            file.cache.range(holebegin..).next().is_none() && file.disk.range(holebegin..).next().is_none(),
            "file {f} has pages past its end after a truncate to {size}"
        );
    }

    /// unmap_mapping_range(mapping, from page `index` to the end, even_cows): zaps every pte
    /// of every VMA of the file (private COW copies included) that maps those pages.
    /// Caller holds i_mmap_rwsem (taken here in Linux).
    fn unmap_mapping_range(&mut self, f: usize, index: u64) {
        for mm in 0..self.mms.len() {
            if !self.mms[mm].live {
                continue;
            }
            let maps = |v: &&Vma| v.file == Some(f as u32) && v.pgoff + v.pages() > index;
            let ranges: Vec<(u64, u64)> = self.mms[mm]
                .vmas
                .iter()
                .filter(maps)
                .map(|v| (v.start + index.saturating_sub(v.pgoff) * PAGE_SIZE, v.end))
                .collect();
            for (s, e) in ranges {
                if self.files[f].huge {
                    self.hugetlb_zap_vma(mm, s, e); // hugetlb_vmdelete_list
                } else {
                    self.zap_range(mm, s, e);
                }
            }
            // tlb_finish_mmu's mm_tlb_flush_nested: a VMA of the file that another unmap
            // has cleared but not flushed yet (its ptes are gone, so the zap above found
            // nothing there) still has TLB entries: flush the whole mm.
            let m = &self.mms[mm];
            if m.tlb_flush_pending > 0 && m.unlinking.iter().any(|v| maps(&v)) {
                self.flush_tlb_mm(mm);
            }
        }
    }

    /// madvise(MADV_PAGEOUT): reclaims the file pages in the range that only this mapping
    /// maps (written back first if dirty); anonymous pages stay (no swap).
    pub(crate) fn sys_pageout(&mut self, mm: usize, start: u64, len: u64) -> OpResult {
        if start & !PAGE_MASK != 0 {
            return err(Errno::EINVAL);
        }
        let plen = page_align(len);
        if len != 0 && plen == 0 {
            return err(Errno::EINVAL);
        }
        let Some(end) = start.checked_add(plen) else {
            return err(Errno::EINVAL);
        };
        if end == start {
            return OpResult::Zero;
        }
        let mut unmapped = false;
        let mut s = start;
        loop {
            let Some(i) = self.mms[mm].find_after(s) else {
                return err(Errno::ENOMEM);
            };
            let v = self.mms[mm].vmas[i];
            if s < v.start {
                unmapped = true;
                s = v.start;
                if s >= end {
                    break;
                }
            }
            let tmp = v.end.min(end);
            if v.hugetlb() {
                return err(Errno::EINVAL);
            }
            self.pageout_range(mm, s, tmp);
            s = tmp;
            if s >= end {
                break;
            }
        }
        if unmapped {
            err(Errno::ENOMEM)
        } else {
            OpResult::Zero
        }
    }

    fn pageout_range(&mut self, mm: usize, start: u64, end: u64) {
        for (_, _, e) in self.mapped_ptes(mm, start, end) {
            if e.special() || !e.present() {
                continue;
            }
            let fr = &self.frames.frame(e.pfn);
            let Owner::Cache { file, index } = fr.owner else {
                continue;
            };
            let f = file as usize;
            // Only pages this mapping maps alone and nobody pins or has locked
            // (folio_trylock).
            if self.files[f].shmem || fr.maps != 1 || fr.refs != 2 || self.locks.busy(LockId::Page(e.pfn)) {
                continue;
            }
            self.get_frame(e.pfn);
            self.try_to_unmap(f, index, e.pfn);
            if self.frames.frame(e.pfn).dirty {
                self.writeback(f, index, e.pfn);
            }
            self.files[f].cache.remove(index);
            self.put_frame(e.pfn);
            self.put_frame(e.pfn);
        }
    }

    /// fork(2): dup_mm. The child gets copies of the VMAs; the ptes of VMAs with an anon_vma
    /// are copied (anonymous pages write-protected in both, for COW), the others are left for
    /// the child to fault in. The parent's TLBs are flushed for the write-protection.
    pub(crate) fn sys_fork(&mut self, mm: usize, child: TaskId, cpu: CpuId) -> OpResult {
        assert_eq!(
            self.tasks[child as usize].state,
            TaskState::Unborn,
            "fork of task {child} twice"
        );
        let Ok(pgd) = self.alloc_frame(Zone::Low, Owner::Table { level: 3 }) else {
            self.tasks[child as usize].state = TaskState::Gone;
            return err(Errno::ENOMEM);
        };
        let cm = self.mms.len();
        let mut new = Mm::new(pgd);
        new.vmas = self.mms[mm].vmas.clone();
        for v in &mut new.vmas {
            if v.anon_vma.is_some() {
                v.anon_vma = Some(self.new_anon_vma());
                v.forked = true;
            }
        }
        self.mms.push(new);
        let vmas = self.mms[mm].vmas.clone();
        let mut wrprotected = false;
        for v in vmas.iter().filter(|v| v.anon_vma.is_some()) {
            // copy_page_range write-protects the parent's ptes: they must be its own.
            self.pt_unshare_range(mm, v.start, v.end);
        }
        for v in vmas.iter().filter(|v| v.anon_vma.is_some()) {
            // copy_hugetlb_page_range for a hugetlb VMA's leaves.
            if v.hugetlb() && self.copy_hugetlb_range(mm, cm, v, &mut wrprotected).is_err() {
                return self.fork_failed(mm, cm, child, wrprotected);
            }
            for (va, slot, _) in self.mapped_ptes(mm, v.start, v.end) {
                let Ok(cs) = self.pte_alloc(cm, va) else {
                    return self.fork_failed(mm, cm, child, wrprotected);
                };
                // The allocation may have reclaimed (unmapped) the page: read the pte again.
                let e = self.frames.table(slot.0)[slot.1];
                if !e.mapped() {
                    continue;
                }
                let mut ne = e;
                if !e.special() && self.frames.frame(e.pfn).owner == Owner::Anon && e.writable() {
                    let mut pe = e;
                    pe.flags &= !E_WRITE;
                    self.set_pte(slot, pe);
                    ne.flags &= !E_WRITE;
                    wrprotected = true;
                }
                self.set_pte(cs, ne);
                if !e.special() {
                    self.get_frame(e.pfn);
                    self.frames.frame_mut(e.pfn).maps += 1;
                    let kind = self.rss_kind(e.pfn);
                    self.mms[cm].rss[kind] += 1;
                }
            }
        }
        if wrprotected {
            self.flush_tlb_mm(mm);
        }
        self.oom = Oom::No;
        let task = &mut self.tasks[child as usize];
        task.mm = cm;
        task.cpu = cpu;
        task.state = TaskState::Alive;
        OpResult::Done
    }

    /// A fork that ran out of memory copying the page tables: the child's mm goes, the
    /// parent's write-protected ptes are flushed.
    fn fork_failed(&mut self, mm: usize, cm: usize, child: TaskId, wrprotected: bool) -> OpResult {
        self.oom = Oom::After(0);
        self.teardown(cm);
        self.tasks[child as usize].state = TaskState::Gone;
        if wrprotected {
            self.flush_tlb_mm(mm);
        }
        err(Errno::ENOMEM)
    }

    /// exit_mm: the task leaves its mm; returns whether it was the mm's last user, whose
    /// caller then tears the mm down ([`Machine::teardown`]) before the task is gone
    /// ([`Machine::exit_done`]). Caller holds mmap_lock for reading.
    pub(crate) fn exit_mm(&mut self, task: TaskId) -> bool {
        let mm = self.tasks[task as usize].mm;
        assert!(
            self.tasks[task as usize].state == TaskState::Alive,
            "task {task} exits twice"
        );
        self.mms[mm].users -= 1;
        self.mms[mm].users == 0
    }

    /// The end of exit(2): the task is gone. Caller holds no lock.
    pub(crate) fn exit_done(&mut self, task: TaskId) {
        self.tasks[task as usize].state = TaskState::Gone;
    }

    /// exit_mmap: unmaps everything, flushes the mm's TLB everywhere, frees every table.
    /// Caller holds mmap_lock for writing; no task uses the mm any more.
    pub(crate) fn teardown(&mut self, mm: usize) {
        let task_size = self.cfg.task_size();
        // A shared pte page is unlinked, not zapped: the other sharers keep it.
        self.pt_unshare_range(mm, 0, task_size);
        let ptes = self.mapped_ptes(mm, 0, task_size);
        for &(_, slot, _) in &ptes {
            self.set_pte(slot, Entry::NONE);
        }
        // The hugetlb leaves, shared pmd tables unshared (the flush of the whole mm follows).
        let mut pages = Vec::new();
        self.huge_zap_clear(mm, 0, task_size, true, &mut pages);
        self.flush_tlb_mm(mm);
        for (_, _, e) in ptes {
            self.unmap_accounting(mm, e);
        }
        for p in pages {
            self.put_frame(p);
        }
        self.mms[mm].vmas.clear();
        self.free_all_tables(mm);
        self.mms[mm].live = false;
        self.release_unused_shmem();
    }
}
