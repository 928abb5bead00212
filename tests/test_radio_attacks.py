"""Attacks on the head unit's radio policy: replayed tokens, a jammed pairing slot, silent
code grinding. A fake radio hands out simulated links; honest phones run the real phone
side of the protocol, attackers run as little of it as their attack needs."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.connection import Connection, ConnectionConfig
from bridge.endpoint import clock_ms_from_trio
from bridge.radio_policy import HeadUnit, PairingAttemptFailed, Policy
from bridge.session import PeerSession
from bridge.wire.mux import ChannelMux
from pairing.handshake import CodeToConfirm, Handshake, Role
from pairing.privacy import make_token
from pairing.trust import TrustStore
from tests.pairing_helpers import Side
from transports.link import Link, LinkClosed, segment_size_for
from transports.simulated import PROFILES, SimulatedLinkPair

ANDROID = PROFILES["android"]


@dataclass(frozen=True)
class Sighting:
    address: str
    name: str | None
    platform_hint: str = "android"


@dataclass
class Advertiser:
    """Something on the air: what it advertises, and what answers when connected."""

    address: str | Callable[[], str]
    name: Callable[[], str | None]
    answer: Callable[[Link], Any]  # async: runs the far end of a connection
    connections: int = 0


@dataclass
class FakeRadio:
    """Each advertiser is sighted every 100 ms, in turn; a connection is a simulated
    link whose far end the advertiser runs."""

    advertisers: list[Advertiser]
    nursery: trio.Nursery
    by_address: dict[str, Advertiser] = field(default_factory=dict)

    @asynccontextmanager
    async def scan(self) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[Any](0)

        async def advertise() -> None:
            while True:
                for adv in self.advertisers:
                    address = adv.address() if callable(adv.address) else adv.address
                    self.by_address[address] = adv
                    await send.send(Sighting(address, adv.name()))
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(advertise)
            yield receive
            nursery.cancel_scope.cancel()

    async def connect(self, sighting: Any) -> Link:
        await trio.sleep(0.03)
        adv = self.by_address[sighting.address]
        adv.connections += 1
        pair = SimulatedLinkPair(ANDROID, seed=adv.connections)
        self.nursery.start_soon(adv.answer, pair.peripheral)
        return pair.central


async def keepalive_jammer(link: Link) -> None:
    """Connects, then only ever sends KEEPALIVEs (plaintext, never a handshake message)."""
    conn = Connection(
        ChannelMux(), segment_size_for(link.payload_size), now=trio.current_time(),
        config=ConnectionConfig(idle_timeout=float("inf")),
    )  # fmt: skip

    async def drain() -> None:
        while True:
            await link.receive()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            while True:
                conn.handle_timer(trio.current_time())
                while (packet := conn.next_packet(trio.current_time())) is not None:
                    await link.send(packet)
                timer = conn.get_timer()
                await trio.sleep_until(timer if timer is not None else trio.current_time() + 1)
    except* LinkClosed:
        pass


def phone_answer(
    store: TrustStore, side: Side, on_code: Callable[[Link], None] | None = None
) -> Callable[[Link], Awaitable[None]]:
    """The honest phone's end of each connection (``side`` keeps reading its events)."""

    async def answer(link: Link) -> None:
        handshake = Handshake(
            Role.PHONE, store.identity, name="Pixel 9", platform="android",
            trusted=store.trusted_keys(), random=os.urandom, irk=store.irk,
        )  # fmt: skip
        if on_code is not None:
            side.answer = lambda code: on_code(link)
        await side.session.run_link(link, handshake=handshake)

    return answer


def honest_phone(address: str, store: TrustStore, side: Side) -> Advertiser:
    """A phone advertising a fresh token of its own each time, answering as a phone."""
    return Advertiser(address, lambda: make_token(store.irk, os.urandom), phone_answer(store, side))


@asynccontextmanager
async def running(
    hu_trust: TrustStore, advertisers: list[Advertiser], *, pairing_mode: bool = False,
    policy: Policy | None = None,
) -> AsyncIterator[tuple[HeadUnit, list[tuple[Any, Any]]]]:  # fmt: skip
    async def yes(phone: Any, event: CodeToConfirm) -> bool:
        return True

    events: list[tuple[Any, Any]] = []
    async with trio.open_nursery() as nursery:
        radio = FakeRadio(advertisers, nursery)
        hu = HeadUnit(
            radio, hu_trust, hu_trust.directory, name="Car", confirm=yes,
            pairing_mode=pairing_mode, clock_ms=clock_ms_from_trio(), policy=policy,
        )  # fmt: skip

        async def record() -> None:
            async for item in hu.events:
                events.append(item)

        nursery.start_soon(record)
        await nursery.start(hu.run)
        yield hu, events
        nursery.cancel_scope.cancel()


def know_each_other(tmp: Path) -> tuple[TrustStore, TrustStore]:
    hu, phone = TrustStore(tmp / "hu"), TrustStore(tmp / "phone", role="phone")
    hu.add(phone.public_key, "Pixel 9", "android", phone.irk)
    phone.add(hu.public_key, "Car", "head-unit")
    return hu, phone


async def quitter(link: Link) -> None:
    """Connects, then drops the link at once: fails fast, to race the real phone."""
    await link.aclose()


@pytest.mark.parametrize("attack", [keepalive_jammer, quitter])
async def test_a_replayed_token_does_not_lock_the_phone_out(
    autojump_clock: Any, tmp_path: Path, attack: Callable[[Link], Awaitable[None]]
) -> None:
    hu_trust, phone_trust = know_each_other(tmp_path)
    replayed = make_token(phone_trust.irk, os.urandom)  # heard once, replayed forever
    side = Side(PeerSession("phone"), phone_trust)
    attacker = Advertiser("EV:IL", lambda: replayed, attack)
    phone = honest_phone("AA:BB", phone_trust, side)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(side.run)
        async with running(hu_trust, [attacker, phone]) as (hu, _):
            record = hu.phone(phone_trust.public_key)
            assert record is not None
            # the attacker was sighted (and connected) first; two backoff periods later
            # the real phone is connected all the same
            with trio.fail_after(2 * hu.policy.backoff + 0.5):
                while not record.connected:
                    await trio.sleep(0.05)
            await trio.sleep(120)  # the attacker keeps trying: the phone stays served
            assert record.connected and phone.connections == 1
            assert attacker.connections >= 1  # let in first; not again while X is served
            before = attacker.connections
            await trio.sleep(60)
            assert attacker.connections == before
        nursery.cancel_scope.cancel()
    assert len(side.auth) == 1 and not side.auth[0].paired_now


async def test_an_unauthenticated_link_is_closed_at_its_handshake_deadline(
    autojump_clock: Any, tmp_path: Path
) -> None:
    hu_trust, phone_trust = know_each_other(tmp_path)
    replayed = make_token(phone_trust.irk, os.urandom)
    attacker = Advertiser("EV:IL", lambda: replayed, keepalive_jammer)
    async with running(hu_trust, [attacker]) as (hu, _):
        record = hu.phone(phone_trust.public_key)
        assert record is not None
        await trio.sleep(9.9)  # KEEPALIVEs all along: they do not count as liveness
        assert record.attempts == 1
        await trio.sleep(0.3)  # 10 s after the link came up (0.03 s)
        assert attacker.connections == 1 and record.attempts == 0 and not record.connected


async def test_a_stranger_cannot_jam_pairing(autojump_clock: Any, tmp_path: Path) -> None:
    hu_trust = TrustStore(tmp_path / "hu")
    phone_trust = TrustStore(tmp_path / "phone", role="phone")
    side = Side(PeerSession("phone"), phone_trust)
    jammer = Advertiser("JA:MM", lambda: None, keepalive_jammer)
    honest = honest_phone("HO:NE", phone_trust, side)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(side.run)
        async with running(hu_trust, [jammer, honest], pairing_mode=True) as (hu, _):
            with trio.fail_after(30):  # the jammer's slot is freed after its deadline
                while (record := hu.phone("Pixel 9")) is None or not record.connected:
                    await trio.sleep(0.1)
            assert jammer.connections == 1
        nursery.cancel_scope.cancel()
    assert side.auth and side.auth[0].paired_now
    assert hu_trust.find("Pixel 9").key_bytes == phone_trust.public_key


async def test_silent_code_grinding_ends_pairing_mode(autojump_clock: Any, tmp_path: Path) -> None:
    """The grinder runs XX to the head unit's nonce (the code is then fixed and it can
    compute it), then drops the link before its own nonce: the head unit never showed a
    code, yet every such attempt counts, and after three pairing mode ends."""
    hu_trust = TrustStore(tmp_path / "hu")
    addresses = (f"GR:{n:05d}" for n in itertools.count())  # a new address each time
    grinder_trust = TrustStore(tmp_path / "grinder", role="phone")
    side = Side(PeerSession("grinder"), grinder_trust)

    def drop(link: Link) -> None:
        side.session.close("")  # gone the moment the code is known

    grinder = Advertiser(
        lambda: next(addresses), lambda: None, phone_answer(grinder_trust, side, on_code=drop)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(side.run)
        async with running(hu_trust, [grinder], pairing_mode=True) as (hu, events):
            await trio.sleep(120)
            assert not hu.pairing_mode
            failures = [e for _, e in events if isinstance(e, PairingAttemptFailed)]
            assert [f.failed for f in failures] == [1, 2, 3]
            assert failures[-1].pairing_mode_ended
            assert grinder.connections == 3  # none after pairing mode ended
            assert hu_trust.devices() == []
            hu.pairing_mode = True  # the owner switches it on again: a fresh count
            assert hu.failed_comparisons == 0
        nursery.cancel_scope.cancel()
