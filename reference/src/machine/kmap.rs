//! kmap: the persistent pool of mm/highmem.c and the per-CPU kmap_atomic stacks, through
//! which every kernel touch of a highmem page goes.
//!
//! The pool (`pkmap` slots) keeps mm/highmem.c's counts: 0 free and flushed from every TLB,
//! 1 unused but maybe still in some CPU's kernel TLB (page->virtual still set), n = n-1
//! users. A new mapping scans from the slot after the last one used; when the scan wraps it
//! first runs flush_all_zero_pkmaps (every count-1 slot becomes free, its page loses its
//! virtual address, and every CPU's kernel TLB of the pool is flushed). A full pool makes
//! kmap sleep (the caller's scheduling point) until a count drops to 1; the sleeper looks
//! at page->virtual again when it wakes. The pool lock is a spinlock held only inside these
//! functions (one atomic section), so it is recorded but never contended.
//!
//! kmap_atomic is a stack per CPU (the stack design of 2010): push and pop strictly LIFO,
//! at most `atomic` deep, preemption and page faults off while any entry is held; an
//! interrupt's entries go on top of the interrupted task's. An entry remembers the frame it
//! mapped, so a mapping that changed under its holder is caught at the access and the pop.
//!
//! Invariants kept here (and checked from outside by the `kmap` oracle): a slot's count is
//! 1 + the number of kmaps of its page held by tasks; a free slot has no page and is in no
//! CPU's kernel TLB; a CPU's kernel TLB entry of a slot names the page the slot maps.
//! A broken rule of the kernel being modelled (LIFO, depth, kunmap of a page not mapped) is
//! a `kmap` violation, returned to the caller; a model bug is an assert. Each kmap, kunmap,
//! flush_all_zero_pkmaps, push and pop is logged where it happens (`events.rs`), after the
//! state changed (a flush before it, with the slots it frees).

use super::{Machine, Pfn};
use crate::{CpuId, Oracle, TaskId, Violation};
use std::collections::BTreeMap;
use std::panic::Location;

/// Who pushed a kmap_atomic entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ctx {
    Task(TaskId),
    Irq,
}

/// One kmap_atomic entry of a CPU's stack: the fixmap slot at its depth maps `pfn`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct AtomicEntry {
    pub pfn: Pfn,
    /// The frame the holder mapped (differs from `pfn` only if someone clobbered the slot).
    pub mapped: Pfn,
    pub ctx: Ctx,
}

/// The pool's state (`count`, `page`, `virt`, `ktlb`, `held`: what the `kmap` oracle reads)
/// is private to this module, so every change to it goes through a function here that bumps
/// `changes` (the oracle skips a step that changed none of it, unchanged.rs).
pub(crate) struct Kmap {
    /// pkmap_count per slot.
    count: Vec<u32>,
    /// The page each slot maps (the pkmap page table).
    page: Vec<Option<Pfn>>,
    /// page->virtual: the slot of each page that has one.
    virt: BTreeMap<Pfn, usize>,
    /// last_pkmap_nr.
    last: usize,
    /// Bumped whenever a count drops to 1 (the pkmap_map_wait wakeup).
    pub wakeups: u64,
    /// Per CPU, per slot: the page that CPU's kernel TLB holds for the slot.
    ktlb: Vec<Vec<Option<Pfn>>>,
    /// Per CPU: the kmap_atomic stack.
    pub stacks: Vec<Vec<AtomicEntry>>,
    /// Per task: the pages it holds a pool kmap of (one entry per kmap).
    held: Vec<Vec<Pfn>>,
    /// flush_all_zero_pkmaps runs so far.
    pub flushes: u64,
    /// Bumped by every change of the pool's state (counts, pages, page->virtual, kernel
    /// TLBs, held kmaps).
    changes: u64,
}

impl Kmap {
    pub fn new(pkmap: u32, cpus: u32, tasks: usize) -> Kmap {
        Kmap {
            count: vec![0; pkmap as usize],
            page: vec![None; pkmap as usize],
            virt: BTreeMap::new(),
            last: 0,
            wakeups: 0,
            ktlb: vec![vec![None; pkmap as usize]; cpus as usize],
            stacks: vec![Vec::new(); cpus as usize],
            held: vec![Vec::new(); tasks],
            flushes: 0,
            changes: 0,
        }
    }

    /// pkmap_count per slot.
    pub fn count(&self) -> &[u32] {
        &self.count
    }

    /// The page each slot maps.
    pub fn page(&self) -> &[Option<Pfn>] {
        &self.page
    }

    /// page->virtual of `pfn`: its slot, if it has one.
    pub fn virt(&self, pfn: Pfn) -> Option<usize> {
        self.virt.get(&pfn).copied()
    }

    /// Per CPU, per slot: the page that CPU's kernel TLB holds for the slot.
    pub fn ktlb(&self) -> &[Vec<Option<Pfn>>] {
        &self.ktlb
    }

    /// The pages task `t` holds a pool kmap of.
    pub fn held(&self, t: usize) -> &[Pfn] {
        &self.held[t]
    }

    /// Every task's held kmaps.
    pub fn held_all(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.held.iter().flatten().copied()
    }

    /// The number of changes to the pool's state so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Hashes the pool's state, what the `kmap` oracle reads (`RunOptions::audit_skip`).
    pub fn hash_state<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (&self.count, &self.page, &self.virt, &self.ktlb, &self.held).hash(h);
    }

    /// A new task, holding no kmap.
    pub fn add_task(&mut self) {
        self.changes += 1;
        self.held.push(Vec::new());
    }

    /// flush_all_zero_pkmaps: every slot no one uses (count 1) becomes free; every CPU's
    /// kernel TLB of the pool is flushed.
    fn flush_all_zero(&mut self) {
        self.changes += 1;
        for slot in 0..self.count.len() {
            if self.count[slot] != 1 {
                continue;
            }
            self.count[slot] = 0;
            let page = self.page[slot].take().expect("a used slot maps a page");
            self.virt.remove(&page);
        }
        for t in &mut self.ktlb {
            t.fill(None);
        }
        self.flushes += 1;
    }

    /// Whether kmap() of `pfn` would not sleep now (it has a slot, or one is free or
    /// reclaimable by a flush).
    pub fn pool_has_room(&self, pfn: Pfn) -> bool {
        self.virt.contains_key(&pfn) || self.count.iter().any(|&c| c <= 1)
    }

    /// The task holding the most recent kmap_atomic entry of `cpu`, if a task holds any
    /// there (preemption is off on that CPU for everyone else).
    pub fn atomic_owner(&self, cpu: CpuId) -> Option<TaskId> {
        self.stacks[cpu as usize].iter().rev().find_map(|e| match e.ctx {
            Ctx::Task(t) => Some(t),
            Ctx::Irq => None,
        })
    }

    /// Whether task `t` holds a kmap_atomic entry on `cpu`.
    pub fn in_atomic(&self, t: TaskId, cpu: CpuId) -> bool {
        self.stacks[cpu as usize].iter().any(|e| e.ctx == Ctx::Task(t))
    }
}

fn kmap_violation(message: String) -> Violation {
    Violation {
        oracle: Oracle::Kmap,
        message,
    }
}

impl Machine {
    /// kmap_high without sleeping: the slot now mapping `pfn` for one more user, or `None`
    /// when every slot is in use (the caller sleeps and tries again).
    fn pkmap_map(&mut self, pfn: Pfn) -> Option<usize> {
        self.kmap.changes += 1;
        if let Some(&slot) = self.kmap.virt.get(&pfn) {
            self.kmap.count[slot] += 1;
            return Some(slot);
        }
        // map_new_virtual: scan from the slot after the last one used; a wrap flushes, and
        // the scan then gets a full round again.
        let n = self.kmap.count.len();
        let mut left = n;
        loop {
            let k = &mut self.kmap;
            k.last = (k.last + 1) % n;
            if k.last == 0 {
                self.ev_kmap_flush();
                self.kmap.flush_all_zero();
                left = n;
            }
            let k = &mut self.kmap;
            if k.count[k.last] == 0 {
                let slot = k.last;
                k.page[slot] = Some(pfn);
                k.virt.insert(pfn, slot);
                k.count[slot] = 2;
                return Some(slot);
            }
            left -= 1;
            if left == 0 {
                return None;
            }
        }
    }

    /// kmap() of `pfn` by task `t` at `at` without sleeping: true when mapped (or lowmem,
    /// which needs no slot), false when the pool is full (the caller sleeps on it). Takes the
    /// pool lock.
    pub(crate) fn kmap_try(&mut self, t: TaskId, pfn: Pfn, at: &'static Location<'static>) -> bool {
        if !self.frames.is_highmem(pfn) {
            return true;
        }
        match self.pkmap_map(pfn) {
            Some(slot) => {
                self.kmap.held[t as usize].push(pfn);
                self.ev_kmap(t, pfn, slot, at);
                true
            }
            None => false,
        }
    }

    /// kunmap() of `pfn` by task `t`: a kunmap of a page `t` did not kmap is a `kmap`
    /// violation. A count dropping to 1 wakes the pool's sleepers.
    #[track_caller]
    pub(crate) fn kunmap(&mut self, t: TaskId, pfn: Pfn) -> Result<(), Violation> {
        if !self.frames.is_highmem(pfn) {
            return Ok(());
        }
        self.kmap.changes += 1;
        let held = &mut self.kmap.held[t as usize];
        let Some(i) = held.iter().rposition(|&p| p == pfn) else {
            return Err(kmap_violation(format!(
                "task {t}: kunmap of frame {pfn}, which it has not kmapped"
            )));
        };
        held.swap_remove(i);
        let slot = *self.kmap.virt.get(&pfn).expect("a kmapped page has a virtual address");
        assert!(self.kmap.count[slot] >= 2, "pkmap slot {slot} count under its holders");
        self.kmap.count[slot] -= 1;
        let woke = self.kmap.count[slot] == 1;
        if woke {
            self.kmap.wakeups += 1;
        }
        self.ev_kunmap(t, pfn, slot, woke);
        Ok(())
    }

    /// A kernel access through the pool mapping of `pfn` on `cpu`: the CPU's kernel TLB
    /// entry of the slot if it has one (filled from the pkmap page table otherwise). Returns
    /// the frame reached.
    pub(crate) fn kmap_access(&mut self, cpu: CpuId, pfn: Pfn) -> Pfn {
        if !self.frames.is_highmem(pfn) {
            return pfn;
        }
        let slot = *self
            .kmap
            .virt
            .get(&pfn)
            .expect("access through a kmap the caller holds");
        let page = self.kmap.page[slot].expect("a used slot maps a page");
        let tlb = &mut self.kmap.ktlb[cpu as usize][slot];
        if tlb.is_none() {
            self.kmap.changes += 1;
        }
        *tlb.get_or_insert(page)
    }

    /// kmap_atomic(pfn) on `cpu` for `ctx`: pushes an entry (preemption and page faults are
    /// off from now on). Lowmem pages need none (`None`). Over `atomic` entries is a
    /// `kmap` violation.
    #[track_caller]
    pub(crate) fn kmap_atomic(&mut self, cpu: CpuId, ctx: Ctx, pfn: Pfn) -> Result<Option<usize>, Violation> {
        if !self.frames.is_highmem(pfn) {
            return Ok(None);
        }
        let stack = &mut self.kmap.stacks[cpu as usize];
        if stack.len() >= self.cfg.atomic as usize {
            return Err(kmap_violation(format!(
                "CPU {cpu}: kmap_atomic of frame {pfn} by {} over the stack's depth of {} ({})",
                ctx_name(ctx),
                self.cfg.atomic,
                stack_desc(stack)
            )));
        }
        stack.push(AtomicEntry { pfn, mapped: pfn, ctx });
        let depth = stack.len() - 1;
        self.ev_kmap_atomic(cpu, ctx, pfn, depth);
        Ok(Some(depth))
    }

    /// kunmap_atomic of the entry at `depth` (returned by [`Machine::kmap_atomic`]) on `cpu`:
    /// it must be the top of the stack, and still map the frame it mapped.
    #[track_caller]
    pub(crate) fn kunmap_atomic(&mut self, cpu: CpuId, ctx: Ctx, depth: Option<usize>) -> Result<(), Violation> {
        let Some(depth) = depth else { return Ok(()) };
        let stack = &mut self.kmap.stacks[cpu as usize];
        let e = *stack.get(depth).expect("kunmap_atomic of an entry never pushed");
        assert_eq!(e.ctx, ctx, "kunmap_atomic of another context's entry");
        if depth + 1 != stack.len() {
            return Err(kmap_violation(format!(
                "CPU {cpu}: {} kunmap_atomic()s frame {} at depth {depth} out of order ({})",
                ctx_name(ctx),
                e.mapped,
                stack_desc(stack)
            )));
        }
        stack.pop();
        self.ev_kunmap_atomic(cpu, ctx, e.mapped, depth);
        if e.pfn != e.mapped {
            return Err(kmap_violation(format!(
                "CPU {cpu}: {}'s kmap_atomic slot {depth} of frame {} maps frame {} when it is unmapped (clobbered)",
                ctx_name(ctx),
                e.mapped,
                e.pfn
            )));
        }
        Ok(())
    }

    /// The frame a kernel access through atomic entry `depth` of `cpu` reaches (the frame
    /// the entry maps now), or a `kmap` violation if that is not the one its holder mapped.
    pub(crate) fn atomic_access(&self, cpu: CpuId, depth: Option<usize>, pfn: Pfn) -> Result<Pfn, Violation> {
        let Some(depth) = depth else { return Ok(pfn) };
        let e = self.kmap.stacks[cpu as usize][depth];
        if e.pfn != e.mapped {
            return Err(kmap_violation(format!(
                "CPU {cpu}: {} reaches frame {} through its kmap_atomic slot {depth} of frame {} (clobbered)",
                ctx_name(e.ctx),
                e.pfn,
                e.mapped
            )));
        }
        Ok(e.pfn)
    }
}

fn ctx_name(ctx: Ctx) -> String {
    match ctx {
        Ctx::Task(t) => format!("task {t}"),
        Ctx::Irq => "the interrupt handler".to_string(),
    }
}

fn stack_desc(stack: &[AtomicEntry]) -> String {
    let entries: Vec<String> = stack
        .iter()
        .map(|e| format!("frame {} by {}", e.mapped, ctx_name(e.ctx)))
        .collect();
    format!("stack: [{}]", entries.join(", "))
}
