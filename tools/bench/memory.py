"""The daemon's resident memory with connected phones (P6): ``python -m tools.bench.memory``.

Two processes, so that what is measured is the head unit alone: a helper runs the
phones (``--phones N``: emulated phones on the virtual radio, with a controller of that
radio exported on a local TCP port, as a USB dongle would be) and ``bridge run`` is the
real command, its radio a Bumble controller reached over that port
(``radio.backend = "bumble"``). The phones are paired beforehand (both trust stores
written), so they reconnect at once with Noise KK and then navigate, play music and
send messages. Once all are connected (seen through the local API) the daemon's VmRSS
is read from /proc after 30 s of traffic, and its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bridge.api import ApiClient
from bridge.config import ApiConfig, Config
from bridge.emulation.emulator import EmulatedPhone
from bridge.emulation.scenarios import FLAVOURS, Flavour, drive, messages, playlist
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from pairing.trust import TrustStore
from transports.aio import asyncio_loop
from transports.bumble_radio import kernel_controller
from transports.simulated import PROFILES

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def phones(count: int, port: int, data: Path) -> None:
    """The helper: ``count`` paired phones and a controller exported on ``port``."""
    hu_trust = TrustStore(data / "head-unit")
    async with asyncio_loop():
        world = RadioWorld(data / "phones", clock_ms=clock_ms_from_trio())
        try:
            async with (
                kernel_controller(world.radio, "00:AA:02:00:00:00", f"tcp-server:127.0.0.1:{port}"),
                trio.open_nursery() as nursery,
            ):
                for i in range(count):
                    flavour = FLAVOURS["android" if i % 2 == 0 else "ios"]
                    phone = world.add_phone(f"p{i}", flavour, PROFILES[flavour.link_profile])
                    hu_trust.add(phone.trust.public_key, f"{flavour.name} #{i}",
                                 flavour.platform, phone.trust.irk)  # fmt: skip
                    phone.trust.add(hu_trust.public_key, "Car", "head-unit")
                    await nursery.start(phone.run)
                    nursery.start_soon(play, phone, flavour)
                print("ready", flush=True)
        finally:
            world.close()


async def play(phone: EmulatedPhone, flavour: Flavour) -> None:
    await phone.connected.wait()
    app = phone.app
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, app, flavour)
        nursery.start_soon(playlist, app, flavour)
        nursery.start_soon(messages, app, flavour)


def rss_of(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return values["VmRSS"], values["VmHWM"]


async def _connected(config: Config, want: int, limit: float, settle: float) -> int:
    """Phones ready (waiting up to ``limit`` s for ``want``), then ``settle`` s of traffic."""
    ready = await ready_devices(config, want, limit)
    await trio.sleep(settle)
    return ready


async def ready_devices(config: Config, want: int, limit: float) -> int:
    """Phones the daemon's API shows ready: ``want`` as soon as they are, or after
    ``limit`` seconds as many as it last showed."""
    ready = 0
    with trio.move_on_after(limit):
        while True:
            try:  # the daemon writes its token, then listens: until then, try again
                token = config.token_path.read_text().strip()
                client = await ApiClient.open("127.0.0.1", config.api.port)
            except OSError:
                await trio.sleep(0.5)
                continue
            try:
                await client.send({"op": "auth", "token": token})
                while True:
                    state = (await client.op(op="state"))["state"]
                    ready = int(sum(d["ready"] for d in state["devices"]))
                    if ready >= want:
                        return ready
                    await trio.sleep(0.5)
            finally:
                await client.aclose()
    return ready


def measure(count: int = 4, settle: float = 30.0) -> tuple[int, int, int]:
    """(devices ready, VmRSS kB, VmHWM kB) of ``bridge run`` serving ``count`` phones."""
    with tempfile.TemporaryDirectory(prefix="bridge-memory-") as folder:
        data, port, api_port = Path(folder), _free_port(), _free_port()
        helper = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.memory", "--phones", str(count),
             "--port", str(port), "--data", str(data)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert helper.stdout is not None
            if helper.stdout.readline().strip() != "ready":
                raise RuntimeError("the phones' helper did not start")
            (data / "config.toml").write_text(
                f'name = "Car"\ndata_dir = "{data / "daemon"}"\n'
                f'[radio]\nbackend = "bumble"\ntransport = "tcp-client:127.0.0.1:{port}"\n'
                f"[api]\nport = {api_port}\n"
            )
            # the head unit's trust store, written by the helper, where the daemon looks
            (data / "daemon").mkdir()
            (data / "head-unit").rename(data / "daemon" / "head-unit")
            log = (data / "daemon.log").open("w")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "run", "--config", str(data / "config.toml")],
                cwd=ROOT, stderr=log,
            )  # fmt: skip
            try:
                config = Config(data_dir=str(data / "daemon"), api=ApiConfig(port=api_port))
                ready = trio.run(_connected, config, count, 120.0, settle)
                rss, peak = rss_of(daemon.pid)
            finally:
                daemon.terminate()
                daemon.wait(10)
                log.close()
            if ready < count:  # say what the daemon said
                lines = (data / "daemon.log").read_text().splitlines()
                print("\n".join(["the daemon's last log lines:", *lines[-20:]]), file=sys.stderr)
        finally:
            helper.terminate()
            helper.wait(10)
            if helper.stdout is not None:
                helper.stdout.close()
    return ready, rss, peak


def report(ready: int, devices: int, rss: int, peak: int) -> str:
    return (
        f"bridge run serving {ready} of {devices} phones (Bumble controller over TCP): "
        f"resident {rss / 1024:.1f} MB, peak {peak / 1024:.1f} MB (goal <= 60 MB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.memory", description=__doc__)
    parser.add_argument("--phones", type=int, help=argparse.SUPPRESS)  # the helper's mode
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args(argv)
    if args.phones:
        trio.run(phones, args.phones, args.port, args.data)
        return 0
    ready, rss, peak = measure(args.devices)
    print(report(ready, args.devices, rss, peak))
    return 0 if ready == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
