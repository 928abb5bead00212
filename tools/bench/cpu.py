"""CPU per megabyte through the whole stack: ``python -m tools.bench.cpu`` (P4).

Side by side in one run, each the process's CPU seconds to move 1 MB of bulk chunks from
the phone to the head unit, sessions authenticated with Noise KK so every record is
encrypted:

(a) the protocol cores alone: both ends' sans-IO connections (mux, frames, segments,
    credits, records) joined directly, packets handed across in a loop;
(b) the bridge's whole stack: (a) driven by both ends' trio sessions, over a link with no
    timing and no cost of its own (trio memory channels): what the bridge itself costs;
(c) the same over the simulated android link in virtual time, whose model of the radio
    (connection events, PDUs, buffers) is counted too;
(c') the same over the Bumble radio with the android profile: the head unit's bleak
    transport, Bumble's HCI, L2CAP, ATT and GATT on both sides and its controllers, all
    counted (on a Raspberry Pi the head unit's share of that is bleak, D-Bus and BlueZ);
(d) ChaCha20-Poly1305 alone sealing and opening the same data in records of the same size.

Reported: CPU seconds per MB for each, their ratio to (d) (goals: at most x40 for the
whole stack, x15 for the cores), and the share of one core (b) would cost at the
android profile's capacity.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bridge.connection import Connection
from bridge.session import PeerSession
from bridge.wire.messages import BULK_CHUNK_SIZE, chunk_object
from bridge.wire.mux import ChannelMux, MessageReceived
from pairing.noise import nonce_bytes
from tools.bench.link import handshakes, radio_links
from transports.link import Link, LinkClosed, payload_size_for_mtu
from transports.simulated import PROFILES, SimulatedLinkPair

MB = 1 << 20
QUEUE = 4  # packets each direction of the memory link buffers
WINDOW = 16  # frames a channel may have unacknowledged (bridge.wire.mux)


@dataclass
class CpuResult:
    cores: float  # CPU seconds per MB, both ends' sans-IO protocol cores
    stack: float  # CPU seconds per MB, both ends' whole stack over a costless link
    simulated: float  # the same over the simulated android link, its model included
    radio: float  # the same over the Bumble radio, Bumble's stacks included
    aead: float  # CPU seconds per MB, ChaCha20-Poly1305 alone (seal and open)
    capacity: float  # the link's payload bytes per second

    @property
    def ratio(self) -> float:
        return self.stack / self.aead

    @property
    def core_share(self) -> float:
        """Share of one core that moving data at the link's capacity costs."""
        return self.stack * self.capacity / MB


class MemoryLink(Link):
    """One end of a link with no timing and no cost: packets cross trio memory channels."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        counts: tuple[list[int], list[int]],
    ) -> None:
        self._send, self._receive = send, receive
        # packets in each channel's buffer (sent, not yet received): ours, the peer's
        self._out, self._in = counts

    @property
    def att_mtu(self) -> int:
        return PROFILES["android"].att_mtu

    @property
    def peer(self) -> str:
        return "memory"

    @property
    def closed(self) -> LinkClosed | None:
        return None

    async def send(self, packet: bytes) -> None:
        await self._send.send(packet)
        self._out[0] += 1

    def send_room(self) -> bool:
        return self._out[0] < QUEUE

    def send_nowait(self, packet: bytes) -> None:
        self._send.send_nowait(packet)
        self._out[0] += 1

    async def receive(self) -> bytes:
        packet = await self._receive.receive()
        self._in[0] -= 1
        return packet

    def receive_nowait(self) -> bytes | None:
        try:
            packet = self._receive.receive_nowait()
        except trio.WouldBlock:
            return None
        self._in[0] -= 1
        return packet

    async def aclose(self) -> None:
        pass


def memory_links() -> tuple[Link, Link]:
    """(head unit's end, phone's end), each side's queue a few packets deep."""
    to_phone, at_phone = trio.open_memory_channel[bytes](QUEUE)
    to_hu, at_hu = trio.open_memory_channel[bytes](QUEUE)
    down, up = [0], [0]  # packets buffered towards the phone, towards the head unit
    return MemoryLink(to_phone, at_hu, (down, up)), MemoryLink(to_hu, at_phone, (up, down))


def _cores(folder: Path, size: int) -> float:
    hu_hs, phone_hs = handshakes(folder)
    payload = payload_size_for_mtu(PROFILES["android"].att_mtu)
    hu = Connection(ChannelMux(), payload, now=0.0, handshake=hu_hs)
    phone = Connection(ChannelMux(), payload, now=0.0, handshake=phone_hs)

    def pump() -> int:
        for src, dst in ((hu, phone), (phone, hu)):
            while (packet := src.next_packet(0.0)) is not None:
                dst.receive_packet(packet, 0.0)
        got = 0
        for conn in (hu, phone):
            while (event := conn.next_event()) is not None:
                got += conn is hu and isinstance(event, MessageReceived)
        return got

    for _ in range(4):
        pump()
    if not (hu.authenticated and phone.authenticated and hu.records.encrypted):
        raise RuntimeError("the connections did not authenticate")
    chunks = chunk_object(1, bytes(size))
    started = time.process_time()
    sent = got = 0
    while got < len(chunks):
        while sent < len(chunks) and sent - got < WINDOW:  # as a session's credits allow
            chunk = chunks[sent]
            phone.send_message(chunk.channel, chunk.type, chunk.to_body())
            sent += 1
        got += pump()
    return (time.process_time() - started) * MB / size


async def _stack(folder: Path, size: int, links: tuple[Link, Link]) -> float:
    hu_hs, phone_hs = handshakes(folder)
    hu, phone = PeerSession("hu"), PeerSession("phone")
    chunks = chunk_object(1, bytes(size))
    got = 0
    hu_link, phone_link = links

    async def drain(session: PeerSession, count: bool) -> None:
        nonlocal got
        while True:
            event = await session.next_event()
            if count and isinstance(event, MessageReceived):
                got += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hu.run_link(hu_link, handshake=hu_hs))
        nursery.start_soon(lambda: phone.run_link(phone_link, handshake=phone_hs))
        nursery.start_soon(drain, hu, True)
        nursery.start_soon(drain, phone, False)
        await trio.sleep(1.0)  # authenticated and settled
        for session in (hu, phone):  # authenticated: every record from here is encrypted
            connection = session._connection
            assert connection is not None and connection.authenticated
            assert connection.records.encrypted
        started = time.process_time()
        for chunk in chunks:
            await phone.send(chunk.channel, chunk.type, chunk.to_body())
        while got < len(chunks):
            await trio.sleep(0.01)
        cpu = time.process_time() - started
        nursery.cancel_scope.cancel()
    return cpu * MB / size


def _aead(size: int) -> float:
    key = os.urandom(32)
    aead = ChaCha20Poly1305(key)
    record = bytes(BULK_CHUNK_SIZE + 40)  # a bulk chunk frame's plaintext
    count = size // BULK_CHUNK_SIZE
    started = time.process_time()
    for i in range(count):
        sealed = aead.encrypt(nonce_bytes(i), record, b"\x00")
        aead.decrypt(nonce_bytes(i), sealed, b"\x00")
    return (time.process_time() - started) * MB / size


async def _on_memory(folder: Path, size: int) -> float:
    return await _stack(folder, size, memory_links())


async def _on_simulated(folder: Path, size: int) -> float:
    pair = SimulatedLinkPair(PROFILES["android"], seed=1)
    return await _stack(folder, size, (pair.central, pair.peripheral))


async def _on_radio(folder: Path, size: int) -> float:
    async with radio_links(PROFILES["android"], seed=1) as links:
        return await _stack(folder, size, links)


def measure(size: int = MB) -> CpuResult:
    def virtual(run: Callable[[Path, int], Awaitable[float]]) -> float:
        with tempfile.TemporaryDirectory(prefix="bridge-cpu-") as folder:
            clock = trio.testing.MockClock(autojump_threshold=0)
            return trio.run(run, Path(folder), size, clock=clock)

    with tempfile.TemporaryDirectory(prefix="bridge-cpu-") as folder:
        cores = min(_cores(Path(folder) / str(i), size) for i in range(3))
    stack = min(virtual(_on_memory) for _ in range(3))
    simulated = virtual(_on_simulated)
    radio = virtual(_on_radio)
    aead = min(_aead(size) for _ in range(5))  # the fastest of five: the C code's own cost
    return CpuResult(cores, stack, simulated, radio, aead, PROFILES["android"].capacity())


def report(r: CpuResult) -> str:
    return (
        "CPU seconds per MB, both ends, encrypted records (bulk chunks phone -> head unit), "
        "and ChaCha20-Poly1305 alone\n"
        f"protocol cores (sans-IO)           {r.cores:.3f} s/MB  x{r.cores / r.aead:.0f}"
        "  (goal x15)\n"
        f"whole stack (trio, costless link)  {r.stack:.3f} s/MB  x{r.stack / r.aead:.0f}"
        "  (goal x40)\n"
        f"over the simulated android link    {r.simulated:.3f} s/MB  "
        f"x{r.simulated / r.aead:.0f}  (the radio model's own cost included)\n"
        f"over the Bumble radio (android)    {r.radio:.3f} s/MB  "
        f"x{r.radio / r.aead:.0f}  (bleak and Bumble's stacks included)\n"
        f"ChaCha20-Poly1305 alone            {r.aead:.4f} s/MB\n"
        f"the whole stack at the android link's capacity ({r.capacity / 1000:.0f} kB/s): "
        f"{100 * r.core_share:.1f} % of one core"
    )


def main() -> int:
    print(report(measure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
