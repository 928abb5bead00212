"""bleak's BlueZ backend with the BlueZ quirks the head unit meets, worked around.

Only imported on Linux (``transports.ble`` connects with :class:`BlueZClient` there); all of it
runs on the asyncio side of trio-asyncio, inside bleak's own connect.

Unannounced connection (BlueZ 5.66, Raspberry Pi OS bookworm; the same family of bug is
open upstream as bluez/bluez#2485). When the kernel's ATT channel to the phone is up
before bluetoothd has handled the management "device connected" event, bluetoothd logs
``device_add_connection() ... is already connected`` and never emits
``PropertiesChanged(Connected=True)``, although the device is connected (a D-Bus ``Get``
of ``Connected`` says true, and the disconnection later emits ``Connected=False``). bleak
caches properties from signals, so its service discovery sees ``Connected`` false and
fails the connection with "failed to discover services, device disconnected", every
time the race is lost. Measured in the BlueZ VM lane (``tools/bluez_vm``) with BlueZ's
``btvirt`` controllers: 14 of 24 connections; with the lane's Bumble controller on
``/dev/vhci`` the race has not been seen, but nothing in BlueZ prevents it on a real
adapter. :class:`BlueZClient` asks BlueZ for ``Connected`` before discovering services
and, if bleak's cached value is stale, corrects it.

A device kept after its link (BlueZ 5.66, measured by ``bridge-conformance --radio
bluez`` in the VM lane). BlueZ keeps the object of a device it connected to, unbonded or
not, and with it two things that break the next link to the same address: its ``Name``
becomes the GAP Device Name read at connection (BlueZ prefers it to the Shortened Local
Name in the advertising, so the phone's token is no longer seen and a paired phone is
taken for a stranger), and the notification registration of the last link, which BlueZ
restores at the next connection (it writes the CCCD before discovery) beside the new
one, so every notification arrives twice ("segment seq 0, expected 1"). Phones that
rotate their address never meet it; an iPhone, whose address lasts about 15 minutes,
does. After every link to a device BlueZ has not bonded with (a phone with the bridge's
app: its pairing is the bridge's), :func:`forget_unbonded` removes the device
(``Adapter1.RemoveDevice``); the next advertisement makes it anew. Bonded devices (an
iPhone without the app, ANCS) are never removed.
"""

from __future__ import annotations

import logging
from typing import Any

from bleak.backends.bluezdbus import defs
from bleak.backends.bluezdbus.client import BleakClientBlueZDBus
from bleak.backends.bluezdbus.manager import get_global_bluez_manager
from bleak.backends.service import BleakGATTServiceCollection
from dbus_fast.aio import MessageBus
from dbus_fast.constants import MessageType
from dbus_fast.message import Message

log = logging.getLogger(__name__)


async def bluez_says_connected(bus: MessageBus, device_path: str) -> bool | None:
    """BlueZ's own ``Device1.Connected`` for this device (None if it cannot say)."""
    reply = await bus.call(
        Message(
            destination=defs.BLUEZ_SERVICE,
            path=device_path,
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=[defs.DEVICE_INTERFACE, "Connected"],
        )
    )
    if reply is None or reply.message_type != MessageType.METHOD_RETURN or not reply.body:
        return None
    value = getattr(reply.body[0], "value", None)
    return value if isinstance(value, bool) else None


async def correct_stale_connected(bus: MessageBus, device_path: str) -> bool:
    """If bleak's cache says disconnected but BlueZ says connected, believe BlueZ.
    True if the cache was corrected."""
    manager = await get_global_bluez_manager()
    cache: dict[str, dict[str, dict[str, Any]]] = getattr(manager, "_properties", {})
    device = cache.get(device_path, {}).get(defs.DEVICE_INTERFACE)
    if device is None or device.get("Connected") is not False:
        return False  # not stale, or not a state bleak keeps
    if await bluez_says_connected(bus, device_path) is not True:
        return False
    log.info(
        "BlueZ did not announce the connection to %s (a BlueZ race); using its Connected state",
        device_path,
    )
    device["Connected"] = True
    return True


async def forget_unbonded(device_path: str) -> bool:
    """Remove a device that BlueZ has not bonded with and that is not connected from its
    adapter, so that nothing of its last link is left (see the module's notes). True if
    removed; never raises."""
    try:
        manager = await get_global_bluez_manager()
        bus: MessageBus | None = getattr(manager, "_bus", None)
        cache: dict[str, dict[str, dict[str, Any]]] = getattr(manager, "_properties", {})
        device = cache.get(device_path, {}).get(defs.DEVICE_INTERFACE)
        if bus is None or device is None:
            return False
        if device.get("Paired") or device.get("Bonded") or device.get("Connected"):
            return False  # an iPhone's bond (ANCS), or a link that is up again
        reply = await bus.call(
            Message(
                destination=defs.BLUEZ_SERVICE,
                path=device["Adapter"],
                interface=defs.ADAPTER_INTERFACE,
                member="RemoveDevice",
                signature="o",
                body=[device_path],
            )
        )
    except Exception as e:  # BlueZ gone, or the device already: nothing to forget
        log.debug("forgetting %s: %r", device_path, e)
        return False
    removed = reply is not None and reply.message_type == MessageType.METHOD_RETURN
    log.debug("forgot %s after its link: %s", device_path, "done" if removed else reply)
    return removed


class BlueZClient(BleakClientBlueZDBus):
    """bleak's BlueZ client, with the stale ``Connected`` state corrected before service
    discovery, and the device forgotten after its link (see the module's notes)."""

    async def forget(self) -> None:
        """After the link: remove the device from BlueZ unless it is bonded."""
        if self._device_path is not None:
            await forget_unbonded(self._device_path)

    async def _get_services(
        self, dangerous_use_bleak_cache: bool = False, **kwargs: Any
    ) -> BleakGATTServiceCollection:
        if self.services is None and self._bus is not None and self._device_path is not None:
            await correct_stale_connected(self._bus, self._device_path)
        return await super()._get_services(dangerous_use_bleak_cache, **kwargs)
