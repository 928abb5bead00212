"""iPhones without the app on BlueZ (bluetoothd): bonding through an ``org.bluez.Agent1``,
an advertisement soliciting ANCS, and the iPhone's ANCS and AMS read through BlueZ's GATT
client over D-Bus (docs/IPHONE.md).

Strategy. dbus-fast (bleak's own D-Bus library) on a connection of our own to the system
bus exports:

- an agent at ``/org/ble_bridge/agent`` (capability ``DisplayYesNo``), registered as the
  default agent: ``RequestConfirmation`` is the six digits of LE Secure Connections'
  numeric comparison, asked through the head unit's prompt and refused outside pairing
  mode; a request that compares nothing (Just Works: ``RequestAuthorization``) is
  refused. BlueZ keeps the bond (its keys, the IRK that resolves the iPhone's private
  addresses) in ``/var/lib/bluetooth``;
- an ``org.bluez.LEAdvertisement1``, connectable, soliciting ANCS and naming the car in
  pairing mode (PROTOCOL.md 2.2) and plain outside it (a bonded iPhone reconnects when
  it sees its accessory).

A bonded device that is connected (``Device1.Paired`` and ``Connected``, its GATT services
resolved) becomes a :class:`BluezIPhoneLink`; its consumer drives
:class:`~bridge.wire.apple_client.AppleClient` with ``GattCharacteristic1`` calls
(``StartNotify`` and ``PropertiesChanged`` of ``Value`` for notifications, ``WriteValue``
with ``type: request``, ``ReadValue``). Runs on the asyncio side of trio-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol
from uuid import UUID

import trio
import trio_asyncio
from dbus_fast import BusType, DBusError, Message, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

from bridge.wire import apple as a
from bridge.wire.apple_client import AppleClient, AppleEvent, Read, Write
from bridge.wire.errors import ProtocolError

log = logging.getLogger(__name__)

Nothing = Annotated[None, DBusSignature("")]
Str = Annotated[str, DBusSignature("s")]
ObjPath = Annotated[str, DBusSignature("o")]
U32 = Annotated[int, DBusSignature("u")]
U16 = Annotated[int, DBusSignature("q")]
Bool = Annotated[bool, DBusSignature("b")]
Strs = Annotated[list[str], DBusSignature("as")]

BLUEZ = "org.bluez"
AGENT = "/org/ble_bridge/agent"
ADVERTISEMENT = "/org/ble_bridge/ancs_advertisement"
REJECTED = "org.bluez.Error.Rejected"
GATT_CHAR = "org.bluez.GattCharacteristic1"
INBOX = 256
#: Values kept per device while it has no link yet (a reconnection's first notifications).
EARLY = 64
UNANSWERED = 0x0E


class _Agent(ServiceInterface):
    def __init__(self, apple: BluezApple) -> None:
        super().__init__("org.bluez.Agent1")
        self.apple = apple

    @method()
    async def RequestConfirmation(self, device: ObjPath, passkey: U32) -> Nothing:
        if not self.apple.pairing_mode:
            self.apple.refused += 1
            log.info("a device asked to bond outside pairing mode: refused")
            raise DBusError(REJECTED, "not in pairing mode")
        accepted = await self.apple.ask(device, passkey)
        if not accepted:
            raise DBusError(REJECTED, "the user rejected the code")

    @method()
    def RequestAuthorization(self, device: ObjPath) -> Nothing:
        self.apple.refused += 1  # Just Works: nobody compared anything
        log.info("a device asked to bond without a code to compare: refused")
        raise DBusError(REJECTED, "numeric comparison only")

    @method()
    def AuthorizeService(self, device: ObjPath, uuid: Str) -> Nothing:
        return None

    @method()
    def RequestPinCode(self, device: ObjPath) -> Str:
        raise DBusError(REJECTED, "no PIN codes")

    @method()
    def RequestPasskey(self, device: ObjPath) -> U32:
        raise DBusError(REJECTED, "no passkey entry")

    @method()
    def DisplayPasskey(self, device: ObjPath, passkey: U32, entered: U16) -> Nothing:
        return None

    @method()
    def DisplayPinCode(self, device: ObjPath, pincode: Str) -> Nothing:
        return None

    @method()
    def Cancel(self) -> Nothing:
        return None

    @method()
    def Release(self) -> Nothing:
        return None


class _Advertisement(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self.local_name: str | None = None

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> Str:
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def SolicitUUIDs(self) -> Strs:
        return [str(a.ANCS_SERVICE)] if self.local_name is not None else []

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> Bool:
        return self.local_name is not None

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> Str:
        return self.local_name or ""

    @method()
    def Release(self) -> Nothing:
        log.info("BlueZ released the advertisement")


Compare = Callable[[Any, int], Awaitable[bool]]


class Keeper(Protocol):
    """Where the head unit keeps its bonds (``pairing/bonds.py`` BondStore)."""

    def stored(self) -> list[tuple[str, dict[str, Any]]]: ...
    def put(self, address: str, keys: dict[str, Any]) -> object: ...
    def remove(self, address: str) -> None: ...


async def _refuse(device: Any, number: int) -> bool:
    return False


class BluezApple:
    """What :class:`~bridge.radio_policy.HeadUnit` takes as its ``apple`` on bluetoothd.
    Create inside trio-asyncio's loop, then ``await start()``."""

    def __init__(self, keeper: Keeper, adapter: str = "hci0", *, name: str = "Head unit") -> None:
        """``keeper``: the head unit's bond store; BlueZ holds the keys, the store the
        names (an empty ``keys`` entry marks a bond BlueZ keeps)."""
        self.keeper = keeper
        self.adapter_path = f"/org/bluez/{adapter}"
        self.name = name
        self.compare: Compare = _refuse
        self._pairing_mode = False
        self.refused = 0
        self.values = 0  # characteristic values BlueZ signalled
        self._bus: MessageBus | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # trio-asyncio's, once started
        self._advertisement = _Advertisement()
        self._advertising = False
        self._send, self._receive = trio.open_memory_channel[BluezIPhoneLink](16)
        self._served: set[str] = set()  # device paths being served
        self._links: dict[str, BluezIPhoneLink] = {}
        self._early: dict[str, deque[tuple[str, bytes]]] = {}

    # -- trio side ----------------------------------------------------------------------

    async def start(self) -> None:
        await trio_asyncio.aio_as_trio(self._start)()

    @property
    def pairing_mode(self) -> bool:
        return self._pairing_mode

    @pairing_mode.setter
    def pairing_mode(self, on: bool) -> None:
        self._pairing_mode = on
        self._advertisement.local_name = self.name if on else None
        if self._loop is not None:  # the advertisement says pairing mode or not
            self._loop.create_task(self._readvertise())

    async def accept(self) -> BluezIPhoneLink:
        return await self._receive.receive()

    async def ask(self, device: str, passkey: int) -> bool:
        return bool(await trio_asyncio.trio_as_aio(self.compare)(device, passkey))

    # -- asyncio side -------------------------------------------------------------------

    async def _start(self) -> None:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self._bus = bus
        self._loop = asyncio.get_running_loop()
        bus.export(AGENT, _Agent(self))
        bus.export(ADVERTISEMENT, self._advertisement)
        bus.add_message_handler(self._on_signal)
        for member in ("PropertiesChanged", "InterfacesAdded"):
            await self.call("AddMatch", "org.freedesktop.DBus", "/org/freedesktop/DBus", "s",
                            [f"type='signal',sender='org.bluez',member='{member}'"],
                            destination="org.freedesktop.DBus")  # fmt: skip
        await self.call("RegisterAgent", "org.bluez.AgentManager1", "/org/bluez", "os",
                        [AGENT, "DisplayYesNo"])  # fmt: skip
        await self.call("RequestDefaultAgent", "org.bluez.AgentManager1", "/org/bluez", "o",
                        [AGENT])  # fmt: skip
        self._advertisement.local_name = self.name if self._pairing_mode else None
        await self._readvertise()
        objects = await self.call("GetManagedObjects", "org.freedesktop.DBus.ObjectManager",
                                  "/", "", [])  # fmt: skip
        kept = {address for address, _ in self.keeper.stored()}
        for path, interfaces in objects[0].items():
            device = interfaces.get("org.bluez.Device1")
            if device is None:
                continue
            values = {k: v.value for k, v in device.items()}
            if values.get("Paired") and str(values.get("Address")) not in kept:
                # forgotten while the head unit was stopped (bridge forget): BlueZ's
                # bond goes too, so the iPhone is not served again unasked
                log.info("removing a bond that was forgotten")
                with contextlib.suppress(OSError):
                    await self.call("RemoveDevice", "org.bluez.Adapter1", self.adapter_path,
                                    "o", [path])  # fmt: skip
                continue
            self._check(path, values)

    async def call(
        self, member: str, interface: str, path: str, signature: str, body: list[Any], *,
        destination: str = BLUEZ,
    ) -> Any:  # fmt: skip
        assert self._bus is not None
        reply = await self._bus.call(
            Message(destination=destination, path=path, interface=interface, member=member,
                    signature=signature, body=body)
        )  # fmt: skip
        if reply is None or reply.message_type.name == "ERROR":
            detail = reply.body[0] if reply is not None and reply.body else ""
            raise OSError(f"BlueZ {member} failed: {reply.error_name if reply else ''} {detail}")
        return reply.body

    async def _readvertise(self) -> None:
        """(Re-)register the advertisement: after a change, and after each connection
        (BlueZ leaves a connectable advertisement off once a central connected)."""
        try:
            if self._advertising:
                with contextlib.suppress(OSError):
                    await self.call("UnregisterAdvertisement", "org.bluez.LEAdvertisingManager1",
                                    self.adapter_path, "o", [ADVERTISEMENT])  # fmt: skip
            await self.call("RegisterAdvertisement", "org.bluez.LEAdvertisingManager1",
                            self.adapter_path, "oa{sv}", [ADVERTISEMENT, {}])  # fmt: skip
            self._advertising = True
        except OSError as e:
            log.warning("advertising did not start: %s", e)

    def _on_signal(self, message: Message) -> bool:
        if message.member == "InterfacesAdded" and message.body:
            device = message.body[1].get("org.bluez.Device1")
            if device is not None:
                self._check(message.body[0], {k: v.value for k, v in device.items()})
            return False
        if message.member == "PropertiesChanged" and message.path and message.body:
            interface, changed = message.body[0], message.body[1]
            if interface == "org.bluez.Device1":
                values = {k: v.value for k, v in changed.items()}
                if values.get("Connected") is False:
                    self._served.discard(message.path)
                    link = self._links.pop(message.path, None)
                    if link is not None:
                        link.gone()
                if values.get("Connected") is not None and self._advertising:
                    asyncio.get_running_loop().create_task(self._readvertise())
                asyncio.get_running_loop().create_task(self._refresh(message.path))
            elif interface == GATT_CHAR and "Value" in changed:
                self.values += 1
                value = bytes(changed["Value"].value)
                owner = next((k for k in self._links if message.path.startswith(k + "/")), None)
                if owner is not None:
                    self._links[owner].on_value(message.path, value)
                else:
                    # BlueZ turns a bonded device's notifications back on as it
                    # reconnects, before its services are resolved: what the iPhone
                    # sends then is kept for the link about to be served
                    device = message.path.rsplit("/", 2)[0]
                    self._early.setdefault(device, deque(maxlen=EARLY)).append(
                        (message.path, value)
                    )
        return False

    async def _refresh(self, path: str) -> None:
        with contextlib.suppress(OSError):
            props = await self.call("GetAll", "org.freedesktop.DBus.Properties", path, "s",
                                    ["org.bluez.Device1"])  # fmt: skip
            self._check(path, {k: v.value for k, v in props[0].items()})

    def _check(self, path: str, device: dict[str, Any]) -> None:
        """A bonded device connected, its services resolved: serve it."""
        if not (
            device.get("Connected") and device.get("Paired") and device.get("ServicesResolved")
        ):
            return
        if path in self._served:
            return
        self._served.add(path)
        address = str(device.get("Address", path))
        if address not in {a for a, _ in self.keeper.stored()}:
            self.keeper.put(address, {})  # bonded just now: BlueZ keeps the keys
        link = BluezIPhoneLink(self, path, address)
        link.early.extend(self._early.pop(path, ()))
        self._links[path] = link
        try:
            self._send.send_nowait(link)
        except trio.WouldBlock:
            log.warning("too many iPhones waiting to be served")

    async def forget(self, address: str) -> None:
        for path, link in list(self._links.items()):
            if link.address == address:
                with contextlib.suppress(OSError):
                    await trio_asyncio.aio_as_trio(self.call)(
                        "RemoveDevice", "org.bluez.Adapter1", self.adapter_path, "o", [path]
                    )


class BluezIPhoneLink:
    """A bonded iPhone's connection on bluetoothd, as :meth:`BluezApple.accept` gives it."""

    def __init__(self, apple: BluezApple, path: str, address: str) -> None:
        self.apple = apple
        self.path = path
        self.address = address
        self._consumer: BluezAppleConsumer | None = None
        self.early: deque[tuple[str, bytes]] = deque(maxlen=EARLY)  # before a consumer

    def open(self, client: AppleClient, clock_ms: Callable[[], int]) -> BluezAppleConsumer:
        self._consumer = BluezAppleConsumer(self, client, clock_ms)
        return self._consumer

    def on_value(self, char_path: str, value: bytes) -> None:
        if self._consumer is not None and self._consumer.ready:
            self._consumer.on_value(char_path, value)
        else:
            self.early.append((char_path, value))

    def gone(self) -> None:
        if self._consumer is not None:
            self._consumer.gone.set()


class BluezAppleConsumer:
    """ANCS and AMS of one bonded iPhone through BlueZ's GATT client (the same
    :class:`AppleClient` as on Bumble)."""

    def __init__(
        self, link: BluezIPhoneLink, client: AppleClient, clock_ms: Callable[[], int]
    ) -> None:
        self.link = link
        self.client = client
        self.clock_ms = clock_ms
        self.gone = trio.Event()
        self.ready = False  # its characteristics are known
        self.protocol_errors = 0
        self.dropped = 0
        self._paths: dict[Any, str] = {}  # characteristic UUID -> object path
        self._kinds: dict[str, str] = {}  # object path -> what its values are
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](INBOX)
        self._outcomes: dict[Write, list[tuple[trio.Event, list[int | None]]]] = {}

    def on_value(self, char_path: str, value: bytes) -> None:
        kind = self._kinds.get(char_path)
        if kind is None:
            return
        try:
            self._send.send_nowait((kind, value))
        except trio.WouldBlock:
            self.dropped += 1

    def kick(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(("kick", b""))

    async def outcome(self, request: Write, timeout: float) -> int | None:
        done, result = trio.Event(), [None]
        self._outcomes.setdefault(request, []).append((done, result))  # type: ignore[arg-type]
        with trio.move_on_after(timeout):
            await done.wait()
            return result[0]
        return UNANSWERED

    async def read_name(self) -> str | None:
        with contextlib.suppress(OSError):
            props = await self._call("GetAll", "org.freedesktop.DBus.Properties", self.link.path,
                                     "s", ["org.bluez.Device1"])  # fmt: skip
            name = props[0].get("Name") or props[0].get("Alias")
            return str(name.value)[:64] if name is not None else None
        return None

    async def _call(self, *args: Any, **kw: Any) -> Any:
        return await trio_asyncio.aio_as_trio(self.link.apple.call)(*args, **kw)

    async def _discover(self) -> None:
        objects = await self._call("GetManagedObjects", "org.freedesktop.DBus.ObjectManager",
                                   "/", "", [])  # fmt: skip
        notified = {a.NOTIFICATION_SOURCE, a.DATA_SOURCE, a.REMOTE_COMMAND, a.ENTITY_UPDATE}
        wanted = {str(u): u in notified for u in (*notified, a.CONTROL_POINT, a.ENTITY_ATTRIBUTE)}
        for path, interfaces in objects[0].items():
            char = interfaces.get(GATT_CHAR)
            if char is None or not path.startswith(self.link.path + "/"):
                continue
            uuid = str(char["UUID"].value).lower()
            if uuid in wanted:
                self._paths[uuid] = path
                if wanted[uuid]:
                    self._kinds[path] = uuid

    async def run(self, on_events: Callable[[list[AppleEvent]], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:

            async def until_gone() -> None:
                await self.gone.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_gone)
            try:
                await self._serve(on_events)
            except OSError as e:
                if not self.gone.is_set():
                    raise
                log.debug("iPhone: the link ended under a request: %s", e)
            nursery.cancel_scope.cancel()

    async def _serve(self, on_events: Callable[[list[AppleEvent]], Awaitable[None]]) -> None:
        await self._discover()
        log.debug("iPhone %s: %d characteristics of ANCS and AMS", self.link.path, len(self._paths))
        self.ready = True
        while self.link.early:  # what arrived before the characteristics were known
            self.on_value(*self.link.early.popleft())
        for uuid in (a.DATA_SOURCE, a.NOTIFICATION_SOURCE, a.REMOTE_COMMAND, a.ENTITY_UPDATE):
            path = self._paths.get(str(uuid))
            if path is None:
                continue
            try:
                await self._call("StartNotify", GATT_CHAR, path, "", [])
            except OSError as e:  # already on (BlueZ keeps a bonded device's sessions)
                log.debug("iPhone: StartNotify %s: %s", path, e)
        log.debug("iPhone %s: subscribed", self.link.path)
        if str(a.ENTITY_UPDATE) in self._paths:
            self.client.start()
        while True:
            await self._perform()
            events = self.client.pop_events()
            if events:
                await on_events(events)
            deadline = self.client.deadline()
            wait = max(0.0, (deadline - self.clock_ms()) / 1000) if deadline is not None else None
            with trio.move_on_after(wait if wait is not None else float("inf")):
                kind, value = await self._receive.receive()
                self._feed(kind, value)
                while True:
                    try:
                        kind, value = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._feed(kind, value)
            self.client.on_timer(self.clock_ms())

    def _feed(self, kind: str, value: bytes) -> None:
        if kind == "kick":
            return
        try:
            self.client.on_notified(UUID(kind), value, self.clock_ms())
        except ProtocolError as e:
            self.protocol_errors += 1
            log.debug("iPhone: %s", e)

    async def _perform(self) -> None:
        while (request := self.client.next_request(self.clock_ms())) is not None:
            path = self._paths.get(str(request.characteristic))
            if isinstance(request, Read):
                value: bytes | None = None
                if path is not None:
                    with contextlib.suppress(OSError):
                        body = await self._call("ReadValue", GATT_CHAR, path, "a{sv}", [{}])
                        value = bytes(body[0])
                self.client.on_read(request, value)
                continue
            error: int | None = 0x0A if path is None else None
            if path is not None:
                kind = "request" if request.with_response else "command"
                try:
                    await self._call("WriteValue", GATT_CHAR, path, "aya{sv}",
                                     [request.value, {"type": Variant("s", kind)}])  # fmt: skip
                except OSError as e:
                    error = _att_error(str(e))
            self.client.on_written(request, error)
            for done, result in self._outcomes.pop(request, []):
                result[0] = error
                done.set()


def _att_error(text: str) -> int:
    """The ATT error in a BlueZ D-Bus error ("... 0xa3 ..."), else Unlikely Error."""
    for word in text.replace("(", " ").replace(")", " ").split():
        if word.lower().startswith("0x"):
            with contextlib.suppress(ValueError):
                return int(word, 16)
    return UNANSWERED


async def open_bluez_apple(adapter: str, name: str, keeper: Keeper) -> BluezApple:
    """App-free iPhones on bluetoothd's adapter (``hci0`` when ``adapter`` is empty):
    the agent and the advertisement registered."""
    apple = BluezApple(keeper, adapter or "hci0", name=name)
    await apple.start()
    return apple
