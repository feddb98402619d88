"""A real training client on two Shoal mounts (run by test_mount_e2e_torch_dataloader_and_checkpoint_on_two_nodes).

1. A torch DataLoader with several workers reads every sample of the generated dataset (train/f%05d,
   sample k = "sample %05d " * (1 + k % 7)) through each node's mount, and every sample's bytes are
   checked.
2. The first node runs with --upload-delay (write-back after close). The usual checkpoint
   pattern, torch.save(obj, tmp) then os.replace(tmp, final), closes the temporary file before
   renaming it; with the delay the rename only retargets the pending upload. Nothing reaches S3
   before the delay; then the server must see exactly one PUT (no COPY: a server-side copy is a PUT
   too), no DELETE and no POST, so the temporary name was never uploaded; torch.load on the other
   node reads it back equal once the upload happened, and on the writing node at once.
3. The same node, the rename done while the temporary file is still open: also one PUT.
4. The second node uploads at close (no delay): there torch.save(obj, tmp) + os.replace costs what
   docs/semantics.md ("Checkpoints") says: PUT of tmp, then COPY + DELETE.

Counters come from the test server's /_shoal/stats (puts count PUT requests, copies included).
Standard library and torch only, and e2elib.py beside it.
"""
import argparse
import os
import time

import torch
from torch.utils.data import Dataset

from e2elib import check, read_every_sample, reset, stats, wait_visible


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


def wait_uploads(url, n, limit_s):
    """Waits until the server saw n PUTs (the delayed upload), then a little more so that any
    request that follows it would be counted too."""
    t0 = time.monotonic()
    while stats(url)["puts"] < n and time.monotonic() - t0 < limit_s:
        time.sleep(0.05)
    time.sleep(0.5)
    return stats(url)


def equal(a, b):
    return a["step"] == b["step"] and torch.equal(a["w"], b["w"]) and torch.equal(a["b"], b["b"])


def delayed_checkpoint(a, model, name, rename_while_open):
    m0, m1 = a.mounts
    final = os.path.join(m0, "ckpt", name)
    tmp = final + ".tmp"
    reset(a.stats)
    t0 = time.monotonic()
    if rename_while_open:
        with open(tmp, "wb") as f:
            torch.save(model, f)
            f.flush()
            os.replace(tmp, final)
        how = "save into an open temp file + os.replace before close"
    else:
        torch.save(model, tmp)
        os.replace(tmp, final)
        how = "torch.save(obj, tmp) + os.replace(tmp, final)"
    took = time.monotonic() - t0
    s = stats(a.stats)
    if took < a.upload_delay:
        check(s["puts"] == 0, "%s with --upload-delay: nothing sent to S3 before the delay (%d PUT)"
              % (how, s["puts"]))
    check(not os.path.exists(tmp) and equal(torch.load(final), model),
          "%s: the writing node reads the pending checkpoint back equal" % how)
    s = wait_uploads(a.stats, 1, a.upload_delay + 30)
    check(s["puts"] == 1 and s["deletes"] == 0 and s["posts"] == 0,
          "%s with --upload-delay: %d PUT (copies included), %d DELETE, %d POST; expected exactly one "
          "PUT of the final name" % (how, s["puts"], s["deletes"], s["posts"]))
    other = os.path.join(m1, "ckpt", name)
    check(wait_visible(other, 3.0) and equal(torch.load(other), model),
          "torch.load on the other node gives the saved tensors once uploaded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mounts", nargs=2, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--upload-delay", type=float, required=True, help="the first mount's --upload-delay")
    a = ap.parse_args()
    m0, m1 = a.mounts
    torch.manual_seed(7)

    for root in (m0, m1):
        read_every_sample(Samples(root, a.samples), root)

    model = {"w": torch.randn(256, 1024), "b": torch.arange(1000), "step": 12}
    os.makedirs(os.path.join(m0, "ckpt"), exist_ok=True)
    delayed_checkpoint(a, model, "model.pt", rename_while_open=False)
    delayed_checkpoint(a, model, "model2.pt", rename_while_open=True)

    final3 = os.path.join(m1, "ckpt", "model3.pt")
    tmp3 = final3 + ".tmp"
    reset(a.stats)
    torch.save(model, tmp3)
    os.replace(tmp3, final3)
    s = stats(a.stats)
    check(s["puts"] == 2 and s["deletes"] == 1,
          "without a delay, torch.save(obj, tmp) then os.replace: %d PUT (upload + server-side copy), "
          "%d DELETE; expected 2 and 1" % (s["puts"], s["deletes"]))
    check(not os.path.exists(tmp3) and os.path.exists(final3), "only the final name remains")
    other3 = os.path.join(m0, "ckpt", "model3.pt")
    check(wait_visible(other3, 3.0) and equal(torch.load(other3), model),
          "the copied checkpoint reads back equal on the other node")


if __name__ == "__main__":
    main()
