"""The opt-in key log, like TLS's SSLKEYLOGFILE: session keys for decrypting captures.

One line per authenticated link, appended to a file created owner-only::

    BRIDGE_V0 <handshake hash> <head unit -> phone key> <phone -> head unit key>

all in hex. The packet-dump tool matches a capture's sessions by trying these keys.
Off unless asked for; turning it on logs a warning, because anyone who can read the file
can read every message of the logged sessions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pairing.handshake import Authenticated, Role

log = logging.getLogger(__name__)

LABEL = "BRIDGE_V0"


class KeyLogError(Exception):
    """The key log file cannot be written; the message names it and why."""


class KeyLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:  # now, not at the first session: a bad path is the caller's to report
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as e:
            raise KeyLogError(f"cannot write the key log {self.path}: {e.strerror}") from None
        log.warning(
            "key log on: session keys are written to %s; anyone who can read it can decrypt "
            "captured traffic",
            self.path,
        )

    def write(self, role: Role, event: Authenticated) -> None:
        if role is Role.HEAD_UNIT:
            to_phone, to_head_unit = event.send_key, event.receive_key
        else:
            to_phone, to_head_unit = event.receive_key, event.send_key
        line = f"{LABEL} {event.handshake_hash.hex()} {to_phone.hex()} {to_head_unit.hex()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def read_keylog(path: Path) -> dict[bytes, tuple[bytes, bytes]]:
    """Handshake hash -> (to-phone key, to-head-unit key). ValueError for a bad line."""
    keys: dict[bytes, tuple[bytes, bytes]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or parts[0] != LABEL:
            raise ValueError(f"line {number} is not a {LABEL} line")
        h, a, b = (bytes.fromhex(p) for p in parts[1:])
        if len(h) != 32 or len(a) != 32 or len(b) != 32:
            raise ValueError(f"line {number} has a value of the wrong length")
        keys[h] = (a, b)
    return keys
