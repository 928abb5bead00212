"""The trio driver: runs a peer's connections on links, one link at a time (thin).

Strategy. A :class:`PeerSession` is one peer (a phone, seen from the head unit, or the
head unit, seen from a phone). It owns the peer's :class:`~bridge.mux.ChannelMux`, which
outlives links, so messages accepted by :meth:`PeerSession.send` survive a dropped link
and go out on the next one. :meth:`PeerSession.run_link` drives one link until it ends:
a reader task feeds packets to the :class:`~bridge.connection.Connection`, a writer task
sends what it hands back and services its timers. All protocol decisions are in the
sans-IO cores; this module only moves bytes and waits.

The application must keep calling :meth:`PeerSession.next_event`: acknowledgements and
the peer's CLOSE arrive in order with its messages.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import trio

from bridge.channels import Channel
from bridge.connection import Connection, ConnectionClosed, ConnectionConfig
from bridge.connection import Event as ConnectionEvent
from bridge.errors import LocalProtocolError
from bridge.frame import Body
from bridge.messages import Hello
from bridge.mux import ChannelMux, MessageReceived
from bridge.record import RecordLayer
from pairing.handshake import Authenticated, Handshake
from pairing.keylog import KeyLog
from transports.link import Link, LinkClosed, segment_size_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkUp:
    peer: str
    payload_size: int
    encrypted: bool  # a handshake runs first; application data will be encrypted


@dataclass(frozen=True)
class LinkDown:
    """A link ended; ``reason`` says why in words (link loss, peer close, protocol error)."""

    peer: str
    reason: str


SessionEvent = ConnectionEvent | LinkUp | LinkDown


class _Wakeup:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, deadline: float = math.inf) -> None:
        with trio.move_on_at(deadline):
            await self._event.wait()


class PeerSession:
    def __init__(
        self,
        name: str,
        *,
        mux: ChannelMux | None = None,
        config: ConnectionConfig | None = None,
        keylog: KeyLog | None = None,
        hello: Hello | None = None,
    ) -> None:
        self.name = name
        self.keylog = keylog
        self.hello = hello
        self.mux = mux or ChannelMux()
        self.config = config or ConnectionConfig()
        self._connection: Connection | None = None
        self._leftover: deque[SessionEvent] = deque()
        self._leftover_taken: tuple[Channel, int, int] | None = None
        self._wakeup = _Wakeup()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.open

    # -- application API --------------------------------------------------------------

    def send_nowait(self, channel: Channel, type: int, body: Body) -> int | None:
        """Accept a message for delivery; raises QueueFullError if the channel is full."""
        seq = self.mux.send(channel, type, body)
        self._wakeup.notify()
        return seq

    async def send(self, channel: Channel, type: int, body: Body) -> int | None:
        """Accept a message for delivery, waiting while the channel's queue is full."""
        while not self.mux.has_room(channel):
            await self._wakeup.wait_until()
        return self.send_nowait(channel, type, body)

    async def next_event(self) -> SessionEvent:
        """The next event: messages in order, acknowledgements, link up and down."""
        if self._leftover_taken is not None:  # the application finished with it
            channel, seq, generation = self._leftover_taken
            self._leftover_taken = None
            self.mux.commit(channel, seq, trio.current_time(), generation)
            self._wakeup.notify()
        while True:
            if self._leftover:
                event = self._leftover.popleft()
                if isinstance(event, MessageReceived) and event.seq is not None:
                    self._leftover_taken = (event.channel, event.seq, self.mux.generation)
                return event
            conn = self._connection
            if conn is not None:
                live = conn.next_event()
                if live is not None:
                    self._wakeup.notify()  # taking a record may free credit to grant
                    if isinstance(live, Authenticated) and self.keylog and conn.handshake:
                        self.keylog.write(conn.handshake.role, live)
                    return live
            await self._wakeup.wait_until()

    def confirm_pairing(self, accept: bool) -> None:
        """Answer the pairing code shown (a ``CodeToConfirm`` event) for the current link."""
        if self._connection is None:
            raise LocalProtocolError(f"{self.name} has no link to confirm a pairing on")
        self._connection.confirm_pairing(accept)
        self._wakeup.notify()

    def close(self, text: str = "") -> None:
        """Close the current link in order (the CLOSE frame says ``text``)."""
        if self._connection is not None:
            self._connection.close(text)
            self._wakeup.notify()

    # -- driver -----------------------------------------------------------------------

    async def run_link(
        self,
        link: Link,
        *,
        records: RecordLayer | None = None,
        handshake: Handshake | None = None,
    ) -> LinkDown:
        """Drive ``link`` until it ends; returns (and queues as an event) why it ended.

        With a ``handshake``, nothing of the application is sent or accepted until the
        peer is authenticated, and every record after the Noise handshake is encrypted.
        """
        if self._connection is not None:
            raise RuntimeError(f"{self.name} already has a link")
        conn = Connection(
            self.mux,
            segment_size_for(link.payload_size),
            now=trio.current_time(),
            config=self.config,
            records=records,
            handshake=handshake,
            hello=self.hello,
        )
        self._connection = conn
        self._leftover.append(LinkUp(link.peer, link.payload_size, handshake is not None))
        ended: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, link, conn, ended, nursery.cancel_scope)
                nursery.start_soon(self._writer, link, conn, ended, nursery.cancel_scope)
        finally:
            self._connection = None
            # what the application still holds is committed when it asks for more
            self._leftover_taken = conn.uncommitted
            self._leftover.extend(conn.abandon())
            with trio.CancelScope(shield=True):
                await link.aclose()
        reason = ended[0] if ended else "cancelled"
        if conn.closed is not None:
            reason = conn.closed.describe()
        down = LinkDown(link.peer, reason)
        log.info("link to %s ended: %s", link.peer, reason)
        self._leftover.append(down)
        self._wakeup.notify()
        return down

    async def _reader(
        self, link: Link, conn: Connection, ended: list[str], scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                packet = await link.receive()
                conn.receive_packet(packet, trio.current_time())
                self._wakeup.notify()
        except LinkClosed as e:
            ended.append(str(e))
            scope.cancel()

    async def _writer(
        self, link: Link, conn: Connection, ended: list[str], scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                now = trio.current_time()
                timer = conn.get_timer()
                if timer is not None and timer <= now:
                    conn.handle_timer(now)
                    self._wakeup.notify()
                    continue
                if conn.wants_to_send():
                    # Wait for room first, then take the most urgent packet: one that became
                    # urgent while we waited goes ahead of the rest.
                    await link.wait_send_ready()
                    packet = conn.next_packet(trio.current_time())
                    if packet is not None:
                        await link.send(packet)
                        continue
                if conn.done:
                    closed: ConnectionClosed | None = conn.closed
                    ended.append(closed.describe() if closed else "closed")
                    scope.cancel()
                    return
                await self._wakeup.wait_until(timer if timer is not None else math.inf)
        except LinkClosed as e:
            ended.append(str(e))
            scope.cancel()
