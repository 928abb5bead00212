"""Encrypted records: every frame after the handshake, sealed with ChaCha20-Poly1305 (sans-IO).

Strategy. Each direction has its own key from the Noise handshake's ``Split()``, so a
record reflected back to its sender never authenticates. Records are numbered 0, 1, 2...
per direction; the number is the AEAD nonce (Noise's format: 4 zero bytes and the 64-bit
counter little-endian) and is never reused. Only its low byte goes on the wire::

    record = counter_lo (1 byte) || ciphertext || tag (16 bytes)

and the receiver rebuilds the full counter as the value nearest to the next one it
expects. The counter byte is the associated data, so it is authenticated too; the whole
frame (channel, type, seq, body) is inside the ciphertext. Every ``rekey_interval``
records both sides move to the next key with Noise's ``Rekey()``, a deterministic
function of the previous key, so no message is needed.

Rejections: a record that fails authentication (forged, truncated, flipped, reflected,
plaintext sent after the handshake), or whose counter is a replay or older than the
replay window, is dropped and counted; ``max_failures`` of them close the link. The link
below is reliable and ordered, so a genuine peer never causes one.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from bridge.wire.record import RecordLayer
from pairing.noise import CipherState, nonce_bytes

REKEY_INTERVAL = 1 << 16
REPLAY_WINDOW = 64
MAX_FAILURES = 3
RECORD_OVERHEAD = 1 + 16
MAX_COUNTER = 2**64 - 2


class _KeyChain:
    """Keys by epoch: epoch 0 is the handshake's key, epoch k+1 is Rekey(epoch k)."""

    def __init__(self, key: bytes) -> None:
        self._epoch = 0
        self._state = CipherState(key)
        self._aead = ChaCha20Poly1305(key)
        self._previous: tuple[int, ChaCha20Poly1305] | None = None

    def aead_for(self, epoch: int) -> ChaCha20Poly1305 | None:
        if epoch == self._epoch:
            return self._aead
        if self._previous is not None and epoch == self._previous[0]:
            return self._previous[1]
        if epoch == self._epoch + 1:
            self._previous = (self._epoch, self._aead)
            self._state.rekey()
            self._epoch += 1
            self._aead = ChaCha20Poly1305(self._state.export_key())
            return self._aead
        return None


class EncryptedRecords(RecordLayer):
    encrypted = True

    def __init__(
        self,
        send_key: bytes,
        receive_key: bytes,
        *,
        rekey_interval: int = REKEY_INTERVAL,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        if rekey_interval < 2 * REPLAY_WINDOW:
            raise LocalProtocolError("rekey interval must exceed twice the replay window")
        self._send = _KeyChain(send_key)
        self._receive = _KeyChain(receive_key)
        self._rekey_interval = rekey_interval
        self._max_failures = max_failures
        self._next_send = 0
        self._highest = -1  # highest counter accepted
        self._seen = 0  # bitmap: bit i set if (highest - i) was accepted
        self.rejected = 0
        self.accepted = 0

    def __repr__(self) -> str:
        return f"EncryptedRecords(sent={self._next_send}, accepted={self.accepted})"

    @property
    def next_counter(self) -> int:
        """The counter of the next record :meth:`seal` makes."""
        return self._next_send

    def skip_to(self, counter: int) -> None:
        """Number the next record ``counter``: forward only, so no nonce is used twice (a
        receiver takes up to 127 ahead of what it expects next; the conformance tool
        reaches the next key this way)."""
        if counter < self._next_send:
            raise LocalProtocolError(f"record counter {counter} is behind {self._next_send}")
        self._next_send = counter

    def seal(self, plaintext: bytes) -> bytes:
        counter = self._next_send
        if counter > MAX_COUNTER:
            raise LocalProtocolError("record counter exhausted: reconnect for new keys")
        aead = self._send.aead_for(counter // self._rekey_interval)
        assert aead is not None
        self._next_send += 1
        lo = bytes((counter & 0xFF,))
        return lo + aead.encrypt(nonce_bytes(counter), plaintext, lo)

    def _reconstruct(self, lo: int) -> int:
        expected = self._highest + 1
        counter = (expected & ~0xFF) | lo
        if counter < expected - 128:
            counter += 256
        elif counter > expected + 127 and counter >= 256:
            counter -= 256
        return counter

    def _reject(self, why: str) -> None:
        self.rejected += 1
        if self.rejected >= self._max_failures:
            raise ProtocolError(
                ErrorCode.AUTHENTICATION, f"{self.rejected} records rejected (last: {why})"
            )

    def open(self, record: bytes) -> bytes | None:
        if len(record) < RECORD_OVERHEAD + 1:
            self._reject("record too short")
            return None
        counter = self._reconstruct(record[0])
        behind = self._highest - counter
        if behind >= REPLAY_WINDOW or (behind >= 0 and self._seen >> behind & 1):
            self._reject("replayed or too old")
            return None
        aead = self._receive.aead_for(counter // self._rekey_interval)
        if aead is None:
            self._reject("counter out of range")
            return None
        try:
            plaintext = aead.decrypt(nonce_bytes(counter), record[1:], record[:1])
        except InvalidTag:
            self._reject("failed authentication")
            return None
        if counter > self._highest:
            shift = counter - self._highest
            self._seen = ((self._seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self._highest = counter
        else:
            self._seen |= 1 << behind
        self.accepted += 1
        return plaintext
