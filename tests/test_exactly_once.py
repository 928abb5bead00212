"""Exactly once and in order: 1,000 messages across 20 link drops and a head-unit restart."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import trio
import trio.testing

from bridge import messages as m
from bridge.endpoint import clock_ms_from_trio
from bridge.headunit import PhoneDevice
from bridge.phone import PhoneApp
from bridge.session import PeerSession
from bridge.store import MessageStore
from tests.app_helpers import hu_hello, phone_hello
from transports.simulated import PROFILES, SimulatedLinkPair

N = 1000


async def test_exactly_once_across_drops_and_a_head_unit_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(42)
    profile = dataclasses.replace(PROFILES["ios"], supervision_timeout=0.5)
    clock = clock_ms_from_trio()
    phone_session = PeerSession("phone", hello=phone_hello())
    phone = PhoneApp(phone_session, store=MessageStore(tmp_path / "phone"), clock_ms=clock)
    delivered: list[str] = []  # what the head unit's application applied, over both lives
    instances: list[PhoneDevice] = []
    drops = 0

    async def collect(device: PhoneDevice) -> None:
        async for event in device.events:
            if event.kind == "notification":
                delivered.append(event.detail.id)

    async def sender() -> None:
        for i in range(N):
            note = m.Notification(f"n{i}", "SMS", m.Category.MESSAGE, f"message {i}", i, "Mum")
            await phone.notify(note)
            await trio.sleep(rng.uniform(0, 0.05))

    async with trio.open_nursery() as outer:
        outer.start_soon(phone.run)
        outer.start_soon(sender)
        for life in range(2):  # the head unit's first life ends in a crash
            hu_session = PeerSession("hu", hello=hu_hello())
            store = MessageStore(tmp_path / "hu")  # the same file as the last life
            device = PhoneDevice(hu_session, store=store, clock_ms=clock)
            instances.append(device)
            async with trio.open_nursery() as hu:
                hu.start_soon(device.run)
                hu.start_soon(collect, device)
                for k in range(11):
                    pair = SimulatedLinkPair(profile, seed=rng.randrange(1 << 30))
                    async with trio.open_nursery() as link:
                        link.start_soon(hu_session.run_link, pair.central)
                        link.start_soon(phone_session.run_link, pair.peripheral)
                        await trio.sleep(rng.uniform(0.2, 1.2))
                        if life == 0 and k == 10:
                            hu.cancel_scope.cancel()  # the head unit crashes mid-link
                        elif k < 10:
                            pair.lose_link()
                            drops += 1
                        else:  # the last link stays up until everything is across
                            while len(delivered) < N or (phone.store and phone.store.outbox()):
                                await trio.sleep(0.5)
                            hu_session.close("done")
                    await trio.sleep(rng.uniform(0, 0.3))
                hu.cancel_scope.cancel()  # the head unit's readers run until cancelled
            store.close()
        outer.cancel_scope.cancel()

    assert drops == 20
    assert delivered == [f"n{i}" for i in range(N)]  # 0 lost, 0 duplicated, in order
    assert instances[1].duplicates > 0  # the restart really made the phone send some again
    assert len(instances[1].state.inbox) == N  # the inbox survived the restart
