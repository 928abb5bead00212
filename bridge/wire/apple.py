"""Apple's ANCS and AMS, byte for byte, in both roles (docs/IPHONE.md).

An iPhone with no app installed offers a bonded accessory two GATT services: ANCS (its
notifications; the accessory is the Notification Consumer) and AMS (control of what is
playing; the accessory is the Media Remote). This module is their wire format only:
bytes in, typed values out, and the reverse, with no I/O. The head unit uses the
consumer's side (:class:`DataSourceAssembler`, :func:`parse_notification_event`,
:func:`parse_entity_update`...), the emulated iPhone the provider's (:func:`parse_command`,
:func:`split_answer`...). Every parser returns its value or raises
:class:`~bridge.wire.errors.ProtocolError`, whatever the bytes.

Sources: Apple's "Apple Notification Center Service (ANCS) Specification" and "Apple
Media Service Reference" (developer.apple.com archive), summarised byte by byte in
``../shared/notes/ancs-ams.md``. Numbers are little-endian, strings UTF-8.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from bridge.wire.errors import ErrorCode, LocalProtocolError, ProtocolError

# -- ANCS ------------------------------------------------------------------------------

ANCS_SERVICE = uuid.UUID("7905f431-b5ce-4e99-a40f-4b1e122d00d0")
NOTIFICATION_SOURCE = uuid.UUID("9fbf120d-6301-42d9-8c58-25e699a21dbd")  # notify
CONTROL_POINT = uuid.UUID("69d1d8f3-45e1-49a8-9821-9bbdfdaad9d9")  # write with response
DATA_SOURCE = uuid.UUID("22eac6e9-24d6-4bb5-be44-b36ace7c7bfb")  # notify


class AncsCategory(IntEnum):
    OTHER = 0
    INCOMING_CALL = 1
    MISSED_CALL = 2
    VOICEMAIL = 3
    SOCIAL = 4
    SCHEDULE = 5
    EMAIL = 6
    NEWS = 7
    HEALTH_AND_FITNESS = 8
    BUSINESS_AND_FINANCE = 9
    LOCATION = 10
    ENTERTAINMENT = 11


class EventId(IntEnum):
    ADDED = 0
    MODIFIED = 1
    REMOVED = 2


class EventFlag(IntFlag):
    SILENT = 1
    IMPORTANT = 2
    PRE_EXISTING = 4
    POSITIVE_ACTION = 8
    NEGATIVE_ACTION = 16


class CommandId(IntEnum):
    GET_NOTIFICATION_ATTRIBUTES = 0
    GET_APP_ATTRIBUTES = 1
    PERFORM_NOTIFICATION_ACTION = 2


class NotificationAttribute(IntEnum):
    APP_IDENTIFIER = 0
    TITLE = 1  # requested with a u16 maximum length
    SUBTITLE = 2  # likewise
    MESSAGE = 3  # likewise
    MESSAGE_SIZE = 4
    DATE = 5  # "yyyyMMdd'T'HHmmSS", the phone's local time
    POSITIVE_ACTION_LABEL = 6
    NEGATIVE_ACTION_LABEL = 7


#: The attributes whose request carries a 2-byte maximum length.
WITH_MAX_LENGTH = frozenset(
    {NotificationAttribute.TITLE, NotificationAttribute.SUBTITLE, NotificationAttribute.MESSAGE}
)


class AppAttribute(IntEnum):
    DISPLAY_NAME = 0


class ActionId(IntEnum):
    POSITIVE = 0
    NEGATIVE = 1


class AncsError(IntEnum):
    """The ATT error a Notification Provider answers a control-point write with."""

    UNKNOWN_COMMAND = 0xA0
    INVALID_COMMAND = 0xA1
    INVALID_PARAMETER = 0xA2
    ACTION_FAILED = 0xA3


#: What the head unit asks for of each notification (attribute, maximum length).
NOTIFICATION_REQUEST: tuple[tuple[NotificationAttribute, int | None], ...] = (
    (NotificationAttribute.APP_IDENTIFIER, None),
    (NotificationAttribute.TITLE, 64),
    (NotificationAttribute.SUBTITLE, 64),
    (NotificationAttribute.MESSAGE, 512),
    (NotificationAttribute.DATE, None),
    (NotificationAttribute.POSITIVE_ACTION_LABEL, None),
    (NotificationAttribute.NEGATIVE_ACTION_LABEL, None),
)

#: The most bytes one Data Source answer may take before the consumer gives up on it:
#: the requested maxima above, the labels and app identifier, their headers.
MAX_ANSWER = 2048


@dataclass(frozen=True)
class NotificationEvent:
    """One Notification Source value (8 bytes)."""

    event: EventId
    flags: EventFlag
    category: AncsCategory
    category_count: int
    uid: int

    def encode(self) -> bytes:
        head = bytes((self.event, self.flags, self.category, self.category_count))
        return head + self.uid.to_bytes(4, "little")


def parse_notification_event(data: bytes) -> NotificationEvent:
    """A Notification Source value. Bytes past the eighth are ignored (room for Apple to
    grow it); an unknown category is ``OTHER``, unknown flags are dropped."""
    if len(data) < 8:
        raise ProtocolError(ErrorCode.MALFORMED, f"ANCS event of {len(data)} bytes, not 8")
    try:
        event = EventId(data[0])
    except ValueError:
        raise ProtocolError(ErrorCode.UNSUPPORTED, f"ANCS event id {data[0]}") from None
    try:
        category = AncsCategory(data[2])
    except ValueError:
        category = AncsCategory.OTHER
    return NotificationEvent(
        event,
        EventFlag(data[1] & 0x1F),
        category,
        data[3],
        int.from_bytes(data[4:8], "little"),
    )


def _uid(uid: int) -> bytes:
    if not 0 <= uid < 2**32:
        raise LocalProtocolError(f"notification uid {uid} is not a u32")
    return uid.to_bytes(4, "little")


def get_notification_attributes(
    uid: int, attributes: Sequence[tuple[NotificationAttribute, int | None]] = NOTIFICATION_REQUEST
) -> bytes:
    """The control-point command asking for a notification's attributes."""
    out = bytearray((CommandId.GET_NOTIFICATION_ATTRIBUTES,)) + _uid(uid)
    for attribute, max_length in attributes:
        out.append(attribute)
        if attribute in WITH_MAX_LENGTH:
            if max_length is None or not 0 < max_length < 2**16:
                raise LocalProtocolError(f"{attribute.name} needs a maximum length")
            out += max_length.to_bytes(2, "little")
    return bytes(out)


def get_app_attributes(
    app: str, attributes: Sequence[AppAttribute] = (AppAttribute.DISPLAY_NAME,)
) -> bytes:
    """The control-point command asking for an app's attributes (its display name)."""
    encoded = app.encode()
    if b"\0" in encoded:
        raise LocalProtocolError("an app identifier holds no NUL")
    return bytes((CommandId.GET_APP_ATTRIBUTES,)) + encoded + b"\0" + bytes(attributes)


def perform_notification_action(uid: int, action: ActionId) -> bytes:
    """The control-point command performing a notification's positive or negative action."""
    return bytes((CommandId.PERFORM_NOTIFICATION_ACTION,)) + _uid(uid) + bytes((action,))


# -- ANCS: the provider's side (the emulated iPhone) ----------------------------------


class CommandError(ProtocolError):
    """A control-point command the provider refuses, with the ATT error it answers."""

    def __init__(self, att_error: AncsError, message: str) -> None:
        super().__init__(ErrorCode.INVALID_MESSAGE, message)
        self.att_error = att_error


@dataclass(frozen=True)
class GetNotificationAttributes:
    uid: int
    attributes: tuple[tuple[NotificationAttribute, int | None], ...]


@dataclass(frozen=True)
class GetAppAttributes:
    app: str
    attributes: tuple[AppAttribute, ...]


@dataclass(frozen=True)
class PerformNotificationAction:
    uid: int
    action: ActionId


Command = GetNotificationAttributes | GetAppAttributes | PerformNotificationAction


def parse_command(data: bytes) -> Command:
    """A control-point write, as the Notification Provider reads it; refusals carry the
    ATT error an iPhone answers (0xA0 unknown command, 0xA1 invalid, 0xA2 parameter)."""
    if not data:
        raise CommandError(AncsError.INVALID_COMMAND, "empty ANCS command")
    try:
        command = CommandId(data[0])
    except ValueError:
        raise CommandError(AncsError.UNKNOWN_COMMAND, f"ANCS command {data[0]}") from None
    if command is CommandId.GET_APP_ATTRIBUTES:
        end = data.find(b"\0", 1)
        if end < 0:
            raise CommandError(AncsError.INVALID_COMMAND, "app identifier without its NUL")
        app = _text(data[1:end], "app identifier", command=True)
        try:
            attributes = tuple(AppAttribute(a) for a in data[end + 1 :])
        except ValueError:
            raise CommandError(AncsError.INVALID_PARAMETER, "unknown app attribute") from None
        if not attributes:
            raise CommandError(AncsError.INVALID_COMMAND, "no app attribute asked for")
        return GetAppAttributes(app, attributes)
    if len(data) < 5:
        raise CommandError(AncsError.INVALID_COMMAND, "ANCS command without its uid")
    uid = int.from_bytes(data[1:5], "little")
    if command is CommandId.PERFORM_NOTIFICATION_ACTION:
        if len(data) != 6 or data[5] > 1:
            raise CommandError(AncsError.INVALID_PARAMETER, "action id not 0 or 1")
        return PerformNotificationAction(uid, ActionId(data[5]))
    requested: list[tuple[NotificationAttribute, int | None]] = []
    at = 5
    while at < len(data):
        try:
            attribute = NotificationAttribute(data[at])
        except ValueError:
            raise CommandError(AncsError.INVALID_PARAMETER, f"attribute {data[at]}") from None
        at += 1
        max_length = None
        if attribute in WITH_MAX_LENGTH:
            if at + 2 > len(data):
                raise CommandError(AncsError.INVALID_COMMAND, f"{attribute.name} without length")
            max_length = int.from_bytes(data[at : at + 2], "little")
            at += 2
        requested.append((attribute, max_length))
    if not requested:
        raise CommandError(AncsError.INVALID_COMMAND, "no attribute asked for")
    return GetNotificationAttributes(uid, tuple(requested))


def encode_notification_attributes(
    uid: int, values: Sequence[tuple[NotificationAttribute, bytes]]
) -> bytes:
    """A Data Source answer to Get Notification Attributes (values already truncated)."""
    out = bytearray((CommandId.GET_NOTIFICATION_ATTRIBUTES,)) + _uid(uid)
    for attribute, value in values:
        out += bytes((attribute,)) + len(value).to_bytes(2, "little") + value
    return bytes(out)


def encode_app_attributes(app: str, values: Sequence[tuple[AppAttribute, bytes]]) -> bytes:
    """A Data Source answer to Get App Attributes."""
    out = bytearray((CommandId.GET_APP_ATTRIBUTES,)) + app.encode() + b"\0"
    for attribute, value in values:
        out += bytes((attribute,)) + len(value).to_bytes(2, "little") + value
    return bytes(out)


def truncate(text: str, max_length: int | None) -> bytes:
    """``text`` in UTF-8, cut to ``max_length`` bytes at a character boundary."""
    encoded = text.encode()
    if max_length is None or len(encoded) <= max_length:
        return encoded
    return encoded[:max_length].decode(errors="ignore").encode()


def split_answer(answer: bytes, att_mtu: int) -> list[bytes]:
    """A Data Source answer as the notifications that carry it (ATT MTU - 3 each)."""
    size = att_mtu - 3
    return [answer[i : i + size] for i in range(0, len(answer), size)] or [b""]


# -- ANCS: the consumer's side (the head unit) -----------------------------------------


@dataclass(frozen=True)
class NotificationAttributes:
    uid: int
    values: dict[NotificationAttribute, str]


@dataclass(frozen=True)
class AppAttributes:
    app: str
    values: dict[AppAttribute, str]


Answer = NotificationAttributes | AppAttributes


def _text(raw: bytes, what: str, *, command: bool = False) -> str:
    """UTF-8, forgiving only a sequence cut at the very end (an attribute truncated to
    its maximum length in bytes may end mid-character: the partial character is left
    out). ``command``: a provider reading a command refuses with 0xA2."""
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data":
            return raw[: e.start].decode()  # what comes before the first error is valid
    if command:
        raise CommandError(AncsError.INVALID_PARAMETER, f"{what} is not UTF-8")
    raise ProtocolError(ErrorCode.MALFORMED, f"ANCS {what} is not UTF-8")


class DataSourceAssembler:
    """Reassembles the Data Source answer to the one command outstanding.

    :meth:`expect` before writing the command; :meth:`feed` each Data Source value; it
    returns the answer once every attribute asked for has arrived. Values when nothing
    is expected, a wrong command or uid, an attribute not asked for, bytes past the end
    of the answer or an answer over :data:`MAX_ANSWER` raise :class:`ProtocolError`
    (and the assembler forgets the answer: the consumer may ask again)."""

    def __init__(self) -> None:
        self._command: GetNotificationAttributes | GetAppAttributes | None = None
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        return self._command is not None

    def expect(self, command: bytes) -> None:
        """The command (as written to the control point) whose answer comes next."""
        parsed = parse_command(command)
        if isinstance(parsed, PerformNotificationAction):
            raise LocalProtocolError("a notification action has no Data Source answer")
        self._command = parsed
        self._buffer.clear()

    def cancel(self) -> None:
        """Give up on the outstanding answer (the command failed, or took too long)."""
        self._command = None
        self._buffer.clear()

    def feed(self, chunk: bytes) -> Answer | None:
        if self._command is None:
            raise ProtocolError(ErrorCode.SEQUENCE, "an ANCS Data Source value nobody asked for")
        self._buffer += chunk
        try:
            answer = self._parse(self._command)
        except ProtocolError:
            self.cancel()
            raise
        if answer is None and len(self._buffer) > MAX_ANSWER:
            self.cancel()
            raise ProtocolError(ErrorCode.TOO_LARGE, f"ANCS answer over {MAX_ANSWER} bytes")
        if answer is not None:
            self.cancel()
        return answer

    def _parse(self, command: GetNotificationAttributes | GetAppAttributes) -> Answer | None:
        data = bytes(self._buffer)
        if not data:
            return None
        if isinstance(command, GetNotificationAttributes):
            if data[0] != CommandId.GET_NOTIFICATION_ATTRIBUTES:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "ANCS answer to another command")
            if len(data) < 5:
                return None
            if int.from_bytes(data[1:5], "little") != command.uid:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "ANCS answer for another uid")
            wanted: list[int] = [a for a, _ in command.attributes]
            at = 5
        else:
            if data[0] != CommandId.GET_APP_ATTRIBUTES:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "ANCS answer to another command")
            end = data.find(b"\0", 1)
            if end < 0:
                return None
            if data[1:end] != command.app.encode():
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "ANCS answer for another app")
            wanted = list(command.attributes)
            at = end + 1
        values: dict[int, str] = {}
        while len(values) < len(wanted):
            if at + 3 > len(data):
                return None
            attribute, size = data[at], int.from_bytes(data[at + 1 : at + 3], "little")
            if attribute not in wanted or attribute in values:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"ANCS attribute {attribute}")
            if at + 3 + size > len(data):
                return None
            values[attribute] = _text(data[at + 3 : at + 3 + size], "attribute")
            at += 3 + size
        if at != len(data):
            raise ProtocolError(ErrorCode.MALFORMED, "bytes past the end of an ANCS answer")
        if isinstance(command, GetNotificationAttributes):
            return NotificationAttributes(
                command.uid, {NotificationAttribute(k): v for k, v in values.items()}
            )
        return AppAttributes(command.app, {AppAttribute(k): v for k, v in values.items()})


def parse_date(text: str) -> tuple[int, int, int, int, int, int]:
    """An ANCS Date attribute, ``yyyyMMdd'T'HHmmSS``, as (year, month, day, hour,
    minute, second) in the phone's local time."""
    if len(text) != 15 or text[8] != "T" or not (text[:8] + text[9:]).isdigit():
        raise ProtocolError(ErrorCode.MALFORMED, "ANCS date not yyyyMMddTHHmmSS")
    parts = (text[0:4], text[4:6], text[6:8], text[9:11], text[11:13], text[13:15])
    year, month, day, hour, minute, second = (int(p) for p in parts)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ProtocolError(ErrorCode.MALFORMED, "ANCS date out of range")
    return year, month, day, hour, minute, second


# -- AMS ------------------------------------------------------------------------------

AMS_SERVICE = uuid.UUID("89d3502b-0f36-433a-8ef4-c502ad55f8dc")
REMOTE_COMMAND = uuid.UUID("9b3c81d8-57b1-4a8a-b8df-0e56f7ca51c2")  # write, notify
ENTITY_UPDATE = uuid.UUID("2f7cabce-808d-411f-9a0c-bb92ba96c102")  # write with response, notify
ENTITY_ATTRIBUTE = uuid.UUID("c6b2f38c-23ab-46d8-a6ab-a3a870bbd5d7")  # read, write


class RemoteCommand(IntEnum):
    PLAY = 0
    PAUSE = 1
    TOGGLE_PLAY_PAUSE = 2
    NEXT_TRACK = 3
    PREVIOUS_TRACK = 4
    VOLUME_UP = 5
    VOLUME_DOWN = 6
    ADVANCE_REPEAT_MODE = 7
    ADVANCE_SHUFFLE_MODE = 8
    SKIP_FORWARD = 9
    SKIP_BACKWARD = 10
    LIKE_TRACK = 11
    DISLIKE_TRACK = 12
    BOOKMARK_TRACK = 13


class Entity(IntEnum):
    PLAYER = 0
    QUEUE = 1
    TRACK = 2


class PlayerAttribute(IntEnum):
    NAME = 0
    PLAYBACK_INFO = 1  # "state,rate,elapsed"
    VOLUME = 2  # "0.0" to "1.0"


class QueueAttribute(IntEnum):
    INDEX = 0
    COUNT = 1
    SHUFFLE_MODE = 2  # 0 off, 1 one, 2 all
    REPEAT_MODE = 3  # 0 off, 1 one, 2 all


class TrackAttribute(IntEnum):
    ARTIST = 0
    ALBUM = 1
    TITLE = 2
    DURATION = 3  # seconds, a decimal


class PlaybackStateId(IntEnum):
    PAUSED = 0
    PLAYING = 1
    REWINDING = 2
    FAST_FORWARDING = 3


ENTITY_UPDATE_TRUNCATED = 1

#: What the head unit registers for, per entity (written to Entity Update, one each).
REGISTRATIONS: tuple[tuple[Entity, tuple[int, ...]], ...] = (
    (Entity.PLAYER, tuple(PlayerAttribute)),
    (Entity.QUEUE, tuple(QueueAttribute)),
    (Entity.TRACK, tuple(TrackAttribute)),
)


def register(entity: Entity, attributes: Sequence[int]) -> bytes:
    """The Entity Update write registering for these attributes of one entity."""
    return bytes((entity, *attributes))


@dataclass(frozen=True)
class EntityUpdate:
    entity: Entity
    attribute: int  # a PlayerAttribute, QueueAttribute or TrackAttribute
    truncated: bool
    value: str

    def encode(self) -> bytes:
        flags = ENTITY_UPDATE_TRUNCATED if self.truncated else 0
        return bytes((self.entity, self.attribute, flags)) + self.value.encode()


def parse_entity_update(data: bytes) -> EntityUpdate:
    """An Entity Update notification: entity, attribute, flags, then the value."""
    if len(data) < 3:
        raise ProtocolError(ErrorCode.MALFORMED, f"AMS update of {len(data)} bytes")
    try:
        entity = Entity(data[0])
    except ValueError:
        raise ProtocolError(ErrorCode.UNSUPPORTED, f"AMS entity {data[0]}") from None
    truncated = bool(data[2] & ENTITY_UPDATE_TRUNCATED)
    return EntityUpdate(entity, data[1], truncated, _text(data[3:], "AMS value"))


def entity_attribute_request(entity: Entity, attribute: int) -> bytes:
    """The Entity Attribute write choosing the value a read then gives whole."""
    return bytes((entity, attribute))


def parse_supported_commands(data: bytes) -> frozenset[RemoteCommand]:
    """A Remote Command notification: the command ids the player supports now (ids this
    version does not know are left out)."""
    return frozenset(RemoteCommand(c) for c in data if c in RemoteCommand._value2member_map_)


def parse_remote_command(data: bytes) -> RemoteCommand:
    """A Remote Command write, as the Media Source reads it."""
    if len(data) != 1 or data[0] not in RemoteCommand._value2member_map_:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "not one AMS remote command id")
    return RemoteCommand(data[0])


@dataclass(frozen=True)
class PlaybackInfo:
    state: PlaybackStateId
    rate: float
    elapsed: float  # seconds, when the update was sent

    def elapsed_at(self, seconds_since: float) -> float:
        """The elapsed time ``seconds_since`` the update, extrapolated with the rate."""
        return max(0.0, self.elapsed + seconds_since * self.rate)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, f"AMS {what} is not a number") from None
    if not math.isfinite(value):
        raise ProtocolError(ErrorCode.MALFORMED, f"AMS {what} is not a finite number")
    return value


def parse_playback_info(text: str) -> PlaybackInfo | None:
    """A PlaybackInfo value, ``state,rate,elapsed``; None when empty (no player)."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 3 or not parts[0].isdigit():
        raise ProtocolError(ErrorCode.MALFORMED, "AMS playback info not state,rate,elapsed")
    try:
        state = PlaybackStateId(int(parts[0]))
    except ValueError:
        raise ProtocolError(ErrorCode.UNSUPPORTED, f"AMS playback state {parts[0]}") from None
    return PlaybackInfo(state, _number(parts[1], "rate"), _number(parts[2], "elapsed time"))


def parse_number(text: str, what: str) -> float | None:
    """A decimal AMS value (duration, volume, queue numbers); None when empty."""
    return _number(text, what) if text else None
