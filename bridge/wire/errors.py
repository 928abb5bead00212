"""The project's error types.

Two families that are never confused (as in h11): the peer sent something wrong
(:class:`ProtocolError`, a *remote* error, carrying a wire :class:`ErrorCode`) versus
our own caller misused an API (:class:`LocalProtocolError`). Every decoder in the
project either returns its result or raises :class:`ProtocolError`, whatever the bytes.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a peer's bytes were refused; also sent on the wire in CLOSE frames."""

    MALFORMED = 1  # bytes that do not parse
    SEQUENCE = 2  # a segment or frame out of sequence
    FLOW_CONTROL = 3  # data sent without credit, or credit overflow
    TOO_LARGE = 4  # a frame or segment over a size limit
    INTERLEAVE = 5  # a segment on a lane that does not allow it
    UNSUPPORTED = 6  # a reserved kind, channel or type
    TIMEOUT = 7  # the peer stopped acknowledging or went silent
    INVALID_MESSAGE = 8  # a well-formed frame whose body is wrong for its type
    AUTHENTICATION = 9  # a handshake or record that failed authentication


class ProtocolError(Exception):
    """The peer broke the protocol. ``code`` says how; ``str()`` says it in words."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.code.name.lower()})"


class LocalProtocolError(Exception):
    """Our own caller used an API wrongly (or after the object failed)."""


class QueueFullError(Exception):
    """A bounded send queue is full: the caller should wait for acknowledgements."""


def first_error(error: BaseException) -> BaseException:
    """The first exception inside (possibly nested) exception groups, or ``error``."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
