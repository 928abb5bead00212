"""``bridge demo``: a head unit and an emulated phone on a simulated BLE link.

The phone drives a route, plays music, receives messages and sends album art; the head
unit prints what its screen would show and taps pause in the middle of the art transfer.
Halfway, the radio goes silent (a supervision timeout); both sides reconnect and what was
accepted meanwhile is delivered, once, in order. By default the demo runs on virtual
time (instant, and the same on every run for a seed); ``realtime`` paces it on the clock.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import trio
import trio.testing

from bridge import messages as m
from bridge.channels import Channel
from bridge.codec import Message
from bridge.errors import ProtocolError
from bridge.frame import Body
from bridge.mux import Acknowledged, MessageReceived
from bridge.session import LinkDown, LinkUp, PeerSession
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, PairingFailed, Role
from pairing.keylog import KeyLog
from pairing.trust import TrustStore
from transports.simulated import PROFILES, LinkProfile, SimulatedLinkPair

ROUTE = [
    (m.ManeuverType.DEPART, 800, "Rue de Rivoli"),
    (m.ManeuverType.TURN_RIGHT, 300, "Main St"),
    (m.ManeuverType.KEEP_LEFT, 1200, "A6"),
    (m.ManeuverType.OFF_RAMP_RIGHT, 500, "D920"),
    (m.ManeuverType.TURN_LEFT, 150, "Elm Rd"),
    (m.ManeuverType.DESTINATION, 0, "Elm Rd 42"),
]
MSG = m.Category.MESSAGE
INBOX = [
    (
        1.5,
        m.Notification("msg-1", "Signal", m.Category.MESSAGE, "Running 10 minutes late", 0, "Anna"),
    ),
    (
        6.2,
        m.Notification("msg-2", "WhatsApp", m.Category.MESSAGE, "Parking is on level -2", 0, "Ben"),
    ),
    (9.0, m.Notification("msg-3", "SMS", m.Category.MESSAGE, "Call me when you arrive", 0, "Mum")),
]
ART_SIZE = 48 * 1024
PAUSE_AT = 3.0
DROP_AT = 5.0
RECONNECT_AFTER = 1.0
END_AT = 14.0


@dataclass
class DemoResult:
    sent: dict[Channel, list[int]] = field(default_factory=lambda: defaultdict(list))
    received: dict[Channel, list[int]] = field(default_factory=lambda: defaultdict(list))
    links: int = 0
    pause_latency: float | None = None
    pairing_failed: str | None = None

    def check(self) -> tuple[int, int, bool]:
        """Lost, duplicated, in order (over the phone's sequenced messages)."""
        lost = dup = 0
        ordered = True
        for channel, sent in self.sent.items():
            got = self.received.get(channel, [])
            lost += len(set(sent) - set(got))
            dup += len(got) - len(set(got))
            ordered = ordered and got == sorted(got)
        return lost, dup, ordered


class _Screen:
    def __init__(self, out: TextIO, start: float) -> None:
        self.out = out
        self.start = start

    def show(self, area: str, text: str) -> None:
        t = trio.current_time() - self.start
        print(f"[{t:6.2f}s] {area:<6} {text}", file=self.out, flush=True)


def _distance(metres: int) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres} m"


#: Asks the head unit's user whether the code matches; True to confirm.
Confirm = Callable[[str], Awaitable[bool]]


async def _head_unit(
    hu: PeerSession, screen: _Screen, result: DemoResult, store: TrustStore, confirm: Confirm
) -> None:
    art: dict[int, int] = {}
    pause_sent_at: float | None = None
    while True:
        event = await hu.next_event()
        if isinstance(event, LinkUp):
            result.links += 1
            security = "handshake first" if event.encrypted else "UNENCRYPTED"
            screen.show(
                "LINK", f"connected to {event.peer} ({event.payload_size}-byte packets, {security})"
            )
            continue
        if isinstance(event, LinkDown):
            screen.show("LINK", f"{event.reason}; reconnecting")
            continue
        if isinstance(event, CodeToConfirm):
            again = " again (this head unit knew it before)" if event.re_pairing else ""
            screen.show("PAIR", f"pair with {event.peer.name!r}{again}? code {event.code}")
            accepted = await confirm(event.code)
            screen.show("TOUCH", f"driver taps {'Confirm' if accepted else 'Reject'}")
            hu.confirm_pairing(accepted)
            continue
        if isinstance(event, Authenticated):
            peer = event.peer
            if event.paired_now:
                store.add(peer.static_key, peer.name, peer.platform)
                screen.show("PAIR", f"paired with {peer.name} ({peer.platform}); link encrypted")
            else:
                store.seen(peer.static_key)
                screen.show("PAIR", f"recognised {peer.name}: no prompt; link encrypted")
            continue
        if isinstance(event, PairingFailed):
            result.pairing_failed = event.reason
            screen.show("PAIR", f"pairing failed: {event.reason}")
            continue
        if not isinstance(event, MessageReceived):
            continue
        if event.seq is not None:
            result.received[event.channel].append(event.seq)
        try:
            msg = m.decode_message(event.channel, event.type, event.body)
        except ProtocolError as e:
            screen.show("ERROR", f"ignored a message from the phone: {e}")
            continue
        match msg:
            case m.Maneuver() as man:
                if man.maneuver is m.ManeuverType.DESTINATION:
                    screen.show("NAV", f"arrived at {man.road}")
                else:
                    what = man.maneuver.name.lower().replace("_", " ")
                    screen.show("NAV", f"in {_distance(man.distance_m)}: {what} onto {man.road}")
            case m.NowPlaying() as now:
                screen.show("MUSIC", f"{'▶' if now.playing else '⏸'} {now.title} — {now.artist}")
            case m.Notification() as note:
                screen.show("MSG", f"{note.sender} ({note.app}): {note.text}")
            case m.BulkChunk(transfer, offset, total, data):
                art[transfer] = art.get(transfer, 0) + len(data)
                if offset == 0:
                    screen.show("MUSIC", f"album art arriving ({total // 1024} KB, low priority)")
                    pause_sent_at = trio.current_time()
                    hu.send_nowait(*_wire(m.MediaCommandRequest(m.MediaCommand.PAUSE)))
                    screen.show("TOUCH", "driver taps ⏸ pause")
                if art[transfer] == total:
                    screen.show("MUSIC", f"album art shown ({total // 1024} KB)")
            case m.MediaCommandResult(ok=ok):
                if pause_sent_at is not None and result.pause_latency is None:
                    result.pause_latency = trio.current_time() - pause_sent_at
                    screen.show(
                        "MUSIC",
                        f"phone says pause {'done' if ok else 'failed'} after "
                        f"{result.pause_latency * 1000:.0f} ms, ahead of the art",
                    )
            case _:
                pass


def _wire(msg: Message) -> tuple[Channel, int, Body]:
    return msg.channel, msg.type, msg.to_body()


async def _phone(
    phone: PeerSession,
    *,
    result: DemoResult,
    done: trio.Event,
    start: float,
    phone_link_capacity: float,
    store: TrustStore,
    screen: _Screen,
) -> None:
    async def send(msg: Message) -> None:
        seq = await phone.send(*_wire(msg))
        if seq is not None:
            result.sent[msg.channel].append(seq)

    async def answer_commands() -> None:
        while True:
            event = await phone.next_event()
            if isinstance(event, MessageReceived) and event.type == m.AudioType.COMMAND:
                cmd = m.MediaCommandRequest.from_body(event.body)
                assert event.seq is not None
                await send(m.MediaCommandResult(event.seq, ok=True))
                state = (
                    m.PlaybackState.PLAYING
                    if cmd.command is m.MediaCommand.PLAY
                    else m.PlaybackState.PAUSED
                )
                await send(m.NowPlaying("Midnight City", "M83", state=state))
            elif isinstance(event, CodeToConfirm):
                screen.show("PHONE", f"shows code {event.code}; its user taps Confirm")
                phone.confirm_pairing(True)
            elif isinstance(event, Authenticated):
                if event.paired_now:
                    store.add(event.peer.static_key, event.peer.name, event.peer.platform)
                else:
                    store.seen(event.peer.static_key)
            elif isinstance(event, Acknowledged | LinkUp | LinkDown | MessageReceived):
                continue

    async def at(t: float) -> None:
        await trio.sleep_until(start + t)

    async def route() -> None:
        for i, (maneuver, distance, road) in enumerate(ROUTE):
            await at(0.5 + i * 2.2)
            unit = m.DistanceUnit.KILOMETERS if distance >= 1000 else m.DistanceUnit.METERS
            shown = f"{distance / 1000:.1f}" if distance >= 1000 else str(distance)
            await send(m.Maneuver(maneuver, distance, shown, unit, road))

    async def inbox() -> None:
        for t, note in INBOX:
            await at(t)
            await send(note)

    async def art() -> None:
        await at(2.5)
        # Full-size art where the link can carry it in a couple of seconds, a thumbnail else.
        size = ART_SIZE if phone_link_capacity > 20_000 else ART_SIZE // 6
        image = bytes(range(256)) * (size // 256)
        for chunk in m.chunk_object(1, image):
            await send(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_commands)
        await send(m.NowPlaying("Midnight City", "M83", state=m.PlaybackState.PLAYING))
        async with trio.open_nursery() as script:
            script.start_soon(route)
            script.start_soon(inbox)
            script.start_soon(art)
        done.set()
        await at(END_AT)
        nursery.cancel_scope.cancel()


async def run_demo(
    profile: LinkProfile,
    *,
    seed: int,
    drop: bool,
    out: TextIO,
    data_dir: Path,
    confirm: Confirm,
    keylog: KeyLog | None = None,
) -> DemoResult:
    start = trio.current_time()
    hu_store = TrustStore(data_dir / "head-unit")
    phone_store = TrustStore(data_dir / "phone", role="phone")
    screen = _Screen(out, start)
    hu, phone = PeerSession("head-unit", keylog=keylog), PeerSession("phone")
    result = DemoResult()
    done = trio.Event()
    print(
        f"bridge demo: head unit + emulated phone, '{profile.name}' link "
        f"(ATT MTU {profile.att_mtu}, {profile.interval * 1000:g} ms interval), seed {seed}",
        file=out,
    )
    known = "knows" if phone_store.public_key in hu_store.trusted_keys() else "has never met"
    print(f"The head unit {known} this phone (data in {data_dir}).", file=out, flush=True)

    def handshakes() -> tuple[Handshake, Handshake]:
        # The head unit recognises a paired phone before connecting (advertising tokens
        # in a real car); here it simply checks its store.
        peer_key = (
            phone_store.public_key if phone_store.public_key in hu_store.trusted_keys() else None
        )
        hu_hs = Handshake(
            Role.HEAD_UNIT,
            hu_store.identity,
            name="Head unit",
            platform="head-unit",
            trusted=hu_store.trusted_keys(),
            peer_key=peer_key,
            random=os.urandom,
        )
        phone_hs = Handshake(
            Role.PHONE,
            phone_store.identity,
            name="iPhone 16" if profile.name == "ios" else "Pixel 9",
            platform="ios" if profile.name == "ios" else "android",
            trusted=phone_store.trusted_keys(),
            random=os.urandom,
        )
        return hu_hs, phone_hs

    async def radio() -> None:
        attempt = 0
        while True:
            pair = SimulatedLinkPair(profile, seed=seed + attempt, name="phone")
            hu_hs, phone_hs = handshakes()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(hu.run_link, pair.central, handshake=hu_hs))
                nursery.start_soon(partial(phone.run_link, pair.peripheral, handshake=phone_hs))
                if drop and attempt == 0:
                    await trio.sleep_until(start + DROP_AT)
                    screen.show("RADIO", "phone's radio goes silent (tunnel)")
                    pair.lose_link()
            attempt += 1
            await trio.sleep(RECONNECT_AFTER)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(radio)
        nursery.start_soon(_head_unit, hu, screen, result, hu_store, confirm)
        await _phone(
            phone,
            result=result,
            done=done,
            start=start,
            phone_link_capacity=profile.capacity(),
            store=phone_store,
            screen=screen,
        )
        with trio.move_on_after(30.0):  # let what is still queued arrive
            while any(phone.mux.queued(c) for c in Channel):
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    lost, dup, ordered = result.check()
    total = sum(len(v) for v in result.sent.values())
    print(
        f"\n{total} messages sent by the phone over {result.links} link(s): "
        f"{lost} lost, {dup} duplicated, {'in order' if ordered else 'OUT OF ORDER'}",
        file=out,
    )
    return result


async def _ask(code: str) -> bool:
    answer = await trio.to_thread.run_sync(
        input, f"Does the phone show {code}? Confirm on the head unit [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


async def _yes(code: str) -> bool:
    return True


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
) -> int:
    """Run the demo; 0 if it paired and every message arrived once and in order.
    Interactive confirmation (``assume_yes=False``) runs on the wall clock."""
    profile = PROFILES[profile_name]
    clock = None if realtime or not assume_yes else trio.testing.MockClock(autojump_threshold=0)
    confirm = _yes if assume_yes else _ask
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as scratch:
        directory = data_dir or Path(scratch)
        result = trio.run(
            partial(
                run_demo,
                profile,
                seed=seed,
                drop=drop,
                out=out,
                data_dir=directory,
                confirm=confirm,
                keylog=keylog,
            ),
            clock=clock,
        )
    lost, dup, ordered = result.check()
    if result.pairing_failed is not None:
        return 1
    return 0 if (lost, dup, ordered) == (0, 0, True) else 1
