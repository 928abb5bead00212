"""The bleak transport: the head unit as a BLE central, under trio.

Strategy. bleak is asyncio-only; trio-asyncio runs its loop inside trio's, so every call
into bleak is one ``aio_as_trio`` hop and every bleak callback (advertisements,
notifications, disconnection) runs on trio's thread and may feed a trio memory channel
directly. This module only moves bytes; which phone to connect and when is the bridge's
policy (``bridge/central.py``).

- :class:`BleakCentral` scans for the bridge's service UUID (:meth:`BleakCentral.scan`
  yields :class:`Sighting` objects) and connects (:meth:`BleakCentral.connect`).
- Connecting: connect, take the real ATT MTU (on BlueZ, bleak says 23 until
  ``_acquire_mtu()``: it is called whenever the backend has it), find the service,
  read the info characteristic (the protocol versions), subscribe to the from-phone
  notifications, and only then hand over a :class:`BleakLink`.
- Sending is write without response, one at a time: bleak returns when the stack took
  the value (BlueZ: a D-Bus round trip; CoreBluetooth and the Bumble backend wait for
  room), which is the back-pressure the session's writer waits on. Values are sized
  from the real MTU and the characteristic's ``max_write_without_response_size``, and
  never above 512 bytes.
- The disconnected callback ends the link at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import trio
import trio_asyncio
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from bridge.wire import gatt as layout
from transports.link import (
    MAX_ATT_VALUE,
    CallbackLink,
    CloseReason,
    ConnectFailed,
    LinkClosed,
    payload_size_for_mtu,
)

if sys.platform == "linux":
    from transports.bluez import BlueZClient

log = logging.getLogger(__name__)

#: Apple's Bluetooth SIG company identifier: an advertisement carrying it is an iPhone or
#: an iPad (a hint; the phone's hello confirms the platform).
APPLE = 0x004C


@dataclass(frozen=True)
class Sighting:
    """One advertisement of the bridge's service: a phone running the bridge's app
    (protocol v0's advertising), or a head unit (v1: ``car_token`` set)."""

    address: str
    name: str | None  # a phone's: its recognition token (docs/PROTOCOL.md 2.1)
    apple: bool
    rssi: int
    at: float  # trio time
    device: BLEDevice
    car_token: bytes | None = None  # a head unit's 6-byte token (2.2); its name means pairing

    @property
    def platform_hint(self) -> str:
        return "ios" if self.apple else "android"


#: Tasks forgetting devices after their links (kept so that they are not collected).
_FORGETTING: set[asyncio.Task[None]] = set()


class BleakLink(CallbackLink):
    """A connected phone: writes to the to-phone characteristic, notifications from the
    from-phone one."""

    def __init__(
        self,
        client: BleakClient,
        to_phone: BleakGATTCharacteristic,
        from_phone: BleakGATTCharacteristic,
        mtu: int,
    ) -> None:
        super().__init__()
        self.client = client
        self._to_phone = to_phone
        self.from_phone = from_phone
        self._mtu = mtu
        self.versions: tuple[int, ...] = ()
        self._lock = trio.Lock()
        # a backend that can say when the stack has room for a write (the Bumble one);
        # BlueZ's D-Bus API cannot, so there the previous write's return is all we know
        self._room: Callable[[], Awaitable[None]] | None = getattr(
            client._backend, "wait_write_room", None
        )

    @property
    def att_mtu(self) -> int:
        return self._mtu

    @property
    def payload_size(self) -> int:
        size = min(payload_size_for_mtu(self._mtu), MAX_ATT_VALUE)
        stack = self._to_phone.max_write_without_response_size
        return max(1, min(size, stack)) if stack >= 20 else size

    @property
    def peer(self) -> str:
        return str(self.client.address)

    # callbacks from bleak (asyncio side, trio's thread)
    def on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.deliver(bytes(data))

    def on_disconnect(self, _client: BleakClient) -> None:
        self.end(LinkClosed(CloseReason.LINK_LOSS, "the phone disconnected"))
        # on BlueZ: leave nothing of this link to the next one (transports/bluez.py)
        forget = getattr(self.client._backend, "forget", None)
        if forget is not None:
            task = asyncio.get_running_loop().create_task(forget())
            _FORGETTING.add(task)
            task.add_done_callback(_FORGETTING.discard)

    async def send(self, packet: bytes) -> None:
        if not packet or len(packet) > self.payload_size:
            raise ValueError(f"packet of {len(packet)} bytes, limit {self.payload_size}")
        async with self._lock:
            if self._closed is not None:
                raise self._closed
            try:
                await trio_asyncio.aio_as_trio(self.client.write_gatt_char)(
                    self._to_phone, packet, response=False
                )
            except BleakError as e:
                raise self.end(LinkClosed(CloseReason.LINK_LOSS, f"write failed: {e}")) from e

    async def drain(self) -> None:
        # the Bumble backend can say when its controller has sent everything; BlueZ's
        # D-Bus API cannot (its writes are queued in the kernel)
        sent = getattr(self.client._backend, "wait_sent", None)
        if sent is not None and self._closed is None:
            await trio_asyncio.aio_as_trio(sent)()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_send_ready(self) -> None:
        if self._closed is not None:
            raise self._closed
        async with self._lock:  # the previous write has been taken by the stack
            if self._room is not None:
                try:
                    await trio_asyncio.aio_as_trio(self._room)()
                except BleakError as e:
                    raise self.end(LinkClosed(CloseReason.LINK_LOSS, str(e))) from e
        if self._closed is not None:
            raise self._closed

    async def _disconnect(self) -> None:
        await _bounded_disconnect(self.client)


class BleakCentral:
    """Scanning and connecting through bleak; ``scanner_backend``/``client_backend`` and
    ``backend_kwargs`` pick a backend other than the platform's (the Bumble one)."""

    def __init__(
        self,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        backend_kwargs: Mapping[str, Any] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.scanner_backend = scanner_backend
        if client_backend is None and sys.platform == "linux":
            client_backend = BlueZClient  # bleak's, with BlueZ's quirks worked around
        self.client_backend = client_backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.connect_timeout = connect_timeout
        # One connection attempt at a time: BlueZ queues LE connections in the kernel
        # and a controller takes one LE Create Connection at a time, so attempts made
        # together would spend their timeouts waiting for each other (and one cancelled
        # while queued could still complete in BlueZ, connected and never used)
        self._connecting = trio.Lock()

    @asynccontextmanager
    async def scan(self) -> AsyncIterator[trio.MemoryReceiveChannel[Sighting]]:
        """Scan while the context is open; sightings arrive on the channel (the oldest
        are dropped if nobody reads)."""
        send, receive = trio.open_memory_channel[Sighting](256)

        def seen(device: BLEDevice, adv: AdvertisementData) -> None:
            car = adv.manufacturer_data.get(layout.TOKEN_COMPANY)
            if car is not None and len(car) != layout.TOKEN_BYTES:
                car = None
            sighting = Sighting(
                address=device.address,
                name=adv.local_name,
                apple=APPLE in adv.manufacturer_data,
                rssi=adv.rssi,
                at=trio.current_time(),
                device=device,
                car_token=bytes(car)
                if car is not None and len(car) == layout.TOKEN_BYTES
                else None,
            )
            try:
                send.send_nowait(sighting)
            except trio.WouldBlock:
                log.debug("scan: dropping a sighting, nobody reading")

        scanner = BleakScanner(
            seen,
            [str(layout.SERVICE_UUID)],
            backend=self.scanner_backend,
            **self.backend_kwargs,
        )
        try:
            await trio_asyncio.aio_as_trio(scanner.start)()
        except (OSError, BleakError) as e:
            send.close()
            raise OSError(_scan_failure(e)) from e
        try:
            yield receive
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                try:
                    await trio_asyncio.aio_as_trio(scanner.stop)()
                except (BleakError, OSError) as e:  # BlueZ gone or the adapter removed
                    log.debug("scan stop: %r", e)
            send.close()

    async def connect(
        self, sighting: Sighting, identify: Callable[[bytes], bytes] | None = None
    ) -> BleakLink:
        """Connect and set up the bridge service; raises :class:`ConnectFailed`.
        ``identify`` (a phone connecting to a head unit, PROTOCOL.md 1.2): the tag to
        write for the link's challenge, before subscribing."""
        holder: list[BleakLink] = []

        def disconnected(client: BleakClient) -> None:
            if holder:
                holder[0].on_disconnect(client)

        client = BleakClient(
            sighting.device,
            disconnected,
            timeout=self.connect_timeout,
            backend=self.client_backend,
            **self.backend_kwargs,
        )
        connected = False
        try:
            async with self._connecting:  # the timeout counts from our turn
                with trio.fail_after(self.connect_timeout * 2):
                    await trio_asyncio.aio_as_trio(client.connect)()
                    connected = True
            with trio.fail_after(self.connect_timeout * 2):
                link = await _set_up(client)
                holder.append(link)
                if identify is not None:
                    await _identify(client, identify)
                await trio_asyncio.aio_as_trio(client.start_notify)(link.from_phone, link.on_notify)
                if not client.is_connected:
                    _fail("the phone disconnected during setup", transient=True)
                return link
        except BaseException as e:
            # A failed ``connect`` has cleaned up after itself (on BlueZ a second
            # ``disconnect`` would write to the closed D-Bus connection and wait for a
            # reply that never comes); a failure after it leaves a link to end.
            if connected:
                await _bounded_disconnect(client)
            # asyncio's CancelledError here is never trio cancelling us (that is
            # trio.Cancelled): the stack cancelled a request of a connection it dropped
            if isinstance(e, ConnectFailed) or not isinstance(e, Exception | CancelledError):
                raise
            expected = BleakError | trio.TooSlowError | TimeoutError | OSError | CancelledError
            if not isinstance(e, expected):
                # bleak and its D-Bus library fail in more ways than they document; one
                # phone's failed connection must not take the head unit down
                log.warning("connecting to %s: unexpected error", sighting.address, exc_info=e)
            raise ConnectFailed(
                f"connecting to {sighting.address} failed: {str(e) or type(e).__name__}"
            ) from e


async def _bounded_disconnect(client: BleakClient) -> None:
    """End a connection, whatever happens, within 5 seconds (even when cancelled)."""
    with trio.CancelScope(shield=True), trio.move_on_after(5.0):
        try:
            await trio_asyncio.aio_as_trio(client.disconnect)()
        except (BleakError, OSError) as e:  # already gone, or BlueZ's D-Bus connection
            log.debug("disconnect %s: %r", client.address, e)


def _scan_failure(error: Exception) -> str:
    """One sentence for a scan that could not start (no D-Bus, no BlueZ, no adapter)."""
    if isinstance(error, FileNotFoundError | ConnectionRefusedError | PermissionError):
        return f"cannot reach BlueZ over the system D-Bus ({error.strerror or error})"
    return f"cannot start scanning: {str(error) or type(error).__name__}"


def _fail(text: str, *, transient: bool = False) -> NoReturn:
    raise ConnectFailed(text, transient=transient)


async def _identify(client: BleakClient, identify: Callable[[bytes], bytes]) -> None:
    """Read the link's challenge from the head unit and write our tag over it."""
    aio = trio_asyncio.aio_as_trio
    service = client.services.get_service(str(layout.SERVICE_UUID))
    chars = {c.uuid.lower(): c for c in service.characteristics} if service else {}
    char = chars.get(str(layout.IDENTIFY_UUID))
    if char is None:
        _fail("the head unit does not serve the identify characteristic")
    challenge = bytes(await aio(client.read_gatt_char)(char))
    if len(challenge) != 16:
        _fail(f"the head unit's challenge is {len(challenge)} bytes, not 16")
    await aio(client.write_gatt_char)(char, identify(challenge), response=True)


async def _set_up(client: BleakClient) -> BleakLink:
    """MTU, service, versions: what a connected client needs before it is a link."""
    aio = trio_asyncio.aio_as_trio
    acquire = getattr(client._backend, "_acquire_mtu", None)
    if acquire is not None:  # BlueZ: bleak reports 23 until this is done
        await aio(acquire)()
    mtu = client.mtu_size
    service = client.services.get_service(str(layout.SERVICE_UUID))
    if service is None:
        _fail("the phone does not serve the bridge service")
    chars = {c.uuid.lower(): c for c in service.characteristics}
    to_phone = chars.get(str(layout.TO_PHONE_UUID))
    from_phone = chars.get(str(layout.FROM_PHONE_UUID))
    info = chars.get(str(layout.INFO_UUID))
    if to_phone is None or from_phone is None or info is None:
        _fail("the phone's bridge service lacks a characteristic")
    if "write-without-response" not in to_phone.properties or "notify" not in from_phone.properties:
        _fail("the phone's bridge characteristics have the wrong properties")
    link = BleakLink(client, to_phone, from_phone, max(23, min(mtu, 517)))
    try:
        link.versions = layout.parse_info_value(bytes(await aio(client.read_gatt_char)(info)))
    except ValueError as e:
        _fail(str(e))
    if not set(link.versions) & set(layout.PROTOCOL_VERSIONS):
        _fail(
            f"the phone speaks protocol versions {list(link.versions)}, "
            f"this head unit {list(layout.PROTOCOL_VERSIONS)}"
        )
    return link
