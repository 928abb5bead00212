"""The scenarios, inside the guest: the head unit through bleak's BlueZ backend on hci0,
an Android and an iOS emulated phone on the same virtual radio.

The radio is the project's Bumble one (``transports/bumble_radio.py``): hci0 is one of
its controllers handed to the kernel through ``/dev/vhci``, so the head unit's path is
the real one (bleak -> D-Bus -> bluetoothd -> kernel HCI -> controller), and the phones
are Bumble devices on controllers of the same radio. (BlueZ's own ``btvirt`` emulator
cannot carry two phones at once: its controllers announce the central's connection
handle to the peripheral while filing the connection under another, see
docs/BLUEZ.md.)

Writes ``/out/results.json`` (scenario -> "passed" or why it failed) after each
scenario, the phones' btsnoop captures and bluetoothd's log to ``/out``. Wall-clock
time: this is real BlueZ. Exit code 0 iff every scenario asked for passed.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from bridge.config import Config, load_config
from bridge.doctor import run_checks
from bridge.emulation.app_free_iphone import AppFreeIPhone
from bridge.emulation.emulator import EmulatedPhone
from bridge.emulation.scenarios import FLAVOURS, Flavour, drive, messages, playlist
from bridge.emulation.world import bleak_on, pacing_for
from bridge.endpoint import clock_ms_from_trio
from bridge.logs import setup_logging
from bridge.phone_device import ArtReceived, CommandFailed
from bridge.radio_policy import HeadUnit, HeadUnitEvent, Phone
from bridge.session import LinkDown, LinkUp
from bridge.wire import messages as m
from bridge.wire.errors import first_error
from pairing.bonds import BondStore
from pairing.handshake import Authenticated, CodeToConfirm
from pairing.keylog import KeyLog
from pairing.trust import TrustStore
from tools.bench.memory import play, ready_devices, rss_of
from tools.conformance.cli import run_cases
from tools.conformance.target import RadioEmulatorUnderTest
from transports.aio import asyncio_loop, asyncio_task_stacks
from transports.ble import BleakCentral
from transports.bumble_apple import open_apple
from transports.bumble_dongle import bumble_radio
from transports.bumble_phone import BumblePeripheral
from transports.bumble_radio import VirtualRadio, kernel_controller
from transports.simulated import PROFILES

T = TypeVar("T")
OUT = Path("/out")
BLUETOOTHD = "/usr/libexec/bluetooth/bluetoothd"
HEAD_UNIT_ADDRESS = "00:AA:01:00:00:00"
RADIO: list[VirtualRadio] = []  # the boot's radio, for the scenarios that add devices
SCENARIO_LIMIT = 150.0
ANDROID, IOS = FLAVOURS["android"], FLAVOURS["ios"]
TABLET = dataclasses.replace(ANDROID, name="Galaxy Tab S9", model="SM-X710")


class Lane:
    def __init__(self, hu: HeadUnit, phones: dict[str, EmulatedPhone]) -> None:
        self.hu = hu
        self.phones = phones
        self.events: list[tuple[Phone, HeadUnitEvent]] = []
        self.prompts: list[CodeToConfirm] = []
        self._changed = trio.Event()

    def of(self, name: str, cls: type[T]) -> list[T]:
        """The events of one phone that are a ``cls``, in order."""
        return [e for p, e in self.events if p.name == name and isinstance(e, cls)]

    async def until(self, what: str, predicate: Callable[[], bool], limit: float = 90) -> None:
        with trio.move_on_after(limit):
            while not predicate():
                with trio.move_on_after(0.5):
                    await self._changed.wait()
            return
        raise AssertionError(f"timed out waiting for {what}")

    async def pump(self) -> None:
        async for phone, event in self.hu.events:
            self.events.append((phone, event))
            self._changed.set()
            self._changed = trio.Event()

    def connected(self, name: str) -> bool:
        phone = self.hu.phone(name)
        return phone is not None and phone.connected and phone.device.peer is not None


async def pair_and_channels(lane: Lane) -> None:
    """Find the phone, connect through BlueZ, take the real MTU, pair, all channels."""
    name, phone = ANDROID.name, lane.phones["pixel"]
    phone.set_advertising(True)
    await lane.until("the Android phone paired", lambda: lane.connected(name))
    ups = lane.of(name, LinkUp)
    assert ups[-1].payload_size == 512, f"payload {ups[-1].payload_size}: MTU not acquired"
    assert [a.paired_now for a in lane.of(name, Authenticated)][:1] == [True]
    record = lane.hu.phone(name)
    assert record is not None
    async with trio.open_nursery() as play:
        play.start_soon(drive, phone.app, ANDROID)
        play.start_soon(messages, phone.app, ANDROID)
        play.start_soon(playlist, phone.app, ANDROID)
        await lane.until("a notification", lambda: bool(lane.of(name, m.Notification)))
        await lane.until("album art", lambda: bool(lane.of(name, ArtReceived)))
        await record.device.media(m.MediaCommand.PAUSE)
        note = lane.of(name, m.Notification)[0]
        await record.device.reply(note.id, text="On my way")
        play.cancel_scope.cancel()
    assert lane.of(name, m.Maneuver), "no maneuver arrived"
    assert phone.app.player is not None and not phone.app.player.playing, "pause not applied"
    assert (note.id, "On my way") in phone.app.replies, "reply not delivered"


async def link_loss(lane: Lane) -> None:
    """The link drops in the middle of a transfer; the head unit reconnects by token,
    without a prompt, and every message arrives once, in order."""
    name, phone = ANDROID.name, lane.phones["pixel"]
    phone.set_advertising(True)
    await lane.until("the Android phone connected", lambda: lane.connected(name))
    await _drop_mid_transfer(lane, phone, prefix="loss", object_size=24 * 1024)


async def android_and_ios(lane: Lane) -> None:
    """An Android phone and an iPhone at once, each on its own controller."""
    for phone in lane.phones.values():
        phone.set_advertising(True)
    await lane.until(
        "both phones connected", lambda: lane.connected(ANDROID.name) and lane.connected(IOS.name)
    )
    ups = lane.of(IOS.name, LinkUp)
    assert ups[-1].payload_size == 182, f"iOS payload {ups[-1].payload_size}"
    pixel, iphone = lane.phones["pixel"], lane.phones["iphone"]
    start = len(lane.of(ANDROID.name, m.Maneuver))
    async with trio.open_nursery() as play:
        play.start_soon(drive, pixel.app, ANDROID)
        play.start_soon(playlist, iphone.app, IOS)
        await lane.until(
            "a maneuver and now playing",
            lambda: (
                len(lane.of(ANDROID.name, m.Maneuver)) > start
                and bool(lane.of(IOS.name, m.NowPlaying))
            ),
        )
        record = lane.hu.phone(IOS.name)
        assert record is not None
        await record.device.media(m.MediaCommand.PAUSE)
        play.cancel_scope.cancel()
    assert iphone.app.player is not None and not iphone.app.player.playing


async def doctor(lane: Lane) -> None:
    """``bridge doctor`` on a machine with real BlueZ: every check passes."""
    config = Config(data_dir=str(Path(tempfile.mkdtemp()) / "data"))
    checks = await trio.to_thread.run_sync(run_checks, config)
    for check in checks:
        logging.info("doctor: %s %s: %s", "ok" if check.ok else "FAIL", check.name, check.detail)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, f"bridge doctor failed: {'; '.join(failed)}"
    assert {c.name for c in checks} >= {"BlueZ", "Bluetooth adapter", "D-Bus", "adapter powered"}


MEMORY_DEVICES = 4
MEMORY_SETTLE = 30.0
MEMORY_LIMIT = 240.0


async def memory(radio: VirtualRadio, data: Path, clock: Callable[[], int]) -> str:
    """``bridge run`` itself (bleak on this BlueZ, its API, its stores) serving four
    paired phones that navigate, play music and send messages: its resident memory after
    30 s of traffic (P6 of docs/BENCHMARKS.md, on the Raspberry Pi's radio path)."""
    daemon_data = data / "daemon"
    hu_trust = TrustStore(daemon_data / "head-unit")
    phones: list[tuple[EmulatedPhone, Flavour]] = []
    for i in range(MEMORY_DEVICES):  # paired beforehand: both trust stores written
        flavour = ANDROID if i % 2 == 0 else IOS
        profile = PROFILES[flavour.link_profile]
        device = await radio.powered(f"p{i}", pacing_for(profile))
        peripheral = BumblePeripheral(device, att_mtu=profile.att_mtu, apple=flavour is IOS)
        phone = EmulatedPhone(peripheral, flavour, data / f"p{i}", clock_ms=clock)
        hu_trust.add(phone.trust.public_key, f"{flavour.name} #{i}",
                     flavour.platform, phone.trust.irk)  # fmt: skip
        phone.trust.add(hu_trust.public_key, "Car", "head-unit")
        phones.append((phone, flavour))
    config_path = data / "config.toml"
    config_path.write_text(
        f'name = "Car"\ndata_dir = "{daemon_data}"\n[debug]\nkeylog = "{OUT / "keys.log"}"\n'
    )
    config = load_config(config_path)
    await _adapter_powered(config)
    with (OUT / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(config_path)],
            stderr=log,
        )
        try:
            async with trio.open_nursery() as nursery:
                for i, (phone, flavour) in enumerate(phones):
                    await nursery.start(logged, phone.run, f"phone p{i}")
                    nursery.start_soon(play, phone, flavour)
                ready = await ready_devices(config, MEMORY_DEVICES, MEMORY_LIMIT - 60)
                assert daemon.poll() is None, f"bridge run exited {daemon.returncode}"
                assert ready == MEMORY_DEVICES, f"{ready} of {MEMORY_DEVICES} phones ready"
                await trio.sleep(MEMORY_SETTLE)
                assert daemon.poll() is None, f"bridge run exited {daemon.returncode}"
                rss, peak = rss_of(daemon.pid)
                nursery.cancel_scope.cancel()
        finally:
            daemon.terminate()
            await trio.to_thread.run_sync(daemon.wait)
    return (
        f"bridge run on BlueZ serving {ready} of {MEMORY_DEVICES} phones: "
        f"resident {rss / 1024:.1f} MB, peak {peak / 1024:.1f} MB (goal <= 60 MB)"
    )


async def user_channel(radio: VirtualRadio, data: Path, clock: Callable[[], int]) -> str:
    """The head unit on the kernel's HCI user channel (``radio.backend = "bumble"``,
    ``transport = "hci-socket:0"``; bluetoothd not running): Bumble's host on hci0, as a
    Pi can run it where BlueZ's GATT server cannot serve several centrals (docs/BLUEZ.md).
    Both roles at once and an iPhone without the app: an iPhone and a tablet with the app
    connect to the car, an Android phone is found by scanning, the app-free iPhone bonds;
    each one's notification arrives; then the iPhone's link drops mid-transfer and it
    comes back, everything once and in order."""
    iphone_device = await radio.powered("iphone", pacing_for(PROFILES["ios"]))
    iphone = EmulatedPhone(None, IOS, data / "iphone", clock_ms=clock, device=iphone_device,
                           central=bleak_on(iphone_device, mtu=185))  # fmt: skip
    tablet_device = await radio.powered("tablet", pacing_for(PROFILES["android"]))
    tablet = EmulatedPhone(None, TABLET, data / "tablet", clock_ms=clock, device=tablet_device,
                           central=bleak_on(tablet_device, mtu=517))  # fmt: skip
    pixel_device = await radio.powered("pixel", pacing_for(PROFILES["android"]))
    pixel = EmulatedPhone(BumblePeripheral(pixel_device, att_mtu=517), ANDROID, data / "pixel",
                          clock_ms=clock)  # fmt: skip
    app_free = AppFreeIPhone(await radio.powered("ana", pacing_for(PROFILES["ios"])))
    bonds = BondStore(data / "hu")
    prompts: list[CodeToConfirm] = []

    async def yes(phone: Phone, event: CodeToConfirm) -> bool:
        prompts.append(event)
        return True

    async with AsyncExitStack() as radios:
        for attempt in range(30):  # the kernel powers hci0 off again after registering it
            try:
                central, listener = await radios.enter_async_context(
                    bumble_radio("hci-socket:0", "Car")
                )
                break
            except OSError as e:  # EBUSY while the kernel still has hci0 up
                logging.warning("hci-socket:0 not ready (%s); retrying", e)
                await trio.sleep(1.0)
                if attempt == 29:
                    raise
        apple = await open_apple(listener.server.device, bonds)
        hu = HeadUnit(central, TrustStore(data / "hu"), data / "hu", pairing_mode=True,
                      confirm=yes, clock_ms=clock, listener=listener, apple=apple,
                      bonds=bonds, keylog=KeyLog(OUT / "keys.log"))  # fmt: skip
        lane = Lane(hu, {"iphone": iphone, "pixel": pixel, "tablet": tablet})
        async with trio.open_nursery() as nursery:
            for key, phone in lane.phones.items():
                await nursery.start(logged, phone.run, f"phone {key}")
            nursery.start_soon(lane.pump)
            await nursery.start(logged, hu.run, "head unit")
            pixel.set_advertising(True)
            await lane.until("the Android phone paired", lambda: lane.connected("Pixel 9"))
            await lane.until("the iPhone paired", lambda: lane.connected("iPhone 16"))
            await lane.until("the tablet paired", lambda: lane.connected(TABLET.name))
            roles = {p.name: p.role for p in hu.phones.values() if p.connected}
            assert roles == {"Pixel 9": "central", "iPhone 16": "peripheral",
                             TABLET.name: "peripheral"}, roles  # fmt: skip
            # two centrals at once on the car's GATT server, each with its own MTU
            sizes = {name: lane.of(name, LinkUp)[-1].payload_size
                     for name in ("iPhone 16", TABLET.name)}  # fmt: skip
            assert sizes == {"iPhone 16": 182, TABLET.name: 512}, sizes
            await app_free.connect(await app_free.find_car())
            await app_free.message("Ana", "On my way")
            await pixel.app.notify(
                m.Notification("p1", "Chat", m.Category.MESSAGE, "from the Pixel", 0)
            )
            await iphone.app.notify(
                m.Notification("i1", "Chat", m.Category.MESSAGE, "from the iPhone", 0)
            )
            await tablet.app.notify(
                m.Notification("t1", "Chat", m.Category.MESSAGE, "from the tablet", 0)
            )
            wanted = {"from the Pixel", "from the iPhone", "from the tablet", "On my way"}
            await lane.until(
                "four notifications",
                lambda: {n.text for _, n in lane.events if isinstance(n, m.Notification)} >= wanted,
            )
            await _drop_mid_transfer(lane, iphone, prefix="drop", object_size=12 * 1024)
            nursery.cancel_scope.cancel()
    return (
        f"the head unit on the HCI user channel (Bumble on hci0): 3 phones with the app "
        f"(1 found by scanning, 2 connecting: MTU 185 and 517) and 1 without, "
        f"{len(prompts)} prompts"
    )


async def iphone_bluez(data: Path, clock: Callable[[], int]) -> str:
    """An iPhone without the app bonds with bluetoothd (the head unit's Agent1 answers
    the numeric comparison through its prompt, BlueZ keeps the bond) and the head unit
    reads its ANCS and AMS through BlueZ's GATT client; it reconnects without a prompt."""
    from transports.bluez_apple import BluezApple  # noqa: PLC0415 - this scenario only

    await _adapter_powered(Config())
    iphone = AppFreeIPhone(await RADIO[0].powered("ana", pacing_for(PROFILES["ios"])))
    bonds = BondStore(data / "hu")
    prompts: list[CodeToConfirm] = []

    async def yes(phone: Phone, event: CodeToConfirm) -> bool:
        prompts.append(event)
        return True

    apple = BluezApple(bonds, "hci0", name="Car")
    await apple.start()
    hu = HeadUnit(None, TrustStore(data / "hu"), data / "hu", pairing_mode=True, confirm=yes,
                  clock_ms=clock, apple=apple, bonds=bonds)  # fmt: skip
    lane = Lane(hu, {})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lane.pump)
        await nursery.start(logged, hu.run, "head unit")
        address = await iphone.find_car(timeout=60)
        await iphone.connect(address)
        await iphone.message("Ana", "On my way")
        await iphone.play("Nina Simone", "Pastel Blues", "Sinnerman", 622.0)

        def texts() -> list[str]:
            return [n.text for _, n in lane.events if isinstance(n, m.Notification)]

        await lane.until("the iPhone's message through ANCS", lambda: "On my way" in texts())
        await lane.until(
            "its music through AMS",
            lambda: any(isinstance(e, m.NowPlaying) and e.title == "Sinnerman"
                        for _, e in lane.events),
        )  # fmt: skip
        await iphone.disconnect()
        await trio.sleep(3)
        hu.pairing_mode = False
        await iphone.connect(address)  # encrypted with the bond BlueZ kept
        await iphone.message("Ben", "Back again")
        await lane.until("a message after reconnecting", lambda: "Back again" in texts())
        assert len(prompts) == 1, f"{len(prompts)} prompts"
        nursery.cancel_scope.cancel()
    return (
        f"an iPhone without the app bonded with bluetoothd and was served twice, "
        f"{len(prompts)} prompt"
    )


CONFORMANCE_LIMIT = 600.0


async def conformance(radio: VirtualRadio, data: Path) -> str:
    """``bridge-conformance --radio bluez`` in the guest: the tool is the head unit through
    bleak's BlueZ backend on hci0 (as on a Pi), the phone under test this project's
    emulated phone on the virtual radio; every case passes or is skipped with why."""
    phone = RadioEmulatorUnderTest(data / "conformance-phone", radio=radio)
    async with trio.open_nursery() as nursery:
        await nursery.start(phone.run)
        await trio.sleep(2.0)  # bluetoothd powers hci0 (AutoEnable)
        _, results = await run_cases(
            None, data / "conformance", set(), "bluez", target=phone, open_loop=False,
            on_result=lambda result: logging.info("conformance: %s", result.line()),
        )  # fmt: skip
        nursery.cancel_scope.cancel()
    failed = [result.line() for result in results if result.outcome == "fail"]
    assert not failed, "; ".join(failed)
    skipped = [result.number for result in results if result.outcome == "skip"]
    return (
        f"conformance over BlueZ: {len(results) - len(skipped)} passed, "
        f"{len(skipped)} skipped ({', '.join(skipped)})"
    )


async def _adapter_powered(config: Config) -> None:
    """Wait until bluetoothd has powered hci0 (``bridge doctor``'s check)."""
    with trio.fail_after(30):
        while True:
            checks = await trio.to_thread.run_sync(run_checks, config)
            if any(c.name == "adapter powered" and c.ok for c in checks):
                return
            await trio.sleep(1.0)


def task_dump() -> str:
    """Every trio task and what it awaits, then every asyncio task: what a hang looks like."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        frames = [f"{f.f_code.co_name}:{line}" for f, line in task.iter_await_frames()]
        lines.append(f"{'  ' * depth}{task.name}: {' > '.join(frames[-6:])}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    root = trio.lowlevel.current_root_task()
    if root is not None:
        walk(root, 0)
    return "\n".join([*lines, *asyncio_task_stacks()])


async def logged(
    run: Callable[..., Awaitable[None]],
    what: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``run(task_status=...)``, logging at once an exception that ends it (otherwise seen
    only when the whole nursery has ended, which a stuck task may prevent)."""
    try:
        await run(task_status=task_status)
    except BaseException as e:
        rest = e.split(trio.Cancelled)[1] if isinstance(e, BaseExceptionGroup) else e
        if rest is not None and not isinstance(rest, trio.Cancelled):
            logging.exception("%s ended with an error", what)
        raise


#: The running scenario and when it must have ended, watched by a plain thread: it
#: still runs when no trio deadline can fire (every scope cancelled, one task waiting on an
#: asyncio future that never completes) or trio's own thread is blocked.
WATCH: dict[str, Any] = {"name": None, "deadline": None, "token": None}


def hung(name: str) -> None:
    """The scenario overran its deadline by far: dump every thread and every task, record
    it as hung, and end the process (nothing short of that ends a stuck scenario)."""
    with Path("/tmp/traceback.txt").open("w") as f:  # tmpfs first: /out might be the problem
        f.write(f"scenario {name} past its deadline; every thread:\n")
        f.flush()
        faulthandler.dump_traceback(f, all_threads=True)
    dump: list[str] = []
    token = WATCH["token"]
    if token is not None:  # trio's tasks, dumped from trio's thread

        def from_trio() -> None:
            try:
                dump.append(trio.from_thread.run_sync(task_dump, trio_token=token))
            except trio.RunFinishedError:
                dump.append("(no task dump: trio's run has ended)")

        helper = threading.Thread(target=from_trio, daemon=True)
        helper.start()
        helper.join(10.0)
    text = Path("/tmp/traceback.txt").read_text() + "\n".join(dump or ["(trio did not answer)"])
    Path("/tmp/traceback.txt").write_text(text)
    try:
        (OUT / "traceback.txt").write_text(text)
        path = OUT / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        results[name] = "failed: hung past its deadline (every task in traceback.txt)"
        path.write_text(json.dumps(results, indent=1))
        print(f"scenario {name}: {results[name]}", flush=True)
    finally:
        os._exit(3)


def thread_watchdog() -> None:
    while True:
        time.sleep(1.0)  # a thread's own clock: trio's may be the thing that is stuck
        deadline = WATCH["deadline"]
        if deadline is not None and time.monotonic() > deadline:
            hung(WATCH["name"])


SCENARIOS: dict[str, Callable[[Lane], Awaitable[None]]] = {
    "pair-and-channels": pair_and_channels,
    "link-loss": link_loss,
    "android-and-ios": android_and_ios,
    "doctor": doctor,
}


async def _drop_mid_transfer(
    lane: Lane, phone: EmulatedPhone, *, prefix: str, object_size: int
) -> None:
    """The phone drops its link in the middle of a transfer (20 notifications and an
    object); the link comes back (the head unit reconnects by token, or the phone, a
    central, connects again and proves who it is), without a prompt, and every
    notification arrives once, in order."""
    name = phone.flavour.name
    before = len(lane.of(name, LinkDown))
    sent: list[str] = []
    start = len(lane.of(name, m.Notification))

    async def publish() -> None:
        for i in range(20):
            if i == 5:
                data = bytes(range(256)) * (object_size // 256)
                await phone.app.send_object(90 + i, data, "image/jpeg")
            note = m.Notification(
                f"{prefix}{i}", "Chat", m.Category.MESSAGE, f"{prefix[0]}{i}", 0, sender="Bo"
            )
            await phone.app.notify(note)
            sent.append(note.id)
            await trio.sleep(0.3)

    async with trio.open_nursery() as play:
        play.start_soon(publish)
        await lane.until("5 notifications", lambda: len(lane.of(name, m.Notification)) >= start + 5)
        await phone.drop_link()  # the phone's side ends the connection, mid-transfer
    await lane.until("the link to go down", lambda: len(lane.of(name, LinkDown)) > before)
    await lane.until(
        "every notification after reconnecting",
        lambda: len(lane.of(name, m.Notification)) >= start + len(sent),
        120,
    )
    got = [n.id for n in lane.of(name, m.Notification)[start:]]
    assert got == sent, f"got {got}"
    assert lane.of(name, Authenticated)[-1].paired_now is False, "asked to pair again"


async def _alone(
    name: str,
    run: Callable[[], Awaitable[str]],
    limit: float = SCENARIO_LIMIT,
    *,
    measurement: bool = False,
) -> int:
    """A scenario that runs alone in its boot, with its own head unit: its result in
    ``results.json`` (and, for a measurement, its line in ``measurements.txt``)."""
    WATCH["token"] = trio.lowlevel.current_trio_token()
    threading.Thread(target=thread_watchdog, daemon=True).start()
    WATCH.update(name=name, deadline=time.monotonic() + limit + 20)
    results: dict[str, str] = {}
    try:
        with trio.fail_after(limit):
            line = await run()
        if measurement:
            (OUT / "measurements.txt").write_text(line + "\n")
        print(line, flush=True)
        results[name] = "passed"
    except* (AssertionError, trio.TooSlowError, OSError, CommandFailed) as group:
        error = first_error(group)
        results[name] = f"failed: {type(error).__name__}: {error}"
        logging.exception("%s failed", name)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    return 0 if results[name] == "passed" else 1


async def main(names: list[str]) -> int:
    results: dict[str, str] = {}
    data = Path(tempfile.mkdtemp())
    clock = clock_ms_from_trio()
    async with asyncio_loop(), AsyncExitStack() as stack:
        # One virtual radio: the kernel's hci0 (BlueZ's adapter) and the phones.
        radio = VirtualRadio(snoop_dir=OUT)
        stack.callback(radio.close)
        await stack.enter_async_context(
            kernel_controller(
                radio, HEAD_UNIT_ADDRESS, legacy_advertising=names == ["user-channel"]
            )
        )
        phones: dict[str, EmulatedPhone] = {}
        for key, flavour in (("pixel", ANDROID), ("iphone", IOS)):
            profile = PROFILES[flavour.link_profile]
            device = await radio.powered(key, pacing_for(profile))
            peripheral = BumblePeripheral(device, att_mtu=profile.att_mtu, apple=flavour is IOS)
            phones[key] = EmulatedPhone(peripheral, flavour, data / key, clock_ms=clock)
            phones[key].set_advertising(False)
        if names == ["user-channel"]:  # no bluetoothd: the head unit owns hci0
            return await _alone("user-channel", partial(user_channel, radio, data, clock))
        bluetoothd_log = stack.enter_context((OUT / "bluetoothd.log").open("w"))
        bluetoothd = subprocess.Popen(
            [BLUETOOTHD, "-n", "-d"], stdout=bluetoothd_log, stderr=subprocess.STDOUT
        )
        RADIO[:] = [radio]
        try:
            if names == ["iphone-bluez"]:
                return await _alone("iphone-bluez", partial(iphone_bluez, data, clock))
            if names == ["conformance"]:
                return await _alone(
                    "conformance", partial(conformance, radio, data), CONFORMANCE_LIMIT,
                    measurement=True,
                )  # fmt: skip
            if names == ["memory"]:  # bridge run itself is the head unit
                return await _alone(
                    "memory", partial(memory, radio, data, clock), MEMORY_LIMIT,
                    measurement=True,
                )  # fmt: skip
            await trio.sleep(2.0)  # bluetoothd powers hci0 (AutoEnable)

            async def yes(phone: Phone, event: CodeToConfirm) -> bool:
                lane.prompts.append(event)
                return True

            hu = HeadUnit(BleakCentral(connect_timeout=30.0), TrustStore(data / "hu"), data / "hu",
                          pairing_mode=True, confirm=yes, clock_ms=clock,
                          keylog=KeyLog(OUT / "keys.log"))  # fmt: skip
            lane = Lane(hu, phones)
            async with trio.open_nursery() as nursery:
                for key, phone in phones.items():
                    await nursery.start(logged, phone.run, f"phone {key}")
                nursery.start_soon(lane.pump)
                for attempt in range(30):  # the adapter appears when bluetoothd is ready
                    try:
                        await nursery.start(logged, hu.run, "head unit")
                        break
                    except OSError as e:  # the scan cannot start until BlueZ has hci0
                        logging.warning("head unit not ready (%s); retrying", e)
                        await trio.sleep(1.0)
                        if attempt == 29:
                            raise
                WATCH["token"] = trio.lowlevel.current_trio_token()
                threading.Thread(target=thread_watchdog, daemon=True).start()
                for name in names:
                    WATCH.update(name=name, deadline=time.monotonic() + SCENARIO_LIMIT + 20)
                    try:
                        with trio.fail_after(SCENARIO_LIMIT):
                            await SCENARIOS[name](lane)
                        results[name] = "passed"
                    except* (AssertionError, trio.TooSlowError, CommandFailed) as group:
                        error = first_error(group)  # a check, the deadline, or a refused command
                        results[name] = f"failed: {type(error).__name__}: {error}"
                        logging.exception("scenario %s failed", name)
                    (OUT / "results.json").write_text(json.dumps(results, indent=1))
                    print(f"scenario {name}: {results[name]}", flush=True)
                    WATCH["deadline"] = None
                nursery.cancel_scope.cancel()
        finally:
            bluetoothd.terminate()
    return 0 if all(v == "passed" for v in results.values()) and results else 1


if __name__ == "__main__":
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)  # a hang shows where
    setup_logging("info", timestamps=True)
    # bleak's BlueZ backend at debug level (every D-Bus signal) in a file of its own
    bleak_log = logging.FileHandler(OUT / "bleak.log")
    bleak_log.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("bleak").addHandler(bleak_log)
    logging.getLogger("bleak").setLevel(logging.DEBUG)
    logging.getLogger("bleak").propagate = False
    logging.getLogger("bridge.radio_policy").setLevel(logging.DEBUG)
    logging.getLogger("transports.bluez_apple").setLevel(logging.DEBUG)
    sys.exit(trio.run(main, sys.argv[1:] or list(SCENARIOS)))
