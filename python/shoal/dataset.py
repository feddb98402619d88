"""A PyTorch map-style dataset over the objects under a prefix, read through the local shoald.

The listing is taken once, when the dataset is made (every page, flat: keys under the prefix at
any depth, in key order), so len() and the index of each sample are fixed; each __getitem__ then
reads one whole object with one get, which the daemon serves as one version of it. The dataset
holds only the socket's path and the keys, so it pickles and forks into DataLoader workers, and
each worker opens its own connections.
"""

from torch.utils.data import Dataset

from .client import Client

__all__ = ["ShoalDataset", "parse_url"]


def parse_url(url):
    """(bucket, prefix) of "shoal://bucket/prefix", "s3://bucket/prefix" or "bucket/prefix"."""
    for scheme in ("shoal://", "s3://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
            break
    bucket, _, prefix = url.partition("/")
    if not bucket:
        raise ValueError("no bucket in %r (expected shoal://bucket/prefix)" % url)
    return bucket, prefix


class ShoalDataset(Dataset):
    """Sample i is the i-th object under url (in key order): transform(key, data) when a transform
    is given, else the pair (key, data) with data the object's bytes.

    control: the daemon's socket (default: as shoald's). suffix: keep only keys ending so (".jpg").
    Errors reading a sample (a key deleted since the listing, S3 failing, the daemon gone) are
    raised from __getitem__, as OSError subclasses of shoal.client."""

    def __init__(self, url, transform=None, control=None, suffix=None):
        self.bucket, self.prefix = parse_url(url)
        self.transform = transform
        self.client = Client(control)
        self.objects = []
        for page in self.client.list_all(self.bucket, self.prefix, delimiter=""):
            self.objects += [(o["key"], o["size"]) for o in page["objects"]
                             if not o["key"].endswith("/") and (suffix is None or o["key"].endswith(suffix))]

    def __len__(self):
        return len(self.objects)

    def key(self, index):
        """The key of sample index."""
        return self.objects[index][0]

    def __getitem__(self, index):
        key, _ = self.objects[index]
        data = self.client.get(self.bucket, key)
        return self.transform(key, data) if self.transform else (key, data)
