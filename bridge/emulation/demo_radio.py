"""``bridge demo --radio bumble``: the head unit and two phones on the Bumble virtual radio.

The head unit runs what it runs on a car's computer, in both roles at once: it scans for
phones that advertise (the bleak transport, with bleak driving a Bumble controller
instead of BlueZ) and it advertises and serves the bridge's GATT service for phones that
connect to it (protocol v1, PROTOCOL.md 1.2, 2.2). An Android phone (MTU 517, 15 ms
interval) advertises rotating tokens and navigates: the car finds it by scanning. An
iPhone (MTU 185, 30 ms, few packets per event), its app in the background as in a
driver's pocket, connects to the car it finds advertising, plays music and receives
messages. They pair one after the other (both screens show the code, the driver
confirms), then run at once. Beside them a second iPhone has no bridge app at all: it
finds the car in its Bluetooth settings, bonds (the same prompt: six digits on both
screens), and shares its notifications, an incoming call the driver answers from the
car, and its music through Apple's ANCS and AMS. Halfway the Android phone's radio goes silent (a
supervision timeout): the head unit notices, recognises the phone's new token when it
comes back, reconnects without a prompt, and everything accepted meanwhile arrives once,
in order. Virtual time by default; ``realtime`` paces it on the wall clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio

from bridge.apple_device import AppleDevice
from bridge.emulation.app_free_iphone import AppFreeIPhone
from bridge.emulation.demo import Confirm, _key, _maneuver_text, run_to_exit_code
from bridge.emulation.scenarios import FLAVOURS, drive, messages, playlist
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import ArtReceived, CommandFailed
from bridge.prompt import assume_yes as _yes
from bridge.radio_policy import HeadUnitEvent, Phone
from bridge.session import LinkDown, LinkUp
from bridge.wire import messages as m
from pairing.bonds import BondStore
from pairing.handshake import Authenticated, CodeToConfirm, PairingFailed
from pairing.keylog import KeyLog
from transports.aio import asyncio_loop
from transports.simulated import PROFILES

DROP_AT = 8.0
#: key: (flavour, link profile, the phone's role)
CAST = {"pixel": ("android", "android", "peripheral"), "iphone": ("ios", "ios", "central")}
#: The iPhone with no bridge app (its name is its GAP name, which the car shows).
APP_FREE = "Ana's iPhone"


@dataclass
class RadioDemoResult:
    sent: dict[str, list[str]] = field(default_factory=dict)
    received: dict[str, list[str]] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)
    pairing_failed: str | None = None
    last_playing: dict[str, str] = field(default_factory=dict)  # the last line shown

    def check(self) -> tuple[int, int, bool]:
        lost = dup = 0
        ordered = True
        for phone, sent in self.sent.items():
            got = self.received.get(phone, [])
            lost += len(set(sent) - set(got))
            dup += len(got) - len(set(got))
            ordered &= [x for x in got if x in set(sent)] == sent
        return lost, dup, ordered


class _Screen:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = trio.current_time()

    def shower(self, who: str) -> Callable[[str, str], None]:
        return lambda area, text: self.show(who, area, text)

    def show(self, who: str, area: str, text: str) -> None:
        t = trio.current_time() - self.start
        print(f"[{t:6.2f}s] {who:<12} {area:<6} {text}", file=self.out, flush=True)


async def run_radio_demo(
    *,
    drop: bool,
    out: TextIO,
    data_dir: Path,
    confirm: Confirm,
    keylog: KeyLog | None = None,
    capture: Path | None = None,
) -> RadioDemoResult:
    result = RadioDemoResult()
    async with asyncio_loop():
        world = RadioWorld(data_dir, clock_ms=clock_ms_from_trio(), snoop_dir=capture)
        screen = _Screen(out)
        try:
            central = await world.start_central()
            for key, (flavour, profile, role) in CAST.items():
                p = PROFILES[profile]
                phone = world.add_phone(
                    key, FLAVOURS[flavour], p, show=screen.shower(FLAVOURS[flavour].name),
                    role=role,
                )  # fmt: skip
                if role == "central":
                    phone.set_background(True)
                how = (
                    "connects to the car (its app in the background)"
                    if role == "central"
                    else "advertises; the car connects to it"
                )
                print(
                    f"emulated {FLAVOURS[flavour].name} ({flavour}): ATT MTU {p.att_mtu}, "
                    f"{p.interval * 1000:g} ms interval; {how}",
                    file=out,
                )

            async def ask(phone: Phone, event: CodeToConfirm) -> bool:
                screen.show(
                    "HEAD UNIT", "PAIR", f"pair with {event.peer.display_name!r}? code {event.code}"
                )
                accepted = await confirm(event.code)
                screen.show(
                    "HEAD UNIT", "TOUCH", f"driver taps {'Confirm' if accepted else 'Reject'}"
                )
                return accepted

            bonds = BondStore(data_dir / "head-unit")
            hu = world.head_unit(
                central, pairing_mode=True, keylog=keylog, confirm=ask, listener=world.listener(),
                apple=world.apple(bonds), bonds=bonds,
            )  # fmt: skip
            app_free = await world.add_app_free_iphone(APP_FREE)
            print(
                f"emulated {APP_FREE} (ios, no bridge app): ATT MTU 185, 30 ms interval; bonds "
                "with the car from its Bluetooth settings; its notifications and music come "
                "through ANCS and AMS",
                file=out,
            )
            print(
                "head unit: a Bumble virtual controller in both roles: scanning for phones "
                "(bleak) and advertising the bridge service (pairing mode on)\n",
                file=out,
                flush=True,
            )
            await _play(world, hu, screen, result, drop, app_free=app_free)
        finally:
            world.close()
    return result


async def _play(
    world: RadioWorld,
    hu: Any,
    screen: _Screen,
    result: RadioDemoResult,
    drop: bool,
    *,
    app_free: AppFreeIPhone,
) -> None:
    phones = world.phones
    published: dict[str, list[str]] = {p.flavour.name: [] for p in phones.values()}
    names = {key: p.flavour.name for key, p in phones.items()}
    paired: set[str] = set()
    all_paired = trio.Event()
    app_free_up = trio.Event()

    for phone in phones.values():
        original = phone.app.send
        name = phone.flavour.name

        async def send(message: Any, original: Any = original, name: str = name) -> int | None:
            if isinstance(message, m.Maneuver | m.Notification):
                published[name].append(_key(message))
            seq: int | None = await original(message)
            return seq

        phone.app.send = send  # type: ignore[method-assign]

    async def show_events() -> None:
        answered: set[str] = set()
        async for phone, event in hu.events:
            _show(screen, phone, event, result)
            if phone.device.kind == "ancs":
                if isinstance(event, LinkUp):
                    app_free_up.set()
                if (
                    isinstance(event, m.Notification)
                    and event.category is m.Category.INCOMING_CALL
                    and "answer" not in answered
                ):
                    answered.add("answer")
                    nursery.start_soon(_answer_call, phone, event, screen)
                if isinstance(event, m.NowPlaying) and event.playing and "ams" not in answered:
                    answered.add("ams")
                    nursery.start_soon(_tap_pause, phone, screen, "AMS")
                continue
            if isinstance(event, Authenticated):
                paired.add(phone.name)
                if len(paired) == len(phones):
                    all_paired.set()
            if isinstance(event, PairingFailed):
                result.pairing_failed = event.reason
                all_paired.set()
            if (
                isinstance(event, m.NowPlaying)
                and event.art is not None
                and "pause" not in answered
            ):
                answered.add("pause")
                nursery.start_soon(_tap_pause, phone, screen)
            if (
                isinstance(event, m.Notification)
                and event.canned_replies
                and "reply" not in answered
            ):
                answered.add("reply")
                nursery.start_soon(_answer, phone, event, screen)

    async with trio.open_nursery() as nursery:
        for phone in phones.values():
            await nursery.start(phone.run)
        await nursery.start(hu.run)
        nursery.start_soon(show_events)
        await all_paired.wait()
        if result.pairing_failed is not None:
            nursery.cancel_scope.cancel()
            return
        screen.show(APP_FREE, "PHONE", "Settings > Bluetooth lists the car; the user taps it")
        await app_free.connect(await app_free.find_car())
        with trio.fail_after(30):
            await app_free_up.wait()
        start = trio.current_time()
        pixel, iphone = phones["pixel"], phones["iphone"]
        published[APP_FREE] = []
        async with trio.open_nursery() as play:
            play.start_soon(_app_free_day, app_free, published[APP_FREE])
            play.start_soon(drive, pixel.app, pixel.flavour)
            play.start_soon(messages, iphone.app, iphone.flavour)
            await trio.sleep(2.5)
            play.start_soon(playlist, iphone.app, iphone.flavour)
            if drop:
                await trio.sleep_until(start + DROP_AT)
                screen.show(pixel.flavour.name, "RADIO", "its radio goes silent (a tunnel)")
                world.lose_link("pixel")
        with trio.move_on_after(60.0):  # what is still queued arrives
            while any(set(published[n]) - set(result.received.get(n, [])) for n in published):
                await trio.sleep(0.1)
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    result.sent = published
    result.links = {
        names[k]: len(p.links) + (1 if p.connected.is_set() else 0) for k, p in phones.items()
    }
    result.links[APP_FREE] = next(
        (p.device.links for p in hu.phones.values() if isinstance(p.device, AppleDevice)), 0
    )


def _show(screen: _Screen, phone: Phone, event: HeadUnitEvent, result: RadioDemoResult) -> None:
    who = phone.name
    if phone.device.kind == "ancs":
        _show_app_free(screen, phone, event, result)
        return
    match event:
        case m.Hello():
            screen.show(who, "PHONE", f"{event.name} ({event.platform}, {event.model}) says hello")
        case m.Maneuver():
            result.received.setdefault(who, []).append(_key(event))
            screen.show(who, "NAV", _maneuver_text(event))
        case m.NowPlaying():
            sign = "▶" if event.playing else "⏸"
            screen.show(who, "MUSIC", f"{sign} {event.title} — {event.artist} ({event.source_app})")
        case ArtReceived():
            screen.show(who, "MUSIC", f"album art shown ({len(event.data) // 1024} KB)")
        case m.Notification():
            result.received.setdefault(who, []).append(_key(event))
            screen.show(who, "MSG", f"{event.sender} ({event.app}): {event.text}")
        case LinkUp():
            how = "it connected to the car" if phone.role == "peripheral" else "the car connected"
            screen.show(who, "LINK", f"{how} ({event.payload_size}-byte packets); handshake")
        case LinkDown():
            wait = "for it to connect again" if phone.role == "peripheral" else "its advertisement"
            screen.show(who, "LINK", f"{event.reason}; waiting for {wait}")
        case Authenticated():
            by = "its identify tag" if phone.role == "peripheral" else "its token"
            how = "paired" if event.paired_now else f"recognised from {by}: no prompt"
            screen.show(who, "PAIR", f"{how}; link encrypted")
        case PairingFailed():
            screen.show(who, "PAIR", f"pairing failed: {event.reason}; nothing was stored")


def _show_app_free(
    screen: _Screen, phone: Phone, event: HeadUnitEvent, result: RadioDemoResult
) -> None:
    """An app-free iPhone's lines: what came through ANCS and AMS."""
    who = APP_FREE
    match event:
        case LinkUp():
            screen.show(who, "LINK", "bonded and encrypted; reading ANCS and AMS")
        case LinkDown():
            screen.show(who, "LINK", f"{event.reason}; it reconnects by itself when near")
        case m.Notification():
            result.received.setdefault(who, []).append(_key(event))
            actions = ", ".join(a.label for a in event.actions or []) or "no actions"
            who_from = event.sender or event.title or ""
            screen.show(who, "ANCS", f"{who_from} ({event.app}): {event.text} [{actions}]")
        case m.NotificationRemoved():
            screen.show(who, "ANCS", f"notification {event.id} removed on the iPhone")
        case m.NowPlaying():
            sign = "▶" if event.playing else "⏸"
            line = f"{sign} {event.title} — {event.artist} ({event.source_app})"
            if result.last_playing.get(who) != line:  # what it offers changed, not what plays
                result.last_playing[who] = line
                screen.show(who, "AMS", line)


async def _app_free_day(iphone: AppFreeIPhone, sent: list[str]) -> None:
    """A message, an incoming call, a calendar alert, music changing track (the
    scripted day)."""
    for sender, text in (("Ana", "Running 10 min late"), ("Ben", "Parking at the back")):
        sent.append(f"notification {await iphone.message(sender, text)}")
        await trio.sleep(1.5)
    sent.append(f"notification {await iphone.incoming_call('Mum')}")
    await trio.sleep(3.0)
    sent.append(f"notification {await iphone.calendar('Dentist', 'In 15 minutes')}")
    await trio.sleep(1.0)
    await iphone.play("Nina Simone", "Pastel Blues", "Sinnerman", 622.0)
    await trio.sleep(3.0)  # the next track (the driver paused; it plays on)
    await iphone.play("Nina Simone", "I Put a Spell on You", "Feeling Good", 177.0)


async def _answer_call(phone: Phone, note: m.Notification, screen: _Screen) -> None:
    await trio.sleep(1.0)
    answer = next((a for a in note.actions or [] if a.id == "positive"), None)
    if answer is None:
        return
    screen.show(APP_FREE, "TOUCH", f"driver taps {answer.label!r} for {note.sender}'s call")
    try:
        await phone.device.perform_action(note.id, answer.id)
        screen.show(APP_FREE, "ANCS", f"the iPhone did {answer.label!r}")
    except CommandFailed as e:
        screen.show(APP_FREE, "ANCS", f"{answer.label} failed: {e}")


async def _tap_pause(phone: Phone, screen: _Screen, area: str = "MUSIC") -> None:
    who = APP_FREE if area == "AMS" else phone.name
    while_ = "" if area == "AMS" else " while the album art is arriving"
    screen.show(who, "TOUCH", f"driver taps ⏸ pause{while_}")
    start = trio.current_time()
    try:
        await phone.device.media(m.MediaCommand.PAUSE)
    except CommandFailed as e:
        screen.show(who, area, f"pause failed: {e}")
        return
    if area == "AMS":  # a remote command has no answer: the player's update tells
        screen.show(who, area, "pause sent as an AMS remote command")
        return
    screen.show(who, area, f"phone paused after {(trio.current_time() - start) * 1000:.0f} ms")


async def _answer(phone: Phone, note: m.Notification, screen: _Screen) -> None:
    await trio.sleep(1.0)
    canned = (note.canned_replies or [""])[0]
    screen.show(phone.name, "TOUCH", f"driver answers {note.sender}: {canned!r}")
    try:
        await phone.device.reply(note.id, canned=0)
        await phone.device.mark_read(note.id)
        screen.show(phone.name, "MSG", f"reply sent to {note.sender}; marked read")
    except CommandFailed as e:
        screen.show(phone.name, "MSG", f"reply failed: {e}")


def main(
    *,
    drop: bool,
    realtime: bool,
    out: TextIO,
    assume_yes: bool = True,
    data_dir: Path | None = None,
    keylog: KeyLog | None = None,
    ask: Callable[[str], Awaitable[bool]] | None = None,
    capture: Path | None = None,
) -> int:
    confirm: Confirm = _yes if assume_yes or ask is None else ask

    async def run_and_report(data_dir: Path) -> RadioDemoResult:
        result = await run_radio_demo(
            drop=drop, out=out, data_dir=data_dir, confirm=confirm, keylog=keylog,
            capture=capture,
        )  # fmt: skip
        if result.pairing_failed is None:
            lost, dup, ordered = result.check()
            total = sum(len(s) for s in result.sent.values())
            links = ", ".join(f"{n}: {k} link(s)" for n, k in result.links.items())
            print(
                f"\n{total} maneuvers and messages published by the phones ({links}): "
                f"{lost} lost, {dup} duplicated, {'in order' if ordered else 'OUT OF ORDER'}",
                file=out,
            )
        return result

    return run_to_exit_code(run_and_report, virtual=not realtime and assume_yes, data_dir=data_dir)
