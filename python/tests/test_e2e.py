"""End to end (run by test_python_dataloader_on_two_nodes_reads_every_byte_once_from_s3): on two
nodes at once, one process per node, a torch DataLoader with workers reads every sample under
e2e/train/ through the package and checks every byte:

1. ShoalDataset: each sample is one whole object (one get);
2. an fsspec dataset: each sample is opened as shoal://bucket/key and read in random ranges,
   then whole, with a small fsspec block size so reads cross the daemon's blocks.

The C side then checks that S3 saw one GET per unique block. Standard library, torch and fsspec.
"""

import random
import subprocess
import sys
import time

import fsspec
from torch.utils.data import DataLoader, Dataset

import shoal.filesystem  # noqa: F401  (registers shoal:// when the package is not installed)
from shoal.dataset import ShoalDataset
from shoaltest import BUCKET, CONTROL, CONTROL2, env, fail, manifest, object_bytes

PREFIX = "e2e/train/"


def check_whole(key, data):
    return key, data == object_bytes(key)


class RangeSamples(Dataset):
    """Sample i: the i-th key, read through an fsspec file in random ranges and then whole."""

    def __init__(self, control, keys):
        self.fs = fsspec.filesystem("shoal", control=control)
        self.keys = keys

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        key = self.keys[i]
        want = object_bytes(key)
        rng = random.Random(i)
        with self.fs.open("shoal://%s/%s" % (BUCKET, key), "rb", block_size=256 * 1024) as f:
            ok = f.size == len(want)
            for _ in range(3):
                off = rng.randrange(0, len(want) + 1)
                n = rng.randrange(0, 3 * 1024 * 1024)
                f.seek(off)
                ok = ok and f.read(n) == want[off:off + n]
            f.seek(0)
            ok = ok and f.read() == want
        return key, ok


def read_all(name, loader, keys):
    t0 = time.monotonic()
    seen = [item for batch in loader for item in batch]
    bad = [k for k, ok in seen if not ok]
    got = sorted(k for k, _ in seen)
    if got != keys or bad:
        fail("%s: %d of %d samples, %d with wrong bytes %s" % (name, len(set(got)), len(keys), len(bad), bad[:5]))
    print("ok: %s: %d samples, every byte checked, in %.1f s" % (name, len(keys), time.monotonic() - t0))


def one_node(control):
    keys = sorted(k for k in manifest() if k.startswith(PREFIX))
    for k in keys:
        object_bytes(k)  # built once here; the forked workers inherit them
    ds = ShoalDataset("shoal://%s/%s" % (BUCKET, PREFIX), control=control, transform=check_whole)
    if [ds.key(i) for i in range(len(ds))] != keys:
        fail("%s: the dataset lists %d keys, the manifest %d" % (control, len(ds), len(keys)))
    read_all(control + " ShoalDataset", DataLoader(ds, batch_size=8, num_workers=3, shuffle=True,
                                                   collate_fn=lambda b: b), keys)
    read_all(control + " fsspec ranges", DataLoader(RangeSamples(control, keys), batch_size=4, num_workers=2,
                                                    shuffle=True, collate_fn=lambda b: b), keys)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--node":
        one_node(sys.argv[2])
        return
    env("SHOAL_TEST_CONTROL2")
    procs = [subprocess.Popen([sys.executable, __file__, "--node", c]) for c in (CONTROL, CONTROL2)]
    codes = [p.wait() for p in procs]
    if any(codes):
        fail("a node's reader failed: exit codes %s" % codes)
    print("ok: both nodes read every sample")


if __name__ == "__main__":
    main()
