"""An fsspec filesystem over the local shoald: shoal://bucket/key, read-only.

Paths are "bucket/key" (the protocol prefix is optional). Directories are key prefixes ending
in "/", as S3 tools show them, so "bucket/a/b" is a directory when a key starts with "a/b/".

A file opened for reading is an fsspec buffered file whose reads are ranged gets: only the blocks
a read touches are fetched through the cluster. The file pins the object's ETag when it is
opened, so a file read in many ranges never mixes two versions of an object: if the object is
overwritten meanwhile, the next read raises ObjectChangedError (open it again for the new one).
Writing is not supported (use the mount or S3 itself): opening for writing raises
PermissionError, as do the other calls that would change the bucket.
"""

import datetime
import errno

from fsspec import register_implementation
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import Client

__all__ = ["ShoalFileSystem", "ShoalFile"]


def _file_entry(bucket, obj):
    return {"name": "%s/%s" % (bucket, obj["key"]), "size": obj["size"], "type": "file",
            "etag": obj.get("etag"), "mtime": obj.get("mtime")}


def _dir_entry(name):
    return {"name": name.rstrip("/"), "size": 0, "type": "directory"}


class ShoalFileSystem(AbstractFileSystem):
    """fsspec.filesystem("shoal", control=PATH); control defaults to the daemon's default socket."""

    protocol = "shoal"
    root_marker = ""

    def __init__(self, control=None, **kwargs):
        super().__init__(**kwargs)
        self.client = Client(control)

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("shoal://"):
            path = path[len("shoal://"):]
        return path.lstrip("/").rstrip("/")

    def split_path(self, path):
        """(bucket, key) of a path; key is "" for the bucket itself."""
        path = self._strip_protocol(path)
        bucket, _, key = path.partition("/")
        return bucket, key

    def _readonly(self, *args, **kwargs):
        raise PermissionError(errno.EROFS, "shoal:// is read-only (write through the mount or to S3)")

    mkdir = makedirs = rm_file = _rm = rm = mv = cp_file = pipe_file = touch = _readonly

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        if not path:
            # The daemon caches one bucket: the root lists it.
            bucket = self.client.status()["bucket"][len("s3://"):].split("/", 1)[0]
            out = [_dir_entry(bucket)]
            return out if detail else [e["name"] for e in out]
        bucket, key = self.split_path(path)
        prefix = key + "/" if key else ""
        out = []
        for page in self.client.list_all(bucket, prefix, "/"):
            out += [_dir_entry("%s/%s" % (bucket, p)) for p in page["prefixes"]]
            out += [_file_entry(bucket, o) for o in page["objects"] if o["key"] != prefix]
        if not out and key:
            # ls of a file lists the file, as fsspec's own filesystems do; else it does not exist
            # (a prefix marker object alone, "dir/", makes an empty directory).
            info = self.info(path)
            out = [info]
        return out if detail else sorted(e["name"] for e in out)

    def info(self, path, **kwargs):
        bucket, key = self.split_path(path)
        if not key:
            return _dir_entry(bucket)
        try:
            return _file_entry(bucket, self.client.stat(bucket, key))
        except FileNotFoundError:
            pass
        page = self.client.list(bucket, key + "/", "/", max_keys=1)
        if page["prefixes"] or page["objects"]:
            return _dir_entry("%s/%s" % (bucket, key))
        raise FileNotFoundError(errno.ENOENT, "no such file or directory: shoal://%s/%s" % (bucket, key))

    def ukey(self, path):
        return self.info(path).get("etag") or super().ukey(path)

    def modified(self, path):
        mtime = self.info(path).get("mtime")
        if mtime is None:
            raise IsADirectoryError(errno.EISDIR, "a directory has no modification time: %s" % path)
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc)

    def cat_file(self, path, start=None, end=None, **kwargs):
        """The bytes [start, end) of a file; negative positions count from the end, as in Python
        slices, and a range past the end is cut there."""
        bucket, key = self.split_path(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = max(size + start, 0) if start is not None and start < 0 else start
            end = max(size + end, 0) if end is not None and end < 0 else end
        start = start or 0
        if end is not None and end <= start:
            return b""
        return self.client.get(bucket, key, start, None if end is None else end - start)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            self._readonly()
        return ShoalFile(self, path, mode, block_size=block_size, cache_options=cache_options, **kwargs)


class ShoalFile(AbstractBufferedFile):
    """A file of shoal://, read with ranged gets that pin the ETag seen at open."""

    def __init__(self, fs, path, mode="rb", **kwargs):
        super().__init__(fs, fs._strip_protocol(path), mode, **kwargs)
        if self.details.get("type") != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory: shoal://%s" % self.path)
        self.bucket, self.key = fs.split_path(self.path)
        self.etag = self.details.get("etag")

    def _fetch_range(self, start, end):
        if end <= start:
            return b""
        return self.fs.client.get(self.bucket, self.key, start, end - start, etag=self.etag)


# Installed packages are found through the "fsspec.specs" entry point; this covers a package used
# from its source tree (PYTHONPATH) once shoal.filesystem is imported.
register_implementation(ShoalFileSystem.protocol, ShoalFileSystem, clobber=True)
