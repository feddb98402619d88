"""What the torch scripts of the mount's end-to-end tests share (test_mount_e2e_torch.py,
test_mount_e2e_torch_warm.py, test_mount_e2e_checkpoints.py): a check that prints its verdict, the
test server's request counters, a wait for a name to appear, and one DataLoader pass over every
sample. A script imports it from its own folder, which Python puts on the path of a script it
runs. The standard library, and torch inside read_every_sample only.
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


def read_every_sample(ds, label):
    """One pass of a torch DataLoader with 4 workers over dataset ds, whose items are (index, bytes
    right): checks that every index came once and every sample's bytes were right."""
    from torch.utils.data import DataLoader

    t0 = time.monotonic()
    loader = DataLoader(ds, batch_size=64, num_workers=4, shuffle=True, collate_fn=lambda batch: batch)
    seen, bad = set(), []
    for batch in loader:
        for k, good in batch:
            seen.add(k)
            if not good:
                bad.append(k)
    check(len(seen) == len(ds) and not bad, "%s: %d of %d samples read in %.1f s, %d with wrong bytes %s"
          % (label, len(seen), len(ds), time.monotonic() - t0, len(bad), bad[:5]))


def wait_visible(path, limit_s):
    """Whether path exists within limit_s seconds (polled every 50 ms)."""
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > limit_s:
            return False
        time.sleep(0.05)
    return True
