"""Application messages: control, navigation, audio control, messaging and bulk.

Each message is a frozen dataclass (see :mod:`bridge.wire.codec`): its channel, its type
number within the channel, and fields with small integer wire keys. The CDDL is in
docs/PROTOCOL.md section 6. Commands from the head unit are answered with a
``*CommandResult`` naming the command frame's sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from bridge.wire import gatt
from bridge.wire.channels import Channel, ControlType
from bridge.wire.codec import Message, decode, key
from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import Body

PROTOCOL_VERSIONS = list(gatt.PROTOCOL_VERSIONS)  # what HELLO offers


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, message)


# -- control ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """First frame of each side after authentication: who we are and what we accept."""

    channel: ClassVar[Channel] = Channel.CONTROL
    type: ClassVar[int] = ControlType.HELLO
    versions: list[int] = key(0)
    platform: str = key(1)  # "android", "ios" or "head-unit"
    name: str = key(2)
    model: str | None = key(3, default=None)
    channels: list[int] | None = key(4, default=None)  # channels it accepts (None: all)
    max_text: int = key(5, default=1024)
    clock_ms: int = key(6, default=0)  # the sender's clock, for timestamps in its messages
    epoch: bytes = key(7, default=b"")  # the sender's sequence space; new epoch, new numbering

    def check(self) -> None:
        _check(bool(self.versions), "hello without versions")
        _check(16 <= self.max_text <= 65536, "hello: max_text outside 16..65536")


@dataclass(frozen=True)
class ErrorReport(Message):
    """A message the receiver could not use; the link stays up."""

    channel: ClassVar[Channel] = Channel.CONTROL
    type: ClassVar[int] = ControlType.ERROR
    about_channel: int = key(0)
    about_seq: int | None = key(1)
    code: int = key(2)
    text: str = key(3)


#: Version 2 (PROTOCOL.md 6.1): shortcuts, at most this many, ids at most this long
#: (no peer's max_text, 16 at the least, ever cuts an id), icons at most this many bytes.
MIN_SHORTCUTS_VERSION = 2
MAX_SHORTCUTS = 16
MAX_SHORTCUT_ID = 16
MAX_ICON = 16384


class ShortcutKind(IntEnum):
    OTHER = 0
    NAVIGATION = 1
    MEDIA = 2
    COMMUNICATION = 3
    HOME = 4


class LaunchOutcome(IntEnum):
    DONE = 0
    LOCKED = 1  # the phone must be unlocked first
    UNKNOWN = 2  # no shortcut with this id (any more)
    FAILED = 3  # it was tried and did not work (the text says why)


@dataclass(frozen=True)
class Shortcut:
    id: str = key(0)
    label: str = key(1)
    kind: ShortcutKind = key(2)
    icon: int | None = key(3, default=None)  # bulk transfer carrying its icon (PNG/JPEG)


@dataclass(frozen=True)
class Shortcuts(Message):
    """Everything the phone offers on the car's launcher (replaces the previous list)."""

    channel: ClassVar[Channel] = Channel.CONTROL
    type: ClassVar[int] = ControlType.SHORTCUTS
    shortcuts: list[Shortcut] = key(0)

    def check(self) -> None:
        _check(len(self.shortcuts) <= MAX_SHORTCUTS, f"more than {MAX_SHORTCUTS} shortcuts")
        ids = [s.id for s in self.shortcuts]
        _check(
            all(0 < len(i) <= MAX_SHORTCUT_ID for i in ids),
            f"a shortcut id must be 1 to {MAX_SHORTCUT_ID} characters",
        )
        _check(len(set(ids)) == len(ids), "two shortcuts with one id")
        icons = [s.icon for s in self.shortcuts if s.icon is not None]
        _check(len(set(icons)) == len(icons), "two shortcuts with one icon transfer")


@dataclass(frozen=True)
class Launch(Message):
    """Open one of the phone's shortcuts (head unit -> phone)."""

    channel: ClassVar[Channel] = Channel.CONTROL
    type: ClassVar[int] = ControlType.LAUNCH
    id: str = key(0)


@dataclass(frozen=True)
class LaunchResult(Message):
    """What a launch did: ``ok`` exactly when ``outcome`` is DONE; ``error`` says why not."""

    channel: ClassVar[Channel] = Channel.CONTROL
    type: ClassVar[int] = ControlType.LAUNCH_RESULT
    command_seq: int = key(0)
    ok: bool = key(1)
    error: str | None = key(2, default=None)
    outcome: LaunchOutcome = key(3, default=LaunchOutcome.DONE)

    def check(self) -> None:
        _check(self.ok == (self.outcome is LaunchOutcome.DONE), "launch result: ok but not done")


# -- navigation ---------------------------------------------------------------------------


class NavigationType(IntEnum):
    ROUTE_STATUS = 1
    MANEUVER = 2
    GUIDANCE_REQUEST = 3  # head unit -> phone
    COMMAND_RESULT = 4


class RouteState(IntEnum):
    INACTIVE = 0
    ACTIVE = 1
    REROUTING = 2
    ARRIVED = 3


class ManeuverType(IntEnum):
    """At least Android Auto's set of next-turn events, with sides spelled out."""

    UNKNOWN = 0
    DEPART = 1
    NAME_CHANGE = 2
    STRAIGHT = 3
    KEEP_LEFT = 4
    KEEP_RIGHT = 5
    SLIGHT_LEFT = 6
    SLIGHT_RIGHT = 7
    TURN_LEFT = 8
    TURN_RIGHT = 9
    SHARP_LEFT = 10
    SHARP_RIGHT = 11
    U_TURN_LEFT = 12
    U_TURN_RIGHT = 13
    ON_RAMP_LEFT = 14
    ON_RAMP_RIGHT = 15
    OFF_RAMP_LEFT = 16
    OFF_RAMP_RIGHT = 17
    FORK_LEFT = 18
    FORK_RIGHT = 19
    MERGE_LEFT = 20
    MERGE_RIGHT = 21
    MERGE = 22
    ROUNDABOUT_ENTER = 23
    ROUNDABOUT_EXIT = 24
    ROUNDABOUT_ENTER_AND_EXIT = 25
    FERRY_BOAT = 26
    FERRY_TRAIN = 27
    DESTINATION = 28
    DESTINATION_LEFT = 29
    DESTINATION_RIGHT = 30
    DESTINATION_STRAIGHT = 31


class DistanceUnit(IntEnum):
    METERS = 0
    KILOMETERS = 1
    MILES = 2
    FEET = 3
    YARDS = 4


class LaneDirection(IntEnum):
    STRAIGHT = 0
    SLIGHT_LEFT = 1
    SLIGHT_RIGHT = 2
    LEFT = 3
    RIGHT = 4
    SHARP_LEFT = 5
    SHARP_RIGHT = 6
    U_TURN_LEFT = 7
    U_TURN_RIGHT = 8


class Rotation(IntEnum):
    COUNTERCLOCKWISE = 0  # right-hand traffic
    CLOCKWISE = 1


class GuidanceAction(IntEnum):
    STOP = 0
    START = 1


@dataclass(frozen=True)
class Lane:
    directions: list[LaneDirection] = key(0)
    recommended: bool = key(1)


@dataclass(frozen=True)
class RouteStatus(Message):
    channel: ClassVar[Channel] = Channel.NAVIGATION
    type: ClassVar[int] = NavigationType.ROUTE_STATUS
    state: RouteState = key(0)
    destination: str | None = key(1, default=None)
    eta_ms: int | None = key(2, default=None)  # arrival time on the sender's clock
    remaining_m: int | None = key(3, default=None)
    remaining_s: int | None = key(4, default=None)


@dataclass(frozen=True)
class Maneuver(Message):
    channel: ClassVar[Channel] = Channel.NAVIGATION
    type: ClassVar[int] = NavigationType.MANEUVER
    maneuver: ManeuverType = key(0)
    distance_m: int = key(1)
    display_distance: str = key(2)  # as the phone shows it, e.g. "0.3"
    display_unit: DistanceUnit = key(3)
    road: str = key(4)
    roundabout_exit: int | None = key(5, default=None)
    rotation: Rotation | None = key(6, default=None)
    lanes: list[Lane] | None = key(7, default=None)
    image: int | None = key(8, default=None)  # bulk transfer with a small maneuver image

    def check(self) -> None:
        _check(self.distance_m >= 0, "maneuver: negative distance")
        if self.roundabout_exit is not None:
            _check(1 <= self.roundabout_exit <= 20, "maneuver: roundabout exit outside 1..20")


@dataclass(frozen=True)
class GuidanceRequest(Message):
    channel: ClassVar[Channel] = Channel.NAVIGATION
    type: ClassVar[int] = NavigationType.GUIDANCE_REQUEST
    action: GuidanceAction = key(0)
    destination: str | None = key(1, default=None)


@dataclass(frozen=True)
class _Result(Message):
    command_seq: int = key(0)  # the seq of the command frame answered
    ok: bool = key(1)
    error: str | None = key(2, default=None)


@dataclass(frozen=True)
class NavigationResult(_Result):
    channel: ClassVar[Channel] = Channel.NAVIGATION
    type: ClassVar[int] = NavigationType.COMMAND_RESULT


# -- audio --------------------------------------------------------------------------------


class AudioType(IntEnum):
    NOW_PLAYING = 1
    COMMAND = 2  # head unit -> phone
    COMMAND_RESULT = 3


class PlaybackState(IntEnum):
    STOPPED = 0
    PLAYING = 1
    PAUSED = 2
    BUFFERING = 3


class RepeatMode(IntEnum):
    OFF = 0
    ONE = 1
    ALL = 2


class MediaCommand(IntEnum):
    """A superset of Apple AMS's remote commands."""

    PLAY = 1
    PAUSE = 2
    TOGGLE = 3
    NEXT = 4
    PREVIOUS = 5
    SEEK = 6  # value: position in ms
    VOLUME_UP = 7
    VOLUME_DOWN = 8
    VOLUME_SET = 9  # value: 0..100
    SHUFFLE = 10  # value: 0 off, 1 on
    REPEAT = 11  # value: RepeatMode
    LIKE = 12
    DISLIKE = 13
    BOOKMARK = 14
    SKIP_FORWARD = 15
    SKIP_BACKWARD = 16


_VALUE_RANGES = {
    MediaCommand.SEEK: (0, 2**31),
    MediaCommand.VOLUME_SET: (0, 100),
    MediaCommand.SHUFFLE: (0, 1),
    MediaCommand.REPEAT: (0, 2),
}


@dataclass(frozen=True)
class NowPlaying(Message):
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.NOW_PLAYING
    title: str = key(0)
    artist: str = key(1)
    album: str | None = key(2, default=None)
    duration_ms: int | None = key(3, default=None)
    position_ms: int = key(4, default=0)
    position_at_ms: int = key(5, default=0)  # when position_ms was true, sender's clock
    state: PlaybackState = key(6, default=PlaybackState.STOPPED)
    shuffle: bool = key(7, default=False)
    repeat: RepeatMode = key(8, default=RepeatMode.OFF)
    source_app: str | None = key(9, default=None)
    art: int | None = key(10, default=None)  # bulk transfer with the album art

    @property
    def playing(self) -> bool:
        return self.state is PlaybackState.PLAYING


@dataclass(frozen=True)
class MediaCommandRequest(Message):
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.COMMAND
    command: MediaCommand = key(0)
    value: int | None = key(1, default=None)

    def check(self) -> None:
        bounds = _VALUE_RANGES.get(self.command)
        if bounds is None:
            _check(self.value is None, f"{self.command.name.lower()} takes no value")
        else:
            low, high = bounds
            _check(
                self.value is not None and low <= self.value <= high,
                f"{self.command.name.lower()} needs a value in {low}..{high}",
            )


@dataclass(frozen=True)
class MediaCommandResult(_Result):
    channel: ClassVar[Channel] = Channel.AUDIO
    type: ClassVar[int] = AudioType.COMMAND_RESULT


# -- messaging ----------------------------------------------------------------------------


class MessagingType(IntEnum):
    NOTIFICATION = 1
    REMOVED = 2
    MARK_READ = 3  # head unit -> phone, from here to DISMISS
    PERFORM_ACTION = 4
    REPLY = 5
    DISMISS = 6
    COMMAND_RESULT = 7


class Category(IntEnum):
    OTHER = 0
    MESSAGE = 1
    INCOMING_CALL = 2
    MISSED_CALL = 3
    VOICEMAIL = 4
    EMAIL = 5
    SOCIAL = 6
    SCHEDULE = 7
    NEWS = 8
    NAVIGATION = 9


class ActionKind(IntEnum):
    CUSTOM = 0
    REPLY = 1
    MARK_READ = 2
    DISMISS = 3
    CALL_BACK = 4


@dataclass(frozen=True)
class Action:
    id: str = key(0)
    label: str = key(1)
    kind: ActionKind = key(2)


@dataclass(frozen=True)
class Notification(Message):
    """A notification or message; one with a known ``id`` replaces the earlier one.
    ``uid`` names this delivery (for exactly-once), ``id`` the notification."""

    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.NOTIFICATION
    id: str = key(0)
    app: str = key(1)
    category: Category = key(2)
    text: str = key(3)
    time_ms: int = key(4)
    sender: str | None = key(5, default=None)
    title: str | None = key(6, default=None)
    thread: str | None = key(7, default=None)
    actions: list[Action] | None = key(8, default=None)
    canned_replies: list[str] | None = key(9, default=None)
    uid: str = key(15, default="")


@dataclass(frozen=True)
class NotificationRemoved(Message):
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.REMOVED
    id: str = key(0)
    uid: str = key(15, default="")


@dataclass(frozen=True)
class MarkRead(Message):
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.MARK_READ
    id: str = key(0)
    uid: str = key(15, default="")


@dataclass(frozen=True)
class PerformAction(Message):
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.PERFORM_ACTION
    id: str = key(0)
    action_id: str = key(1)
    uid: str = key(15, default="")


@dataclass(frozen=True)
class Reply(Message):
    """A reply: free ``text``, or the index of one of the notification's canned replies."""

    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.REPLY
    id: str = key(0)
    text: str | None = key(1, default=None)
    canned: int | None = key(2, default=None)
    uid: str = key(15, default="")

    def check(self) -> None:
        _check((self.text is None) != (self.canned is None), "reply needs text or canned, not both")


@dataclass(frozen=True)
class Dismiss(Message):
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.DISMISS
    id: str = key(0)
    uid: str = key(15, default="")


@dataclass(frozen=True)
class MessagingResult(_Result):
    channel: ClassVar[Channel] = Channel.MESSAGING
    type: ClassVar[int] = MessagingType.COMMAND_RESULT
    uid: str = key(15, default="")


# -- bulk ---------------------------------------------------------------------------------


class BulkType(IntEnum):
    CHUNK = 1


#: Largest bulk chunk: keeps a chunk frame well inside one record.
BULK_CHUNK_SIZE = 4096


@dataclass(frozen=True)
class BulkChunk(Message):
    channel: ClassVar[Channel] = Channel.BULK
    type: ClassVar[int] = BulkType.CHUNK
    transfer: int = key(0)  # named by NowPlaying.art or Maneuver.image
    offset: int = key(1)
    total: int = key(2)
    data: bytes = key(3)
    mime: str | None = key(4, default=None)  # on the first chunk

    def check(self) -> None:
        _check(
            self.offset >= 0 and self.offset + len(self.data) <= self.total,
            "chunk outside its object",
        )
        _check(
            self.total <= 1 << 20 and len(self.data) <= BULK_CHUNK_SIZE, "chunk or object too large"
        )


#: What a bulk chunk frame costs besides its data, at most in practice: the frame's array,
#: channel, type and a sequence number of up to 5 bytes; the map with transfer, offset and
#: total of up to 5 bytes each, the keys and the byte string's 3-byte header (27), with
#: room for a piggybacked acknowledgement (8); and an encrypted record's 17 bytes. At the
#: least (small numbers, no acknowledgement) it is 19 + 17.
CHUNK_OVERHEAD = 27 + 8 + 17
CHUNK_OVERHEAD_LEAST = 19 + 17


def bulk_chunk_size(segment_size: int) -> int:
    """The chunk size (at most :data:`BULK_CHUNK_SIZE`) whose encrypted records fill whole
    segments of ``segment_size`` bytes (PROTOCOL.md 6.5), the one carrying the most data
    per segment; :data:`BULK_CHUNK_SIZE` unless that carries more even if the frame costs
    the most and a 4096-byte one the least. A record of ``k`` segments holds
    ``segment_size - 4`` bytes in its first (a FIRST with a grant) and ``segment_size - 1``
    in each continuation; a 4096-byte chunk mostly leaves its last segment part empty (at
    ATT MTU 247 an encrypted one needs 18 segments where 4076 bytes fill 17)."""
    if not 5 <= segment_size <= 512:
        raise ValueError(f"segment size {segment_size}")
    first, cont = segment_size - 3, segment_size - 1  # data room of a FIRST, a CONT
    rest = max(0, BULK_CHUNK_SIZE + CHUNK_OVERHEAD_LEAST - first)
    best, best_rate = BULK_CHUNK_SIZE, BULK_CHUNK_SIZE / (1 + -(-rest // cont))
    k = 1
    while (room := first - 1 + (k - 1) * cont - CHUNK_OVERHEAD) < BULK_CHUNK_SIZE:
        if room > 0 and room / k > best_rate:
            best, best_rate = room, room / k
        k += 1
    return best


def chunk_object(
    transfer: int, data: bytes, size: int = BULK_CHUNK_SIZE, mime: str | None = None
) -> list[BulkChunk]:
    """Cut an object into bulk chunks."""
    return [
        BulkChunk(transfer, off, len(data), data[off : off + size], mime if off == 0 else None)
        for off in range(0, max(len(data), 1), size)
    ]


#: The messages that carry a delivery uid (key 15, PROTOCOL.md 6.4): messaging's.
Delivered = (
    Notification | NotificationRemoved | MarkRead | PerformAction | Reply | Dismiss
    | MessagingResult
)  # fmt: skip


# -- dispatch -----------------------------------------------------------------------------

ALL: list[type[Message]] = [
    Hello, ErrorReport, Shortcuts, Launch, LaunchResult,
    RouteStatus, Maneuver, GuidanceRequest, NavigationResult,
    NowPlaying, MediaCommandRequest, MediaCommandResult,
    Notification, NotificationRemoved, MarkRead, PerformAction, Reply, Dismiss, MessagingResult,
    BulkChunk,
]  # fmt: skip

_BY_WIRE: dict[tuple[Channel, int], type[Message]] = {(c.channel, c.type): c for c in ALL}


def decode_message(channel: Channel, type: int, body: Body) -> Message:
    """The typed message for a received frame; ProtocolError if unknown or invalid."""
    cls = _BY_WIRE.get((channel, type))
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED, f"unknown message type {type} on {channel.name.lower()}"
        )
    return decode(cls, body)
