"""An iPhone without the app, as the head unit's device (ANCS and AMS; docs/IPHONE.md).

Strategy. :class:`AppleDevice` is a :class:`~bridge.phone_device.PhoneDevice` whose
state is fed by the iPhone's ANCS and AMS (through a link's
:class:`~bridge.wire.apple_client.AppleClient`) instead of the bridge's protocol, so
the head unit's state, the API and the screen treat it as any other device. What ANCS
cannot do (navigation, replies, album art) fails with one sentence; the device says
what it offers (:attr:`AppleDevice.capabilities`). It keeps no message store: the
iPhone holds its notifications and lists them again on every connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from bridge.phone_device import CommandFailed, InboxItem, PhoneDevice
from bridge.session import LinkDown, LinkUp, PeerSession
from bridge.wire import messages as m
from bridge.wire.apple_client import (
    NEGATIVE,
    REMOTE_COMMANDS,
    AppleClient,
    AppleEvent,
    MediaCommands,
    Unsupported,
    Write,
)

log = logging.getLogger(__name__)

#: What an app-free iPhone offers (a phone with the app: PhoneDevice.capabilities).
ANCS_CAPABILITIES = ("notifications", "media")
COMMAND_TIMEOUT = 10.0


class AppleLink(Protocol):
    """One encrypted link to a bonded iPhone (``transports/bumble_apple.py``)."""

    client: AppleClient

    def kick(self) -> None: ...
    async def run(self, on_events: Callable[[list[AppleEvent]], Awaitable[None]]) -> None: ...
    async def outcome(self, request: Write, timeout: float) -> int | None: ...
    async def read_name(self) -> str | None: ...


class AppleDevice(PhoneDevice):
    kind = "ancs"
    capabilities: tuple[str, ...] = ANCS_CAPABILITIES

    def __init__(self, name: str, *, clock_ms: Callable[[], int]) -> None:
        super().__init__(PeerSession(name), store=None, clock_ms=clock_ms)
        self.state.platform = "ios"
        self.state.name = name
        self.link: AppleLink | None = None
        self.media_commands: frozenset[m.MediaCommand] = frozenset()
        self.links = 0
        self.client = AppleClient()  # outlives links: what it announced is not repeated

    @property
    def connected(self) -> bool:
        return self.link is not None

    async def run(self) -> None:
        """No session to drive: the links come through :meth:`attach`."""
        await trio.sleep_forever()

    async def attach(self, link: AppleLink, name: str) -> None:
        """Serve the iPhone on ``link`` until it ends."""
        self.link = link
        self.links += 1
        self.peer = m.Hello([], "ios", name)
        self._emit(LinkUp("iphone", 0, True))
        reason = "the iPhone went away"
        try:
            await link.run(self._on_events)
        except Exception as e:  # the radio's: the link is gone, the head unit goes on
            reason = f"the iPhone's link ended: {e}"
            log.debug("iPhone: %s", e)
        finally:
            self.link = None
            self.peer = None
            self._emit(LinkDown("iphone", reason))

    async def _on_events(self, events: list[AppleEvent]) -> None:
        for event in events:
            if isinstance(event, MediaCommands):
                reverse = {remote: ours for ours, remote in REMOTE_COMMANDS.items()}
                self.media_commands = frozenset(reverse[c] for c in event.commands if c in reverse)
                playing = self.state.now_playing
                if playing is not None:
                    self._emit(playing)  # what the screen offers changed
            else:  # a notification, its removal, what is playing: as from the app
                await self.apply(event, None)

    def media_commands_offered(self) -> list[str] | None:
        return sorted(c.name.lower() for c in self.media_commands)

    def position_ms(self, now_ms: int) -> int | None:
        """Where playback is now, with the iPhone's playback rate."""
        if self.link is None:
            return self.state.position_ms(now_ms)
        return self.link.client.position_ms(now_ms)

    # -- commands -----------------------------------------------------------------------

    def _link(self) -> AppleLink:
        if self.link is None:
            raise CommandFailed("the iPhone is not connected")
        return self.link

    async def _send(self, request: Write) -> None:
        link = self._link()
        link.kick()
        error = await link.outcome(request, COMMAND_TIMEOUT)
        if error is not None:
            raise CommandFailed(f"the iPhone refused it (ATT error 0x{error:02X})")

    async def media(
        self, command: m.MediaCommand, value: int | None = None
    ) -> m.MediaCommandResult:
        try:
            request = self._link().client.media(command)
        except Unsupported as e:
            raise CommandFailed(str(e)) from None
        await self._send(request)
        return m.MediaCommandResult(0, True)

    async def perform_action(self, id: str, action_id: str) -> m.MessagingResult:
        try:
            request = self._link().client.perform_action(id, action_id)
        except Unsupported as e:
            raise CommandFailed(str(e)) from None
        await self._send(request)
        return m.MessagingResult(0, True)

    async def dismiss(self, id: str) -> m.MessagingResult:
        item = self.state.inbox.get(id)
        if item is None or not any(a.id == NEGATIVE for a in item.notification.actions or []):
            raise CommandFailed("this iPhone notification cannot be dismissed from the car")
        return await self.perform_action(id, NEGATIVE)

    async def mark_read(self, id: str) -> m.MessagingResult:
        """ANCS has no "read": the car remembers it, the iPhone does not hear of it."""
        item: InboxItem | None = self.state.inbox.get(id)
        if item is None:
            raise CommandFailed("no such notification")
        item.read = True
        return m.MessagingResult(0, True)

    async def reply(
        self, id: str, text: str | None = None, canned: int | None = None
    ) -> m.MessagingResult:
        raise CommandFailed("replying from the car needs the bridge app on the iPhone")

    async def guidance(self, start: bool, destination: str | None = None) -> m.NavigationResult:
        raise CommandFailed("navigation needs the bridge app on the iPhone")
