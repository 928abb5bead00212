"""systemd's service protocol: readiness, the watchdog, stopping (``sd_notify``).

Strategy. systemd gives a ``Type=notify`` service the address of a datagram socket in
``$NOTIFY_SOCKET`` and, with ``WatchdogSec=``, the period in ``$WATCHDOG_USEC``. The
service sends ``READY=1`` once it serves (the radio scanning, the API listening) and
``WATCHDOG=1`` at half the period from its trio loop, so a loop that hangs gets the
service restarted. Ten lines of the protocol are not worth a dependency; without
``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import trio

log = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``) to
    systemd; False when not under systemd or the socket is gone."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as e:
            log.debug("cannot notify systemd at %s: %s", environ["NOTIFY_SOCKET"], e)
            return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """How often to ping systemd's watchdog (half its period), or None if it is off or
    meant for another process."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


async def keep_watchdog_fed(interval: float, environ: Mapping[str, str] = os.environ) -> None:
    """Ping the watchdog every ``interval`` seconds, for as long as the trio loop runs."""
    while True:
        notify("WATCHDOG=1", environ)
        await trio.sleep(interval)
