"""The Noise layer against the published cacophony vectors, and its failure modes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from pairing.noise import SUFFIX, CipherState, HandshakeState

VECTORS = [
    v
    for v in json.loads((Path(__file__).parent / "vectors/noise/cacophony-25519.json").read_text())
    if v["protocol_name"].endswith(SUFFIX)
]


def _key(hex_key: str | None) -> X25519PrivateKey | None:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key)) if hex_key else None


def _side(v: dict[str, Any], prefix: str, initiator: bool) -> HandshakeState:
    ephemeral = _key(v.get(f"{prefix}_ephemeral"))
    remote = v.get(f"{prefix}_remote_static")

    def fixed() -> X25519PrivateKey:
        assert ephemeral is not None
        return ephemeral

    return HandshakeState(
        v["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(v[f"{prefix}_prologue"]),
        static=_key(v.get(f"{prefix}_static")),
        remote_static=bytes.fromhex(remote) if remote else None,
        psks=[bytes.fromhex(p) for p in v.get(f"{prefix}_psks", [])],
        ephemeral=fixed,
    )


def test_every_chachapoly_sha256_pattern_is_covered() -> None:
    assert len(VECTORS) == 36


@pytest.mark.parametrize("v", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_cacophony_vector(v: dict[str, Any]) -> None:
    init, resp = _side(v, "init", True), _side(v, "resp", False)
    sender, receiver = init, resp
    transport: tuple[CipherState, CipherState, CipherState, CipherState] | None = None
    for i, message in enumerate(v["messages"]):
        payload, ciphertext = (
            bytes.fromhex(message["payload"]),
            bytes.fromhex(message["ciphertext"]),
        )
        if transport is None:
            assert sender.write_message(payload) == ciphertext, f"message {i}"
            assert receiver.read_message(ciphertext) == payload
            if init.complete and resp.complete:
                assert init.result is not None and resp.result is not None
                assert init.result.handshake_hash.hex() == v["handshake_hash"]
                assert resp.result.handshake_hash == init.result.handshake_hash
                transport = (
                    init.result.send,
                    resp.result.receive,
                    resp.result.send,
                    init.result.receive,
                )
                if init.one_way:  # one-way patterns: every later message is the initiator's
                    sender = receiver = init
                    continue
            sender, receiver = receiver, sender
        else:
            i_send, r_recv, r_send, i_recv = transport
            if init.one_way or sender is init:
                out, into = i_send, r_recv
            else:
                out, into = r_send, i_recv
            assert out.encrypt_with_ad(b"", payload) == ciphertext, f"message {i}"
            assert into.decrypt_with_ad(b"", ciphertext) == payload
            if not init.one_way:
                sender, receiver = receiver, sender
    assert transport is not None


def _xx_pair() -> tuple[HandshakeState, HandshakeState]:
    a = HandshakeState(
        "Noise_XX" + SUFFIX, initiator=True, static=X25519PrivateKey.generate(), prologue=b"p"
    )
    b = HandshakeState(
        "Noise_XX" + SUFFIX, initiator=False, static=X25519PrivateKey.generate(), prologue=b"p"
    )
    return a, b


def test_any_flipped_bit_fails_authentication() -> None:
    for byte in range(0, 96, 7):
        a, b = _xx_pair()
        b.read_message(a.write_message(b"hello"))
        m2 = bytearray(b.write_message(b"there"))
        m2[byte % len(m2)] ^= 0x01
        with pytest.raises(ProtocolError) as info:
            a.read_message(bytes(m2))
        assert info.value.code is ErrorCode.AUTHENTICATION


def test_prologue_mismatch_fails() -> None:
    a = HandshakeState("Noise_NN" + SUFFIX, initiator=True, prologue=b"v0 head unit")
    b = HandshakeState("Noise_NN" + SUFFIX, initiator=False, prologue=b"v0 phone")
    b.read_message(a.write_message())
    with pytest.raises(ProtocolError):
        a.read_message(b.write_message())


def test_truncated_messages_are_protocol_errors() -> None:
    a, b = _xx_pair()
    b.read_message(a.write_message())
    m2 = b.write_message()
    for cut in range(len(m2)):
        a2, b2 = _xx_pair()
        b2.read_message(a2.write_message())
        b2.write_message()
        with pytest.raises(ProtocolError):
            a2.read_message(m2[:cut])


def test_turns_and_nonces_are_enforced() -> None:
    a, b = _xx_pair()
    with pytest.raises(LocalProtocolError):
        b.write_message()
    with pytest.raises(LocalProtocolError):
        a.read_message(b"")
    c = CipherState(bytes(32), nonce=2**64 - 1)
    with pytest.raises(LocalProtocolError):
        c.encrypt_with_ad(b"", b"x")
    assert "00" * 4 not in repr(CipherState(bytes(32)))  # keys never in reprs


def test_rekey_changes_the_key_deterministically() -> None:
    a, b = CipherState(bytes(range(32))), CipherState(bytes(range(32)))
    a.rekey()
    b.rekey()
    assert a.export_key() == b.export_key() != bytes(range(32))
    assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"after rekey")) == b"after rekey"
