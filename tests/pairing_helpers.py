"""Helpers for pairing tests: deterministic keys and randomness, two stores, two sessions."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bridge.session import PeerSession, SessionEvent
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, PairingFailed, Role
from pairing.trust import TrustStore


def key_from(rng: random.Random) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(rng.randbytes(32))


def handshake(
    role: Role,
    store: TrustStore,
    *,
    seed: int,
    peer_key: bytes | None = None,
    allow_pairing: bool = True,
    confirm_timeout: float = 60.0,
) -> Handshake:
    rng = random.Random(seed)
    return Handshake(
        role,
        store.identity,
        name="Pixel 9" if role is Role.PHONE else "Car",
        platform="android" if role is Role.PHONE else "head-unit",
        trusted=store.trusted_keys(),
        peer_key=peer_key,
        allow_pairing=allow_pairing,
        random=rng.randbytes,
        ephemeral=lambda: key_from(rng),
        confirm_timeout=confirm_timeout,
        irk=store.irk if role is Role.PHONE else None,
    )


@dataclass
class Side:
    """One side's session and what it saw; answers pairing codes with ``answer``."""

    session: PeerSession
    store: TrustStore
    answer: Callable[[CodeToConfirm], bool | None] = lambda code: True
    codes: list[CodeToConfirm] = field(default_factory=list)
    auth: list[Authenticated] = field(default_factory=list)
    failed: list[PairingFailed] = field(default_factory=list)
    other: list[SessionEvent] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            event = await self.session.next_event()
            if isinstance(event, CodeToConfirm):
                self.codes.append(event)
                decision = self.answer(event)
                if decision is not None:
                    self.session.confirm_pairing(decision)
            elif isinstance(event, Authenticated):
                self.auth.append(event)
                if event.paired_now:
                    peer = event.peer
                    self.store.add(peer.static_key, peer.name, peer.platform, event.peer_irk or b"")
                else:
                    self.store.seen(event.peer.static_key)
            elif isinstance(event, PairingFailed):
                self.failed.append(event)
            else:
                self.other.append(event)


def stores(tmp: Path) -> tuple[TrustStore, TrustStore]:
    return TrustStore(tmp / "hu"), TrustStore(tmp / "phone", role="phone")


async def settle(seconds: float = 5.0) -> None:
    await trio.sleep(seconds)
