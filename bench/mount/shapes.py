#!/usr/bin/python3
"""The local S3 server's ceiling by request shape: how fast it serves big objects to 4 readers when
they ask in whole-object GETs, in sequential ranged GETs of a given part size, and with more parts
in flight per reader. It says whether the number of requests (a mount that asks for 4 MiB blocks
sends 64 GETs per 256 MiB file where one whole-object GET would do) is what bounds a mount's
big-file reads, and how much of the server's CPU each shape costs.

    /usr/bin/python3 bench/mount/shapes.py [--files 4] [--mib 256] [--parts 4,8,16] [--inflight 1,2,4]

Each shape runs with the page cache dropped (when this process may) and prints MiB/s, the ratio to
the whole-object GETs, the server's CPU-seconds per GiB and the number of GETs. Every reader is a
curl process per connection: a stream of ranged GETs is one curl that reuses its connection
(`--next`), and `inflight` k gives each file k such connections, each taking every k-th part.
Only the standard library; curl and node as compare.py needs them.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib  # noqa: E402
from mountlib import IP, log  # noqa: E402

MiB = 1 << 20


def drop():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def server_pid():
    return mountlib.procs[0].pid


def run(curls):
    ps = [subprocess.Popen(c) for c in curls]
    if any(p.wait() for p in ps):
        sys.exit("shapes: curl failed")


def shape(urls, size, part, inflight):
    """curl command lines: whole-object GETs (part 0), or per URL `inflight` connections that each
    ask for every inflight-th part of `part` bytes in order."""
    if part == 0:
        return [["curl", "-sf", "-o", "/dev/null", u] for u in urls]
    cmds = []
    n = (size + part - 1) // part
    for u in urls:
        for k in range(inflight):
            cmd = ["curl", "-sf"]
            for i in range(k, n, inflight):
                if len(cmd) > 2:
                    cmd.append("--next")
                cmd += ["-o", "/dev/null", "-r", "%d-%d" % (i * part, min(size, (i + 1) * part) - 1), u]
            cmds.append(cmd)
    return cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--parts", default="4,8,16", help="part sizes in MiB, comma separated")
    ap.add_argument("--inflight", default="1,2,4", help="connections per file, comma separated")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each shape (the best is kept)")
    o = ap.parse_args()
    mountlib.s3_env()
    work = tempfile.mkdtemp(prefix="shoal-shapes-")
    try:
        port = mountlib.start_s3(work)
        size = o.mib * MiB
        src = os.path.join(work, "f.bin")
        with open(src, "wb") as f:
            for _ in range(o.mib):
                f.write(os.urandom(MiB))
        names = ["big/f%d.bin" % i for i in range(o.files)]
        for n in names:
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-T", src, "http://%s:%d/%s/%s" % (IP, port, mountlib.BUCKET, n)],
                           check=True)
        os.unlink(src)
        urls = ["http://%s:%d/%s/%s" % (IP, port, mountlib.BUCKET, n) for n in names]
        shapes = [(0, 1)] + [(int(p) * MiB, int(k)) for p in o.parts.split(",") for k in o.inflight.split(",")]
        dropping = drop()
        log("%d x %d MiB; page cache %s; load %s" % (o.files, o.mib, "dropped before each shape" if dropping
                                                     else "NOT dropped (not root)", os.getloadavg()))
        base = None
        print("| shape | connections | GETs | MiB/s | / whole | server CPU-s/GiB |")
        print("|---|---|---|---|---|---|")
        for part, k in shapes:
            best = None
            for _ in range(o.rounds):
                drop()
                mountlib.s3_stats(port, reset=True)
                cpu0 = mountlib.cpu_seconds(server_pid())
                t0 = time.perf_counter()
                run(shape(urls, size, part, k))
                dt = time.perf_counter() - t0
                cpu = mountlib.cpu_seconds(server_pid()) - cpu0
                gets = mountlib.s3_stats(port)["gets"]
                if best is None or dt < best[0]:
                    best = (dt, cpu, gets)
            dt, cpu, gets = best
            mibs = o.files * o.mib / dt
            base = base or mibs
            name = "whole object" if part == 0 else "%d MiB ranges" % (part // MiB)
            print("| %s | %d | %d | %.0f | %.2f | %.2f |" % (name, len(urls) * k, gets, mibs, mibs / base,
                                                           cpu / (o.files * o.mib / 1024)))
            sys.stdout.flush()
        log("load %s" % (os.getloadavg(),))
    finally:
        mountlib.cleanup(work)


if __name__ == "__main__":
    main()
