"""``bridge-conformance``: check a phone against docs/PROTOCOL.md, case by case.

Each case names the section it checks and ends ``PASS``, ``FAIL`` (with the evidence)
or ``SKIP`` (with why); then a summary line ``N passed, N failed, N skipped``. Exit
codes: 0 no case failed, 1 a case failed, 2 usage, 3 the radio cannot be used. It runs
against this project's emulated phone, in virtual time, on a simulated link or
(``--radio bumble``) on the Bumble virtual radio through the bleak transport that
drives BlueZ on a Pi (``--fault`` gives it one deliberate fault, to see a case catch
it); or, with ``--radio bluez``, in real time against a phone app in range of this
machine's BlueZ adapter (docs/IMPLEMENTING.md). With ``--peer head-unit`` the tool is a
phone and checks a head unit: this project's, on the Bumble radio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import trio

from bridge.emulation.clock import virtual_clock
from bridge.emulation.world import bleak_on
from bridge.wire.errors import first_error
from pairing.handshake import Role
from pairing.trust import TrustStore
from tools.conformance.cases import (
    HEAD_UNIT,
    PHONE,
    CaseFailed,
    CaseSkipped,
    Context,
    Target,
    cases_for,
)
from tools.conformance.target import (
    FAULTS,
    HEAD_UNIT_FAULTS,
    CentralEmulatorUnderTest,
    EmulatorUnderTest,
    HeadUnitUnderTest,
    PhoneUnderTest,
    RadioEmulatorUnderTest,
)
from transports.aio import asyncio_loop
from transports.ble import BleakCentral
from transports.bumble_host import hci_device, power_on
from transports.link import ConnectFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RADIO = 0, 1, 2, 3


class RadioUnavailable(Exception):
    """The radio cannot be used at all (no BlueZ, no adapter): one sentence."""


@dataclass(frozen=True)
class Result:
    number: str
    section: str
    title: str
    outcome: str  # pass, fail, skip
    detail: str = ""

    def line(self) -> str:
        text = f"{self.outcome.upper():4}  {self.number:>2}  [{self.section}] {self.title}"
        return text + (f": {self.detail}" if self.detail else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-conformance",
        description="Check a phone against the bridge protocol (docs/PROTOCOL.md), case "
        "by case: this project's emulated phone (default), or a phone app over BlueZ.",
        epilog="exit codes: 0 no case failed, 1 a case failed, 2 usage, 3 radio unavailable",
    )
    parser.add_argument(
        "--fault", choices=sorted(FAULTS), help="give the emulated phone one deliberate fault"
    )
    parser.add_argument(
        "--radio", choices=("simulated", "bumble", "bluez", "dongle"), default="simulated",
        help="the emulated phone on a simulated link (default) or on the Bumble virtual "
        "radio (its GATT server and advertising; the tool connects with bleak); bluez: "
        "a real phone, through this machine's BlueZ adapter; dongle: a real phone, "
        "through a controller Bumble drives (--transport)",
    )  # fmt: skip
    parser.add_argument(
        "--transport",
        metavar="SPEC",
        help="with --radio dongle: the "
        "Bumble transport (usb:0, serial:/dev/ttyACM0, tcp-client:HOST:PORT)",
    )
    parser.add_argument(
        "--peer", choices=(PHONE, HEAD_UNIT), default=PHONE,
        help="what is checked: a phone (the tool is a head unit; default) or a head unit "
        "(the tool is a phone; this project's head unit on the Bumble radio)",
    )  # fmt: skip
    parser.add_argument(
        "--phone-role", choices=("peripheral", "central"), default="peripheral",
        help="the phone as GATT server that the head unit connects to (1.1; default), or "
        "as GATT client that connects to the head unit (1.2: as an iPhone's app does); "
        "central needs --radio bumble",
    )  # fmt: skip
    parser.add_argument("--address", help="with --radio bluez: the phone's address (else "
                        "the first that advertises the bridge's service)")  # fmt: skip
    parser.add_argument(
        "--data", type=Path, metavar="DIR",
        help="keep the tool's head-unit identity here between runs (a real phone then "
        "stays paired with it; else each run pairs anew, in case 3)",
    )  # fmt: skip
    parser.add_argument("--case", action="append", metavar="N", help="only this case (repeat)")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write a Markdown report")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    return parser


async def run_cases(
    fault: str | None,
    folder: Path,
    only: set[str],
    radio: str = "simulated",
    *,
    address: str | None = None,
    head_unit: Path | None = None,
    say: Callable[[str], None] | None = None,
    peer: str = PHONE,
    phone_role: str = "peripheral",
    transport: str | None = None,
    target: Target | None = None,
    open_loop: bool = True,
    on_result: Callable[[Result], None] | None = None,
) -> tuple[str, list[Result]]:
    """Run the cases (``only``: these numbers) against the phone; what the phone was,
    and the results. ``head_unit``: where the tool keeps its identity (else in
    ``folder``). ``target`` (with ``radio`` bluez): a phone already running that the tool
    reaches through BlueZ (the VM lane's); ``open_loop``: False when the caller runs
    inside trio-asyncio's loop already."""
    given = target
    role = Role.HEAD_UNIT
    if peer == HEAD_UNIT:
        role = Role.PHONE
        tool = TrustStore(head_unit or folder / "tool-phone", role="phone")
        target = HeadUnitUnderTest(
            folder / "head-unit-under-test", tool, fault=fault, phone_role=phone_role
        )
    elif phone_role == "central":
        tool = TrustStore(head_unit or folder / "head-unit")
        target = CentralEmulatorUnderTest(folder / "phone", tool, fault=fault)
    elif radio == "bluez":
        target = PhoneUnderTest(
            lambda _mtu: BleakCentral(), address=address, out=sys.stderr,
            stimulate=given.stimulate if given is not None else None,
        )  # fmt: skip
        if given is not None:
            target.description = "this project's emulated phone, reached through BlueZ"
    elif radio == "dongle":
        dongle = _Dongle(transport or "")
        target = PhoneUnderTest(dongle.central, address=address, out=sys.stderr)
    elif radio == "bumble":
        target = RadioEmulatorUnderTest(folder / "phone", fault=fault)
    else:
        target = EmulatorUnderTest(folder / "phone", fault=fault)
    results: list[Result] = []
    if role is Role.HEAD_UNIT and phone_role != "central":
        tool = TrustStore(head_unit or folder / "head-unit")
    ctx = Context(target, tool, say=say, role=role, phone_role=phone_role)
    if head_unit is not None and ctx.trust.devices():  # a peer paired in an earlier run
        device = ctx.trust.devices()[-1]
        ctx.peer_key = device.key_bytes
        ctx.peer_irk = bytes.fromhex(device.irk) if device.irk else None
    wants_loop = radio != "simulated" or peer == HEAD_UNIT
    loop = asyncio_loop() if wants_loop and open_loop else nullcontext()
    async with loop, trio.open_nursery() as nursery:
        if radio == "dongle":
            try:
                await nursery.start(dongle.run)
            except OSError as e:
                raise RadioUnavailable(str(e)) from None
        if not isinstance(target, PhoneUnderTest):
            await nursery.start(target.run)
        for case in cases_for(peer):
            if only and case.number not in only:
                continue
            outcome, detail = "pass", ""
            try:
                with trio.fail_after(120):
                    await case.run(ctx)
            except (CaseFailed, CaseSkipped, trio.TooSlowError, ConnectFailed, OSError,
                    BaseExceptionGroup) as e:  # fmt: skip
                error = first_error(e)  # a case's own nursery wraps what it raised
                if isinstance(error, CaseSkipped):
                    outcome, detail = "skip", str(error)
                elif isinstance(error, CaseFailed):
                    outcome, detail = "fail", str(error)
                elif isinstance(error, trio.TooSlowError):
                    outcome, detail = "fail", "did not finish within 120 s"
                elif isinstance(error, ConnectFailed):
                    outcome, detail = "fail", f"could not connect: {error}"
                elif isinstance(error, OSError):  # the radio itself: no case can run
                    raise RadioUnavailable(str(error)) from None
                else:
                    raise
            results.append(Result(case.number, case.section, case.title_for(peer), outcome, detail))
            if on_result is not None:
                on_result(results[-1])
        nursery.cancel_scope.cancel()
    return target.description, results


class _Dongle:
    """A controller that Bumble drives (a USB dongle, or any Bumble transport), held open
    while the cases run; the tool's bleak transport over it, one per connection."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.device: Any = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with hci_device(self.transport, "conformance") as device:
            await power_on(device)
            self.device = device
            task_status.started()
            await trio.sleep_forever()

    def central(self, att_mtu: int | None) -> BleakCentral:
        return bleak_on(self.device, mtu=att_mtu or 517)


def _report(results: list[Result], target: str) -> str:
    rows = "\n".join(
        f"| {r.number} | {r.section} | {r.title} | {r.outcome} | {r.detail} |" for r in results
    )
    return (
        f"# Conformance report\n\nUnder test: {target}\n\n"
        "| case | PROTOCOL.md | checks | result | evidence |\n|---|---|---|---|---|\n"
        f"{rows}\n\n{_summary(results)}\n"
    )


def _summary(results: list[Result]) -> str:
    count = {o: sum(r.outcome == o for r in results) for o in ("pass", "fail", "skip")}
    return f"{count['pass']} passed, {count['fail']} failed, {count['skip']} skipped"


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    cases = cases_for(args.peer)
    if args.list:
        for case in cases:
            print(f"{case.number:>2}  [{case.section}] {case.title_for(args.peer)}", file=out)
        return EXIT_OK
    only = set(args.case or [])
    unknown = only - {c.number for c in cases}
    if unknown:
        print(f"bridge-conformance: no case {', '.join(sorted(unknown))} against a "
              f"{args.peer} (--list)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.peer == HEAD_UNIT and (args.radio in ("bluez", "dongle") or args.address):
        print("bridge-conformance: against a head unit the tool runs this project's head "
              "unit on the Bumble radio, without --radio bluez, dongle or --address",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.peer == HEAD_UNIT and args.fault and args.fault not in HEAD_UNIT_FAULTS:
        print(f"bridge-conformance: a head unit's faults: {', '.join(HEAD_UNIT_FAULTS)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    real = args.radio in ("bluez", "dongle")
    if real and args.fault:
        print(f"bridge-conformance: --fault is for the emulated phone, not --radio {args.radio}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if (args.radio == "dongle") != bool(args.transport):
        print("bridge-conformance: --radio dongle and --transport SPEC go together",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.phone_role == "central" and args.radio != "bumble" and args.peer == PHONE:
        print("bridge-conformance: --phone-role central needs --radio bumble (the tool is "
              "then a GATT server: Bumble's)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.address and not real:
        print("bridge-conformance: --address needs --radio bluez or dongle", file=sys.stderr)
        return EXIT_USAGE
    # the emulated phone runs in virtual time; a real phone in real time
    clock = virtual_clock() if not real else None

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    run = partial(run_cases, args.fault, only=only, radio=args.radio, address=args.address,
                  head_unit=args.data, say=say if real else None,
                  peer=args.peer, phone_role=args.phone_role,
                  transport=args.transport)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="bridge-conformance-") as tmp:
            described, results = trio.run(run, Path(tmp), clock=clock)
    except (RadioUnavailable, BaseExceptionGroup) as e:
        error = first_error(e)  # out of the nurseries it crossed
        if not isinstance(error, RadioUnavailable):
            raise
        print(f"bridge-conformance: {error}", file=sys.stderr)
        return EXIT_RADIO
    for result in results:
        if args.json:
            print(json.dumps({"case": result.number, "section": result.section,
                              "title": result.title, "result": result.outcome,
                              "detail": result.detail}), file=out)  # fmt: skip
        else:
            print(result.line(), file=out)
    if not args.json:
        print(_summary(results), file=out)
    if args.report is not None:
        args.report.write_text(_report(results, described))
    return EXIT_FAILED if any(r.outcome == "fail" for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
