#!/usr/bin/python3
"""Mount benchmarks of shoald --mount, measured side by side in one run, printed as ratios.

  (a) warm sequential read of a big file through the mount / the same bytes from local disk,
      both in the page cache, best of BENCH_ROUNDS (target >= 0.85);
  (b) open+read+close of BENCH_WARM_FILES files of 100 KB through the mount / on local disk, both
      warm (target >= 0.5); the mount is --read-only, as for a training dataset, and the same
      figure for a writable mount is printed beside it;
  (c) cold reads of BENCH_BIG_FILES x BENCH_BIG_MIB MiB and of BENCH_SMALL_FILES x 100 KB through
      Shoal, s3fs and rclone mount, each freshly mounted (target: Shoal <= 0.5 x s3fs, and faster
      than rclone), beside plain GETs of the same objects with the same threads (the server's
      ceiling: no file system can read faster than the server sends);
  (d) time to first byte of a file not cached anywhere: open + first 64 KiB read through the mount
      / a direct GET of the same object's first 64 KiB, median of BENCH_TTFB_FILES (target <= 1.5).

  bench/mount/run.py [BUILD_DIR]        (default build; needs shoald and shoal built there)

Every tool reads the same objects from the same local S3 server, s3rver 3.7.1
(`tests/s3rver/start.js --legacy`): s3fs 1.90 signs GET /bucket/ in a form the verifying
server (4.0.4) rejects. rclone runs without AWS_CA_BUNDLE (it would load it as a CA file).
Every cold read uses 8 reader threads and 1 MiB reads; the server's files are read once before
the first tool, so every tool finds the server equally warm. Needs root (or fusermount3) and
/dev/fuse; s3fs and rclone are Debian's packages (scripts/deps) and are skipped with a message
when missing. Only the standard library.

Environment: BENCH_PARTS (abcd: which of the four to run), BENCH_BIG_FILES (4), BENCH_BIG_MIB (256), BENCH_SMALL_FILES (5000), BENCH_WARM_FILES
(1000), BENCH_TTFB_FILES (20), BENCH_ROUNDS (3), BENCH_BLOCK_SIZE (4M), BENCH_TOOLS (shoal,s3fs,rclone:
which mounts (c) reads).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from mountlib import (ROOT, best, cleanup, cpu_seconds, get_whole, list_dirs, log, open_read_close, quiet,
                      read_whole, s3_env, start_rclone, start_s3, start_s3fs, ttfb_get, ttfb_mount, unmount)
import mountlib

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
SHOALD = os.path.join(BUILD, "node", "shoald")
SHOAL = os.path.join(BUILD, "node", "shoal")
BIG_FILES = int(os.environ.get("BENCH_BIG_FILES", "4"))
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "256"))
SMALL_FILES = int(os.environ.get("BENCH_SMALL_FILES", "5000"))
WARM_FILES = int(os.environ.get("BENCH_WARM_FILES", "1000"))
TTFB_FILES = int(os.environ.get("BENCH_TTFB_FILES", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BLOCK = os.environ.get("BENCH_BLOCK_SIZE", "4M")
PARTS = os.environ.get("BENCH_PARTS", "abcd")
TOOLS = os.environ.get("BENCH_TOOLS", "shoal,s3fs,rclone").split(",")
SMALL = 100 * 1000
# Small files go in directories of 500, as large datasets are usually sharded; each directory is at
# the top (small00/, small01/, ...) because s3rver leaves out the common prefix of keys two levels
# below a listed prefix, which hides such directories from tools that list their parent (rclone).
SMALL_PER_DIR = 500
THREADS = 8


def start_shoald(work, name, endpoint, key, read_only=True):
    return mountlib.start_shoald(SHOALD, work, name, endpoint, key, BLOCK, read_only)


def cold_direct(port, names, sizes):
    """The server's own ceiling: THREADS threads GET every object whole and keep nothing."""
    return mountlib.timed_all(lambda n: get_whole(port, n), names, sizes, THREADS, "direct GETs")


def cold_read(root, names, sizes):
    """Reads every file with THREADS threads; returns seconds. Checks every length."""
    return mountlib.timed_all(lambda n: read_whole(os.path.join(root, n)), names, sizes, THREADS, root)


def make_data(work, endpoint, env):
    data = os.path.join(work, "data")
    big = ["big/f%d.bin" % i for i in range(BIG_FILES)]
    small = ["small%02d/s%05d.bin" % (i // SMALL_PER_DIR, i) for i in range(SMALL_FILES)]
    ttfb = ["ttfb/t%02d.bin" % i for i in range(TTFB_FILES)]
    for d in ["big", "ttfb"] + sorted({os.path.dirname(n) for n in small}):
        os.makedirs(os.path.join(data, d))
    for n in big:
        with open(os.path.join(data, n), "wb") as f:
            for _ in range(BIG_MIB):
                f.write(os.urandom(1 << 20))
    for n in small:
        with open(os.path.join(data, n), "wb") as f:
            f.write(os.urandom(SMALL))
    for n in ttfb:
        with open(os.path.join(data, n), "wb") as f:
            f.write(os.urandom(8 << 20))
    log("uploading %d x %d MiB, %d x 100 KB, %d x 8 MiB with awscli" % (BIG_FILES, BIG_MIB, SMALL_FILES, TTFB_FILES))
    subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--quiet", data, "s3://bench/"],
                   check=True, env=env)
    return data, big, small, ttfb


def main():
    for prog in (SHOALD, SHOAL):
        if not os.access(prog, os.X_OK):
            sys.exit("bench: %s is not built (cmake --build %s --target shoald shoal)" % (prog, BUILD))
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        sys.exit("bench: /dev/fuse is not usable here; the mount benchmarks need FUSE")
    work = tempfile.mkdtemp(prefix="shoal-bench-mount.")
    try:
        s3port = start_s3(work)
        endpoint = "http://127.0.0.1:%d" % s3port
        env = s3_env()
        data, big, small, ttfb = make_data(work, endpoint, env)
        big_sizes = [BIG_MIB << 20] * len(big)
        small_sizes = [SMALL] * len(small)
        key = os.path.join(work, "cluster.key")
        subprocess.run([SHOAL, "keygen", "-o", key], check=True)
        # The server's own files once, so every tool below finds them equally warm.
        for dirpath, _, files in os.walk(os.path.join(work, "s3")):
            for f in files:
                read_whole(os.path.join(dirpath, f))

        cold, cpu = {}, {}
        if "c" in PARTS:
            log("cold reads with plain GETs (the server's ceiling)")
            cold["direct"] = (cold_direct(s3port, big, big_sizes), cold_direct(s3port, small, small_sizes))
        tools = (("shoal", lambda w, _: start_shoald(w, "shoal-cold", endpoint, key)),
                 ("s3fs", start_s3fs), ("rclone", start_rclone)) if "c" in PARTS else ()
        for tool, start in tools:
            if tool not in TOOLS:
                continue
            if tool != "shoal" and shutil.which(tool) is None:
                log("%s is not installed (scripts/deps installs it): skipped" % tool)
                continue
            log("cold reads through %s" % tool)
            p, mnt = start(work, s3port)
            list_dirs(mnt, big + small)
            c0 = cpu_seconds(p.pid)
            tb = cold_read(mnt, big, big_sizes)
            c1 = cpu_seconds(p.pid)
            ts = cold_read(mnt, small, small_sizes)
            cpu[tool] = (c1 - c0, cpu_seconds(p.pid) - c1)
            cold[tool] = (tb, ts)
            unmount(p, mnt)

        log("warm reads and time to first byte through a fresh Shoal mount")
        p, mnt = start_shoald(work, "shoal-warm", endpoint, key)
        t_mount, t_get, seq, orc = [], [], {}, {}
        if "d" in PARTS:
            os.listdir(os.path.join(mnt, "ttfb"))
            # Each sample on a quiet server: a block's fetch goes on after its first bytes were
            # returned (the rest of the block is cached), and s3rver serves one request at a time,
            # so without the pause a sample would wait behind the previous file's download.
            t_mount = [quiet(ttfb_mount, os.path.join(mnt, n)) for n in ttfb]
            t_get = [quiet(ttfb_get, s3port, n) for n in ttfb]
        warm_small = small[:WARM_FILES]
        list_dirs(mnt, warm_small)
        for root in (mnt, data):  # fill both page caches
            if "a" in PARTS:
                read_whole(os.path.join(root, big[0]))
            if "b" in PARTS:
                open_read_close(root, warm_small)
        for root, label in ((mnt, "mount"), (data, "local")) if "a" in PARTS else ():
            def one(root=root):
                t0 = time.perf_counter()
                read_whole(os.path.join(root, big[0]))
                return time.perf_counter() - t0
            seq[label] = best(one, ROUNDS)
        if "b" in PARTS:
            orc = {label: best(lambda root=root: open_read_close(root, warm_small), ROUNDS)
                   for root, label in ((mnt, "mount"), (data, "local"))}
        unmount(p, mnt)
        if "b" in PARTS:
            # The same on a writable mount: an open there still asks the daemon (OPEN), since a
            # descriptor may write; readers' closes skip FLUSH.
            p, mnt = start_shoald(work, "shoal-warm-rw", endpoint, key, read_only=False)
            list_dirs(mnt, warm_small)
            open_read_close(mnt, warm_small)
            orc["writable"] = best(lambda: open_read_close(mnt, warm_small), ROUNDS)
            unmount(p, mnt)

        print("mount benchmark: one shoald on loopback, block size %s, s3rver 3.7.1, %d reader threads"
              % (BLOCK, THREADS))
        if seq:
            print("(a) warm sequential read of %d MiB, best of %d: mount %.0f MiB/s, local %.0f MiB/s"
                  % (BIG_MIB, ROUNDS, BIG_MIB / seq["mount"], BIG_MIB / seq["local"]))
            print("    mount / local = %.2f   (target >= 0.85)" % (seq["local"] / seq["mount"]))
        if orc:
            print("(b) open+read+close of %d x 100 KB, warm, best of %d: mount %.0f files/s, local %.0f files/s"
                  % (len(warm_small), ROUNDS, len(warm_small) / orc["mount"], len(warm_small) / orc["local"]))
            print("    mount / local = %.2f   (target >= 0.5)" % (orc["local"] / orc["mount"]))
            print("    writable mount (no --read-only, one OPEN per open): %.0f files/s, mount / local = %.2f"
                  % (len(warm_small) / orc["writable"], orc["local"] / orc["writable"]))
        if cold:
            print("(c) cold reads, %d x %d MiB and %d x 100 KB:" % (BIG_FILES, BIG_MIB, SMALL_FILES))
            for tool, (tb, ts) in cold.items():
                print("    %-7s big %6.1f s (%4.0f MiB/s)   small %6.1f s (%4.0f files/s)%s"
                      % (tool, tb, BIG_FILES * BIG_MIB / tb, ts, SMALL_FILES / ts,
                         "   (plain GETs, no file system: the server's ceiling)" if tool == "direct" else
                         "   CPU of the mount's process: %.1f ms/MiB, %.2f ms/file"
                         % (cpu[tool][0] * 1e3 / (BIG_FILES * BIG_MIB), cpu[tool][1] * 1e3 / SMALL_FILES)))
            if "s3fs" in cold:
                print("    s3fs reaches %.0f %% (big) and %.0f %% (small) of the server's ceiling; a tool at 0.5 x s3fs's"
                      " time would need %.1f x and %.1f x the ceiling"
                      % (100 * cold["direct"][0] / cold["s3fs"][0], 100 * cold["direct"][1] / cold["s3fs"][1],
                         2 * cold["direct"][0] / cold["s3fs"][0], 2 * cold["direct"][1] / cold["s3fs"][1]))
            for tool in ("s3fs", "rclone"):
                if tool in cold:
                    print("    shoal / %-6s big %.2f   small %.2f   (target: s3fs <= 0.5, rclone < 1)"
                          % (tool, cold["shoal"][0] / cold[tool][0], cold["shoal"][1] / cold[tool][1]))
        if t_mount:
            print("(d) time to first byte of an uncached 8 MiB file, median of %d: mount %.1f ms, direct GET %.1f ms"
                  % (len(ttfb), statistics.median(t_mount) * 1e3, statistics.median(t_get) * 1e3))
            print("    mount / GET = %.2f   (target <= 1.5)" % (statistics.median(t_mount) / statistics.median(t_get)))
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
