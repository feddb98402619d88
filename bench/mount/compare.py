#!/usr/bin/python3
"""Shoal's mount beside s3fs and rclone mount, every case of the comparison in one run.

  bench/mount/compare.py [--quick] [--repeat N] [--tools shoal,s3fs,rclone] [--cases big-cold,big-disk,...]
                         [--big-mib N] [--small-files N] [--save FILE.json] [BUILD_DIR]

One local S3 server (s3rver 3.7.1, `tests/s3rver/start.js --legacy`), one data set, and each tool
mounted in turn with a disk cache (one `shoald --read-only --mount`; s3fs with use_cache; rclone
with --vfs-cache-mode full), fresh, with an empty cache. Each tool then runs the same cases in the
same order:

  ttfb       open + first 64 KiB of an uncached 8 MiB file, median     vs a direct GET's first 64 KiB
  small      100 KB files read whole, cold, 8 reader threads           vs plain GETs, 8 threads
  warm       open+read+close of those files, from the page cache       vs the same on local disk
  forgot     some of them again, 8 readers, after the kernel dropped   vs the same on local disk
             its dentries and inodes too (echo 3): lookups and the disk cache, no page cache
  big-cold   the big files, cold, one reader thread each (4)           vs curl, one GET per file at once
  big-disk   `cat` of each big file, from the tool's disk cache        vs `cat` of a local file, cold
  rand4k     fio random 4 KiB reads of a big file, from the disk cache vs the same on local disk, cold
  rand128k   the same with 128 KiB reads
  rand-cold  fio random 4 KiB reads of a file no one has read          (bytes fetched from S3 beside)

"Cold" means the page cache is dropped first (echo 1 > /proc/sys/vm/drop_caches, root only): the
server's files, the local copies and the tools' disk caches are all read from disk. The kernel
keeps its dentries and inodes, as after a data loader listed the directories; `forgot` is the one
case that drops them too (echo 3: what memory pressure does to a long job's inodes), so a mount's
lookup path is measured apart from its data path. Without that right the cases that read from a
disk cache are skipped and said to be. The server counts the
requests and the body bytes it sends (GET /_shoal/stats), read after each case.

Beside every figure of a mount: the CPU-seconds its process used per GiB the case delivered
(utime + stime from /proc/PID/stat) and its peak resident memory during the case (VmHWM from
/proc/PID/status, reset before each case through /proc/PID/clear_refs). The tables are printed
in Markdown, with the ratios Shoal / s3fs, Shoal / rclone and Shoal / ceiling (or local disk);
for throughput a ratio above 1 is better for Shoal, for time to first byte below 1 is.

--repeat N runs the whole comparison N times in one go (the ceilings, then each tool mounted afresh
with an empty cache, the tools' order turning by one each round, so none is always first after the
ceilings): a busy machine moves one round's figures by more than the tools differ. The tables then
give each figure's median over the rounds, each ratio the median of the rounds' own ratios, and a
last table every round's ratios, so the spread is in view.

--cases runs some of the cases (and the ones they need: the disk-cache cases read what big-cold
put there, warm and forgot what small did), with their ceilings; the default is all of them.

The default sizes are the full run (4 x 256 MiB big files, 3,000 small files, 20 first-byte files,
fio 10 s per case, 50 cold random reads; tens of minutes on a busy 2-core machine); --quick
(4 x 32 MiB, 300 files, 5 first-byte files, fio 3 s, 20 cold reads) takes a few minutes.

Exits 77 (skipped) with a message when FUSE, s3fs, rclone, Node or fio is missing, or shoald is not
built. Only the standard library; s3fs, rclone, fio and curl are Debian's packages (scripts/deps).
"""
import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import mountlib
from mountlib import (IP, ROOT, best, cleanup, cpu_seconds, get_whole, list_dirs, log, open_read_close, quiet,
                      read_whole, s3_env, start_rclone, start_s3, start_s3fs, s3_stats, timed_all, ttfb_get,
                      ttfb_mount, unmount)

MiB = 1 << 20
GiB = 1 << 30
SMALL = 100 * 1000
SMALL_PER_DIR = 500  # see run.py: top-level directories, as s3rver lists them to every tool
SMALL_THREADS = 8
CASES = ["ttfb", "small", "warm", "forgot", "big-cold", "big-disk", "rand4k", "rand128k", "rand-cold"]
TITLES = {
    "ttfb": "time to first byte, uncached 8 MiB (ms, lower is better)",
    "small": "small files cold, 8 readers (files/s)",
    "warm": "small files warm from page cache (files/s)",
    "forgot": "small files after the kernel forgot their inodes, 8 readers (files/s)",
    "big-cold": "big files cold, 4 readers (MiB/s)",
    "big-disk": "big files from the disk cache, sequential (MiB/s)",
    "rand4k": "random 4 KiB from the disk cache (IOPS, p50)",
    "rand128k": "random 128 KiB from the disk cache (IOPS, p50)",
    "rand-cold": "random 4 KiB cold (IOPS, p50, fetched from S3)",
}
NEEDS = {"warm": "small", "forgot": "small", "big-disk": "big-cold", "rand4k": "big-cold", "rand128k": "big-cold"}
CEILING = {"ttfb": "direct GET", "small": "plain GETs, 8 threads", "warm": "local disk", "forgot": "local disk",
           "big-cold": "curl, 4 GETs", "big-disk": "local disk, cold", "rand4k": "local disk, cold",
           "rand128k": "local disk, cold", "rand-cold": None}


def skip(msg):
    print("bench: skipped: " + msg, flush=True)
    sys.exit(77)


def options():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    ap.add_argument("--tools", default="shoal,s3fs,rclone")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--big-files", type=int, default=4)
    ap.add_argument("--big-mib", type=int)
    ap.add_argument("--small-files", type=int)
    ap.add_argument("--block-size", default="4M", help="shoald --block-size")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="N rounds (ceilings, then each tool with a fresh cache, the order turning each round);"
                         " the tables give medians, and the ratios the median of each round's ratio")
    ap.add_argument("--save", metavar="FILE", help="also write the raw figures to FILE as JSON")
    o = ap.parse_args()
    q = o.quick
    o.big_mib = o.big_mib or (32 if q else 256)
    o.small_files = o.small_files or (300 if q else 3000)
    o.warm_files = min(o.small_files, 300 if q else 1000)
    o.forgot_files = min(o.small_files, 100 if q else 300)
    o.ttfb_files = 5 if q else 20
    o.fio_seconds = 3 if q else 10
    o.cold_ios, o.cold_cap = (20, 20) if q else (50, 60)
    o.rand_mib = 64 if q else 256
    o.rounds = 3
    o.tools = [t for t in o.tools.split(",") if t]
    if o.repeat < 1:
        ap.error("--repeat takes a number of rounds, 1 or more")
    want = set(c for c in o.cases.split(",") if c)
    if want - set(CASES):
        ap.error("unknown case(s): %s (the cases: %s)" % (",".join(sorted(want - set(CASES))), ",".join(CASES)))
    want |= set(NEEDS[c] for c in want if c in NEEDS)
    o.cases = [c for c in CASES if c in want]
    o.build = os.path.abspath(o.build)
    return o


def can_drop():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def drop(what="1"):
    """Drops the page cache ("1"), or the page cache, dentries and inodes ("3")."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(what)


def reset_peak(pid):
    """Zeroes a process's VmHWM (writing 5 to clear_refs); False when not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def put(port, key, path):
    conn = http.client.HTTPConnection(IP, port)
    with open(path, "rb") as f:
        conn.request("PUT", "/%s/%s" % (mountlib.BUCKET, key), body=f,
                     headers={"Content-Length": str(os.path.getsize(path))})
    r = conn.getresponse()
    r.read()
    conn.close()
    if r.status != 200:
        sys.exit("bench: PUT %s answered %d" % (key, r.status))
    return 0


def make_data(work, port, o):
    """Writes the data set to work/data (the local copies) and PUTs it to the server."""
    data = os.path.join(work, "data")
    ds = {"big": ["big/f%d.bin" % i for i in range(o.big_files)],
          "small": ["small%02d/s%05d.bin" % (i // SMALL_PER_DIR, i) for i in range(o.small_files)],
          "ttfb": ["ttfb/t%02d.bin" % i for i in range(o.ttfb_files)],
          "rand": ["rand/r.bin"]}
    for kind, case in (("big", "big-cold"), ("small", "small"), ("ttfb", "ttfb"), ("rand", "rand-cold")):
        if case not in o.cases:  # only the files the chosen cases read
            ds[kind] = []
    sizes = {"big": o.big_mib * MiB, "small": SMALL, "ttfb": 8 * MiB, "rand": o.rand_mib * MiB}
    names = [n for k in ds for n in ds[k]]
    for n in names:
        os.makedirs(os.path.dirname(os.path.join(data, n)), exist_ok=True)
    for k in ds:
        for n in ds[k]:
            with open(os.path.join(data, n), "wb") as f:
                left = sizes[k]
                while left:
                    f.write(os.urandom(min(left, MiB)))
                    left -= min(left, MiB)
    log("uploading %d x %d MiB, %d x 100 KB, %d x 8 MiB and %d MiB" %
        (len(ds["big"]), o.big_mib, len(ds["small"]), len(ds["ttfb"]), o.rand_mib * len(ds["rand"])))
    timed_all(lambda n: put(port, n, os.path.join(data, n)), names, [0] * len(names), 4, "PUTs")
    return data, ds


def fio(path, bs, seconds=None, ios=None):
    """fio random reads of one file (psync, one job); returns (IOPS, p50 ms, bytes read)."""
    args = ["fio", "--name=r", "--filename=" + path, "--readonly", "--rw=randread", "--bs=" + bs,
            "--ioengine=psync", "--invalidate=1", "--randrepeat=1", "--output-format=json"]
    args += ["--time_based", "--runtime=%d" % seconds] if seconds else ["--number_ios=%d" % ios[0],
                                                                          "--runtime=%d" % ios[1]]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("bench: fio failed on %s: %s" % (path, out.stderr.strip()))
    r = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]["read"]
    return r["iops"], r["clat_ns"]["percentile"]["50.000000"] / 1e6, r["io_bytes"]


def settle(port):
    """Server stats once its bytes stop growing (a mount may go on fetching after its reader
    returned: read-ahead, the rest of a block), polled every 0.5 s for at most 20 s."""
    last, t_end = s3_stats(port), time.time() + 20
    while time.time() < t_end:
        time.sleep(0.5)
        now = s3_stats(port)
        if now["bytesOut"] == last["bytesOut"]:
            return now
        last = now
    return last


def cat(paths):
    """`cat` of each file in turn to /dev/null; returns seconds."""
    t0 = time.perf_counter()
    for p in paths:
        subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


class Cases:
    """Runs the cases against one root (a mount or the local copies); a case returns
    (value, p50 ms or None, bytes delivered)."""

    def __init__(self, o, port, root, ds, dropping):
        self.o, self.port, self.root, self.ds, self.dropping = o, port, root, ds, dropping

    def path(self, n):
        return os.path.join(self.root, n)

    def cold(self, what="1"):
        if self.dropping:
            drop(what)

    def ttfb(self):
        self.cold()
        t = [quiet(ttfb_mount, self.path(n)) for n in self.ds["ttfb"]]
        return statistics.median(t) * 1e3, None, 65536 * len(t)

    def small(self):
        self.cold()
        n = self.ds["small"]
        t = timed_all(lambda f: read_whole(self.path(f)), n, [SMALL] * len(n), SMALL_THREADS, self.root)
        return len(n) / t, None, SMALL * len(n)

    def warm(self):
        n = self.ds["small"][:self.o.warm_files]
        open_read_close(self.root, n)
        t = best(lambda: open_read_close(self.root, n), self.o.rounds)
        return len(n) / t, None, SMALL * len(n) * (self.o.rounds + 1)

    def forgot(self):
        self.cold("3")
        n = self.ds["small"][:self.o.forgot_files]
        t = timed_all(lambda f: read_whole(self.path(f)), n, [SMALL] * len(n), SMALL_THREADS, self.root)
        return len(n) / t, None, SMALL * len(n)

    def big_cold(self):
        self.cold()
        n = self.ds["big"]
        size = self.o.big_mib * MiB
        t = timed_all(lambda f: read_whole(self.path(f)), n, [size] * len(n), len(n), self.root)
        return len(n) * size / MiB / t, None, len(n) * size

    def big_disk(self):
        self.cold()
        t = cat([self.path(n) for n in self.ds["big"]])
        total = len(self.ds["big"]) * self.o.big_mib * MiB
        return total / MiB / t, None, total

    def rand4k(self):
        self.cold()
        return fio(self.path(self.ds["big"][0]), "4k", seconds=self.o.fio_seconds)

    def rand128k(self):
        self.cold()
        return fio(self.path(self.ds["big"][0]), "128k", seconds=self.o.fio_seconds)

    def rand_cold(self):
        self.cold()
        return fio(self.path(self.ds["rand"][0]), "4k", ios=(self.o.cold_ios, self.o.cold_cap))


def run_case(cases, case):
    return getattr(cases, case.replace("-", "_"))()


def ceilings(o, port, data, ds, dropping):
    """The figures no mount can beat: the server's with plain GETs, and local disk's."""
    log("ceilings: plain GETs, curl and local disk")
    res = {}
    local = Cases(o, port, data, ds, dropping)
    if "ttfb" in o.cases:
        if dropping:
            drop()
        res["ttfb"] = statistics.median([quiet(ttfb_get, port, n) for n in ds["ttfb"]]) * 1e3
    if "small" in o.cases:
        if dropping:
            drop()
        n = ds["small"]
        res["small"] = len(n) / timed_all(lambda f: get_whole(port, f), n, [SMALL] * len(n), SMALL_THREADS, "GETs")
    if "warm" in o.cases:
        res["warm"] = run_case(local, "warm")[0]
    if dropping and "forgot" in o.cases:
        res["forgot"] = run_case(local, "forgot")[0]
    if "big-cold" in o.cases:
        if dropping:
            drop()
        urls = ["http://%s:%d/%s/%s" % (IP, port, mountlib.BUCKET, f) for f in ds["big"]]
        t0 = time.perf_counter()
        curls = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", u]) for u in urls]
        if any(c.wait() for c in curls):
            sys.exit("bench: curl failed")
        res["big-cold"] = len(urls) * o.big_mib / (time.perf_counter() - t0)
    if dropping:
        for case in ("big-disk", "rand4k", "rand128k"):
            if case in o.cases:
                v = run_case(local, case)
                res[case] = v[0] if v[1] is None else v[:2]
    return res


def measure(o, tool, p, mnt, port, ds, dropping):
    """Every case through one mount; returns {case: dict(value, p50, cpu, rss, gets, fetched)}."""
    cases = Cases(o, port, mnt, ds, dropping)
    out = {}
    for case in o.cases:
        if case in ("forgot", "big-disk", "rand4k", "rand128k") and not dropping:
            continue
        log("%s: %s" % (tool, case))
        settle(port)  # each case starts on a quiet server, and counts only its own requests
        peak_ok = reset_peak(p.pid)
        s3_stats(port, reset=True)
        c0 = cpu_seconds(p.pid)
        value, p50, delivered = run_case(cases, case)
        cpu = cpu_seconds(p.pid) - c0
        rss = peak_rss_mib(p.pid)
        st = settle(port)
        out[case] = {"value": value, "p50": p50, "cpu": cpu / (delivered / GiB), "rss": rss, "peak_ok": peak_ok,
                     "gets": st["gets"], "requests": st["total"], "heads": st["heads"], "lists": st["lists"], "fetched": st["bytesOut"], "delivered": delivered}
    return out


def ratio(res, ceil, case, other):
    """Shoal's figure over another tool's (other: its name) or over the ceiling ("ceiling"); None when
    either is missing."""
    mine = res.get("shoal", {}).get(case)
    c = ceil.get(case)
    theirs = (res.get(other, {}).get(case) or {}).get("value") if other != "ceiling" else (
        c[0] if isinstance(c, tuple) else c)
    return mine["value"] / theirs if mine and theirs else None


def medians(rounds):
    """One round's figures from all of them: each figure's median, and each ratio the median of the
    rounds' own ratios. Returns (mounts, ceilings, {(case, other): ratio})."""
    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    res = {}
    for tool in rounds[0]["mounts"]:
        res[tool] = {}
        for case, r0 in rounds[0]["mounts"][tool].items():
            each = [rd["mounts"][tool][case] for rd in rounds]
            r = {k: med([e[k] for e in each]) for k in r0 if k != "peak_ok"}
            r["peak_ok"] = all(e["peak_ok"] for e in each)
            res[tool][case] = r
    ceil = {}
    for case, c0 in rounds[0]["ceilings"].items():
        each = [rd["ceilings"][case] for rd in rounds]
        ceil[case] = tuple(med(list(x)) for x in zip(*each)) if isinstance(c0, (tuple, list)) else med(each)
    ratios = {}
    for case in CASES:
        for other in ("s3fs", "rclone", "ceiling"):
            ratios[(case, other)] = med([ratio(rd["mounts"], rd["ceilings"], case, other) for rd in rounds])
    return res, ceil, ratios


def each_round(rounds):
    """Every round's ratios, Shoal over each other tool and over the ceiling."""
    others = [t for t in ("s3fs", "rclone") if t in rounds[0]["mounts"]] + ["ceiling"]
    if "shoal" not in rounds[0]["mounts"]:
        return
    print()
    print("Each round's ratios (Shoal / %s), in the order the rounds ran:" % ", Shoal / ".join(others))
    print()
    print("| case | " + " | ".join("Shoal / " + t for t in others) + " |")
    print("|" + "---|" * (len(others) + 1))
    for case in CASES:
        if case not in rounds[0]["mounts"]["shoal"]:
            continue
        cells = []
        for t in others:
            rs = [ratio(rd["mounts"], rd["ceilings"], case, t) for rd in rounds]
            cells.append("—" if all(x is None for x in rs) else ", ".join("—" if x is None else "%.2f" % x for x in rs))
        print("| %s | %s |" % (TITLES[case].split(" (")[0], " | ".join(cells)))


def fmt(case, v):
    if isinstance(v, tuple):  # (IOPS, p50, bytes) from fio
        return "%s IOPS, p50 %s ms" % (num(v[0]), num(v[1]))
    return num(v)


def num(x):
    return "%.2f" % x if x < 10 else "%.1f" % x if x < 100 else "{:,.0f}".format(x)


def report(o, res, ceil, ratios, commit, loads, dropping):
    tools = [t for t in ("shoal", "s3fs", "rclone") if t in res]
    names = {"shoal": "Shoal", "s3fs": "s3fs", "rclone": "rclone"}
    print()
    print("Mount beside s3fs and rclone: commit %s, %s, %d x %d MiB big files, %d small files of 100 KB,"
          " block size %s%s" % (commit, "quick" if o.quick else "full", o.big_files, o.big_mib, o.small_files,
                                o.block_size, "" if o.repeat == 1 else
                                "; medians of %d rounds (ratios: the median of the rounds' ratios)" % o.repeat))
    print("kernel %s, %d CPUs, load average %s at the start and %s at the end; page cache %s" %
          (platform.release(), os.cpu_count(), loads[0], loads[1],
           "dropped (echo 1) before every cold case, dentries and inodes too (echo 3) before the forgotten"
           " inodes' case" if dropping else "NOT dropped (no right to): disk-cache cases skipped"))
    print()
    others = tools[1:] + ["ceiling"] if "shoal" in tools else []
    head = ["case"] + [names[t] for t in tools] + ["ceiling"] + ["Shoal / " + names.get(t, t) for t in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for case in CASES:
        if not any(case in res[t] for t in tools):
            continue
        row = [TITLES[case]]
        for t in tools:
            r = res[t].get(case)
            cell = "—" if r is None else fmt(case, (r["value"], r["p50"]) if r["p50"] is not None else r["value"])
            if r is not None and case == "rand-cold":
                cell += ", %s MiB fetched for %s MiB read (%d GETs)" % (
                    num(r["fetched"] / MiB), num(r["delivered"] / MiB), r["gets"])
            row.append(cell)
        c = ceil.get(case)
        row.append("—" if c is None else "%s (%s)" % (fmt(case, c), CEILING[case]))
        for t in others:
            x = ratios.get((case, t))
            row.append("%.2f" % x if x is not None else "—")
        print("| " + " | ".join(row) + " |")
    per_tool("CPU-seconds of the mount's process per GiB delivered, and its peak RSS during the case:",
             res, tools, names, ("ttfb",), lambda r: "%s s/GiB, %s MiB%s" % (
                 num(r["cpu"]), num(r["rss"]), "" if r["peak_ok"] else " (since start)"))
    per_tool("Requests the server answered (object GETs, HEADs and listings among them) and MiB it sent,"
             " counted once it was quiet after the case:", res, tools, names, (),
             lambda r: "%d (%d GET, %d HEAD, %d LIST), %s MiB" % (r["requests"], r["gets"], r["heads"], r["lists"],
                                                                  num(r["fetched"] / MiB)))


def per_tool(title, res, tools, names, left_out, cell):
    """A table of one cell per case and tool."""
    print()
    print(title)
    print()
    print("| case | " + " | ".join(names[t] for t in tools) + " |")
    print("|" + "---|" * (len(tools) + 1))
    for case in CASES:
        if case in left_out or not any(case in res[t] for t in tools):
            continue
        cells = ["—" if case not in res[t] else cell(res[t][case]) for t in tools]
        print("| %s | %s |" % (TITLES[case].split(" (")[0], " | ".join(cells)))


def main():
    o = options()
    shoald = os.path.join(o.build, "node", "shoald")
    shoal = os.path.join(o.build, "node", "shoal")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        skip("/dev/fuse is not usable here; the mounts need FUSE")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        skip("neither root nor fusermount3: cannot mount")
    for prog in ["node", "fio", "curl"] + [t for t in o.tools if t != "shoal"]:
        if shutil.which(prog) is None:
            skip("%s is not installed (scripts/deps installs it)" % prog)
    if "shoal" in o.tools and not all(os.access(p, os.X_OK) for p in (shoald, shoal)):
        skip("shoald and shoal are not built in %s (cmake --build %s --target shoald shoal)" % (o.build, o.build))
    dropping = can_drop()
    if not dropping:
        log("cannot write /proc/sys/vm/drop_caches (not root?): the disk-cache cases are skipped, and cold"
            " cases find the server's files in the page cache")
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    loads = ["%.1f" % os.getloadavg()[0]]
    work = tempfile.mkdtemp(prefix="shoal-bench-compare.")
    # The server's keys, for shoald (s3rver 3.7.1 checks none; s3fs and rclone are given them).
    s3_env()
    try:
        port = start_s3(work)
        endpoint = "http://%s:%d" % (IP, port)
        data, ds = make_data(work, port, o)
        every = [n for k in ds for n in ds[k]]
        key = os.path.join(work, "cluster.key")
        if "shoal" in o.tools:
            subprocess.run([shoal, "keygen", "-o", key], check=True)
        rounds = []
        for r in range(o.repeat):
            if o.repeat > 1:
                log("round %d of %d" % (r + 1, o.repeat))
            rw = os.path.join(work, "round%d" % r)
            os.makedirs(rw)
            ceil = ceilings(o, port, data, ds, dropping)
            starts = {"shoal": lambda: mountlib.start_shoald(shoald, rw, "shoal", endpoint, key, o.block_size),
                      "s3fs": lambda: start_s3fs(rw, port, cache=True),
                      "rclone": lambda: start_rclone(rw, port, cache=True)}
            order = [t for t in ("shoal", "s3fs", "rclone") if t in o.tools]
            order = order[r % len(order):] + order[:r % len(order)]
            res = {}
            for tool in order:
                log("mounting %s" % tool)
                p, mnt = starts[tool]()
                list_dirs(mnt, every)
                res[tool] = measure(o, tool, p, mnt, port, ds, dropping)
                unmount(p, mnt)
            rounds.append({"ceilings": ceil, "mounts": res})
        loads.append("%.1f" % os.getloadavg()[0])
        if o.save:
            with open(o.save, "w") as f:
                json.dump({"commit": commit, "loads": loads, "rounds": rounds, **rounds[0]} if o.repeat == 1 else
                          {"commit": commit, "loads": loads, "rounds": rounds}, f, indent=1)
        res, ceil, ratios = medians(rounds)
        report(o, res, ceil, ratios, commit, loads, dropping)
        if o.repeat > 1:
            each_round(rounds)
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
