"""CPU per megabyte through the whole stack: ``python -m tools.bench.cpu`` (P4).

Side by side in one run: (a) the process's CPU seconds to move 1 MB of bulk chunks from
the phone to the head unit through both ends' full stack (sessions authenticated with
Noise KK, so every record is encrypted; mux, frames, segments, credits) over the
simulated android link in virtual time, the link model's own bookkeeping included; (b)
ChaCha20-Poly1305 alone sealing and opening the same data in records of the same size.
Reported: CPU seconds per MB for each, their ratio (goal <= 3), and the share of one core
a saturated link would cost at the android profile's capacity (2M PHY).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bridge.messages import BULK_CHUNK_SIZE, chunk_object
from bridge.mux import MessageReceived
from bridge.session import PeerSession
from pairing.handshake import Handshake, Role
from pairing.noise import nonce_bytes
from pairing.trust import TrustStore
from transports.simulated import PROFILES, SimulatedLinkPair

MB = 1 << 20


@dataclass
class CpuResult:
    stack: float  # CPU seconds per MB, both ends
    aead: float  # CPU seconds per MB, ChaCha20-Poly1305 alone (seal and open)
    capacity: float  # the link's payload bytes per second

    @property
    def ratio(self) -> float:
        return self.stack / self.aead

    @property
    def core_share(self) -> float:
        """Share of one core that moving data at the link's capacity costs."""
        return self.stack * self.capacity / MB


async def _stack(folder: Path, size: int) -> float:
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
    hu, phone = PeerSession("hu"), PeerSession("phone")
    chunks = chunk_object(1, bytes(size))
    got = 0
    pair = SimulatedLinkPair(PROFILES["android"], seed=1)

    async def drain(session: PeerSession, count: bool) -> None:
        nonlocal got
        while True:
            event = await session.next_event()
            if count and isinstance(event, MessageReceived):
                got += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hu.run_link(pair.central, handshake=hu_hs))
        nursery.start_soon(lambda: phone.run_link(pair.peripheral, handshake=phone_hs))
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


def measure(size: int = MB) -> CpuResult:
    with tempfile.TemporaryDirectory(prefix="bridge-cpu-") as folder:
        stack = trio.run(
            _stack, Path(folder), size, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    aead = min(_aead(size) for _ in range(5))  # the fastest of five: the C code's own cost
    return CpuResult(stack, aead, PROFILES["android"].capacity())


def main() -> int:
    result = measure()
    print(
        "CPU seconds per MB through both ends of the encrypted stack (android link, "
        "virtual time) and for ChaCha20-Poly1305 alone\n"
        f"stack {result.stack:.3f} s/MB   ChaCha20-Poly1305 {result.aead:.4f} s/MB   "
        f"ratio {result.ratio:.0f} (goal <= 3)\n"
        f"at the link's capacity ({result.capacity / 1000:.0f} kB/s): "
        f"{100 * result.core_share:.1f} % of one core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
