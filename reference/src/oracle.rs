//! The oracles that judge the machine from outside after every step: `share-count`, `rss`
//! (and the hugetlb counts), `refcount`, `tlb`, `use-after-free` and `leak` (MODEL.md). The
//! `spec` oracle lives in `run.rs`, where
//! the flat spec is driven.
//!
//! Each oracle recomputes what must hold from the page tables and frames themselves, never
//! from the counters it checks, and reports the first difference as a [`Violation`] naming
//! the mm, address, frame or CPU involved. None of them changes any machine state; their
//! scratch memory lives in a [`Checker`] reused across steps.

use crate::machine::frames::E_HUGE;
use crate::machine::{Entry, LockId, Machine, Owner, TaskState, Vma, RSS_NAMES, ZERO_PFN};
use crate::{Oracle, Violation, PAGE_SIZE};

fn violation(oracle: Oracle, message: String) -> Result<(), Violation> {
    Err(Violation { oracle, message })
}

/// The oracles' working memory, kept across steps so a check allocates nothing: per-frame
/// tallies (all zero between checks), the frames whose tallies were touched, and per-mm rss
/// recounts.
pub(crate) struct Checker {
    /// User ptes mapping each frame.
    maps: Vec<u32>,
    /// Upper-level entries pointing at each frame (as a page table).
    table_refs: Vec<u32>,
    /// Pins kept across scheduling points by running kernel paths, per frame.
    pins: Vec<u32>,
    /// Per frame: equal to `stamp` when a file's page cache holds the frame at the index its
    /// owner names (so no check needs clearing it).
    cached: Vec<u32>,
    stamp: u32,
    touched: Vec<u32>,
    rss: Vec<[u64; 3]>,
    /// Per mm: pages mapped by hugetlb leaves in the tables it links.
    hugetlb: Vec<u64>,
    /// Every pmd entry linking a pte table: (table, mm, base address of its range),
    /// collected by the census walk.
    links: Vec<(u32, usize, u64)>,
    /// Every task's pending share counts (`Task::share_pending`), gathered once per check
    /// (almost always empty).
    pending: Vec<u32>,
}

impl Checker {
    pub(crate) fn new(frames: usize) -> Checker {
        Checker {
            maps: vec![0; frames],
            table_refs: vec![0; frames],
            pins: vec![0; frames],
            cached: vec![0; frames],
            stamp: 0,
            touched: Vec::new(),
            rss: Vec::new(),
            hugetlb: Vec::new(),
            links: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Sizes the scratch for `frames` frames (a new run's), keeping its memory. The per-frame
    /// tallies are all zero between checks, so they stay so.
    pub(crate) fn resize(&mut self, frames: usize) {
        debug_assert!(self.touched.is_empty(), "resize between checks only");
        for v in [&mut self.maps, &mut self.table_refs, &mut self.pins, &mut self.cached] {
            v.resize(frames, 0);
        }
    }

    /// The oracles that hold between operations: with `tables`, `use-after-free` (every entry
    /// reaches a frame of the right kind), `rss` and `refcount`; with `tlb`, `tlb`; with
    /// `kmap`, `kmap`.
    pub(crate) fn check(&mut self, m: &Machine, tables: bool, tlb: bool, kmap: bool) -> Result<(), Violation> {
        if tables {
            for task in &m.tasks {
                for &pfn in &task.pins {
                    self.pins[pfn as usize] += 1;
                }
            }
            self.pending.clear();
            self.pending
                .extend(m.tasks.iter().flat_map(|t| t.share_pending.iter().copied()));
            // The census collects the pmd links `share-count` judges; that is judged first.
            // A census that stopped at a violation has not seen every link: then they are
            // collected by a walk of their own (only when something is already wrong).
            let census = self.census(m);
            if census.is_err() {
                self.collect_links(m);
            }
            let r = self
                .check_share(m)
                .and(census)
                .and_then(|()| self.check_rss(m))
                .and_then(|()| self.check_refcount(m));
            for &pfn in &self.touched {
                self.maps[pfn as usize] = 0;
                self.table_refs[pfn as usize] = 0;
            }
            self.touched.clear();
            for task in &m.tasks {
                for &pfn in &task.pins {
                    self.pins[pfn as usize] = 0;
                }
            }
            r?;
        }
        if tlb {
            check_tlb(m)?;
        }
        if kmap {
            check_kmap(m)?;
        }
        Ok(())
    }

    /// Every live mm's pmd entries that link a pte table, into `links`, by a walk of their
    /// own: what the census collects on its way when it finds nothing wrong.
    fn collect_links(&mut self, m: &Machine) {
        self.links.clear();
        let span = m.entry_span(1);
        for (mi, mm) in m.mms.iter().enumerate() {
            if !mm.live {
                continue;
            }
            for (i3, e3) in m.frames.table(mm.pgd).iter().enumerate() {
                if !e3.mapped() || m.frames.frame(e3.pfn).owner != (Owner::Table { level: 2 }) {
                    continue;
                }
                for (i2, e2) in m.frames.table(e3.pfn).iter().enumerate() {
                    if !e2.mapped() || m.frames.frame(e2.pfn).owner != (Owner::Table { level: 1 }) {
                        continue;
                    }
                    let base2 = i3 as u64 * m.entry_span(3) + i2 as u64 * m.entry_span(2);
                    for (i1, e1) in m.frames.table(e2.pfn).iter().enumerate() {
                        if e1.mapped() && !e1.huge() {
                            self.links.push((e1.pfn, mi, base2 + i1 as u64 * span));
                        }
                    }
                }
            }
        }
    }

    /// `share-count`, for pte tables: each table's share count equals the pmd entries
    /// linking it, over every live mm; a table linked more than once is linked only from
    /// VMAs that may share it: a file mapping (not hugetlb) that covers the table's whole
    /// range, each mapping the same file page at the range's base, with the same flags.
    /// (A VMA with an anon_vma must not share either; the ptes of a shared table are the
    /// same for every sharer, so a private copy reaching another mm is judged by `spec`,
    /// at the access that reads it.) Orphaned tables are judged in `check_refcount`. The
    /// links are those the census (or `collect_links`) gathered.
    fn check_share(&mut self, m: &Machine) -> Result<(), Violation> {
        let span = m.entry_span(1);
        self.links.sort_unstable();
        for group in self.links.chunk_by(|a, b| a.0 == b.0) {
            let table = group[0].0;
            let fr = &m.frames.frame(table);
            if fr.owner != (Owner::Table { level: 0 }) {
                continue; // the census reports what the entry reaches
            }
            let linked = || {
                group
                    .iter()
                    .map(|&(_, mm, base)| format!("mm {mm} at {base:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if fr.maps as usize != group.len() + self.pending(table) {
                return violation(
                    Oracle::ShareCount,
                    format!(
                        "pte table frame {table} has share count {} but {} pmd entries link it ({}){}",
                        fr.maps,
                        group.len(),
                        linked(),
                        match self.pending(table) {
                            0 => String::new(),
                            n => format!(" and {n} links are pending"),
                        }
                    ),
                );
            }
            if group.len() < 2 {
                continue;
            }
            let mut first: Option<(u32, u64, u32)> = None;
            for &(_, mm, base) in group {
                let why = match covering(m, mm, base, span) {
                    Err(why) => Some(why),
                    Ok(this) => match first {
                        None => {
                            first = Some(this);
                            None
                        }
                        Some(f) if f.0 != this.0 || f.1 != this.1 => Some(format!(
                            "it maps page {} of file {} there, not page {} of file {}",
                            this.1, this.0, f.1, f.0
                        )),
                        Some(f) if f.2 != this.2 => Some("its VMA's flags differ from the other sharers'".to_string()),
                        Some(_) => None,
                    },
                };
                if let Some(why) = why {
                    return violation(
                        Oracle::ShareCount,
                        format!(
                            "pte table frame {table} is shared ({}) but mm {mm} at {base:#x} may not share it: {why}",
                            linked()
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn tally(&mut self, pfn: u32, table: bool) {
        let i = pfn as usize;
        if self.maps[i] == 0 && self.table_refs[i] == 0 {
            self.touched.push(pfn);
        }
        if table {
            self.table_refs[i] += 1;
        } else {
            self.maps[i] += 1;
        }
    }

    /// Walks every live mm's tables: checks each entry reaches a frame of the right kind, and
    /// tallies maps, table references and rss by kind.
    fn census(&mut self, m: &Machine) -> Result<(), Violation> {
        self.links.clear();
        self.rss.clear();
        self.rss.resize(m.mms.len(), [0; 3]);
        self.hugetlb.clear();
        self.hugetlb.resize(m.mms.len(), 0);
        for (mi, mm) in m.mms.iter().enumerate() {
            if !mm.live {
                continue;
            }
            let pgd = mm.pgd;
            if m.frames.frame(pgd).owner != (Owner::Table { level: 3 }) {
                return violation(
                    Oracle::UseAfterFree,
                    format!(
                        "mm {mi}: pgd frame {pgd} is no longer a pgd ({:?})",
                        m.frames.frame(pgd).owner
                    ),
                );
            }
            self.tally(pgd, true);
            let mut cursor = 0;
            self.walk(m, mi, pgd, 3, 0, &mut cursor, false)?;
        }
        // A table a task holds a share count on, and no mm links (its last linker left
        // meanwhile): its ptes still map their pages.
        for task in &m.tasks {
            for &table in &task.share_pending {
                if self.table_refs[table as usize] > 0 || m.frames.frame(table).owner != (Owner::Table { level: 0 }) {
                    continue;
                }
                for e in m.frames.table(table).iter() {
                    if e.mapped() && !e.special() {
                        self.tally(e.pfn, false);
                    }
                }
            }
        }
        Ok(())
    }

    /// `cursor`: the index of the first VMA not ending at or below the last address visited
    /// (entries are visited in address order, so the VMA of each pte is found by advancing it).
    /// `again`: a shared table already walked from another entry (its entries' maps are
    /// tallied once).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        m: &Machine,
        mm: usize,
        table: u32,
        level: u32,
        base: u64,
        cursor: &mut usize,
        again: bool,
    ) -> Result<(), Violation> {
        let span = m.entry_span(level);
        for (i, &e) in m.frames.table(table).iter().enumerate() {
            if !e.mapped() {
                continue;
            }
            let va = base + i as u64 * span;
            if level == 1 {
                if e.huge() {
                    self.huge_leaf(m, mm, va, e, cursor, !again)?;
                    continue;
                }
                self.links.push((e.pfn, mm, va));
            }
            if level > 0 {
                let want = Owner::Table { level: level as u8 - 1 };
                let got = m.frames.frame(e.pfn).owner;
                if got != want {
                    return violation(
                        Oracle::UseAfterFree,
                        format!(
                            "mm {mm}: level-{level} entry for {va:#x} points at frame {} which is {got:?}, not a level-{} table",
                            e.pfn,
                            level - 1
                        ),
                    );
                }
                self.tally(e.pfn, true);
                // A shared table's entries map their pages once, however many mms link it
                // (each still counts them in its rss and hugetlb count).
                let again = again || self.table_refs[e.pfn as usize] > 1;
                self.walk(m, mm, e.pfn, level - 1, va, cursor, again)?;
                continue;
            }
            if e.special() {
                if e.pfn != ZERO_PFN {
                    return violation(
                        Oracle::Refcount,
                        format!("mm {mm}: special pte at {va:#x} maps frame {}", e.pfn),
                    );
                }
                continue;
            }
            let owner = m.frames.get(e.pfn).map(|f| f.owner);
            let Some(kind) = owner.and_then(|o| m.rss_kind_of(o)) else {
                return violation(
                    Oracle::UseAfterFree,
                    format!("mm {mm}: pte at {va:#x} maps frame {} which is {owner:?}", e.pfn),
                );
            };
            let vmas = &m.mms[mm].vmas;
            while *cursor < vmas.len() && vmas[*cursor].end <= va {
                *cursor += 1;
            }
            let Some(v) = vmas.get(*cursor).filter(|v| v.start <= va) else {
                return violation(
                    Oracle::UseAfterFree,
                    format!(
                        "mm {mm}: pte at {va:#x} maps frame {} but no VMA covers the address",
                        e.pfn
                    ),
                );
            };
            if let Some(why) = pte_exceeds_vma(m, v, e) {
                // What Linux promises through the VMA (a store that should fault, a private
                // write reaching the file) is already broken, before any access shows it.
                return violation(Oracle::Spec, format!("mm {mm}: pte at {va:#x} (frame {}) {why}", e.pfn));
            }
            if let Some(Owner::Cache { file, index }) = owner {
                if !(v.file == Some(file) && v.index_of(va) == index) {
                    return violation(
                        Oracle::Refcount,
                        format!(
                            "mm {mm}: pte at {va:#x} maps page {index} of file {file} (frame {}) which its VMA does not map there",
                            e.pfn
                        ),
                    );
                }
            }
            if !again {
                self.tally(e.pfn, false);
            }
            self.rss[mm][kind] += 1;
        }
        Ok(())
    }

    /// A hugetlb pmd leaf at `va` of `mm`: it heads a live unit, its VMA is a hugetlb VMA
    /// covering the whole huge page, every frame of the unit is what the VMA maps there (an
    /// anonymous copy, or the file's page at its index) and is granted no more than the VMA
    /// allows. Each frame is tallied as mapped once (`first`), and the unit's pages counted in
    /// the mm's hugetlb count.
    fn huge_leaf(
        &mut self,
        m: &Machine,
        mm: usize,
        va: u64,
        e: Entry,
        cursor: &mut usize,
        first: bool,
    ) -> Result<(), Violation> {
        let hps = m.cfg.huge_page_size();
        let Some(frames) = m.unit_checked(e.pfn) else {
            return violation(
                Oracle::UseAfterFree,
                format!(
                    "mm {mm}: hugetlb pmd leaf at {va:#x} maps frame {}, which heads no live huge page",
                    e.pfn
                ),
            );
        };
        let vmas = &m.mms[mm].vmas;
        while *cursor < vmas.len() && vmas[*cursor].end <= va {
            *cursor += 1;
        }
        let Some(v) = vmas
            .get(*cursor)
            .filter(|v| v.start <= va && va + hps <= v.end && v.hugetlb())
        else {
            return violation(
                Oracle::UseAfterFree,
                format!(
                    "mm {mm}: hugetlb pmd leaf at {va:#x} maps frame {} but no hugetlb VMA covers [{va:#x}, {:#x})",
                    e.pfn,
                    va + hps
                ),
            );
        };
        for (k, &p) in frames.iter().enumerate() {
            let pva = va + k as u64 * PAGE_SIZE;
            match m.frames.frame(p).owner {
                Owner::Anon => {}
                Owner::Cache { file, index } if v.file == Some(file) && v.index_of(pva) == index => {}
                o => {
                    return violation(
                        Oracle::Refcount,
                        format!("mm {mm}: hugetlb leaf at {va:#x} maps frame {p} ({o:?}) at {pva:#x}, which its VMA does not map there"),
                    )
                }
            }
            let sub = Entry {
                pfn: p,
                flags: e.flags & !E_HUGE,
            };
            if let Some(why) = pte_exceeds_vma(m, v, sub) {
                return violation(
                    Oracle::Spec,
                    format!("mm {mm}: hugetlb leaf at {va:#x} (frame {p} at {pva:#x}) {why}"),
                );
            }
            if first {
                self.tally(p, false);
            }
        }
        self.hugetlb[mm] += frames.len() as u64;
        Ok(())
    }

    /// `rss`: each mm's counters equal the recount of its mapped user ptes, by kind (all
    /// zero once the mm is gone).
    fn check_rss(&self, m: &Machine) -> Result<(), Violation> {
        for (mi, mm) in m.mms.iter().enumerate() {
            if self.hugetlb[mi] != mm.hugetlb {
                return violation(
                    Oracle::Rss,
                    format!(
                        "mm {mi}: hugetlb count is {} but {} pages are mapped by the hugetlb leaves of its tables",
                        mm.hugetlb, self.hugetlb[mi]
                    ),
                );
            }
            for (k, name) in RSS_NAMES.iter().enumerate() {
                if self.rss[mi][k] != mm.rss[k] {
                    return violation(
                        Oracle::Rss,
                        format!(
                            "mm {mi}: rss counter {name} is {} but {} {name} pages are mapped",
                            mm.rss[k], self.rss[mi][k]
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// `refcount`: map counts equal the ptes mapping each page; reference counts equal page
    /// cache membership plus maps plus the pins running kernel paths keep across scheduling
    /// points (none survive an operation); tables are referenced once; nothing maps or
    /// references a frame that is not allocated.
    fn check_refcount(&mut self, m: &Machine) -> Result<(), Violation> {
        for &pfn in &self.touched {
            if m.frames.frame(pfn).owner == Owner::Free {
                return violation(
                    Oracle::UseAfterFree,
                    format!("frame {pfn} is free but still mapped or referenced"),
                );
            }
        }
        // Which frames the page cache holds where their owner says (one pass over the
        // caches instead of a lookup per frame), and the first entry holding a frame that is
        // not that page (reported last).
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.cached.fill(0);
            self.stamp = 1;
        }
        let mut stray = None;
        for (f, file) in m.files.iter().enumerate() {
            for (&index, &pfn) in &file.cache {
                if m.frames.frame(pfn).owner == (Owner::Cache { file: f as u32, index }) {
                    self.cached[pfn as usize] = self.stamp;
                } else if stray.is_none() {
                    stray = Some((f, index, pfn));
                }
            }
        }
        // Tables first: a table no entry links any more (its pages' counts still include
        // its ptes) is the cause to report, not the counts it leaves behind. One pass: the
        // first page found wrong is reported once no table is.
        let mut first_page = None;
        for pfn in m.frames.allocated() {
            let fr = &m.frames.frame(pfn);
            if let Owner::Table { level } = fr.owner {
                let linked = self.table_refs[pfn as usize] + self.pending(pfn) as u32;
                if linked == 0 {
                    return violation(
                        Oracle::ShareCount,
                        format!(
                            "{} table frame {pfn} (share count {}) is allocated but no entry links it: it was not freed with its last link",
                            ["pte", "pmd", "pud", "pgd"][level as usize],
                            fr.maps
                        ),
                    );
                }
                if fr.maps != linked {
                    return violation(
                        Oracle::ShareCount,
                        format!(
                            "page table frame {pfn} has share count {} but {linked} entries link it",
                            fr.maps
                        ),
                    );
                }
                if fr.refs != 1 {
                    return violation(
                        Oracle::Refcount,
                        format!("page table frame {pfn} has reference count {} (expected 1)", fr.refs),
                    );
                }
                // A pmd table linked more than once: hugetlb pmd sharing's eligibility.
                if level == 1 && linked > 1 {
                    if let Some(why) = m.pmd_share_violation(pfn) {
                        return violation(Oracle::ShareCount, why);
                    }
                }
            } else if first_page.is_none() && self.page_counts(m, pfn).is_err() {
                first_page = Some(pfn);
            }
        }
        if let Some(pfn) = first_page {
            return self.page_counts(m, pfn);
        }
        if let Some((f, index, pfn)) = stray {
            return violation(
                Oracle::UseAfterFree,
                format!(
                    "page cache of file {f} at page {index} holds frame {pfn}, which is {:?}",
                    m.frames.frame(pfn).owner
                ),
            );
        }
        Ok(())
    }

    /// Links to pte table `table` that running tasks have counted but not made yet (a share
    /// count raised across a scheduling point, `Task::share_pending`).
    fn pending(&self, table: u32) -> usize {
        self.pending.iter().filter(|&&p| p == table).count()
    }

    /// `refcount` of one allocated frame that is not a page table (a table's map count is its
    /// share count, checked with its reference in `check_refcount`).
    fn page_counts(&self, m: &Machine, pfn: u32) -> Result<(), Violation> {
        let fr = &m.frames.frame(pfn);
        let maps = self.maps[pfn as usize];
        let pins = self.pins[pfn as usize];
        let in_cache = self.cached[pfn as usize] == self.stamp;
        let (want_refs, want_maps) = match fr.owner {
            Owner::Free => unreachable!("frame {pfn} is free but marked allocated"),
            Owner::Table { .. } => unreachable!("frame {pfn} is a page table"),
            Owner::Anon => (maps + pins, maps),
            // Truncated (or reclaimed) while a running path still holds it: only its pins
            // remain (folio->mapping is gone).
            Owner::Cache { .. } if !in_cache && pins > 0 => (pins, 0),
            Owner::Cache { file, index } => {
                if !in_cache {
                    return violation(
                        Oracle::Refcount,
                        format!("frame {pfn} claims page {index} of file {file} but is not in its page cache"),
                    );
                }
                (maps + 1 + pins, maps)
            }
        };
        if fr.maps != want_maps || fr.refs != want_refs {
            return violation(
                Oracle::Refcount,
                format!(
                    "frame {pfn} ({:?}): map count {} and reference count {}, but {} ptes map it (expected references {})",
                    fr.owner, fr.maps, fr.refs, maps, want_refs
                ),
            );
        }
        if fr.owner == Owner::Anon && maps + pins == 0 {
            return violation(
                Oracle::Refcount,
                format!("anonymous frame {pfn} is allocated but nothing maps it"),
            );
        }
        Ok(())
    }
}

/// What `mm` maps over a shared pte table's range `[base, base + span)`: (file, page at
/// `base`, flags), if one file mapping covers the whole range (VMAs split inside it, as a
/// split that a failed munmap leaves, count as long as they go on contiguously in the file
/// with the same flags); else why not.
fn covering(m: &Machine, mm: usize, base: u64, span: u64) -> Result<(u32, u64, u32), String> {
    let vmas = &m.mms[mm].vmas;
    let Some(i) = m.mms[mm].find(base) else {
        return Err("no VMA maps the start of its range".to_string());
    };
    let v = vmas[i];
    let (Some(file), false) = (v.file, v.hugetlb()) else {
        return Err("its VMA is not a file mapping".to_string());
    };
    let what = (file, v.index_of(base), v.share_flags());
    let mut end = v.end;
    for w in &vmas[i + 1..] {
        if end >= base + span || w.start != end {
            break;
        }
        if w.file != v.file || w.share_flags() != what.2 || w.index_of(w.start) != what.1 + (w.start - base) / PAGE_SIZE
        {
            break;
        }
        end = w.end;
    }
    if end < base + span {
        return Err(format!(
            "its VMAs cover [{:#x}, {end:#x}) of the table's range [{base:#x}, {:#x}), not all of it",
            v.start.max(base),
            base + span
        ));
    }
    Ok(what)
}

/// `tlb`: no TLB entry on any CPU reaches a freed or reused frame, and once an operation
/// that changes ptes has returned (it holds mmap_lock for writing until then), none grants
/// more than the pte now grants.
fn check_tlb(m: &Machine) -> Result<(), Violation> {
    for (cpu, c) in m.cpus.iter().enumerate() {
        for e in &c.tlb {
            let va = e.vpn * PAGE_SIZE;
            let mm = e.mm as usize;
            if e.pfn != ZERO_PFN {
                let fr = &m.frames.frame(e.pfn);
                if fr.gen != e.gen || fr.owner == Owner::Free {
                    return violation(
                        Oracle::Tlb,
                        format!("CPU {cpu}: TLB entry for {va:#x} of mm {mm} still reaches frame {}, which was freed or reused", e.pfn),
                    );
                }
            }
            if m.locks.write_held(LockId::MmapLock(mm as u32)) {
                continue; // between clearing the pte and the flush of a running operation
            }
            if !m.mms[mm].live {
                return violation(
                    Oracle::Tlb,
                    format!(
                        "CPU {cpu}: TLB entry for {va:#x} of mm {mm} outlived its mm (frame {})",
                        e.pfn
                    ),
                );
            }
            let pte = m.pte(mm, va);
            if !pte.present() || pte.pfn != e.pfn {
                return violation(
                    Oracle::Tlb,
                    format!(
                        "CPU {cpu}: TLB entry for {va:#x} of mm {mm} maps frame {} but the pte {}",
                        e.pfn,
                        describe(pte)
                    ),
                );
            }
            if e.write && !pte.writable() {
                return violation(
                    Oracle::Tlb,
                    format!(
                        "CPU {cpu}: TLB entry for {va:#x} of mm {mm} grants write to frame {} but the pte is read-only",
                        e.pfn
                    ),
                );
            }
        }
    }
    Ok(())
}

/// What a user pte may not grant beyond its VMA, if it does: write without VM_WRITE, access
/// in a PROT_NONE VMA, write to a page-cache page through a private mapping, or write to an
/// anonymous page that another mapping still shares (copy-on-write not broken).
fn pte_exceeds_vma(m: &Machine, v: &Vma, e: Entry) -> Option<&'static str> {
    if e.writable() && !v.writable() {
        return Some("is writable in a VMA without write permission");
    }
    if e.present() && !v.readable() {
        return Some("is accessible in a PROT_NONE VMA");
    }
    if e.writable() && !v.shared() {
        let fr = &m.frames.frame(e.pfn);
        if matches!(fr.owner, Owner::Cache { .. }) {
            return Some("lets a private mapping write the page cache");
        }
        // Pins a kernel path holds (get_user_pages) do not share the page.
        let pinned = || m.tasks.iter().flat_map(|t| &t.pins).filter(|&&p| p == e.pfn).count() as u32;
        if fr.owner == Owner::Anon && (fr.maps != 1 || (fr.refs != 1 && fr.refs != 1 + pinned())) {
            return Some("is writable though the anonymous page is shared (copy-on-write not broken)");
        }
    }
    None
}

fn describe(e: crate::machine::Entry) -> String {
    if e.present() {
        format!("maps frame {}", e.pfn)
    } else if e.mapped() {
        format!("is PROT_NONE (frame {})", e.pfn)
    } else {
        "is empty".to_string()
    }
}

/// `leak`: once every task has exited, only page-cache pages of files remain allocated.
pub(crate) fn check_leak(m: &Machine) -> Result<(), Violation> {
    if m.tasks.iter().any(|t| t.state == TaskState::Alive) {
        return Ok(());
    }
    for pfn in m.frames.allocated() {
        match m.frames.frame(pfn).owner {
            Owner::Free => {}
            Owner::Cache { file, .. } if !m.files[file as usize].shmem => {}
            o => {
                return violation(
                    Oracle::Leak,
                    format!("every task has exited but frame {pfn} is still allocated ({o:?})"),
                )
            }
        }
    }
    Ok(())
}

/// The `kmap` oracle's pool rules: each slot's count is 0 (free: no page, in no kernel TLB)
/// or 1 + the kmaps of its page that tasks hold; page->virtual and the slots agree; a CPU's
/// kernel TLB entry of a slot names the page the slot maps (an entry that outlived a remap
/// means a missing flush_all_zero_pkmaps).
pub(crate) fn check_kmap(m: &Machine) -> Result<(), Violation> {
    let k = &m.kmap;
    for (slot, (&count, &page)) in k.count().iter().zip(k.page()).enumerate() {
        let bad = match page {
            None if count != 0 => Some(format!("pkmap slot {slot} has count {count} but maps no page")),
            None => None,
            Some(p) if count == 0 => Some(format!("pkmap slot {slot} is free but still maps frame {p}")),
            Some(p) if k.virt(p) != Some(slot) => Some(format!(
                "pkmap slot {slot} maps frame {p}, whose virtual address is elsewhere"
            )),
            Some(p) => {
                let users = k.held_all().filter(|&q| q == p).count() as u32;
                (count != 1 + users)
                    .then(|| format!("pkmap slot {slot} of frame {p} has count {count} for {users} kmaps held"))
            }
        };
        if let Some(message) = bad {
            return violation(Oracle::Kmap, message);
        }
    }
    for (cpu, tlb) in k.ktlb().iter().enumerate() {
        for (slot, &e) in tlb.iter().enumerate() {
            if let Some(p) = e {
                if k.page()[slot] != Some(p) {
                    return violation(
                        Oracle::Kmap,
                        format!(
                            "CPU {cpu}'s kernel TLB maps pkmap slot {slot} to frame {p}, but the slot maps {:?} (a count went to 0 without a flush)",
                            k.page()[slot]
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}
