"""What every benchmark script under bench/ shares: the local S3 server, the environment that
points awscli and shoald at it, and stopping what a run started.

A script imports it with bench/ on sys.path (bench/mount/mountlib.py and bench/cluster/run.py put
it there), so each runs as it is from a fresh clone with /usr/bin/python3. Every process a
benchmark starts goes in `procs`, and stop_processes(procs) in the script's `finally` stops them
all, so a failed run leaves nothing behind. Only the standard library.
"""
import json
import os
import signal
import subprocess
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IP = "127.0.0.1"

procs = []


def start_s3(work, bucket, legacy=False):
    """Starts the local S3 server (tests/s3rver/start.js) with one bucket, its files under
    work/s3; legacy=True is s3rver 3.7.1, which s3fs can sign for. Returns its port."""
    # s3rver makes ListObjectsV2 continuation tokens with DES, which Node 20's OpenSSL 3 keeps in
    # its legacy provider (tests/support/s3rver.c does the same); without it a listing cut short
    # (max-keys) fails with 500.
    env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
    args = ["node", os.path.join(ROOT, "tests/s3rver/start.js"), "--dir", os.path.join(work, "s3"), "--port", "0",
            "--bucket", bucket] + (["--legacy"] if legacy else [])
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    procs.append(p)
    return json.loads(p.stdout.readline())["port"]


def s3_stats(port, reset=False):
    """The server's counters (gets, heads, lists, requests, bytesOut); reset=True zeroes them."""
    req = urllib.request.Request("http://%s:%d/_shoal/stats%s" % (IP, port, "/reset" if reset else ""),
                                 method="POST" if reset else "GET")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def s3_env():
    """Sets the local server's keys and region in this process's environment (so every daemon and
    mount started later has them) with no AWS_PROFILE to override them; returns a copy of it for
    awscli."""
    os.environ.update(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER", AWS_DEFAULT_REGION="us-east-1",
                      AWS_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    return dict(os.environ)


def stop_processes(ps, grace_s=10):
    """SIGTERM to each process of ps still running, newest first (daemons before the server they
    use); then waits for each, and kills one that has not exited after grace_s seconds."""
    for p in reversed(ps):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in ps:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
