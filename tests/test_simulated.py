"""The simulated BLE link: timing, back-pressure, closure."""

from __future__ import annotations

import dataclasses

import pytest
import trio

from transports.link import (
    PACKET_OVERHEAD,
    CloseReason,
    LinkClosed,
    payload_size_for_mtu,
    segment_size_for,
)
from transports.simulated import (
    PROFILES,
    LinkProfile,
    SimulatedLinkPair,
    pdu_airtime,
)


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
    airtime = pdu_airtime(4 + PACKET_OVERHEAD, profile.phy_rate)
    one_way = trio.current_time() - start
    assert airtime + profile.latency < one_way <= profile.interval + airtime + profile.latency
    # an echo goes in the next connection event: exactly one interval later
    t0 = trio.current_time()
    await pair.peripheral.send(b"pong")
    assert await pair.central.receive() == b"pong"
    assert trio.current_time() - t0 == pytest.approx(profile.interval)


def test_fragments_and_airtime() -> None:
    assert PROFILES["android"].fragments(512) == [251, 251, 17]
    assert PROFILES["legacy"].fragments(20) == [27]
    # 2M PHY: 262 bytes at 4 us each, the empty ack (11 bytes), two inter-frame spaces
    assert pdu_airtime(251, 2e6) == pytest.approx(262 * 4e-6 + 11 * 4e-6 + 300e-6)


@pytest.mark.parametrize("name", ["android", "ios", "legacy"])
async def test_throughput_matches_the_computed_capacity(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    profile = PROFILES[name]
    pair = SimulatedLinkPair(profile, seed=1)
    n = 400
    size = profile.best_value_size()  # the capacity is for packets of that size

    async def sender() -> None:
        for _ in range(n):
            await pair.peripheral.send(bytes(size))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await pair.central.receive()
        first = trio.current_time()
        for _ in range(n - 1):
            await pair.central.receive()
        elapsed = trio.current_time() - first
    # A saturating sender through the 4-PDU controller buffer gets the computed capacity.
    assert (n - 1) * size / elapsed == pytest.approx(profile.capacity(), rel=0.03)


def test_packets_that_fill_whole_pdus_carry_more() -> None:
    """At MTU 517 a 512-byte value is PDUs of 251, 251 and 17 bytes; 495 bytes fill two
    exactly and carry more per second, most where an event holds few PDUs."""
    for name, gain in (("android", 1.05), ("ios", 1.4)):
        profile = PROFILES[name].with_mtu(517)
        assert profile.best_value_size() == segment_size_for(profile.payload_size) == 495
        assert profile.capacity() > gain * profile._capacity_with(512)
    small = PROFILES["ios"]  # MTU 185: its packets fit one PDU already
    assert small.best_value_size() == segment_size_for(small.payload_size) == 182


async def test_send_waits_while_the_stack_buffer_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["legacy"]
    pair = SimulatedLinkPair(profile)
    t0 = trio.current_time()
    for _ in range(20):
        await pair.central.send(bytes(20))
    # 4 PDUs per 30 ms event and a 4-PDU buffer: the 20th send waited for about 4 events
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
    profile = LinkProfile("lossy", att_mtu=247, interval=0.02, pdus_per_event=4, event_loss=0.3)

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


async def test_wait_send_ready_waits_for_room_in_the_controller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    profile = PROFILES["ios"]
    pair = SimulatedLinkPair(profile)
    for _ in range(profile.tx_buffer):
        await pair.central.send(bytes(182))  # one PDU each: the buffer is now full
    t0 = trio.current_time()
    await pair.central.wait_send_ready()
    waited = trio.current_time() - t0
    assert 0 < waited <= profile.interval + pdu_airtime(189, profile.phy_rate)
    await pair.central.aclose()
    with pytest.raises(LinkClosed):
        await pair.central.wait_send_ready()


@pytest.mark.parametrize("att_mtu", [247, 517])
async def test_after_wait_send_ready_a_whole_segment_goes_in_at_once(
    autojump_clock: trio.testing.MockClock, att_mtu: int
) -> None:
    # A segment of 495 bytes is two PDUs: ready must mean room for both, or the driver
    # commits to a bulk segment that then waits, and a pause chosen later queues behind it.
    profile = dataclasses.replace(PROFILES["ios"], att_mtu=att_mtu)
    pair = SimulatedLinkPair(profile)
    segment = bytes(segment_size_for(pair.central.payload_size))
    await pair.central.send(bytes(10))  # a small frame (one PDU) before the bulk
    for _ in range(20):
        await pair.central.wait_send_ready()
        ready_at = trio.current_time()
        await pair.central.send(segment)
        assert trio.current_time() == ready_at
    await pair.central.aclose()
