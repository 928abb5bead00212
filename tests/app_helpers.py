"""A head unit and a phone application on the simulated link, for channel tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from bridge.connection import ConnectionClosed
from bridge.emulation.phone_app import PhoneApp
from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import PhoneDevice
from bridge.session import PeerSession
from bridge.store import MessageStore
from bridge.wire.messages import PROTOCOL_VERSIONS, Hello
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

T = TypeVar("T")


def hu_hello(versions: list[int] | None = None, max_text: int = 1024) -> Hello:
    return Hello(versions or PROTOCOL_VERSIONS, "head-unit", "Car", max_text=max_text)


def phone_hello(
    versions: list[int] | None = None, max_text: int = 1024, clock_ms: int = 0
) -> Hello:
    return Hello(
        versions or PROTOCOL_VERSIONS,
        "android",
        "Pixel 9",
        "Pixel 9 Pro",
        max_text=max_text,
        clock_ms=clock_ms,
    )


@dataclass
class Rig:
    hu_session: PeerSession
    phone_session: PeerSession
    hu: PhoneDevice
    phone: PhoneApp
    profile: LinkProfile

    @classmethod
    def make(
        cls,
        tmp: Path | None = None,
        *,
        profile: str = "android",
        hu_hello_: Hello | None = None,
        phone_hello_: Hello | None = None,
    ) -> Rig:
        hu_session = PeerSession("hu", hello=hu_hello_ or hu_hello())
        phone_session = PeerSession("phone", hello=phone_hello_ or phone_hello())
        clock = clock_ms_from_trio()
        hu_store = MessageStore(tmp / "hu") if tmp else None
        phone_store = MessageStore(tmp / "phone") if tmp else None
        hu = PhoneDevice(hu_session, store=hu_store, clock_ms=clock)
        phone = PhoneApp(phone_session, store=phone_store, clock_ms=clock)
        return cls(hu_session, phone_session, hu, phone, PROFILES[profile])

    async def start(self, nursery: trio.Nursery) -> SimulatedLinkPair:
        """Run both applications and a link; return once the head unit has the HELLO."""
        nursery.start_soon(self.hu.run)
        nursery.start_soon(self.phone.run)
        pair = await self.link(nursery)
        await wait_for(self.hu, Hello)
        return pair

    async def closed(self, nursery: trio.Nursery) -> ConnectionClosed:
        """Run both applications and a link until the head unit sees the link closed."""
        nursery.start_soon(self.hu.run)
        nursery.start_soon(self.phone.run)
        await self.link(nursery)
        return await wait_for(self.hu, ConnectionClosed)

    async def link(self, nursery: trio.Nursery, seed: int = 0) -> SimulatedLinkPair:
        pair = SimulatedLinkPair(self.profile, seed=seed)
        nursery.start_soon(self.hu_session.run_link, pair.central)
        nursery.start_soon(self.phone_session.run_link, pair.peripheral)
        return pair


async def wait_for(
    device: PhoneDevice,
    cls: type[T],
    predicate: Callable[[T], bool] = lambda event: True,
    limit: float = 30.0,
) -> T:
    """The next event of the device that is a ``cls`` and satisfies ``predicate``."""
    with trio.fail_after(limit):
        while True:
            event = await device.events.receive()
            if isinstance(event, cls) and predicate(event):
                return event


async def settle(seconds: float = 1.0) -> None:
    await trio.sleep(seconds)
