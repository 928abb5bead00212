"""The bridge's handshake: Noise KK to reconnect, Noise XX plus numeric comparison to pair.

Strategy (a sans-IO state machine; no clock, no I/O; randomness and keys injected):

* The head unit (BLE central) is the Noise initiator. When it knows which paired phone is
  on the link (``peer_key``), it runs ``Noise_KK``: one round trip, mutual
  authentication, forward secrecy. The phone finds the head unit among the head units it
  trusts by trying each key (a KK first message authenticates under one key only). A
  phone that knows no such head unit answers UNKNOWN in the clear, and the head unit
  starts over with XX, which then needs the user's consent (never a silent re-pair).
* Otherwise it runs ``Noise_XX``: both static keys travel encrypted, 1.5 round trips,
  and the **numeric comparison with a commitment** (as Bluetooth LE Secure Connections
  does) rides in XX's encrypted payloads: the phone's message 2 carries
  C = SHA256("bridge v0 commit" || h1 || Nb), where h1 is the handshake hash after
  message 1; the head unit's message 3 reveals Na. After XX each side knows whether the
  other already trusted it. If both do, the phone says so (STATUS) and the link is
  authenticated at once. If not, the phone reveals Nb (a PAIRING frame, encrypted); the
  head unit checks C; both show code = SHA256("bridge v0 code" || h || Na || Nb) as six
  digits, where h is the final Noise handshake hash, which binds both static and both
  ephemeral keys: two round trips until both screens show it. Both users must confirm;
  a rejection or the confirmation timeout ends the attempt and nothing is stored. See
  docs/SECURITY.md for why a man in the middle matches the codes with probability 10^-6
  per attempt.

Wire: handshake messages are control frames of type HANDSHAKE, in the clear (their
Noise payloads are encrypted where Noise allows); everything after Noise completes,
including the PAIRING frames of the comparison, is in encrypted records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bridge.wire import cbor
from bridge.wire.channels import ControlType
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from bridge.wire.frame import Body
from pairing.noise import SUFFIX, HandshakeState
from pairing.privacy import IRK_SIZE

PROLOGUE = b"bridge v0"
KK = "Noise_KK" + SUFFIX
XX = "Noise_XX" + SUFFIX
NONCE_SIZE = 16
CONFIRM_TIMEOUT = 60.0
MAX_NAME = 64


class Role(Enum):
    HEAD_UNIT = "head unit"
    PHONE = "phone"


class Mode(IntEnum):
    XX = 0
    KK = 1


class Step(IntEnum):
    """``0`` key in a HANDSHAKE frame body."""

    MESSAGE = 0  # body {0: 0, 1: mode, 2: noise message}
    UNKNOWN = 1  # body {0: 1}: the phone trusts no head unit that KK message came from


class PairingKind(IntEnum):
    """``0`` key in a PAIRING frame body (2 is not used: the commitment is in XX 2)."""

    STATUS = 1  # phone: {1: true, 3: name}: we both know each other, no comparison needed
    NONCE = 3  # phone: {1: Nb} (the head unit's Na was in XX 3)
    CONFIRM = 4  # either: {1: accepted}; the phone's true adds {2: IRK, 3: name}


class InfoKey(IntEnum):
    """Keys of the CBOR map in a Noise payload."""

    NAME = 0
    PLATFORM = 1
    KNOWS_YOU = 2  # XX 3
    COMMIT_OR_NONCE = 3  # XX 2: the phone's commitment C; XX 3: the head unit's nonce Na


@dataclass(frozen=True)
class PeerIdentity:
    """Who the other side proved to be. A phone's ``name`` is "" until it has confirmed a
    first pairing: it does not say its name to a head unit before the comparison."""

    static_key: bytes
    name: str
    platform: str

    @property
    def display_name(self) -> str:
        """The name, or what to call a device that has not said it yet."""
        return self.name or f"a new {self.platform} device"


@dataclass(frozen=True)
class CodeToConfirm:
    """Show ``code`` and ask the user to confirm it matches the other screen."""

    code: str  # "123 456"
    peer: PeerIdentity
    re_pairing: bool  # this side knew the peer, but the peer did not know us


@dataclass(frozen=True)
class Authenticated:
    peer: PeerIdentity
    paired_now: bool  # a first pairing (store the peer) rather than a reconnect
    send_key: bytes
    receive_key: bytes
    handshake_hash: bytes
    peer_irk: bytes | None = None  # a phone's identity resolving key, on a first pairing


@dataclass(frozen=True)
class PairingFailed:
    reason: str
    by_peer: bool


HandshakeEvent = CodeToConfirm | Authenticated | PairingFailed


class _State(Enum):
    NOISE = "noise"
    STATUS = "waiting for status or nonce"  # head unit after XX
    CONFIRMING = "confirming"
    DONE = "done"
    FAILED = "failed"


def format_code(value: int) -> str:
    digits = f"{value % 1_000_000:06d}"
    return f"{digits[:3]} {digits[3:]}"


def commitment(first_hash: bytes, nonce: bytes) -> bytes:
    """C, over the handshake hash after XX 1 (both sides have it when C is made and
    checked) and the phone's nonce."""
    return hashlib.sha256(b"bridge v0 commit" + first_hash + nonce).digest()


def comparison_code(handshake_hash: bytes, na: bytes, nb: bytes) -> str:
    digest = hashlib.sha256(b"bridge v0 code" + handshake_hash + na + nb).digest()
    return format_code(int.from_bytes(digest[:8], "big"))


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, f"handshake: {message}")


def _text(body: Body, key: int, what: str) -> str:
    value = body.get(key)
    if type(value) is not str:
        raise _bad(f"{what} missing")
    return value[:MAX_NAME]


class Handshake:
    """One side's handshake on one link.

    Feed it with :meth:`receive_handshake` (HANDSHAKE frames, in the clear) and
    :meth:`receive_pairing` (PAIRING frames, encrypted); send what :meth:`outgoing`
    returns (``(encrypted, frame type, body)``); read :meth:`next_event`; answer a
    :class:`CodeToConfirm` with :meth:`confirm`. :attr:`noise_done` says when the
    record layer must switch to the keys of the :class:`Authenticated` event, which
    comes only when the peer is authenticated and, if needed, both users confirmed.
    """

    HANDSHAKE_TYPE = ControlType.HANDSHAKE
    PAIRING_TYPE = ControlType.PAIRING

    def __init__(
        self,
        role: Role,
        static: X25519PrivateKey,
        *,
        name: str,
        platform: str,
        trusted: Collection[bytes],
        peer_key: bytes | None = None,
        allow_pairing: bool = True,
        random: Callable[[int], bytes],
        ephemeral: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        irk: bytes | None = None,
    ) -> None:
        self.role = role
        self._static = static
        self._name = name[:MAX_NAME]
        self._platform = platform
        self._trusted = set(trusted)
        self._allow_pairing = allow_pairing
        self._random = random
        self._ephemeral = ephemeral
        self._confirm_timeout = confirm_timeout
        self._out: deque[tuple[bool, int, Body]] = deque()
        self._events: deque[HandshakeEvent] = deque()
        self._state = _State.NOISE
        self._noise: HandshakeState | None = None
        self._mode = Mode.XX
        self._needs_consent = False  # a KK attempt was refused: any pairing needs the user
        self._expected = peer_key  # the paired phone the head unit believes it reached
        self._peer: PeerIdentity | None = None
        self._peer_knows_us = False
        self._we_know_peer = False
        self._nonce = b""
        self._revealed = False  # the head unit sent its nonce Na
        self._first_hash = b""  # the handshake hash after XX 1, which C is over
        self._peer_commit = b""
        self._peer_nonce = b""
        self._code: str | None = None
        self._local_accept: bool | None = None
        self._peer_accept: bool | None = None
        self._deadline: float | None = None
        self._now = 0.0  # when the frame being handled arrived
        self._irk = irk  # the phone gives it with its confirmation of a first pairing
        self._peer_irk: bytes | None = None
        self.noise_keys: tuple[bytes, bytes] | None = None
        self.handshake_hash = b""
        if role is Role.HEAD_UNIT:
            self._start(
                Mode.KK if peer_key is not None and peer_key in self._trusted else Mode.XX, peer_key
            )

    # -- plumbing ---------------------------------------------------------------------

    @property
    def noise_done(self) -> bool:
        return self.noise_keys is not None

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def comparison_spent(self) -> bool:
        """True once the head unit revealed its nonce, the code was fixed, and the
        attempt then failed (rejected, timed out, or the link ended): the peer may have
        seen the code, so this counts as one of an attacker's tries."""
        return self._revealed and self._state is _State.FAILED

    def outgoing(self) -> list[tuple[bool, int, Body]]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> HandshakeEvent | None:
        return self._events.popleft() if self._events else None

    def _send_handshake(self, body: Body) -> None:
        self._out.append((False, self.HANDSHAKE_TYPE, body))

    def _send_pairing(
        self, kind: PairingKind, value: object = None, extra: object = None, name: str = ""
    ) -> None:
        body: Body = {0: int(kind)}
        if value is not None:
            body[1] = value
        if extra is not None:
            body[2] = extra
        if name:
            body[3] = name
        self._out.append((True, self.PAIRING_TYPE, body))

    def abort(self, reason: str, *, by_peer: bool) -> None:
        """The link is ending before the handshake finished (a PairingFailed event)."""
        self._fail(reason, by_peer=by_peer)

    def _fail(self, reason: str, *, by_peer: bool = False) -> None:
        if self._state not in (_State.DONE, _State.FAILED):
            self._state = _State.FAILED
            self._deadline = None
            self._events.append(PairingFailed(reason, by_peer))

    # -- Noise ------------------------------------------------------------------------

    def _new_noise(self, mode: Mode, initiator: bool, remote: bytes | None) -> HandshakeState:
        return HandshakeState(
            KK if mode is Mode.KK else XX,
            initiator=initiator,
            prologue=PROLOGUE,
            static=self._static,
            remote_static=remote,
            ephemeral=self._ephemeral,
        )

    def _start(self, mode: Mode, peer_key: bytes | None) -> None:
        self._mode = mode
        self._noise = self._new_noise(mode, True, peer_key if mode is Mode.KK else None)
        payload = self._info() if mode is Mode.KK else b""
        self._send_handshake({0: Step.MESSAGE, 1: int(mode), 2: self._noise.write_message(payload)})
        self._first_hash = self._noise.handshake_hash

    def _info(
        self, knows_peer: bool | None = None, value: bytes | None = None, *, name: bool = True
    ) -> bytes:
        info: Body = {InfoKey.PLATFORM: self._platform}
        if name:
            info[InfoKey.NAME] = self._name
        if knows_peer is not None:
            info[InfoKey.KNOWS_YOU] = knows_peer
        if value is not None:
            info[InfoKey.COMMIT_OR_NONCE] = value
        return cbor.dumps(info)

    @staticmethod
    def _bytes(info: Body, size: int, what: str) -> bytes:
        value = info.get(InfoKey.COMMIT_OR_NONCE)
        if type(value) is not bytes or len(value) != size:
            raise _bad(f"{what} missing")
        return value

    @staticmethod
    def _parse_info(payload: bytes) -> Body:
        value = cbor.loads(payload)
        if type(value) is not dict:
            raise _bad("identity payload is not a map")
        return value

    def receive_handshake(self, body: Body, now: float = 0.0) -> None:
        """A HANDSHAKE frame from the peer (``now``: the time, which the confirmation's
        deadline counts from when XX 3 makes the phone show its code). ProtocolError if
        it is wrong."""
        self._now = now
        if self._state is not _State.NOISE:
            raise _bad("handshake message after the handshake")
        step = body.get(0)
        if step == Step.UNKNOWN:
            self._peer_forgot_us()
            return
        message = body.get(2)
        if step != Step.MESSAGE or type(message) is not bytes:
            raise _bad("malformed handshake frame")
        if self._noise is None:  # the phone's first message
            mode = body.get(1)
            if self.role is not Role.PHONE or mode not in (Mode.XX, Mode.KK):
                raise _bad("unexpected first handshake message")
            self._phone_first(Mode(mode), message)
            return
        payload = self._noise.read_message(message)
        self._after_read(payload)

    def _peer_forgot_us(self) -> None:
        if self.role is not Role.HEAD_UNIT or self._mode is not Mode.KK or self._noise is None:
            raise _bad("unexpected UNKNOWN")
        if self._noise.complete or not self._allow_pairing:
            self._fail("the phone does not know this head unit", by_peer=True)
            return
        self._needs_consent = True
        self._start(Mode.XX, None)

    def _phone_first(self, mode: Mode, message: bytes) -> None:
        if mode is Mode.XX:
            if not self._allow_pairing:
                # XX 2 would carry our static key and name to whoever asked: outside
                # the phone's own pairing mode nobody gets them (a paired head unit
                # uses KK, which proves who it is first)
                self._fail("the phone is not in pairing mode")
                return
            self._mode = Mode.XX
            self._noise = self._new_noise(Mode.XX, False, None)
            self._noise.read_message(message)
            # commit to Nb now, before the head unit reveals Na in XX 3
            self._first_hash = self._noise.handshake_hash
            self._nonce = self._random(NONCE_SIZE)
            # no name: whoever sent XX 1 is not known yet; it goes with CONFIRM or STATUS
            commit = commitment(self._first_hash, self._nonce)
            self._noise_write(self._info(value=commit, name=False))
            return
        for key in sorted(self._trusted):  # which trusted head unit is this?
            noise = self._new_noise(Mode.KK, False, key)
            try:
                payload = noise.read_message(message)
            except ProtocolError:
                continue
            self._mode, self._noise = Mode.KK, noise
            info = self._parse_info(payload)
            self._peer = PeerIdentity(key, _text(info, 0, "name"), _text(info, 1, "platform"))
            self._noise_write(self._info())
            return
        self._send_handshake({0: Step.UNKNOWN})  # and wait for an XX attempt

    def _noise_write(self, payload: bytes) -> None:
        assert self._noise is not None
        self._send_handshake({0: Step.MESSAGE, 2: self._noise.write_message(payload)})
        self._check_noise_done()

    def _after_read(self, payload: bytes) -> None:
        assert self._noise is not None
        noise = self._noise
        if self.role is Role.HEAD_UNIT and self._mode is Mode.XX and not noise.complete:
            # message 2 carried the phone's static key and identity
            info = self._parse_info(payload)
            rs = noise.remote_static
            assert rs is not None
            if self._needs_consent and self._expected is not None and rs != self._expected:
                # KK for phone X fell back to XX, and another key answered: whoever it
                # is, it must not pair as (and be handed the messages queued for) X
                self._fail("another device answered in place of the paired phone")
                return
            name = _text(info, 0, "name") if InfoKey.NAME in info else ""  # (older phones)
            self._peer = PeerIdentity(rs, name, _text(info, 1, "platform"))
            self._peer_commit = self._bytes(info, 32, "the phone's commitment")
            self._we_know_peer = rs in self._trusted
            if not self._allow_pairing:
                if not self._we_know_peer:  # a stranger: it could only pair
                    self._fail("not in pairing mode")
                    return
                # no Na: a phone that does not know us cannot start a comparison
                self._noise_write(self._info(knows_peer=True))
                return
            self._nonce = self._random(NONCE_SIZE)  # Na, revealed once C is here
            self._revealed = True
            self._noise_write(self._info(knows_peer=self._we_know_peer, value=self._nonce))
            return
        if self.role is Role.HEAD_UNIT and self._mode is Mode.KK:
            info = self._parse_info(payload)
            result = noise.result
            assert result is not None and result.remote_static is not None
            self._peer = PeerIdentity(
                result.remote_static, _text(info, 0, "name"), _text(info, 1, "platform")
            )
            self._check_noise_done()
            return
        if self.role is Role.PHONE and self._mode is Mode.XX and noise.complete:
            info = self._parse_info(payload)
            result = noise.result
            assert result is not None and result.remote_static is not None
            self._peer = PeerIdentity(
                result.remote_static, _text(info, 0, "name"), _text(info, 1, "platform")
            )
            knows = info.get(InfoKey.KNOWS_YOU)
            if type(knows) is not bool:
                raise _bad("missing 'knows you' flag")
            self._peer_knows_us = knows
            if InfoKey.COMMIT_OR_NONCE in info:  # absent: the head unit will not pair now
                self._peer_nonce = self._bytes(info, NONCE_SIZE, "the head unit's nonce")
            self._we_know_peer = result.remote_static in self._trusted
            self._check_noise_done()
            return
        raise _bad("unexpected handshake message")

    def _check_noise_done(self) -> None:
        assert self._noise is not None
        result = self._noise.result
        if result is None:
            return
        self.noise_keys = (result.send.export_key(), result.receive.export_key())
        self.handshake_hash = result.handshake_hash
        if self._mode is Mode.KK:
            self._authenticate(paired_now=False)
        elif self.role is Role.PHONE:
            if self._we_know_peer and self._peer_knows_us and not self._needs_consent:
                self._send_pairing(PairingKind.STATUS, True, name=self._name)
                self._authenticate(paired_now=False)
            elif not self._allow_pairing:
                self._fail("pairing is not allowed now")
            elif not self._peer_nonce:
                self._fail("the head unit is not in pairing mode", by_peer=True)
            else:
                self._send_pairing(PairingKind.NONCE, self._nonce)
                code = comparison_code(self.handshake_hash, self._peer_nonce, self._nonce)
                self._show_code(code, self._now)
        else:
            self._state = _State.STATUS

    # -- the comparison, inside the encrypted channel -----------------------------------

    def receive_pairing(self, body: Body, now: float) -> None:
        """A PAIRING frame (already decrypted). ProtocolError if it is wrong."""
        kind, value = body.get(0), body.get(1)
        state = self._state
        if self.role is Role.HEAD_UNIT and state is _State.STATUS and kind == PairingKind.STATUS:
            if value is not True or not self._we_know_peer or self._needs_consent:
                raise _bad("the phone claims a known pairing the head unit does not have")
            self._take_name(body)
            self._authenticate(paired_now=False)
        elif self.role is Role.HEAD_UNIT and state is _State.STATUS and kind == PairingKind.NONCE:
            if type(value) is not bytes or len(value) != NONCE_SIZE:
                raise _bad("bad nonce")
            if not self._allow_pairing:
                self._fail("not in pairing mode")
                return
            if not hmac.compare_digest(commitment(self._first_hash, value), self._peer_commit):
                self._fail("the phone's nonce does not match its commitment")
                raise ProtocolError(ErrorCode.AUTHENTICATION, "commitment mismatch")
            self._peer_nonce = value
            self._show_code(comparison_code(self.handshake_hash, self._nonce, value), now)
        elif kind == PairingKind.CONFIRM and state is _State.CONFIRMING:
            if type(value) is not bool:
                raise _bad("bad confirmation")
            irk = body.get(2)
            if self.role is Role.HEAD_UNIT and value:
                if type(irk) is not bytes or len(irk) != IRK_SIZE:
                    raise _bad("the phone's confirmation lacks its 16-byte IRK")
                self._peer_irk = irk
                self._take_name(body)
            self._peer_accept = value
            if not value:
                self._fail("the other side rejected the pairing", by_peer=True)
            else:
                self._maybe_finish()
        else:
            raise _bad(f"unexpected pairing message {kind!r} in state {state.value}")

    def _take_name(self, body: Body) -> None:
        """The phone's name, which it says only once it trusts this head unit."""
        name = body.get(3)
        if name is not None and type(name) is not str:
            raise _bad("the phone's name is not text")
        if name and self._peer is not None:
            self._peer = dataclasses.replace(self._peer, name=name[:MAX_NAME])

    def _show_code(self, code: str, now: float) -> None:
        assert self._peer is not None
        self._code = code
        self._state = _State.CONFIRMING
        self._deadline = now + self._confirm_timeout
        re_pairing = self._we_know_peer or self._needs_consent
        self._events.append(CodeToConfirm(code, self._peer, re_pairing))

    def confirm(self, accept: bool) -> None:
        """The local user's answer to :class:`CodeToConfirm`."""
        if self._state is not _State.CONFIRMING or self._local_accept is not None:
            raise LocalProtocolError("no pairing code is waiting for confirmation")
        self._local_accept = accept
        give_irk = accept and self.role is Role.PHONE and self._irk is not None
        name = self._name if accept and self.role is Role.PHONE else ""
        self._send_pairing(PairingKind.CONFIRM, accept, self._irk if give_irk else None, name)
        if not accept:
            self._fail("pairing rejected by the user")
        else:
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._local_accept and self._peer_accept:
            self._deadline = None
            self._authenticate(paired_now=True)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            if self._local_accept is None:
                self._local_accept = False
                self._send_pairing(PairingKind.CONFIRM, False)
            self._fail("pairing not confirmed in time")

    def _authenticate(self, *, paired_now: bool) -> None:
        assert self._peer is not None and self.noise_keys is not None
        self._state = _State.DONE
        send, receive = self.noise_keys
        self._events.append(
            Authenticated(
                self._peer, paired_now, send, receive, self.handshake_hash, self._peer_irk
            )
        )
