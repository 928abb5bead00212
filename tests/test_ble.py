"""The bleak transport end to end on the Bumble virtual radio (virtual time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from bridge import messages as m
from bridge.scenarios import FLAVOURS, drive, messages, playlist
from bridge.session import LinkDown, LinkUp
from pairing.handshake import Authenticated
from tests.ble_helpers import TABLET, ble_world, pair_all

ANDROID, IOS = FLAVOURS["android"], FLAVOURS["ios"]


@pytest.mark.parametrize(
    ("profile", "packet"), [("android", 512), ("ios", 182), ("legacy", 20)]
)
async def test_pair_and_every_channel_through_bleak(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path, profile: str, packet: int
) -> None:
    flavour = IOS if profile == "ios" else ANDROID
    async with ble_world(tmp_path, captures, {"phone": (flavour, profile)}) as rig:
        await pair_all(rig)
        name = flavour.name
        ups = rig.link_events(name, LinkUp)
        assert [u.payload_size for u in ups] == [packet]  # the real MTU, capped at 512
        assert [a.paired_now for a in rig.link_events(name, Authenticated)] == [True]
        assert len(rig.prompts) == 1
        phone = rig.phones["phone"]
        record = rig.phone_record(name)
        assert record.platform == flavour.platform  # confirmed by the hello
        # navigation, audio control and messaging, both ways
        async with trio.open_nursery() as play:
            play.start_soon(drive, phone.app, flavour)
            play.start_soon(messages, phone.app, flavour)
            play.start_soon(playlist, phone.app, flavour)
            await rig.until(lambda: len(rig.kinds(name, "notification")) >= 1)
            await rig.until(lambda: rig.kinds(name, "art") != [])
            await record.device.media(m.MediaCommand.PAUSE)
            note = rig.kinds(name, "notification")[0]
            await record.device.reply(note.id, text="On my way")
            play.cancel_scope.cancel()
        assert any(isinstance(c, m.MediaCommandRequest) for c in phone.app.commands)
        assert phone.app.player is not None and not phone.app.player.playing
        assert (note.id, "On my way") in phone.app.replies
        assert rig.kinds(name, "maneuver")
    assert any(p.suffix == ".btsnoop" and p.stat().st_size > 0 for p in captures.iterdir())
