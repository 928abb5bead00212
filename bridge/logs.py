"""Where the head unit's and the tools' log lines go: one set-up for every entry point.

Strategy. Logs go to stderr, one line each (a line break inside a message becomes `` | ``);
under systemd (``$JOURNAL_STREAM`` set) every line starts with its syslog priority
(``<6>``) so journald files it at the right level. bleak's, Bumble's and asyncio's debug
output is not ours: they log at WARNING at least, whatever the level asked for. Logs never
carry message text or keys: a notification is logged as "notification", not what it says.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
NOISY = ("bleak", "bumble", "asyncio")


class JournalFormatter(logging.Formatter):
    """``<6>bridge.radio_policy: text`` under journald, ``INFO bridge.radio_policy: text`` else."""

    def __init__(self, journald: bool, timestamps: bool = False) -> None:
        super().__init__(("%(asctime)s " if timestamps else "") + "%(name)s: %(message)s")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        if self.journald:
            return f"<{PRIORITIES.get(record.levelname, 6)}>{text}"
        return f"{record.levelname} {text}"


def level_for(verbose: int, default: str = "warning") -> str:
    """The level a command's ``-v`` count asks for: none the default, -v info, -vv debug."""
    if verbose <= 0:
        return default
    return "info" if verbose == 1 else "debug"


def setup_logging(level: str, stream: TextIO | None = None, *, timestamps: bool = False) -> None:
    """Send every log line at ``level`` or above to ``stream`` (stderr), replacing any set-up;
    ``timestamps`` where nothing else stamps the lines (the VM lane's console)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JournalFormatter("JOURNAL_STREAM" in os.environ, timestamps))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
