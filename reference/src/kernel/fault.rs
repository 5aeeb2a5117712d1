//! The fault path with its locks: do_user_addr_fault (mmap_lock for reading around
//! handle_mm_fault), filemap_fault's page lock, and the user accesses and kernel user-copies
//! that fault through it.
//!
//! Invariants kept here: a fault never returns holding a lock; the access that follows a
//! successful fault happens in the same atomic section as the walk that found the page, so
//! the byte read or written is the one the page tables map at that instant (the access's
//! linearization point). Lock order: mmap_lock -> page lock (mm/rmap.c).

use super::{Kernel, Lin, Mode};
use crate::machine::{FaultError, FaultStep, LockId, Pfn};
use crate::{Bug, OpResult, TaskId};

/// What [`handle_mm_fault`] did with mmap_lock.
pub(super) enum Handled {
    /// The fault resolved or failed; the caller still holds mmap_lock.
    Done(Result<(), FaultError>),
    /// VM_FAULT_RETRY: the fault dropped mmap_lock to sleep on a page lock; the caller
    /// takes it again and redoes the fault.
    Retry,
}

/// handle_mm_fault for `va` of `mm`. Caller holds mmap_lock (read; write for populate).
/// `allow_retry` (FAULT_FLAG_ALLOW_RETRY): filemap_fault may drop mmap_lock rather than
/// sleep on a locked page under it (lock_folio_maybe_drop_mmap, since 2.6.33); it then takes
/// the page lock, releases it at once and returns [`Handled::Retry`]. Before that (the kernel
/// of `write-fault-under-page-lock`, whose third deadlock needs it) a fault always slept on
/// the page lock holding mmap_lock, as shmem_fault and page_mkwrite still do.
pub(super) async fn handle_mm_fault(
    k: &Kernel,
    t: TaskId,
    mm: usize,
    va: u64,
    write: bool,
    allow_retry: bool,
) -> Handled {
    let mmap_lock = LockId::MmapLock(mm as u32);
    assert!(k.m().locks.holds(t, mmap_lock), "fault without mmap_lock");
    // `highpte-kmap-over-alloc`: the pte page is kmap()ed (a pool slot, not kmap_atomic)
    // for the whole fault, the allocation of the new page and its reclaim included.
    let pte_kmap = {
        let m = k.m();
        if m.cfg.bugs.contains(Bug::HighpteKmapOverAlloc) {
            m.pte_slot(mm, va).map(|(table, _)| table)
        } else {
            None
        }
    };
    if let Some(table) = pte_kmap {
        k.hold(t, table);
        k.kmap(t, table).await;
    }
    let oom = k.m().oom;
    let mut retries = 0;
    let handled = loop {
        let handled = handle_mm_fault_once(k, t, mm, va, write, allow_retry).await;
        // The allocation found no free frame and nothing reclaim could take at once: direct
        // reclaim that may sleep, or a wait for memory; then the fault is redone from the
        // walk (the pte page is mapped again: seed 000's "regetting the mapping").
        if matches!(handled, Handled::Done(Err(FaultError::Oom))) && reclaim_or_wait(k, t, &mut retries).await {
            k.m().oom = oom;
            continue;
        }
        break handled;
    };
    if let Some(table) = pte_kmap {
        k.kunmap(t, table);
        k.unhold(t, table);
    }
    handled
}

/// One try of [`handle_mm_fault`]; an allocation failure comes back as `Oom`.
async fn handle_mm_fault_once(k: &Kernel, t: TaskId, mm: usize, va: u64, write: bool, allow_retry: bool) -> Handled {
    let mmap_lock = LockId::MmapLock(mm as u32);
    let share = k.m().pt_share_wanted(mm, va);
    if let Some(f) = share {
        pt_share_pte(k, t, mm, va, f).await;
    }
    let step = k.m().fault_begin(mm, va, write);
    match step {
        FaultStep::Done(r) => Handled::Done(r),
        FaultStep::Hugetlb => Handled::Done(super::hugetlb::hugetlb_fault(k, t, mm, va, write).await),
        FaultStep::LockPage { page, filemap } => {
            let lock = LockId::Page(page);
            k.hold(t, page);
            let drop_mmap = {
                let m = k.m();
                allow_retry && filemap && !m.cfg.bugs.contains(Bug::WriteFaultUnderPageLock) && m.locks.busy(lock)
            };
            if drop_mmap {
                // The trylock failed: drop mmap_lock, wait for the page, and retry the fault.
                k.unlock(t, mmap_lock);
                k.lock(t, lock, Mode::Write).await;
                k.unlock(t, lock);
                k.unhold(t, page);
                k.m().put_frame(page);
                return Handled::Retry;
            }
            k.lock(t, lock, Mode::Write).await;
            k.unhold(t, page);
            let r = k.m().fault_locked(mm, va, write, page);
            k.unlock(t, lock);
            Handled::Done(r)
        }
    }
}

/// pt_share_pte (`ptshare.rs`): before the fault allocates a pte page for `va`, look
/// through the i_mmap of file `f` for another mm's populated one to link. Correct: the
/// search, the count and the link in one section under i_mmap_rwsem (read), so nothing can
/// change the table found before it is linked. `ptshare-count-race`: the count is raised
/// at the search, i_mmap_rwsem is dropped, and the link (or the "already mapped" backout)
/// comes after a scheduling point, under page_table_lock alone. Caller holds mmap_lock
/// (read, or write for populate) and no page lock; lock order mmap_lock -> i_mmap_rwsem.
async fn pt_share_pte(k: &Kernel, t: TaskId, mm: usize, va: u64, f: u32) {
    let imap = LockId::IMmap(f);
    k.lock(t, imap, Mode::Read).await;
    if !k.m().cfg.bugs.contains(Bug::PtshareCountRace) {
        k.m().pt_share(mm, va);
        k.unlock(t, imap);
        return;
    }
    let found = k.m().pt_share_get(mm, va);
    k.unlock(t, imap);
    if let Some(found) = found {
        // down_read_trylock of the other mm's mmap_lock and the ptl: others run here.
        k.point().await;
        k.m().pt_share_finish(mm, va, found);
    }
}

/// The allocator's slow path, after an allocation found no free frame and reclaim nothing
/// it could take without sleeping: the dirty highmem page reclaim passed over is locked
/// (trylock), kmap()ed (sleeping while the pool is full) and written back, so that the
/// retry can evict it; with none, the task sleeps until a frame is freed. True when the
/// allocation is worth retrying. Caller holds no page lock (mmap_lock may be held).
///
/// `retries` counts the caller's tries of one allocation: after MAX_RECLAIM_RETRIES
/// (should_reclaim_retry's bound) the allocation fails, so tasks that free and wait in turn
/// (a huge page allocated in part and given back) cannot keep each other going forever.
pub(super) async fn reclaim_or_wait(k: &Kernel, t: TaskId, retries: &mut u32) -> bool {
    const MAX_RECLAIM_RETRIES: u32 = 16;
    *retries += 1;
    if *retries > MAX_RECLAIM_RETRIES {
        return false;
    }
    let victim = k.m().take_reclaim_needs_kmap();
    let Some((f, index, pfn)) = victim else {
        if !k.wait_memory(t).await {
            // The OOM path woke the task: one last try (which looks at everything again,
            // i_size included), and then the allocation fails.
            *retries = MAX_RECLAIM_RETRIES;
        }
        return true;
    };
    let lock = LockId::Page(pfn);
    k.m().get_frame(pfn);
    k.hold(t, pfn);
    k.lock(t, lock, Mode::Write).await;
    k.kmap(t, pfn).await;
    k.m().writeback_kmapped(f, index, pfn);
    k.kunmap(t, pfn);
    k.unlock(t, lock);
    k.unhold(t, pfn);
    k.m().put_frame(pfn);
    true
}

/// do_user_addr_fault: takes mmap_lock for reading around handle_mm_fault, and again for
/// each retry (FAULT_FLAG_TRIED keeps ALLOW_RETRY since 5.7, so a fault may retry more
/// than once).
async fn user_fault(k: &Kernel, t: TaskId, mm: usize, va: u64, write: bool) -> Result<(), FaultError> {
    let lock = LockId::MmapLock(mm as u32);
    loop {
        k.lock(t, lock, Mode::Read).await;
        match handle_mm_fault(k, t, mm, va, write, true).await {
            Handled::Done(r) => {
                k.unlock(t, lock);
                return r;
            }
            Handled::Retry => {}
        }
    }
}

/// The frame mapped at `va` for a read or write by task `t`, faulting it in as needed. The
/// caller accesses it before its next await. A retry is needed only when something changed
/// the mapping meanwhile; retries with no other task run in between are a model bug.
pub(super) async fn user_page(k: &Kernel, t: TaskId, va: u64, write: bool) -> Result<Pfn, FaultError> {
    let (mm, cpu) = k.ctx(t);
    let mut idle_retries = 0;
    let mut faulted = false;
    loop {
        let others = {
            let mut m = k.m();
            if let Some(pfn) = m.walk(mm, cpu, va, write) {
                if faulted {
                    // The fault's effects (a copy on write, a huge page instantiated) are
                    // visible whether or not the caller goes on to access the page.
                    m.lin.push((t, Lin::Fault { va, write }));
                }
                return Ok(pfn);
            }
            if m.violation.is_some() {
                return Err(FaultError::Segv);
            }
            m.polls_of_others(t)
        };
        user_fault(k, t, mm, va, write).await?;
        faulted = true;
        if k.m().polls_of_others(t) == others {
            idle_retries += 1;
            assert!(idle_retries < 4, "fault on {va:#x} of mm {mm} did not converge");
        } else {
            idle_retries = 0;
        }
    }
}

/// A one-byte user load (`store == None`) or store: the `load`/`store` operations.
pub(super) async fn user_access(k: &Kernel, t: TaskId, va: u64, store: Option<u8>) -> OpResult {
    match user_page(k, t, va, store.is_some()).await {
        Ok(pfn) => {
            let b = k.m().touch(pfn, va, store);
            match store {
                None => OpResult::Byte(b),
                Some(_) => OpResult::Done,
            }
        }
        Err(FaultError::Segv) => OpResult::Sigsegv,
        Err(FaultError::Bus) => OpResult::Sigbus,
        Err(FaultError::Oom) => OpResult::Oom,
    }
}
