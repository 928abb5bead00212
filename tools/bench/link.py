"""Goodput and pause latency (P1, P3): ``python -m tools.bench.link [--quick] [--radio ...]``.

For the android and ios profiles at ATT MTU 23, 185, 247 and 517 it measures, side by
side in one run and on virtual time (so the figures are exact and repeatable), with
sessions authenticated by Noise KK first (a paired phone reconnecting), so that every
record is encrypted as on a real link:

- goodput: application bytes of a 1 MB bulk transfer per second (in chunks whose records
  fill whole segments, as PROTOCOL.md 6.5 advises senders), as a ratio of the link's
  raw payload capacity (ATT value bytes per second with full packets); the same with
  unencrypted sessions beside it (``plain``), so the cost of encryption shows;
- pause latency: a pause command from the head unit to the phone, p50 and p99 over many
  samples at random moments, idle and while a 1 MB transfer to the phone is in flight,
  with the priority scheduler and with a plain FIFO scheduler; reported as ratios of the
  idle latency.

``--radio bumble`` measures the same on the Bumble virtual radio (``bridge.emulation.world``): the
head unit's bleak transport over a Bumble central, the phone's GATT server on Bumble,
the whole HCI/L2CAP/ATT stack between them on a paced link, still in virtual time. There
the capacity is measured too: a raw sender of full packets over the same stack, with no
protocol of ours, in the same run. ``--radio bumble-peripheral`` is the other role
(protocol v1): the head unit is the GATT server (``BumbleListener``) and the phone a
bleak central over Bumble that asks for the profile's MTU; its capacity likewise.
``--radio all`` (the default) measures the three side by side.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
import trio.testing

from bridge.emulation.world import RadioWorld, bleak_on, pacing_for
from bridge.endpoint import clock_ms_from_trio
from bridge.session import PeerSession
from bridge.wire.channels import Channel
from bridge.wire.gatt import head_unit_advertising
from bridge.wire.messages import (
    MediaCommand,
    MediaCommandRequest,
    bulk_chunk_size,
    chunk_object,
)
from bridge.wire.mux import ChannelMux, MessageReceived, Scheduler
from pairing.handshake import Handshake, Role
from pairing.trust import TrustStore
from transports.aio import asyncio_loop
from transports.ble import BleakCentral
from transports.bumble_phone import BumblePeripheral
from transports.link import Link, segment_size_for
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

MTUS = (23, 185, 247, 517)
MB = 1 << 20

#: A connected (head unit, phone) pair of links with a profile's timing.
Links = Callable[[LinkProfile, int], AbstractAsyncContextManager[tuple[Link, Link]]]


@asynccontextmanager
async def simulated_links(profile: LinkProfile, seed: int) -> AsyncIterator[tuple[Link, Link]]:
    pair = SimulatedLinkPair(profile, seed=seed)
    yield pair.central, pair.peripheral


def handshakes(folder: Path) -> tuple[Handshake, Handshake]:
    """(head unit's, phone's) handshakes of a paired pair about to reconnect with Noise KK;
    their trust stores are written under ``folder``."""
    hu_trust = TrustStore(folder / "hu")
    phone_trust = TrustStore(folder / "phone", role="phone")
    hu_trust.add(phone_trust.public_key, "Pixel 9", "android", phone_trust.irk)
    phone_trust.add(hu_trust.public_key, "Car", "head-unit")
    hu_hs = Handshake(
        Role.HEAD_UNIT, hu_trust.identity, name="Car", platform="head-unit",
        trusted=hu_trust.trusted_keys(), peer_key=phone_trust.public_key, random=os.urandom,
    )  # fmt: skip
    phone_hs = Handshake(
        Role.PHONE, phone_trust.identity, name="Pixel 9", platform="android",
        trusted=phone_trust.trusted_keys(), random=os.urandom, irk=phone_trust.irk,
    )  # fmt: skip
    return hu_hs, phone_hs


def chunk_size(profile: LinkProfile) -> int:
    """The bulk chunk size a sender picks for this link: records that fill whole segments."""
    return bulk_chunk_size(segment_size_for(profile.payload_size))


def ready(session: PeerSession, encrypted: bool) -> bool:
    """The session's link is up and, if ``encrypted``, authenticated with encrypted records."""
    connection = session.connection
    if connection is None or not connection.open:
        return False
    return not encrypted or (connection.authenticated and connection.records.encrypted)


@asynccontextmanager
async def _sessions(
    links: Links,
    profile: LinkProfile,
    seed: int,
    hu: PeerSession,
    phone: PeerSession,
    *,
    encrypted: bool,
) -> AsyncIterator[trio.Nursery]:
    """Both sessions running on a connected pair of links, authenticated with Noise KK
    when ``encrypted``; the nursery is cancelled when the block ends."""
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as folder:
        hu_hs, phone_hs = handshakes(Path(folder)) if encrypted else (None, None)
        async with links(profile, seed) as (hu_link, phone_link), trio.open_nursery() as nursery:
            nursery.start_soon(partial(hu.run_link, hu_link, handshake=hu_hs))
            nursery.start_soon(partial(phone.run_link, phone_link, handshake=phone_hs))
            with trio.fail_after(30):  # virtual seconds: the slowest link's handshake is < 1
                while not (ready(hu, encrypted) and ready(phone, encrypted)):
                    await trio.sleep(profile.interval)
            await trio.sleep(0.5)  # the link settled
            yield nursery
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def radio_world() -> AsyncIterator[RadioWorld]:
    with tempfile.TemporaryDirectory() as folder:
        async with asyncio_loop():
            world = RadioWorld(Path(folder), clock_ms=clock_ms_from_trio())
            try:
                yield world
            finally:
                world.close()


@asynccontextmanager
async def _connected(
    central: BleakCentral, accept: Callable[[], Awaitable[Link]], profile: LinkProfile
) -> AsyncIterator[tuple[Link, Link]]:
    """``central`` connects to the first advertiser of the bridge's service; the link it
    made, and the link ``accept`` gives the other side."""
    async with central.scan() as sightings:
        sighting = await sightings.receive()
    link = await central.connect(sighting)
    try:
        peer = await accept()
        if link.att_mtu != profile.att_mtu:
            raise RuntimeError(f"ATT MTU {link.att_mtu}, wanted {profile.att_mtu}")
        yield link, peer
    finally:
        await link.aclose()


@asynccontextmanager
async def radio_links(profile: LinkProfile, seed: int) -> AsyncIterator[tuple[Link, Link]]:
    """The head unit's bleak transport and a phone's GATT server on the Bumble radio,
    connected (the phone's ATT MTU is the profile's: the exchange settles on it)."""
    async with radio_world() as world:
        central = await world.start_central()
        device = await world.radio.powered("phone", pacing_for(profile))
        phone = BumblePeripheral(device, att_mtu=profile.att_mtu, apple=profile.name == "ios")
        await phone.advertise(f"bench{seed}")
        async with _connected(central, phone.accept, profile) as (hu, peer):
            yield hu, peer


@asynccontextmanager
async def peripheral_links(profile: LinkProfile, seed: int) -> AsyncIterator[tuple[Link, Link]]:
    """The head unit as GATT server and a phone connecting to it as a bleak central, on
    the Bumble radio (the phone asks for the profile's ATT MTU)."""
    async with radio_world() as world:
        await world.start_central()
        listener = world.listener()
        await listener.advertise(*head_unit_advertising(bytes(6), None))
        device = await world.radio.powered("phone", pacing_for(profile))
        central = bleak_on(device, mtu=profile.att_mtu)
        async with _connected(central, listener.accept, profile) as (phone, hu):
            yield hu, phone


async def _raw_capacity(links: Links, profile: LinkProfile, size: int) -> float:
    """The link's raw capacity: ATT value bytes per second of packets sent phone -> head
    unit as fast as the stack takes them, with nothing of the bridge's protocol; the better
    of full packets and packets that fill whole PDUs (``segment_size_for``)."""
    sizes = {profile.payload_size, segment_size_for(profile.payload_size)}
    return max([await _raw_rate(links, profile, size, value) for value in sorted(sizes)])


async def _raw_rate(links: Links, profile: LinkProfile, size: int, value: int) -> float:
    async with links(profile, 3) as (hu, phone):
        packet = bytes(value)
        count = max(1, size // len(packet))
        got: list[float] = []

        async def receive() -> None:
            for _ in range(count):
                await hu.receive()
            got.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.sleep(0.5)  # link settled
            start = trio.current_time()
            for _ in range(count):
                await phone.send(packet)
        return count * len(packet) / (got[0] - start)


@dataclass
class Row:
    profile: str
    mtu: int
    capacity: float
    goodput: float  # encrypted sessions
    idle: tuple[float, float]
    priority: tuple[float, float]
    fifo: tuple[float, float]
    samples: tuple[int, int]  # pause samples taken during the transfer: prio, fifo
    plain: float | None = None  # goodput of unencrypted sessions, when measured

    @property
    def ratio(self) -> float:
        return self.goodput / self.capacity

    @property
    def priority_ratios(self) -> tuple[float, float]:
        return (self.priority[0] / self.idle[0], self.priority[1] / self.idle[1])

    @property
    def fifo_ratios(self) -> tuple[float, float]:
        return (self.fifo[0] / self.idle[0], self.fifo[1] / self.idle[1])


async def drain(session: PeerSession, into: list[tuple[float, MessageReceived]]) -> None:
    """Take the session's events for ever, keeping its messages with their arrival time."""
    while True:
        event = await session.next_event()
        if isinstance(event, MessageReceived):
            into.append((trio.current_time(), event))


PAUSE = MediaCommandRequest(MediaCommand.PAUSE)


async def pause_latency(hu: PeerSession, at_phone: list[tuple[float, MessageReceived]]) -> float:
    """Send a pause from ``hu``: the time until the phone's session took it (``at_phone``
    is what that session took, as :func:`drain` keeps it)."""
    sent_at = trio.current_time()
    seq = await hu.send(PAUSE.channel, PAUSE.type, PAUSE.to_body())
    while not any(m.seq == seq and m.channel is Channel.AUDIO for _, m in at_phone[-3:]):
        await trio.sleep(0.0005)
    return trio.current_time() - sent_at


async def _goodput(links: Links, profile: LinkProfile, size: int, *, encrypted: bool) -> float:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    received: list[tuple[float, MessageReceived]] = []
    chunks = chunk_object(1, bytes(size), chunk_size(profile))
    async with _sessions(links, profile, 1, hu, phone, encrypted=encrypted) as nursery:
        nursery.start_soon(drain, hu, received)
        nursery.start_soon(drain, phone, [])
        start = trio.current_time()
        for chunk in chunks:
            await phone.send(chunk.channel, chunk.type, chunk.to_body())
        while len(received) < len(chunks):
            await trio.sleep(profile.interval)
        end = max(t for t, _ in received)
    return size / (end - start)


async def _pause_latencies(
    links: Links, profile: LinkProfile, scheduler: Scheduler | None, samples: int, size: int
) -> list[float]:
    """Latency of pause commands; with a scheduler, while a bulk transfer is in flight."""
    rng = random.Random(7)
    mux = ChannelMux(scheduler=scheduler or Scheduler.PRIORITY)
    hu, phone = PeerSession("hu", mux=mux), PeerSession("phone")
    at_phone: list[tuple[float, MessageReceived]] = []
    latencies: list[float] = []
    async with _sessions(links, profile, 2, hu, phone, encrypted=True) as nursery:
        nursery.start_soon(drain, hu, [])
        nursery.start_soon(drain, phone, at_phone)

        async def bulk() -> None:
            for chunk in chunk_object(2, bytes(size), chunk_size(profile)):
                await hu.send(chunk.channel, chunk.type, chunk.to_body())

        if scheduler is not None:
            nursery.start_soon(bulk)
            await trio.sleep(0.2)  # the transfer is under way
        for _ in range(samples):
            await trio.sleep(rng.uniform(0.0, 4 * profile.interval))
            if scheduler is not None and not any(mux.queued(c) for c in (Channel.BULK,)):
                break  # the transfer finished: only samples taken during it count
            latencies.append(await pause_latency(hu, at_phone))
    return latencies


def percentile(values: list[float], q: float) -> float:
    """The ``q``th percentile (1..99) of ``values``, inclusive method."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(radio: str, profile_name: str, mtu: int, size: int, samples: int) -> Row:
    profile = PROFILES[profile_name].with_mtu(mtu)
    if radio in ("bumble", "bumble-peripheral"):
        links: Links = radio_links if radio == "bumble" else peripheral_links
        capacity = await _raw_capacity(links, profile, size)
    else:
        links, capacity = simulated_links, profile.capacity()
    goodput = await _goodput(links, profile, size, encrypted=True)
    plain = await _goodput(links, profile, size, encrypted=False)
    idle = await _pause_latencies(links, profile, None, samples, size)
    prio = await _pause_latencies(links, profile, Scheduler.PRIORITY, samples, size)
    fifo = await _pause_latencies(links, profile, Scheduler.FIFO, samples, size)

    def pair(values: list[float]) -> tuple[float, float]:
        return (percentile(values, 50), percentile(values, 99))

    return Row(
        profile_name,
        mtu,
        capacity,
        goodput,
        pair(idle),
        pair(prio),
        pair(fifo),
        (len(prio), len(fifo)),
        plain,
    )


RADIOS = {
    "simulated": "simulated link (transports/simulated.py)",
    "bumble": "Bumble radio (bleak transport, Bumble HCI/L2CAP/ATT/GATT, paced link)",
    "bumble-peripheral": "Bumble radio, the head unit as GATT server (the phone connects)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="256 KB transfers, fewer samples")
    parser.add_argument(
        "--radio",
        choices=(*RADIOS, "both", "all"),
        default="all",
        help="where to measure (default: all three, one table each; both: simulated and bumble)",
    )
    parser.add_argument(
        "--profile", choices=("android", "ios"), action="append", help="only these profiles"
    )
    parser.add_argument("--mtu", type=int, choices=MTUS, action="append", help="only these MTUs")


def tables(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Measure and print one table per radio, as the rows come; the rows by radio."""
    logging.getLogger("bumble").setLevel(logging.CRITICAL)  # a link's teardown is noisy
    size = MB // 4 if args.quick else MB
    samples = 20 if args.quick else 60
    choice = {"all": list(RADIOS), "both": ["simulated", "bumble"]}
    radios = choice.get(args.radio, [args.radio])
    rows: dict[str, list[Row]] = {}
    for radio in radios:
        print(
            f"{RADIOS[radio]}, virtual time, encrypted sessions (plain: unencrypted); "
            f"transfer {size // 1024} KB in chunks that fill whole segments; "
            f"pause latency over up to {samples} samples"
        )
        header = (
            f"{'profile':8} {'MTU':>4} {'capacity':>10} {'goodput':>10} {'ratio':>6} "
            f"{'plain':>6} | "
            f"{'idle p50/p99 ms':>16} | {'prio x p50/p99':>15} {'n':>3} | "
            f"{'fifo x p50/p99':>15} {'n':>3}"
        )
        print(header)
        print("-" * len(header))
        for profile_name in args.profile or ("android", "ios"):
            for mtu in args.mtu or MTUS:
                row = trio.run(
                    measure,
                    radio,
                    profile_name,
                    mtu,
                    size,
                    samples,
                    clock=trio.testing.MockClock(autojump_threshold=0),
                )
                rows.setdefault(radio, []).append(row)
                idle50, idle99 = row.idle
                (prio50, prio99), (fifo50, fifo99) = row.priority_ratios, row.fifo_ratios
                print(
                    f"{row.profile:8} {row.mtu:>4} {row.capacity / 1000:>7.1f} kB/s"
                    f"{row.goodput / 1000:>7.1f} kB/s {row.ratio:>6.3f} "
                    f"{(row.plain or 0.0) / row.capacity:>6.3f} | "
                    f"{idle50 * 1000:>7.1f} {idle99 * 1000:>7.1f}  | "
                    f"{prio50:>6.2f} {prio99:>7.2f}  {row.samples[0]:>3} | "
                    f"{fifo50:>6.1f} {fifo99:>7.1f}  {row.samples[1]:>3}",
                    flush=True,
                )
        print()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.link", description=__doc__)
    add_arguments(parser)
    tables(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
