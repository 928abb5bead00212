"""The handshake as one transition table: each transition logged with its link, every
state of the table reached by real handshakes, and nothing outside the table accepted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.wire.errors import ProtocolError
from pairing.handshake import (
    TRANSITIONS,
    CodeToConfirm,
    Handshake,
    Role,
    State,
)
from pairing.trust import TrustStore
from tests.pairing_helpers import handshake


def pump(a: Handshake, b: Handshake, late: Handshake | None = None) -> list[State]:
    """Run two handshakes against each other, each user accepting its code (``late``'s
    only once the other side has); the states they pass, in order."""
    seen = [a.state, b.state]
    waiting: set[int] = set()
    for _ in range(20):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for encrypted, _, body in src.outgoing():
                moved = True
                if encrypted:
                    dst.receive_pairing(body, 0.0)
                else:
                    dst.receive_handshake(body, 0.0)
                seen.append(dst.state)
            while (event := src.next_event()) is not None:
                if isinstance(event, CodeToConfirm):
                    waiting.add(id(src))
            if id(src) in waiting and (src is not late or src.state is State.PEER_ACCEPTED):
                waiting.discard(id(src))
                src.confirm(True)
                seen.append(src.state)
                moved = True
        if not moved:
            break
    return seen


def test_every_transition_is_logged_with_its_link(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pairing.handshake")
    hu_store, phone_store = TrustStore(tmp_path / "hu"), TrustStore(tmp_path / "p", role="phone")
    hu = handshake(Role.HEAD_UNIT, hu_store, seed=1)
    hu.link = "AA:BB:CC:DD:EE:FF"
    pump(hu, handshake(Role.PHONE, phone_store, seed=2))
    lines = [r.getMessage() for r in caplog.records if "AA:BB:CC:DD:EE:FF" in r.getMessage()]
    assert lines == [
        "handshake AA:BB:CC:DD:EE:FF (head unit): XX 2, XX 1 sent -> XX 3 sent with Na",
        "handshake AA:BB:CC:DD:EE:FF (head unit): NONCE, XX 3 sent with Na -> code shown, "
        "no answer yet",
        "handshake AA:BB:CC:DD:EE:FF (head unit): our user accepts, code shown, no answer yet "
        "-> code accepted here, waiting for the other side",
        "handshake AA:BB:CC:DD:EE:FF (head unit): CONFIRM, code accepted here, waiting for "
        "the other side -> done",
    ]


def test_real_handshakes_reach_every_state_the_table_names(tmp_path: Path) -> None:
    reached: set[State] = set()
    hu_store, phone_store = TrustStore(tmp_path / "hu"), TrustStore(tmp_path / "p", role="phone")
    hu, phone = (
        handshake(Role.HEAD_UNIT, hu_store, seed=1),
        handshake(Role.PHONE, phone_store, seed=2),
    )
    reached |= set(pump(hu, phone))  # a first pairing: XX and the comparison
    hu_key, phone_key = hu_store.public_key, phone_store.public_key
    hu_store.add(phone_key, "Pixel 9", "android")
    phone_store.add(hu_key, "Car", "head-unit")
    kk = handshake(Role.HEAD_UNIT, hu_store, seed=3, peer_key=phone_key)
    reached |= set(pump(kk, handshake(Role.PHONE, phone_store, seed=4)))  # KK
    forgot = TrustStore(tmp_path / "forgot", role="phone")  # the phone forgot us: UNKNOWN
    hu_store.add(forgot.public_key, "Pixel 8", "android")
    again = handshake(Role.HEAD_UNIT, hu_store, seed=5, peer_key=forgot.public_key)
    reached |= set(pump(again, handshake(Role.PHONE, forgot, seed=6)))
    quiet = handshake(Role.HEAD_UNIT, hu_store, seed=7, allow_pairing=False)  # no Na
    reached |= set(pump(quiet, handshake(Role.PHONE, phone_store, seed=8)))
    peer_first = handshake(Role.HEAD_UNIT, TrustStore(tmp_path / "hu2"), seed=9)
    phone2 = handshake(Role.PHONE, TrustStore(tmp_path / "p2", role="phone"), seed=10)
    reached |= set(pump(peer_first, phone2, late=peer_first))  # the phone answers first
    named = {s for (_, s, _) in TRANSITIONS} | {t for _, nxt in TRANSITIONS.values() for t in nxt}
    assert named - reached == set()


def test_nothing_outside_the_table_is_accepted(tmp_path: Path) -> None:
    hu = handshake(Role.HEAD_UNIT, TrustStore(tmp_path / "hu"), seed=1)
    with pytest.raises(ProtocolError, match="unexpected pairing message"):
        hu.receive_pairing({0: 4, 1: True}, 0.0)  # a CONFIRM before any code
    with pytest.raises(ProtocolError, match="unexpected UNKNOWN"):
        hu.receive_handshake({0: 1}, 0.0)  # UNKNOWN answers KK, not XX
