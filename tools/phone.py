"""``bridge-phone``: the phone emulator as its own command, on a real or remote controller.

For manual work against a head unit: the emulated phone (the same code as in the tests
and ``bridge demo --radio bumble``) runs on any controller Bumble can drive (a USB
dongle, a serial HCI board, a controller exported over TCP, Android's netsim),
advertises the bridge service with its recognition token (``--role peripheral``, the
default for Android) or connects to a head unit it finds advertising (``--role
central``, protocol v1: the default for iOS, as an iOS app in the background must), pairs
(its user confirms the code at the prompt, or ``--yes``), plays its scenarios and
answers the head unit's commands, printing what happens. Stop it with Ctrl-C.

Exit codes: 0 done, 1 the transport failed or the trust store is damaged, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import trio

from bridge.emulation.emulator import EmulatedPhone
from bridge.emulation.scenarios import FLAVOURS, drive, messages, playlist
from bridge.endpoint import clock_ms_from_trio
from bridge.logs import level_for, setup_logging
from bridge.wire.errors import first_error
from pairing.handshake import CodeToConfirm
from pairing.trust import TrustStoreError
from transports.aio import asyncio_loop
from transports.ble import BleakCentral
from transports.bleak_bumble import BumbleClient, BumbleScanner
from transports.bumble_host import hci_device
from transports.bumble_phone import BumblePeripheral
from transports.simulated import PROFILES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SCENARIOS = {"drive": drive, "playlist": playlist, "messages": messages}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-phone",
        description="Run an emulated phone (a BLE peripheral serving the bridge's GATT "
        "service, or a central connecting to a head unit's) on a Bluetooth controller that "
        "Bumble drives.",
    )
    parser.add_argument(
        "--transport",
        required=True,
        metavar="SPEC",
        help="Bumble transport of the controller: usb:0, serial:/dev/ttyACM0, "
        "tcp-client:HOST:PORT, android-netsim, ...",
    )
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="android")
    parser.add_argument(
        "--role",
        choices=("central", "peripheral"),
        help="connect to the head unit (central) or advertise for it (peripheral); "
        "default: central for ios, peripheral for android",
    )
    parser.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "all", "none"],
        default="all",
        help="what the phone does once paired (default: all at once)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".local" / "share" / "bridge-phone",
        help="where the phone keeps its identity and trusted head units "
        "(default: ~/.local/share/bridge-phone/FLAVOUR)",
    )
    parser.add_argument(
        "-y", "--yes", action="store_true", help="confirm pairing codes without asking"
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="answer a first pairing even though the phone already knows a head unit "
        "(the app's 'add a car'; a phone that knows none always does)",
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="FILE",
        help="write the phone's HCI traffic to FILE (btsnoop: Wireshark, bridge-dump)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


async def run(args: argparse.Namespace, out: TextIO) -> int:
    flavour = FLAVOURS[args.flavour]
    profile = PROFILES[flavour.link_profile]

    def show(area: str, text: str) -> None:
        print(f"[{area}] {text}", file=out, flush=True)

    async def confirm(event: CodeToConfirm) -> bool:
        show("PAIR", f"head unit {event.peer.name!r} asks to pair; code {event.code}")
        if args.yes:
            return True
        answer = await trio.to_thread.run_sync(
            input, "Does the head unit show the same code? [y/N] ", abandon_on_cancel=True
        )
        return str(answer).strip().lower() in ("y", "yes")

    async with (
        asyncio_loop(),
        hci_device(args.transport, flavour.name, capture=args.capture) as device,
    ):
        role = args.role or ("central" if flavour.platform == "ios" else "peripheral")
        if role == "central":
            central = BleakCentral(
                scanner_backend=BumbleScanner,
                client_backend=BumbleClient,
                backend_kwargs={"bumble_device": device, "mtu": profile.att_mtu},
            )
            phone = EmulatedPhone(
                None, flavour, args.data_dir / args.flavour, clock_ms=clock_ms_from_trio(),
                confirm=confirm, show=show, central=central, device=device,
            )  # fmt: skip
        else:
            peripheral = BumblePeripheral(
                device, att_mtu=profile.att_mtu, apple=flavour.platform == "ios"
            )
            phone = EmulatedPhone(
                peripheral, flavour, args.data_dir / args.flavour, clock_ms=clock_ms_from_trio(),
                confirm=confirm, show=show,
            )  # fmt: skip
        phone.pairing_mode = args.pair
        with trio.move_on_after(args.duration if args.duration is not None else float("inf")):
            async with trio.open_nursery() as nursery:
                await nursery.start(phone.run)
                if role == "central":
                    show(
                        "RADIO",
                        f"{flavour.name} scans for a head unit it knows (or in pairing mode)",
                    )
                else:
                    show(
                        "RADIO",
                        f"{flavour.name} advertises the bridge service as {phone.tokens[-1]!r}",
                    )
                nursery.start_soon(_report, phone, show)
                await phone.connected.wait()
                show("LINK", "a head unit connected")
                for name, scenario in SCENARIOS.items():
                    if args.scenario in (name, "all"):
                        nursery.start_soon(scenario, phone.app, flavour)
    return EXIT_OK


async def _report(phone: EmulatedPhone, show: Any) -> None:
    """What the head unit asked of the phone, as it happens."""
    commands = phone.app.commands
    while True:
        await trio.sleep(0.2)
        while commands:  # taken out as reported: a phone left running keeps nothing
            show("COMMAND", type(commands.pop(0)).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup_logging(level_for(args.verbose))
    status = EXIT_FAILED
    try:
        status = trio.run(run, args, sys.stdout)
    except* OSError as group:
        print(f"bridge-phone: {first_error(group)}", file=sys.stderr)
    except* TrustStoreError as group:
        print(f"bridge-phone: {first_error(group)}", file=sys.stderr)
    except* KeyboardInterrupt:
        print("bridge-phone: stopped", file=sys.stderr)
        status = 130
    return status


if __name__ == "__main__":
    sys.exit(main())
