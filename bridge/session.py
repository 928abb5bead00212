"""The trio driver: runs a peer's connections on links, one authenticated link at a time
(thin).

Strategy. A :class:`PeerSession` is one peer (a phone, seen from the head unit, or the
head unit, seen from a phone). It owns the peer's :class:`~bridge.wire.mux.ChannelMux`, which
outlives links, so messages accepted by :meth:`PeerSession.send` survive a dropped link
and go out on the next one. :meth:`PeerSession.run_link` drives one link until it ends:
a reader task feeds packets to the :class:`~bridge.connection.Connection`, a writer task
sends what it hands back and services its timers. All protocol decisions are in the
sans-IO cores; this module only moves bytes and waits.

The application must keep calling :meth:`PeerSession.next_event`: acknowledgements and
the peer's CLOSE arrive in order with its messages.

Several links may run their handshakes at once (the same phone sighted at two addresses,
or someone replaying its advertisement): until a link's peer is authenticated it is
*pending*, never touches the mux and shows the application only its pairing prompt.
The first link to authenticate becomes the session's link (its ``LinkUp`` is reported
then); one that authenticates while another is up is closed.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import trio

from bridge.connection import Connection, ConnectionClosed, ConnectionConfig
from bridge.connection import Event as ConnectionEvent
from bridge.wire.channels import Channel
from bridge.wire.errors import LocalProtocolError
from bridge.wire.frame import Body
from bridge.wire.messages import Hello
from bridge.wire.mux import ChannelMux, MessageReceived
from bridge.wire.record import RecordLayer
from pairing.handshake import Authenticated, CodeToConfirm, Handshake
from pairing.keylog import KeyLog
from transports.link import Link, LinkClosed, Wakeup, segment_size_for

log = logging.getLogger(__name__)

#: How long a link we close may take to send what its stack still holds (our CLOSE).
DRAIN_LIMIT = 1.0


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
    authenticated: bool = True  # False: it ended in its handshake (never reported as an event)


SessionEvent = ConnectionEvent | LinkUp | LinkDown


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
        self._pending: list[Connection] = []  # links whose handshake is still running
        self._confirming: Connection | None = None  # the link that showed a pairing code
        self._leftover: deque[SessionEvent] = deque()
        self._wakeup = Wakeup()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.open

    @property
    def connection(self) -> Connection | None:
        """The link's connection that serves the peer now (authenticated), if any: for
        tools that look below the session (its records, its segmenter)."""
        return self._connection

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
        if self.mux.commit_handed_out(trio.current_time()):  # the application finished with it
            self._wakeup.notify()
        while True:
            if self._leftover:
                event = self._leftover.popleft()
                if isinstance(event, MessageReceived) and event.seq is not None:
                    self.mux.hand_out(event.channel, event.seq)
                return event
            conn = self._connection
            if conn is not None:
                live = conn.next_event()
                if live is not None:
                    self._wakeup.notify()  # taking a record may free credit to grant
                    if isinstance(live, Authenticated) and self.keylog and conn.handshake:
                        self.keylog.write(conn.handshake.role, live)
                    return live
            pending = self._pending_event()
            if pending is not None:
                return pending
            await self._wakeup.wait_until()

    def _pending_event(self) -> SessionEvent | None:
        """An event of a link still in its handshake: a pairing prompt, a failure, its
        close. (An ``Authenticated`` left there is one whose link was refused.)"""
        for conn in self._pending:
            while (event := conn.next_event()) is not None:
                if isinstance(event, CodeToConfirm):
                    self._confirming = conn
                if not isinstance(event, Authenticated):
                    return event
        return None

    def _admit(self, conn: Connection, link: Link) -> str | None:
        current = self._connection
        if current is not None and current.open:
            return f"{self.name} is already connected"
        if conn in self._pending:
            self._pending.remove(conn)
        self._connection = conn
        self._leftover.append(LinkUp(link.peer, link.payload_size, True))
        return None

    def confirm_pairing(self, accept: bool) -> None:
        """Answer the pairing code shown (a ``CodeToConfirm`` event)."""
        conn = self._confirming
        if conn is None or conn.done:
            raise LocalProtocolError(f"{self.name} has no link to confirm a pairing on")
        conn.confirm_pairing(accept)
        self._wakeup.notify()

    def close(self, text: str = "") -> None:
        """Close the link, and any still in its handshake, in order (the CLOSE frame
        says ``text``)."""
        for conn in [*self._pending, *([self._connection] if self._connection else [])]:
            conn.close(text)
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
        if handshake is None and self._connection is not None:
            raise RuntimeError(f"{self.name} already has a link")
        conn = Connection(
            self.mux,
            segment_size_for(link.payload_size),
            now=trio.current_time(),
            config=self.config,
            records=records,
            handshake=handshake,
            hello=self.hello,
            admit=lambda conn: self._admit(conn, link),
        )
        if handshake is None:
            self._connection = conn
            self._leftover.append(LinkUp(link.peer, link.payload_size, False))
        else:  # a handshake authenticates only on a message from the peer, never at once
            self._pending.append(conn)
        ended: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, link, conn, ended, nursery.cancel_scope)
                nursery.start_soon(self._writer, link, conn, ended, nursery.cancel_scope)
        finally:
            admitted = self._connection is conn
            if admitted:
                self._connection = None
                # what the application still holds (the mux's handed-out message) is
                # committed when it asks for more
                self._leftover.extend(conn.abandon())
            else:
                if conn in self._pending:
                    self._pending.remove(conn)
                self._leftover.extend(  # how its handshake ended
                    e for e in conn.abandon() if not isinstance(e, Authenticated)
                )
            if self._confirming is conn:
                self._confirming = None
            with trio.CancelScope(shield=True):
                if conn.closed is not None and not conn.closed.by_peer:
                    # our CLOSE may still be in the stack's queue: a disconnection now
                    # would drop it, and the peer would never learn why
                    with trio.move_on_after(DRAIN_LIMIT):
                        await link.drain()
                await link.aclose()
        reason = ended[0] if ended else "cancelled"
        if conn.closed is not None:
            reason = conn.closed.describe()
        down = LinkDown(link.peer, reason, authenticated=admitted)
        log.info("link to %s ended: %s", link.peer, reason)
        if admitted:
            self._leftover.append(down)
        self._wakeup.notify()
        return down

    async def _reader(
        self, link: Link, conn: Connection, ended: list[str], scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                packet: bytes | None = await link.receive()
                now = trio.current_time()
                while packet is not None:  # all that has arrived, then one wakeup
                    conn.receive_packet(packet, now)
                    packet = link.receive_nowait() if _batches(link, "receive") else None
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
                    now = trio.current_time()
                    packet = conn.next_packet(now)
                    if packet is not None:
                        await link.send(packet)
                        # then what else is ready while the link takes it at once, each
                        # packet chosen as it enters the link (the most urgent first)
                        while _batches(link, "send") and link.send_room() and conn.wants_to_send():
                            packet = conn.next_packet(now)
                            if packet is None:
                                break
                            link.send_nowait(packet)
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


def _batches(link: Link, method: str) -> bool:
    """Whether to take or give several packets per wakeup (``receive_nowait``,
    ``send_nowait``): not when ``send`` or ``receive`` was replaced on this link object
    (a tool or test that watches or rewrites each packet), which must see them all."""
    return method not in vars(link)
