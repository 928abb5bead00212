"""`bridge demo` and the command line, in-process."""

from __future__ import annotations

import io

import pytest

from bridge import cli, demo


@pytest.mark.parametrize("profile", ["android", "ios", "legacy"])
def test_demo_shows_the_screen_and_loses_nothing(profile: str) -> None:
    out = io.StringIO()
    assert demo.main(profile, seed=3, drop=True, realtime=False, out=out) == 0
    text = out.getvalue()
    assert "UNENCRYPTED" in text
    assert "in 300 m: turn right onto Main St" in text
    assert "Anna (Signal): Running 10 minutes late" in text
    assert "phone says pause done" in text
    assert "link lost: supervision timeout" in text
    assert "arrived at Elm Rd 42" in text
    assert text.rstrip().endswith("0 lost, 0 duplicated, in order")
    # the pause result comes before the album art has finished
    assert text.index("phone says pause done") < text.index("album art shown")


def test_demo_is_repeatable_for_a_seed() -> None:
    runs = []
    for _ in range(2):
        out = io.StringIO()
        demo.main("ios", seed=5, drop=False, realtime=False, out=out)
        runs.append(out.getvalue())
    assert runs[0] == runs[1]
    assert "link lost" not in runs[0]


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
