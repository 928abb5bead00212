"""bridge-conformance checks something: the project's emulated phone passes every case,
and a phone with one deliberate fault fails exactly the case that names that fault."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tools.conformance import cli
from tools.conformance.cases import CASES
from tools.conformance.target import FAULTS


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(args), out=out)
    return code, out.getvalue()


def test_the_emulated_phone_passes_every_case(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    code, out = run("--report", str(report))
    lines = out.splitlines()
    assert code == cli.EXIT_OK, out
    assert len(lines) == len(CASES) + 1 and all(line.startswith("PASS") for line in lines[:-1])
    assert lines[-1] == f"{len(CASES)} passed, 0 failed, 0 skipped"
    text = report.read_text()
    assert "| case | PROTOCOL.md |" in text and "this project's emulated phone" in text


#: Which case each fault must fail, and only it.
FAULT_CASES = {
    "no-keepalive": "6",
    "no-idle-timeout": "7",
    "no-ack": "8",
    "pairs-any-time": "4",
    "ignores-busy-lane": "13",
    "ignores-idle-lane": "14",
    "ignores-huge-record": "15",
    "ignores-credits": "18",
    "accepts-replay": "19",
    "no-rekey": "20",
    "no-navigation-result": "21",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_exactly_its_case(fault: str) -> None:
    code, out = run("--fault", fault, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    failed = [r["case"] for r in rows if r["result"] == "fail"]
    assert code == cli.EXIT_FAILED
    assert failed == [FAULT_CASES[fault]], rows
    assert all(r["detail"] for r in rows if r["result"] == "fail")  # with the evidence


def test_every_fault_is_covered() -> None:
    assert set(FAULT_CASES) == set(FAULTS)


def test_cases_can_be_chosen_listed_and_bad_names_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run("--case", "1", "--case", "2")
    assert code == 0 and out.splitlines()[-1] == "2 passed, 0 failed, 0 skipped"
    code, out = run("--case", "9")  # needs a pairing first: skipped, and says why
    assert code == 0 and out.startswith("SKIP") and "needs the phone paired" in out
    code, out = run("--list")
    assert code == 0 and len(out.splitlines()) == len(CASES)
    assert run("--case", "99")[0] == cli.EXIT_USAGE
    assert "no case 99" in capsys.readouterr().err
