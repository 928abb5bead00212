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

All transitions are one table, :data:`TRANSITIONS`: (role, state, input) to the method
that acts and the states it may lead to; every input goes through ``Handshake._step``,
which logs it at DEBUG with the link. Booleans such as "a KK attempt was refused" or "our
user accepted" are states (``XX_AGAIN_SENT``, ``LOCAL_ACCEPTED``), not flags.

Wire: handshake messages are control frames of type HANDSHAKE, in the clear (their
Noise payloads are encrypted where Noise allows); everything after Noise completes,
including the PAIRING frames of the comparison, is in encrypted records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
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

log = logging.getLogger(__name__)

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
    CONFIRM = 4  # either: {1: accepted}; a true adds {2: IRK}, the phone's also {3: name}


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
    peer_irk: bytes | None = None  # the peer's identity resolving key, on a first pairing


@dataclass(frozen=True)
class PairingFailed:
    reason: str
    by_peer: bool


HandshakeEvent = CodeToConfirm | Authenticated | PairingFailed


class State(Enum):
    """Where one side's handshake is. Head unit: KK_SENT, XX_SENT, XX_AGAIN_SENT, then
    AWAIT_STATUS_OR_NONCE, AWAIT_NONCE or AWAIT_STATUS; phone: IDLE, UNKNOWN_SENT,
    XX_2_SENT; both: CONFIRMING, LOCAL_ACCEPTED, PEER_ACCEPTED, and DONE or FAILED."""

    KK_SENT = "KK 1 sent"
    XX_SENT = "XX 1 sent"
    XX_AGAIN_SENT = "XX 1 sent after UNKNOWN (a pairing needs the user)"
    AWAIT_STATUS_OR_NONCE = "XX 3 sent with Na"
    AWAIT_NONCE = "XX 3 sent with Na, after UNKNOWN"
    AWAIT_STATUS = "XX 3 sent without Na (not in pairing mode)"
    IDLE = "waiting for the head unit's first message"
    UNKNOWN_SENT = "UNKNOWN sent"
    XX_2_SENT = "XX 2 sent"
    CONFIRMING = "code shown, no answer yet"
    LOCAL_ACCEPTED = "code accepted here, waiting for the other side"
    PEER_ACCEPTED = "the other side accepted, waiting for our user"
    DONE = "done"
    FAILED = "failed"


class Input(Enum):
    """What moves a handshake: a message from the peer, or our user or clock."""

    KK_1 = "KK 1"
    KK_2 = "KK 2"
    XX_1 = "XX 1"
    XX_2 = "XX 2"
    XX_3 = "XX 3"
    UNKNOWN = "UNKNOWN"
    STATUS = "STATUS"
    NONCE = "NONCE"
    CONFIRM = "CONFIRM"
    ACCEPT = "our user accepts"
    REJECT = "our user rejects"


_NOISE = frozenset({State.KK_SENT, State.XX_SENT, State.XX_AGAIN_SENT, State.IDLE,
                    State.UNKNOWN_SENT, State.XX_2_SENT})  # fmt: skip
_CODE_SHOWN = frozenset({State.CONFIRMING, State.LOCAL_ACCEPTED, State.PEER_ACCEPTED})
#: States in which the head unit has revealed Na: the code is fixed from then on.
_NONCE_OUT = frozenset({State.AWAIT_STATUS_OR_NONCE, State.AWAIT_NONCE, *_CODE_SHOWN})

_PAIRING_INPUTS = {
    int(PairingKind.STATUS): Input.STATUS,
    int(PairingKind.NONCE): Input.NONCE,
    int(PairingKind.CONFIRM): Input.CONFIRM,
}

HU, PHONE = Role.HEAD_UNIT, Role.PHONE
S, In = State, Input
#: Every transition: (role, state, input) -> (the method that acts, the states it may
#: lead to). An input not listed for a state is the peer's protocol error (or, for our
#: user's ACCEPT/REJECT, the caller's). Any state can also go to FAILED.
TRANSITIONS: dict[tuple[Role, State, Input], tuple[str, frozenset[State]]] = {
    (HU, S.KK_SENT, In.KK_2): ("_kk_done", frozenset({S.DONE})),
    (HU, S.KK_SENT, In.UNKNOWN): ("_xx_again", frozenset({S.XX_AGAIN_SENT})),
    (HU, S.XX_SENT, In.XX_2): ("_hu_xx_2", frozenset({S.AWAIT_STATUS_OR_NONCE, S.AWAIT_STATUS})),
    (HU, S.XX_AGAIN_SENT, In.XX_2): ("_hu_xx_2", frozenset({S.AWAIT_NONCE})),
    (HU, S.AWAIT_STATUS_OR_NONCE, In.STATUS): ("_status", frozenset({S.DONE})),
    (HU, S.AWAIT_STATUS, In.STATUS): ("_status", frozenset({S.DONE})),
    (HU, S.AWAIT_STATUS_OR_NONCE, In.NONCE): ("_reveal", frozenset({S.CONFIRMING})),
    (HU, S.AWAIT_NONCE, In.NONCE): ("_reveal", frozenset({S.CONFIRMING})),
    (HU, S.AWAIT_STATUS, In.NONCE): ("_not_pairing", frozenset()),
    (PHONE, S.IDLE, In.XX_1): ("_phone_xx_1", frozenset({S.XX_2_SENT})),
    (PHONE, S.UNKNOWN_SENT, In.XX_1): ("_phone_xx_1", frozenset({S.XX_2_SENT})),
    (PHONE, S.IDLE, In.KK_1): ("_phone_kk_1", frozenset({S.DONE, S.UNKNOWN_SENT})),
    (PHONE, S.UNKNOWN_SENT, In.KK_1): ("_phone_kk_1", frozenset({S.DONE, S.UNKNOWN_SENT})),
    (PHONE, S.XX_2_SENT, In.XX_3): ("_phone_xx_3", frozenset({S.DONE, S.CONFIRMING})),
    **{
        (role, state, In.CONFIRM): ("_peer_answer", frozenset({S.PEER_ACCEPTED, S.DONE}))
        for role in Role for state in (S.CONFIRMING, S.LOCAL_ACCEPTED)
    },
    **{
        (role, state, answer): ("_local_answer", frozenset({S.LOCAL_ACCEPTED, S.DONE}))
        for role in Role for state in (S.CONFIRMING, S.PEER_ACCEPTED)
        for answer in (In.ACCEPT, In.REJECT)
    },
}  # fmt: skip


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

    Every input goes through :meth:`_step`, which finds its transition in
    :data:`TRANSITIONS` (or refuses it), runs it and logs it at DEBUG with the link.
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
        link: str = "",
    ) -> None:
        self.role = role
        self.link = link  # for the log only
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
        self._state = State.IDLE
        self._failed_in: State | None = None
        self._noise: HandshakeState | None = None
        self._mode = Mode.XX
        # what the messages so far said (facts, not states)
        self._expected = peer_key  # the paired phone the head unit believes it reached
        self._peer: PeerIdentity | None = None
        self._peer_knows_us = False
        self._we_know_peer = False
        self._nonce = b""
        self._first_hash = b""  # the handshake hash after XX 1, which C is over
        self._peer_commit = b""
        self._peer_nonce = b""
        self._deadline: float | None = None
        self._now = 0.0  # when the frame being handled arrived
        self._irk = irk  # given with our confirmation of a first pairing
        self._peer_irk: bytes | None = None
        self.noise_keys: tuple[bytes, bytes] | None = None
        self.handshake_hash = b""
        if role is Role.HEAD_UNIT:
            if peer_key is not None and peer_key in self._trusted:
                self._start(Mode.KK, peer_key)
                self._state = State.KK_SENT
            else:
                self._start(Mode.XX, None)
                self._state = State.XX_SENT

    # -- plumbing ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def noise_done(self) -> bool:
        return self.noise_keys is not None

    @property
    def failed(self) -> bool:
        return self._state is State.FAILED

    @property
    def done(self) -> bool:
        return self._state is State.DONE

    @property
    def comparison_spent(self) -> bool:
        """True once the head unit revealed its nonce, the code was fixed, and the
        attempt then failed (rejected, timed out, or the link ended): the peer may have
        seen the code, so this counts as one of an attacker's tries."""
        return self.role is Role.HEAD_UNIT and self._failed_in in _NONCE_OUT

    def outgoing(self) -> list[tuple[bool, int, Body]]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> HandshakeEvent | None:
        return self._events.popleft() if self._events else None

    def _step(self, what: Input, *args: object) -> None:
        """The one way a handshake moves: look the input up, act, check where it went."""
        before = self._state
        found = TRANSITIONS.get((self.role, before, what))
        if found is None:
            if what in (Input.ACCEPT, Input.REJECT):
                raise LocalProtocolError("no pairing code is waiting for confirmation")
            if what in (Input.STATUS, Input.NONCE, Input.CONFIRM):
                raise _bad(f"unexpected pairing message {what.value} in state {before.value}")
            raise _bad(self._unexpected(what))
        action, allowed = found
        getattr(self, action)(*args)
        after = self._state
        assert after in allowed or after is State.FAILED, (before, what, after)
        log.debug("handshake %s (%s): %s, %s -> %s", self.link, self.role.value, what.value,
                  before.value, after.value)  # fmt: skip

    def _unexpected(self, what: Input) -> str:
        if what is Input.UNKNOWN:
            return "unexpected UNKNOWN"
        if self._state not in _NOISE:
            return "handshake message after the handshake"
        if self.role is Role.PHONE:
            return "unexpected first handshake message"
        return "unexpected handshake message"

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
        if self._state not in (State.DONE, State.FAILED):
            self._failed_in = self._state
            self._state = State.FAILED
            self._deadline = None
            self._events.append(PairingFailed(reason, by_peer))
            log.debug("handshake %s (%s): failed in %s: %s", self.link, self.role.value,
                      self._failed_in.value, reason)  # fmt: skip

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

    def _noise_write(self, payload: bytes) -> None:
        assert self._noise is not None
        self._send_handshake({0: Step.MESSAGE, 2: self._noise.write_message(payload)})
        self._take_keys()

    def _take_keys(self) -> None:
        assert self._noise is not None
        result = self._noise.result
        if result is not None:
            self.noise_keys = (result.send.export_key(), result.receive.export_key())
            self.handshake_hash = result.handshake_hash

    def receive_handshake(self, body: Body, now: float = 0.0) -> None:
        """A HANDSHAKE frame from the peer (``now``: the time, which the confirmation's
        deadline counts from when XX 3 makes the phone show its code). ProtocolError if
        it is wrong."""
        self._now = now
        if self._state not in _NOISE:
            raise _bad("handshake message after the handshake")
        step = body.get(0)
        if step == Step.UNKNOWN:
            self._step(Input.UNKNOWN)
            return
        message = body.get(2)
        if step != Step.MESSAGE or type(message) is not bytes:
            raise _bad("malformed handshake frame")
        match self._state:
            case State.KK_SENT:
                self._step(Input.KK_2, message)
            case State.XX_SENT | State.XX_AGAIN_SENT:
                self._step(Input.XX_2, message)
            case State.XX_2_SENT:
                self._step(Input.XX_3, message)
            case _:  # the phone's first message says which pattern it is
                mode = body.get(1)
                if mode not in (Mode.XX, Mode.KK):
                    raise _bad("unexpected first handshake message")
                self._step(Input.KK_1 if mode == Mode.KK else Input.XX_1, message)

    def _identity(self, key: bytes, info: Body) -> PeerIdentity:
        return PeerIdentity(key, _text(info, 0, "name"), _text(info, 1, "platform"))

    # the head unit's transitions

    def _kk_done(self, message: bytes) -> None:
        assert self._noise is not None
        info = self._parse_info(self._noise.read_message(message))
        result = self._noise.result
        assert result is not None and result.remote_static is not None
        self._peer = self._identity(result.remote_static, info)
        self._take_keys()
        self._authenticate(paired_now=False)

    def _xx_again(self) -> None:
        if not self._allow_pairing:
            self._fail("the phone does not know this head unit", by_peer=True)
            return
        self._start(Mode.XX, None)
        self._state = State.XX_AGAIN_SENT

    def _hu_xx_2(self, message: bytes) -> None:
        assert self._noise is not None
        again = self._state is State.XX_AGAIN_SENT
        info = self._parse_info(self._noise.read_message(message))  # the phone's key is in it
        rs = self._noise.remote_static
        assert rs is not None
        if again and self._expected is not None and rs != self._expected:
            # KK for phone X fell back to XX, and another key answered: whoever it is,
            # it must not pair as (and be handed the messages queued for) X
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
            self._state = State.AWAIT_STATUS
            return
        self._nonce = self._random(NONCE_SIZE)  # Na, revealed once C is here
        self._noise_write(self._info(knows_peer=self._we_know_peer, value=self._nonce))
        self._state = State.AWAIT_NONCE if again else State.AWAIT_STATUS_OR_NONCE

    def _status(self, body: Body) -> None:
        if body.get(1) is not True or not self._we_know_peer:
            raise _bad("the phone claims a known pairing the head unit does not have")
        self._take_name(body)
        self._authenticate(paired_now=False)

    def _reveal(self, body: Body) -> None:
        value = body.get(1)
        if type(value) is not bytes or len(value) != NONCE_SIZE:
            raise _bad("bad nonce")
        if not hmac.compare_digest(commitment(self._first_hash, value), self._peer_commit):
            self._fail("the phone's nonce does not match its commitment")
            raise ProtocolError(ErrorCode.AUTHENTICATION, "commitment mismatch")
        self._peer_nonce = value
        self._show_code(comparison_code(self.handshake_hash, self._nonce, value), self._now)

    def _not_pairing(self, body: Body) -> None:
        value = body.get(1)
        if type(value) is not bytes or len(value) != NONCE_SIZE:
            raise _bad("bad nonce")
        self._fail("not in pairing mode")

    # the phone's transitions

    def _phone_xx_1(self, message: bytes) -> None:
        if not self._allow_pairing:
            # XX 2 would carry our static key to whoever asked: outside the phone's own
            # pairing mode nobody gets it (a paired head unit uses KK, which proves who
            # it is first)
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
        self._state = State.XX_2_SENT

    def _phone_kk_1(self, message: bytes) -> None:
        for key in sorted(self._trusted):  # which trusted head unit is this?
            noise = self._new_noise(Mode.KK, False, key)
            try:
                payload = noise.read_message(message)
            except ProtocolError:
                continue
            self._mode, self._noise = Mode.KK, noise
            self._peer = self._identity(key, self._parse_info(payload))
            self._noise_write(self._info())
            self._authenticate(paired_now=False)
            return
        self._send_handshake({0: Step.UNKNOWN})  # and wait for an XX attempt
        self._state = State.UNKNOWN_SENT

    def _phone_xx_3(self, message: bytes) -> None:
        assert self._noise is not None
        info = self._parse_info(self._noise.read_message(message))
        result = self._noise.result
        assert result is not None and result.remote_static is not None
        self._peer = self._identity(result.remote_static, info)
        knows = info.get(InfoKey.KNOWS_YOU)
        if type(knows) is not bool:
            raise _bad("missing 'knows you' flag")
        self._peer_knows_us = knows
        if InfoKey.COMMIT_OR_NONCE in info:  # absent: the head unit will not pair now
            self._peer_nonce = self._bytes(info, NONCE_SIZE, "the head unit's nonce")
        self._we_know_peer = result.remote_static in self._trusted
        self._take_keys()
        if self._we_know_peer and self._peer_knows_us:
            self._send_pairing(PairingKind.STATUS, True, name=self._name)
            self._authenticate(paired_now=False)
        elif not self._peer_nonce:
            self._fail("the head unit is not in pairing mode", by_peer=True)
        else:
            self._send_pairing(PairingKind.NONCE, self._nonce)
            code = comparison_code(self.handshake_hash, self._peer_nonce, self._nonce)
            self._show_code(code, self._now)

    # -- the comparison, inside the encrypted channel -----------------------------------

    def receive_pairing(self, body: Body, now: float) -> None:
        """A PAIRING frame (already decrypted). ProtocolError if it is wrong."""
        self._now = now
        kind = body.get(0)
        what = None
        if isinstance(kind, int) and not isinstance(kind, bool):
            what = _PAIRING_INPUTS.get(kind)
        if what is None:
            raise _bad(f"unexpected pairing message {kind!r} in state {self._state.value}")
        self._step(what, body)

    def _take_name(self, body: Body) -> None:
        """The phone's name, which it says only once it trusts this head unit."""
        name = body.get(3)
        if name is not None and type(name) is not str:
            raise _bad("the phone's name is not text")
        if name and self._peer is not None:
            self._peer = dataclasses.replace(self._peer, name=name[:MAX_NAME])

    def _show_code(self, code: str, now: float) -> None:
        assert self._peer is not None
        re_pairing = self._we_know_peer or self._state is State.AWAIT_NONCE  # after UNKNOWN
        self._state = State.CONFIRMING
        self._deadline = now + self._confirm_timeout
        self._events.append(CodeToConfirm(code, self._peer, re_pairing))

    def _peer_answer(self, body: Body) -> None:
        value = body.get(1)
        if type(value) is not bool:
            raise _bad("bad confirmation")
        irk = body.get(2)
        if self.role is Role.HEAD_UNIT and value:
            if type(irk) is not bytes or len(irk) != IRK_SIZE:
                raise _bad("the phone's confirmation lacks its 16-byte IRK")
            self._peer_irk = irk
            self._take_name(body)
        elif value and irk is not None:  # a v1 head unit's IRK (a v0 one sends none)
            if type(irk) is not bytes or len(irk) != IRK_SIZE:
                raise _bad("the head unit's IRK is not 16 bytes")
            self._peer_irk = irk
        if not value:
            self._fail("the other side rejected the pairing", by_peer=True)
        elif self._state is State.LOCAL_ACCEPTED:
            self._finish()
        else:
            self._state = State.PEER_ACCEPTED

    def confirm(self, accept: bool) -> None:
        """The local user's answer to :class:`CodeToConfirm`."""
        self._step(Input.ACCEPT if accept else Input.REJECT, accept)

    def _local_answer(self, accept: bool) -> None:
        give_irk = accept and self._irk is not None  # both sides give theirs (v1)
        name = self._name if accept and self.role is Role.PHONE else ""
        self._send_pairing(PairingKind.CONFIRM, accept, self._irk if give_irk else None, name)
        if not accept:
            self._fail("pairing rejected by the user")
        elif self._state is State.PEER_ACCEPTED:
            self._finish()
        else:
            self._state = State.LOCAL_ACCEPTED

    def _finish(self) -> None:
        self._deadline = None
        self._authenticate(paired_now=True)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            if self._state in (State.CONFIRMING, State.PEER_ACCEPTED):  # we never answered
                self._send_pairing(PairingKind.CONFIRM, False)
            self._fail("pairing not confirmed in time")

    def _authenticate(self, *, paired_now: bool) -> None:
        assert self._peer is not None and self.noise_keys is not None
        self._state = State.DONE
        send, receive = self.noise_keys
        self._events.append(
            Authenticated(
                self._peer, paired_now, send, receive, self.handshake_hash, self._peer_irk
            )
        )
