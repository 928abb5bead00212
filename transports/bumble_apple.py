"""ANCS and AMS over Bumble: bonding (SMP), the head unit's GATT client of an iPhone's
services, and the emulated iPhone's GATT server of them.

Strategy. The bytes are ``bridge/wire/apple.py``'s and the logic ``bridge/wire/apple_client.py``'s
(head unit) and ``bridge/wire/apple_provider.py``'s (emulated iPhone); this module
only moves values between them and Bumble's GATT, on trio (the asyncio side is
trio-asyncio's loop, as everywhere in ``transports/``).

- :class:`Bonding` makes a head unit's Bumble device pair as an accessory: LE Secure
  Connections with numeric comparison only (Just Works is refused: a stranger could
  bond with no one looking), only while pairing mode is on, the 6 digits confirmed
  through the head unit's own prompt; the keys kept by :class:`FileKeyStore`.
- :class:`AppleConsumer` runs :class:`~bridge.wire.apple_client.AppleClient` on one encrypted link:
  it discovers ANCS and AMS within their handle ranges (iOS lists their
  characteristics only so), subscribes Data Source before Notification Source (Apple:
  events may come at once), then AMS, and performs the client's requests one by one.
- :class:`IPhoneGatt` serves ANCS and AMS on an emulated iPhone's Bumble device, every
  value readable and writable only on an encrypted link, as an iPhone requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuids
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
import trio_asyncio
from bumble import gatt, hci
from bumble.att import ATT_Error
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import (
    GATT_DEVICE_NAME_CHARACTERISTIC,
    GATT_GENERIC_ACCESS_SERVICE,
    GATT_GENERIC_ATTRIBUTE_SERVICE,
    GATT_SERVICE_CHANGED_CHARACTERISTIC,
)
from bumble.gatt_client import CharacteristicProxy
from bumble.keys import MemoryKeyStore, PairingKeys
from bumble.pairing import PairingConfig, PairingDelegate

from bridge.wire import apple as a
from bridge.wire.apple_client import AppleClient, AppleEvent, Read, Request, Write
from bridge.wire.apple_provider import IPhoneServices, PostedNotification
from bridge.wire.errors import ProtocolError

log = logging.getLogger(__name__)

#: Values the iPhone notifies that wait for the consumer; beyond it they are dropped
#: (and counted): a flood must not grow memory.
INBOX = 256


class Keeper(Protocol):
    """Where bonds persist (the head unit's ``pairing/bonds.py`` BondStore): keys in the
    stack's own dict layout, by identity address."""

    def stored(self) -> list[tuple[str, dict[str, Any]]]: ...
    def put(self, address: str, keys: dict[str, Any]) -> object: ...
    def remove(self, address: str) -> None: ...


class DamagedKeys(Exception):
    """Stored bonding keys that the stack cannot read: one sentence."""


class FileKeyStore(MemoryKeyStore):
    """Bumble's bonding keys kept by a :class:`Keeper` (the head unit's bond store: one
    file, atomic and owner-only; Bumble's own ``JsonKeyStore`` writes in place with the
    default mode)."""

    def __init__(self, keeper: Keeper) -> None:
        super().__init__()
        self.keeper = keeper
        for address, keys in keeper.stored():
            try:
                self.all_keys[address] = PairingKeys.from_dict(keys)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DamagedKeys(
                    "the stored bonding keys are damaged: move the bonds away"
                ) from None

    async def update(self, name: str, keys: PairingKeys) -> None:
        await super().update(name, keys)
        self.keeper.put(name, keys.to_dict())

    async def delete(self, name: str) -> None:
        await super().delete(name)
        self.keeper.remove(name)


#: What the head unit asks when an iPhone bonds: the six digits; True to bond.
CompareNumbers = Callable[[Connection, int], Awaitable[bool]]


class _AccessoryDelegate(PairingDelegate):
    def __init__(self, bonding: Bonding, connection: Connection) -> None:
        super().__init__(io_capability=PairingDelegate.DISPLAY_OUTPUT_AND_YES_NO_INPUT)
        self.bonding = bonding
        self.connection = connection

    async def accept(self) -> bool:
        if not self.bonding.pairing_mode:
            self.bonding.refused += 1
            log.info("an iPhone asked to bond outside pairing mode: refused")
            return False
        return True

    async def confirm(self, auto: bool = False) -> bool:
        self.bonding.refused += 1  # Just Works: nobody compared anything
        log.info("a device asked to bond without a code to compare: refused")
        return False

    async def compare_numbers(self, number: int, digits: int) -> bool:
        accepted: bool = await trio_asyncio.trio_as_aio(self.bonding.compare)(
            self.connection, number
        )
        return accepted


class Bonding:
    """Link-layer pairing of a head unit's Bumble device, as an accessory."""

    def __init__(self, device: Device, bonds: Keeper, compare: CompareNumbers) -> None:
        self.device = device
        self.bonds = bonds
        self.compare = compare
        self.pairing_mode = False
        self.refused = 0
        device.keystore = FileKeyStore(bonds)
        # the identity address given at bonding is the static random address the head
        # unit advertises and connects from (what the iPhone will find it by)
        device.pairing_config_factory = lambda connection: PairingConfig(
            sc=True,
            mitm=True,
            bonding=True,
            delegate=_AccessoryDelegate(self, connection),
            identity_address_type=PairingConfig.AddressType.RANDOM,
        )

    async def bonded(self) -> list[str]:
        """The addresses (identity addresses) of the devices bonded."""
        assert self.device.keystore is not None
        return [name for name, _ in await self.device.keystore.get_all()]

    async def forget(self, address: str) -> None:
        assert self.device.keystore is not None
        await self.device.keystore.delete(address)
        await trio_asyncio.aio_as_trio(self.device.refresh_resolving_list)()


async def _refuse(connection: Connection, number: int) -> bool:
    return False


class IPhoneLink:
    """A bonded iPhone's encrypted link, as :meth:`BumbleApple.accept` gives it."""

    def __init__(self, address: str, connection: Connection) -> None:
        self.address = address  # its identity address (the bond's name)
        self.connection = connection

    def open(self, client: AppleClient, clock_ms: Callable[[], int]) -> AppleConsumer:
        """The ANCS/AMS consumer of this link, with the device's client (what it has
        announced on its earlier links)."""
        return AppleConsumer(self.connection, clock_ms, client)


class BumbleApple:
    """App-free iPhones on the head unit's Bumble device: bonding (:class:`Bonding`) and,
    for every encrypted link of a bonded iPhone, an :class:`IPhoneLink` to serve. What
    :class:`~bridge.radio_policy.HeadUnit` takes as its ``apple``; it sets
    :attr:`compare` (its prompt) and :attr:`pairing_mode`."""

    def __init__(self, device: Device, keeper: Keeper) -> None:
        self.device = device
        self.compare: CompareNumbers = _refuse
        self.bonding = Bonding(device, keeper, self._compare)
        self._send, self._receive = trio.open_memory_channel[IPhoneLink](16)
        self._served: set[int] = set()
        device.on(device.EVENT_CONNECTION, self._on_connection)

    async def _compare(self, connection: Connection, number: int) -> bool:
        return await self.compare(connection, number)  # whichever prompt is set now

    @property
    def pairing_mode(self) -> bool:
        return self.bonding.pairing_mode

    @pairing_mode.setter
    def pairing_mode(self, on: bool) -> None:
        self.bonding.pairing_mode = on

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        connection.on(
            connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, lambda: self._check(connection)
        )
        connection.on(connection.EVENT_PAIRING, lambda *_: self._check(connection))

    def _check(self, connection: Connection) -> None:
        """An encrypted link of a device whose bond we hold (on a reconnection, at the
        encryption; on the first bonding, once its keys are stored)."""
        keystore = self.device.keystore
        address = str(connection.peer_address)
        if (
            not connection.is_encrypted
            or connection.handle in self._served
            or not isinstance(keystore, MemoryKeyStore)
            or address not in keystore.all_keys
        ):
            return
        handle = connection.handle
        self._served.add(handle)
        connection.on(connection.EVENT_DISCONNECTION, lambda *_: self._served.discard(handle))
        try:
            self._send.send_nowait(IPhoneLink(address, connection))
        except trio.WouldBlock:
            log.warning("too many iPhones waiting to be served")

    async def accept(self) -> IPhoneLink:
        while True:
            link = await self._receive.receive()
            if link.connection.handle in self._served:
                return link

    async def forget(self, address: str) -> None:
        """Remove the bond; a link of that iPhone still up is closed."""
        keystore = self.device.keystore
        if keystore is not None:
            await trio_asyncio.aio_as_trio(keystore.delete)(address)
        for connection in list(self.device.connections.values()):
            if str(connection.peer_address) == address:
                with contextlib.suppress(Exception):
                    await trio_asyncio.aio_as_trio(connection.disconnect)()


async def open_apple(device: Device, keeper: Keeper) -> BumbleApple:
    """App-free iPhones on a powered head unit's device: bonding with the kept keys, and
    the resolving list built from them (a bonded iPhone's private addresses resolve)."""
    apple = BumbleApple(device, keeper)
    await trio_asyncio.aio_as_trio(device.refresh_resolving_list)()
    return apple


class IPhoneDelegate(PairingDelegate):
    """The emulated iPhone's side of numeric comparison: its user taps Pair when the
    digits match what the car shows (``shown``: the car's digits, if known)."""

    def __init__(self) -> None:
        super().__init__(io_capability=PairingDelegate.DISPLAY_OUTPUT_AND_YES_NO_INPUT)
        self.numbers: list[int] = []

    async def compare_numbers(self, number: int, digits: int) -> bool:
        self.numbers.append(number)
        return True


# -- the head unit: GATT client of the iPhone ------------------------------------------------


UPDATE = str(a.ENTITY_UPDATE)  # the queue's name for AMS entity updates
#: Seconds an AMS update waits for the rest of its burst before the change is shown.
UPDATE_GATHER = 0.1
#: What :meth:`AppleConsumer.outcome` gives a write never answered in time (ATT's
#: "Unlikely Error").
UNANSWERED = 0x0E


class _Outcome:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: int | None = None


class AppleConsumer:
    """ANCS and AMS of one bonded iPhone on an encrypted link, for the head unit."""

    def __init__(
        self,
        connection: Connection,
        clock_ms: Callable[[], int],
        client: AppleClient | None = None,
    ) -> None:
        """``client``: the iPhone's from its earlier links (what it has announced)."""
        self.connection = connection
        self.clock_ms = clock_ms
        self.client = client or AppleClient()
        self.dropped = 0  # notified values dropped while the inbox was full
        self.protocol_errors = 0  # values refused by the parsers (the link goes on)
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](INBOX)
        self._characteristics: dict[Any, CharacteristicProxy[bytes]] = {}
        self.ready = trio.Event()
        self.has_ancs = self.has_ams = False
        self._outcomes: dict[Write, list[_Outcome]] = {}
        self._changed = False
        self.watching_changes = False  # subscribed to the iPhone's Service Changed
        self.services_changed = 0  # indications acted on

    def _queue(self, kind: str, value: bytes) -> None:
        try:
            self._send.send_nowait((kind, bytes(value)))
        except trio.WouldBlock:
            self.dropped += 1

    def kick(self) -> None:
        """Wake the loop: a command was queued on the client."""
        self._queue("kick", b"")

    async def outcome(self, request: Write, timeout: float) -> int | None:
        """Wait until ``request`` (queued on the client) has been written: None when the
        iPhone accepted it, else its ATT error (0xA3: the action failed)."""
        waiter = _Outcome()
        waiters = self._outcomes.setdefault(request, [])
        waiters.append(waiter)
        with trio.move_on_after(timeout):
            await waiter.done.wait()
            return waiter.error
        if waiter in waiters:
            waiters.remove(waiter)
        return UNANSWERED

    async def read_name(self) -> str | None:
        """The iPhone's name from its GAP service ("Ana's iPhone"), or None."""
        aio = trio_asyncio.aio_as_trio
        try:
            peer = Peer(self.connection)
            services = await aio(peer.discover_service)(GATT_GENERIC_ACCESS_SERVICE)
            for service in services:
                for characteristic in await aio(peer.discover_characteristics)((), service):
                    if characteristic.uuid == GATT_DEVICE_NAME_CHARACTERISTIC:
                        value = await aio(characteristic.read_value)()
                        return bytes(value).decode(errors="replace")[:64] or None
        except (ATT_Error, OSError, TimeoutError) as e:
            log.debug("iPhone: no name: %s", e)
        return None

    def _done(self, request: Request, error: int | None) -> None:
        if isinstance(request, Write):
            for waiter in self._outcomes.pop(request, []):
                waiter.error = error
                waiter.done.set()

    async def _discover(self) -> None:
        """ANCS and AMS, each within its own handle range (iOS lists their
        characteristics only so); what was found before is forgotten."""
        aio = trio_asyncio.aio_as_trio
        peer = Peer(self.connection)
        self._characteristics = {}
        for service_uuid, wanted in (
            (a.ANCS_SERVICE, (a.NOTIFICATION_SOURCE, a.CONTROL_POINT, a.DATA_SOURCE)),
            (a.AMS_SERVICE, (a.REMOTE_COMMAND, a.ENTITY_UPDATE, a.ENTITY_ATTRIBUTE)),
        ):
            services = await aio(peer.discover_service)(str(service_uuid))
            for service in services:
                found = await aio(peer.discover_characteristics)((), service)
                for characteristic in found:
                    for uuid in wanted:
                        if characteristic.uuid == _bumble_uuid(uuid):
                            self._characteristics[uuid] = characteristic
        self.has_ancs = a.NOTIFICATION_SOURCE in self._characteristics
        self.has_ams = a.ENTITY_UPDATE in self._characteristics

    async def _subscribe(self) -> None:
        """Data Source before Notification Source (events may come at once), then AMS;
        AMS's entities registered again."""
        aio = trio_asyncio.aio_as_trio
        chars = self._characteristics
        for uuid in (a.DATA_SOURCE, a.NOTIFICATION_SOURCE, a.REMOTE_COMMAND, a.ENTITY_UPDATE):
            if uuid in chars:
                await aio(chars[uuid].subscribe)(lambda v, k=str(uuid): self._queue(k, v))
        if self.has_ams:
            self.client.start()

    async def _watch_service_changed(self) -> None:
        """Subscribe to the iPhone's Service Changed indications (ANCS and AMS are "not
        guaranteed to always be present")."""
        aio = trio_asyncio.aio_as_trio
        peer = Peer(self.connection)
        for service in await aio(peer.discover_service)(GATT_GENERIC_ATTRIBUTE_SERVICE):
            for characteristic in await aio(peer.discover_characteristics)((), service):
                if characteristic.uuid == GATT_SERVICE_CHANGED_CHARACTERISTIC:
                    await aio(characteristic.subscribe)(
                        lambda v: self._queue("changed", v), prefer_notify=False
                    )
                    self.watching_changes = True

    async def _services_changed(self) -> None:
        """The iPhone's services changed: find ANCS and AMS again and subscribe again.
        Gone, they are simply absent; back, the iPhone lists its notifications again
        (PreExisting: nothing already shown is announced twice)."""
        self.services_changed += 1
        self.client.cancel_pending()
        # forget the old subscriptions without writing to handles that may be gone
        # (Bumble keeps subscribers per handle; a second subscription would add a second
        # subscriber and every value would arrive twice)
        gatt_client = self.connection.gatt_client
        for characteristic in self._characteristics.values():
            for subscribers in (
                gatt_client.notification_subscribers,
                gatt_client.indication_subscribers,
            ):
                subscribers.pop(characteristic.handle, None)
        await self._discover()
        await self._subscribe()

    async def run(self, on_events: Callable[[list[AppleEvent]], Awaitable[None]]) -> None:
        """Until the link ends: discover, subscribe, and drive the client. Returns when
        the connection is gone (whatever GATT operation was under way then)."""
        connection = self.connection
        gone = trio.Event()

        def ended(*_: Any) -> None:
            gone.set()
            self._queue("gone", b"")

        connection.on(connection.EVENT_DISCONNECTION, ended)
        try:
            async with trio.open_nursery() as nursery:

                async def until_gone() -> None:
                    await gone.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_gone)
                try:
                    await self._serve(on_events)
                except Exception as e:  # a GATT operation on a link that just ended
                    if not gone.is_set() and connection.handle in connection.device.connections:
                        raise
                    log.debug("iPhone: the link ended under a request: %s", e)
                nursery.cancel_scope.cancel()
        finally:
            connection.remove_listener(connection.EVENT_DISCONNECTION, ended)

    async def _serve(self, on_events: Callable[[list[AppleEvent]], Awaitable[None]]) -> None:
        await self._watch_service_changed()
        await self._discover()
        await self._subscribe()
        self.ready.set()
        while True:
            if self._changed:
                self._changed = False
                await self._services_changed()
            await self._perform_requests()
            events = self.client.pop_events()
            if events:
                await on_events(events)
            deadline = self.client.deadline()
            wait = max(0.0, (deadline - self.clock_ms()) / 1000) if deadline is not None else None
            with trio.move_on_after(wait if wait is not None else float("inf")):
                kind, value = await self._receive.receive()
                self._feed(kind, value)
                while True:  # and whatever else has arrived, before acting on it
                    try:
                        kind, value = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        if kind != UPDATE:
                            break
                        # AMS sends a track change as one update per attribute, an event
                        # or two apart: gather them, so the screen shows one change
                        with trio.move_on_after(UPDATE_GATHER):
                            kind, value = await self._receive.receive()
                            self._feed(kind, value)
                            continue
                        break
                    self._feed(kind, value)
            self.client.on_timer(self.clock_ms())

    def _feed(self, kind: str, value: bytes) -> None:
        if kind in ("gone", "kick"):
            return  # run() ends the loop; a kick only wakes it
        if kind == "changed":
            self._changed = True  # acted on before the next request
            return
        try:
            self.client.on_notified(uuids.UUID(kind), value, self.clock_ms())
        except ProtocolError as e:  # hostile or broken: counted, and the link goes on
            self.protocol_errors += 1
            log.debug("iPhone: %s", e)

    async def _perform_requests(self) -> None:
        aio = trio_asyncio.aio_as_trio
        while (request := self.client.next_request(self.clock_ms())) is not None:
            characteristic = self._characteristics.get(request.characteristic)
            if characteristic is None:
                self._failed(request)
                continue
            if isinstance(request, Read):
                try:
                    value = await aio(characteristic.read_value)()
                except ATT_Error:
                    self.client.on_read(request, None)
                else:
                    self.client.on_read(request, bytes(value))
                continue
            try:
                await aio(characteristic.write_value)(request.value, request.with_response)
            except ATT_Error as e:
                self.client.on_written(request, e.error_code)
                self._done(request, e.error_code)
            else:
                self.client.on_written(request, None)
                self._done(request, None)

    def _failed(self, request: Request) -> None:
        if isinstance(request, Read):
            self.client.on_read(request, None)
        else:
            self.client.on_written(request, 0x0A)  # attribute not found
            self._done(request, 0x0A)


def _bumble_uuid(uuid: Any) -> UUID:
    return UUID(str(uuid))


# -- the emulated iPhone: GATT server of ANCS and AMS ----------------------------------------


class IPhoneGatt:
    """ANCS and AMS served on an emulated iPhone's Bumble device (create it inside the
    trio-asyncio loop, before the device connects)."""

    def __init__(self, device: Device, services: IPhoneServices) -> None:
        self.device = device
        self.services = services
        enc_read = gatt.Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
        enc_write = gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION
        props = gatt.Characteristic.Properties
        self.notification_source: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.NOTIFICATION_SOURCE), props.NOTIFY, enc_read, b""
        )
        self.control_point: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.CONTROL_POINT),
            props.WRITE,
            enc_write,
            gatt.CharacteristicValue(write=self._on_control_point),
        )
        self.data_source: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.DATA_SOURCE), props.NOTIFY, enc_read, b""
        )
        self.remote_command: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.REMOTE_COMMAND),
            props.WRITE | props.WRITE_WITHOUT_RESPONSE | props.NOTIFY,
            enc_write | enc_read,
            gatt.CharacteristicValue(write=self._on_remote_command),
        )
        self.entity_update: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.ENTITY_UPDATE),
            props.WRITE | props.NOTIFY,
            enc_write | enc_read,
            gatt.CharacteristicValue(write=self._on_entity_update),
        )
        self.entity_attribute: gatt.Characteristic[bytes] = gatt.Characteristic(
            str(a.ENTITY_ATTRIBUTE),
            props.READ | props.WRITE,
            enc_write | enc_read,
            gatt.CharacteristicValue(
                read=lambda _c: self.services.read_attribute(), write=self._on_select
            ),
        )
        self.service_changed: gatt.Characteristic[bytes] = gatt.Characteristic(
            GATT_SERVICE_CHANGED_CHARACTERISTIC, props.INDICATE, enc_read, b""
        )
        device.add_service(gatt.Service(GATT_GENERIC_ATTRIBUTE_SERVICE, [self.service_changed]))
        self.notification_source.on(
            self.notification_source.EVENT_SUBSCRIPTION, self._on_ancs_subscription
        )
        # a bonded client's subscriptions outlive its connections (Core spec: the CCC
        # values of a bonded device persist), as on an iPhone; Bumble keeps them per
        # connection, so they are kept here by the peer's address and put back
        self._cccds: dict[str, dict[int, bytes]] = {}
        server = device.gatt_server
        server.on(server.EVENT_CHARACTERISTIC_SUBSCRIPTION, self._remember_subscription)
        device.on(device.EVENT_CONNECTION, self._on_connection)
        self.remote_command.on(self.remote_command.EVENT_SUBSCRIPTION, self._on_ams_subscription)
        device.add_service(
            gatt.Service(
                str(a.ANCS_SERVICE),
                [self.notification_source, self.control_point, self.data_source],
            )
        )
        device.add_service(
            gatt.Service(
                str(a.AMS_SERVICE),
                [self.remote_command, self.entity_update, self.entity_attribute],
            )
        )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coroutine
            except Exception as e:  # the link went away meanwhile
                log.debug("iPhone: %s", e)

        asyncio.get_running_loop().create_task(run())

    async def _notify_all(
        self, characteristic: gatt.Characteristic[bytes], values: list[bytes]
    ) -> None:
        for value in values:
            await self.device.notify_subscribers(characteristic, value)

    def _remember_subscription(
        self, bearer: Any, characteristic: Any, notify: bool, indicate: bool
    ) -> None:
        connection = getattr(bearer, "connection", bearer)
        value = bytes(((1 if notify else 0) | (2 if indicate else 0), 0))
        self._cccds.setdefault(str(connection.peer_address), {})[characteristic.handle] = value

    def _on_connection(self, connection: Connection) -> None:
        def encrypted() -> None:
            saved = self._cccds.get(str(connection.peer_address))
            if connection.is_encrypted and saved:
                restored = self.device.gatt_server.subscribers.setdefault(connection, {})
                for handle, value in saved.items():
                    restored.setdefault(handle, value)

        connection.on(connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, encrypted)

    def remove_soon(self, uid: int) -> None:
        """Announce a notification's removal once the current write has been answered
        (an answered call, a cleared message: what an action does on an iPhone)."""
        if uid in self.services.notifications:
            value = self.services.remove(uid)
            self._spawn(self._notify_all(self.notification_source, [value]))

    def _on_control_point(self, connection: Connection, value: bytes) -> None:
        self.services.att_mtu = connection.att_mtu
        try:
            answer = self.services.control_point(bytes(value))
        except a.CommandError as e:
            raise ATT_Error(e.att_error) from None
        self._spawn(self._notify_all(self.data_source, answer))

    def _on_entity_update(self, connection: Connection, value: bytes) -> None:
        self.services.att_mtu = connection.att_mtu
        try:
            updates = self.services.register(bytes(value))
        except a.CommandError as e:
            raise ATT_Error(e.att_error) from None
        self._spawn(self._notify_all(self.entity_update, updates))

    def _on_select(self, connection: Connection, value: bytes) -> None:
        try:
            self.services.select_attribute(bytes(value))
        except a.CommandError as e:
            raise ATT_Error(e.att_error) from None

    def _on_remote_command(self, connection: Connection, value: bytes) -> None:
        try:
            updates = self.services.remote_command(bytes(value))
        except ProtocolError:
            raise ATT_Error(a.AncsError.INVALID_COMMAND) from None
        self._spawn(self._notify_all(self.entity_update, updates))

    def _on_ancs_subscription(self, *_: Any) -> None:
        # an iPhone lists what it holds at once, flagged PreExisting
        self._spawn(self._notify_all(self.notification_source, self.services.existing()))

    def _on_ams_subscription(self, *_: Any) -> None:
        value = self.services.supported_commands()
        self._spawn(self._notify_all(self.remote_command, [value]))

    # -- trio side: the phone's life -------------------------------------------------

    async def post(self, notification: PostedNotification) -> int:
        """A new notification on the phone; its uid."""
        value = self.services.post(notification)
        await trio_asyncio.aio_as_trio(self._notify_all)(self.notification_source, [value])
        return a.parse_notification_event(value).uid

    async def remove(self, uid: int) -> None:
        value = self.services.remove(uid)
        await trio_asyncio.aio_as_trio(self._notify_all)(self.notification_source, [value])

    async def services_changed(self) -> None:
        """Indicate Service Changed for every handle, as iOS does when ANCS or AMS comes
        back (the consumer must discover and subscribe again)."""
        await trio_asyncio.aio_as_trio(self.device.indicate_subscribers)(
            self.service_changed, (1).to_bytes(2, "little") + (0xFFFF).to_bytes(2, "little")
        )

    async def player_changed(self) -> None:
        """Send the player's changes (after editing ``services.player``): the commands
        it supports now, then the values that changed."""
        await trio_asyncio.aio_as_trio(self._notify_all)(
            self.remote_command, [self.services.supported_commands()]
        )
        await trio_asyncio.aio_as_trio(self._notify_all)(
            self.entity_update, self.services.updates()
        )


class IPhoneRadio:
    """An emulated iPhone's radio: its ANCS and AMS GATT server, bonding as an iPhone
    does (the user taps Pair when the digits match), finding a car in Settings ->
    Bluetooth, connecting and reconnecting. Create inside trio-asyncio's loop, on a
    powered Bumble device."""

    def __init__(self, device: Device, *, att_mtu: int = 185, keeper: Keeper | None = None) -> None:
        """``keeper``: where the phone keeps its bonds (None: in memory only)."""
        self.device = device
        self.att_mtu = att_mtu  # what it asks for on connecting
        self.services = IPhoneServices(att_mtu=att_mtu, on_action=self._on_action)
        self.gatt = IPhoneGatt(device, self.services)
        self.delegate = IPhoneDelegate()
        device.keystore = FileKeyStore(keeper) if keeper is not None else MemoryKeyStore()
        device.pairing_config_factory = lambda _connection: PairingConfig(
            sc=True,
            mitm=True,
            bonding=True,
            delegate=self.delegate,
            identity_address_type=PairingConfig.AddressType.RANDOM,
        )
        self.connection: Connection | None = None
        self.actions: list[tuple[int, a.ActionId]] = []
        self.bonded_to: str | None = None  # the car's address once bonded

    def _on_action(self, uid: int, action: a.ActionId) -> bool:
        """A positive or negative action the car asked for: done, and the notification
        goes (an answered or declined call, a cleared message)."""
        self.actions.append((uid, action))
        self.gatt.remove_soon(uid)
        return True

    async def find_car(self, timeout: float = 30.0) -> str:
        """The address of a car listed in Settings -> Bluetooth: one that advertises a
        Service Solicitation of ANCS (what iOS lists for accessories)."""
        found = trio.Event()
        address: list[str] = []

        def on_advertisement(advertisement: Advertisement) -> None:
            solicited = advertisement.data.get(
                AdvertisingData.LIST_OF_128_BIT_SERVICE_SOLICITATION_UUIDS
            )
            if solicited and any(str(u).lower() == str(a.ANCS_SERVICE) for u in solicited):
                address.append(str(advertisement.address))
                found.set()

        self.device.on(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await trio_asyncio.aio_as_trio(self.device.start_scanning)(active=True)
            with trio.fail_after(timeout):
                await found.wait()
        finally:
            self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, on_advertisement)
            await trio_asyncio.aio_as_trio(self.device.stop_scanning)()
        return address[0]

    async def connect(self, address: str) -> Connection:
        """Connect to the car; bond on the first connection (the user taps Pair when the
        digits match), encrypt with the bond's keys on later ones."""
        aio = trio_asyncio.aio_as_trio
        peer = hci.Address(address)
        connection: Connection = await aio(self.device.connect)(peer)
        self.connection = connection
        keystore = self.device.keystore
        if isinstance(keystore, MemoryKeyStore) and str(peer) in keystore.all_keys:
            self.bonded_to = address  # a bond kept from an earlier run
        if self.bonded_to == address:
            # a bonded iPhone encrypts first (BlueZ holds back ATT until it has: it asks
            # for security as soon as it knows the LTK), then asks for its MTU
            await aio(connection.encrypt)()
            await aio(Peer(connection).request_mtu)(self.att_mtu)
        else:
            # an iPhone as central asks for its MTU at once (185 on iOS 10 and later)
            await aio(Peer(connection).request_mtu)(self.att_mtu)
            await aio(connection.pair)()
            self.bonded_to = address
        return connection

    async def disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                await trio_asyncio.aio_as_trio(connection.disconnect)()
            except Exception as e:  # already gone
                log.debug("iPhone: disconnect: %s", e)
