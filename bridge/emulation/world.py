"""A virtual BLE world in one process: a head unit and emulated phones on a Bumble radio.

The head unit runs the bleak transport (``transports/ble.py``) with the bleak backend
over Bumble, so the code that drives BlueZ on a Raspberry Pi is the code under test;
each phone is an :class:`~bridge.emulation.emulator.EmulatedPhone` on its own virtual controller,
paced like the simulated link profile it is given. Used by the tests and by
``bridge demo --radio bumble``. Run it inside ``trio_asyncio.open_loop()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.emulation.app_free_iphone import AppFreeIPhone
from bridge.emulation.emulator import EmulatedPhone, Show
from bridge.emulation.scenarios import Flavour
from bridge.radio_policy import HeadUnit, Policy
from pairing.keylog import KeyLog
from pairing.trust import TrustStore
from transports.ble import BleakCentral
from transports.bleak_bumble import BumbleClient, BumbleScanner
from transports.bumble_apple import BumbleApple
from transports.bumble_phone import BumbleListener, BumblePeripheral
from transports.bumble_radio import Pacing, VirtualRadio
from transports.link import PACKET_OVERHEAD
from transports.simulated import PROFILES, LinkProfile


def bleak_on(device: Any, *, bluez_read_echo: bool = False, mtu: int = 517) -> BleakCentral:
    return BleakCentral(
        scanner_backend=BumbleScanner,
        client_backend=BumbleClient,
        backend_kwargs={"bumble_device": device, "bluez_read_echo": bluez_read_echo, "mtu": mtu},
    )


def pacing_for(profile: LinkProfile) -> Pacing:
    """The Bumble link pacing equivalent to a simulated link profile: the same interval,
    and per event the L2CAP bytes the simulated link carries at its capacity (its
    PDUs per event and their airtime), so both links have the same raw capacity."""
    value = profile.best_value_size()
    per_event = profile.capacity() * profile.interval * (value + PACKET_OVERHEAD) / value
    return Pacing(
        interval=profile.interval,
        bytes_per_event=max(1, round(per_event)),
        supervision_timeout=profile.supervision_timeout,
    )


class RadioWorld:
    def __init__(
        self, data_dir: Path, *, clock_ms: Callable[[], int], snoop_dir: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.clock_ms = clock_ms
        self.radio = VirtualRadio(snoop_dir=snoop_dir)
        self.phones: dict[str, EmulatedPhone] = {}
        self.central: Any = None

    async def start_central(self, *, bluez_read_echo: bool = False) -> BleakCentral:
        self.central = await self.radio.powered("head-unit")
        return bleak_on(self.central, bluez_read_echo=bluez_read_echo)

    def listener(self) -> BumbleListener:
        """The head unit as GATT server (v1) on the same device as :meth:`start_central`."""
        assert self.central is not None, "start_central first"
        return BumbleListener(self.central)

    def apple(self, bonds: Any) -> BumbleApple:
        """App-free iPhones' side of the head unit (bonding, ANCS, AMS) on the device of
        :meth:`start_central`, keeping its bonds in ``bonds`` (a ``BondStore``)."""
        assert self.central is not None, "start_central first"
        return BumbleApple(self.central, bonds)

    async def add_app_free_iphone(self, name: str) -> AppFreeIPhone:
        """An iPhone with no bridge app (MTU 185, 30 ms): it bonds and serves ANCS, AMS."""
        device = await self.radio.powered(name, pacing_for(PROFILES["ios"]))
        return AppFreeIPhone(device, folder=self.data_dir / "app-free-iphone")

    def add_phone(
        self,
        key: str,
        flavour: Flavour,
        profile: LinkProfile,
        *,
        show: Show | None = None,
        role: str = "peripheral",
    ) -> EmulatedPhone:
        """A phone on its own controller: advertising for the head unit to connect
        (``role="peripheral"``, protocol v0's way) or connecting to the head unit
        (``"central"``, v1: it asks for the profile's MTU)."""
        device = self.radio.device(key, pacing_for(profile))
        folder = self.data_dir / key
        if role == "central":
            central = bleak_on(device, mtu=profile.att_mtu)
            phone = EmulatedPhone(None, flavour, folder, clock_ms=self.clock_ms, show=show,
                                  central=central, device=device)  # fmt: skip
        else:
            peripheral = BumblePeripheral(
                device, att_mtu=profile.att_mtu, apple=flavour.platform == "ios"
            )
            phone = EmulatedPhone(peripheral, flavour, folder, clock_ms=self.clock_ms, show=show)
        self.phones[key] = phone
        return phone

    def head_unit(
        self,
        radio: BleakCentral | None,
        *,
        pairing_mode: bool = True,
        policy: Policy | None = None,
        keylog: KeyLog | None = None,
        **kw: Any,
    ) -> HeadUnit:
        trust = TrustStore(self.data_dir / "head-unit")
        return HeadUnit(
            radio,
            trust,
            self.data_dir / "head-unit",
            pairing_mode=pairing_mode,
            policy=policy,
            keylog=keylog,
            clock_ms=self.clock_ms,
            **kw,
        )

    def lose_link(self, key: str) -> None:
        """The phone ``key`` drives into a tunnel: a supervision timeout follows."""
        device = self.phones[key].device
        assert device is not None
        self.radio.lose_link(device, self.central)

    def close(self) -> None:
        self.radio.close()
