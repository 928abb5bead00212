"""Make the transcript vectors: two connection cores with fixed keys, ephemerals and
nonces, joined directly, every packet recorded (``python -m tests.vector_transcripts``
writes ``tests/vectors/handshakes.json`` and ``messages.json``; ``tests/test_vectors.py``
checks that the code still produces them byte for byte)."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bridge.connection import Connection, HelloReceived
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.codec import Message, encode
from bridge.wire.mux import ChannelMux, MessageReceived
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, Role
from pairing.noise import public_bytes

VECTORS = Path(__file__).parent / "vectors"
PAYLOAD = 182  # segment size at ATT MTU 185 (an iPhone)
HU_STATIC = bytes(range(1, 33))
PHONE_STATIC = bytes(range(101, 133))
PHONE_IRK = bytes(range(200, 216))
HU_IRK = bytes(range(100, 116))


def _side(
    role: Role, static: bytes, trusted: set[bytes], seed: int, peer: bytes | None
) -> Connection:
    rng = random.Random(seed)
    handshake = Handshake(
        role, X25519PrivateKey.from_private_bytes(static),
        name="Pixel 9" if role is Role.PHONE else "Car",
        platform="android" if role is Role.PHONE else "head-unit",
        trusted=trusted, peer_key=peer, random=rng.randbytes,
        ephemeral=lambda: X25519PrivateKey.from_private_bytes(rng.randbytes(32)),
        irk=PHONE_IRK if role is Role.PHONE else HU_IRK,
    )  # fmt: skip
    epoch = bytes([seed]) * 8
    hello = (
        m.Hello([0, 1], "android", "Pixel 9", "Pixel 9 Pro", clock_ms=1_000)
        if role is Role.PHONE
        else m.Hello([0, 1], "head-unit", "Car")
    )
    return Connection(ChannelMux(epoch=epoch), PAYLOAD, now=0.0, handshake=handshake, hello=hello)


def transcript(kind: str) -> dict[str, Any]:
    """``kind``: "XX" (a first pairing, both users accept) or "KK" (a known phone)."""
    hu_key = public_bytes(X25519PrivateKey.from_private_bytes(HU_STATIC))
    phone_key = public_bytes(X25519PrivateKey.from_private_bytes(PHONE_STATIC))
    known = kind == "KK"
    hu = _side(Role.HEAD_UNIT, HU_STATIC, {phone_key} if known else set(), 1,
               phone_key if known else None)  # fmt: skip
    phone = _side(Role.PHONE, PHONE_STATIC, {hu_key} if known else set(), 2, None)
    packets: list[dict[str, str]] = []
    seen: dict[str, list[str]] = {"head unit": [], "phone": []}
    done = False
    for _ in range(50):
        moved = False
        for name, src, dst, other in (
            ("head unit", hu, phone, "phone"), ("phone", phone, hu, "head unit"),
        ):  # fmt: skip
            while (packet := src.next_packet(0.0)) is not None:
                packets.append({"from": name, "hex": packet.hex()})
                dst.receive_packet(packet, 0.0)
                moved = True
            while (event := dst.next_event()) is not None:
                if isinstance(event, CodeToConfirm):
                    seen[other].append(f"code {event.code}")
                    dst.confirm_pairing(True)
                elif isinstance(event, Authenticated):
                    seen[other].append("authenticated")
                elif isinstance(event, HelloReceived):
                    seen[other].append(f"hello from {event.hello.name}")
                    done = done or other == "head unit"
        if done or not moved:
            break
    return {
        "name": f"Noise {kind}: {'a first pairing' if kind == 'XX' else 'a known phone'}, "
        "to the head unit's first application frame (the phone's HELLO)",
        "payload_size": PAYLOAD,
        "head_unit": {"static_private": HU_STATIC.hex(), "seed": 1, "irk": HU_IRK.hex(),
                      "epoch": (bytes([1]) * 8).hex()},
        "phone": {"static_private": PHONE_STATIC.hex(), "seed": 2, "irk": PHONE_IRK.hex(),
                  "epoch": (bytes([2]) * 8).hex()},
        "randomness": "random.Random(seed): each ephemeral private key is randbytes(32), "
        "each nonce randbytes(16), in the order the handshake asks",
        "packets": packets,
        "events": seen,
    }  # fmt: skip


def flow() -> dict[str, Any]:
    """Credits and acknowledgements, in the clear (no handshake): the phone sends 60
    navigation frames of about 150 bytes at once; the head unit's application takes
    each as it comes. Shows FIRST and CONT segments, the head unit's standalone ACKs
    (at once when 8 frames are owed, and after 50 ms), and its credit grants riding on
    them (the G byte of a FIRST), at payload size 182."""
    hu = Connection(ChannelMux(epoch=bytes(8)), PAYLOAD, now=0.0)
    phone = Connection(ChannelMux(epoch=bytes(8)), PAYLOAD, now=0.0)
    for i in range(60):
        phone.mux.send(Channel.NAVIGATION, 9, {0: i, 1: "x" * 140})
    packets: list[dict[str, Any]] = []
    delivered: list[int] = []
    now = 0.0
    for _ in range(400):
        moved = False
        for name, src, dst in (("phone", phone, hu), ("head unit", hu, phone)):
            while (packet := src.next_packet(now)) is not None:
                packets.append({"from": name, "hex": packet.hex(), "time": round(now, 3)})
                dst.receive_packet(packet, now)
                moved = True
            while (event := dst.next_event()) is not None:
                if isinstance(event, MessageReceived):
                    delivered.append(int(event.body[0]))
        if not moved:
            timers = [t for t in (hu.get_timer(), phone.get_timer()) if t is not None]
            if len(delivered) == 60 and not phone.mux.has_sendable() and now > 0.1:
                break
            now = min(timers) if timers else now + 0.05
            hu.handle_timer(now)
            phone.handle_timer(now)
    return {
        "name": "credits and acknowledgements: 60 navigation frames at payload size 182",
        "payload_size": PAYLOAD, "packets": packets, "delivered": delivered,
    }  # fmt: skip


def _json(value: Any) -> Any:
    if isinstance(value, Enum):
        return int(value.value)
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


#: One of every message type, with values a real phone or head unit would send.
MESSAGES: list[Message] = [
    m.Hello([0], "android", "Pixel 9", "Pixel 9 Pro", max_text=512, clock_ms=1_000),
    m.ErrorReport(int(Channel.NAVIGATION), 3, 8, "maneuver: field 0 is missing"),
    m.Shortcuts([
        m.Shortcut("nav-home", "Navigate home", m.ShortcutKind.NAVIGATION, icon=3),
        m.Shortcut("call-mum", "Call Mum", m.ShortcutKind.COMMUNICATION),
    ]),
    m.Launch("nav-home"),
    m.LaunchResult(2, False, "unlock the phone first", m.LaunchOutcome.LOCKED),
    m.RouteStatus(m.RouteState.ACTIVE, "Elm Rd 42", 1_795_510_420_000, 3030, 420),
    m.Maneuver(
        m.ManeuverType.TURN_RIGHT, 300, "300", m.DistanceUnit.METERS, "Main St",
        lanes=[m.Lane([m.LaneDirection.STRAIGHT, m.LaneDirection.RIGHT], True)],
    ),
    m.GuidanceRequest(m.GuidanceAction.START, "Home"),
    m.NavigationResult(4, True),
    m.NowPlaying(
        "Midnight City", "M83", "Hurry Up, We're Dreaming", 243_000, 61_000, 1_000,
        m.PlaybackState.PLAYING, source_app="Spotify", art=7,
    ),
    m.MediaCommandRequest(m.MediaCommand.PAUSE),
    m.MediaCommandResult(9, False, "nothing is playing"),
    m.Notification(
        "n1", "WhatsApp", m.Category.MESSAGE, "Running late", 1_795_510_000_000, "Anna",
        actions=[m.Action("a1", "Mark as read", m.ActionKind.MARK_READ)],
        canned_replies=["On my way"], uid="m-1",
    ),
    m.NotificationRemoved("n1", uid="m-2"),
    m.MarkRead("n1", uid="hu-1"),
    m.PerformAction("n1", "a1", uid="hu-2"),
    m.Reply("n1", canned=0, uid="hu-3"),
    m.Dismiss("n1", uid="hu-4"),
    m.MessagingResult(5, True, uid="m-3"),
    m.BulkChunk(7, 0, 6, b"\x89PNG\r\n", "image/png"),
]  # fmt: skip


def messages() -> list[dict[str, Any]]:
    return [
        {
            "name": type(message).__name__, "channel": int(message.channel),
            "type": int(message.type), "fields": _json(message),
            "body_hex": __import__("bridge.wire.cbor", fromlist=["dumps"]).dumps(
                encode(message)
            ).hex(),
        }
        for message in MESSAGES
    ]  # fmt: skip


def main() -> int:
    handshakes = {
        "comment": "Regression vectors generated by this project (not published ones); "
        "see README.md.",
        "handshakes": [transcript("XX"), transcript("KK")],
        "flow": flow(),
    }
    (VECTORS / "handshakes.json").write_text(json.dumps(handshakes, indent=1) + "\n")
    every = {
        "comment": "Regression vectors generated by this project (not published ones); "
        "see README.md.",
        "messages": messages(),
    }
    (VECTORS / "messages.json").write_text(json.dumps(every, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
