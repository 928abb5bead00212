"""Every command's failures, run as a user runs them (a real process): one sentence on
stderr that names the thing and the way out, the documented exit code, no traceback."""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.api import load_or_create_token
from bridge.daemon import data_lock


def bridge(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bridge.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def one_sentence(result: subprocess.CompletedProcess[str], code: int, phrase: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr.split(":", 1)[0]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bridge: "), result.stderr
    assert phrase in lines[0]


def test_run_while_the_service_holds_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = config(tmp_path, f'data_dir = "{data}"\n[radio]\nbackend = "bumble"\n'
                 'transport = "tcp-client:127.0.0.1:1"\n')  # fmt: skip
    with data_lock(data):
        one_sentence(bridge("run", "--config", cfg), 4, "is in use by process")


@pytest.mark.parametrize(
    ("transport", "phrase"),
    [
        ("usb:0", "is the dongle plugged in, and may this user open it?"),
        ("tcp-client:nohost", "write it as tcp-client:HOST:PORT"),
    ],
)
def test_a_bumble_transport_that_does_not_open(tmp_path: Path, transport: str, phrase: str) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "data"}"\n[radio]\nbackend = "bumble"\n'
                 f'transport = "{transport}"\n')  # fmt: skip
    result = bridge("run", "--config", cfg)
    one_sentence(result, 1, phrase)
    assert "'bridge doctor' checks what the radio needs" in result.stderr


def test_a_data_folder_that_cannot_be_written_is_not_blamed_on_the_radio(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "a-file" / "data"}"\n')
    result = bridge("run", "--config", cfg)
    one_sentence(result, 1, "cannot use the data folder")
    assert "radio" not in result.stderr


def test_a_key_log_that_is_a_folder(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "data"}"\n[debug]\nkeylog = "{tmp_path}"\n'
                 '[radio]\nbackend = "bumble"\ntransport = "tcp-client:127.0.0.1:1"\n')  # fmt: skip
    one_sentence(bridge("run", "--config", cfg), 3, "cannot write the key log")
    one_sentence(bridge("demo", "--yes", "--keylog", str(tmp_path)), 2, "is a folder")


def test_demo_capture_pointed_at_a_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = bridge("demo", "--yes", "--capture", str(tmp_path / "a-file"))
    one_sentence(result, 2, "--capture needs a folder")


def test_doctor_json_is_one_object_whose_verdict_is_the_exit_code(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "data"}"\n')
    result = bridge("doctor", "--json", "--config", cfg)
    report = json.loads(result.stdout)
    assert {c["name"] for c in report["checks"]} >= {"BlueZ", "Bluetooth adapter", "D-Bus"}
    assert report["ok"] == all(c["ok"] for c in report["checks"])
    assert result.returncode == (0 if report["ok"] else 1)
    assert all(c["fix"] for c in report["checks"] if not c["ok"])  # each failure says what to do


def test_screen_url_prints_the_address_or_writes_an_owner_only_launcher(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "data"}"\n[api]\nport = 8800\n')
    one_sentence(bridge("screen-url", "--config", cfg), 1, "start the service first")
    token = load_or_create_token(tmp_path / "data" / "api-token")
    result = bridge("screen-url", "--config", cfg)
    assert result.returncode == 0 and result.stdout.strip() == (
        f"http://127.0.0.1:8800/#token={token}"
    )
    page = tmp_path / "screen.html"
    result = bridge("screen-url", "--config", cfg, "--html", str(page))
    assert result.returncode == 0 and result.stdout.strip() == f"file://{page}"
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and token in page.read_text()


def test_the_token_group_reads_the_token_and_nobody_else(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "api-token"
    token = load_or_create_token(path, group)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == os.getgid()
    assert stat.S_IMODE(folder.stat().st_mode) & 0o050 == 0o050  # the group may enter
    assert load_or_create_token(path, group) == token
    assert load_or_create_token(path) != token  # no group configured now: replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = config(tmp_path, f'[api]\ntoken_group = "{group}"\n')
    one_sentence(bridge("run", "--config", cfg), 3, "needs 'api.token_file' outside the data")
