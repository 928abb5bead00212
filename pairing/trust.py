"""The trust store: our identity key and the devices we paired with, in one file.

Strategy: a small JSON document under the data directory, rewritten whole on every change
by the classic atomic sequence (write a temporary file created owner-only, fsync it,
rename it over the old one, fsync the directory), so a crash at any moment leaves the
old or the new state, never a broken file. The directory is made owner-only (0700) and
the file 0600. Reading a damaged file gives :class:`TrustStoreError` with one clear
sentence, never a traceback. Keys never appear in reprs or logs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pairing.files import write_private
from pairing.handshake import Authenticated
from pairing.noise import public_bytes
from pairing.privacy import IRK_SIZE

FORMAT_VERSION = 1
FILENAME = "trust.json"
MAX_STORED_NAME = 256  # a name (64 characters on the wire) and its " (2)" suffix fit


class TrustStoreError(Exception):
    """The trust store cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class TrustedDevice:
    name: str
    platform: str
    key: str  # the peer's static public key, hex
    first_paired: float  # Unix time
    last_seen: float
    irk: str = ""  # the phone's identity resolving key, hex (head unit side), or ""

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    @property
    def short_id(self) -> str:
        """A fingerprint to tell devices apart in lists (not secret)."""
        return self.key[:8]


class TrustStore:
    def __init__(
        self, directory: Path, *, clock: Callable[[], float] = time.time, role: str = "head unit"
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self._clock = clock
        self._role = role
        self._identity: X25519PrivateKey
        self._irk = b""
        self._devices: list[TrustedDevice] = []
        self._load_or_create()

    def __repr__(self) -> str:
        return f"TrustStore({str(self.path)!r}, {len(self._devices)} devices)"

    # -- reading ----------------------------------------------------------------------

    def _load_or_create(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
            # a crash between writing and renaming leaves a copy of the identity behind
            for stale in self.directory.glob(f".{FILENAME}.*.tmp"):
                stale.unlink()
        except OSError as e:
            raise TrustStoreError(
                f"cannot use data directory {self.directory}: {e.strerror}"
            ) from None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._identity = X25519PrivateKey.generate()
            self._irk = os.urandom(IRK_SIZE)
            self._save()
            return
        except OSError as e:
            raise TrustStoreError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            self._parse(json.loads(raw))
        except RecursionError:
            raise TrustStoreError(
                f"{self.path} is damaged (nested too deeply); move it away to start over, "
                "which forgets every paired device"
            ) from None
        except (ValueError, TypeError, KeyError) as e:
            raise TrustStoreError(
                f"{self.path} is damaged ({e}); move it away to start over, "
                "which forgets every paired device"
            ) from None

    def _parse(self, doc: Any) -> None:
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ValueError("unknown format version")
        self._identity = X25519PrivateKey.from_private_bytes(bytes.fromhex(doc["identity"]))
        self._irk = bytes.fromhex(doc.get("irk", "")) or os.urandom(IRK_SIZE)
        if len(self._irk) != IRK_SIZE:
            raise ValueError("the IRK is not 16 bytes")
        devices = []
        if not isinstance(doc["devices"], list):
            raise TypeError("devices is not a list")
        for d in doc["devices"]:
            texts = [d["name"], d["platform"], d["key"], d.get("irk", "")]
            if not all(isinstance(t, str) for t in texts) or len(d["name"]) > MAX_STORED_NAME:
                raise ValueError("a device's name, platform, key or IRK is not a short text")
            device = TrustedDevice(
                d["name"],
                d["platform"],
                d["key"],
                float(d["first_paired"]),
                float(d["last_seen"]),
                d.get("irk", ""),
            )
            if len(device.key_bytes) != 32 or len(bytes.fromhex(device.irk)) not in (0, IRK_SIZE):
                raise ValueError("a device key is not 32 bytes or its IRK not 16")
            devices.append(device)
        self._devices = devices

    @property
    def identity(self) -> X25519PrivateKey:
        return self._identity

    @property
    def public_key(self) -> bytes:
        return public_bytes(self._identity)

    @property
    def irk(self) -> bytes:
        """Our identity resolving key: given to head units we pair with (phone side)."""
        return self._irk

    def irks(self) -> list[tuple[TrustedDevice, bytes]]:
        """The IRKs of paired devices that gave one, to resolve advertising tokens."""
        return [(d, bytes.fromhex(d.irk)) for d in self._devices if d.irk]

    def devices(self) -> list[TrustedDevice]:
        return list(self._devices)

    def trusted_keys(self) -> set[bytes]:
        return {d.key_bytes for d in self._devices}

    def find(self, name_or_id: str) -> TrustedDevice:
        matches = [d for d in self._devices if name_or_id in (d.name, d.short_id, d.key)]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise TrustStoreError(f"{what} paired device is called {name_or_id!r}")
        return matches[0]

    def by_key(self, key: bytes) -> TrustedDevice | None:
        return next((d for d in self._devices if d.key_bytes == key), None)

    # -- changing ---------------------------------------------------------------------

    def add(self, key: bytes, name: str, platform: str, irk: bytes = b"") -> TrustedDevice:
        """Store a newly paired device (replacing an older entry with the same key)."""
        now = self._clock()
        old = self.by_key(key)
        first = old.first_paired if old else now
        name = self._unique_name(name, key)
        device = TrustedDevice(name, platform, key.hex(), first, now, irk.hex())
        self._devices = [d for d in self._devices if d.key != device.key] + [device]
        self._save()
        return device

    def _unique_name(self, name: str, key: bytes) -> str:
        """``name``, or ``name (2)``, ``(3)``... if another device already has it."""
        taken = {d.name for d in self._devices if d.key_bytes != key}
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name} ({n})"
        return candidate

    def record(self, event: Authenticated) -> TrustedDevice | None:
        """What every side does once a peer is authenticated: store it after a first
        pairing (with its IRK, if it gave one), else note when it was last seen. The
        device as stored (its name may have a " (2)" suffix)."""
        peer = event.peer
        if event.paired_now:
            return self.add(peer.static_key, peer.name, peer.platform, event.peer_irk or b"")
        self.seen(peer.static_key)
        return self.by_key(peer.static_key)

    def seen(self, key: bytes) -> None:
        old = self.by_key(key)
        if old is not None:
            self._replace(old, replace(old, last_seen=self._clock()))

    def rename(self, name_or_id: str, new_name: str) -> TrustedDevice:
        old = self.find(name_or_id)
        new = replace(old, name=self._unique_name(new_name, old.key_bytes))
        self._replace(old, new)
        return new

    def forget(self, name_or_id: str) -> TrustedDevice:
        old = self.find(name_or_id)
        self._devices = [d for d in self._devices if d is not old]
        self._save()
        return old

    def _replace(self, old: TrustedDevice, new: TrustedDevice) -> None:
        self._devices = [new if d is old else d for d in self._devices]
        self._save()

    def _document(self) -> bytes:
        identity = self._identity.private_bytes_raw().hex()
        doc = {
            "version": FORMAT_VERSION,
            "role": self._role,
            "identity": identity,
            "irk": self._irk.hex(),
            "devices": [asdict(d) for d in self._devices],
        }
        return json.dumps(doc, indent=1).encode()

    def _save(self) -> None:
        try:
            write_private(self.directory, FILENAME, self._document())
        except OSError as e:
            raise TrustStoreError(f"cannot write {self.path}: {e.strerror}") from None
