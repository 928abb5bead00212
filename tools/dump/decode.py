"""From ATT PDUs to the bridge's frames, with the bridge's own codecs (sans-IO).

Strategy. The bridge's traffic is ATT writes to the to-phone characteristic and
notifications of the from-phone one (``bridge/gatt.py``), recognised by their UUIDs in
the GATT discovery the capture holds. Each connection and direction is one segment
stream: :func:`bridge.wire.segment.parse_segment` parses each value and :class:`Stream`
joins the segments of each lane into records, as the receiver does (but forgiving: a
capture may start in the middle of a record, so a stray continuation is reported, not
fatal). A record is a plaintext frame (:func:`bridge.wire.frame.decode_frame`) until the
first one that is not: from then on that direction is encrypted
(``pairing/records.py``). Encrypted records are opened with
:class:`pairing.encrypted_records.EncryptedRecords` when the key log has the connection's keys
(found by trying each logged session on the first encrypted record), and listed with
their size and counter byte otherwise. Frames are named and summarised from the typed
message (:func:`bridge.wire.messages.decode_message`).

Everything a capture can hold ends up as an :class:`Item`; bad bytes become items with
an ``error``, never exceptions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bridge.wire import gatt
from bridge.wire import messages as m
from bridge.wire.channels import Channel, ControlType
from bridge.wire.codec import Message
from bridge.wire.errors import ProtocolError
from bridge.wire.frame import Frame, decode_frame
from bridge.wire.segment import Kind, parse_segment
from pairing.encrypted_records import RECORD_OVERHEAD, EncryptedRecords
from pairing.handshake import Mode, PairingKind, Step
from tools.dump.apple import FROM_IPHONE, TO_IPHONE, AppleTraffic
from tools.dump.att import NOTIFICATION, WRITE_COMMAND, WRITE_REQUEST, AttPdu, Connection

TO_PHONE, TO_HEAD_UNIT = "to phone", "to head unit"
ARROWS = {TO_PHONE: "hu->phone", TO_HEAD_UNIT: "phone->hu", TO_IPHONE: "hu->iphone",
          FROM_IPHONE: "iphone->hu"}  # fmt: skip
Keys = dict[bytes, tuple[bytes, bytes]]  # handshake hash -> (to-phone key, to-head-unit key)


@dataclass
class Item:
    """One line of output: a frame, an encrypted record, a credit grant or an error."""

    number: int
    time: float
    device: str
    direction: str
    kind: str  # frame, encrypted, credit, error; ancs, ams (an iPhone without the app)
    size: int  # record (or segment) bytes on the air, headers excluded
    channel: str | None = None
    type: str | None = None
    summary: str = ""
    frame: Frame | None = None
    counter: int | None = None  # encrypted records: the counter byte
    error: str | None = None
    decrypted: bool = False
    cbor: bytes | None = None  # the frame's encoding (decrypted if it was encrypted)
    connection: tuple[int, int, int] = (0, 0, 0)  # AttTracker's connection key
    assembly: float = 0.0  # seconds from the record's first segment to its last
    fields: dict[str, Any] | None = None  # the decoded message's fields (JSON values)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frame": self.number,
            "time": round(self.time, 6),
            "device": self.device,
            "direction": self.direction,
            "kind": self.kind,
            "size": self.size,
        }
        for name in ("channel", "type", "counter", "error"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.summary:
            out["summary"] = self.summary
        if self.decrypted:
            out["decrypted"] = True
        if self.frame is not None:
            out["seq"] = self.frame.seq
        if self.fields is not None:
            out["fields"] = self.fields
        return out


@dataclass
class _Lane:
    total: int
    data: bytearray
    started: float  # when the FIRST segment was seen


@dataclass
class Stream:
    """One direction of one connection: segments in, records out."""

    lanes: dict[int, _Lane] = field(default_factory=dict)
    next_seq: int | None = None
    encrypted: bool = False
    records: EncryptedRecords | None = None
    segments: int = 0
    header_bytes: int = 0
    gaps: int = 0

    def feed(self, value: bytes, time: float = 0.0) -> tuple[list[tuple[bytes, float]], list[str]]:
        """Records completed by this segment (with the seconds their segments took), and
        what was wrong with it."""
        problems: list[str] = []
        try:
            segment = parse_segment(value)
        except ProtocolError as e:
            return [], [f"bad segment: {e}"]
        self.segments += 1
        if self.next_seq is not None and segment.seq != self.next_seq:
            self.gaps += 1
            problems.append(f"segment seq {segment.seq}, expected {self.next_seq}: a gap")
        self.next_seq = (segment.seq + 1) % 16
        self.header_bytes += len(value) - len(segment.data)
        if segment.kind is Kind.CREDIT:
            return [], problems
        if segment.kind is Kind.FIRST:
            assert segment.total_length is not None
            if segment.lane in self.lanes:
                problems.append(f"lane {segment.lane}: a record started before the last ended")
            self.lanes[segment.lane] = _Lane(segment.total_length, bytearray(), time)
        lane = self.lanes.get(segment.lane)
        if lane is None:
            return [], [*problems, f"lane {segment.lane}: continuation of an unseen record"]
        lane.data += segment.data
        if len(lane.data) > lane.total:
            del self.lanes[segment.lane]
            return [], [*problems, f"lane {segment.lane}: record longer than announced"]
        if len(lane.data) < lane.total:
            return [], problems
        del self.lanes[segment.lane]
        return [(bytes(lane.data), time - lane.started)], problems


class Decoder:
    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or {}
        self._streams: dict[tuple[tuple[int, int, int], str], Stream] = {}
        self._sessions: dict[tuple[int, int, int], bytes] = {}  # connection -> keylog hash
        self.names: dict[tuple[int, int, int], str] = {}  # connection -> device name (hello)
        self._noise: dict[tuple[int, int, int], tuple[object, int]] = {}  # mode, messages
        self.bridge_connections: set[tuple[int, int, int]] = set()
        self.apple = AppleTraffic()

    def stream(self, conn: Connection, direction: str) -> Stream:
        return self._streams.setdefault((conn.key, direction), Stream())

    def streams(self) -> dict[tuple[tuple[int, int, int], str], Stream]:
        return self._streams

    def direction(self, pdu: AttPdu) -> str | None:
        """Which way a PDU carries the bridge's segments, if it does."""
        if pdu.handle is None:
            return None
        uuids = pdu.connection.uuids
        role = uuids.get(pdu.handle)
        # the server is the head unit when it serves the identify characteristic (v1,
        # the phone connected to it): then the client's writes go to the head unit
        head_unit_serves = gatt.IDENTIFY_UUID in uuids.values()
        if role == gatt.TO_SERVER_UUID and pdu.opcode in (WRITE_COMMAND, WRITE_REQUEST):
            return TO_HEAD_UNIT if head_unit_serves else TO_PHONE
        if role == gatt.FROM_SERVER_UUID and pdu.opcode == NOTIFICATION:
            return TO_PHONE if head_unit_serves else TO_HEAD_UNIT
        return None

    def device(self, conn: Connection) -> str:
        return self.names.get(conn.key) or conn.label

    def feed(self, pdu: AttPdu) -> Iterator[Item]:
        direction = self.direction(pdu)
        if direction is None:
            yield from self.apple.feed(pdu, self._apple_item)
            return
        conn = pdu.connection
        self.bridge_connections.add(conn.key)
        stream = self.stream(conn, direction)
        records, problems = stream.feed(pdu.value, pdu.time)
        for problem in problems:
            yield self._item(pdu, direction, "error", len(pdu.value), error=problem)
        for record, took in records:
            item = self._record(pdu, direction, stream, record)
            item.assembly = took
            yield item

    def _apple_item(  # noqa: PLR0917 - AppleTraffic's one way to make an item
        self,
        pdu: AttPdu,
        direction: str,
        channel: str,
        type_: str | None,
        summary: str,
        fields: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Item:
        kind = "error" if error is not None else channel
        return self._item(pdu, direction, kind, len(pdu.value), channel=channel, type=type_,
                          summary=summary, fields=fields, error=error)  # fmt: skip

    def _item(self, pdu: AttPdu, direction: str, kind: str, size: int, **kw: Any) -> Item:
        device = self.device(pdu.connection)
        return Item(
            pdu.number, pdu.time, device, direction, kind, size, connection=pdu.connection.key, **kw
        )

    def _record(self, pdu: AttPdu, direction: str, stream: Stream, record: bytes) -> Item:
        if not stream.encrypted:
            try:
                return self._frame(pdu, direction, decode_frame(record), len(record), record)
            except ProtocolError as e:
                if len(record) <= RECORD_OVERHEAD:  # too short to be encrypted: a bad frame
                    return self._item(
                        pdu, direction, "error", len(record), error=f"not a frame: {e}"
                    )
                stream.encrypted = True  # the first record that is no plaintext frame
        counter = record[0]
        if stream.records is None:
            stream.records = self._match(pdu.connection, direction, record)
        if stream.records is None:
            return self._item(
                pdu, direction, "encrypted", len(record), counter=counter,
                summary=f"encrypted, {len(record) - RECORD_OVERHEAD} bytes of frame",
            )  # fmt: skip
        plaintext = stream.records.open(record)
        if plaintext is None:
            return self._item(
                pdu, direction, "error", len(record), counter=counter,
                error="failed to decrypt with this connection's keys (tampered, replayed "
                "or lost records)",
            )  # fmt: skip
        try:
            item = self._frame(pdu, direction, decode_frame(plaintext), len(record), plaintext)
        except ProtocolError as e:
            return self._item(pdu, direction, "error", len(record), error=f"decrypted: {e}")
        item.counter, item.decrypted = counter, True
        return item

    def _match(self, conn: Connection, direction: str, record: bytes) -> EncryptedRecords | None:
        """The records layer of the logged session whose key opens this record."""
        tried = [self._sessions[conn.key]] if conn.key in self._sessions else list(self.keys)
        for handshake_hash in tried:
            to_phone, to_head_unit = self.keys[handshake_hash]
            key = to_phone if direction == TO_PHONE else to_head_unit
            if EncryptedRecords(bytes(32), key).open(record) is not None:
                self._sessions[conn.key] = handshake_hash
                return EncryptedRecords(bytes(32), key, max_failures=1 << 62)
        return None

    def _frame(self, pdu: AttPdu, direction: str, frame: Frame, size: int, encoded: bytes) -> Item:
        channel = frame.channel.name.lower()
        type_name, summary = describe(frame)
        if frame.channel is Channel.CONTROL and frame.type == ControlType.HANDSHAKE:
            mode, count = self._noise.get(pdu.connection.key, (None, 0))
            mode = frame.body.get(1, mode) if count == 0 else mode
            self._noise[pdu.connection.key] = (mode, count + 1)
            message = frame.body.get(2)
            if frame.body.get(0) == Step.MESSAGE and isinstance(message, bytes):
                name = _enum_name(Mode, mode).upper() if mode is not None else "Noise"
                summary = f"{name} message {count + 1}, {len(message)} bytes"
        if frame.channel is Channel.CONTROL and frame.type == ControlType.HELLO:
            try:
                hello = m.decode_message(frame.channel, frame.type, frame.body)
                if isinstance(hello, m.Hello) and direction == TO_HEAD_UNIT:
                    self.names[pdu.connection.key] = hello.name
            except ProtocolError:
                pass
        return self._item(
            pdu, direction, "frame", size, channel=channel, type=type_name,
            summary=summary, frame=frame, cbor=encoded, fields=message_fields(frame),
        )  # fmt: skip


def message_fields(frame: Frame) -> dict[str, Any] | None:
    """The frame's message as JSON values: its fields by name (enums by their names,
    bytes as their length and, when short, hex), or None if it is no application
    message (handshake, ACK, ...) or does not decode."""
    if frame.channel is Channel.CONTROL and frame.type not in (
        ControlType.HELLO,
        ControlType.ERROR,
        ControlType.SHORTCUTS,
        ControlType.LAUNCH,
        ControlType.LAUNCH_RESULT,
    ):
        return None
    try:
        message = m.decode_message(frame.channel, frame.type, frame.body)
    except ProtocolError:
        return None
    fields: dict[str, Any] = _json_value(message)  # a message is a dataclass
    return fields


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, bytes):
        return {"length": len(value), **({"hex": value.hex()} if len(value) <= 64 else {})}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _enum_name(enum: type[Any], value: object) -> str:
    try:
        return str(enum(value).name.lower())
    except ValueError:
        return str(value)


def describe(frame: Frame) -> tuple[str, str]:
    """A frame's type name and a short readable summary."""
    if frame.channel is Channel.CONTROL and frame.seq is None:
        kind = _enum_name(ControlType, frame.type)
        body = frame.body
        if frame.type == ControlType.HANDSHAKE:
            step, mode, message = body.get(0), body.get(1), body.get(2)
            if step == Step.MESSAGE and isinstance(message, bytes):
                mode_name = _enum_name(Mode, mode).upper() if mode is not None else "Noise"
                return kind, f"{mode_name} message, {len(message)} bytes"
            return kind, _enum_name(Step, step)
        if frame.type == ControlType.PAIRING:
            return kind, _enum_name(PairingKind, body.get(0))
        if frame.type == ControlType.ACK:
            acks = ", ".join(f"{_enum_name(Channel, c)} {s}" for c, s in sorted(body.items()))
            return kind, acks
        if frame.type == ControlType.CLOSE:
            return kind, f"reason {body.get(0)}: {body.get(1, '')}"
        if frame.type != ControlType.HELLO:
            return kind, ""
    try:
        message = m.decode_message(frame.channel, frame.type, frame.body)
    except ProtocolError as e:
        return f"type {frame.type}", f"not a valid message: {e}"
    return _snake(type(message).__name__), summarize(message)


def type_names() -> set[str]:
    """Every name :func:`describe` gives a frame's type (what ``--type`` may name)."""
    return {_snake(cls.__name__) for cls in m.ALL} | {t.name.lower() for t in ControlType}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _mmss(ms: int | None) -> str:
    if ms is None:
        return "?"
    return f"{ms // 60000}:{ms // 1000 % 60:02d}"


def summarize(message: Message) -> str:
    """One readable line: "nav: turn right onto Main St in 300 m" without the prefix."""
    if isinstance(message, m.Maneuver):
        what = message.maneuver.name.lower().replace("_", " ")
        unit = message.display_unit.name.lower()
        where = f" onto {message.road}" if message.road else ""
        exit_ = f" (exit {message.roundabout_exit})" if message.roundabout_exit else ""
        return f"{what}{exit_}{where} in {message.display_distance} {unit}"
    if isinstance(message, m.RouteStatus):
        to = f" to {message.destination}" if message.destination else ""
        left = f", {message.remaining_m} m left" if message.remaining_m is not None else ""
        return f"{message.state.name.lower()}{to}{left}"
    if isinstance(message, m.NowPlaying):
        return (
            f"{message.state.name.lower()} '{message.title}' by {message.artist} "
            f"({_mmss(message.position_ms)}/{_mmss(message.duration_ms)})"
        )
    if isinstance(message, m.MediaCommandRequest):
        value = f" {message.value}" if message.value is not None else ""
        return f"{message.command.name.lower()}{value}"
    if isinstance(message, m.Notification):
        who = f" from {message.sender}" if message.sender else ""
        return f"{message.category.name.lower()}{who} ({message.app}): {message.text}"
    if isinstance(message, m.Reply):
        said = message.text if message.text is not None else f"canned reply {message.canned}"
        return f"to {message.id}: {said}"
    if isinstance(message, m.NotificationRemoved | m.MarkRead | m.Dismiss):
        return message.id
    if isinstance(message, m.PerformAction):
        return f"{message.action_id} on {message.id}"
    if isinstance(message, m.NavigationResult | m.MediaCommandResult | m.MessagingResult):
        outcome = "ok" if message.ok else f"failed: {message.error}"
        return f"frame {message.command_seq}: {outcome}"
    if isinstance(message, m.BulkChunk):
        end = message.offset + len(message.data)
        return f"transfer {message.transfer}: bytes {message.offset}-{end} of {message.total}"
    if isinstance(message, m.Hello):
        return f"{message.name} ({message.platform}), versions {list(message.versions)}"
    if isinstance(message, m.GuidanceRequest):
        return message.action.name.lower()
    if isinstance(message, m.Shortcuts):
        return ", ".join(f"{s.id} ({s.kind.name.lower()})" for s in message.shortcuts) or "none"
    if isinstance(message, m.Launch):
        return message.id
    if isinstance(message, m.LaunchResult):
        outcome = message.outcome.name.lower()
        return f"frame {message.command_seq}: {outcome}" + (
            f" ({message.error})" if message.error else ""
        )
    return ""
