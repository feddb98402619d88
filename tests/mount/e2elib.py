"""What the torch scripts of the mount's end-to-end tests share (test_mount_e2e_torch.py,
test_mount_e2e_torch_warm.py, test_mount_e2e_checkpoints.py): a check that prints its verdict, the
test server's request counters, and a wait for a name to appear. A script imports it from its own
folder, which Python puts on the path of a script it runs. Standard library only.
"""
import json
import os
import sys
import time
import urllib.request


def check(cond, what):
    """Prints "ok: what", or "FAIL: what" to stderr and exits 1."""
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)
    print("ok: " + what)


def stats(url):
    """The test server's counters (GET url: gets, heads, lists, puts, ...)."""
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def reset(url):
    """Zeroes the test server's counters."""
    urllib.request.urlopen(urllib.request.Request(url + "/reset", method="POST")).read()


def wait_visible(path, limit_s):
    """Whether path exists within limit_s seconds (polled every 50 ms)."""
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > limit_s:
            return False
        time.sleep(0.05)
    return True
