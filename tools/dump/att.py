"""From HCI packets to ATT PDUs, per connection (sans-IO).

Strategy. :class:`AttTracker` follows what a host saw: LE connections open and close
(LE (Enhanced) Connection Complete, Disconnection Complete), ACL fragments of each
connection and direction are joined into L2CAP frames, and frames on the ATT channel
(CID 4) become :class:`AttPdu` objects. A connection whose start is not in the capture
(a log switched on mid-connection) is taken as it comes, with no address. GATT
discovery seen on the way (Read By Type responses listing characteristic declarations)
names each value handle with its UUID, which is how the bridge's characteristics are
recognised.

Malformed fragments are counted in :attr:`AttTracker.damaged` and dropped: a capture of
a misbehaving device is exactly what this is for. Nothing here raises.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from tools.dump.capture import HciPacket, PacketType

ATT_CID = 0x0004
LE_META, DISCONNECTION_COMPLETE = 0x3E, 0x05
#: ATT opcodes this tool names
OPCODES = {
    0x01: "Error Response",
    0x02: "Exchange MTU Request",
    0x03: "Exchange MTU Response",
    0x04: "Find Information Request",
    0x05: "Find Information Response",
    0x06: "Find By Type Value Request",
    0x07: "Find By Type Value Response",
    0x08: "Read By Type Request",
    0x09: "Read By Type Response",
    0x0A: "Read Request",
    0x0B: "Read Response",
    0x0C: "Read Blob Request",
    0x0D: "Read Blob Response",
    0x0E: "Read Multiple Request",
    0x0F: "Read Multiple Response",
    0x10: "Read By Group Type Request",
    0x11: "Read By Group Type Response",
    0x12: "Write Request",
    0x13: "Write Response",
    0x16: "Prepare Write Request",
    0x17: "Prepare Write Response",
    0x18: "Execute Write Request",
    0x19: "Execute Write Response",
    0x1B: "Handle Value Notification",
    0x1D: "Handle Value Indication",
    0x1E: "Handle Value Confirmation",
    0x52: "Write Command",
}
WRITE_COMMAND, WRITE_REQUEST, NOTIFICATION, INDICATION = 0x52, 0x12, 0x1B, 0x1D
READ_BY_TYPE_RESPONSE = 0x09
#: opcodes whose PDU is (handle, value)
HANDLE_VALUE = {WRITE_COMMAND, WRITE_REQUEST, NOTIFICATION, INDICATION, 0x0A, 0x16}
BASE_UUID = uuid.UUID("00000000-0000-1000-8000-00805f9b34fb")


@dataclass
class Connection:
    key: tuple[int, int, int]  # (adapter, handle, generation): unique in a capture
    adapter: int
    handle: int
    peer: str | None = None  # the other side's address, if the capture has it
    central: bool | None = None  # this host was the central
    opened: float | None = None
    closed: float | None = None
    uuids: dict[int, uuid.UUID] = field(default_factory=dict)  # value handle -> UUID
    pdus: int = 0

    @property
    def label(self) -> str:
        return self.peer or f"handle 0x{self.handle:04x}"


@dataclass(frozen=True)
class AttPdu:
    number: int  # the capture frame that completed it
    time: float
    connection: Connection
    sent: bool  # by this capture's host
    opcode: int
    handle: int | None  # for handle-value PDUs
    value: bytes  # the value of handle-value PDUs, else the PDU after its opcode

    @property
    def name(self) -> str:
        return OPCODES.get(self.opcode, f"ATT opcode 0x{self.opcode:02x}")


def _address(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in reversed(raw))


def _uuid(raw: bytes) -> uuid.UUID:
    if len(raw) == 2:
        (short,) = struct.unpack("<H", raw)
        return uuid.UUID(int=BASE_UUID.int | (short << 96))
    return uuid.UUID(bytes=bytes(reversed(raw)))


class AttTracker:
    def __init__(self) -> None:
        self._open: dict[tuple[int, int], Connection] = {}
        self._generation = 0
        self._fragments: dict[tuple[int, int, bool], tuple[int, bytearray]] = {}
        self.connections: list[Connection] = []
        self.damaged = 0
        # the characteristics last discovered at each peer: a client with a cached GATT
        # database (BlueZ, by its Database Hash) does not discover them again
        # (per adapter, peer and which side serves: the host's database or the peer's)
        self._databases: dict[tuple[int, str, bool], dict[int, uuid.UUID]] = {}

    def connection(self, adapter: int, handle: int, time: float) -> Connection:
        found = self._open.get((adapter, handle))
        if found is None:  # started before the capture did
            found = self._new(adapter, handle)
        return found

    def _new(self, adapter: int, handle: int) -> Connection:
        self._generation += 1
        conn = Connection((adapter, handle, self._generation), adapter, handle)
        self._open[(adapter, handle)] = conn
        self.connections.append(conn)
        return conn

    def feed(self, packet: HciPacket) -> Iterator[AttPdu]:
        if packet.type is PacketType.EVENT:
            self._event(packet)
        elif packet.type is PacketType.ACL:
            yield from self._acl(packet)

    def _event(self, packet: HciPacket) -> None:
        data = packet.data
        if len(data) < 2:
            return
        code = data[0]
        if code == LE_META and len(data) >= 14 and data[2] in (0x01, 0x0A):
            status, handle, role, _kind = struct.unpack_from("<BHBB", data, 3)
            if status != 0:
                return
            conn = self._new(packet.adapter, handle & 0x0FFF)
            conn.peer = _address(data[8:14])
            conn.central = role == 0
            conn.opened = packet.time
            # the peer's database as last discovered, until this connection discovers it
            conn.uuids = self._databases.setdefault((packet.adapter, conn.peer, conn.central), {})
        elif code == DISCONNECTION_COMPLETE and len(data) >= 6:
            status, handle = struct.unpack_from("<BH", data, 2)
            ended = self._open.pop((packet.adapter, handle & 0x0FFF), None)
            if status == 0 and ended is not None:
                ended.closed = packet.time
                for direction in (True, False):
                    self._fragments.pop((packet.adapter, handle & 0x0FFF, direction), None)

    def _acl(self, packet: HciPacket) -> Iterator[AttPdu]:
        data = packet.data
        if len(data) < 4:
            self.damaged += 1
            return
        header, length = struct.unpack_from("<HH", data)
        handle, boundary = header & 0x0FFF, (header >> 12) & 0x3
        payload = data[4 : 4 + length]
        key = (packet.adapter, handle, packet.sent)
        if boundary == 0x1:  # continuing fragment
            pending = self._fragments.get(key)
            if pending is None:
                self.damaged += 1
                return
            expected, buffer = pending
            buffer += payload
        else:  # a first fragment: an L2CAP basic header leads it
            if len(payload) < 4:
                self.damaged += 1
                return
            expected = struct.unpack_from("<H", payload)[0] + 4
            buffer = bytearray(payload)
            if key in self._fragments:
                self.damaged += 1  # the previous frame never completed
        if len(buffer) < expected:
            self._fragments[key] = (expected, buffer)
            return
        self._fragments.pop(key, None)
        if len(buffer) > expected:
            self.damaged += 1
            return
        cid = struct.unpack_from("<H", buffer, 2)[0]
        if cid != ATT_CID or len(buffer) < 5:
            return
        conn = self.connection(packet.adapter, handle, packet.time)
        conn.pdus += 1
        pdu = bytes(buffer[4:])
        opcode = pdu[0]
        if opcode in HANDLE_VALUE and len(pdu) >= 3:
            att_handle = struct.unpack_from("<H", pdu, 1)[0]
            yield AttPdu(packet.number, packet.time, conn, packet.sent, opcode, att_handle, pdu[3:])
            return
        if opcode == READ_BY_TYPE_RESPONSE:
            self._declarations(conn, pdu)
        yield AttPdu(packet.number, packet.time, conn, packet.sent, opcode, None, pdu[1:])

    @staticmethod
    def _declarations(conn: Connection, pdu: bytes) -> None:
        """Characteristic declarations: (handle, properties, value handle, UUID)."""
        if len(pdu) < 2 or pdu[1] not in (7, 21):
            return
        size = pdu[1]
        for at in range(2, len(pdu) - size + 1, size):
            entry = pdu[at : at + size]
            value_handle = struct.unpack_from("<H", entry, 3)[0]
            conn.uuids[value_handle] = _uuid(entry[5:])
