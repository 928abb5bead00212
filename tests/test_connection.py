"""The connection core's whole receive path: segments -> records -> frames -> messages."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.connection import Connection, ConnectionClosed
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.codec import encode
from bridge.wire.errors import ProtocolError
from bridge.wire.frame import Frame, encode_frame
from bridge.wire.mux import ChannelMux, MessageReceived
from tests.helpers import Seq, random_cuts, split_record

FRAMES = [
    Frame(
        Channel.NAVIGATION,
        2,
        0,
        m.Maneuver(
            m.ManeuverType.TURN_RIGHT, 300, "300", m.DistanceUnit.METERS, "Main St"
        ).to_body(),
    ),
    Frame(Channel.AUDIO, 1, 0, m.NowPlaying("Midnight City", "M83").to_body()),
    Frame(
        Channel.MESSAGING,
        1,
        0,
        m.Notification("a", "SMS", m.Category.MESSAGE, "Call me " * 40, 0, "Mum").to_body(),
    ),
    Frame(Channel.BULK, 1, 0, m.BulkChunk(1, 0, 900, bytes(900)).to_body()),
    Frame(
        Channel.NAVIGATION,
        2,
        1,
        m.Maneuver(m.ManeuverType.DESTINATION, 0, "0", m.DistanceUnit.METERS, "Elm Rd").to_body(),
    ),
]


def _feed(how: str) -> list[MessageReceived]:
    conn = Connection(ChannelMux(), 512, now=0.0)
    seq = Seq()
    rng = random.Random(how)
    events: list[MessageReceived] = []
    for frame in FRAMES:
        record = encode_frame(frame)
        if how == "whole":
            cuts: list[int] = list(range(500, len(record), 500))
        elif how == "byte-at-a-time":
            cuts = list(range(1, len(record)))
        else:
            cuts = random_cuts(rng, len(record), 60)
        for packet in split_record(record, cuts, seq, lane=2):
            conn.receive_packet(packet, 0.0)
            while conn.next_packet(0.0) is not None:  # let it send its credit grants
                pass
            while (event := conn.next_event()) is not None:
                assert isinstance(event, MessageReceived)
                events.append(event)
    return events


@pytest.mark.parametrize("how", ["whole", "byte-at-a-time", "random-1", "random-2", "random-3"])
def test_frames_arrive_whatever_the_split(how: str) -> None:
    events = _feed(how)
    assert [(e.channel, e.seq, e.body) for e in events] == [
        (f.channel, f.seq, f.body) for f in FRAMES
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=30), max_size=15))
def test_random_packets_never_raise(packets: list[bytes]) -> None:
    conn = Connection(ChannelMux(), 20, now=0.0)
    for p in packets:
        conn.receive_packet(p, 0.0)
        while (event := conn.next_event()) is not None:
            assert isinstance(event, MessageReceived | ConnectionClosed)
        conn.next_packet(0.0)


body_values = (
    st.none() | st.booleans() | st.integers(-5, 2**33) | st.text(max_size=8) | st.binary(max_size=8)
)


@settings(max_examples=500, deadline=None)
@given(
    channel=st.sampled_from(Channel),
    type_=st.integers(0, 5),
    body=st.dictionaries(st.integers(0, 5) | st.text(max_size=3), body_values, max_size=6),
)
def test_random_bodies_give_only_protocol_errors(
    channel: Channel, type_: int, body: dict[int | str, object]
) -> None:
    with contextlib.suppress(ProtocolError):
        m.decode_message(channel, type_, body)


def _pump(a: Connection, b: Connection, now: float) -> list[object]:
    """Move packets both ways until quiet; every event both sides saw (each message
    taken, so acknowledgeable, as an application would)."""
    events: list[object] = []
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            while (packet := src.next_packet(now)) is not None:
                dst.receive_packet(packet, now)
                moved = True
            while (event := dst.next_event()) is not None:
                events.append(event)
        if not moved:
            break
    return events


def test_an_acknowledgement_owed_to_a_peer_that_restarted_is_not_sent() -> None:
    """The phone owed the head unit an acknowledgement when the link dropped; the head
    unit restarted (a new epoch, numbering from 0) and reconnects. The phone must not
    acknowledge the old frame on the new link before the head unit's HELLO: the new head
    unit never sent it ("ack of control frame 0, never sent", found by
    bridge-conformance)."""
    phone_mux = ChannelMux()
    hello_hu = m.Hello([0], "head-unit", "Car")
    hello_phone = m.Hello([0], "android", "Pixel 9")
    hu = Connection(ChannelMux(), 182, now=0.0, hello=hello_hu)
    phone = Connection(phone_mux, 182, now=0.0, hello=hello_phone)
    _pump(hu, phone, 0.0)
    report = m.ErrorReport(1, None, 6, "x")
    hu.mux.send(report.channel, report.type, encode(report))
    while (packet := hu.next_packet(0.0)) is not None:  # delivered; the ack not yet sent
        phone.receive_packet(packet, 0.0)
    while phone.next_event() is not None:
        pass
    phone.abandon()  # the link is gone; the head unit's process too
    new_hu = Connection(ChannelMux(), 182, now=1.0, hello=hello_hu)
    new_phone = Connection(phone_mux, 182, now=1.0, hello=hello_phone)
    events = _pump(new_phone, new_hu, 1.0)  # the phone speaks first
    assert not [e for e in events if isinstance(e, ConnectionClosed)], events
    assert new_hu.open and new_phone.open
