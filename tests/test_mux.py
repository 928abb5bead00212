"""The channel multiplexer: order, windows, acknowledgements, retransmission."""

from __future__ import annotations

import pytest

from bridge.wire.channels import Channel, ControlType, Priority
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError, QueueFullError
from bridge.wire.frame import Frame
from bridge.wire.mux import Acknowledged, ChannelMux, MessageReceived, Scheduler


def drain(mux: ChannelMux, now: float = 0.0) -> list[Frame]:
    out = []
    for lane in Priority:
        while (f := mux.next_frame(lane, now)) is not None:
            out.append(f)
    return out


def deliver(mux: ChannelMux, frames: list[Frame], now: float = 0.0) -> list[MessageReceived]:
    """Receive frames and, like an application, finish with each message (commit it)."""
    out = []
    for f in frames:
        for e in mux.receive(f, now):
            if isinstance(e, MessageReceived):
                out.append(e)
                if e.seq is not None:
                    mux.commit(e.channel, e.seq, now)
    return out


def test_in_order_exactly_once_with_duplicates_dropped() -> None:
    a, b = ChannelMux(), ChannelMux()
    for i in range(5):
        a.send(Channel.NAVIGATION, 1, {0: i})
    frames = drain(a)
    got = [e for f in frames + frames for e in b.receive(f, 0.0)]  # everything twice
    assert [e.body[0] for e in got if isinstance(e, MessageReceived)] == [0, 1, 2, 3, 4]


def test_gap_is_a_protocol_error() -> None:
    b = ChannelMux()
    b.receive(Frame(Channel.AUDIO, 1, 0, {}), 0.0)
    with pytest.raises(ProtocolError) as info:
        b.receive(Frame(Channel.AUDIO, 1, 2, {}), 0.0)
    assert info.value.code is ErrorCode.SEQUENCE


def test_window_limits_unacknowledged_frames() -> None:
    a = ChannelMux(window=4, queue_limit=10)
    for i in range(10):
        a.send(Channel.MESSAGING, 1, {0: i})
    assert len(drain(a)) == 4
    with pytest.raises(QueueFullError):
        a.send(Channel.MESSAGING, 1, {})
    events = a.receive(
        Frame(Channel.CONTROL, ControlType.ACK, None, {int(Channel.MESSAGING): 1}), 0
    )
    assert events == [Acknowledged(Channel.MESSAGING, 0), Acknowledged(Channel.MESSAGING, 1)]
    assert [f.seq for f in drain(a)] == [4, 5]


def test_acks_piggyback_on_outgoing_frames() -> None:
    a, b = ChannelMux(), ChannelMux()
    a.send(Channel.NAVIGATION, 1, {})
    deliver(b, drain(a))
    b.send(Channel.AUDIO, 2, {0: 2})
    (reply,) = drain(b)
    assert reply.acks == {Channel.NAVIGATION: 0}
    assert a.receive(reply, 0.0)[0] == Acknowledged(Channel.NAVIGATION, 0)


def test_delayed_ack_then_standalone_ack() -> None:
    a, b = ChannelMux(ack_delay=0.05), ChannelMux(ack_delay=0.05)
    a.send(Channel.NAVIGATION, 1, {})
    deliver(b, drain(a), 1.0)
    assert drain(b, 1.0) == []  # nothing yet: the ack waits for a ride
    assert b.get_timer() == pytest.approx(1.05)
    b.handle_timer(1.05)
    (ack,) = drain(b, 1.05)
    assert (ack.channel, ack.type, ack.seq, ack.body) == (
        Channel.CONTROL,
        ControlType.ACK,
        None,
        {1: 0},
    )


def test_half_a_window_is_acked_at_once() -> None:
    a, b = ChannelMux(window=4), ChannelMux(window=4)
    for _ in range(2):
        a.send(Channel.MESSAGING, 1, {})
    deliver(b, drain(a))
    # at the same instant, no 50 ms wait: a standalone ACK of both
    assert drain(b, now=0.0) == [Frame(Channel.CONTROL, ControlType.ACK, None, {3: 1})]


def test_unacknowledged_frames_go_again_on_the_next_link() -> None:
    a, b = ChannelMux(), ChannelMux()
    for i in range(3):
        a.send(Channel.MESSAGING, 1, {0: i})
    first_link = drain(a)
    b.receive(first_link[0], 0.0)  # only the first arrives; the link drops
    a.link_up()
    b.link_up()
    second_link = drain(a)
    assert [f.seq for f in second_link] == [0, 1, 2]
    got = [e for f in second_link for e in b.receive(f, 0.0) if isinstance(e, MessageReceived)]
    assert [e.seq for e in got] == [1, 2]


def test_only_committed_frames_are_acknowledged() -> None:
    a, b = ChannelMux(), ChannelMux()
    for i in range(3):
        a.send(Channel.MESSAGING, 1, {0: i})
    for f in drain(a):
        b.receive(f, 0.0)  # delivered to the application, not yet finished
    b.handle_timer(10.0)
    assert drain(b, 10.0) == []  # nothing to acknowledge
    b.commit(Channel.MESSAGING, 1, 10.0)
    b.handle_timer(11.0)
    (ack,) = drain(b, 11.0)
    assert ack.body == {int(Channel.MESSAGING): 1}
    with pytest.raises(LocalProtocolError):
        b.commit(Channel.MESSAGING, 3, 11.0)  # never delivered


def test_a_commit_from_before_a_peer_restart_is_ignored() -> None:
    a, b = ChannelMux(), ChannelMux()
    for i in range(6):
        a.send(Channel.MESSAGING, 1, {0: i})
    for f in drain(a):
        b.receive(f, 0.0)  # seq 5 is still with the application when...
    generation = b.generation
    b.reset_incoming()  # ...the peer's HELLO shows a new epoch
    fresh = ChannelMux()
    fresh.send(Channel.MESSAGING, 1, {0: "new life"})
    deliver(b, drain(fresh))  # its seq 0, committed
    b.commit(Channel.MESSAGING, 5, 1.0, generation)  # stale: no error, no effect
    b.handle_timer(2.0)
    (ack,) = drain(b, 2.0)
    assert ack.body == {int(Channel.MESSAGING): 0}


def test_ack_timeout() -> None:
    a = ChannelMux(ack_timeout=30.0)
    a.send(Channel.AUDIO, 2, {})
    drain(a, 10.0)
    assert a.get_timer() == 40.0
    with pytest.raises(ProtocolError) as info:
        a.handle_timer(40.0)
    assert info.value.code is ErrorCode.TIMEOUT


def test_ack_of_a_frame_never_sent() -> None:
    a = ChannelMux()
    with pytest.raises(ProtocolError):
        a.receive(Frame(Channel.CONTROL, ControlType.ACK, None, {2: 0}), 0.0)


def test_priority_lanes_and_round_robin() -> None:
    a = ChannelMux()
    a.send(Channel.MESSAGING, 1, {0: "m"})
    a.send(Channel.AUDIO, 2, {0: "a1"})
    a.send(Channel.NAVIGATION, 1, {0: "n1"})
    a.send(Channel.AUDIO, 2, {0: "a2"})
    a.send(Channel.NAVIGATION, 1, {0: "n2"})
    assert a.lane_of(Channel.AUDIO) == Priority.INTERACTIVE
    assert [f.body[0] for f in drain(a)] == ["n1", "a1", "n2", "a2", "m"]


def test_fifo_scheduler_keeps_arrival_order_on_one_lane() -> None:
    a = ChannelMux(scheduler=Scheduler.FIFO)
    a.send(Channel.BULK, 1, {0: "b"})
    a.send(Channel.AUDIO, 2, {0: "a"})
    assert all(a.lane_of(c) == Priority.NORMAL for c in Channel)
    assert [f.body[0] for f in drain(a)] == ["b", "a"]


@pytest.mark.parametrize("body", [{"x": 1}, {1: "x"}, {9: 1}, {1: -1}])
def test_bad_ack_body(body: dict[int | str, object]) -> None:
    with pytest.raises(ProtocolError):
        ChannelMux().receive(Frame(Channel.CONTROL, ControlType.ACK, None, body), 0.0)
