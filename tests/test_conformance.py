"""bridge-conformance checks something: the project's emulated phone passes every case,
and a phone with one deliberate fault fails exactly the case that names that fault."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from bumble.transport import open_transport

from bridge.emulation.scenarios import FLAVOURS
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from tools.conformance import cli
from tools.conformance.cases import HEAD_UNIT, PHONE, cases_for
from tools.conformance.target import FAULTS, HEAD_UNIT_FAULTS
from transports.bumble_host import close_transport
from transports.bumble_radio import PacedController
from transports.simulated import PROFILES

PHONE_CASES = cases_for(PHONE)


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(args), out=out)
    return code, out.getvalue()


def test_the_emulated_phone_passes_every_case(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    code, out = run("--report", str(report))
    lines = out.splitlines()
    assert code == cli.EXIT_OK, out
    # GATT and advertising: skipped on a simulated link; identify: a GATT client's
    skipped = {"22", "23", "26"}
    outcomes = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert len(outcomes) == len(PHONE_CASES)
    assert {n for n, o in outcomes.items() if o == "SKIP"} == skipped
    assert {n for n, o in outcomes.items() if o != "SKIP"} == {
        n for n, o in outcomes.items() if o == "PASS"
    }
    assert lines[-1] == f"{len(PHONE_CASES) - 3} passed, 0 failed, 3 skipped"
    text = report.read_text()
    assert "| case | PROTOCOL.md |" in text and "this project's emulated phone" in text


def test_on_the_bumble_radio_too_and_its_gatt_and_advertising_cases_run() -> None:
    # the phone's GATT server and advertising on Bumble, the tool's bleak transport: a
    # CLOSE is followed by a disconnection there, so the phone's reason must still arrive
    # (cases 1, 2, 4, 10, 13-15, 19 failed before links drained before closing)
    code, out = run("--radio", "bumble", "--json")
    rows = {r["case"]: r for r in map(json.loads, out.splitlines())}
    assert code == cli.EXIT_OK and set(rows) == {c.number for c in PHONE_CASES}
    assert rows.pop("26")["result"] == "skip"  # the phone is the server: it identifies not
    assert all(r["result"] == "pass" for r in rows.values()), rows


def test_a_simulated_link_skips_the_radio_cases_and_says_why() -> None:
    code, out = run("--case", "22", "--case", "23")
    assert code == cli.EXIT_OK
    assert [line[:4] for line in out.splitlines()[:2]] == ["SKIP", "SKIP"]
    assert "run with --radio" in out


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
    "wrong-close-code": "1",
    "shortcuts-to-any-version": "28",
}
#: Faults that only a GATT client can have (--phone-role central), tested on their own.
CENTRAL_FAULTS = {"no-identify"}


@pytest.mark.parametrize("fault", sorted(set(FAULTS) - CENTRAL_FAULTS))
def test_each_fault_fails_exactly_its_case(fault: str) -> None:
    code, out = run("--fault", fault, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    failed = [r["case"] for r in rows if r["result"] == "fail"]
    assert code == cli.EXIT_FAILED
    assert failed == [FAULT_CASES[fault]], rows
    assert all(r["detail"] for r in rows if r["result"] == "fail")  # with the evidence


def test_every_fault_is_covered() -> None:
    assert set(FAULT_CASES) | CENTRAL_FAULTS == set(FAULTS)


def test_cases_can_be_chosen_listed_and_bad_names_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run("--case", "1", "--case", "2")
    assert code == 0 and out.splitlines()[-1] == "2 passed, 0 failed, 0 skipped"
    code, out = run("--case", "9")  # needs a pairing first: skipped, and says why
    assert code == 0 and out.startswith("SKIP") and "needs the phone paired" in out
    code, out = run("--list")
    assert code == 0 and len(out.splitlines()) == len(PHONE_CASES)
    assert run("--case", "99")[0] == cli.EXIT_USAGE
    assert "no case 99" in capsys.readouterr().err


def test_a_real_phone_over_bluez_without_bluez_is_one_sentence_and_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    assert run("--radio", "bluez", "--case", "1")[0] == cli.EXIT_RADIO
    err = capsys.readouterr().err.strip()
    assert err.startswith("bridge-conformance: cannot reach BlueZ") and "\n" not in err
    assert run("--radio", "bluez", "--fault", "no-ack")[0] == cli.EXIT_USAGE
    assert run("--address", "11:22:33:44:55:66")[0] == cli.EXIT_USAGE
    assert "needs --radio bluez or dongle" in capsys.readouterr().err


def test_against_a_head_unit_the_tool_is_a_phone_and_the_head_unit_passes() -> None:
    code, out = run("--peer", "head-unit", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == cli.EXIT_OK
    assert [r["case"] for r in rows] == [c.number for c in cases_for(HEAD_UNIT)]
    assert rows[2]["case"] == "24"  # the pairing comes before what needs it
    assert rows[-1]["case"] == "27" and rows.pop()["result"] == "skip"  # it does not advertise
    assert all(r["result"] == "pass" for r in rows), rows
    assert "the head unit closes a link" in rows[[r["case"] for r in rows].index("7")]["title"]


#: A faulty head unit fails exactly the case named.
HEAD_UNIT_FAULT_CASES = {
    "no-keepalive": "6",
    "no-idle-timeout": "7",
    "accepts-replay": "19",
    "no-rekey": "20",
}


@pytest.mark.parametrize("fault", HEAD_UNIT_FAULTS)
def test_each_head_unit_fault_fails_exactly_its_case(fault: str) -> None:
    code, out = run("--peer", "head-unit", "--fault", fault, "--json")
    failed = [r["case"] for r in map(json.loads, out.splitlines()) if r["result"] == "fail"]
    assert code == cli.EXIT_FAILED and failed == [HEAD_UNIT_FAULT_CASES[fault]]


def test_head_unit_peer_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(HEAD_UNIT_FAULT_CASES) == set(HEAD_UNIT_FAULTS)
    assert run("--peer", "head-unit", "--radio", "bluez")[0] == cli.EXIT_USAGE
    assert run("--peer", "head-unit", "--fault", "no-ack")[0] == cli.EXIT_USAGE
    assert "a head unit's faults" in capsys.readouterr().err
    assert run("--peer", "head-unit", "--case", "3")[0] == cli.EXIT_USAGE  # a phone's case
    assert "against a head-unit" in capsys.readouterr().err


@pytest.mark.parametrize("peer", [PHONE, HEAD_UNIT])
def test_with_the_phone_as_gatt_client_both_directions_pass(peer: str) -> None:
    # 1.2: the phone connects to the head unit (an iPhone's app does so in the background)
    args = ["--phone-role", "central", "--json", "--peer", peer]
    code, out = run(*args, *(["--radio", "bumble"] if peer == PHONE else []))
    rows = {r["case"]: r for r in map(json.loads, out.splitlines())}
    assert code == cli.EXIT_OK
    skipped = {k for k, r in rows.items() if r["result"] == "skip"}
    assert skipped == ({"22", "23"} if peer == PHONE else set()), rows  # a server's cases
    assert all(r["result"] == "pass" for k, r in rows.items() if k not in skipped), rows
    if peer == PHONE:
        assert rows["26"]["result"] == "pass"  # its identify tag resolves


def test_a_phone_that_does_not_identify_fails_case_26_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run("--radio", "bumble", "--phone-role", "central", "--fault", "no-identify",
                    "--json")  # fmt: skip
    failed = [r["case"] for r in map(json.loads, out.splitlines()) if r["result"] == "fail"]
    assert code == cli.EXIT_FAILED and failed == ["26"]
    assert run("--phone-role", "central")[0] == cli.EXIT_USAGE  # needs the Bumble radio
    assert "needs --radio bumble" in capsys.readouterr().err


async def test_a_phone_through_a_dongle_reached_over_a_bumble_transport(
    aio: Any, tmp_path: Path
) -> None:
    # a controller on the virtual radio exported as HCI over TCP, as a dongle would be:
    # the tool drives it (--radio dongle), in real time, against an emulated phone on the
    # same radio (a real phone's place)
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = await trio_asyncio.aio_as_trio(open_transport)(f"tcp-server:127.0.0.1:{port}")
    PacedController(
        "dongle", host_source=transport.source, host_sink=transport.sink, link=world.radio.link
    )
    phone = world.add_phone("phone", FLAVOURS["android"], PROFILES["android"])
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(phone.run)
            with trio.fail_after(60):
                described, results = await cli.run_cases(
                    None, tmp_path / "tool", {"1", "22", "23"}, "dongle",
                    transport=f"tcp-client:127.0.0.1:{port}",
                )  # fmt: skip
            nursery.cancel_scope.cancel()
    finally:
        world.close()
        with trio.CancelScope(shield=True):
            if transport.sink.transport is not None:
                transport.sink.transport.close()
            transport.server.close()
            await close_transport(transport)
    assert [(r.number, r.outcome) for r in results] == [("1", "pass"), ("22", "pass"),
                                                         ("23", "pass")], results  # fmt: skip
    assert "through the head unit's bleak transport" in described


def test_dongle_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--radio", "dongle")[0] == cli.EXIT_USAGE
    assert run("--transport", "usb:0")[0] == cli.EXIT_USAGE
    assert "go together" in capsys.readouterr().err
    assert run("--radio", "dongle", "--transport", "nonsense:1")[0] == cli.EXIT_RADIO
    assert capsys.readouterr().err.startswith("bridge-conformance: cannot open Bluetooth")
