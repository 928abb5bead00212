"""``python -m tools.route``: the files one notification passes through, from the phone's
app to the head unit's WebSocket event, measured.

Strategy. ``bridge run`` on the virtual radio with one emulated Android phone and one API
client (as ``tests/test_api.py`` runs them); once the phone is paired and the link idle,
a profile hook (``sys.setprofile``) notes the project file executing at every call and
return while the phone's app posts one notification and until the client has the
device event that carries it. Both ends run in this one process, so the route is the
whole trip: the phone's side, both radios' transports, the head unit's side. Printed:
the files in the order first reached, how many moves between files there were and how
many of those went back to a file already left. docs/ARCHITECTURE.md lists the same
route by step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import trio
import trio.testing

from bridge.api import ApiClient
from bridge.config import ApiConfig, Config
from bridge.wire import messages as m
from tools.screen_demo import service_with_phones
from transports.aio import asyncio_loop

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("bridge", "pairing", "transports")


@dataclass(frozen=True)
class Route:
    visits: list[str]  # project files in execution order, repeats of the same file merged

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(self.visits))

    @property
    def moves(self) -> int:
        return max(0, len(self.visits) - 1)

    @property
    def moves_back(self) -> int:
        left: set[str] = set()
        back = 0
        for previous, here in zip(self.visits, self.visits[1:], strict=False):
            left.add(previous)
            back += here in left
        return back


def _project_file(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    path = Path(frame.f_code.co_filename)
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    return str(relative) if relative.parts[0] in ROOMS else None


async def measure(folder: Path) -> Route:
    config = Config(name="Route car", data_dir=str(folder / "head-unit"), pairing=True,
                    api=ApiConfig(port=0))  # fmt: skip
    async with (
        asyncio_loop(),
        service_with_phones(config, {"pixel": "android"}, folder / "phones") as (service, world),
    ):
        client = await ApiClient.open("127.0.0.1", service.api_port or 0)
        try:
            await client.send({"op": "auth", "token": config.token_path.read_text().strip()})
            prompt = await client.receive(lambda e: e.get("event") == "pairing_request")
            await client.op(op="confirm", id=prompt["id"], accept=True)
            while not any(d.get("connected") and d.get("name") for d in client.devices.values()):
                await client.receive(lambda e: e.get("event") == "device")
            await trio.sleep(1)  # the link idle: acknowledgements sent, nothing pending
            visits: list[str] = []

            def profile(frame: FrameType, event: str, _arg: Any) -> None:
                if event not in ("call", "return"):
                    return
                here = _project_file(frame if event == "call" else frame.f_back)
                if here is not None and (not visits or visits[-1] != here):
                    visits.append(here)

            sys.setprofile(profile)
            try:
                await world.phones["pixel"].app.notify(
                    m.Notification("n1", "Chat", m.Category.MESSAGE, "Running late", 0)
                )
                while not any(d.get("inbox") for d in client.devices.values()):
                    await client.receive(lambda e: e.get("event") == "device")
            finally:
                sys.setprofile(None)
            return Route(visits)
        finally:
            await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.route", description=__doc__.split("\n")[0]
    )
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bridge-route-") as folder:
        route = trio.run(measure, Path(folder), clock=trio.testing.MockClock(autojump_threshold=0))
    for index, name in enumerate(route.files, 1):
        print(f"{index:2}. {name}")
    print(f"{len(route.files)} files, {route.moves} moves between files, "
          f"{route.moves_back} of them back to a file already left")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
