"""The phone's shortcuts on the car's launcher (PROTOCOL.md 6.1, version 2): what the
phone offers, a launch and its result, the limits, and peers that speak only version 1."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bridge.emulation.scenarios import FLAVOURS, HOME, ICONS, launcher
from bridge.phone_device import CommandFailed, LaunchFailed, ShortcutIconReceived
from bridge.wire import messages as m
from bridge.wire.channels import Channel
from bridge.wire.codec import encode
from bridge.wire.errors import ProtocolError
from bridge.wire.frame import Body
from tests.app_helpers import Rig, hu_hello, phone_hello, settle, wait_for

PIXEL = FLAVOURS["android"]


async def _offered(rig: Rig) -> None:
    await launcher(rig.phone, PIXEL)
    await wait_for(rig.hu, m.Shortcuts)
    for _ in ICONS:
        await wait_for(rig.hu, ShortcutIconReceived)


async def test_the_phone_offers_its_shortcuts_with_icons(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await _offered(rig)
        state = rig.hu.state
        assert [(s.id, s.label, s.kind) for s in state.shortcuts] == [
            ("nav-home", "Navigate home", m.ShortcutKind.NAVIGATION),
            ("daily-mix", "Play Daily Mix", m.ShortcutKind.MEDIA),
            ("call-mum", "Call Mum", m.ShortcutKind.COMMUNICATION),
            ("garage", "Open the garage", m.ShortcutKind.HOME),
        ]
        assert state.icons["nav-home"] == ICONS["navigation"]
        assert state.icons["garage"] == ICONS["home"]
        assert all(icon.startswith(b"\x89PNG") for icon in state.icons.values())
        nursery.cancel_scope.cancel()


async def test_each_launch_does_what_it_says(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await _offered(rig)
        # "Navigate home" starts a route
        await rig.hu.launch("nav-home")
        route = await wait_for(rig.hu, m.RouteStatus)
        assert route.state is m.RouteState.ACTIVE and route.destination == HOME
        # "Play Daily Mix" changes the playlist
        await rig.hu.launch("daily-mix")
        playing = await wait_for(rig.hu, m.NowPlaying)
        assert (playing.title, playing.state) == ("Holocene", m.PlaybackState.PLAYING)
        # "Call Mum" places a call, which the car shows with a Hang up of its own
        await rig.hu.launch("call-mum")
        call = await wait_for(rig.hu, m.Notification)
        assert (call.sender, call.title) == ("Mum", "Outgoing call")
        assert rig.phone.calls == ["Mum"]
        await rig.hu.perform_action(call.id, "hang-up")
        await wait_for(rig.hu, m.NotificationRemoved, lambda e: e.id == call.id)
        assert rig.phone.launches == ["nav-home", "daily-mix", "call-mum"]
        nursery.cancel_scope.cancel()


async def test_a_locked_phone_and_an_unknown_shortcut_say_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await _offered(rig)
        rig.phone.locked = True
        with pytest.raises(LaunchFailed) as locked:
            await rig.hu.launch("garage")
        assert locked.value.outcome is m.LaunchOutcome.LOCKED
        assert "unlock the phone" in str(locked.value)
        # the ones that need no unlocking still work on a locked phone
        await rig.hu.launch("call-mum")
        rig.phone.locked = False
        await rig.hu.launch("garage")
        assert rig.phone.launches == ["call-mum", "garage"]
        # the phone's list changed behind the car's back: it answers "unknown"
        del rig.phone.shortcuts["nav-home"]
        with pytest.raises(LaunchFailed) as unknown:
            await rig.hu.launch("nav-home")
        assert unknown.value.outcome is m.LaunchOutcome.UNKNOWN
        # and the car refuses an id the phone never offered without asking it
        commands = len(rig.phone.commands)
        with pytest.raises(LaunchFailed):
            await rig.hu.launch("self-destruct")
        assert len(rig.phone.commands) == commands
        nursery.cancel_scope.cancel()


async def test_a_new_list_replaces_the_old_one(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await _offered(rig)
        shortcuts = list(rig.phone.shortcuts.values())[:1]
        await rig.phone.offer_shortcuts(shortcuts)
        await wait_for(rig.hu, m.Shortcuts, lambda e: len(e.shortcuts) == 1)
        await settle()
        assert [s.id for s in rig.hu.state.shortcuts] == ["nav-home"]
        assert set(rig.hu.state.icons) == {"nav-home"}  # the others' icons are gone
        await rig.phone.offer_shortcuts([])
        await wait_for(rig.hu, m.Shortcuts, lambda e: not e.shortcuts)
        assert rig.hu.state.shortcuts == [] and rig.hu.state.icons == {}
        nursery.cancel_scope.cancel()


async def test_a_version_1_head_unit_never_sees_a_shortcut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make(hu_hello_=hu_hello(versions=[0, 1]))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await launcher(rig.phone, PIXEL)
        await settle(2.0)
        assert rig.hu.state.shortcuts == [] and rig.phone.errors_received == []
        assert rig.hu.version == 1
        nursery.cancel_scope.cancel()


async def test_shortcuts_follow_the_head_unit_when_its_hello_comes_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Offered before any link: sent once the head unit's HELLO says version 2."""
    rig = Rig.make()
    await launcher(rig.phone, PIXEL)
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await wait_for(rig.hu, m.Shortcuts)
        nursery.cancel_scope.cancel()


async def test_a_version_1_phone_is_told_no_launch_without_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make(phone_hello_=phone_hello(versions=[0, 1]))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        # a list that came anyway (a phone that ignores the version) is kept, but the
        # car does not send a command the phone cannot know
        home = m.Shortcut("nav-home", "Navigate home", m.ShortcutKind.NAVIGATION)
        rig.hu.state.shortcuts = [home]
        with pytest.raises(CommandFailed, match="version 2"):
            await rig.hu.launch("nav-home")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "shortcuts, why",
    [
        ([m.Shortcut(f"s{i}", "x", m.ShortcutKind.OTHER) for i in range(17)], "more than 16"),
        ([m.Shortcut("", "x", m.ShortcutKind.OTHER)], "1 to 16 characters"),
        ([m.Shortcut("x" * 17, "x", m.ShortcutKind.OTHER)], "1 to 16 characters"),
        ([m.Shortcut("a", "x", m.ShortcutKind.OTHER)] * 2, "one id"),
        (
            [m.Shortcut("a", "x", m.ShortcutKind.OTHER, 4),
             m.Shortcut("b", "y", m.ShortcutKind.OTHER, 4)],
            "one icon",
        ),
    ],
)  # fmt: skip
def test_a_list_outside_the_limits_is_refused(shortcuts: list[m.Shortcut], why: str) -> None:
    body = encode(m.Shortcuts(shortcuts))
    with pytest.raises(ProtocolError, match=why):
        m.decode_message(Channel.CONTROL, int(m.Shortcuts.type), body)


def test_a_result_that_says_ok_but_not_done_is_refused() -> None:
    body = encode(m.LaunchResult(3, True, None, m.LaunchOutcome.LOCKED))
    with pytest.raises(ProtocolError, match="ok but not done"):
        m.decode_message(Channel.CONTROL, int(m.LaunchResult.type), body)
    with pytest.raises(ProtocolError):  # the outcome is required
        m.decode_message(Channel.CONTROL, int(m.LaunchResult.type), {0: 3, 1: True})


async def test_a_bad_list_or_an_oversized_icon_is_an_error_and_the_link_stays_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig.make()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await _offered(rig)
        before = list(rig.hu.state.shortcuts)
        duplicate: Body = {0: [encode(m.Shortcut("a", "x", m.ShortcutKind.OTHER))] * 2}
        await rig.phone_session.send(Channel.CONTROL, int(m.Shortcuts.type), duplicate)
        error = await wait_for_error(rig)
        assert error.code == 8 and "one id" in error.text
        assert rig.hu.state.shortcuts == before  # the previous list stays
        # an icon over 16384 bytes is refused at its first chunk
        await rig.phone.send(m.Shortcuts([m.Shortcut("big", "Big", m.ShortcutKind.OTHER, 90)]))
        await wait_for(rig.hu, m.Shortcuts)
        await rig.phone.send_object(90, b"\x89PNG" + bytes(m.MAX_ICON), "image/png")
        error = await wait_for_error(rig)
        assert "over 16384 bytes" in error.text
        await settle(2.0)
        assert "big" not in rig.hu.state.icons and rig.hu.connected
        # the link is still up: a launch still works
        await rig.phone.offer_shortcuts(list(rig.phone.shortcuts.values()))
        await wait_for(rig.hu, m.Shortcuts, lambda e: len(e.shortcuts) == 4)
        await rig.hu.launch("call-mum")
        nursery.cancel_scope.cancel()


async def wait_for_error(rig: Rig) -> m.ErrorReport:
    with trio.fail_after(10):
        while not rig.phone.errors_received:
            await trio.sleep(0.05)
    return rig.phone.errors_received.pop(0)
