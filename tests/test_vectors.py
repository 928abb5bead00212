"""Golden vectors of protocol version 0, checked both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.wire import cbor
from bridge.wire.channels import Channel
from bridge.wire.codec import encode
from bridge.wire.frame import Frame, decode_frame, encode_frame
from bridge.wire.messages import ALL, decode_message
from bridge.wire.segment import Segmenter
from tests.helpers import Seq, first
from tests.vector_transcripts import MESSAGES, flow, transcript

VECTORS = Path(__file__).parent / "vectors"
FRAMES = json.loads((VECTORS / "frames.json").read_text())["frames"]
SEGMENTS = json.loads((VECTORS / "segments.json").read_text())["segments"]


def _value(v: Any) -> Any:
    if isinstance(v, dict) and "hex" in v:
        return bytes.fromhex(v["hex"])
    if isinstance(v, dict) and "map" in v:
        return {_value(k): _value(x) for k, x in v["map"]}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


@pytest.mark.parametrize("vector", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vector(vector: dict[str, Any]) -> None:
    frame = Frame(
        Channel(vector["channel"]),
        vector["type"],
        vector["seq"],
        _value(vector["body"]),
        {Channel(int(k)): v for k, v in vector["acks"].items()},
    )
    assert encode_frame(frame).hex() == vector["hex"]
    assert decode_frame(bytes.fromhex(vector["hex"])) == frame


@pytest.mark.parametrize("vector", SEGMENTS, ids=[v["name"] for v in SEGMENTS])
def test_segment_vector(vector: dict[str, Any]) -> None:
    records = [bytes.fromhex(r) for r in vector["records"]]
    packets = [bytes.fromhex(p) for p in vector["segments"]]
    rx = Segmenter(vector["payload_size"])
    got = []
    for p in packets:
        rx.receive_segment(p)
        while (r := rx.next_record()) is not None:
            got.append(r)
    assert got == records
    tx = Segmenter(vector["payload_size"])
    if "grant of 20" in vector["name"]:
        # The sender first receives (and hands to its application) 20 one-segment records,
        # so it owes its peer 20 credits, which its next FIRST segment carries.
        seq = Seq()
        for _ in range(20):
            tx.receive_segment(first(seq(), 0, 1, b"."))
            assert tx.next_record() == b"."
    queue = list(records)
    sent: list[bytes] = []
    lane = vector["lane"]

    def source(n: int) -> bytes | None:
        return queue.pop(0) if n == lane and queue else None

    while (packet := tx.next_segment(source)) is not None:
        sent.append(packet)
    assert sent == packets


@pytest.mark.parametrize(
    "vector",
    [v for v in FRAMES if v["channel"] != 0 or v["type"] == 6],
    ids=[v["name"] for v in FRAMES if v["channel"] != 0 or v["type"] == 6],
)
def test_frame_vector_bodies_are_valid_messages(vector: dict[str, Any]) -> None:
    frame = decode_frame(bytes.fromhex(vector["hex"]))
    message = decode_message(frame.channel, frame.type, frame.body)
    assert encode(message) == frame.body  # the typed message gives back the same body


# -- transcripts and every message (tests/vector_transcripts.py makes them) ----------------

TRANSCRIPTS = json.loads((VECTORS / "handshakes.json").read_text())
EVERY_MESSAGE = json.loads((VECTORS / "messages.json").read_text())["messages"]


@pytest.mark.parametrize("kind", ["XX", "KK"])
def test_a_whole_handshake_byte_for_byte(kind: str) -> None:
    """Every packet from the first handshake message to the phone's HELLO, with the keys,
    ephemerals and nonces fixed: the cores still produce exactly these bytes."""
    (expected,) = [t for t in TRANSCRIPTS["handshakes"] if t["name"].startswith(f"Noise {kind}")]
    got = transcript(kind)
    assert got["packets"] == expected["packets"]
    assert got["events"] == expected["events"]
    assert expected["events"]["head unit"][-1] == "hello from Pixel 9"


def test_credits_and_acknowledgements_byte_for_byte() -> None:
    expected = TRANSCRIPTS["flow"]
    got = flow()
    assert got["packets"] == expected["packets"] and got["delivered"] == list(range(60))
    # the head unit sends only control records on lane 0 (ACKs, then a KEEPALIVE), some
    # of them granting credit (the G byte of their FIRST segment)
    hu = [bytes.fromhex(p["hex"]) for p in expected["packets"] if p["from"] == "head unit"]
    assert hu and all(p[0] >> 4 == 0b0100 for p in hu)  # FIRST, lane 0
    assert any(p[2] & 0x80 for p in hu) and any(not p[2] & 0x80 for p in hu)


@pytest.mark.parametrize("vector", EVERY_MESSAGE, ids=[v["name"] for v in EVERY_MESSAGE])
def test_every_message_type(vector: dict[str, Any]) -> None:
    message = next(x for x in MESSAGES if type(x).__name__ == vector["name"])
    body = cbor.loads(bytes.fromhex(vector["body_hex"]))
    assert decode_message(Channel(vector["channel"]), vector["type"], body) == message
    assert cbor.dumps(encode(message)).hex() == vector["body_hex"]


def test_the_message_vectors_cover_every_type() -> None:
    assert {v["name"] for v in EVERY_MESSAGE} == {cls.__name__ for cls in ALL}
