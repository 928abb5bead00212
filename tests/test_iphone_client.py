"""The head unit's ANCS/AMS client (bridge/wire/apple_client.py) against the emulated iPhone's
services (bridge/wire/apple_provider.py), joined in memory: each request the
client hands out is performed on the services, whose answers go back as notifications
would. The radio and GATT between them are tests/test_iphone_radio.py's."""

from __future__ import annotations

import pytest

from bridge.wire import apple as a
from bridge.wire import messages as m
from bridge.wire.apple_client import (
    NEGATIVE,
    POSITIVE,
    AppleClient,
    MediaCommands,
    Read,
    Unsupported,
    Write,
)
from bridge.wire.apple_provider import IPhoneServices, PostedNotification
from bridge.wire.errors import ProtocolError


class Pair:
    def __init__(self, mtu: int = 185) -> None:
        self.now = 0
        self.actions: list[tuple[int, a.ActionId]] = []
        self.phone = IPhoneServices(att_mtu=mtu, on_action=self._action)
        self.client = AppleClient()
        self.client.start()
        self.writes: list[Write] = []

    def _action(self, uid: int, action: a.ActionId) -> bool:
        self.actions.append((uid, action))
        self.phone.remove(uid)
        return True

    def notify_source(self, value: bytes) -> None:
        self.client.on_notification_source(value)

    def pump(self) -> list[object]:
        """Run every request the client hands out until it has none."""
        while (request := self.client.next_request(self.now)) is not None:
            if isinstance(request, Read):
                self.client.on_read(request, self.phone.read_attribute())
                continue
            self.writes.append(request)
            try:
                answers = self._perform(request)
            except a.CommandError as e:
                self.client.on_written(request, e.att_error)
                continue
            self.client.on_written(request, None)
            for characteristic, value in answers:
                if characteristic == a.DATA_SOURCE:
                    self.client.on_data_source(value)
                else:
                    self.client.on_entity_update(value, self.now)
        return list(self.client.pop_events())

    def _perform(self, request: Write) -> list[tuple[object, bytes]]:
        if request.characteristic == a.CONTROL_POINT:
            return [(a.DATA_SOURCE, v) for v in self.phone.control_point(request.value)]
        if request.characteristic == a.ENTITY_UPDATE:
            return [(a.ENTITY_UPDATE, v) for v in self.phone.register(request.value)]
        if request.characteristic == a.ENTITY_ATTRIBUTE:
            self.phone.select_attribute(request.value)
            return []
        if request.characteristic == a.REMOTE_COMMAND:
            return [(a.ENTITY_UPDATE, v) for v in self.phone.remote_command(request.value)]
        raise AssertionError(request)


def ids(events: list[object]) -> list[str]:
    return [e.id for e in events if isinstance(e, m.Notification)]


def _message() -> PostedNotification:
    return PostedNotification(
        "com.apple.MobileSMS", a.AncsCategory.SOCIAL, title="Ana", message="On my way",
        negative="Clear",
    )  # fmt: skip


def test_a_scripted_day_message_call_calendar_and_music() -> None:
    pair = Pair(mtu=23)  # every answer spans several Data Source values
    phone = pair.phone
    phone.apps = {"com.apple.MobileSMS": "Messages", "com.apple.mobilephone": "Phone",
                  "com.apple.mobilecal": "Calendar"}  # fmt: skip
    pair.pump()  # the AMS registrations: nothing plays yet
    pair.notify_source(phone.post(_message()))
    call = PostedNotification(
        "com.apple.mobilephone", a.AncsCategory.INCOMING_CALL, title="Mum",
        message="Incoming call", positive="Answer", negative="Decline",
    )  # fmt: skip
    pair.notify_source(phone.post(call))
    pair.notify_source(
        phone.post(
            PostedNotification(
                "com.apple.mobilecal",
                a.AncsCategory.SCHEDULE,
                title="Dentist",
                message="In 15 minutes",
            )
        )
    )
    events = pair.pump()
    notes = [e for e in events if isinstance(e, m.Notification)]
    assert [(n.id, n.app, n.category, n.text) for n in notes] == [
        ("1", "Messages", m.Category.MESSAGE, "On my way"),
        ("2", "Phone", m.Category.INCOMING_CALL, "Incoming call"),
        ("3", "Calendar", m.Category.SCHEDULE, "In 15 minutes"),
    ]
    assert notes[0].sender == "Ana" and notes[2].title == "Dentist"
    assert notes[0].actions == [m.Action(NEGATIVE, "Clear", m.ActionKind.DISMISS)]
    assert notes[1].actions == [
        m.Action(POSITIVE, "Answer", m.ActionKind.CUSTOM),
        m.Action(NEGATIVE, "Decline", m.ActionKind.DISMISS),
    ]
    # one app-name request per app, not per notification
    pair.notify_source(phone.post(_message()))
    events = pair.pump()
    app_asks = [
        w for w in pair.writes if w.characteristic == a.CONTROL_POINT and w.value[:1] == b"\x01"
    ]
    assert len(app_asks) == 3
    assert [e.app for e in events if isinstance(e, m.Notification)] == ["Messages"]

    # answering the call is its positive action; the iPhone removes it
    pair.client.perform_action("2", POSITIVE)
    pair.pump()
    assert pair.actions == [(2, a.ActionId.POSITIVE)]
    gone = a.NotificationEvent(
        a.EventId.REMOVED, a.EventFlag(0), a.AncsCategory.INCOMING_CALL, 0, 2
    )
    pair.notify_source(gone.encode())
    assert pair.pump() == [m.NotificationRemoved("2")]
    with pytest.raises(Unsupported):
        pair.client.perform_action("2", NEGATIVE)  # gone
    with pytest.raises(Unsupported):
        pair.client.perform_action("1", "reply")  # no replies without the app

    # music: a long title arrives truncated and is read whole
    phone.player.supported = frozenset({a.RemoteCommand.PLAY, a.RemoteCommand.PAUSE,
                                        a.RemoteCommand.NEXT_TRACK})  # fmt: skip
    pair.client.on_remote_command(phone.supported_commands())
    player = phone.player
    player.name, player.artist, player.album = "Music", "Miles Davis", "Kind of Blue"
    player.title, player.duration = "Blue in Green (Take 3, alternate)", 337.0
    player.state, player.rate, player.elapsed = a.PlaybackStateId.PLAYING, 1.0, 12.0
    pair.now = 1_000
    for value in phone.updates():
        pair.client.on_entity_update(value, pair.now)
    events = pair.pump()
    assert MediaCommands(player.supported) in [*events, MediaCommands(player.supported)]
    playing = pair.client.now_playing()
    assert playing.title == "Blue in Green (Take 3, alternate)"  # read whole
    assert (playing.artist, playing.album, playing.source_app) == (
        "Miles Davis",
        "Kind of Blue",
        "Music",
    )
    assert playing.state is m.PlaybackState.PLAYING and playing.duration_ms == 337_000
    assert pair.client.position_ms(4_000) == 15_000  # 12 s + 3 s at rate 1
    # pause from the car: offered, sent, and the player's update follows
    pair.client.media(m.MediaCommand.PAUSE)
    pair.now = 5_000
    player.elapsed = 16.0
    pair.pump()
    assert phone.commands == [a.RemoteCommand.PAUSE]
    assert pair.client.now_playing().state is m.PlaybackState.PAUSED
    assert pair.client.position_ms(60_000) == 16_000
    with pytest.raises(Unsupported):
        pair.client.media(m.MediaCommand.VOLUME_UP)  # not in the iPhone's list


def test_fast_forward_extrapolates_with_the_rate() -> None:
    pair = Pair()
    pair.pump()
    player = pair.phone.player
    player.state, player.rate, player.elapsed, player.duration = (
        a.PlaybackStateId.FAST_FORWARDING, 2.0, 30.0, 40.0,
    )  # fmt: skip
    for value in pair.phone.updates():
        pair.client.on_entity_update(value, 0)
    assert pair.client.position_ms(2_000) == 34_000
    assert pair.client.position_ms(60_000) == 40_000  # not past the end


def test_pre_existing_notifications_are_not_announced_again() -> None:
    pair = Pair()
    pair.phone.apps = {"com.apple.MobileSMS": "Messages"}
    pair.notify_source(pair.phone.post(_message()))
    assert ids(pair.pump()) == ["1"]
    # the link dropped; on the new one the iPhone lists what it holds, and one more
    pair.phone.post(_message())
    for value in pair.phone.existing():
        pair.notify_source(value)
    events = pair.pump()
    assert ids(events) == ["2"]


def test_a_refused_or_unfinished_answer_drops_only_that_notification() -> None:
    pair = Pair()
    pair.phone.apps = {"com.apple.MobileSMS": "Messages"}
    # a uid the iPhone does not know: 0xA2; the next notification still comes
    pair.notify_source(
        a.NotificationEvent(a.EventId.ADDED, a.EventFlag(0), a.AncsCategory.SOCIAL, 1, 99).encode()
    )
    pair.notify_source(pair.phone.post(_message()))
    assert ids(pair.pump()) == ["1"]
    assert pair.client.errors == 1
    # an answer that never finishes: given up at the deadline, the next one goes on
    pair.notify_source(pair.phone.post(_message()))
    request = pair.client.next_request(0)
    assert isinstance(request, Write) and request.characteristic == a.CONTROL_POINT
    first = pair.phone.control_point(request.value)[0]
    pair.client.on_data_source(first[:6])  # half of it, and nothing more
    pair.notify_source(pair.phone.post(_message()))
    assert pair.client.next_request(1_000) is None  # still waiting
    pair.client.on_timer(pair.client.deadline() or 0)
    pair.now = 6_000
    assert ids(pair.pump()) == ["3"]
    # hostile Data Source bytes: the protocol's error, and the client goes on
    pair.notify_source(pair.phone.post(_message()))
    request = pair.client.next_request(6_000)
    assert request is not None
    with pytest.raises(ProtocolError):
        pair.client.on_data_source(b"\x00\xff\xff\xff\xff")
    pair.notify_source(pair.phone.post(_message()))
    assert ids(pair.pump()) == ["5"]


def test_the_provider_truncates_and_refuses_as_an_iphone_does() -> None:
    phone = IPhoneServices(att_mtu=23)
    phone.post(PostedNotification("a", a.AncsCategory.OTHER, title="Ž" * 40))
    chunks = phone.control_point(
        a.get_notification_attributes(1, [(a.NotificationAttribute.TITLE, 5)])
    )
    assert b"".join(chunks) == bytes.fromhex("00 01000000 01 0400") + "ŽŽ".encode()
    with pytest.raises(a.CommandError) as refused:
        phone.control_point(a.perform_notification_action(1, a.ActionId.POSITIVE))
    assert refused.value.att_error is a.AncsError.ACTION_FAILED  # it has no positive action
    with pytest.raises(a.CommandError) as unknown:
        phone.control_point(b"\x05")
    assert unknown.value.att_error is a.AncsError.UNKNOWN_COMMAND
