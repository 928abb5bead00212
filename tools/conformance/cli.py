"""``bridge-conformance``: check a phone against docs/PROTOCOL.md, case by case.

Each case names the section it checks and ends ``PASS``, ``FAIL`` (with the evidence)
or ``SKIP`` (with why); then a summary line ``N passed, N failed, N skipped``. Exit
codes: 0 no case failed, 1 a case failed, 2 usage. This version runs against this
project's emulated phone on a simulated link, in virtual time (``--fault`` gives it one
deliberate fault, to see a case catch it); driving a phone app over a real radio is the
next step (docs/IMPLEMENTING.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import trio

from bridge.emulation.clock import virtual_clock
from bridge.wire.errors import first_error
from pairing.trust import TrustStore
from tools.conformance.cases import CASES, CaseFailed, CaseSkipped, Context
from tools.conformance.target import FAULTS, EmulatorUnderTest

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
        "by case. This version checks this project's emulated phone.",
        epilog="exit codes: 0 no case failed, 1 a case failed, 2 usage",
    )
    parser.add_argument(
        "--fault", choices=sorted(FAULTS), help="give the emulated phone one deliberate fault"
    )
    parser.add_argument("--case", action="append", metavar="N", help="only this case (repeat)")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write a Markdown report")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    return parser


async def run_cases(fault: str | None, folder: Path, only: set[str]) -> tuple[str, list[Result]]:
    """Run the cases (``only``: these numbers) against the emulated phone; what the phone
    was, and the results."""
    target = EmulatorUnderTest(folder / "phone", fault=fault)
    results: list[Result] = []
    ctx = Context(target, TrustStore(folder / "head-unit"))
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        for case in CASES:
            if only and case.number not in only:
                continue
            outcome, detail = "pass", ""
            try:
                with trio.fail_after(120):
                    await case.run(ctx)
            except (CaseFailed, CaseSkipped, trio.TooSlowError, BaseExceptionGroup) as e:
                error = first_error(e)  # a case's own nursery wraps what it raised
                if isinstance(error, CaseSkipped):
                    outcome, detail = "skip", str(error)
                elif isinstance(error, CaseFailed):
                    outcome, detail = "fail", str(error)
                elif isinstance(error, trio.TooSlowError):
                    outcome, detail = "fail", "did not finish within 120 s"
                else:
                    raise
            results.append(Result(case.number, case.section, case.title, outcome, detail))
        nursery.cancel_scope.cancel()
    return target.description, results


def _report(results: list[Result], target: str) -> str:
    rows = "\n".join(
        f"| {r.number} | {r.section} | {r.title} | {r.outcome} | {r.detail} |" for r in results
    )
    return (
        f"# Conformance report\n\nPhone: {target}\n\n"
        "| case | PROTOCOL.md | checks | result | evidence |\n|---|---|---|---|---|\n"
        f"{rows}\n\n{_summary(results)}\n"
    )


def _summary(results: list[Result]) -> str:
    count = {o: sum(r.outcome == o for r in results) for o in ("pass", "fail", "skip")}
    return f"{count['pass']} passed, {count['fail']} failed, {count['skip']} skipped"


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.number:>2}  [{case.section}] {case.title}", file=out)
        return EXIT_OK
    only = set(args.case or [])
    unknown = only - {c.number for c in CASES}
    if unknown:
        print(f"bridge-conformance: no case {', '.join(sorted(unknown))} (--list)", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="bridge-conformance-") as tmp:
        described, results = trio.run(run_cases, args.fault, Path(tmp), only, clock=virtual_clock())
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
