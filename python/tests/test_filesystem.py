"""The fsspec filesystem against a real shoald: fsspec.open with random access, ls, info, find,
cat_file with ranges, and the errors of a read-only filesystem."""

import random
import unittest

try:
    import fsspec
except ImportError:
    raise unittest.SkipTest("fsspec is missing (apt-get install python3-fsspec)")

import shoal.filesystem  # noqa: F401  (registers shoal:// when the package is not installed)
from shoaltest import BLOCK, BUCKET, CONTROL, env, manifest, object_bytes


class FileSystemTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env("SHOAL_TEST_CONTROL")
        cls.fs = fsspec.filesystem("shoal", control=CONTROL)
        cls.url = "shoal://%s/" % BUCKET

    def test_open_reads_the_whole_object(self):
        with fsspec.open(self.url + "py/big.bin", "rb", control=CONTROL) as f:
            self.assertEqual(f.read(), object_bytes("py/big.bin"))

    def test_random_access_seeks_and_reads_match(self):
        want = object_bytes("py/big.bin")
        rng = random.Random(7)
        # a small block size, so reads cross fsspec's cache blocks and the daemon's blocks alike
        with self.fs.open(BUCKET + "/py/big.bin", "rb", block_size=300000) as f:
            self.assertEqual(f.size, len(want))
            for _ in range(60):
                off = rng.randrange(0, len(want) + 100)
                n = rng.choice([0, 1, 100, 4096, BLOCK, BLOCK + 17])
                f.seek(off)
                self.assertEqual(f.read(n), want[off:off + n], "read %d at %d" % (n, off))
            f.seek(-10, 2)
            self.assertEqual(f.read(), want[-10:])
            self.assertEqual(f.read(), b"")

    def test_open_of_an_empty_object_and_an_odd_name(self):
        with self.fs.open(BUCKET + "/py/empty") as f:
            self.assertEqual(f.read(), b"")
        with self.fs.open(BUCKET + "/py/odd name+%\u00e9") as f:
            self.assertEqual(f.read(), object_bytes("py/odd name+%\u00e9"))

    def test_ls_shows_files_and_directories(self):
        got = self.fs.ls(self.url + "py/dir", detail=True)
        self.assertEqual(sorted((e["name"], e["type"], e["size"]) for e in got),
                         [(BUCKET + "/py/dir/a", "file", 1000), (BUCKET + "/py/dir/b", "file", 2000),
                          (BUCKET + "/py/dir/sub", "directory", 0)])
        self.assertEqual(self.fs.ls(BUCKET + "/py/dir/", detail=False),
                         [BUCKET + "/py/dir/a", BUCKET + "/py/dir/b", BUCKET + "/py/dir/sub"])
        self.assertEqual(self.fs.ls(BUCKET + "/py/dir/a", detail=False), [BUCKET + "/py/dir/a"])
        self.assertEqual(len(self.fs.ls(BUCKET + "/py/many")), 25)
        self.assertEqual(self.fs.ls("shoal://", detail=False), [BUCKET])

    def test_ls_of_nothing_is_file_not_found(self):
        with self.assertRaises(FileNotFoundError):
            self.fs.ls(BUCKET + "/py/nowhere")

    def test_info_of_file_directory_and_missing(self):
        info = self.fs.info(self.url + "py/dir/b")
        self.assertEqual((info["type"], info["size"], info["name"]), ("file", 2000, BUCKET + "/py/dir/b"))
        self.assertTrue(info["etag"].startswith('"'))
        self.assertEqual(self.fs.info(BUCKET + "/py/dir")["type"], "directory")
        self.assertEqual(self.fs.info(BUCKET)["type"], "directory")
        self.assertTrue(self.fs.isdir(BUCKET + "/py/dir/sub") and self.fs.isfile(BUCKET + "/py/dir/sub/c"))
        self.assertFalse(self.fs.exists(BUCKET + "/py/dir/zzz"))
        with self.assertRaises(FileNotFoundError):
            self.fs.info(BUCKET + "/py/dir/zzz")
        with self.assertRaises(FileNotFoundError):
            self.fs.open(BUCKET + "/py/dir/zzz")

    def test_find_walks_every_file(self):
        self.assertEqual(self.fs.find(BUCKET + "/py/dir"),
                         [BUCKET + "/py/dir/a", BUCKET + "/py/dir/b", BUCKET + "/py/dir/sub/c"])
        self.assertEqual(self.fs.du(BUCKET + "/py/dir"), 6000)

    def test_cat_file_with_ranges(self):
        want = object_bytes("py/big.bin")
        path = BUCKET + "/py/big.bin"
        for start, end in ((None, None), (0, 10), (BLOCK - 5, BLOCK + 5), (len(want) - 3, None), (-7, None),
                           (-BLOCK - 3, -2), (5, 5), (10, 3), (len(want) + 10, len(want) + 20), (0, len(want) + 99)):
            self.assertEqual(self.fs.cat_file(path, start, end), want[start:end], "cat %s:%s" % (start, end))
        self.assertEqual(self.fs.cat(self.url + "py/small.txt"), object_bytes("py/small.txt"))

    def test_ukey_and_modified(self):
        self.assertEqual(self.fs.ukey(BUCKET + "/py/dir/a"), self.fs.info(BUCKET + "/py/dir/a")["etag"])
        self.assertGreater(self.fs.modified(BUCKET + "/py/dir/a").year, 2000)

    def test_writing_is_refused(self):
        with self.assertRaises(PermissionError):
            self.fs.open(BUCKET + "/py/new", "wb")
        with self.assertRaises(PermissionError):
            self.fs.rm(BUCKET + "/py/dir/a")
        with self.assertRaises(PermissionError):
            self.fs.pipe(BUCKET + "/py/new", b"x")

    def test_opening_a_directory_is_an_error(self):
        with self.assertRaises(IsADirectoryError):
            self.fs.open(BUCKET + "/py/dir")

    def test_a_changed_object_fails_the_open_file(self):
        # The file pins the ETag seen at open: a stale one stands for an overwrite meanwhile.
        from shoal import ObjectChangedError
        f = self.fs.open(BUCKET + "/py/dir/b", block_size=100)
        f.etag = '"an-older-version"'
        with self.assertRaises(ObjectChangedError):
            f.read(10)

    def test_every_manifest_object_reads_equal(self):
        for key in manifest():
            with self.fs.open("%s/%s" % (BUCKET, key)) as f:
                self.assertEqual(f.read(), object_bytes(key), key)


if __name__ == "__main__":
    unittest.main()
