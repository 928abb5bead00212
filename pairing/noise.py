"""The Noise Protocol Framework (revision 34) over 25519, ChaChaPoly and SHA256 (sans-IO).

Strategy: a direct transcription of the specification's CipherState, SymmetricState and
HandshakeState, driven by a table of the fundamental patterns and the ``pskN`` modifier,
with every primitive from ``cryptography``: X25519, ChaCha20-Poly1305, SHA-256, and HKDF
(RFC 5869 with an empty ``info`` is exactly Noise's HKDF). It reproduces the cacophony
vectors byte for byte for every ``*_25519_ChaChaPoly_SHA256`` pattern
(``tests/test_noise.py``). Nothing here reads a clock or does I/O; ephemeral keys come
from an injected generator so tests are exact. Any failure of the peer's bytes raises
:class:`~bridge.wire.errors.ProtocolError`; misuse raises ``LocalProtocolError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError

DHLEN = 32
HASHLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 1
MAX_MESSAGE = 65535

SUFFIX = "_25519_ChaChaPoly_SHA256"

#: Fundamental patterns: (pre-messages of initiator, of responder), message patterns.
PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "N": ((), ("s",), (("e", "es"),)),
    "K": (("s",), ("s",), (("e", "es", "ss"),)),
    "X": ((), ("s",), (("e", "es", "s", "ss"),)),
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "XN": ((), (), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": ((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "KN": (("s",), (), (("e",), ("e", "ee", "se"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": (("s",), (), (("e",), ("e", "ee", "se", "s", "es"))),
    "IN": ((), (), (("e", "s"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": ((), (), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}


def _fail(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.AUTHENTICATION, message)


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    okm = HKDF(hashes.SHA256(), HASHLEN * outputs, salt=chaining_key, info=b"").derive(ikm)
    return [okm[i * HASHLEN : (i + 1) * HASHLEN] for i in range(outputs)]


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point gives an all-zero secret
        raise _fail("invalid public key") from None


def nonce_bytes(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    """A key and a 64-bit counter nonce; encrypt and decrypt with associated data."""

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self._key = key
        self.n = nonce

    def __repr__(self) -> str:  # never show the key
        return f"CipherState(has_key={self._key is not None}, n={self.n})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def _next_nonce(self) -> bytes:
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: rekey or start a new session")
        nonce = nonce_bytes(self.n)
        self.n += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted")
        try:
            plaintext = self._aead.decrypt(nonce_bytes(self.n), ciphertext, ad)
        except InvalidTag:
            raise _fail("message failed authentication") from None
        self.n += 1
        return plaintext

    def rekey(self) -> None:
        """Noise's Rekey(): the next key is the encryption of zeros under nonce 2^64-1."""
        if self._aead is None:
            raise LocalProtocolError("no key to rekey")
        key = self._aead.encrypt(nonce_bytes(MAX_NONCE), bytes(32), b"")[:32]
        self._aead = ChaCha20Poly1305(key)
        self._key = key

    def export_key(self) -> bytes:
        """The raw key, for the opt-in key log only."""
        if self._key is None:
            raise LocalProtocolError("no key")
        return self._key


class SymmetricState:
    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


def parse_protocol_name(name: str) -> tuple[str, list[int]]:
    """``Noise_XXpsk3_25519_ChaChaPoly_SHA256`` -> ("XX", [3])."""
    if not name.startswith("Noise_") or not name.endswith(SUFFIX):
        raise LocalProtocolError(f"unsupported protocol {name}")
    handshake = name[len("Noise_") : -len(SUFFIX)]
    base = handshake.split("psk")[0]
    if base not in PATTERNS:
        raise LocalProtocolError(f"unknown pattern {base}")
    psks = [int(p) for p in handshake[len(base) :].split("psk")[1:]]
    return base, psks


@dataclass(frozen=True)
class HandshakeResult:
    """What a finished handshake gives: the two transport ciphers, the transcript hash,
    and the peer's static key if the pattern carried one."""

    send: CipherState
    receive: CipherState
    handshake_hash: bytes
    remote_static: bytes | None


class HandshakeState:
    """One side of a Noise handshake. Call :meth:`write_message` / :meth:`read_message` in
    turn; once :attr:`complete`, :attr:`result` holds the transport ciphers."""

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: X25519PrivateKey | None = None,
        remote_static: bytes | None = None,
        psks: Sequence[bytes] = (),
        ephemeral: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
    ) -> None:
        base, psk_positions = parse_protocol_name(protocol_name)
        pre_i, pre_r, messages = PATTERNS[base]
        patterns = [list(m) for m in messages]
        for position in psk_positions:
            if position == 0:
                patterns[0].insert(0, "psk")
            else:
                patterns[position - 1].append("psk")
        if len(psks) != len(psk_positions) or any(len(p) != 32 for p in psks):
            raise LocalProtocolError("need one 32-byte PSK per psk modifier")
        self.initiator = initiator
        self.one_way = len(messages) == 1
        self._patterns = patterns
        self._psks = list(psks)
        self._psk_mode = bool(psk_positions)
        self._s = static
        self._e: X25519PrivateKey | None = None
        self._rs = remote_static
        self._re: bytes | None = None
        self._new_ephemeral = ephemeral
        self._sym = SymmetricState(protocol_name.encode())
        self._sym.mix_hash(prologue)
        for token in pre_i:
            key = self._s if initiator else None
            self._sym.mix_hash(public_bytes(key) if key else self._need_rs(token))
        for token in pre_r:
            key = None if initiator else self._s
            self._sym.mix_hash(public_bytes(key) if key else self._need_rs(token))
        self._index = 0
        self.result: HandshakeResult | None = None

    def _need_rs(self, token: str) -> bytes:
        if self._rs is None:
            raise LocalProtocolError(f"pattern needs the peer's static key ({token})")
        return self._rs

    @property
    def complete(self) -> bool:
        return self.result is not None

    @property
    def handshake_hash(self) -> bytes:
        return self._sym.h

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known (given, or read from a message)."""
        return self._rs

    def my_turn(self) -> bool:
        return self.result is None and (self._index % 2 == 0) == self.initiator

    def _dh_for(self, token: str) -> bytes:
        e, s, re, rs = self._e, self._s, self._re, self._rs
        pairs = {
            "ee": (e, re),
            "ss": (s, rs),
            "es": (e, rs) if self.initiator else (s, re),
            "se": (s, re) if self.initiator else (e, rs),
        }
        private, public = pairs[token]
        if private is None or public is None:
            raise LocalProtocolError(f"missing key for {token}")
        return _dh(private, public)

    def write_message(self, payload: bytes = b"") -> bytes:
        if not self.my_turn():
            raise LocalProtocolError("not our turn to write")
        out = bytearray()
        for token in self._patterns[self._index]:
            if token == "e":
                self._e = self._new_ephemeral()
                pub = public_bytes(self._e)
                out += pub
                self._sym.mix_hash(pub)
                if self._psk_mode:
                    self._sym.mix_key(pub)
            elif token == "s":
                if self._s is None:
                    raise LocalProtocolError("pattern needs our static key")
                out += self._sym.encrypt_and_hash(public_bytes(self._s))
            elif token == "psk":
                self._sym.mix_key_and_hash(self._psks.pop(0))
            else:
                self._sym.mix_key(self._dh_for(token))
        out += self._sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise LocalProtocolError("handshake message over 65535 bytes")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.result is not None or self.my_turn():
            raise LocalProtocolError("not our turn to read")
        if len(message) > MAX_MESSAGE:
            raise _fail("handshake message over 65535 bytes")
        pos = 0
        for token in self._patterns[self._index]:
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise _fail("handshake message too short")
                self._re = message[pos : pos + DHLEN]
                pos += DHLEN
                self._sym.mix_hash(self._re)
                if self._psk_mode:
                    self._sym.mix_key(self._re)
            elif token == "s":
                size = DHLEN + (TAGLEN if self._sym.cipher.has_key else 0)
                if len(message) - pos < size:
                    raise _fail("handshake message too short")
                self._rs = self._sym.decrypt_and_hash(message[pos : pos + size])
                pos += size
            elif token == "psk":
                self._sym.mix_key_and_hash(self._psks.pop(0))
            else:
                self._sym.mix_key(self._dh_for(token))
        if self._sym.cipher.has_key and len(message) - pos < TAGLEN:
            raise _fail("handshake message too short")
        payload = self._sym.decrypt_and_hash(message[pos:])
        self._advance()
        return payload

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._patterns):
            c1, c2 = self._sym.split()
            send, receive = (c1, c2) if self.initiator else (c2, c1)
            self.result = HandshakeResult(send, receive, self._sym.h, self._rs)
