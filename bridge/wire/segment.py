"""Segmentation: records cut into ATT-sized segments, reassembled strictly (sans-IO).

Strategy. A record (one encoded frame, encrypted once pairing has happened) is at most
:data:`MAX_RECORD_SIZE` bytes and travels as one or more segments, each one ATT value.
Every segment starts with one header byte::

    bit 7-6  kind   0 CONT, 1 FIRST, 2 CREDIT, 3 reserved
    bit 5-4  lane   0..3 (for CREDIT: must be 0)
    bit 3-0  seq    segment counter of this direction, mod 16

A FIRST segment adds two bytes: the record length (15 bits, little-endian) and, in the top
bit of the second byte, G: a credit byte follows. So a continuation costs one byte and a
first segment three (four with a credit grant), against Matter BTP's up to 5 and FIDO
over BLE's 3 + 1.

*Lanes* let records interleave: each lane carries one record at a time, records on
different lanes interleave segment by segment, and the sender always sends the next
segment of the lowest-numbered (most urgent) lane that has one. A pause command thus
overtakes the rest of a long transfer after at most one segment.

*Credits* are the flow control: each FIRST or CONT segment spends one credit; a sender
starts with :data:`INITIAL_CREDITS` and the receiver grants more (CREDIT segments, or the
G byte of a FIRST segment it sends anyway) as it consumes. The receiver stops granting
while the records it has completed but the application has not yet taken exceed its
limit, so a slow receiver stalls a fast sender instead of buffering without bound.
Credits are granted in batches without waiting for anything: no extra round trips.

Every check is strict: the sequence, the kind, lane use (a FIRST on a busy lane, a CONT
on an idle one), lengths (no empty segments, no overrun of the announced length, no
segment over 512 bytes), record size, reassembly memory, credit use and credit overflow.
Any failure raises :class:`~bridge.wire.errors.ProtocolError` and the receive side stays
failed; the send side goes on, so a CLOSE frame can still say why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError

#: Largest record the length field can carry and every receiver must accept.
MAX_RECORD_SIZE = 16384
#: Credits each side has at the start of a link, before any grant.
INITIAL_CREDITS = 32
#: Credits a sender may hold at most; a grant beyond this is a protocol error.
MAX_CREDITS = 255
#: Number of lanes (priority classes) on the wire.
LANES = 4
#: Largest segment anyone may send (GATT's largest attribute value).
MAX_SEGMENT = 512
#: Smallest payload size (ATT MTU 23 - 3).
MIN_SEGMENT = 20

FIRST_HEADER = 3
CONT_HEADER = 1


class Kind(IntEnum):
    CONT = 0
    FIRST = 1
    CREDIT = 2


class _State(Enum):
    OPEN = "open"
    ERROR = "error"


def header_byte(kind: Kind, lane: int, seq: int) -> int:
    return (kind << 6) | (lane << 4) | (seq & 0x0F)


@dataclass(frozen=True)
class Segment:
    """A parsed segment, for tools that show the wire (the dump tool, the docs' vectors)."""

    kind: Kind
    lane: int
    seq: int
    total_length: int | None  # FIRST only
    credit: int | None  # FIRST with G, or CREDIT
    data: bytes


def parse_segment(packet: bytes) -> Segment:
    """Parse one segment without any state; raises ProtocolError for malformed bytes."""
    if not packet:
        raise ProtocolError(ErrorCode.MALFORMED, "empty segment")
    if len(packet) > MAX_SEGMENT:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"segment of {len(packet)} bytes")
    h = packet[0]
    kind_bits, lane, seq = h >> 6, (h >> 4) & 0x03, h & 0x0F
    if kind_bits == 3:
        raise ProtocolError(ErrorCode.UNSUPPORTED, "segment kind 3 is reserved")
    kind = Kind(kind_bits)
    if kind is Kind.CREDIT:
        if lane != 0:
            raise ProtocolError(ErrorCode.MALFORMED, "CREDIT segment with lane bits set")
        if len(packet) != 2:
            raise ProtocolError(ErrorCode.MALFORMED, "CREDIT segment must be 2 bytes")
        if packet[1] == 0:
            raise ProtocolError(ErrorCode.MALFORMED, "CREDIT segment granting nothing")
        return Segment(kind, lane, seq, None, packet[1], b"")
    if kind is Kind.CONT:
        if len(packet) < 2:
            raise ProtocolError(ErrorCode.MALFORMED, "CONT segment without data")
        return Segment(kind, lane, seq, None, None, packet[1:])
    if len(packet) < FIRST_HEADER:
        raise ProtocolError(ErrorCode.MALFORMED, "FIRST segment shorter than its header")
    total = packet[1] | ((packet[2] & 0x7F) << 8)
    offset = FIRST_HEADER
    credit: int | None = None
    if packet[2] & 0x80:
        if len(packet) < FIRST_HEADER + 1:
            raise ProtocolError(ErrorCode.MALFORMED, "FIRST segment missing its credit byte")
        credit = packet[3]
        if credit == 0:
            raise ProtocolError(ErrorCode.MALFORMED, "FIRST segment granting zero credits")
        offset += 1
    data = packet[offset:]
    if total == 0:
        raise ProtocolError(ErrorCode.MALFORMED, "record of length 0")
    if not data:
        raise ProtocolError(ErrorCode.MALFORMED, "FIRST segment without data")
    if len(data) > total:
        raise ProtocolError(ErrorCode.MALFORMED, "segment longer than its record")
    return Segment(kind, lane, seq, total, credit, data)


@dataclass
class _Reassembly:
    total: int
    parts: list[bytes]
    received: int


@dataclass
class _Outgoing:
    record: bytes
    offset: int


#: Called with a lane number when that lane is idle; returns its next record or None.
RecordSource = Callable[[int], bytes | None]


class Segmenter:
    """Both directions of segmentation for one link.

    Receiving: :meth:`receive_segment` with each packet, then :meth:`next_record` until it
    returns ``None``. Sending: :meth:`next_segment` with a callable that supplies the next
    record for an idle lane; it returns the next packet to send, or ``None`` when there is
    nothing to send or no credit to send it with.
    """

    def __init__(
        self,
        payload_size: int,
        *,
        window: int = INITIAL_CREDITS,
        max_reassembly: int = LANES * MAX_RECORD_SIZE,
        max_pending: int = 4 * MAX_RECORD_SIZE,
    ) -> None:
        if not MIN_SEGMENT <= payload_size <= MAX_SEGMENT:
            raise LocalProtocolError(f"payload size {payload_size} outside 20..512")
        if not INITIAL_CREDITS <= window <= MAX_CREDITS:
            raise LocalProtocolError(f"window {window} outside {INITIAL_CREDITS}..{MAX_CREDITS}")
        self.payload_size = payload_size
        self._state = _State.OPEN
        # receive side
        self._rx_seq = 0
        self._lanes_in: list[_Reassembly | None] = [None] * LANES
        self._reassembly_bytes = 0
        self._max_reassembly = max_reassembly
        self._done: deque[tuple[bytes, int]] = deque()  # completed records, credit they hold
        self._done_bytes = 0
        self._max_pending = max_pending
        self._peer_credits = INITIAL_CREDITS  # what the peer may still send us
        self._window = window
        self._owed = window - INITIAL_CREDITS  # credits to grant the peer
        self._grant_threshold = max(1, window // 4)
        # send side
        self._tx_seq = 0
        self._credits = INITIAL_CREDITS
        self._lanes_out: list[_Outgoing | None] = [None] * LANES
        # counters
        self.segments_sent = 0
        self.segments_received = 0

    # -- state ------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self._state is _State.ERROR

    @property
    def peer_credits(self) -> int:
        """Segments the peer may still send us before we grant more."""
        return self._peer_credits

    @property
    def credits(self) -> int:
        """Segments we may still send before the peer grants more."""
        return self._credits

    def _check_open(self) -> None:
        if self._state is _State.ERROR:
            raise LocalProtocolError("segmenter failed earlier; the link must close")

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._state = _State.ERROR
        return error

    # -- receiving --------------------------------------------------------------------

    def receive_segment(self, packet: bytes) -> None:
        """Take one packet from the link. Raises ProtocolError for anything out of order."""
        self._check_open()
        try:
            self._receive(packet)
        except ProtocolError as e:
            raise self._fail(e) from None

    def _receive(self, packet: bytes) -> None:
        if packet and not packet[0] >> 6 and 2 <= len(packet) <= MAX_SEGMENT:
            self._receive_cont(packet)  # the common case, without a Segment object
            return
        self._receive_parsed(parse_segment(packet))

    def _receive_parsed(self, seg: Segment) -> None:
        if seg.seq != self._rx_seq:
            raise ProtocolError(
                ErrorCode.SEQUENCE, f"segment seq {seg.seq}, expected {self._rx_seq}"
            )
        self._rx_seq = (self._rx_seq + 1) & 0x0F
        self.segments_received += 1
        if seg.credit is not None:
            self._credits += seg.credit
            if self._credits > MAX_CREDITS:
                raise ProtocolError(ErrorCode.FLOW_CONTROL, "credit grant beyond 255")
        if seg.kind is Kind.CREDIT:
            return
        if self._peer_credits == 0:
            raise ProtocolError(ErrorCode.FLOW_CONTROL, "data segment sent without credit")
        self._peer_credits -= 1
        lane = self._lanes_in[seg.lane]
        if seg.kind is Kind.FIRST:
            assert seg.total_length is not None
            if lane is not None:
                raise ProtocolError(ErrorCode.INTERLEAVE, f"new record on busy lane {seg.lane}")
            if seg.total_length > MAX_RECORD_SIZE:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"record of {seg.total_length} bytes")
            if self._reassembly_bytes + seg.total_length > self._max_reassembly:
                raise ProtocolError(ErrorCode.TOO_LARGE, "reassembly memory limit exceeded")
            self._reassembly_bytes += seg.total_length
            lane = _Reassembly(seg.total_length, [], 0)
            self._lanes_in[seg.lane] = lane
        else:
            if lane is None:
                raise ProtocolError(ErrorCode.INTERLEAVE, f"continuation on idle lane {seg.lane}")
            if lane.received + len(seg.data) > lane.total:
                raise ProtocolError(ErrorCode.MALFORMED, "segment overruns its record's length")
        self._add(seg.lane, lane, seg.data)

    def _add(self, lane_number: int, lane: _Reassembly, data: bytes) -> None:
        lane.parts.append(data)
        lane.received += len(data)
        if lane.received == lane.total:
            # The last segment's credit comes back when the application takes the record.
            self._lanes_in[lane_number] = None
            self._reassembly_bytes -= lane.total
            record = b"".join(lane.parts)
            self._done.append((record, 1))
            self._done_bytes += len(record)
        else:
            # Others at once: reassembly memory has its own cap.
            self._owed += 1

    def next_record(self) -> bytes | None:
        """The next complete record, in the order records completed; None if none."""
        self._check_open()
        if not self._done:
            return None
        record, credit = self._done.popleft()
        self._done_bytes -= len(record)
        self._owed += credit
        return record

    def _grant_due(self) -> int:
        if self._done_bytes >= self._max_pending:
            return 0  # a slow application: let the sender stall
        room = MAX_CREDITS - self._peer_credits
        grant = min(self._owed, room, 255)
        if grant >= self._grant_threshold or (grant and self._peer_credits == 0):
            return grant
        return 0

    def _receive_cont(self, packet: bytes) -> None:
        """A CONT segment: the same checks, in the same order, as :meth:`_receive`."""
        h = packet[0]
        seq, lane_number = h & 0x0F, (h >> 4) & 0x03
        if seq != self._rx_seq:
            raise ProtocolError(ErrorCode.SEQUENCE, f"segment seq {seq}, expected {self._rx_seq}")
        self._rx_seq = (seq + 1) & 0x0F
        self.segments_received += 1
        if self._peer_credits == 0:
            raise ProtocolError(ErrorCode.FLOW_CONTROL, "data segment sent without credit")
        self._peer_credits -= 1
        lane = self._lanes_in[lane_number]
        if lane is None:
            raise ProtocolError(ErrorCode.INTERLEAVE, f"continuation on idle lane {lane_number}")
        if lane.received + len(packet) - 1 > lane.total:
            raise ProtocolError(ErrorCode.MALFORMED, "segment overruns its record's length")
        self._add(lane_number, lane, packet[1:])

    # -- sending ----------------------------------------------------------------------

    def has_work(self) -> bool:
        """True if a record is part-sent on some lane or a credit grant is due."""
        return any(self._lanes_out) or self._grant_due() > 0

    def can_send(self) -> bool:
        """True if :meth:`next_segment` would return a packet without new records."""
        return self._grant_due() > 0 or (self._credits > 0 and any(self._lanes_out))

    def next_segment(self, source: RecordSource, ready: int = (1 << LANES) - 1) -> bytes | None:
        """The next packet to send, or None. ``source(lane)`` supplies records to idle lanes;
        ``ready``, a bit per lane, says which idle lanes may have one (the others are not
        asked: a driver that knows they have nothing saves the calls).

        Sending still works after the receive side failed: the CLOSE that says why must go.
        """
        grant = self._grant_due()
        if self._credits > 0:
            for lane in range(LANES):
                out = self._lanes_out[lane]
                if out is None:
                    if not ready >> lane & 1:
                        continue
                    record = source(lane)
                    if record is None:
                        continue
                    if not 0 < len(record) <= MAX_RECORD_SIZE:
                        raise LocalProtocolError(f"record of {len(record)} bytes")
                    out = _Outgoing(record, 0)
                    self._lanes_out[lane] = out
                return self._emit(lane, out, grant)
        if grant:
            return self._emit_credit(grant)
        return None

    def _take_seq(self) -> int:
        seq = self._tx_seq
        self._tx_seq = (seq + 1) & 0x0F
        self.segments_sent += 1
        return seq

    def _emit_credit(self, grant: int) -> bytes:
        self._owed -= grant
        self._peer_credits += grant
        return bytes((header_byte(Kind.CREDIT, 0, self._take_seq()), grant))

    def _emit(self, lane: int, out: _Outgoing, grant: int) -> bytes:
        self._credits -= 1
        if out.offset == 0:
            total = len(out.record)
            header = bytearray((header_byte(Kind.FIRST, lane, self._take_seq()), total & 0xFF))
            if grant:
                header.append((total >> 8) | 0x80)
                header.append(grant)
                self._owed -= grant
                self._peer_credits += grant
            else:
                header.append(total >> 8)
        else:
            header = bytearray((header_byte(Kind.CONT, lane, self._take_seq()),))
        room = self.payload_size - len(header)
        chunk = out.record[out.offset : out.offset + room]
        out.offset += len(chunk)
        if out.offset == len(out.record):
            self._lanes_out[lane] = None
        return bytes(header) + chunk
