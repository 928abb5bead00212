"""A simulated BLE connection: two :class:`Link` endpoints in memory with BLE timing.

Strategy: no background task. Each direction is a fluid schedule computed when a packet
is sent: connection events happen every ``interval`` from a seeded anchor, each event
carries ``bytes_per_event`` on-air bytes in each direction (ATT value + 3 bytes of ATT
header + 4 of L2CAP), a packet is transmitted in the event in which its last byte fits,
and it reaches the peer's host ``latency`` later. The sender's stack has a transmit
buffer of ``tx_buffer_bytes``; :meth:`SimulatedLink.send` waits while it is full, which
is the back-pressure real stacks give. Everything is a function of the seed and of
``trio.current_time()``, so under ``trio.testing.MockClock`` runs are exact.

Link loss is a supervision timeout: after :meth:`SimulatedLinkPair.lose_link`, nothing
more is transmitted, and both ends see ``LinkClosed(LINK_LOSS)`` once
``supervision_timeout`` of silence has passed. A local close is seen by the peer after
the packets sent before it.

Throughput is computable (:meth:`LinkProfile.capacity`), so benchmarks can report
ratios against it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass

import trio

from transports.link import CloseReason, Link, LinkClosed, payload_size_for_mtu

#: On-air bytes each packet costs beyond its value: ATT opcode + handle (3), L2CAP header (4).
PACKET_OVERHEAD = 7


@dataclass(frozen=True)
class LinkProfile:
    """How a phone's BLE connection behaves."""

    name: str
    att_mtu: int
    interval: float  # connection interval, seconds
    bytes_per_event: int  # on-air L2CAP bytes per connection event, each direction
    latency: float = 0.002  # host processing delay at the receiver, seconds
    supervision_timeout: float = 2.0  # silence after which a lost link is declared, seconds
    tx_buffer_bytes: int = 0  # stack transmit buffer; 0 means one event's worth
    event_loss: float = 0.0  # probability that an event carries nothing (CRC errors)

    def __post_init__(self) -> None:
        payload_size_for_mtu(self.att_mtu)  # validates the MTU
        if self.interval <= 0 or self.bytes_per_event <= 0:
            raise ValueError("interval and bytes_per_event must be positive")
        if not 0.0 <= self.event_loss < 1.0:
            raise ValueError("event_loss must be in [0, 1)")

    @property
    def payload_size(self) -> int:
        return payload_size_for_mtu(self.att_mtu)

    @property
    def buffer_bytes(self) -> int:
        return self.tx_buffer_bytes or self.bytes_per_event

    def capacity(self) -> float:
        """Raw payload capacity in ATT value bytes per second, full-size packets, one way."""
        p = self.payload_size
        return (
            self.bytes_per_event
            * (1.0 - self.event_loss)
            / self.interval
            * p
            / (p + PACKET_OVERHEAD)
        )

    def with_mtu(self, att_mtu: int) -> LinkProfile:
        return dataclasses.replace(self, att_mtu=att_mtu)


#: Profiles named after what phones do.
PROFILES: dict[str, LinkProfile] = {
    # Android negotiates MTU 517 and a 15 ms interval with data length extension;
    # six full packets per event.
    "android": LinkProfile("android", att_mtu=517, interval=0.015, bytes_per_event=6 * 519),
    # iOS: MTU 185 (182-byte values), 30 ms interval, about 5 packets per event.
    "ios": LinkProfile("ios", att_mtu=185, interval=0.030, bytes_per_event=5 * 189),
    # A legacy device without MTU exchange: 23-byte MTU, 4 small packets per 30 ms event.
    "legacy": LinkProfile("legacy", att_mtu=23, interval=0.030, bytes_per_event=4 * 27),
}


@dataclass
class _Packet:
    data: bytes
    cost: int
    tx_done: float  # when its last byte is on the air
    deliver_at: float  # when the peer's host has it


class _Direction:
    """The schedule of one direction of the connection."""

    def __init__(self, profile: LinkProfile, anchor: float, seed: int, name: str) -> None:
        self.profile = profile
        self.anchor = anchor
        self.seed = seed
        self.name = name
        self.cursor = -1  # event index where the next packet may start
        self.budget_left = 0
        self.queue: deque[_Packet] = deque()  # sent, not yet received by the peer
        self.in_tx: deque[_Packet] = deque()  # sent, not yet fully on the air
        self.lost_at: float | None = None
        self.packets = 0
        self.value_bytes = 0

    def event_time(self, k: int) -> float:
        return self.anchor + k * self.profile.interval

    def _budget(self, k: int) -> int:
        p = self.profile.event_loss
        if p and random.Random(f"{self.seed}/{self.name}/{k}").random() < p:
            return 0
        return self.profile.bytes_per_event

    def schedule(self, data: bytes, now: float) -> _Packet:
        cost = len(data) + PACKET_OVERHEAD
        if self.lost_at is not None:
            packet = _Packet(data, cost, math.inf, math.inf)
            self.in_tx.append(packet)
            return packet
        first = max(0, math.ceil((now - self.anchor) / self.profile.interval - 1e-9))
        if first > self.cursor:
            self.cursor = first
            self.budget_left = self._budget(first)
        remaining = cost
        while remaining > self.budget_left:
            remaining -= self.budget_left
            self.cursor += 1
            self.budget_left = self._budget(self.cursor)
        self.budget_left -= remaining
        tx_done = self.event_time(self.cursor)
        packet = _Packet(data, cost, tx_done, tx_done + self.profile.latency)
        self.queue.append(packet)
        self.in_tx.append(packet)
        self.packets += 1
        self.value_bytes += len(data)
        return packet

    def buffered(self, now: float) -> int:
        while self.in_tx and self.in_tx[0].tx_done <= now:
            self.in_tx.popleft()
        return sum(p.cost for p in self.in_tx)

    def lose(self, now: float) -> None:
        self.lost_at = now
        self.queue = deque(p for p in self.queue if p.tx_done <= now)
        for p in self.in_tx:
            p.tx_done = p.deliver_at = math.inf

    def last_delivery(self, now: float) -> float:
        """When the peer will have everything sent so far (or ``now`` if nothing is pending)."""
        return max([now] + [p.deliver_at for p in self.queue])


class _Notifier:
    """Wakes every waiter when the shared state changes."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._event.wait()


class SimulatedLink(Link):
    """One end of a :class:`SimulatedLinkPair`."""

    def __init__(
        self, pair: SimulatedLinkPair, tx: _Direction, rx: _Direction, peer_name: str
    ) -> None:
        self._pair = pair
        self._tx = tx
        self._rx = rx
        self._peer_name = peer_name
        self._closed: LinkClosed | None = None
        self._pending_close: tuple[float, LinkClosed] | None = None

    @property
    def att_mtu(self) -> int:
        return self._pair.profile.att_mtu

    @property
    def peer(self) -> str:
        return self._peer_name

    @property
    def closed(self) -> LinkClosed | None:
        self._settle(trio.current_time())
        return self._closed

    def _settle(self, now: float) -> None:
        if self._closed is None and self._pending_close and self._pending_close[0] <= now:
            self._closed = self._pending_close[1]

    def _schedule_close(self, at: float, closed: LinkClosed) -> None:
        if self._closed is None and (self._pending_close is None or at < self._pending_close[0]):
            self._pending_close = (at, closed)

    async def send(self, packet: bytes) -> None:
        if not packet or len(packet) > self.payload_size:
            raise ValueError(f"packet of {len(packet)} bytes; payload size is {self.payload_size}")
        limit = self._pair.profile.buffer_bytes
        while True:
            now = trio.current_time()
            self._settle(now)
            if self._closed is not None:
                raise self._closed
            buffered = self._tx.buffered(now)
            if buffered == 0 or buffered + len(packet) + PACKET_OVERHEAD <= limit:
                break
            deadline = min(self._tx.in_tx[0].tx_done, self._close_deadline())
            await self._pair.notifier.wait_until(deadline)
        self._tx.schedule(packet, now)
        self._pair.notifier.notify()
        await trio.lowlevel.checkpoint()

    def _close_deadline(self) -> float:
        return self._pending_close[0] if self._pending_close else math.inf

    async def receive(self) -> bytes:
        while True:
            now = trio.current_time()
            head = self._rx.queue[0] if self._rx.queue else None
            # Everything that arrived before the end is still handed over.
            arrived = head is not None and head.deliver_at <= min(now, self._close_deadline())
            closed_here = self._closed is not None and self._closed.reason is CloseReason.LOCAL
            if head is not None and arrived and not closed_here:
                self._rx.queue.popleft()
                await trio.lowlevel.checkpoint()
                return head.data
            self._settle(now)
            if self._closed is not None:
                raise self._closed
            deadline = min(head.deliver_at if head else math.inf, self._close_deadline())
            await self._pair.notifier.wait_until(deadline)

    async def aclose(self) -> None:
        now = trio.current_time()
        self._settle(now)
        if self._closed is None:
            self._closed = LinkClosed(CloseReason.LOCAL)
            self._rx.queue.clear()
            peer = self._pair.other(self)
            at = self._tx.last_delivery(now) + self._pair.profile.interval
            peer._schedule_close(at, LinkClosed(CloseReason.PEER, "peer disconnected"))
            self._pair.notifier.notify()
        await trio.lowlevel.checkpoint()


class SimulatedLinkPair:
    """A connected central (head unit) and peripheral (phone) with a profile's timing.

    Build it inside ``trio.run`` (it reads the clock). ``seed`` fixes the phase of the
    connection events and, with ``event_loss``, which events are lost.
    """

    def __init__(self, profile: LinkProfile, *, seed: int = 0, name: str = "phone") -> None:
        self.profile = profile
        self.notifier = _Notifier()
        rng = random.Random(seed)
        anchor = trio.current_time() + rng.random() * profile.interval
        self._up = _Direction(profile, anchor, seed, "to-phone")  # central -> peripheral
        self._down = _Direction(profile, anchor, seed, "to-head-unit")
        self.central = SimulatedLink(self, self._up, self._down, name)
        self.peripheral = SimulatedLink(self, self._down, self._up, "head-unit")

    def other(self, link: SimulatedLink) -> SimulatedLink:
        return self.peripheral if link is self.central else self.central

    def lose_link(self) -> None:
        """The radio goes silent now; both ends notice after the supervision timeout."""
        now = trio.current_time()
        for d in (self._up, self._down):
            if d.lost_at is None:
                d.lose(now)
        at = now + self.profile.supervision_timeout
        detail = f"supervision timeout ({self.profile.supervision_timeout * 1000:.0f} ms)"
        for end in (self.central, self.peripheral):
            end._schedule_close(at, LinkClosed(CloseReason.LINK_LOSS, detail))
        self.notifier.notify()

    def stats(self) -> dict[str, tuple[int, int]]:
        """Packets and value bytes sent each way so far."""
        return {
            "to-phone": (self._up.packets, self._up.value_bytes),
            "to-head-unit": (self._down.packets, self._down.value_bytes),
        }
