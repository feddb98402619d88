#!/usr/bin/python3
"""Cluster benchmarks of shoald, measured side by side in one run, printed as ratios.

  (a) all S3 requests (GET + HEAD + LIST) / (unique blocks + objects) when 5 nodes read one dataset
      cold, every node every object at once (target <= 1.05; five nodes without cooperation make
      about 5.0), and S3 GETs / unique blocks;
  (b) `shoal get` of an object cached on this node / `cat` of the same bytes from local disk,
      both warm in the page cache (target >= 0.8);
  (c) egress under churn: S3 GETs / unique blocks when 5 nodes read the dataset cold and, during
      that epoch, a 6th node joins (and reads everything too), one node is drained (`shoal drain`)
      and one is killed with SIGKILL; with --replicas 2 (target <= 1.05) and with 1 (<= 1.25).

  Beside each: every daemon's CPU-seconds per GiB its reader read, its peak RSS, the S3 requests it
  sent and its peer timeouts (requests to a peer it gave up on).

  bench/cluster/run.py [BUILD_DIR]     (default build; needs shoald and shoal built there)

Environment: BENCH_FILES (120), BENCH_BLOCK_SIZE (1M), BENCH_MAX_KIB (4096), BENCH_BIG_MIB (256),
BENCH_ROUNDS (5). Only the standard library; the local S3 server is tests/s3rver/start.js (started
by bench/benchlib.py), uploads use awscli.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402 (bench/, on the path just above)
from benchlib import ROOT, procs, s3_env, s3_stats, stop_processes  # noqa: E402

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
SHOALD = os.path.join(BUILD, "node", "shoald")
SHOAL = os.path.join(BUILD, "node", "shoal")
FILES = int(os.environ.get("BENCH_FILES", "120"))
BLOCK = os.environ.get("BENCH_BLOCK_SIZE", "1M")
MAX_KIB = int(os.environ.get("BENCH_MAX_KIB", "4096"))
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "256"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
NODES = 5
PORT = 7400 + os.getpid() % 500 * 4  # cluster k of the run listens on PORT + k

def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def shoal(node, *args, **kw):
    return subprocess.run([SHOAL, "--control", node["control"]] + list(args), check=True, **kw)


def alive_members(node):
    try:
        out = subprocess.run([SHOAL, "--control", node["control"], "status", "--json"], capture_output=True,
                             check=True).stdout
        return sum(m["state"] == "alive" for m in json.loads(out)["members"])
    except (subprocess.CalledProcessError, ValueError):
        return 0


class Cluster:
    """Daemons of one measurement: node i on 127.0.0.(i+1), each with a directory of its own."""

    def __init__(self, work, name, endpoint, key, port, extra):
        self.work, self.name, self.endpoint, self.key, self.port, self.extra = work, name, endpoint, key, port, extra
        self.nodes = []

    def start(self, seeds):
        i = len(self.nodes)
        d = os.path.join(self.work, "%s-node%d" % (self.name, i))
        os.makedirs(d)
        node = {"id": "node%d" % i, "ip": "127.0.0.%d" % (i + 1), "dir": d, "control": os.path.join(d, "ctl.sock"),
                "state": "up", "read": 0, "cpu": 0.0, "rss": 0}
        args = [SHOALD, "--node-id", node["id"], "--bind", "%s:%d" % (node["ip"], self.port), "--bucket",
                "s3://bench", "--endpoint", self.endpoint, "--path-style", "--region", "us-east-1", "--cache-dir",
                d + "/cache", "--cache-size", "4G", "--block-size", BLOCK, "--cluster-key", self.key, "--control",
                node["control"], "--metrics", "off", "--log-level", "warn"] + self.extra
        if seeds:
            args += ["--seeds", ",".join("%s:%d" % (n["ip"], self.port) for n in seeds)]
        log = open(os.path.join(d, "log"), "w")
        node["proc"] = subprocess.Popen(args, stderr=log, stdout=log)
        procs.append(node["proc"])
        self.nodes.append(node)
        while not os.path.exists(node["control"]):
            if node["proc"].poll() is not None:
                sys.exit("bench: %s exited at start (see %s/log)" % (node["id"], d))
            time.sleep(0.02)
        return node

    def start_all(self, n):
        for _ in range(n):
            self.start([m for m in self.nodes if m["state"] == "up"])
        deadline = time.time() + 30
        while any(alive_members(m) != n for m in self.nodes):
            if time.time() > deadline:
                sys.exit("bench: the %d nodes did not form a cluster" % n)
            time.sleep(0.1)

    def sample(self):
        """CPU seconds and peak RSS of every daemon still running (the last sample stays)."""
        tick = os.sysconf("SC_CLK_TCK")
        for n in self.nodes:
            try:
                with open("/proc/%d/stat" % n["proc"].pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%d/status" % n["proc"].pid) as f:
                    hwm = [line for line in f if line.startswith("VmHWM:")]
            except OSError:
                continue
            if fields[0] == "Z":
                continue
            n["cpu"] = (int(fields[11]) + int(fields[12])) / tick
            if hwm:
                n["rss"] = int(hwm[0].split()[1]) * 1024

    def counters(self, node):
        """Keeps node's `shoal stats` (call it while the daemon runs; the last call stays)."""
        out = subprocess.run([SHOAL, "--control", node["control"], "stats", "--json"], capture_output=True,
                             check=True).stdout
        node["stats"] = json.loads(out)

    def counter_sum(self, name):
        return sum(n.get("stats", {}).get(name, 0) for n in self.nodes)

    def stop(self):
        self.sample()
        for n in self.nodes:
            if n["proc"].poll() is None:
                self.counters(n)
        for n in self.nodes:
            if n["proc"].poll() is None:
                n["proc"].kill()
            n["proc"].wait()


def read_epoch(cluster, keys, sizes, events=()):
    """Every running node reads every object (each in its own order), all at once; `events` are
    (share of the first nodes' reads done, function) run on the way. Returns the seconds taken."""
    lock = threading.Lock()
    done = [0]
    failures = []
    size_of = dict(zip(keys, sizes))

    def reader(node, seed):
        order = list(keys)
        random.Random(seed).shuffle(order)
        for k in order:
            if node["state"] != "up":
                return
            r = subprocess.run([SHOAL, "--control", node["control"], "get", "s3://bench/" + k, "-o", "/dev/null"],
                               capture_output=True)
            with lock:
                if r.returncode == 0:
                    node["read"] += size_of[k]
                    done[0] += 1
                elif node["state"] == "up":
                    failures.append("%s: %s" % (node["id"], r.stderr.decode(errors="replace").strip()))
    threads = []

    def spawn(node):
        t = threading.Thread(target=reader, args=(node, len(threads)))
        threads.append(t)
        t.start()
    t0 = time.time()
    for n in cluster.nodes:
        spawn(n)
    total = len(cluster.nodes) * len(keys)
    for share, fn in events:
        while done[0] < share * total and any(t.is_alive() for t in threads):
            cluster.sample()
            time.sleep(0.05)
        joined = fn(cluster)
        if joined:
            spawn(joined)
    while any(t.is_alive() for t in threads):
        cluster.sample()
        time.sleep(0.1)
    if failures:
        sys.exit("bench: %d reads failed on nodes that were up, first: %s" % (len(failures), failures[0]))
    cluster.sample()
    return time.time() - t0


def unique_blocks(sizes):
    bs = size_bytes(BLOCK)
    return sum((s + bs - 1) // bs for s in sizes)


def full_read(cluster, s3port, keys, sizes):
    """(a): a 5-node cluster reads the dataset cold; every S3 request counted by the server."""
    cluster.start_all(NODES)
    s3_stats(s3port, reset=True)
    elapsed = read_epoch(cluster, keys, sizes)
    return s3_stats(s3port), elapsed


def join(cluster):
    return cluster.start([n for n in cluster.nodes if n["state"] == "up"])


def drain(cluster):
    node = cluster.nodes[1]
    node["state"] = "drained"
    cluster.counters(node)
    subprocess.run([SHOAL, "--control", node["control"], "drain"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    node["proc"].wait()


def kill(cluster):
    node = cluster.nodes[3]
    node["state"] = "killed"
    cluster.sample()
    cluster.counters(node)
    node["proc"].kill()
    node["proc"].wait()


def churn(cluster, s3port, keys, sizes):
    """(c): 5 nodes read cold; a 6th joins at 20 % of the reads, node1 is drained at 45 %, node3
    killed with SIGKILL at 70 %."""
    cluster.start_all(NODES)
    s3_stats(s3port, reset=True)
    elapsed = read_epoch(cluster, keys, sizes, [(0.20, join), (0.45, drain), (0.70, kill)])
    return s3_stats(s3port), elapsed


def daemon_lines(cluster):
    out = []
    for n in cluster.nodes:
        gib = n["read"] / (1 << 30)
        st = n.get("stats", {})
        out.append("      %s %-8s read %6.2f GiB  CPU %6.1f s  %6.1f CPU-s/GiB  peak RSS %5.0f MiB  "
                   "S3 GET %4d HEAD %4d LIST %2d  peer timeouts %3d"
                   % (n["id"], n["state"] if n["state"] != "up" else ("joined" if n["id"] == "node5" else "up"),
                      gib, n["cpu"], n["cpu"] / gib if gib else float("nan"), n["rss"] / (1 << 20),
                      st.get("s3.get_requests", 0), st.get("s3.head_requests", 0), st.get("s3.list_requests", 0),
                      st.get("peer.timeouts", 0)))
    return "\n".join(out)


def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def get_vs_cat(work, nodes, endpoint, env):  # nodes: a running cluster's
    """(b): a big object cached on node0, read with shoal get and with cat, alternating."""
    path = os.path.join(work, "big.bin")
    with open(path, "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(1 << 20))
    subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "cp", "--quiet", path, "s3://bench/big.bin"],
                   check=True, env=env)
    node = nodes[0]
    shoal(node, "preload", "s3://bench/big.bin", stdout=subprocess.DEVNULL)
    # The blocks node0 does not own come from peers once, then stay as near blocks... unless the
    # near share is full; so read twice before timing, and count what the timed reads fetch.
    for _ in range(2):
        shoal(node, "get", "s3://bench/big.bin", "-o", "/dev/null")
        subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)
    get_t, cat_t = [], []
    for _ in range(ROUNDS):
        get_t.append(timed([SHOAL, "--control", node["control"], "get", "s3://bench/big.bin", "-o", "/dev/null"]))
        cat_t.append(timed(["cat", path]))
    return min(get_t), min(cat_t)


def main():
    for prog in (SHOALD, SHOAL):
        if not os.access(prog, os.X_OK):
            sys.exit("bench: %s is not built (cmake --build %s --target shoald shoal)" % (prog, BUILD))
    work = tempfile.mkdtemp(prefix="shoal-bench-cluster.")
    try:
        s3port = benchlib.start_s3(work, "bench")
        endpoint = "http://127.0.0.1:%d" % s3port
        env = s3_env()
        data = os.path.join(work, "data")
        os.makedirs(data)
        rng = random.Random(7)
        keys, sizes = [], []
        for i in range(FILES):
            size = rng.randint(100 << 10, MAX_KIB << 10)
            name = "set/f%04d.bin" % i
            os.makedirs(os.path.dirname(os.path.join(data, name)), exist_ok=True)
            with open(os.path.join(data, name), "wb") as f:
                f.write(os.urandom(size))
            keys.append(name)
            sizes.append(size)
        subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--quiet", data, "s3://bench/"],
                       check=True, env=env)
        key = os.path.join(work, "cluster.key")
        subprocess.run([SHOAL, "keygen", "-o", key], check=True)
        unique = unique_blocks(sizes)
        print("cluster benchmark: %d nodes on loopback, block size %s, %d objects (%.1f MiB, %d blocks)"
              % (NODES, BLOCK, FILES, sum(sizes) / 1048576, unique), flush=True)

        full = Cluster(work, "full", endpoint, key, PORT, [])
        st, elapsed = full_read(full, s3port, keys, sizes)
        requests = st["gets"] + st["heads"] + st["lists"]
        print("(a) cold read on %d nodes, %.1f s: %d GET + %d HEAD + %d LIST at the server"
              % (NODES, elapsed, st["gets"], st["heads"], st["lists"]))
        print("    S3 requests / (unique blocks + objects) = %d / %d = %.3f   (target <= 1.05)"
              % (requests, unique + FILES, requests / (unique + FILES)))
        print("    S3 GETs / unique blocks = %.3f" % (st["gets"] / unique))
        full.sample()
        for n in full.nodes:
            full.counters(n)
        print(daemon_lines(full), flush=True)
        get_s, cat_s = get_vs_cat(work, full.nodes, endpoint, env)
        print("(b) %d MiB object cached on node0, best of %d: shoal get %.0f MiB/s, cat %.0f MiB/s"
              % (BIG_MIB, ROUNDS, BIG_MIB / get_s, BIG_MIB / cat_s))
        print("    shoal get / cat = %.2f   (target >= 0.8)" % (cat_s / get_s), flush=True)
        full.stop()
        s3_stats(s3port, reset=True)
        subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "rm", "--quiet", "s3://bench/big.bin"],
                       check=True, env=env)

        for k, (replicas, target) in enumerate(((2, 1.05), (1, 1.25))):
            c = Cluster(work, "churn%d" % replicas, endpoint, key, PORT + 1 + k, ["--replicas", str(replicas)])
            st, elapsed = churn(c, s3port, keys, sizes)
            c.stop()
            print("(c) --replicas %d: 5 nodes read cold; node5 joins at 20 %% of the reads, node1 drained at 45 %%, "
                  "node3 killed (SIGKILL) at 70 %%; %.1f s" % (replicas, elapsed))
            print("    S3 GETs / unique blocks = %d / %d = %.3f   (target <= %.2f); HEAD %d, LIST %d"
                  % (st["gets"], unique, st["gets"] / unique, target, st["heads"], st["lists"]))
            print(daemon_lines(c), flush=True)
    finally:
        stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
