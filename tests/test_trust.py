"""The trust store: permissions, listing, renaming, forgetting, and crashes mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pairing.trust import TrustStore, TrustStoreError


def test_created_owner_only_and_reloaded(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "data", clock=lambda: 1000.0)
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert store.path.stat().st_mode & 0o777 == 0o600
    store.add(b"\x01" * 32, "Pixel 9", "android")
    store.add(b"\x02" * 32, "iPad", "ios")
    again = TrustStore(tmp_path / "data")
    assert again.public_key == store.public_key
    assert [(d.name, d.platform, d.first_paired) for d in again.devices()] == [
        ("Pixel 9", "android", 1000.0),
        ("iPad", "ios", 1000.0),
    ]
    assert store.identity.private_bytes_raw().hex() not in repr(store)


def test_rename_forget_seen(tmp_path: Path) -> None:
    now = [1.0]
    store = TrustStore(tmp_path, clock=lambda: now[0])
    device = store.add(b"\x03" * 32, "Phone", "android")
    store.rename(device.short_id, "Anna's phone")
    now[0] = 5.0
    store.seen(b"\x03" * 32)
    (d,) = TrustStore(tmp_path).devices()
    assert (d.name, d.first_paired, d.last_seen) == ("Anna's phone", 1.0, 5.0)
    store.forget("Anna's phone")
    assert TrustStore(tmp_path).devices() == []
    with pytest.raises(TrustStoreError, match="no paired device"):
        store.forget("Anna's phone")


def test_damaged_file_gives_one_clear_sentence(tmp_path: Path) -> None:
    TrustStore(tmp_path)
    (tmp_path / "trust.json").write_text('{"version": 1, "identity": "zz"')
    with pytest.raises(TrustStoreError, match=r"damaged.*move it away"):
        TrustStore(tmp_path)


def test_failure_before_rename_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TrustStore(tmp_path)
    store.add(b"\x04" * 32, "Old", "ios")

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(TrustStoreError, match="cannot write"):
        store.add(b"\x05" * 32, "New", "ios")
    monkeypatch.undo()
    assert [d.name for d in TrustStore(tmp_path).devices()] == ["Old"]
    assert [p.name for p in tmp_path.iterdir()] == ["trust.json"]  # no temporary left


WRITER = """
import sys
from pathlib import Path
from pairing.trust import TrustStore
store = TrustStore(Path(sys.argv[1]))
for i in range(100000):
    print(i, flush=True)
    store.add(i.to_bytes(32, "big"), "device %d" % i, "android")
"""


def test_killed_mid_write_leaves_old_or_new_state(tmp_path: Path) -> None:
    for attempt, writes in enumerate([1, 3, 17, 40, 75, 120]):
        data = tmp_path / f"kill{attempt}"
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        ) as child:
            assert child.stdout is not None
            for _ in range(writes):  # the child is inside its next write when it dies
                child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.wait()
        store = TrustStore(data)  # loads: the old or the new state, never a broken file
        names = [d.name for d in store.devices()]
        assert names == [f"device {i}" for i in range(len(names))]
        assert writes - 1 <= len(names) <= writes + 1
        json.loads((data / "trust.json").read_text())


def test_two_devices_never_share_a_name(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    first = store.add(os.urandom(32), "Pixel 9", "android")
    second = store.add(os.urandom(32), "Pixel 9", "android")
    third = store.add(os.urandom(32), "Pixel 9", "android")
    assert [first.name, second.name, third.name] == ["Pixel 9", "Pixel 9 (2)", "Pixel 9 (3)"]
    assert store.add(first.key_bytes, "Pixel 9", "android").name == "Pixel 9"  # itself
    assert store.rename("Pixel 9 (3)", "Pixel 9").name == "Pixel 9 (3)"


def test_a_crash_leftover_with_the_identity_is_removed(tmp_path: Path) -> None:
    TrustStore(tmp_path)
    stale = tmp_path / ".trust.json.12345.tmp"
    stale.write_bytes((tmp_path / "trust.json").read_bytes())
    TrustStore(tmp_path)
    assert not stale.exists()


@pytest.mark.parametrize(
    "document",
    [
        "[" * 100_000 + "]" * 100_000,
        None,  # a device whose name is an object
    ],
)
def test_hostile_store_documents_are_clear_errors(tmp_path: Path, document: str | None) -> None:
    store = TrustStore(tmp_path)
    store.add(os.urandom(32), "Pixel 9", "android")
    path = tmp_path / "trust.json"
    if document is None:
        doc = json.loads(path.read_text())
        doc["devices"][0]["name"] = {"evil": True}
        document = json.dumps(doc)
    path.write_text(document)
    with pytest.raises(TrustStoreError, match="damaged"):
        TrustStore(tmp_path)
