"""The message store: exactly-once messaging across link drops and restarts (SQLite).

Strategy. Messaging frames carry a ``uid`` naming the delivery. The sender writes each
one to its **outbox** before it is accepted, and deletes it only when the peer has
acknowledged it (which the peer does only after its application finished with it); on
start-up, whatever is still in the outbox is sent again, in order. The receiver keeps the
uids it has applied (**seen**) and applies a message and records its uid in one
transaction, so a repeat after a restart is recognised and dropped. The head unit also
keeps its **inbox** (notifications and read marks) here, so the screen survives a
restart. One file, ``messages.sqlite3``, under the data directory; WAL mode, synchronous
FULL, owner-only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.wire import cbor
from bridge.wire.errors import ProtocolError
from bridge.wire.frame import Body

FILENAME = "messages.sqlite3"
SEEN_KEPT = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT UNIQUE NOT NULL,
    channel INTEGER NOT NULL,
    type INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT UNIQUE NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreError(Exception):
    """The message store cannot be used; the message says what to do."""


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """SQLite's errors (a damaged file that still opens, a full disk) come out as
    :class:`StoreError`, so that whoever uses the store can confine them."""

    @functools.wraps(method)
    def guarded(self: MessageStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, ProtocolError) as e:  # ProtocolError: a damaged body
            raise StoreError(
                f"the message store {self.path} cannot be used ({e}); stop the service "
                "and move the file away to start over"
            ) from None

    return guarded  # type: ignore[return-value]


@dataclass(frozen=True)
class Pending:
    uid: str
    channel: int
    type: int
    body: Body


class MessageStore:
    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(directory) / FILENAME
        self._clock = clock
        try:
            Path(directory).mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the message store {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"the message store {self.path} cannot be used ({e})") from None
        try:
            yield self._db
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StoreError(f"the message store {self.path} cannot be used ({e})") from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"the message store {self.path} cannot be used ({e})") from None

    # -- uids ---------------------------------------------------------------------------

    @_guarded
    def next_uid(self, prefix: str) -> str:
        """A delivery id that is never handed out twice by this store."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM counters WHERE name='uid'").fetchone()
            value = (row[0] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO counters VALUES ('uid', ?)", (value,))
        return f"{prefix}-{value}"

    # -- sending side -------------------------------------------------------------------

    @_guarded
    def outbox_add(self, uid: str, channel: int, type: int, body: Body) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (uid, channel, type, body) VALUES (?, ?, ?, ?)",
                (uid, channel, type, cbor.dumps(body)),
            )

    @_guarded
    def outbox_done(self, uid: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE uid = ?", (uid,))

    @_guarded
    def outbox(self) -> list[Pending]:
        rows = self._db.execute("SELECT uid, channel, type, body FROM outbox ORDER BY n")
        return [Pending(uid, ch, ty, cbor.loads(body)) for uid, ch, ty, body in rows]

    # -- receiving side -----------------------------------------------------------------

    @_guarded
    def seen(self, uid: str) -> bool:
        return self._db.execute("SELECT 1 FROM seen WHERE uid = ?", (uid,)).fetchone() is not None

    def mark_seen(self, db: sqlite3.Connection, uid: str) -> None:
        db.execute("INSERT OR IGNORE INTO seen (uid) VALUES (?)", (uid,))
        db.execute("DELETE FROM seen WHERE n <= (SELECT MAX(n) FROM seen) - ?", (SEEN_KEPT,))

    # -- the head unit's inbox ----------------------------------------------------------

    def inbox_put(self, db: sqlite3.Connection, id: str, body: Body) -> None:
        db.execute(
            "INSERT INTO inbox (id, body, read, updated) VALUES (?, ?, 0, ?) "
            "ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
            (id, cbor.dumps(body), self._clock()),
        )

    def inbox_remove(self, db: sqlite3.Connection, id: str) -> None:
        db.execute("DELETE FROM inbox WHERE id = ?", (id,))

    @_guarded
    def inbox_drop(self, id: str) -> None:
        with self.transaction() as db:
            self.inbox_remove(db, id)

    @_guarded
    def inbox_mark_read(self, id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE inbox SET read = 1 WHERE id = ?", (id,))

    @_guarded
    def inbox(self) -> list[tuple[Body, bool]]:
        rows = self._db.execute("SELECT body, read FROM inbox ORDER BY updated, id")
        return [(cbor.loads(body), bool(read)) for body, read in rows]
