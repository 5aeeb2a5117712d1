//! The concurrent kernel: every operation runs as the kernel path Linux runs, written as an
//! `async fn` whose `.await`s are exactly the places where the real kernel can switch tasks
//! (taking or waiting for a sleeping lock, a preemption point of a long loop). Between two
//! awaits a path runs the synchronous machine code of `machine/` as one atomic section.
//!
//! Mechanism: each task's current operation is a boxed future, polled by the scheduler in
//! `run.rs` with a no-op waker; one poll is one scheduling step. A lock wait is a future that
//! returns `Pending` once: after taking the lock (the step ends there) or after queueing for
//! it (the task sleeps until a release hands it the lock: the scheduler asks the lock table
//! who is runnable, so no wakers are needed). The machine lives in a `RefCell`; a path
//! borrows it only between awaits, never across one (a borrow held across an await would be
//! a model bug, caught by the `RefCell` at the next step).
//!
//! Invariants kept here: a path releases every lock and every pin it took before its
//! operation returns (the scheduler asserts it); pins held across a scheduling point are
//! recorded on the task (`hold`), so the refcount oracle can count them mid-operation; a
//! path tells the scheduler its linearization points ([`Lin`]) for the flat spec.

mod fault;
mod hugetlb;
mod rw;
mod vm;

use crate::machine::{LockId, Machine, Mode, Pfn};
use crate::{CpuId, Op, OpResult, TaskId};
use std::cell::{RefCell, RefMut};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) use crate::machine::Lin;

/// The kernel shared by every task's path.
pub(crate) struct Kernel {
    m: RefCell<Machine>,
}

/// A task's running operation: the kernel path of one task, in a slot the scheduler
/// allocates once per task and run and refills for each operation (a path is over a
/// kilobyte: past malloc's per-thread cache, so one allocation per operation was 5% of a
/// run). `None` between operations.
pub(crate) type Path<F> = Pin<Box<Option<F>>>;

impl Kernel {
    pub fn new(m: Machine) -> Kernel {
        Kernel { m: RefCell::new(m) }
    }

    pub fn into_machine(self) -> Machine {
        self.m.into_inner()
    }

    /// The machine, for one atomic section (never held across an await).
    pub fn m(&self) -> RefMut<'_, Machine> {
        self.m.borrow_mut()
    }

    /// The address space and CPU of task `t`.
    fn ctx(&self, t: TaskId) -> (usize, CpuId) {
        let m = self.m();
        let task = &m.tasks[t as usize];
        (task.mm, task.cpu)
    }

    /// Takes the sleeping lock `id` (down_read/down_write/lock_page): a scheduling point.
    /// The step ends once the task holds the lock, or sleeps in its queue until a release
    /// hands it over. might_sleep() checks first; lockdep records the lock when granted.
    #[track_caller]
    fn lock(&self, t: TaskId, id: LockId, mode: Mode) -> Acquire<'_> {
        assert!(!id.spinning(), "{id} is a spinlock");
        Acquire {
            k: self,
            t,
            id,
            mode,
            started: false,
            at: std::panic::Location::caller(),
        }
    }

    #[track_caller]
    fn unlock(&self, t: TaskId, id: LockId) {
        let mut m = self.m();
        let woken = m.locks.release(t, id);
        m.ev_unlock(t, id, &woken, std::panic::Location::caller());
    }

    /// A preemption point (cond_resched): the step ends here.
    #[track_caller]
    fn point(&self) -> Yield {
        self.m().ev_yield();
        Yield(false)
    }

    /// A point inside a preempt-disabled section (a kmap_atomic held): the step ends, other
    /// CPUs and interrupts run, but this CPU runs no other task until the section ends.
    fn atomic_point(&self) -> Yield {
        Yield(false)
    }

    /// kmap() of `pfn` for task `t`: maps a highmem page in the pool (lowmem needs no slot),
    /// sleeping while every slot is in use. A scheduling point, as a lock taken is.
    #[track_caller]
    fn kmap(&self, t: TaskId, pfn: Pfn) -> KmapWait<'_> {
        KmapWait {
            k: self,
            t,
            pfn,
            checked: false,
            mapped: false,
            at: std::panic::Location::caller(),
        }
    }

    /// kunmap() of `pfn` by task `t`.
    #[track_caller]
    fn kunmap(&self, t: TaskId, pfn: Pfn) {
        let mut m = self.m();
        if let Err(v) = m.kunmap(t, pfn) {
            m.violation.get_or_insert(v);
        }
    }

    /// Sleeps until some frame is freed (the allocator's wait when reclaim found nothing to
    /// take): true if one was, false if the OOM path woke the task because nothing else could
    /// run (the allocation then fails).
    #[track_caller]
    fn wait_memory(&self, t: TaskId) -> MemWait<'_> {
        MemWait {
            k: self,
            t,
            slept: false,
            at: std::panic::Location::caller(),
        }
    }

    /// A linearization point of task `t`'s operation.
    fn lin(&self, t: TaskId, ev: Lin) {
        self.m().lin.push((t, ev));
    }

    /// Task `t` keeps its pin of `pfn` across scheduling points.
    fn hold(&self, t: TaskId, pfn: Pfn) {
        let mut m = self.m();
        m.epoch += 1; // unchanged.rs
        m.tasks[t as usize].pins.push(pfn);
    }

    /// Task `t` no longer keeps the pin of `pfn` across scheduling points.
    fn unhold(&self, t: TaskId, pfn: Pfn) {
        let mut m = self.m();
        m.epoch += 1; // unchanged.rs
        let pins = &mut m.tasks[t as usize].pins;
        let i = pins
            .iter()
            .rposition(|&p| p == pfn)
            .unwrap_or_else(|| panic!("task {t} drops a pin of frame {pfn} it does not hold"));
        pins.swap_remove(i);
    }
}

/// The future of a sleeping lock acquisition (see [`Kernel::lock`]).
pub(crate) struct Acquire<'k> {
    k: &'k Kernel,
    t: TaskId,
    id: LockId,
    mode: Mode,
    started: bool,
    /// Where the path takes the lock (for the event log).
    at: &'static std::panic::Location<'static>,
}

impl Future for Acquire<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.started {
            assert!(
                self.k.m().locks.holds(self.t, self.id),
                "task {} resumed without {}",
                self.t,
                self.id
            );
            return Poll::Ready(());
        }
        self.started = true;
        let (t, id, mode) = (self.t, self.id, self.mode);
        let mut m = self.k.m();
        // might_sleep(): a sleeping lock is never taken with preemption off.
        if !m.might_sleep(t, || format!("taking {id}")) {
            return Poll::Pending;
        }
        m.locks.acquire(t, id, mode);
        m.ev_lock(t, id, mode, self.at);
        Poll::Pending
    }
}

/// The future of a kmap() (see [`Kernel::kmap`]).
pub(crate) struct KmapWait<'k> {
    k: &'k Kernel,
    t: TaskId,
    pfn: Pfn,
    checked: bool,
    mapped: bool,
    /// Where the path kmaps (for the event log).
    at: &'static std::panic::Location<'static>,
}

impl Future for KmapWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.mapped {
            return Poll::Ready(());
        }
        let (t, pfn) = (self.t, self.pfn);
        let mut m = self.k.m();
        if !self.checked {
            self.checked = true;
            // kmap() might_sleep()s whether or not it has to.
            if !m.might_sleep(t, || format!("in kmap of frame {pfn}")) {
                return Poll::Pending;
            }
        }
        // Woken (or first try): page->virtual is looked at again, then a free slot.
        if m.kmap_try(t, pfn, self.at) {
            // Like a lock taken, a kmap taken ends the step (another CPU may kmap now).
            m.tasks[t as usize].kmap_wait = None;
            self.mapped = true;
            return Poll::Pending;
        }
        let w = m.kmap.wakeups;
        m.tasks[t as usize].kmap_wait = Some(w);
        m.ev_kmap_sleep(t, pfn, self.at);
        Poll::Pending
    }
}

/// The future of a sleep until a frame is freed (see [`Kernel::wait_memory`]): true when
/// woken by a free, false when the OOM path woke it (nothing else could run).
pub(crate) struct MemWait<'k> {
    k: &'k Kernel,
    t: TaskId,
    slept: bool,
    /// Where the path sleeps (for the event log).
    at: &'static std::panic::Location<'static>,
}

impl Future for MemWait<'_> {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<bool> {
        let t = self.t;
        let mut m = self.k.m();
        if self.slept {
            let task = &mut m.tasks[t as usize];
            let freed = !std::mem::take(&mut task.mem_oom);
            task.mem_wait = None;
            return Poll::Ready(freed);
        }
        self.slept = true;
        if m.might_sleep(t, || "waiting for memory".to_string()) {
            let frees = m.frames.frees;
            m.tasks[t as usize].mem_wait = Some(frees);
            m.ev_mem_sleep(t, self.at);
        }
        Poll::Pending
    }
}

/// A future that is pending once: a scheduling point with nothing to wait for.
pub(crate) struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// The kernel path of operation `op` of task `t`.
pub(crate) async fn exec(k: &Kernel, t: TaskId, op: Op) -> OpResult {
    match op {
        Op::Mmap {
            addr,
            len,
            prot,
            flags,
            file,
            off,
        } => vm::sys_mmap(k, t, addr, len, prot, flags, file, off).await,
        Op::Munmap { addr, len } => vm::sys_munmap(k, t, addr, len).await,
        Op::Mprotect { addr, len, prot } => vm::sys_mprotect(k, t, addr, len, prot).await,
        Op::Mremap {
            addr,
            old,
            new,
            flags,
            to,
        } => vm::sys_mremap(k, t, addr, old, new, flags, to.unwrap_or(0)).await,
        Op::Write { file, off, len, buf } => rw::sys_write(k, t, file as usize, off, len, buf).await,
        Op::Read { file, off, len, buf } => rw::sys_read(k, t, file as usize, off, len, buf).await,
        Op::Truncate { file, size } => rw::sys_truncate(k, t, file as usize, size).await,
        Op::Load { addr } => fault::user_access(k, t, addr, None).await,
        Op::Store { addr, value } => fault::user_access(k, t, addr, Some(value)).await,
        Op::Pageout { addr, len } => vm::sys_pageout(k, t, addr, len).await,
        Op::Fork { task: child, cpu } => vm::sys_fork(k, t, child, cpu).await,
        Op::Exit => vm::sys_exit(k, t).await,
    }
}

/// Polls the path in a slot once (one scheduling step); the slot holds one.
pub(crate) fn poll<F: Future<Output = OpResult>>(path: &mut Path<F>) -> Poll<OpResult> {
    path.as_mut()
        .as_pin_mut()
        .expect("an operation runs in the slot")
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
}
