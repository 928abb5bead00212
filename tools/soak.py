"""``python -m tools.soak``: the fault soak. Messages both ways across many injected link
drops and head-unit crashes, on the simulated link in virtual time; then: how many were
lost, duplicated or out of order per channel (all must be 0).

The phone sends notifications (messaging, phone -> head unit); the head unit replies to
them (messaging, head unit -> phone); both sides keep their SQLite stores, so what was
accepted survives a crash. Links are dropped (a supervision timeout) after random
lengths; the head unit crashes at chosen moments and starts again from its files. The
last link stays up until everything is across.

Defaults are the issue's: 10,000 messages, 100 drops, 2 restarts (about 20 s here);
the test suite runs a short version.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bridge.emulation.clock import virtual_clock
from bridge.emulation.phone_app import PhoneApp
from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import PhoneDevice
from bridge.session import PeerSession
from bridge.store import MessageStore
from bridge.wire import messages as m
from transports.simulated import PROFILES, SimulatedLinkPair

REPLY_EVERY = 4  # the head unit answers one notification in four
STALL = 60.0  # simulated seconds without a delivery after which the soak gives up


@dataclass
class SoakResult:
    notifications: list[str] = field(default_factory=list)  # sent by the phone, in order
    delivered: list[str] = field(default_factory=list)  # applied by the head unit
    replies: list[str] = field(default_factory=list)  # accepted by the head unit, in order
    answered: list[str] = field(default_factory=list)  # applied by the phone
    drops: int = 0
    restarts: int = 0
    resent: int = 0  # duplicates the receivers recognised and dropped
    inbox: int = 0  # notifications in the last head unit's inbox (restored from its file)
    seconds: float = 0.0  # virtual
    stalled: bool = False  # the last link saw nothing move for STALL seconds

    @staticmethod
    def check(sent: list[str], got: list[str]) -> tuple[int, int, bool]:
        """(lost, duplicated, in order) of one channel and direction."""
        lost = len(set(sent) - set(got))
        duplicated = len(got) - len(set(got))
        return lost, duplicated, got == [s for s in sent if s in set(got)]

    def ok(self) -> bool:
        return not self.stalled and all(
            result == (0, 0, True)
            for result in (
                self.check(self.notifications, self.delivered),
                self.check(self.replies, self.answered),
            )
        )


async def soak(
    folder: Path, *, messages: int, drops: int, restarts: int, seed: int = 1
) -> SoakResult:
    rng = random.Random(seed)
    profile = dataclasses.replace(PROFILES["ios"], supervision_timeout=0.5)
    clock = clock_ms_from_trio()
    result = SoakResult()
    start = trio.current_time()
    notes = messages * REPLY_EVERY // (REPLY_EVERY + 1)  # the rest are replies
    phone_hello = m.Hello(m.PROTOCOL_VERSIONS, "android", "Pixel 9", clock_ms=clock())
    phone_session = PeerSession("phone", hello=phone_hello)
    phone = PhoneApp(phone_session, store=MessageStore(folder / "phone"), clock_ms=clock)
    phone.history = None  # every reply is counted at the end
    send_lock = trio.Lock()  # held while the head unit hands a reply over: never crash then

    async def notify() -> None:
        for i in range(notes):
            note = m.Notification(f"n{i}", "SMS", m.Category.MESSAGE, f"message {i}", i, "Mum")
            await phone.notify(note)
            result.notifications.append(note.id)
            await trio.sleep(rng.uniform(0, 0.02))

    async def head_unit(device: PhoneDevice) -> None:
        async for event in device.events:
            if not isinstance(event, m.Notification):
                continue
            result.delivered.append(event.id)
            if len(result.delivered) % REPLY_EVERY == 0 and len(result.replies) < messages - notes:
                async with send_lock:
                    reply_id = f"r{len(result.replies)}"
                    await device.send(m.Reply(event.id, text=reply_id))
                    result.replies.append(reply_id)

    def done() -> bool:
        return (
            len(result.delivered) >= notes
            and len(phone.replies) >= len(result.replies)
            and len(result.replies) >= messages - notes
        )

    lives = restarts + 1
    per_life = [drops // lives + (1 if k < drops % lives else 0) for k in range(lives)]
    async with trio.open_nursery() as outer:
        outer.start_soon(phone.run)
        outer.start_soon(notify)
        for life, links in enumerate(per_life):
            hu_session = PeerSession("hu", hello=m.Hello(m.PROTOCOL_VERSIONS, "head-unit", "Car"))
            store = MessageStore(folder / "hu")  # the files of the last life
            device = PhoneDevice(hu_session, store=store, clock_ms=clock)
            async with trio.open_nursery() as hu:
                hu.start_soon(device.run)
                hu.start_soon(head_unit, device)
                for k in range(links + 1):
                    pair = SimulatedLinkPair(profile, seed=rng.randrange(1 << 30))
                    async with trio.open_nursery() as link:
                        link.start_soon(hu_session.run_link, pair.central)
                        link.start_soon(phone_session.run_link, pair.peripheral)
                        await trio.sleep(rng.uniform(0.2, 1.2))
                        if k < links:
                            pair.lose_link()
                            result.drops += 1
                        elif life < lives - 1:  # the head unit crashes mid-link
                            async with send_lock:
                                result.restarts += 1
                                hu.cancel_scope.cancel()
                        else:  # the last link stays up until everything is across
                            # ...or until nothing has moved for STALL simulated seconds:
                            # a stall is reported as the messages it left undelivered
                            moved, still = -1, 0.0
                            while not done() and still < STALL:
                                await trio.sleep(0.5)
                                now = len(result.delivered) + len(phone.replies)
                                moved, still = now, (still + 0.5 if now == moved else 0.0)
                            result.stalled = not done()
                            hu_session.close("done" if not result.stalled else "stalled")
                    await trio.sleep(rng.uniform(0, 0.3))
                hu.cancel_scope.cancel()
            result.resent += device.duplicates
            result.inbox = len(device.state.inbox)
            store.close()
        outer.cancel_scope.cancel()
    result.answered = [text for _, text in phone.replies]
    result.resent += phone.duplicates
    result.seconds = trio.current_time() - start
    return result


@dataclass
class FleetResult:
    devices: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, bytes, tasks)
    messages: int = 0  # application messages the head unit received
    commands: int = 0  # commands the phones received
    drops: int = 0

    def steady(self) -> list[tuple[float, int, int]]:
        """The samples after the first third (warm-up: stores, caches, first links)."""
        return self.samples[len(self.samples) // 3 :]

    def memory_growth(self) -> float:
        """Last steady sample over the first, in traced bytes (1.0 = flat)."""
        steady = self.steady()
        return steady[-1][1] / steady[0][1]

    def task_growth(self) -> int:
        """Tasks at the last steady sample minus the fewest in the steady state."""
        steady = self.steady()
        return steady[-1][2] - min(t for _, _, t in steady)


def _count_tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    return count(root) if root is not None else 0


async def fleet(folder: Path, *, devices: int, minutes: float, seed: int = 1) -> FleetResult:
    """``devices`` phones on their own simulated links for ``minutes`` of virtual time:
    every channel busy (the route, the playlist with art, messages; the head unit
    pausing, playing and marking read), links dropping every 20-60 s; traced memory and
    the number of tasks sampled every simulated minute."""
    import gc  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415 - only this check traces allocations

    from bridge.emulation.scenarios import FLAVOURS, drive, messages, playlist  # noqa: PLC0415
    from bridge.phone_device import CommandFailed  # noqa: PLC0415

    rng = random.Random(seed)
    clock = clock_ms_from_trio()
    result = FleetResult(devices)
    flavours = [FLAVOURS["android"], FLAVOURS["ios"]]

    async def one(i: int) -> None:
        flavour = flavours[i % 2]
        profile = PROFILES[flavour.link_profile]
        phone_session = PeerSession(
            f"phone{i}", hello=m.Hello(m.PROTOCOL_VERSIONS, flavour.platform, f"Phone {i}")
        )
        hu_session = PeerSession(f"hu{i}", hello=m.Hello(m.PROTOCOL_VERSIONS, "head-unit", "Car"))
        phone = PhoneApp(phone_session, store=MessageStore(folder / f"p{i}"), clock_ms=clock)
        device = PhoneDevice(hu_session, store=MessageStore(folder / f"h{i}"), clock_ms=clock)

        async def links() -> None:
            while True:
                pair = SimulatedLinkPair(profile, seed=rng.randrange(1 << 30))
                async with trio.open_nursery() as link:
                    link.start_soon(hu_session.run_link, pair.central)
                    link.start_soon(phone_session.run_link, pair.peripheral)
                    await trio.sleep(rng.uniform(20, 60))
                    pair.lose_link()
                    result.drops += 1
                await trio.sleep(rng.uniform(0.2, 2.0))

        async def phone_side() -> None:
            while True:  # the scenarios again and again
                async with trio.open_nursery() as play:
                    play.start_soon(drive, phone, flavour)
                    play.start_soon(playlist, phone, flavour)
                    play.start_soon(messages, phone, flavour)
                await trio.sleep(5)

        async def head_unit_side() -> None:
            async for event in device.events:
                result.messages += 1
                if isinstance(event, m.Notification) and rng.random() < 0.5:
                    with contextlib.suppress(CommandFailed):
                        await device.mark_read(event.id)
                elif isinstance(event, m.NowPlaying) and rng.random() < 0.3:
                    command = m.MediaCommand.PAUSE if event.playing else m.MediaCommand.PLAY
                    with contextlib.suppress(CommandFailed):
                        await device.media(command)

        async def forget_logs() -> None:
            # the emulated phone logs what it received, for tests: counted and dropped,
            # so that what is measured is the bridge's memory, not the emulator's logs
            while True:
                await trio.sleep(10)
                result.commands += len(phone.commands)
                for log in (phone.commands, phone.events, phone.replies, phone.actions):
                    log.clear()

        async with trio.open_nursery() as nursery:
            for task in (phone.run, device.run, links, phone_side, head_unit_side, forget_logs):
                nursery.start_soon(task)
            await trio.sleep(minutes * 60 + 1)
            result.commands += len(phone.commands)
            nursery.cancel_scope.cancel()
        for store in (phone.store, device.store):
            if store is not None:
                store.close()

    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            for i in range(devices):
                nursery.start_soon(one, i)
            start = trio.current_time()
            for minute in range(int(minutes) + 1):
                await trio.sleep_until(start + minute * 60)
                gc.collect()  # live memory: cycles left by ended links are garbage, not use
                result.samples.append(
                    (
                        trio.current_time() - start,
                        tracemalloc.get_traced_memory()[0],
                        _count_tasks(),
                    )
                )
    finally:
        tracemalloc.stop()
    return result


def fleet_report(result: FleetResult, wall: float) -> str:
    lines = [
        f"{result.devices} devices, {result.samples[-1][0] / 60:.0f} simulated minutes "
        f"({wall:.0f} s here): {result.messages} messages to the head unit, "
        f"{result.commands} commands to the phones, {result.drops} link drops",
        "minute  traced memory  tasks",
    ]
    for t, size, tasks in result.samples:
        lines.append(f"{t / 60:6.0f}  {size / 1e6:9.2f} MB  {tasks:5d}")
    lines.append(
        f"steady state: memory x{result.memory_growth():.3f} from first to last sample, "
        f"tasks +{result.task_growth()} over the fewest"
    )
    return "\n".join(lines)


def report(result: SoakResult, wall: float) -> str:
    lines = [
        f"{len(result.notifications) + len(result.replies)} messages, {result.drops} link "
        f"drops, {result.restarts} head-unit restarts, {result.seconds:.0f} s simulated "
        f"({wall:.1f} s here); {result.resent} resent copies recognised and dropped",
        f"{'channel':<34} {'sent':>6} {'lost':>5} {'dup':>5}  order",
    ]
    for name, sent, got in (
        ("messaging, phone -> head unit", result.notifications, result.delivered),
        ("messaging, head unit -> phone", result.replies, result.answered),
    ):
        lost, duplicated, ordered = SoakResult.check(sent, got)
        order = "kept" if ordered else "BROKEN"
        lines.append(f"{name:<34} {len(sent):>6} {lost:>5} {duplicated:>5}  {order}")
    if result.stalled:
        lines.append(f"STALLED: nothing was delivered for {STALL:.0f} simulated seconds")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--drops", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fleet", type=int, metavar="N", help="instead: N devices, every channel, --minutes"
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.fleet:
        with tempfile.TemporaryDirectory(prefix="bridge-fleet-") as folder:
            fleet_result = trio.run(
                lambda: fleet(
                    Path(folder), devices=args.fleet, minutes=args.minutes, seed=args.seed
                ),
                clock=virtual_clock(),
            )
        print(fleet_report(fleet_result, time.monotonic() - started))
        flat = fleet_result.memory_growth() <= 1.10 and fleet_result.task_growth() <= 4 * args.fleet
        return 0 if flat else 1
    with tempfile.TemporaryDirectory(prefix="bridge-soak-") as folder:
        result = trio.run(
            lambda: soak(
                Path(folder), messages=args.messages, drops=args.drops,
                restarts=args.restarts, seed=args.seed,
            ),
            clock=virtual_clock(),
        )  # fmt: skip
    print(report(result, time.monotonic() - started))
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
