"""Benchmarks on the simulated link: ``python -m tools.bench [--quick]``.

For the android and ios profiles at ATT MTU 23, 185, 247 and 517 it measures, side by
side in one run and on virtual time (so the figures are exact and repeatable):

- goodput: application bytes of a 1 MB bulk transfer per second, as a ratio of the link's
  raw payload capacity (ATT value bytes per second with full packets);
- pause latency: a pause command from the head unit to the phone, p50 and p99 over many
  samples at random moments, idle and while a 1 MB transfer to the phone is in flight,
  with the priority scheduler and with a plain FIFO scheduler; reported as ratios of the
  idle latency.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass

import trio
import trio.testing

from bridge.channels import Channel
from bridge.messages import BULK_CHUNK_SIZE, MediaCommand, MediaCommandRequest, chunk_object
from bridge.mux import ChannelMux, MessageReceived, Scheduler
from bridge.session import PeerSession
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

MTUS = (23, 185, 247, 517)
MB = 1 << 20


@dataclass
class Row:
    profile: str
    mtu: int
    capacity: float
    goodput: float
    idle: tuple[float, float]
    priority: tuple[float, float]
    fifo: tuple[float, float]


async def _drain(session: PeerSession, into: list[tuple[float, MessageReceived]]) -> None:
    while True:
        event = await session.next_event()
        if isinstance(event, MessageReceived):
            into.append((trio.current_time(), event))


async def _goodput(profile: LinkProfile, size: int) -> float:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    received: list[tuple[float, MessageReceived]] = []
    pair = SimulatedLinkPair(profile, seed=1)
    chunks = chunk_object(1, bytes(size))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        nursery.start_soon(_drain, hu, received)
        nursery.start_soon(_drain, phone, [])
        await trio.sleep(0.5)  # link settled
        start = trio.current_time()
        for chunk in chunks:
            await phone.send(chunk.channel, chunk.type, chunk.to_body())
        while len(received) < len(chunks):
            await trio.sleep(profile.interval)
        end = max(t for t, _ in received)
        nursery.cancel_scope.cancel()
    return size / (end - start)


async def _pause_latencies(
    profile: LinkProfile, scheduler: Scheduler | None, samples: int, size: int
) -> list[float]:
    """Latency of pause commands; with a scheduler, while a bulk transfer is in flight."""
    rng = random.Random(7)
    mux = ChannelMux(scheduler=scheduler or Scheduler.PRIORITY)
    hu, phone = PeerSession("hu", mux=mux), PeerSession("phone")
    at_phone: list[tuple[float, MessageReceived]] = []
    pair = SimulatedLinkPair(profile, seed=2)
    pause = MediaCommandRequest(MediaCommand.PAUSE)
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        nursery.start_soon(_drain, hu, [])
        nursery.start_soon(_drain, phone, at_phone)
        await trio.sleep(0.5)

        async def bulk() -> None:
            for chunk in chunk_object(2, bytes(size)):
                await hu.send(chunk.channel, chunk.type, chunk.to_body())

        if scheduler is not None:
            nursery.start_soon(bulk)
            await trio.sleep(0.2)  # the transfer is under way
        for _ in range(samples):
            await trio.sleep(rng.uniform(0.0, 4 * profile.interval))
            if scheduler is not None and not any(mux.queued(c) for c in (Channel.BULK,)):
                break  # the transfer finished: only samples taken during it count
            sent_at = trio.current_time()
            seq = await hu.send(pause.channel, pause.type, pause.to_body())
            while not any(m.seq == seq and m.channel is Channel.AUDIO for _, m in at_phone[-3:]):
                await trio.sleep(0.0005)
            latencies.append(trio.current_time() - sent_at)
        nursery.cancel_scope.cancel()
    return latencies


def _p(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(profile_name: str, mtu: int, size: int, samples: int) -> Row:
    profile = PROFILES[profile_name].with_mtu(mtu)
    goodput = await _goodput(profile, size)
    idle = await _pause_latencies(profile, None, samples, size)
    prio = await _pause_latencies(profile, Scheduler.PRIORITY, samples, size)
    fifo = await _pause_latencies(profile, Scheduler.FIFO, samples, size)

    def pair(values: list[float]) -> tuple[float, float]:
        return (_p(values, 50), _p(values, 99))

    return Row(profile_name, mtu, profile.capacity(), goodput, pair(idle), pair(prio), pair(fifo))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 KB transfers, fewer samples")
    args = parser.parse_args(argv)
    size = MB // 4 if args.quick else MB
    samples = 20 if args.quick else 60
    print(
        f"simulated link, virtual time; transfer {size // 1024} KB in "
        f"{BULK_CHUNK_SIZE}-byte chunks; pause latency over up to {samples} samples"
    )
    header = (
        f"{'profile':8} {'MTU':>4} {'capacity':>10} {'goodput':>10} {'ratio':>6} | "
        f"{'idle p50/p99 ms':>16} | {'prio x p50/p99':>15} | {'fifo x p50/p99':>15}"
    )
    print(header)
    print("-" * len(header))
    for profile_name in ("android", "ios"):
        for mtu in MTUS:
            row = trio.run(
                measure,
                profile_name,
                mtu,
                size,
                samples,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
            idle50, idle99 = row.idle
            print(
                f"{row.profile:8} {row.mtu:>4} {row.capacity / 1000:>7.1f} kB/s"
                f"{row.goodput / 1000:>7.1f} kB/s {row.goodput / row.capacity:>6.3f} | "
                f"{idle50 * 1000:>7.1f} {idle99 * 1000:>7.1f}  | "
                f"{row.priority[0] / idle50:>6.2f} {row.priority[1] / idle99:>7.2f}  | "
                f"{row.fifo[0] / idle50:>6.1f} {row.fifo[1] / idle99:>7.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
