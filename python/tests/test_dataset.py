"""ShoalDataset against a real shoald: the samples under a prefix in key order, a transform, and a
DataLoader with workers reading them all."""

import unittest

try:
    import torch  # noqa: F401
    from torch.utils.data import DataLoader
except ImportError:
    raise unittest.SkipTest("torch is missing (apt-get install python3-torch)")

from shoal.dataset import ShoalDataset, parse_url
from shoaltest import BUCKET, CONTROL, env, manifest, object_bytes


def keep_key_and_check(key, data):
    return key, data == object_bytes(key)


class DatasetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env("SHOAL_TEST_CONTROL")

    def test_samples_are_the_objects_in_key_order(self):
        ds = ShoalDataset("shoal://%s/py/dir/" % BUCKET, control=CONTROL)
        self.assertEqual(len(ds), 3)
        self.assertEqual([ds[i][0] for i in range(3)], ["py/dir/a", "py/dir/b", "py/dir/sub/c"])
        self.assertEqual(ds[2][1], object_bytes("py/dir/sub/c"))

    def test_suffix_and_transform(self):
        ds = ShoalDataset("s3://%s/ds/train/s00" % BUCKET, control=CONTROL, suffix=".bin",
                          transform=lambda key, data: len(data))
        self.assertEqual(len(ds), 10)
        self.assertEqual(ds[3], manifest()["ds/train/s003.bin"][0])

    def test_dataloader_with_workers_reads_every_byte(self):
        ds = ShoalDataset("shoal://%s/ds/train/" % BUCKET, control=CONTROL, transform=keep_key_and_check)
        self.assertEqual(len(ds), 40)
        loader = DataLoader(ds, batch_size=4, num_workers=3, shuffle=True, collate_fn=lambda b: b)
        seen = [item for batch in loader for item in batch]
        self.assertEqual(sorted(k for k, _ in seen), sorted(k for k in manifest() if k.startswith("ds/train/")))
        self.assertEqual([k for k, ok in seen if not ok], [])

    def test_errors_surface_from_getitem(self):
        ds = ShoalDataset("shoal://%s/py/dir/" % BUCKET, control=CONTROL)
        ds.objects[0] = ("py/dir/gone", 1)
        with self.assertRaises(FileNotFoundError):
            ds[0]
        with self.assertRaises(ValueError):
            parse_url("shoal:///nobucket")


if __name__ == "__main__":
    unittest.main()
