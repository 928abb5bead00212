"""Two sessions on the simulated link, end to end, in virtual time."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict

import pytest
import trio
import trio.testing

from bridge.connection import ConnectionClosed
from bridge.session import LinkDown, LinkUp, PeerSession, SessionEvent
from bridge.wire.channels import Channel
from bridge.wire.errors import ErrorCode
from bridge.wire.mux import Acknowledged, ChannelMux, MessageReceived, Scheduler
from tests.helpers import first
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

DATA_CHANNELS = [Channel.NAVIGATION, Channel.AUDIO, Channel.MESSAGING, Channel.BULK]


class Collector:
    """Reads a session's events for the whole test, as an application must."""

    def __init__(self, session: PeerSession) -> None:
        self.session = session
        self.messages: list[MessageReceived] = []
        self.other: list[SessionEvent] = []
        self.changed = trio.Event()

    async def run(self) -> None:
        while True:
            event = await self.session.next_event()
            if isinstance(event, MessageReceived):
                self.messages.append(event)
            elif not isinstance(event, Acknowledged):
                self.other.append(event)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.messages) < n:
            await self.changed.wait()

    def by_channel(self) -> dict[Channel, list[object]]:
        out: dict[Channel, list[object]] = defaultdict(list)
        for m in self.messages:
            out[m.channel].append(m.body[0])
        return out


@pytest.mark.parametrize("profile", ["android", "ios", "legacy"])
async def test_every_channel_both_ways(
    profile: str, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    hu_in, phone_in = Collector(hu), Collector(phone)
    pair = SimulatedLinkPair(PROFILES[profile], seed=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        nursery.start_soon(hu_in.run)
        nursery.start_soon(phone_in.run)
        for i in range(10):
            for channel in DATA_CHANNELS:
                await phone.send(channel, 1, {0: i, 1: "x" * (i * 300)})
                await hu.send(channel, 2, {0: i})
        await hu_in.wait_for(40)
        await phone_in.wait_for(40)
        nursery.cancel_scope.cancel()
    for collector in (hu_in, phone_in):
        assert collector.by_channel() == {c: list(range(10)) for c in DATA_CHANNELS}
    assert isinstance(hu_in.other[0], LinkUp) and not hu_in.other[0].encrypted


async def _run_with_drops(  # noqa: PLR0917 - a test helper with one caller
    hu: PeerSession,
    phone: PeerSession,
    profile: LinkProfile,
    drops: int,
    rng: random.Random,
    dropped: trio.Event,
    done: trio.Event,
) -> int:
    links = 0
    while not done.is_set():
        pair = SimulatedLinkPair(profile, seed=links)
        links += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hu.run_link, pair.central)
            nursery.start_soon(phone.run_link, pair.peripheral)
            if links <= drops:
                await trio.sleep(rng.uniform(0.05, 0.6))
                pair.lose_link()
            else:
                dropped.set()
                await done.wait()
                hu.close("test over")
        await trio.sleep(rng.uniform(0.0, 0.3))  # reconnect delay
    return links


@pytest.mark.parametrize("profile_name", ["android", "ios"])
async def test_exactly_once_in_order_across_link_drops(
    profile_name: str, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(profile_name)
    profile = dataclasses.replace(PROFILES[profile_name], supervision_timeout=0.5)
    hu, phone = PeerSession("hu"), PeerSession("phone")
    hu_in, phone_in = Collector(hu), Collector(phone)
    dropped, done = trio.Event(), trio.Event()
    links: list[int] = []
    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu_in.run)
        nursery.start_soon(phone_in.run)

        async def radio() -> None:
            links.append(await _run_with_drops(hu, phone, profile, 20, rng, dropped, done))
            nursery.cancel_scope.cancel()  # the collectors run until here

        nursery.start_soon(radio)
        while not dropped.is_set() or sent < 400:  # keep traffic flowing across all drops
            channel = DATA_CHANNELS[sent % 4]
            await phone.send(channel, 1, {0: sent, 1: bytes(rng.randrange(2000))})
            if sent % 3 == 0:
                await hu.send(Channel.AUDIO, 2, {0: sent})
            sent += 1
            await trio.sleep(rng.uniform(0, 0.02))
        await hu_in.wait_for(sent)
        await phone_in.wait_for(len(range(0, sent, 3)))
        done.set()
    assert links == [21]
    got = hu_in.by_channel()
    for k, channel in enumerate(DATA_CHANNELS):
        assert got[channel] == list(range(k, sent, 4))  # 0 lost, 0 duplicated, in order
    assert phone_in.by_channel()[Channel.AUDIO] == list(range(0, sent, 3))
    downs = [e for e in hu_in.other if isinstance(e, LinkDown)]
    assert sum("link lost" in d.reason for d in downs) == 20


async def test_link_loss_mid_record_delivers_no_half_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    hu_in = Collector(hu)
    big = bytes(range(256)) * 60  # a 15 KB body: one record of many segments
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu_in.run)
        pair = SimulatedLinkPair(PROFILES["legacy"])  # slow: ~3.6 KB/s
        async with trio.open_nursery() as link:
            link.start_soon(hu.run_link, pair.central)
            link.start_soon(phone.run_link, pair.peripheral)
            await phone.send(Channel.BULK, 1, {0: 0, 1: big})
            await trio.sleep(1.0)  # part of it is across
            pair.lose_link()
        assert hu_in.messages == []
        pair = SimulatedLinkPair(PROFILES["legacy"], seed=9)
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        await hu_in.wait_for(1)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert len(hu_in.messages) == 1 and hu_in.messages[0].body[1] == big


async def _pause_position(scheduler: Scheduler) -> tuple[int, int]:
    """Bulk chunks that reached the head unit before the pause did, and in all."""
    hu = PeerSession("hu", mux=ChannelMux(scheduler=scheduler))
    phone = PeerSession("phone")
    phone_in = Collector(phone)
    pair = SimulatedLinkPair(PROFILES["ios"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        nursery.start_soon(phone_in.run)
        for i in range(20):
            hu.send_nowait(Channel.BULK, 1, {0: i, 1: bytes(4000)})
        await trio.sleep(0.2)
        hu.send_nowait(Channel.AUDIO, 2, {0: "pause"})
        await phone_in.wait_for(21)
        nursery.cancel_scope.cancel()
    order = [m.channel for m in phone_in.messages]
    return order.index(Channel.AUDIO), order.count(Channel.BULK)


async def test_pause_overtakes_a_transfer_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    before, total = await _pause_position(Scheduler.PRIORITY)
    assert total == 20 and before <= 2  # at most the chunk in progress finishes first
    fifo_before, _ = await _pause_position(Scheduler.FIFO)
    assert fifo_before == 20  # FIFO: the pause waits behind everything queued


async def test_slow_receiver_stalls_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    pair = SimulatedLinkPair(PROFILES["android"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        phone_in = Collector(phone)
        nursery.start_soon(phone_in.run)
        for i in range(60):  # 60 x 8 KB; the head unit's application reads nothing yet
            phone.send_nowait(Channel.BULK, 1, {0: i, 1: bytes(8000)})
        await trio.sleep(10.0)
        _, sent_bytes = pair.stats()["to-head-unit"]
        # What crossed is bounded by the receiver's limits, far below the 480 KB offered:
        # decoded events (64 x 8 KB) + completed records (64 KB) + a window of segments.
        assert sent_bytes < 64 * 8100 + 65536 + 32 * 512
        hu_in = Collector(hu)
        nursery.start_soon(hu_in.run)
        await hu_in.wait_for(60)
        nursery.cancel_scope.cancel()
    assert [m.body[0] for m in hu_in.messages] == list(range(60))


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (first(0, 0, 3, b"\xff\xff\xff"), ErrorCode.MALFORMED),  # a record that is not CBOR
        (first(5, 0, 3, b"abc"), ErrorCode.SEQUENCE),  # a segment out of sequence
        (b"\xc0", ErrorCode.UNSUPPORTED),  # a reserved segment kind
    ],
)
async def test_garbage_from_the_peer_closes_the_link_with_a_reason(
    garbage: bytes, code: ErrorCode, autojump_clock: trio.testing.MockClock
) -> None:
    hu = PeerSession("hu")
    hu_in = Collector(hu)
    pair = SimulatedLinkPair(PROFILES["android"])
    raw = pair.peripheral
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu_in.run)
        nursery.start_soon(hu.run_link, pair.central)
        await raw.send(garbage)
        close_record = b""
        while True:
            packet = await raw.receive()
            if packet[0] >> 6 == 1:
                close_record = packet[3:]
                break
        nursery.cancel_scope.cancel()
    closed = [e for e in hu_in.other if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].code == code and not closed[0].by_peer
    downs = [e for e in hu_in.other if isinstance(e, LinkDown)]
    assert downs and code.name.lower() in downs[0].reason
    assert close_record.startswith(bytes.fromhex("840003f6a2"))  # a CLOSE frame went out


async def test_a_silent_peer_times_out_and_keepalives_keep_a_quiet_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    hu_in, phone_in = Collector(hu), Collector(phone)
    pair = SimulatedLinkPair(PROFILES["ios"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu_in.run)
        nursery.start_soon(phone_in.run)
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        await trio.sleep(120.0)  # two quiet minutes
        assert hu.connected and phone.connected
        nursery.cancel_scope.cancel()
    # A peer that never says anything (the raw end of a link) is dropped.
    silent = SimulatedLinkPair(PROFILES["ios"])
    lonely = PeerSession("hu")
    t0 = trio.current_time()
    down = await lonely.run_link(silent.central)
    assert "silent" in down.reason
    assert trio.current_time() - t0 == pytest.approx(lonely.config.idle_timeout, abs=0.1)


async def test_orderly_close_reaches_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    hu, phone = PeerSession("hu"), PeerSession("phone")
    phone_in = Collector(phone)
    pair = SimulatedLinkPair(PROFILES["android"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(phone_in.run)
        nursery.start_soon(hu.run_link, pair.central)
        nursery.start_soon(phone.run_link, pair.peripheral)
        await trio.sleep(0.1)
        hu.close("ignition off")
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    closed = [e for e in phone_in.other if isinstance(e, ConnectionClosed)]
    assert closed == [ConnectionClosed(0, "ignition off", by_peer=True)]
    assert isinstance(phone_in.other[-1], LinkDown)
