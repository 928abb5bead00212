"""``python -m tools.screen_demo``: the head unit service (``bridge run``) with its screen,
and two emulated phones on the virtual BLE radio, in real time.

Open the printed address in a browser: pair each device by confirming its code on the
screen, then watch the Android phone navigate while an iPad (a passenger's tablet) plays
music and gets messages; tap pause, reply to a message, open "Apps" to launch what each
device offers (the Pixel is locked: its "Open the garage" asks to unlock it). What each
device receives is printed (the browser tests read it). ``--yes`` confirms pairings
without the screen. ``--cast app-free``: instead, one iPhone without the bridge app,
which bonds (the same prompt) and shares a message, an incoming call and a podcast
through ANCS and AMS; ``all``: the three.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
import trio
from paho.mqtt.enums import CallbackAPIVersion

from bridge import daemon
from bridge.config import ApiConfig, Config, HomeConfig, SceneConfig
from bridge.emulation.scenarios import FLAVOURS, drive, launcher, messages, playlist
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from bridge.radio_policy import AppleRadio, Confirm
from bridge.wire import messages as m
from bridge.wire.apple import RemoteCommand
from pairing.bonds import BondStore
from transports.aio import asyncio_loop
from transports.simulated import PROFILES

CAST = {"pixel": "android", "ipad": "ipad"}
APP_FREE = "Ana's iPhone"


async def run(args: argparse.Namespace, out: TextIO) -> None:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    data = Path(args.data_dir or tempfile.mkdtemp(prefix="bridge-screen-"))
    home = HomeConfig()
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        home = HomeConfig(enabled=True, host=host or "127.0.0.1", port=int(port),
                          scenes=DEMO_SCENES)  # fmt: skip
    config = Config(
        name="Demo car", data_dir=str(data / "head-unit"), pairing=True,
        api=ApiConfig(port=args.port), home=home,
    )  # fmt: skip
    cast = {} if args.cast == "app-free" else CAST
    confirm = daemon.yes if args.yes else None
    async with (
        asyncio_loop(),
        service_with_phones(
            config, cast, data / "phones", confirm, app_free=args.cast != "phones"
        ) as (service, world),
        trio.open_nursery() as nursery,
    ):
        token = config.token_path.read_text().strip()
        say(f"screen: http://127.0.0.1:{service.api_port}/#token={token}")
        for key, flavour in cast.items():
            nursery.start_soon(_play, world.phones[key], FLAVOURS[flavour], key, say)
        if args.cast != "phones":
            nursery.start_soon(_app_free, world, say)
        if home.enabled:
            nursery.start_soon(_demo_home, home, say)


#: The demo's home card: what the car can ask of the demo's home (docs/HOME.md).
DEMO_SCENES = (
    SceneConfig("garage", "Open the garage", "demo-home/garage/set", "OPEN",
                "demo-home/garage/state"),
    SceneConfig("lights", "Lights on", "demo-home/lights/set", "ON", "demo-home/lights/state"),
)  # fmt: skip


async def _demo_home(home: HomeConfig, say: Any) -> None:
    """The other end of the home link on the same broker, as a smart home would be:
    it answers each scene and, a few seconds in, sends the car a notice."""
    answers = {"demo-home/garage/set": ("demo-home/garage/state", "opening"),
               "demo-home/lights/set": ("demo-home/lights/state", "on")}  # fmt: skip
    heard: list[tuple[str, str]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-home-{os.getpid()}")

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        for topic in answers:
            c.subscribe(topic, qos=1)

    client.on_connect = on_connect

    def on_message(c: mqtt.Client, userdata: Any, message: Any) -> None:
        heard.append((message.topic, message.payload.decode(errors="replace")))
        topic, payload = answers[message.topic]
        c.publish(topic, payload, qos=1)

    client.on_message = on_message
    client.connect_async(home.host, home.port)
    client.loop_start()
    try:
        await trio.sleep(5)
        client.publish(f"{home.prefix}/notice", "The washing machine has finished", qos=1)
        say("home: notice sent")
        while True:
            await trio.sleep(0.2)
            while heard:
                topic, payload = heard.pop(0)
                say(f"home: {topic} {payload}")
    finally:
        client.disconnect()
        await trio.to_thread.run_sync(client.loop_stop)


@asynccontextmanager
async def service_with_phones(
    config: Config,
    cast: dict[str, str],
    folder: Path,
    confirm: Confirm | None = None,
    *,
    app_free: bool = False,
) -> AsyncIterator[tuple[daemon.Service, RadioWorld]]:
    """``bridge run`` on the virtual radio with emulated phones (``cast``: key ->
    flavour) advertising; inside trio-asyncio's loop. ``app_free``: the head unit also
    advertises and serves iPhones without the app (``_app_free`` brings one)."""
    world = RadioWorld(folder, clock_ms=clock_ms_from_trio())
    try:
        central = await world.start_central()
        async with trio.open_nursery() as nursery:
            for key, flavour in cast.items():
                phone = world.add_phone(
                    key, FLAVOURS[flavour], PROFILES[FLAVOURS[flavour].link_profile]
                )
                await nursery.start(phone.run)

            async def apple(bonds: BondStore) -> AppleRadio:
                return world.apple(bonds)

            extra: dict[str, Any] = (
                {"listener": world.listener(), "apple": apple} if app_free else {}
            )
            service = await nursery.start(
                partial(daemon.serve, config, radio=central, confirm=confirm, **extra)
            )
            yield service, world
            nursery.cancel_scope.cancel()
    finally:
        world.close()


async def _play(phone: Any, flavour: Any, key: str, say: Any) -> None:
    """Once paired and connected, the phone's scenario; and what it receives, printed."""
    await phone.connected.wait()
    say(f"phone {flavour.name}: connected")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(launcher, phone.app, flavour)
        if key == "pixel":
            phone.app.locked = True  # in its holder, locked
            nursery.start_soon(partial(drive, phone.app, flavour, step=4.0))
        else:
            nursery.start_soon(playlist, phone.app, flavour)
            nursery.start_soon(messages, phone.app, flavour)
        commands, replies, actions = phone.app.commands, phone.app.replies, phone.app.actions
        while True:
            await trio.sleep(0.2)
            while commands:  # taken out as reported
                command = commands.pop(0)
                name = type(command).__name__
                detail = getattr(command, "command", None)
                if isinstance(command, m.Launch):
                    continue  # reported once done, below
                say(
                    f"phone {flavour.name}: {name} {detail.name.lower() if detail else ''}".rstrip()
                )
            while phone.app.launch_log:
                shortcut, outcome = phone.app.launch_log.pop(0)
                say(f"phone {flavour.name}: launch {shortcut}: {outcome.name.lower()}")
            while replies:
                note_id, text = replies.pop(0)
                say(f"phone {flavour.name}: reply to {note_id}: {text}")
            while actions:
                note_id, action_id = actions.pop(0)
                say(f"phone {flavour.name}: action {action_id} on {note_id}")


async def _app_free(world: RadioWorld, say: Any) -> None:
    """An iPhone without the app: it bonds, then a message, an incoming call, and a
    podcast whose player offers only play and pause; what the car does is printed."""
    iphone = await world.add_app_free_iphone(APP_FREE)
    reported = 0
    await iphone.connect(await iphone.find_car(timeout=120))
    say(f"iphone {APP_FREE}: bonded")
    await trio.sleep(1.0)
    await iphone.message("Ana", "Running 10 min late")
    await iphone.incoming_call("Mum")
    await iphone.play("The Daily", "Podcasts", "Monday briefing", 1500.0)
    iphone.services.player.supported = frozenset(
        {RemoteCommand.PLAY, RemoteCommand.PAUSE, RemoteCommand.TOGGLE_PLAY_PAUSE}
    )
    await iphone.gatt.player_changed()
    while True:
        await trio.sleep(0.2)
        for uid, action in iphone.actions[reported:]:
            say(f"iphone {APP_FREE}: {action.name.lower()} action on {uid}")
        reported = len(iphone.actions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screen_demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="the screen's port (0: any)")
    parser.add_argument("--data-dir", type=Path, help="keep identities here (default: fresh)")
    parser.add_argument("--yes", action="store_true", help="confirm pairing codes by itself")
    parser.add_argument(
        "--cast", choices=["phones", "app-free", "all"], default="phones",
        help="phones: an Android phone and an iPad with the app; app-free: one iPhone "
        "without it (ANCS, AMS); all: the three",
    )  # fmt: skip
    parser.add_argument(
        "--mqtt", metavar="HOST:PORT",
        help="link the car to this MQTT broker (docs/HOME.md), with a demo home on it that "
        "answers the screen's scenes and sends a notice",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        trio.run(run, args, sys.stdout)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
