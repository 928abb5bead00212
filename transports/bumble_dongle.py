"""The head unit's radio on a controller that Bumble drives (``radio.backend = "bumble"``):
bleak's API over a Bumble central, as in the tests, without the virtual radio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from transports.ble import BleakCentral
from transports.bleak_bumble import BumbleClient, BumbleScanner
from transports.bumble_host import hci_device, power_on
from transports.bumble_phone import BumbleListener


@asynccontextmanager
async def bumble_central(transport: str, name: str) -> AsyncIterator[BleakCentral]:
    """The head unit's radio on ``transport`` (``usb:0``, ``tcp-client:...``; call from
    trio, inside trio-asyncio's loop). Raises ``OSError`` when the transport does not
    open."""
    async with bumble_radio(transport, name) as (central, _listener):
        yield central


@asynccontextmanager
async def bumble_radio(
    transport: str, name: str
) -> AsyncIterator[tuple[BleakCentral, BumbleListener]]:
    """Both roles on one controller: the central (scanning, connecting) and the
    listener (advertising, the GATT server for phones that connect)."""
    async with hci_device(transport, name) as device:
        listener = BumbleListener(device)
        await power_on(device)
        central = BleakCentral(
            scanner_backend=BumbleScanner,
            client_backend=BumbleClient,
            backend_kwargs={"bumble_device": device},
        )
        yield central, listener
