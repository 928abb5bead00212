"""Protocol v1: the head unit as GATT server, phones connecting to it (PROTOCOL.md 1.2,
2.2), on the Bumble virtual radio, beside phones it finds by scanning. Every channel at
MTU 23, 185 and 517 in both roles is ``tests/test_ble.py``'s first test."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from bleak import BleakClient

from bridge.emulation.scenarios import FLAVOURS
from bridge.emulation.world import RadioWorld, bleak_on, pacing_for
from bridge.session import LinkUp
from bridge.wire import messages as m
from bridge.wire.gatt import (
    FROM_SERVER_UUID,
    IDENTIFY_UUID,
    SERVICE_UUID,
    TO_SERVER_UUID,
    head_unit_advertising,
)
from pairing.handshake import Authenticated
from pairing.privacy import identify_tag
from tests.ble_helpers import TABLET, BleRig, Cast, ble_world, pair_all
from transports.ble import BleakCentral, Sighting
from transports.bleak_bumble import BumbleClient
from transports.bumble_phone import BumbleListener
from transports.link import ConnectFailed, LinkClosed
from transports.simulated import PROFILES

ANDROID, IOS = FLAVOURS["android"], FLAVOURS["ios"]


async def test_both_roles_at_once_several_links_of_each(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    cast: dict[str, Cast] = {
        "iphone": (IOS, "ios", "central"),  # connects to the car, MTU 185
        "tablet": (TABLET, "android", "central"),  # likewise, MTU 517
        "pixel": (ANDROID, "android"),  # advertises; the car finds it by scanning
        "ipad": (IOS, "ios"),
    }
    async with ble_world(tmp_path, captures, cast) as rig:
        await pair_all(rig, limit=240)
        # two phones found by scanning, two that connected (answering one advertisement at
        # once, one of them has to try again: incoming counts every link accepted)
        assert rig.hu.connect_attempts == 2 and rig.hu.incoming >= 2
        sizes = {key: rig.of(p.flavour.name, LinkUp)[0].payload_size for key, p in cast_items(rig)}
        assert sizes == {"iphone": 182, "tablet": 512, "pixel": 512, "ipad": 182}
        for key, phone in rig.phones.items():
            await phone.app.notify(m.Notification(key, "Chat", m.Category.MESSAGE, key, 0))
        await rig.until(
            lambda: all(rig.of(p.flavour.name, m.Notification) for p in rig.phones.values())
        )


def cast_items(rig: BleRig) -> list[tuple[str, Any]]:
    return list(rig.phones.items())


async def test_eight_centrals_at_once(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    cast: dict[str, Cast] = {
        f"p{i}": (dataclasses.replace(ANDROID, name=f"Phone {i}"), "android", "central")
        for i in range(8)
    }
    async with ble_world(tmp_path, None, cast, roles=("peripheral",)) as rig:
        await pair_all(rig, limit=600)
        assert len(rig.prompts) == 8  # one first pairing at a time: the others came back
        assert rig.hu.incoming >= 8 and rig.hu.strangers_ignored == rig.hu.incoming - 8
        for key, phone in rig.phones.items():
            await phone.app.notify(m.Notification(key, "Chat", m.Category.MESSAGE, key, 0))
        await rig.until(
            lambda: all(
                len(rig.of(p.flavour.name, m.Notification)) == 1 for p in rig.phones.values()
            )
        )


async def _car(central: BleakCentral) -> Sighting:
    async with central.scan() as sightings:
        async for sighting in sightings:
            if sighting.car_token is not None:
                return sighting
    raise AssertionError("no head unit advertising")


async def test_strangers_and_replayed_tags_cannot_reach_a_paired_phones_session(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with ble_world(tmp_path, captures, {"iphone": (IOS, "ios", "central")}) as rig:
        await pair_all(rig)
    async with ble_world(
        tmp_path, captures, {"iphone": (IOS, "ios", "central")}, pairing_mode=False
    ) as rig:
        await rig.until(lambda: rig.phone_record(IOS.name).connected)
        record = rig.phone_record(IOS.name)
        device = await rig.world.radio.powered("attacker", pacing_for(PROFILES["android"]))
        attacker = bleak_on(device)
        heard: list[bytes] = []

        def replay(challenge: bytes) -> bytes:  # a tag recorded on another link
            heard.append(challenge)
            return identify_tag(rig.phones["iphone"].trust.irk, os.urandom(16))

        got_through: list[str] = []
        for tag_of in (replay, lambda challenge: bytes(16), None):
            sighting = await _car(attacker)
            try:
                link = await attacker.connect(sighting, identify=tag_of)
            except ConnectFailed as e:
                got_through.append(f"refused: {e}")
                continue
            with trio.move_on_after(5):
                await link.receive()  # the head unit disconnects: no handshake for a stranger
                got_through.append("a packet")
            assert link.closed is not None
        assert "a packet" not in got_through
        assert rig.hu.strangers_ignored >= 3
        assert len(set(heard)) == len(heard)  # every link its own challenge
        assert record.connected and rig.prompts == []  # the phone's link untouched
        await rig.phones["iphone"].app.notify(
            m.Notification("after", "Chat", m.Category.MESSAGE, "still here", 0)
        )
        await rig.until(lambda: [n.id for n in rig.of(IOS.name, m.Notification)] == ["after"])


async def test_a_central_that_never_subscribes_is_dropped(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with ble_world(tmp_path, captures, {}) as rig:
        device = await rig.world.radio.powered("idle", pacing_for(PROFILES["android"]))
        sighting = await _car(bleak_on(device))
        gone = trio.Event()
        client = BleakClient(
            sighting.device, lambda _: gone.set(), backend=BumbleClient, bumble_device=device
        )
        await trio_asyncio.aio_as_trio(client.connect)()
        # it may read and even write the identify value, but never subscribes
        challenge = await trio_asyncio.aio_as_trio(client.read_gatt_char)(str(IDENTIFY_UUID))
        assert len(challenge) == 16
        started = trio.current_time()
        with trio.fail_after(30):
            await gone.wait()
        assert 9 <= trio.current_time() - started <= 11  # the subscription deadline, 10 s
        assert rig.hu.incoming == 0


def _handle(client: BleakClient) -> int:
    """The connection handle of a bleak client on the Bumble backend."""
    backend: Any = client._backend
    return int(backend._connection.handle)


async def test_a_connections_deadline_is_not_its_reused_handles_next(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    # a central connects and leaves at once; the next gets the same connection handle and
    # subscribes late: the first one's 10 s deadline must not drop it (it did,
    # found by bridge-conformance --peer head-unit --phone-role central)
    world = RadioWorld(tmp_path, clock_ms=lambda: 0)
    try:
        listener, device = await _listener_and_central(world, "slow")
        sighting = await _car(bleak_on(device))
        first = BleakClient(sighting.device, backend=BumbleClient, bumble_device=device)
        started = trio.current_time()
        await trio_asyncio.aio_as_trio(first.connect)()
        handle = _handle(first)
        await trio_asyncio.aio_as_trio(first.disconnect)()
        await trio.sleep(1)
        gone = trio.Event()
        second = BleakClient(
            (await _car(bleak_on(device))).device, lambda _: gone.set(),
            backend=BumbleClient, bumble_device=device,
        )  # fmt: skip
        await trio_asyncio.aio_as_trio(second.connect)()
        assert _handle(second) == handle  # the same handle again
        assert trio.current_time() > started + 1
        await trio.sleep_until(started + 10.9)  # past the first one's deadline, not its own
        assert not gone.is_set()
        await trio_asyncio.aio_as_trio(second.start_notify)(str(FROM_SERVER_UUID), lambda *_: None)
        accepted = await listener.accept()
        await trio.sleep(5)  # a link now: no deadline drops it
        assert not gone.is_set() and accepted.closed is None
    finally:
        world.close()


async def test_garbage_from_a_central_closes_only_its_link(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with ble_world(tmp_path, captures, {"iphone": (IOS, "ios", "central")}) as rig:
        await pair_all(rig)
        device = await rig.world.radio.powered("noisy", pacing_for(PROFILES["android"]))
        link = await _connect(bleak_on(device))  # a stranger, in pairing mode
        for junk in (b"\xff" * 20, b"\x00", bytes(range(200))):
            try:
                await link.send(junk[: link.payload_size])
            except LinkClosed:  # the head unit hung up already
                break
        with trio.fail_after(30):
            while link.closed is None:
                try:
                    await link.receive()
                except LinkClosed:
                    break
        assert rig.phone_record(IOS.name).connected  # the paired phone never noticed
        assert rig.prompts[1:] == []  # the junk was never a pairing


async def test_a_write_to_the_identify_value_after_subscribing_is_refused(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    world = RadioWorld(tmp_path, clock_ms=lambda: 0)
    try:
        listener, device = await _listener_and_central(world, "late")
        link = await _connect(bleak_on(device))
        with pytest.raises(Exception, match=r"0x03|[Ww]rite [Nn]ot [Pp]ermitted"):
            await trio_asyncio.aio_as_trio(link.client.write_gatt_char)(
                str(IDENTIFY_UUID), bytes(16), response=True
            )
        accepted = await listener.accept()
        assert accepted.tag == b""  # a central that did not identify is a stranger
    finally:
        world.close()


async def _listener_and_central(
    world: RadioWorld, name: str, profile: str = "android"
) -> tuple[BumbleListener, Any]:
    """A bare head-unit GATT server advertising (no head unit behind it) and a Bumble
    device ``name`` to connect to it from, paced as the ``profile`` phone."""
    await world.start_central()
    listener = world.listener()
    await listener.advertise(*head_unit_advertising(bytes(6), None))
    return listener, await world.radio.powered(name, pacing_for(PROFILES[profile]))


async def _connect(central: BleakCentral) -> Any:
    """A link to the head unit, trying again while another central's answer to the same
    advertisement wins (the loser's connection is never established)."""
    with trio.fail_after(60):
        while True:
            try:
                return await central.connect(await _car(central))
            except ConnectFailed:
                await trio.sleep(0.5)


async def test_a_backgrounded_iphone_is_found_only_by_advertising_to_it(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """PROTOCOL.md 2.3: with its app in the background an iPhone's advertising has no
    name and no service UUID list, so scanning for phones never finds it; the same
    iPhone as a central finds the car advertising and connects."""
    cast: dict[str, Cast] = {"iphone": (IOS, "ios")}
    async with ble_world(
        tmp_path / "a", captures, cast, roles=("central",), start_phones=False
    ) as rig:
        iphone = rig.phones["iphone"]
        iphone.set_background(True)
        await rig.nursery.start(iphone.run)
        await trio.sleep(120)
        assert rig.hu.connect_attempts == 0 and rig.hu.strangers_ignored == 0  # never seen
        assert rig.hu.phones == {} and not iphone.connected.is_set()
        assert iphone.peripheral is not None and iphone.peripheral.device.is_advertising
        data, _ = iphone.peripheral.advertising_data("a name")
        assert SERVICE_UUID.bytes[::-1] not in data and b"a name" not in data
        assert data[3:8] == bytes((20, 0xFF, 0x4C, 0x00, 0x01))  # Apple's overflow area
    cast = {"iphone": (IOS, "ios", "central")}
    async with ble_world(
        tmp_path / "b", captures, cast, roles=("peripheral",), start_phones=False
    ) as rig:
        rig.phones["iphone"].set_background(True)
        await rig.nursery.start(rig.phones["iphone"].run)
        await pair_all(rig)
        assert rig.hu.incoming >= 1


async def test_writes_before_the_subscription_are_discarded(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """A central that writes segments before it subscribes: none of them reaches the
    link the head unit takes at the subscription (its first segment is still seq 0)."""
    world = RadioWorld(tmp_path, clock_ms=lambda: 0)
    try:
        listener, device = await _listener_and_central(world, "early")
        sighting = await _car(bleak_on(device))
        client = BleakClient(sighting.device, backend=BumbleClient, bumble_device=device)
        aio_ = trio_asyncio.aio_as_trio
        await aio_(client.connect)()
        to_server = str(TO_SERVER_UUID)
        for junk in (b"\x4f\x05\x00hello", b"\x80\xff" * 8):  # a FIRST, then anything
            await aio_(client.write_gatt_char)(to_server, junk, response=False)
        await trio.sleep(1)
        got: list[bytes] = []

        async def first_packet() -> None:
            link = await listener.accept()
            got.append(await link.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_packet)
            await aio_(client.start_notify)(str(FROM_SERVER_UUID), lambda *_: None)
            await trio.sleep(0.5)
            segment = bytes([0x40, 1, 0, 0x00])  # FIRST, lane 0, seq 0, a 1-byte record
            await aio_(client.write_gatt_char)(to_server, segment, response=False)
        assert got == [segment]  # only what came after the subscription
        assert listener.server.dropped_early == 2
        await aio_(client.disconnect)()
    finally:
        world.close()


async def test_a_paired_phone_is_served_while_strangers_hammer_the_head_unit(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """One stranger connects and disconnects as fast as it can, another holds a link
    open (it subscribes without a tag and sits there): the paired iPhone's pauses take
    as long as without them, its messages all arrive once and in order, and when its
    radio drops it reconnects."""
    cast: dict[str, Cast] = {"iphone": (IOS, "ios", "central")}
    async with ble_world(tmp_path, captures, cast) as rig:
        await pair_all(rig)

    async def pauses(rig: BleRig, n: int) -> list[float]:
        record = rig.phone_record(IOS.name)
        took = []
        for _ in range(n):
            start = trio.current_time()
            await record.device.media(m.MediaCommand.PAUSE)
            took.append(trio.current_time() - start)
            await trio.sleep(0.37)
        return took

    async with ble_world(tmp_path, captures, cast, pairing_mode=False) as rig:
        await rig.until(lambda: rig.phone_record(IOS.name).connected)
        await rig.phones["iphone"].app.play([m.NowPlaying("Song", "Artist", duration_ms=200_000)])
        baseline = await pauses(rig, 10)
        hammer = bleak_on(await rig.world.radio.powered("hammer", pacing_for(PROFILES["android"])))
        holder = bleak_on(await rig.world.radio.powered("holder", pacing_for(PROFILES["android"])))
        attempts = [0, 0]

        async def connect_in_a_loop() -> None:
            while True:
                attempts[0] += 1
                try:
                    link = await hammer.connect(await _car(hammer))
                    await link.aclose()
                except ConnectFailed:
                    pass

        async def hold_a_link() -> None:
            while True:
                attempts[1] += 1
                try:
                    link = await holder.connect(await _car(holder))
                    with trio.move_on_after(120):
                        while True:
                            await link.receive()
                except (ConnectFailed, LinkClosed):  # dropped: connect again
                    await trio.sleep(0.1)

        phone = rig.phones["iphone"]
        sent: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect_in_a_loop)
            nursery.start_soon(hold_a_link)
            await trio.sleep(5)
            loaded = await pauses(rig, 10)
            for i in range(20):
                note = m.Notification(f"n{i}", "Chat", m.Category.MESSAGE, f"message {i}", 0)
                await phone.app.notify(note)
                sent.append(note.id)
                if i == 10:
                    rig.world.lose_link("iphone")
                await trio.sleep(0.3)
            await rig.until(lambda: len(rig.of(IOS.name, m.Notification)) >= len(sent), 120)
            nursery.cancel_scope.cancel()
        assert [n.id for n in rig.of(IOS.name, m.Notification)] == sent
        assert max(loaded) <= max(baseline) * 1.5  # virtual time: the air, not the machine
        assert attempts[0] > 20 and rig.hu.strangers_ignored > 20
        assert [a.paired_now for a in rig.of(IOS.name, Authenticated)] == [False, False]
        assert rig.prompts == []


@pytest.mark.parametrize(("profile", "asked"), [("ios", True), ("android", False)])
async def test_the_head_unit_asks_a_slow_central_for_15_ms(
    aio: Any, autojump_clock: Any, tmp_path: Path, profile: str, asked: bool
) -> None:
    """PROTOCOL.md 2.4: an iPhone's central opens at 30 ms; the head unit asks for
    15 ms (no latency, 6 s supervision, within Apple's rules) and the connection's
    events follow. A central already at 15 ms is not asked."""
    world = RadioWorld(tmp_path, clock_ms=lambda: 0)
    try:
        listener, device = await _listener_and_central(world, "central", profile)
        central = bleak_on(device)
        link = await _connect(central)
        await trio.sleep(2)
        connection = next(iter(device.connections.values()))
        start = PROFILES[profile].interval * 1000
        assert listener.parameter_requests == (1 if asked else 0)
        if asked:
            assert connection.parameters.connection_interval == 15.0
            assert connection.parameters.supervision_timeout == 6000.0
        else:
            assert connection.parameters.connection_interval == start
        pacing = world.radio.link.current(
            world.radio.controller_of(device), world.radio.controller_of(world.central)
        )
        assert pacing.interval == pytest.approx(connection.parameters.connection_interval / 1000)
        await link.aclose()
    finally:
        world.close()
