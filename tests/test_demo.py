"""`bridge demo` and the command line, in-process."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from bridge import cli
from bridge.emulation import demo, demo_radio
from pairing.trust import TrustStore
from transports.simulated import PROFILES


@pytest.mark.parametrize("profile", ["android", "ios", "legacy"])
def test_demo_shows_the_screen_and_loses_nothing(profile: str) -> None:
    out = io.StringIO()
    assert demo.main(profile, seed=3, drop=True, realtime=False, out=out) == 0
    text = out.getvalue()
    assert "UNENCRYPTED" not in text
    codes = re.findall(r"code (\d{3} \d{3})", text)
    assert len(codes) == 2 and codes[0] == codes[1]  # the phone and the head unit agree
    assert "paired with" in text and "recognised" in text  # after the drop: no prompt
    assert text.index("paired with") < text.index("▶ Midnight City")  # pairing first
    assert "in 300 m: turn right onto Main St" in text
    assert "at the roundabout take exit 2" in text and "lanes  ←  [↑→]" in text
    assert "Running 10 minutes late" in text and "reply sent to Anna; marked read" in text
    assert "phone paused after" in text and "ahead of the art" in text
    assert "link lost: supervision timeout" in text
    assert "arrived at Elm Rd 42" in text
    assert text.rstrip().endswith("0 lost, 0 duplicated, in order")
    if profile != "legacy":  # a 48 KB picture takes 18 s at legacy speed
        assert text.index("phone paused after") < text.index("album art shown")


def test_demo_is_repeatable_for_a_seed() -> None:
    runs = []
    for _ in range(2):
        out = io.StringIO()
        demo.main("ios", seed=5, drop=False, realtime=False, out=out)
        # keys and codes are fresh every run; everything else is the same
        text = re.sub(r"\d{3} \d{3}", "CODE", out.getvalue())
        text = re.sub(r"advertises '[^']*'", "advertises TOKEN", text)
        runs.append(re.sub(r"data in [^)]*", "data in DIR", text))
    assert runs[0] == runs[1]
    assert "link lost" not in runs[0]


def test_second_run_with_a_data_dir_reconnects_without_pairing(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    assert (
        demo.main("android", seed=1, drop=False, realtime=False, out=first, data_dir=tmp_path) == 0
    )
    assert (
        demo.main("android", seed=1, drop=False, realtime=False, out=second, data_dir=tmp_path) == 0
    )
    assert "paired with" in first.getvalue() and "code" in first.getvalue()
    assert "recognised Pixel 9" in second.getvalue() and "code" not in second.getvalue()


def test_cli_needs_yes_without_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["demo"]) == cli.EXIT_USAGE
    assert "add --yes" in capsys.readouterr().err


def test_cli_damaged_store_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "head-unit").mkdir()
    (tmp_path / "head-unit" / "trust.json").write_text("garbage")
    assert cli.main(["demo", "--yes", "--data-dir", str(tmp_path)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("bridge: ") and "damaged" in err and "Traceback" not in err


def test_cli_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("bridge 0.")
    assert cli.main([]) == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--profile", "nokia"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_rejected_pairing_ends_the_demo_and_stores_nothing(tmp_path: Path) -> None:
    async def reject(code: str) -> bool:
        return False

    out = io.StringIO()
    result = trio.run(
        partial(
            demo.run_demo,
            PROFILES["ios"],
            seed=1,
            drop=False,
            out=out,
            data_dir=tmp_path,
            confirm=reject,
        ),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    assert result.pairing_failed == "pairing rejected by the user"
    assert "nothing was stored" in out.getvalue() and "▶" not in out.getvalue()
    assert TrustStore(tmp_path / "head-unit").devices() == []
    assert TrustStore(tmp_path / "phone", role="phone").devices() == []


def test_radio_demo_runs_android_and_ios_at_once_over_bleak_and_bumble(tmp_path: Path) -> None:
    out = io.StringIO()
    code = demo_radio.main(drop=True, realtime=False, out=out, data_dir=tmp_path / "a")
    text = out.getvalue()
    assert code == 0, text
    assert "ATT MTU 517" in text and "ATT MTU 185" in text
    # the car found the Android phone by scanning; the iPhone connected to the car
    assert "Pixel 9      LINK   the car connected (512-byte packets)" in text
    assert "it connected to the car (182-byte packets)" in text
    assert "emulated iPhone 16 (ios): ATT MTU 185, 30 ms interval; connects to the car" in text
    # the prompt cannot name a phone: it says its name only after the comparison
    assert len(re.findall(r"pair with 'a new (android|ios) device'\? code", text)) == 2
    assert "Pixel 9      NAV    in 300 m: turn right onto Main St" in text
    assert "iPhone 16    MSG    reply sent to Anna; marked read" in text
    assert "iPhone 16    MUSIC  phone paused after" in text
    assert "recognised from its token: no prompt" in text  # after the tunnel
    # an iPhone with no app bonded (the same prompt) and shared through ANCS and AMS
    assert "pair with 'an iPhone without the app'? code" in text
    assert "Ana's iPhone ANCS   Mum (Phone): Incoming Call [Answer, Decline]" in text
    assert "Ana's iPhone ANCS   the iPhone did 'Answer'" in text
    assert "Ana's iPhone AMS    ⏸ Sinnerman — Nina Simone (Music)" in text
    assert "Pixel 9: 2 link(s), iPhone 16: 1 link(s), Ana's iPhone: 1 link(s)" in text
    assert text.rstrip().endswith("0 lost, 0 duplicated, in order")
    # a second run with the same data: both phones are recognised, nobody is asked
    again = io.StringIO()
    assert demo_radio.main(drop=False, realtime=False, out=again, data_dir=tmp_path / "a") == 0
    assert "pair with" not in again.getvalue()
    assert again.getvalue().count("Pixel 9      PAIR   recognised from its token: no prompt") == 1
    assert again.getvalue().count("iPhone 16    PAIR   recognised from its identify tag") == 1
    assert again.getvalue().count("Ana's iPhone LINK   bonded and encrypted") == 1


def test_bridge_demo_does_not_load_pytest() -> None:
    """The demos run on virtual time without trio.testing, which loads pytest (issue 24)."""
    code = (
        "import sys, io, contextlib; from bridge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): status = main(['demo', '--yes'])\n"
        "print(status, 'pytest' in sys.modules, 'trio.testing' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["0", "False", "False"]
