"""The application layer common to both sides: typed messages over a :class:`PeerSession`.

Strategy. An :class:`Endpoint` reads its session's events forever (:meth:`Endpoint.run`)
and turns frames into typed messages. A frame that does not decode as its message type
gets an ERROR report back on the control channel and the link stays up. Text is cut to
the limit the peer announced in its HELLO before sending, never refused on receipt.
Messaging frames go through the :class:`~bridge.store.MessageStore` when there is one:
persisted in the outbox before they are accepted, deleted when acknowledged, sent again
on start-up; on receipt, applied once per ``uid``. Subclasses (the head unit's
:class:`~bridge.phone_device.PhoneDevice`, the emulator's
:class:`~bridge.emulation.phone_app.PhoneApp`) say what a message does in :meth:`Endpoint.apply`.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable

import trio

from bridge.connection import ConnectionClosed, HelloReceived
from bridge.session import PeerSession, SessionEvent
from bridge.store import MessageStore, StoreError
from bridge.wire.channels import Channel
from bridge.wire.codec import DEFAULT_MAX_TEXT, Message, encode
from bridge.wire.errors import ErrorCode, ProtocolError, QueueFullError
from bridge.wire.frame import Body
from bridge.wire.messages import Delivered, ErrorReport, Hello, decode_message
from bridge.wire.mux import Acknowledged, MessageReceived

log = logging.getLogger(__name__)

UID_KEY = 15

#: What :meth:`Endpoint.on_event` is given: the session's events other than messages and
#: acknowledgements (HELLO, link up and down, the handshake's, close), and ERROR reports.
PeerEvent = SessionEvent | ErrorReport


class Endpoint:
    def __init__(
        self,
        session: PeerSession,
        *,
        store: MessageStore | None = None,
        uid_prefix: str = "m",
    ) -> None:
        self.session = session
        self.store = store
        self.uid_prefix = uid_prefix
        self.peer: Hello | None = None
        self.version: int | None = None
        self.errors_received: list[ErrorReport] = []
        self.errors_sent = 0
        self.duplicates = 0
        self._uids: dict[int, str] = {}  # messaging seq -> uid, for the outbox
        self._resent = False
        #: Why messaging is refused for this peer (its store failed), or None. The other
        #: channels, and every other peer, carry on.
        self.store_error: str | None = None

    def store_failed(self, error: StoreError) -> None:
        """The store failed: refuse messaging for this peer from now on, and say so."""
        if self.store_error is None:
            log.error("messaging is off for this device: %s", error)
        self.store_error = str(error)
        self.store = None

    @property
    def max_text(self) -> int:
        return self.peer.max_text if self.peer is not None else DEFAULT_MAX_TEXT

    # -- sending ------------------------------------------------------------------------

    def _prepare(self, message: Message) -> tuple[Message, str | None]:
        if not isinstance(message, Delivered) or self.store is None:
            return message, None
        uid = message.uid or self.store.next_uid(self.uid_prefix)
        return dataclasses.replace(message, uid=uid), uid

    async def send(self, message: Message) -> int | None:
        """Accept a message for delivery (waiting while its channel is full); its seq.
        StoreError if it is a messaging message and messaging is off (see
        :attr:`store_error`)."""
        self.resend_outbox()
        if message.channel is Channel.MESSAGING and self.store_error is not None:
            raise StoreError(self.store_error)
        try:
            message, uid = self._prepare(message)
            body = encode(message, max_text=self.max_text)
            if uid is not None:
                assert self.store is not None
                self.store.outbox_add(uid, int(message.channel), message.type, body)
        except StoreError as e:
            self.store_failed(e)
            raise
        seq = await self.session.send(message.channel, message.type, body)
        if uid is not None and seq is not None:
            self._uids[seq] = uid
        return seq

    def resend_outbox(self) -> None:
        """Once per process: queue what the outbox still holds (before anything new)."""
        if self._resent or self.store is None:
            return
        self._resent = True
        try:
            outbox = self.store.outbox()
        except StoreError as e:
            self.store_failed(e)
            return
        for pending in outbox:
            seq = self.session.send_nowait(Channel(pending.channel), pending.type, pending.body)
            if seq is not None:
                self._uids[seq] = pending.uid

    def _report(self, event: MessageReceived, error: ProtocolError) -> None:
        report = ErrorReport(int(event.channel), event.seq, int(error.code), str(error)[:200])
        log.info("refused a %s message: %s", event.channel.name.lower(), error)
        try:
            self.session.send_nowait(report.channel, report.type, encode(report))
            self.errors_sent += 1
        except QueueFullError:
            log.warning("control channel full: an error report was not sent")

    # -- receiving ----------------------------------------------------------------------

    async def run(self) -> None:
        """Read the session's events forever (run it in a task)."""
        self.resend_outbox()
        while True:
            event = await self.session.next_event()
            await self._dispatch(event)

    async def _dispatch(self, event: SessionEvent) -> None:
        if isinstance(event, HelloReceived):
            self.peer, self.version = event.hello, event.version
            await self.on_event(event)
        elif isinstance(event, Acknowledged):
            if event.channel is Channel.MESSAGING and self.store is not None:
                uid = self._uids.pop(event.seq, None)
                if uid is not None:
                    try:
                        self.store.outbox_done(uid)
                    except StoreError as e:
                        self.store_failed(e)
        elif isinstance(event, MessageReceived):
            await self._receive(event)
        else:
            if isinstance(event, ConnectionClosed):
                log.info("connection closed: %s", event.describe())
            await self.on_event(event)

    async def _receive(self, event: MessageReceived) -> None:
        try:
            message = decode_message(event.channel, event.type, event.body)
        except ProtocolError as e:
            self._report(event, e)
            return
        if isinstance(message, ErrorReport):
            self.errors_received.append(message)
            await self.on_event(message)
            return
        if event.channel is Channel.MESSAGING and self.store_error is not None:
            refused = ProtocolError(ErrorCode.UNSUPPORTED, "the head unit cannot store messages")
            self._report(event, refused)
            return
        uid = message.uid if isinstance(message, Delivered) else ""
        if uid and self.store is not None:
            try:
                if self.store.seen(uid):
                    self.duplicates += 1
                    return
                with self.store.transaction() as db:
                    self.store.mark_seen(db, uid)
                    self.persist(message, event.body, db)
            except StoreError as e:
                self.store_failed(e)
                self._report(event, ProtocolError(ErrorCode.UNSUPPORTED, "cannot store messages"))
                return
        try:
            await self.apply(message, event.seq)
        except ProtocolError as e:
            self._report(event, e)

    # -- for subclasses -----------------------------------------------------------------

    def persist(self, message: Message, body: Body, db: sqlite3.Connection) -> None:
        """Store what a messaging message changes, in the same transaction as its uid
        (``body``: the message as it arrived, to be stored as it is)."""

    async def apply(self, message: Message, seq: int | None) -> None:
        """Act on a valid message from the peer (raise ProtocolError to refuse it)."""

    async def on_event(self, event: PeerEvent) -> None:
        """HELLO, link, pairing and close events, and ERROR reports from the peer."""


def clock_ms_from_trio() -> Callable[[], int]:
    """A millisecond clock on trio's (virtual in tests) time."""
    return lambda: int(trio.current_time() * 1000)
