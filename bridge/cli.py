"""The ``bridge`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bridge import __version__, demo
from pairing.keylog import KeyLog
from pairing.trust import TrustStoreError
from transports.simulated import PROFILES

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (a demo that lost messages)
EXIT_USAGE = 2  # wrong arguments (argparse's convention)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "demo":
        if not args.yes and not sys.stdin.isatty():
            print(
                "bridge: confirming the pairing code needs a terminal; "
                "add --yes to confirm it automatically",
                file=sys.stderr,
            )
            return EXIT_USAGE
        status = EXIT_FAILED
        try:
            common = {
                "drop": not args.no_drop,
                "realtime": args.realtime,
                "out": sys.stdout,
                "assume_yes": args.yes,
                "data_dir": args.data_dir,
                "keylog": KeyLog(args.keylog) if args.keylog else None,
            }
            if args.capture is not None:
                args.capture.mkdir(parents=True, exist_ok=True)
            if args.radio == "bumble":
                from bridge import demo_radio  # noqa: PLC0415 - loads Bumble only when asked

                status = demo_radio.main(**common, ask=demo._ask, capture=args.capture)
            else:
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


if __name__ == "__main__":
    sys.exit(main())
