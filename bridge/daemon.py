"""``bridge run`` and ``bridge pair``: the head unit as a service, and pairing from a
terminal.

Strategy. Both build the same :class:`~bridge.radio_policy.HeadUnit` from the configuration
(``bridge/config.py``) on the configured radio: bleak on BlueZ (the Raspberry Pi), or a
controller Bumble drives (a USB dongle). The data folder holds the trust store and the
message stores; one process at a time uses it, guarded by a lock file, so ``bridge
forget`` and ``bridge pair`` refuse to touch it while the service runs instead of
having their change overwritten.

Logging is set up by ``bridge/logs.py`` (journald priorities under systemd). Logs never
carry message text or keys: a notification is logged as "notification", not what it says.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from bridge import systemd
from bridge.api import ApiClient, ApiServer, ApiState, load_or_create_token
from bridge.config import Config, ConfigError
from bridge.connection import ConnectionClosed
from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import event_name
from bridge.radio_policy import (
    AppleRadio,
    Bonded,
    Confirm,
    HeadUnit,
    HeadUnitEvent,
    Listener,
    PairingAttemptFailed,
    Phone,
    Radio,
)
from bridge.session import LinkDown, LinkUp
from bridge.wire import messages as m
from pairing.bonds import BondStore
from pairing.handshake import Authenticated, CodeToConfirm, PairingFailed
from pairing.keylog import KeyLog
from pairing.trust import TrustStore
from transports.aio import asyncio_loop
from transports.ble import BleakCentral
from transports.recorder import LinkRecorder, RecordingListener, RecordingRadio

if TYPE_CHECKING:
    from bridge.home_mqtt import HomeLink

log = logging.getLogger("bridge")

LOCK_FILE = "daemon.lock"


class DaemonError(Exception):
    """The head unit cannot start; the message says what to do."""


class DataFolderError(Exception):
    """The data folder cannot be created or written; the message says which and why."""


@contextmanager
def data_lock(data_dir: Path) -> Any:
    """Hold the data folder for this process; DaemonError if another one has it."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise DataFolderError(
            f"cannot use the data folder {data_dir}: {e.strerror}; it must be a folder the "
            "service's user can write (data_dir in the configuration)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise DaemonError(
                f"the head unit's data in {data_dir} is in use by process {holder} "
                "(the bridge service?): stop it first (sudo systemctl stop ble-bridge)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def data_in_use(data_dir: Path) -> bool:
    """Whether a bridge process holds ``data_dir`` now."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


#: Makes the app-free iPhones' side of a radio (ANCS, AMS) once the bonds are open.
AppleFactory = Callable[[BondStore], Awaitable[AppleRadio]]


@dataclass
class OpenRadio:
    radio: Radio | None  # the central role's scanner
    listener: Listener | None  # the peripheral role's
    apple: AppleFactory | None  # iPhones without the app, where the radio can


@asynccontextmanager
async def open_radio(config: Config) -> AsyncIterator[OpenRadio]:
    """The configured radio (call inside trio-asyncio's loop): the central role's
    scanner, the peripheral role's listener, each None when its role is off, and the
    app-free iPhones' bonding where the radio can (Bumble, with the peripheral role)."""
    radio_config = config.radio
    roles = radio_config.roles
    if radio_config.backend == "bumble":
        from transports.bumble_apple import open_apple  # noqa: PLC0415 - Bumble only when asked
        from transports.bumble_dongle import bumble_radio  # noqa: PLC0415

        async with bumble_radio(radio_config.transport, config.name) as (central, listener):
            central.connect_timeout = radio_config.connect_timeout
            peripheral = "peripheral" in roles
            yield OpenRadio(
                central if "central" in roles else None,
                listener if peripheral else None,
                partial(open_apple, listener.server.device)
                if peripheral and radio_config.iphones_without_app
                else None,
            )
        return
    if "peripheral" in roles:
        log.warning(
            "the peripheral role (phones connect to the head unit) is not available on "
            "BlueZ yet: only phones that advertise are served; radio.roles = "
            '["central"] says so and silences this'
        )
    if "central" not in roles:
        raise DaemonError(
            'radio.roles has no role this radio can play on BlueZ yet: add "central", '
            'or use a Bumble dongle (radio.backend = "bumble") for the peripheral role'
        )
    kwargs: dict[str, Any] = {}
    if radio_config.adapter:
        kwargs["bluez"] = {"adapter": radio_config.adapter}
    central = BleakCentral(connect_timeout=radio_config.connect_timeout, backend_kwargs=kwargs)
    apple: AppleFactory | None = None
    if radio_config.iphones_without_app:
        # bluetoothd's agent and an advertisement: only when asked (dbus-fast objects)
        from transports.bluez_apple import open_bluez_apple  # noqa: PLC0415

        apple = partial(open_bluez_apple, radio_config.adapter, config.name)
    yield OpenRadio(central, None, apple)


def describe(phone: Phone, event: HeadUnitEvent) -> tuple[int, str] | None:
    """A log line for a head-unit event: its level and text (never message contents)."""
    who = phone.label  # names stay out of logs at INFO and above
    match event:
        case PairingAttemptFailed():
            ended = "; pairing mode is off now" if event.pairing_mode_ended else ""
            return (
                logging.WARNING,
                f"a pairing attempt failed ({event.failed} of {event.limit}){ended}",
            )
        case LinkUp():
            return logging.INFO, f"{who}: connected ({event.payload_size}-byte packets)"
        case LinkDown():
            return logging.INFO, f"{who}: disconnected ({event.reason})"
        case Authenticated():
            how = "paired" if event.paired_now else "recognised"
            who = f"device {event.peer.static_key.hex()[:8]}"
            return logging.INFO, f"{who}: {how} ({event.peer.platform})"
        case PairingFailed():
            return logging.WARNING, f"{who}: pairing failed: {event.reason}"
        case ConnectionClosed() | CodeToConfirm():
            return None
    return logging.DEBUG, f"{who}: {event_name(event)}"


async def _no_screen(phone: Phone, event: CodeToConfirm) -> bool:
    log.warning(
        "%s asks to pair, but this service has no screen to confirm the code on (the "
        "local API is off): refused; pair with 'bridge pair' instead",
        phone.label,
    )
    return False


@dataclass
class Running:
    head_unit: HeadUnit
    recorder: LinkRecorder | None


def _new_capture(folder: Path, stamp: str) -> Path:
    """A capture file's name from the time, never one that exists (two runs in one
    second, as `bridge pair` then `bridge run`, would overwrite the first)."""
    path = folder / f"head-unit-{stamp}.pcapng"
    n = 2
    while path.exists():
        path, n = folder / f"head-unit-{stamp}-{n}.pcapng", n + 1
    return path


@asynccontextmanager
async def head_unit(
    config: Config,
    *,
    pairing: bool,
    confirm: Confirm,
    radio: Radio | None = None,
    listener: Listener | None = None,
    apple: AppleFactory | None = None,
) -> AsyncIterator[Running]:
    """The head unit of ``config`` on its radio (or on ``radio``, ``listener`` and
    ``apple``, a radio made elsewhere: the tests' virtual one), not yet running."""
    data = config.data_path
    async with AsyncExitStack() as stack:
        stack.enter_context(data_lock(data))
        # what the configuration names is checked before the radio opens
        keylog = KeyLog(Path(config.debug.keylog)) if config.debug.keylog else None
        bonds = BondStore(data / "head-unit")
        if radio is None and listener is None:
            await stack.enter_async_context(asyncio_loop())
            opened = await stack.enter_async_context(open_radio(config))
            radio, listener, apple = opened.radio, opened.listener, opened.apple
        recorder = None
        if config.debug.capture_dir:
            folder = Path(config.debug.capture_dir)
            folder.mkdir(parents=True, exist_ok=True)
            recorder = LinkRecorder(_new_capture(folder, time.strftime("%Y%m%d-%H%M%S")))
            stack.callback(recorder.close)
            radio = RecordingRadio(radio, recorder) if radio is not None else None
            listener = RecordingListener(listener, recorder) if listener is not None else None
            log.info("recording every link in %s", recorder.path)
        trust = TrustStore(data / "head-unit")
        iphones = await apple(bonds) if apple is not None else None
        hu = HeadUnit(
            radio, trust, data / "head-unit", name=config.name, confirm=confirm,
            pairing_mode=pairing, keylog=keylog, clock_ms=clock_ms_from_trio(),
            listener=listener, apple=iphones, bonds=bonds,
        )  # fmt: skip
        yield Running(hu, recorder)


@dataclass
class Service:
    """What ``serve`` started: the head unit, and the API's port (None if off)."""

    head_unit: HeadUnit
    api: ApiState | None
    api_port: int | None
    home: HomeLink | None = None  # the home link, when [home] is enabled


async def serve(
    config: Config,
    *,
    radio: Radio | None = None,
    listener: Listener | None = None,
    apple: AppleFactory | None = None,
    confirm: Confirm | None = None,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``bridge run``: serve phones, and the local API, until cancelled. Pairing codes
    are confirmed on the API's screen (or by ``confirm``)."""
    screens: list[ApiState] = []

    async def on_screen(phone: Phone, event: CodeToConfirm) -> bool:
        if not screens:
            return await _no_screen(phone, event)
        return await screens[0].confirm(phone, event)

    async with (
        head_unit(
            config,
            pairing=config.pairing,
            confirm=confirm or on_screen,
            radio=radio,
            listener=listener,
            apple=apple,
        ) as running,  # fmt: skip
        trio.open_nursery() as nursery,
    ):
        hu = running.head_unit
        await nursery.start(hu.run)
        api_port = None
        state = ApiState(hu, clock_ms_from_trio())
        home = None
        if config.home.enabled:
            # the home link follows the API's state (what the screen sees), API or not;
            # paho is loaded only then (36 ms of every start otherwise)
            from bridge.home_mqtt import HomeLink, node_id  # noqa: PLC0415

            home = HomeLink(config.home, state, node=node_id(hu.trust.public_key))
            try:
                await nursery.start(home.run)
            except ConfigError as e:
                log.warning("home link off: %s", e)
                home = None
        if config.api.enabled:
            screens.append(state)
            token = load_or_create_token(config.token_path, config.api.token_group)
            server = ApiServer(state, token)
            api_port = await nursery.start(server.serve, config.api.host, config.api.port)
            log.info(
                "local API and screen on http://%s:%d/ (token in %s)",
                config.api.host, api_port, config.token_path,
            )  # fmt: skip
        log.info(
            "head unit %r serving %d paired phone(s)%s; data in %s",
            config.name, len(hu.trust.devices()),
            ", pairing mode on" if config.pairing else "", config.data_path,
        )  # fmt: skip
        task_status.started(Service(hu, screens[0] if screens else None, api_port, home))
        # systemd (Type=notify): ready once the radio scans and the API listens; the
        # watchdog is fed from this loop, so a hung loop gets the service restarted
        systemd.notify(f"READY=1\nSTATUS=serving {len(hu.trust.devices())} paired phone(s)")
        interval = systemd.watchdog_interval()
        if interval is not None:
            nursery.start_soon(systemd.keep_watchdog_fed, interval)
        async for phone, event in hu.events:
            for screen in screens or ([state] if home is not None else []):
                screen.on_device_event(phone, event)
            line = describe(phone, event)
            if line is not None:
                log.log(*line)


async def pair(
    config: Config,
    confirm: Confirm,
    *,
    limit: float,
    radio: Radio | None = None,
    listener: Listener | None = None,
    apple: AppleFactory | None = None,
    out: TextIO = sys.stdout,
) -> str | None:
    """``bridge pair``: pairing mode until one phone has paired (its name) or ``limit``
    seconds passed (None)."""
    async with head_unit(
        config, pairing=True, confirm=confirm, radio=radio, listener=listener, apple=apple
    ) as running:
        hu = running.head_unit
        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                await nursery.start(hu.run)
                print(
                    f"Pairing mode: open the bridge app on the phone (for {limit:g} s)"
                    + (", or tap the car in an iPhone's Bluetooth settings" if hu.apple else ""),
                    file=out,
                    flush=True,
                )
                paired: Phone | None = None
                async for phone, event in hu.events:
                    if isinstance(event, PairingFailed):
                        print(f"{phone.name}: pairing failed: {event.reason}", file=out)
                    if isinstance(event, Authenticated) and event.paired_now:
                        paired = phone
                    # the phone's hello: it has confirmed and stored us too, the link
                    # can end (ending it before could leave the phone unpaired)
                    if isinstance(event, m.Hello) and phone is paired:
                        nursery.cancel_scope.cancel()
                        return phone.name
                    if isinstance(event, Bonded):  # an iPhone without the app
                        nursery.cancel_scope.cancel()
                        return phone.name
    return None


async def pair_through_service(
    config: Config,
    ask: Callable[[dict[str, Any]], Awaitable[bool]],
    *,
    limit: float,
    out: TextIO = sys.stdout,
) -> str | None:
    """``bridge pair`` while the service runs: pairing mode through its API, each code
    confirmed by ``ask`` (the screen may answer too); the new phone's name, or None."""
    try:
        token = config.token_path.read_text().strip()
    except OSError as e:
        raise DaemonError(
            f"the service is running, but its API token {config.token_path} cannot be read "
            f"({e.strerror}): run this as the service's user (sudo -u ble-bridge bridge pair)"
        ) from None
    host, port = config.api.host, config.api.port
    try:
        client = await ApiClient.open(host, port)
    except OSError as e:
        raise DaemonError(
            f"the service is running, but its API at {host}:{port} does not answer "
            f"({e.strerror or e}): is api.enabled off?"
        ) from None
    was_on = True
    try:
        await client.send({"op": "auth", "token": token})
        state = await client.receive(lambda e: e.get("event") == "state")
        known = {d["id"] for d in state["devices"]}
        was_on = state["pairing"]
        await client.op(op="pairing", on=True)
        print(
            f"Pairing mode (through the running service): open the bridge app on the phone "
            f"(for {limit:g} s)",
            file=out,
            flush=True,
        )
        with trio.move_on_after(limit):
            while True:
                event = await client.receive(
                    lambda e: e.get("event") in ("pairing_request", "device")
                )
                if event["event"] == "pairing_request":
                    await client.op(op="confirm", id=event["id"], accept=await ask(event))
                    continue
                device = client.devices[event["device"]["id"]]  # the events merged
                if device["id"] and device["id"] not in known and device.get("ready"):
                    return str(device["name"])
        return None
    except ConnectionError as e:
        raise DaemonError(f"the service closed the API connection ({e})") from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if not was_on and client.closed is None:
                await client.op(op="pairing", on=False)
            await client.aclose()


def run(config: Config) -> int:
    """``bridge run`` until SIGTERM or SIGINT; the exit code."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, config)

                async for signum in signals:
                    log.info("stopping (%s)", signal.Signals(signum).name)
                    systemd.notify("STOPPING=1")
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


async def yes(phone: Phone, event: CodeToConfirm) -> bool:
    """Confirm every pairing code (demos and tests only: a real head unit asks)."""
    return True
