#!/usr/bin/python3
"""How a file's page cache is made up: 4 KiB pages or large folios (needs root).

  bench/mount/folios.py FILE...

Reads each FILE whole (so its bytes are in the page cache), maps it, and looks every page up in
/proc/self/pagemap (its physical frame) and /proc/kpageflags (bit 15 COMPOUND_HEAD, bit 16
COMPOUND_TAIL: the page is part of a large folio). A warm read costs the kernel per folio, so a file
cached in 4 KiB pages reads slower from the page cache than one cached in large folios: this is why
benchmark (a) of run.py compares a FUSE file with a local one (docs/benchmarks.md, "Mount").
Only the standard library.
"""
import mmap
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def mapping_start(path):
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(real):
                return int(line.split("-")[0], 16)
    sys.exit("folios: %s is not mapped" % path)


def report(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    while os.read(fd, 1 << 20):
        pass
    npages = size // PAGE
    if npages == 0:
        print("%s: smaller than a page" % path)
        return
    mm = mmap.mmap(fd, npages * PAGE, prot=mmap.PROT_READ)
    for i in range(npages):
        mm[i * PAGE]  # fault every page in
    start = mapping_start(path)
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    kflags = os.open("/proc/kpageflags", os.O_RDONLY)
    large = heads = 0
    for i in range(npages):
        entry = struct.unpack("Q", os.pread(pagemap, 8, (start // PAGE + i) * 8))[0]
        pfn = entry & ((1 << 55) - 1)
        if not pfn:
            sys.exit("folios: no physical frame numbers (run as root)")
        flags = struct.unpack("Q", os.pread(kflags, 8, pfn * 8))[0]
        heads += (flags >> 15) & 1
        large += ((flags >> 15) | (flags >> 16)) & 1
    os.close(kflags)
    os.close(pagemap)
    mm.close()
    os.close(fd)
    print("%s: %d pages, %d of them in %d large folios" % (path, npages, large, heads))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for p in sys.argv[1:]:
        report(p)
