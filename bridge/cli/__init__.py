"""The ``bridge`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from bridge import __version__, api, daemon, doctor
from bridge.config import DEFAULT_PATH, Config, ConfigError, load_config
from bridge.daemon import DaemonError, DataFolderError
from bridge.logs import level_for, setup_logging
from bridge.prompt import ask_code
from bridge.store import StoreError
from bridge.wire.errors import first_error
from pairing.bonds import BONDS_FILE, BondStore, BondStoreError
from pairing.handshake import CodeToConfirm
from pairing.keylog import KeyLog, KeyLogError
from pairing.trust import FILENAME as TRUST_FILE
from pairing.trust import TrustStore, TrustStoreError
from transports.simulated import PROFILES

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (a demo that lost messages)
EXIT_USAGE = 2  # wrong arguments (argparse's convention)
EXIT_CONFIG = 3  # the configuration file cannot be used
EXIT_BUSY = 4  # the head unit's data is in use by the running service


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="Share a phone's navigation, media and messages with a car screen over BLE.",
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a head unit and an emulated phone on a simulated BLE link",
        description="Run a head unit and an emulated phone on a simulated BLE link and "
        "print what the head unit's screen shows.",
    )
    demo.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="android",
        help="link behaviour to simulate (default: android)",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated radio")
    demo.add_argument(
        "--radio",
        choices=["simulated", "bumble"],
        default="simulated",
        help="simulated: one phone on a simulated link (--profile); bumble: an Android and "
        "an iOS phone at once on Bumble's virtual BLE radio, the head unit using the bleak "
        "transport as on a Raspberry Pi",
    )
    demo.add_argument("--no-drop", action="store_true", help="do not drop the link halfway")
    demo.add_argument(
        "--realtime", action="store_true", help="pace the demo on the wall clock (about 15 s)"
    )
    demo.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="confirm the pairing code on the head unit without asking (unattended runs)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        help="keep the trust stores here, so a second run reconnects without pairing "
        "(default: a temporary directory, so every run pairs first)",
    )
    demo.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append session keys to FILE so captures can be decrypted (insecure: debugging)",
    )
    demo.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="record the head unit's links in DIR (Wireshark and bridge-dump read them): "
        "head-unit.pcapng on the simulated link; every device's HCI traffic as "
        "NAME.btsnoop with --radio bumble",
    )
    _service_commands(commands)
    return parser


def _service_commands(commands: Any) -> None:
    def config_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help=f"configuration file (default: $BRIDGE_CONFIG or {DEFAULT_PATH})",
        )

    run = commands.add_parser(
        "run",
        help="run the head unit (the service)",
        description="Run the head unit: reconnect paired phones, serve them, until stopped.",
    )
    config_option(run)
    run.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="record every link as pcapng in DIR (bridge-dump, Wireshark); "
        "overrides debug.capture_dir",
    )
    pair = commands.add_parser(
        "pair",
        help="pair a new phone (shows the code; you confirm it)",
        description="Pairing mode until one phone has paired: compare the 6-digit code on "
        "both screens and confirm. Stop the service first (it holds the same data).",
    )
    config_option(pair)
    pair.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="give up after S seconds"
    )
    devices = commands.add_parser("devices", help="list the paired phones")
    config_option(devices)
    devices.add_argument("--json", action="store_true", help="one JSON array")
    forget = commands.add_parser("forget", help="forget a paired phone")
    config_option(forget)
    forget.add_argument("device", metavar="NAME", help="its name or id (bridge devices)")
    screen = commands.add_parser(
        "screen-url",
        help="the screen's address with its token (for the kiosk browser)",
        description="Print the address of the head unit's screen with the API token, or "
        "write a page that opens it (--html): a kiosk browser opens that file, so the token "
        "never appears on a command line. Needs to read the token file: the service's user, "
        "or a member of api.token_group.",
    )
    config_option(screen)
    screen.add_argument(
        "--html", type=Path, metavar="FILE", help="write an owner-only page that opens the screen"
    )
    doctor = commands.add_parser(
        "doctor", help="check this machine for what the head unit needs, and say what to do"
    )
    config_option(doctor)
    doctor.add_argument(
        "--json", action="store_true", help="one JSON object: the checks and whether all passed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except (Exception, BaseExceptionGroup) as e:
        error = first_error(e)
        code, text = explain(error)
        if args.verbose:
            logging.getLogger("bridge").exception("where it happened", exc_info=error)
        print(f"bridge: {text}", file=sys.stderr)
        return code


def explain(error: BaseException) -> tuple[int, str]:
    """The exit code and the one sentence for an error that ended a command."""
    if isinstance(error, ConfigError | KeyLogError):
        return EXIT_CONFIG, str(error)
    if isinstance(error, DaemonError):
        return EXIT_BUSY, str(error)
    if isinstance(error, DataFolderError | TrustStoreError | StoreError | BondStoreError):
        return EXIT_FAILED, str(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(error, OSError):  # the radio did not open: no adapter, no D-Bus, no dongle
        return EXIT_FAILED, f"{error}; 'bridge doctor' checks what the radio needs"
    return EXIT_FAILED, (
        f"unexpected {type(error).__name__}: {error} (bridge -v shows where; please report it)"
    )


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    setup_logging(level_for(args.verbose))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in SERVICE_COMMANDS:
        config = load_config(args.config)
        return SERVICE_COMMANDS[args.command](args, config)
    if args.command == "demo":
        if args.capture is not None and args.capture.exists() and not args.capture.is_dir():
            print(
                f"bridge: --capture needs a folder, and {args.capture} is a file", file=sys.stderr
            )
            return EXIT_USAGE
        if args.keylog is not None and args.keylog.is_dir():
            print(f"bridge: --keylog needs a file, and {args.keylog} is a folder", file=sys.stderr)
            return EXIT_USAGE
        if not args.yes and not sys.stdin.isatty():
            print(
                "bridge: confirming the pairing code needs a terminal; "
                "add --yes to confirm it automatically",
                file=sys.stderr,
            )
            return EXIT_USAGE
        status = EXIT_FAILED
        try:
            if args.capture is not None:  # first: the key log may be meant to go in it
                args.capture.mkdir(parents=True, exist_ok=True)
            common = {
                "drop": not args.no_drop,
                "realtime": args.realtime,
                "out": sys.stdout,
                "assume_yes": args.yes,
                "data_dir": args.data_dir,
                "keylog": KeyLog(args.keylog) if args.keylog else None,
            }
            # the demos load trio.testing (and through it pytest, where installed): only
            # when asked, so that ``bridge run`` does not carry them
            if args.radio == "bumble":
                from bridge.emulation import demo_radio  # noqa: PLC0415 - Bumble only when asked

                status = demo_radio.main(**common, ask=ask_code, capture=args.capture)
            else:
                from bridge.emulation import demo  # noqa: PLC0415

                status = demo.main(args.profile, seed=args.seed, **common, capture=args.capture)
        except* TrustStoreError as group:
            print(f"bridge: {group.exceptions[0]}", file=sys.stderr)
        except* BrokenPipeError:  # e.g. piped into head: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except* KeyboardInterrupt:
            print("bridge: demo interrupted", file=sys.stderr)
            status = 130
        return status
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.log.level if not args.verbose else "debug")
    if args.capture is not None:
        config = dataclasses.replace(
            config, debug=dataclasses.replace(config.debug, capture_dir=str(args.capture))
        )
    return daemon.run(config)  # errors: explain()


def _pair(args: argparse.Namespace, config: Config) -> int:
    if not sys.stdin.isatty():
        print("bridge: pairing needs a terminal to confirm the code on", file=sys.stderr)
        return EXIT_USAGE

    async def confirm(phone: Any, event: CodeToConfirm) -> bool:
        print(f"\n{event.peer.display_name} ({event.peer.platform}) asks to pair.")
        return await ask_code(event.code)

    async def confirm_request(request: dict[str, Any]) -> bool:
        print(f"\n{request['name']} ({request['platform']}) asks to pair.")
        return await ask_code(request["code"])

    async def main() -> str | None:
        if daemon.data_in_use(config.data_path) and config.api.enabled:
            return await daemon.pair_through_service(config, confirm_request, limit=args.timeout)
        return await daemon.pair(config, confirm, limit=args.timeout)

    try:
        name = trio.run(main)
    except (KeyboardInterrupt, BaseExceptionGroup) as e:
        if not isinstance(first_error(e), KeyboardInterrupt):
            raise  # explain() says it
        print("bridge: pairing stopped", file=sys.stderr)
        return 130
    if name is None:
        print(f"bridge: no phone paired within {args.timeout:g} s", file=sys.stderr)
        return EXIT_FAILED
    print(f"Paired with {name}.")
    return EXIT_OK


def _devices(args: argparse.Namespace, config: Config) -> int:
    store = config.data_path / "head-unit"
    devices = TrustStore(store).devices() if (store / TRUST_FILE).exists() else []
    rows = [
        {
            "name": d.name, "platform": d.platform, "id": d.short_id,
            "paired": _when(d.first_paired), "last_seen": _when(d.last_seen),
        }
        for d in sorted(devices, key=lambda d: -d.last_seen)
    ]  # fmt: skip
    bonds = BondStore(store).bonds() if (store / BONDS_FILE).exists() else []
    rows += [
        {"name": b.name, "platform": "ios (no app)", "id": b.short_id,
         "paired": _when(b.bonded), "last_seen": "-"}
        for b in sorted(bonds, key=lambda b: -b.bonded)
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print(f"No paired phones (data in {config.data_path}). Pair one with: bridge pair")
        return EXIT_OK
    heads = {"name": "NAME", "platform": "PLATFORM", "id": "ID", "paired": "PAIRED",
             "last_seen": "LAST SEEN"}  # fmt: skip
    widths = {k: max(len(heads[k]), *(len(r[k]) for r in rows)) for k in heads}
    for row in [heads, *rows]:
        print("  ".join(row[k].ljust(widths[k]) for k in heads).rstrip())
    return EXIT_OK


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _forget(args: argparse.Namespace, config: Config) -> int:
    if daemon.data_in_use(config.data_path):
        raise DaemonError(
            f"the head unit's data in {config.data_path} is in use by the bridge service: "
            "stop it first (sudo systemctl stop ble-bridge)"
        )
    store = config.data_path / "head-unit"
    trust = TrustStore(store) if (store / TRUST_FILE).exists() else None
    bonds = BondStore(store) if (store / BONDS_FILE).exists() else None
    try:
        bond = bonds.find(args.device) if bonds is not None else None
    except BondStoreError:
        bond = None
    if bond is not None and bonds is not None:  # an iPhone bonded without the app
        bonds.remove(bond.address)
        print(f"Forgot {bond.name} (an iPhone without the app, id {bond.short_id}): "
              "remove the car in the iPhone's Bluetooth settings too.")  # fmt: skip
        return EXIT_OK
    if trust is None:
        raise TrustStoreError(f"no paired device is called {args.device!r} (no phone is paired)")
    device = trust.forget(args.device)
    print(f"Forgot {device.name} ({device.platform}, id {device.short_id}).")
    return EXIT_OK


def _doctor(args: argparse.Namespace, config: Config) -> int:
    results = doctor.run_checks(config)
    failed = sum(not c.ok for c in results)
    if args.json:
        checks = [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in results]
        print(json.dumps({"ok": not failed, "checks": checks}, indent=1))
        return EXIT_OK if not failed else EXIT_FAILED
    for check in results:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"     -> {check.fix}")
    print(f"\n{len(results) - failed} of {len(results)} checks passed")
    return EXIT_OK if not failed else EXIT_FAILED


def _screen_url(args: argparse.Namespace, config: Config) -> int:
    path = config.token_path
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        print(f"bridge: no API token at {path} yet: start the service first", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(
            f"bridge: cannot read the API token {path}: {e.strerror}; run this as the "
            "service's user, or as a member of api.token_group (docs/CONFIG.md, the screen)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    url = api.screen_url(config.api.host, config.api.port, token)
    if args.html is None:
        print(url)
        return EXIT_OK
    tmp = args.html.with_name(f".{args.html.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(api.screen_launcher(url))
        os.replace(tmp, args.html)
    except OSError as e:
        print(f"bridge: cannot write {args.html}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"file://{args.html.resolve()}")
    return EXIT_OK


SERVICE_COMMANDS = {
    "run": _run, "pair": _pair, "devices": _devices, "forget": _forget, "doctor": _doctor,
    "screen-url": _screen_url,
}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
