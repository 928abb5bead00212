"""The host side of Bumble, for the head unit's radio and the emulated phones: a Bumble
device on a controller (a USB dongle, a serial port, a TCP socket, or one of the virtual
radio's), powering it on, closing its transport, and the flow control that lets an urgent
packet go first (:func:`acl_room`).

Kept apart from ``transports/bumble_radio.py`` (the virtual radio: Bumble's controllers
and a paced link) so that a head unit driving a real controller through Bumble does not
load the controller emulation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from bumble import att, gatt_client, hci
from bumble.device import Device
from bumble.host import Host
from bumble.snoop import BtSnooper
from bumble.transport import open_transport

#: HCI reason of a supervision timeout.
CONNECTION_TIMEOUT = 0x08

#: ACL packets of one connection a host lets its controller hold before it says a write
#: or notification can go (see :func:`acl_room`).
IN_FLIGHT = 2


_on_gatt_pdu = gatt_client.Client.on_gatt_pdu


def _gatt_pdu_unless_given_up(self: gatt_client.Client, att_pdu: att.ATT_PDU) -> None:
    """Bumble 0.0.236's GATT client sets the result of its pending request's future when
    the response comes, even when that future was cancelled (a request given up on, its
    task not yet resumed to clear it, as when a radio is torn down mid-command): the
    asyncio callback then raises ``InvalidStateError`` into the loop. Such a response has
    nobody waiting for it and is dropped."""
    pending = self.pending_response
    if att_pdu.op_code in att.ATT_RESPONSES and pending is not None and pending.done():
        logging.getLogger(__name__).debug("dropped a GATT response nobody waits for")
        return
    _on_gatt_pdu(self, att_pdu)


gatt_client.Client.on_gatt_pdu = _gatt_pdu_unless_given_up  # type: ignore[method-assign]


class DualRoleDevice(Device):
    """A Bumble device that may connect as a central while centrals connect to it.

    Two gaps of Bumble 0.0.236 meet there. ``Device.connect_le`` takes the next
    connection event of the device, whatever it is, as the one it made, so a central
    connecting to us while our attempt is pending would be handed to the caller as the
    phone it asked for: a connection in which this device is the peripheral is not shown
    to a pending ``connect_le``'s listener. And an attempt given up on by cancellation
    (not by its timeout) is never cancelled in the controller, which may complete it
    later for a host that no longer knows its own address type (an assertion): such a
    connection is taken and disconnected at once."""

    def emit(self, event: str, *args: Any, **kwargs: Any) -> bool:
        if (
            event == self.EVENT_CONNECTION
            and args
            and getattr(args[0], "role", None) == hci.Role.PERIPHERAL
        ):  # (``le_connecting`` is set only after the listener: not a test of "pending")
            hidden = [
                handler
                for handler in self.listeners(event)
                if getattr(handler, "__qualname__", "").startswith("Device.connect_le.")
            ]
            for handler in hidden:
                self.remove_listener(event, handler)
            try:
                return bool(super().emit(event, *args, **kwargs))
            finally:
                for handler in hidden:
                    self.add_listener(event, handler)
        return bool(super().emit(event, *args, **kwargs))

    def on_le_connection(self, connection_handle: int, *args: Any, **kwargs: Any) -> None:
        role = kwargs.get("role", args[3] if len(args) > 3 else None)
        if role != hci.Role.CENTRAL or self.connect_own_address_type is not None:
            super().on_le_connection(connection_handle, *args, **kwargs)
            return
        self.connect_own_address_type = hci.OwnAddressType.RANDOM  # ours was random
        try:
            super().on_le_connection(connection_handle, *args, **kwargs)
        finally:
            self.connect_own_address_type = None
        orphan = self.connections.get(connection_handle)
        if orphan is not None:
            asyncio.get_running_loop().create_task(_drop(orphan))


async def _drop(connection: Any) -> None:
    try:
        await connection.disconnect(0x13)  # remote user terminated
    except Exception as e:  # already gone
        logging.getLogger(__name__).debug("dropping a connection given up on: %s", e)


async def acl_room(host: Host, handle: int, in_flight: int = IN_FLIGHT) -> None:
    """Wait until the host holds no ACL packet of connection ``handle`` back from its
    controller and the controller holds fewer than ``in_flight`` of them: the moment a
    stack says a write or notification can go.

    Without the second condition an urgent packet chosen now would wait behind every
    packet in the controller's buffers (8 here, shared by its connections; on a link
    carrying 5 packets per event that is two events). A controller asks for more as it
    sends, so a short queue still fills each connection event."""
    loop = asyncio.get_running_loop()
    while True:
        queue = host.get_data_packet_queue(handle)
        if queue is None or (
            not any(h == handle for _, h in queue._packets)
            and _in_flight(queue, handle) < in_flight
        ):
            return
        flowed: asyncio.Future[None] = loop.create_future()

        def wake(*_: Any, flowed: asyncio.Future[None] = flowed) -> None:
            if not flowed.done():
                flowed.set_result(None)

        queue.once("flow", wake)
        # a disconnection flushes the queue without a "flow" event: look again now and then
        await asyncio.wait([flowed], timeout=0.1)
        if not flowed.done():
            queue.remove_listener("flow", wake)


def _in_flight(queue: Any, handle: int) -> int:
    state = queue._connection_state.get(handle)
    return int(state.in_flight) if state is not None else 0


def transport_hint(spec: str, error: BaseException) -> str:
    """What went wrong opening a Bumble transport, and what to try."""
    kind = spec.split(":", 1)[0]
    if isinstance(error, ValueError | IndexError) and kind in ("tcp-client", "tcp-server"):
        return f"write it as {kind}:HOST:PORT"
    if kind == "usb" or type(error).__module__.startswith("usb1"):
        return (
            f"{error}: is the dongle plugged in, and may this user open it? (lsusb shows "
            "it; a udev rule or the plugdev group gives access)"
        )
    if kind == "serial":
        return f"{error}: is the device there, and may this user open it (group dialout)?"
    return f"{error} (transports: usb:0, serial:/dev/ttyACM0, tcp-client:HOST:PORT, ...)"


@asynccontextmanager
async def hci_device(
    spec: str, name: str, address: str = "C0:DE:C0:DE:00:01", *, capture: Path | None = None
) -> AsyncIterator[Device]:
    """A Bumble device on a real or remote controller (call from trio, inside
    trio-asyncio's loop): ``spec`` is any Bumble transport, such as ``usb:0``,
    ``serial:/dev/ttyACM0``, ``tcp-client:127.0.0.1:9000`` or ``android-netsim``.
    ``capture``: write the device's HCI traffic there (btsnoop, Wireshark and bridge-dump
    read it). Raises ``OSError`` with Bumble's reason when the transport does not open."""
    try:
        transport = await trio_asyncio.aio_as_trio(open_transport)(spec)
    except Exception as e:
        raise OSError(f"cannot open Bluetooth transport {spec!r}: {transport_hint(spec, e)}") from e
    stream = capture.open("wb") if capture is not None else None
    try:
        device = DualRoleDevice.with_hci(
            name,
            hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS),
            transport.source,
            transport.sink,
        )
        if stream is not None:
            device.host.snooper = BtSnooper(stream)
        yield device
    finally:
        with trio.CancelScope(shield=True):
            await close_transport(transport)
        if stream is not None:
            stream.close()


async def power_on(device: Device) -> None:
    """Power a device on (call from trio, inside trio-asyncio's loop)."""
    await trio_asyncio.aio_as_trio(device.power_on)()


async def close_transport(transport: Any) -> None:
    """Close a Bumble transport, and let asyncio run the callbacks that really close its
    socket (they are scheduled for the loop's next iteration)."""
    await trio_asyncio.aio_as_trio(transport.close)()
    for _ in range(3):
        await trio_asyncio.aio_as_trio(asyncio.sleep)(0)
