#!/usr/bin/python3
"""Two or more builds of shoald side by side on reads from the disk cache, in alternating rounds.

  bench/mount/disk_ab.py [--rounds N] [--mib N] [--ios N] [--ceiling FUSE_CEILING] BUILD_DIR BUILD_DIR...

For comparing a change with the build before it on a machine others share: one local S3 server,
one big file, and one `shoald --read-only --mount` per build (each its own block store and port),
all running at once. Each mount reads the file once to store it; then, in every round, each
build in turn (the order rotating from round to round) runs

  rand4k  fio, `--ios` random 4 KiB reads of the file (psync, one job), page cache dropped first
  seq     `cat` of the file, page cache dropped first (the store's files are read from disk)

With --ceiling (BUILD_DIR/bench/fuse_ceiling, the minimal FUSE passthrough), each round also
`cat`s the local copy of the file and the same copy through the passthrough, both cold: the
ceiling any FUSE file system has on this kernel and disk, in the same rounds.

Beside each figure: the CPU-seconds its daemon used per GiB read (utime + stime from /proc/PID/stat, and
utime alone: the daemon's own code), with the read and write system calls it made per request
(syscr + syscw of /proc/PID/io, per fio read or per MiB of `cat`), which no load changes.
Background load moves the other figures, so the rounds alternate and the medians are compared;
the spread is printed beside them. Root only (the page cache is dropped); exits 77 with a message otherwise, or when
fio, Node or FUSE is missing.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import mountlib
from mountlib import cleanup, log, s3_env, start_s3

MiB = 1 << 20
GiB = 1 << 30


def skip(msg):
    print("bench: skipped: " + msg, flush=True)
    sys.exit(77)


def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")


def cpu_split(pid):
    """(user, user + system) CPU-seconds of a process, all its threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, (int(fields[11]) + int(fields[12])) / tick


def syscalls(pid):
    """Read and write system calls a process made (syscr + syscw of /proc/PID/io)."""
    n = 0
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith(("syscr:", "syscw:")):
                n += int(line.split()[1])
    return n


def peak_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rand4k(path, ios):
    out = subprocess.run(["fio", "--name=r", "--filename=" + path, "--readonly", "--rw=randread", "--bs=4k",
                          "--ioengine=psync", "--invalidate=1", "--randrepeat=0", "--number_ios=%d" % ios,
                          "--output-format=json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("bench: fio failed on %s: %s" % (path, out.stderr.strip()))
    r = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]["read"]
    return r["iops"], r["io_bytes"]


def seq(path, size):
    t0 = time.perf_counter()
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    return size / MiB / (time.perf_counter() - t0), size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--mib", type=int, default=256, help="size of the file read")
    ap.add_argument("--ios", type=int, default=40000, help="random 4 KiB reads per round")
    ap.add_argument("--ceiling", help="the FUSE passthrough (BUILD_DIR/bench/fuse_ceiling) to read beside")
    o = ap.parse_args()
    if os.geteuid() != 0:
        skip("needs root to drop the page cache between rounds")
    for prog in ("node", "fio"):
        if subprocess.run(["sh", "-c", "command -v " + prog], capture_output=True).returncode != 0:
            skip("%s is not installed (scripts/deps installs it)" % prog)
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        skip("/dev/fuse is not usable here")
    builds = [os.path.abspath(b) for b in o.builds]
    for b in builds:
        if not os.access(os.path.join(b, "node", "shoald"), os.X_OK):
            skip("shoald is not built in %s" % b)
    s3_env()
    work = tempfile.mkdtemp(prefix="shoal-bench-disk-ab.")
    try:
        port = start_s3(work)
        endpoint = "http://%s:%d" % (mountlib.IP, port)
        os.makedirs(os.path.join(work, "src"))
        data = os.path.join(work, "src", "big.bin")
        with open(data, "wb") as f:
            for _ in range(o.mib):
                f.write(os.urandom(MiB))
        subprocess.run(["curl", "-sf", "-T", data, "http://%s:%d/%s/big.bin" % (mountlib.IP, port, mountlib.BUCKET)],
                       check=True)
        key = os.path.join(work, "cluster.key")
        subprocess.run([os.path.join(builds[0], "node", "shoal"), "keygen", "-o", key], check=True)
        daemons = []
        base_port = mountlib.PORT
        for i, b in enumerate(builds):
            mountlib.PORT = base_port + 1 + i  # each daemon its own port
            p, mnt = mountlib.start_shoald(os.path.join(b, "node", "shoald"), work, "b%d" % i, endpoint, key)
            path = os.path.join(mnt, "big.bin")
            subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # stores every block
            daemons.append((b, p, path))
        res = {(b, c): [] for b, _, _ in daemons for c in ("rand4k", "seq")}
        others = [("local disk", data)]
        if o.ceiling:
            mnt = os.path.join(work, "passthrough")
            os.makedirs(mnt)
            mountlib._mounting(subprocess.Popen([o.ceiling, os.path.join(work, "src"), mnt]), mnt, "fuse_ceiling",
                               None)
            others.append(("FUSE passthrough", os.path.join(mnt, "big.bin")))
        time.sleep(2)  # the stores' writes settle
        for name, _ in others:
            res[(name, "seq")] = []
        for r in range(o.rounds):
            order = daemons[r % len(daemons):] + daemons[:r % len(daemons)]
            for b, p, path in order:
                for case in ("rand4k", "seq"):
                    drop()
                    u0, c0 = cpu_split(p.pid)
                    s0 = syscalls(p.pid)
                    v, nbytes = rand4k(path, o.ios) if case == "rand4k" else seq(path, o.mib * MiB)
                    u1, c1 = cpu_split(p.pid)
                    per = nbytes / 4096 if case == "rand4k" else nbytes / MiB
                    res[(b, case)].append((v, (c1 - c0) / (nbytes / GiB), (u1 - u0) / (nbytes / GiB),
                                           (syscalls(p.pid) - s0) / per))
            for name, path in others:
                drop()
                res[(name, "seq")].append((seq(path, o.mib * MiB)[0],))
            log("round %d of %d, load average %.1f" % (r + 1, o.rounds, os.getloadavg()[0]))
        print("| build | case | median | rounds | CPU-s/GiB median | rounds | user CPU-s/GiB median | "
              "read+write syscalls | peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|")
        for b, p, _ in daemons:
            for case, unit, per in (("rand4k", "IOPS", "read"), ("seq", "MiB/s", "MiB")):
                v = res[(b, case)]
                med = lambda i: statistics.median(x[i] for x in v)
                print("| %s | %s | %.0f %s | %s | %.2f | %s | %.2f | %.2f per %s | %.1f MiB |" % (
                    b, case, med(0), unit, " ".join("%.0f" % x[0] for x in v), med(1),
                    " ".join("%.2f" % x[1] for x in v), med(2), med(3), per, peak_rss(p.pid)))
        for name, _ in others:
            v = [x[0] for x in res[(name, "seq")]]
            print("| %s | seq | %.0f MiB/s | %s | | | | | |" % (name, statistics.median(v), " ".join("%.0f" % x for x in v)))
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
