"""``bridge doctor``: what the head unit needs from this machine, checked one by one, each
failure with what to do about it.

Every check reads the machine through :class:`Machine` (files under ``/sys`` and
``/run``, commands on ``PATH``), so the tests run them against a made-up machine.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Config, HomeConfig

MIN_BLUEZ = (5, 55)  # bleak's floor for what the head unit uses
SYSTEM_BUS = "/run/dbus/system_bus_socket"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _output(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _connect(path: str) -> str | None:
    """None if a Unix socket accepts a connection, else why not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
    except OSError as e:
        return e.strerror or str(e)
    return None


@dataclass
class Machine:
    """Where the checks look (the real machine by default)."""

    root: Path = Path("/")
    which: Callable[[str], str | None] = shutil.which
    run: Callable[[list[str]], str | None] = _output
    connect: Callable[[str], str | None] = _connect

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def check_python() -> Check:
    return Check("Python", True, ".".join(map(str, sys.version_info[:3])))


def check_packages() -> Check:
    # only `bridge doctor` needs it: 1 MB resident that `bridge run` need not carry
    import importlib.metadata  # noqa: PLC0415

    wanted = ["trio", "cbor2", "cryptography", "bleak", "bumble", "trio-asyncio", "paho-mqtt"]
    found, missing = [], []
    for name in wanted:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            "Python packages", False, f"missing: {', '.join(missing)}",
            "reinstall the bridge: pip install ble-bridge (its dependencies come with it)",
        )  # fmt: skip
    return Check("Python packages", True, ", ".join(found))


def check_bluez(machine: Machine) -> Check:
    daemon = machine.which("bluetoothd") or next(
        (p for p in ("/usr/libexec/bluetooth/bluetoothd", "/usr/lib/bluetooth/bluetoothd")
         if machine.path(p).exists()),
        None,
    )  # fmt: skip
    if daemon is None:
        return Check("BlueZ", False, "bluetoothd not found", "sudo apt install bluez")
    text = machine.run([daemon, "--version"]) or ""
    match = re.search(r"(\d+)\.(\d+)", text)
    if match is None:
        return Check(
            "BlueZ", False, f"{daemon} gave no version", "sudo apt install --reinstall bluez"
        )
    version = (int(match[1]), int(match[2]))
    if version < MIN_BLUEZ:
        return Check(
            "BlueZ", False, f"{version[0]}.{version[1]}",
            f"BlueZ {MIN_BLUEZ[0]}.{MIN_BLUEZ[1]} or newer is needed: upgrade the OS "
            "(Raspberry Pi OS bookworm has 5.66)",
        )  # fmt: skip
    return Check("BlueZ", True, f"{version[0]}.{version[1]}")


def check_adapter(machine: Machine, adapter: str) -> Check:
    folder = machine.path("/sys/class/bluetooth")
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    adapters = [n for n in names if re.fullmatch(r"hci\d+", n)]
    if not adapters:
        return Check(
            "Bluetooth adapter", False, "none found",
            "plug in a Bluetooth adapter, or enable the built-in one (dtparam / "
            "'sudo raspi-config'); 'lsusb' and 'dmesg | grep -i bluetooth' show what the "
            "kernel sees",
        )  # fmt: skip
    wanted = adapter or adapters[0]
    if wanted not in adapters:
        return Check(
            "Bluetooth adapter", False, f"{wanted} not found (there is {', '.join(adapters)})",
            f"set radio.adapter to one of {', '.join(adapters)} in the configuration",
        )  # fmt: skip
    return Check("Bluetooth adapter", True, f"{wanted} (of {', '.join(adapters)})")


def check_rfkill(machine: Machine) -> Check:
    folder = machine.path("/sys/class/rfkill")
    blocked = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            if (entry / "type").read_text().strip() != "bluetooth":
                continue
            soft = (entry / "soft").read_text().strip() == "1"
            hard = (entry / "hard").read_text().strip() == "1"
        except OSError:
            continue
        if hard:
            blocked.append(f"{entry.name} hard-blocked")
        elif soft:
            blocked.append(f"{entry.name} soft-blocked")
    if any("hard" in b for b in blocked):
        return Check(
            "rfkill",
            False,
            ", ".join(blocked),
            "a switch or the firmware turns the radio off: check the hardware switch",
        )
    if blocked:
        return Check("rfkill", False, ", ".join(blocked), "sudo rfkill unblock bluetooth")
    return Check("rfkill", True, "Bluetooth not blocked")


def check_dbus(machine: Machine) -> Check:
    why = machine.connect(str(machine.path(SYSTEM_BUS)))
    if why is not None:
        return Check(
            "D-Bus", False, f"cannot connect to the system bus ({why})",
            "sudo systemctl start dbus bluetooth (and run as a user allowed on the system bus)",
        )  # fmt: skip
    return Check("D-Bus", True, "system bus reachable")


def check_powered(machine: Machine, adapter: str) -> Check:
    if machine.which("btmgmt") is None and machine.which("bluetoothctl") is None:
        return Check(
            "adapter powered",
            False,
            "cannot tell: bluetoothctl not found",
            "sudo apt install bluez",
        )
    text = machine.run(["bluetoothctl", "show", *([adapter] if adapter else [])]) or ""
    if "Powered: yes" in text:
        return Check("adapter powered", True, "yes")
    if "Powered: no" in text:
        return Check(
            "adapter powered",
            False,
            "no",
            "bluetoothctl power on (and set AutoEnable=true in /etc/bluetooth/main.conf)",
        )
    return Check(
        "adapter powered", False, "bluetoothd did not answer", "sudo systemctl start bluetooth"
    )


def check_data(config: Config) -> Check:
    data = config.data_path
    probe = data if data.exists() else next((p for p in data.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return Check(
            "data folder", False, f"{data} is not writable by this user",
            f"create it for the service's user: sudo install -d -m 700 -o USER {data}",
        )  # fmt: skip
    trust = data / "head-unit" / "trust.json"
    if trust.exists() and trust.stat().st_mode & 0o077:
        return Check("data folder", False, f"{trust} is readable by others", f"chmod 600 {trust}")
    return Check("data folder", True, str(data))


def check_roles(config: Config) -> Check:
    """What each configured role needs of the radio (PROTOCOL.md: the head unit scans
    for phones in the central role, advertises and serves in the peripheral role)."""
    roles = config.radio.roles
    named = " and ".join(roles)
    if config.radio.backend == "bumble":
        iphones = ""
        if config.radio.iphones_without_app:
            iphones = (
                "; iPhones without the app bond and share notifications and music (ANCS, AMS)"
                if "peripheral" in roles
                else "; iPhones without the app need the peripheral role"
            )
        return Check("roles", True, f"{named}: a Bumble controller plays both{iphones}")
    if "peripheral" in roles and "central" not in roles:
        return Check(
            "roles",
            False,
            "peripheral only: the peripheral role is not available on BlueZ yet, so this "
            "head unit would serve no phone",
            'radio.roles = ["central", "peripheral"], or radio.backend = "bumble" for the '
            "peripheral role: a Bumble dongle, or the Pi's own adapter with transport = "
            '"hci-socket:0" (docs/BLUEZ.md)',
        )
    if "peripheral" in roles:  # the default: served as far as BlueZ goes today
        return Check(
            "roles",
            True,
            "central (scanning); the peripheral role is not available on BlueZ yet: "
            "phones that only connect (an iPhone whose app is in the background) need "
            'radio.backend = "bumble" (a dongle, or this adapter with transport = '
            '"hci-socket:0": docs/BLUEZ.md); iPhones without the app bond through '
            "bluetoothd's agent",
        )
    return Check("roles", True, f"{named} (scanning: BlueZ's LE scanning and connecting)")


def check_user_channel(machine: Machine, transport: str) -> Check:
    """Bumble on the kernel's HCI user channel (``hci-socket:N``) takes the adapter
    from bluetoothd: it must be up in the kernel, and bluetoothd must not hold it."""
    index = transport.split(":", 1)[1] if ":" in transport else "0"
    name = f"hci{index or 0}"
    if not machine.path(f"/sys/class/bluetooth/{name}").exists():
        return Check(
            "HCI user channel", False, f"no adapter {name} in the kernel",
            "check the adapter (ls /sys/class/bluetooth); on a Pi the UART adapter needs "
            "its firmware loaded (hciuart.service)",
        )  # fmt: skip
    if machine.run(["pidof", "bluetoothd"]):
        return Check(
            "HCI user channel", False, f"bluetoothd is running and holds {name}",
            "sudo systemctl disable --now bluetooth (the head unit drives the adapter "
            "itself; docs/BLUEZ.md)",
        )  # fmt: skip
    return Check(
        "HCI user channel", True,
        f"{name}, bluetoothd not running (the service needs CAP_NET_ADMIN: docs/BLUEZ.md)",
    )  # fmt: skip


def check_home(config: Config, probe: Callable[[HomeConfig], str | None]) -> Check:
    home = config.home
    where = f"{home.host}:{home.port}"
    why = probe(home)
    if why is not None:
        return Check(
            "home link", False, why,
            "check [home] in the config and that the broker runs (docs/HOME.md); the car "
            "works without it",
        )  # fmt: skip
    tls = ", TLS" if home.tls else ""
    return Check("home link", True, f"MQTT broker at {where} takes our credentials{tls}")


def run_checks(
    config: Config,
    machine: Machine | None = None,
    probe: Callable[[HomeConfig], str | None] | None = None,
) -> list[Check]:
    """``probe``: how to reach the home's broker (``bridge.home_mqtt.probe_broker``)."""
    machine = machine or Machine()
    adapter = config.radio.adapter
    checks = [check_python(), check_packages(), check_data(config), check_roles(config)]
    if config.home.enabled:
        if probe is None:
            from bridge.home_mqtt import probe_broker  # noqa: PLC0415 (paho only when used)

            probe = probe_broker
        checks.append(check_home(config, probe))
    if config.radio.backend == "bumble":
        checks.append(Check("radio", True, f"Bumble on {config.radio.transport} (BlueZ not used)"))
        if config.radio.transport.startswith("hci-socket"):
            checks.append(check_user_channel(machine, config.radio.transport))
        return checks
    checks += [
        check_bluez(machine),
        check_adapter(machine, adapter),
        check_rfkill(machine),
        check_dbus(machine),
    ]
    if checks[-1].ok and checks[-3].ok:
        checks.append(check_powered(machine, adapter))
    return checks
