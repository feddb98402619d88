"""A warm epoch after the metadata TTL, through two Shoal mounts (run by
test_mount_e2e_warm_epoch_after_the_ttl_costs_a_listing_per_directory_and_no_head).

The dataset is DIRS directories of FILES samples each (dNN/fNNNNN; sample fk = "warm %05d " * (1 + k % 5)).
A Dataset scans its root and each directory once, as ImageFolder does, and a DataLoader with
workers reads every sample through both mounts (the cold epoch). Once the metadata TTL has passed,
the same datasets are read again (the warm epoch): every name is looked up again, and the mounts
must answer from their directories' listings, revalidated by one LIST per directory for the
cluster (the root's included), with no HEAD and no GET at the server: at most 2 LISTs per
directory, and as many again for each further TTL a slow machine stretches the warm epoch over, so
the verdict does not depend on the machine's load.

Counters come from the test server's /_shoal/stats. Standard library and torch only, and
e2elib.py beside it.
"""
import argparse
import math
import os
import time

from torch.utils.data import Dataset

from e2elib import check, read_every_sample, reset, stats


def sample_bytes(k):
    return (b"warm %05d " % k) * (1 + k % 5)


class Samples(Dataset):
    def __init__(self, root, dirs, files):
        self.paths, self.files = [], files
        top = sorted(os.listdir(root))
        check(len([d for d in top if d.startswith("d")]) == dirs, "%s lists %d directories" % (root, len(top)))
        for d in range(dirs):
            names = sorted(os.listdir(os.path.join(root, "d%02d" % d)))
            check(len(names) == files, "%s/d%02d lists %d samples, expected %d" % (root, d, len(names), files))
            self.paths += [os.path.join(root, "d%02d" % d, n) for n in names]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            data = f.read()
        return i, data == sample_bytes(i % self.files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mounts", nargs=2, required=True)
    ap.add_argument("--dirs", type=int, required=True)
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--ttl", type=float, required=True)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    sets = [Samples(m, a.dirs, a.files) for m in a.mounts]
    for m, ds in zip(a.mounts, sets):
        read_every_sample(ds, "cold epoch on " + m)
    # Past the TTL of everything the cold epoch learned (the kernel's entries and the mounts' too).
    time.sleep(a.ttl + 1)
    reset(a.stats)
    t0 = time.monotonic()
    for m, ds in zip(a.mounts, sets):
        read_every_sample(ds, "warm epoch on " + m)
    took = time.monotonic() - t0
    s = stats(a.stats)
    windows = 1 + math.floor(took / a.ttl)  # the listings revalidated at its start expire after a TTL
    budget = 2 * a.dirs * windows
    print("warm epoch: %.1f s, %d LIST, %d HEAD, %d GET (LIST budget %d)" % (took, s["lists"], s["heads"], s["gets"],
                                                                            budget))
    check(s["heads"] == 0, "the warm epoch sent %d HEADs, expected none" % s["heads"])
    check(s["gets"] == 0, "the warm epoch sent %d GETs, expected none" % s["gets"])
    check(s["lists"] <= budget, "the warm epoch sent %d LISTs for %d directories, at most %d expected"
          % (s["lists"], a.dirs, budget))


if __name__ == "__main__":
    main()
