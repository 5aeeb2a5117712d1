//! The hugetlb fault with its locks (mm/hugetlb.c hugetlb_fault, 6.x): the VMA's hugetlb vma
//! lock for reading around huge_pte_alloc .. huge_pte_lock, i_mmap_rwsem for reading inside
//! huge_pmd_share, and the unit's page lock (filemap_lock_hugetlb_folio, or the lock of a
//! new folio) between the two: a real scheduling point, so another task may run between
//! the pmd table the fault found and the ptl it then takes in it.
//!
//! Invariants kept here: the fault returns holding nothing it took (vma lock, i_mmap_rwsem,
//! page lock, pins); the pins it keeps across its sleep are recorded (`hold`). With the vma
//! lock held nobody can unshare the pmd table the fault is using: hugetlbfs truncate only
//! tries the lock, and every other unsharing path holds mmap_lock for writing. With
//! `hugetlb-fault-unlocked` (the kernels before 2020's vma lock, seed 004) the fault takes
//! no vma lock, and the table can be unshared, freed and reused while it sleeps.
//! Lock order: mmap_lock -> hugetlb vma lock -> i_mmap_rwsem, then page lock -> ptl.

use super::{Kernel, Mode};
use crate::machine::{FaultError, LockId};
use crate::{Bug, TaskId};

/// hugetlb_fault for `va` of `mm`, whose VMA is a hugetlb VMA allowing the access inside
/// the file (fault_begin checked). Caller holds mmap_lock (read; write for populate).
pub(super) async fn hugetlb_fault(k: &Kernel, t: TaskId, mm: usize, va: u64, write: bool) -> Result<(), FaultError> {
    let (v, bug) = {
        let m = k.m();
        let vi = m.mms[mm].find(va).expect("fault_begin found the VMA");
        (m.mms[mm].vmas[vi], m.cfg.bugs.contains(Bug::HugetlbFaultUnlocked))
    };
    // hugetlb_vma_lock_read: only shared VMAs have a vma lock (only they share tables).
    let vlock = (v.shared() && !bug).then_some(LockId::HugetlbVma {
        mm: mm as u32,
        start: v.start,
    });
    if let Some(l) = vlock {
        k.lock(t, l, Mode::Read).await;
    }
    let r = fault_under_vma_lock(k, t, mm, va, write).await;
    if let Some(l) = vlock {
        k.unlock(t, l);
    }
    r
}

/// huge_pte_alloc (sharing a pmd table when the VMA may), then the unit's page lock, then
/// huge_pte_lock and the leaf. Caller holds mmap_lock and (correct kernel) the vma lock.
async fn fault_under_vma_lock(k: &Kernel, t: TaskId, mm: usize, va: u64, write: bool) -> Result<(), FaultError> {
    let (vi, f, share) = {
        let mut m = k.m();
        let vi = m.mms[mm].find(va).expect("mmap_lock is held: the VMA is still there");
        let v = m.mms[mm].vmas[vi];
        let empty = m.huge_pud_alloc(mm, va)?;
        (
            vi,
            v.file.expect("hugetlb VMAs map a file"),
            empty && m.want_pmd_share(&v, va),
        )
    };
    let slot = if share {
        // huge_pmd_share under i_mmap_rwsem, then pmd_alloc (if nothing was shared).
        let imap = LockId::IMmap(f);
        k.lock(t, imap, Mode::Read).await;
        let r = {
            let mut m = k.m();
            m.huge_pmd_share(mm, vi, va);
            m.table_alloc(mm, va, 1)
        };
        k.unlock(t, imap);
        r?
    } else {
        k.m().table_alloc(mm, va, 1)?
    };
    let (table, idx) = slot;
    let Some(hf) = k.m().hugetlb_fault_prepare(mm, va, write, table, idx)? else {
        return Ok(());
    };
    let pins = k.m().huge_fault_pins(&hf);
    for &p in &pins {
        k.hold(t, p);
    }
    // filemap_lock_hugetlb_folio / folio_lock: the fault may sleep here, holding only the
    // pointer into the pmd table that huge_pte_alloc gave.
    let page = LockId::Page(hf.lock_page());
    k.lock(t, page, Mode::Write).await;
    for &p in &pins {
        k.unhold(t, p);
    }
    let r = k.m().hugetlb_fault_finish(mm, va, write, hf);
    k.unlock(t, page);
    r
}
