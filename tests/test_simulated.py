"""The simulated BLE link: timing, back-pressure, closure."""

from __future__ import annotations

import pytest
import trio

from transports.link import CloseReason, LinkClosed, payload_size_for_mtu
from transports.simulated import PACKET_OVERHEAD, PROFILES, LinkProfile, SimulatedLinkPair


def test_payload_size() -> None:
    assert payload_size_for_mtu(23) == 20
    assert payload_size_for_mtu(185) == 182
    assert payload_size_for_mtu(515) == 512
    assert payload_size_for_mtu(517) == 512  # GATT values stop at 512
    with pytest.raises(ValueError):
        payload_size_for_mtu(22)
    with pytest.raises(ValueError):
        payload_size_for_mtu(518)


async def test_delivery_happens_at_connection_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["ios"]
    pair = SimulatedLinkPair(profile, seed=3)
    start = trio.current_time()
    await pair.central.send(b"ping")
    assert await pair.peripheral.receive() == b"ping"
    one_way = trio.current_time() - start
    assert 0 < one_way <= profile.interval + profile.latency + 1e-9
    # an echo lands exactly one interval later (the next event), plus processing latency
    t0 = trio.current_time()
    await pair.peripheral.send(b"pong")
    assert await pair.central.receive() == b"pong"
    assert trio.current_time() - t0 == pytest.approx(profile.interval)


async def test_throughput_matches_the_computed_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["android"]
    pair = SimulatedLinkPair(profile, seed=1)
    n = 300
    size = profile.payload_size

    async def sender() -> None:
        for _ in range(n):
            await pair.peripheral.send(bytes(size))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        start = trio.current_time()
        await pair.central.receive()
        first = trio.current_time()
        for _ in range(n - 1):
            await pair.central.receive()
        elapsed = trio.current_time() - first
    per_event = profile.bytes_per_event // (size + PACKET_OVERHEAD)
    assert elapsed == pytest.approx(((n - 1) // per_event) * profile.interval, abs=profile.interval)
    measured = (n - 1) * size / elapsed
    assert measured == pytest.approx(profile.capacity(), rel=0.05)
    assert first - start <= profile.interval + profile.latency


async def test_send_waits_while_the_stack_buffer_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["legacy"]
    pair = SimulatedLinkPair(profile)
    t0 = trio.current_time()
    for _ in range(20):
        await pair.central.send(bytes(20))
    # 4 packets per 30 ms event: the 20th send had to wait for about 4 events
    assert trio.current_time() - t0 >= 3 * profile.interval


async def test_link_loss_is_seen_after_the_supervision_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["android"]
    pair = SimulatedLinkPair(profile)
    await pair.central.send(b"before")
    assert await pair.peripheral.receive() == b"before"
    t0 = trio.current_time()
    pair.lose_link()
    await pair.central.send(b"into the void")
    with pytest.raises(LinkClosed) as info:
        await pair.peripheral.receive()
    assert info.value.reason is CloseReason.LINK_LOSS
    assert trio.current_time() - t0 == pytest.approx(profile.supervision_timeout)
    with pytest.raises(LinkClosed):
        await pair.central.receive()
    with pytest.raises(LinkClosed):
        await pair.central.send(b"after")


async def test_peer_close_after_pending_data(autojump_clock: trio.testing.MockClock) -> None:
    pair = SimulatedLinkPair(PROFILES["ios"])
    await pair.central.send(b"last words")
    await pair.central.aclose()
    await pair.central.aclose()  # idempotent
    assert await pair.peripheral.receive() == b"last words"
    with pytest.raises(LinkClosed) as info:
        await pair.peripheral.receive()
    assert info.value.reason is CloseReason.PEER
    with pytest.raises(LinkClosed) as local:
        await pair.central.receive()
    assert local.value.reason is CloseReason.LOCAL


async def test_oversize_packets_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    pair = SimulatedLinkPair(PROFILES["android"])
    assert pair.central.payload_size == 512
    with pytest.raises(ValueError):
        await pair.central.send(bytes(513))
    with pytest.raises(ValueError):
        await pair.central.send(b"")


async def test_same_seed_same_timing(autojump_clock: trio.testing.MockClock) -> None:
    profile = LinkProfile("lossy", att_mtu=247, interval=0.02, bytes_per_event=1000, event_loss=0.3)

    async def run(seed: int) -> list[float]:
        pair = SimulatedLinkPair(profile, seed=seed)
        start = trio.current_time()
        times = []

        async def sender() -> None:
            for _ in range(40):
                await pair.central.send(bytes(244))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for _ in range(40):
                await pair.peripheral.receive()
                times.append(round(trio.current_time() - start, 9))
        return times

    a, b, c = await run(5), await run(5), await run(6)
    assert a == b
    assert a != c
