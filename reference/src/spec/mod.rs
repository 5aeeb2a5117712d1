//! The flat spec: an independent, deliberately simple model of what Linux (x86-64, 4 KiB pages,
//! 6.18) promises for the trace's operations. It knows VMAs and contents only: no page tables,
//! no TLBs, no frames, no page cache beyond "the bytes of a file". The `spec` oracle compares
//! every result of the machine with [`Spec::apply`]'s.
//!
//! # What it keeps true
//!
//! - Each address space is a set of non-overlapping VMAs inside `[USER_BASE, task_size)`, split
//!   and merged exactly where Linux splits and merges them (mm/vma.c: flags, file, vm_pgoff
//!   contiguity, anon_vma compatibility including fork children, VM_ACCOUNT, VM_SPECIAL).
//!   Merging is observable: mremap's range must lie in one VMA, and in-place growth.
//! - A file follows memfd/tmpfs (the conformance target), with tmpfs's size limit
//!   (`MAX_LFS_FILESIZE`, so never EFBIG). Its bytes below its size are the initial pattern
//!   until written. Bytes past the size read 0 when they become part of the file, except those
//!   a shared mapping stored in the last page: they are kept, and growing the file (ftruncate
//!   up, pwrite past EOF) zeroes nothing, so they show. A private page reads through to its object
//!   until the first write fault copies it (later object changes then stay invisible); a
//!   private anonymous page is zero until written. A private write never reaches the file, a
//!   shared one always does.
//! - An access past EOF (page granularity, huge page granularity for hugetlbfs) is SIGBUS; no
//!   VMA or no permission is SIGSEGV (read needs any of rwx, write needs w).
//! - Truncation to a smaller (or the same) size drops every page past the new EOF from every
//!   mapping, private copies included (`truncate_pagecache`'s even_cows), and zeroes the rest of
//!   the new last page.
//! - write/read are pwrite/pread: forward byte copies between the file and user memory that go
//!   through the same fault rules as load/store and stop at the first fault. pwrite is 6.18's
//!   `generic_perform_write` (write_begin, atomic copy, write_end, fault in the source only
//!   after a copy of nothing): write_end sets `i_size = max(i_size, pos + copied)` even when
//!   nothing was copied, so a pwrite at pos > size grows the file to pos even if it then fails
//!   with EFAULT, and every source byte is checked against the size as grown so far.
//! - Memory running out (`Oom`, reported by the machine) has Linux's partial effects: a load or
//!   store has no effect; a fork fails with no child; a pwrite/pread stops after the bytes
//!   copied (pwrite: at write_begin of the next chunk, before its size bump); MAP_POPULATE stops
//!   after the pages faulted (mmap still succeeds); an mremap fails with ENOMEM at the
//!   page-table move of a VMA piece, after what comes before it (MREMAP_FIXED's unmap of the
//!   target, the shrink, earlier pieces of a multi-VMA move), leaving that piece in place and
//!   its target unmapped (`move_vma`'s undo). Argument checks come first and still win, but a
//!   load or store past EOF may run out of memory rather than SIGBUS (page tables are
//!   allocated before the fault looks at i_size).
//! - fork copies the address space (private contents copied, shared objects shared); an
//!   address space dies with its last task.
//!
//! Placement of non-fixed mmap/mremap follows TRACE.md's deviation (the hint if free, else the
//! highest free gap, huge-page aligned for hugetlb), and `x` implies `r`.
//!
//! # Linux behaviour chosen after testing it on the host (6.18.44, x86-64)
//!
//! The probes are C programs (kept outside the repository); each line says what the host did.
//! - Stores into the last partial page past EOF of a shared file mapping are kept and read back
//!   through the mapping, but read()/pread() stops at EOF: pread of 8 bytes at size-4 gave 4.
//! - Growing a file zeroes nothing (memfd, on this host: `ftruncate` up keeps the old tail
//!   bytes; verified): bytes stored through a shared mapping past EOF in the last page read
//!   back as file contents after ftruncate up and after a pwrite past EOF (ext4 zeroes them
//!   instead; the spec follows memfd, the conformance target).
//! - A pwrite at pos > size whose buffer is unreadable returns EFAULT but leaves size = pos; one
//!   that copied k > 0 bytes leaves size = max(size, pos + k) (memfd and ext4 alike). A source
//!   buffer that maps the same file beyond the old EOF is readable once the size was bumped.
//! - ftruncate to a size <= the current one zeroes the rest of the new last page (a byte stored
//!   past EOF read 0 after ftruncate to the same size, on memfd and ext4).
//! - Truncation removes private COW copies of pages past the new EOF (access gives SIGBUS, then
//!   after growing the file again the page reads through as zero), but keeps the COW copy of
//!   the partial last page, including its bytes past EOF as they were when copied.
//! - A private file page not yet written shows later pwrites to the file; once written, not.
//! - MAP_POPULATE on a private writable file mapping copies every page within EOF at mmap
//!   time: a later pwrite was invisible through it (read-only private populate: visible).
//!   Populate of private writable memory therefore also creates the anon_vma.
//! - pwrite/pread copy until the first faulting user byte and return that count, or EFAULT if
//!   none (buffer half rw, half PROT_NONE: 10 of 100 bytes). pread into a PROT_READ buffer is
//!   EFAULT; pread at or past EOF returns 0 even into an unmapped buffer.
//! - Argument order: pos < 0 is EINVAL before a bad buffer; access_ok fails (EFAULT) iff
//!   buf + count overflows or exceeds TASK_SIZE (buf = TASK_SIZE, count 0 is fine; TASK_SIZE+1
//!   is not); then pos + count > i64::MAX is EINVAL (count 0 passes); count is clamped to
//!   0x7ffff000. memfd's s_maxbytes is MAX_LFS_FILESIZE = i64::MAX, so the EINVAL comes first
//!   and there is no EFBIG (ftruncate past i64::MAX is EINVAL as a negative length).
//! - Overlapping copies between a shared mapping and the same file: with distance 100 the host
//!   behaved as a forward byte copy (the spec's rule); with distance 1 it did not (the CPU's
//!   copy routine moves several bytes at once), so conformance runs must avoid tiny overlaps.
//! - mmap order: offset unaligned EINVAL, then len 0 EINVAL, then page-rounding overflow
//!   ENOMEM, then (fixed) end beyond TASK_SIZE ENOMEM before unaligned EINVAL, then EEXIST,
//!   then EOVERFLOW for a file offset + len past i64::MAX (an unaligned fixed address wins).
//! - munmap: unaligned start, len 0, or a range past TASK_SIZE is EINVAL; holes are fine.
//!   mprotect: unaligned EINVAL, len 0 is 0, overflow or holes ENOMEM, with the VMAs before the
//!   hole already changed. madvise(MADV_PAGEOUT): unaligned EINVAL, `len` rounding to 0 or
//!   wrapping EINVAL, holes ENOMEM (a VMA after a hole still counts), no TASK_SIZE check.
//! - VM_ACCOUNT: mprotect of an unfaulted private anonymous VMA to read-only drops it (it then
//!   merged with a read-only neighbour), a faulted one keeps it (no merge); making a private
//!   VMA writable adds it (it merged with a writable neighbour). File private VMAs keep it.
//! - anon_vma: a faulted VMA merges with a new unfaulted neighbour, except in a fork child;
//!   two VMAs with different anon_vmas do not merge through a VMA between them (only the left
//!   merge happens); mremap of an unfaulted anonymous VMA resets vm_pgoff and merges with its
//!   new neighbour, a faulted one does not.
//! - mremap: growing in place up to an adjacent compatible VMA merges all three; old == new
//!   without `fixed` returns addr without checking the range; with `maymove,fixed` and
//!   old == new the range may span several VMAs and gaps (moved keeping the gaps) but must
//!   start in a VMA (else EFAULT); a shrink may cross VMA ends (only the kept part must lie in
//!   one VMA); new length > TASK_SIZE is EINVAL always; old_len 0 on a private mapping EINVAL,
//!   on a shared one maps the object again; a MAP_SHARED anonymous mapping grown past its
//!   original length gives SIGBUS there.
//! - MAP_SHARED anonymous mappings never merge with each other (each has its own object), but
//!   the pieces of one merge back after mprotect.
//!
//! # Speed without a second semantics
//!
//! The spec runs after every operation the fuzzers generate, so pwrite/pread, which the rules
//! above define byte by byte, copy in runs instead: bytes that share their user page and their
//! file page and lie before the next byte where memory runs out. Within a run every byte
//! meets the same VMA, permissions, private page and EOF verdict as the first (a verdict that
//! passed keeps passing: sizes only grow during a pwrite, private pages only appear), so the
//! run is checked and faulted once and then copied as slices; a copy within one page of one
//! object stays a forward byte loop. `tests.rs` keeps the byte loops and compares both, result
//! and whole state, on random traces.

mod object;
#[cfg(test)]
mod tests;
mod vma;

use std::collections::BTreeMap;

use object::{Object, Private};
use vma::{page_align, AnonVma, Flags, Mm, Proposal, Vma};

use crate::{
    Call, Config, Errno, FileId, FileInit, Oom, Op, OpResult, Prot, TaskId, TaskInit, PAGE_SHIFT, PAGE_SIZE, USER_BASE,
};

/// `MAX_RW_COUNT`: the most one read or write transfers.
const MAX_RW_COUNT: u64 = 0x7fff_f000;
/// `MAX_LFS_FILESIZE`: the limit on a file mapping's end (`file_mmap_ok`) and `s_maxbytes` of
/// tmpfs (memfd) and hugetlbfs files.
const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;

/// Why a user access failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Segv,
    Bus,
}

impl Fault {
    fn result(self) -> OpResult {
        match self {
            Fault::Segv => OpResult::Sigsegv,
            Fault::Bus => OpResult::Sigbus,
        }
    }
}

/// Where the bytes of a user page are read from (after the read fault).
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Private anonymous memory never written: zeros.
    Zero,
    /// The address space's private page.
    Private,
    /// The mapped object (a file or a hidden shmem object).
    Object(usize),
}

/// Where the bytes written to a user page go (after the write fault).
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// The mapped object of a shared mapping.
    Object(usize),
    /// The address space's private page.
    Private,
}

/// The length of the run of a pwrite/pread copy that starts at byte `done`: at most `left`
/// bytes, within the page of the user address `user` and of the file offset `pos`, and ending
/// before each byte of `stops` (bytes where memory runs out) that lies after `done`.
fn run_len(left: u64, user: u64, pos: u64, done: u64, stops: [Option<u64>; 2]) -> u64 {
    let page_rest = |a: u64| PAGE_SIZE - a % PAGE_SIZE;
    let mut n = left.min(page_rest(user)).min(page_rest(pos));
    for stop in stops.into_iter().flatten() {
        if stop > done {
            n = n.min(stop - done);
        }
    }
    debug_assert!(n > 0, "a run of nothing");
    n
}

/// The flat specification.
#[derive(Clone, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub struct Spec {
    task_size: u64,
    huge_page_size: u64,
    /// The trace's files (index = FileId), then the hidden shmem objects.
    objects: Vec<Object>,
    nfiles: usize,
    /// Address spaces by id.
    mms: BTreeMap<u32, Mm>,
    /// Each task's address space; `None` once it exited.
    tasks: Vec<Option<u32>>,
    next_mm: u32,
    next_anon_vma: u64,
}

impl Spec {
    pub fn new(config: &Config, files: &[FileInit], tasks: &[TaskInit]) -> Spec {
        let objects: Vec<Object> = files
            .iter()
            .enumerate()
            .map(|(i, f)| Object::file(i as FileId, f.size, f.huge))
            .collect();
        let mut mms = BTreeMap::new();
        for t in tasks {
            mms.entry(t.mm).or_insert_with(Mm::default);
        }
        Spec {
            task_size: config.task_size(),
            huge_page_size: config.huge_page_size(),
            nfiles: objects.len(),
            objects,
            next_mm: tasks.iter().map(|t| t.mm + 1).max().unwrap_or(0),
            mms,
            tasks: tasks.iter().map(|t| Some(t.mm)).collect(),
            next_anon_vma: 0,
        }
    }

    /// A write's write_end that copied nothing at file offset `pos`: `i_size` still becomes
    /// at least `pos` (6.18's generic_perform_write). One linearization point of a write
    /// that runs concurrently with other operations.
    pub fn write_grow(&mut self, file: FileId, pos: u64) {
        let o = &mut self.objects[file as usize];
        o.size = o.size.max(pos);
    }

    /// MAP_POPULATE's fault of the page at `addr` for task `task` (linearized on its own,
    /// after the mmap itself).
    pub fn populate_page(&mut self, task: TaskId, addr: u64) {
        let mm = self.tasks[task as usize].unwrap_or_else(|| panic!("task {task} is not alive"));
        self.populate(mm, addr, addr + PAGE_SIZE);
    }

    /// A fault of task `task` at `addr` (for a write or a read) that the machine resolved,
    /// linearized on its own: its effects (a private copy, a huge page instantiated) happen
    /// now. False if the flat spec says the access faults there (SIGSEGV or SIGBUS).
    pub fn fault(&mut self, task: TaskId, addr: u64, write: bool) -> bool {
        let mm = self.tasks[task as usize].unwrap_or_else(|| panic!("task {task} is not alive"));
        match self.check(mm, addr, write) {
            Ok(v) => {
                if write {
                    self.write_fault(mm, &v, addr);
                } else {
                    self.read_fault(mm, &v, addr);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// One run of the copy of a write or read `call`, linearized on its own: `n` bytes
    /// between file offset `pos` and user address `user`, copied by the machine in one atomic
    /// section. Returns what the flat spec gives for that run as a write or read of its own:
    /// `Count(n)` unless the machine copied bytes it could not have.
    pub fn copy_piece(&mut self, call: &Call, pos: u64, n: u64, user: u64) -> OpResult {
        let op = match call.op {
            Op::Write { file, .. } => Op::Write {
                file,
                off: pos,
                len: n,
                buf: user,
            },
            Op::Read { file, .. } => Op::Read {
                file,
                off: pos,
                len: n,
                buf: user,
            },
            _ => panic!("a copy run of {}", call.op.name()),
        };
        self.apply(&Call { task: call.task, op }, Oom::No)
    }

    /// The end of a write or read `call` whose copy runs have applied `done` bytes (each with
    /// [`Spec::copy_piece`]): the rest of the operation is applied as one last piece, which
    /// must copy nothing, and the result of the whole operation is returned (so a machine
    /// that stopped early is told how many more bytes the flat spec copies). `oom` is the
    /// machine's, counted from the operation's start.
    pub fn finish_copy(&mut self, call: &Call, done: u64, oom: Oom) -> OpResult {
        if done == 0 {
            return self.apply(call, oom);
        }
        let (off, len, buf) = match call.op {
            Op::Write { off, len, buf, .. } | Op::Read { off, len, buf, .. } => (off, len, buf),
            _ => panic!("a copy of {}", call.op.name()),
        };
        let count = len.min(MAX_RW_COUNT);
        assert!(
            done <= count,
            "{done} bytes copied of a {count}-byte {}",
            call.op.name()
        );
        if done == count {
            return OpResult::Count(done);
        }
        let rel = |n: u64| {
            debug_assert_eq!(n, done, "memory ran out inside a copy run");
            n.saturating_sub(done)
        };
        let oom = match oom {
            Oom::No => Oom::No,
            Oom::After(n) => Oom::After(rel(n)),
            Oom::AfterGrow(n) => Oom::AfterGrow(rel(n)),
            Oom::Fault(n) => Oom::Fault(rel(n)),
        };
        let mut rest = *call;
        match &mut rest.op {
            Op::Write {
                off: o, len: l, buf: b, ..
            }
            | Op::Read {
                off: o, len: l, buf: b, ..
            } => {
                (*o, *l, *b) = (off + done, count - done, buf + done);
            }
            _ => unreachable!(),
        }
        match self.apply(&rest, oom) {
            OpResult::Count(k) => OpResult::Count(done + k),
            OpResult::Err(_) => OpResult::Count(done),
            r => r,
        }
    }

    /// Applies one operation of `call.task` and returns Linux's result.
    pub fn apply(&mut self, call: &Call, oom: Oom) -> OpResult {
        let mm = self
            .tasks
            .get(call.task as usize)
            .copied()
            .flatten()
            .unwrap_or_else(|| panic!("task {} is not alive", call.task));
        let limit = match oom {
            Oom::No | Oom::Fault(_) => None,
            Oom::After(n) | Oom::AfterGrow(n) => Some(n),
        };
        let grown = matches!(oom, Oom::AfterGrow(_));
        if grown {
            assert!(matches!(call.op, Op::Write { .. }), "{oom:?} for {}", call.op.name());
        }
        let fault_at = match oom {
            Oom::Fault(n) => Some(n),
            _ => None,
        };
        if fault_at.is_some() {
            assert!(
                matches!(call.op, Op::Read { .. } | Op::Write { .. }),
                "{oom:?} for {}",
                call.op.name()
            );
        }
        match call.op {
            Op::Read { .. } | Op::Write { .. } | Op::Mremap { .. } => {}
            Op::Mmap { flags, .. } => {
                assert!(oom == Oom::No || flags.populate, "{oom:?} for mmap without populate");
            }
            Op::Load { .. } | Op::Store { .. } | Op::Fork { .. } => {
                assert!(matches!(oom, Oom::No | Oom::After(0)), "{oom:?} for {}", call.op.name());
            }
            _ => assert_eq!(oom, Oom::No, "oom for {}", call.op.name()),
        }
        match call.op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                off,
            } => {
                if let Some(f) = file {
                    assert!((f as usize) < self.nfiles, "file {f} out of range");
                }
                self.mmap(
                    mm,
                    addr,
                    len,
                    prot,
                    flags.shared,
                    flags.fixed,
                    flags.noreplace,
                    flags.populate,
                    file,
                    off,
                    limit,
                )
            }
            Op::Munmap { addr, len } => self.munmap(mm, addr, len),
            Op::Mprotect { addr, len, prot } => self.mprotect(mm, addr, len, prot),
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            } => self.mremap(mm, addr, old, new, flags.maymove, flags.fixed, to.unwrap_or(0), limit),
            Op::Write { file, off, len, buf } => self.write(mm, file, off, len, buf, limit, grown, fault_at),
            Op::Read { file, off, len, buf } => self.read(mm, file, off, len, buf, limit, fault_at),
            Op::Truncate { file, size } => self.truncate(file, size),
            Op::Load { addr } => match self.access(mm, addr, limit.is_some()) {
                Ok(Some(b)) => OpResult::Byte(b),
                Ok(None) => OpResult::Oom,
                Err(f) => f.result(),
            },
            Op::Store { addr, value } => match self.store(mm, addr, value, limit.is_some()) {
                Ok(true) => OpResult::Done,
                Ok(false) => OpResult::Oom,
                Err(f) => f.result(),
            },
            Op::Pageout { addr, len } => self.pageout(mm, addr, len),
            Op::Fork { task, cpu: _ } => {
                // Forks may run in any order under a schedule: ids are given by the trace.
                let t = task as usize;
                if self.tasks.len() <= t {
                    self.tasks.resize(t + 1, None);
                }
                assert!(self.tasks[t].is_none(), "fork of task {task} twice");
                if limit.is_some() {
                    return OpResult::Err(Errno::ENOMEM);
                }
                let mut child = self.mms[&mm].clone();
                let mut next_id = self.next_anon_vma;
                for v in child.vmas.values_mut() {
                    if v.anon.is_some() {
                        next_id += 1;
                        v.anon = Some(AnonVma {
                            id: next_id,
                            forked: true,
                        });
                    }
                }
                self.next_anon_vma = next_id;
                let id = self.next_mm;
                self.next_mm += 1;
                self.mms.insert(id, child);
                self.tasks[t] = Some(id);
                OpResult::Done
            }
            Op::Exit => {
                self.tasks[call.task as usize] = None;
                if !self.tasks.contains(&Some(mm)) {
                    self.mms.remove(&mm);
                }
                OpResult::Done
            }
        }
    }

    fn mm(&mut self, mm: u32) -> &mut Mm {
        self.mms
            .get_mut(&mm)
            .unwrap_or_else(|| unreachable!("mm {mm} of a live task exists"))
    }

    fn hps(&self) -> u64 {
        self.huge_page_size
    }

    // ----- user accesses -------------------------------------------------------------------

    /// The fault checks of a one-byte access (no effect): the VMA, or why it fails.
    fn check(&self, mm: u32, addr: u64, write: bool) -> Result<Vma, Fault> {
        let m = &self.mms[&mm];
        let v = m.find(addr).ok_or(Fault::Segv)?;
        let allowed = if write {
            v.flags.prot.writable()
        } else {
            v.flags.prot.readable()
        };
        if !allowed {
            return Err(Fault::Segv);
        }
        if let Some(o) = v.obj {
            let private_page = !v.flags.shared && m.anon.contains_key(&(addr >> PAGE_SHIFT));
            if !private_page && !self.objects[o].fault_ok(v.obj_offset(addr), self.hps()) {
                return Err(Fault::Bus);
            }
        }
        Ok(v)
    }

    /// [`Spec::check`] for an access whose fault ran out of memory (`oom`; then `None`): the
    /// VMA and its protection are judged first (under mmap_lock, before any allocation), but
    /// the file's size is not: Linux allocates the page tables (`__handle_mm_fault`'s
    /// pud/pmd, `__do_fault`'s pte prealloc, hugetlb's huge_pte_alloc) before the fault
    /// handler compares the offset with i_size, so a fault past EOF may end in OOM, and a
    /// truncate may shrink the file after the size check of an earlier try.
    fn check_or_oom(&self, mm: u32, addr: u64, write: bool, oom: bool) -> Result<Option<Vma>, Fault> {
        match self.check(mm, addr, write) {
            Ok(_) | Err(Fault::Bus) if oom => Ok(None),
            r => r.map(Some),
        }
    }

    /// The fault unit (page or huge page) containing `addr` in `v`: its first address and len.
    fn unit_of(&self, v: &Vma, addr: u64) -> (u64, u64) {
        let unit = if v.flags.huge { self.hps() } else { PAGE_SIZE };
        let off = v.obj_offset(addr);
        (addr - off % unit, unit)
    }

    /// A private fault that gives `v` private pages for the unit at `addr` (copy on write, or
    /// hugetlb's private page for a huge page not in the page cache), then the anon_vma.
    fn private_fault(&mut self, mm: u32, v: Vma, addr: u64) {
        let (base, unit) = self.unit_of(&v, addr);
        if !self.mms[&mm].anon.contains_key(&(base >> PAGE_SHIFT)) {
            for a in (base..base + unit).step_by(PAGE_SIZE as usize) {
                let page = match v.obj {
                    None => Private::ZERO,
                    Some(o) => self.objects[o].page(v.obj_offset(a) >> PAGE_SHIFT),
                };
                self.mm(mm).anon.insert(a >> PAGE_SHIFT, page);
            }
        }
        let mut next = self.next_anon_vma;
        self.mm(mm).anon_vma_prepare(v.start, &mut next);
        self.next_anon_vma = next;
    }

    /// A hugetlb fault on the object's page cache: the huge page becomes present.
    fn instantiate(&mut self, v: &Vma, addr: u64) {
        if let Some(o) = v.obj {
            if self.objects[o].huge {
                let unit = self.hps();
                let idx = v.obj_offset(addr) / unit;
                self.objects[o].instantiated.insert(idx);
            }
        }
    }

    /// The effects of a user read of `addr` (in `v`, checked) and where the byte is then read.
    /// They are the same for every byte of a page, and a second read of the page has none
    /// (the copy loops make them once per page chunk).
    fn read_fault(&mut self, mm: u32, v: &Vma, addr: u64) -> Source {
        if self.mms[&mm].anon.contains_key(&(addr >> PAGE_SHIFT)) {
            return Source::Private;
        }
        let Some(o) = v.obj else { return Source::Zero };
        if self.objects[o].huge {
            let idx = v.obj_offset(addr) / self.hps();
            if !v.flags.shared && !self.objects[o].instantiated.contains(&idx) {
                // hugetlb_no_page on a private mapping: a private zeroed huge page (the object
                // has no bytes in a huge page that is not in its page cache).
                self.private_fault(mm, *v, addr);
                debug_assert!(self.mms[&mm].anon[&(addr >> PAGE_SHIFT)]
                    .bytes()
                    .iter()
                    .all(|&b| b == 0));
                return Source::Private;
            }
            self.instantiate(v, addr);
        }
        Source::Object(o)
    }

    /// The effects of a user write to `addr` (in `v`, checked) and where the byte then goes:
    /// the object of a shared mapping, or the private page made by the copy on write. The same
    /// for every byte of a page, and a second write to the page has none.
    fn write_fault(&mut self, mm: u32, v: &Vma, addr: u64) -> Dest {
        if v.flags.shared {
            let o = v.obj.unwrap_or_else(|| unreachable!("shared vmas map an object"));
            self.instantiate(v, addr);
            Dest::Object(o)
        } else {
            self.private_fault(mm, *v, addr);
            Dest::Private
        }
    }

    /// The private page of `mm` holding `addr` (it exists), for writing.
    fn private_page(&mut self, mm: u32, addr: u64) -> &mut [u8; PAGE_SIZE as usize] {
        self.mm(mm)
            .anon
            .get_mut(&(addr >> PAGE_SHIFT))
            .unwrap_or_else(|| unreachable!("private page was just made"))
            .bytes_mut()
    }

    /// A one-byte user read. `Ok(None)`: memory ran out (no effect). Running out wins over
    /// SIGBUS (see [`Spec::check_or_oom`]).
    fn access(&mut self, mm: u32, addr: u64, oom: bool) -> Result<Option<u8>, Fault> {
        let Some(v) = self.check_or_oom(mm, addr, false, oom)? else {
            return Ok(None);
        };
        Ok(Some(match self.read_fault(mm, &v, addr) {
            Source::Zero => 0,
            Source::Private => self.mms[&mm].anon[&(addr >> PAGE_SHIFT)].bytes()[(addr % PAGE_SIZE) as usize],
            Source::Object(o) => self.objects[o].byte(v.obj_offset(addr)),
        }))
    }

    /// A one-byte user write. `Ok(false)`: memory ran out (no effect). Running out wins over
    /// SIGBUS (see [`Spec::check_or_oom`]).
    fn store(&mut self, mm: u32, addr: u64, value: u8, oom: bool) -> Result<bool, Fault> {
        let Some(v) = self.check_or_oom(mm, addr, true, oom)? else {
            return Ok(false);
        };
        match self.write_fault(mm, &v, addr) {
            Dest::Object(o) => self.objects[o].set_byte(v.obj_offset(addr), value),
            Dest::Private => self.private_page(mm, addr)[(addr % PAGE_SIZE) as usize] = value,
        }
        Ok(true)
    }

    /// Copies `n` bytes from object `from` at `src` to object `to` at `dst`, each range within
    /// one page, as a forward byte copy: each byte is read after the bytes before it were
    /// written, which matters only within one page of one object (`src < dst` repeats bytes).
    fn copy_object(&mut self, from: usize, src: u64, to: usize, dst: u64, n: u64) {
        if from == to {
            let o = &mut self.objects[to];
            if src >> PAGE_SHIFT == dst >> PAGE_SHIFT {
                o.copy_in_page(src, dst, n);
            } else {
                o.copy_across_pages(src, dst, n);
            }
            return;
        }
        let (a, b) = self.objects.split_at_mut(from.max(to));
        let (source, dest) = if from < to {
            (&a[from], &mut b[0])
        } else {
            (&b[0], &mut a[to])
        };
        source.read(src, dest.bytes_mut(dst, n));
    }

    // ----- mmap ----------------------------------------------------------------------------

    /// `vm_unmapped_area` as TRACE.md defines it: the hint if `[hint, hint+len)` is free and in
    /// user space, else the highest free aligned gap.
    fn place(&self, mm: u32, hint: u64, len: u64, align: u64) -> Option<u64> {
        let m = &self.mms[&mm];
        if hint != 0
            && hint >= USER_BASE
            && hint.checked_add(len).is_some_and(|e| e <= self.task_size)
            && !m.intersects(hint, hint + len)
        {
            return Some(hint);
        }
        let mut top = self.task_size;
        let mut gaps = Vec::new();
        for v in m.vmas.values().rev() {
            if v.end < top {
                gaps.push((v.end.max(USER_BASE), top));
            }
            top = top.min(v.start);
        }
        gaps.push((USER_BASE, top));
        gaps.into_iter().filter(|&(lo, hi)| lo < hi).find_map(|(lo, hi)| {
            let a = hi.checked_sub(len)? / align * align;
            (a >= lo).then_some(a)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn mmap(
        &mut self,
        mm: u32,
        addr: u64,
        len: u64,
        prot: Prot,
        shared: bool,
        fixed: bool,
        noreplace: bool,
        populate: bool,
        file: Option<FileId>,
        off: u64,
        oom: Option<u64>,
    ) -> OpResult {
        use OpResult::Err as E;
        if !off.is_multiple_of(PAGE_SIZE) {
            return E(Errno::EINVAL);
        }
        let huge = file.is_some_and(|f| self.objects[f as usize].huge);
        let hps = self.hps();
        let len = if huge {
            len.checked_add(hps - 1).map_or(0, |l| l / hps * hps)
        } else {
            len
        };
        if len == 0 {
            return E(Errno::EINVAL);
        }
        let fixed = fixed || noreplace;
        let mut addr = addr;
        if !fixed {
            addr &= !(PAGE_SIZE - 1);
            if addr != 0 && addr < USER_BASE {
                addr = USER_BASE;
            }
        }
        let Some(len) = page_align(len).filter(|&l| l != 0) else {
            return E(Errno::ENOMEM);
        };
        let pgoff = off >> PAGE_SHIFT;
        // __get_unmapped_area
        if len > self.task_size {
            return E(Errno::ENOMEM);
        }
        if fixed {
            if huge && !addr.is_multiple_of(hps) {
                return E(Errno::EINVAL);
            }
            if addr > self.task_size - len {
                return E(Errno::ENOMEM);
            }
            if !addr.is_multiple_of(PAGE_SIZE) {
                return E(Errno::EINVAL);
            }
            if addr < USER_BASE {
                return E(Errno::EPERM);
            }
        } else {
            let (hint, align) = if huge {
                // ALIGN() wraps to 0 (no hint) at the top of the address space.
                (addr.checked_next_multiple_of(hps).unwrap_or(0), hps)
            } else {
                (addr, PAGE_SIZE)
            };
            match self.place(mm, hint, len, align) {
                Some(a) => addr = a,
                None => return E(Errno::ENOMEM),
            }
        }
        let end = addr + len;
        if noreplace && self.mms[&mm].intersects(addr, end) {
            return E(Errno::EEXIST);
        }
        if file.is_some() && (len > MAX_LFS_FILESIZE || pgoff > (MAX_LFS_FILESIZE - len) >> PAGE_SHIFT) {
            return E(Errno::EOVERFLOW);
        }
        // __mmap_region: the old mappings go first (a failed hugetlb split changes nothing).
        if let Err(e) = self.mm(mm).unmap(addr, end, hps) {
            return E(e);
        }
        if huge && !pgoff.is_multiple_of(hps >> PAGE_SHIFT) {
            // hugetlbfs_file_mmap fails after the old range was unmapped: it stays a gap.
            return E(Errno::EINVAL);
        }
        let (obj, pgoff) = match file {
            Some(f) => (Some(f as usize), pgoff),
            None if shared => {
                self.objects.push(Object::shmem(len));
                (Some(self.objects.len() - 1), 0)
            }
            None => (None, addr >> PAGE_SHIFT),
        };
        let flags = Flags {
            prot,
            shared,
            account: !huge && !shared && prot.write(),
            huge,
        };
        let p = Proposal {
            start: addr,
            end,
            flags,
            obj,
            pgoff,
            anon: None,
            middle_forked: false,
            copied_forked: false,
            copied_anon: None,
        };
        let m = self.mm(mm);
        if m.merge_new(&p).is_none() {
            m.put(Vma {
                start: addr,
                end,
                flags,
                obj,
                pgoff,
                anon: None,
            });
        }
        if huge && prot.write() {
            let o = &mut self.objects[obj.unwrap_or_else(|| unreachable!())];
            let need = off + len;
            if o.size < need {
                o.size = need;
            }
        }
        if populate {
            // Memory ran out after `n` bytes: the mmap stands, the faults stop there.
            let stop = oom.map_or(end, |n| end.min(addr.saturating_add(n)));
            self.populate(mm, addr, stop);
        }
        OpResult::Addr(addr)
    }

    /// MAP_POPULATE: faults every unit of `[start, end)` in as `populate_vma_page_range` does
    /// (write faults for private writable VMAs), stopping at the first failing one. A unit that
    /// begins before `end` is faulted whole.
    fn populate(&mut self, mm: u32, start: u64, end: u64) {
        let mut addr = start;
        while addr < end {
            let Some(v) = self.mms[&mm].find(addr) else { return };
            if v.flags.prot.is_none() {
                return;
            }
            let write = v.flags.prot.write() && !v.flags.shared;
            if write && v.is_anonymous() {
                // Zero pages either way: only the anon_vma is observable (through merges).
                let mut next = self.next_anon_vma;
                self.mm(mm).anon_vma_prepare(v.start, &mut next);
                self.next_anon_vma = next;
                addr = v.end;
                continue;
            }
            let ok = if write {
                self.store_fault(mm, addr)
            } else {
                self.access(mm, addr, false).is_ok()
            };
            if !ok {
                return;
            }
            let (base, unit) = self.unit_of(&v, addr);
            addr = base + unit;
        }
    }

    /// A write fault without changing the byte (populate's FOLL_WRITE).
    fn store_fault(&mut self, mm: u32, addr: u64) -> bool {
        match self.check(mm, addr, true) {
            Ok(v) => {
                self.private_fault(mm, v, addr);
                true
            }
            Err(_) => false,
        }
    }

    // ----- munmap / mprotect / pageout -------------------------------------------------------

    fn munmap(&mut self, mm: u32, addr: u64, len: u64) -> OpResult {
        let ts = self.task_size;
        if !addr.is_multiple_of(PAGE_SIZE) || addr > ts || len > ts - addr {
            return OpResult::Err(Errno::EINVAL);
        }
        let end = addr + page_align(len).unwrap_or_else(|| unreachable!("len <= task size"));
        if end == addr {
            return OpResult::Err(Errno::EINVAL);
        }
        let hps = self.hps();
        match self.mm(mm).unmap(addr, end, hps) {
            Ok(()) => OpResult::Zero,
            Err(e) => OpResult::Err(e),
        }
    }

    fn mprotect(&mut self, mm: u32, start: u64, len: u64, prot: Prot) -> OpResult {
        if !start.is_multiple_of(PAGE_SIZE) {
            return OpResult::Err(Errno::EINVAL);
        }
        if len == 0 {
            return OpResult::Zero;
        }
        let Some(end) = page_align(len)
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e > start)
        else {
            return OpResult::Err(Errno::ENOMEM);
        };
        let hps = self.hps();
        let m = self.mm(mm);
        let Some(first) = m.first_in(start, end) else {
            return OpResult::Err(Errno::ENOMEM);
        };
        if first.start > start {
            return OpResult::Err(Errno::ENOMEM);
        }
        let mut prev = if start > first.start {
            Some(first)
        } else {
            m.prev_of(first.start)
        };
        let mut nstart = start;
        let mut tmp = first.start;
        let mut error = None;
        while let Some(v) = m.first_in(nstart, end) {
            if v.start != tmp {
                error = Some(Errno::ENOMEM);
                break;
            }
            let old = v.flags;
            let mut new = Flags { prot, ..old };
            tmp = v.end.min(end);
            if new == old {
                prev = Some(v);
            } else {
                if new.prot.write() {
                    if !(old.account || old.prot.write() || old.huge || old.shared) {
                        new.account = true;
                    }
                } else if old.account && v.is_anonymous() && v.anon.is_none() {
                    new.account = false;
                }
                let merged = m.merge_existing(prev, v, nstart, tmp, new);
                let res = match merged {
                    Some(s) => s,
                    None => {
                        if let Err(e) = m.split(nstart, hps).and_then(|()| m.split(tmp, hps)) {
                            error = Some(e);
                            break;
                        }
                        let mut piece = m.find(nstart).unwrap_or_else(|| unreachable!());
                        piece.flags = new;
                        m.put(piece);
                        nstart
                    }
                };
                prev = m.vmas.get(&res).copied();
            }
            tmp = prev.map_or(tmp, |p| p.end.max(tmp));
            nstart = tmp;
            if nstart >= end {
                break;
            }
        }
        if let Some(e) = error {
            return OpResult::Err(e);
        }
        if tmp < end {
            return OpResult::Err(Errno::ENOMEM);
        }
        OpResult::Zero
    }

    fn pageout(&mut self, mm: u32, start: u64, len: u64) -> OpResult {
        if !start.is_multiple_of(PAGE_SIZE) {
            return OpResult::Err(Errno::EINVAL);
        }
        let plen = page_align(len).unwrap_or(0);
        if len != 0 && plen == 0 {
            return OpResult::Err(Errno::EINVAL);
        }
        let Some(end) = start.checked_add(plen) else {
            return OpResult::Err(Errno::EINVAL);
        };
        if end == start {
            return OpResult::Zero;
        }
        let m = &self.mms[&mm];
        let mut unmapped = false;
        let mut pos = start;
        loop {
            let Some(v) = m.find_from(pos) else {
                return OpResult::Err(Errno::ENOMEM);
            };
            if pos < v.start {
                unmapped = true;
                pos = v.start;
                if pos >= end {
                    break;
                }
            }
            if v.flags.huge {
                return OpResult::Err(Errno::EINVAL);
            }
            pos = v.end.min(end);
            if pos >= end {
                break;
            }
        }
        if unmapped {
            OpResult::Err(Errno::ENOMEM)
        } else {
            OpResult::Zero
        }
    }

    // ----- mremap ----------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn mremap(
        &mut self,
        mm: u32,
        addr: u64,
        old: u64,
        new: u64,
        maymove: bool,
        fixed: bool,
        to: u64,
        oom: Option<u64>,
    ) -> OpResult {
        use OpResult::Err as E;
        let ts = self.task_size;
        let old_len = page_align(old).unwrap_or(0);
        let new_len = page_align(new).unwrap_or(0);
        // check_mremap_params
        if !addr.is_multiple_of(PAGE_SIZE) || new_len == 0 || new_len > ts {
            return E(Errno::EINVAL);
        }
        if fixed {
            if to > ts - new_len || !to.is_multiple_of(PAGE_SIZE) || !maymove {
                return E(Errno::EINVAL);
            }
            // vrm_overlaps, with C's wrapping arithmetic.
            if addr.wrapping_add(old_len) > to && to + new_len > addr {
                return E(Errno::EINVAL);
            }
        }
        // Memory ran out moving the page tables of the VMA piece whose source starts here or
        // above (`Oom::After(n)`: the pieces below addr + n were moved).
        let fail_from = oom.map(|n| addr.saturating_add(n));
        if fixed && old_len == new_len {
            return self.remap_move(mm, addr, old_len, to, fail_from);
        }
        let Some(v) = self.mms[&mm].find(addr) else {
            return E(Errno::EFAULT);
        };
        let mut r = Remap {
            addr,
            old_len,
            new_len,
            fixed,
            maymove,
            to,
            fail_from,
        };
        if let Err(e) = self.check_prep(&v, &mut r) {
            return E(e);
        }
        let res = if fixed {
            self.mremap_to(mm, r)
        } else if r.new_len == r.old_len {
            Ok(r.addr)
        } else if r.new_len < r.old_len {
            self.shrink(mm, r.addr + r.new_len, r.old_len - r.new_len)
                .map(|()| r.addr)
        } else {
            self.expand(mm, r)
        };
        match res {
            Ok(a) => OpResult::Addr(a),
            Err(e) => E(e),
        }
    }

    /// `check_prep_vma`: the checks on the VMA at `r.addr` (hugetlb alignment, range in VMA).
    fn check_prep(&self, v: &Vma, r: &mut Remap) -> Result<(), Errno> {
        if v.flags.huge {
            let hps = self.hps();
            r.old_len = r.old_len.wrapping_add(hps - 1) & !(hps - 1);
            r.new_len = r.new_len.wrapping_add(hps - 1) & !(hps - 1);
            if !r.addr.is_multiple_of(hps) || !r.to.is_multiple_of(hps) || r.new_len > r.old_len {
                return Err(Errno::EINVAL);
            }
        }
        let will_map_new = r.new_len > r.old_len || r.fixed;
        if !will_map_new {
            return Ok(());
        }
        if r.old_len == 0 && !v.flags.shared {
            return Err(Errno::EINVAL);
        }
        let span = if r.new_len < r.old_len { r.new_len } else { r.old_len };
        if span > v.end - r.addr {
            return Err(Errno::EFAULT);
        }
        if r.new_len <= r.old_len {
            return Ok(());
        }
        if v.flags.huge {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// `mremap_to`: unmap the target, shrink, then move.
    /// `shrink_vma`: the tail goes through do_vmi_munmap, with munmap's checks.
    fn shrink(&mut self, mm: u32, start: u64, len: u64) -> Result<(), Errno> {
        match self.munmap(mm, start, len) {
            OpResult::Zero => Ok(()),
            OpResult::Err(e) => Err(e),
            other => unreachable!("munmap gave {other:?}"),
        }
    }

    fn mremap_to(&mut self, mm: u32, mut r: Remap) -> Result<u64, Errno> {
        let hps = self.hps();
        self.mm(mm).unmap(r.to, r.to + r.new_len, hps)?;
        if self.mms[&mm].find(r.addr).is_none() {
            return Err(Errno::EFAULT);
        }
        if r.new_len < r.old_len {
            self.shrink(mm, r.addr + r.new_len, r.old_len - r.new_len)?;
            if self.mms[&mm].find(r.addr).is_none() {
                return Err(Errno::EFAULT);
            }
            r.old_len = r.new_len;
        }
        self.move_vma(mm, r, r.to)
    }

    /// `expand_vma`: grow in place if the range ends the VMA and the space after is free,
    /// else move (with `maymove`).
    fn expand(&mut self, mm: u32, r: Remap) -> Result<u64, Errno> {
        let v = self.mms[&mm].find(r.addr).unwrap_or_else(|| unreachable!());
        let delta = r.new_len - r.old_len;
        let in_place = v.end - r.addr == r.old_len
            && v.end
                .checked_add(delta)
                .is_some_and(|e| e <= self.task_size && !self.mms[&mm].intersects(v.end, e));
        if in_place {
            let p = Proposal {
                start: v.end,
                end: v.end + delta,
                flags: v.flags,
                obj: v.obj,
                pgoff: v.pgoff + v.pages(),
                anon: v.anon,
                middle_forked: false,
                copied_forked: false,
                copied_anon: None,
            };
            let merged = self.mm(mm).merge_new(&p);
            debug_assert!(merged.is_some(), "a vma always extends itself");
            return Ok(r.addr);
        }
        if !r.maymove {
            return Err(Errno::ENOMEM);
        }
        let align = if v.flags.huge { self.hps() } else { PAGE_SIZE };
        let to = self.place(mm, 0, r.new_len, align).ok_or(Errno::ENOMEM)?;
        self.move_vma(mm, r, to)
    }

    /// `move_vma`: copy the VMA piece `[addr, addr+old_len)` to `[to, to+new_len)` (merging
    /// there), move its private pages, then unmap the source. If memory runs out moving the
    /// page tables (`r.fail_from`), Linux moves them back and unmaps the new range instead: the
    /// piece stays, the target range is left unmapped (free, as the caller made it), ENOMEM.
    fn move_vma(&mut self, mm: u32, r: Remap, to: u64) -> Result<u64, Errno> {
        let Remap {
            addr, old_len, new_len, ..
        } = r;
        if r.fail_from.is_some_and(|f| addr >= f) {
            return Err(Errno::ENOMEM);
        }
        let hps = self.hps();
        let m = self.mm(mm);
        let v = m.find(addr).unwrap_or_else(|| unreachable!());
        let mut pgoff = v.pgoff + ((addr - v.start) >> PAGE_SHIFT);
        if v.is_anonymous() && v.anon.is_none() {
            pgoff = to >> PAGE_SHIFT;
        }
        let p = Proposal {
            start: to,
            end: to + new_len,
            flags: v.flags,
            obj: v.obj,
            pgoff,
            anon: v.anon,
            middle_forked: false,
            copied_forked: v.anon.is_some_and(|a| a.forked),
            copied_anon: v.anon,
        };
        m.move_pages(addr, old_len.min(new_len), to);
        if m.merge_new(&p).is_none() {
            m.put(Vma {
                start: to,
                end: to + new_len,
                pgoff,
                ..v
            });
        }
        if old_len != 0 {
            // A failure here would only leave the source mapped (Linux's "OOM" path).
            let _ = m.unmap(addr, addr + old_len, hps);
        }
        Ok(to)
    }

    /// `remap_move`: `fixed` with old == new moves every VMA piece of the range, keeping gaps.
    /// An error in one piece (ENOMEM from `fail_from` included) leaves the pieces before it
    /// moved.
    fn remap_move(&mut self, mm: u32, start: u64, len: u64, to: u64, fail_from: Option<u64>) -> OpResult {
        // C's wrapping sum: a range past the top of the address space has no VMAs (EFAULT).
        let end = start.wrapping_add(len);
        let mut res = None;
        let mut last_end = 0;
        let mut target = to;
        let mut pos = start;
        while let Some(v) = self.mms[&mm].first_in(pos, end) {
            if res.is_none() && start < v.start {
                return OpResult::Err(Errno::EFAULT);
            }
            let a = v.start.max(start);
            let l = v.end.min(end) - a;
            let offset = if res.is_some() { v.start - last_end } else { 0 };
            last_end = v.end;
            let mut r = Remap {
                addr: a,
                old_len: l,
                new_len: l,
                fixed: true,
                maymove: true,
                to: target + offset,
                fail_from,
            };
            if let Err(e) = self.check_prep(&v, &mut r) {
                return OpResult::Err(e);
            }
            let moved = match self.mremap_to(mm, r) {
                Ok(x) => x,
                Err(e) => return OpResult::Err(e),
            };
            res.get_or_insert(moved);
            target = moved + r.new_len;
            pos = a + l;
        }
        match res {
            Some(a) => OpResult::Addr(a),
            None => OpResult::Err(Errno::EFAULT),
        }
    }

    // ----- files -----------------------------------------------------------------------------

    /// `access_ok` + `rw_verify_area`: the checks shared by pread and pwrite.
    fn rw_checks(&self, off: u64, len: u64, buf: u64) -> Result<u64, Errno> {
        if off > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        if buf.checked_add(len).is_none_or(|e| e > self.task_size) {
            return Err(Errno::EFAULT);
        }
        if len > i64::MAX as u64 || off + len > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        Ok(len.min(MAX_RW_COUNT))
    }

    /// pwrite(2) as 6.18's `generic_perform_write`, flattened. Per chunk (up to the end of the
    /// file page holding `pos`): write_begin (memory may run out here: `limit`), an atomic copy,
    /// write_end (`i_size = max(i_size, pos + copied)`, also when nothing was copied), and after
    /// a copy of nothing a fault-in of the source; the write stops when that fails. So: the
    /// size becomes `off` first if the file was shorter, then each byte is copied in order, its
    /// source checked against the size as grown so far, until the first source byte that faults.
    /// `fault_at`: faulting the source in ran out of memory at that byte, which then faults.
    ///
    /// The bytes go in runs that stay within one source page and one file page and end where
    /// memory runs out (`limit`, `fault_at`): what a one-byte copy does at the first byte of a
    /// run it does at the others too, so the run is checked and faulted once. The source check
    /// of a page that passed keeps passing (the size only grows, private pages only appear),
    /// and the size bump to `pos` only matters at the first byte. A source that reads the file
    /// itself in the page being written is copied forward byte by byte ([`Spec::copy_object`]).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        mm: u32,
        file: FileId,
        off: u64,
        len: u64,
        buf: u64,
        limit: Option<u64>,
        grown: bool,
        fault_at: Option<u64>,
    ) -> OpResult {
        let f = file as usize;
        assert!(f < self.nfiles, "file {file} out of range");
        if off > i64::MAX as u64 {
            return OpResult::Err(Errno::EINVAL);
        }
        if self.objects[f].huge {
            return OpResult::Err(Errno::EINVAL);
        }
        let count = match self.rw_checks(off, len, buf) {
            Ok(c) => c,
            Err(e) => return OpResult::Err(e),
        };
        let mut done = 0;
        let mut stop = None;
        while done < count {
            // Every byte may begin a chunk (after a short copy the next one starts there): memory
            // running out at its write_begin stops the write before any size bump, unless it
            // ran out on a retry of the page (`grown`: the first round had grown the file).
            if limit == Some(done) {
                if grown {
                    let o = &mut self.objects[f];
                    o.size = o.size.max(off + done);
                }
                stop = Some(Errno::ENOMEM);
                break;
            }
            let pos = off + done;
            // write_end of a copy of nothing (or of the bytes before): the size reaches pos
            // before the source is faulted in. Only the first chunk can start past EOF.
            let o = &mut self.objects[f];
            o.size = o.size.max(pos);
            let src = buf + done;
            let v = match self.check(mm, src, false) {
                Ok(v) if fault_at != Some(done) => v,
                _ => {
                    stop = Some(Errno::EFAULT);
                    break;
                }
            };
            let n = run_len(count - done, src, pos, done, [limit, fault_at]);
            match self.read_fault(mm, &v, src) {
                Source::Zero => self.objects[f].bytes_mut(pos, n).fill(0),
                Source::Private => {
                    let page = self.mms[&mm].anon[&(src >> PAGE_SHIFT)].bytes();
                    let at = (src % PAGE_SIZE) as usize;
                    self.objects[f]
                        .bytes_mut(pos, n)
                        .copy_from_slice(&page[at..at + n as usize]);
                }
                Source::Object(o) => self.copy_object(o, v.obj_offset(src), f, pos, n),
            }
            let o = &mut self.objects[f];
            o.size = o.size.max(pos + n);
            done += n;
        }
        match (done, stop) {
            (0, Some(e)) => OpResult::Err(e),
            _ => OpResult::Count(done),
        }
    }

    /// pread(2): each byte in order, until EOF or the first destination byte that faults.
    /// `fault_at`: faulting the destination in ran out of memory at that byte, which then
    /// faults. In runs as [`Spec::write`]'s; the file's size does not change during a read.
    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        mm: u32,
        file: FileId,
        off: u64,
        len: u64,
        buf: u64,
        limit: Option<u64>,
        fault_at: Option<u64>,
    ) -> OpResult {
        let f = file as usize;
        assert!(f < self.nfiles, "file {file} out of range");
        let count = match self.rw_checks(off, len, buf) {
            Ok(c) => c,
            Err(e) => return OpResult::Err(e),
        };
        let size = self.objects[f].size;
        let mut done = 0;
        let mut stop = None;
        while done < count {
            let pos = off + done;
            if pos >= size {
                break;
            }
            // The page is read in (memory may run out) before it is copied out.
            if limit == Some(done) {
                stop = Some(Errno::ENOMEM);
                break;
            }
            let dst = buf + done;
            let v = match self.check(mm, dst, true) {
                Ok(v) if fault_at != Some(done) => v,
                _ => {
                    stop = Some(Errno::EFAULT);
                    break;
                }
            };
            let left = (count - done).min(size - pos);
            let n = run_len(left, dst, pos, done, [limit, fault_at]);
            match self.write_fault(mm, &v, dst) {
                Dest::Object(o) => self.copy_object(f, pos, o, v.obj_offset(dst), n),
                Dest::Private => {
                    let at = (dst % PAGE_SIZE) as usize;
                    let page = self
                        .mms
                        .get_mut(&mm)
                        .and_then(|m| m.anon.get_mut(&(dst >> PAGE_SHIFT)))
                        .unwrap_or_else(|| unreachable!("private page was just made"))
                        .bytes_mut();
                    self.objects[f].read(pos, &mut page[at..at + n as usize]);
                }
            }
            done += n;
        }
        debug_assert_eq!(self.objects[f].size, size);
        match (done, stop) {
            (0, Some(e)) => OpResult::Err(e),
            _ => OpResult::Count(done),
        }
    }

    fn truncate(&mut self, file: FileId, size: u64) -> OpResult {
        let f = file as usize;
        assert!(f < self.nfiles, "file {file} out of range");
        if size > i64::MAX as u64 {
            return OpResult::Err(Errno::EINVAL);
        }
        // s_maxbytes is MAX_LFS_FILESIZE (tmpfs, hugetlbfs): no size left for EFBIG.
        let huge = self.objects[f].huge;
        let unit = self.objects[f].unit(self.hps());
        if huge && !size.is_multiple_of(unit) {
            return OpResult::Err(Errno::EINVAL);
        }
        if size < self.objects[f].size {
            // unmap_mapping_range(holebegin, even_cows): private copies past EOF go too.
            let hole = size.next_multiple_of(unit) >> PAGE_SHIFT;
            for m in self.mms.values_mut() {
                let victims: Vec<Vma> = m
                    .vmas
                    .values()
                    .filter(|v| v.obj == Some(f) && !v.flags.shared)
                    .copied()
                    .collect();
                for v in victims {
                    let first = v.pgoff.max(hole);
                    if first >= v.pgoff + v.pages() {
                        continue;
                    }
                    let from = v.start + ((first - v.pgoff) << PAGE_SHIFT);
                    let pages: Vec<u64> = m
                        .anon
                        .range(from >> PAGE_SHIFT..v.end >> PAGE_SHIFT)
                        .map(|(&p, _)| p)
                        .collect();
                    for p in pages {
                        m.anon.remove(&p);
                    }
                }
            }
        }
        let hps = self.hps();
        self.objects[f].truncate(size, hps);
        OpResult::Zero
    }
}

/// The state of one mremap (`struct vma_remap_struct`).
#[derive(Clone, Copy, Debug)]
struct Remap {
    addr: u64,
    old_len: u64,
    new_len: u64,
    fixed: bool,
    maymove: bool,
    to: u64,
    /// Memory runs out moving the page tables of a piece whose source starts at or above this.
    fail_from: Option<u64>,
}
