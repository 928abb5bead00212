"""An iPhone without the app on the Bumble virtual radio: it finds the car by its ANCS
solicitation, bonds (numeric comparison through the head unit's prompt), and the head
unit reads its notifications and music over ANCS and AMS (transports/bumble_apple.py)."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from bumble import hci
from bumble.core import ProtocolError as BumbleProtocolError
from bumble.device import Connection

from bridge.api import ApiState
from bridge.emulation.app_free_iphone import AppFreeIPhone
from bridge.emulation.world import RadioWorld, pacing_for
from bridge.phone_device import CommandFailed
from bridge.radio_policy import Phone
from bridge.wire import apple as a
from bridge.wire import messages as m
from bridge.wire.apple_client import NEGATIVE, POSITIVE, AppleClient, AppleEvent
from bridge.wire.gatt import head_unit_advertising
from pairing.bonds import BondStore
from pairing.handshake import CodeToConfirm
from transports.bumble_apple import AppleConsumer, Bonding, BumbleApple, FileKeyStore
from transports.bumble_phone import BumbleListener
from transports.simulated import PROFILES


@dataclass
class Car:
    world: RadioWorld
    listener: BumbleListener
    bonding: Bonding
    iphone: AppFreeIPhone
    nursery: trio.Nursery
    compared: list[int] = field(default_factory=list)
    answer: bool = True
    events: list[AppleEvent] = field(default_factory=list)
    consumers: list[AppleConsumer] = field(default_factory=list)
    client: AppleClient = field(default_factory=AppleClient)

    async def compare(self, connection: Connection, number: int) -> bool:
        self.compared.append(number)
        return self.answer

    async def _on_events(self, events: list[AppleEvent]) -> None:
        self.events.extend(events)

    async def serve(self) -> AppleConsumer:
        """The head unit's side of the iPhone's latest connection, once encrypted."""
        with trio.fail_after(30):
            while True:
                connections = list(self.world.central.connections.values())
                if connections and connections[-1].is_encrypted:
                    break
                await trio.sleep(0.1)
        consumer = AppleConsumer(connections[-1], self.world.clock_ms, self.client)
        self.consumers.append(consumer)
        self.nursery.start_soon(consumer.run, self._on_events)
        with trio.fail_after(30):
            await consumer.ready.wait()
        return consumer

    async def until(self, predicate: Any, limit: float = 30) -> None:
        with trio.fail_after(limit):
            while not predicate():
                await trio.sleep(0.1)

    def notes(self) -> list[m.Notification]:
        return [e for e in self.events if isinstance(e, m.Notification)]


@asynccontextmanager
async def car(tmp_path: Path, *, pairing_mode: bool = True) -> AsyncIterator[Car]:
    world = RadioWorld(tmp_path, clock_ms=lambda: int(trio.current_time() * 1000))
    try:
        await world.start_central()
        listener = world.listener()
        device = await world.radio.powered("iphone", pacing_for(PROFILES["ios"]))
        iphone = AppFreeIPhone(device)
        async with trio.open_nursery() as nursery:
            rig = Car(world, listener, None, iphone, nursery)  # type: ignore[arg-type]
            rig.bonding = Bonding(world.central, BondStore(tmp_path), rig.compare)
            rig.bonding.pairing_mode = pairing_mode
            name = "Demo car" if pairing_mode else None
            await listener.advertise(*head_unit_advertising(bytes(6), name, solicit_ancs=True))
            yield rig
            nursery.cancel_scope.cancel()
    finally:
        world.close()


async def test_an_iphone_bonds_and_its_day_reaches_the_car(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with car(tmp_path) as rig:
        iphone = rig.iphone
        address = await iphone.find_car()  # Settings -> Bluetooth lists the car
        assert address == str(rig.world.central.random_address)
        await iphone.connect(address)
        assert rig.compared == iphone.delegate.numbers and len(rig.compared) == 1
        assert await rig.bonding.bonded() == [str(iphone.device.random_address)]
        keys = tmp_path / "bonds.json"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        consumer = await rig.serve()
        assert consumer.has_ancs and consumer.has_ams
        # the link outlives the 10 s a central gets to subscribe to the bridge's service
        await trio.sleep(15)
        assert rig.world.central.connections

        await iphone.message("Ana", "On my way")
        call = await iphone.incoming_call("Mum")
        await iphone.calendar("Dentist", "In 15 minutes")
        await rig.until(lambda: len(rig.notes()) == 3)
        message, ringing, reminder = rig.notes()
        assert (message.app, message.sender, message.text) == ("Messages", "Ana", "On my way")
        assert ringing.category is m.Category.INCOMING_CALL
        assert [x.label for x in ringing.actions or []] == ["Answer", "Decline"]
        assert (reminder.app, reminder.title) == ("Calendar", "Dentist")

        # answering from the car is the call's positive action; the iPhone removes it
        consumer.client.perform_action(str(call), POSITIVE)
        consumer.kick()
        await rig.until(lambda: m.NotificationRemoved(str(call)) in rig.events)
        assert iphone.actions == [(call, a.ActionId.POSITIVE)]

        await iphone.play("Miles Davis", "Kind of Blue", "So What", 562.0, elapsed=10.0)
        await rig.until(lambda: consumer.client.now_playing().title == "So What")
        playing = consumer.client.now_playing()
        assert (playing.artist, playing.state) == ("Miles Davis", m.PlaybackState.PLAYING)
        consumer.client.media(m.MediaCommand.PAUSE)
        consumer.kick()
        await rig.until(lambda: iphone.services.commands == [a.RemoteCommand.PAUSE])
        await rig.until(lambda: consumer.client.now_playing().state is m.PlaybackState.PAUSED)
        assert consumer.protocol_errors == 0 and consumer.dropped == 0


async def test_a_bonded_iphone_reconnects_without_a_prompt_and_nothing_twice(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with car(tmp_path) as rig:
        iphone = rig.iphone
        address = await iphone.find_car()
        await iphone.connect(address)
        await rig.serve()
        await iphone.message("Ana", "On my way")
        await rig.until(lambda: len(rig.notes()) == 1)
        await iphone.disconnect()
        await rig.until(lambda: not rig.world.central.connections)
        # while away, another message; back in the car, the iPhone encrypts with the bond
        await iphone.message("Ana", "Parked outside")
        rig.bonding.pairing_mode = False  # nothing to confirm on a reconnection
        await iphone.connect(address)
        await rig.serve()
        await rig.until(lambda: len(rig.notes()) == 2)
        await trio.sleep(2)
        assert [n.text for n in rig.notes()] == ["On my way", "Parked outside"]
        assert len(rig.compared) == 1  # one prompt, at the first bonding
        # the keys outlive the head unit: a new store reads them back
        assert [name for name, _ in await FileKeyStore(BondStore(tmp_path)).get_all()] == [
            str(iphone.device.random_address)
        ]


@pytest.mark.parametrize("how", ["outside pairing mode", "the user rejects"])
async def test_no_bond_without_pairing_mode_and_the_users_yes(
    aio: Any, autojump_clock: Any, tmp_path: Path, how: str
) -> None:
    async with car(tmp_path, pairing_mode=how != "outside pairing mode") as rig:
        rig.answer = False
        address = str(rig.world.central.random_address)
        with pytest.raises(BumbleProtocolError):  # SMP: pairing failed
            await rig.iphone.connect(address)
        assert await rig.bonding.bonded() == []
        assert len(rig.compared) == (0 if how == "outside pairing mode" else 1)
        # the unencrypted connection is dropped like any central that does not subscribe
        await rig.until(lambda: not rig.world.central.connections, limit=30)


async def test_just_works_is_refused(aio: Any, autojump_clock: Any, tmp_path: Path) -> None:
    """A device that cannot compare digits (no display, no buttons) gets no bond: with
    nobody looking, anyone in range could bond."""
    async with car(tmp_path) as rig:
        rig.iphone.delegate.io_capability = rig.iphone.delegate.NO_OUTPUT_NO_INPUT
        with pytest.raises(BumbleProtocolError):  # SMP: pairing failed
            await rig.iphone.connect(str(rig.world.central.random_address))
        assert await rig.bonding.bonded() == [] and rig.compared == []
        assert rig.bonding.refused == 1


async def test_hostile_values_from_a_bonded_iphone_are_counted_and_survived(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with car(tmp_path) as rig:
        iphone = rig.iphone
        await iphone.connect(await iphone.find_car())
        consumer = await rig.serve()
        gatt = iphone.gatt
        aio_ = trio_asyncio.aio_as_trio
        for junk in (b"", b"\x00\x01", b"\x07" * 8, bytes(300)):
            await aio_(iphone.device.notify_subscribers)(gatt.notification_source, junk)
        for junk in (b"\x00\xff\xff\xff\xff\x01", b"\x09"):
            await aio_(iphone.device.notify_subscribers)(gatt.data_source, junk)
        for junk in (b"\x05", b"\x02\x02\x00\xff\xfe"):
            await aio_(iphone.device.notify_subscribers)(gatt.entity_update, junk)
        await rig.until(lambda: consumer.protocol_errors >= 6)
        await iphone.message("Ana", "Still here")
        await rig.until(lambda: [n.text for n in rig.notes()] == ["Still here"])
        assert rig.world.central.connections  # the link survived
        consumer.client.perform_action(rig.notes()[0].id, NEGATIVE)
        consumer.kick()
        await rig.until(lambda: iphone.actions != [])


async def test_the_head_unit_serves_an_app_free_iphone_as_a_device(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """Through the head unit: the bonding prompt is its own (the API's), the iPhone
    becomes a device with the kind "ancs", its notifications and music come out of
    ``HeadUnit.events`` like a phone's, and what ANCS cannot do fails in one sentence."""
    world = RadioWorld(tmp_path, clock_ms=lambda: int(trio.current_time() * 1000))
    prompts: list[tuple[Phone, CodeToConfirm]] = []

    async def confirm(phone: Phone, event: CodeToConfirm) -> bool:
        prompts.append((phone, event))
        return True

    try:
        await world.start_central()
        bonds = BondStore(tmp_path / "head-unit")
        hu = world.head_unit(
            None, listener=world.listener(), apple=BumbleApple(world.central, bonds),
            bonds=bonds, confirm=confirm,
        )  # fmt: skip
        api = ApiState(hu, world.clock_ms)
        device = await world.radio.powered("iphone", pacing_for(PROFILES["ios"]))
        iphone = AppFreeIPhone(device)
        events: list[tuple[Phone, object]] = []

        async def record() -> None:
            async for phone, event in hu.events:
                events.append((phone, event))
                api.on_device_event(phone, event)

        async with trio.open_nursery() as nursery:
            await nursery.start(hu.run)
            nursery.start_soon(record)
            await iphone.connect(await iphone.find_car())
            assert [e.code.replace(" ", "") for _, e in prompts] == [
                f"{iphone.delegate.numbers[0]:06d}"
            ]
            with trio.fail_after(30):
                while not any(p.connected for p in hu.phones.values()):
                    await trio.sleep(0.1)
            await iphone.message("Ana", "On my way")
            await iphone.play("Miles Davis", "Kind of Blue", "So What", 562.0)
            with trio.fail_after(30):
                while not any(isinstance(e, m.Notification) for _, e in events):
                    await trio.sleep(0.1)
            phone = next(p for p in hu.phones.values() if p.connected)
            assert phone.platform == "ios" and phone.name == "iphone"  # its GAP name
            state = api.snapshot()["devices"]
            assert len(state) == 1 and state[0]["kind"] == "ancs"
            assert state[0]["offers"] == ["notifications", "media"]
            assert state[0]["inbox"][0]["text"] == "On my way"
            with trio.fail_after(30):
                while "pause" not in (api.snapshot()["devices"][0]["media_commands"] or []):
                    await trio.sleep(0.1)
            assert api.snapshot()["devices"][0]["now_playing"]["title"] == "So What"
            await phone.device.media(m.MediaCommand.PAUSE)  # a write without response
            with trio.fail_after(5):
                while iphone.services.commands != [a.RemoteCommand.PAUSE]:
                    await trio.sleep(0.05)
            with pytest.raises(CommandFailed, match="bridge app"):
                await phone.device.reply(state[0]["inbox"][0]["id"], text="ok")
            with pytest.raises(CommandFailed, match="does not offer"):
                await phone.device.media(m.MediaCommand.SHUFFLE)
            await phone.device.dismiss(state[0]["inbox"][0]["id"])  # its negative action
            assert [act for _, act in iphone.actions] == [a.ActionId.NEGATIVE]
            # out of range and back: the device goes offline, then is served again unasked
            await iphone.disconnect()
            with trio.fail_after(30):
                while phone.connected:
                    await trio.sleep(0.1)
            assert not api.snapshot()["devices"][0]["connected"]
            with pytest.raises(CommandFailed, match="not connected"):
                await phone.device.media(m.MediaCommand.PLAY)
            await iphone.connect(str(world.central.random_address))
            with trio.fail_after(30):
                while not phone.connected:
                    await trio.sleep(0.1)
            await iphone.message("Ben", "Back in range")
            with trio.fail_after(30):
                while "Back in range" not in [
                    n["text"] for n in api.snapshot()["devices"][0]["inbox"]
                ]:
                    await trio.sleep(0.1)
            assert len(prompts) == 1 and phone.device.links == 2
            # the bond outlives the head unit: a new one lists the iPhone, offline
            again = world.head_unit(None, bonds=BondStore(tmp_path / "head-unit"))
            assert [p.name for p in again.phones.values()] == ["iphone"]
            nursery.cancel_scope.cancel()
    finally:
        world.close()


async def test_service_changed_is_followed(aio: Any, autojump_clock: Any, tmp_path: Path) -> None:
    """iOS may take ANCS and AMS away and bring them back, with a Service Changed
    indication: the head unit finds them again, subscribes again, and shows nothing
    twice."""
    async with car(tmp_path) as rig:
        iphone = rig.iphone
        await iphone.connect(await iphone.find_car())
        consumer = await rig.serve()
        assert consumer.watching_changes
        await iphone.message("Ana", "On my way")
        await rig.until(lambda: len(rig.notes()) == 1)
        await iphone.gatt.services_changed()
        await rig.until(lambda: consumer.services_changed == 1)
        await iphone.message("Ana", "Parked")
        await rig.until(lambda: len(rig.notes()) == 2)
        await trio.sleep(2)
        assert [n.text for n in rig.notes()] == ["On my way", "Parked"]
        assert consumer.protocol_errors == 0 and consumer.client.errors == 0


async def test_a_bonded_iphone_at_a_new_private_address_is_resolved(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """An iPhone comes back from a fresh resolvable private address: the head unit
    resolves it with the IRK from bonding, finds the bond, and serves it unprompted."""
    async with car(tmp_path) as rig:
        iphone = rig.iphone
        address = await iphone.find_car()
        await iphone.connect(address)
        await rig.serve()
        await iphone.disconnect()
        await rig.until(lambda: not rig.world.central.connections)
        rpa = hci.Address.generate_private_address(iphone.device.irk)
        assert rpa.is_resolvable and str(rpa) != str(iphone.device.random_address)
        await trio_asyncio.aio_as_trio(iphone.device.send_sync_command)(
            hci.HCI_LE_Set_Random_Address_Command(random_address=rpa)
        )
        iphone.device.random_address = rpa
        rig.bonding.pairing_mode = False
        await iphone.connect(address)
        consumer = await rig.serve()
        assert consumer.connection.peer_resolvable_address == rpa
        bonded = await rig.bonding.bonded()
        assert str(consumer.connection.peer_address) in bonded
        await iphone.message("Ana", "Back again")
        await rig.until(lambda: [n.text for n in rig.notes()] == ["Back again"])
        assert len(rig.compared) == 1


async def test_one_bonding_prompt_at_a_time(aio: Any, autojump_clock: Any, tmp_path: Path) -> None:
    """Two devices asking to bond at once: the second is refused while the first prompt
    is open, so a stranger cannot stack prompts behind the user's."""
    world = RadioWorld(tmp_path, clock_ms=lambda: int(trio.current_time() * 1000))
    answer = trio.Event()
    prompts: list[CodeToConfirm] = []

    async def slow_yes(phone: Phone, event: CodeToConfirm) -> bool:
        prompts.append(event)
        await answer.wait()
        return True

    try:
        await world.start_central()
        bonds = BondStore(tmp_path / "head-unit")
        hu = world.head_unit(None, listener=world.listener(),
                             apple=world.apple(bonds), bonds=bonds, confirm=slow_yes)  # fmt: skip
        first = await world.add_app_free_iphone("first")
        second = AppFreeIPhone(await world.radio.powered("second", pacing_for(PROFILES["ios"])))
        failures: list[str] = []

        async def bond(iphone: AppFreeIPhone) -> None:
            try:
                await iphone.connect(str(world.central.random_address))
            except BumbleProtocolError as e:
                failures.append(f"{iphone.device.name}: {e}")

        async with trio.open_nursery() as nursery:
            await nursery.start(hu.run)
            nursery.start_soon(bond, first)
            with trio.fail_after(30):
                while not prompts:
                    await trio.sleep(0.1)
            await bond(second)  # while the first prompt is open
            assert [f.split(":")[0] for f in failures] == ["second"] and len(prompts) == 1
            answer.set()
            with trio.fail_after(30):
                while [b.name for b in bonds.bonds()] != ["first"]:  # named by its GAP name
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert hu.strangers_ignored == 1
    finally:
        world.close()
