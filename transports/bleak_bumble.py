"""A bleak backend that drives a Bumble central: bleak's API over Bumble's BLE stack.

``BleakScanner(..., backend=BumbleScanner, bumble_device=central)`` and
``BleakClient(device, backend=BumbleClient, bumble_device=central)`` run the exact code
that talks to BlueZ on a Raspberry Pi against a Bumble device instead: the virtual radio
of the tests and the demo, or (product use) a USB Bluetooth dongle that Bumble drives
directly when BlueZ gets in the way. Nothing here mocks bleak: bleak's own front-end
classes call these backends.

The client behaves like bleak's BlueZ backend where the bridge depends on it:

- ``mtu_size`` is 23 (with bleak's warning) until ``_acquire_mtu()`` is called, as on
  BlueZ; the MTU exchange itself (517 requested) happens on connect, as BlueZ does it.
- ``bluez_read_echo=True`` reproduces BlueZ's habit (before bleak 2.1) of delivering a
  read's result also to the notify callback of a characteristic that is notifying.
- ATT error responses raise :class:`bleak.exc.BleakGATTProtocolError`.
- write without response waits while the host holds packets of the connection back
  from the controller: back-pressure, as CoreBluetooth gives it.

Must run in an asyncio loop (under trio, trio-asyncio's).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
import weakref
from collections.abc import Callable
from typing import Any, cast

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import gatt_client, hci
from bumble.att import ATT_Error
from bumble.core import AdvertisingData, BaseBumbleError
from bumble.device import Advertisement, Connection, Device, Peer

from transports.bumble_host import acl_room

log = logging.getLogger(__name__)

DEFAULT_MTU = 23
REQUESTED_MTU = 517

_PROPERTY_NAMES = {
    0x01: "broadcast",
    0x02: "read",
    0x04: "write-without-response",
    0x08: "write",
    0x10: "notify",
    0x20: "indicate",
    0x40: "authenticated-signed-writes",
    0x80: "extended-properties",
}


def _advertisement_data(adv: Advertisement) -> AdvertisementData:
    data = adv.data
    name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
        AdvertisingData.SHORTENED_LOCAL_NAME
    )
    uuids: list[str] = []
    for kind in (
        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    ):
        for found in data.get_all(kind):
            for uuid in found if isinstance(found, list) else [found]:
                uuids.append(uuid.to_hex_str("-").lower())
    manufacturer: dict[int, bytes] = {}
    for company, payload in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
        manufacturer[company] = bytes(payload)
    return AdvertisementData(
        local_name=str(name) if name is not None else None,
        manufacturer_data=manufacturer,
        service_data={},
        service_uuids=uuids,
        tx_power=None,
        rssi=adv.rssi,
        platform_data=(adv,),
    )


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: ``bumble_device`` is a powered-on Bumble device."""

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        bumble_device: Device,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._device = bumble_device
        self._active = scanning_mode == "active"
        self._listening = False

    def _on_advertisement(self, adv: Advertisement) -> None:
        # Bumble's accumulator already merged a scan response into the advertisement
        data = _advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = str(adv.address)
        device = self.create_or_update_device(key, key, data.local_name, adv.address, data)
        self.call_detection_callbacks(device, data)

    async def start(self) -> None:
        self.seen_devices = {}
        if not self._listening:
            self._device.on(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
            self._listening = True
        await self._device.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        if self._listening:
            self._device.remove_listener(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
            self._listening = False
        if self._device.is_scanning:
            await self._device.stop_scanning()


def _protocol_error(e: ATT_Error) -> BleakGATTProtocolError:
    return BleakGATTProtocolError(int(e.error_code))


_CONNECT_LOCKS: weakref.WeakKeyDictionary[Device, asyncio.Lock] = weakref.WeakKeyDictionary()


def _connect_lock(device: Device) -> asyncio.Lock:
    lock = _CONNECT_LOCKS.get(device)
    if lock is None:
        lock = _CONNECT_LOCKS[device] = asyncio.Lock()
    return lock


class BumbleClient(BaseBleakClient):
    """bleak client backend: ``bumble_device`` is the powered-on central."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        bumble_device: Device,
        bluez_read_echo: bool = False,
        mtu: int = REQUESTED_MTU,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._device = bumble_device
        details = (
            address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._peer_address: hci.Address | str = (
            details if isinstance(details, hci.Address) else self.address
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._mtu_size: int | None = None
        self._notifying: dict[int, Callable[[bytes], None]] = {}
        self._echo = bluez_read_echo
        self._requested_mtu = mtu  # what this central asks for (an iPhone: 185)

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        if self._mtu_size is None:
            warnings.warn(
                "Using default MTU value. Call _acquire_mtu() or set _mtu_size first to avoid "
                "this warning.",
                stacklevel=2,
            )
            return DEFAULT_MTU
        return self._mtu_size

    async def _acquire_mtu(self) -> None:
        """As on BlueZ: only now does ``mtu_size`` say the negotiated MTU."""
        if self._connection is None:
            raise BleakError("not connected")
        self._mtu_size = int(self._connection.att_mtu)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        try:
            # one LE Create Connection at a time per controller, as BlueZ queues them: a
            # controller refuses a second (Command Disallowed), and Bumble 0.0.236's host
            # then fails on the first one's completion (own_address_type is None)
            async with _connect_lock(self._device):
                connection = await self._device.connect(self._peer_address, timeout=self._timeout)
        except (TimeoutError, BaseBumbleError, hci.HCI_Error) as e:
            raise BleakError(f"could not connect to {self.address}: {e}") from e
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            peer = self._peer = Peer(connection)
            await peer.request_mtu(self._requested_mtu)
            await self._discover(peer)
        except ATT_Error as e:
            await self.disconnect()
            raise _protocol_error(e) from e
        except BaseBumbleError as e:
            await self.disconnect()
            raise BleakError(f"service discovery on {self.address} failed: {e}") from e

    def _on_disconnection(self, reason: int) -> None:
        was = self._connection is not None
        self._connection = None
        self._peer = None
        self._mtu_size = None
        self._notifying.clear()
        log.debug("%s disconnected (HCI 0x%02X)", self.address, reason)
        if was and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _discover(self, peer: Peer) -> None:
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services():
            bservice = BleakGATTService(
                service, service.handle, str(service.uuid.to_hex_str("-")).lower()
            )
            collection.add_service(bservice)
            for char in await peer.discover_characteristics(service=service):
                props = [n for bit, n in _PROPERTY_NAMES.items() if char.properties & bit]
                bchar = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    normalize_uuid_str(char.uuid.to_hex_str("-")),
                    props,  # type: ignore[arg-type]
                    self._max_write_size,
                    bservice,
                )
                collection.add_characteristic(bchar)
                for desc in await peer.discover_descriptors(char):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            desc,
                            desc.handle,
                            normalize_uuid_str(desc.type.to_hex_str("-")),
                            bchar,
                        )
                    )
        self.services = collection

    def _max_write_size(self) -> int:
        # what bleak reports on BlueZ and Bumble alike: MTU - 3, even above 512
        return (self._connection.att_mtu if self._connection else DEFAULT_MTU) - 3

    def _require(self) -> tuple[Connection, Peer]:
        if self._connection is None or self._peer is None:
            raise BleakError(f"not connected to {self.address}")
        return self._connection, self._peer

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.disconnect()
        except (BaseBumbleError, hci.HCI_Error) as e:
            log.debug("disconnect: %s", e)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        connection, _ = self._require()
        await connection.pair()

    async def unpair(self) -> None:
        raise NotImplementedError("the Bumble backend keeps no bonds to remove")

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        _, peer = self._require()
        proxy = cast(gatt_client.CharacteristicProxy[bytes], characteristic.obj)
        try:
            value = bytes(await peer.read_value(proxy))
        except ATT_Error as e:
            raise _protocol_error(e) from e
        echo = self._notifying.get(proxy.handle)
        if self._echo and echo is not None:  # BlueZ's PropertiesChanged for the read
            echo(value)
        return bytearray(value)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        _, peer = self._require()
        try:
            return bytearray(await peer.read_value(descriptor.obj))
        except ATT_Error as e:
            raise _protocol_error(e) from e

    async def wait_write_room(self) -> None:
        """Wait until a write without response would leave at once: no ACL packet of
        this connection is held back by the host (iOS's ``canSendWriteWithoutResponse``;
        not part of bleak's API, the bleak transport uses it when a backend has it)."""
        connection, _ = self._require()
        await acl_room(self._device.host, connection.handle)

    async def wait_sent(self) -> None:
        """Wait until the controller has sent every ACL packet of this connection (not
        part of bleak's API: the bleak transport drains with it before disconnecting)."""
        connection, _ = self._require()
        await acl_room(self._device.host, connection.handle, 1)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        connection, peer = self._require()
        if not response:
            await acl_room(self._device.host, connection.handle)
            connection, peer = self._require()
        try:
            await peer.write_value(characteristic.obj, bytes(data), with_response=response)
        except ATT_Error as e:
            raise _protocol_error(e) from e

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        _, peer = self._require()
        try:
            await peer.write_value(descriptor.obj, bytes(data), with_response=True)
        except ATT_Error as e:
            raise _protocol_error(e) from e

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        _, peer = self._require()
        proxy = cast(gatt_client.CharacteristicProxy[bytes], characteristic.obj)

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        try:
            await peer.subscribe(proxy, deliver)
        except ATT_Error as e:
            raise _protocol_error(e) from e
        self._notifying[proxy.handle] = deliver

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        _, peer = self._require()
        proxy = cast(gatt_client.CharacteristicProxy[bytes], characteristic.obj)
        deliver = self._notifying.pop(proxy.handle, None)
        try:
            await peer.unsubscribe(proxy, deliver)
        except ATT_Error as e:
            raise _protocol_error(e) from e
