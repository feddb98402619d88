"""A real training client on two Shoal mounts (run by test_mount_e2e_torch_dataloader_and_checkpoint_on_two_nodes).

1. A torch DataLoader with several workers reads every sample of the generated dataset (train/f%05d,
   sample k = "sample %05d " * (1 + k % 7)) through each node's mount, and every sample's bytes are
   checked.
2. A checkpoint written the way a training script that wants one upload writes it: torch.save into
   an open temporary file, flush, os.replace to the final name while the file is still open. The
   server must see exactly one PUT (no COPY: a server-side copy is a PUT too) and no DELETE.
   torch.load on the other node reads it back equal.
3. The other common pattern, torch.save(obj, tmp) then os.replace(tmp, final): close uploads the
   temporary name first, so the rename is a server-side COPY plus a DELETE. Its cost is asserted
   as documented (docs/semantics.md, "Checkpoints"): PUT + COPY + DELETE.

Counters come from the test server's /_shoal/stats (puts count PUT requests, copies included).
Standard library and torch only.
"""
import argparse
import json
import os
import sys
import time
import urllib.request

import torch
from torch.utils.data import DataLoader, Dataset


def sample_bytes(k):
    return (b"sample %05d " % k) * (1 + k % 7)


class Samples(Dataset):
    """Lists its directory first, as dataset classes do (ImageFolder scans its folders): the mount
    then answers each open from that one listing instead of asking S3 about every name."""

    def __init__(self, root, n):
        self.root, self.n = root, n
        names = os.listdir(os.path.join(root, "train"))
        check(len(names) == n, "%s/train lists %d samples, expected %d" % (root, len(names), n))

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        with open(os.path.join(self.root, "train", "f%05d" % k), "rb") as f:
            data = f.read()
        return k, data == sample_bytes(k)


def stats(url):
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def reset(url):
    urllib.request.urlopen(urllib.request.Request(url + "/reset", method="POST")).read()


def check(cond, what):
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)
    print("ok: " + what)


def read_all(root, n):
    t0 = time.monotonic()
    loader = DataLoader(Samples(root, n), batch_size=64, num_workers=4, shuffle=True,
                        collate_fn=lambda batch: batch)
    seen, bad = set(), []
    for batch in loader:
        for k, good in batch:
            seen.add(k)
            if not good:
                bad.append(k)
    check(len(seen) == n and not bad,
          "%s: %d of %d samples read in %.1f s, %d with wrong bytes %s"
          % (root, len(seen), n, time.monotonic() - t0, len(bad), bad[:5]))


def wait_visible(path, limit_s):
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > limit_s:
            return False
        time.sleep(0.05)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mounts", nargs=2, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    m0, m1 = a.mounts
    torch.manual_seed(7)

    for root in (m0, m1):
        read_all(root, a.samples)

    model = {"w": torch.randn(256, 1024), "b": torch.arange(1000), "step": 12}
    os.makedirs(os.path.join(m0, "ckpt"), exist_ok=True)
    final = os.path.join(m0, "ckpt", "model.pt")
    tmp = final + ".tmp"
    reset(a.stats)
    with open(tmp, "wb") as f:
        torch.save(model, f)
        f.flush()
        os.replace(tmp, final)
    s = stats(a.stats)
    check(s["puts"] == 1 and s["deletes"] == 0 and s["posts"] == 0,
          "save into an open temp file + os.replace before close: %d PUT (copies included), %d DELETE, "
          "%d POST; expected one PUT" % (s["puts"], s["deletes"], s["posts"]))

    other = os.path.join(m1, "ckpt", "model.pt")
    check(wait_visible(other, 3.0), "the checkpoint is visible on the other node")
    back = torch.load(other)
    check(back["step"] == 12 and torch.equal(back["w"], model["w"]) and torch.equal(back["b"], model["b"]),
          "torch.load on the other node gives the saved tensors")

    final2 = os.path.join(m0, "ckpt", "model2.pt")
    tmp2 = final2 + ".tmp"
    reset(a.stats)
    torch.save(model, tmp2)
    os.replace(tmp2, final2)
    s = stats(a.stats)
    check(s["puts"] == 2 and s["deletes"] == 1,
          "torch.save(obj, tmp) then os.replace: %d PUT (upload + server-side copy), %d DELETE; "
          "expected 2 and 1" % (s["puts"], s["deletes"]))
    check(not os.path.exists(tmp2) and os.path.exists(final2), "only the final name remains")
    other2 = os.path.join(m1, "ckpt", "model2.pt")
    check(wait_visible(other2, 3.0) and torch.equal(torch.load(other2)["w"], model["w"]),
          "the copied checkpoint reads back equal on the other node")


if __name__ == "__main__":
    main()
