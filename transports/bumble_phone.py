"""A BLE peripheral on Bumble serving the bridge's GATT layout: a phone's side of the
radio (protocol v0's layout), or the head unit's as GATT server (v1).

Strategy. :class:`BumblePeripheral` owns one Bumble :class:`~bumble.device.Device` (a phone
on a :class:`~transports.bumble_radio.VirtualRadio`, or the head unit's device, which
also scans and connects as a central). It serves the service of docs/PROTOCOL.md section
1 and advertises what it is given (section 2). Each central that connects and subscribes
to the from-server characteristic becomes a :class:`PeripheralLink`, handed to trio
through :meth:`BumblePeripheral.accept`: values written to the to-server characteristic
are its received packets, its sent packets are notifications. With ``identify`` (the
head unit, section 1.2) the service also has the identify characteristic: a read gives
the connection's challenge, drawn when it connected; one write before the subscription
gives the central's identify tag, which the link carries up. ``keep_advertising``
starts advertising again after each connection, so further centrals can connect. The
protocol itself (sessions, handshake, the phone's app) is the bridge's, in trio.

Notifications wait while the host's ACL queue for the connection is not empty, the
emulated equivalent of iOS's ``canSendWriteWithoutResponse``/Android's
``onNotificationSent`` pacing, so that urgent packets are chosen as late as possible.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

import trio
import trio_asyncio
from bumble import gatt, hci
from bumble.att import ATT_Error, ErrorCode
from bumble.core import AdvertisingData
from bumble.device import Connection, Device

from bridge.wire import gatt as layout
from transports.bumble_host import CONNECTION_TIMEOUT, acl_room
from transports.link import CallbackLink, CloseReason, LinkClosed

log = logging.getLogger(__name__)

#: Apple's Bluetooth SIG company identifier.
APPLE = 0x004C
REMOTE_USER_TERMINATED = 0x13
LOCAL_HOST_TERMINATED = 0x16


def background_ios_advertising() -> bytes:
    """What an iPhone advertises for an app in the background (PROTOCOL.md 2.3): flags and
    Apple's overflow area (company 0x004C, ``01``, a 16-byte bitmask with one hashed bit
    per service UUID; Apple's hash is undocumented, this one stands in for it). No local
    name, no service UUID list: a scan for the bridge's service does not find it."""
    bit = hashlib.sha256(layout.SERVICE_UUID.bytes).digest()[0] % 128
    mask = (1 << bit).to_bytes(16, "big")
    return bytes((2, 0x01, 0x06, 20, 0xFF)) + APPLE.to_bytes(2, "little") + b"\x01" + mask


def _reason(code: int) -> LinkClosed:
    if code == CONNECTION_TIMEOUT:
        return LinkClosed(CloseReason.LINK_LOSS, "supervision timeout (HCI 0x08)")
    # the other side of a peripheral link is its central: a head unit, or (v1) a phone
    return LinkClosed(CloseReason.PEER, f"disconnected by the central (HCI 0x{code:02X})")


class PeripheralLink(CallbackLink):
    """One central's connection (a head unit's, or a phone's to the head unit)."""

    def __init__(self, peripheral: BumblePeripheral, connection: Connection) -> None:
        super().__init__(queue=1024)  # credits bound what the central has in flight
        self._peripheral = peripheral
        self._connection = connection
        self.challenge = os.urandom(layout.CHALLENGE_SIZE)  # read from the identify characteristic
        self.tag = b""  # the central's identify tag, if it wrote one before subscribing
        self.subscribed = False

    @property
    def att_mtu(self) -> int:
        return int(self._connection.att_mtu)

    @property
    def peer(self) -> str:
        return str(self._connection.peer_address)

    def on_disconnection(self, reason: int) -> None:
        self.end(_reason(reason))

    async def wait_send_ready(self) -> None:
        if self._closed is not None:
            raise self._closed
        await trio_asyncio.aio_as_trio(acl_room)(
            self._peripheral.device.host, self._connection.handle
        )
        if self._closed is not None:
            raise self._closed

    async def drain(self) -> None:
        if self._closed is None:  # the controller has reported every packet sent
            await trio_asyncio.aio_as_trio(acl_room)(
                self._peripheral.device.host, self._connection.handle, 1
            )

    async def send(self, packet: bytes) -> None:
        if not packet or len(packet) > self.payload_size:
            raise ValueError(f"packet of {len(packet)} bytes, limit {self.payload_size}")
        await self.wait_send_ready()
        device, char = self._peripheral.device, self._peripheral.from_phone
        self._peripheral.last_notified = packet
        await trio_asyncio.aio_as_trio(device.notify_subscriber)(self._connection, char, packet)

    async def _disconnect(self) -> None:
        try:
            await trio_asyncio.aio_as_trio(self._connection.disconnect)(REMOTE_USER_TERMINATED)
        except Exception as e:  # already gone: the disconnection event says how
            log.debug("phone: disconnect: %s", e)


class BumblePeripheral:
    """A phone's BLE side: GATT server, advertising, and links to head units.

    Create it inside ``trio_asyncio.open_loop()``; ``att_mtu`` is the largest MTU the
    phone accepts (517 for the android profile, 185 for ios); ``apple`` adds Apple's
    company identifier to the scan response, as an iPhone's advertising shows.
    """

    def __init__(
        self,
        device: Device,
        *,
        att_mtu: int = 517,
        apple: bool = False,
        versions: tuple[int, ...] = layout.PROTOCOL_VERSIONS,
        from_phone_readable: bool = False,
        identify: bool = False,
        keep_advertising: bool = False,
    ) -> None:
        self.device = device
        self.att_mtu = att_mtu
        self.apple = apple
        self.keep_advertising = keep_advertising
        self.background = False  # an iPhone whose app is not in the foreground (2.3)
        self._advertising: tuple[bytes, bytes] | None = None  # what to advertise again
        self.name = ""
        self.largest_write = 0  # bytes: the largest value any head unit wrote
        self.dropped_early = 0  # values written before their writer subscribed
        self.readable_info = layout.info_value(versions)
        self._links: dict[int, PeripheralLink] = {}
        self._accept_send, self._accept_receive = trio.open_memory_channel[PeripheralLink](16)
        self.to_phone: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(layout.TO_PHONE_UUID),
            gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            gatt.Characteristic.Permissions.WRITEABLE,
            gatt.CharacteristicValue(write=self._on_write),
        )
        # Notify only; ``from_phone_readable`` (tests) also makes it readable, returning
        # the last value notified, as some phone stacks do. Bumble does not enforce the
        # properties itself: a read of a notify-only value answers Read Not Permitted.
        self.from_phone_readable = from_phone_readable
        self.last_notified = b""
        notify = gatt.Characteristic.Properties.NOTIFY
        readable = gatt.Characteristic.Properties.READ if from_phone_readable else notify & 0
        self.from_phone: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(layout.FROM_PHONE_UUID),
            notify | readable,
            gatt.Characteristic.Permissions.READABLE,
            gatt.CharacteristicValue(read=self._read_from_phone),
        )
        self.info: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(layout.INFO_UUID),
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.Permissions.READABLE,
            self.readable_info,
        )
        self.from_phone.on(self.from_phone.EVENT_SUBSCRIPTION, self._on_subscription)
        characteristics = [self.to_phone, self.from_phone, self.info]
        if identify:
            characteristics.append(
                gatt.Characteristic(
                    str(layout.IDENTIFY_UUID),
                    gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.WRITE,
                    gatt.Characteristic.Permissions.READABLE
                    | gatt.Characteristic.Permissions.WRITEABLE,
                    gatt.CharacteristicValue(read=self._read_challenge, write=self._on_identify),
                )
            )
        device.add_service(gatt.Service(str(layout.SERVICE_UUID), characteristics))
        device.gatt_server.max_mtu = att_mtu
        device.on(device.EVENT_CONNECTION, self._on_connection)

    # -- asyncio side ----------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return  # a connection this device made as a central: not served here
        link = PeripheralLink(self, connection)
        self._links[connection.handle] = link

        def ended(reason: int) -> None:
            self._links.pop(connection.handle, None)
            link.on_disconnection(reason)
            if not link.subscribed and self._advertising is not None:
                # a connection that never became a link (a central that gave up): a
                # phone's stack advertises again, as it would after any disconnection
                asyncio.get_running_loop().create_task(self._advertise_again())

        connection.on(connection.EVENT_DISCONNECTION, ended)
        if self.keep_advertising and self._advertising is not None:
            # a legacy connectable advertisement ends with the connection: start it again
            asyncio.get_running_loop().create_task(self._advertise_again())

    async def _advertise_again(self) -> None:
        if self._advertising is None or self.device.is_advertising:
            return
        data, scan_response = self._advertising
        try:
            await self.device.start_advertising(
                advertising_data=data,
                scan_response_data=scan_response,
                advertising_interval_min=100.0,
                advertising_interval_max=100.0,
            )
        except Exception as e:  # the controller refused: say so, the links go on
            log.warning("advertising did not restart after a connection: %s", e)

    def _read_challenge(self, connection: Connection) -> bytes:
        link = self._links.get(connection.handle)
        if link is None:
            raise ATT_Error(ErrorCode.UNLIKELY_ERROR)
        return link.challenge

    def _on_identify(self, connection: Connection, value: bytes) -> None:
        link = self._links.get(connection.handle)
        if link is None or link.subscribed or link.tag:
            raise ATT_Error(ErrorCode.WRITE_NOT_PERMITTED)  # once, before the subscription
        if len(value) != layout.IDENTIFY_TAG_SIZE:
            raise ATT_Error(ErrorCode.INVALID_ATTRIBUTE_LENGTH)
        link.tag = bytes(value)

    def _on_write(self, connection: Connection, value: bytes) -> None:
        self.largest_write = max(self.largest_write, len(value))
        link = self._links.get(connection.handle)
        if link is not None and link.subscribed:
            link.deliver(value)
        elif link is not None:  # before the subscription there is no link to carry it
            self.dropped_early += 1

    def _read_from_phone(self, connection: Connection) -> bytes:
        if not self.from_phone_readable:
            raise ATT_Error(ErrorCode.READ_NOT_PERMITTED)
        return self.last_notified

    def _on_subscription(self, bearer: Any, notify: bool, indicate: bool) -> None:
        connection = getattr(bearer, "connection", bearer)
        link = self._links.get(connection.handle)
        if link is not None and notify and not link.subscribed:
            link.subscribed = True
            try:
                self._accept_send.send_nowait(link)
            except trio.WouldBlock:
                log.warning("phone: too many links waiting to be accepted")

    def advertising_data(self, name: str) -> tuple[bytes, bytes]:
        if self.background:
            return background_ios_advertising(), b""
        scan_response = b""
        if self.apple:
            scan_response = bytes(
                AdvertisingData(
                    [(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, APPLE.to_bytes(2, "little"))]
                )
            )
        return layout.advertising_data(name), scan_response

    # -- trio side -------------------------------------------------------------------

    async def power_on(self) -> None:
        await trio_asyncio.aio_as_trio(self.device.power_on)()

    async def advertise(self, name: str, *, fresh_address: bool = False) -> None:
        """(Re)start connectable advertising with this name (a recognition token);
        ``fresh_address`` also takes a new random private address first, as Android does
        for every advertising set (only while no head unit is connected)."""
        self.name = name
        data, scan_response = self.advertising_data(name)
        self._advertising = (data, scan_response)
        await self._stop_advertising()
        if fresh_address and not self._links:
            address = hci.Address.generate_private_address()
            command = hci.HCI_LE_Set_Random_Address_Command(random_address=address)
            await trio_asyncio.aio_as_trio(self.device.send_sync_command)(command)
            self.device.random_address = address
        await trio_asyncio.aio_as_trio(self.device.start_advertising)(
            advertising_data=data,
            scan_response_data=scan_response,
            advertising_interval_min=100.0,
            advertising_interval_max=100.0,
        )

    async def advertise_data(self, data: bytes, scan_response: bytes) -> None:
        """(Re)start connectable advertising with exactly these bytes (the head unit's,
        PROTOCOL.md 2.2); with ``keep_advertising`` it goes on after each connection."""
        self._advertising = (data, scan_response)
        await self._stop_advertising()
        await trio_asyncio.aio_as_trio(self.device.start_advertising)(
            advertising_data=data,
            scan_response_data=scan_response,
            advertising_interval_min=100.0,
            advertising_interval_max=100.0,
        )

    async def stop_advertising(self) -> None:
        """Stop advertising (until :meth:`advertise` again)."""
        self._advertising = None
        await self._stop_advertising()

    async def _stop_advertising(self) -> None:
        if self.device.is_advertising:
            await trio_asyncio.aio_as_trio(self.device.stop_advertising)()

    async def accept(self) -> PeripheralLink:
        """The next head unit that connected and subscribed to the from-phone values."""
        while True:
            link = await self._accept_receive.receive()
            if link.closed is None:
                return link

    @property
    def connected(self) -> int:
        return len(self._links)


async def _disconnect(connection: Connection) -> None:
    try:
        await connection.disconnect(REMOTE_USER_TERMINATED)
    except Exception as e:  # already gone
        log.debug("disconnect: %s", e)


#: Seconds a connection may spend bonding (SMP) before it must be encrypted: the same
#: 60 s the bridge's own pairing gives the user to compare codes.
BONDING_DEADLINE = 60.0


class BumbleListener:
    """The head unit as GATT server on a Bumble device (protocol v1): what
    :class:`~bridge.radio_policy.HeadUnit` takes as its ``listener``. The same device may
    also scan and connect as a central (the bleak backend over Bumble).

    Centrals that connect and do not subscribe within ``subscribe_timeout`` are
    disconnected: a connection that never becomes a link must not hold the radio. Spared:
    an encrypted connection (only a bonded device can encrypt: an iPhone served through
    ANCS, ``transports/bumble_apple.py``), and one whose SMP pairing is under way (its
    user compares digits) for up to :data:`BONDING_DEADLINE` from the connection."""

    def __init__(self, device: Device, *, subscribe_timeout: float = 10.0) -> None:
        self.server = BumblePeripheral(device, att_mtu=517, identify=True, keep_advertising=True)
        self.subscribe_timeout = subscribe_timeout
        self.parameter_requests = 0  # connection parameter update requests sent
        device.on(device.EVENT_CONNECTION, self._on_connection)

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return

        bonding = [False]  # an SMP pairing under way (an iPhone without the app, ANCS)
        started = asyncio.get_running_loop().time()

        def pairing_started() -> None:
            bonding[0] = True

        def pairing_ended(*_: Any) -> None:
            bonding[0] = False

        connection.on(connection.EVENT_PAIRING_START, pairing_started)
        connection.on(connection.EVENT_PAIRING, pairing_ended)
        connection.on(connection.EVENT_PAIRING_FAILURE, pairing_ended)
        gone = [False]  # handles are reused: a later connection may have this one's

        def disconnected(*_: Any) -> None:
            gone[0] = True

        connection.on(connection.EVENT_DISCONNECTION, disconnected)

        def check() -> None:
            if gone[0]:
                return  # the deadline of a connection that ended, not of its handle's next
            link = self.server._links.get(connection.handle)
            if link is None or link.subscribed or connection.is_encrypted:
                return  # a link, or a bonded device's encrypted connection (ANCS)
            loop = asyncio.get_running_loop()
            if bonding[0] and loop.time() < started + BONDING_DEADLINE:
                # the user is comparing digits: wait for the outcome, within a deadline
                # (Bumble's SMP has none: a peer that stops answering would hold on)
                loop.call_later(self.subscribe_timeout, check)
                return
            log.debug("a central that did not subscribe in time: disconnecting")
            asyncio.get_running_loop().create_task(_disconnect(connection))

        asyncio.get_running_loop().call_later(self.subscribe_timeout, check)
        params = connection.parameters
        if layout.wants_parameter_update(params.connection_interval, params.peripheral_latency):
            asyncio.get_running_loop().create_task(self._ask_parameters(connection))

    async def _ask_parameters(self, connection: Connection) -> None:
        """Ask the central for the head unit's connection parameters (PROTOCOL.md 2.4)
        with an L2CAP Connection Parameter Update Request, as an accessory does; a
        central that refuses keeps its own, and the link goes on."""
        wanted = layout.REQUESTED_PARAMETERS
        self.parameter_requests += 1
        try:
            await connection.update_parameters(
                wanted.interval_min_ms,
                wanted.interval_max_ms,
                wanted.latency,
                wanted.supervision_timeout_ms,
                use_l2cap=True,
            )
        except Exception as e:  # refused, or the connection ended first
            log.debug("the central kept its connection parameters: %s", e)

    async def advertise(self, data: bytes, scan_response: bytes) -> None:
        await self.server.advertise_data(data, scan_response)

    async def stop_advertising(self) -> None:
        await self.server.stop_advertising()

    async def accept(self) -> PeripheralLink:
        return await self.server.accept()

    @property
    def connected(self) -> int:
        return self.server.connected
