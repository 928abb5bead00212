"""``bridge run`` and ``bridge pair`` on the virtual radio (virtual time), and the
service commands around them: configuration, devices, forget, doctor, logs."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge import cli, daemon, doctor, systemd
from bridge.config import ApiConfig, Config, ConfigError, DebugConfig, RadioConfig, load_config
from bridge.emulation.scenarios import FLAVOURS
from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from bridge.logs import setup_logging
from bridge.radio_policy import HeadUnit, Phone
from bridge.wire import messages as m
from pairing.bonds import BondStore
from pairing.handshake import CodeToConfirm
from pairing.trust import TrustStore
from tools.dump import cli as dump
from transports.simulated import PROFILES

ANDROID = FLAVOURS["android"]

# -- configuration ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_every_key_has_a_default_and_a_file_overrides_them(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
name = "Golf"
data_dir = "/srv/bridge"
pairing = true
[radio]
adapter = "hci1"
connect_timeout = 5
[log]
level = "debug"
"""))  # fmt: skip
    assert (config.name, config.data_path, config.pairing) == ("Golf", Path("/srv/bridge"), True)
    assert config.radio.adapter == "hci1" and config.radio.connect_timeout == 5.0
    assert config.radio.backend == "bluez" and config.log.level == "debug"
    assert config.debug == DebugConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae = 'x'", "unknown key 'nmae'"),
        ("[radio]\nadaptor = 'hci0'", "unknown key 'radio.adaptor'"),
        ("pairing = 'yes'", "'pairing' must be true or false"),
        ("[radio]\nconnect_timeout = true", "'radio.connect_timeout' must be a number"),
        ("[log]\nlevel = 'loud'", "'log.level' must be one of debug, error, info, warning"),
        ("[radio]\nbackend = 'bumble'", "needs radio.transport"),
        ("radio = 3", "'radio' must be a table"),
        ("name = ", "not valid TOML"),
    ],
)
def test_a_bad_configuration_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_missing_file_is_an_error_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")
    monkeypatch.setattr("bridge.config.DEFAULT_PATH", tmp_path / "absent.toml")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert load_config() == Config()
    monkeypatch.setenv("BRIDGE_CONFIG", str(write(tmp_path, "name = 'Env'")))
    assert load_config().name == "Env"


def test_the_cli_says_what_is_wrong_with_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[radio]\nadaptor = 'hci0'")
    assert cli.main(["devices", "--config", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.strip() == f"bridge: {path}: unknown key 'radio.adaptor'"


# -- pairing and serving on the virtual radio -----------------------------------------------


def config_for(tmp_path: Path, **debug: str) -> Config:
    return Config(
        name="Test car", data_dir=str(tmp_path / "data"), debug=DebugConfig(**debug),
        api=ApiConfig(port=0),
    )  # fmt: skip


async def test_pair_then_serve_reconnects_records_and_keeps_text_out_of_the_logs(
    aio: Any, autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge")
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())
    prompts: list[CodeToConfirm] = []

    async def yes(phone: Phone, event: CodeToConfirm) -> bool:
        prompts.append(event)
        return True

    config = config_for(tmp_path, capture_dir=str(tmp_path / "captures"))
    try:
        central = await world.start_central()
        phone = world.add_phone("pixel", ANDROID, PROFILES["android"])
        async with trio.open_nursery() as nursery:
            await nursery.start(phone.run)
            out = io.StringIO()
            name = await daemon.pair(config, yes, limit=60, radio=central, out=out)
            assert name == "Pixel 9" and len(prompts) == 1
            assert "Pairing mode" in out.getvalue()
            # the service: the phone is recognised (Noise KK), no prompt
            service = await nursery.start(partial(daemon.serve, config, radio=central))
            hu = service.head_unit
            with pytest.raises(daemon.DaemonError, match="in use by process"):
                async with daemon.head_unit(config, pairing=False, confirm=yes, radio=central):
                    pass
            assert daemon.data_in_use(config.data_path)
            secret = "the door code is 4711"
            await _served_a_notification(
                hu,
                phone,
                "Pixel 9",
                m.Notification("n1", "Chat", m.Category.MESSAGE, secret, 0, sender="Bo"),
            )
            nursery.cancel_scope.cancel()
    finally:
        world.close()
    assert len(prompts) == 1
    text = caplog.text
    who = f"device {TrustStore(config.data_path / 'head-unit').find('Pixel 9').short_id}"
    assert f"{who}: recognised (android)" in text and f"{who}: connected" in text
    assert f"{who}: notification" in text and secret not in text and "Bo" not in text
    # names are personal: at INFO and above a device is its key's fingerprint
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "Pixel" in r.message]
    assert not daemon.data_in_use(config.data_path)
    # each run recorded its links in its own file, even within one second; bridge-dump
    # reads them: the pairing (Noise XX) in one, the service's reconnection (KK) in the other
    handshakes = []
    for capture in (tmp_path / "captures").glob("head-unit-*.pcapng"):
        dumped = io.StringIO()
        assert dump.main([str(capture)], out=dumped) == 0
        handshakes.append("KK" if "KK message 1" in dumped.getvalue() else "XX")
        assert f"{handshakes[-1]} message 1" in dumped.getvalue()
    assert sorted(handshakes) == ["KK", "XX"]


async def _served_a_notification(
    hu: HeadUnit, phone: Any, name: str, note: m.Notification
) -> Phone:
    """Wait until the service knows ``name`` (its hello arrived), then until the
    notification the phone posts is in its inbox; its record."""
    with trio.fail_after(60):
        while (record := hu.phone(name)) is None or record.device.peer is None:
            await trio.sleep(0.5)
    await phone.app.notify(note)
    with trio.fail_after(30):
        while not record.device.state.inbox:
            await trio.sleep(0.5)
    return record


def test_a_capture_never_overwrites_another(tmp_path: Path) -> None:
    first = daemon._new_capture(tmp_path, "20261124-193000")
    first.write_bytes(b"first run")
    second = daemon._new_capture(tmp_path, "20261124-193000")
    second.write_bytes(b"second run")
    assert first != second and first.read_bytes() == b"first run"
    assert daemon._new_capture(tmp_path, "20261124-193000").name.endswith("-3.pcapng")


async def test_without_a_screen_the_service_refuses_a_pairing_and_says_why(
    aio: Any, autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())
    config = Config(data_dir=str(tmp_path / "data"), pairing=True, api=ApiConfig(enabled=False))
    try:
        central = await world.start_central()
        phone = world.add_phone("pixel", ANDROID, PROFILES["android"])
        async with trio.open_nursery() as nursery:
            await nursery.start(phone.run)
            await nursery.start(partial(daemon.serve, config, radio=central))
            with trio.fail_after(60):
                while "no screen to confirm the code on" not in caplog.text:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    finally:
        world.close()
    assert "refused; pair with 'bridge pair' instead" in caplog.text
    assert "the local API is off" in caplog.text


# -- devices, forget ---------------------------------------------------------------------------


def test_devices_and_forget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    path = write(tmp_path, f"data_dir = '{data}'")
    assert cli.main(["devices", "--config", str(path)]) == 0
    assert "No paired phones" in capsys.readouterr().out
    store = TrustStore(data / "head-unit")
    store.add(bytes(32), "Pixel 9", "android", bytes(16))
    store.add(bytes([1]) * 32, "iPad", "ios", bytes(16))
    assert cli.main(["devices", "--config", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "PLATFORM", "ID", "PAIRED", "LAST", "SEEN"]
    assert {line.split()[0] for line in table[1:]} == {"Pixel", "iPad"}
    assert cli.main(["devices", "--json", "--config", str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"Pixel 9", "iPad"} and rows[0]["id"]
    assert cli.main(["forget", "iPad", "--config", str(path)]) == 0
    assert "Forgot iPad (ios" in capsys.readouterr().out
    assert cli.main(["forget", "iPad", "--config", str(path)]) == cli.EXIT_FAILED
    assert "no paired device is called 'iPad'" in capsys.readouterr().err
    with daemon.data_lock(data):  # the service runs: its copy would undo the change
        assert cli.main(["forget", "Pixel 9", "--config", str(path)]) == cli.EXIT_BUSY
    assert "stop it first" in capsys.readouterr().err
    assert [d.name for d in TrustStore(data / "head-unit").devices()] == ["Pixel 9"]


def test_devices_and_forget_cover_bonded_iphones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    path = write(tmp_path, f"data_dir = '{data}'")
    bonds = BondStore(data / "head-unit")
    bond = bonds.put("F0:F1:F2:F3:00:02", {"ltk": {"value": "00" * 16}}, name="Ana's iPhone")
    assert stat.S_IMODE(bonds.path.stat().st_mode) == 0o600
    assert cli.main(["devices", "--json", "--config", str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["platform"], r["id"]) for r in rows] == [
        ("Ana's iPhone", "ios (no app)", bond.short_id)
    ]
    assert cli.main(["forget", bond.short_id, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Forgot Ana's iPhone (an iPhone without the app" in out
    assert "Bluetooth settings" in out
    assert BondStore(data / "head-unit").bonds() == []
    (data / "head-unit" / "bonds.json").write_text("{not json")
    assert cli.main(["devices", "--config", str(path)]) == cli.EXIT_FAILED
    assert "is damaged: not JSON" in capsys.readouterr().err


# -- doctor --------------------------------------------------------------------------------


def fake_machine(
    tmp_path: Path, *, adapters: list[str], soft: bool = False, version: str = "5.66",
    bus: bool = True, powered: bool = True,
) -> doctor.Machine:  # fmt: skip
    root = tmp_path / "root"
    for name in adapters:
        (root / "sys/class/bluetooth" / name).mkdir(parents=True)
    rf = root / "sys/class/rfkill/rfkill0"
    rf.mkdir(parents=True)
    (rf / "type").write_text("bluetooth\n")
    (rf / "soft").write_text("1\n" if soft else "0\n")
    (rf / "hard").write_text("0\n")
    tools = {"bluetoothd": "/usr/sbin/bluetoothd", "bluetoothctl": "/usr/bin/bluetoothctl"}

    def run(cmd: list[str]) -> str | None:
        if cmd[-1] == "--version":
            return version + "\n"
        return f"Controller 00:AA\n\tPowered: {'yes' if powered else 'no'}\n"

    return doctor.Machine(
        root=root, which=tools.get, run=run,
        connect=lambda path: None if bus else "No such file or directory",
    )  # fmt: skip


def test_doctor_passes_a_good_machine(tmp_path: Path) -> None:
    checks = doctor.run_checks(config_for(tmp_path), fake_machine(tmp_path, adapters=["hci0"]))
    assert [c.name for c in checks if not c.ok] == []
    assert {c.name for c in checks} >= {
        "BlueZ",
        "Bluetooth adapter",
        "rfkill",
        "D-Bus",
        "adapter powered",
    }


@pytest.mark.parametrize(
    ("machine", "failing", "fix"),
    [
        ({"adapters": []}, "Bluetooth adapter", "plug in a Bluetooth adapter"),
        ({"adapters": ["hci0"], "soft": True}, "rfkill", "sudo rfkill unblock bluetooth"),
        ({"adapters": ["hci0"], "version": "5.50"}, "BlueZ", "upgrade"),
        ({"adapters": ["hci0"], "bus": False}, "D-Bus", "systemctl start dbus"),
        ({"adapters": ["hci0"], "powered": False}, "adapter powered", "bluetoothctl power on"),
    ],
)
def test_doctor_says_what_to_do(
    tmp_path: Path, machine: dict[str, Any], failing: str, fix: str
) -> None:
    checks = doctor.run_checks(config_for(tmp_path), fake_machine(tmp_path, **machine))
    bad = [c for c in checks if not c.ok]
    assert [c.name for c in bad] == [failing] and fix in bad[0].fix


def test_doctor_names_a_configured_adapter_that_is_not_there(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    config = Config(data_dir=config.data_dir, radio=type(config.radio)(adapter="hci1"))
    checks = doctor.run_checks(config, fake_machine(tmp_path, adapters=["hci0"]))
    bad = [c for c in checks if not c.ok]
    assert bad[0].name == "Bluetooth adapter" and "set radio.adapter to one of hci0" in bad[0].fix


# -- logs ----------------------------------------------------------------------------------


def test_journald_gets_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    out = io.StringIO()
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("info", out)
    logging.getLogger("bridge.radio_policy").warning("two\nlines")
    logging.getLogger("bridge.radio_policy").debug("hidden")
    monkeypatch.delenv("JOURNAL_STREAM")
    setup_logging("info", out)
    logging.getLogger("bridge").info("plain")
    assert out.getvalue().splitlines() == [
        "<4>bridge.radio_policy: two | lines",
        "INFO bridge: plain",
    ]


def _modules_after(*imports: str) -> list[str]:
    """The modules a fresh interpreter has loaded after importing these."""
    code = f"import sys, {', '.join(imports)}\nprint(' '.join(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


def test_bridge_run_loads_neither_the_demos_nor_test_tools_nor_bumble() -> None:
    """What ``bridge run`` imports on BlueZ is what it needs: the demos load
    trio.testing, which loads pytest where it is installed (8 MB resident), and Bumble
    is for the ``bumble`` radio backend only (docs/BENCHMARKS.md, P6)."""
    loaded = _modules_after("bridge.cli", "bridge.daemon", "transports.ble")
    assert "bridge.daemon" in loaded and "bleak" in loaded  # the check sees real imports
    unwanted = (
        "bridge.emulation", "bridge.emulation.demo", "bridge.emulation.demo_radio",
        "trio.testing", "pytest", "_pytest", "bumble",
        "importlib.metadata",  # only `bridge doctor` asks packages their versions
    )  # fmt: skip
    assert [n for n in loaded if n in unwanted or n.startswith(("bumble.", "_pytest."))] == []


def test_the_bumble_backend_loads_bumbles_host_but_not_the_virtual_radio() -> None:
    """``radio.backend = "bumble"`` drives a real controller: Bumble's host, not its
    controller emulation nor our virtual radio (2 MB resident, docs/BENCHMARKS.md P6)."""
    loaded = _modules_after("bridge.cli", "bridge.daemon", "transports.bumble_dongle")
    assert "bumble.device" in loaded and "transports.bumble_host" in loaded
    unwanted = (
        "bumble.controller",
        "bumble.link",
        "transports.bumble_radio",
        "bridge.emulation.world",
    )
    assert [n for n in loaded if n in unwanted] == []


# -- systemd --------------------------------------------------------------------------------


async def test_the_service_tells_systemd_it_is_ready_and_feeds_the_watchdog(
    aio: Any, autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # WatchdogSec=10
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())
    messages: list[tuple[float, str]] = []
    try:
        central = await world.start_central()
        async with trio.open_nursery() as nursery:
            assert messages == []  # nothing before it serves
            await nursery.start(partial(daemon.serve, config_for(tmp_path), radio=central))
            with trio.move_on_after(21):
                while True:
                    data = await notify.recv(4096)
                    messages.append((trio.current_time(), data.decode()))
            nursery.cancel_scope.cancel()
    finally:
        world.close()
        notify.close()
    texts = [text for _, text in messages]
    assert texts[0].startswith("READY=1\nSTATUS=serving 0 paired phone(s)")
    pings = [t for t, text in messages if text == "WATCHDOG=1"]
    assert len(pings) >= 4 and all(round(b - a) == 5 for a, b in itertools.pairwise(pings))


def test_without_systemd_nothing_is_sent() -> None:
    assert systemd.notify("READY=1", {}) is False
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10", "WATCHDOG_PID": "1"}) is None


def test_the_unit_file_uses_notify_and_does_not_restart_on_configuration_errors() -> None:
    unit = (Path(__file__).parents[1] / "packaging" / "ble-bridge.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"]) > 0
    assert set(settings["RestartPreventExitStatus"].split()) == {
        str(cli.EXIT_USAGE), str(cli.EXIT_CONFIG), str(cli.EXIT_BUSY),
    }  # fmt: skip


# -- roles (protocol v1: the head unit also as GATT server) ---------------------------------


async def test_bridge_run_serves_a_phone_that_connects_and_records_its_link(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """``bridge run`` in the peripheral role only: an iPhone (a central) pairs with
    ``bridge pair``, is recognised by its identify tag by the service, and the debug
    capture shows its link the right way round (the head unit as server)."""
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())

    async def yes(phone: Phone, event: CodeToConfirm) -> bool:
        return True

    config = config_for(tmp_path, capture_dir=str(tmp_path / "captures"))
    try:
        await world.start_central()
        listener = world.listener()
        phone = world.add_phone("iphone", FLAVOURS["ios"], PROFILES["ios"], role="central")
        async with trio.open_nursery() as nursery:
            await nursery.start(phone.run)
            name = await daemon.pair(config, yes, limit=60, listener=listener, out=io.StringIO())
            assert name == "iPhone 16"
            service = await nursery.start(partial(daemon.serve, config, listener=listener))
            hu = service.head_unit
            note = m.Notification("n1", "Chat", m.Category.MESSAGE, "hi", 0)
            record = await _served_a_notification(hu, phone, "iPhone 16", note)
            assert record.role == "peripheral" and hu.connect_attempts == 0
            nursery.cancel_scope.cancel()
    finally:
        world.close()
    dumped = io.StringIO()
    captures = sorted((tmp_path / "captures").glob("head-unit-*.pcapng"))
    assert len(captures) == 2
    for capture in captures:
        assert dump.main([str(capture)], out=dumped) == 0
    text = dumped.getvalue()
    # the head unit notifies its handshake message to the phone, the phone writes its own
    assert re.search(r"hu->phone +control +handshake +KK message 1", text)
    assert re.search(r"phone->hu +control +handshake +KK message 2", text)


@pytest.mark.parametrize(
    ("value", "ok"),
    [('["central"]', True), ('["peripheral", "central"]', True), ("[]", False),
     ('["radio"]', False), ('"central"', False), ('["central", "central"]', False)],
)  # fmt: skip
def test_radio_roles_are_a_list_of_known_roles(tmp_path: Path, value: str, ok: bool) -> None:
    path = write(tmp_path, f"[radio]\nroles = {value}")
    if ok:
        assert set(load_config(path).radio.roles) <= {"central", "peripheral"}
    else:
        with pytest.raises(ConfigError, match=r"'radio\.roles' must be a list of one or more"):
            load_config(path)
    assert Config().radio.roles == ("central", "peripheral")  # both by default


def test_doctor_says_what_each_role_needs(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, adapters=["hci0"])
    data = str(tmp_path / "data")
    both = doctor.run_checks(Config(data_dir=data), machine)
    (roles,) = [c for c in both if c.name == "roles"]
    assert roles.ok and "peripheral role is not available on BlueZ yet" in roles.detail
    only = Config(data_dir=data, radio=RadioConfig(roles=("peripheral",)))
    (roles,) = [c for c in doctor.run_checks(only, machine) if c.name == "roles"]
    assert not roles.ok and 'radio.backend = "bumble"' in roles.fix
    dongle = Config(data_dir=data, radio=RadioConfig(backend="bumble", transport="usb:0"))
    (roles,) = [c for c in doctor.run_checks(dongle, machine) if c.name == "roles"]
    assert roles.ok and "both" in roles.detail and "iPhones without the app bond" in roles.detail


@pytest.mark.parametrize(
    ("adapters", "bluetoothd", "problem"),
    [
        (["hci0"], False, None),
        (["hci0"], True, "sudo systemctl disable --now bluetooth"),
        ([], False, "ls /sys/class/bluetooth"),
    ],
)
def test_doctor_checks_the_hci_user_channel(
    tmp_path: Path, adapters: list[str], bluetoothd: bool, problem: str | None
) -> None:
    """The Pi's adapter driven by Bumble through the kernel (transport hci-socket:0):
    the adapter must exist and bluetoothd must not hold it."""
    base = fake_machine(tmp_path, adapters=adapters)
    machine = dataclasses.replace(
        base, run=lambda cmd: ("412\n" if bluetoothd else None) if cmd[0] == "pidof" else None
    )
    config = Config(
        data_dir=str(tmp_path / "data"),
        radio=RadioConfig(backend="bumble", transport="hci-socket:0"),
    )
    (check,) = [c for c in doctor.run_checks(config, machine) if c.name == "HCI user channel"]
    assert check.ok is (problem is None)
    if problem is not None:
        assert problem in check.fix


async def test_bridge_pair_bonds_an_iphone_without_the_app(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """``bridge pair`` on a radio that serves app-free iPhones: it says so, the iPhone
    bonds through the same prompt, pairing ends with its name, and the bond is kept."""
    world = RadioWorld(tmp_path / "world", clock_ms=clock_ms_from_trio())
    asked: list[CodeToConfirm] = []

    async def yes(phone: Phone, event: CodeToConfirm) -> bool:
        asked.append(event)
        return True

    config = config_for(tmp_path)
    try:
        await world.start_central()

        async def apple(bonds: BondStore) -> Any:
            return world.apple(bonds)

        iphone = await world.add_app_free_iphone("Ana's iPhone")
        out = io.StringIO()
        async with trio.open_nursery() as nursery:

            async def bond() -> None:
                await iphone.connect(await iphone.find_car())

            nursery.start_soon(bond)
            name = await daemon.pair(
                config, yes, limit=60, listener=world.listener(), apple=apple, out=out
            )
        assert name == "Ana's iPhone"
        assert "or tap the car in an iPhone's Bluetooth settings" in out.getvalue()
        assert [e.peer.display_name for e in asked] == ["an iPhone without the app"]
        assert [b.name for b in BondStore(config.data_path / "head-unit").bonds()] == [
            "Ana's iPhone"
        ]
    finally:
        world.close()
