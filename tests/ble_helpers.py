"""A head unit and emulated phones on the Bumble virtual radio, through the bleak
transport (bleak's own classes over the Bumble backend: no mock of bleak)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from bridge.emulation.emulator import EmulatedPhone
from bridge.emulation.scenarios import FLAVOURS, Flavour
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from bridge.radio_policy import HeadUnit, HeadUnitEvent, Phone, Policy
from pairing.handshake import CodeToConfirm
from transports.simulated import PROFILES, LinkProfile

T = TypeVar("T")
#: A phone of a rig: flavour, link profile and, optionally, role ("peripheral", "central").
Cast = tuple[Flavour, LinkProfile | str] | tuple[Flavour, LinkProfile | str, str]

TABLET = dataclasses.replace(
    FLAVOURS["android"], name="Galaxy Tab", model="SM-X910", music_app="YouTube Music"
)


@dataclass
class BleRig:
    world: RadioWorld
    hu: HeadUnit
    phones: dict[str, EmulatedPhone]
    nursery: trio.Nursery
    events: list[tuple[Phone, HeadUnitEvent]] = field(default_factory=list)
    prompts: list[CodeToConfirm] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def of(self, phone: str, cls: type[T]) -> list[T]:
        """The events of one phone that are a ``cls``, in order."""
        return [e for p, e in self.events if p.name == phone and isinstance(e, cls)]

    async def until(self, predicate: Callable[[], bool], limit: float = 60.0) -> None:
        with trio.fail_after(limit):
            while not predicate():
                await self._changed.wait()

    def phone_record(self, name: str) -> Phone:
        found = self.hu.phone(name)
        assert found is not None, f"the head unit does not know {name}"
        return found

    async def _record(self) -> None:
        async for phone, event in self.hu.events:
            self.events.append((phone, event))
            self._changed.set()
            self._changed = trio.Event()

    async def _tick(self) -> None:  # wake waiters on time-based conditions too
        while True:
            await trio.sleep(0.5)
            self._changed.set()
            self._changed = trio.Event()


@asynccontextmanager
async def ble_world(
    tmp: Path,
    captures: Path | None,
    phones: Mapping[str, Cast],
    *,
    pairing_mode: bool = True,
    policy: Policy | None = None,
    bluez_read_echo: bool = False,
    start_phones: bool = True,
    roles: tuple[str, ...] = ("central", "peripheral"),
) -> AsyncIterator[BleRig]:
    """Run a head unit and phones; the head unit confirms every pairing code. A phone's
    third item is its role ("peripheral": it advertises, the default; "central": it
    connects to the head unit); ``roles`` are the head unit's."""
    world = RadioWorld(tmp, clock_ms=clock_ms_from_trio(), snoop_dir=captures)
    try:
        central = await world.start_central(bluez_read_echo=bluez_read_echo)
        for key, (flavour, profile, *role) in phones.items():
            world.add_phone(
                key, flavour, PROFILES[profile] if isinstance(profile, str) else profile,
                role=role[0] if role else "peripheral",
            )  # fmt: skip
        listener = world.listener() if "peripheral" in roles else None
        rig_box: list[BleRig] = []

        async def confirm(phone: Phone, event: CodeToConfirm) -> bool:
            rig_box[0].prompts.append(event)
            return True

        hu = world.head_unit(
            central if "central" in roles else None, pairing_mode=pairing_mode, policy=policy,
            confirm=confirm, listener=listener,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            rig = BleRig(world, hu, world.phones, nursery)
            rig_box.append(rig)
            nursery.start_soon(rig._record)
            nursery.start_soon(rig._tick)
            if start_phones:
                for phone in world.phones.values():
                    await nursery.start(phone.run)
            await nursery.start(hu.run)
            yield rig
            nursery.cancel_scope.cancel()
    finally:
        world.close()


async def pair_all(rig: BleRig, limit: float = 60.0) -> None:
    """Wait until every phone has paired and is connected."""
    names = [p.flavour.name for p in rig.phones.values()]
    await rig.until(
        lambda: all(
            (rec := rig.hu.phone(n)) is not None and rec.connected and rec.device.peer is not None
            for n in names
        ),
        limit,
    )


INF = math.inf
