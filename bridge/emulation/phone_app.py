"""The phone side of the protocol: what the emulator (and a phone app) publishes and answers.

Strategy. A :class:`PhoneApp` holds the phone's own state (player, route, notifications)
and publishes changes to the head unit; commands from the head unit change that state
and are each answered with a result. The emulator's scenarios (``bridge.emulation.scenarios``)
drive it; tests read what it received (``replies``, ``commands``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.connection import HelloReceived
from bridge.endpoint import Endpoint, PeerEvent
from bridge.session import LinkUp, PeerSession
from bridge.store import MessageStore
from bridge.wire import messages as m
from bridge.wire.codec import Message
from bridge.wire.errors import ErrorCode, ProtocolError
from transports.link import segment_size_for

#: How many of each kind of request from the head unit a phone remembers.
HISTORY = 1000


def _keep(log: list[Any], item: Any, limit: int | None) -> None:
    log.append(item)
    if limit is not None and len(log) > limit:
        del log[: len(log) - limit]


@dataclass(frozen=True)
class AppShortcut:
    """One thing the phone offers on the car's launcher (PROTOCOL.md 6.1): what the
    launcher shows, what a launch does (``run`` returns None, or why it failed), whether
    the phone must be unlocked for it, and its icon."""

    id: str
    label: str
    kind: m.ShortcutKind
    run: Callable[[], Awaitable[str | None]]
    needs_unlock: bool = False
    icon: bytes | None = None


class PhoneApp(Endpoint):
    def __init__(
        self,
        session: PeerSession,
        *,
        store: MessageStore | None = None,
        clock_ms: Callable[[], int],
        guidance_available: bool = True,
    ) -> None:
        super().__init__(session, store=store, uid_prefix="ph")
        self.clock_ms = clock_ms
        self.player: m.NowPlaying | None = None
        self.playlist: list[m.NowPlaying] = []
        self.track = 0
        self.volume = 50
        self.liked: set[str] = set()
        self.route: m.RouteStatus = m.RouteStatus(m.RouteState.INACTIVE)
        self.notifications: dict[str, m.Notification] = {}
        self.read: set[str] = set()
        # What the head unit asked for, in order: the last `history` of each (a phone left
        # running for days keeps no more; None keeps all, for a tool that counts them);
        # tools that report them take them out
        self.history: int | None = HISTORY
        self.replies: list[tuple[str, str]] = []  # (notification id, text)
        self.actions: list[tuple[str, str]] = []
        self.commands: list[Message] = []
        self.guidance_available = guidance_available
        self.next_transfer = 1
        #: Bulk chunks fill whole segments of the link they go on (PROTOCOL.md 6.5).
        self.chunk_size = m.BULK_CHUNK_SIZE
        self.events: list[Any] = []
        # the launcher: what this phone offers the car, whether it is locked (then the
        # shortcuts that need it unlocked answer "locked"), the launches it carried out
        self.shortcuts: dict[str, AppShortcut] = {}
        self.locked = False
        self.launches: list[str] = []  # the shortcuts opened
        self.launch_log: list[tuple[str, m.LaunchOutcome]] = []  # every launch asked for
        self.calls: list[str] = []  # calls placed, by whom they went to
        self._call_ids: set[str] = set()
        self._shortcuts_for: bytes | None = None  # the head unit epoch that has them

    # -- publishing ---------------------------------------------------------------------

    async def set_route(self, route: m.RouteStatus) -> None:
        self.route = route
        await self.send(route)

    async def maneuver(self, maneuver: m.Maneuver, image: bytes | None = None) -> None:
        if image is not None:
            transfer = self._transfer()
            maneuver = dataclasses.replace(maneuver, image=transfer)
            await self.send(maneuver)
            await self.send_object(transfer, image, "image/png")
        else:
            await self.send(maneuver)

    async def play(self, playlist: list[m.NowPlaying], art: bytes | None = None) -> None:
        self.playlist, self.track = playlist, 0
        await self._publish_track(m.PlaybackState.PLAYING, position=0, art=art)

    def position_now(self) -> int:
        player = self.player
        if player is None:
            return 0
        position = player.position_ms
        if player.state is m.PlaybackState.PLAYING:
            position += self.clock_ms() - player.position_at_ms
        if player.duration_ms is not None:
            position = min(position, player.duration_ms)
        return position

    async def _publish_track(
        self, state: m.PlaybackState, position: int, art: bytes | None = None
    ) -> None:
        base = self.playlist[self.track] if self.playlist else self.player
        if base is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "nothing to play")
        same_track = self.player is not None and self.player.title == base.title
        current_art = self.player.art if self.player is not None and same_track else base.art
        transfer = self._transfer() if art is not None else current_art
        self.player = dataclasses.replace(
            base,
            state=state,
            position_ms=position,
            position_at_ms=self.clock_ms(),
            art=transfer,
            shuffle=self.player.shuffle if self.player else base.shuffle,
            repeat=self.player.repeat if self.player else base.repeat,
        )
        await self.send(self.player)
        if art is not None and transfer is not None:
            mime = "image/png" if art.startswith(b"\x89PNG") else "image/jpeg"
            await self.send_object(transfer, art, mime)

    async def offer_shortcuts(self, shortcuts: list[AppShortcut]) -> None:
        """Offer these on the car's launcher: sent now when the head unit speaks protocol
        version 2, else once its HELLO says so (and again to a head unit that restarted)."""
        self.shortcuts = {s.id: s for s in shortcuts}
        self._shortcuts_for = None
        await self._publish_shortcuts()

    async def _publish_shortcuts(self) -> None:
        peer = self.peer
        if peer is None or self.version is None or self.version < m.MIN_SHORTCUTS_VERSION:
            return
        if self._shortcuts_for is not None and self._shortcuts_for == peer.epoch:
            return
        self._shortcuts_for = peer.epoch
        icons = {s.id: self._transfer() for s in self.shortcuts.values() if s.icon is not None}
        await self.send(m.Shortcuts([
            m.Shortcut(s.id, s.label, s.kind, icons.get(s.id)) for s in self.shortcuts.values()
        ]))  # fmt: skip
        for shortcut in self.shortcuts.values():
            if shortcut.icon is not None:
                mime = "image/png" if shortcut.icon.startswith(b"\x89PNG") else "image/jpeg"
                await self.send_object(icons[shortcut.id], shortcut.icon, mime)

    async def place_call(self, to: str) -> None:
        """Call someone: the phone shows the call (with a "Hang up" the car offers too)."""
        self.calls.append(to)
        call_id = f"call-out-{len(self.calls)}"
        self._call_ids.add(call_id)
        await self.notify(m.Notification(
            call_id, "Phone", m.Category.OTHER, "Calling…", self.clock_ms(), to,
            title="Outgoing call", actions=[m.Action("hang-up", "Hang up", m.ActionKind.CUSTOM)],
        ))  # fmt: skip

    async def notify(self, notification: m.Notification) -> None:
        self.notifications[notification.id] = notification
        await self.send(notification)

    async def remove(self, id: str) -> None:
        self.notifications.pop(id, None)
        await self.send(m.NotificationRemoved(id))

    async def send_object(self, transfer: int, data: bytes, mime: str) -> None:
        for chunk in m.chunk_object(transfer, data, self.chunk_size, mime=mime):
            await self.send(chunk)

    def _transfer(self) -> int:
        self.next_transfer += 1
        return self.next_transfer

    # -- commands from the head unit ----------------------------------------------------

    async def on_event(self, event: PeerEvent) -> None:
        _keep(self.events, event, self.history)
        if isinstance(event, LinkUp):
            self.chunk_size = m.bulk_chunk_size(segment_size_for(event.payload_size))
        if isinstance(event, HelloReceived):
            await self._publish_shortcuts()

    async def apply(self, message: Message, seq: int | None) -> None:
        assert seq is not None or not isinstance(message, m.MediaCommandRequest | m.GuidanceRequest)
        match message:
            case m.MediaCommandRequest():
                _keep(self.commands, message, self.history)
                error = await self._media(message)
                await self.send(m.MediaCommandResult(seq or 0, error is None, error))
            case m.GuidanceRequest():
                _keep(self.commands, message, self.history)
                error = await self._guidance(message)
                await self.send(m.NavigationResult(seq or 0, error is None, error))
            case m.Launch():
                _keep(self.commands, message, self.history)
                outcome, error = await self._launch(message.id)
                _keep(self.launch_log, (message.id, outcome), self.history)
                ok = outcome is m.LaunchOutcome.DONE
                await self.send(m.LaunchResult(seq or 0, ok, error, outcome))
            case m.MarkRead() | m.PerformAction() | m.Reply() | m.Dismiss():
                _keep(self.commands, message, self.history)
                error = await self._messaging(message)
                await self.send(m.MessagingResult(seq or 0, error is None, error))
            case _:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED, f"{type(message).__name__} is not for a phone"
                )

    async def _media(self, request: m.MediaCommandRequest) -> str | None:
        player = self.player
        if player is None:
            return "nothing is playing"
        command, value = request.command, request.value
        state, position = player.state, self.position_now()
        match command:
            case m.MediaCommand.PLAY:
                state = m.PlaybackState.PLAYING
            case m.MediaCommand.PAUSE:
                state = m.PlaybackState.PAUSED
            case m.MediaCommand.TOGGLE:
                playing = state is m.PlaybackState.PLAYING
                state = m.PlaybackState.PAUSED if playing else m.PlaybackState.PLAYING
            case m.MediaCommand.NEXT | m.MediaCommand.PREVIOUS:
                step = 1 if command is m.MediaCommand.NEXT else -1
                if not self.playlist:
                    return "no playlist"
                self.track = (self.track + step) % len(self.playlist)
                await self._publish_track(state, 0)
                return None
            case m.MediaCommand.SEEK:
                position = value or 0
            case m.MediaCommand.SKIP_FORWARD | m.MediaCommand.SKIP_BACKWARD:
                position += 15_000 if command is m.MediaCommand.SKIP_FORWARD else -15_000
                position = max(0, position)
            case m.MediaCommand.VOLUME_UP | m.MediaCommand.VOLUME_DOWN:
                self.volume = max(
                    0, min(100, self.volume + (10 if command.name.endswith("UP") else -10))
                )
                return None
            case m.MediaCommand.VOLUME_SET:
                self.volume = value or 0
                return None
            case m.MediaCommand.SHUFFLE:
                self.player = dataclasses.replace(player, shuffle=bool(value))
            case m.MediaCommand.REPEAT:
                self.player = dataclasses.replace(player, repeat=m.RepeatMode(value or 0))
            case m.MediaCommand.LIKE | m.MediaCommand.DISLIKE | m.MediaCommand.BOOKMARK:
                (self.liked.add if command is not m.MediaCommand.DISLIKE else self.liked.discard)(
                    player.title
                )
                return None
        await self._publish_track(state, position)
        return None

    async def _launch(self, id: str) -> tuple[m.LaunchOutcome, str | None]:
        shortcut = self.shortcuts.get(id)
        if shortcut is None:
            return m.LaunchOutcome.UNKNOWN, f"no shortcut {id!r} on this phone"
        if shortcut.needs_unlock and self.locked:
            return m.LaunchOutcome.LOCKED, f"unlock the phone to {shortcut.label.lower()}"
        error = await shortcut.run()
        if error is not None:
            return m.LaunchOutcome.FAILED, error
        _keep(self.launches, id, self.history)
        return m.LaunchOutcome.DONE, None

    async def _guidance(self, request: m.GuidanceRequest) -> str | None:
        if not self.guidance_available:
            return "navigation is not available"
        if request.action is m.GuidanceAction.STOP:
            await self.set_route(m.RouteStatus(m.RouteState.INACTIVE))
        else:
            if not request.destination and self.route.destination is None:
                return "no destination"
            destination = request.destination or self.route.destination
            await self.set_route(m.RouteStatus(m.RouteState.ACTIVE, destination))
        return None

    async def _messaging(
        self, request: m.MarkRead | m.PerformAction | m.Reply | m.Dismiss
    ) -> str | None:
        note = self.notifications.get(request.id)
        if note is None:
            return f"no notification {request.id!r}"
        match request:
            case m.MarkRead():
                self.read.add(request.id)
            case m.PerformAction():
                if not any(a.id == request.action_id for a in note.actions or []):
                    return f"no action {request.action_id!r}"
                _keep(self.actions, (request.id, request.action_id), self.history)
                if request.id in self._call_ids and request.action_id == "hang-up":
                    self._call_ids.discard(request.id)
                    await self.remove(request.id)
            case m.Reply():
                text = request.text
                if request.canned is not None:
                    canned = note.canned_replies or []
                    if not 0 <= request.canned < len(canned):
                        return "no such canned reply"
                    text = canned[request.canned]
                assert text is not None
                _keep(self.replies, (request.id, text), self.history)
            case m.Dismiss():
                self.notifications.pop(request.id, None)
                await self.send(m.NotificationRemoved(request.id))
        return None
