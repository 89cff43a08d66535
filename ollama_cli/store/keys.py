"""Key codecs: big-endian integers and prefix bounds, so that keys sort the same in every engine
that compares bytes (LMDB, PostgreSQL's bytea)."""

from __future__ import annotations

import struct


_U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    """Big-endian so that keys sort numerically."""
    return _U64.pack(n)


def read_u64(b: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(b, offset)[0]


def prefix_upper(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with prefix (None: no such key)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)
