//! A file's page cache: page index -> frame, behind methods that count every change.
//!
//! What it keeps true: the map is private to this module, so no kernel path can add or drop
//! a page without bumping `changes`; the checker's skip of unchanged state (unchanged.rs)
//! compares that count instead of trusting hand-placed hooks. (Today every insert and
//! removal also moves the frame's reference count, so `Frames::changes` moves too; the count
//! keeps the proof from depending on that, e.g. under a bug that forgets the reference.)

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

use super::Pfn;

#[derive(Default)]
pub(crate) struct PageCache {
    pages: BTreeMap<u64, Pfn>,
    /// Bumped by every insert, remove and take.
    changes: u64,
}

impl PageCache {
    /// The frame caching page `index`, if any.
    pub fn get(&self, index: u64) -> Option<Pfn> {
        self.pages.get(&index).copied()
    }

    pub fn contains(&self, index: u64) -> bool {
        self.pages.contains_key(&index)
    }

    /// The cached pages with an index in `range`, in index order.
    pub fn range(&self, range: impl RangeBounds<u64>) -> btree_map::Range<'_, u64, Pfn> {
        self.pages.range(range)
    }

    /// Caches `pfn` as page `index`; returns the frame it replaces, if any.
    pub fn insert(&mut self, index: u64, pfn: Pfn) -> Option<Pfn> {
        self.changes += 1;
        self.pages.insert(index, pfn)
    }

    /// Drops page `index` from the cache; returns its frame, if it was cached.
    pub fn remove(&mut self, index: u64) -> Option<Pfn> {
        self.changes += 1;
        self.pages.remove(&index)
    }

    /// Empties the cache, returning what it held.
    pub fn take(&mut self) -> BTreeMap<u64, Pfn> {
        self.changes += 1;
        std::mem::take(&mut self.pages)
    }

    /// The number of changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

impl<'a> IntoIterator for &'a PageCache {
    type Item = (&'a u64, &'a Pfn);
    type IntoIter = btree_map::Iter<'a, u64, Pfn>;
    fn into_iter(self) -> Self::IntoIter {
        self.pages.iter()
    }
}

/// Hashes the cached pages only (what the oracles read; `RunOptions::audit_skip`).
impl std::hash::Hash for PageCache {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.pages.hash(h);
    }
}
