//! The address-space system calls with their locks: mmap, munmap, mprotect, mremap, fork
//! and exit under mmap_lock for writing, pageout under mmap_lock for reading.
//!
//! Invariants kept here: every change of an address space happens under its mmap_lock held
//! for writing and is linearized before the lock is released (mmap at the moment its VMA is
//! in place, before MAP_POPULATE faults the pages in one by one, each linearized on its
//! own). i_mmap_rwsem, taken inside these paths by vma_link/unlink, is never held across a
//! scheduling point. munmap has the preemption point of unmap_region between clearing the
//! ptes and flushing the TLBs: another CPU may still use its stale entries there, to pages
//! that stay allocated until the flush (asm-generic/tlb.h's order).
//! Lock order: mmap_lock -> page lock -> i_mmap_rwsem -> ptl.

use super::fault::{handle_mm_fault, Handled};
use super::{Kernel, Lin, Mode};
use crate::machine::{FaultError, LockId};
use crate::{CpuId, FileId, MmapFlags, MremapFlags, Oom, OpResult, Prot, TaskId, PAGE_SIZE};

#[allow(clippy::too_many_arguments)]
pub(super) async fn sys_mmap(
    k: &Kernel,
    t: TaskId,
    addr: u64,
    len: u64,
    prot: Prot,
    flags: MmapFlags,
    file: Option<FileId>,
    off: u64,
) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Write).await;
    // hugetlbfs_file_mmap takes the inode lock (it may grow the file).
    let huge = file.filter(|&f| k.m().files[f as usize].huge);
    if let Some(f) = huge {
        k.lock(t, LockId::IRwsemHuge(f), Mode::Write).await;
    }
    let (r, populate) = k.m().sys_mmap(mm, addr, len, prot, flags, file, off);
    if let Some(f) = huge {
        k.unlock(t, LockId::IRwsemHuge(f));
    }
    k.lin(t, Lin::Whole);
    if let Some((start, end)) = populate {
        mm_populate(k, t, mm, start, end).await;
    }
    k.unlock(t, lock);
    r
}

/// MAP_POPULATE: faults every page in order (a write fault for a private writable mapping,
/// to break COW), stopping at the first page that fails; each page populated is a
/// linearization point of its own. (Linux populates after dropping mmap_lock for writing,
/// under it for reading; holding it throughout is a deviation in timing only.)
/// Caller holds mmap_lock for writing.
async fn mm_populate(k: &Kernel, t: TaskId, mm: usize, start: u64, end: u64) {
    let mut va = start;
    while va < end {
        let Some(write) = k.m().populate_access(mm, va) else {
            break;
        };
        loop {
            if k.m().pte_grants(mm, va, write) {
                break;
            }
            // No retry: populate holds mmap_lock for writing throughout (see above).
            let Handled::Done(r) = handle_mm_fault(k, t, mm, va, write, false).await else {
                unreachable!("a fault without FAULT_FLAG_ALLOW_RETRY keeps mmap_lock")
            };
            match r {
                Ok(()) => {}
                Err(FaultError::Oom) => {
                    k.m().oom = Oom::No; // the mmap succeeded; the spec follows the pages
                    return;
                }
                Err(_) => return,
            }
        }
        k.lin(t, Lin::Populate { va });
        va += PAGE_SIZE;
    }
}

pub(super) async fn sys_munmap(k: &Kernel, t: TaskId, addr: u64, len: u64) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Write).await;
    let r = k.m().munmap_begin(mm, addr, len);
    let r = match r {
        Ok(Some(gather)) => {
            // unmap_region: the ptes are cleared and the pages unaccounted; the TLBs still
            // hold them until the flush, and the gather keeps them allocated till then.
            for &p in &gather.pages {
                k.hold(t, p);
            }
            k.point().await;
            for &p in &gather.pages {
                k.unhold(t, p);
            }
            k.m().munmap_finish(mm, gather);
            OpResult::Zero
        }
        Ok(None) => OpResult::Zero,
        Err(e) => OpResult::Err(e),
    };
    k.unlock(t, lock);
    r
}

pub(super) async fn sys_mprotect(k: &Kernel, t: TaskId, addr: u64, len: u64, prot: Prot) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Write).await;
    let r = k.m().sys_mprotect(mm, addr, len, prot);
    k.unlock(t, lock);
    r
}

pub(super) async fn sys_mremap(
    k: &Kernel,
    t: TaskId,
    addr: u64,
    old: u64,
    new: u64,
    flags: MremapFlags,
    to: u64,
) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Write).await;
    let r = k.m().sys_mremap(mm, addr, old, new, flags, to);
    k.unlock(t, lock);
    r
}

/// madvise(MADV_PAGEOUT) under mmap_lock for reading; pages locked by another task are
/// skipped (folio_trylock).
pub(super) async fn sys_pageout(k: &Kernel, t: TaskId, addr: u64, len: u64) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Read).await;
    let r = k.m().sys_pageout(mm, addr, len);
    k.unlock(t, lock);
    r
}

/// fork(2): dup_mmap under the parent's mmap_lock for writing (the child's mm is not visible
/// to anyone else until the fork returns).
pub(super) async fn sys_fork(k: &Kernel, t: TaskId, child: TaskId, cpu: Option<CpuId>) -> OpResult {
    let (mm, pcpu) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Write).await;
    let r = k.m().sys_fork(mm, child, cpu.unwrap_or(pcpu));
    k.unlock(t, lock);
    r
}

/// exit(2): exit_mm leaves the mm under mmap_lock for reading; the last user then tears it
/// down (mmput -> exit_mmap, here all of it under mmap_lock for writing; no task can reach
/// the mm any more, so only the lock's scheduling point is observable).
pub(super) async fn sys_exit(k: &Kernel, t: TaskId) -> OpResult {
    let (mm, _) = k.ctx(t);
    let lock = LockId::MmapLock(mm as u32);
    k.lock(t, lock, Mode::Read).await;
    let last = k.m().exit_mm(t);
    k.unlock(t, lock);
    if last {
        k.lock(t, lock, Mode::Write).await;
        k.m().teardown(mm);
        k.unlock(t, lock);
    }
    k.m().exit_done(t);
    OpResult::Done
}
