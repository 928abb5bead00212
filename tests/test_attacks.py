"""Attacks on pairing and encrypted sessions, deterministic and without I/O.

Two connection cores talk through ``exchange``; keys, ephemerals and nonces come from
seeds, so a recorded session can be replayed, flipped and reflected exactly.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.connection import Connection, ConnectionClosed
from bridge.wire import frame as frames
from bridge.wire.channels import Channel, ControlType
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from bridge.wire.frame import Body
from bridge.wire.mux import ChannelMux, MessageReceived
from bridge.wire.segment import Segmenter
from pairing.encrypted_records import EncryptedRecords
from pairing.handshake import (
    Authenticated,
    CodeToConfirm,
    Handshake,
    PairingFailed,
    PairingKind,
    Role,
    comparison_code,
)
from pairing.trust import TrustStore
from tests.helpers import Seq, split_record
from tests.pairing_helpers import handshake

SECRET = "the spare key is under the mat"


@dataclass
class End:
    conn: Connection
    events: list[object] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    def pull(self, confirm: bool = True) -> None:
        while (event := self.conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, CodeToConfirm) and confirm:
                self.conn.confirm_pairing(True)

    def messages(self) -> list[object]:
        return [e.body.get(0) for e in self.events if isinstance(e, MessageReceived)]

    def codes(self) -> list[str]:
        return [e.code for e in self.events if isinstance(e, CodeToConfirm)]


def end(role: Role, store: TrustStore, seed: int, peer_key: bytes | None = None) -> End:
    hs = handshake(role, store, seed=seed, peer_key=peer_key)
    return End(Connection(ChannelMux(), 182, now=0.0, handshake=hs))


def exchange(a: End, b: End, rounds: int = 200) -> None:
    for _ in range(rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            while (p := src.conn.next_packet(0.0)) is not None:
                src.sent.append(p)
                dst.conn.receive_packet(p, 0.0)
                moved = True
            src.pull()
            dst.pull()
        if not moved:
            return


@pytest.fixture
def stores(tmp_path: Path) -> tuple[TrustStore, TrustStore]:
    return TrustStore(tmp_path / "hu"), TrustStore(tmp_path / "phone", role="phone")


def _paired_session(stores: tuple[TrustStore, TrustStore], hu_seed: int = 1) -> tuple[End, End]:
    hu_store, phone_store = stores
    hu, phone = end(Role.HEAD_UNIT, hu_store, hu_seed), end(Role.PHONE, phone_store, 99)
    phone.conn.send_message(Channel.MESSAGING, 1, {0: SECRET})
    exchange(hu, phone)
    return hu, phone


def test_the_exchange_helper_pairs(stores: tuple[TrustStore, TrustStore]) -> None:
    hu, phone = _paired_session(stores)
    assert hu.codes() == phone.codes() and len(hu.codes()) == 1
    assert hu.messages() == [SECRET]


def test_man_in_the_middle_gets_different_codes(
    stores: tuple[TrustStore, TrustStore], tmp_path: Path
) -> None:
    hu_store, phone_store = stores
    mallory = TrustStore(tmp_path / "mallory")
    # Mallory runs two honest-looking handshakes with her own keys and relays nothing else.
    hu, m_phone = end(Role.HEAD_UNIT, hu_store, 1), end(Role.PHONE, mallory, 2)
    m_hu, phone = end(Role.HEAD_UNIT, mallory, 3), end(Role.PHONE, phone_store, 4)
    exchange(hu, m_phone)
    exchange(m_hu, phone)
    assert hu.codes() and phone.codes()
    assert hu.codes() != phone.codes()  # the users see different codes and reject


def test_the_commitment_binds_the_phone_nonce(stores: tuple[TrustStore, TrustStore]) -> None:
    """After seeing Na, an attacker posing as the phone cannot choose Nb: opening its
    commitment to any other nonce is detected, and no code is shown."""
    hu_store, phone_store = stores
    hu, phone = end(Role.HEAD_UNIT, hu_store, 1), end(Role.PHONE, phone_store, 2)
    hs = phone.conn.handshake
    assert hs is not None
    # Run until the head unit has revealed Na (the phone's commitment is with the head unit).
    for _ in range(20):
        while (p := hu.conn.next_packet(0.0)) is not None:
            phone.conn.receive_packet(p, 0.0)
        phone.pull(confirm=False)
        if phone.codes():
            break
        while (p := phone.conn.next_packet(0.0)) is not None:
            hu.conn.receive_packet(p, 0.0)
        hu.pull(confirm=False)
    assert phone.codes() and not hu.codes()  # the phone has Na and shows its code
    # Instead of the phone's real Nb, a forged one goes to the head unit.
    hu_hs = hu.conn.handshake
    assert hu_hs is not None
    with pytest.raises(ProtocolError) as info:
        hu_hs.receive_pairing({0: PairingKind.NONCE, 1: bytes(16)}, 0.0)
    assert info.value.code is ErrorCode.AUTHENTICATION
    assert hu_hs.failed and hu_hs.next_event() == PairingFailed(
        "the phone's nonce does not match its commitment", False
    )


@pytest.mark.parametrize(
    ("who", "value", "why"),
    [
        ("phone", None, "the phone's commitment missing"),
        ("phone", bytes(31), "the phone's commitment missing"),
        ("head unit", bytes(15), "the head unit's nonce missing"),
    ],
)
def test_xx_payloads_must_carry_the_commitment_and_nonce(
    stores: tuple[TrustStore, TrustStore], who: str, value: bytes | None, why: str
) -> None:
    """XX 2 without the phone's 32-byte commitment, or XX 3 with a nonce of the wrong
    size, is refused before anything is shown."""
    hu_store, phone_store = stores
    hu = handshake(Role.HEAD_UNIT, hu_store, seed=1)
    phone = handshake(Role.PHONE, phone_store, seed=2)
    sender = phone if who == "phone" else hu
    original = sender._info
    forced = value

    def tampered(
        knows_peer: bool | None = None, value: bytes | None = None, *, name: bool = True
    ) -> bytes:
        return original(knows_peer, forced, name=name)  # the payload, with C or Na replaced

    [(_, _, xx1)] = hu.outgoing()
    sender._info = tampered  # type: ignore[method-assign]
    phone.receive_handshake(xx1)
    [(_, _, xx2)] = phone.outgoing()
    with pytest.raises(ProtocolError, match=why) if who == "phone" else contextlib.nullcontext():
        hu.receive_handshake(xx2)
    if who == "head unit":
        [(_, _, xx3)] = hu.outgoing()
        with pytest.raises(ProtocolError, match=why):
            phone.receive_handshake(xx3)
    assert hu.next_event() is None and phone.next_event() is None


def test_grinding_is_useless_once_committed() -> None:
    """With the phone's nonce fixed by its commitment, the code is spread over the
    head unit's fresh nonce: no choice made before seeing Na fixes the code."""
    rng = random.Random(5)
    h, nb = rng.randbytes(32), rng.randbytes(16)
    codes = {comparison_code(h, rng.randbytes(16), nb) for _ in range(3000)}
    assert len(codes) > 2990  # essentially never the same code twice out of 10^6


def test_replayed_session_is_refused(stores: tuple[TrustStore, TrustStore]) -> None:
    first_hu, first_phone = _paired_session(stores, hu_seed=1)
    assert first_hu.messages() == [SECRET]
    recorded = list(first_phone.sent)
    # A new head unit (fresh ephemeral key) gets the phone's recorded packets again.
    victim = end(Role.HEAD_UNIT, stores[0], 7, peer_key=None)
    for p in recorded:
        victim.conn.receive_packet(p, 0.0)
        victim.pull()
    assert victim.messages() == []
    assert not any(isinstance(e, Authenticated) for e in victim.events)
    assert any(isinstance(e, ConnectionClosed) for e in victim.events)


def test_bit_flips_anywhere_never_deliver_an_altered_message(
    stores: tuple[TrustStore, TrustStore], tmp_path: Path
) -> None:
    _, phone = _paired_session(stores, hu_seed=1)
    recorded = list(phone.sent)
    rng = random.Random(8)
    for index in range(len(recorded)):
        for _ in range(3):
            bit = rng.randrange(len(recorded[index]) * 8)
            mutated = list(recorded)
            flipped = bytearray(mutated[index])
            flipped[bit // 8] ^= 1 << (bit % 8)
            mutated[index] = bytes(flipped)
            # Same seeds as the recording: until the flip, the head unit behaves as before.
            hu_store = TrustStore(tmp_path / f"flip-{index}-{bit}")
            victim = end(Role.HEAD_UNIT, hu_store, 1)
            for p in mutated:
                victim.conn.receive_packet(p, 0.0)
                victim.pull()
                while victim.conn.next_packet(0.0) is not None:
                    pass
            assert victim.messages() in ([], [SECRET]), (index, bit)


def test_reflected_records_are_rejected(stores: tuple[TrustStore, TrustStore]) -> None:
    a = EncryptedRecords(b"\x01" * 32, b"\x02" * 32)
    b = EncryptedRecords(b"\x02" * 32, b"\x01" * 32)
    record = a.seal(b"frame")
    assert a.open(record) is None  # its own record, reflected: wrong direction's key
    assert b.open(record) == b"frame"
    # And on a live session: the head unit's own packets sent back to it deliver nothing.
    hu, _ = _paired_session(stores)
    for p in hu.sent[-3:]:
        hu.conn.receive_packet(p, 0.0)
        hu.pull()
    assert hu.messages() == [SECRET]


def test_plaintext_after_the_handshake_is_a_downgrade(
    stores: tuple[TrustStore, TrustStore],
) -> None:
    hu, phone = _paired_session(stores)
    plain = frames.encode_frame(frames.Frame(Channel.MESSAGING, 1, 1, {0: "injected"}))
    seq = Seq()
    seq.n = len(phone.sent) & 0x0F
    for _ in range(3):
        for p in split_record(plain, [], seq, lane=2):
            hu.conn.receive_packet(p, 0.0)
        hu.pull()
    assert "injected" not in hu.messages()
    closed = [e for e in hu.events if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].code == ErrorCode.AUTHENTICATION


def test_application_frames_before_the_handshake_close_the_link(
    stores: tuple[TrustStore, TrustStore],
) -> None:
    hu = end(Role.HEAD_UNIT, stores[0], 1)
    plain = frames.encode_frame(frames.Frame(Channel.AUDIO, 2, 0, {0: 2}))
    for p in split_record(plain, [], Seq()):
        hu.conn.receive_packet(p, 0.0)
    hu.pull()
    assert hu.messages() == []
    closed = [e for e in hu.events if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].code == ErrorCode.AUTHENTICATION


def test_record_replay_window_and_rekey() -> None:
    a = EncryptedRecords(b"\x01" * 32, b"\x02" * 32, rekey_interval=128, max_failures=1000)
    b = EncryptedRecords(b"\x02" * 32, b"\x01" * 32, rekey_interval=128, max_failures=1000)
    sealed = [a.seal(f"r{i}".encode()) for i in range(700)]  # across 5 rekeys, 2 byte wraps
    assert [b.open(r) for r in sealed[:300]] == [f"r{i}".encode() for i in range(300)]
    assert b.open(sealed[299]) is None  # replay
    assert b.open(sealed[250]) is None  # older than the window
    assert b.open(sealed[302]) == b"r302"  # reordered ahead, within the window
    assert b.open(sealed[301]) == b"r301"  # and the one skipped, once
    assert b.open(sealed[301]) is None
    assert b.open(sealed[300]) == b"r300"
    assert [b.open(r) for r in sealed[303:]] == [f"r{i}".encode() for i in range(303, 700)]
    assert b.rejected == 3
    assert b.open(sealed[0][:5]) is None  # truncated


def test_a_sender_may_skip_forward_127_but_never_back() -> None:
    a = EncryptedRecords(b"\x01" * 32, b"\x02" * 32)
    b = EncryptedRecords(b"\x02" * 32, b"\x01" * 32, max_failures=1000)
    opened = []
    while a.next_counter < 65536 + 10:  # into the second key, 127 at a time
        a.skip_to(a.next_counter + 126)  # 127 ahead of the next b expects
        opened.append(b.open(a.seal(b"x")))
    assert set(opened) == {b"x"} and b.rejected == 0
    a.skip_to(a.next_counter + 128)  # 129 ahead: taken for an old counter
    assert b.open(a.seal(b"y")) is None and b.rejected == 1
    with pytest.raises(LocalProtocolError):
        a.skip_to(a.next_counter - 1)  # a nonce used twice


def test_repeated_failures_close(stores: tuple[TrustStore, TrustStore]) -> None:
    r = EncryptedRecords(b"\x01" * 32, b"\x02" * 32)
    assert r.open(b"\x00" + bytes(20)) is None
    assert r.open(b"\x01" + bytes(20)) is None
    with pytest.raises(ProtocolError) as info:
        r.open(b"\x02" + bytes(20))
    assert info.value.code is ErrorCode.AUTHENTICATION


def test_handshake_decoders_only_raise_protocol_errors(
    stores: tuple[TrustStore, TrustStore],
) -> None:
    rng = random.Random(3)
    for _ in range(300):
        hs = handshake(Role.PHONE, stores[1], seed=rng.randrange(1000))
        body: Body = {
            0: rng.choice([0, 1, 2, "x"]),
            1: rng.choice([0, 1, 5]),
            2: rng.randbytes(rng.randrange(120)),
        }
        with contextlib.suppress(ProtocolError):
            hs.receive_handshake(body)
        hu_hs: Handshake = handshake(Role.HEAD_UNIT, stores[0], seed=1)
        with contextlib.suppress(ProtocolError):
            hu_hs.receive_pairing({0: rng.randrange(6), 1: rng.randbytes(rng.randrange(40))}, 0.0)


def test_an_encrypted_pause_is_one_27_byte_packet(stores: tuple[TrustStore, TrustStore]) -> None:
    hu, phone = _paired_session(stores)
    hu.conn.handle_timer(1.0)  # the delayed ACK of the phone's message goes now
    exchange(hu, phone)
    before = len(hu.sent)
    hu.conn.send_message(Channel.AUDIO, 2, {0: 2})  # pause, with no acknowledgement riding
    exchange(hu, phone)
    pause_packets = [p for p in hu.sent[before:] if p[0] >> 4 == 0x5]  # FIRST on lane 1
    assert [len(p) for p in pause_packets] == [27]


def test_another_key_answering_for_a_paired_phone_is_refused(
    stores: tuple[TrustStore, TrustStore], tmp_path: Path
) -> None:
    """KK for phone X falls back to XX (the answer was UNKNOWN); a device with another
    static key answers: it is refused before any code, and X's queued messages stay
    queued for X."""
    hu_store, _ = stores
    x_key = TrustStore(tmp_path / "x", role="phone").public_key
    hu_store.add(x_key, "Pixel 9", "android", os.urandom(16))
    impostor = TrustStore(tmp_path / "impostor", role="phone")
    hu = end(Role.HEAD_UNIT, hu_store, 1, peer_key=x_key)
    hu.conn.mux.send(Channel.MESSAGING, 1, {0: "the door code is 4711"})
    other = end(Role.PHONE, impostor, 2)
    exchange(hu, other)
    assert hu.codes() == [] and other.codes() == []
    failed = [e for e in hu.events if isinstance(e, PairingFailed)]
    assert failed and "another device" in failed[0].reason
    assert other.messages() == [] and not any(isinstance(e, Authenticated) for e in hu.events)
    assert hu.conn.mux.has_sendable()  # still queued, for X
    assert [d.name for d in hu_store.devices()] == ["Pixel 9"]


def test_a_probe_learns_nothing_from_a_phone_outside_its_pairing_mode(
    stores: tuple[TrustStore, TrustStore], tmp_path: Path
) -> None:
    """A stranger connects to a phone and sends XX 1: outside the phone's own pairing
    mode the phone answers with a CLOSE, never with XX 2 (its static key and name)."""
    _, phone_store = stores
    prober = end(Role.HEAD_UNIT, TrustStore(tmp_path / "prober"), 5)
    hs = handshake(Role.PHONE, phone_store, seed=6, allow_pairing=False)
    phone = End(Connection(ChannelMux(), 182, now=0.0, handshake=hs))
    exchange(prober, phone)
    receiver = Segmenter(182, window=255)
    sent_types = []
    for packet in phone.sent:
        receiver.receive_segment(packet)
        while (record := receiver.next_record()) is not None:
            sent_types.append(frames.decode_frame(record).type)
    assert sent_types == [ControlType.CLOSE]
    closed = [e for e in prober.events if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].by_peer and "not in pairing mode" in closed[0].text
    assert not any(isinstance(e, CodeToConfirm | Authenticated) for e in prober.events)


def test_the_phone_says_its_name_only_after_the_comparison(
    stores: tuple[TrustStore, TrustStore],
) -> None:
    """XX 2 carries the phone's platform and commitment, not its name: the head unit
    learns the name from the phone's CONFIRM, after both users accepted the code."""
    hu, _ = _paired_session(stores)
    (prompt,) = [e for e in hu.events if isinstance(e, CodeToConfirm)]
    (auth,) = [e for e in hu.events if isinstance(e, Authenticated)]
    assert prompt.peer.name == "" and prompt.peer.display_name == "a new android device"
    assert auth.peer.name == "Pixel 9" and auth.peer.static_key == prompt.peer.static_key


def test_a_silent_peer_is_not_dropped_while_the_users_compare_codes(
    stores: tuple[TrustStore, TrustStore],
) -> None:
    """PROTOCOL.md 8.2 gives the users 60 s: the 15 s idle timeout does not cut it short,
    and the 60 s do end it."""
    hu_store, phone_store = stores
    hu, phone = end(Role.HEAD_UNIT, hu_store, 1), end(Role.PHONE, phone_store, 2)
    for _ in range(10):  # to the codes, nobody answering
        for src, dst in ((hu, phone), (phone, hu)):
            while (p := src.conn.next_packet(0.0)) is not None:
                dst.conn.receive_packet(p, 0.0)
            src.pull(confirm=False)
    assert hu.codes() and phone.codes()
    for now in (5.0, 10.0, 20.0, 40.0, 59.0):  # the phone says nothing at all
        hu.conn.handle_timer(now)
        assert hu.conn.open, now
    hu.conn.handle_timer(60.0)
    hu.pull(confirm=False)
    assert not hu.conn.open
    assert [e.reason for e in hu.events if isinstance(e, PairingFailed)] == [
        "pairing not confirmed in time"
    ]
