"""Application messages of protocol version 0 (the set the demo uses).

Each message is a frozen dataclass with a channel, a type number and a body of small
integer keys (compact on the air); ``from_body`` checks the body and raises
:class:`~bridge.errors.ProtocolError` (``INVALID_MESSAGE``) for wrong types or missing
fields, and ignores unknown keys (forward compatibility). The full typed channel layer
(hello, route status, lanes, playlist state, inbox actions...) extends this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from bridge.channels import Channel
from bridge.errors import ErrorCode, ProtocolError
from bridge.frame import Body

T = TypeVar("T")


def _field(body: Body, key: int, kind: type[T], name: str) -> T:
    value = body.get(key)
    if type(value) is not kind:
        got = "missing" if value is None else type(value).__name__
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"field {key} ({name}) must be {kind.__name__}, got {got}"
        )
    return value


class NavigationType(IntEnum):
    MANEUVER = 1


class AudioType(IntEnum):
    NOW_PLAYING = 1
    COMMAND = 2
    COMMAND_RESULT = 3


class MessagingType(IntEnum):
    NOTIFICATION = 1


class BulkType(IntEnum):
    CHUNK = 1


class MediaCommand(IntEnum):
    PLAY = 1
    PAUSE = 2
    NEXT = 3
    PREVIOUS = 4


@dataclass(frozen=True)
class Maneuver:
    channel: ClassVar[Channel] = Channel.NAVIGATION
    type: ClassVar[int] = NavigationType.MANEUVER
    instruction: str  # "turn right", "keep left", "arrive"
    distance_m: int
    road: str

    def to_body(self) -> Body:
        return {0: self.instruction, 1: self.distance_m, 2: self.road}

    @classmethod
    def from_body(cls, body: Body) -> Maneuver:
        return cls(
            _field(body, 0, str, "instruction"),
            _field(body, 1, int, "distance"),
            _field(body, 2, str, "road"),
        )


@dataclass(frozen=True)
class NowPlaying:
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.NOW_PLAYING
    title: str
    artist: str
    playing: bool

    def to_body(self) -> Body:
        return {0: self.title, 1: self.artist, 2: self.playing}

    @classmethod
    def from_body(cls, body: Body) -> NowPlaying:
        return cls(
            _field(body, 0, str, "title"),
            _field(body, 1, str, "artist"),
            _field(body, 2, bool, "playing"),
        )


@dataclass(frozen=True)
class MediaCommandRequest:
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.COMMAND
    command: MediaCommand

    def to_body(self) -> Body:
        return {0: int(self.command)}

    @classmethod
    def from_body(cls, body: Body) -> MediaCommandRequest:
        code = _field(body, 0, int, "command")
        try:
            return cls(MediaCommand(code))
        except ValueError:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"unknown media command {code}"
            ) from None


@dataclass(frozen=True)
class MediaCommandResult:
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.COMMAND_RESULT
    command_seq: int  # the seq of the COMMAND frame this answers
    ok: bool

    def to_body(self) -> Body:
        return {0: self.command_seq, 1: self.ok}

    @classmethod
    def from_body(cls, body: Body) -> MediaCommandResult:
        return cls(_field(body, 0, int, "command seq"), _field(body, 1, bool, "ok"))


@dataclass(frozen=True)
class Notification:
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.NOTIFICATION
    id: str
    app: str
    sender: str
    text: str

    def to_body(self) -> Body:
        return {0: self.id, 1: self.app, 2: self.sender, 3: self.text}

    @classmethod
    def from_body(cls, body: Body) -> Notification:
        return cls(
            _field(body, 0, str, "id"),
            _field(body, 1, str, "app"),
            _field(body, 2, str, "sender"),
            _field(body, 3, str, "text"),
        )


@dataclass(frozen=True)
class BulkChunk:
    channel: ClassVar[Channel] = Channel.BULK
    type: ClassVar[int] = BulkType.CHUNK
    transfer: int  # identifies the object being sent
    offset: int
    total: int
    data: bytes

    def to_body(self) -> Body:
        return {0: self.transfer, 1: self.offset, 2: self.total, 3: self.data}

    @classmethod
    def from_body(cls, body: Body) -> BulkChunk:
        chunk = cls(
            _field(body, 0, int, "transfer"),
            _field(body, 1, int, "offset"),
            _field(body, 2, int, "total"),
            _field(body, 3, bytes, "data"),
        )
        if chunk.offset < 0 or chunk.offset + len(chunk.data) > chunk.total:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "chunk outside its object")
        return chunk


Message = (
    Maneuver | NowPlaying | MediaCommandRequest | MediaCommandResult | Notification | BulkChunk
)

_DECODERS: dict[tuple[Channel, int], type[Message]] = {
    (cls.channel, cls.type): cls
    for cls in (
        Maneuver,
        NowPlaying,
        MediaCommandRequest,
        MediaCommandResult,
        Notification,
        BulkChunk,
    )
}


def decode_message(channel: Channel, type: int, body: Body) -> Message:
    """The typed message for a received frame; ProtocolError if unknown or invalid."""
    cls = _DECODERS.get((channel, type))
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED, f"unknown message type {type} on {channel.name.lower()}"
        )
    return cls.from_body(body)


#: Largest bulk chunk: keeps a chunk frame well inside one record.
BULK_CHUNK_SIZE = 4096


def chunk_object(transfer: int, data: bytes, size: int = BULK_CHUNK_SIZE) -> list[BulkChunk]:
    """Cut an object into bulk chunks."""
    return [
        BulkChunk(transfer, off, len(data), data[off : off + size])
        for off in range(0, max(len(data), 1), size)
    ]
