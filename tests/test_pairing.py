"""Pairing and reconnection end to end on the simulated link."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from bridge.connection import ConnectionClosed
from bridge.session import PeerSession
from bridge.wire.channels import Channel
from bridge.wire.mux import MessageReceived
from pairing.handshake import Role
from pairing.keylog import KeyLog, read_keylog
from pairing.trust import TrustStore
from tests.pairing_helpers import Side, handshake, stores
from transports.simulated import PROFILES, SimulatedLinkPair

SECRET = "meet me at the old bridge"


async def _session(
    hu: Side,
    phone: Side,
    *,
    seed: int,
    peer_key: bytes | None = None,
    hu_allow: bool = True,
    duration: float = 5.0,
    confirm_timeout: float = 60.0,
) -> SimulatedLinkPair:
    pair = SimulatedLinkPair(PROFILES["ios"], seed=seed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run)
        nursery.start_soon(phone.run)
        hu_hs = handshake(
            Role.HEAD_UNIT,
            hu.store,
            seed=seed,
            peer_key=peer_key,
            allow_pairing=hu_allow,
            confirm_timeout=confirm_timeout,
        )
        phone_hs = handshake(
            Role.PHONE, phone.store, seed=seed + 1000, confirm_timeout=confirm_timeout
        )
        nursery.start_soon(lambda: hu.session.run_link(pair.central, handshake=hu_hs))
        nursery.start_soon(lambda: phone.session.run_link(pair.peripheral, handshake=phone_hs))
        phone.session.send_nowait(Channel.MESSAGING, 1, {0: SECRET})
        await trio.sleep(duration)
        nursery.cancel_scope.cancel()
    return pair


def _sides(tmp_path: Path) -> tuple[Side, Side]:
    hu_store, phone_store = stores(tmp_path)
    return Side(PeerSession("hu"), hu_store), Side(PeerSession("phone"), phone_store)


def _delivered(side: Side) -> list[object]:
    return [e.body.get(0) for e in side.other if isinstance(e, MessageReceived)]


async def test_first_pairing_then_silent_reconnect(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    await _session(hu, phone, seed=1)
    assert len(hu.codes) == len(phone.codes) == 1
    assert hu.codes[0].code == phone.codes[0].code
    assert len(hu.codes[0].code) == 7 and hu.codes[0].code[3] == " "
    assert hu.auth[0].paired_now and phone.auth[0].paired_now
    assert hu.auth[0].peer.name == "Pixel 9" and phone.auth[0].peer.platform == "head-unit"
    assert _delivered(hu) == [SECRET]
    assert [d.name for d in hu.store.devices()] == ["Pixel 9"]
    assert [d.name for d in phone.store.devices()] == ["Car"]

    # Reconnect, the head unit knowing which phone it is: Noise KK, no code, no prompt.
    hu2 = Side(PeerSession("hu"), TrustStore(tmp_path / "hu"))
    phone2 = Side(PeerSession("phone"), TrustStore(tmp_path / "phone", role="phone"))
    await _session(hu2, phone2, seed=2, peer_key=phone.store.public_key)
    assert hu2.codes == [] and phone2.codes == []
    assert not hu2.auth[0].paired_now and not phone2.auth[0].paired_now
    assert _delivered(hu2) == [SECRET]

    # Reconnect without knowing which phone: XX, and both trust each other: no prompt.
    hu3 = Side(PeerSession("hu"), TrustStore(tmp_path / "hu"))
    phone3 = Side(PeerSession("phone"), TrustStore(tmp_path / "phone", role="phone"))
    await _session(hu3, phone3, seed=3)
    assert hu3.codes == [] and not hu3.auth[0].paired_now
    assert _delivered(hu3) == [SECRET]


async def test_nothing_readable_on_the_air(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    captured: list[bytes] = []
    pair = SimulatedLinkPair(PROFILES["android"], seed=4)
    original = pair.peripheral.send

    async def tap(packet: bytes) -> None:
        captured.append(packet)
        await original(packet)

    pair.peripheral.send = tap  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hu.run)
        nursery.start_soon(phone.run)
        nursery.start_soon(
            lambda: hu.session.run_link(
                pair.central, handshake=handshake(Role.HEAD_UNIT, hu.store, seed=4)
            )
        )
        nursery.start_soon(
            lambda: phone.session.run_link(
                pair.peripheral, handshake=handshake(Role.PHONE, phone.store, seed=5)
            )
        )
        phone.session.send_nowait(Channel.MESSAGING, 1, {0: SECRET})
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert _delivered(hu) == [SECRET]
    air = b"".join(captured)
    assert SECRET.encode() not in air and b"Pixel 9" not in air  # names travel encrypted too


async def test_rejection_and_timeout_store_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    phone.answer = lambda code: False
    await _session(hu, phone, seed=6)
    assert hu.failed and hu.failed[0].by_peer and phone.failed and not phone.failed[0].by_peer
    assert hu.store.devices() == [] and phone.store.devices() == []
    assert _delivered(hu) == []

    hu, phone = _sides(tmp_path / "t")
    hu.answer = lambda code: None  # the driver never answers
    await _session(hu, phone, seed=7, duration=20.0, confirm_timeout=10.0)
    assert hu.failed and "in time" in hu.failed[0].reason
    assert hu.store.devices() == [] and phone.store.devices() == []


async def test_a_forgotten_device_needs_consent_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    await _session(hu, phone, seed=8)
    hu.store.forget("Pixel 9")
    # The head unit forgot the phone; the phone still knows the head unit.
    hu2 = Side(PeerSession("hu"), TrustStore(tmp_path / "hu"))
    phone2 = Side(PeerSession("phone"), TrustStore(tmp_path / "phone", role="phone"))
    await _session(hu2, phone2, seed=9)
    assert phone2.codes and phone2.codes[0].re_pairing  # the phone's user is asked
    assert hu2.codes and hu2.auth[0].paired_now

    # Now the phone forgets the head unit, which tries KK: UNKNOWN, then XX with consent.
    phone2.store.forget("Car")
    hu3 = Side(PeerSession("hu"), TrustStore(tmp_path / "hu"))
    phone3 = Side(PeerSession("phone"), TrustStore(tmp_path / "phone", role="phone"))
    await _session(hu3, phone3, seed=10, peer_key=phone.store.public_key)
    assert hu3.codes and hu3.codes[0].re_pairing
    assert phone3.codes and hu3.auth[0].paired_now and _delivered(hu3) == [SECRET]


async def test_pairing_refused_outside_pairing_mode(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hu, phone = _sides(tmp_path)
    await _session(hu, phone, seed=11, hu_allow=False)
    assert hu.codes == [] and phone.codes == []
    assert hu.failed and "pairing mode" in hu.failed[0].reason
    assert any(isinstance(e, ConnectionClosed) for e in phone.other)
    assert _delivered(hu) == []


async def test_a_phone_that_forgot_us_is_not_shown_a_code_outside_pairing_mode(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The head unit knows the phone, the phone no longer knows it, and the head unit is
    not pairing: XX 3 carries no nonce, so the phone cannot start a comparison; it ends
    the attempt and nobody is shown a code."""
    hu, phone = _sides(tmp_path)
    await _session(hu, phone, seed=13)
    phone.store.forget("Car")
    hu2 = Side(PeerSession("hu"), TrustStore(tmp_path / "hu"))
    phone2 = Side(PeerSession("phone"), TrustStore(tmp_path / "phone", role="phone"))
    await _session(hu2, phone2, seed=14, hu_allow=False)
    assert hu2.codes == [] and phone2.codes == []
    assert phone2.failed and "not in pairing mode" in phone2.failed[0].reason
    assert hu2.auth == [] and phone2.auth == []


async def test_key_log(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    hu_store, phone_store = stores(tmp_path)
    log_path = tmp_path / "keys.log"
    hu = Side(PeerSession("hu", keylog=KeyLog(log_path)), hu_store)
    phone = Side(PeerSession("phone"), phone_store)
    await _session(hu, phone, seed=12)
    keys = read_keylog(log_path)
    assert list(keys) == [hu.auth[0].handshake_hash]
    to_phone, to_hu = keys[hu.auth[0].handshake_hash]
    assert (to_phone, to_hu) == (hu.auth[0].send_key, hu.auth[0].receive_key)
    assert log_path.stat().st_mode & 0o777 == 0o600
