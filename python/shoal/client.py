"""A client of the local shoald's control socket, in pure Python.

The protocol (docs/configuration.md, "The control protocol"): one request per connection; the
client sends one JSON object on one line (at most 4096 bytes), the daemon answers one JSON header
line and then the body the header names: none, one JSON line, or exactly "size" raw bytes. A byte
body is read as it streams in; a body that ends short is an error, never a silently short result.

Nothing is kept between calls (no socket, no thread), so a Client is cheap, can be pickled, and is
safe to use from forked DataLoader workers and from many threads at once.
"""

import errno
import json
import os
import socket

__all__ = ["Client", "ShoalError", "ObjectChangedError", "default_control_path"]

MAX_REQUEST = 4096
_CHUNK = 1 << 20


class ShoalError(OSError):
    """The daemon refused or failed a request, or could not be reached. `code` is the daemon's
    error code ("S3_THROTTLED", "INVAL", ...), or None when the daemon was not reached."""

    def __init__(self, message, code=None, err=errno.EIO):
        super().__init__(err, message)
        self.code = code

    def __str__(self):
        return self.strerror


class ObjectChangedError(ShoalError):
    """The object has another ETag than the one the reader pinned: it was overwritten since the
    reader looked at it (code "S3_CHANGED"). Open it again to read the new version."""


def default_control_path():
    """Where shoald listens unless --control says otherwise: $XDG_RUNTIME_DIR/shoal/shoald.sock, else
    /run/shoal/shoald.sock."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "shoal", "shoald.sock") if xdg else "/run/shoal/shoald.sock"


def _raise_for(header):
    msg = header.get("error") or "shoald answered with an error"
    code = header.get("code")
    if code in ("S3_NO_SUCH_KEY", "NOT_FOUND", "S3_NO_SUCH_BUCKET"):
        raise FileNotFoundError(errno.ENOENT, msg)
    if code == "S3_ACCESS_DENIED":
        raise PermissionError(errno.EACCES, msg)
    if code == "S3_CHANGED":
        raise ObjectChangedError(msg, code, errno.ESTALE)
    raise ShoalError(msg, code, errno.EINVAL if code == "INVAL" else errno.EIO)


def _check_uint(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 64:
        raise ValueError("%s must be an integer from 0 to 2**64-1, not %r" % (name, value))


class _Connection:
    """One request and its answer."""

    def __init__(self, path, request):
        line = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        if len(line) > MAX_REQUEST:
            raise ValueError("request of %d bytes is longer than the control protocol's %d" % (len(line), MAX_REQUEST))
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ShoalError("cannot reach shoald at %s: %s (is shoald running? control= sets the path)"
                             % (path, e.strerror or e), None, e.errno or errno.EIO) from None
        try:
            self.sock.sendall(line)
            self.file = self.sock.makefile("rb", buffering=_CHUNK)
            self.header = self._json_line()
        except BaseException:
            self.close()
            raise
        if not self.header.get("ok"):
            self.close()
            _raise_for(self.header)

    def _json_line(self):
        line = self.file.readline()
        if not line.endswith(b"\n"):
            raise ShoalError("shoald at %s closed the connection mid-answer" % self.path)
        try:
            return json.loads(line)
        except ValueError as e:
            raise ShoalError("shoald at %s sent a malformed line: %s" % (self.path, e)) from None

    def body_json(self):
        kind = self.header.get("body")
        if kind == "none":
            return None
        if kind != "json":
            raise ShoalError("shoald at %s answered with a %r body where JSON was expected" % (self.path, kind))
        return self._json_line()

    def body_size(self):
        size = self.header.get("size")
        if self.header.get("body") != "bytes" or not isinstance(size, int):
            raise ShoalError("shoald at %s answered get without a sized byte body" % self.path)
        return size

    def readinto(self, view, what):
        """Fills the memoryview from the byte body; a short body is an error naming what."""
        done = 0
        while done < len(view):
            n = self.file.readinto(view[done:])
            if not n:
                raise ShoalError("%s: the daemon's stream ended after %d of %d bytes (see shoald's log)"
                                 % (what, done, len(view)))
            done += n

    def close(self):
        f = getattr(self, "file", None)
        if f is not None:
            f.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """Talks to the shoald listening at `control` (default_control_path() when None).

    Every method opens one connection for its request. Failures raise FileNotFoundError (no such
    key), PermissionError (S3 denied access), ObjectChangedError (a pinned ETag no longer matches),
    ValueError (an argument the protocol cannot carry) or ShoalError (anything else, including a
    daemon that is not running, with the daemon's message)."""

    def __init__(self, control=None):
        self.control = control or default_control_path()

    def __repr__(self):
        return "Client(%r)" % self.control

    def _call(self, request):
        with _Connection(self.control, request) as c:
            return c.body_json()

    def status(self):
        """The node's view of the cluster (the object `shoal status --json` prints)."""
        return self._call({"cmd": "status"})

    def stats(self):
        """The node's counters (the object `shoal stats --json` prints)."""
        return self._call({"cmd": "stats"})

    def stat(self, bucket, key):
        """{"key", "size", "etag", "mtime"} of one object (mtime in Unix seconds)."""
        return self._call({"cmd": "stat", "bucket": bucket, "key": key})

    def list(self, bucket, prefix="", delimiter="/", max_keys=1000, token=None):
        """One page of the listing of prefix: {"prefixes": [...], "objects": [{"key", "size", "etag",
        "mtime"}, ...], "next_token": str or None}. delimiter "" lists flat."""
        req = {"cmd": "list", "bucket": bucket, "prefix": prefix, "delimiter": delimiter, "max_keys": max_keys}
        if token is not None:
            req["token"] = token
        return self._call(req)

    def list_all(self, bucket, prefix="", delimiter="/"):
        """Yields the pages of the listing of prefix until the last."""
        token = None
        while True:
            page = self.list(bucket, prefix, delimiter, token=token)
            yield page
            token = page.get("next_token")
            if not token:
                return

    def _get(self, bucket, key, offset, length, etag):
        _check_uint("offset", offset)
        req = {"cmd": "get", "bucket": bucket, "key": key}
        if offset:
            req["offset"] = offset
        if length is not None:
            _check_uint("length", length)
            req["length"] = length
        if etag is not None:
            req["etag"] = etag
        return _Connection(self.control, req)

    def get(self, bucket, key, offset=0, length=None, etag=None):
        """The bytes [offset, offset + length) of the object (to its end when length is None),
        clamped to the object's end: a range at or past the end gives b"". With etag, the read fails
        with ObjectChangedError unless the object still has that ETag."""
        return self.get_info(bucket, key, offset, length, etag)[0]

    def get_info(self, bucket, key, offset=0, length=None, etag=None):
        """As get, also returning what the header says of the object: (bytes, object_size, etag)."""
        with self._get(bucket, key, offset, length, etag) as c:
            buf = bytearray(c.body_size())
            c.readinto(memoryview(buf), "s3://%s/%s" % (bucket, key))
            return bytes(buf), c.header.get("object_size"), c.header.get("etag")

    def iter_get(self, bucket, key, offset=0, length=None, etag=None, chunk_size=_CHUNK):
        """As get, yielding the bytes in pieces of at most chunk_size as they stream in, for ranges
        too large to hold at once."""
        with self._get(bucket, key, offset, length, etag) as c:
            left = c.body_size()
            while left:
                piece = bytearray(min(left, chunk_size))
                c.readinto(memoryview(piece), "s3://%s/%s" % (bucket, key))
                left -= len(piece)
                yield bytes(piece)
