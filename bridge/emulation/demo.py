"""``bridge demo``: a head unit and an emulated phone on a simulated BLE link.

They pair first (both print the same code; the phone's user and the driver confirm),
then the phone runs its scenarios (a drive, a playlist with album art, messages) and the
head unit prints what its screen shows, through the same :class:`PhoneDevice` API the
real screen uses. The driver taps pause during the album art (the pause overtakes it),
answers a message with a canned reply and marks it read. Halfway the radio goes silent
(a supervision timeout); the link comes back without a prompt and everything accepted
meanwhile arrives, once, in order. Virtual time by default (instant and repeatable);
``realtime`` paces it on the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO

import trio

from bridge import prompt
from bridge.emulation.clock import virtual_clock
from bridge.emulation.phone_app import PhoneApp
from bridge.emulation.scenarios import FLAVOURS, Flavour, drive, messages, playlist
from bridge.endpoint import PeerEvent, clock_ms_from_trio
from bridge.phone_device import (
    ArtReceived,
    CommandFailed,
    DeviceEvent,
    ManeuverImageReceived,
    PhoneDevice,
)
from bridge.session import LinkDown, LinkUp, PeerSession
from bridge.store import MessageStore
from bridge.wire import messages as m
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, PairingFailed, Role
from pairing.keylog import KeyLog
from pairing.privacy import make_token, resolve
from pairing.trust import TrustStore
from transports.recorder import LinkRecorder
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

DROP_AT = 5.0
RECONNECT_AFTER = 1.0
ARROWS = {
    m.LaneDirection.LEFT: "←", m.LaneDirection.STRAIGHT: "↑", m.LaneDirection.RIGHT: "→",
    m.LaneDirection.SLIGHT_LEFT: "↖", m.LaneDirection.SLIGHT_RIGHT: "↗",
}  # fmt: skip

#: Asks the head unit's user whether the code matches; True to confirm.
Confirm = Callable[[str], Awaitable[bool]]


@dataclass
class DemoResult:
    sent: list[str] = field(default_factory=list)  # what the phone's scenarios published
    received: list[str] = field(default_factory=list)  # what the head unit's screen got
    links: int = 0
    pause_latency: float | None = None
    pairing_failed: str | None = None
    paired: trio.Event = field(default_factory=trio.Event)  # set once the pairing is decided

    def check(self) -> tuple[int, int, bool]:
        """Lost, duplicated, in order per channel (maneuvers; notifications)."""
        lost = len(set(self.sent) - set(self.received))
        dup = len(self.received) - len(set(self.received))
        ordered = all(
            [x for x in self.received if x.startswith(kind)]
            == [x for x in self.sent if x.startswith(kind)]
            for kind in ("maneuver", "notification")
        )
        return lost, dup, ordered


def _key(message: Any) -> str:
    if isinstance(message, m.Maneuver):
        return f"maneuver {message.road} {message.distance_m}"
    return f"notification {message.id}"


class _Screen:
    def __init__(self, out: TextIO, start: float) -> None:
        self.out = out
        self.start = start

    def show(self, area: str, text: str) -> None:
        t = trio.current_time() - self.start
        print(f"[{t:6.2f}s] {area:<6} {text}", file=self.out, flush=True)


def _clock(ms: int) -> str:
    return f"{ms // 60000}:{ms // 1000 % 60:02d}"


def _maneuver_text(man: m.Maneuver) -> str:
    what = man.maneuver.name.lower().replace("_", " ")
    if man.roundabout_exit:
        what = f"at the roundabout take exit {man.roundabout_exit}"
    if man.maneuver.name.startswith("DESTINATION"):
        return f"in {man.display_distance} {_unit(man)}: arrive at {man.road}"
    text = f"in {man.display_distance} {_unit(man)}: {what} onto {man.road}"
    if man.lanes:
        lanes = " ".join(
            ("[" if lane.recommended else " ")
            + "".join(ARROWS.get(d, "?") for d in lane.directions)
            + ("]" if lane.recommended else " ")
            for lane in man.lanes
        )
        text += f"   lanes {lanes}"
    return text


def _unit(man: m.Maneuver) -> str:
    return {0: "m", 1: "km", 2: "mi", 3: "ft", 4: "yd"}[man.display_unit]


class _DemoPhone(PhoneApp):
    """The emulated phone, whose user confirms the pairing code."""

    def __init__(self, *args: Any, screen: _Screen, trust: TrustStore, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.screen = screen
        self.trust = trust
        self.published: list[str] = []

    async def send(self, message: Any) -> int | None:
        if isinstance(message, m.Maneuver | m.Notification):
            self.published.append(_key(message))
        return await super().send(message)

    async def on_event(self, event: PeerEvent) -> None:
        if isinstance(event, CodeToConfirm):
            self.screen.show("PHONE", f"shows code {event.code}; its user taps Confirm")
            self.session.confirm_pairing(True)
        elif isinstance(event, Authenticated):
            self.trust.record(event)


class _Driver:
    """The head unit's screen and the driver's hands: shows what PhoneDevice reports,
    answers the pairing prompt, taps pause during the art, answers the first message."""

    def __init__(
        self,
        device: PhoneDevice,
        session: PeerSession,
        screen: _Screen,
        trust: TrustStore,
        confirm: Confirm,
    ) -> None:
        self.device = device
        self.session = session
        self.screen = screen
        self.trust = trust
        self.confirm = confirm
        self.result = DemoResult()

    async def run(self, nursery: trio.Nursery) -> None:
        paused = replied = False
        async for event in self.device.events:
            await self.show(event)
            if isinstance(event, m.NowPlaying) and event.art is not None and not paused:
                paused = True
                nursery.start_soon(self.tap_pause)
            if isinstance(event, m.Notification) and event.canned_replies and not replied:
                replied = True
                nursery.start_soon(self.answer, event)

    async def show(self, event: DeviceEvent) -> None:
        screen, result = self.screen, self.result
        match event:
            case m.Hello():
                screen.show("PHONE", f"{event.name} ({event.platform}, {event.model}) says hello")
            case m.RouteStatus():
                if event.state is m.RouteState.ARRIVED:
                    screen.show("ROUTE", f"arrived at {event.destination}")
                elif event.remaining_m is not None:
                    km = event.remaining_m / 1000
                    screen.show("ROUTE", f"to {event.destination}: {km:.1f} km left")
            case m.Maneuver():
                result.received.append(_key(event))
                screen.show("NAV", _maneuver_text(event))
            case ManeuverImageReceived():
                screen.show("NAV", f"maneuver image shown ({len(event.data)} bytes)")
            case m.NowPlaying():
                position = self.device.state.position_ms(self.device.clock_ms()) or 0
                sign = "▶" if event.playing else "⏸"
                total = _clock(event.duration_ms or 0)
                screen.show(
                    "MUSIC",
                    f"{sign} {event.title} — {event.artist} ({event.source_app}) "
                    f"{_clock(position)} / {total}",
                )
            case ArtReceived():
                screen.show("MUSIC", f"album art shown ({len(event.data) // 1024} KB)")
            case m.Notification():
                result.received.append(_key(event))
                actions = ", ".join(a.label for a in event.actions or [])
                screen.show("MSG", f"{event.sender} ({event.app}): {event.text}  [{actions}]")
            case m.NotificationRemoved():
                screen.show("MSG", f"{event.id} removed")
            case m.ErrorReport():
                screen.show("ERROR", f"the phone refused a message: {event.text}")
            case _:
                await self.link_event(event)

    async def link_event(self, event: DeviceEvent) -> None:
        screen, result = self.screen, self.result
        if isinstance(event, LinkUp):
            result.links += 1
            screen.show("LINK", f"connected ({event.payload_size}-byte packets); handshake")
        elif isinstance(event, LinkDown):
            screen.show("LINK", f"{event.reason}; reconnecting")
        elif isinstance(event, CodeToConfirm):
            again = " again (this head unit knew it before)" if event.re_pairing else ""
            screen.show("PAIR", f"pair with {event.peer.display_name!r}{again}? code {event.code}")
            accepted = await self.confirm(event.code)
            screen.show("TOUCH", f"driver taps {'Confirm' if accepted else 'Reject'}")
            self.session.confirm_pairing(accepted)
        elif isinstance(event, Authenticated):
            peer = event.peer
            self.trust.record(event)
            if event.paired_now:
                screen.show("PAIR", f"paired with {peer.name} ({peer.platform}); link encrypted")
            else:
                screen.show("PAIR", f"recognised {peer.name}: no prompt; link encrypted")
            result.paired.set()
        elif isinstance(event, PairingFailed):
            result.pairing_failed = event.reason
            screen.show("PAIR", f"pairing failed: {event.reason}; nothing was stored")
            result.paired.set()

    async def tap_pause(self) -> None:
        self.screen.show("TOUCH", "driver taps ⏸ pause while the album art is arriving")
        start = trio.current_time()
        try:
            await self.device.media(m.MediaCommand.PAUSE)
        except CommandFailed as e:
            self.screen.show("MUSIC", f"pause failed: {e}")
            return
        latency = self.result.pause_latency = trio.current_time() - start
        art = "ahead of the art" if self.device.state.art is None else "after the art"
        self.screen.show("MUSIC", f"phone paused after {latency * 1000:.0f} ms, {art}")

    async def answer(self, note: m.Notification) -> None:
        await trio.sleep(1.0)
        canned = (note.canned_replies or [""])[0]
        self.screen.show("TOUCH", f"driver answers {note.sender}: {canned!r}")
        try:
            await self.device.reply(note.id, canned=0)
            await self.device.mark_read(note.id)
            self.screen.show("MSG", f"reply sent to {note.sender}; marked read")
        except CommandFailed as e:
            self.screen.show("MSG", f"reply failed: {e}")


async def run_demo(
    profile: LinkProfile,
    *,
    seed: int,
    drop: bool,
    out: TextIO,
    data_dir: Path,
    confirm: Confirm,
    keylog: KeyLog | None = None,
    recorder: LinkRecorder | None = None,
) -> DemoResult:
    """The demo; ``recorder`` records the head unit's links."""
    start = trio.current_time()
    screen = _Screen(out, start)
    flavour: Flavour = FLAVOURS["ios" if profile.name == "ios" else "android"]
    clock = clock_ms_from_trio()
    hu_trust = TrustStore(data_dir / "head-unit")
    phone_trust = TrustStore(data_dir / "phone", role="phone")
    hu_session = PeerSession(
        "head-unit", keylog=keylog, hello=m.Hello(m.PROTOCOL_VERSIONS, "head-unit", "Head unit")
    )
    phone_session = PeerSession(
        "phone",
        hello=m.Hello(
            m.PROTOCOL_VERSIONS, flavour.platform, flavour.name, flavour.model, clock_ms=clock()
        ),
    )
    device = PhoneDevice(hu_session, store=MessageStore(data_dir / "head-unit"), clock_ms=clock)
    phone = _DemoPhone(
        phone_session,
        store=MessageStore(data_dir / "phone"),
        clock_ms=clock,
        screen=screen,
        trust=phone_trust,
    )
    driver = _Driver(device, hu_session, screen, hu_trust, confirm)
    result = driver.result
    known = "knows" if phone_trust.public_key in hu_trust.trusted_keys() else "has never met"
    print(
        f"bridge demo: head unit + emulated {flavour.name} ({flavour.platform}) on a "
        f"'{profile.name}' link (ATT MTU {profile.att_mtu}, {profile.interval * 1000:g} ms "
        f"interval), seed {seed}",
        file=out,
    )
    print(f"The head unit {known} this phone (data in {data_dir}).", file=out, flush=True)

    def handshakes() -> tuple[Handshake, Handshake]:
        # The phone advertises a fresh token; the head unit resolves it with the IRKs of
        # its paired phones: a match means Noise KK at once, none means a first pairing.
        token = make_token(phone_trust.irk, os.urandom)
        match = resolve(token, hu_trust.irks())
        who = f"recognises {match.name}" if match else "does not recognise it"
        screen.show("RADIO", f"phone advertises {token!r}; the head unit {who}")
        hu_hs = Handshake(
            Role.HEAD_UNIT, hu_trust.identity, name="Head unit", platform="head-unit",
            trusted=hu_trust.trusted_keys(),
            peer_key=match.key_bytes if match else None, random=os.urandom,
        )  # fmt: skip
        phone_hs = Handshake(
            Role.PHONE, phone_trust.identity, name=flavour.name, platform=flavour.platform,
            trusted=phone_trust.trusted_keys(), random=os.urandom, irk=phone_trust.irk,
        )  # fmt: skip
        return hu_hs, phone_hs

    async def radio() -> None:
        attempt = 0
        while True:
            pair = SimulatedLinkPair(profile, seed=seed + attempt, name=flavour.name)
            hu_hs, phone_hs = handshakes()
            async with trio.open_nursery() as link:
                central = pair.central if recorder is None else recorder.wrap(pair.central)
                link.start_soon(partial(hu_session.run_link, central, handshake=hu_hs))
                link.start_soon(
                    partial(phone_session.run_link, pair.peripheral, handshake=phone_hs)
                )
                if drop and attempt == 0:
                    await trio.sleep_until(start + DROP_AT)
                    screen.show("RADIO", "the phone's radio goes silent (a tunnel)")
                    pair.lose_link()
            attempt += 1
            await trio.sleep(RECONNECT_AFTER)

    async def scenarios() -> None:
        async with trio.open_nursery() as play:
            play.start_soon(drive, phone, flavour)
            play.start_soon(messages, phone, flavour)
            await trio.sleep(2.5)  # the music starts (with its art) while driving
            play.start_soon(playlist, phone, flavour)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(radio)
        nursery.start_soon(phone.run)
        nursery.start_soon(device.run)
        nursery.start_soon(driver.run, nursery)
        await result.paired.wait()
        if result.pairing_failed is not None:
            nursery.cancel_scope.cancel()
            return result
        await scenarios()
        with trio.move_on_after(30.0):  # let what is still queued arrive
            while set(phone.published) - set(result.received) and not result.pairing_failed:
                await trio.sleep(0.1)
        await trio.sleep(2.0)  # the driver's last answers
        nursery.cancel_scope.cancel()
    result.sent = phone.published
    lost, dup, ordered = result.check()
    print(
        f"\n{len(result.sent)} maneuvers and messages published by the phone over "
        f"{result.links} link(s): {lost} lost, {dup} duplicated, "
        f"{'in order' if ordered else 'OUT OF ORDER'}",
        file=out,
    )
    return result


def main(
    profile_name: str,
    *,
    seed: int,
    drop: bool,
    realtime: bool,
    out: TextIO,
    assume_yes: bool = True,
    data_dir: Path | None = None,
    keylog: KeyLog | None = None,
    capture: Path | None = None,
) -> int:
    """Run the demo; 0 if it paired and everything arrived once and in order.
    Interactive confirmation (``assume_yes=False``) runs on the wall clock."""
    profile = PROFILES[profile_name]
    confirm = prompt.assume_yes if assume_yes else prompt.ask_code
    recording = LinkRecorder(capture / "head-unit.pcapng") if capture else contextlib.nullcontext()
    with recording as recorder:
        return run_to_exit_code(
            partial(run_demo, profile, seed=seed, drop=drop, out=out, confirm=confirm,
                    keylog=keylog, recorder=recorder),
            virtual=not realtime and assume_yes, data_dir=data_dir,
        )  # fmt: skip


class _Checked(Protocol):
    pairing_failed: str | None

    def check(self) -> tuple[int, int, bool]: ...


def run_to_exit_code(
    demo: Callable[..., Awaitable[_Checked]], *, virtual: bool, data_dir: Path | None
) -> int:
    """Both demos' harness: ``demo(data_dir=...)`` under trio, on a virtual clock when
    ``virtual`` (nobody waits at a prompt), in a scratch folder unless ``data_dir``; 0 if
    it paired and everything arrived once and in order, else 1."""
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as scratch:
        result = trio.run(
            partial(demo, data_dir=data_dir or Path(scratch)),
            clock=virtual_clock() if virtual else None,
        )
    if result.pairing_failed is not None:
        return 1
    return 0 if result.check() == (0, 0, True) else 1
