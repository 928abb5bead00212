"""The fuzz targets: each feeds one input to a decoder; only the project's
:class:`~bridge.wire.errors.ProtocolError` may escape (``tools/fuzz/__main__.py`` runs them
under atheris; ``tests/test_fuzz_targets.py`` checks them with hypothesis)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from bridge.wire import cbor
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.frame import decode_frame
from bridge.wire.segment import Segmenter, parse_segment
from pairing.encrypted_records import EncryptedRecords
from pairing.handshake import Handshake, Role
from pairing.trust import TrustStore
from tools.dump.att import AttTracker
from tools.dump.capture import read_capture
from tools.dump.decode import Decoder

KEY = bytes(range(32))


def segments(data: bytes) -> None:
    """A stream of segments (2-byte length prefixes) into a receiving segmenter."""
    rx = Segmenter(20 + data[0] % 493 if data else 20)
    at = 1
    while at + 2 <= len(data):
        size = int.from_bytes(data[at : at + 2], "little") % 600
        rx.receive_segment(data[at + 2 : at + 2 + size])
        while rx.next_record() is not None:
            pass
        at += 2 + size


def one_segment(data: bytes) -> None:
    parse_segment(data)


def frame(data: bytes) -> None:
    decode_frame(data)


def cbor_item(data: bytes) -> None:
    cbor.loads(data)


def message(data: bytes) -> None:
    """A CBOR body as each channel's message type."""
    if len(data) < 2:
        return
    channel, type_ = Channel(data[0] % 5), data[1] % 16
    body = cbor.loads(data[2:])
    if isinstance(body, dict):
        m.decode_message(channel, type_, body)


def record(data: bytes) -> None:
    records = EncryptedRecords(KEY, KEY, max_failures=1 << 62)
    records.open(data)


_TRUST: list[TrustStore] = []


def handshake(data: bytes) -> None:
    """A handshake message (CBOR body) into a phone waiting for the head unit's first."""
    if not _TRUST:  # once, on first use
        _TRUST.append(TrustStore(Path(tempfile.mkdtemp()), role="phone"))
    trust = _TRUST[0]
    body = cbor.loads(data)
    if not isinstance(body, dict):
        return
    phone = Handshake(
        Role.PHONE, trust.identity, name="fuzz", platform="android", trusted=set(),
        random=bytes, irk=trust.irk,
    )  # fmt: skip
    phone.receive_handshake(body)


def capture(data: bytes) -> None:
    """A capture file through the readers, the ATT tracker and the decoder."""
    tracker, decoder = AttTracker(), Decoder({bytes(32): (KEY, KEY)})
    for packet in read_capture(data, partial_ok=True):
        for pdu in tracker.feed(packet):
            list(decoder.feed(pdu))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "segments": segments,
    "segment": one_segment,
    "cbor": cbor_item,
    "frame": frame,
    "message": message,
    "record": record,
    "handshake": handshake,
    "capture": capture,
}
