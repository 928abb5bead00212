"""Typed messages <-> CBOR bodies, declared once (sans-IO).

Strategy. A message is a frozen dataclass whose fields say their wire key with
``field(metadata={"key": n})`` (see :func:`key`). One codec walks the annotations to
encode and to validate: integers, booleans, text, bytes, floats, ``IntEnum`` types,
lists, nested message dataclasses and ``X | None`` (optional: absent on the wire). On
receipt, unknown keys are ignored (forward compatibility); a missing required field or a
wrong type raises :class:`~bridge.wire.errors.ProtocolError` with code ``INVALID_MESSAGE``.
On sending, text longer than the peer's announced limit is truncated by the sender
(:func:`encode` with ``max_text``), never rejected by the receiver.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, ClassVar, Self, TypeVar

from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import Body

M = TypeVar("M")

#: Default longest text field, in characters, before a peer announces its own.
DEFAULT_MAX_TEXT = 1024
MAX_LIST = 64


def key(n: int, *, default: Any = dataclasses.MISSING) -> Any:
    """Declare a message field's wire key (and an optional default)."""
    return dataclasses.field(default=default, metadata={"key": n})


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message)


_FIELDS: dict[type, list[tuple[str, int, Any, bool]]] = {}


def _fields(cls: type) -> list[tuple[str, int, Any, bool]]:
    """(name, key, type, optional) for each field of a message class (cached)."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "key" not in f.metadata:
            continue
        tp = hints[f.name]
        optional = False
        if isinstance(tp, types.UnionType) and type(None) in tp.__args__:
            rest = [a for a in tp.__args__ if a is not type(None)]
            tp, optional = rest[0], True
        out.append((f.name, f.metadata["key"], tp, optional))
    _FIELDS[cls] = out
    return out


def _encode_value(value: Any, max_text: int) -> Any:
    if isinstance(value, enum.IntEnum):
        return int(value)
    if isinstance(value, str):
        return value[:max_text]
    if isinstance(value, list | tuple):
        return [_encode_value(v, max_text) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value, max_text=max_text)
    return value


def encode(message: Any, *, max_text: int = DEFAULT_MAX_TEXT) -> Body:
    """The body of a message; ``None`` fields are left out, text cut to ``max_text``."""
    body: Body = {}
    for name, k, _, _ in _fields(type(message)):
        value = getattr(message, name)
        if value is not None:
            body[k] = _encode_value(value, max_text)
    return body


def _decode_value(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if type(value) is not list or len(value) > MAX_LIST:
            raise _invalid(f"{where} must be a list of at most {MAX_LIST}")
        return [_decode_value(item, v, f"{where}[]") for v in value]
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        if type(value) is not int:
            raise _invalid(f"{where} must be an integer code")
        try:
            return tp(value)
        except ValueError:
            raise _invalid(f"{where}: unknown {tp.__name__} {value}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if type(value) is not dict:
            raise _invalid(f"{where} must be a map")
        return decode(tp, value)
    if tp is float:
        if type(value) not in (float, int):
            raise _invalid(f"{where} must be a number")
        return float(value)
    if type(value) is not tp:
        got = type(value).__name__
        raise _invalid(f"{where} must be {getattr(tp, '__name__', tp)}, got {got}")
    return value


def decode(cls: type[M], body: Body) -> M:
    """Build a message from a body; ProtocolError(INVALID_MESSAGE) if it does not fit."""
    kwargs: dict[str, Any] = {}
    for name, k, tp, optional in _fields(cls):
        if k not in body or body[k] is None:
            if not optional:
                raise _invalid(f"{cls.__name__}: field {k} ({name}) is missing")
            kwargs[name] = None
            continue
        kwargs[name] = _decode_value(tp, body[k], f"{cls.__name__}.{name}")
    message = cls(**kwargs)
    check = getattr(message, "check", None)
    if check is not None:
        check()
    return message


class Message:
    """Base of every application message: where it travels and its type number."""

    channel: ClassVar[Any]
    type: ClassVar[int]

    def to_body(self, max_text: int = DEFAULT_MAX_TEXT) -> Body:
        return encode(self, max_text=max_text)

    @classmethod
    def from_body(cls, body: Body) -> Self:
        return decode(cls, body)
