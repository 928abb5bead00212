"""A simulated BLE connection: two :class:`Link` endpoints in memory with BLE timing.

Strategy: no background task; the schedule of each direction is computed when a packet
is sent, from a model of the link layer:

- Connection events happen every ``interval`` from a seeded anchor.
- A packet (ATT value + 3 bytes of ATT header + 4 of L2CAP) is cut into link-layer PDUs
  of at most ``ll_payload`` bytes (251 with data length extension, 27 without). A PDU
  takes its bits at ``phy_rate`` plus the inter-frame spaces and the peer's empty
  acknowledgement PDU on the air (:func:`pdu_airtime`).
- In one event a direction sends at most ``pdus_per_event`` PDUs, back to back, and only
  while they end inside the interval. The event goes on while the controller has data
  queued (the More Data bit); a packet handed over after the controller ran dry waits
  for the next event. PDUs of one packet may span events.
- The controller holds ``tx_buffer`` PDUs; :meth:`SimulatedLink.send` waits while that is
  full, which is the back-pressure real stacks give. A packet reaches the peer's host
  ``latency`` after its last PDU.

Everything is a function of the seed and of ``trio.current_time()``, so under
``trio.testing.MockClock`` runs are exact. (Simplification: the two directions do not
share an event's airtime.)

Link loss is a supervision timeout: after :meth:`SimulatedLinkPair.lose_link`, nothing
more is transmitted, and both ends see ``LinkClosed(LINK_LOSS)`` once
``supervision_timeout`` of silence has passed. A local close is seen by the peer after
the packets sent before it.

Throughput is computable (:meth:`LinkProfile.capacity` runs the same scheduler on a
stream of full packets, without trio), so benchmarks can report ratios against it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass

import trio

from transports.link import (
    PACKET_OVERHEAD,
    CloseReason,
    Link,
    LinkClosed,
    Wakeup,
    payload_size_for_mtu,
    segment_size_for,
)

#: Link-layer bytes around a PDU's payload on 2M PHY: preamble 2, access address 4,
#: header 2, CRC 3 (no encryption MIC in the simulation).
LL_OVERHEAD = 11
#: The inter-frame space between PDUs, seconds.
T_IFS = 150e-6


def pdu_airtime(payload: int, phy_rate: float) -> float:
    """Air time of one data PDU with ``payload`` bytes, its acknowledgement, and the IFSs."""
    return (payload + LL_OVERHEAD) * 8 / phy_rate + T_IFS + LL_OVERHEAD * 8 / phy_rate + T_IFS


@dataclass(frozen=True)
class LinkProfile:
    """How a phone's BLE connection behaves."""

    name: str
    att_mtu: int
    interval: float  # connection interval, seconds
    pdus_per_event: int  # link-layer PDUs a direction may send in one event
    ll_payload: int = 251  # largest PDU payload: 251 with data length extension, else 27
    phy_rate: float = 2e6  # bits per second: 2M PHY, or 1e6
    tx_buffer: int = 4  # controller transmit buffer, in PDUs
    latency: float = 0.002  # host processing delay at the receiver, seconds
    supervision_timeout: float = 2.0  # silence after which a lost link is declared, seconds
    event_loss: float = 0.0  # probability that an event carries nothing (CRC errors)

    def __post_init__(self) -> None:
        payload_size_for_mtu(self.att_mtu)  # validates the MTU
        if self.interval <= 0 or self.pdus_per_event <= 0 or self.tx_buffer <= 0:
            raise ValueError("interval, pdus_per_event and tx_buffer must be positive")
        if not 27 <= self.ll_payload <= 251:
            raise ValueError("ll_payload must be in 27..251")
        if pdu_airtime(self.ll_payload, self.phy_rate) > self.interval:
            raise ValueError("a PDU does not fit in a connection interval")
        if not 0.0 <= self.event_loss < 1.0:
            raise ValueError("event_loss must be in [0, 1)")

    @property
    def payload_size(self) -> int:
        return payload_size_for_mtu(self.att_mtu)

    def fragments(self, value_length: int) -> list[int]:
        """The PDU payload sizes a packet with a value of this length is cut into."""
        cost = value_length + PACKET_OVERHEAD
        sizes = [self.ll_payload] * (cost // self.ll_payload)
        if cost % self.ll_payload:
            sizes.append(cost % self.ll_payload)
        return sizes

    def capacity(self) -> float:
        """Raw payload capacity in ATT value bytes per second, one way: a sender of
        packets all of the same size, the best size for the link (the largest, or one
        that fills its PDUs exactly: :meth:`best_value_size`)."""
        return self._capacity_with(self.best_value_size())

    def best_value_size(self) -> int:
        """The ATT value size that carries the most bytes per second on this link: the
        largest the MTU allows, or a smaller one whose packets fill whole PDUs (at MTU
        517, 512-byte values are 251 + 251 + 17-byte PDUs; 244-byte ones fill one)."""
        sizes = {self.payload_size}
        sizes |= {
            k * self.ll_payload - PACKET_OVERHEAD
            for k in range(1, self.payload_size // self.ll_payload + 2)
            if 0 < k * self.ll_payload - PACKET_OVERHEAD <= self.payload_size
        }
        return max(sorted(sizes), key=self._capacity_with)

    def _capacity_with(self, value_size: int) -> float:
        direction = _Direction(dataclasses.replace(self, event_loss=0.0), 0.0, 0, "capacity")
        packet = bytes(value_size)
        events = 200
        horizon = events * self.interval
        sent = 0
        while True:
            done = direction.schedule(packet, 0.0).tx_done
            if done > horizon:
                break
            sent += 1
        return sent * value_size / horizon * (1.0 - self.event_loss)

    def with_mtu(self, att_mtu: int) -> LinkProfile:
        return dataclasses.replace(self, att_mtu=att_mtu)


#: Profiles named after what phones do.
PROFILES: dict[str, LinkProfile] = {
    # Android: MTU 517, 15 ms interval, data length extension and 2M PHY, and as many
    # PDUs per event as fit in the interval.
    "android": LinkProfile("android", att_mtu=517, interval=0.015, pdus_per_event=32),
    # iOS: MTU 185 (182-byte values), 30 ms interval, about 5 packets per event.
    "ios": LinkProfile("ios", att_mtu=185, interval=0.030, pdus_per_event=5),
    # A legacy device: MTU 23, no data length extension, 1M PHY, 4 PDUs per 30 ms event.
    "legacy": LinkProfile(
        "legacy", att_mtu=23, interval=0.030, pdus_per_event=4, ll_payload=27, phy_rate=1e6
    ),
}


@dataclass
class _Packet:
    data: bytes
    pdus: int
    tx_done: float  # when its last PDU is on the air
    deliver_at: float  # when the peer's host has it


class _Direction:
    """The schedule of one direction of the connection."""

    def __init__(self, profile: LinkProfile, anchor: float, seed: int, name: str) -> None:
        self.profile = profile
        self.anchor = anchor
        self.seed = seed
        self.name = name
        self.cursor = -1  # the event the last PDU went in
        self.pos = -math.inf  # when the last scheduled PDU ends
        self.pdus_left = 0
        self.queue: deque[_Packet] = deque()  # sent, not yet received by the peer
        self.in_tx: deque[_Packet] = deque()  # sent, not yet fully on the air
        self.lost_at: float | None = None
        self.packets = 0
        self.value_bytes = 0
        # the receiver at the far end waits on this (a packet sent, or the link ending):
        # one wakeup per waiter, not every task of the pair woken by every packet
        self.changed = Wakeup()

    def event_time(self, k: int) -> float:
        return self.anchor + k * self.profile.interval

    def _pdus(self, k: int) -> int:
        p = self.profile.event_loss
        if p and random.Random(f"{self.seed}/{self.name}/{k}").random() < p:
            return 0
        return self.profile.pdus_per_event

    def _place(self, size: int, now: float) -> float:
        """Schedule one PDU; returns when it ends."""
        airtime = pdu_airtime(size, self.profile.phy_rate)
        open_event = (
            self.cursor >= 0
            and now <= self.pos  # the controller still had data: More Data
            and self.pdus_left > 0
            and self.pos + airtime <= self.event_time(self.cursor + 1)
        )
        if not open_event:
            k = max(self.cursor + 1, math.ceil((now - self.anchor) / self.profile.interval - 1e-9))
            while (pdus := self._pdus(k)) == 0:
                k += 1
            self.cursor, self.pos, self.pdus_left = k, self.event_time(k), pdus
        self.pos += airtime
        self.pdus_left -= 1
        return self.pos

    def schedule(self, data: bytes, now: float) -> _Packet:
        sizes = self.profile.fragments(len(data))
        if self.lost_at is not None:
            packet = _Packet(data, len(sizes), math.inf, math.inf)
            self.in_tx.append(packet)
            return packet
        done = now
        for size in sizes:
            done = self._place(size, done if done > now else now)
        packet = _Packet(data, len(sizes), done, done + self.profile.latency)
        self.queue.append(packet)
        self.in_tx.append(packet)
        self.packets += 1
        self.value_bytes += len(data)
        return packet

    def buffered(self, now: float) -> int:
        """PDUs in the controller's transmit buffer."""
        while self.in_tx and self.in_tx[0].tx_done <= now:
            self.in_tx.popleft()
        return sum(p.pdus for p in self.in_tx)

    def lose(self, now: float) -> None:
        self.lost_at = now
        self.queue = deque(p for p in self.queue if p.tx_done <= now)
        for p in self.in_tx:
            p.tx_done = p.deliver_at = math.inf

    def last_delivery(self, now: float) -> float:
        """When the peer will have everything sent so far (or ``now`` if nothing is pending)."""
        return max([now] + [p.deliver_at for p in self.queue])


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
        profile = self._pair.profile
        pdus = len(profile.fragments(len(packet)))
        while True:
            now = trio.current_time()
            self._settle(now)
            if self._closed is not None:
                raise self._closed
            buffered = self._tx.buffered(now)
            if buffered == 0 or buffered + pdus <= profile.tx_buffer:
                break
            deadline = min(self._tx.in_tx[0].tx_done, self._close_deadline())
            await self._pair.notifier.wait_until(deadline)
        self._send(packet, now)
        await trio.lowlevel.checkpoint()

    def _send(self, packet: bytes, now: float) -> None:
        self._tx.schedule(packet, now)
        if len(self._tx.queue) == 1:
            # the peer's receiver waits for the head of the queue only: a packet behind
            # others changes nothing it waits for
            self._tx.changed.notify()

    def _room(self, now: float, pdus: int) -> bool:
        buffered = self._tx.buffered(now)
        return buffered == 0 or buffered + pdus <= self._pair.profile.tx_buffer

    def send_room(self) -> bool:
        now = trio.current_time()
        self._settle(now)
        if self._closed is not None:
            return False
        largest = segment_size_for(self.payload_size)  # as wait_send_ready counts
        return self._room(now, len(self._pair.profile.fragments(largest)))

    def send_nowait(self, packet: bytes) -> None:
        if not packet or len(packet) > self.payload_size:
            raise ValueError(f"packet of {len(packet)} bytes; payload size is {self.payload_size}")
        now = trio.current_time()
        if not self._room(now, len(self._pair.profile.fragments(len(packet)))):
            raise RuntimeError("send_nowait without room: ask send_room first")
        self._send(packet, now)

    def receive_nowait(self) -> bytes | None:
        now = trio.current_time()
        head = self._rx.queue[0] if self._rx.queue else None
        arrived = head is not None and head.deliver_at <= min(now, self._close_deadline())
        closed_here = self._closed is not None and self._closed.reason is CloseReason.LOCAL
        if head is not None and arrived and not closed_here:
            self._rx.queue.popleft()
            return head.data
        return None

    async def wait_send_ready(self) -> None:
        # Ready when a packet of the size senders make here would go in at once: a
        # multi-PDU packet needs room for all its PDUs, as in send().
        profile = self._pair.profile
        pdus = len(profile.fragments(segment_size_for(self.payload_size)))
        while True:
            now = trio.current_time()
            self._settle(now)
            if self._closed is not None:
                raise self._closed
            buffered = self._tx.buffered(now)
            if buffered == 0 or buffered + pdus <= profile.tx_buffer:
                await trio.lowlevel.checkpoint()
                return
            deadline = min(self._tx.in_tx[0].tx_done, self._close_deadline())
            await self._pair.notifier.wait_until(deadline)

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
            await self._rx.changed.wait_until(deadline)

    async def aclose(self) -> None:
        now = trio.current_time()
        self._settle(now)
        if self._closed is None:
            self._closed = LinkClosed(CloseReason.LOCAL)
            self._rx.queue.clear()
            peer = self._pair.other(self)
            at = self._tx.last_delivery(now) + self._pair.profile.interval
            peer._schedule_close(at, LinkClosed(CloseReason.PEER, "peer disconnected"))
            self._pair.notify_all()
        await trio.lowlevel.checkpoint()


class SimulatedLinkPair:
    """A connected central (head unit) and peripheral (phone) with a profile's timing.

    Build it inside ``trio.run`` (it reads the clock). ``seed`` fixes the phase of the
    connection events and, with ``event_loss``, which events are lost.
    """

    def __init__(self, profile: LinkProfile, *, seed: int = 0, name: str = "phone") -> None:
        self.profile = profile
        self.notifier = Wakeup()
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
        self.notify_all()

    def notify_all(self) -> None:
        """The link is ending: every waiter looks again."""
        self.notifier.notify()
        self._up.changed.notify()
        self._down.changed.notify()

    def stats(self) -> dict[str, tuple[int, int]]:
        """Packets and value bytes sent each way so far."""
        return {
            "to-phone": (self._up.packets, self._up.value_bytes),
            "to-head-unit": (self._down.packets, self._down.value_bytes),
        }
