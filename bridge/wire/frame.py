"""Frames: the unit the multiplexer sends, encoded as one CBOR array (sans-IO).

    frame = [channel, type, seq, body] / [channel, type, seq, body, acks]

``channel`` and ``type`` say what the body is; ``seq`` numbers the frame within its
channel for ordered, acknowledged delivery (``null`` for frames that are neither, such as
ACK and KEEPALIVE); ``acks`` piggy-backs cumulative acknowledgements of the peer's
channels. Decoding goes through :mod:`bridge.wire.cbor`'s strict check, then a shape check, so
hostile bytes give :class:`~bridge.wire.errors.ProtocolError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.wire import cbor
from bridge.wire.channels import Channel
from bridge.wire.errors import ErrorCode, ProtocolError

MAX_SEQ = 0xFFFFFFFF
MAX_TYPE = 0xFF

Body = dict[int | str, Any]


@dataclass(frozen=True)
class Frame:
    channel: Channel
    type: int
    seq: int | None
    body: Body = field(default_factory=dict)
    acks: Mapping[Channel, int] = field(default_factory=dict)


def encode_frame(frame: Frame) -> bytes:
    items: list[Any] = [int(frame.channel), frame.type, frame.seq, frame.body]
    if frame.acks:
        items.append({int(c): s for c, s in frame.acks.items()})
    return cbor.dumps(items)


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, f"bad frame: {message}")


def _channel(value: object) -> Channel:
    if type(value) is not int or value < 0:
        raise _malformed("channel is not an unsigned integer")
    try:
        return Channel(value)
    except ValueError:
        raise ProtocolError(ErrorCode.UNSUPPORTED, f"unknown channel {value}") from None


def _seq(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _malformed("sequence number is not a 32-bit unsigned integer")
    return value


def decode_frame(data: bytes) -> Frame:
    """Decode one frame; ProtocolError for anything that is not exactly a frame."""
    items = cbor.loads(data)
    if type(items) is not list or len(items) not in (4, 5):
        raise _malformed("not an array of 4 or 5 items")
    channel = _channel(items[0])
    msg_type = items[1]
    if type(msg_type) is not int or not 0 <= msg_type <= MAX_TYPE:
        raise _malformed("type is not an integer 0..255")
    seq = None if items[2] is None else _seq(items[2])
    body = items[3]
    if type(body) is not dict:
        raise _malformed("body is not a map")
    acks: dict[Channel, int] = {}
    if len(items) == 5:
        raw = items[4]
        if type(raw) is not dict or not raw:
            raise _malformed("acks is not a non-empty map")
        for key, value in raw.items():
            acks[_channel(key)] = _seq(value)
    return Frame(channel, msg_type, seq, body, acks)
