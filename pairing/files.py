"""Files of secrets, written as the trust store and the bonds need them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` atomically and owner-only: a temporary file created with
    mode 0600, written, fsynced, renamed over the old file, and the directory fsynced.
    A crash at any point leaves the old or the new file. Raises ``OSError`` (the
    temporary file removed)."""
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
