"""The head unit's link-layer bonds: iPhones served without the app (ANCS and AMS).

A bond is what BLE pairing (SMP) leaves: keys (the long-term key to encrypt again, the
peer's IRK to resolve its private addresses) under the peer's identity address, plus
what the head unit shows: a name and when it bonded. They live in one JSON file,
``bonds.json`` beside the trust store, written atomically and owner-only; the keys are
kept in the BLE stack's own layout (an opaque object here). Nothing in this module
touches a radio, so ``bridge devices`` and ``bridge forget`` read and edit it offline.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairing.files import write_private

BONDS_FILE = "bonds.json"
MAX_BONDS = 64
MAX_FILE = 1 << 20


class BondStoreError(Exception):
    """The bonds cannot be read or written; the message says what to do."""


def bond_key(address: str) -> bytes:
    """A bonded iPhone's stable 32-byte id for the head unit (its devices' ``key``):
    derived from the identity address, so it is the same after every restart."""
    return hashlib.sha256(b"bridge bond " + address.upper().encode()).digest()


@dataclass(frozen=True)
class Bond:
    address: str  # the identity address, as the stack names it
    name: str
    bonded: float  # when, seconds since the epoch
    keys: dict[str, Any]

    @property
    def key(self) -> bytes:
        return bond_key(self.address)

    @property
    def short_id(self) -> str:
        return self.key.hex()[:8]


class BondStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / BONDS_FILE
        self._bonds: dict[str, Bond] = {}
        self._load()

    def _load(self) -> None:
        try:
            if not self.path.exists():
                return
            if self.path.stat().st_size > MAX_FILE:
                raise BondStoreError(f"{self.path} is damaged: larger than {MAX_FILE} bytes")
            raw = json.loads(self.path.read_bytes())
        except OSError as e:
            raise BondStoreError(f"cannot read {self.path}: {e.strerror}") from None
        except ValueError:
            raise BondStoreError(f"{self.path} is damaged: not JSON; move it away") from None
        bonds = raw.get("bonds") if isinstance(raw, dict) else None
        if not isinstance(bonds, list):
            raise BondStoreError(f"{self.path} is damaged: no list of bonds; move it away")
        for item in bonds:
            try:
                bond = Bond(
                    str(item["address"]), str(item["name"]), float(item["bonded"]),
                    dict(item["keys"]),
                )  # fmt: skip
            except (KeyError, TypeError, ValueError):
                raise BondStoreError(f"{self.path} is damaged: a bad bond; move it away") from None
            self._bonds[bond.address] = bond

    def bonds(self) -> list[Bond]:
        return list(self._bonds.values())

    def stored(self) -> list[tuple[str, dict[str, Any]]]:
        """Every bond's keys by identity address (what the BLE stack loads)."""
        return [(b.address, b.keys) for b in self._bonds.values()]

    def get(self, address: str) -> Bond | None:
        return self._bonds.get(address)

    def put(self, address: str, keys: dict[str, Any], name: str | None = None) -> Bond:
        """Store (or update) a bond's keys; ``name`` None keeps the one it had."""
        old = self._bonds.get(address)
        bond = Bond(
            address,
            name if name is not None else (old.name if old else "iPhone"),
            old.bonded if old else time.time(),
            keys,
        )
        self._bonds[address] = bond
        while len(self._bonds) > MAX_BONDS:  # the oldest bond goes
            oldest = min(self._bonds.values(), key=lambda b: b.bonded)
            del self._bonds[oldest.address]
        self._save()
        return bond

    def rename(self, address: str, name: str) -> None:
        bond = self._bonds.get(address)
        if bond is not None and bond.name != name:
            self._bonds[address] = Bond(address, name, bond.bonded, bond.keys)
            self._save()

    def remove(self, address: str) -> None:
        if self._bonds.pop(address, None) is not None:
            self._save()

    def find(self, name_or_id: str) -> Bond:
        matches = [b for b in self._bonds.values() if name_or_id in (b.name, b.short_id)]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise BondStoreError(f"{what} bonded iPhone is called {name_or_id!r}")
        return matches[0]

    def _save(self) -> None:
        doc = {
            "version": 1,
            "bonds": [
                {"address": b.address, "name": b.name, "bonded": b.bonded, "keys": b.keys}
                for b in self._bonds.values()
            ],
        }
        data = json.dumps(doc, indent=1).encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(self.directory, BONDS_FILE, data)
        except OSError as e:
            raise BondStoreError(f"cannot write {self.path}: {e.strerror}") from None
