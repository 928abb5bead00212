"""The head unit's radio policy on a fake radio: backoff after failed connections."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridge.endpoint import clock_ms_from_trio
from bridge.radio_policy import HeadUnit, Policy
from pairing.privacy import make_token
from pairing.trust import TrustStore
from transports.link import ConnectFailed, Link


@dataclass(frozen=True)
class FakeSighting:
    address: str
    name: str | None
    platform_hint: str = "android"


class FlakyRadio:
    """Advertisements every 100 ms; every connection attempt fails as BlueZ's
    ``le-connection-abort-by-local`` does."""

    def __init__(self, *names: str | None) -> None:
        self.names = names  # advertised in turn, one every 100 ms
        self.attempts: list[float] = []

    @asynccontextmanager
    async def scan(self) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[Any](1)

        async def advertise() -> None:
            for name in itertools.cycle(self.names):
                await send.send(FakeSighting("AA:BB", name))
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(advertise)
            yield receive
            nursery.cancel_scope.cancel()

    async def connect(self, sighting: Any) -> Link:
        self.attempts.append(trio.current_time())
        await trio.sleep(0.05)
        raise ConnectFailed("le-connection-abort-by-local")


def paired(tmp_path: Path) -> tuple[TrustStore, bytes]:
    """A head unit's trust store with one paired phone, and that phone's IRK."""
    trust = TrustStore(tmp_path / "hu")
    irk = os.urandom(16)
    key = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    trust.add(key, "Pixel 9", "android", irk)
    return trust, irk


async def test_failed_connections_back_off_exponentially(
    autojump_clock: Any, tmp_path: Path
) -> None:
    trust, irk = paired(tmp_path)
    radio = FlakyRadio(make_token(irk, os.urandom))
    hu = HeadUnit(
        radio, trust, tmp_path / "hu", clock_ms=clock_ms_from_trio(),
        policy=Policy(backoff=0.5, max_backoff=8.0),
    )  # fmt: skip
    with trio.move_on_after(40):
        await hu.run()
    gaps = [round(b - a, 1) for a, b in zip(radio.attempts, radio.attempts[1:], strict=False)]
    # each wait doubles (attempt time 0.05 s + the next advertisement), capped at 8 s
    assert gaps[:5] == [0.6, 1.1, 2.1, 4.1, 8.1]
    assert set(gaps[5:]) == {8.1}
    assert hu.strangers_ignored == 0  # recognised every time, just not reachable


class IncompatibleRadio(FlakyRadio):
    async def connect(self, sighting: Any) -> Link:
        self.attempts.append(trio.current_time())
        raise ConnectFailed("the phone speaks protocol versions [5]", transient=False)


async def test_an_incompatible_phone_is_tried_again_only_after_five_minutes(
    autojump_clock: Any, tmp_path: Path
) -> None:
    trust, irk = paired(tmp_path)
    radio = IncompatibleRadio(make_token(irk, os.urandom))
    hu = HeadUnit(radio, trust, tmp_path / "hu", clock_ms=clock_ms_from_trio())
    with trio.move_on_after(650):
        await hu.run()
    assert [round(t) for t in radio.attempts] == [0, 300, 600]


class SlowRadio(FlakyRadio):
    """A connection attempt takes a long while."""

    async def connect(self, sighting: Any) -> Link:
        self.attempts.append(trio.current_time())
        await trio.sleep(20)
        raise ConnectFailed("took too long")


async def test_an_address_being_connected_is_not_also_taken_for_a_stranger(
    autojump_clock: Any, tmp_path: Path
) -> None:
    # Seen in the BlueZ VM lane: the paired phone's address, sighted once without its
    # token while the head unit was connecting to it, was connected a second time "to
    # pair"; both sessions then shared one BLE connection and broke each other.
    trust, irk = paired(tmp_path)
    # now with its token, now without a name (a scan response not merged yet)
    radio = SlowRadio(make_token(irk, os.urandom), None)
    hu = HeadUnit(radio, trust, tmp_path / "hu", clock_ms=clock_ms_from_trio(), pairing_mode=True)
    with trio.move_on_after(10):
        await hu.run()
    assert radio.attempts == [0.0]
    assert hu.pairing is None
