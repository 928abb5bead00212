"""The head unit's view of one connected phone: state to render, events, commands.

Strategy. A :class:`PhoneDevice` is the only thing the screen and the CLI use: it keeps
the phone's current state (:class:`DeviceState`: route and next maneuver, now playing,
inbox), emits a typed :data:`DeviceEvent` for every change on an async stream (the
phone's message itself where there is one), and offers the
head unit's commands as methods that return the phone's result. The now-playing position
advances by itself: the phone stamps it with its clock, HELLO tells the offset between
the clocks, and :meth:`DeviceState.position_ms` extrapolates.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from bridge.connection import ConnectionClosed, HelloReceived
from bridge.endpoint import Endpoint, PeerEvent
from bridge.session import LinkDown, LinkUp, PeerSession
from bridge.store import MessageStore, StoreError
from bridge.wire import messages as m
from bridge.wire.codec import Message, decode
from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import Body
from pairing.handshake import Authenticated, CodeToConfirm, PairingFailed

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0
_OUTCOMES = {
    m.LaunchOutcome.LOCKED: "unlock the phone first",
    m.LaunchOutcome.UNKNOWN: "the phone no longer offers this shortcut",
    m.LaunchOutcome.FAILED: "the phone could not open it",
}
EVENT_BUFFER = 256


@dataclass
class InboxItem:
    notification: m.Notification
    read: bool = False


@dataclass
class DeviceState:
    name: str = ""
    platform: str = ""
    model: str | None = None
    route: m.RouteStatus | None = None
    maneuver: m.Maneuver | None = None
    maneuver_image: bytes | None = None
    now_playing: m.NowPlaying | None = None
    art: bytes | None = None
    inbox: dict[str, InboxItem] = field(default_factory=dict)
    #: What the phone offers on the car's launcher (protocol version 2), in its order,
    #: and the icons that arrived, by shortcut id.
    shortcuts: list[m.Shortcut] = field(default_factory=list)
    icons: dict[str, bytes] = field(default_factory=dict)
    clock_offset_ms: int = 0  # our clock minus the phone's

    def position_ms(self, now_ms: int) -> int | None:
        """Where playback is now, advanced from the phone's stamped position."""
        playing = self.now_playing
        if playing is None:
            return None
        position = playing.position_ms
        if playing.state is m.PlaybackState.PLAYING:
            stamped_at = playing.position_at_ms + self.clock_offset_ms
            position += max(0, now_ms - stamped_at)
        if playing.duration_ms is not None:
            position = min(position, playing.duration_ms)
        return position


@dataclass(frozen=True)
class ArtReceived:
    """The album art of what is playing arrived whole."""

    data: bytes


@dataclass(frozen=True)
class ManeuverImageReceived:
    """The next maneuver's image arrived whole."""

    data: bytes


@dataclass(frozen=True)
class ShortcutIconReceived:
    """A shortcut's icon arrived whole."""

    id: str
    data: bytes


#: What happened to the phone's link: up, down, closed, its pairing prompt and outcome.
LinkEvent = LinkUp | LinkDown | ConnectionClosed | CodeToConfirm | Authenticated | PairingFailed
_LINK_EVENTS = (LinkUp, LinkDown, ConnectionClosed, CodeToConfirm, Authenticated, PairingFailed)

#: Something changed, as a typed value: the phone's message itself (its hello, the route,
#: the next maneuver, now playing, a notification or its removal, an ERROR it sent), a
#: bulk object completed, or a link event.
DeviceEvent = (
    m.Hello | m.RouteStatus | m.Maneuver | m.NowPlaying | m.Notification
    | m.NotificationRemoved | m.ErrorReport | m.Shortcuts | ArtReceived | ManeuverImageReceived
    | ShortcutIconReceived | LinkEvent
)  # fmt: skip


def event_name(event: object) -> str:
    """A device event's name for logs: ``notification``, ``route_status``, ``link_up``."""
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class CommandFailed(Exception):
    """A command was refused by the phone, or not answered in time."""


class LaunchFailed(CommandFailed):
    """The phone did not open a shortcut; ``outcome`` says why (locked, unknown...)."""

    def __init__(self, text: str, outcome: m.LaunchOutcome) -> None:
        super().__init__(text)
        self.outcome = outcome


#: Bulk transfers of one phone in progress at once, and their bytes together.
MAX_TRANSFERS = 4
MAX_TRANSFER_BYTES = 2 << 20
#: Notifications the head unit keeps per phone (the oldest are dropped beyond it).
MAX_INBOX = 500


class _Transfers:
    """Bulk objects being received. A buffer grows with the data that arrived, never
    from the total a chunk announces; chunks must come in order; at most
    :data:`MAX_TRANSFERS` at once holding :data:`MAX_TRANSFER_BYTES` together (a new
    transfer beyond that replaces the oldest, which is dropped)."""

    def __init__(self) -> None:
        self._parts: dict[int, tuple[int, bytearray]] = {}  # transfer -> (total, data)
        self.dropped = 0

    def held(self) -> int:
        return sum(len(data) for _, data in self._parts.values())

    def add(self, chunk: m.BulkChunk) -> bytes | None:
        part = self._parts.get(chunk.transfer)
        if part is None:
            if chunk.offset != 0:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a transfer must start at 0")
            while self._parts and len(self._parts) >= MAX_TRANSFERS:
                self._drop_oldest()
            part = self._parts[chunk.transfer] = (chunk.total, bytearray())
        total, data = part
        if total != chunk.total:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "chunk total changed mid-transfer")
        if chunk.offset != len(data):
            del self._parts[chunk.transfer]
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "bulk chunks out of order")
        # (one object alone fits: a chunk announces at most 1 MiB)
        while len(self._parts) > 1 and self.held() + len(chunk.data) > MAX_TRANSFER_BYTES:
            self._drop_oldest(keep=chunk.transfer)
        data += chunk.data
        if len(data) == total:
            del self._parts[chunk.transfer]
            return bytes(data)
        return None

    def _drop_oldest(self, keep: int | None = None) -> None:
        oldest = next(t for t in self._parts if t != keep)
        del self._parts[oldest]
        self.dropped += 1
        log.info("a bulk transfer was dropped: too many at once")


class PhoneDevice(Endpoint):
    """One phone, as the head unit sees it."""

    def __init__(
        self,
        session: PeerSession,
        *,
        store: MessageStore | None = None,
        clock_ms: Callable[[], int],
    ) -> None:
        super().__init__(session, store=store, uid_prefix="hu")
        self.state = DeviceState()
        self.clock_ms = clock_ms
        self._events_in, self.events = trio.open_memory_channel[DeviceEvent](EVENT_BUFFER)
        self.events_dropped = 0
        self._waiting: dict[tuple[int, int], trio.Event] = {}
        self._results: dict[tuple[int, int], Any] = {}
        self._transfers = _Transfers()
        self.inbox_dropped = 0
        if store is not None:
            try:
                for body, read in store.inbox()[-MAX_INBOX:]:
                    note = decode(m.Notification, body)
                    self.state.inbox[note.id] = InboxItem(note, read)
            except StoreError as e:
                self.store_failed(e)
            except ProtocolError as e:
                self.store_failed(StoreError(
                    f"the message store {store.path} holds a damaged notification ({e}); "
                    "stop the service and move the file away to start over"
                ))  # fmt: skip

    kind = "app"  # a phone running the bridge's protocol
    capabilities: tuple[str, ...] = ("notifications", "media", "navigation", "replies",
                                     "album-art")  # fmt: skip

    @property
    def connected(self) -> bool:
        return self.session.connected

    def position_ms(self, now_ms: int) -> int | None:
        """Where playback is now (DeviceState.position_ms)."""
        return self.state.position_ms(now_ms)

    def media_commands_offered(self) -> list[str] | None:
        """The media commands the device offers now, by name; None: any (the phone's
        app answers each command)."""
        return None

    def _emit(self, event: DeviceEvent) -> None:
        try:
            self._events_in.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1  # a stalled screen must not stall the phone

    # -- incoming -----------------------------------------------------------------------

    async def on_event(self, event: PeerEvent) -> None:
        if isinstance(event, HelloReceived):
            hello = event.hello
            self.state.name, self.state.platform, self.state.model = (
                hello.name,
                hello.platform,
                hello.model,
            )
            self.state.clock_offset_ms = self.clock_ms() - hello.clock_ms
            self._emit(hello)
        elif isinstance(event, (m.ErrorReport, *_LINK_EVENTS)):
            self._emit(event)

    def persist(self, message: Message, body: Body, db: sqlite3.Connection) -> None:
        assert self.store is not None
        if isinstance(message, m.Notification):  # as it arrived: no second encoding
            self.store.inbox_put(db, message.id, body)
        elif isinstance(message, m.NotificationRemoved):
            self.store.inbox_remove(db, message.id)

    async def apply(self, message: Message, seq: int | None) -> None:
        state = self.state
        match message:
            case m.RouteStatus():
                state.route = message
                if message.state in (m.RouteState.INACTIVE, m.RouteState.ARRIVED):
                    state.maneuver = None
                self._emit(message)
            case m.Maneuver():
                before = state.maneuver
                if message.image is None or before is None or before.image != message.image:
                    state.maneuver_image = None  # this maneuver's picture, not the last one's
                state.maneuver = message
                self._emit(message)
            case m.NowPlaying():
                state.now_playing = message
                self._emit(message)
            case m.Notification():
                state.inbox.pop(message.id, None)  # an update counts as the newest
                state.inbox[message.id] = InboxItem(message)
                self._trim_inbox()
                self._emit(message)
            case m.NotificationRemoved():
                state.inbox.pop(message.id, None)
                self._emit(message)
            case m.Shortcuts():
                state.shortcuts = list(message.shortcuts)
                ids = {s.id for s in message.shortcuts}
                state.icons = {i: icon for i, icon in state.icons.items() if i in ids}
                self._emit(message)
            case m.BulkChunk():
                if message.offset == 0 and message.total > m.MAX_ICON:
                    icon = self._icon_for(message.transfer)
                    if icon is not None:
                        raise ProtocolError(
                            ErrorCode.INVALID_MESSAGE,
                            f"the icon of shortcut {icon.id!r} is over {m.MAX_ICON} bytes",
                        )
                data = self._transfers.add(message)
                if data is not None:
                    self._bulk_done(message.transfer, data)
            case (
                m.NavigationResult() | m.MediaCommandResult() | m.MessagingResult()
                | m.LaunchResult()
            ):  # fmt: skip
                key = (int(message.channel), message.command_seq)
                waiter = self._waiting.pop(key, None)
                if waiter is None:
                    # no command of ours waits for it: an answer to an earlier process of
                    # this head unit (its seqs start again at 0), resent by the phone
                    log.debug("dropped a result for frame %d nobody waits for", key[1])
                    return
                self._results[key] = message
                waiter.set()
            case _:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED, f"{type(message).__name__} is not for the head unit"
                )

    @property
    def bulk_bytes_held(self) -> int:
        """Bytes of bulk objects being received (bounded by MAX_TRANSFER_BYTES)."""
        return self._transfers.held()

    @property
    def transfers_dropped(self) -> int:
        return self._transfers.dropped

    def _trim_inbox(self) -> None:
        inbox = self.state.inbox
        while len(inbox) > MAX_INBOX:
            oldest = next(iter(inbox))
            del inbox[oldest]
            self.inbox_dropped += 1
            if self.store is not None:
                try:
                    self.store.inbox_drop(oldest)
                except StoreError as e:
                    self.store_failed(e)
            log.info("inbox full (%d): the oldest notification was dropped", MAX_INBOX)

    def _icon_for(self, transfer: int) -> m.Shortcut | None:
        return next((s for s in self.state.shortcuts if s.icon == transfer), None)

    def _bulk_done(self, transfer: int, data: bytes) -> None:
        playing, maneuver = self.state.now_playing, self.state.maneuver
        if playing is not None and playing.art == transfer:
            self.state.art = data
            self._emit(ArtReceived(data))
        elif maneuver is not None and maneuver.image == transfer:
            self.state.maneuver_image = data
            self._emit(ManeuverImageReceived(data))
        elif (shortcut := self._icon_for(transfer)) is not None:
            self.state.icons[shortcut.id] = data
            self._emit(ShortcutIconReceived(shortcut.id, data))

    # -- commands -----------------------------------------------------------------------

    async def _command(self, message: Message, timeout: float = COMMAND_TIMEOUT) -> Any:
        try:
            seq = await self.send(message)
        except StoreError as e:
            raise CommandFailed(f"messaging is off for this device: {e}") from None
        assert seq is not None
        key = (int(message.channel), seq)
        done = trio.Event()
        self._waiting[key] = done
        with trio.move_on_after(timeout if math.isfinite(timeout) else math.inf):
            await done.wait()
        self._waiting.pop(key, None)
        result = self._results.pop(key, None)
        if result is None:
            raise CommandFailed(f"the phone did not answer within {timeout:g} s")
        if isinstance(result, m.LaunchResult) and not result.ok:
            raise LaunchFailed(result.error or _OUTCOMES[result.outcome], result.outcome)
        if not result.ok:
            raise CommandFailed(result.error or "the phone refused the command")
        return result

    async def launch(self, id: str) -> m.LaunchResult:
        """Open one of the phone's shortcuts; LaunchFailed says why not (its outcome)."""
        shortcut = next((s for s in self.state.shortcuts if s.id == id), None)
        if shortcut is None:
            raise LaunchFailed(f"no shortcut {id!r} on this device", m.LaunchOutcome.UNKNOWN)
        if self.version is None or self.version < m.MIN_SHORTCUTS_VERSION:
            raise CommandFailed("the phone is not connected with protocol version 2")
        result: m.LaunchResult = await self._command(m.Launch(id))
        return result

    async def media(
        self, command: m.MediaCommand, value: int | None = None
    ) -> m.MediaCommandResult:
        result: m.MediaCommandResult = await self._command(m.MediaCommandRequest(command, value))
        return result

    async def guidance(self, start: bool, destination: str | None = None) -> m.NavigationResult:
        action = m.GuidanceAction.START if start else m.GuidanceAction.STOP
        result: m.NavigationResult = await self._command(m.GuidanceRequest(action, destination))
        return result

    async def mark_read(self, id: str) -> m.MessagingResult:
        result: m.MessagingResult = await self._command(m.MarkRead(id))
        item = self.state.inbox.get(id)
        if item is not None:
            item.read = True
            if self.store is not None:
                try:
                    self.store.inbox_mark_read(id)
                except StoreError as e:
                    self.store_failed(e)
        return result

    async def reply(
        self, id: str, text: str | None = None, canned: int | None = None
    ) -> m.MessagingResult:
        result: m.MessagingResult = await self._command(m.Reply(id, text, canned))
        return result

    async def perform_action(self, id: str, action_id: str) -> m.MessagingResult:
        result: m.MessagingResult = await self._command(m.PerformAction(id, action_id))
        return result

    async def dismiss(self, id: str) -> m.MessagingResult:
        result: m.MessagingResult = await self._command(m.Dismiss(id))
        return result
