"""An emulated iPhone with no bridge app: it finds the car in its Bluetooth settings,
bonds (LE Secure Connections, numeric comparison), and serves ANCS and AMS as an
iPhone does (docs/IPHONE.md). Its services' logic is ``bridge/wire/apple_provider.py``,
its radio (finding, bonding, GATT) ``transports/bumble_apple.py`` :class:`IPhoneRadio`;
this is the phone's life: a day of notifications and music.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.wire import apple as a
from bridge.wire.apple_provider import PostedNotification
from pairing.bonds import BondStore
from transports.bumble_apple import IPhoneRadio

#: The apps of the scripted day and their display names.
APPS = {
    "com.apple.MobileSMS": "Messages",
    "com.apple.mobilephone": "Phone",
    "com.apple.mobilecal": "Calendar",
    "net.whatsapp.WhatsApp": "WhatsApp",
}


class AppFreeIPhone(IPhoneRadio):
    """Create inside trio-asyncio's loop, on a powered Bumble device of the radio."""

    def __init__(self, device: Any, *, att_mtu: int = 185, folder: Path | None = None) -> None:
        """``device``: a Bumble device; ``folder``: where the phone keeps its bond with
        the car across runs, as an iPhone does (None: in memory)."""
        keeper = BondStore(folder) if folder is not None else None
        super().__init__(device, att_mtu=att_mtu, keeper=keeper)
        self.services.apps = dict(APPS)

    # -- a day on the phone -----------------------------------------------------------

    async def message(self, sender: str, text: str, app: str = "com.apple.MobileSMS") -> int:
        return await self.gatt.post(
            PostedNotification(
                app, a.AncsCategory.SOCIAL, title=sender, message=text, negative="Clear"
            )
        )

    async def incoming_call(self, caller: str) -> int:
        return await self.gatt.post(
            PostedNotification(
                "com.apple.mobilephone",
                a.AncsCategory.INCOMING_CALL,
                title=caller,
                message="Incoming Call",
                positive="Answer",
                negative="Decline",
                flags=a.EventFlag.IMPORTANT,
            )
        )

    async def calendar(self, title: str, text: str) -> int:
        return await self.gatt.post(
            PostedNotification(
                "com.apple.mobilecal",
                a.AncsCategory.SCHEDULE,
                title=title,
                message=text,
                negative="Clear",
            )
        )

    async def play(
        self, artist: str, album: str, title: str, duration: float, *, elapsed: float = 0.0
    ) -> None:
        player = self.services.player
        player.name = "Music"
        player.artist, player.album, player.title, player.duration = artist, album, title, duration
        player.state, player.rate, player.elapsed = a.PlaybackStateId.PLAYING, 1.0, elapsed
        player.supported = frozenset(
            {a.RemoteCommand.PLAY, a.RemoteCommand.PAUSE, a.RemoteCommand.TOGGLE_PLAY_PAUSE,
             a.RemoteCommand.NEXT_TRACK, a.RemoteCommand.PREVIOUS_TRACK,
             a.RemoteCommand.VOLUME_UP, a.RemoteCommand.VOLUME_DOWN}
        )  # fmt: skip
        await self.gatt.player_changed()
