"""Test helpers: segment builders and a segmenter pair that talk without I/O."""

from __future__ import annotations

import itertools
import os
import random
import shutil

import pytest

from bridge.wire.segment import Kind, RecordSource, Segmenter, header_byte


class Seq:
    """Hands out segment sequence numbers like a sender does."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        s = self.n
        self.n = (s + 1) & 0x0F
        return s


def first(seq: int, lane: int, total: int, data: bytes, credit: int | None = None) -> bytes:
    hi = total >> 8
    header = bytes((header_byte(Kind.FIRST, lane, seq), total & 0xFF))
    if credit is None:
        return header + bytes((hi,)) + data
    return header + bytes((hi | 0x80, credit)) + data


def cont(seq: int, lane: int, data: bytes) -> bytes:
    return bytes((header_byte(Kind.CONT, lane, seq),)) + data


def credit(seq: int, grant: int) -> bytes:
    return bytes((header_byte(Kind.CREDIT, 0, seq), grant))


def split_record(record: bytes, cuts: list[int], seq: Seq, lane: int = 0) -> list[bytes]:
    """Segments carrying ``record`` cut at the given offsets (each 0 < cut < len)."""
    bounds = [0, *sorted(set(cuts)), len(record)]
    pieces = [record[a:b] for a, b in itertools.pairwise(bounds)]
    out = [first(seq(), lane, len(record), pieces[0])]
    out += [cont(seq(), lane, p) for p in pieces[1:]]
    return out


def random_cuts(rng: random.Random, length: int, max_piece: int) -> list[int]:
    cuts: list[int] = []
    pos = 0
    while True:
        pos += rng.randint(1, max_piece)
        if pos >= length:
            return cuts
        cuts.append(pos)


def pump(
    a: Segmenter, b: Segmenter, outgoing_a: list[bytes], outgoing_b: list[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """Run two segmenters against each other until quiet; returns records each received."""
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    qa, qb = list(outgoing_a), list(outgoing_b)

    def source(queue: list[bytes]) -> RecordSource:
        def s(lane: int) -> bytes | None:
            return queue.pop(0) if lane == 2 and queue else None

        return s

    for _ in range(1_000_000):
        moved = False
        pa = a.next_segment(source(qa))
        if pa is not None:
            b.receive_segment(pa)
            moved = True
        pb = b.next_segment(source(qb))
        if pb is not None:
            a.receive_segment(pb)
            moved = True
        while (r := a.next_record()) is not None:
            got_a.append(r)
        while (r := b.next_record()) is not None:
            got_b.append(r)
        if not moved:
            return got_a, got_b
    raise AssertionError("segmenters did not settle")


def needed(tool: str, env: str, hint: str, path: str | None = None) -> str:
    """The path of ``tool`` (on the PATH, else ``path``, e.g. in /usr/sbin). Missing, the
    test is skipped, or fails where ``env`` is set (CI sets it: there a skipped test
    would prove nothing)."""
    found = shutil.which(tool) or (path if path and os.access(path, os.X_OK) else None)
    path = found
    if path is None:
        if os.environ.get(env):
            pytest.fail(f"{tool} is not installed ({hint})")
        pytest.skip(f"{tool} is not installed")
    return path
