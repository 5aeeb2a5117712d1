//! pwrite, pread and ftruncate with their locks: i_rwsem around write and truncate, the
//! page lock of each page cache page written (write_begin to write_end) or truncated, and the
//! user-buffer faults of the copies.
//!
//! Invariants kept here: the correct write path never faults while it holds a page lock
//! (Linux since 2007: the copy runs with page faults disabled, and a copy of nothing is
//! followed by faulting the source in with the page unlocked); write and read are
//! linearized per chunk, at each atomic section that copies bytes ([`Lin::Chunk`]);
//! truncate takes effect at once, under the partial page's lock and i_mmap_rwsem (size,
//! unmap, tail zeroed), then drops the pages past the end one page lock at a time.
//! Lock order: i_rwsem -> mmap_lock -> page lock -> i_mmap_rwsem.

use super::fault::{reclaim_or_wait, user_page};
use super::{Kernel, Lin, Mode};
use crate::machine::{page_rest, LockId, Pfn, ZERO_PFN};
use crate::{Bug, Errno, Oom, OpResult, TaskId, PAGE_SIZE};

/// pwrite(2): inode_lock, generic_perform_write, inode_unlock.
pub(super) async fn sys_write(k: &Kernel, t: TaskId, f: usize, off: u64, len: u64, buf: u64) -> OpResult {
    let checked = k.m().write_checks(f, off, len, buf);
    let count = match checked {
        Ok(c) => c,
        Err(e) => return OpResult::Err(e),
    };
    let inode = k.m().inode_lock(f);
    k.lock(t, inode, Mode::Write).await;
    let r = generic_perform_write(k, t, f, off, count, buf).await;
    k.unlock(t, inode);
    r
}

/// generic_perform_write as of Linux 6.18. Per page of the file: write_begin (the cache page,
/// pinned and locked), copy from the user buffer with page faults disabled, write_end (dirty
/// the page, `i_size = max(i_size, pos + copied)` even when nothing was copied, unlock);
/// when nothing could be copied, fault the source in with the page unlocked and retry, and
/// if its first byte cannot be faulted in, stop (EFAULT if nothing was written).
///
/// With `write-fault-under-page-lock` the copy is the pre-2007 one: copy_from_user with
/// faults enabled while the destination page is locked, which can sleep on mmap_lock and on
/// the source's page lock with the destination's held (seed 001's three deadlocks). Only
/// the locking changes: a short copy goes on as the correct path's does.
/// Caller holds i_rwsem.
async fn generic_perform_write(k: &Kernel, t: TaskId, f: usize, off: u64, count: u64, buf: u64) -> OpResult {
    let (mm, cpu) = k.ctx(t);
    let (bug, nested) = {
        let bugs = k.m().cfg.bugs;
        (
            bugs.contains(Bug::WriteFaultUnderPageLock),
            bugs.contains(Bug::KmapNested),
        )
    };
    let (mut pos, mut src, mut left, mut written) = (off, buf, count, 0u64);
    // Rounds without progress: under extreme memory pressure the source and the destination
    // can evict each other forever; the kernel's comment calls this severe memory pressure,
    // and so does the model after a bound. A round without progress that neither reclaim nor
    // another task explains is a model bug.
    let mut stalls = 0;
    let mut at_fault_in = (0, 0);
    let mut retries = 0;
    while left > 0 {
        let bytes = page_rest(pos).min(left);
        let got = k.m().get_cache_page(f, pos / PAGE_SIZE);
        let page = match got {
            Ok(p) => p,
            Err(_) if reclaim_or_wait(k, t, &mut retries).await => {
                k.m().oom = Oom::No;
                continue;
            }
            Err(_) => {
                let mut m = k.m();
                // On a retry the first round's write_end has grown the file to pos.
                m.oom = if stalls > 0 {
                    Oom::AfterGrow(written)
                } else {
                    Oom::After(written)
                };
                return if written == 0 {
                    OpResult::Err(Errno::ENOMEM)
                } else {
                    OpResult::Count(written)
                };
            }
        };
        k.hold(t, page);
        k.lock(t, LockId::Page(page), Mode::Write).await;
        let copied = if bug {
            copy_from_user_faulting(k, t, f, page, pos, src, bytes).await
        } else if nested {
            copy_kmap_nested(k, t, page, pos, src, bytes).await
        } else {
            // copy_page_from_iter_atomic: the destination kmap_atomic()ed; other CPUs and
            // interrupts may run while it is held, this CPU runs nothing else.
            let depth = k.m().kmap_atomic_here(page);
            if depth.is_some() {
                k.atomic_point().await;
            }
            let c = {
                let mut m = k.m();
                match m.atomic_access(cpu, depth, page) {
                    Ok(at) => m.copy_from_user_atomic(mm, cpu, at, pos % PAGE_SIZE, src, bytes),
                    Err(v) => {
                        m.violation.get_or_insert(v);
                        0
                    }
                }
            };
            k.m().kunmap_atomic_here(depth);
            if c > 0 {
                k.lin(t, Lin::Chunk { pos, n: c, user: src });
            }
            c
        };
        {
            // write_end
            let mut m = k.m();
            if copied > 0 {
                m.frames.frame_mut(page).dirty = true;
            }
            let file = &mut m.files[f];
            file.size = file.size.max(pos + copied);
        }
        if copied == 0 {
            k.lin(t, Lin::Grow { pos });
        }
        k.unlock(t, LockId::Page(page));
        k.unhold(t, page);
        k.m().put_frame(page);
        k.point().await; // cond_resched, balance_dirty_pages_ratelimited
        if copied == 0 {
            {
                let m = k.m();
                assert!(
                    stalls == 0 || m.reclaims > at_fault_in.0 || m.polls_of_others(t) > at_fault_in.1,
                    "write: the source at {src:#x} was faulted in but could not be copied, and nothing explains it"
                );
            }
            stalls += 1;
            if stalls > 8 {
                // Reclaim keeps taking the source or the destination away: the model gives
                // up as on a source fault that found no memory.
                let mut m = k.m();
                m.oom = Oom::Fault(written);
                return m.copy_fault(written);
            }
            // fault_in_iov_iter_readable, with the page unlocked; an OOM there fails like a
            // bad address (a kernel-mode fault).
            {
                let m = k.m();
                at_fault_in = (m.reclaims, m.polls_of_others(t));
            }
            if user_page(k, t, src, false).await.is_err() {
                return k.m().copy_fault(written);
            }
            continue;
        }
        stalls = 0;
        pos += copied;
        src += copied;
        left -= copied;
        written += copied;
    }
    k.m().oom = Oom::No;
    OpResult::Count(written)
}

/// `kmap-nested`: the source page (present in the task's page tables, pinned as
/// get_user_pages would) is kmap()ed and held while the locked destination `page` is
/// kmap()ed too, both from the pool: with every slot held by a task that waits for its
/// second, nobody can go on (seed 001's LAST_PKMAP deadlock). Copies up to the end of the
/// source page; nothing if the source is not present (the caller faults it in).
async fn copy_kmap_nested(k: &Kernel, t: TaskId, page: Pfn, pos: u64, src: u64, bytes: u64) -> u64 {
    let (mm, cpu) = k.ctx(t);
    let Some(spfn) = k.m().walk(mm, cpu, src, false) else {
        return 0;
    };
    // (The zero page needs neither a pin nor a kmap: it is lowmem and never freed.)
    let pinned = spfn != ZERO_PFN;
    if pinned {
        k.m().get_frame(spfn);
        k.hold(t, spfn);
    }
    k.kmap(t, spfn).await;
    k.kmap(t, page).await;
    let n = page_rest(src).min(bytes);
    let copied = {
        let mut m = k.m();
        // The source may have been unmapped while the task slept for a slot.
        if m.walk(mm, cpu, src, false) == Some(spfn) {
            let (from, to) = (m.kmap_access(cpu, spfn), m.kmap_access(cpu, page));
            m.copy_bytes(
                from,
                (src % PAGE_SIZE) as usize,
                to,
                (pos % PAGE_SIZE) as usize,
                n as usize,
            );
            n
        } else {
            0
        }
    };
    if copied > 0 {
        k.lin(
            t,
            Lin::Chunk {
                pos,
                n: copied,
                user: src,
            },
        );
    }
    k.kunmap(t, page);
    k.kunmap(t, spfn);
    if pinned {
        k.unhold(t, spfn);
        k.m().put_frame(spfn);
    }
    copied
}

/// The pre-2007 copy (`write-fault-under-page-lock`): copy_from_user into the locked `page`
/// at file offset `pos`, faulting the source in as it goes (mmap_lock, then the source's
/// page lock) with the destination still locked. Each run copied commits as it lands.
async fn copy_from_user_faulting(k: &Kernel, t: TaskId, f: usize, page: Pfn, pos: u64, src: u64, bytes: u64) -> u64 {
    let mut done = 0;
    while done < bytes {
        let s = src + done;
        let Ok(spfn) = user_page(k, t, s, false).await else {
            break;
        };
        let n = page_rest(s).min(bytes - done);
        let mut m = k.m();
        m.copy_bytes(
            spfn,
            (s % PAGE_SIZE) as usize,
            page,
            ((pos + done) % PAGE_SIZE) as usize,
            n as usize,
        );
        m.frames.frame_mut(page).dirty = true;
        let file = &mut m.files[f];
        file.size = file.size.max(pos + done + n);
        drop(m);
        k.lin(
            t,
            Lin::Chunk {
                pos: pos + done,
                n,
                user: s,
            },
        );
        done += n;
    }
    done
}

/// pread(2): filemap_read / shmem_file_read_iter. Per page of the file up to i_size: get the
/// page (read it in), copy to the user buffer with faults allowed (no page lock held); a
/// destination fault ends the read (EFAULT if nothing was read).
///
/// Each run is copied in the same atomic section as a re-check that the page is still the
/// file's and inside i_size (a truncate may have run while the copy faulted), so every byte
/// read is one the file held at that instant: the run's linearization point. (Linux may
/// copy a page a racing truncate has just dropped; the model takes the page again instead,
/// one of the outcomes Linux also allows.)
pub(super) async fn sys_read(k: &Kernel, t: TaskId, f: usize, off: u64, len: u64, buf: u64) -> OpResult {
    let checked = k.m().rw_checks(off, len, buf);
    let count = match checked {
        Ok(c) => c,
        Err(e) => return OpResult::Err(e),
    };
    if count == 0 {
        return OpResult::Count(0);
    }
    let (mut pos, mut dst, mut left, mut done) = (off, buf, count, 0u64);
    let mut retries = 0;
    loop {
        let got = {
            let mut m = k.m();
            let size = m.files[f].size;
            if pos >= size {
                break;
            }
            let nr = page_rest(pos).min(size - pos).min(left);
            let index = pos / PAGE_SIZE;
            // hugetlbfs_read_iter copies zeros for a hole and instantiates nothing.
            if m.files[f].huge && !m.files[f].cache.contains(index) {
                Ok((ZERO_PFN, nr))
            } else {
                m.get_cache_page(f, index).map(|p| (p, nr))
            }
        };
        let Ok((page, nr)) = got else {
            if reclaim_or_wait(k, t, &mut retries).await {
                k.m().oom = Oom::No;
                continue;
            }
            k.m().oom = Oom::After(done);
            return if done == 0 {
                OpResult::Err(Errno::ENOMEM)
            } else {
                OpResult::Count(done)
            };
        };
        if page != ZERO_PFN {
            k.hold(t, page);
        }
        let (copied, stale) = copy_to_user(k, t, f, dst, page, pos, nr).await;
        if page != ZERO_PFN {
            k.unhold(t, page);
        }
        k.m().put_frame(page);
        done += copied;
        pos += copied;
        dst += copied;
        left -= copied;
        if left == 0 {
            break;
        }
        if !stale && copied < nr {
            // A destination fault (one that ran out of memory too) fails like a bad address.
            return k.m().copy_fault(done);
        }
        // filemap_read's cond_resched between batches; a stale page is looked up again.
        k.point().await;
    }
    k.m().oom = Oom::No;
    OpResult::Count(done)
}

/// copy_to_user of `n` bytes of `page` (file `f` at offset `fpos`) to `dst`: faults the
/// destination in as needed (write faults, COW included); stops at the first byte that
/// cannot be written, or where the page is no longer the file's or past its size (then
/// `stale`). Each run copied is linearized where it lands.
async fn copy_to_user(k: &Kernel, t: TaskId, f: usize, dst: u64, page: Pfn, fpos: u64, n: u64) -> (u64, bool) {
    let mut done = 0;
    while done < n {
        let d = dst + done;
        let got = user_page(k, t, d, true).await;
        let mut m = k.m();
        let valid = m.cache_bytes_from(f, page, fpos + done);
        let Ok(dpfn) = got else {
            return (done, valid == 0);
        };
        let want = page_rest(d).min(n - done);
        let c = want.min(valid);
        if c == 0 {
            return (done, true);
        }
        // copy_page_to_iter: the cache page kmap_atomic()ed for the copy.
        let depth = m.kmap_atomic_here(page);
        m.copy_bytes(
            page,
            ((fpos + done) % PAGE_SIZE) as usize,
            dpfn,
            (d % PAGE_SIZE) as usize,
            c as usize,
        );
        m.kunmap_atomic_here(depth);
        drop(m);
        k.lin(
            t,
            Lin::Chunk {
                pos: fpos + done,
                n: c,
                user: d,
            },
        );
        done += c;
        if c < want {
            return (done, true);
        }
    }
    (done, false)
}

/// ftruncate(2) as shmem_setattr. Growing only sets the size. Shrinking (or keeping the
/// size) takes the partial last page's lock and i_mmap_rwsem, then at once sets the size,
/// unmaps every mapping of the pages past the new end (COW copies included) and zeroes the
/// tail of the new last page; then it drops the cache pages past the end, each under its
/// page lock. (Linux sets the size before it takes those locks; taking them first closes
/// the window in which a mapped page past the new end is still readable. The model keeps
/// truncate atomic for the flat spec: a deviation in timing only.)
pub(super) async fn sys_truncate(k: &Kernel, t: TaskId, f: usize, size: u64) -> OpResult {
    let checked = k.m().truncate_checks(f, size);
    if let Err(e) = checked {
        return OpResult::Err(e);
    }
    let inode = k.m().inode_lock(f);
    k.lock(t, inode, Mode::Write).await;
    let old = k.m().files[f].size;
    if size > old {
        k.m().files[f].size = size;
        k.lin(t, Lin::Whole);
        k.unlock(t, inode);
        return OpResult::Zero;
    }
    let partial = if !size.is_multiple_of(PAGE_SIZE) {
        let mut m = k.m();
        let p = m.files[f].cache.get(size / PAGE_SIZE);
        if let Some(p) = p {
            m.get_frame(p);
        }
        p
    } else {
        None
    };
    if let Some(p) = partial {
        k.hold(t, p);
        k.lock(t, LockId::Page(p), Mode::Write).await;
    }
    let imap = LockId::IMmap(f as u32);
    // hugetlb_vmtruncate takes it for writing (it may unshare pmd tables).
    let mode = if k.m().files[f].huge { Mode::Write } else { Mode::Read };
    k.lock(t, imap, mode).await;
    let gone = k.m().truncate_commit(f, size);
    k.lin(t, Lin::Whole);
    k.unlock(t, imap);
    // truncate_inode_pages_range: each page past the end under its lock.
    for (index, pfn) in gone {
        {
            let mut m = k.m();
            if m.files[f].cache.get(index) != Some(pfn) {
                continue; // reclaimed while we waited for an earlier page
            }
            m.get_frame(pfn);
        }
        k.hold(t, pfn);
        k.lock(t, LockId::Page(pfn), Mode::Write).await;
        k.m().truncate_drop(f, index, pfn);
        k.unlock(t, LockId::Page(pfn));
        k.unhold(t, pfn);
        k.m().put_frame(pfn);
    }
    if let Some(p) = partial {
        k.unlock(t, LockId::Page(p));
        k.unhold(t, p);
        k.m().put_frame(p);
    }
    k.m().truncate_done(f, size);
    k.unlock(t, inode);
    OpResult::Zero
}
