"""Capture files: HCI packets out of btsnoop and pcapng files (sans-IO).

Strategy. A capture is a sequence of HCI packets, each with a time, an adapter, a
direction and an H4 packet type. Three framings carry them:

- **btsnoop** (RFC 1761's cousin; Android's ``btsnoop_hci.log``, Bumble's captures):
  datalink 1002 (H4: the type byte leads the packet; flags bit 0 = received by the
  host) or 2001 (Linux monitor, btmon's ``-w``: the flags carry the adapter index in
  the top 16 bits and an opcode, 2-5 and 18-19 being HCI packets).
- **pcapng** (Wireshark's default) with link types 201 (Bluetooth HCI H4 with a 4-byte
  direction header) or 254 (Linux monitor, a 4-byte adapter/opcode header).
- **pcap** with the same two link types.

Anything else (other datalinks, other monitor opcodes: notes, logging) is skipped, not
an error. A file that is not one of these, or is cut short inside a header, raises
:class:`CaptureError`, a :class:`~bridge.wire.errors.ProtocolError`: the only exception a
reader lets out, whatever the bytes. A record cut short at the very end of a file (a
capture still being written) ends the file without error when ``partial_ok``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from bridge.wire.errors import ErrorCode, ProtocolError

BTSNOOP_MAGIC = b"btsnoop\0"
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
#: btsnoop times are microseconds since 0000-01-01; this is the Unix epoch in them.
BTSNOOP_EPOCH = 0x00DCDDB30F2F8000
DATALINK_H4, DATALINK_MONITOR = 1002, 2001
LINKTYPE_H4_WITH_PHDR, LINKTYPE_MONITOR = 201, 254
MAX_RECORD = 1 << 16  # larger than any HCI packet (an event is at most 257 bytes)


class PacketType(IntEnum):
    """H4 packet types."""

    COMMAND = 1
    ACL = 2
    SCO = 3
    EVENT = 4
    ISO = 5


#: Linux monitor opcodes of HCI packets: opcode -> (type, sent by the host)
MONITOR_OPCODES: dict[int, tuple[PacketType, bool]] = {
    2: (PacketType.COMMAND, True),
    3: (PacketType.EVENT, False),
    4: (PacketType.ACL, True),
    5: (PacketType.ACL, False),
    6: (PacketType.SCO, True),
    7: (PacketType.SCO, False),
    18: (PacketType.ISO, True),
    19: (PacketType.ISO, False),
}


class CaptureError(ProtocolError):
    """The file is not a capture this tool reads, or is damaged."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.MALFORMED, message)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class HciPacket:
    number: int  # 1-based position in the file, as Wireshark numbers frames
    time: float  # seconds since the Unix epoch
    adapter: int  # controller index (0 unless the capture says otherwise)
    sent: bool  # host -> controller
    type: PacketType
    data: bytes  # the HCI packet without its H4 type byte


def capture_format(head: bytes) -> str | None:
    """``btsnoop``, ``pcapng``, ``pcap`` or None, from a file's first bytes."""
    if head.startswith(BTSNOOP_MAGIC):
        return "btsnoop"
    if head.startswith(PCAPNG_MAGIC):
        return "pcapng"
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    return None


def read_capture(data: bytes, *, partial_ok: bool = False) -> Iterator[HciPacket]:
    """Every HCI packet of a capture file's bytes, in file order."""
    kind = capture_format(data[:16])
    if kind == "btsnoop":
        yield from _btsnoop(data, partial_ok)
    elif kind == "pcapng":
        yield from _pcapng(data, partial_ok)
    elif kind == "pcap":
        yield from _pcap(data, partial_ok)
    elif len(data) < 8:
        raise CaptureError("the file is empty or too short to be a capture")
    else:
        raise CaptureError(
            "not a capture this tool reads (btsnoop, pcapng or pcap with Bluetooth HCI)"
        )


def _h4(number: int, time: float, adapter: int, sent: bool, packet: bytes) -> HciPacket | None:
    if not packet or packet[0] not in PacketType._value2member_map_:
        return None
    return HciPacket(number, time, adapter, sent, PacketType(packet[0]), bytes(packet[1:]))


def _cut(partial_ok: bool, where: str) -> None:
    if not partial_ok:
        raise CaptureError(f"the file ends inside {where}: truncated")


def _records(
    data: bytes, offset: int, header: struct.Struct, size_field: int, partial_ok: bool
) -> Iterator[tuple[int, tuple[int, ...], bytes]]:
    """The records of a btsnoop or pcap file from ``offset``: (number, header fields,
    body), each header followed by as many bytes as its field ``size_field`` says."""
    number = 0
    while offset < len(data):
        if offset + header.size > len(data):
            _cut(partial_ok, f"record {number + 1}'s header")
            return
        fields = header.unpack_from(data, offset)
        offset += header.size
        included = fields[size_field]
        if included > MAX_RECORD:
            raise CaptureError(f"record {number + 1} claims {included} bytes")
        if offset + included > len(data):
            _cut(partial_ok, f"record {number + 1}")
            return
        number += 1
        yield number, fields, data[offset : offset + included]
        offset += included


def _monitor(number: int, time: float, adapter: int, opcode: int, body: bytes) -> HciPacket | None:
    """A Linux monitor record: an HCI packet for the opcodes that carry one."""
    known = MONITOR_OPCODES.get(opcode)
    if known is None:
        return None
    return HciPacket(number, time, adapter, known[1], known[0], bytes(body))


def _btsnoop(data: bytes, partial_ok: bool) -> Iterator[HciPacket]:
    if len(data) < 16:
        raise CaptureError("the file ends inside the btsnoop header: truncated")
    version, datalink = struct.unpack_from(">II", data, 8)
    if version != 1:
        raise CaptureError(f"btsnoop version {version}, not 1")
    if datalink not in (DATALINK_H4, DATALINK_MONITOR):
        raise CaptureError(f"btsnoop datalink {datalink}: not HCI H4 (1002) or monitor (2001)")
    # original length, included length, flags, drops, time
    for number, (_, _, flags, _, stamp), body in _records(
        data, 16, struct.Struct(">IIIIq"), 1, partial_ok
    ):
        time = (stamp - BTSNOOP_EPOCH) / 1e6
        if datalink == DATALINK_H4:
            packet = _h4(number, time, 0, not flags & 1, body)
        else:
            packet = _monitor(number, time, flags >> 16, flags & 0xFFFF, body)
        if packet is not None:
            yield packet


def _linktype_packet(number: int, time: float, linktype: int, body: bytes) -> HciPacket | None:
    if len(body) < 4:
        return None
    if linktype == LINKTYPE_H4_WITH_PHDR:
        (direction,) = struct.unpack_from(">I", body)
        return _h4(number, time, 0, direction == 0, body[4:])
    if linktype == LINKTYPE_MONITOR:
        adapter, opcode = struct.unpack_from(">HH", body)
        return _monitor(number, time, adapter, opcode, body[4:])
    return None


def _pcap(data: bytes, partial_ok: bool) -> Iterator[HciPacket]:
    if len(data) < 24:
        raise CaptureError("the file ends inside the pcap header: truncated")
    order, unit = PCAP_MAGICS[data[:4]]
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_H4_WITH_PHDR, LINKTYPE_MONITOR):
        raise CaptureError(f"pcap link type {linktype}: not Bluetooth HCI (201 or 254)")
    # seconds, fraction, included length, original length
    for number, (seconds, fraction, _, _), body in _records(
        data, 24, struct.Struct(order + "IIII"), 2, partial_ok
    ):
        packet = _linktype_packet(number, seconds + fraction * unit, linktype, body)
        if packet is not None:
            yield packet


def _pcapng(data: bytes, partial_ok: bool) -> Iterator[HciPacket]:
    order = "<"
    interfaces: list[tuple[int, float]] = []  # (link type, seconds per tick)
    offset, number = 0, 0
    while offset < len(data):
        if offset + 12 > len(data):
            _cut(partial_ok, "a block header")
            return
        block_type = struct.unpack_from(order + "I", data, offset)[0]
        if block_type == 0x0A0D0D0A:  # section header: its byte order applies from here
            magic = data[offset + 8 : offset + 12]
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureError("pcapng section header with a bad byte-order magic")
            interfaces = []
        length = struct.unpack_from(order + "I", data, offset + 4)[0]
        if length < 12 or length % 4 or length > MAX_RECORD + 64:
            raise CaptureError(f"pcapng block of {length} bytes at offset {offset}")
        if offset + length > len(data):
            _cut(partial_ok, "a pcapng block")
            return
        body = data[offset + 8 : offset + length - 4]
        offset += length
        if block_type == 1 and len(body) >= 8:  # interface description
            linktype = struct.unpack_from(order + "H", body)[0]
            interfaces.append((linktype, _tick(body[8:], order)))
        elif block_type in (3, 6):
            number += 1
            packet = _pcapng_packet(number, block_type, body, order, interfaces)
            if packet is not None:
                yield packet


def _tick(options: bytes, order: str) -> float:
    """Seconds per timestamp unit, from an interface's if_tsresol option (default 1 µs)."""
    at = 0
    while at + 4 <= len(options):
        code, size = struct.unpack_from(order + "HH", options, at)
        if code == 0:
            break
        if code == 9 and size >= 1 and at + 5 <= len(options):
            resolution = options[at + 4]
            exponent = resolution & 0x7F
            return float(2**-exponent if resolution & 0x80 else 10**-exponent)
        at += 4 + size + (-size % 4)
    return 1e-6


def _pcapng_packet(
    number: int, block_type: int, body: bytes, order: str, interfaces: list[tuple[int, float]]
) -> HciPacket | None:
    if block_type == 6:  # enhanced packet
        if len(body) < 20:
            raise CaptureError(f"pcapng packet {number} is shorter than its header")
        interface, high, low, captured = struct.unpack_from(order + "IIII", body)
        payload = body[20 : 20 + captured]
        if interface >= len(interfaces) or len(payload) < captured:
            raise CaptureError(f"pcapng packet {number} names no interface or is cut short")
        linktype, tick = interfaces[interface]
        time = ((high << 32) | low) * tick
    else:  # simple packet: interface 0, no time
        if not interfaces or len(body) < 4:
            raise CaptureError(f"pcapng packet {number} before any interface")
        linktype, time = interfaces[0][0], 0.0
        payload = body[4:]
    return _linktype_packet(number, time, linktype, payload)
