//! Physical memory: `frames` page frames, the first `frames - highmem` of them lowmem and the
//! rest highmem, plus the shared zero page outside them.
//!
//! Invariants kept here:
//! - A free frame has `refs == 0`, `maps == 0`, owner [`Owner::Free`], no content and sits on
//!   exactly one free list (lowmem or highmem by its number).
//! - Every allocation or free of a frame bumps its generation, so a stale reference (a TLB
//!   entry, a pointer kept across a sleep) to a reused frame is detectable.
//! - Allocation order is deterministic: lowest free frame number of the preferred zone first.
//! - Contents are allocated lazily: a frame reads as zeros until its first write, and page
//!   buffers are recycled through pools so a run allocates nothing for pages never touched.
//! - A page buffer knows the extent its writers may have touched ([`Bytes`]): every byte
//!   outside it is zero. A buffer goes back to the pool as it is, extent and all, and is
//!   cleared only where its next user does not overwrite it ([`Frames::take_for`]): so
//!   taking one, copying one or zeroing a page costs what was written, not a whole page, and
//!   a page read in whole (a file page) reuses a buffer without clearing it first.

use crate::Config;

/// A frame number.
pub(crate) type Pfn = u32;
/// The shared zero page: mapped read-only by read faults of private anonymous memory.
pub(crate) const ZERO_PFN: Pfn = u32::MAX;
pub(crate) const PAGE: usize = 4096;
pub(crate) type Page = [u8; PAGE];

/// Present (accessible by the hardware walk).
pub(crate) const E_PRESENT: u8 = 1;
/// Writable.
pub(crate) const E_WRITE: u8 = 2;
/// Dirty (set by the hardware walk on a write).
pub(crate) const E_DIRTY: u8 = 4;
/// Maps the zero page (`pte_special`): no refcount, no mapcount, no rss.
pub(crate) const E_SPECIAL: u8 = 8;
/// Mapped but inaccessible (`PROT_NONE`): counted like a present entry, not walkable.
pub(crate) const E_PROTNONE: u8 = 16;
/// A pmd entry that maps a huge page (a hugetlb unit of `ptrs` frames, `pfn` its head) rather
/// than pointing at a pte table (`pmd_leaf`).
pub(crate) const E_HUGE: u8 = 32;

/// One page-table entry (any level). Upper levels use only `E_PRESENT`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Entry {
    pub pfn: Pfn,
    pub flags: u8,
}

impl Entry {
    pub const NONE: Entry = Entry { pfn: 0, flags: 0 };
    /// The entry maps something (walkable or `PROT_NONE`).
    pub fn mapped(self) -> bool {
        self.flags & (E_PRESENT | E_PROTNONE) != 0
    }
    pub fn present(self) -> bool {
        self.flags & E_PRESENT != 0
    }
    pub fn writable(self) -> bool {
        self.flags & E_WRITE != 0
    }
    pub fn dirty(self) -> bool {
        self.flags & E_DIRTY != 0
    }
    pub fn special(self) -> bool {
        self.flags & E_SPECIAL != 0
    }
    /// A pmd leaf mapping a huge page.
    pub fn huge(self) -> bool {
        self.flags & E_HUGE != 0
    }
}

/// What a frame is used for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Owner {
    Free,
    /// An anonymous page (private memory, copy-on-write copies).
    Anon,
    /// A page of the page cache of `file` at page `index`.
    Cache {
        file: u32,
        index: u64,
    },
    /// A page table of `level` (0 pte, 1 pmd, 2 pud, 3 pgd).
    Table {
        level: u8,
    },
}

pub(crate) enum Data {
    Zero,
    Bytes(Bytes),
    Table(Box<[Entry]>),
}

/// A page's contents: every byte outside `lo..hi` is zero.
pub(crate) struct Bytes {
    b: Box<Page>,
    lo: u16,
    hi: u16,
}

impl Bytes {
    /// A zero page buffer (`b` must be all zeros) with nothing written yet.
    fn clean(b: Box<Page>) -> Bytes {
        debug_assert!(b.iter().all(|&x| x == 0), "a page buffer is not zero");
        Bytes {
            b,
            lo: PAGE as u16,
            hi: 0,
        }
    }

    /// A buffer whose every byte may be non-zero (a written-back disk page), for the pool.
    pub fn whole(b: Box<Page>) -> Bytes {
        Bytes {
            b,
            lo: 0,
            hi: PAGE as u16,
        }
    }

    /// Widens the written extent to cover `r`.
    fn widen(&mut self, r: &std::ops::Range<usize>) {
        debug_assert!(r.start <= r.end && r.end <= PAGE);
        if r.start < r.end {
            self.lo = self.lo.min(r.start as u16);
            self.hi = self.hi.max(r.end as u16);
        }
    }

    /// The buffer, zero outside `written` (which its next user overwrites whole): only the
    /// part of the extent outside `written` is cleared.
    fn reuse_for(mut self, written: &std::ops::Range<usize>) -> Box<Page> {
        let (lo, hi) = (self.lo as usize, self.hi as usize);
        if lo < hi {
            if written.start >= written.end {
                self.b[lo..hi].fill(0);
            } else {
                self.b[lo..hi.min(written.start).max(lo)].fill(0);
                self.b[lo.max(written.end).min(hi)..hi].fill(0);
            }
        }
        self.b
    }
}

pub(crate) struct Frame {
    pub gen: u32,
    /// References: page cache membership, each mapping entry, each pin. A page table has
    /// one.
    pub refs: u32,
    /// Entries mapping the page (a pmd leaf maps each frame of its unit once). For a page
    /// table: its share count, the upper-level entries (across all mms) pointing at it.
    pub maps: u32,
    pub owner: Owner,
    pub dirty: bool,
    pub data: Data,
}

impl Frame {
    /// A frame as a new machine starts it: free, generation 0, no content.
    fn new() -> Frame {
        Frame {
            gen: 0,
            refs: 0,
            maps: 0,
            owner: Owner::Free,
            dirty: false,
            data: Data::Zero,
        }
    }

    fn pristine(&self) -> bool {
        let Frame {
            gen,
            refs,
            maps,
            owner,
            dirty,
            data,
        } = self;
        (*gen, *refs, *maps, *owner, *dirty) == (0, 0, 0, Owner::Free, false) && matches!(data, Data::Zero)
    }
}

/// Buffers kept from one machine to the next (see `Reference`): the frame array (every frame
/// in it as a new machine starts it: free, generation 0), the free lists and allocation
/// bitmap, page contents and page-table arrays (of `ptrs` entries). The contents of the
/// lists are garbage; every user initializes what it takes.
#[derive(Default)]
pub(crate) struct Pools {
    frames: Vec<Frame>,
    touched: Vec<Pfn>,
    free_low: Vec<Pfn>,
    free_high: Vec<Pfn>,
    allocated: Vec<u64>,
    /// Page buffers, each zero outside its extent (see [`Bytes`]).
    pub pages: Vec<Bytes>,
    tables: Vec<Box<[Entry]>>,
    ptrs: usize,
}

/// Which zone an allocation prefers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Zone {
    /// Highmem first, then lowmem (user pages, page cache, pte pages under highpte).
    High,
    /// Lowmem only (upper page tables, pte pages without highpte).
    Low,
}

pub(crate) struct Frames {
    /// Private: every change goes through a `&mut self` method here, each of which bumps
    /// `changes` (the checker's skip relies on it: `unchanged.rs`).
    f: Vec<Frame>,
    /// Bumped by every allocation, free, `frame_mut` and `table_mut`: while it stays the
    /// same, no frame's metadata and no page-table entry changed.
    pub changes: u64,
    low_count: u32,
    /// Free frame numbers, highest first so `pop` takes the lowest.
    free_low: Vec<Pfn>,
    free_high: Vec<Pfn>,
    /// Page buffers, each zero outside its extent (see [`Bytes`]).
    page_pool: Vec<Bytes>,
    table_pool: Vec<Box<[Entry]>>,
    ptrs: usize,
    /// One bit per frame, set while it is allocated (the oracles visit only these).
    allocated: Vec<u64>,
    /// Frames freed so far (what a task sleeping for memory waits to see change).
    pub frees: u64,
    /// Every frame allocated at least once (the others are as `Frame::new` makes them), so the
    /// next machine is built by resetting these alone.
    touched: Vec<Pfn>,
}

impl Frames {
    /// Physical memory for `cfg`, built from the buffers a previous machine gave back.
    pub fn new(cfg: &Config, mut pools: Pools) -> Frames {
        let n = cfg.frames;
        let low_count = n - cfg.highmem;
        let mut f = std::mem::take(&mut pools.frames);
        debug_assert!(f.iter().all(Frame::pristine), "a pooled frame was not reset");
        f.truncate(n as usize);
        f.resize_with(n as usize, Frame::new);
        pools.touched.clear();
        if pools.ptrs != cfg.ptrs as usize {
            pools.tables.clear();
        }
        pools.free_low.clear();
        pools.free_low.extend((0..low_count).rev());
        pools.free_high.clear();
        pools.free_high.extend((low_count..n).rev());
        pools.allocated.clear();
        pools.allocated.resize((n as usize).div_ceil(64), 0);
        Frames {
            f,
            low_count,
            free_low: pools.free_low,
            free_high: pools.free_high,
            page_pool: pools.pages,
            table_pool: pools.tables,
            ptrs: cfg.ptrs as usize,
            allocated: pools.allocated,
            frees: 0,
            changes: 0,
            touched: pools.touched,
        }
    }

    /// Gives every buffer back for the next machine (the frames' contents included), every
    /// frame reset as a new machine starts it.
    pub fn into_pools(mut self) -> Pools {
        for &pfn in &self.touched {
            let fr = std::mem::replace(&mut self.f[pfn as usize], Frame::new());
            match fr.data {
                Data::Zero => {}
                Data::Bytes(b) => self.page_pool.push(b),
                Data::Table(t) => self.table_pool.push(t),
            }
        }
        Pools {
            frames: self.f,
            touched: self.touched,
            free_low: self.free_low,
            free_high: self.free_high,
            allocated: self.allocated,
            pages: self.page_pool,
            tables: self.table_pool,
            ptrs: self.ptrs,
        }
    }

    /// How many frames are allocated.
    pub fn allocated_count(&self) -> usize {
        self.allocated.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The allocated frames, in increasing order.
    pub fn allocated(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.allocated.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some((w * 64) as Pfn + b)
            })
        })
    }

    pub fn is_highmem(&self, pfn: Pfn) -> bool {
        pfn != ZERO_PFN && pfn >= self.low_count
    }

    /// Takes a free highmem frame only (`None` when highmem is exhausted).
    pub fn alloc_highmem(&mut self, owner: Owner) -> Option<Pfn> {
        if self.free_high.is_empty() {
            return None;
        }
        self.alloc(Zone::High, owner)
    }

    /// Takes a free frame (refcount 1, zero content). `None` when the zone is exhausted.
    pub fn alloc(&mut self, zone: Zone, owner: Owner) -> Option<Pfn> {
        assert!(owner != Owner::Free);
        self.changes += 1;
        let pfn = match zone {
            Zone::High => self.free_high.pop().or_else(|| self.free_low.pop()),
            Zone::Low => self.free_low.pop(),
        }?;
        let fr = &mut self.f[pfn as usize];
        assert!(
            fr.owner == Owner::Free && fr.refs == 0 && fr.maps == 0,
            "frame {pfn} on a free list is in use"
        );
        if fr.gen == 0 {
            self.touched.push(pfn);
        }
        fr.gen = fr.gen.wrapping_add(1);
        fr.owner = owner;
        fr.refs = 1;
        fr.dirty = false;
        self.allocated[pfn as usize / 64] |= 1 << (pfn % 64);
        if let Owner::Table { .. } = owner {
            // A table's map count is its share count: the one entry (or mm's pgd pointer)
            // about to link it.
            fr.maps = 1;
            let t = match self.table_pool.pop() {
                Some(mut t) => {
                    t.fill(Entry::NONE);
                    t
                }
                None => vec![Entry::NONE; self.ptrs].into_boxed_slice(),
            };
            fr.data = Data::Table(t);
        }
        Some(pfn)
    }

    /// Returns a frame whose last reference is gone to its free list.
    pub fn free(&mut self, pfn: Pfn) {
        self.changes += 1;
        let fr = &mut self.f[pfn as usize];
        assert!(
            fr.refs == 0 && fr.maps == 0,
            "freeing frame {pfn} with refs {} maps {}",
            fr.refs,
            fr.maps
        );
        assert!(fr.owner != Owner::Free, "double free of frame {pfn}");
        if let Data::Table(t) = &fr.data {
            assert!(
                t.iter().all(|e| !e.mapped()),
                "freeing page table {pfn} that still has entries"
            );
        }
        fr.gen = fr.gen.wrapping_add(1);
        fr.owner = Owner::Free;
        fr.dirty = false;
        self.frees += 1;
        match std::mem::replace(&mut fr.data, Data::Zero) {
            Data::Zero => {}
            Data::Bytes(b) => self.page_pool.push(b),
            Data::Table(t) => self.table_pool.push(t),
        }
        self.allocated[pfn as usize / 64] &= !(1 << (pfn % 64));
        if pfn < self.low_count {
            self.free_low.push(pfn);
        } else {
            self.free_high.push(pfn);
        }
    }

    pub fn byte(&self, pfn: Pfn, off: usize) -> u8 {
        if pfn == ZERO_PFN {
            return 0;
        }
        match &self.f[pfn as usize].data {
            Data::Zero => 0,
            Data::Bytes(b) => b.b[off],
            Data::Table(_) => panic!("byte access to page table {pfn}"),
        }
    }

    /// Bytes `range` of the page, materialized for writing (the extent widened to cover them).
    pub fn bytes_mut(&mut self, pfn: Pfn, range: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.page_mut(pfn, range.clone())[range]
    }

    /// The page's bytes, materialized for writing: the caller writes only within `written`
    /// (private: a write outside it would leave bytes the pool's zeroing misses).
    fn page_mut(&mut self, pfn: Pfn, written: std::ops::Range<usize>) -> &mut Page {
        assert!(pfn != ZERO_PFN, "write to the zero page");
        let owner = self.f[pfn as usize].owner;
        assert!(
            matches!(owner, Owner::Anon | Owner::Cache { .. }),
            "byte write to frame {pfn} owned by {owner:?}"
        );
        if let Data::Zero = self.f[pfn as usize].data {
            let b = Bytes::clean(self.take_for(0..0));
            self.f[pfn as usize].data = Data::Bytes(b);
        }
        match &mut self.f[pfn as usize].data {
            Data::Bytes(b) => {
                b.widen(&written);
                &mut b.b
            }
            _ => unreachable!(),
        }
    }

    /// Copies the whole content of `from` into `to` (COW, read-in).
    pub fn copy_page(&mut self, from: Pfn, to: Pfn) {
        let (lo, hi) = match self.f.get(from as usize).map(|fr| &fr.data) {
            Some(Data::Bytes(b)) if from != ZERO_PFN && b.lo < b.hi => (b.lo as usize, b.hi as usize),
            _ => {
                self.zero_page(to);
                return;
            }
        };
        let mut buf = self.take_for(lo..hi);
        if let Data::Bytes(b) = &self.f[from as usize].data {
            buf[lo..hi].copy_from_slice(&b.b[lo..hi]);
        }
        self.put_bytes(to, buf, lo..hi);
    }

    /// Copies `n` bytes of `from` at `fo` to `to` at `to_off`, forward, byte by byte in effect
    /// (the frames may be the same: with `fo < to_off < fo + n` bytes repeat).
    pub fn copy_bytes(&mut self, from: Pfn, fo: usize, to: Pfn, to_off: usize, n: usize) {
        let dst = to_off..to_off + n;
        if from == to {
            let p = self.page_mut(to, dst);
            for i in 0..n {
                p[to_off + i] = p[fo + i];
            }
            return;
        }
        if self.bytes(from).is_none() {
            if self.bytes(to).is_some() {
                self.bytes_mut(to, dst).fill(0);
            }
            return;
        }
        self.page_mut(to, dst.clone());
        let (src, dest) = if from < to {
            let (a, b) = self.f.split_at_mut(to as usize);
            (&a[from as usize], &mut b[0])
        } else {
            let (a, b) = self.f.split_at_mut(from as usize);
            (&b[0], &mut a[to as usize])
        };
        if let (Data::Bytes(s), Data::Bytes(d)) = (&src.data, &mut dest.data) {
            d.b[dst].copy_from_slice(&s.b[fo..fo + n]);
        }
    }

    /// Sets the page to all zeros.
    pub fn zero_page(&mut self, pfn: Pfn) {
        let fr = &mut self.f[pfn as usize];
        if let Data::Bytes(b) = std::mem::replace(&mut fr.data, Data::Zero) {
            self.page_pool.push(b);
        }
    }

    /// A page buffer from the pool for content that is `written` (the caller overwrites
    /// every byte of it, then hands the buffer to [`Frames::put_bytes`] or keeps it): zero
    /// outside `written`, anything inside.
    pub fn take_for(&mut self, written: std::ops::Range<usize>) -> Box<Page> {
        let b = match self.page_pool.pop() {
            Some(b) => b.reuse_for(&written),
            None => Box::new([0u8; PAGE]),
        };
        debug_assert!(
            (0..PAGE).all(|i| written.contains(&i) || b[i] == 0),
            "a page buffer is not zero outside what its user writes"
        );
        b
    }

    /// Installs `buf` (a [`Frames::take_for`] of `written`, all of it written) as the
    /// content of `pfn`.
    pub fn put_bytes(&mut self, pfn: Pfn, buf: Box<Page>, written: std::ops::Range<usize>) {
        let mut b = Bytes {
            b: buf,
            lo: PAGE as u16,
            hi: 0,
        };
        b.widen(&written);
        debug_assert!(
            (0..PAGE).all(|i| written.contains(&i) || b.b[i] == 0),
            "bytes outside the written extent"
        );
        let fr = &mut self.f[pfn as usize];
        if let Data::Bytes(old) = std::mem::replace(&mut fr.data, Data::Bytes(b)) {
            self.page_pool.push(old);
        }
    }

    /// The content as a slice, `None` for all zeros.
    pub fn bytes(&self, pfn: Pfn) -> Option<&Page> {
        if pfn == ZERO_PFN {
            return None;
        }
        match &self.f[pfn as usize].data {
            Data::Bytes(b) => Some(&b.b),
            _ => None,
        }
    }

    /// A copy of `pfn`'s content in a pooled buffer (`None` while it reads as zeros): only
    /// the extent its writers touched is copied, the buffer being zero elsewhere.
    pub fn copy_out(&mut self, pfn: Pfn) -> Option<Box<Page>> {
        let (lo, hi) = match self.f.get(pfn as usize).map(|fr| &fr.data) {
            Some(Data::Bytes(b)) if pfn != ZERO_PFN => (b.lo as usize, b.hi as usize),
            _ => return None,
        };
        let mut buf = self.take_for(lo..hi);
        if let (Data::Bytes(b), true) = (&self.f[pfn as usize].data, lo < hi) {
            buf[lo..hi].copy_from_slice(&b.b[lo..hi]);
        }
        Some(buf)
    }

    /// Feeds every frame's metadata and every page table's entries to `h` (the skip's audit,
    /// `unchanged.rs`; page contents are not read by the checker and not hashed).
    pub fn hash_state(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        for fr in &self.f {
            (fr.owner, fr.refs, fr.maps, fr.gen).hash(h);
            if let Data::Table(t) = &fr.data {
                t.hash(h);
            }
        }
    }

    /// Frame `pfn`'s metadata.
    pub fn frame(&self, pfn: Pfn) -> &Frame {
        &self.f[pfn as usize]
    }

    /// Frame `pfn`'s metadata, if there is such a frame.
    pub fn get(&self, pfn: Pfn) -> Option<&Frame> {
        self.f.get(pfn as usize)
    }

    /// Frame `pfn`'s metadata, to change it (counts as a change: `changes`).
    pub fn frame_mut(&mut self, pfn: Pfn) -> &mut Frame {
        self.changes += 1;
        &mut self.f[pfn as usize]
    }

    pub fn table(&self, pfn: Pfn) -> &[Entry] {
        match &self.f[pfn as usize].data {
            Data::Table(t) => t,
            _ => panic!("frame {pfn} ({:?}) is not a page table", self.f[pfn as usize].owner),
        }
    }

    pub fn table_mut(&mut self, pfn: Pfn) -> &mut [Entry] {
        self.changes += 1;
        match &mut self.f[pfn as usize].data {
            Data::Table(t) => t,
            _ => panic!("frame {pfn} is not a page table"),
        }
    }
}
