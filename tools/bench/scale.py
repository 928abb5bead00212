"""Several phones at once (issue 24's scaling table): ``python -m tools.bench.scale``.

For 1, 2, 4 and 8 phones at once on the Bumble virtual radio, side by side in one run:
the head unit's bleak transport over one Bumble central, each phone a Bumble GATT
server with the android profile's paced link, in virtual time. Every session is
authenticated with Noise KK first (paired phones reconnecting), so every record is
encrypted. Then the head unit sends every phone a bulk transfer at once (all streaming)
and, while they stream, pause commands to each phone at random moments. Per count:

- CPU per MB: the process's CPU seconds from the first chunk to the last one delivered,
  per MB delivered to all phones together. Both ends are counted, and Bumble's Python
  stacks and controllers with them (nine tenths of it: ``tools.bench.cpu``), so the
  figure is for the whole process, and what matters is that it stays flat;
- pause latency p50/p99 over every phone's samples, each from the head unit's send to
  the phone's session taking it, in virtual time: what the priorities and the link
  model give with that many links in one process (the CPU is not in virtual time);
- goodput per phone: each phone's transfer, bytes per second from the start to its last
  chunk, the slowest of them;
- memory per phone: how much Python's traced heap grew from before the first phone
  connected to its peak while all streamed, divided by the phones (``tracemalloc``, in a
  separate pass so its cost stays out of the CPU figure; both ends and Bumble counted).

The last columns divide each figure by the first row's (one phone unless ``--phones``
says otherwise): nothing may grow faster than the number of phones, so CPU per MB and
memory per phone should stay near x1.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
import trio.testing

from bridge.emulation.world import pacing_for
from bridge.session import PeerSession
from bridge.wire.channels import Channel
from bridge.wire.messages import chunk_object
from bridge.wire.mux import MessageReceived
from tools.bench.link import (
    MB,
    chunk_size,
    drain,
    handshakes,
    pause_latency,
    percentile,
    radio_world,
    ready,
)
from transports.ble import Sighting
from transports.bumble_phone import BumblePeripheral
from transports.link import Link
from transports.simulated import PROFILES

COUNTS = (1, 2, 4, 8)
#: Messages a session took: (virtual time, message).
Received = list[tuple[float, MessageReceived]]
PROFILE = PROFILES["android"]


@dataclass
class ScaleRow:
    phones: int
    cpu_per_mb: float  # CPU seconds per MB delivered, the whole process
    pause: tuple[float, float]  # p50, p99 in seconds, all phones' samples
    samples: int
    slowest: float  # the slowest phone's goodput, bytes per second
    memory_per_phone: float | None  # bytes of traced heap growth per phone


@asynccontextmanager
async def connected(
    count: int, before_phones: Callable[[], None] = lambda: None
) -> AsyncIterator[list[tuple[Link, Link]]]:
    """``count`` phones on one radio, each connected to the one head unit: (head unit's
    link, phone's link) per phone, in the phones' order. ``before_phones`` is called
    once the radio and the head unit's central are up, before the first phone."""
    async with radio_world() as world:
        central = await world.start_central()
        before_phones()
        phones: dict[str, BumblePeripheral] = {}
        for i in range(count):
            device = await world.radio.powered(f"phone{i}", pacing_for(PROFILE))
            phone = BumblePeripheral(device, att_mtu=PROFILE.att_mtu)
            await phone.advertise(f"scale{i}")
            phones[f"scale{i}"] = phone
        found: dict[str, Sighting] = {}
        async with central.scan() as sightings:
            while len(found) < count:
                sighting = await sightings.receive()
                if sighting.name in phones:
                    found[sighting.name] = sighting
        links: list[tuple[Link, Link]] = []
        try:
            for name, phone in phones.items():
                link: Link = await central.connect(found[name])
                links.append((link, await phone.accept()))
            yield links
        finally:
            for hu, _ in links:
                await hu.aclose()


async def run(count: int, size: int, samples: int, *, memory: bool) -> ScaleRow:
    """One count's measurement; with ``memory`` the traced heap instead of the CPU."""
    rng = random.Random(count)
    chunks = chunk_object(2, bytes(size), chunk_size(PROFILE))
    latencies: list[float] = []
    finished: dict[int, float] = {}
    base = 0

    def trace() -> None:
        nonlocal base
        if memory:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]

    with tempfile.TemporaryDirectory(prefix="bridge-scale-") as folder:
        async with connected(count, trace) as links, trio.open_nursery() as nursery:
            pairs: list[tuple[PeerSession, PeerSession, Received]] = []
            for i, (hu_link, phone_link) in enumerate(links):
                hu_hs, phone_hs = handshakes(Path(folder) / str(i))
                hu, phone = PeerSession(f"hu{i}"), PeerSession(f"phone{i}")
                at_phone: Received = []
                nursery.start_soon(partial(hu.run_link, hu_link, handshake=hu_hs))
                nursery.start_soon(partial(phone.run_link, phone_link, handshake=phone_hs))
                nursery.start_soon(drain, hu, [])
                nursery.start_soon(drain, phone, at_phone)
                pairs.append((hu, phone, at_phone))
            with trio.fail_after(30):  # virtual seconds: each handshake takes well under 1
                while not all(ready(s, True) for h, p, _ in pairs for s in (h, p)):
                    await trio.sleep(PROFILE.interval)
            await trio.sleep(0.5)  # the links settled
            started, cpu = trio.current_time(), time.process_time()

            async def stream(i: int, hu: PeerSession, at_phone: Received) -> None:
                for chunk in chunks:
                    await hu.send(chunk.channel, chunk.type, chunk.to_body())
                while sum(m.channel is Channel.BULK for _, m in at_phone) < len(chunks):
                    await trio.sleep(PROFILE.interval)
                finished[i] = max(t for t, m in at_phone if m.channel is Channel.BULK)

            async def pauses(hu: PeerSession, at_phone: Received) -> None:
                await trio.sleep(0.2)  # the transfers are under way
                for _ in range(samples):
                    await trio.sleep(rng.uniform(0.0, 4 * PROFILE.interval))
                    if not hu.mux.queued(Channel.BULK):
                        return  # this phone's transfer is out: only samples during it count
                    latencies.append(await pause_latency(hu, at_phone))

            async with trio.open_nursery() as streams:
                for i, (hu, _, at_phone) in enumerate(pairs):
                    streams.start_soon(stream, i, hu, at_phone)
                    streams.start_soon(pauses, hu, at_phone)
            cpu = time.process_time() - cpu
            grown = None
            if memory:
                grown = (tracemalloc.get_traced_memory()[1] - base) / count
                tracemalloc.stop()
            nursery.cancel_scope.cancel()
    if len(latencies) < 2:
        raise RuntimeError("fewer than two pauses during the transfers: make them longer")
    slowest = min(size / (end - started) for end in finished.values())
    return ScaleRow(
        count,
        cpu * MB / (size * count),
        (percentile(latencies, 50), percentile(latencies, 99)),
        len(latencies),
        slowest,
        grown,
    )


def measure(count: int, size: int, samples: int) -> ScaleRow:
    """The CPU pass and the memory pass of one count, each in virtual time."""

    def virtual(memory: bool) -> ScaleRow:
        return trio.run(
            partial(run, count, size, samples, memory=memory),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )

    row = virtual(False)
    row.memory_per_phone = virtual(True).memory_per_phone
    return row


def report(rows: list[ScaleRow], size: int) -> str:
    one = rows[0]
    header = (
        f"{'phones':>6} {'CPU s/MB':>9} {'pause p50/p99 ms':>17} {'n':>4} "
        f"{'slowest kB/s':>12} {'heap/phone':>11} | {'CPU/MB x':>8} {'p99 x':>6} {'heap x':>6}"
    )
    lines = [
        f"{len(rows)} counts on the Bumble radio (android profile, encrypted), virtual time; "
        f"each phone {size // 1024} KB of bulk chunks from the head unit, pauses while they stream",
        header,
        "-" * len(header),
    ]
    for r in rows:
        heap = r.memory_per_phone or 0.0
        base_heap = one.memory_per_phone or 1.0
        lines.append(
            f"{r.phones:>6} {r.cpu_per_mb:>9.2f} "
            f"{r.pause[0] * 1000:>8.1f} {r.pause[1] * 1000:>8.1f} "
            f"{r.samples:>4} {r.slowest / 1000:>12.1f} {heap / 1024:>8.0f} KB | "
            f"{r.cpu_per_mb / one.cpu_per_mb:>8.2f} {r.pause[1] / one.pause[1]:>6.2f} "
            f"{heap / base_heap:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 KB per phone, fewer samples")
    parser.add_argument(
        "--phones", type=int, action="append", help="only these counts (default 1, 2, 4, 8)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("bumble").setLevel(logging.CRITICAL)  # a link's teardown is noisy
    size = MB // 16 if args.quick else MB // 4
    samples = 10 if args.quick else 30
    counts = sorted(set(args.phones or COUNTS))
    if not all(1 <= count <= 16 for count in counts):
        parser.error("--phones takes 1 to 16")
    rows = []
    for count in counts:
        rows.append(measure(count, size, samples))
        print(f"{count} phone(s) measured", file=sys.stderr, flush=True)
    print(report(rows, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
