//! The oracles that judge the machine from outside after every step: `rss`, `refcount`,
//! `tlb`, `use-after-free` and `leak` (MODEL.md). The `spec` oracle lives in `run.rs`, where
//! the flat spec is driven.
//!
//! Each oracle recomputes what must hold from the page tables and frames themselves, never
//! from the counters it checks, and reports the first difference as a [`Violation`] naming
//! the mm, address, frame or CPU involved. None of them changes any state.

use crate::machine::{Machine, Owner, TaskState, RSS_NAMES, ZERO_PFN};
use crate::{Oracle, Violation, PAGE_SIZE};

fn violation(oracle: Oracle, message: String) -> Result<(), Violation> {
    Err(Violation { oracle, message })
}

/// Per frame: how many user ptes map it, how many upper entries point at it (as a table).
struct Census {
    maps: Vec<u32>,
    table_refs: Vec<u32>,
}

/// Walks every live mm's tables: checks that each entry reaches a frame of the right kind
/// (`use-after-free`), and counts maps and table references.
fn census(m: &Machine) -> Result<Census, Violation> {
    let n = m.frames.f.len();
    let mut c = Census {
        maps: vec![0; n],
        table_refs: vec![0; n],
    };
    for (mi, mm) in m.mms.iter().enumerate() {
        if !mm.live {
            continue;
        }
        let pgd = mm.pgd;
        if m.frames.f[pgd as usize].owner != (Owner::Table { level: 3 }) {
            return Err(Violation {
                oracle: Oracle::UseAfterFree,
                message: format!(
                    "mm {mi}: pgd frame {pgd} is no longer a pgd ({:?})",
                    m.frames.f[pgd as usize].owner
                ),
            });
        }
        c.table_refs[pgd as usize] += 1;
        walk(m, mi, pgd, 3, 0, &mut c)?;
    }
    Ok(c)
}

fn walk(m: &Machine, mm: usize, table: u32, level: u32, base: u64, c: &mut Census) -> Result<(), Violation> {
    let span = m.entry_span(level);
    for (i, e) in m.frames.table(table).iter().enumerate() {
        if !e.mapped() {
            continue;
        }
        let va = base + i as u64 * span;
        if level == 0 {
            if e.special() {
                if e.pfn != ZERO_PFN {
                    return violation(
                        Oracle::Refcount,
                        format!("mm {mm}: special pte at {va:#x} maps frame {}", e.pfn),
                    );
                }
                continue;
            }
            let owner = m.frames.f.get(e.pfn as usize).map(|f| f.owner);
            match owner {
                Some(Owner::Anon) | Some(Owner::Cache { .. }) => c.maps[e.pfn as usize] += 1,
                other => {
                    return violation(
                        Oracle::UseAfterFree,
                        format!("mm {mm}: pte at {va:#x} maps frame {} which is {other:?}", e.pfn),
                    )
                }
            }
            if let Some(Owner::Cache { file, index }) = owner {
                let v = m.mms[mm].find(va).map(|i| m.mms[mm].vmas[i]);
                let ok = v.is_some_and(|v| v.file == Some(file) && v.index_of(va) == index);
                if !ok {
                    return violation(
                        Oracle::Refcount,
                        format!("mm {mm}: pte at {va:#x} maps page {index} of file {file} (frame {}) which its VMA does not map there", e.pfn),
                    );
                }
            }
        } else {
            let want = Owner::Table { level: level as u8 - 1 };
            let got = m.frames.f[e.pfn as usize].owner;
            if got != want {
                return violation(
                    Oracle::UseAfterFree,
                    format!("mm {mm}: level-{level} entry for {va:#x} points at frame {} which is {got:?}, not a level-{} table", e.pfn, level - 1),
                );
            }
            c.table_refs[e.pfn as usize] += 1;
            walk(m, mm, e.pfn, level - 1, va, c)?;
        }
    }
    Ok(())
}

/// All oracles that hold between operations.
pub(crate) fn check(m: &Machine) -> Result<(), Violation> {
    let c = census(m)?;
    check_rss(m)?;
    check_refcount(m, &c)?;
    check_tlb(m)?;
    Ok(())
}

/// `rss`: each mm's counters equal a recount of its mapped user ptes, by kind.
fn check_rss(m: &Machine) -> Result<(), Violation> {
    for (mi, mm) in m.mms.iter().enumerate() {
        let mut count = [0u64; 3];
        if mm.live {
            for (_, _, e) in m.mapped_ptes(mi, 0, m.cfg.task_size()) {
                if !e.special() {
                    count[m.rss_kind(e.pfn)] += 1;
                }
            }
        }
        for k in 0..3 {
            if count[k] != mm.rss[k] {
                return violation(
                    Oracle::Rss,
                    format!(
                        "mm {mi}: rss counter {} is {} but {} {} pages are mapped",
                        RSS_NAMES[k], mm.rss[k], count[k], RSS_NAMES[k]
                    ),
                );
            }
        }
    }
    Ok(())
}

/// `refcount`: map counts equal the ptes mapping each page; reference counts equal page
/// cache membership plus maps (no pins survive an operation); tables are referenced once;
/// free frames have nothing.
fn check_refcount(m: &Machine, c: &Census) -> Result<(), Violation> {
    for (pfn, fr) in m.frames.f.iter().enumerate() {
        let maps = c.maps[pfn];
        let (want_refs, want_maps) = match fr.owner {
            Owner::Free => (0, 0),
            Owner::Anon => (maps, maps),
            Owner::Cache { file, index } => {
                let cached = m.files[file as usize].cache.get(&index) == Some(&(pfn as u32));
                if !cached {
                    return violation(
                        Oracle::Refcount,
                        format!("frame {pfn} claims page {index} of file {file} but is not in its page cache"),
                    );
                }
                (maps + 1, maps)
            }
            Owner::Table { .. } => {
                if c.table_refs[pfn] != 1 {
                    return violation(
                        Oracle::Refcount,
                        format!(
                            "page table frame {pfn} is referenced by {} entries (expected 1)",
                            c.table_refs[pfn]
                        ),
                    );
                }
                (1, 0)
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
        if fr.owner == Owner::Anon && maps == 0 {
            return violation(
                Oracle::Refcount,
                format!("anonymous frame {pfn} is allocated but nothing maps it"),
            );
        }
    }
    for (f, file) in m.files.iter().enumerate() {
        for (&index, &pfn) in &file.cache {
            if m.frames.f[pfn as usize].owner != (Owner::Cache { file: f as u32, index }) {
                return violation(
                    Oracle::UseAfterFree,
                    format!(
                        "page cache of file {f} at page {index} holds frame {pfn}, which is {:?}",
                        m.frames.f[pfn as usize].owner
                    ),
                );
            }
        }
    }
    Ok(())
}

/// `tlb`: once an operation has returned, no TLB entry on any CPU reaches a freed or reused
/// frame or grants more than the pte now grants.
fn check_tlb(m: &Machine) -> Result<(), Violation> {
    for (cpu, c) in m.cpus.iter().enumerate() {
        for e in &c.tlb {
            let va = e.vpn * PAGE_SIZE;
            let mm = e.mm as usize;
            if e.pfn != ZERO_PFN {
                let fr = &m.frames.f[e.pfn as usize];
                if fr.gen != e.gen || fr.owner == Owner::Free {
                    return violation(
                        Oracle::Tlb,
                        format!("CPU {cpu}: TLB entry for {va:#x} of mm {mm} still reaches frame {}, which was freed or reused", e.pfn),
                    );
                }
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
    for (pfn, fr) in m.frames.f.iter().enumerate() {
        match fr.owner {
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
