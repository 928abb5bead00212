"""The channel multiplexer: ordered, acknowledged delivery per channel, across links (sans-IO).

Strategy. One :class:`ChannelMux` per peer outlives any one link. Each channel numbers
its sequenced frames (0, 1, 2, ...); the receiver delivers them in order, drops
duplicates, and acknowledges cumulatively ("everything up to seq N"). Acknowledgements
ride on any frame going the other way (the ``acks`` element) and otherwise go in a
standalone ACK frame, at once when half a window is owed, or after ``ack_delay``.

A sender keeps at most ``window`` unacknowledged frames per channel in flight and at most
``queue_limit`` frames per channel in all; :meth:`ChannelMux.send` raises
:class:`~bridge.wire.errors.QueueFullError` beyond that. When a link ends, unacknowledged
frames stay; :meth:`ChannelMux.link_up` on the next link puts them first in line again,
and the receiver's duplicate check makes delivery exactly once. A receiver that has no
state for a channel (a fresh process) accepts whatever sequence number comes first.

Acknowledgements cover only what the application has *finished* with
(:meth:`ChannelMux.commit`; the session commits an event when the application asks for
the next one), so a frame the sender forgets was really handled.

Scheduling: every channel has a priority class (:data:`CHANNEL_PRIORITY`), which is the
segmentation lane its frames use; the segmenter interleaves lanes segment by segment,
most urgent first, and within a class the mux takes channels in turn (round robin), so
channels of equal priority share fairly. ``Scheduler.FIFO`` puts every frame on one
lane in arrival order; it exists to be measured against.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from bridge.wire.channels import CHANNEL_PRIORITY, Channel, ControlType, Priority
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError, QueueFullError
from bridge.wire.frame import Body, Frame


class Scheduler(Enum):
    PRIORITY = "priority"
    FIFO = "fifo"


#: The lane every frame uses under the FIFO scheduler.
FIFO_LANE = Priority.NORMAL


@dataclass(frozen=True)
class MessageReceived:
    """A frame delivered in order (once) to the application."""

    channel: Channel
    type: int
    seq: int | None
    body: Body


@dataclass(frozen=True)
class Acknowledged:
    """The peer has acknowledged our frame ``seq`` on ``channel``."""

    channel: Channel
    seq: int


MuxEvent = MessageReceived | Acknowledged


@dataclass
class _Item:
    type: int
    seq: int | None
    body: Body
    order: int
    sent_at: float | None = None


@dataclass
class _Outgoing:
    next_seq: int = 0
    pending: deque[_Item] = field(default_factory=deque)  # not yet sent on this link
    unacked: deque[_Item] = field(default_factory=deque)  # sent, awaiting ack


@dataclass
class _Incoming:
    expected: int | None = None  # next seq to deliver; None: no state yet
    committed: int | None = None  # highest seq the application has finished with
    ack_owed: bool = False
    owed_count: int = 0
    owed_since: float | None = None


class ChannelMux:
    def __init__(
        self,
        *,
        window: int = 16,
        queue_limit: int = 64,
        ack_delay: float = 0.05,
        ack_timeout: float = 30.0,
        scheduler: Scheduler = Scheduler.PRIORITY,
        epoch: bytes | None = None,
    ) -> None:
        if window < 1 or queue_limit < window:
            raise LocalProtocolError("need 1 <= window <= queue_limit")
        self.window = window
        self.queue_limit = queue_limit
        self.ack_delay = ack_delay
        self.ack_timeout = ack_timeout
        self.scheduler = scheduler
        #: Names this mux's sequence numbering; a restarted sender has a new one.
        self.epoch = epoch if epoch is not None else os.urandom(8)
        self._peer_known = True  # acknowledgements may go (see link_up)
        #: The peer's epoch as its HELLO last said.
        self.peer_epoch: bytes | None = None
        #: Counts resets of the incoming side, so stale commits can be told apart.
        self.generation = 0
        self._handed_out: tuple[Channel, int, int] | None = None  # channel, seq, generation
        self._out = {c: _Outgoing() for c in Channel}
        self._in = {c: _Incoming() for c in Channel}
        self._order = itertools.count()
        self._rr = [0] * len(Priority)
        # per lane (by its number): its channels with their queues, looked up once here
        # rather than per segment (the segmenter asks every idle lane for each one)
        self._lane_channels = [
            [(c, self._out[c]) for c in Channel if CHANNEL_PRIORITY[c] is p] for p in Priority
        ]
        self._ack_now = False
        #: Counts every change that could make :meth:`next_frame` return a frame where it
        #: returned None (a message queued, an acknowledgement owed or received, a timer,
        #: a new link): a driver that asked for a lane and got None need not ask again
        #: until it moves (the segmenter asks every idle lane for every segment).
        self.changes = 0
        self._sendable = (-1, False)  # (changes, has_sendable()) when last asked

    # -- application side -------------------------------------------------------------

    def send(
        self, channel: Channel, type: int, body: Body, *, sequenced: bool = True
    ) -> int | None:
        """Queue a message; returns its sequence number (None if unsequenced)."""
        self.changes += 1
        out = self._out[channel]
        if len(out.pending) + len(out.unacked) >= self.queue_limit:
            raise QueueFullError(
                f"{channel.name.lower()} channel has {self.queue_limit} messages waiting"
            )
        seq = None
        if sequenced:
            seq = out.next_seq
            out.next_seq += 1
        out.pending.append(_Item(type, seq, body, next(self._order)))
        return seq

    def queued(self, channel: Channel) -> int:
        """Messages on ``channel`` not yet acknowledged (sent or not)."""
        out = self._out[channel]
        return len(out.pending) + len(out.unacked)

    def has_room(self, channel: Channel) -> bool:
        return self.queued(channel) < self.queue_limit

    # -- link lifecycle ---------------------------------------------------------------

    def link_up(self, *, await_hello: bool = False) -> None:
        """A new link: unacknowledged frames go again, first; tell the peer where we are.
        ``await_hello``: hold every acknowledgement until :meth:`peer_hello_seen`, since
        until the peer's HELLO says its epoch, what we owe may be for a peer that has
        since restarted (and would take an acknowledgement of frames it never sent as a
        protocol error)."""
        self.changes += 1
        self._peer_known = not await_hello
        for out in self._out.values():
            for item in reversed(out.unacked):
                item.sent_at = None
                out.pending.appendleft(item)
            out.unacked.clear()
        for inc in self._in.values():
            inc.owed_since = None
            if inc.committed is not None:
                inc.ack_owed = True
        self._ack_now = any(inc.ack_owed for inc in self._in.values())

    def peer_hello_seen(self) -> None:
        """The peer's HELLO on this link is in (and a new epoch's reset done): owed
        acknowledgements may go."""
        self.changes += 1
        self._peer_known = True

    # -- sending ----------------------------------------------------------------------

    def has_sendable(self) -> bool:
        """True if :meth:`next_frame` would return a frame for some lane."""
        if self._sendable[0] == self.changes:
            return self._sendable[1]
        sendable = (self._ack_now and self._peer_known) or any(self._eligible(c) for c in Channel)
        self._sendable = (self.changes, sendable)
        return sendable

    def lane_of(self, channel: Channel) -> int:
        if self.scheduler is Scheduler.FIFO:
            return FIFO_LANE
        return CHANNEL_PRIORITY[channel]

    def _eligible(self, channel: Channel) -> bool:
        out = self._out[channel]
        if not out.pending:
            return False
        return out.pending[0].seq is None or len(out.unacked) < self.window

    def _pick(self, lane: int) -> Channel | None:
        if self.scheduler is Scheduler.FIFO:
            if lane != FIFO_LANE:
                return None
            ready = [c for c in Channel if self._eligible(c)]
            return min(ready, key=lambda c: self._out[c].pending[0].order, default=None)
        channels = self._lane_channels[lane]
        count = len(channels)
        start = self._rr[lane]
        for i in range(count):
            channel, out = channels[(start + i) % count]
            if out.pending and (out.pending[0].seq is None or len(out.unacked) < self.window):
                self._rr[lane] = (start + i + 1) % count
                return channel
        return None

    def next_frame(self, lane: int, now: float) -> Frame | None:
        """The next frame for ``lane``, with any acknowledgements we owe riding on it."""
        channel = self._pick(lane)
        if channel is None:
            if self._ack_now and self._peer_known and lane == self.lane_of(Channel.CONTROL):
                body: Body = {int(c): s for c, s in self._take_acks().items()}
                return Frame(Channel.CONTROL, ControlType.ACK, None, body)
            return None
        self.changes += 1
        out = self._out[channel]
        item = out.pending.popleft()
        if item.seq is not None:
            item.sent_at = now
            out.unacked.append(item)
        acks = self._take_acks() if self._peer_known else {}
        return Frame(channel, item.type, item.seq, item.body, acks)

    def _take_acks(self) -> dict[Channel, int]:
        acks: dict[Channel, int] = {}
        for channel, inc in self._in.items():
            if inc.ack_owed and inc.committed is not None:
                acks[channel] = inc.committed
            inc.ack_owed = False
            inc.owed_count = 0
            inc.owed_since = None
        self._ack_now = False
        return acks

    # -- receiving --------------------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> list[MuxEvent]:
        """Process a frame from the peer; returns what it delivers or acknowledges."""
        self.changes += 1
        events: list[MuxEvent] = list(self._acknowledge(frame.acks))
        if frame.channel is Channel.CONTROL and frame.type == ControlType.ACK:
            events.extend(self._acknowledge(_parse_ack_body(frame.body)))
            return events
        if frame.seq is None:
            events.append(MessageReceived(frame.channel, frame.type, None, frame.body))
            return events
        inc = self._in[frame.channel]
        if inc.expected is not None and frame.seq < inc.expected:
            if inc.committed is not None:
                self._owe_ack(inc, now)  # a duplicate: the peer may have missed our ack
            return events
        if inc.expected is not None and frame.seq > inc.expected:
            raise ProtocolError(
                ErrorCode.SEQUENCE,
                f"{frame.channel.name.lower()} frame {frame.seq}, expected {inc.expected}",
            )
        inc.expected = frame.seq + 1
        events.append(MessageReceived(frame.channel, frame.type, frame.seq, frame.body))
        return events

    def commit(self, channel: Channel, seq: int, now: float, generation: int | None = None) -> None:
        """The application has finished with our peer's frame ``seq`` on ``channel``: it
        may be acknowledged. Only committed frames are ever acknowledged, so a crash of
        the application never loses a frame the peer believes delivered. A commit from
        before :meth:`reset_incoming` (an older ``generation``) is stale and ignored."""
        if generation is not None and generation != self.generation:
            return
        self.changes += 1
        inc = self._in[channel]
        if inc.expected is None or seq >= inc.expected:
            raise LocalProtocolError(f"commit of {channel.name.lower()} {seq}, never delivered")
        if inc.committed is None or seq > inc.committed:
            inc.committed = seq
            self._owe_ack(inc, now)

    def hand_out(self, channel: Channel, seq: int) -> None:
        """The application has been given the peer's frame ``seq`` on ``channel``;
        :meth:`commit_handed_out` commits it once the application asks for the next one.
        One message is out at a time, whichever link delivered it."""
        self._handed_out = (channel, seq, self.generation)

    def commit_handed_out(self, now: float) -> bool:
        """Commit the message handed out last, if any; True if there was one."""
        if self._handed_out is None:
            return False
        channel, seq, generation = self._handed_out
        self._handed_out = None
        self.commit(channel, seq, now, generation)
        return True

    def reset_incoming(self) -> None:
        """The peer restarted its numbering (a new epoch): accept its next frames afresh."""
        self.changes += 1
        self.generation += 1
        for inc in self._in.values():
            inc.expected = inc.committed = None
            inc.ack_owed = False
            inc.owed_count = 0
            inc.owed_since = None

    def _owe_ack(self, inc: _Incoming, now: float) -> None:
        inc.ack_owed = True
        inc.owed_count += 1
        if inc.owed_since is None:
            inc.owed_since = now
        if inc.owed_count >= max(1, self.window // 2):
            self._ack_now = True

    def _acknowledge(self, acks: Mapping[Channel, int]) -> list[Acknowledged]:
        done: list[Acknowledged] = []
        for channel, upto in acks.items():
            out = self._out[channel]
            if upto >= out.next_seq:
                raise ProtocolError(
                    ErrorCode.SEQUENCE,
                    f"ack of {channel.name.lower()} frame {upto}, never sent",
                )
            for queue in (out.unacked, out.pending):
                while queue and queue[0].seq is not None and queue[0].seq <= upto:
                    done.append(Acknowledged(channel, queue[0].seq))
                    queue.popleft()
        return done

    # -- timers -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to do."""
        # (asked before every packet: plain loops, no lists)
        best: float | None = None
        if not self._ack_now and self._peer_known:  # once due, the next frame carries it
            for inc in self._in.values():
                if inc.owed_since is not None:
                    at = inc.owed_since + self.ack_delay
                    if best is None or at < best:
                        best = at
        for out in self._out.values():
            if out.unacked:
                sent_at = out.unacked[0].sent_at
                if sent_at is not None:
                    at = sent_at + self.ack_timeout
                    if best is None or at < best:
                        best = at
        return best

    def handle_timer(self, now: float) -> None:
        """Make delayed acks due; raise ProtocolError(TIMEOUT) if the peer stopped acking."""
        self.changes += 1
        for inc in self._in.values():
            if inc.owed_since is not None and inc.owed_since + self.ack_delay <= now:
                self._ack_now = True
        for channel, out in self._out.items():
            sent_at = out.unacked[0].sent_at if out.unacked else None
            if sent_at is not None and sent_at + self.ack_timeout <= now:
                raise ProtocolError(
                    ErrorCode.TIMEOUT,
                    f"no acknowledgement on {channel.name.lower()} for {self.ack_timeout:g} s",
                )


def _parse_ack_body(body: Body) -> dict[Channel, int]:
    acks: dict[Channel, int] = {}
    for key, value in body.items():
        if type(key) is not int or type(value) is not int or not 0 <= value <= 0xFFFFFFFF:
            raise ProtocolError(ErrorCode.MALFORMED, "bad ACK body")
        try:
            acks[Channel(key)] = value
        except ValueError:
            raise ProtocolError(ErrorCode.UNSUPPORTED, f"ACK for unknown channel {key}") from None
    return acks
