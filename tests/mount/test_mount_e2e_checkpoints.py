"""Checkpoints through two Shoal mounts while S3 loses and delays answers (run by
test_mount_e2e_torch_checkpoints_survive_lost_and_late_completions).

Both daemons reach the local S3 server through tests/s3/faultproxy.py, a FAULT INJECTOR (a fake on
purpose): it forwards every request to the real server, and for the requests a rule names it
either drops the answer after the server acted (`lost`: the object is committed, the client hears
nothing) or delays the request (`delay`). Each checkpoint pattern a training script uses is saved
on the first mount with such a fault on its upload, and must then:

  - return without an error on the writing node (the client settles a lost answer by asking S3);
  - torch.load equal on the other node;
  - leave no object under a temporary name.

The patterns: torch.save(obj, path); torch.save(obj, tmp) + os.replace(tmp, final); the rename
done while the temporary file is still open. Checkpoints are large enough (about 24 MB) to go up
as multipart uploads, whose CompleteMultipartUpload is the answer lost; one small checkpoint
loses the answer of its single PUT. Standard library and torch only, and e2elib.py beside
it.
"""
import argparse
import os
import urllib.request

import torch

from e2elib import check, wait_visible


def rule(proxy, query):
    urllib.request.urlopen(urllib.request.Request(proxy + "/_fault/rule?" + query, method="POST")).read()


def faults(proxy):
    import json
    with urllib.request.urlopen(proxy + "/_fault/stats") as r:
        return json.load(r)["faults"]


def equal(a, b):
    return a["step"] == b["step"] and torch.equal(a["w"], b["w"])


def save(pattern, model, final):
    tmp = final + ".tmp"
    if pattern == "direct":
        torch.save(model, final)
    elif pattern == "tmp+replace":
        torch.save(model, tmp)
        os.replace(tmp, final)
    else:  # rename while open
        with open(tmp, "wb") as f:
            torch.save(model, f)
            f.flush()
            os.replace(tmp, final)
    check(not os.path.exists(tmp), "%s: no temporary name left" % pattern)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mounts", nargs=2, required=True)
    ap.add_argument("--proxy", required=True)
    a = ap.parse_args()
    m0, m1 = a.mounts
    os.makedirs(os.path.join(m0, "ckpt"), exist_ok=True)
    torch.manual_seed(11)
    step = 0
    for fault in ("action=lost&method=POST&match=uploadId", "action=delay&ms=3000&method=POST&match=uploadId"):
        for pattern in ("direct", "tmp+replace", "open-rename"):
            step += 1
            model = {"w": torch.randn(6 * 1024 * 1024), "step": step}  # 24 MiB: a multipart upload
            name = "step-%03d.pt" % step
            before = faults(a.proxy)
            rule(a.proxy, fault + "&count=1")
            save(pattern, model, os.path.join(m0, "ckpt", name))
            check(faults(a.proxy) == before + 1, "%s (%s): the fault hit the upload's completion" % (pattern, fault))
            other = os.path.join(m1, "ckpt", name)
            check(wait_visible(other, 10.0) and equal(torch.load(other), model),
                  "%s (%s): torch.load on the other node gives the saved tensors" % (pattern, fault))
    # A small checkpoint: one PUT, whose answer is lost after the server stored it.
    small = {"w": torch.arange(1000, dtype=torch.float32), "step": 99}
    before = faults(a.proxy)
    rule(a.proxy, "action=lost&method=PUT&match=small&count=1")
    save("tmp+replace", small, os.path.join(m0, "ckpt", "small.pt"))
    check(faults(a.proxy) == before + 1, "the small checkpoint's PUT lost its answer")
    other = os.path.join(m1, "ckpt", "small.pt")
    check(wait_visible(other, 10.0) and equal(torch.load(other), small),
          "the small checkpoint loads equal on the other node")


if __name__ == "__main__":
    main()
