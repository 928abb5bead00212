"""A virtual BLE radio on Bumble: controllers joined in one process, with BLE timing.

Strategy. Bumble's :class:`~bumble.link.LocalLink` hands data to the peer controller at
once and its controllers report every ACL packet completed as soon as the host gives it,
so a link has no airtime and no back-pressure. :class:`PacedLink` fixes both, in the
spirit of ``transports/simulated.py`` but coarser:

- LE ACL data (whole L2CAP PDUs) is released only at connection events, every
  ``interval`` from the connection's anchor, at most ``bytes_per_event`` per direction
  per event; a PDU larger than what is left spans events. An event that carried data
  stays open for that direction while its budget lasts and its airtime (the budget's
  share of the interval) has not run out, so data the host sends in answer to the
  event's completed packets still leaves in it, as a real controller keeps an event
  going (More Data) while its host refills its buffers.
- A :class:`PacedController` holds back its Number Of Completed Packets events until the
  data they stand for has left at a connection event, so the host's ACL queue fills
  while the link is slow, as with a real controller (``acl_buffers`` packets).
- :meth:`VirtualRadio.lose_link` is a supervision timeout: the connection carries
  nothing from that moment, and after ``supervision_timeout`` both controllers report a
  disconnection with reason 0x08 (Connection Timeout), as the notes measured.

The asyncio loop must be trio-asyncio's (``async with trio_asyncio.open_loop()``): its
clock is trio's, so under ``MockClock`` the connection events run in virtual time. Only
transport modules import asyncio and Bumble; everything here runs on the loop's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio
import trio_asyncio
from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.core import PhysicalTransport
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.snoop import BtSnooper
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from transports.bumble_host import CONNECTION_TIMEOUT, DualRoleDevice, close_transport

log = logging.getLogger(__name__)

#: LE data length extension: 251-byte ACL packets (Bumble's default, 27, is 5x slower).
ACL_PACKET_LENGTH = 251
#: ACL packets a controller buffers for its host (shared by its connections).
ACL_BUFFERS = 8
#: HCI reason of a connection that was never established.
CONNECTION_FAILED = 0x3E


@dataclass(frozen=True)
class Pacing:
    """How a phone's link moves data: connection interval and bytes per event."""

    interval: float = 0.015
    bytes_per_event: int = 1500
    supervision_timeout: float = 2.0


@dataclass
class _Direction:
    destination: Controller
    source_address: hci.Address
    queue: deque[bytes] = field(default_factory=deque)
    sent_of_head: int = 0  # bytes of the head PDU already on the air
    queued_bytes: int = 0  # total bytes ever queued
    sent_bytes: int = 0  # total bytes ever sent
    completions: deque[tuple[int, Callable[[], None]]] = field(default_factory=deque)
    left_in_event: int = 0  # budget left in the current event, if it carried data


@dataclass
class _Pair:
    pacing: Pacing
    anchor: float
    timer: asyncio.TimerHandle | None = None
    last_event: float | None = None
    lost: bool = False


class PacedLink(LocalLink):
    """A :class:`LocalLink` whose LE connections move data only at connection events."""

    def __init__(self, default: Pacing | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.default = default or Pacing()
        self.pacing: dict[Controller, Pacing] = {}
        self._directions: dict[tuple[Controller, Controller], _Direction] = {}
        self._pairs: dict[frozenset[Controller], _Pair] = {}
        # advertisers a central has answered with a CONNECT_IND not yet delivered: the
        # advertising event it answered is over for every other central
        self.claimed: dict[str, Controller] = {}

    def pacing_for(self, a: Controller, b: Controller) -> Pacing:
        return self.pacing.get(a) or self.pacing.get(b) or self.default

    def current(self, a: Controller, b: Controller) -> Pacing:
        """The pacing of the connection between ``a`` and ``b`` as it is now (after any
        connection parameter update), or the one it will start with."""
        pair = self._pairs.get(frozenset((a, b)))
        return pair.pacing if pair is not None else self.pacing_for(a, b)

    def _pair(self, a: Controller, b: Controller) -> _Pair:
        key = frozenset((a, b))
        pair = self._pairs.get(key)
        if pair is None:
            now = asyncio.get_running_loop().time()
            pair = self._pairs[key] = _Pair(self.pacing_for(a, b), anchor=now)
        return pair

    # -- link-layer control -----------------------------------------------------------

    def send_ll_control_pdu(
        self, sender_address: hci.Address, receiver_address: hci.Address, packet: Any
    ) -> None:
        """As Bumble's, but a control PDU for a connection the receiver has already closed
        is not heard (it travels on that connection's access address): when both ends
        terminate at once, neither logs an error about the other's TERMINATE_IND."""
        receiver = self.find_le_controller(receiver_address)
        if receiver is None:
            return

        if isinstance(packet, ll.ConnectionUpdateInd):
            sender = self.find_le_controller(sender_address)
            if sender is not None:  # the connection's events follow the new parameters
                pair = self._pair(sender, receiver)
                pair.pacing = dataclasses.replace(
                    pair.pacing,
                    interval=packet.interval * 1.25e-3,
                    supervision_timeout=packet.timeout * 10e-3,
                )

        def deliver() -> None:
            if sender_address in receiver.le_connections:
                receiver.on_ll_control_pdu(sender_address, packet)

        asyncio.get_running_loop().call_soon(deliver)

    # -- data ---------------------------------------------------------------------------

    def send_acl_data(
        self,
        sender_controller: Controller,
        destination_address: hci.Address,
        transport: PhysicalTransport,
        data: bytes,
    ) -> None:
        if transport != PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        destination = self.find_le_controller(destination_address)
        if destination is None:
            return
        pair = self._pair(sender_controller, destination)
        if pair.lost:
            return  # the radio is silent: nothing crosses any more
        direction = self._directions.get((sender_controller, destination))
        if direction is None:
            # stamped with the sender's address in this connection, not its current one
            # (Bumble's LocalLink takes the current one: a host that takes a new private
            # address while connected, as Linux does, would have its data dropped)
            connection = sender_controller.le_connections.get(destination_address)
            source = (
                connection.self_address
                if connection is not None
                else sender_controller.random_address
            )
            direction = self._directions[(sender_controller, destination)] = _Direction(
                destination, source
            )
        direction.queue.append(data)
        direction.queued_bytes += len(data)
        if len(direction.queue) == 1 and self._event_open(pair, direction):
            # the host refilled while the event is still on: it goes on with this data
            budget = direction.left_in_event
            direction.left_in_event = 0
            if not self._transmit(direction, budget):
                return
        self._schedule(pair, sender_controller, destination)

    @staticmethod
    def _event_open(pair: _Pair, d: _Direction) -> bool:
        """Whether the current event carried data this way and still has budget and
        airtime for more (the budget's share of the interval, from the event's start)."""
        if pair.last_event is None or d.left_in_event <= 0:
            return False
        used = pair.pacing.bytes_per_event - d.left_in_event
        airtime = pair.pacing.interval * used / pair.pacing.bytes_per_event
        return asyncio.get_running_loop().time() <= pair.last_event + airtime + 1e-9

    def defer_completion(self, controller: Controller, complete: Callable[[], None]) -> None:
        """Run ``complete`` once everything ``controller`` has queued so far has left."""
        pending = [d for (src, _), d in self._directions.items() if src is controller]
        pending = [d for d in pending if d.sent_bytes < d.queued_bytes]
        if not pending:
            complete()
            return
        for d in pending[:-1]:  # wait for the last of them; the others are marks only
            d.completions.append((d.queued_bytes, lambda: None))
        last = pending[-1]
        last.completions.append((last.queued_bytes, complete))

    def _schedule(self, pair: _Pair, a: Controller, b: Controller) -> None:
        if pair.timer is not None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        interval = pair.pacing.interval
        k = max(0, math.ceil((now - pair.anchor) / interval - 1e-9))
        at = pair.anchor + k * interval
        if pair.last_event is not None and at <= pair.last_event + 1e-9:
            at += interval  # that event has been; the data waits for the next one
        pair.timer = loop.call_at(at, self._event, pair, a, b)

    def _event(self, pair: _Pair, a: Controller, b: Controller) -> None:
        pair.timer = None
        pair.last_event = asyncio.get_running_loop().time()
        if pair.lost:
            return
        busy = False
        for src, dst in ((a, b), (b, a)):
            direction = self._directions.get((src, dst))
            if direction is not None:
                direction.left_in_event = 0
                busy |= self._transmit(direction, pair.pacing.bytes_per_event)
        if busy:
            loop = asyncio.get_running_loop()
            at = pair.last_event + pair.pacing.interval
            pair.timer = loop.call_at(at, self._event, pair, a, b)

    def _transmit(self, d: _Direction, budget: int) -> bool:
        """Send up to ``budget`` bytes; whether data is left for a later event."""
        carried = False
        while d.queue and budget > 0:
            carried = True
            head = d.queue[0]
            step = min(budget, len(head) - d.sent_of_head)
            budget -= step
            d.sent_of_head += step
            d.sent_bytes += step
            if d.sent_of_head == len(head):
                d.queue.popleft()
                d.sent_of_head = 0
                d.destination.on_link_acl_data(d.source_address, PhysicalTransport.LE, head)
        if carried:
            d.left_in_event = budget
        while d.completions and d.completions[0][0] <= d.sent_bytes:
            d.completions.popleft()[1]()
        return bool(d.queue)

    # -- link loss --------------------------------------------------------------------

    def silence(self, a: Controller, b: Controller) -> None:
        """From now on nothing crosses between ``a`` and ``b`` (until they reconnect)."""
        pair = self._pair(a, b)
        pair.lost = True
        if pair.timer is not None:
            pair.timer.cancel()
            pair.timer = None
        for src, dst in ((a, b), (b, a)):
            d = self._directions.pop((src, dst), None)
            if d is not None:
                for _, complete in d.completions:
                    complete()

    def forget(self, a: Controller, b: Controller) -> None:
        """The connection between ``a`` and ``b`` ended: a new one starts afresh."""
        pair = self._pairs.pop(frozenset((a, b)), None)
        if pair is not None and pair.timer is not None:
            pair.timer.cancel()
        for src, dst in ((a, b), (b, a)):
            d = self._directions.pop((src, dst), None)
            if d is not None:
                for _, complete in d.completions:
                    complete()


class PacedController(Controller):
    """A controller whose completed-packets events wait for the paced link's airtime, and
    that connects as a real one does where Bumble 0.0.236's virtual controller does not:

    - LE Create Connection Cancel cancels (the virtual controller kept the attempt
      pending, and completed it later for a host that had given up on it, whose
      ``connect_own_address_type`` was gone by then: an assertion in Bumble's host);
      the host gets the LE Connection Complete with status 0x02 the spec prescribes.
    - When two centrals answer one advertisement, the first's CONNECT_IND ends that
      advertising event: the second waits for the next one (the virtual controller
      connected both, the second to a peripheral that never knew). Should a
      CONNECT_IND still reach an advertiser that has stopped, the initiator's connection
      fails to be established (HCI 0x3E), as on air.
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)  # after the status
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def create_le_connection(self, peer_address: hci.Address) -> None:
        link = self.link
        if isinstance(link, PacedLink):
            claimant = link.claimed.get(str(peer_address))
            if claimant is not None and claimant is not self:
                return  # another central answered this advertisement first: wait for the next
            if claimant is None and _advertising_at(link.controllers, peer_address):
                link.claimed[str(peer_address)] = self
        super().create_le_connection(peer_address)

    def on_le_connect_ind(self, packet: Any) -> None:
        address = str(packet.advertiser_address)
        if (
            isinstance(self.link, PacedLink)
            and address in self.link.claimed
            and _advertising_owner(self.link, packet.advertiser_address) is self
        ):
            del self.link.claimed[address]
        if self.link is not None and not _advertising_at([self], packet.advertiser_address):
            # Not for us, or another central's CONNECT_IND ended that advertisement first:
            # the initiator's connection is never established (a real one fails after
            # six connection events, HCI 0x3E)
            initiator = self.link.find_le_controller(packet.initiator_address)
            ghost = initiator.le_connections.get(packet.advertiser_address) if initiator else None
            if (
                initiator is not None
                and ghost is not None
                and ghost.self_address == packet.initiator_address
                and _advertising_owner(self.link, packet.advertiser_address) is self
            ):
                asyncio.get_running_loop().call_later(
                    0.05, initiator.on_le_disconnected, ghost, CONNECTION_FAILED
                )
            return
        super().on_le_connect_ind(packet)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        link = self.link
        if (
            isinstance(packet, hci.HCI_LE_Connection_Complete_Event)
            and packet.status == hci.HCI_ErrorCode.SUCCESS
            and isinstance(link, PacedLink)
        ):
            # the parameters the link really runs at (Bumble's controller reports the
            # central's request to one side and a fixed 12.5 ms to the other)
            peer = link.find_le_controller(packet.peer_address)
            if peer is not None:
                pacing = link.current(self, peer)
                packet = dataclasses.replace(
                    packet,
                    connection_interval=round(pacing.interval / 1.25e-3),
                    peripheral_latency=0,
                    supervision_timeout=round(pacing.supervision_timeout / 10e-3),
                )
        if isinstance(packet, hci.HCI_Number_Of_Completed_Packets_Event) and isinstance(
            link, PacedLink
        ):
            event = packet
            link.defer_completion(self, lambda: self._complete(event))
            return
        if isinstance(
            packet,
            hci.HCI_LE_Advertising_Report_Event | hci.HCI_LE_Extended_Advertising_Report_Event,
        ):
            packet = self._with_scan_responses(packet)
        super().send_hci_packet(packet)

    def _complete(self, event: hci.HCI_Number_Of_Completed_Packets_Event) -> None:
        """Report completed packets of the connections still up: a controller says nothing
        more of a connection once it has reported its disconnection (a host warns of
        completions for a handle it no longer knows)."""
        live = {c.handle for c in self.le_connections.values()}
        kept = [
            (handle, count)
            for handle, count in zip(
                event.connection_handles, event.num_completed_packets, strict=True
            )
            if handle in live
        ]
        if kept:
            Controller.send_hci_packet(
                self,
                hci.HCI_Number_Of_Completed_Packets_Event(
                    connection_handles=[h for h, _ in kept],
                    num_completed_packets=[n for _, n in kept],
                ),
            )

    def _with_scan_responses(self, event: _Reports) -> _Reports:
        """Bumble 0.0.236's virtual controller answers an active scan with the
        advertising data again; a real one sends the advertiser's scan response data."""
        reports: list[Any] = []
        for report in event.reports:
            if _is_scan_response(report):
                advertiser = self.link.find_le_controller(report.address)
                data = _scan_response_data(advertiser) if advertiser is not None else b""
                reports.append(dataclasses.replace(report, data=data))
            else:
                reports.append(report)
        return type(event)(reports)


_Reports = hci.HCI_LE_Advertising_Report_Event | hci.HCI_LE_Extended_Advertising_Report_Event


def _advertising_owner(link: Any, address: hci.Address) -> Controller | None:
    """The controller on ``link`` that advertises (or last advertised) from ``address``."""
    for controller in link.controllers:
        if controller.le_legacy_advertiser.address == address:
            return controller  # type: ignore[no-any-return]
        if any(a.address == address for a in controller.advertising_sets.values()):
            return controller  # type: ignore[no-any-return]
    return None


def _advertising_at(controllers: Any, address: hci.Address) -> bool:
    """Whether one of ``controllers`` is advertising, connectable, from ``address``."""
    for controller in controllers:
        legacy = controller.le_legacy_advertiser
        if legacy.enabled and legacy.address == address:
            return True
        for adv_set in controller.advertising_sets.values():
            if adv_set.enabled and adv_set.address == address:
                return True
    return False


def _is_scan_response(report: Any) -> bool:
    if isinstance(report, hci.HCI_LE_Extended_Advertising_Report_Event.Report):
        flag = hci.HCI_LE_Extended_Advertising_Report_Event.EventType.SCAN_RESPONSE
        return bool(report.event_type & flag)
    return bool(report.event_type == hci.HCI_LE_Advertising_Report_Event.EventType.SCAN_RSP)


def _scan_response_data(controller: Controller) -> bytes:
    data = bytes(controller.le_legacy_advertiser.scan_response_data)
    for adv_set in controller.advertising_sets.values():
        data = data or bytes(adv_set.scan_response_data)
    return data


class VirtualRadio:
    """Virtual controllers on one paced link, and Bumble devices on them.

    Build it inside the asyncio loop. ``snoop_dir`` makes every device write a btsnoop
    capture ``<name>.btsnoop`` of its HCI traffic (Wireshark and tshark read them).
    """

    def __init__(self, default: Pacing | None = None, snoop_dir: Path | None = None) -> None:
        self.link = PacedLink(default)
        self.snoop_dir = snoop_dir
        self.captures: list[Path] = []
        self._files: list[IO[bytes]] = []
        self._snooping: list[Host] = []
        self._numbers = itertools.count(1)
        self._controllers: dict[Device, Controller] = {}

    def device(self, name: str, pacing: Pacing | None = None) -> Device:
        """A new device (not yet powered on) on its own controller."""
        number = next(self._numbers)
        address = hci.Address(f"F0:F1:F2:F3:{number >> 8:02X}:{number & 0xFF:02X}")
        controller = PacedController(name, link=self.link, public_address=address)
        controller.le_acl_data_packet_length = ACL_PACKET_LENGTH
        controller.total_num_le_acl_data_packets = ACL_BUFFERS
        if pacing is not None:
            self.link.pacing[controller] = pacing
        host = Host(controller, AsyncPipeSink(controller))
        if self.snoop_dir is not None:
            path = self.snoop_dir / f"{name}.btsnoop"
            stream = path.open("wb")
            self._files.append(stream)
            self.captures.append(path)
            host.snooper = BtSnooper(stream)
            self._snooping.append(host)
        device = DualRoleDevice(name=name, address=address, host=host)
        self._controllers[device] = controller
        device.on(device.EVENT_CONNECTION, lambda conn: self._watch(controller, conn))
        return device

    def _watch(self, controller: Controller, connection: Any) -> None:
        def ended(*_: Any) -> None:
            for peer in list(self.link.controllers):
                if peer is not controller and connection.peer_address in (
                    peer.random_address,
                    peer.public_address,
                ):
                    self.link.forget(controller, peer)

        connection.on(connection.EVENT_DISCONNECTION, ended)

    async def powered(self, name: str, pacing: Pacing | None = None) -> Device:
        """A new device, powered on (call from trio, inside trio-asyncio's loop)."""
        device = self.device(name, pacing)
        await trio_asyncio.aio_as_trio(device.power_on)()
        return device

    def controller_of(self, device: Device) -> Controller:
        return self._controllers[device]

    def lose_link(self, a: Device, b: Device, timeout: float | None = None) -> None:
        """A supervision timeout between ``a`` and ``b``: silence now, and after
        ``timeout`` (the pacing's) both sides see a disconnection with reason 0x08."""
        ca, cb = self.controller_of(a), self.controller_of(b)
        self.link.silence(ca, cb)
        wait = timeout if timeout is not None else self.link.current(ca, cb).supervision_timeout

        def expire() -> None:
            for me, peer in ((ca, cb), (cb, ca)):
                for conn in list(me.le_connections.values()):
                    if conn.peer_address in (peer.random_address, peer.public_address):
                        me.on_le_disconnected(conn, CONNECTION_TIMEOUT)

        asyncio.get_running_loop().call_later(wait, expire)

    def close(self) -> None:
        for host in self._snooping:  # what still arrives (a last advertising command) is
            host.snooper = None  # not written to a closed capture
        self._snooping.clear()
        for stream in self._files:
            stream.close()
        self._files.clear()


@asynccontextmanager
async def kernel_controller(
    radio: VirtualRadio,
    address: str,
    spec: str = "vhci",
    pacing: Pacing | None = None,
    *,
    legacy_advertising: bool = False,
) -> AsyncIterator[Controller]:
    """A controller of ``radio`` handed to this machine's kernel through Linux's virtual
    HCI driver (``/dev/vhci``, module ``hci_vhci``): BlueZ sees a new adapter whose
    radio reaches the radio's other devices (call from trio, inside trio-asyncio's
    loop). Raises ``OSError`` when the transport does not open. ``legacy_advertising``:
    the controller does not offer extended advertising (Bumble 0.0.236's emulation of it
    asserts when a set is restarted as connections end its advertising: seen with a
    Bumble host on the HCI user channel serving several centrals; a real controller
    has no such bug, and the legacy commands carry the head unit's 31 bytes as well)."""
    try:
        transport = await trio_asyncio.aio_as_trio(open_transport)(spec)
    except (OSError, ValueError, ImportError, core.BaseBumbleError) as e:
        raise OSError(f"cannot open Bluetooth transport {spec!r}: {e}") from e
    controller = PacedController(
        "kernel",
        host_source=transport.source,
        host_sink=transport.sink,
        link=radio.link,
        public_address=hci.Address(address, hci.Address.PUBLIC_DEVICE_ADDRESS),
    )
    controller.le_acl_data_packet_length = ACL_PACKET_LENGTH
    controller.total_num_le_acl_data_packets = ACL_BUFFERS
    if legacy_advertising:
        controller.le_features &= ~hci.LeFeatureMask.LE_EXTENDED_ADVERTISING
    if pacing is not None:
        radio.link.pacing[controller] = pacing
    try:
        yield controller
    finally:
        with trio.CancelScope(shield=True):
            await close_transport(transport)
