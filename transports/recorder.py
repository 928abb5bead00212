"""Recording links: every packet of any :class:`~transports.link.Link` into a pcapng file
that Wireshark, tshark and ``bridge-dump`` open, as the head unit's HCI traffic.

Strategy. A link below the bridge carries ATT values; to make them look like what a
Bluetooth stack would have seen, each recorded link becomes, in Bluetooth HCI H4 with a
direction header (pcapng link type 201):

- an LE Connection Complete event (the head unit as central, or as peripheral for a
  link a phone made to it, the phone at a made-up address ``C0:DE:00:00:xx:yy``, one per
  link),
- the GATT discovery of the bridge's characteristics (a Read By Type request and its
  response, with the handles of ``bridge/gatt.py``'s layout, the identify characteristic
  too when the head unit is the server), so that Wireshark and bridge-dump know which
  handle is which and which side is the head unit,
- each packet the GATT client sends as an ATT Write Command to the to-server value, each
  packet the server sends as a Handle Value Notification of the from-server value,
- a Disconnection Complete when the link ends (reason: supervision timeout for a lost
  link, remote or local termination otherwise).

:meth:`LinkRecorder.wrap` returns a link that records and otherwise behaves exactly as
the wrapped one. Recording is off unless a recorder is made: free when off. Times are
wall-clock seconds at the recorder's start plus the trio clock since (virtual time stays
readable).
"""

from __future__ import annotations

import struct
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import trio

from bridge.wire import gatt
from transports.link import CloseReason, Link, LinkClosed

LINKTYPE_H4_WITH_PHDR = 201
TO_PHONE_HANDLE, FROM_PHONE_HANDLE, INFO_HANDLE = 0x0010, 0x0012, 0x0015
IDENTIFY_HANDLE = 0x0017
DISCONNECT_REASONS = {
    CloseReason.LINK_LOSS: 0x08,  # connection timeout
    CloseReason.PEER: 0x13,  # remote user terminated connection
    CloseReason.LOCAL: 0x16,  # terminated by local host
}


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack("<II", kind, size) + body + struct.pack("<I", size)


class PcapngWriter:
    """Bluetooth HCI H4 packets with a direction header into a pcapng stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        stream.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        stream.write(_block(1, struct.pack("<HHI", LINKTYPE_H4_WITH_PHDR, 0, 0)))
        stream.flush()

    def write(self, when: float, sent: bool, h4: bytes) -> None:
        data = struct.pack(">I", 0 if sent else 1) + h4
        ticks = round(when * 1e6)
        header = struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        self.stream.write(_block(6, header + data))
        self.stream.flush()


def _uuid(value: uuid.UUID) -> bytes:
    return bytes(reversed(value.bytes))  # little-endian, as ATT carries it


def _acl(handle: int, sent: bool, att: bytes) -> bytes:
    l2cap = struct.pack("<HH", len(att), 0x0004) + att
    flags = 0x0000 if sent else 0x2000  # first fragment (non-flushable from the host)
    return b"\x02" + struct.pack("<HH", handle | flags, len(l2cap)) + l2cap


class LinkRecorder:
    """One capture file; :meth:`wrap` each link to record it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream = path.open("wb")
        self._writer = PcapngWriter(self._stream)
        self._clock: tuple[float, float] | None = None  # wall and trio time of the first record
        self._links = 0
        self._servers: set[int] = set()  # handles of links a phone made to us

    def now(self) -> float:
        if self._clock is None:
            self._clock = (time.time(), trio.current_time())
        wall, start = self._clock
        return wall + (trio.current_time() - start)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> LinkRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wrap(self, link: Link, *, server: bool = False) -> Link:
        """Record ``link``; ``server``: a link a phone made to the head unit (the head
        unit is the peripheral and GATT server)."""
        self._links += 1
        handle = 0x0040 + self._links
        address = bytes([self._links & 0xFF, self._links >> 8, 0, 0, 0xDE, 0xC0])
        self._write(False, self._connected(handle, address, server))
        layout = [
            (TO_PHONE_HANDLE, 0x04, gatt.TO_SERVER_UUID),
            (FROM_PHONE_HANDLE, 0x10, gatt.FROM_SERVER_UUID),
            (INFO_HANDLE, 0x02, gatt.INFO_UUID),
        ]
        if server:
            layout.append((IDENTIFY_HANDLE, 0x0A, gatt.IDENTIFY_UUID))
        declarations = b"".join(
            struct.pack("<HBH", value - 1, props, value) + _uuid(uuid)
            for value, props, uuid in layout
        )
        request = struct.pack("<BHHH", 0x08, 1, 0xFFFF, 0x2803)
        self._write(not server, _acl(handle, not server, request))
        self._write(server, _acl(handle, server, bytes([0x09, 21]) + declarations))
        if server:
            self._servers.add(handle)
        return RecordingLink(link, self, handle)

    def _write(self, sent: bool, h4: bytes) -> None:
        if not self._stream.closed:
            self._writer.write(self.now(), sent, h4)

    @staticmethod
    def _connected(handle: int, address: bytes, peripheral: bool = False) -> bytes:
        event = struct.pack("<BBHBB", 0x01, 0x00, handle, int(peripheral), 0x01) + address
        event += struct.pack("<HHHB", 24, 0, 400, 0)
        return bytes([0x04, 0x3E, len(event)]) + event

    def sent(self, handle: int, packet: bytes) -> None:
        if handle in self._servers:
            att = struct.pack("<BH", 0x1B, FROM_PHONE_HANDLE) + packet
        else:
            att = struct.pack("<BH", 0x52, TO_PHONE_HANDLE) + packet
        self._write(True, _acl(handle, True, att))

    def received(self, handle: int, packet: bytes) -> None:
        if handle in self._servers:
            att = struct.pack("<BH", 0x52, TO_PHONE_HANDLE) + packet
        else:
            att = struct.pack("<BH", 0x1B, FROM_PHONE_HANDLE) + packet
        self._write(False, _acl(handle, False, att))

    def ended(self, handle: int, reason: CloseReason) -> None:
        code = DISCONNECT_REASONS.get(reason, 0x13)
        self._write(False, bytes([0x04, 0x05, 0x04, 0x00]) + struct.pack("<HB", handle, code))


class RecordingLink(Link):
    """A link that records what it carries; otherwise the link it wraps."""

    def __init__(self, link: Link, recorder: LinkRecorder, handle: int) -> None:
        self.link = link
        self._recorder = recorder
        self._handle = handle
        self._ended = False

    @property
    def att_mtu(self) -> int:
        return self.link.att_mtu

    @property
    def payload_size(self) -> int:
        return self.link.payload_size

    @property
    def peer(self) -> str:
        return self.link.peer

    @property
    def closed(self) -> LinkClosed | None:
        return self.link.closed

    def _end(self, closed: LinkClosed) -> None:
        if not self._ended:
            self._ended = True
            self._recorder.ended(self._handle, closed.reason)

    async def send(self, packet: bytes) -> None:
        try:
            await self.link.send(packet)
        except LinkClosed as e:
            self._end(e)
            raise
        self._recorder.sent(self._handle, packet)

    async def wait_send_ready(self) -> None:
        await self.link.wait_send_ready()

    def send_room(self) -> bool:
        return self.link.send_room()

    def send_nowait(self, packet: bytes) -> None:
        self.link.send_nowait(packet)
        self._recorder.sent(self._handle, packet)

    def receive_nowait(self) -> bytes | None:
        packet = self.link.receive_nowait()
        if packet is not None:
            self._recorder.received(self._handle, packet)
        return packet

    async def receive(self) -> bytes:
        try:
            packet = await self.link.receive()
        except LinkClosed as e:
            self._end(e)
            raise
        self._recorder.received(self._handle, packet)
        return packet

    async def aclose(self) -> None:
        await self.link.aclose()
        self._end(self.link.closed or LinkClosed(CloseReason.LOCAL))


class RecordingRadio:
    """A radio (``bridge.radio_policy.Radio``: ``scan()`` and ``connect()``) whose links are
    recorded by ``recorder``."""

    def __init__(self, radio: Any, recorder: LinkRecorder) -> None:
        self.radio = radio
        self.recorder = recorder

    def scan(self) -> Any:
        return self.radio.scan()

    async def connect(self, sighting: Any) -> Link:
        return self.recorder.wrap(await self.radio.connect(sighting))


class RecordingListener:
    """A listener (the head unit as GATT server: ``advertise()``, ``accept()``) whose
    links are recorded by ``recorder``."""

    def __init__(self, listener: Any, recorder: LinkRecorder) -> None:
        self.listener = listener
        self.recorder = recorder

    async def advertise(self, data: bytes, scan_response: bytes) -> None:
        await self.listener.advertise(data, scan_response)

    async def accept(self) -> Link:
        link = await self.listener.accept()
        recorded = self.recorder.wrap(link, server=True)
        recorded.challenge = link.challenge  # type: ignore[attr-defined]
        recorded.tag = link.tag  # type: ignore[attr-defined]
        return recorded
