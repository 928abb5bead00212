"""The head unit's radio policy: which phones to connect, reconnecting, several at once.

Strategy. :class:`HeadUnit` reads sightings from a :class:`Radio` (the bleak transport,
``transports/ble.py``, or anything with its two methods) and decides, per phone:

- A sighting whose advertised name resolves to a paired phone's IRK
  (``pairing/privacy.py``) names the phone. If it is not connected and not waiting out
  a backoff, the head unit connects and runs Noise KK on that phone's
  :class:`~bridge.session.PeerSession`, whose queues outlive links: what was accepted
  while the phone was away goes out on the new link.
- Any other sighting is a stranger's phone (or a phone not yet paired). The head unit
  connects to it only in pairing mode, one at a time, at most once per
  ``stranger_interval`` whoever it is, and each address at most once per
  ``stranger_cooldown``: in a car park full of phones running the app it never
  connects over and over to phones that are not its own.
- Connection attempts and their backoff belong to the **address**, not to the phone:
  a token is public (anyone who heard it can replay it), so until a link has
  authenticated nothing about it says which phone is there. A sighting of a paired
  phone at another address is tried while an attempt at the first is still in its
  handshake; the first link to authenticate serves the phone, and every link must
  authenticate within its connection's ``handshake_timeout``.
- A failed connection waits ``backoff`` (doubling up to ``max_backoff``) before the
  next attempt at that address; a link that authenticated and lasted ``stable_after``
  seconds is retried at once. BlueZ's ``le-connection-abort-by-local`` is one of those
  transient failures.
- Pairing codes cannot be ground silently: every comparison that ends, after the head
  unit revealed its nonce, without both users confirming counts as a failed attempt
  (logged, and told to the API as a ``pairing_attempt`` event); after
  ``max_failed_comparisons`` of them pairing mode ends.

Each phone runs in its own tasks, so a phone navigating, a tablet playing music and a
phone sending messages are served at once. Events of every phone come out of
:attr:`HeadUnit.events` as ``(Phone, HeadUnitEvent)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from bridge.apple_device import AppleDevice, AppleLink
from bridge.phone_device import DeviceEvent, PhoneDevice
from bridge.session import LinkDown, PeerSession
from bridge.store import MessageStore, StoreError
from bridge.wire import messages as m
from bridge.wire.apple_client import AppleClient
from bridge.wire.gatt import head_unit_advertising
from pairing.bonds import Bond, BondStore
from pairing.handshake import (
    Authenticated,
    CodeToConfirm,
    Handshake,
    PairingFailed,
    PeerIdentity,
    Role,
)
from pairing.keylog import KeyLog
from pairing.privacy import make_raw_token, resolve, resolve_identify
from pairing.trust import TrustedDevice, TrustStore
from transports.link import ConnectFailed, Link

log = logging.getLogger(__name__)


class SightingLike(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def platform_hint(self) -> str: ...


class Radio(Protocol):
    def scan(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[SightingLike]]: ...
    async def connect(self, sighting: Any) -> Link: ...


class IncomingLink(Link):
    """A link a phone made to the head unit (protocol v1): ``challenge`` is what the
    identify characteristic gave it, ``tag`` what it wrote there (b"" if nothing)."""

    challenge: bytes
    tag: bytes


class Listener(Protocol):
    """The head unit as GATT server (``transports/bumble_phone.py`` ``BumbleListener``)."""

    async def advertise(self, data: bytes, scan_response: bytes) -> None: ...
    async def accept(self) -> Any: ...  # the next IncomingLink


#: Addresses whose backoff is remembered (the oldest forgotten first).
MAX_ADDRESSES = 256
#: Links at once that may still be in their handshake for one paired phone.
MAX_PENDING_PER_PHONE = 2


#: Seconds the user has to compare an iPhone's bonding digits (the bridge's own 60).
BOND_DEADLINE = 60.0


class IPhoneLinkLike(Protocol):
    """An encrypted link of a bonded iPhone without the app (``transports/bumble_apple.py``)."""

    address: str  # its identity address: the bond's name

    def open(self, client: AppleClient, clock_ms: Callable[[], int]) -> AppleLink: ...


class AppleRadio(Protocol):
    """Bonding and ANCS/AMS links of app-free iPhones (docs/IPHONE.md): what the head
    unit takes as its ``apple``. It sets ``compare`` (the prompt for the six digits)."""

    pairing_mode: bool
    compare: Callable[[Any, int], Awaitable[bool]]

    async def accept(self) -> IPhoneLinkLike: ...


@dataclass
class Policy:
    backoff: float = 0.5  # first wait after a failed connection, seconds
    max_backoff: float = 30.0
    stable_after: float = 10.0  # a link that lasted this long resets the backoff
    stranger_cooldown: float = 30.0  # per address, in pairing mode
    stranger_interval: float = 2.0  # between any two strangers, whatever their address
    permanent_failure_hold: float = 300.0  # after a non-transient failure
    max_failed_comparisons: int = 3  # then pairing mode ends
    token_rotation: float = 900.0  # a fresh advertising token (v1) at least this often


@dataclass
class _Address:
    """What the head unit remembers of one address it connected to."""

    failures: int = 0
    not_before: float = -float("inf")


@dataclass(frozen=True)
class PairingAttemptFailed:
    """A comparison ended, after the head unit's nonce was out, without both users
    confirming: one of the attempts an attacker would need to match a code."""

    failed: int  # in this pairing mode
    limit: int
    pairing_mode_ended: bool


@dataclass(frozen=True)
class Bonded:
    """An iPhone without the app bonded just now (its first link is being served)."""


@dataclass(eq=False)
class Phone:
    """One phone as the head unit knows it (paired, or being paired)."""

    session: PeerSession
    device: PhoneDevice
    key: bytes | None = None  # its static key once known
    name: str = "unknown phone"
    platform_hint: str = ""
    address: str | None = None  # of its last link that authenticated
    # the kind of its latest link: "central" (we connected to it: it advertised) or
    # "peripheral" (it connected to us: we advertised), the head unit's own role
    role: str = ""
    attempts: int = 0  # links being connected or in their handshake now
    links: int = 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    asking: trio.CancelScope | None = None  # the pairing prompt shown for it, while open

    @property
    def connected(self) -> bool:
        return self.device.connected

    @property
    def label(self) -> str:
        """How logs at INFO and above name it: its key's fingerprint (what ``bridge
        devices`` lists as its id), never its name."""
        return f"device {self.key.hex()[:8]}" if self.key is not None else "a new phone"

    @property
    def platform(self) -> str:
        """What the phone's hello says, else what its advertising hinted."""
        hello = self.device.peer
        return hello.platform if hello is not None else self.platform_hint


Confirm = Callable[[Phone, CodeToConfirm], Awaitable[bool]]

#: What :attr:`HeadUnit.events` carries with each phone: its device's events, and the
#: head unit's own word on a failed pairing attempt.
HeadUnitEvent = DeviceEvent | PairingAttemptFailed | Bonded


async def _refuse(phone: Phone, event: CodeToConfirm) -> bool:
    return False


class HeadUnit:
    def __init__(
        self,
        radio: Radio | None,
        trust: TrustStore,
        data_dir: Path,
        *,
        name: str = "Head unit",
        confirm: Confirm = _refuse,
        pairing_mode: bool = False,
        policy: Policy | None = None,
        keylog: KeyLog | None = None,
        clock_ms: Callable[[], int],
        listener: Listener | None = None,
        apple: AppleRadio | None = None,
        bonds: BondStore | None = None,
    ) -> None:
        """``radio`` (central role: scanning for phones) or ``listener`` (peripheral
        role: phones connect to the head unit), or both; either may be None. ``apple``
        and ``bonds``: iPhones without the app, bonded at the link layer (ANCS, AMS)."""
        self.radio = radio
        self.listener = listener
        self.apple = apple
        self.bonds = bonds
        self.incoming = 0  # links phones made to the head unit
        self.advertised: list[tuple[bytes, bytes]] = []  # what it advertised, latest last
        self.trust = trust
        self.data_dir = data_dir
        self.name = name
        self.confirm = confirm
        self._pairing_mode = pairing_mode
        self.policy = policy or Policy()
        self.keylog = keylog
        self.clock_ms = clock_ms
        self.phones: dict[bytes, Phone] = {}
        self.pairing: Phone | None = None
        self.strangers_seen: dict[str, float] = {}  # address -> last attempt
        self.strangers_ignored = 0
        self.connect_attempts = 0
        self.failed_comparisons = 0  # since pairing mode was last switched on
        self._last_stranger = -float("inf")
        self._addresses: dict[str, _Address] = {}  # oldest first
        self._in_use: set[str] = set()  # addresses being connected or connected
        self._events_in, self.events = trio.open_memory_channel[tuple[Phone, HeadUnitEvent]](1024)
        self._nursery: trio.Nursery | None = None
        self._advertising_changed = trio.Event()
        self._bond_prompt_open = False
        for device in trust.devices():
            self._register(device.key_bytes, device.name, device.platform)
        for bond in bonds.bonds() if bonds is not None else []:
            self._iphone(bond)
        if apple is not None:
            apple.compare = self._compare_bond
            apple.pairing_mode = pairing_mode

    @property
    def pairing_mode(self) -> bool:
        return self._pairing_mode

    @pairing_mode.setter
    def pairing_mode(self, on: bool) -> None:
        if on and not self._pairing_mode:
            self.failed_comparisons = 0
        changed = on != self._pairing_mode
        self._pairing_mode = on
        if self.apple is not None:
            self.apple.pairing_mode = on
        if changed:
            self._advertising_changed.set()  # the car's name is advertised only in pairing mode

    # -- phones ---------------------------------------------------------------------

    def _new_phone(self, key: bytes | None, name: str) -> Phone:
        hello = m.Hello(m.PROTOCOL_VERSIONS, "head-unit", self.name)
        session = PeerSession(name, keylog=self.keylog, hello=hello)
        store, failed = self._open_store(key) if key is not None else (None, None)
        device = PhoneDevice(session, store=store, clock_ms=self.clock_ms)
        if failed is not None:
            device.store_failed(failed)
        return Phone(session, device, key=key, name=name)

    def _open_store(self, key: bytes) -> tuple[MessageStore | None, StoreError | None]:
        """One phone's message store; a store that cannot be opened turns that phone's
        messaging off, never the head unit."""
        try:
            return MessageStore(self._store_dir(key)), None
        except StoreError as e:
            return None, e

    def _store_dir(self, key: bytes) -> Path:
        return self.data_dir / "phones" / key.hex()[:16]

    def _register(self, key: bytes, name: str, platform: str) -> Phone:
        phone = self.phones.get(key)
        if phone is None:
            phone = self.phones[key] = self._new_phone(key, name)
            phone.platform_hint = platform
            if self._nursery is not None:
                self._nursery.start_soon(self._serve, phone)
        return phone

    def _all_phones(self) -> list[Phone]:
        return [*self.phones.values(), *([self.pairing] if self.pairing is not None else [])]

    def phone(self, name_or_key: str | bytes) -> Phone | None:
        for phone in self.phones.values():
            if name_or_key in (phone.name, phone.key):
                return phone
        return None

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for phone in self.phones.values():
                nursery.start_soon(self._serve, phone)
            if self.apple is not None:
                nursery.start_soon(self._serve_iphones, self.apple, nursery)
            if self.listener is not None:
                await self._advertise(self.listener)
                nursery.start_soon(self._keep_advertising, self.listener)
                nursery.start_soon(self._listen, self.listener, nursery)
            if self.radio is None:
                task_status.started()
                return
            async with self.radio.scan() as sightings:
                task_status.started()
                async for sighting in sightings:
                    if getattr(sighting, "car_token", None) is not None:
                        continue  # another head unit advertising (v1), not a phone
                    self._on_sighting(sighting, nursery)

    # -- iPhones without the app (ANCS, AMS: docs/IPHONE.md) ----------------------------

    def _iphone(self, bond: Bond) -> Phone:
        """The device of a bonded iPhone (registered once, served for as long as the
        head unit runs, connected whenever the iPhone is)."""
        phone = self.phones.get(bond.key)
        if phone is None:
            device = AppleDevice(bond.name, clock_ms=self.clock_ms)
            phone = Phone(device.session, device, key=bond.key, name=bond.name)
            phone.platform_hint, phone.role = "ios", "peripheral"
            self.phones[bond.key] = phone
            if self._nursery is not None:
                self._nursery.start_soon(self._serve, phone)
        return phone

    async def _serve_iphones(self, apple: AppleRadio, nursery: trio.Nursery) -> None:
        while True:
            link = await apple.accept()
            bond = self.bonds.get(link.address) if self.bonds is not None else None
            if bond is None:  # bonded on the radio, but the store did not keep it
                log.warning("an iPhone connected whose bond is not in the bond store")
                continue
            new = bond.key not in self.phones
            nursery.start_soon(self._attach_iphone, self._iphone(bond), link, new)

    async def _attach_iphone(self, phone: Phone, link: IPhoneLinkLike, new: bool) -> None:
        device = phone.device
        assert isinstance(device, AppleDevice)
        if device.link is not None:
            return  # already served on another link (the older one ends by itself)
        log.info("%s (an iPhone without the app) connected", phone.label)
        consumer = link.open(device.client, self.clock_ms)
        name = await consumer.read_name()
        if name and self.bonds is not None:
            self.bonds.rename(link.address, name)
            phone.name = device.state.name = name
        if new:
            await self._events_in.send((phone, Bonded()))
        await device.attach(consumer, phone.name)
        log.info("%s (an iPhone without the app) went away", phone.label)

    async def _compare_bond(self, connection: Any, number: int) -> bool:
        """An iPhone bonds in pairing mode: the same prompt as a first pairing, its six
        digits to compare with the iPhone's, within the pairing deadline; one at a time
        (another device asking meanwhile is refused, as a second stranger is)."""
        if self._bond_prompt_open:
            self.strangers_ignored += 1
            log.info("an iPhone asked to bond while another bonding was open: refused")
            return False
        self._bond_prompt_open = True
        try:
            return await self._ask_bond(number)
        finally:
            self._bond_prompt_open = False

    async def _ask_bond(self, number: int) -> bool:
        device = AppleDevice("iPhone", clock_ms=self.clock_ms)
        phone = Phone(device.session, device, name="iPhone")
        phone.platform_hint, phone.role = "ios", "peripheral"
        digits = f"{number:06d}"
        peer = PeerIdentity(b"", "an iPhone without the app", "ios")
        event = CodeToConfirm(f"{digits[:3]} {digits[3:]}", peer, False)
        log.info("an iPhone asks to bond: comparing codes")
        with trio.move_on_after(BOND_DEADLINE):
            return await self.confirm(phone, event)
        return False

    # -- the peripheral role (v1: phones connect to the head unit) -------------------

    async def _advertise(self, listener: Listener) -> None:
        """Advertise a fresh token (and our name, in pairing mode): PROTOCOL.md 2.2."""
        self._advertising_changed = trio.Event()
        token = make_raw_token(self.trust.irk, os.urandom)
        name = self.name if self.pairing_mode else None
        data = head_unit_advertising(token, name, solicit_ancs=self.apple is not None)
        self.advertised.append(data)
        del self.advertised[:-16]
        await listener.advertise(*data)

    async def _keep_advertising(self, listener: Listener) -> None:
        while True:
            with trio.move_on_after(self.policy.token_rotation):
                await self._advertising_changed.wait()
            await self._advertise(listener)

    async def _listen(self, listener: Listener, nursery: trio.Nursery) -> None:
        while True:
            link: IncomingLink = await listener.accept()
            self.incoming += 1
            self._on_incoming(link, nursery)

    def _on_incoming(self, link: IncomingLink, nursery: trio.Nursery) -> None:
        """A phone connected and subscribed: its tag names a paired phone, or it is a
        stranger, served only in pairing mode, one at a time, spaced like sightings."""
        now = trio.current_time()
        match: TrustedDevice | None = (
            resolve_identify(link.tag, link.challenge, self.trust.irks()) if link.tag else None
        )
        if match is not None:
            phone = self._register(match.key_bytes, match.name, match.platform)
            if phone.attempts >= MAX_PENDING_PER_PHONE:
                nursery.start_soon(link.aclose)
                return
            log.debug("%s connected to us at %s", phone.label, link.peer)
            phone.attempts += 1
            nursery.start_soon(self._incoming, phone, link, match.key_bytes)
            return
        last = self.strangers_seen.get(link.peer)
        cooled = last is None or now - last >= self.policy.stranger_cooldown
        spaced = now - self._last_stranger >= self.policy.stranger_interval
        if not self.pairing_mode or self.pairing is not None or not cooled or not spaced:
            self.strangers_ignored += 1
            nursery.start_soon(link.aclose)
            return
        self._stranger_seen(link.peer, now)
        log.debug("a phone not paired connected at %s: pairing", link.peer)
        phone = self.pairing = self._new_phone(None, "new phone")
        phone.attempts = 1
        nursery.start_soon(self._pair_incoming, phone, link)

    async def _incoming(self, phone: Phone, link: Link, key: bytes) -> None:
        try:
            await self._drive(phone, link, key, None)
        finally:
            phone.attempts -= 1

    async def _pair_incoming(self, phone: Phone, link: Link) -> None:
        await self._pairing_attempt(phone, partial(self._drive, phone, link, None, None))

    def _address(self, address: str) -> _Address:
        state = self._addresses.pop(address, None) or _Address()
        self._addresses[address] = state  # most recently used last
        while len(self._addresses) > MAX_ADDRESSES:
            del self._addresses[next(iter(self._addresses))]
        return state

    def _on_sighting(self, sighting: SightingLike, nursery: trio.Nursery) -> None:
        now = trio.current_time()
        address = sighting.address
        if address in self._in_use:
            return  # connecting or connected to that address already
        known = self._addresses.get(address)
        if known is not None and now < known.not_before:
            return
        match: TrustedDevice | None = resolve(sighting.name or "", self.trust.irks())
        if match is not None:
            phone = self._register(match.key_bytes, match.name, match.platform)
            if phone.connected or phone.attempts >= MAX_PENDING_PER_PHONE:
                return
            log.debug("%s at %s: connecting", phone.name, address)
            phone.attempts += 1
            phone.platform_hint = phone.platform_hint or sighting.platform_hint
            self._in_use.add(address)
            nursery.start_soon(self._connect, phone, sighting, match.key_bytes)
            return
        last = self.strangers_seen.get(address)
        cooled = last is None or now - last >= self.policy.stranger_cooldown
        spaced = now - self._last_stranger >= self.policy.stranger_interval
        if not self.pairing_mode or self.pairing is not None or not cooled or not spaced:
            self.strangers_ignored += 1
            return
        self._stranger_seen(address, now)
        log.debug("a phone not paired at %s: connecting to pair", address)
        phone = self.pairing = self._new_phone(None, "new phone")
        phone.attempts = 1
        phone.platform_hint = sighting.platform_hint
        self._in_use.add(address)
        nursery.start_soon(self._pair, phone, sighting)

    def _stranger_seen(self, address: str, now: float) -> None:
        self.strangers_seen.pop(address, None)
        self.strangers_seen[address] = now
        while len(self.strangers_seen) > MAX_ADDRESSES:
            del self.strangers_seen[next(iter(self.strangers_seen))]
        self._last_stranger = now

    async def _serve(self, phone: Phone) -> None:
        """The phone's application side, for as long as the head unit runs."""
        with phone.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(phone.device.run)
                async for event in phone.device.events:
                    await self._link_event(phone, event, nursery)
                    await self._events_in.send((phone, event))

    async def _link_event(self, phone: Phone, detail: DeviceEvent, nursery: trio.Nursery) -> None:
        if isinstance(detail, CodeToConfirm):
            nursery.start_soon(self._ask, phone, detail)
        elif isinstance(detail, Authenticated):
            peer = detail.peer
            stored = self.trust.record(detail)  # "Pixel 9 (2)" if another is "Pixel 9"
            phone.name = stored.name if stored is not None else peer.name
            if phone.key is None:  # a first pairing: from now on a phone we know
                phone.key = peer.static_key
                old = self.phones.get(peer.static_key)
                if old is not None and old is not phone:
                    old.scope.cancel()
                self.phones[peer.static_key] = phone
                store, failed = self._open_store(peer.static_key)
                phone.device.store = store
                if failed is not None:
                    phone.device.store_failed(failed)
                if self.pairing is phone:
                    self.pairing = None
        elif isinstance(detail, PairingFailed | LinkDown):
            if phone.asking is not None:  # the prompt closes (the API says pairing_closed)
                phone.asking.cancel()
            if isinstance(detail, PairingFailed) and self.pairing is phone:
                phone.session.close("pairing failed")

    async def _ask(self, phone: Phone, event: CodeToConfirm) -> None:
        with trio.CancelScope() as asking:  # closed when the attempt ends without us
            phone.asking = asking
            accepted = await self.confirm(phone, event)
        if phone.asking is asking:
            phone.asking = None
        if asking.cancelled_caught:
            return
        try:
            phone.session.confirm_pairing(accepted)
        except Exception as e:  # the link went away while the user looked
            log.info("pairing answer for %s came too late: %s", phone.label, e)

    def _handshake(self, key: bytes | None, address: str) -> Handshake:
        return Handshake(
            Role.HEAD_UNIT,
            self.trust.identity,
            name=self.name,
            platform="head-unit",
            trusted=self.trust.trusted_keys(),
            peer_key=key,
            allow_pairing=self.pairing_mode,
            random=os.urandom,
            irk=self.trust.irk,  # given to a phone that pairs: it finds our adverts by it
            link=address,  # its transitions are logged (DEBUG) with the link's address
        )

    async def _connect(self, phone: Phone, sighting: SightingLike, key: bytes) -> None:
        try:
            await self._run_link(phone, sighting, key)
        finally:
            phone.attempts -= 1
            self._in_use.discard(sighting.address)

    async def _pair(self, phone: Phone, sighting: SightingLike) -> None:
        try:
            await self._pairing_attempt(phone, partial(self._run_link, phone, sighting, None))
        finally:
            self._in_use.discard(sighting.address)

    async def _pairing_attempt(self, phone: Phone, run: Callable[[], Awaitable[None]]) -> None:
        """A stranger's link (``run``), served while it lasts; a phone that did not pair
        is forgotten entirely afterwards."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve, phone)
            try:
                await run()
            finally:
                phone.attempts = 0
                if phone.key is None:
                    phone.scope.cancel()
                    if self.pairing is phone:
                        self.pairing = None

    def _back_off(self, address: _Address, hold: float | None = None) -> float:
        address.failures += 1
        policy = self.policy
        if hold is None:
            hold = min(policy.backoff * 2 ** (address.failures - 1), policy.max_backoff)
        address.not_before = trio.current_time() + hold
        return hold

    async def _run_link(self, phone: Phone, sighting: SightingLike, key: bytes | None) -> None:
        self.connect_attempts += 1
        policy = self.policy
        address = self._address(sighting.address)
        assert self.radio is not None  # sightings come from it
        try:
            link = await self.radio.connect(sighting)
        except ConnectFailed as e:
            hold = self._back_off(address, None if e.transient else policy.permanent_failure_hold)
            log.info("connecting to %s failed (%s); next try in %.1f s", sighting.address, e, hold)
            return
        await self._drive(phone, link, key, address)

    async def _drive(
        self, phone: Phone, link: Link, key: bytes | None, address: _Address | None
    ) -> None:
        """Run one link of ``phone`` (KK with ``key``, else XX) to its end; ``address``:
        the backoff of the address we connected to (None: the phone connected to us)."""
        phone.links += 1
        phone.role = "central" if address is not None else "peripheral"
        started = trio.current_time()
        handshake = self._handshake(key, link.peer)
        down: LinkDown = await phone.session.run_link(link, handshake=handshake)
        lasted = trio.current_time() - started
        if down.authenticated:
            phone.address = link.peer
        if address is not None:
            if down.authenticated and lasted >= self.policy.stable_after:
                address.failures = 0
            else:
                self._back_off(address)
        if handshake.comparison_spent:
            self._comparison_failed(phone)
        log.info("link to %s ended after %.1f s: %s", link.peer, lasted, down.reason)

    def _comparison_failed(self, phone: Phone) -> None:
        self.failed_comparisons += 1
        limit = self.policy.max_failed_comparisons
        ended = self.pairing_mode and self.failed_comparisons >= limit
        log.warning(
            "a pairing attempt failed after its code was fixed (%d of %d)%s",
            self.failed_comparisons, limit, "; pairing mode ends" if ended else "",
        )  # fmt: skip
        if ended:
            self._pairing_mode = False
        event = PairingAttemptFailed(self.failed_comparisons, limit, ended)
        try:
            self._events_in.send_nowait((phone, event))
        except trio.WouldBlock:
            log.warning("head-unit events full: a failed pairing attempt was not reported")
