"""``python -m tools.bluez_vm``: run the bridge against real BlueZ in a QEMU guest.

Strategy (measured in ../shared/notes/bluez-vm.md). The kernel here has no Bluetooth, so
a small Debian guest with Debian's kernel, BlueZ and D-Bus boots under QEMU's software
emulation (KVM is unusable on these machines). Inside, the kernel's hci0 is a virtual
controller on ``/dev/vhci`` (the head unit: bleak -> D-Bus -> bluetoothd -> kernel),
and the emulated phones are on the same virtual radio (Bumble). The guest script
(``guest.sh``, then ``guest.py``) runs the scenarios and writes their results and logs
to a shared folder.

Steps, each bounded by a timeout, each failure one sentence and exit code 1:

1. tools: qemu-system-x86_64, debootstrap, mkfs.ext4 (``--install`` apt-installs them);
2. image, cached by a hash of its inputs (package list, suite, mirror, the project's
   pinned dependencies, the stub init) under ``~/.cache/bridge-bluez-vm/`` (or
   ``$BRIDGE_VM_CACHE``): debootstrap, the dependencies as wheels installed offline into
   ``/opt/venv`` through chroot, the kernel and initrd copied out, an ext4 image;
3. boot with the repository shared read-only and an output folder shared read-write;
   the image is opened with ``snapshot=on``, so it stays pristine;
4. bring back the exit code, ``results.json`` and the logs (serial console, guest script,
   bluetoothd, btmon capture, phones).

Exit codes: 0 every scenario passed in every run, 1 a failure (of a scenario or of the
lane itself: the message says which), 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from pairing.keylog import read_keylog
from tools.dump.att import AttTracker
from tools.dump.capture import CaptureError, read_capture
from tools.dump.decode import Decoder

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
PACKAGES = (
    "bluez,dbus,python3,python3-venv,kmod,udev,linux-image-amd64,initramfs-tools,procps,iproute2"
)
IMAGE_SIZE = "1600M"
BUILD_VERSION = "1"  # bump to force a rebuild
SCENARIOS = ("pair-and-channels", "link-loss", "android-and-ios", "doctor")
#: Not run by default, and alone: ``bridge run`` itself is the head unit there.
MEASUREMENTS = ("memory", "user-channel", "iphone-bluez", "conformance")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class LaneError(Exception):
    """The lane itself failed (not a scenario): one sentence saying what to do."""


def log(text: str) -> None:
    print(f"bluez-vm: {text}", file=sys.stderr, flush=True)


def run(
    cmd: list[str], timeout: float, what: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw
        )  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as e:
        raise LaneError(f"{what} did not finish within {timeout:g} s") from e
    except FileNotFoundError as e:
        raise LaneError(f"{what}: {cmd[0]} is not installed") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LaneError(f"{what} failed (exit {done.returncode}): {' / '.join(tail)}")
    return done  # type: ignore[no-any-return]


# -- 1. tools ------------------------------------------------------------------------

TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
}


def ensure_tools(install: bool) -> None:
    missing = {b: p for b, p in TOOLS.items() if shutil.which(b) is None}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if not install:
        raise LaneError(
            f"{', '.join(missing)} missing: install Debian's {' '.join(packages)} "
            "(or pass --install)"
        )
    log(f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], 300, "apt-get update", env=env)
    run(["apt-get", "install", "-y", "-qq", *packages], 600, "apt-get install", env=env)
    still = [b for b in TOOLS if shutil.which(b) is None]
    if still:
        raise LaneError(f"{', '.join(still)} still missing after installing {' '.join(packages)}")


# -- 2. image ------------------------------------------------------------------------


def mirror() -> str:
    """The Debian mirror this machine's apt uses (the guest build has no other network)."""
    sources = [*sorted(Path("/etc/apt/sources.list.d").glob("*")), Path("/etc/apt/sources.list")]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in line:
                return next(w for w in words[1:] if w.startswith("http"))
    return "http://deb.debian.org/debian"


def dependencies() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return deps


def image_key() -> str:
    h = hashlib.sha256()
    for part in (BUILD_VERSION, SUITE, PACKAGES, mirror(), *dependencies()):
        h.update(part.encode() + b"\0")
    h.update((HERE / "stub-init").read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    env = os.environ.get("BRIDGE_VM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bridge-bluez-vm"


def build_image(force: bool = False) -> Path:
    """The cached image folder (rootfs.img, vmlinuz, initrd.img), built if needed."""
    folder = cache_root() / image_key()
    if (folder / "done").exists() and not force:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free
    if free < 4 * 2**30:
        raise LaneError(f"only {free / 2**30:.1f} GB free in {folder.parent}; the build needs 4 GB")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rootfs = folder / "rootfs"
    started = time.monotonic()
    log(f"building the guest image in {folder} (about 2 minutes, once)")
    run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(rootfs), mirror()],
        900,
        "debootstrap",
    )
    wheels = rootfs / "opt" / "wheels"
    wheels.mkdir(parents=True)
    platforms = [
        a
        for tag in (
            "manylinux2014_x86_64",
            "manylinux_2_28_x86_64",
            "manylinux_2_34_x86_64",
            "linux_x86_64",
        )
        for a in ("--platform", tag)
    ]
    run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", *platforms,
         "-d", str(wheels), *dependencies()],
        600,
        "downloading the guest's Python wheels",
    )  # fmt: skip
    run(
        ["chroot", str(rootfs), "python3", "-m", "venv", "/opt/venv"],
        300,
        "creating the guest venv",
    )
    run(
        ["chroot", str(rootfs), "/opt/venv/bin/pip", "install", "--quiet", "--no-index",
         "--find-links", "/opt/wheels", *dependencies()],
        600,
        "installing the wheels in the guest",
    )  # fmt: skip
    shutil.copy(HERE / "stub-init", rootfs / "sbin" / "bridge-init")
    (rootfs / "sbin" / "bridge-init").chmod(0o755)
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LaneError("debootstrap installed no kernel or initrd in /boot")
    shutil.copy(kernels[-1], folder / "vmlinuz")
    shutil.copy(initrds[-1], folder / "initrd.img")
    run(["truncate", "-s", IMAGE_SIZE, str(folder / "rootfs.img")], 60, "truncate")
    run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(folder / "rootfs.img")], 600, "mkfs.ext4")
    shutil.rmtree(rootfs)
    (folder / "done").write_text(f"{time.monotonic() - started:.0f} s\n")
    log(f"image built in {time.monotonic() - started:.0f} s")
    return folder


# -- 3. boot ---------------------------------------------------------------------------


def boot(image: Path, out: Path, scenarios: list[str], timeout: float) -> int:
    """Boot once, run ``scenarios``; the guest's exit code (results in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenarios").write_text(" ".join(scenarios) + "\n")
    # the guest's own limit for its scenarios: the boot's, less the boot itself (~80 s)
    (out / "limit").write_text(f"{max(60, int(timeout) - 80)}\n")
    serial = out / "serial.log"
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "1024",
        "-smp", "2", "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 init=/sbin/bridge-init quiet panic=-1",
        "-drive", f"file={image / 'rootfs.img'},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={ROOT},mount_tag=repo,security_model=none,readonly=on",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none",
        "-nographic", "-no-reboot", "-serial", f"file:{serial}", "-monitor", "none", "-nic", "none",
    ]  # fmt: skip
    if shutil.which(cmd[0]) is None:
        raise LaneError("qemu-system-x86_64 is not installed")
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as vm:
        try:
            _, err = vm.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            vm.kill()
            vm.communicate()
            raise LaneError(
                f"the guest hung: no result after {timeout:g} s (serial log: {serial})"
            ) from None
    code_file = out / "exit-code"
    if not code_file.exists():
        tail = err.strip().splitlines()[-1:] if err else []
        raise LaneError(
            f"the guest stopped without a result (qemu exit {vm.returncode}"
            f"{': ' + tail[0] if tail else ''}; serial log: {serial})"
        )
    return int(code_file.read_text().strip() or 99)


def results(out: Path) -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def check_capture(out: Path) -> str | None:
    """Decode btmon's capture of hci0 with bridge-dump's decoder and the run's key log:
    None if every bridge record in it decrypted and decoded, else what went wrong."""
    capture, keylog = out / "hci.btsnoop", out / "keys.log"
    try:
        keys = read_keylog(keylog) if keylog.exists() else {}
        tracker, decoder = AttTracker(), Decoder(keys)
        items = [
            item
            for packet in read_capture(capture.read_bytes(), partial_ok=True)
            for pdu in tracker.feed(packet)
            for item in decoder.feed(pdu)
        ]
    except (OSError, ValueError, CaptureError) as e:
        return f"the btmon capture could not be decoded: {e}"
    frames = [i for i in items if i.kind == "frame"]
    # ANCS and AMS items (an iPhone without the app) are not bridge records
    bad = [i for i in items if i.kind not in ("frame", "ancs", "ams")]
    apple = [i for i in items if i.kind in ("ancs", "ams")]
    if not frames and apple:  # an iPhone without the app, and nothing else
        log(f"btmon capture: {len(apple)} ANCS and AMS items decoded, no bridge frames")
        return None
    if not frames:
        return "the btmon capture holds no bridge frames"
    if bad:
        first = bad[0]
        return (
            f"the btmon capture has {len(bad)} records that did not decode "
            f"(first: frame {first.number}, {first.error or first.kind})"
        )
    decrypted = sum(i.decrypted for i in frames)
    log(f"btmon capture: {len(frames)} bridge frames decoded, {decrypted} of them decrypted")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bluez_vm",
        description="Run the bridge's BLE scenarios against real BlueZ in a QEMU guest.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"default: all of {', '.join(SCENARIOS)}; also, each alone: 'memory' (bridge "
        "run's resident memory with four phones) and 'user-channel' (the head unit on the "
        "kernel's HCI user channel with Bumble, no bluetoothd: both roles and an iPhone "
        "without the app), 'iphone-bluez' (an iPhone without the app bonding with bluetoothd "
        "through the head unit's agent), 'conformance' (bridge-conformance --radio bluez "
        "against the emulated phone)",
    )
    parser.add_argument("--runs", type=int, default=1, help="boot and run this many times")
    parser.add_argument(
        "--logs",
        type=Path,
        default=ROOT / "test-artifacts" / "bluez-vm",
        help="where each run's logs go (default: test-artifacts/bluez-vm)",
    )
    parser.add_argument("--install", action="store_true", help="apt-get install missing tools")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached image")
    parser.add_argument("--timeout", type=float, default=420, help="seconds per boot (default 420)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS + MEASUREMENTS]
    if unknown:
        known = ", ".join(SCENARIOS + MEASUREMENTS)
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {known}")
    if set(args.scenarios) & set(MEASUREMENTS) and len(args.scenarios) > 1:
        parser.error(f"{', '.join(MEASUREMENTS)} run alone (each its own head unit)")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    scenarios = list(args.scenarios) or list(SCENARIOS)
    passed = failed = 0
    try:
        ensure_tools(args.install)
        image = build_image(force=args.rebuild)
        for n in range(1, args.runs + 1):
            out = args.logs / f"run-{n}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.monotonic()
            try:
                code = boot(image, out, scenarios, args.timeout)
            except LaneError as e:
                log(f"run {n}: {e}")
                failed += len(scenarios)
                continue
            found = results(out)
            measured = out / "measurements.txt"
            if measured.exists():
                for line in measured.read_text().splitlines():
                    log(f"run {n}: {line}")
            for name in scenarios:
                verdict = found.get(name, "no result")
                ok = verdict == "passed"
                passed += ok
                failed += not ok
                log(f"run {n}: {name}: {verdict}")
            if code != 0 and all(found.get(s) == "passed" for s in scenarios):
                failed += 1
                log(f"run {n}: the guest script exited {code} (see {out / 'guest.log'})")
            elif scenarios == ["conformance"]:
                # its cases send bad segments, forged and replayed records on purpose,
                # and the tool logs no keys: bridge-conformance itself judged the link
                log(f"run {n}: btmon capture not checked (the conformance cases' bad input)")
            elif code == 0 and (problem := check_capture(out)) is not None:
                failed += 1
                log(f"run {n}: {problem}")
            log(f"run {n} took {time.monotonic() - started:.0f} s; logs in {out}")
    except LaneError as e:
        log(str(e))
        print(f"bluez-vm: {passed} passed, {failed + (0 if failed else len(scenarios))} failed")
        return EXIT_FAILED
    print(f"bluez-vm: {passed} passed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
