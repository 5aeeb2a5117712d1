//! Contents of memory objects: the trace's files and the hidden shmem objects behind
//! `MAP_SHARED` anonymous mappings. Sparse: a page is stored only once something wrote it.
//! Besides one byte at a time, contents are read and written as slices within one page.

use std::collections::{BTreeMap, BTreeSet};

use crate::{initial_file_byte, FileId, PAGE_SHIFT, PAGE_SIZE};

/// One page of contents.
pub(super) type Page = Box<[u8; PAGE_SIZE as usize]>;

pub(super) fn zero_page() -> Page {
    Box::new([0u8; PAGE_SIZE as usize])
}

/// Bytes that read as zeros: a [`Private`] page nothing wrote.
static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// A private page's contents (an anonymous page or a copy-on-write copy). Nothing is
/// allocated while every byte is zero: a fresh anonymous page, or a copy of a page that
/// reads as zeros, costs nothing until something writes it.
#[derive(Clone, Debug)]
pub(super) struct Private(Option<Page>);

/// Equal contents (stored or not).
impl PartialEq for Private {
    fn eq(&self, other: &Private) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Private {}

impl Private {
    /// A page of zeros.
    pub const ZERO: Private = Private(None);

    /// Its bytes.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE as usize] {
        match &self.0 {
            Some(p) => p,
            None => &ZEROS,
        }
    }

    /// Its bytes, to be written (stored from then on).
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE as usize] {
        self.0.get_or_insert_with(zero_page)
    }

    /// Its bytes, stored.
    fn into_page(self) -> Page {
        self.0.unwrap_or_else(zero_page)
    }
}

/// A file, or the hidden shmem object of a shared anonymous mapping.
#[derive(Clone, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub(super) struct Object {
    /// The size in bytes (`i_size`).
    pub size: u64,
    /// A hugetlbfs file: faults, truncation and mappings work in huge pages.
    pub huge: bool,
    /// The trace file whose initial pattern unwritten bytes show, if any.
    pattern: Option<FileId>,
    /// Unwritten bytes below this offset show the pattern; at or above it they are 0. Only
    /// ever lowered (by truncation), so a byte that was cut off never comes back.
    pattern_limit: u64,
    /// Written pages, by page index. The bytes of a page past `size` are kept (a store through a
    /// shared mapping can put them there) but are not part of the file.
    pages: BTreeMap<u64, Page>,
    /// hugetlbfs only: huge page indices present in the page cache. A private hugetlb fault on a
    /// huge page that is not present gets a private zeroed page instead of sharing the file's.
    pub instantiated: BTreeSet<u64>,
}

impl Object {
    /// A trace file: pattern bytes up to `size` (zeros for a hugetlbfs file).
    pub fn file(id: FileId, size: u64, huge: bool) -> Object {
        Object {
            size,
            huge,
            pattern: if huge { None } else { Some(id) },
            pattern_limit: if huge { 0 } else { size },
            pages: BTreeMap::new(),
            instantiated: BTreeSet::new(),
        }
    }

    /// The zero-filled shmem object of a `MAP_SHARED` anonymous mapping.
    pub fn shmem(size: u64) -> Object {
        Object {
            size,
            huge: false,
            pattern: None,
            pattern_limit: 0,
            pages: BTreeMap::new(),
            instantiated: BTreeSet::new(),
        }
    }

    /// The byte of the page cache at `off`, ignoring `size` (what a mapping of the page shows).
    pub fn byte(&self, off: u64) -> u8 {
        match self.pages.get(&(off >> PAGE_SHIFT)) {
            Some(p) => p[(off % PAGE_SIZE) as usize],
            None => self.unwritten_byte(off),
        }
    }

    fn unwritten_byte(&self, off: u64) -> u8 {
        match self.pattern {
            Some(f) if off < self.pattern_limit => initial_file_byte(f, off),
            _ => 0,
        }
    }

    /// [`Object::unwritten_byte`] of each byte of `buf`, which starts at `off`.
    fn unwritten_bytes(&self, off: u64, buf: &mut [u8]) {
        let n = self.pattern_bytes(off, buf);
        buf[n..].fill(0);
    }

    /// Writes the pattern bytes at the start of `buf` (which starts at `off`) and returns how
    /// many there are: [`Object::unwritten_byte`] of the rest of `buf` is 0.
    fn pattern_bytes(&self, off: u64, buf: &mut [u8]) -> usize {
        let Some(f) = self.pattern else { return 0 };
        let n = self.pattern_limit.saturating_sub(off).min(buf.len() as u64) as usize;
        fill_pattern(f, off, &mut buf[..n]);
        n
    }

    /// Sets the byte at `off` (size unchanged).
    pub fn set_byte(&mut self, off: u64, value: u8) {
        self.bytes_mut(off, 1)[0] = value;
    }

    /// Reads `buf.len()` bytes at `off`, all in one page: [`Object::byte`] of each.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        let at = (off % PAGE_SIZE) as usize;
        debug_assert!(
            at + buf.len() <= PAGE_SIZE as usize,
            "{off:#x}+{} crosses a page",
            buf.len()
        );
        match self.pages.get(&(off >> PAGE_SHIFT)) {
            Some(p) => buf.copy_from_slice(&p[at..at + buf.len()]),
            None => self.unwritten_bytes(off, buf),
        }
    }

    /// The `n` bytes at `off`, all in one page, to be written (size unchanged): the page is
    /// stored from then on, as after [`Object::set_byte`].
    pub fn bytes_mut(&mut self, off: u64, n: u64) -> &mut [u8] {
        let at = (off % PAGE_SIZE) as usize;
        let n = n as usize;
        debug_assert!(at + n <= PAGE_SIZE as usize, "{off:#x}+{n} crosses a page");
        let idx = off >> PAGE_SHIFT;
        if !self.pages.contains_key(&idx) {
            let page = self.page(idx).into_page();
            self.pages.insert(idx, page);
        }
        let page = self
            .pages
            .get_mut(&idx)
            .unwrap_or_else(|| unreachable!("page {idx} was just stored"));
        &mut page[at..at + n]
    }

    /// Copies `n` bytes from `src` to `dst`, both in the same page, forward one byte at a time
    /// (with `src < dst < src + n` the first `dst - src` bytes repeat): `set_byte(dst + i,
    /// byte(src + i))` for each `i` in order.
    pub fn copy_in_page(&mut self, src: u64, dst: u64, n: u64) {
        debug_assert_eq!(src >> PAGE_SHIFT, dst >> PAGE_SHIFT);
        let (s, d) = ((src % PAGE_SIZE) as usize, (dst % PAGE_SIZE) as usize);
        let page = self.bytes_mut(dst - dst % PAGE_SIZE, PAGE_SIZE);
        for i in 0..n as usize {
            page[d + i] = page[s + i];
        }
    }

    /// Copies `n` bytes from `src` to `dst`, each range within one page and the pages
    /// different: [`Object::read`] of the source into [`Object::bytes_mut`] of the destination.
    pub fn copy_across_pages(&mut self, src: u64, dst: u64, n: u64) {
        let idx = dst >> PAGE_SHIFT;
        debug_assert_ne!(src >> PAGE_SHIFT, idx, "same page: copy_in_page");
        self.bytes_mut(dst, n);
        let mut page = self
            .pages
            .remove(&idx)
            .unwrap_or_else(|| unreachable!("page {idx} was just stored"));
        let at = (dst % PAGE_SIZE) as usize;
        self.read(src, &mut page[at..at + n as usize]);
        self.pages.insert(idx, page);
    }

    /// A copy of the page at `idx` (what a copy-on-write fault copies).
    pub fn page(&self, idx: u64) -> Private {
        if let Some(p) = self.pages.get(&idx) {
            return Private(Some(p.clone()));
        }
        let mut page = Private::ZERO;
        if self.pattern.is_some() && self.pattern_limit > idx << PAGE_SHIFT {
            self.pattern_bytes(idx << PAGE_SHIFT, page.bytes_mut());
        }
        page
    }

    /// The bytes per fault unit: a page, or a huge page for hugetlbfs.
    pub fn unit(&self, huge_page_size: u64) -> u64 {
        if self.huge {
            huge_page_size
        } else {
            PAGE_SIZE
        }
    }

    /// Whether a fault at byte `off` finds the object's page (not past EOF, at the fault unit's
    /// granularity). Otherwise the access gets SIGBUS.
    pub fn fault_ok(&self, off: u64, huge_page_size: u64) -> bool {
        let unit = self.unit(huge_page_size);
        off / unit < self.size.div_ceil(unit)
    }

    /// Zeroes `[from, to)` of the page cache: each byte that is not 0 is set to 0, so a page
    /// that is not stored is stored only if it shows pattern bytes there.
    pub fn zero_range(&mut self, from: u64, to: u64) {
        let mut off = from;
        while off < to {
            let n = (to - off).min(PAGE_SIZE - off % PAGE_SIZE);
            let stored = self.pages.contains_key(&(off >> PAGE_SHIFT));
            if stored || (off..off + n).any(|o| self.unwritten_byte(o) != 0) {
                self.bytes_mut(off, n).fill(0);
            }
            off += n;
        }
    }

    /// Changes the size as ftruncate does (the caller handled mappings and checks):
    /// shrinking (or keeping) the size zeroes the rest of the new last page and drops whole
    /// pages past it; growing only sets the size, so bytes a shared mapping stored past the old
    /// EOF in the old last page become part of the file (memfd/tmpfs, see the module doc).
    pub fn truncate(&mut self, new: u64, huge_page_size: u64) {
        if new <= self.size {
            let keep_pages = new.div_ceil(PAGE_SIZE);
            self.zero_range(new, keep_pages * PAGE_SIZE);
            self.pages.retain(|&idx, _| idx < keep_pages);
            self.pattern_limit = self.pattern_limit.min(new);
            let unit = self.unit(huge_page_size);
            let keep_units = new.div_ceil(unit);
            self.instantiated.retain(|&u| u < keep_units);
        }
        self.size = new;
    }
}

/// The bytes at `off..` of trace file `f`'s initial pattern: [`initial_file_byte`], which
/// repeats every 251 bytes, so one period is computed and then copied.
fn fill_pattern(f: FileId, off: u64, buf: &mut [u8]) {
    const PERIOD: usize = 251;
    for (b, o) in buf.iter_mut().zip(off..).take(PERIOD) {
        *b = initial_file_byte(f, o);
    }
    // `filled` is a multiple of the period: the bytes from it on repeat those from 0.
    let mut filled = PERIOD.min(buf.len());
    while filled < buf.len() {
        let n = filled.min(buf.len() - filled);
        buf.copy_within(..n, filled);
        filled += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_pattern_is_the_initial_pattern() {
        for f in [0, 1, 7] {
            for off in [0, 1, 250, 251, 4095, 4096, 1 << 40] {
                for len in [0, 1, 250, 251, 252, 502, 503, 4096] {
                    let mut buf = vec![0; len];
                    fill_pattern(f, off, &mut buf);
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(
                            b,
                            initial_file_byte(f, off + i as u64),
                            "f {f} off {off} len {len} byte {i}"
                        );
                    }
                }
            }
        }
        let mut o = Object::file(2, 2 * PAGE_SIZE + 10, false);
        o.truncate(PAGE_SIZE + 300, 1 << 15);
        for idx in 0..3 {
            let page = o.page(idx);
            for (i, &b) in page.bytes().iter().enumerate() {
                assert_eq!(b, o.byte((idx << PAGE_SHIFT) + i as u64), "page {idx} byte {i}");
            }
        }
    }

    #[test]
    fn pattern_then_zero_past_size() {
        let o = Object::file(1, 5000, false);
        assert_eq!(o.byte(0), initial_file_byte(1, 0));
        assert_eq!(o.byte(4999), initial_file_byte(1, 4999));
        assert_eq!(o.byte(5000), 0);
        assert!(o.fault_ok(8191, 1 << 15));
        assert!(!o.fault_ok(8192, 1 << 15));
    }

    #[test]
    fn truncate_cuts_and_never_restores_pattern() {
        let mut o = Object::file(0, 3 * PAGE_SIZE, false);
        o.set_byte(PAGE_SIZE + 10, 9);
        o.truncate(100, 1 << 15);
        assert_eq!(o.byte(99), initial_file_byte(0, 99));
        assert_eq!(o.byte(100), 0);
        assert_eq!(o.byte(PAGE_SIZE + 10), 0);
        o.truncate(3 * PAGE_SIZE, 1 << 15);
        assert_eq!(o.byte(200), 0);
        assert_eq!(o.byte(2 * PAGE_SIZE), 0);
    }

    #[test]
    fn grow_keeps_the_old_tail() {
        let mut o = Object::file(0, 5000, false);
        o.set_byte(6000, 12);
        o.truncate(5500, 1 << 15);
        assert_eq!(o.size, 5500);
        assert_eq!(o.byte(6000), 12, "past the new size, still in the page");
        assert_eq!(o.byte(5200), 0, "never written");
        assert_eq!(o.byte(4999), initial_file_byte(0, 4999));
        o.truncate(5100, 1 << 15);
        assert_eq!(o.byte(6000), 0, "shrinking zeroes the new last page's tail");
    }
}
