"""Segmentation: round trips at every MTU, strict checks, priority lanes, credits."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from bridge.wire.segment import (
    INITIAL_CREDITS,
    MAX_RECORD_SIZE,
    Kind,
    Segmenter,
    parse_segment,
)
from tests.helpers import Seq, cont, credit, first, pump, random_cuts, split_record

MTUS = [23, 24, 27, 64, 185, 247, 251, 512, 515, 517]


def payload(mtu: int) -> int:
    return min(mtu - 3, 512)


def receive_all(rx: Segmenter, packets: list[bytes]) -> list[bytes]:
    out = []
    for p in packets:
        rx.receive_segment(p)
        while (r := rx.next_record()) is not None:
            out.append(r)
    return out


@pytest.mark.parametrize("mtu", MTUS)
def test_round_trip_every_mtu(mtu: int) -> None:
    records = [b"x", bytes(range(256)) * 3, b"y" * MAX_RECORD_SIZE, b"z" * (payload(mtu) - 3)]
    a, b = Segmenter(payload(mtu)), Segmenter(payload(mtu))
    got_a, got_b = pump(a, b, records, records[::-1])
    assert got_b == records
    assert got_a == records[::-1]


@settings(max_examples=60, deadline=None)
@given(
    mtu=st.integers(23, 517),
    records=st.lists(st.binary(min_size=1, max_size=3000), max_size=12),
)
def test_any_records_survive_segmentation(mtu: int, records: list[bytes]) -> None:
    a, b = Segmenter(payload(mtu)), Segmenter(payload(mtu))
    got_a, got_b = pump(a, b, records, [])
    assert got_b == records
    assert got_a == []


def test_header_overhead_one_byte_per_continuation() -> None:
    a, b = Segmenter(20), Segmenter(20)
    record = bytes(1000)
    packets = []
    queue = [record]
    while (p := a.next_segment(lambda lane: queue.pop() if queue else None)) is not None:
        packets.append(p)
        b.receive_segment(p)
        if (back := b.next_segment(lambda lane: None)) is not None:
            a.receive_segment(back)  # b's credit grants
    assert b.next_record() == record
    assert packets[0][0] >> 6 == Kind.FIRST and len(packets[0]) == 20
    assert all(p[0] >> 6 == Kind.CONT for p in packets[1:])
    data = sum(len(p) for p in packets) - 3 - (len(packets) - 1)
    assert data == 1000  # 3 bytes on the first segment, 1 on each continuation


@pytest.mark.parametrize("how", ["whole", "byte-at-a-time", "random-1", "random-2", "random-3"])
def test_receiver_accepts_any_split(how: str) -> None:
    record = random.Random(7).randbytes(500)  # fits one segment whole
    if how == "whole":
        cuts: list[int] = []
    elif how == "byte-at-a-time":
        cuts = list(range(1, len(record)))
    else:
        cuts = random_cuts(random.Random(how), len(record), 100)
    packets = split_record(record, cuts, Seq())
    rx = Segmenter(512, window=255) if len(packets) > INITIAL_CREDITS else Segmenter(512)
    # The receiver's own grants would be sent back; here it only counts what it allows,
    # so feed at most what the sender could have sent with the initial credits plus grants.
    got = []
    for p in packets:
        if rx.peer_credits == 0:
            grant = rx.next_segment(lambda lane: None)  # issue the credit the peer needs
            assert grant is not None and grant[0] >> 6 == Kind.CREDIT
        rx.receive_segment(p)
        while (r := rx.next_record()) is not None:
            got.append(r)
    assert got == [record]


def test_interleaved_lanes_reassemble_independently() -> None:
    seq = Seq()
    rx = Segmenter(512)
    packets = [
        first(seq(), 3, 6, b"bul"),
        first(seq(), 1, 2, b"pa"),  # a whole record on lane 1 while lane 3 is busy
        cont(seq(), 3, b"k!!"),
    ]
    assert receive_all(rx, packets) == [b"pa", b"bulk!!"]


def _expect(rx: Segmenter, packets: list[bytes], code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        for p in packets:
            rx.receive_segment(p)
    assert info.value.code is code
    with pytest.raises(LocalProtocolError):  # the segmenter stays failed
        rx.receive_segment(packets[0])


@pytest.mark.parametrize(
    ("packets", "code"),
    [
        ([b""], ErrorCode.MALFORMED),
        ([bytes(513)], ErrorCode.TOO_LARGE),
        ([bytes((0xC0, 1))], ErrorCode.UNSUPPORTED),  # kind 3
        ([first(1, 0, 1, b"a")], ErrorCode.SEQUENCE),
        ([cont(0, 2, b"a")], ErrorCode.INTERLEAVE),
        ([first(0, 0, 5, b"ab"), first(1, 0, 5, b"cd")], ErrorCode.INTERLEAVE),
        ([first(0, 0, 3, b"ab"), cont(1, 0, b"cd")], ErrorCode.MALFORMED),  # overrun
        ([first(0, 0, 2, b"abc")], ErrorCode.MALFORMED),
        ([first(0, 0, 0, b"a")], ErrorCode.MALFORMED),
        ([first(0, 0, MAX_RECORD_SIZE + 1, b"a")], ErrorCode.TOO_LARGE),
        ([bytes((0x40, 5))], ErrorCode.MALFORMED),  # truncated FIRST header
        ([first(0, 0, 3, b"")], ErrorCode.MALFORMED),  # FIRST without data
        ([first(0, 0, 3, b"ab"), cont(1, 0, b"")], ErrorCode.MALFORMED),  # empty CONT
        ([credit(0, 0)], ErrorCode.MALFORMED),
        ([bytes((0x90, 1))], ErrorCode.MALFORMED),  # CREDIT with lane bits
        ([credit(0, 1) + b"x"], ErrorCode.MALFORMED),
        ([credit(0, 255)], ErrorCode.FLOW_CONTROL),  # 32 + 255 > 255
        ([first(0, 0, 5, b"a", credit=0)], ErrorCode.MALFORMED),
        ([bytes((0x40, 5, 0x80))], ErrorCode.MALFORMED),  # G set, credit byte missing
    ],
)
def test_strict_checks(packets: list[bytes], code: ErrorCode) -> None:
    _expect(Segmenter(512), packets, code)


def test_data_without_credit_is_refused() -> None:
    seq = Seq()
    rx = Segmenter(512)
    packets = [first(seq(), 2, 1, b"a") for _ in range(INITIAL_CREDITS + 1)]
    for p in packets[:INITIAL_CREDITS]:
        rx.receive_segment(p)
        # records are not taken by the application: no credit comes back
    _expect(rx, packets[INITIAL_CREDITS:], ErrorCode.FLOW_CONTROL)


def test_reassembly_memory_is_capped() -> None:
    seq = Seq()
    rx = Segmenter(512, max_reassembly=10_000)
    rx.receive_segment(first(seq(), 0, 6000, b"a"))
    _expect(rx, [first(seq(), 1, 6000, b"b")], ErrorCode.TOO_LARGE)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_random_bytes_give_only_protocol_errors(packets: list[bytes]) -> None:
    rx = Segmenter(20)
    try:
        for p in packets:
            rx.receive_segment(p)
            while rx.next_record() is not None:
                pass
    except ProtocolError:
        pass


@given(st.binary(max_size=600))
def test_parse_segment_total(packet: bytes) -> None:
    try:
        seg = parse_segment(packet)
    except ProtocolError:
        return
    assert seg.kind in Kind


def test_urgent_lane_overtakes_a_long_record_after_one_segment() -> None:
    tx = Segmenter(20)
    queues: dict[int, list[bytes]] = {3: [bytes(2000)], 1: []}

    def source(lane: int) -> bytes | None:
        q = queues.get(lane)
        return q.pop(0) if q else None

    sent = [tx.next_segment(source) for _ in range(5)]
    queues[1].append(b"pause")
    nxt = tx.next_segment(source)
    assert nxt is not None and (nxt[0] >> 4) & 3 == 1 and nxt.endswith(b"pause")
    assert all(p is not None and (p[0] >> 4) & 3 == 3 for p in sent)


def test_slow_receiver_stalls_a_fast_sender_with_bounded_memory() -> None:
    tx = Segmenter(100)
    rx = Segmenter(100, max_pending=2000)
    records = [bytes([i]) * 300 for i in range(200)]
    queue = list(records)
    sent = 0
    # The application on rx never takes records: the sender must stall.
    while (p := tx.next_segment(lambda lane: queue.pop(0) if queue else None)) is not None:
        rx.receive_segment(p)
        sent += 1
        if (back := rx.next_segment(lambda lane: None)) is not None:
            tx.receive_segment(back)
    assert tx.credits == 0
    stalled_at = sent
    assert stalled_at < 100  # far from the 800 segments of all records
    # Now the application reads: everything flows, in order.
    got = []
    for _ in range(10_000):
        while (r := rx.next_record()) is not None:
            got.append(r)
        if (back := rx.next_segment(lambda lane: None)) is not None:
            tx.receive_segment(back)
        p = tx.next_segment(lambda lane: queue.pop(0) if queue else None)
        if p is None and not queue and len(got) == len(records):
            break
        if p is not None:
            rx.receive_segment(p)
    assert got == records


def _only_lane_0(record: bytes, lane: int) -> bytes | None:
    return record if lane == 0 else None


def test_grants_piggyback_on_first_segments() -> None:
    a, b = Segmenter(512), Segmenter(512)
    for i in range(20):
        record = bytes([i]) * 10
        packet = a.next_segment(functools.partial(_only_lane_0, record))
        assert packet is not None
        b.receive_segment(packet)
        assert b.next_record() == record
    # b owes 20 credits; its next data segment carries them instead of a CREDIT segment
    p = b.next_segment(lambda lane: b"reply" if lane == 0 else None)
    assert p is not None and p[0] >> 6 == Kind.FIRST and p[2] & 0x80 and p[3] == 20
    a.receive_segment(p)
    assert a.credits == INITIAL_CREDITS - 20 + 20


def test_bad_configuration_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Segmenter(19)
    with pytest.raises(LocalProtocolError):
        Segmenter(513)
    with pytest.raises(LocalProtocolError):
        Segmenter(100, window=8)


def _outcome(rx: Segmenter, receive: Callable[[bytes], None], packets: list[bytes]) -> object:
    try:
        for p in packets:
            receive(p)
    except ProtocolError as e:
        return ("error", e.code, str(e), vars(rx).copy())
    return ("ok", vars(rx).copy())


@settings(max_examples=300)
@given(st.lists(st.binary(min_size=1, max_size=24), max_size=12), st.integers(0, 3))
def test_the_fast_path_for_continuations_is_the_general_one(
    packets: list[bytes], lane: int
) -> None:
    """Continuations skip the Segment object (the common case of a long record): same
    records, state and errors as parsing them."""
    start = [bytes((0x40 | lane << 4, 60, 0)) + b"x" * 10]  # a FIRST: 60 bytes on `lane`
    packets = start + [bytes((p[0] & 0x3F,)) + p[1:] for p in packets]  # CONTs, any lane/seq

    def general(rx: Segmenter) -> Callable[[bytes], None]:
        def receive(p: bytes) -> None:
            rx._receive_parsed(parse_segment(p))

        return receive

    fast, slow = Segmenter(20), Segmenter(20)
    assert _outcome(fast, fast._receive, packets) == _outcome(slow, general(slow), packets)
