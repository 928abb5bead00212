"""The phone under test, when it is this project's own emulator: the phone side of the
protocol (``bridge/emulation``) answering each link the conformance tool opens on a
simulated BLE link, in virtual time. ``fault`` gives it one deliberate fault, so that the
tests can show each case checks what it names."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import trio

from bridge.connection import Connection, ConnectionConfig
from bridge.emulation.emulator import PairingPhoneApp
from bridge.emulation.scenarios import FLAVOURS, shortcuts
from bridge.emulation.world import RadioWorld, bleak_on, pacing_for
from bridge.endpoint import clock_ms_from_trio
from bridge.session import PeerSession
from bridge.wire import messages as m
from bridge.wire.channels import Channel, ControlType
from bridge.wire.codec import Message
from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import decode_frame, encode_frame
from bridge.wire.gatt import head_unit_advertising
from bridge.wire.mux import ChannelMux
from pairing.encrypted_records import EncryptedRecords
from pairing.handshake import Handshake, Role
from pairing.privacy import identify_tag, make_raw_token, make_token, resolve_raw
from pairing.trust import TrustStore
from transports.ble import BleakCentral, Sighting
from transports.bumble_host import power_on
from transports.bumble_phone import BumbleListener, BumblePeripheral
from transports.bumble_radio import VirtualRadio
from transports.link import ConnectFailed, Link
from transports.simulated import PROFILES, SimulatedLinkPair

#: The faults an emulated phone can be given, and what each breaks (PROTOCOL.md).
FAULTS = {
    "no-keepalive": "never sends KEEPALIVE when it has nothing else to send (5)",
    "no-idle-timeout": "keeps a silent link open for ever (5)",
    "no-ack": "never sends a standalone acknowledgement (5)",
    "pairs-any-time": "answers XX 1 outside its pairing mode, with its static key (8.1)",
    "ignores-busy-lane": "drops a new record on a lane still busy instead of closing (3)",
    "ignores-idle-lane": "drops a continuation on an idle lane instead of closing (3)",
    "ignores-huge-record": "drops a record announced over 16384 bytes instead of closing (3)",
    "ignores-credits": "goes on sending data segments when its credits are spent (3)",
    "accepts-replay": "accepts a record whose counter it has already seen (8.4)",
    "no-rekey": "keeps the first key past record 65535 (8.4)",
    "no-navigation-result": "never answers a guidance request (6.2)",
    "no-identify": "as a GATT client, subscribes without writing its identify tag (1.2)",
    "wrong-close-code": "closes for a segment out of sequence with code 1, not 2 (7)",
    "shortcuts-to-any-version": "sends its shortcuts to a head unit without version 2 (6.1)",
}

#: The faults a head unit under test can be given (a subset of the phone's; without
#: acknowledgements every round trip of a phone fails, not one case).
HEAD_UNIT_FAULTS = ("no-keepalive", "no-idle-timeout", "accepts-replay", "no-rekey")

#: Faults of the phone's connection, put in once the link has one (see _spoil).
_CONNECTION_FAULTS = {"ignores-credits", "accepts-replay", "no-rekey"}


class _Lenient:
    """One kind of bad segment from the head unit, dropped before the phone sees it: a
    phone that ignores what it must refuse."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.left: dict[int, int] = {}  # lane -> record bytes still to come

    def wrap(self, link: Link) -> None:
        original = link.receive

        async def receive() -> bytes:
            while True:
                packet = await original()
                if not self._dropped(packet):
                    return packet

        link.receive = receive  # type: ignore[method-assign]

    def _dropped(self, packet: bytes) -> bool:
        if not packet:
            return False
        kind, lane = packet[0] >> 6, (packet[0] >> 4) & 3
        if kind == 1 and len(packet) >= 3:  # FIRST
            total = packet[1] | ((packet[2] & 0x7F) << 8)
            data = len(packet) - 3 - (1 if packet[2] & 0x80 else 0)
            if self.fault == "ignores-huge-record" and total > 16384:
                return True
            if self.fault == "ignores-busy-lane" and self.left.get(lane, 0) > 0:
                return True
            self.left[lane] = total - data
        elif kind == 0:  # CONT
            if self.fault == "ignores-idle-lane" and self.left.get(lane, 0) <= 0:
                return True
            self.left[lane] = self.left.get(lane, 0) - (len(packet) - 1)
        return False


def _misname_sequence_errors(link: Link) -> None:
    """The phone's plaintext CLOSE frames that say 2 (sequence) say 1 (malformed)."""
    send = link.send

    async def send_wrong(packet: bytes) -> None:
        head = 4 if len(packet) > 3 and packet[2] & 0x80 else 3
        if packet and packet[0] >> 6 == 1 and len(packet) > head:  # a FIRST segment
            try:
                frame = decode_frame(packet[head:])
            except ProtocolError:
                frame = None  # encrypted, or only the start of a record
            if (
                frame is not None
                and (frame.channel, frame.type) == (Channel.CONTROL, ControlType.CLOSE)
                and frame.body.get(0) == ErrorCode.SEQUENCE
            ):
                body = {**frame.body, 0: int(ErrorCode.MALFORMED)}
                record = encode_frame(dataclasses.replace(frame, body=body))
                packet = packet[:head] + record  # the same length: 2 and 1 are one byte
        await send(packet)

    link.send = send_wrong  # type: ignore[method-assign]


class EmulatorUnderTest:
    """Opens links to an emulated phone; run :meth:`run` in a nursery first."""

    def __init__(self, data_dir: Path, *, fault: str | None = None, profile: str = "ios") -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; the faults: {', '.join(FAULTS)}")
        self.fault = fault
        self.profile = PROFILES[profile]
        self.trust = TrustStore(data_dir, role="phone")
        config = ConnectionConfig(
            keepalive=math.inf if fault == "no-keepalive" else 5.0,
            idle_timeout=math.inf if fault == "no-idle-timeout" else 15.0,
        )
        mux = ChannelMux(ack_delay=math.inf if fault == "no-ack" else 0.05)
        clock = clock_ms_from_trio()
        hello = m.Hello(m.PROTOCOL_VERSIONS, "ios", "Conformance phone", "emulator",
                        clock_ms=clock())  # fmt: skip
        self.session = PeerSession("phone", mux=mux, config=config, hello=hello)
        self.app = PairingPhoneApp(self.session, clock_ms=clock, trust=self.trust)
        if fault == "no-navigation-result":
            apply = self.app.apply

            async def unanswered(message: Message, seq: int | None) -> None:
                if not isinstance(message, m.GuidanceRequest):
                    await apply(message, seq)

            self.app.apply = unanswered  # type: ignore[method-assign]
        if fault == "shortcuts-to-any-version":
            app = self.app

            async def to_anyone() -> None:
                await app.send(m.Shortcuts([
                    m.Shortcut(s.id, s.label, s.kind) for s in app.shortcuts.values()
                ]))  # fmt: skip

            self.app._publish_shortcuts = to_anyone  # type: ignore[method-assign]
        self._nursery: trio.Nursery | None = None
        self._spoiled: list[Connection] = []
        self.links = 0
        self.stimulated = 0

    @property
    def description(self) -> str:
        fault = f", with the fault '{self.fault}': {FAULTS[self.fault]}" if self.fault else ""
        return f"this project's emulated phone on a simulated {self.profile.name} link{fault}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.app.run)
            task_status.started()
            await trio.sleep_forever()

    def _handshake(self) -> Handshake:
        in_pairing_mode = self.fault == "pairs-any-time" or not self.trust.trusted_keys()
        return Handshake(
            Role.PHONE, self.trust.identity, name="Conformance phone", platform="ios",
            trusted=self.trust.trusted_keys(), allow_pairing=in_pairing_mode,
            random=os.urandom, irk=self.trust.irk,
        )  # fmt: skip

    async def connect(self, att_mtu: int | None = None) -> Link:
        """A new link to the phone (as a head unit connecting): the head unit's end.
        ``att_mtu``: the MTU this link ends up with (else the phone's profile's)."""
        assert self._nursery is not None, "run() first"
        self.links += 1
        profile = self.profile if att_mtu is None else self.profile.with_mtu(att_mtu)
        pair = SimulatedLinkPair(profile, seed=self.links)
        self._nursery.start_soon(self._serve, pair.peripheral)
        return pair.central

    async def stimulate(self) -> None:
        """The phone navigates, plays a track and posts a message (with an action and
        canned replies), as its user would."""
        await self.app.set_route(m.RouteStatus(m.RouteState.ACTIVE, "Conformance Street 1",
                                               remaining_m=1200, remaining_s=180))  # fmt: skip
        await self.app.play([m.NowPlaying("Conformance", "The Emulator", duration_ms=60_000)])
        self.stimulated += 1
        if not self.app.shortcuts:  # what it offers the car's launcher (version 2)
            await self.app.offer_shortcuts(shortcuts(self.app, FLAVOURS["ios"]))
        await self.app.notify(m.Notification(
            f"cf-{self.stimulated}", "Messages", m.Category.MESSAGE, "Running late?", 0,
            sender="Conformance", actions=[m.Action("read", "Mark as read",
                                                    m.ActionKind.MARK_READ)],
            canned_replies=["On my way"],
        ))  # fmt: skip

    async def _serve(self, link: Link) -> None:
        if self.fault in _LANE_FAULTS:
            _Lenient(self.fault).wrap(link)
        if self.fault == "wrong-close-code":
            _misname_sequence_errors(link)
        async with trio.open_nursery() as nursery:
            if self.fault in _CONNECTION_FAULTS:
                nursery.start_soon(self._spoil)
            await self.session.run_link(link, handshake=self._handshake())
            nursery.cancel_scope.cancel()

    async def _spoil(self) -> None:
        """Put the fault into each connection that serves the phone, once its records are
        encrypted (the handshake is over)."""
        while True:
            conn = self.session.connection
            if conn is not None and conn not in self._spoiled:
                records = conn.records
                if isinstance(records, EncryptedRecords):
                    self._spoiled.append(conn)
                    _spoil(self.fault, conn, records)
            await trio.sleep(0.01)


_LANE_FAULTS = {"ignores-busy-lane", "ignores-idle-lane", "ignores-huge-record"}


def _spoil(fault: str | None, conn: Connection, records: EncryptedRecords) -> None:
    if fault == "ignores-credits":  # a spent credit is never missed
        segmenter, emit = conn.segmenter, conn.segmenter._emit

        def emit_anyway(*args: Any) -> bytes:
            packet = emit(*args)
            segmenter._credits = max(segmenter._credits, 1)
            return packet

        segmenter._emit = emit_anyway  # type: ignore[method-assign, assignment]
    elif fault == "accepts-replay":  # forgets which counters it has seen
        open_record = records.open

        def open_again(record: bytes) -> bytes | None:
            records._seen = 0
            return open_record(record)

        records.open = open_again  # type: ignore[method-assign]
    elif fault == "no-rekey":
        records._rekey_interval = 1 << 62


class RadioEmulatorUnderTest(EmulatorUnderTest):
    """The same emulated phone on the Bumble virtual radio: its GATT server and
    advertising (``transports/bumble_phone.py``, paced like the profile, MTUs up to 517),
    and the tool's head unit the bleak transport over a Bumble controller, the code that
    drives BlueZ on a Pi. Like a phone's app it serves one head unit at a time and starts
    advertising again, with a fresh token, when a link ends."""

    def __init__(
        self, data_dir: Path, *, fault: str | None = None, profile: str = "ios",
        radio: VirtualRadio | None = None,
    ) -> None:  # fmt: skip
        """``radio``: put the phone on this radio (the BlueZ VM lane's, whose head unit is
        the kernel's hci0) instead of a world of its own with the tool's controller."""
        super().__init__(data_dir, fault=fault, profile=profile)
        self.data_dir = data_dir
        self.radio = radio
        self._device: Any = None  # the tool's controller
        self._phone: BumblePeripheral | None = None
        self.sighting: Sighting | None = None  # what the tool connected to, last
        self.tokens: list[str] = []

    @property
    def description(self) -> str:
        fault = f", with the fault '{self.fault}': {FAULTS[self.fault]}" if self.fault else ""
        return (
            f"this project's emulated phone on the Bumble virtual radio ({self.profile.name} "
            f"pacing; the tool connects with bleak over Bumble){fault}"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run inside ``transports.aio.asyncio_loop()`` (bleak and Bumble run in it), opened
        around the cases too."""
        world = RadioWorld(self.data_dir / "radio", clock_ms=clock_ms_from_trio())
        try:
            if self.radio is None:
                self._device = await world.radio.powered("head-unit")
            radio = self.radio or world.radio
            device = await radio.powered("conformance-phone", pacing_for(self.profile))
            self._phone = BumblePeripheral(device, apple=self.profile.name == "ios")
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.app.run)
                await self._advertise()
                nursery.start_soon(self._serve_each)
                task_status.started()
                await trio.sleep_forever()
        finally:
            world.close()

    async def _advertise(self) -> None:
        assert self._phone is not None
        token = make_token(self.trust.irk, os.urandom)
        self.tokens.append(token)
        await self._phone.advertise(token)

    async def _serve_each(self) -> None:
        assert self._phone is not None
        while True:
            link = await self._phone.accept()
            await self._phone.stop_advertising()
            await self._serve(link)
            await self._advertise()

    async def connect(self, att_mtu: int | None = None) -> Link:
        """Scan for the phone and connect as a head unit does, asking for ``att_mtu``
        (else 517)."""
        self.links += 1
        phone = PhoneUnderTest(lambda mtu: bleak_on(self._device, mtu=mtu or 517))
        link = await phone.connect(att_mtu)
        self.sighting = phone.sighting
        return link


class CentralEmulatorUnderTest(EmulatorUnderTest):
    """The emulated phone as a GATT client (PROTOCOL.md 1.2), as an iPhone's app is: on
    the Bumble virtual radio it scans for a head unit's advertising (2.2), connects to a
    car whose token it resolves (or, in its pairing mode, to one that shows a name),
    writes its identify tag and subscribes. The tool is the head unit as GATT server
    (``BumbleListener``); it advertises only while it waits for the phone in
    :meth:`connect`, so each case gets a connection of its own at the MTU it asks for."""

    phone_role = "central"

    def __init__(
        self, data_dir: Path, tool: TrustStore, *, fault: str | None = None,
        profile: str = "ios",
    ) -> None:  # fmt: skip
        super().__init__(data_dir, fault=fault, profile=profile)
        self.data_dir = data_dir
        self.tool = tool  # the head unit's identity: its IRK makes the tokens
        self._listener: BumbleListener | None = None
        self._device: Any = None  # the tool's controller
        self._central: BleakCentral | None = None
        self.identified: tuple[bytes, bytes] = (b"", b"")  # the last link's tag, challenge

    @property
    def description(self) -> str:
        fault = f", with the fault '{self.fault}': {FAULTS[self.fault]}" if self.fault else ""
        return (
            f"this project's emulated phone as a GATT client on the Bumble virtual radio "
            f"({self.profile.name} pacing, asking for MTU 517; the tool is the head unit's "
            f"GATT server){fault}"
        )

    @property
    def pairing_mode(self) -> bool:
        return self.fault == "pairs-any-time" or not self.trust.trusted_keys()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run inside ``transports.aio.asyncio_loop()``."""
        world = RadioWorld(self.data_dir / "radio", clock_ms=clock_ms_from_trio())
        try:
            self._device = await world.radio.powered("head-unit")
            self._listener = BumbleListener(self._device)
            device = await world.radio.powered("phone", pacing_for(self.profile))
            self._central = bleak_on(device, mtu=517)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.app.run)
                nursery.start_soon(self._connect_each)
                task_status.started()
                await trio.sleep_forever()
        finally:
            world.close()

    async def _find_car(self) -> Sighting:
        assert self._central is not None
        async with self._central.scan() as sightings:
            async for sighting in sightings:
                token = sighting.car_token
                if token is None:
                    continue  # a phone advertising, not a car
                if resolve_raw(token, self.trust.irks()) is not None:
                    return sighting
                if self.pairing_mode and sighting.name:
                    return sighting
        raise AssertionError("the scan ended")

    async def _connect_each(self) -> None:
        assert self._central is not None
        while True:
            sighting = await self._find_car()

            def tag(challenge: bytes) -> bytes:
                return identify_tag(self.trust.irk, challenge)

            try:
                identify = None if self.fault == "no-identify" else tag
                link = await self._central.connect(sighting, identify=identify)
            except ConnectFailed:
                await trio.sleep(1)
                continue
            await self._serve(link)
            await trio.sleep(1)  # as an app waits before it connects again

    async def connect(self, att_mtu: int | None = None, *, irk: bytes | None = None) -> Link:
        """Advertise as a head unit in pairing mode (a token of the tool's IRK, or of
        ``irk``: a stranger's) until the phone connects and subscribes; ``att_mtu``: the
        largest this head unit accepts."""
        assert self._listener is not None, "run() first"
        self.links += 1
        self._device.gatt_server.max_mtu = att_mtu or 517
        token = make_raw_token(irk or self.tool.irk, os.urandom)
        await self._listener.advertise(*head_unit_advertising(token, "Conformance"))
        try:
            with trio.fail_after(60):
                link = await self._listener.accept()
        finally:
            await self._listener.stop_advertising()
        self.identified = (link.tag, link.challenge)
        return link

    async def stranger_connects(self, limit: float) -> bool:
        """Whether the phone connects, within ``limit``, to a head unit it never paired
        with that advertises in pairing mode."""
        try:
            with trio.fail_after(limit):
                link = await self.connect(irk=os.urandom(16))
        except trio.TooSlowError:
            return False
        await link.aclose()
        return True


class PhoneUnderTest:
    """A phone (an app under development) reached with the head unit's bleak transport:
    on a Pi, BlueZ. The first advertiser of the bridge's service is the phone, or the one
    at ``address``. ``central_for(att_mtu)`` makes the transport for one connection (on
    BlueZ the stack picks the MTU itself: cases that need another one are skipped)."""

    def __init__(
        self,
        central_for: Callable[[int | None], BleakCentral],
        *,
        address: str | None = None,
        out: TextIO | None = None,
        stimulate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``stimulate``: how to make the phone publish (else its user is asked to)."""
        self.central_for = central_for
        self.address = address
        self.out = out
        self._stimulate = stimulate
        self.sighting: Sighting | None = None
        self.links = 0
        where = self.address or "the first phone advertising the bridge's service"
        self.description = f"{where}, through the head unit's bleak transport"

    async def stimulate(self) -> None:
        if self._stimulate is not None:
            await self._stimulate()
        elif self.out is not None:
            print("  on the phone now: start a route, play music and post a message", file=self.out)

    async def connect(self, att_mtu: int | None = None) -> Link:
        central = self.central_for(att_mtu)
        self.links += 1
        with trio.fail_after(30):
            async with central.scan() as sightings:
                async for sighting in sightings:
                    if self.address is None or sighting.address.upper() == self.address.upper():
                        self.sighting = sighting
                        break
            assert self.sighting is not None
            return await central.connect(self.sighting)


async def _confirm_every_code(phone: Any, event: Any) -> bool:
    return True


class HeadUnitUnderTest:
    """This project's head unit (``bridge.radio_policy.HeadUnit``) on the Bumble virtual
    radio, scanning through the bleak transport, in pairing mode, its user confirming
    every code; the tool is a phone (a Bumble GATT server) that advertises its token
    (``trust``: the tool's, as a phone) and waits for the head unit to connect. Each
    connection advertises from a fresh address, as Android phones do, so the head unit's
    backoff for one address does not slow the next case."""

    def __init__(
        self, data_dir: Path, trust: TrustStore, *, fault: str | None = None,
        profile: str = "android", phone_role: str = "peripheral",
    ) -> None:  # fmt: skip
        self.phone_role = phone_role
        self.sighting: Sighting | None = None  # the head unit's advertising, last seen
        self._last_stranger = -math.inf
        self._device: Any = None
        if fault is not None and fault not in HEAD_UNIT_FAULTS:
            raise ValueError(
                f"unknown fault {fault!r}; a head unit's: {', '.join(HEAD_UNIT_FAULTS)}"
            )
        self.fault = fault
        self._spoiled: list[Any] = []
        self.data_dir = data_dir
        self.trust = trust
        self.profile = PROFILES[profile]
        self._phone: BumblePeripheral | None = None
        self.head_unit: Any = None
        self.links = 0

    @property
    def description(self) -> str:
        fault = f", with the fault '{self.fault}': {FAULTS[self.fault]}" if self.fault else ""
        how = (
            "its GATT server; the tool a phone connecting to it as a GATT client"
            if self.phone_role == "central"
            else "its bleak transport; the tool a phone advertising its token"
        )
        return (
            f"this project's head unit on the Bumble virtual radio ({how}, with "
            f"{self.profile.name} pacing){fault}"
        )

    async def stimulate(self) -> None:
        """Nothing to do: the cases against a head unit publish, they do not ask."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run inside ``transports.aio.asyncio_loop()``."""
        world = RadioWorld(self.data_dir / "radio", clock_ms=clock_ms_from_trio())
        try:
            central = await world.start_central()
            if self.phone_role == "central":  # the head unit only listens (1.2)
                self.head_unit = world.head_unit(None, pairing_mode=True, listener=world.listener(),
                                                 confirm=_confirm_every_code)  # fmt: skip
            else:
                self.head_unit = world.head_unit(central, pairing_mode=True,
                                                 confirm=_confirm_every_code)  # fmt: skip
            device = await world.radio.powered("conformance-phone", pacing_for(self.profile))
            self._device = device
            if self.phone_role != "central":
                self._phone = BumblePeripheral(device)
                await self._phone.power_on()
            else:
                await power_on(device)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.head_unit.run)
                nursery.start_soon(self._drain)
                if self.fault is not None:
                    nursery.start_soon(self._spoil)
                task_status.started()
                await trio.sleep_forever()
        finally:
            world.close()

    async def _drain(self) -> None:
        async for _ in self.head_unit.events:  # nobody shows them: keep it from waiting
            pass

    async def _spoil(self) -> None:
        """Put the fault into the head unit's session of each phone, and into each of
        their connections once its records are encrypted."""
        while True:
            phones = list(self.head_unit.phones.values())
            if self.head_unit.pairing is not None:
                phones.append(self.head_unit.pairing)
            for phone in phones:
                session = phone.session
                if session not in self._spoiled:
                    self._spoiled.append(session)
                    if self.fault == "no-keepalive":
                        session.config = dataclasses.replace(session.config, keepalive=math.inf)
                    elif self.fault == "no-idle-timeout":
                        session.config = dataclasses.replace(session.config, idle_timeout=math.inf)
                conn = session.connection
                fresh = conn is not None and conn not in self._spoiled
                if fresh and isinstance(conn.records, EncryptedRecords):
                    self._spoiled.append(conn)
                    _spoil(self.fault, conn, conn.records)
            await trio.sleep(0.01)

    async def connect(self, att_mtu: int | None = None) -> Link:
        """Advertise (a fresh token, a fresh address) until the head unit connects;
        ``att_mtu``: the largest this phone accepts (the head unit asks for 517)."""
        if self.phone_role == "central":
            return await self._connect_to_head_unit(att_mtu)
        assert self._phone is not None, "run() first"
        self.links += 1
        self._phone.device.gatt_server.max_mtu = att_mtu or 517
        await self._phone.advertise(make_token(self.trust.irk, os.urandom), fresh_address=True)
        try:
            with trio.fail_after(90):
                return await self._phone.accept()
        finally:
            await self._phone.stop_advertising()

    async def advertising(self, seconds: float) -> list[Sighting]:
        """What a phone's scan sees of the head unit's advertising in ``seconds``."""
        seen: list[Sighting] = []
        with trio.move_on_after(seconds):
            async with bleak_on(self._device).scan() as sightings:
                async for sighting in sightings:
                    if sighting.car_token is not None:
                        seen.append(sighting)
        return seen

    async def _connect_to_head_unit(self, att_mtu: int | None) -> Link:
        """As a phone's app does (1.2): find the head unit's advertising, connect asking
        for ``att_mtu`` (else 517), write the identify tag, subscribe. A stranger waits
        out the head unit's 30 s per address first (2.2's policy), as the tool's address
        does not change."""
        self.links += 1
        if not self.trust.trusted_keys():
            await trio.sleep_until(self._last_stranger + 31)
            self._last_stranger = trio.current_time()
        central = bleak_on(self._device, mtu=att_mtu or 517)

        def tag(challenge: bytes) -> bytes:
            return identify_tag(self.trust.irk, challenge)

        with trio.fail_after(60):
            async with central.scan() as sightings:
                async for sighting in sightings:
                    if sighting.car_token is not None:
                        break
            self.sighting = sighting
            return await central.connect(sighting, identify=tag)
