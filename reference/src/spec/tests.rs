//! Scenario tests of the flat spec. The address space is the default one: ptrs=8, so
//! TASK_SIZE = 16 MiB and a huge page is 32 KiB. Expected values marked "host" were observed on
//! the 6.18 host with the probes described in the module doc.

use super::*;
use crate::{initial_file_byte, MmapFlags, MremapFlags};
use OpResult::{Addr, Count, Done, Err as E, Zero};

const P: u64 = PAGE_SIZE;
const W: u64 = 0x100000;

struct T {
    spec: Spec,
}

fn prot(s: &str) -> Prot {
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => 1,
            'w' => 2,
            'x' => 4,
            _ => 0,
        };
    }
    Prot::from_bits(bits)
}

fn mflags(s: &str) -> MmapFlags {
    let mut f = MmapFlags::default();
    for w in s.split(',') {
        match w {
            "shared" => f.shared = true,
            "private" => {}
            "fixed" => f.fixed = true,
            "noreplace" => f.noreplace = true,
            "populate" => f.populate = true,
            _ => panic!("flag {w}"),
        }
    }
    f
}

impl T {
    fn new(files: &[(u64, bool)]) -> T {
        let files: Vec<FileInit> = files.iter().map(|&(size, huge)| FileInit { size, huge }).collect();
        let tasks = [TaskInit { mm: 0, cpu: 0 }];
        T {
            spec: Spec::new(&Config::default(), &files, &tasks),
        }
    }
    fn op(&mut self, task: u32, op: Op) -> OpResult {
        self.spec.apply(&Call { task, op }, Oom::No)
    }
    fn oom(&mut self, task: u32, op: Op, n: u64) -> OpResult {
        self.spec.apply(&Call { task, op }, Oom::After(n))
    }
    fn mmap(&mut self, addr: u64, len: u64, p: &str, fl: &str, file: Option<u32>, off: u64) -> OpResult {
        self.op(
            0,
            Op::Mmap {
                addr,
                len,
                prot: prot(p),
                flags: mflags(fl),
                file,
                off,
            },
        )
    }
    fn anon(&mut self, addr: u64, len: u64, p: &str) -> OpResult {
        self.mmap(addr, len, p, "private,fixed", None, 0)
    }
    fn munmap(&mut self, addr: u64, len: u64) -> OpResult {
        self.op(0, Op::Munmap { addr, len })
    }
    fn mprotect(&mut self, addr: u64, len: u64, p: &str) -> OpResult {
        self.op(
            0,
            Op::Mprotect {
                addr,
                len,
                prot: prot(p),
            },
        )
    }
    fn mremap(&mut self, addr: u64, old: u64, new: u64, fl: &str, to: Option<u64>) -> OpResult {
        let flags = MremapFlags {
            maymove: fl.contains("maymove"),
            fixed: fl.contains("fixed"),
        };
        self.op(
            0,
            Op::Mremap {
                addr,
                old,
                new,
                flags,
                to,
            },
        )
    }
    fn load(&mut self, addr: u64) -> OpResult {
        self.op(0, Op::Load { addr })
    }
    fn store(&mut self, addr: u64, value: u8) -> OpResult {
        self.op(0, Op::Store { addr, value })
    }
    fn write(&mut self, file: u32, off: u64, len: u64, buf: u64) -> OpResult {
        self.op(0, Op::Write { file, off, len, buf })
    }
    fn read(&mut self, file: u32, off: u64, len: u64, buf: u64) -> OpResult {
        self.op(0, Op::Read { file, off, len, buf })
    }
    fn truncate(&mut self, file: u32, size: u64) -> OpResult {
        self.op(0, Op::Truncate { file, size })
    }
    fn pageout(&mut self, addr: u64, len: u64) -> OpResult {
        self.op(0, Op::Pageout { addr, len })
    }
    fn write_oom(&mut self, file: u32, off: u64, len: u64, buf: u64, n: u64) -> OpResult {
        self.oom(0, Op::Write { file, off, len, buf }, n)
    }
    #[allow(clippy::too_many_arguments)]
    fn mmap_oom(&mut self, addr: u64, len: u64, p: &str, fl: &str, file: Option<u32>, off: u64, n: u64) -> OpResult {
        let op = Op::Mmap {
            addr,
            len,
            prot: prot(p),
            flags: mflags(fl),
            file,
            off,
        };
        self.oom(0, op, n)
    }
    fn mremap_oom(&mut self, addr: u64, old: u64, new: u64, fl: &str, to: Option<u64>, n: u64) -> OpResult {
        let flags = MremapFlags {
            maymove: fl.contains("maymove"),
            fixed: fl.contains("fixed"),
        };
        let op = Op::Mremap {
            addr,
            old,
            new,
            flags,
            to,
        };
        self.oom(0, op, n)
    }
    /// The VMA boundaries of task 0's address space.
    fn layout(&self, task: u32) -> Vec<(u64, u64)> {
        let mm = self.spec.tasks[task as usize].expect("alive");
        self.spec.mms[&mm].vmas.values().map(|v| (v.start, v.end)).collect()
    }
}

fn pat(f: u32, o: u64) -> OpResult {
    OpResult::Byte(initial_file_byte(f, o))
}

// ----- mmap --------------------------------------------------------------------------------

#[test]
fn mmap_argument_checks_in_linux_order() {
    let mut t = T::new(&[(5000, false)]);
    let ts = Config::default().task_size();
    assert_eq!(
        t.mmap(W, 0, "rw", "shared,fixed", Some(0), 1),
        E(Errno::EINVAL),
        "offset first"
    );
    assert_eq!(t.mmap(W, 0, "rw", "shared,fixed", Some(0), 0), E(Errno::EINVAL));
    assert_eq!(
        t.mmap(W + 1, u64::MAX, "rw", "shared,fixed", Some(0), 0),
        E(Errno::ENOMEM),
        "len overflow before addr"
    );
    assert_eq!(t.mmap(W + 1, P, "rw", "private,fixed", None, 0), E(Errno::EINVAL));
    assert_eq!(
        t.mmap(ts - P - 1, 2 * P, "rw", "private,fixed", None, 0),
        E(Errno::ENOMEM),
        "range before alignment"
    );
    assert_eq!(t.mmap(ts, P, "rw", "private,fixed", None, 0), E(Errno::ENOMEM));
    assert_eq!(t.mmap(0x1000, P, "rw", "private,fixed", None, 0), E(Errno::EPERM));
    assert_eq!(t.mmap(0, ts + P, "rw", "private", None, 0), E(Errno::ENOMEM));
    let off = (i64::MAX as u64 + 1) - P;
    assert_eq!(
        t.mmap(W, 2 * P, "rw", "shared,fixed", Some(0), off),
        E(Errno::EOVERFLOW)
    );
    assert_eq!(
        t.mmap(W + 1, 2 * P, "rw", "shared,fixed", Some(0), off),
        E(Errno::EINVAL)
    );
    assert_eq!(
        t.mmap(W, 2 * P, "rw", "private,fixed", None, off),
        Addr(W),
        "anonymous ignores the offset"
    );
    assert_eq!(t.mmap(W, P, "rw", "private,noreplace", None, 0), E(Errno::EEXIST));
    assert_eq!(t.mmap(W + 1, P, "rw", "private,noreplace", None, 0), E(Errno::EINVAL));
    assert_eq!(
        t.mmap(W + 2 * P, P, "rw", "private,noreplace", None, 0),
        Addr(W + 2 * P)
    );
}

#[test]
fn mmap_placement_hint_then_top_down() {
    let mut t = T::new(&[]);
    let ts = Config::default().task_size();
    assert_eq!(
        t.mmap(W + 0x123, P, "r", "private", None, 0),
        Addr(W),
        "hint rounded down"
    );
    assert_eq!(
        t.mmap(W, P, "r", "private", None, 0),
        Addr(ts - P),
        "hint taken: top of user space"
    );
    assert_eq!(t.mmap(0, 2 * P, "r", "private", None, 0), Addr(ts - 3 * P));
    assert_eq!(
        t.mmap(0x1000, P, "r", "private", None, 0),
        Addr(USER_BASE),
        "low hint raised to mmap_min_addr"
    );
    assert_eq!(t.munmap(ts - 2 * P, P), Zero);
    assert_eq!(
        t.mmap(0, 2 * P, "r", "private", None, 0),
        Addr(ts - 5 * P),
        "a one-page hole does not fit"
    );
    assert_eq!(
        t.mmap(0, P, "r", "private", None, 0),
        Addr(ts - 2 * P),
        "the highest gap that fits"
    );
}

#[test]
fn mmap_fixed_replaces_and_merges_with_neighbours() {
    let mut t = T::new(&[(8 * P, false)]);
    assert_eq!(t.anon(W, 4 * P, "rw"), Addr(W));
    assert_eq!(t.store(W + P, 7), Done);
    assert_eq!(t.anon(W + P, P, "rw"), Addr(W + P));
    assert_eq!(t.load(W + P), OpResult::Byte(0), "replaced: fresh zero page");
    // Faulted prev (anon_vma) + unfaulted new: one VMA again.
    assert_eq!(t.layout(0), vec![(W, W + 4 * P)]);
    // File mappings merge only with contiguous offsets of the same file.
    assert_eq!(t.mmap(W + 8 * P, P, "rw", "shared,fixed", Some(0), 0), Addr(W + 8 * P));
    assert_eq!(t.mmap(W + 9 * P, P, "rw", "shared,fixed", Some(0), P), Addr(W + 9 * P));
    assert_eq!(
        t.mmap(W + 10 * P, P, "rw", "shared,fixed", Some(0), 3 * P),
        Addr(W + 10 * P)
    );
    assert_eq!(
        t.layout(0),
        vec![(W, W + 4 * P), (W + 8 * P, W + 10 * P), (W + 10 * P, W + 11 * P)]
    );
    // Shared anonymous mappings each have their own object: never merged.
    assert_eq!(t.mmap(W + 12 * P, P, "rw", "shared,fixed", None, 0), Addr(W + 12 * P));
    assert_eq!(t.mmap(W + 13 * P, P, "rw", "shared,fixed", None, 0), Addr(W + 13 * P));
    assert_eq!(t.layout(0).len(), 5);
}

#[test]
fn populate_copies_private_writable_file_pages() {
    // host: a pwrite after MAP_POPULATE of a private rw mapping is invisible through it.
    let mut t = T::new(&[(2 * P, false)]);
    assert_eq!(t.mmap(W, 2 * P, "rw", "private,fixed,populate", Some(0), 0), Addr(W));
    assert_eq!(
        t.mmap(W + 4 * P, 2 * P, "r", "private,fixed,populate", Some(0), 0),
        Addr(W + 4 * P)
    );
    assert_eq!(t.anon(W + 8 * P, P, "rw"), Addr(W + 8 * P));
    assert_eq!(t.store(W + 8 * P, 55), Done);
    assert_eq!(t.write(0, 30, 1, W + 8 * P), Count(1));
    assert_eq!(t.load(W + 30), pat(0, 30), "populated copy");
    assert_eq!(
        t.load(W + 4 * P + 30),
        OpResult::Byte(55),
        "read-only private reads through"
    );
}

#[test]
fn populate_stops_where_memory_ran_out() {
    // Oom::After(n) for mmap: the mmap succeeded, populate faulted the first n bytes only.
    let mut t = T::new(&[(4 * P, false)]);
    assert_eq!(
        t.mmap_oom(W, 4 * P, "rw", "private,fixed,populate", Some(0), 0, 2 * P),
        Addr(W)
    );
    assert_eq!(t.layout(0), vec![(W, W + 4 * P)]);
    assert_eq!(t.anon(W + 8 * P, P, "rw"), Addr(W + 8 * P));
    assert_eq!(t.store(W + 8 * P, 55), Done);
    for i in 0..4 {
        assert_eq!(t.write(0, i * P + 30, 1, W + 8 * P), Count(1));
    }
    assert_eq!(t.load(W + 30), pat(0, 30), "page 0 was copied at mmap");
    assert_eq!(t.load(W + P + 30), pat(0, P + 30), "page 1 too");
    assert_eq!(
        t.load(W + 2 * P + 30),
        OpResult::Byte(55),
        "page 2 was not: reads through"
    );
    assert_eq!(t.load(W + 3 * P + 30), OpResult::Byte(55));

    // Private writable anonymous memory: the anon_vma comes with the first faulted page. Without
    // one, the new VMA merges with a faulted left neighbour and an unfaulted middle.
    for (n, expect) in [
        (0, vec![(W, W + 4 * P)]),
        (P, vec![(W, W + 2 * P), (W + 2 * P, W + 4 * P)]),
    ] {
        let mut t = T::new(&[]);
        assert_eq!(t.anon(W, P, "rw"), Addr(W));
        assert_eq!(t.store(W, 1), Done);
        assert_eq!(
            t.mmap_oom(W + 2 * P, 2 * P, "rw", "private,fixed,populate", None, 0, n),
            Addr(W + 2 * P)
        );
        assert_eq!(t.anon(W + P, P, "rw"), Addr(W + P));
        assert_eq!(t.layout(0), expect, "oom after {n}");
        assert_eq!(t.load(W), OpResult::Byte(1));
    }
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.store(W, 1), Done);
    assert_eq!(
        t.mmap(W + 2 * P, 2 * P, "rw", "private,fixed,populate", None, 0),
        Addr(W + 2 * P)
    );
    assert_eq!(t.anon(W + P, P, "rw"), Addr(W + P));
    assert_eq!(
        t.layout(0),
        vec![(W, W + 2 * P), (W + 2 * P, W + 4 * P)],
        "no oom: two anon_vmas"
    );

    // hugetlb: the huge pages before the stop are instantiated, the rest not.
    let hps = Config::default().huge_page_size();
    let mut t = T::new(&[(2 * hps, true)]);
    let a = 8 * hps;
    assert_eq!(
        t.mmap_oom(a, 2 * hps, "r", "shared,fixed,populate", Some(0), 0, hps),
        Addr(a)
    );
    assert_eq!(
        t.mmap(a + 4 * hps, 2 * hps, "r", "private,fixed", Some(0), 0),
        Addr(a + 4 * hps)
    );
    assert_eq!(t.load(a + 4 * hps), OpResult::Byte(0), "unit 0 in the cache: shared");
    assert_eq!(t.load(a + 5 * hps), OpResult::Byte(0), "unit 1 not: private zero page");
    assert_eq!(
        t.mmap(a + 8 * hps, 2 * hps, "rw", "shared,fixed", Some(0), 0),
        Addr(a + 8 * hps)
    );
    assert_eq!(t.store(a + 8 * hps + 1, 4), Done);
    assert_eq!(t.store(a + 9 * hps + 1, 6), Done);
    assert_eq!(t.load(a + 4 * hps + 1), OpResult::Byte(4));
    assert_eq!(t.load(a + 5 * hps + 1), OpResult::Byte(0));
    assert_eq!(t.load(a + hps + 1), OpResult::Byte(6));
}

// ----- load / store ------------------------------------------------------------------------

#[test]
fn faults_segv_bus_and_eof_page() {
    let mut t = T::new(&[(5000, false)]);
    assert_eq!(t.load(W), OpResult::Sigsegv);
    assert_eq!(t.mmap(W, 3 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.load(W + 4999), pat(0, 4999));
    assert_eq!(t.load(W + 5000), OpResult::Byte(0), "rest of the EOF page reads 0");
    assert_eq!(t.load(W + 2 * P), OpResult::Sigbus);
    assert_eq!(t.store(W + 6000, 77), Done, "stores past EOF stay in the page");
    assert_eq!(t.load(W + 6000), OpResult::Byte(77));
    assert_eq!(
        t.read(0, 4996, 8, W + 2 * P),
        E(Errno::EFAULT),
        "page 2 is past EOF: SIGBUS → EFAULT"
    );
    assert_eq!(t.anon(W + 8 * P, P, "r"), Addr(W + 8 * P));
    assert_eq!(t.read(0, 4996, 8, W + 8 * P), E(Errno::EFAULT), "read-only buffer");
    assert_eq!(t.anon(W + 9 * P, P, "rw"), Addr(W + 9 * P));
    assert_eq!(t.read(0, 4996, 8, W + 9 * P), Count(4), "read stops at EOF");
    assert_eq!(t.store(W + 8 * P, 1), OpResult::Sigsegv, "write needs w");
    assert_eq!(t.mprotect(W + 8 * P, P, "x"), Zero);
    assert_eq!(t.load(W + 8 * P), OpResult::Byte(0), "x implies r");
    assert_eq!(t.mprotect(W + 8 * P, P, "none"), Zero);
    assert_eq!(t.load(W + 8 * P), OpResult::Sigsegv);
}

#[test]
fn private_file_pages_read_through_until_written() {
    // host: a not-yet-copied private page shows later file changes; a copied one does not.
    let mut t = T::new(&[(3 * P, false)]);
    assert_eq!(t.mmap(W, 3 * P, "rw", "private,fixed", Some(0), 0), Addr(W));
    assert_eq!(
        t.mmap(W + 4 * P, 3 * P, "rw", "shared,fixed", Some(0), 0),
        Addr(W + 4 * P)
    );
    assert_eq!(t.load(W + 10), pat(0, 10));
    assert_eq!(t.store(W + 4 * P + 10, 42), Done);
    assert_eq!(t.load(W + 10), OpResult::Byte(42));
    assert_eq!(t.store(W + 20, 5), Done);
    assert_eq!(t.store(W + 4 * P + 10, 43), Done);
    assert_eq!(t.load(W + 10), OpResult::Byte(42), "copied at the first write");
    assert_eq!(
        t.load(W + 4 * P + 20),
        pat(0, 20),
        "a private write never reaches the file"
    );
}

#[test]
fn oom_access_has_no_effect() {
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.oom(0, Op::Store { addr: W, value: 3 }, 0), OpResult::Oom);
    assert_eq!(t.oom(0, Op::Load { addr: W }, 0), OpResult::Oom);
    assert_eq!(
        t.oom(0, Op::Load { addr: W + P }, 0),
        OpResult::Sigsegv,
        "a SIGSEGV stays one"
    );
    assert_eq!(t.load(W), OpResult::Byte(0));
}

// ----- truncate ----------------------------------------------------------------------------

#[test]
fn truncate_drops_cows_past_eof_but_keeps_partial_page() {
    // host: COW of page 1 kept (7, and 47 past EOF as copied), page 2 SIGBUS then zero.
    let mut t = T::new(&[(3 * P, false), (0, false)]);
    assert_eq!(t.mmap(W, 3 * P, "rw", "private,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.store(W + P + 1, 7), Done);
    assert_eq!(t.store(W + 2 * P + 1, 8), Done);
    assert_eq!(t.truncate(0, P + 100), Zero);
    assert_eq!(t.load(W + P + 1), OpResult::Byte(7));
    assert_eq!(t.load(W + 2 * P + 1), OpResult::Sigbus);
    assert_eq!(t.load(W + P + 200), pat(0, P + 200));
    assert_eq!(t.truncate(0, 3 * P), Zero);
    assert_eq!(t.load(W + 2 * P + 1), OpResult::Byte(0));
    assert_eq!(t.load(W + P + 1), OpResult::Byte(7));
    // tmpfs: s_maxbytes = MAX_LFS_FILESIZE, so a negative length (EINVAL) is the only limit.
    assert_eq!(t.truncate(1, u64::MAX), E(Errno::EINVAL));
    assert_eq!(t.truncate(1, MAX_LFS_FILESIZE + 1), E(Errno::EINVAL));
    assert_eq!(t.truncate(1, MAX_LFS_FILESIZE), Zero);
    assert_eq!(t.truncate(1, 0), Zero);
}

#[test]
fn growing_keeps_the_eof_page_tail() {
    // host (memfd): ftruncate up and pwrite past EOF zero nothing; the bytes stored past EOF
    // become file contents. Shrinking (or the same size) zeroes the new last page's tail.
    let mut t = T::new(&[(5000, false)]);
    assert_eq!(t.mmap(W, 3 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.anon(W + 8 * P, P, "rw"), Addr(W + 8 * P));
    let buf = W + 8 * P;
    let (a, b) = (W + 5200, W + 6000);
    assert_eq!(t.store(a, 11), Done);
    assert_eq!(t.store(b, 12), Done);
    assert_eq!(t.read(0, 5200, 1, buf), Count(0), "past EOF: not file contents yet");
    assert_eq!(t.truncate(0, 5500), Zero);
    assert_eq!((t.load(a), t.load(b)), (OpResult::Byte(11), OpResult::Byte(12)));
    assert_eq!(t.read(0, 5200, 1, buf), Count(1));
    assert_eq!(t.load(buf), OpResult::Byte(11), "now part of the file");
    assert_eq!(t.read(0, 5990, 20, buf), Count(0), "6000 is still past EOF");
    // A pwrite past EOF, before, inside or after the stored bytes' page.
    for pos in [5300, 5000, 9000] {
        assert_eq!(t.truncate(0, 5000), Zero);
        assert_eq!((t.load(a), t.load(b)), (OpResult::Byte(0), OpResult::Byte(0)), "shrunk");
        assert_eq!(t.store(a, 11), Done);
        assert_eq!(t.store(b, 12), Done);
        assert_eq!(t.store(buf + 100, 13), Done);
        assert_eq!(t.write(0, pos, 1, buf + 100), Count(1));
        assert_eq!(
            (t.load(a), t.load(b)),
            (OpResult::Byte(11), OpResult::Byte(12)),
            "pwrite at {pos}"
        );
        if pos > 5200 {
            assert_eq!(t.read(0, 5200, 1, buf), Count(1));
            assert_eq!(t.load(buf), OpResult::Byte(11), "pwrite at {pos}: a is file contents");
        } else {
            assert_eq!(t.read(0, 5200, 1, buf), Count(0), "pwrite at {pos}: a is past EOF");
        }
        assert_eq!(t.read(0, pos, 1, buf), Count(1));
        assert_eq!(t.load(buf), OpResult::Byte(13));
    }
    assert_eq!(t.read(0, 9000, 10, buf), Count(1), "size 9001");
    assert_eq!(t.truncate(0, 5000), Zero);
    assert_eq!(t.store(b, 12), Done);
    assert_eq!(t.truncate(0, 5000), Zero);
    assert_eq!(
        t.load(b),
        OpResult::Byte(0),
        "truncate to the same size zeroes the tail"
    );
}

// ----- write / read ------------------------------------------------------------------------

#[test]
fn write_read_argument_checks() {
    let ts = Config::default().task_size();
    let mut t = T::new(&[(5000, false)]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(
        t.write(0, u64::MAX, 10, 0),
        E(Errno::EINVAL),
        "pos < 0 before the buffer"
    );
    assert_eq!(t.read(0, 1 << 63, 10, W), E(Errno::EINVAL));
    assert_eq!(t.write(0, 0, 0, ts), Count(0), "buf == TASK_SIZE with count 0 is fine");
    assert_eq!(t.write(0, 0, 0, ts + 1), E(Errno::EFAULT));
    assert_eq!(t.read(0, 0, u64::MAX, W), E(Errno::EFAULT), "access_ok first");
    assert_eq!(t.read(0, i64::MAX as u64 - 7, 10, W), E(Errno::EINVAL));
    assert_eq!(t.write(0, i64::MAX as u64 - 7, 0, W), Count(0));
    assert_eq!(t.read(0, 5000, 10, 0x20000), Count(0), "EOF before the buffer");
    assert_eq!(t.read(0, 0, 0, 0x20000), Count(0));
    // No EFBIG on tmpfs: rw_verify_area's EINVAL comes first, and up to i64::MAX is writable.
    let top = i64::MAX as u64;
    assert_eq!(t.write(0, top - 4, 10, W), E(Errno::EINVAL));
    assert_eq!(t.write(0, top, 1, W), E(Errno::EINVAL));
    assert_eq!(t.store(W + 9, 5), Done);
    assert_eq!(t.write(0, top - 10, 10, W), Count(10));
    assert_eq!(t.read(0, top - 1, 1, W + 100), Count(1));
    assert_eq!(t.load(W + 100), OpResult::Byte(5), "the last byte of the largest file");
    assert_eq!(t.read(0, top - 20, 5, W + 100), Count(5), "the hole reads 0");
    assert_eq!(t.load(W + 100), OpResult::Byte(0));
}

#[test]
fn copies_stop_at_the_first_fault() {
    // host: 10 of 100 bytes into/from a buffer that is rw then PROT_NONE.
    let mut t = T::new(&[(5000, false)]);
    assert_eq!(t.anon(W, 2 * P, "rw"), Addr(W));
    assert_eq!(t.mprotect(W + P, P, "none"), Zero);
    assert_eq!(t.read(0, 0, 100, W + P - 10), Count(10));
    assert_eq!(t.load(W + P - 1), pat(0, 9));
    assert_eq!(t.read(0, 0, 100, W + P), E(Errno::EFAULT));
    assert_eq!(t.store(W + P - 10, 99), Done);
    assert_eq!(t.write(0, 0, 100, W + P - 10), Count(10));
    assert_eq!(t.write(0, 0, 100, W + P), E(Errno::EFAULT));
    assert_eq!(t.mmap(W + 4 * P, P, "r", "shared,fixed", Some(0), 0), Addr(W + 4 * P));
    assert_eq!(t.load(W + 4 * P), OpResult::Byte(99));
    // The machine ran out after 3 bytes; with no bytes possible, ENOMEM.
    assert_eq!(
        t.oom(
            0,
            Op::Write {
                file: 0,
                off: 0,
                len: 8,
                buf: W
            },
            3
        ),
        Count(3)
    );
    assert_eq!(
        t.oom(
            0,
            Op::Write {
                file: 0,
                off: 0,
                len: 8,
                buf: W
            },
            0
        ),
        E(Errno::ENOMEM)
    );
    // write_begin comes before the source is touched: ENOMEM even for a bad buffer.
    assert_eq!(
        t.oom(
            0,
            Op::Write {
                file: 0,
                off: 0,
                len: 8,
                buf: W + P
            },
            0
        ),
        E(Errno::ENOMEM)
    );
    assert_eq!(
        t.oom(
            0,
            Op::Read {
                file: 0,
                off: 0,
                len: 100,
                buf: W + P - 10
            },
            50
        ),
        Count(10)
    );
}

#[test]
fn write_extends_and_overlap_is_a_forward_byte_copy() {
    let mut t = T::new(&[(3 * P, false)]);
    assert_eq!(t.mmap(W, 3 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    for i in 0..10 {
        assert_eq!(t.store(W + i, i as u8 + 1), Done);
    }
    assert_eq!(t.write(0, 1, 8, W), Count(8));
    for i in 1..9 {
        assert_eq!(t.load(W + i), OpResult::Byte(1), "byte {i}");
    }
    // Source in page 1 past EOF: SIGBUS after 46 bytes (host: 46, size 4046).
    assert_eq!(t.truncate(0, 4000), Zero);
    assert_eq!(t.write(0, 4000, 200, W + 4050), Count(46));
    assert_eq!(t.truncate(0, 4000), Zero);
    // The file grows under the copy, so the source page becomes valid (host: 200).
    assert_eq!(t.write(0, 4000, 200, W + 3990), Count(200));
    assert_eq!(
        t.read(0, 0, 1, W + 2 * P),
        E(Errno::EFAULT),
        "page 2 is past EOF (4200)"
    );
    assert_eq!(t.read(0, 0, 1, W + P), Count(1));
    assert_eq!(t.load(W + P), OpResult::Byte(1));
}

#[test]
fn pwrite_bumps_the_size_to_pos_even_when_it_fails() {
    // host (memfd and ext4): EFAULT at pos > size leaves size = pos; a pwrite that copied k > 0
    // bytes leaves size = max(size, pos + k).
    let mut t = T::new(&[(5000, false)]);
    assert_eq!(t.mmap(W, 4 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.anon(W + 8 * P, 2 * P, "rw"), Addr(W + 8 * P));
    assert_eq!(t.mprotect(W + 9 * P, P, "none"), Zero);
    let (buf, bad) = (W + 8 * P, W + 9 * P);
    assert_eq!(t.store(W + 5200, 11), Done);
    assert_eq!(t.write(0, 6000, 10, bad), E(Errno::EFAULT));
    assert_eq!(t.read(0, 5990, 100, buf), Count(10), "size 6000");
    assert_eq!(t.read(0, 5200, 1, buf), Count(1));
    assert_eq!(t.load(buf), OpResult::Byte(11), "the old tail is file contents");
    // Into a later page: the pages up to pos become valid.
    assert_eq!(t.load(W + 3 * P), OpResult::Sigbus);
    assert_eq!(t.write(0, 3 * P + 5, 10, bad), E(Errno::EFAULT));
    assert_eq!(t.load(W + 3 * P), OpResult::Byte(0));
    assert_eq!(t.read(0, 3 * P, 100, buf), Count(5));
    // At or below the size nothing grows.
    assert_eq!(t.write(0, 3 * P + 5, 10, bad), E(Errno::EFAULT));
    assert_eq!(t.write(0, 100, 10, bad), E(Errno::EFAULT));
    assert_eq!(t.read(0, 3 * P, 100, buf), Count(5));
    assert_eq!(t.load(W + 100), pat(0, 100), "nothing written");
    // k bytes copied past EOF.
    assert_eq!(t.write(0, 4 * P + 100, 100, bad - 7), Count(7));
    assert_eq!(t.read(0, 4 * P, 1000, buf), Count(107));
    assert_eq!(t.load(buf + 99), OpResult::Byte(0), "the gap reads 0");
    // Memory ran out at write_begin of the first chunk: no size bump; after 3 bytes: pos + 3.
    assert_eq!(t.write_oom(0, 6 * P, 10, buf, 0), E(Errno::ENOMEM));
    assert_eq!(t.read(0, 4 * P, 1000, buf), Count(107), "unchanged");
    assert_eq!(t.write_oom(0, 6 * P, 10, bad, 0), E(Errno::ENOMEM), "before the fault");
    assert_eq!(t.read(0, 4 * P, 1000, buf), Count(107), "unchanged");
    assert_eq!(t.write_oom(0, 6 * P, 10, buf, 3), Count(3));
    assert_eq!(t.read(0, 6 * P, 100, buf), Count(3));
    assert_eq!(t.read(0, 6 * P + 3, 1, buf), Count(0));
    // Ran out at the second page of the write: the first is written and the size covers it.
    assert_eq!(t.write_oom(0, 7 * P - 2, 10, buf, 2), Count(2));
    assert_eq!(t.read(0, 7 * P - 4, 100, buf), Count(4));
}

#[test]
fn pwrite_source_past_eof_is_readable_once_the_size_was_bumped() {
    // host: write_end of a copy of nothing sets i_size = pos before the source is faulted in,
    // so a buffer mapping the same file between the old EOF and pos does not fault.
    let mut t = T::new(&[(100, false)]);
    assert_eq!(t.mmap(W, 4 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.anon(W + 8 * P, P, "rw"), Addr(W + 8 * P));
    let buf = W + 8 * P;
    assert_eq!(t.store(W + 200, 21), Done, "past EOF, in the last page");
    assert_eq!(t.load(W + P), OpResult::Sigbus);
    assert_eq!(t.write(0, 2 * P, 10, W + P + 5), Count(10));
    assert_eq!(t.load(W + P), OpResult::Byte(0), "page 1 is inside the file now");
    assert_eq!(t.read(0, 2 * P, 100, buf), Count(10));
    assert_eq!(t.read(0, 200, 1, buf), Count(1));
    assert_eq!(t.load(buf), OpResult::Byte(21), "the old tail became file contents");
    // The source beyond pos stays past EOF: EFAULT, but the size reached pos.
    assert_eq!(t.write(0, 2 * P + 20, 10, W + 3 * P), E(Errno::EFAULT));
    assert_eq!(t.read(0, 2 * P, 100, buf), Count(20));
    // pos == size: no bump, so a source in the next page faults at once.
    assert_eq!(t.truncate(0, P), Zero);
    assert_eq!(t.write(0, P, 10, W + P), E(Errno::EFAULT));
    assert_eq!(t.read(0, 0, 2 * P, buf), Count(P));
    // Memory ran out before the bump: ENOMEM and the size stays.
    assert_eq!(t.write_oom(0, 2 * P, 10, W + P, 0), E(Errno::ENOMEM));
    assert_eq!(t.load(W + P), OpResult::Sigbus);
}

#[test]
fn read_into_private_file_mapping_copies_on_write() {
    let mut t = T::new(&[(2 * P, false), (P, false)]);
    assert_eq!(t.mmap(W, 2 * P, "rw", "private,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.read(1, 0, 5, W + 3), Count(5));
    assert_eq!(t.load(W + 3), pat(1, 0));
    assert_eq!(t.load(W + 2), pat(0, 2));
    assert_eq!(t.mmap(W + 4 * P, P, "r", "shared,fixed", Some(0), 0), Addr(W + 4 * P));
    assert_eq!(t.load(W + 4 * P + 3), pat(0, 3), "the file is unchanged");
}

// ----- munmap / mprotect / pageout -----------------------------------------------------------

#[test]
fn munmap_checks() {
    let ts = Config::default().task_size();
    let mut t = T::new(&[]);
    assert_eq!(t.munmap(W + 1, P), E(Errno::EINVAL));
    assert_eq!(t.munmap(W, 0), E(Errno::EINVAL));
    assert_eq!(t.munmap(ts - P, 2 * P), E(Errno::EINVAL));
    assert_eq!(t.munmap(ts, 0), E(Errno::EINVAL));
    assert_eq!(t.munmap(W, u64::MAX), E(Errno::EINVAL));
    assert_eq!(t.munmap(W, P), Zero, "holes are fine");
    assert_eq!(t.anon(W, 3 * P, "rw"), Addr(W));
    assert_eq!(t.munmap(W + P, 1), Zero);
    assert_eq!(t.layout(0), vec![(W, W + P), (W + 2 * P, W + 3 * P)]);
    assert_eq!(t.load(W + P), OpResult::Sigsegv);
}

#[test]
fn mprotect_applies_up_to_the_hole() {
    let mut t = T::new(&[]);
    assert_eq!(t.mprotect(W + 1, P, "r"), E(Errno::EINVAL));
    assert_eq!(t.mprotect(W + 1, 0, "r"), E(Errno::EINVAL));
    assert_eq!(t.mprotect(W, 0, "r"), Zero);
    assert_eq!(t.mprotect(W, 0u64.wrapping_sub(P), "r"), E(Errno::ENOMEM));
    assert_eq!(t.mprotect(W, P, "r"), E(Errno::ENOMEM));
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.anon(W + 2 * P, P, "rw"), Addr(W + 2 * P));
    assert_eq!(t.mprotect(W, 3 * P, "r"), E(Errno::ENOMEM));
    assert_eq!(t.store(W, 1), OpResult::Sigsegv, "changed before the hole");
    assert_eq!(t.store(W + 2 * P, 1), Done, "not after it");
    assert_eq!(
        t.mprotect(W + 2 * P, 2 * P, "r"),
        E(Errno::ENOMEM),
        "range runs past the last VMA"
    );
    assert_eq!(t.store(W + 2 * P, 1), OpResult::Sigsegv);
}

#[test]
fn mprotect_account_and_anon_vma_decide_merges() {
    // host [1]-[3]: VM_ACCOUNT is dropped from an unfaulted anonymous VMA made read-only.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.mprotect(W, P, "r"), Zero);
    assert_eq!(t.anon(W + P, P, "r"), Addr(W + P));
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)]);
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.store(W, 1), Done);
    assert_eq!(t.mprotect(W, P, "r"), Zero);
    assert_eq!(t.anon(W + P, P, "r"), Addr(W + P));
    assert_eq!(t.layout(0), vec![(W, W + P), (W + P, W + 2 * P)]);
    assert_eq!(t.mprotect(W + P, P, "rw"), Zero);
    assert_eq!(t.mprotect(W, P, "rw"), Zero);
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)], "both writable and accounted again");
    // host [5b]: prev and next with different anon_vmas: only the left merge.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, 3 * P, "rw"), Addr(W));
    assert_eq!(t.mprotect(W + P, P, "r"), Zero);
    assert_eq!(t.store(W, 1), Done);
    assert_eq!(t.store(W + 2 * P, 1), Done);
    assert_eq!(t.mprotect(W + P, P, "rw"), Zero);
    assert_eq!(t.layout(0), vec![(W, W + 2 * P), (W + 2 * P, W + 3 * P)]);
    // Same protection: no change, no merge attempt.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.anon(W + P, P, "r"), Addr(W + P));
    assert_eq!(t.mprotect(W + P, P, "r"), Zero);
    assert_eq!(t.layout(0).len(), 2);
    // A shared anonymous mapping split by mprotect merges back.
    let mut t = T::new(&[]);
    assert_eq!(t.mmap(W, 2 * P, "rw", "shared,fixed", None, 0), Addr(W));
    assert_eq!(t.mprotect(W, P, "r"), Zero);
    assert_eq!(t.layout(0).len(), 2);
    assert_eq!(t.mprotect(W, P, "rw"), Zero);
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)]);
}

#[test]
fn pageout_checks() {
    let mut t = T::new(&[(P, true)]);
    assert_eq!(t.pageout(W + 1, P), E(Errno::EINVAL));
    assert_eq!(t.pageout(W, u64::MAX), E(Errno::EINVAL));
    assert_eq!(t.pageout(W, 0u64.wrapping_sub(P)), E(Errno::EINVAL));
    assert_eq!(t.pageout(W, 0), Zero);
    assert_eq!(t.pageout(W, P), E(Errno::ENOMEM));
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.store(W, 9), Done);
    assert_eq!(t.pageout(W, P), Zero);
    assert_eq!(t.load(W), OpResult::Byte(9), "no content change");
    assert_eq!(t.pageout(W - P, 2 * P), E(Errno::ENOMEM));
    assert_eq!(t.pageout(W, 2 * P), E(Errno::ENOMEM));
    let hps = Config::default().huge_page_size();
    assert_eq!(t.mmap(4 * hps, hps, "rw", "shared,fixed", Some(0), 0), Addr(4 * hps));
    assert_eq!(t.pageout(4 * hps, P), E(Errno::EINVAL));
}

// ----- mremap ------------------------------------------------------------------------------

#[test]
fn mremap_checks() {
    let ts = Config::default().task_size();
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, 2 * P, "rw"), Addr(W));
    assert_eq!(t.mremap(W + 1, P, P, "", None), E(Errno::EINVAL));
    assert_eq!(t.mremap(W, P, 0, "", None), E(Errno::EINVAL));
    assert_eq!(t.mremap(W, P, ts + P, "maymove", None), E(Errno::EINVAL));
    assert_eq!(
        t.mremap(W, P, P, "fixed", Some(W + 8 * P)),
        E(Errno::EINVAL),
        "fixed needs maymove"
    );
    assert_eq!(t.mremap(W, P, P, "maymove,fixed", Some(W)), E(Errno::EINVAL), "overlap");
    assert_eq!(t.mremap(W, P, P, "maymove,fixed", Some(ts - 1)), E(Errno::EINVAL));
    assert_eq!(t.mremap(W + 8 * P, P, P, "", None), E(Errno::EFAULT));
    assert_eq!(
        t.mremap(W, 0, P, "maymove", None),
        E(Errno::EINVAL),
        "private duplicate"
    );
    assert_eq!(
        t.mremap(W, 5 * P, 5 * P, "", None),
        Addr(W),
        "no resize: range not checked"
    );
    assert_eq!(t.mremap(W + P, 2 * P, 3 * P, "", None), E(Errno::EFAULT));
    assert_eq!(
        t.mremap(W, P, 2 * P, "", None),
        E(Errno::ENOMEM),
        "cannot grow in the middle"
    );
    assert_eq!(
        t.oom(
            0,
            Op::Mremap {
                addr: W,
                old: P,
                new: 3 * P,
                flags: MremapFlags {
                    maymove: true,
                    fixed: false
                },
                to: None
            },
            0
        ),
        E(Errno::ENOMEM)
    );
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)]);
}

#[test]
fn mremap_oom_fails_at_the_page_table_move() {
    // Expanding with maymove: the move fails first, nothing changed.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, 2 * P, "rw"), Addr(W));
    assert_eq!(t.store(W + P, 5), Done);
    assert_eq!(t.anon(W + 2 * P, P, "r"), Addr(W + 2 * P));
    assert_eq!(t.mremap_oom(W, 2 * P, 3 * P, "maymove", None, 0), E(Errno::ENOMEM));
    assert_eq!(t.layout(0), vec![(W, W + 2 * P), (W + 2 * P, W + 3 * P)]);
    assert_eq!(t.load(W + P), OpResult::Byte(5));
    // Validation errors come first.
    assert_eq!(t.mremap_oom(W + 1, P, P, "", None, 0), E(Errno::EINVAL));
    assert_eq!(t.mremap_oom(W + 8 * P, P, 2 * P, "maymove", None, 0), E(Errno::EFAULT));
    assert_eq!(
        t.mremap_oom(W, P, P, "maymove,fixed", Some(W), 0),
        E(Errno::EINVAL),
        "overlap"
    );
    assert_eq!(t.layout(0), vec![(W, W + 2 * P), (W + 2 * P, W + 3 * P)]);

    // MREMAP_FIXED with a shrink: the target was unmapped and the source shrunk before.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, 4 * P, "rw"), Addr(W));
    assert_eq!(t.store(W, 1), Done);
    assert_eq!(t.store(W + 3 * P, 4), Done);
    assert_eq!(t.anon(W + 16 * P, 2 * P, "rw"), Addr(W + 16 * P));
    assert_eq!(t.store(W + 16 * P, 9), Done);
    assert_eq!(
        t.mremap_oom(W, 4 * P, 2 * P, "maymove,fixed", Some(W + 16 * P), 0),
        E(Errno::ENOMEM)
    );
    assert_eq!(t.load(W + 16 * P), OpResult::Sigsegv, "target unmapped");
    assert_eq!(t.load(W), OpResult::Byte(1), "the piece stays");
    assert_eq!(t.load(W + 3 * P), OpResult::Sigsegv, "shrunk");
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)]);
    // The same with room: it moves.
    assert_eq!(
        t.mremap(W, 2 * P, 3 * P, "maymove,fixed", Some(W + 16 * P)),
        Addr(W + 16 * P)
    );
    assert_eq!(t.load(W + 16 * P), OpResult::Byte(1));
}

#[test]
fn mremap_oom_in_a_multi_vma_move_keeps_earlier_pieces_moved() {
    let to = W + 32 * P;
    let setup = || {
        let mut t = T::new(&[]);
        assert_eq!(t.anon(W, P, "rw"), Addr(W));
        assert_eq!(t.store(W, 1), Done);
        assert_eq!(t.anon(W + 2 * P, P, "r"), Addr(W + 2 * P));
        assert_eq!(t.anon(W + 4 * P, P, "rw"), Addr(W + 4 * P));
        assert_eq!(t.store(W + 4 * P, 3), Done);
        // Mappings at the second and third pieces' targets.
        assert_eq!(t.anon(to + 2 * P, P, "rw"), Addr(to + 2 * P));
        assert_eq!(t.store(to + 2 * P, 7), Done);
        assert_eq!(t.anon(to + 4 * P, P, "rw"), Addr(to + 4 * P));
        assert_eq!(t.store(to + 4 * P, 8), Done);
        t
    };
    // The second piece (source W + 2P) fails: the first was moved.
    let mut t = setup();
    assert_eq!(
        t.mremap_oom(W, 5 * P, 5 * P, "maymove,fixed", Some(to), 2 * P),
        E(Errno::ENOMEM)
    );
    assert_eq!(
        t.layout(0),
        vec![
            (W + 2 * P, W + 3 * P),
            (W + 4 * P, W + 5 * P),
            (to, to + P),
            (to + 4 * P, to + 5 * P)
        ]
    );
    assert_eq!(t.load(to), OpResult::Byte(1), "moved");
    assert_eq!(t.load(W), OpResult::Sigsegv);
    assert_eq!(
        t.load(to + 2 * P),
        OpResult::Sigsegv,
        "the failing piece's target unmapped"
    );
    assert_eq!(t.load(W + 2 * P), OpResult::Byte(0), "the failing piece stays");
    assert_eq!(t.load(to + 4 * P), OpResult::Byte(8), "later targets untouched");
    assert_eq!(t.load(W + 4 * P), OpResult::Byte(3));
    // n inside the first piece's span still counts it as moved; n = 0 fails the first piece.
    let mut t = setup();
    assert_eq!(
        t.mremap_oom(W, 5 * P, 5 * P, "maymove,fixed", Some(to), 1),
        E(Errno::ENOMEM)
    );
    assert_eq!(t.load(to), OpResult::Byte(1));
    assert_eq!(t.load(to + 2 * P), OpResult::Sigsegv);
    let mut t = setup();
    assert_eq!(
        t.mremap_oom(W, 5 * P, 5 * P, "maymove,fixed", Some(to), 0),
        E(Errno::ENOMEM)
    );
    assert_eq!(t.load(W), OpResult::Byte(1), "nothing moved");
    assert_eq!(t.load(to + 2 * P), OpResult::Byte(7));
    assert_eq!(t.layout(0).len(), 5);
    // The third piece fails: the first two were moved.
    let mut t = setup();
    assert_eq!(
        t.mremap_oom(W, 5 * P, 5 * P, "maymove,fixed", Some(to), 4 * P),
        E(Errno::ENOMEM)
    );
    assert_eq!(t.load(to + 2 * P), OpResult::Byte(0), "the second piece moved");
    assert_eq!(t.load(to + 4 * P), OpResult::Sigsegv);
    assert_eq!(t.load(W + 4 * P), OpResult::Byte(3));
}

#[test]
fn mremap_grow_in_place_merges_with_next() {
    // host [6]: grown up to an adjacent compatible VMA: one VMA.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.anon(W + 2 * P, P, "rw"), Addr(W + 2 * P));
    assert_eq!(t.mremap(W, P, 2 * P, "", None), Addr(W));
    assert_eq!(t.layout(0), vec![(W, W + 3 * P)]);
    // Two VMAs of different protection: EFAULT across them when resizing.
    assert_eq!(t.anon(W + 3 * P, P, "r"), Addr(W + 3 * P));
    assert_eq!(t.mremap(W, 4 * P, 5 * P, "maymove", None), E(Errno::EFAULT));
    // Shrinking may cross VMA ends.
    assert_eq!(t.mremap(W, 4 * P, P, "", None), Addr(W));
    assert_eq!(t.layout(0), vec![(W, W + P)]);
}

#[test]
fn mremap_move_keeps_contents_and_merges() {
    let ts = Config::default().task_size();
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, 2 * P, "rw"), Addr(W));
    assert_eq!(t.store(W + P, 5), Done);
    assert_eq!(t.anon(W + 2 * P, P, "r"), Addr(W + 2 * P));
    assert_eq!(t.mremap(W, 2 * P, 3 * P, "maymove", None), Addr(ts - 3 * P));
    assert_eq!(t.load(ts - 2 * P), OpResult::Byte(5));
    assert_eq!(t.load(W + P), OpResult::Sigsegv);
    // host [13]: an unfaulted anonymous VMA moved next to an identical one merges.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.anon(W + 16 * P, P, "rw"), Addr(W + 16 * P));
    assert_eq!(t.mremap(W + 16 * P, P, P, "maymove,fixed", Some(W + P)), Addr(W + P));
    assert_eq!(t.layout(0), vec![(W, W + 2 * P)]);
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.anon(W + 16 * P, P, "rw"), Addr(W + 16 * P));
    assert_eq!(t.store(W + 16 * P, 1), Done);
    assert_eq!(t.mremap(W + 16 * P, P, P, "maymove,fixed", Some(W + P)), Addr(W + P));
    assert_eq!(
        t.layout(0),
        vec![(W, W + P), (W + P, W + 2 * P)],
        "faulted: vm_pgoff kept"
    );
    // fixed replaces what was at the target.
    assert_eq!(t.anon(W + 32 * P, P, "rw"), Addr(W + 32 * P));
    assert_eq!(
        t.mremap(W + P, P, P, "maymove,fixed", Some(W + 32 * P)),
        Addr(W + 32 * P)
    );
    assert_eq!(t.load(W + 32 * P), OpResult::Byte(1));
}

#[test]
fn mremap_fixed_moves_several_vmas_keeping_gaps() {
    // host [7]: 6.18 moves every VMA of [addr, addr+old) when old == new with fixed.
    let mut t = T::new(&[]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.store(W, 5), Done);
    assert_eq!(t.anon(W + 2 * P, P, "r"), Addr(W + 2 * P));
    assert_eq!(
        t.mremap(W, 3 * P, 3 * P, "maymove,fixed", Some(W + 16 * P)),
        Addr(W + 16 * P)
    );
    assert_eq!(t.layout(0), vec![(W + 16 * P, W + 17 * P), (W + 18 * P, W + 19 * P)]);
    assert_eq!(t.load(W + 16 * P), OpResult::Byte(5));
    assert_eq!(
        t.mremap(W + 15 * P, 3 * P, 3 * P, "maymove,fixed", Some(W)),
        E(Errno::EFAULT),
        "must start in a VMA"
    );
}

#[test]
fn shared_anonymous_growth_and_duplicate() {
    // host [9]: SIGBUS past the original length; old_len 0 maps the object again.
    let mut t = T::new(&[]);
    assert_eq!(t.mmap(W, P, "rw", "shared,fixed", None, 0), Addr(W));
    assert_eq!(t.store(W, 9), Done);
    assert_eq!(t.mremap(W, P, 3 * P, "", None), Addr(W));
    assert_eq!(t.load(W + P), OpResult::Sigbus);
    assert_eq!(
        t.mremap(W, 0, 2 * P, "maymove,fixed", Some(W + 16 * P)),
        Addr(W + 16 * P)
    );
    assert_eq!(t.load(W + 16 * P), OpResult::Byte(9));
    assert_eq!(t.load(W + 17 * P), OpResult::Sigbus);
    assert_eq!(t.store(W + 16 * P, 10), Done);
    assert_eq!(t.load(W), OpResult::Byte(10));
}

// ----- fork / exit -------------------------------------------------------------------------

#[test]
fn fork_copies_private_and_shares_shared() {
    let mut t = T::new(&[(P, false)]);
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.store(W, 1), Done);
    assert_eq!(t.mmap(W + 2 * P, P, "rw", "shared,fixed", None, 0), Addr(W + 2 * P));
    assert_eq!(t.oom(0, Op::Fork { task: 1, cpu: None }, 0), E(Errno::ENOMEM));
    assert_eq!(t.op(0, Op::Fork { task: 1, cpu: None }), Done);
    assert_eq!(t.op(1, Op::Store { addr: W, value: 2 }), Done);
    assert_eq!(t.load(W), OpResult::Byte(1));
    assert_eq!(
        t.op(
            1,
            Op::Store {
                addr: W + 2 * P,
                value: 3
            }
        ),
        Done
    );
    assert_eq!(t.load(W + 2 * P), OpResult::Byte(3));
    // host [11]: the child's faulted VMA does not merge with a new neighbour.
    assert_eq!(
        t.op(
            1,
            Op::Mmap {
                addr: W + P,
                len: P,
                prot: prot("rw"),
                flags: mflags("private,fixed"),
                file: None,
                off: 0
            }
        ),
        Addr(W + P)
    );
    assert_eq!(t.layout(1)[..2], [(W, W + P), (W + P, W + 2 * P)]);
    assert_eq!(t.anon(W + P, P, "rw"), Addr(W + P));
    assert_eq!(t.layout(0)[0], (W, W + 2 * P), "the parent's does");
    assert_eq!(t.op(0, Op::Exit), Done);
    assert_eq!(
        t.op(1, Op::Load { addr: W + 2 * P }),
        OpResult::Byte(3),
        "the child's mm lives on"
    );
    assert_eq!(t.op(1, Op::Exit), Done);
    assert!(t.spec.mms.is_empty());
}

// ----- hugetlb -----------------------------------------------------------------------------

#[test]
fn hugetlb_rules() {
    let hps = Config::default().huge_page_size();
    let mut t = T::new(&[(2 * hps, true)]);
    let a = 8 * hps;
    assert_eq!(
        t.mmap(a + P, P, "rw", "shared,fixed", Some(0), 0),
        E(Errno::EINVAL),
        "unaligned address"
    );
    assert_eq!(
        t.mmap(a, P, "rw", "shared,fixed", Some(0), P),
        E(Errno::EINVAL),
        "unaligned offset"
    );
    assert_eq!(t.mmap(a, P, "rw", "shared,fixed", Some(0), 0), Addr(a));
    assert_eq!(t.layout(0), vec![(a, a + hps)], "length rounded up to the huge page");
    assert_eq!(t.load(a + hps - 1), OpResult::Byte(0));
    assert_eq!(t.store(a + 5, 7), Done);
    assert_eq!(t.write(0, 0, 1, a), E(Errno::EINVAL), "hugetlbfs has no write");
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    assert_eq!(t.read(0, 5, 1, W), Count(1));
    assert_eq!(t.load(W), OpResult::Byte(7));
    assert_eq!(t.munmap(a, P), E(Errno::EINVAL));
    assert_eq!(t.mprotect(a, P, "r"), E(Errno::EINVAL));
    assert_eq!(t.truncate(0, hps + 1), E(Errno::EINVAL));
    // A writable mapping past EOF grows the file; private faults on a huge page absent from
    // the page cache get a private zeroed page.
    assert_eq!(
        t.mmap(a + 2 * hps, 3 * hps, "rw", "private,fixed", Some(0), 0),
        Addr(a + 2 * hps)
    );
    assert_eq!(t.read(0, 3 * hps - 1, 1, W), Count(1));
    assert_eq!(
        t.load(a + 2 * hps + 5),
        OpResult::Byte(7),
        "instantiated page: shared read-only"
    );
    assert_eq!(t.load(a + 3 * hps), OpResult::Byte(0));
    assert_eq!(
        t.mmap(a + 6 * hps, 2 * hps, "rw", "shared,fixed", Some(0), 0),
        Addr(a + 6 * hps)
    );
    assert_eq!(t.store(a + 7 * hps, 8), Done);
    assert_eq!(
        t.load(a + 3 * hps),
        OpResult::Byte(0),
        "private page made before the shared store"
    );
    assert_eq!(t.store(a + 2 * hps + 6, 1), Done);
    assert_eq!(t.store(a + 6, 2), Done);
    assert_eq!(
        t.load(a + 2 * hps + 6),
        OpResult::Byte(1),
        "whole huge page copied on write"
    );
    assert_eq!(t.load(a + 2 * hps + 5), OpResult::Byte(7));
    assert_eq!(t.truncate(0, hps), Zero);
    assert_eq!(t.load(a + 7 * hps), OpResult::Sigbus);
    assert_eq!(t.load(a + 3 * hps), OpResult::Sigbus, "private copies past EOF dropped");
    assert_eq!(
        t.mremap(a, hps, 2 * hps, "maymove", None),
        E(Errno::EINVAL),
        "no growth"
    );
}

#[test]
fn hugetlb_faults_and_huge_page_granularity() {
    let hps = Config::default().huge_page_size();
    let mut t = T::new(&[(2 * hps, true)]);
    let a = 8 * hps;
    assert_eq!(t.mmap(a, 2 * hps, "r", "private,fixed", Some(0), 0), Addr(a));
    assert_eq!(
        t.mmap(a + 4 * hps, 2 * hps, "rw", "shared,fixed", Some(0), 0),
        Addr(a + 4 * hps)
    );
    assert_eq!(t.anon(W, P, "rw"), Addr(W));
    // read(2) does not instantiate: the private read fault then gets a private zero page, which
    // a later shared store does not reach.
    assert_eq!(t.read(0, hps + 5, 1, W), Count(1));
    assert_eq!(t.load(W), OpResult::Byte(0));
    assert_eq!(t.load(a + hps + 5), OpResult::Byte(0));
    assert_eq!(t.store(a + 5 * hps + 5, 9), Done);
    assert_eq!(t.load(a + hps + 5), OpResult::Byte(0), "private zero unit");
    assert_eq!(t.read(0, hps + 5, 1, W), Count(1));
    assert_eq!(t.load(W), OpResult::Byte(9));
    // Instantiated first by the shared mapping: the private read-only mapping shares the page.
    assert_eq!(t.store(a + 4 * hps + 5, 7), Done);
    assert_eq!(t.load(a + 5), OpResult::Byte(7));
    assert_eq!(t.store(a + 4 * hps + 5, 8), Done);
    assert_eq!(t.load(a + 5), OpResult::Byte(8));
    // A read-only mapping does not grow the file; a writable one does, to off + len.
    assert_eq!(
        t.mmap(a + 8 * hps, 2 * hps, "r", "shared,fixed", Some(0), 2 * hps),
        Addr(a + 8 * hps)
    );
    assert_eq!(t.load(a + 8 * hps), OpResult::Sigbus);
    assert_eq!(
        t.mmap(a + 12 * hps, hps, "rw", "private,fixed", Some(0), 3 * hps),
        Addr(a + 12 * hps)
    );
    assert_eq!(t.load(a + 8 * hps), OpResult::Byte(0), "size 4 huge pages");
    assert_eq!(t.read(0, 0, 10 * hps, W), Count(P), "the buffer is one page");
    assert_eq!(t.read(0, 4 * hps - 1, 10, W), Count(1));
    // mprotect/munmap split only at huge page boundaries.
    assert_eq!(t.mprotect(a + 4 * hps, P, "r"), E(Errno::EINVAL));
    assert_eq!(t.mprotect(a + 4 * hps + P, hps, "r"), E(Errno::EINVAL));
    assert_eq!(t.mprotect(a + 4 * hps, hps, "r"), Zero);
    assert_eq!(t.store(a + 4 * hps + 5, 1), OpResult::Sigsegv);
    assert_eq!(t.store(a + 5 * hps + 5, 1), Done);
    assert_eq!(
        t.layout(0)[1..3],
        [(a + 4 * hps, a + 5 * hps), (a + 5 * hps, a + 6 * hps)]
    );
    assert_eq!(t.mprotect(a + 4 * hps, hps, "rw"), Zero);
    assert_eq!(t.layout(0)[2], (a + 5 * hps, a + 6 * hps), "hugetlb never merges");
    assert_eq!(t.munmap(a + 5 * hps, P), E(Errno::EINVAL));
    assert_eq!(t.munmap(a + 5 * hps, hps), Zero);
    assert_eq!(t.load(a + 5 * hps), OpResult::Sigsegv);
    // mremap: lengths round up to the huge page; shrink and move, never grow.
    assert_eq!(
        t.mremap(a, 2 * hps, hps + 1, "", None),
        Addr(a),
        "rounds to 2: no change"
    );
    assert_eq!(t.load(a + hps + 5), OpResult::Byte(0));
    assert_eq!(t.mremap(a, 2 * hps, P, "", None), Addr(a));
    assert_eq!(t.load(a + hps), OpResult::Sigsegv, "shrunk to one huge page");
    assert_eq!(t.mremap(a, P, 2 * P, "maymove", None), Addr(a), "both round to one");
    assert_eq!(t.mremap(a, hps, 2 * hps, "maymove", None), E(Errno::EINVAL));
    assert_eq!(
        t.mremap(a, P, P, "maymove,fixed", Some(a + 20 * hps + P)),
        E(Errno::EINVAL),
        "unaligned target"
    );
    assert_eq!(
        t.mremap(a, P, P, "maymove,fixed", Some(a + 20 * hps)),
        Addr(a + 20 * hps)
    );
    assert_eq!(t.layout(0)[0], (a + 4 * hps, a + 5 * hps));
    assert_eq!(t.load(a + 20 * hps + 5), OpResult::Byte(8), "moved with its mapping");
    assert_eq!(t.load(a + 5), OpResult::Sigsegv);
}

// ----- write / read in runs ------------------------------------------------------------------

#[test]
fn copies_cross_pages_in_runs() {
    let mut t = T::new(&[(8 * P, false), (4 * P, false)]);
    assert_eq!(t.anon(W, 4 * P, "rw"), Addr(W));
    for i in 0..3 * P {
        assert_eq!(t.store(W + 100 + i, (i % 253) as u8), Done);
    }
    // Source and file both unaligned, in different places of their pages.
    assert_eq!(t.write(0, 2 * P + 7, 3 * P, W + 100), Count(3 * P));
    assert_eq!(t.write(1, P - 1, 2, W + 100), Count(2), "one byte on each side");
    assert_eq!(
        t.mmap(W + 8 * P, 8 * P, "r", "shared,fixed", Some(0), 0),
        Addr(W + 8 * P)
    );
    for i in [0, 1, P - 8, P - 7, P - 6, 2 * P, 3 * P - 1] {
        assert_eq!(
            t.load(W + 8 * P + 2 * P + 7 + i),
            OpResult::Byte((i % 253) as u8),
            "{i}"
        );
    }
    assert_eq!(t.load(W + 8 * P + 2 * P + 6), pat(0, 2 * P + 6));
    assert_eq!(t.load(W + 8 * P + 5 * P + 7), pat(0, 5 * P + 7));
    // Read back across pages into a private file mapping (copy on write of each page) and an
    // anonymous buffer.
    assert_eq!(
        t.mmap(W + 16 * P, 4 * P, "rw", "private,fixed", Some(1), 0),
        Addr(W + 16 * P)
    );
    assert_eq!(t.read(0, 2 * P + 7, 3 * P, W + 16 * P + 5), Count(3 * P));
    for i in [0, P - 6, P - 5, 2 * P, 3 * P - 1] {
        assert_eq!(t.load(W + 16 * P + 5 + i), OpResult::Byte((i % 253) as u8), "{i}");
    }
    assert_eq!(t.load(W + 16 * P + 4), pat(1, 4), "the rest of the copied pages");
    assert_eq!(t.load(W + 16 * P + 3 * P + 5), pat(1, 3 * P + 5));
    assert_eq!(t.read(1, P - 1, 2, W + 3 * P), Count(2), "the file is unchanged");
    assert_eq!(
        (t.load(W + 3 * P), t.load(W + 3 * P + 1)),
        (OpResult::Byte(0), OpResult::Byte(1))
    );
    assert_eq!(t.read(1, 0, 2 * P, W + 8 * P), E(Errno::EFAULT), "read-only buffer");
}

#[test]
fn overlapping_copies_within_a_file_repeat_forward() {
    // A shared mapping of the file as the source of a pwrite to the same file, `d` bytes
    // ahead: a forward byte copy repeats the first `d` source bytes, in one page and across
    // pages (same page, neighbouring pages, a distance of more than a page).
    for d in [1, 5, 100, P - 1, P, P + 3] {
        for start in [0, 10, P - 50] {
            let mut t = T::new(&[(8 * P, false)]);
            assert_eq!(t.mmap(W, 8 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
            let len = 2 * P + 77;
            assert_eq!(t.write(0, start + d, len, W + start), Count(len), "d {d} start {start}");
            for i in (0..len).step_by(37).chain([len - 1]) {
                let want = pat(0, start + i % d);
                assert_eq!(t.load(W + start + d + i), want, "d {d} start {start} byte {i}");
            }
            assert_eq!(t.load(W + start + d - 1), pat(0, start + d - 1), "before: untouched");
            // Backwards (the source ahead of the file offset): each byte is read before the
            // copy reaches it, so the old bytes move.
            let mut t = T::new(&[(8 * P, false)]);
            assert_eq!(t.mmap(W, 8 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
            assert_eq!(t.write(0, start, len, W + start + d), Count(len));
            for i in (0..len).step_by(37).chain([len - 1]) {
                assert_eq!(t.load(W + start + i), pat(0, start + d + i), "back d {d} byte {i}");
            }
            // pread from the file into a shared mapping of itself, `d` bytes ahead.
            let mut t = T::new(&[(8 * P, false)]);
            assert_eq!(t.mmap(W, 8 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
            assert_eq!(t.read(0, start, len, W + start + d), Count(len));
            for i in (0..len).step_by(37).chain([len - 1]) {
                assert_eq!(t.load(W + start + d + i), pat(0, start + i % d), "read d {d} byte {i}");
            }
        }
    }
    // A private mapping reads through to the file until its page is copied: the same.
    let mut t = T::new(&[(4 * P, false)]);
    assert_eq!(t.mmap(W, 4 * P, "r", "private,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.write(0, 30, 2 * P, W + 20), Count(2 * P));
    for i in [0, 9, 10, 11, P, 2 * P - 1] {
        assert_eq!(t.load(W + 30 + i), pat(0, 20 + i % 10), "byte {i}");
    }
}

#[test]
fn memory_runs_out_in_the_middle_of_a_page() {
    let fault = |t: &mut T, op: Op, n: u64| t.spec.apply(&Call { task: 0, op }, Oom::Fault(n));
    let mut t = T::new(&[(4 * P, false)]);
    assert_eq!(t.anon(W, 4 * P, "rw"), Addr(W));
    assert_eq!(
        t.mmap(W + 8 * P, 4 * P, "r", "shared,fixed", Some(0), 0),
        Addr(W + 8 * P)
    );
    for i in 0..300 {
        assert_eq!(t.store(W + P - 100 + i, 200), Done);
    }
    let wr = |off, len, buf| Op::Write { file: 0, off, len, buf };
    // The source faults at byte 37, inside the first page of the run: 37 bytes copied.
    assert_eq!(fault(&mut t, wr(10, 300, W + P - 100), 37), Count(37));
    assert_eq!(t.load(W + 8 * P + 10 + 36), OpResult::Byte(200));
    assert_eq!(t.load(W + 8 * P + 10 + 37), pat(0, 47));
    assert_eq!(fault(&mut t, wr(10, 300, W + P - 100), 0), E(Errno::EFAULT));
    // In the second page of the source.
    assert_eq!(fault(&mut t, wr(1000, 300, W + P - 100), 150), Count(150));
    assert_eq!(t.load(W + 8 * P + 1149), OpResult::Byte(200));
    assert_eq!(t.load(W + 8 * P + 1150), pat(0, 1150));
    // write_begin runs out in the middle of a page: the bytes before stay.
    assert_eq!(t.write_oom(0, 2000, 300, W + P - 100, 99), Count(99));
    assert_eq!(t.load(W + 8 * P + 2098), OpResult::Byte(200));
    assert_eq!(t.load(W + 8 * P + 2099), pat(0, 2099));
    // The size grows only as far as the bytes copied.
    assert_eq!(fault(&mut t, wr(4 * P - 10, 300, W + P - 100), 77), Count(77));
    assert_eq!(t.read(0, 4 * P, 1000, W + 2 * P), Count(67));
    // pread: the destination faults, or the read-in runs out, in the middle of a page.
    let rd = |off, len, buf| Op::Read { file: 0, off, len, buf };
    assert_eq!(fault(&mut t, rd(0, 500, W + 3 * P - 200), 333), Count(333));
    assert_eq!(t.load(W + 3 * P - 200 + 332), pat(0, 332));
    assert_eq!(t.load(W + 3 * P - 200 + 333), OpResult::Byte(0));
    assert_eq!(t.oom(0, rd(0, 500, W + 3 * P + 100), 5), Count(5));
    assert_eq!(t.load(W + 3 * P + 104), pat(0, 4));
    assert_eq!(t.load(W + 3 * P + 105), pat(0, 305), "from the read before");
}

#[test]
fn the_size_grows_under_a_copy_from_past_the_old_eof() {
    // File size 100 (page 0 is the last page). The source is the file itself, from 30 bytes
    // before the end of page 0: it reaches page 1 after 30 bytes, when the copy has made the
    // file P + 20 long, so page 1 no longer faults. The bytes are 20 apart: they repeat.
    let mut t = T::new(&[(100, false)]);
    assert_eq!(t.mmap(W, 8 * P, "rw", "shared,fixed", Some(0), 0), Addr(W));
    assert_eq!(t.anon(W + 16 * P, P, "rw"), Addr(W + 16 * P));
    for k in 0..20 {
        assert_eq!(t.store(W + P - 30 + k, k as u8 + 1), Done, "past EOF in the last page");
    }
    assert_eq!(t.load(W + P), OpResult::Sigbus);
    assert_eq!(t.write(0, P - 10, 100, W + P - 30), Count(100));
    for j in 0..100 {
        assert_eq!(t.load(W + P - 10 + j), OpResult::Byte((j % 20) as u8 + 1), "byte {j}");
    }
    assert_eq!(t.read(0, P, 1000, W + 16 * P), Count(90), "size P + 90");
    // Starting 5 bytes before the end of page 0 instead: page 1 is reached when the size is
    // only P - 5, so the source faults there.
    assert_eq!(t.truncate(0, 100), Zero);
    assert_eq!(t.write(0, P - 10, 100, W + P - 5), Count(5));
    assert_eq!(t.read(0, 0, 2 * P, W + 16 * P), Count(P - 5));
    // A pwrite far past EOF bumps the size first: a source between the old EOF and pos
    // (pages 1 and 2) is readable from its first byte, one in the page of pos is not.
    assert_eq!(t.truncate(0, 100), Zero);
    assert_eq!(t.write(0, 3 * P - 10, 30, W + 2 * P - 20), Count(30));
    assert_eq!(t.load(W + 3 * P - 10), OpResult::Byte(0));
    assert_eq!(t.read(0, 3 * P - 20, P, W + 16 * P), Count(40), "size 3P + 20");
    assert_eq!(t.write(0, 4 * P, 30, W + 4 * P + 100), E(Errno::EFAULT));
    assert_eq!(t.load(W + 3 * P + 100), OpResult::Byte(0), "size 4P");
    assert_eq!(t.load(W + 4 * P), OpResult::Sigbus);
}

/// The byte-at-a-time pwrite/pread that the run loops replaced, kept as their reference.
impl Spec {
    #[allow(clippy::too_many_arguments)]
    fn write_bytewise(
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
            if limit == Some(done) {
                stop = Some(Errno::ENOMEM);
                break;
            }
            let pos = off + done;
            let o = &mut self.objects[f];
            o.size = o.size.max(pos);
            let src = buf + done;
            if fault_at == Some(done) || self.check(mm, src, false).is_err() {
                stop = Some(Errno::EFAULT);
                break;
            }
            let byte = match self.access(mm, src, false) {
                Ok(Some(b)) => b,
                _ => unreachable!("checked access"),
            };
            let o = &mut self.objects[f];
            o.set_byte(pos, byte);
            o.size = o.size.max(pos + 1);
            done += 1;
        }
        match (done, stop) {
            (0, Some(e)) => OpResult::Err(e),
            _ => OpResult::Count(done),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_bytewise(
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
        let count = match self.rw_checks(off, len, buf) {
            Ok(c) => c,
            Err(e) => return OpResult::Err(e),
        };
        let mut done = 0;
        let mut stop = None;
        while done < count {
            if off + done >= self.objects[f].size {
                break;
            }
            if limit == Some(done) {
                stop = Some(Errno::ENOMEM);
                break;
            }
            let dst = buf + done;
            if fault_at == Some(done) || self.check(mm, dst, true).is_err() {
                stop = Some(Errno::EFAULT);
                break;
            }
            let byte = self.objects[f].byte(off + done);
            let stored = self.store(mm, dst, byte, false);
            assert_eq!(stored, Ok(true));
            done += 1;
        }
        match (done, stop) {
            (0, Some(e)) => OpResult::Err(e),
            _ => OpResult::Count(done),
        }
    }

    /// [`Spec::apply`] with the byte loops for pwrite and pread.
    fn apply_bytewise(&mut self, call: &Call, oom: Oom) -> OpResult {
        let mm = self.tasks[call.task as usize].expect("alive");
        let (limit, fault_at) = match oom {
            Oom::No => (None, None),
            Oom::After(n) => (Some(n), None),
            Oom::Fault(n) => (None, Some(n)),
            // The differential test never draws it; the byte loops predate it.
            Oom::AfterGrow(_) => return self.apply(call, oom),
        };
        match call.op {
            Op::Write { file, off, len, buf } => self.write_bytewise(mm, file, off, len, buf, limit, fault_at),
            Op::Read { file, off, len, buf } => self.read_bytewise(mm, file, off, len, buf, limit, fault_at),
            _ => self.apply(call, oom),
        }
    }
}

/// splitmix64: a small deterministic generator for the differential test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<X: Copy>(&mut self, xs: &[X]) -> X {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Random traces of mappings (file, anonymous, shared anonymous, hugetlb; shared and private),
/// stores, truncations, munmap/mprotect, and pwrite/pread with memory running out anywhere:
/// every pwrite/pread gives the same result and leaves the same state as the byte loops.
#[test]
fn runs_match_the_byte_loops() {
    let hps = Config::default().huge_page_size();
    let huge_base = W + 32 * P;
    // Copies that moved bytes, and those of them whose buffer starts in a mapping of the file.
    let (mut copies, mut aliased) = (0, 0);
    for seed in 0..1000 {
        let mut r = Rng(seed);
        let mut t = T::new(&[(r.below(5 * P), false), (r.below(3 * P), false), (2 * hps, true)]);
        // An address near the mappings: page boundaries and the ends of regions are likely.
        let addr = |r: &mut Rng| {
            let base = if r.below(4) == 0 { huge_base } else { W };
            let page = r.below(if base == W { 20 } else { 3 * hps / P });
            let within = match r.below(4) {
                0 => 0,
                1 => P - 1 - r.below(8),
                _ => r.below(P),
            };
            (base + page * P + within).saturating_sub(r.below(2) * r.below(64))
        };
        for i in 0..60 {
            let prot_s = r.pick(&["r", "rw", "rw", "none", "x"]);
            let op = match if i < 8 { i % 3 } else { r.below(14) } {
                0 | 1 => {
                    let file = r.pick(&[None, Some(0), Some(1)]);
                    let fl = r.pick(&["shared,fixed", "private,fixed"]);
                    let a = W + r.below(16) * P;
                    let len = (1 + r.below(6)) * P;
                    let off = r.below(4) * P;
                    let _ = t.mmap(a, len, prot_s, fl, file, off);
                    continue;
                }
                2 => {
                    let fl = r.pick(&["shared,fixed", "private,fixed"]);
                    let a = huge_base + r.below(3) * hps;
                    let _ = t.mmap(
                        a,
                        (1 + r.below(2)) * hps,
                        r.pick(&["r", "rw"]),
                        fl,
                        Some(2),
                        r.below(2) * hps,
                    );
                    continue;
                }
                3 => {
                    let _ = t.mprotect(W + r.below(20) * P, (1 + r.below(3)) * P, prot_s);
                    continue;
                }
                4 => {
                    let _ = t.munmap(W + r.below(20) * P, (1 + r.below(2)) * P);
                    continue;
                }
                5 => {
                    let _ = t.truncate(r.below(2) as u32, r.below(6 * P));
                    continue;
                }
                6..=8 => {
                    for _ in 0..1 + r.below(4) {
                        let (a, v) = (addr(&mut r), r.below(256) as u8);
                        let _ = t.store(a, v);
                        let _ = t.load(addr(&mut r));
                    }
                    continue;
                }
                9..=11 => Op::Write {
                    file: r.pick(&[0, 0, 0, 1, 1, 2]),
                    off: {
                        let xs = [
                            0,
                            r.below(7 * P),
                            r.below(7 * P),
                            (P * r.below(7)).saturating_sub(r.below(2)),
                        ];
                        r.pick(&xs)
                    },
                    len: {
                        let xs = [0, 1, r.below(100), r.below(3 * P), r.below(3 * P)];
                        r.pick(&xs)
                    },
                    buf: addr(&mut r),
                },
                _ => Op::Read {
                    file: r.pick(&[0, 1, 2]),
                    off: {
                        let xs = [0, r.below(7 * P), r.below(2 * hps)];
                        r.pick(&xs)
                    },
                    len: {
                        let xs = [0, 1, r.below(100), r.below(3 * P), r.below(3 * P)];
                        r.pick(&xs)
                    },
                    buf: addr(&mut r),
                },
            };
            let n = {
                let xs = [0, 1, r.below(P), r.below(3 * P), P - r.below(3)];
                r.pick(&xs)
            };
            let oom = r.pick(&[Oom::No, Oom::No, Oom::After(n), Oom::Fault(n)]);
            let call = Call { task: 0, op };
            let mut reference = t.spec.clone();
            let want = reference.apply_bytewise(&call, oom);
            let got = t.spec.apply(&call, oom);
            assert_eq!(got, want, "seed {seed}: {:?} with {oom:?}", call.op);
            assert!(
                t.spec == reference,
                "seed {seed}: state after {:?} with {oom:?}",
                call.op
            );
            if matches!(got, Count(c) if c > 0) {
                copies += 1;
                let (Op::Write { file, buf, .. } | Op::Read { file, buf, .. }) = call.op else {
                    unreachable!()
                };
                aliased += u64::from(
                    reference.mms[&0]
                        .find(buf)
                        .is_some_and(|v| v.obj == Some(file as usize)),
                );
            }
        }
    }
    assert!(
        copies > 3000 && aliased > 500,
        "{copies} copies compared, {aliased} aliased"
    );
}
