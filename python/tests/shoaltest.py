"""What the C driver (tests/python/test_python.c) tells the Python tests: the daemon's socket, the
bucket, and a manifest of the uploaded objects (key -> size and seed), whose bytes content()
rebuilds exactly as the harness's td_content() made them."""

import functools
import json
import os
import sys
import unittest

M64 = (1 << 64) - 1


def env(name):
    value = os.environ.get(name)
    if not value:
        raise unittest.SkipTest("%s is not set: run through ctest (tests/python/test_python.c)" % name)
    return value


CONTROL = os.environ.get("SHOAL_TEST_CONTROL", "")
CONTROL2 = os.environ.get("SHOAL_TEST_CONTROL2", "")
BUCKET = os.environ.get("SHOAL_TEST_BUCKET", "")
BLOCK = int(os.environ.get("SHOAL_TEST_BLOCK_SIZE", "0"))


@functools.lru_cache(maxsize=None)
def manifest():
    with open(env("SHOAL_TEST_MANIFEST")) as f:
        return json.load(f)


@functools.lru_cache(maxsize=256)
def content(size, seed):
    """td_content(size, seed): xorshift64 words, little-endian."""
    x = 0x9E3779B97F4A7C15 ^ ((seed << 17 | seed) & M64)
    out = bytearray()
    for _ in range((size + 7) // 8):
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        out += x.to_bytes(8, "little")
    return bytes(out[:size])


def object_bytes(key):
    size, seed = manifest()[key]
    return content(size, seed)


def fail(what):
    print("FAIL: " + what, file=sys.stderr)
    sys.exit(1)
