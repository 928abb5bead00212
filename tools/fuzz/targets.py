"""The fuzz targets: each feeds one input to a decoder; only the project's
:class:`~bridge.wire.errors.ProtocolError` may escape (``tools/fuzz/__main__.py`` runs them
under atheris; ``tests/test_fuzz_targets.py`` checks them with hypothesis)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from bridge.wire import apple, cbor
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.errors import ProtocolError
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


def ancs(data: bytes) -> None:
    """ANCS as the head unit reads it: the first byte picks how much goes to the
    Notification Source parser, the rest is Data Source values (1-byte lengths) answering
    a Get Notification Attributes or a Get App Attributes command."""
    if not data:
        return
    split = data[0] % 12
    with contextlib.suppress(ProtocolError):  # each part is fuzzed, whatever the others give
        apple.parse_notification_event(data[1 : 1 + split])
    assembler = apple.DataSourceAssembler()
    at = 1 + split
    while at < len(data):
        if not assembler.pending:
            command = (
                apple.get_app_attributes("com.apple.MobileSMS")
                if data[at] & 1
                else apple.get_notification_attributes(int.from_bytes(data[at : at + 4], "little"))
            )
            assembler.expect(command)
        size = data[at] >> 1
        with contextlib.suppress(ProtocolError):  # a broken answer: the next is asked for
            assembler.feed(data[at + 1 : at + 1 + size])
        at += 1 + size


def ancs_command(data: bytes) -> None:
    """A control-point write as the emulated iPhone reads it."""
    apple.parse_command(data)


def ams(data: bytes) -> None:
    """AMS as the head unit reads it: an Entity Update, its value as playback info and
    as a number, a Remote Command list."""
    apple.parse_supported_commands(data)
    text = data[3:].decode(errors="replace")
    with contextlib.suppress(ProtocolError):
        apple.parse_playback_info(text)
    with contextlib.suppress(ProtocolError):
        apple.parse_number(text, "value")
    apple.parse_entity_update(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "ancs": ancs,
    "ancs-command": ancs_command,
    "ams": ams,
    "segments": segments,
    "segment": one_segment,
    "cbor": cbor_item,
    "frame": frame,
    "message": message,
    "record": record,
    "handshake": handshake,
    "capture": capture,
}
