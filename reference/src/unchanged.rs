//! Skipping the per-step table walk when nothing it looks at has changed since it last
//! passed (`RunOptions::skip_unchanged`).
//!
//! The `tables` part of the checker (`use-after-free`, `rss`, `refcount`, and the structural
//! `spec` check of every pte against its VMA) and its `tlb` part are pure functions of machine
//! state: if none of that state changed since a check found nothing, the same check finds
//! nothing again. The scheduler still asks at the same points; this module only answers
//! "nothing changed" when it can prove it, so every report is the same, bit for bit, with the
//! skip on or off (`tests/unchanged.rs` runs generated traces both ways and compares them).
//!
//! Invariants kept here:
//! - The proof has two halves. (1) Counters: `Frames::changes`, bumped inside `Frames` by
//!   every allocation, free, `frame_mut` (reference and map counts, share counts, owners)
//!   and `table_mut` (every page-table entry: ptes, pmd links of shared tables, hugetlb
//!   leaves), which cannot be bypassed (the frame array is private); each file's
//!   `PageCache::changes`, bumped by every insert and removal (the map is private to
//!   machine/cache.rs); and `Machine::epoch`, bumped where TLB flushes or a task's pins
//!   change (one-line hooks in `machine/mod.rs` and `kernel/mod.rs`); every mm's VMAs and
//!   every CPU's TLB entries are [`Counted`](crate::machine::Counted), whose count moves
//!   with every mutable access. (2) A snapshot, compared here at every step, of the small
//!   state that changes elsewhere: every mm's liveness, rss and hugetlb counters, each
//!   task's state, the number of files and which mms' `mmap_lock` is held for writing (the
//!   `tlb` oracle waits for those). A task's pending share counts (`share_pending`) change
//!   only next to the table's map count.
//! - The `kmap` check is skipped on its own when `Kmap::changes` (bumped by every change
//!   of the pool's state, which is private to machine/kmap.rs) is what it was at the last
//!   passed `kmap` check. The `leak` check is cheap and always runs.
//! - A new kernel path that changes state the checker reads, anywhere else, must bump
//!   `epoch` (or join the snapshot). Two tests catch a missing bump: the equality test (same
//!   reports with the skip on and off) and the audit (`RunOptions::audit_skip`: at every
//!   skipped walk, a hash of everything the walk reads must equal the hash taken at the last
//!   walk that passed, even where the verdict would not change).

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::machine::{LockId, Machine, TaskState};

/// What the machine looked like at the last check that found nothing.
#[derive(Default)]
pub(crate) struct Unchanged {
    /// False before the first check of a run.
    valid: bool,
    epoch: u64,
    /// `Frames::changes` at that check.
    frame_changes: u64,
    /// Per mm: its VMAs' count of changes, its liveness, rss and hugetlb counters.
    mms: Vec<(u64, bool, [u64; 3], u64)>,
    tasks: Vec<TaskState>,
    /// Per file: its page cache's count of changes (`PageCache::changes`).
    cache: Vec<u64>,
    /// Per CPU: its TLB's count of changes.
    tlb: Vec<u64>,
    /// Per mm: whether its mmap_lock is held for writing.
    write_held: Vec<bool>,
    /// With `audit_skip`: the hashes of what the `tables` and the `tlb` parts read, at the
    /// last check that found nothing.
    prints: Option<(u64, u64)>,
    /// `Kmap::changes` at the last `kmap` check that found nothing (and with `audit_skip`, a
    /// hash of the pool's state then).
    kmap: Option<(u64, Option<u64>)>,
}

impl Unchanged {
    /// Forgets the last run (a new run starts with a full check).
    pub fn reset(&mut self) {
        self.valid = false;
        self.prints = None;
        self.kmap = None;
    }

    /// Whether the kmap pool's state is what it was at the last passed `kmap` check.
    pub fn kmap_same(&self, m: &Machine) -> bool {
        self.kmap.is_some_and(|(changes, _)| changes == m.kmap.changes())
    }

    /// Records the pool's state after a `kmap` check that found nothing.
    pub fn record_kmap(&mut self, m: &Machine, audit: bool) {
        self.kmap = Some((m.kmap.changes(), audit.then(|| kmap_print(m))));
    }

    /// Panics if a skipped `kmap` check (at `step`) would have read anything other than what
    /// the last passed one read.
    pub fn audit_kmap(&self, m: &Machine, step: u64) {
        if let Some((_, Some(print))) = self.kmap {
            assert!(
                kmap_print(m) == print,
                "step {step}: the kmap check was skipped, but the pool changed since it last passed"
            );
        }
    }

    /// Whether the state the `tables` part reads is what it was at the last passed check.
    pub fn tables_same(&self, m: &Machine) -> bool {
        if !self.valid
            || self.epoch != m.epoch
            || self.frame_changes != m.frames.changes
            || self.mms.len() != m.mms.len()
        {
            return false;
        }
        for (mm, &(vmas, live, rss, hugetlb)) in m.mms.iter().zip(&self.mms) {
            if mm.live != live || mm.rss != rss || mm.hugetlb != hugetlb || mm.vmas.changes() != vmas {
                return false;
            }
        }
        self.tasks.len() == m.tasks.len()
            && m.tasks.iter().zip(&self.tasks).all(|(t, &s)| t.state == s)
            && self.cache.len() == m.files.len()
            && m.files.iter().zip(&self.cache).all(|(f, &n)| f.cache.changes() == n)
    }

    /// Whether the state the `tlb` part reads beyond the tables is what it was.
    pub fn tlb_same(&self, m: &Machine) -> bool {
        if !self.valid || self.tlb.len() != m.cpus.len() || self.write_held.len() != m.mms.len() {
            return false;
        }
        m.cpus.iter().zip(&self.tlb).all(|(cpu, &n)| cpu.tlb.changes() == n)
            && (0..m.mms.len()).all(|mm| m.locks.write_held(LockId::MmapLock(mm as u32)) == self.write_held[mm])
    }

    /// Panics if a walk skipped at step `step` (`tables`, `tlb`: which ones) would have read
    /// anything other than what the last passed walk read: the skip's proof has a hole (a
    /// path changed checked state without bumping a counter or joining the snapshot).
    pub fn audit(&self, m: &Machine, tables: bool, tlb: bool, step: u64) {
        let Some((t, l)) = self.prints else { return };
        assert!(
            !tables || tables_print(m) == t,
            "step {step}: the tables walk was skipped, but what it reads changed since it last passed"
        );
        assert!(
            !tlb || (tables_print(m) == t && tlb_print(m) == l),
            "step {step}: the tlb check was skipped, but what it reads changed since it last passed"
        );
    }

    /// Records the state after a check that found nothing (and its hashes for the audit).
    pub fn record(&mut self, m: &Machine, audit: bool) {
        self.prints = audit.then(|| (tables_print(m), tlb_print(m)));
        self.valid = true;
        self.epoch = m.epoch;
        self.frame_changes = m.frames.changes;
        self.mms.clear();
        self.mms
            .extend(m.mms.iter().map(|mm| (mm.vmas.changes(), mm.live, mm.rss, mm.hugetlb)));
        self.tasks.clear();
        self.tasks.extend(m.tasks.iter().map(|t| t.state));
        self.cache.clear();
        self.cache.extend(m.files.iter().map(|f| f.cache.changes()));
        self.tlb.clear();
        self.tlb.extend(m.cpus.iter().map(|cpu| cpu.tlb.changes()));
        self.write_held.clear();
        self.write_held
            .extend((0..m.mms.len()).map(|mm| m.locks.write_held(LockId::MmapLock(mm as u32))));
    }
}

/// A hash of everything the `tables` part of the checker reads: frames (owner, counts,
/// generation) and page-table entries, every mm's VMAs, counters and pgd, every task's state,
/// pins and pending share counts, every file's page cache.
fn tables_print(m: &Machine) -> u64 {
    let mut h = DefaultHasher::new();
    m.frames.hash_state(&mut h);
    for mm in &m.mms {
        (mm.live, mm.pgd, &mm.vmas[..], mm.rss, mm.hugetlb).hash(&mut h);
    }
    for t in &m.tasks {
        (t.state, &t.pins, &t.share_pending).hash(&mut h);
    }
    for f in &m.files {
        f.cache.hash(&mut h);
    }
    h.finish()
}

/// A hash of what the `tlb` part reads beyond the tables: every CPU's TLB entries and which
/// mms' mmap_lock is held for writing.
fn tlb_print(m: &Machine) -> u64 {
    let mut h = DefaultHasher::new();
    for cpu in &m.cpus {
        cpu.tlb[..].hash(&mut h);
    }
    for mm in 0..m.mms.len() {
        m.locks.write_held(LockId::MmapLock(mm as u32)).hash(&mut h);
    }
    h.finish()
}

/// A hash of what the `kmap` oracle reads: the pool's counts, pages, page->virtual, kernel
/// TLBs and held kmaps.
fn kmap_print(m: &Machine) -> u64 {
    let mut h = DefaultHasher::new();
    m.kmap.hash_state(&mut h);
    h.finish()
}
