"""ANCS and AMS byte for byte (bridge/wire/apple.py), both roles, and what bad bytes give."""

from __future__ import annotations

import pytest

from bridge.wire import apple as a
from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError

N = a.NotificationAttribute


def test_a_notification_source_event_is_eight_bytes_little_endian() -> None:
    # Apple's figure: added, important, social, count 3, uid 0x01020304
    raw = bytes.fromhex("0002040304030201")
    event = a.parse_notification_event(raw)
    assert event == a.NotificationEvent(
        a.EventId.ADDED, a.EventFlag.IMPORTANT, a.AncsCategory.SOCIAL, 3, 0x01020304
    )
    assert event.encode() == raw
    # room to grow: bytes past the eighth are ignored, unknown categories are Other
    assert a.parse_notification_event(raw + b"\xff").uid == 0x01020304
    assert a.parse_notification_event(bytes.fromhex("00ff2a0001000000")).category is (
        a.AncsCategory.OTHER
    )
    with pytest.raises(ProtocolError) as short:
        a.parse_notification_event(raw[:7])
    assert short.value.code is ErrorCode.MALFORMED
    with pytest.raises(ProtocolError) as unknown:
        a.parse_notification_event(bytes.fromhex("0300000001000000"))
    assert unknown.value.code is ErrorCode.UNSUPPORTED


def test_control_point_commands_as_apple_lays_them_out() -> None:
    command = a.get_notification_attributes(7, [(N.APP_IDENTIFIER, None), (N.TITLE, 64)])
    assert command == bytes.fromhex("00 07000000 00 01 4000")
    assert a.parse_command(command) == a.GetNotificationAttributes(
        7, ((N.APP_IDENTIFIER, None), (N.TITLE, 64))
    )
    assert a.get_app_attributes("com.apple.MobileSMS") == b"\x01com.apple.MobileSMS\x00\x00"
    assert a.perform_notification_action(7, a.ActionId.NEGATIVE) == bytes.fromhex("02070000 0001")
    with pytest.raises(LocalProtocolError):
        a.get_notification_attributes(1, [(N.MESSAGE, None)])  # Message needs its length
    with pytest.raises(LocalProtocolError):
        a.get_app_attributes("a\0b")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", a.AncsError.INVALID_COMMAND),
        (b"\x07", a.AncsError.UNKNOWN_COMMAND),
        (b"\x00\x01\x00", a.AncsError.INVALID_COMMAND),  # no full uid
        (b"\x00\x01\x00\x00\x00", a.AncsError.INVALID_COMMAND),  # no attribute
        (b"\x00\x01\x00\x00\x00\x03\x10", a.AncsError.INVALID_COMMAND),  # half a length
        (b"\x00\x01\x00\x00\x00\x09", a.AncsError.INVALID_PARAMETER),  # unknown attribute
        (b"\x01com.app", a.AncsError.INVALID_COMMAND),  # no NUL
        (b"\x01\xff\xfe\x00\x00", a.AncsError.INVALID_PARAMETER),  # not UTF-8
        (b"\x02\x01\x00\x00\x00\x02", a.AncsError.INVALID_PARAMETER),  # action 2
    ],
)
def test_a_provider_refuses_bad_commands_with_apples_att_errors(
    raw: bytes, error: a.AncsError
) -> None:
    with pytest.raises(a.CommandError) as refused:
        a.parse_command(raw)
    assert refused.value.att_error is error
    assert isinstance(refused.value, ProtocolError)


def test_an_answer_spanning_notifications_is_reassembled() -> None:
    request = a.get_notification_attributes(9)
    values = [
        (N.APP_IDENTIFIER, b"com.apple.MobileSMS"),
        (N.TITLE, a.truncate("Ana", 64)),
        (N.SUBTITLE, b""),
        (N.MESSAGE, a.truncate("On my way " * 80, 512)),
        (N.DATE, b"20261202T081500"),
        (N.POSITIVE_ACTION_LABEL, b""),
        (N.NEGATIVE_ACTION_LABEL, "Löschen".encode()),
    ]
    answer = a.encode_notification_attributes(9, values)
    chunks = a.split_answer(answer, 23)
    assert len(chunks) > 20 and all(len(c) <= 20 for c in chunks)
    assembler = a.DataSourceAssembler()
    assembler.expect(request)
    results = [assembler.feed(c) for c in chunks]
    assert results[:-1] == [None] * (len(chunks) - 1)
    done = results[-1]
    assert isinstance(done, a.NotificationAttributes) and done.uid == 9
    assert done.values[N.MESSAGE] == ("On my way " * 80)[:512]
    assert done.values[N.NEGATIVE_ACTION_LABEL] == "Löschen"
    assert not assembler.pending
    assert a.parse_date(done.values[N.DATE]) == (2026, 12, 2, 8, 15, 0)


def test_an_app_answer_and_a_value_cut_mid_character() -> None:
    assembler = a.DataSourceAssembler()
    assembler.expect(a.get_app_attributes("com.whatsapp"))
    cut = "Žéna".encode()[:2]  # a two-byte character, then the first byte of the next
    answer = a.encode_app_attributes("com.whatsapp", [(a.AppAttribute.DISPLAY_NAME, cut + b"\xc3")])
    got = assembler.feed(answer)
    assert got == a.AppAttributes("com.whatsapp", {a.AppAttribute.DISPLAY_NAME: "Ž"})
    assert a.truncate("Žéna", 3) == "Ž".encode()  # the provider cuts at a boundary


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (b"\x01\x09\x00\x00\x00", ErrorCode.INVALID_MESSAGE),  # another command
        (b"\x00\x08\x00\x00\x00", ErrorCode.INVALID_MESSAGE),  # another uid
        (b"\x00\x09\x00\x00\x00\x06\x00\x00", ErrorCode.INVALID_MESSAGE),  # not asked for
        (b"\x00\x09\x00\x00\x00\x01\x02\x00\xff\xfe", ErrorCode.MALFORMED),  # not UTF-8
        (b"\x00\x09\x00\x00\x00\x01\x00\x00\x01\x00\x00\x00", ErrorCode.MALFORMED),  # twice
        (b"\x00\x09\x00\x00\x00\x01\x00\x00\x07", ErrorCode.MALFORMED),  # bytes past the end
        (b"\x00\x09\x00\x00\x00\x01\xff\xff" + bytes(3000), ErrorCode.TOO_LARGE),
    ],
)
def test_broken_answers_are_the_protocols_error(answer: bytes, code: ErrorCode) -> None:
    assembler = a.DataSourceAssembler()
    assembler.expect(a.get_notification_attributes(9, [(N.TITLE, 8)]))
    with pytest.raises(ProtocolError) as broken:
        assembler.feed(answer)
    assert broken.value.code is code
    assert not assembler.pending  # forgotten: the consumer may ask again
    with pytest.raises(ProtocolError):
        assembler.feed(b"\x00")  # nothing expected now


def test_ams_updates_commands_and_playback_info() -> None:
    assert a.register(a.Entity.TRACK, list(a.TrackAttribute)) == bytes((2, 0, 1, 2, 3))
    update = a.EntityUpdate(a.Entity.TRACK, a.TrackAttribute.TITLE, True, "Blue in Gr")
    assert update.encode() == b"\x02\x02\x01Blue in Gr"
    assert a.parse_entity_update(update.encode()) == update
    assert a.entity_attribute_request(a.Entity.TRACK, a.TrackAttribute.TITLE) == b"\x02\x02"
    assert a.parse_supported_commands(bytes((0, 1, 2, 3, 99))) == {
        a.RemoteCommand.PLAY,
        a.RemoteCommand.PAUSE,
        a.RemoteCommand.TOGGLE_PLAY_PAUSE,
        a.RemoteCommand.NEXT_TRACK,
    }
    assert a.parse_remote_command(b"\x04") is a.RemoteCommand.PREVIOUS_TRACK
    info = a.parse_playback_info("1,2.0,10.5")
    assert info == a.PlaybackInfo(a.PlaybackStateId.PLAYING, 2.0, 10.5)
    assert info.elapsed_at(3.0) == 16.5  # fast-forwarding at twice the rate
    paused = a.parse_playback_info("0,0.0,42.0")
    assert paused is not None and paused.elapsed_at(100) == 42.0
    assert a.parse_playback_info("") is None
    assert a.parse_number("215.3", "duration") == 215.3
    for bad in ("1,1.0", "x,1,1", "9,1,1", "1,nan,1", "1,1,inf"):
        with pytest.raises(ProtocolError):
            a.parse_playback_info(bad)
    for raw in (b"", b"\x02\x02", b"\x05\x00\x00x", b"\x02\x02\x00\xff"):
        with pytest.raises(ProtocolError):
            a.parse_entity_update(raw)
    for raw in (b"", b"\x0e", b"\x00\x01"):
        with pytest.raises(ProtocolError):
            a.parse_remote_command(raw)
