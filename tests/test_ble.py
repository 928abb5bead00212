"""The bleak transport end to end on the Bumble virtual radio (virtual time)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode

from bridge.emulation.scenarios import FLAVOURS, drive, messages, playlist
from bridge.emulation.world import RadioWorld, pacing_for
from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import ArtReceived, CommandFailed
from bridge.session import LinkDown, LinkUp
from bridge.wire import messages as m
from bridge.wire.gatt import FROM_PHONE_UUID, INFO_UUID
from pairing.handshake import Authenticated
from tests.ble_helpers import TABLET, Cast, ble_world, pair_all
from transports.ble import Sighting
from transports.bumble_phone import BumblePeripheral
from transports.link import ConnectFailed
from transports.simulated import PROFILES

ANDROID, IOS = FLAVOURS["android"], FLAVOURS["ios"]


@pytest.mark.parametrize("role", ["peripheral", "central"])
@pytest.mark.parametrize(("profile", "packet"), [("android", 512), ("ios", 182), ("legacy", 20)])
async def test_pair_and_every_channel_through_bleak(
    aio: Any,
    *,
    autojump_clock: Any,
    tmp_path: Path,
    captures: Path,
    profile: str,
    packet: int,
    role: str,
) -> None:
    """``role``: the phone's. As a peripheral it advertises and the head unit connects to
    it (bleak); as a central it connects to the head unit, the GATT server (v1)."""
    flavour = IOS if profile == "ios" else ANDROID
    hu_role = "central" if role == "peripheral" else "peripheral"
    cast: dict[str, Cast] = {"phone": (flavour, profile, role)}
    async with ble_world(tmp_path, captures, cast, roles=(hu_role,)) as rig:
        await pair_all(rig)
        assert rig.phone_record(flavour.name).role == hu_role
        assert (rig.hu.incoming, rig.hu.connect_attempts) == (
            (1, 0) if hu_role == "peripheral" else (0, 1)
        )
        name = flavour.name
        ups = rig.of(name, LinkUp)
        assert [u.payload_size for u in ups] == [packet]  # the real MTU, capped at 512
        assert [a.paired_now for a in rig.of(name, Authenticated)] == [True]
        assert len(rig.prompts) == 1
        phone = rig.phones["phone"]
        record = rig.phone_record(name)
        assert record.platform == flavour.platform  # confirmed by the hello
        # navigation, audio control and messaging, both ways
        async with trio.open_nursery() as play:
            play.start_soon(drive, phone.app, flavour)
            play.start_soon(messages, phone.app, flavour)
            play.start_soon(playlist, phone.app, flavour)
            await rig.until(lambda: len(rig.of(name, m.Notification)) >= 1)
            await rig.until(lambda: rig.of(name, ArtReceived) != [])
            await record.device.media(m.MediaCommand.PAUSE)
            note = rig.of(name, m.Notification)[0]
            await record.device.reply(note.id, text="On my way")
            play.cancel_scope.cancel()
        assert any(isinstance(c, m.MediaCommandRequest) for c in phone.app.commands)
        assert phone.app.player is not None and not phone.app.player.playing
        assert (note.id, "On my way") in phone.app.replies
        assert rig.of(name, m.Maneuver)
    assert any(p.suffix == ".btsnoop" and p.stat().st_size > 0 for p in captures.iterdir())


@pytest.mark.parametrize("role", ["peripheral", "central"])
async def test_link_loss_mid_transfer_reconnects_and_loses_nothing(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path, role: str
) -> None:
    cast: dict[str, Cast] = {"phone": (ANDROID, "ios", role)}
    async with ble_world(tmp_path, captures, cast) as rig:
        await pair_all(rig)
        name, phone = ANDROID.name, rig.phones["phone"]
        sent: list[str] = []

        async def publish() -> None:
            for i in range(40):
                if i == 10:  # a 48 KB object in flight when the radio dies
                    await phone.app.send_object(77, bytes(range(256)) * 192, "image/jpeg")
                note = m.Notification(
                    f"n{i}", "WhatsApp", m.Category.MESSAGE, f"message {i}", 0, sender="Ana"
                )
                await phone.app.notify(note)
                sent.append(note.id)
                await trio.sleep(0.2)

        async with trio.open_nursery() as play:
            play.start_soon(publish)
            await rig.until(lambda: len(rig.of(name, m.Notification)) >= 11)
            rig.world.lose_link("phone")  # mid-transfer: the object is still arriving
        await rig.until(lambda: len(rig.of(name, m.Notification)) >= len(sent), 120)
        got = [n.id for n in rig.of(name, m.Notification)]
        assert got == sent  # exactly once, in order
        downs = rig.of(name, LinkDown)
        assert downs and downs[0].reason.startswith("link lost")  # no HCI reason above
        # the phone's side: Bumble's reason as a peripheral, bleak's as a central
        lost = "supervision timeout (HCI 0x08)" if role == "peripheral" else "link lost"
        assert lost in phone.links[0].reason
        assert len(rig.of(name, LinkUp)) == 2
        auths = rig.of(name, Authenticated)
        assert [a.paired_now for a in auths] == [True, False]  # back without a prompt
        assert len(rig.prompts) == 1
        if role == "peripheral":
            assert len(set(phone.tokens)) == len(phone.tokens) == 2  # a fresh token each time
        else:  # the car's advertising: a fresh token every time it started again
            assert rig.hu.incoming == 2
            assert len({data for data, _ in rig.hu.advertised}) == len(rig.hu.advertised)


async def test_two_phones_and_a_tablet_at_once(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    cast = {"pixel": (ANDROID, "android"), "iphone": (IOS, "ios"), "tablet": (TABLET, "android")}
    async with ble_world(tmp_path, captures, cast) as rig:
        await pair_all(rig, limit=120)
        assert len(rig.prompts) == 3  # one pairing at a time, each confirmed
        pixel, iphone, tablet = (rig.phones[k] for k in ("pixel", "iphone", "tablet"))
        async with trio.open_nursery() as play:
            play.start_soon(drive, pixel.app, ANDROID)  # navigation on one phone
            play.start_soon(playlist, tablet.app, TABLET)  # music on the tablet
            play.start_soon(messages, iphone.app, IOS)  # messages on the other phone
            await rig.until(
                lambda: bool(
                    rig.of(ANDROID.name, m.Maneuver)
                    and rig.of(TABLET.name, ArtReceived)
                    and rig.of(IOS.name, m.Notification)
                )
            )
            await rig.phone_record(TABLET.name).device.media(m.MediaCommand.PAUSE)
            play.cancel_scope.cancel()
        assert tablet.app.player is not None and not tablet.app.player.playing
        assert pixel.app.commands == [] and iphone.app.commands == []  # to the tablet only
        assert not rig.of(TABLET.name, m.Maneuver) and not rig.of(ANDROID.name, ArtReceived)
        assert {p.platform for p in rig.hu.phones.values()} == {"android", "ios"}
        assert rig.hu.connect_attempts == 3


async def test_strangers_phones_are_left_alone(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """A car park: our phone, and two strangers' phones running the same app."""
    cast = {"ours": (ANDROID, "android")}
    async with ble_world(tmp_path, captures, cast) as rig:
        await pair_all(rig)  # paired in pairing mode, once
    strangers = {"s1": (IOS, "ios"), "s2": (TABLET, "android")}
    async with ble_world(tmp_path, captures, {**cast, **strangers}, pairing_mode=False) as rig:
        await rig.until(lambda: rig.phone_record(ANDROID.name).connected)
        await trio.sleep(60)
        assert rig.hu.connect_attempts == 1  # only our phone, recognised from its token
        assert rig.hu.strangers_ignored > 100  # seen at every advertisement, never connected
        assert rig.phones["s1"].links == rig.phones["s2"].links == []
        assert not rig.phones["s1"].connected.is_set()
        assert [a.paired_now for a in rig.of(ANDROID.name, Authenticated)] == [False]
        assert rig.prompts == []


async def test_a_phone_that_stops_advertising_is_not_chased(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with ble_world(tmp_path, captures, {"phone": (ANDROID, "android")}) as rig:
        await pair_all(rig)
        name, phone = ANDROID.name, rig.phones["phone"]
        record = rig.phone_record(name)
        phone.set_advertising(False)  # the app is closed; the link drops later
        rig.world.lose_link("phone")
        await rig.until(lambda: bool(rig.of(name, LinkDown)))
        attempts = rig.hu.connect_attempts
        command: list[Any] = []

        async def pause() -> None:  # the driver taps pause while the phone is away
            with pytest.raises(CommandFailed):  # no answer within 10 s: the screen says so
                await record.device.media(m.MediaCommand.PAUSE)
            command.append("tapped")

        async with trio.open_nursery() as n:
            n.start_soon(pause)
            await trio.sleep(5 * 60)
            assert rig.hu.connect_attempts == attempts  # no connection without a sighting
            assert not record.connected
            phone.set_advertising(True)
            await rig.until(lambda: record.connected)
        assert rig.hu.connect_attempts == attempts + 1
        assert command == ["tapped"]
        await rig.until(lambda: bool(phone.app.commands))  # delivered once it is back
        assert any(isinstance(c, m.MediaCommandRequest) for c in phone.app.commands)


@asynccontextmanager
async def _raw(tmp_path: Path, captures: Path, **peripheral: Any) -> AsyncIterator[Any]:
    """A bleak transport and one bare phone peripheral (no protocol running)."""
    world = RadioWorld(tmp_path, clock_ms=clock_ms_from_trio(), snoop_dir=captures)
    try:
        central = await world.start_central(bluez_read_echo=peripheral.pop("echo", False))
        device = await world.radio.powered("phone", pacing_for(PROFILES["android"]))
        phone = BumblePeripheral(device, **peripheral)
        await phone.advertise("stranger")
        yield central, phone
    finally:
        world.close()


async def test_values_never_exceed_512_bytes(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with _raw(tmp_path, captures, att_mtu=517) as (central, phone):
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        link = await central.connect(sighting)
        assert link.att_mtu == 517
        assert link.payload_size == 512  # not 514: GATT values stop at 512
        with pytest.raises(ValueError, match="limit 512"):
            await link.send(bytes(513))
        peer = await phone.accept()
        for size in (1, 200, 512):
            await link.send(bytes([size % 256]) * size)
            assert len(await peer.receive()) == size
        await peer.send(bytes(512))  # and notifications of 512 come back whole
        assert len(await link.receive()) == 512
        assert phone.largest_write == 512
        await link.aclose()


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (b"\x81\x05", "speaks protocol versions [5]"),
        (b"\xff\x00", "not a version list"),
    ],
)
async def test_a_phone_with_a_bad_info_characteristic_is_refused(
    aio: Any, *, autojump_clock: Any, tmp_path: Path, captures: Path, info: bytes, why: str
) -> None:
    async with _raw(tmp_path, captures) as (central, phone):
        phone.info.value = info
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        with pytest.raises(ConnectFailed, match=re.escape(why)) as failed:
            await central.connect(sighting)
        assert not failed.value.transient  # the head unit will not retry soon


async def test_att_errors_from_the_phone_reach_the_caller(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    async with _raw(tmp_path, captures) as (central, phone):
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        link = await central.connect(sighting)
        with pytest.raises(BleakGATTProtocolError) as error:  # from-phone is notify only
            await trio_asyncio.aio_as_trio(link.client.read_gatt_char)(str(FROM_PHONE_UUID))
        assert error.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
        peer = await phone.accept()
        await peer.send(b"still fine")  # the link survived the error
        assert await link.receive() == b"still fine"
        await link.aclose()


async def test_a_read_while_notifying_does_not_corrupt_the_stream(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """Older BlueZ delivers a read's result to the notify callback of the characteristic
    read, too. The transport only reads the info characteristic, which never notifies."""
    async with _raw(tmp_path, captures, echo=True, from_phone_readable=True) as (
        central,
        phone,
    ):
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        link = await central.connect(sighting)
        peer = await phone.accept()
        sent = [bytes([i]) * 100 for i in range(50)]
        got: list[bytes] = []

        async def notify() -> None:
            for value in sent:
                await peer.send(value)

        async def read_info_meanwhile() -> None:
            for _ in range(20):
                info = await trio_asyncio.aio_as_trio(link.client.read_gatt_char)(str(INFO_UUID))
                assert bytes(info) == b"\x83\x00\x01\x02"

        async with trio.open_nursery() as n:
            n.start_soon(notify)
            n.start_soon(read_info_meanwhile)
            while len(got) < len(sent):
                got.append(await link.receive())
        assert got == sent
        # the rig does reproduce the quirk: reading the notifying characteristic echoes
        value = await trio_asyncio.aio_as_trio(link.client.read_gatt_char)(str(FROM_PHONE_UUID))
        assert await link.receive() == bytes(value) == sent[-1]
        await link.aclose()


async def test_tshark_reads_the_bridge_writes_and_notifications_in_a_capture(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path, tshark: str
) -> None:
    async with _raw(tmp_path, captures) as (central, phone):
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        link = await central.connect(sighting)
        peer = await phone.accept()
        for i in range(5):
            await link.send(b"to phone %d" % i)
            assert await peer.receive() == b"to phone %d" % i
            await peer.send(b"from phone %d" % i)
            assert await link.receive() == b"from phone %d" % i
        write_handle = phone.to_phone.handle
        notify_handle = phone.from_phone.handle
        await link.aclose()
    capture = captures / "head-unit.btsnoop"
    fields = ["btatt.opcode", "btatt.handle", "btatt.value"]
    out = subprocess.run(
        [tshark, "-r", str(capture), "-Y", "btatt", "-T", "fields"]
        + [a for f in fields for a in ("-e", f)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    writes = [bytes.fromhex(v) for op, h, v in rows if op == "0x52" and int(h, 16) == write_handle]
    notes = [bytes.fromhex(v) for op, h, v in rows if op == "0x1b" and int(h, 16) == notify_handle]
    assert writes == [b"to phone %d" % i for i in range(5)]
    assert notes == [b"from phone %d" % i for i in range(5)]


@pytest.mark.parametrize("apple", [True, False])
async def test_an_iphone_is_hinted_by_apples_company_id(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path, apple: bool
) -> None:
    async with _raw(tmp_path, captures, apple=apple) as (central, _phone):
        with trio.move_on_after(2.0):  # the scan response follows the advertisement
            async with central.scan() as sightings:
                async for sighting in sightings:
                    if sighting.apple:
                        break
        assert sighting.apple is apple
        assert sighting.platform_hint == ("ios" if apple else "android")
        assert sighting.name == "stranger"


@pytest.mark.parametrize("where", ["connect", "start_notify"])
async def test_an_unexpected_error_from_the_stack_is_a_failed_connection(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path, where: str
) -> None:
    # bleak and dbus-fast fail in more ways than they document (an AssertionError on a
    # D-Bus reply, a KeyError in bleak's cache): one phone's connection fails, the head
    # unit goes on, and a connection already made is ended.
    async with _raw(tmp_path, captures) as (central, phone):
        base = central.client_backend

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("bleak internals")

        central.client_backend = type("Broken", (base,), {where: broken})
        async with central.scan() as sightings:
            sighting = await sightings.receive()
        with pytest.raises(ConnectFailed, match="bleak internals") as failed:
            await central.connect(sighting)
        assert failed.value.transient
        await trio.sleep(1.0)
        assert phone.connected == 0
        assert not phone.device.connections


async def test_connections_started_at_once_reach_their_own_phones(
    aio: Any, autojump_clock: Any, tmp_path: Path, captures: Path
) -> None:
    """A controller takes one LE Create Connection at a time; four started together (as
    the head unit does when four phones come into range) are queued, and each link
    carries its own phone's packets."""
    world = RadioWorld(tmp_path, clock_ms=clock_ms_from_trio(), snoop_dir=captures)
    try:
        central = await world.start_central()
        phones: dict[str, BumblePeripheral] = {}
        for i in range(4):
            device = await world.radio.powered(f"p{i}", pacing_for(PROFILES["android"]))
            phones[f"p{i}"] = phone = BumblePeripheral(device, att_mtu=185 + i)
            await phone.advertise(f"p{i}")
        sightings: dict[str, Sighting] = {}
        async with central.scan() as found:
            while len(sightings) < 4:
                s = await found.receive()
                sightings[s.name or ""] = s
        links: dict[str, Any] = {}

        async def connect(name: str) -> None:
            links[name] = await central.connect(sightings[name])

        overlap = [0, 0]  # connects in progress now, most at once
        base = central.client_backend
        assert base is not None

        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            overlap[0] += 1
            overlap[1] = max(overlap)
            try:
                return await base.connect(self, *args, **kwargs)
            finally:
                overlap[0] -= 1

        central.client_backend = type("Counted", (base,), {"connect": counted})
        async with trio.open_nursery() as nursery:
            for name in sightings:
                nursery.start_soon(connect, name)
        # the central, too, makes one attempt at a time: on BlueZ they queue in the
        # kernel, and each attempt's timeout must count from its own turn
        assert overlap == [0, 1]
        for name, phone in phones.items():
            peer = await phone.accept()
            await peer.send(name.encode())
            assert await links[name].receive() == name.encode()
            assert links[name].att_mtu == phone.att_mtu
        for link in links.values():
            await link.aclose()
    finally:
        world.close()
