"""Recognising paired phones from rotating advertising tokens, and nothing else."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing

from bridge.wire.errors import ProtocolError
from pairing.handshake import CodeToConfirm, Handshake, Role
from pairing.privacy import TOKEN_LENGTH, make_token, parse_token, resolve
from pairing.trust import TrustStore
from tests.pairing_helpers import handshake
from tests.test_pairing import _session, _sides


def test_a_head_unit_recognises_its_phones_among_strangers() -> None:
    rng = random.Random(1)
    ours = {f"phone-{i}": rng.randbytes(16) for i in range(3)}
    strangers = [rng.randbytes(16) for _ in range(20)]  # same app, other cars' phones
    irks = list(ours.items())
    # Everyone advertises at once, several times (a fresh token at each start).
    air: list[tuple[str | None, str]] = [
        (name, make_token(irk, rng.randbytes)) for name, irk in ours.items() for _ in range(50)
    ]
    air += [(None, make_token(irk, rng.randbytes)) for irk in strangers for _ in range(50)]
    rng.shuffle(air)
    for who, token in air:
        assert len(token) == TOKEN_LENGTH and token.isascii()
        assert resolve(token, irks) == who  # ours by name; strangers: None


def test_tokens_of_one_phone_do_not_link() -> None:
    rng = random.Random(2)
    irk = rng.randbytes(16)
    tokens = [make_token(irk, rng.randbytes) for _ in range(2000)]
    assert len(set(tokens)) > 1990  # fresh every time (24-bit nonces)
    # Without the IRK a token resolves to nothing, and a listener who holds some other
    # key cannot tell two of this phone's tokens from two strangers' ones.
    assert all(resolve(t, [("other", rng.randbytes(16))]) is None for t in tokens)
    halves = {t[:4] for t in tokens} | {t[4:] for t in tokens}
    assert len(halves) > 3900  # no part of the token stays the same


@pytest.mark.parametrize(
    "name", ["", "Pixel 9", "abcdefg", "abcdefghi", "ab+d/fgh", "abc!efgh", "é" * 8]
)
def test_names_that_are_not_tokens(name: str) -> None:
    assert parse_token(name) is None
    assert resolve(name, [("x", bytes(16))]) is None


async def test_pairing_gives_the_head_unit_the_phones_irk(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    await _session(hu, phone, seed=21)
    (device,) = hu.store.devices()
    assert bytes.fromhex(device.irk) == phone.store.irk
    token = make_token(phone.store.irk, os.urandom)
    assert resolve(token, hu.store.irks()) == device
    # and the key it resolves to is the one KK needs
    assert device.key_bytes == phone.store.public_key


def test_a_confirmation_without_irk_is_refused(tmp_path: Path) -> None:
    hu = handshake(Role.HEAD_UNIT, TrustStore(tmp_path / "hu"), seed=1)
    phone_store = TrustStore(tmp_path / "phone", role="phone")
    phone = Handshake(  # a phone that keeps its IRK to itself
        Role.PHONE, phone_store.identity, name="Pixel", platform="android", trusted=set(),
        random=random.Random(2).randbytes,
    )  # fmt: skip
    sides = [(hu, phone), (phone, hu)]
    with pytest.raises(ProtocolError, match="IRK"):
        for _ in range(10):
            for sender, receiver in sides:
                for _encrypted, frame_type, body in sender.outgoing():
                    if frame_type == Handshake.HANDSHAKE_TYPE:
                        receiver.receive_handshake(body)
                    else:
                        receiver.receive_pairing(body, 0.0)
                while (event := receiver.next_event()) is not None:
                    if isinstance(event, CodeToConfirm):
                        receiver.confirm(True)
    assert not hu.done


def test_an_old_trust_store_without_irks_still_loads(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    store.add(b"\x01" * 32, "Old phone", "android")  # paired before IRKs existed
    again = TrustStore(tmp_path)
    assert again.irks() == [] and len(again.irk) == 16 and again.irk == store.irk
