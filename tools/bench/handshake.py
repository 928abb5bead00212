"""Round trips from a link's start to the first application frame (P5):
``python -m tools.bench.handshake``.

Measured on the sans-IO connection cores (``bridge/connection.py``) joined directly, so
what is counted is what the protocol makes each side wait for, not radio timing: the
packets go in *flights*, all that one side has to send, then all that the other side
has to send in answer, and so on. The phone has a navigation frame queued from the
start; the count ends with the flight that brings it to the head unit. Two flights make
a round trip. The user's confirmation of the pairing code is given at once (it is not a
round trip, but it does wait for one: the code is shown only when both sides have it);
the count of flights until both screens show the code is kept too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.connection import Connection
from bridge.wire.channels import Channel
from bridge.wire.mux import ChannelMux, MessageReceived
from pairing.handshake import CodeToConfirm, Handshake, Role
from pairing.trust import TrustStore


def _end(role: Role, store: TrustStore, peer_key: bytes | None) -> Connection:
    handshake = Handshake(
        role, store.identity, name="Pixel 9" if role is Role.PHONE else "Car",
        platform="android" if role is Role.PHONE else "head-unit",
        trusted=store.trusted_keys(), peer_key=peer_key, random=os.urandom,
        irk=store.irk if role is Role.PHONE else None,
    )  # fmt: skip
    return Connection(ChannelMux(), 182, now=0.0, handshake=handshake)


@dataclass(frozen=True)
class Flights:
    first_frame: int  # flights until the phone's first application frame is at the head unit
    codes: int | None  # flights until both sides show the pairing code (None: no code)


def flights(known: bool) -> Flights:
    """Flights until the phone's first application frame reaches the head unit."""
    with tempfile.TemporaryDirectory(prefix="bridge-rtt-") as folder:
        hu_store = TrustStore(Path(folder) / "hu")
        phone_store = TrustStore(Path(folder) / "phone", role="phone")
        if known:
            hu_store.add(phone_store.public_key, "Pixel 9", "android", phone_store.irk)
            phone_store.add(hu_store.public_key, "Car", "head-unit")
        hu = _end(Role.HEAD_UNIT, hu_store, phone_store.public_key if known else None)
        phone = _end(Role.PHONE, phone_store, None)
        phone.send_message(Channel.NAVIGATION, 2, {0: 1, 1: 300, 2: "300", 3: 0, 4: "Main St"})
        sides = [hu, phone]
        count, idle = 0, 0
        shown: set[int] = set()
        codes: int | None = None
        while idle < 2 and count < 50:
            src, dst = sides[count % 2], sides[(count + 1) % 2]
            moved = False
            while (packet := src.next_packet(0.0)) is not None:
                dst.receive_packet(packet, 0.0)
                moved = True
            count += 1
            idle = 0 if moved else idle + 1
            for conn in sides:
                while (event := conn.next_event()) is not None:
                    if isinstance(event, CodeToConfirm):
                        shown.add(id(conn))
                        if len(shown) == 2 and codes is None:
                            codes = count
                        conn.confirm_pairing(True)  # the user, at once
                    if (
                        conn is hu
                        and isinstance(event, MessageReceived)
                        and event.channel is Channel.NAVIGATION
                    ):
                        return Flights(count, codes)
        raise RuntimeError("the application frame never arrived")


def report(first: Flights, known: Flights) -> str:
    assert first.codes is not None
    return (
        "round trips from the link's start to the phone's first application frame "
        "(flights of packets, two to a round trip)\n"
        f"first pairing (Noise XX + numeric comparison): {first.first_frame} flights = "
        f"{first.first_frame / 2:g} round trips (goal 2 plus the user); both screens show "
        f"the code after {first.codes} flights = {first.codes / 2:g} round trips\n"
        f"known phone (Noise KK): {known.first_frame} flights = {known.first_frame / 2:g} "
        "round trips (goal 1)"
    )


def main() -> int:
    print(report(flights(known=False), flights(known=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
