"""Recognising paired phones from their advertisements, without letting anyone track them.

Strategy (the app-level twin of BLE's resolvable private addresses). Each phone has a
random 16-byte identity resolving key (IRK) in its trust store. It gives the IRK to a
head unit only inside the encrypted channel, with its confirmation of a first pairing.
When it advertises, the phone puts a token in the 8-byte local name (iOS lets an app
advertise only a local name and service UUIDs)::

    token = base64url( r (3 random bytes) || HMAC-SHA256(IRK, "bridge v0 token" || r)[0:3] )

and draws a fresh ``r`` every time it (re)starts advertising, which on Android also
gives it a fresh random address. A head unit resolves a token by computing the HMAC
with the IRK of each phone it paired with (a few HMACs): a match names the phone, so it
can connect and use Noise KK at once; no match means a stranger's phone, to which it
connects only in pairing mode. A listener without the IRK sees 6 random-looking bytes
that change with every advertising start: nothing links two tokens of one phone.
A stranger's phone matches one of our IRKs by chance with probability 2^-24 per paired
phone; that costs one failed KK attempt, never a wrong pairing.

The head unit recognises itself to its phones the same way (protocol v1): it advertises a
token made with its own IRK, which it gives a phone with its confirmation of a first
pairing. And when a phone connects to the head unit (the head unit is then the GATT
server), the phone proves which paired phone it is with an **identify tag** over a
16-byte challenge the head unit draws for that connection::

    tag = HMAC-SHA256(IRK, "bridge v1 identify" || challenge)[0:16]

A tag heard on one link is worth nothing on another (another challenge), and without
the IRK it says nothing about who sent it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import TypeVar

from bridge.wire.gatt import CHALLENGE_SIZE, IDENTIFY_TAG_SIZE

IRK_SIZE = 16
NONCE_SIZE = 3
TAG_SIZE = 3
TOKEN_LENGTH = 8  # characters: base64url of 6 bytes, fits the advertised name
LABEL = b"bridge v0 token"
#: Protocol v1, the head unit as GATT server: a central proves which phone it is with a tag
#: over the link's challenge (docs/PROTOCOL.md 1.2).
IDENTIFY_LABEL = b"bridge v1 identify"

K = TypeVar("K")


def _tag(irk: bytes, nonce: bytes) -> bytes:
    return hmac.new(irk, LABEL + nonce, hashlib.sha256).digest()[:TAG_SIZE]


def make_token(irk: bytes, random: Callable[[int], bytes]) -> str:
    """A fresh advertising token for a phone with this IRK."""
    if len(irk) != IRK_SIZE:
        raise ValueError("an IRK is 16 bytes")
    nonce = random(NONCE_SIZE)
    return base64.urlsafe_b64encode(nonce + _tag(irk, nonce)).decode()


def make_raw_token(irk: bytes, random: Callable[[int], bytes]) -> bytes:
    """A fresh token as its 6 bytes (the head unit advertises it so: PROTOCOL.md 2.2)."""
    parsed = parse_token(make_token(irk, random))
    assert parsed is not None
    return parsed[0] + parsed[1]


def resolve_raw(raw: bytes, irks: Iterable[tuple[K, bytes]]) -> K | None:
    """Which of our peers advertised the 6-byte token ``raw``, if any."""
    if len(raw) != NONCE_SIZE + TAG_SIZE:
        return None
    return resolve(base64.urlsafe_b64encode(raw).decode(), irks)


def parse_token(name: str) -> tuple[bytes, bytes] | None:
    """(nonce, tag) of an advertised name, or None if it is not a token."""
    if len(name) != TOKEN_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(name.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != NONCE_SIZE + TAG_SIZE or base64.urlsafe_b64encode(raw).decode() != name:
        return None
    return raw[:NONCE_SIZE], raw[NONCE_SIZE:]


def resolve(name: str, irks: Iterable[tuple[K, bytes]]) -> K | None:
    """Which of our paired phones advertised ``name``, if any (constant-time compares)."""
    parsed = parse_token(name)
    if parsed is None:
        return None
    nonce, tag = parsed
    found: K | None = None
    for who, irk in irks:
        if hmac.compare_digest(_tag(irk, nonce), tag) and found is None:
            found = who
    return found


def identify_tag(irk: bytes, challenge: bytes) -> bytes:
    """The tag a phone writes to prove, on the link whose challenge this is, which phone
    it is (to a head unit that has its IRK)."""
    if len(irk) != IRK_SIZE or len(challenge) != CHALLENGE_SIZE:
        raise ValueError("an IRK and a challenge are 16 bytes each")
    return hmac.new(irk, IDENTIFY_LABEL + challenge, hashlib.sha256).digest()[:IDENTIFY_TAG_SIZE]


def resolve_identify(tag: bytes, challenge: bytes, irks: Iterable[tuple[K, bytes]]) -> K | None:
    """Which of our paired phones wrote ``tag`` on the link of ``challenge``, if any."""
    if len(tag) != IDENTIFY_TAG_SIZE or len(challenge) != CHALLENGE_SIZE:
        return None
    found: K | None = None
    for who, irk in irks:
        if hmac.compare_digest(identify_tag(irk, challenge), tag) and found is None:
            found = who
    return found
