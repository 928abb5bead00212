"""One link's protocol state, composed from the sans-IO layers (sans-IO itself).

Strategy. A :class:`Connection` lives as long as one link. It owns a fresh
:class:`~bridge.wire.segment.Segmenter` and shares the peer's long-lived
:class:`~bridge.wire.mux.ChannelMux`, with the record layer between them::

    packets <-> Segmenter <-> records <-> RecordLayer <-> frames <-> ChannelMux <-> messages

It takes packets and the time (:meth:`receive_packet`), hands back packets to send
(:meth:`next_packet`) and events (:meth:`next_event`), and keeps three timers
(:meth:`get_timer` / :meth:`handle_timer`): a keepalive after ``keepalive`` of silence
from us, the peer declared dead after ``idle_timeout`` of silence from it, and the mux's
ack delay and ack timeout. It reads no clock and does no I/O.

Records are decoded as they complete while fewer than :data:`MAX_EVENTS` events wait
for the application; beyond that they stay in the segmenter, which then withholds
credits, so an application that falls behind stops the peer instead of growing memory.

Ending: a protocol error from the peer, a timeout, a CLOSE from the peer or our own
:meth:`close` moves the connection to CLOSING; then only a CLOSE frame (with the reason)
is still sent, after which :attr:`done` is true and the driver closes the link.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bridge.wire.channels import Channel, CloseCode, ControlType, Priority
from bridge.wire.codec import decode, encode
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError
from bridge.wire.frame import Body, Frame, decode_frame, encode_frame
from bridge.wire.messages import Hello
from bridge.wire.mux import Acknowledged, ChannelMux, MessageReceived
from bridge.wire.record import PlaintextRecords, RecordLayer
from bridge.wire.segment import INITIAL_CREDITS, MAX_CREDITS, Segmenter
from pairing.encrypted_records import EncryptedRecords
from pairing.handshake import Authenticated, Handshake, HandshakeEvent, PairingFailed

MAX_CLOSE_TEXT = 120
#: Decoded events held for the application before records are left in the segmenter.
MAX_EVENTS = 64
#: Bytes of segments a receiver lets its peer have in flight (bandwidth x delay).
WINDOW_BYTES = 16384


@dataclass(frozen=True)
class ConnectionClosed:
    """The connection ended. ``by_peer``: the peer sent CLOSE; else we ended it."""

    code: int
    text: str
    by_peer: bool

    def describe(self) -> str:
        who = "peer closed" if self.by_peer else "closed"
        if self.code == CloseCode.NORMAL:
            return f"{who}: {self.text or 'normal close'}"
        try:
            name = ErrorCode(self.code).name.lower()
        except ValueError:
            name = f"code {self.code}"
        return f"{who} ({name}): {self.text}"


@dataclass(frozen=True)
class HelloReceived:
    """The peer introduced itself; ``version`` is the negotiated one (None if we sent no
    HELLO of our own)."""

    hello: Hello
    version: int | None


Event = MessageReceived | Acknowledged | ConnectionClosed | HandshakeEvent | HelloReceived


def default_window(payload_size: int) -> int:
    """Credits to keep about 16 KiB of segments in flight: small packets need many."""
    return max(INITIAL_CREDITS, min(MAX_CREDITS, -(-WINDOW_BYTES // payload_size)))


class _State(Enum):
    OPEN = "open"
    CLOSING = "closing"  # only the CLOSE frame still goes out
    DONE = "done"


@dataclass(frozen=True)
class ConnectionConfig:
    keepalive: float = 5.0
    idle_timeout: float = 15.0
    #: From the link's start until the peer is authenticated or a pairing code is shown
    #: (then the code's own confirmation deadline counts): a fixed deadline that nothing
    #: the peer sends extends, so a link that never authenticates cannot be held open.
    handshake_timeout: float = 10.0
    window: int | None = None  # segment credits; None: about 16 KiB of segments (32..255)
    max_pending: int = 65536  # completed records the application has not taken, bytes


class Connection:
    def __init__(
        self,
        mux: ChannelMux,
        payload_size: int,
        *,
        now: float,
        config: ConnectionConfig | None = None,
        records: RecordLayer | None = None,
        handshake: Handshake | None = None,
        hello: Hello | None = None,
        admit: Callable[[Connection], str | None] | None = None,
    ) -> None:
        """``admit`` is asked once the peer is authenticated, before the connection
        touches ``mux``: it returns None to go ahead, or why the link must close (the
        session already has an authenticated link for that peer). Until then the
        connection never uses ``mux``, so links still in their handshake may share one."""
        self.config = config or ConnectionConfig()
        self.mux = mux
        self._plain = PlaintextRecords()
        self.records = records or self._plain
        self.handshake = handshake
        window = self.config.window or default_window(payload_size)
        self.segmenter = Segmenter(payload_size, window=window, max_pending=self.config.max_pending)
        self._state = _State.OPEN
        self._events: deque[Event] = deque()
        # Frames of the connection itself (handshake, KEEPALIVE, CLOSE), each with whether it
        # goes in the clear (only handshake messages, and anything before Noise is done).
        self._control: deque[tuple[Frame, bool]] = deque()
        # per lane, the mux's change count when it last had nothing for it (-1: ask)
        self._lane_empty = [-1] * len(Priority)
        self._last_sent = now
        self._last_received = now
        self._now = now
        self.closed: ConnectionClosed | None = None
        self._uses_mux = False  # once admitted: before, links in their handshake share it
        self.hello = hello
        self.peer_hello: Hello | None = None
        self.version: int | None = None
        self.authenticated = handshake is None
        self._admit = admit
        self._handshake_deadline = now + self.config.handshake_timeout
        if handshake is None:
            self._on_authenticated()
        else:
            self._drain_handshake()

    # -- state ------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def done(self) -> bool:
        """True once nothing more will be sent: the driver should close the link."""
        if self._state is _State.CLOSING and not self._control and not self.segmenter.has_work():
            self._state = _State.DONE  # the CLOSE frame is out
        return self._state is _State.DONE

    def close(self, text: str = "", code: int = CloseCode.NORMAL) -> None:
        """Start an orderly close; the CLOSE frame carries ``code`` and ``text``."""
        if self._state is not _State.OPEN:
            return
        self._begin_close(ConnectionClosed(code, text[:MAX_CLOSE_TEXT], by_peer=False))

    def _begin_close(self, closed: ConnectionClosed) -> None:
        self.closed = closed
        self._state = _State.CLOSING  # frames already queued (a pairing answer) still go first
        body: dict[int | str, object] = {0: closed.code, 1: closed.text}
        self._queue_control(Frame(Channel.CONTROL, ControlType.CLOSE, None, body))
        self._events.append(closed)

    def _queue_control(self, frame: Frame, *, clear: bool | None = None) -> None:
        if clear is None:
            clear = self.handshake is not None and not self.handshake.noise_done
        self._control.append((frame, clear))

    def _fail(self, error: ProtocolError) -> None:
        if self._state is _State.OPEN:
            self._begin_close(ConnectionClosed(error.code, str(error.args[0]), by_peer=False))

    # -- receiving --------------------------------------------------------------------

    def receive_packet(self, packet: bytes, now: float) -> None:
        """Take one packet from the link. Protocol errors end the connection (see
        :meth:`next_event`); they are not raised."""
        if self._state is not _State.OPEN:
            return
        self._now = now
        self._last_received = now
        try:
            self.segmenter.receive_segment(packet)
        except ProtocolError as e:
            self._fail(e)
        self._pump()

    def next_event(self) -> Event | None:
        """The next event for the application, or None if there is none yet.

        Asking for the next event commits the previous message: it may be acknowledged.
        """
        if self._uses_mux:
            self.mux.commit_handed_out(self._now)
        event = self._events.popleft() if self._events else None
        if isinstance(event, MessageReceived) and event.seq is not None:
            self.mux.hand_out(event.channel, event.seq)
        self._pump()
        return event

    def _pump(self) -> None:
        # Decode records while the application keeps up; when it falls behind, records
        # stay in the segmenter, whose credits then stop the peer.
        while len(self._events) < MAX_EVENTS and self._state is _State.OPEN:
            record = self.segmenter.next_record()
            if record is None:
                return
            try:
                plaintext = self.records.open(record)
                if plaintext is not None:  # None: rejected and counted by the record layer
                    self._handle_frame(decode_frame(plaintext))
            except ProtocolError as e:
                self._fail(e)

    def abandon(self) -> list[Event]:
        """The link is gone: stop, and hand back the events already decoded (not
        committed: the session commits them as the application finishes them)."""
        self._state = _State.DONE
        if self.handshake is not None and not self.handshake.done:
            self.handshake.abort("the link ended", by_peer=False)
            self._events.extend(iter(self.handshake.next_event, None))
        events = list(self._events)
        self._events.clear()
        return events

    def _handle_frame(self, frame: Frame) -> None:
        if frame.channel is Channel.CONTROL and frame.seq is None:
            if frame.type == ControlType.KEEPALIVE:
                return
            if frame.type == ControlType.CLOSE:
                code, text = frame.body.get(0, 0), frame.body.get(1, "")
                if type(code) is not int or type(text) is not str:
                    raise ProtocolError(ErrorCode.MALFORMED, "bad CLOSE body")
                self.closed = ConnectionClosed(code, text[:MAX_CLOSE_TEXT], by_peer=True)
                self._state = _State.DONE
                if self.handshake is not None and not self.handshake.done:
                    self.handshake.abort(self.closed.text, by_peer=True)
                    self._events.extend(iter(self.handshake.next_event, None))
                self._events.append(self.closed)
                return
        if self.handshake is not None and self._handshake_frame(self.handshake, frame):
            return
        if frame.channel is Channel.CONTROL and frame.type == ControlType.HELLO:
            if not self.authenticated or frame.seq is not None:
                raise ProtocolError(ErrorCode.AUTHENTICATION, "HELLO before authentication")
            self._receive_hello(frame.body)
            return
        self._events.extend(self.mux.receive(frame, self._now))

    def _handshake_frame(self, handshake: Handshake, frame: Frame) -> bool:
        """Handle a frame while (or in case) the handshake runs; True if it was taken."""
        is_handshake = frame.channel is Channel.CONTROL and frame.seq is None
        if is_handshake and frame.type == Handshake.HANDSHAKE_TYPE and not handshake.noise_done:
            handshake.receive_handshake(frame.body, self._now)
        elif is_handshake and frame.type == Handshake.PAIRING_TYPE and handshake.noise_done:
            handshake.receive_pairing(frame.body, self._now)
        elif not self.authenticated:
            raise ProtocolError(ErrorCode.AUTHENTICATION, "application frame before authentication")
        else:
            return False
        self._drain_handshake()
        return True

    def _drain_handshake(self) -> None:
        handshake = self.handshake
        assert handshake is not None
        for encrypted, frame_type, body in handshake.outgoing():
            frame = Frame(Channel.CONTROL, frame_type, None, body)
            self._queue_control(frame, clear=not encrypted)
        if handshake.noise_keys is not None and not self.records.encrypted:
            send_key, receive_key = handshake.noise_keys
            self.records = EncryptedRecords(send_key, receive_key)
        while (event := handshake.next_event()) is not None:
            self._events.append(event)
            if isinstance(event, Authenticated):
                refusal = self._admit(self) if self._admit is not None else None
                if refusal is not None:
                    self.close(refusal, ErrorCode.AUTHENTICATION)
                    return
                self.authenticated = True
                self._on_authenticated()
            elif isinstance(event, PairingFailed):
                self.close(event.reason)

    def _on_authenticated(self) -> None:
        # HELLO goes first (lane 0, queued before any application frame), then whatever
        # the mux holds from earlier links.
        if self.hello is not None:
            hello = dataclasses.replace(self.hello, epoch=self.mux.epoch)
            self._queue_control(Frame(Channel.CONTROL, ControlType.HELLO, None, encode(hello)))
        # with HELLOs, no acknowledgement goes before the peer's (it may have restarted)
        self.mux.link_up(await_hello=self.hello is not None)
        self._uses_mux = True

    def _receive_hello(self, body: Body) -> None:
        hello = decode(Hello, body)
        if self.hello is not None:
            common = set(self.hello.versions) & set(hello.versions)
            if not common:
                ours = ", ".join(map(str, self.hello.versions))
                theirs = ", ".join(map(str, hello.versions))
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED,
                    f"incompatible protocol versions: we speak {ours}, the peer {theirs}",
                )
            self.version = max(common)
        if hello.epoch and hello.epoch != self.mux.peer_epoch:
            if self.mux.peer_epoch is not None:
                self.mux.reset_incoming()  # the peer restarted: its numbering starts again
            self.mux.peer_epoch = hello.epoch
        self.peer_hello = hello
        self.mux.peer_hello_seen()
        self._events.append(HelloReceived(hello, self.version))

    def confirm_pairing(self, accept: bool) -> None:
        """The local user's answer to a pairing code."""
        if self.handshake is None:
            raise LocalProtocolError("this connection has no pairing")
        self.handshake.confirm(accept)
        self._drain_handshake()

    # -- sending ----------------------------------------------------------------------

    def next_packet(self, now: float) -> bytes | None:
        """The next packet to send, or None (nothing to send, or waiting for credit)."""
        if self._state is _State.DONE:
            return None
        self._now = now
        packet = self.segmenter.next_segment(self._record_for, self._ready_lanes())
        if packet is not None:
            self._last_sent = now
        return packet

    def _ready_lanes(self) -> int:
        """A bit per lane that may have a record (what :meth:`_record_for` would not
        refuse at once)."""
        ready = 1 if self._control else 0
        if self._state is not _State.OPEN or not self.authenticated:
            return ready
        changes, empty = self.mux.changes, self._lane_empty
        for lane in range(len(empty)):
            if empty[lane] != changes:
                ready |= 1 << lane
        return ready

    def _record_for(self, lane: int) -> bytes | None:
        if lane == Priority.URGENT and self._control:
            control, clear = self._control.popleft()
            return (self._plain if clear else self.records).seal(encode_frame(control))
        if self._state is not _State.OPEN or not self.authenticated:
            return None
        changes = self.mux.changes
        if self._lane_empty[lane] == changes:
            return None  # it had nothing for this lane, and nothing changed since
        frame = self.mux.next_frame(lane, self._now)
        if frame is None:
            self._lane_empty[lane] = changes
            return None
        return self.records.seal(encode_frame(frame))

    def wants_to_send(self) -> bool:
        """True if :meth:`next_packet` would return a packet now."""
        if self._state is _State.DONE:
            return False
        if self.segmenter.can_send():
            return True
        if self.segmenter.credits == 0:
            return False
        app = self._state is _State.OPEN and self.authenticated and self.mux.has_sendable()
        return bool(self._control) or app

    # -- timers -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self._state is not _State.OPEN:
            return None
        at = self._last_sent + self.config.keepalive
        if self.handshake is None or self.handshake.get_timer() is None:  # no code shown
            at = min(at, self._last_received + self.config.idle_timeout)
        if not self.authenticated:
            assert self.handshake is not None
            pairing = self.handshake.get_timer()  # the code's confirmation deadline
            return min(at, pairing if pairing is not None else self._handshake_deadline)
        mux_timer = self.mux.get_timer()
        return at if mux_timer is None else min(at, mux_timer)

    def handle_timer(self, now: float) -> None:
        if self._state is not _State.OPEN:
            return
        self._now = now
        if self.segmenter.peer_credits == 0:
            self._last_received = now  # we are holding the peer back: its silence is ours
        comparing = self.handshake is not None and self.handshake.get_timer() is not None
        if comparing:  # a code is shown: its own deadline (60 s) counts, not the peer's
            # silence; and once it is answered the peer still has half the idle timeout
            self._last_received = max(self._last_received, now - self.config.idle_timeout / 2)
        if now >= self._last_received + self.config.idle_timeout:
            self._fail(
                ProtocolError(ErrorCode.TIMEOUT, f"peer silent for {self.config.idle_timeout:g} s")
            )
            return
        if not self.authenticated:
            assert self.handshake is not None
            if self.handshake.get_timer() is None and now >= self._handshake_deadline:
                limit = self.config.handshake_timeout
                self._fail(
                    ProtocolError(ErrorCode.TIMEOUT, f"not authenticated within {limit:g} s")
                )
                return
            self.handshake.handle_timer(now)
            self._drain_handshake()
            if self._state is not _State.OPEN:
                return
        else:
            try:
                self.mux.handle_timer(now)
            except ProtocolError as e:
                self._fail(e)
                return
        if now >= self._last_sent + self.config.keepalive:
            if not self._control:
                self._queue_control(Frame(Channel.CONTROL, ControlType.KEEPALIVE, None, {}))
            self._last_sent = now  # re-armed again when it actually goes out

    def send_message(
        self, channel: Channel, type: int, body: dict[int | str, object]
    ) -> int | None:
        """Queue a message on the shared mux (convenience for the driver)."""
        if channel is Channel.CONTROL and type in (ControlType.ACK, ControlType.CLOSE):
            raise LocalProtocolError("ACK and CLOSE are sent by the connection itself")
        return self.mux.send(channel, type, body)
