"""Protocol v1: the head unit as GATT server, phones connecting to it (PROTOCOL.md 1.2,
2.2), on the Bumble virtual radio, beside phones it finds by scanning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.emulation.scenarios import FLAVOURS
from bridge.session import LinkDown, LinkUp
from bridge.wire import messages as m
from pairing.handshake import Authenticated
from tests.ble_helpers import ble_world, pair_all

ANDROID, IOS = FLAVOURS["android"], FLAVOURS["ios"]


async def test_an_iphone_connects_pairs_and_reconnects_with_kk(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with ble_world(tmp_path, captures, {"iphone": (IOS, "ios", "central")}) as rig:
        await pair_all(rig)
        name, phone = IOS.name, rig.phones["iphone"]
        assert [u.payload_size for u in rig.of(name, LinkUp)] == [182]  # the iPhone's MTU 185
        await phone.app.notify(m.Notification("n1", "Chat", m.Category.MESSAGE, "hi", 0))
        await rig.until(lambda: len(rig.of(name, m.Notification)) == 1)
        rig.world.lose_link("iphone")
        await rig.until(lambda: len(rig.of(name, Authenticated)) == 2, 120)
        assert [a.paired_now for a in rig.of(name, Authenticated)] == [True, False]
        assert len(rig.prompts) == 1
        assert rig.hu.incoming == 2 and rig.hu.connect_attempts == 0
        assert rig.of(name, LinkDown)[0].reason.startswith("link lost")
