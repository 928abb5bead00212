"""Strict CBOR for the wire: what the bridge accepts from a peer, checked before decoding.

Strategy: a small well-formedness walker runs over the bytes first, with hard limits, and
only bytes that pass reach ``cbor2``. The walker accepts the subset of RFC 8949 the
protocol uses (unsigned and negative integers, byte and text strings, arrays, maps,
false/true/null and floats), in preferred serialization (shortest integer and length
encodings, definite lengths), with at most :data:`MAX_DEPTH` levels of nesting,
:data:`MAX_ITEMS` data items, map keys that are integers or text, and no duplicate
keys. It refuses tags, indefinite lengths, undefined and other simple values. Any bytes
whatsoever give either a Python value or :class:`~bridge.wire.errors.ProtocolError`.

Encoding uses ``cbor2`` in canonical mode, so what we send passes our own check.
"""

from __future__ import annotations

from typing import Any

import cbor2

from bridge.wire.errors import ErrorCode, ProtocolError

MAX_DEPTH = 8
MAX_ITEMS = 4096

CborValue = Any  # int | bytes | str | list | dict | bool | None | float, nested


def _fail(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, f"bad CBOR: {message}")


_ARGUMENT_SIZE = {24: 1, 25: 2, 26: 4, 27: 8}  # additional information -> bytes
_SHORTEST = {1: 24, 2: 0x100, 4: 0x10000, 8: 0x100000000}  # bytes -> smallest value
_FLOAT_SIZE = {25: 2, 26: 4, 27: 8}


class _Walker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def _argument(self, info: int) -> int:
        data, pos = self.data, self.pos
        if info < 24:
            return info
        size = _ARGUMENT_SIZE.get(info)
        if size is None:
            raise _fail("indefinite length or reserved argument")
        if pos + size > len(data):
            raise _fail("truncated argument")
        value = int.from_bytes(data[pos : pos + size], "big")
        self.pos = pos + size
        if value < _SHORTEST[size]:
            raise _fail("argument not in its shortest form")
        return value

    def item(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _fail(f"nested deeper than {MAX_DEPTH}")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise _fail(f"more than {MAX_ITEMS} items")
        if self.pos >= len(self.data):
            raise _fail("truncated")
        initial = self.data[self.pos]
        self.pos += 1
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            self._simple(info)
            return
        value = self._argument(info)
        if major in (0, 1):
            return
        if major in (2, 3):
            end = self.pos + value
            if end > len(self.data):
                raise _fail("string runs past the end")
            if major == 3:
                try:
                    self.data[self.pos : end].decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail("text string is not UTF-8") from None
            self.pos = end
            return
        if major == 4:
            if value > len(self.data) - self.pos:
                raise _fail("array longer than the input")
            for _ in range(value):
                self.item(depth + 1)
            return
        if major == 5:
            if 2 * value > len(self.data) - self.pos:
                raise _fail("map longer than the input")
            seen: set[bytes] = set()
            for _ in range(value):
                start = self.pos
                key_major = self.data[start] >> 5 if start < len(self.data) else -1
                if key_major not in (0, 1, 3):
                    raise _fail("map key is not an integer or text")
                self.item(depth + 1)
                key = self.data[start : self.pos]
                if key in seen:
                    raise _fail("duplicate map key")
                seen.add(key)
                self.item(depth + 1)
            return
        raise _fail("tags are not allowed")

    def _simple(self, info: int) -> None:
        if info in (20, 21, 22):
            return
        size = _FLOAT_SIZE.get(info)
        if size is None:
            raise _fail(f"simple value {info} is not allowed")
        if self.pos + size > len(self.data):
            raise _fail("truncated float")
        self.pos += size


def check(data: bytes) -> None:
    """Raise ProtocolError unless ``data`` is exactly one acceptable CBOR item."""
    walker = _Walker(data)
    walker.item(0)
    if walker.pos != len(data):
        raise _fail(f"{len(data) - walker.pos} bytes after the item")


def loads(data: bytes) -> CborValue:
    """Decode one CBOR item strictly; ProtocolError for anything else."""
    check(data)
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False)
    except (cbor2.CBORDecodeError, ValueError, OverflowError) as e:  # pragma: no cover
        raise _fail(str(e)) from None


def dumps(value: CborValue) -> bytes:
    """Encode in canonical (deterministic) form."""
    return cbor2.dumps(value, canonical=True)
