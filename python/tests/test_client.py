"""shoal.Client against a real shoald: stat, paged and delimited lists, ranged gets (start,
middle, across blocks, at and past the end, zero length), pinned ETags, and the errors a caller
sees for a missing key, a bad argument and a daemon that is not there."""

import os
import tempfile
import unittest

from shoal import Client, ObjectChangedError, ShoalError
from shoaltest import BLOCK, BUCKET, CONTROL, env, manifest, object_bytes


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env("SHOAL_TEST_CONTROL")
        cls.c = Client(CONTROL)

    def test_stat_gives_size_etag_and_mtime(self):
        st = self.c.stat(BUCKET, "py/big.bin")
        self.assertEqual(st["key"], "py/big.bin")
        self.assertEqual(st["size"], manifest()["py/big.bin"][0])
        self.assertTrue(st["etag"].startswith('"') and len(st["etag"]) > 2, st)
        self.assertGreater(st["mtime"], 1700000000)

    def test_stat_of_a_missing_key_is_file_not_found(self):
        with self.assertRaises(FileNotFoundError) as e:
            self.c.stat(BUCKET, "py/nothing-here")
        self.assertIn("py/nothing-here", str(e.exception))

    def test_whole_get_equals_the_upload(self):
        for key in ("py/small.txt", "py/big.bin", "py/empty", "py/odd name+%\u00e9"):
            self.assertEqual(self.c.get(BUCKET, key), object_bytes(key), key)

    def test_ranges_start_middle_across_blocks_end_and_past_it(self):
        want = object_bytes("py/big.bin")
        size = len(want)
        ranges = [(0, 100), (BLOCK + 1000, 5000), (BLOCK - 10, 20), (500000, 2 * BLOCK), (size - 10, 10),
                  (size - 10, 1000), (size, 10), (size + 5, 10), (1234, 0), (0, size), (3 * BLOCK, None)]
        for off, length in ranges:
            got = self.c.get(BUCKET, "py/big.bin", off, length)
            end = size if length is None else off + length
            self.assertEqual(got, want[off:end], "range %d+%s" % (off, length))

    def test_get_info_names_the_object_size_and_etag(self):
        data, size, etag = self.c.get_info(BUCKET, "py/big.bin", 10, 5)
        self.assertEqual((data, size, etag),
                         (object_bytes("py/big.bin")[10:15], len(object_bytes("py/big.bin")),
                          self.c.stat(BUCKET, "py/big.bin")["etag"]))

    def test_iter_get_streams_in_pieces(self):
        pieces = list(self.c.iter_get(BUCKET, "py/big.bin", 100, 2 * BLOCK + 3, chunk_size=300000))
        self.assertTrue(all(len(p) <= 300000 for p in pieces))
        self.assertEqual(b"".join(pieces), object_bytes("py/big.bin")[100:100 + 2 * BLOCK + 3])

    def test_pinned_etag_reads_and_another_etag_is_refused(self):
        etag = self.c.stat(BUCKET, "py/dir/a")["etag"]
        self.assertEqual(self.c.get(BUCKET, "py/dir/a", 5, 10, etag=etag), object_bytes("py/dir/a")[5:15])
        with self.assertRaises(ObjectChangedError) as e:
            self.c.get(BUCKET, "py/dir/a", etag='"not-the-etag"')
        self.assertEqual(e.exception.code, "S3_CHANGED")

    def test_list_with_delimiter_gives_prefixes_and_objects(self):
        page = self.c.list(BUCKET, "py/dir/")
        self.assertEqual(page["prefixes"], ["py/dir/sub/"])
        self.assertEqual([o["key"] for o in page["objects"]], ["py/dir/a", "py/dir/b"])
        self.assertEqual([o["size"] for o in page["objects"]], [1000, 2000])
        self.assertIsNone(page["next_token"])
        flat = self.c.list(BUCKET, "py/dir/", delimiter="")
        self.assertEqual([o["key"] for o in flat["objects"]], ["py/dir/a", "py/dir/b", "py/dir/sub/c"])

    def test_paged_list_walks_every_page(self):
        pages = [self.c.list(BUCKET, "py/many/", max_keys=10)]
        while pages[-1]["next_token"]:
            pages.append(self.c.list(BUCKET, "py/many/", max_keys=10, token=pages[-1]["next_token"]))
        self.assertEqual([len(p["objects"]) for p in pages], [10, 10, 5])
        keys = [o["key"] for p in pages for o in p["objects"]]
        self.assertEqual(keys, ["py/many/o%03d" % k for k in range(25)])
        self.assertEqual([o["key"] for p in self.c.list_all(BUCKET, "py/many/") for o in p["objects"]], keys)

    def test_bad_arguments_are_refused_before_sending(self):
        for off, length in ((-1, None), (0, -5), (1.5, None), (0, "7"), (True, None), (1 << 64, None)):
            with self.assertRaises(ValueError):
                self.c.get(BUCKET, "py/small.txt", off, length)
        with self.assertRaises(ValueError) as e:
            self.c.get(BUCKET, "k" * 5000)
        self.assertIn("longer than", str(e.exception))

    def test_malformed_requests_get_the_daemons_clear_error(self):
        with self.assertRaises(ShoalError) as e:
            self.c.list(BUCKET, "py/", max_keys=0)
        self.assertEqual(e.exception.code, "INVAL")
        self.assertIn('"max_keys" must be an integer from 1 to 1000', str(e.exception))
        with self.assertRaises(ShoalError) as e:
            self.c.stat("another-bucket", "k")
        self.assertIn("this cluster caches s3://%s" % BUCKET, str(e.exception))

    def test_daemon_not_running_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(ShoalError) as e:
                Client(os.path.join(d, "none.sock")).stat(BUCKET, "k")
        self.assertIn("cannot reach shoald at", str(e.exception))
        self.assertIsNone(e.exception.code)

    def test_status_and_stats(self):
        self.assertEqual(self.c.status()["bucket"].split("/")[2], BUCKET)
        self.assertIn("s3.get_requests", self.c.stats())


if __name__ == "__main__":
    unittest.main()
