"""An emulated phone on a BLE radio: the phone app of ``bridge.emulation.phone_app`` behind a Bumble
peripheral (``transports/bumble_phone.py``).

Strategy. :class:`EmulatedPhone` keeps one :class:`~bridge.session.PeerSession` for its
head unit (its queues outlive links) and loops: advertise with a fresh recognition token,
wait for a head unit to connect and subscribe, run the phone side of the handshake and
the protocol on that link, and when the link ends advertise again. Its user confirms a
pairing code by default (``confirm``); the trust store in ``data_dir`` remembers head
units across runs. Advertising can be switched off and on, as a phone does when its app
is closed or Bluetooth is turned off.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from bridge.emulation.phone_app import PhoneApp
from bridge.emulation.scenarios import Flavour
from bridge.endpoint import PeerEvent
from bridge.session import LinkDown, PeerSession
from bridge.store import MessageStore
from bridge.wire import messages as m
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, Role
from pairing.privacy import identify_tag, make_token, resolve_raw
from pairing.trust import TrustStore
from transports.ble import BleakCentral, Sighting
from transports.bumble_host import power_on
from transports.bumble_phone import BumblePeripheral
from transports.link import ConnectFailed, Link

Show = Callable[[str, str], None]
ConfirmCode = Callable[[CodeToConfirm], Awaitable[bool]]


async def _tap_confirm(event: CodeToConfirm) -> bool:
    return True


class PairingPhoneApp(PhoneApp):
    """A phone app whose user answers pairing prompts, and which remembers head units."""

    def __init__(
        self,
        *args: Any,
        trust: TrustStore,
        confirm: ConfirmCode = _tap_confirm,
        show: Show | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.trust = trust
        self.confirm = confirm
        self.show = show
        self.paired_with: list[str] = []

    async def on_event(self, event: PeerEvent) -> None:
        await super().on_event(event)  # the phone app's own (its shortcuts follow HELLO)
        if isinstance(event, CodeToConfirm):
            accepted = await self.confirm(event)
            if self.show is not None:
                tap = "Confirm" if accepted else "Reject"
                self.show("PHONE", f"shows code {event.code}; its user taps {tap}")
            self.session.confirm_pairing(accepted)
        elif isinstance(event, Authenticated):
            self.trust.record(event)
            if event.paired_now:
                self.paired_with.append(event.peer.name)


class EmulatedPhone:
    """An emulated phone: with a ``peripheral`` it advertises and waits for head units to
    connect (protocol v0's roles); with a ``central`` (v1) it scans for its car's
    advertising and connects to it, as an iOS app in the background does."""

    def __init__(
        self,
        peripheral: BumblePeripheral | None,
        flavour: Flavour,
        data_dir: Path,
        *,
        clock_ms: Callable[[], int],
        confirm: ConfirmCode = _tap_confirm,
        show: Show | None = None,
        central: BleakCentral | None = None,
        device: Any = None,  # its Bumble device (as a central: the one ``central`` drives)
        retry: float = 1.0,
    ) -> None:
        if (peripheral is None) == (central is None):
            raise ValueError("a phone is either a peripheral or a central")
        self.peripheral = peripheral
        self.central = central
        self.device = device if device is not None else peripheral.device if peripheral else None
        self.role = "peripheral" if peripheral is not None else "central"
        self.retry = retry  # seconds between connection attempts as a central
        self.connect_failures: list[str] = []
        # Android phones advertise each set from a new private address; iPhones keep
        # theirs for about 15 minutes.
        self.rotate_address = flavour.platform == "android"
        self.flavour = flavour
        self.trust = TrustStore(data_dir, role="phone")
        hello = m.Hello(
            m.PROTOCOL_VERSIONS, flavour.platform, flavour.name, flavour.model, clock_ms=clock_ms()
        )
        self.session = PeerSession(flavour.name, hello=hello)
        self.app = PairingPhoneApp(
            self.session,
            store=MessageStore(data_dir),
            clock_ms=clock_ms,
            trust=self.trust,
            confirm=confirm,
            show=show,
        )
        self.links: list[LinkDown] = []
        self.tokens: list[str] = []
        self._add_a_car = False
        self._advertise = True
        self._changed = trio.Event()
        self.connected = trio.Event()
        self._link: Link | None = None

    @property
    def pairing_mode(self) -> bool:
        """The app's "add a car" mode: only then does it answer a first pairing (Noise
        XX), which would show its static key and name to whoever connected. On while it
        knows no head unit, as an app just installed is, or when asked for."""
        return self._add_a_car or not self.trust.trusted_keys()

    @pairing_mode.setter
    def pairing_mode(self, on: bool) -> None:
        self._add_a_car = on

    async def drop_link(self) -> None:
        """End the current connection from the phone's side (Bluetooth switched off)."""
        if self._link is not None:
            await self._link.aclose()

    def set_background(self, on: bool) -> None:
        """The app leaves the foreground (or comes back). An iPhone then advertises for it
        without a name and with its service UUID only in Apple's overflow area
        (PROTOCOL.md 2.3); a central's scan with a service filter and a pending
        connection go on, as iOS allows."""
        if self.peripheral is not None:
            self.peripheral.background = on
        self._changed.set()
        self._changed = trio.Event()

    def set_advertising(self, on: bool) -> None:
        """Advertise (the app open, Bluetooth on) or not; a connected link is unaffected."""
        self._advertise = on
        self._changed.set()
        self._changed = trio.Event()

    def _handshake(self) -> Handshake:
        return Handshake(
            Role.PHONE,
            self.trust.identity,
            name=self.flavour.name,
            platform=self.flavour.platform,
            trusted=self.trust.trusted_keys(),
            allow_pairing=self.pairing_mode,
            random=os.urandom,
            irk=self.trust.irk,
        )

    async def _serve(self, link: Link) -> None:
        self.connected.set()
        self._link = link
        self.links.append(await self.session.run_link(link, handshake=self._handshake()))
        self._link = None
        self.connected = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.central is not None:
            await self._run_central(task_status)
            return
        assert self.peripheral is not None
        await self.peripheral.power_on()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.app.run)
            task_status.started()
            while True:
                if not self._advertise:
                    await self.peripheral.stop_advertising()
                    await self._changed.wait()
                    continue
                token = make_token(self.trust.irk, os.urandom)
                self.tokens.append(token)
                await self.peripheral.advertise(token, fresh_address=self.rotate_address)
                link = None
                with trio.CancelScope() as waiting:
                    changed = self._changed

                    async def stop_on_change(
                        changed: trio.Event = changed, waiting: trio.CancelScope = waiting
                    ) -> None:
                        await changed.wait()
                        waiting.cancel()

                    async with trio.open_nursery() as inner:
                        inner.start_soon(stop_on_change)
                        link = await self.peripheral.accept()
                        inner.cancel_scope.cancel()
                if link is None:
                    continue
                await self.peripheral.stop_advertising()
                await self._serve(link)

    # -- as a central (v1) -----------------------------------------------------------

    def _is_our_car(self, sighting: Sighting) -> bool:
        """A head unit's advertising whose token resolves with a car we paired with, or,
        while adding a car, any head unit in pairing mode (it advertises its name)."""
        if sighting.car_token is None:
            return False  # a phone advertising, not a car
        if resolve_raw(sighting.car_token, self.trust.irks()) is not None:
            return True
        return self.pairing_mode and bool(sighting.name)

    async def _find_car(self) -> Sighting:
        assert self.central is not None
        while True:
            if not self._advertise:  # the app closed or Bluetooth off: no scanning either
                await self._changed.wait()
                continue
            async with self.central.scan() as sightings:
                async for sighting in sightings:
                    if self._is_our_car(sighting):
                        return sighting

    async def _run_central(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.central is not None and self.device is not None
        await power_on(self.device)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.app.run)
            task_status.started()
            while True:
                sighting = await self._find_car()
                try:
                    link = await self.central.connect(
                        sighting, identify=lambda challenge: identify_tag(self.trust.irk, challenge)
                    )
                except ConnectFailed as e:
                    self.connect_failures.append(str(e))
                    await trio.sleep(self.retry)
                    continue
                await self._serve(link)
                await trio.sleep(self.retry)  # as an app waits before it connects again
