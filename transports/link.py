"""The ``Link``: the one interface every transport implements and the session sees.

A link carries packets, each exactly one ATT value (a GATT write without response in
one direction, a notification in the other), reliably and in order while it is up; it
says how large a packet may be, and it ends once, with a reason. Nothing above this
module knows whether bleak, Bumble or a simulation is underneath.
"""

from __future__ import annotations

import abc
import math
from enum import Enum

import trio

#: GATT attribute values are at most 512 bytes (Core spec Vol 3 Part F 3.2.9); real stacks
#: drop or reject longer writes and notifications even when the ATT MTU would allow them.
MAX_ATT_VALUE = 512
#: The smallest ATT MTU every LE device supports.
MIN_ATT_MTU = 23
#: The largest ATT MTU (512-byte value + 5 bytes of a prepared write header).
MAX_ATT_MTU = 517


#: The largest LE data PDU payload (data length extension), and what each packet adds to
#: its ATT value before it is cut into PDUs: ATT opcode and handle (3), L2CAP header (4).
LL_PAYLOAD = 251
PACKET_OVERHEAD = 7


def segment_size_for(payload_size: int) -> int:
    """The size of the segments a sender makes on a link whose packets hold
    ``payload_size`` bytes: all of it if the packet fits one LE data PDU, else the largest
    size whose packets fill whole PDUs. At ATT MTU 517 a 512-byte value is PDUs of 251,
    251 and 17 bytes, and the third costs nearly a whole PDU's airtime; 495 bytes fill two
    (7 % more bytes per second on the android profile, 45 % on iOS's 5 PDUs per event)."""
    if payload_size + PACKET_OVERHEAD <= LL_PAYLOAD:
        return payload_size
    return (payload_size + PACKET_OVERHEAD) // LL_PAYLOAD * LL_PAYLOAD - PACKET_OVERHEAD


def payload_size_for_mtu(att_mtu: int) -> int:
    """Usable bytes in one packet for an ATT MTU: MTU - 3 (opcode + handle), capped at 512."""
    if not MIN_ATT_MTU <= att_mtu <= MAX_ATT_MTU:
        raise ValueError(f"ATT MTU {att_mtu} is outside {MIN_ATT_MTU}..{MAX_ATT_MTU}")
    return min(att_mtu - 3, MAX_ATT_VALUE)


class CloseReason(Enum):
    """Why a link ended."""

    LOCAL = "local close"
    PEER = "peer closed"
    LINK_LOSS = "link lost"


class LinkClosed(Exception):
    """Raised by :meth:`Link.send` and :meth:`Link.receive` once the link has ended."""

    def __init__(self, reason: CloseReason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class ConnectFailed(Exception):
    """A connection attempt failed; ``transient`` if retrying later is reasonable."""

    def __init__(self, text: str, *, transient: bool = True) -> None:
        super().__init__(text)
        self.transient = transient


class Link(abc.ABC):
    """One connection to one peer. Implementations must be safe for one sender task and
    one receiver task running at once."""

    @property
    @abc.abstractmethod
    def att_mtu(self) -> int:
        """The negotiated ATT MTU."""

    @property
    def payload_size(self) -> int:
        """Largest packet :meth:`send` accepts: ATT MTU - 3, capped at 512."""
        return payload_size_for_mtu(self.att_mtu)

    @property
    @abc.abstractmethod
    def peer(self) -> str:
        """A short label for the peer (an address or emulator name), for logs."""

    @property
    @abc.abstractmethod
    def closed(self) -> LinkClosed | None:
        """How the link ended, or ``None`` while it is up."""

    @abc.abstractmethod
    async def send(self, packet: bytes) -> None:
        """Queue one packet; waits while the stack's transmit buffer is full.

        Raises :class:`LinkClosed` once the link has ended, and ``ValueError`` for a
        packet that is empty or larger than :attr:`payload_size`.
        """

    async def wait_send_ready(self) -> None:
        """Wait until :meth:`send` would take a packet without waiting (the stack has room).

        A driver calls this *before* choosing the next packet, so that a packet becoming
        urgent meanwhile is the one sent. Raises :class:`LinkClosed` once the link ended.
        The default suits transports without a visible transmit buffer.
        """
        if self.closed is not None:
            raise self.closed
        await trio.lowlevel.checkpoint()

    def send_room(self) -> bool:
        """True if :meth:`send_nowait` would take a packet now. A driver sends what is
        ready in one go while this holds (choosing each packet as it enters the link),
        instead of waking up once per packet. False (the default) where the stack's send
        is itself asynchronous (bleak, Bumble): then :meth:`send` it is."""
        return False

    def send_nowait(self, packet: bytes) -> None:
        """Queue one packet without waiting; only right after :meth:`send_room` said True."""
        raise RuntimeError(f"{type(self).__name__} has no send_nowait")

    def receive_nowait(self) -> bytes | None:
        """A packet that has already arrived, or None (then :meth:`receive`, which also
        reports the end). A driver takes what has arrived before it acts on any."""
        return None

    async def drain(self) -> None:
        """Wait until every packet :meth:`send` took has left this side's stack (before a
        close, so that the last packet, the CLOSE saying why, is not dropped with the
        connection); callers bound the wait. The default suits transports that deliver
        what they took even when closed right after (the simulated link)."""
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    async def receive(self) -> bytes:
        """The next packet from the peer; raises :class:`LinkClosed` once the link ends
        (after every packet that arrived before the end was returned)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close locally. Idempotent; pending receives raise ``LinkClosed(LOCAL)``."""


class CallbackLink(Link):
    """A link whose packets a BLE stack delivers by callback (on trio's thread, as with
    trio-asyncio): the shared part of the bleak and Bumble links. Subclasses call
    :meth:`deliver` for each packet and :meth:`end` when the stack reports the
    disconnection, and implement :meth:`_disconnect`."""

    def __init__(self, queue: float = math.inf) -> None:
        self._in, self._out = trio.open_memory_channel[bytes](queue)
        self._closed: LinkClosed | None = None
        self._closing = False
        self.dropped = 0  # packets dropped because the queue was full

    @property
    def closed(self) -> LinkClosed | None:
        return self._closed

    def deliver(self, packet: bytes) -> None:
        if self._closed is None:
            try:
                self._in.send_nowait(packet)
            except trio.WouldBlock:  # the application stopped reading: a stack drops too
                self.dropped += 1

    def end(self, closed: LinkClosed) -> LinkClosed:
        """The link ended (the first reason stands; a close we asked for is LOCAL)."""
        if self._closed is None:
            self._closed = LinkClosed(CloseReason.LOCAL) if self._closing else closed
        self._in.close()
        return self._closed

    async def receive(self) -> bytes:
        try:
            return await self._out.receive()
        except trio.EndOfChannel:
            raise self._closed or LinkClosed(CloseReason.LOCAL) from None

    def receive_nowait(self) -> bytes | None:
        try:
            return self._out.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None

    async def aclose(self) -> None:
        if self._closed is not None:
            return
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            await self._disconnect()
        self.end(LinkClosed(CloseReason.LOCAL))

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Ask the stack to disconnect; errors are the subclass's to swallow."""


class Wakeup:
    """Wakes every task waiting on it when some shared state changed (links and the
    session's tasks use it: a waiter looks again at what it waits for)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, deadline: float = math.inf) -> None:
        """Until the next notify, or ``deadline`` (trio's clock)."""
        if deadline == math.inf:  # no cancel scope to open for a wait without end
            await self._event.wait()
            return
        with trio.move_on_at(deadline):
            await self._event.wait()
