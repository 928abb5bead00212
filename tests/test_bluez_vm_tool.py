"""The BlueZ VM lane's host side (``python -m tools.bluez_vm``) without a VM: its usage
errors, its message when tools are missing, and how it counts a guest's results. The
lane itself runs in CI (``.ci/run``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import tools.bluez_vm.__main__ as lane
from bridge.emulation import demo_radio
from pairing.keylog import KeyLog


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        lane.main(["pair-and-dance"])
    assert exit_.value.code == lane.EXIT_USAGE
    assert "unknown scenario 'pair-and-dance'; choose from pair-and-channels" in (
        capsys.readouterr().err
    )


def test_missing_tools_are_named_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert lane.main(["link-loss", "--logs", str(tmp_path)]) == lane.EXIT_FAILED
    out = capsys.readouterr()
    assert (
        "qemu-system-x86_64, debootstrap, mkfs.ext4 missing: install Debian's debootstrap "
        "e2fsprogs qemu-system-x86 (or pass --install)"
    ) in out.err
    assert out.out.strip() == "bluez-vm: 0 passed, 1 failed"  # failing loudly, not skipping


def fake_guest(
    monkeypatch: pytest.MonkeyPatch, results: dict[str, str] | None, code: int
) -> list[str]:
    """Replace the tools, the image and the boot: each boot writes ``results``."""
    booted: list[str] = []
    monkeypatch.setattr(lane, "ensure_tools", lambda install: None)
    monkeypatch.setattr(lane, "build_image", lambda force=False: Path("/nonexistent"))

    def boot(image: Path, out: Path, scenarios: list[str], timeout: float) -> int:
        booted.append(out.name)
        out.mkdir(parents=True)
        if results is not None:
            (out / "results.json").write_text(json.dumps(results))
        return code

    monkeypatch.setattr(lane, "boot", boot)
    monkeypatch.setattr(lane, "check_capture", lambda out: None)
    return booted


def test_each_scenario_of_each_boot_is_counted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    results = {
        "pair-and-channels": "passed",
        "link-loss": "failed: AssertionError: got ['loss0']",
    }  # android-and-ios: no result (the guest died during it)
    booted = fake_guest(monkeypatch, results, 1)
    assert lane.main(["--runs", "2", "--logs", str(tmp_path)]) == lane.EXIT_FAILED
    out = capsys.readouterr()
    assert booted == ["run-1", "run-2"]
    total = 2 * len(lane.SCENARIOS)  # two boots; the guest died during the third scenario
    assert out.out.strip() == f"bluez-vm: 2 passed, {total - 2} failed"
    assert "run 2: link-loss: failed: AssertionError: got ['loss0']" in out.err
    assert "run 1: android-and-ios: no result" in out.err


def test_a_guest_that_fails_after_its_scenarios_passed_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_guest(monkeypatch, {"link-loss": "passed"}, 3)
    assert lane.main(["link-loss", "--logs", str(tmp_path)]) == lane.EXIT_FAILED
    out = capsys.readouterr()
    assert out.out.strip() == "bluez-vm: 1 passed, 1 failed"
    assert "the guest script exited 3" in out.err


def test_all_passed_is_exit_code_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_guest(monkeypatch, dict.fromkeys(lane.SCENARIOS, "passed"), 0)
    assert lane.main(["--logs", str(tmp_path)]) == lane.EXIT_OK
    assert capsys.readouterr().out.strip() == f"bluez-vm: {len(lane.SCENARIOS)} passed, 0 failed"


def test_a_hung_guest_is_a_failure_of_every_scenario_it_ran(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_guest(monkeypatch, None, 0)

    def hung(image: Path, out: Path, scenarios: list[str], timeout: float) -> int:
        raise lane.LaneError(f"the guest hung: no result after {timeout:g} s")

    monkeypatch.setattr(lane, "boot", hung)
    assert lane.main(["--logs", str(tmp_path), "--timeout", "5"]) == lane.EXIT_FAILED
    out = capsys.readouterr()
    assert "run 1: the guest hung: no result after 5 s" in out.err
    assert out.out.strip() == f"bluez-vm: 0 passed, {len(lane.SCENARIOS)} failed"


def test_a_capture_that_does_not_decode_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_guest(monkeypatch, {"link-loss": "passed"}, 0)
    monkeypatch.setattr(lane, "check_capture", lambda out: "the btmon capture holds no frames")
    assert lane.main(["link-loss", "--logs", str(tmp_path)]) == lane.EXIT_FAILED
    out = capsys.readouterr()
    assert out.out.strip() == "bluez-vm: 1 passed, 1 failed"
    assert "run 1: the btmon capture holds no frames" in out.err


def test_the_capture_check_decodes_and_decrypts_a_real_capture(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    status = demo_radio.main(
        drop=False, realtime=False, out=io.StringIO(), keylog=KeyLog(made / "keys.log"),
        capture=made,
    )  # fmt: skip
    assert status == 0
    out = tmp_path / "run-1"
    out.mkdir()
    (out / "hci.btsnoop").write_bytes((made / "head-unit.btsnoop").read_bytes())
    (out / "keys.log").write_text((made / "keys.log").read_text())
    assert lane.check_capture(out) is None
    (out / "keys.log").write_text("")  # without the keys, records stay encrypted
    problem = lane.check_capture(out)
    assert problem is not None and "did not decode" in problem and "encrypted" in problem
    (out / "hci.btsnoop").write_bytes(b"not a capture")
    problem = lane.check_capture(out)
    assert problem is not None and problem.startswith("the btmon capture could not be decoded")
