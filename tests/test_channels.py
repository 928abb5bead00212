"""Channels end to end: every message both ways, validation, versions, time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bridge.emulation.phone_app import HISTORY
from bridge.phone_device import ArtReceived, CommandFailed, ManeuverImageReceived
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.errors import ErrorCode
from tests.app_helpers import Rig, hu_hello, phone_hello, wait_for

LANES = [
    m.Lane([m.LaneDirection.LEFT], False),
    m.Lane([m.LaneDirection.STRAIGHT, m.LaneDirection.RIGHT], True),
]
ROUNDABOUT = m.Maneuver(
    m.ManeuverType.ROUNDABOUT_ENTER_AND_EXIT, 250, "250", m.DistanceUnit.METERS, "Étoile",
    roundabout_exit=3, rotation=m.Rotation.COUNTERCLOCKWISE, lanes=LANES,
)  # fmt: skip
TRACKS = [
    m.NowPlaying("Midnight City", "M83", "Hurry Up, We're Dreaming", 243_000, source_app="Spotify"),
    m.NowPlaying("Intro", "The xx", "xx", 127_000, source_app="Spotify"),
]
MEDIA_COMMANDS = [
    (m.MediaCommand.PAUSE, None), (m.MediaCommand.PLAY, None), (m.MediaCommand.TOGGLE, None),
    (m.MediaCommand.NEXT, None), (m.MediaCommand.PREVIOUS, None), (m.MediaCommand.SEEK, 60_000),
    (m.MediaCommand.VOLUME_UP, None), (m.MediaCommand.VOLUME_DOWN, None),
    (m.MediaCommand.VOLUME_SET, 30), (m.MediaCommand.SHUFFLE, 1), (m.MediaCommand.REPEAT, 2),
    (m.MediaCommand.LIKE, None), (m.MediaCommand.DISLIKE, None), (m.MediaCommand.BOOKMARK, None),
    (m.MediaCommand.SKIP_FORWARD, None), (m.MediaCommand.SKIP_BACKWARD, None),
]  # fmt: skip
NOTE = m.Notification(
    "n1", "WhatsApp", m.Category.MESSAGE, "Running 10 minutes late", 0, "Anna", "Anna", "t1",
    actions=[
        m.Action("reply", "Reply", m.ActionKind.REPLY), m.Action("thumb", "👍", m.ActionKind.CUSTOM)
    ],
    canned_replies=["On my way", "Call you later"],
)  # fmt: skip


async def test_every_message_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.hu.run)
        nursery.start_soon(rig.phone.run)
        await rig.link(nursery)
        hello = await wait_for(rig.hu, m.Hello)
        assert hello.name == "Pixel 9" and rig.hu.version == 2 and rig.phone.version == 2
        # navigation
        await rig.phone.set_route(
            m.RouteStatus(m.RouteState.ACTIVE, "Elm Rd 42", 1_000_000, 5400, 720)
        )
        await rig.phone.maneuver(ROUNDABOUT, image=b"\x89PNG" + bytes(5000))
        await wait_for(rig.hu, ManeuverImageReceived)
        assert rig.hu.state.maneuver is not None and rig.hu.state.maneuver.roundabout_exit == 3
        assert rig.hu.state.maneuver.lanes == ROUNDABOUT.lanes
        assert rig.hu.state.route is not None and rig.hu.state.route.remaining_m == 5400
        assert rig.hu.state.maneuver_image == b"\x89PNG" + bytes(5000)
        await rig.hu.guidance(False)
        await wait_for(rig.hu, m.RouteStatus, lambda e: e.state is m.RouteState.INACTIVE)
        await rig.hu.guidance(True, "Home")
        assert rig.phone.route.destination == "Home"
        # audio: now playing with art, then every command
        await rig.phone.play(TRACKS, art=bytes(range(256)) * 40)
        await wait_for(rig.hu, ArtReceived)
        assert rig.hu.state.art == bytes(range(256)) * 40
        for command, value in MEDIA_COMMANDS:
            result = await rig.hu.media(command, value)
            assert result.ok, command
        received = [c.command for c in rig.phone.commands if isinstance(c, m.MediaCommandRequest)]
        assert received == [command for command, _ in MEDIA_COMMANDS]
        assert rig.phone.volume == 30
        await trio.sleep(0.5)
        playing = rig.hu.state.now_playing
        assert playing is not None and playing.shuffle and playing.repeat is m.RepeatMode.ALL
        # messaging
        await rig.phone.notify(NOTE)
        await wait_for(rig.hu, m.Notification)
        assert rig.hu.state.inbox["n1"].notification == NOTE  # every field, unchanged
        await rig.hu.mark_read("n1")
        await rig.hu.reply("n1", text="See you soon")
        await rig.hu.reply("n1", canned=1)
        await rig.hu.perform_action("n1", "thumb")
        with pytest.raises(CommandFailed, match="no action"):
            await rig.hu.perform_action("n1", "nope")
        await rig.hu.dismiss("n1")
        await wait_for(rig.hu, m.NotificationRemoved)
        assert "n1" not in rig.hu.state.inbox and rig.hu.state.inbox == {}
        assert rig.phone.read == {"n1"} and rig.phone.actions == [("n1", "thumb")]
        assert rig.phone.replies == [("n1", "See you soon"), ("n1", "Call you later")]
        with pytest.raises(CommandFailed, match="no notification"):
            await rig.hu.reply("gone", text="?")
        nursery.cancel_scope.cancel()


async def test_position_advances_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    # The phone's clock is 5 s behind the head unit's; HELLO tells the head unit.
    rig = Rig.make(phone_hello_=phone_hello(clock_ms=-5000))
    rig.phone.clock_ms = lambda: int(trio.current_time() * 1000) - 5000
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.phone.play(TRACKS)
        await wait_for(rig.hu, m.NowPlaying)

        def hu_ms() -> int:
            return int(trio.current_time() * 1000)

        start = rig.hu.state.position_ms(hu_ms())
        assert start is not None and start < 100
        await trio.sleep(30.0)
        assert rig.hu.state.position_ms(hu_ms()) == pytest.approx(start + 30_000, abs=100)
        await rig.hu.media(m.MediaCommand.PAUSE)
        paused_at = rig.hu.state.position_ms(hu_ms())
        await trio.sleep(60.0)
        assert rig.hu.state.position_ms(hu_ms()) == paused_at  # paused: stands still
        await rig.hu.media(m.MediaCommand.PLAY)
        await trio.sleep(600.0)
        assert rig.hu.state.position_ms(hu_ms()) == 243_000  # clamped at the duration
        nursery.cancel_scope.cancel()


BAD_BODIES: list[tuple[Channel, int, dict[int | str, object]]] = [
    (Channel.NAVIGATION, m.NavigationType.ROUTE_STATUS, {0: "active"}),
    (Channel.NAVIGATION, m.NavigationType.ROUTE_STATUS, {}),
    (Channel.NAVIGATION, m.NavigationType.MANEUVER, {0: 8, 1: 300, 2: "300", 3: 0}),
    (Channel.NAVIGATION, m.NavigationType.MANEUVER, {0: 99, 1: 300, 2: "300", 3: 0, 4: "x"}),
    (Channel.NAVIGATION, m.NavigationType.MANEUVER, {0: 23, 1: 9, 2: "9", 3: 0, 4: "x", 5: 99}),
    (Channel.NAVIGATION, m.NavigationType.MANEUVER, {0: 8, 1: 9, 2: "9", 3: 0, 4: "", 7: [{}]}),
    (Channel.NAVIGATION, m.NavigationType.COMMAND_RESULT, {0: "1", 1: True}),
    (Channel.AUDIO, m.AudioType.NOW_PLAYING, {0: "title"}),
    (Channel.AUDIO, m.AudioType.NOW_PLAYING, {0: "t", 1: "a", 4: -1.5}),
    (Channel.AUDIO, m.AudioType.COMMAND_RESULT, {0: 1}),
    (Channel.MESSAGING, m.MessagingType.NOTIFICATION, {0: "id", 1: "app", 2: 1, 3: "text"}),
    (Channel.MESSAGING, m.MessagingType.NOTIFICATION, {0: "id", 1: "app", 2: 1, 3: 5, 4: 0}),
    (Channel.MESSAGING, m.MessagingType.NOTIFICATION, {0: "i", 1: "", 2: 1, 3: "", 4: 0, 8: [{}]}),
    (Channel.MESSAGING, m.MessagingType.REMOVED, {}),
    (Channel.MESSAGING, m.MessagingType.COMMAND_RESULT, {1: False}),
    (Channel.BULK, m.BulkType.CHUNK, {0: 1, 1: 0, 2: 4, 3: b"too long"}),
    (Channel.BULK, m.BulkType.CHUNK, {0: 1, 1: 0, 2: 4}),
    (Channel.NAVIGATION, 77, {}),
]  # fmt: skip
BAD_COMMANDS: list[tuple[Channel, int, dict[int | str, object]]] = [
    (Channel.AUDIO, m.AudioType.COMMAND, {0: 6}),  # seek without a position
    (Channel.AUDIO, m.AudioType.COMMAND, {0: 9, 1: 101}),  # volume over 100
    (Channel.AUDIO, m.AudioType.COMMAND, {0: 2, 1: 5}),  # pause takes no value
    (Channel.AUDIO, m.AudioType.COMMAND, {0: 99}),
    (Channel.NAVIGATION, m.NavigationType.GUIDANCE_REQUEST, {0: 7}),
    (Channel.MESSAGING, m.MessagingType.MARK_READ, {0: 5}),
    (Channel.MESSAGING, m.MessagingType.PERFORM_ACTION, {0: "n1"}),
    (Channel.MESSAGING, m.MessagingType.REPLY, {0: "n1"}),  # neither text nor canned
    (Channel.MESSAGING, m.MessagingType.REPLY, {0: "n1", 1: "x", 2: 0}),  # both
    (Channel.MESSAGING, m.MessagingType.DISMISS, {0: ["n1"]}),
]


async def test_malformed_messages_get_an_error_and_the_link_stays_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        for channel, msg_type, body in BAD_BODIES:
            rig.phone_session.send_nowait(channel, msg_type, body)
        for channel, msg_type, body in BAD_COMMANDS:
            rig.hu_session.send_nowait(channel, msg_type, body)
        await trio.sleep(2.0)
        # each bad message came back as an ERROR naming it; nothing was applied
        assert len(rig.phone.errors_received) == len(BAD_BODIES)
        assert len(rig.hu.errors_received) == len(BAD_COMMANDS)
        codes = {e.code for e in rig.phone.errors_received + rig.hu.errors_received}
        assert codes <= {ErrorCode.INVALID_MESSAGE, ErrorCode.UNSUPPORTED}
        about = sorted(e.about_channel for e in rig.phone.errors_received)
        assert about == sorted(int(c) for c, _, _ in BAD_BODIES)  # one error per bad message
        assert rig.hu.state.route is None and rig.hu.state.inbox == {} and rig.phone.commands == []
        # the link is still up: a good message after them is applied
        await rig.phone.set_route(m.RouteStatus(m.RouteState.ARRIVED))
        await wait_for(rig.hu, m.RouteStatus)
        assert rig.hu_session.connected
        nursery.cancel_scope.cancel()


async def test_unknown_fields_are_ignored_and_long_text_is_cut_by_the_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make(hu_hello_=hu_hello(max_text=40))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await trio.sleep(0.2)
        body = m.RouteStatus(m.RouteState.ACTIVE, "Home").to_body()
        body[99] = "a field from a future version"
        body["x"] = [1, 2, 3]
        rig.phone_session.send_nowait(Channel.NAVIGATION, m.NavigationType.ROUTE_STATUS, body)
        await wait_for(rig.hu, m.RouteStatus)
        assert rig.phone.errors_received == []
        await rig.phone.notify(m.Notification("n", "SMS", m.Category.MESSAGE, "x" * 500, 0))
        event = await wait_for(rig.hu, m.Notification)
        assert event.text == "x" * 40  # the head unit said 40; the phone cut it
        nursery.cancel_scope.cancel()


async def test_incompatible_versions_close_with_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make(phone_hello_=phone_hello(versions=[3, 4]))
    async with trio.open_nursery() as nursery:
        closed = await rig.closed(nursery)
        assert "incompatible protocol versions: we speak 0, 1, 2, the peer 3, 4" in closed.text
        assert closed.code == ErrorCode.UNSUPPORTED
        nursery.cancel_scope.cancel()


async def test_versions_negotiate_down(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig.make(
        hu_hello_=hu_hello(versions=[0, 1, 2]), phone_hello_=phone_hello(versions=[0, 1])
    )
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await trio.sleep(0.2)
        assert rig.hu.version == rig.phone.version == 1
        nursery.cancel_scope.cancel()


async def test_a_malformed_hello_closes_with_a_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = m.Hello([0], "android", "Pixel 9", max_text=3)  # below the 16-character minimum
    rig = Rig.make(phone_hello_=bad)
    async with trio.open_nursery() as nursery:
        closed = await rig.closed(nursery)
        assert "max_text" in closed.text and closed.code == ErrorCode.INVALID_MESSAGE
        nursery.cancel_scope.cancel()


async def test_a_phone_remembers_only_its_last_commands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An emulated phone left running (bridge-phone) keeps the last HISTORY commands, not
    every one it was ever sent."""
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.hu.run)
        nursery.start_soon(rig.phone.run)
        await rig.link(nursery)
        await wait_for(rig.hu, m.Hello)
        await rig.phone.play(TRACKS)
        sent = HISTORY + 20
        for i in range(sent):
            await rig.hu.media(m.MediaCommand.PAUSE if i % 2 else m.MediaCommand.PLAY)
        assert len(rig.phone.commands) == HISTORY
        assert rig.phone.commands[-1] == m.MediaCommandRequest(m.MediaCommand.PAUSE)
        nursery.cancel_scope.cancel()
