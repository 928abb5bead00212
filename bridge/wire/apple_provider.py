"""An iPhone's ANCS and AMS as the provider, sans-IO: what the emulated app-free iPhone
serves (written from Apple's specifications, ../shared/notes/ancs-ams.md).

:class:`IPhoneServices` holds the phone's notifications and its player. Each change
returns the values to notify (Notification Source events, Entity Updates, the Remote
Command list); control-point writes return the Data Source values that answer them,
split at the link's MTU, or raise :class:`~bridge.wire.apple.CommandError` with the ATT
error an iPhone answers. A driver on a GATT server (``transports/``) sends them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.wire import apple as a

NO_FLAGS = a.EventFlag(0)


@dataclass
class PostedNotification:
    app: str  # the app identifier, e.g. "com.apple.MobileSMS"
    category: a.AncsCategory
    title: str = ""
    subtitle: str = ""
    message: str = ""
    date: str = "20261202T081500"
    positive: str | None = None  # the positive action's label, if it has one
    negative: str | None = None
    flags: a.EventFlag = NO_FLAGS


@dataclass
class Player:
    name: str = ""
    state: a.PlaybackStateId = a.PlaybackStateId.PAUSED
    rate: float = 0.0
    elapsed: float = 0.0
    volume: float = 0.5
    artist: str = ""
    album: str = ""
    title: str = ""
    duration: float = 0.0
    queue_index: int = 0
    queue_count: int = 0
    shuffle: int = 0
    repeat: int = 0
    supported: frozenset[a.RemoteCommand] = field(default_factory=frozenset)

    def values(self) -> dict[tuple[a.Entity, int], str]:
        p, q, t = a.PlayerAttribute, a.QueueAttribute, a.TrackAttribute
        return {
            (a.Entity.PLAYER, p.NAME): self.name,
            (a.Entity.PLAYER, p.PLAYBACK_INFO): f"{self.state},{self.rate:.1f},{self.elapsed:.3f}",
            (a.Entity.PLAYER, p.VOLUME): f"{self.volume:.2f}",
            (a.Entity.QUEUE, q.INDEX): str(self.queue_index),
            (a.Entity.QUEUE, q.COUNT): str(self.queue_count),
            (a.Entity.QUEUE, q.SHUFFLE_MODE): str(self.shuffle),
            (a.Entity.QUEUE, q.REPEAT_MODE): str(self.repeat),
            (a.Entity.TRACK, t.ARTIST): self.artist,
            (a.Entity.TRACK, t.ALBUM): self.album,
            (a.Entity.TRACK, t.TITLE): self.title,
            (a.Entity.TRACK, t.DURATION): f"{self.duration:.3f}" if self.duration else "",
        }


class IPhoneServices:
    """``att_mtu``: the link's, which bounds each notified value (MTU - 3)."""

    def __init__(
        self,
        *,
        att_mtu: int = 185,
        on_action: Callable[[int, a.ActionId], bool] | None = None,
        on_command: Callable[[a.RemoteCommand], None] | None = None,
    ) -> None:
        self.att_mtu = att_mtu
        self.notifications: dict[int, PostedNotification] = {}
        self.apps: dict[str, str] = {}  # app identifier -> display name
        self.player = Player()
        self.on_action = on_action  # True: the action was done; False: ATT 0xA3
        self.on_command = on_command
        self.commands: list[a.RemoteCommand] = []  # remote commands received, in order
        self._next_uid = 1
        self._registered: set[tuple[a.Entity, int]] = set()
        self._selected: tuple[a.Entity, int] | None = None  # for Entity Attribute reads
        self._sent: dict[tuple[a.Entity, int], str] = {}

    # -- ANCS -------------------------------------------------------------------------

    def post(self, notification: PostedNotification) -> bytes:
        """A new notification: the Notification Source value announcing it."""
        uid = self._next_uid
        self._next_uid += 1
        self.notifications[uid] = notification
        return self._event(a.EventId.ADDED, uid)

    def modify(self, uid: int, **changes: object) -> bytes:
        notification = self.notifications[uid]
        for name, value in changes.items():
            setattr(notification, name, value)
        return self._event(a.EventId.MODIFIED, uid)

    def remove(self, uid: int) -> bytes:
        notification = self.notifications.pop(uid)
        flags = self._flags(notification)
        return a.NotificationEvent(a.EventId.REMOVED, flags, notification.category, 0, uid).encode()

    def existing(self) -> list[bytes]:
        """What an iPhone sends a consumer that subscribes again: every notification it
        holds, flagged PreExisting."""
        return [self._event(a.EventId.ADDED, uid, pre_existing=True) for uid in self.notifications]

    def control_point(self, value: bytes) -> list[bytes]:
        """A control-point write: the Data Source values that answer it (none for an
        action), or :class:`~bridge.wire.apple.CommandError`."""
        command = a.parse_command(value)
        if isinstance(command, a.GetAppAttributes):
            if command.app not in self.apps:
                raise a.CommandError(a.AncsError.INVALID_PARAMETER, "unknown app")
            name = self.apps[command.app]
            answer = a.encode_app_attributes(
                command.app, [(attribute, name.encode()) for attribute in command.attributes]
            )
            return a.split_answer(answer, self.att_mtu)
        notification = self.notifications.get(command.uid)
        if notification is None:
            raise a.CommandError(a.AncsError.INVALID_PARAMETER, "unknown notification uid")
        if isinstance(command, a.PerformNotificationAction):
            label = notification.positive if command.action is a.ActionId.POSITIVE else None
            if command.action is a.ActionId.NEGATIVE:
                label = notification.negative
            done = label is not None and (
                self.on_action is None or self.on_action(command.uid, command.action)
            )
            if not done:
                raise a.CommandError(a.AncsError.ACTION_FAILED, "the action failed")
            return []
        values = [
            (attribute, a.truncate(self._attribute(notification, attribute), max_length))
            for attribute, max_length in command.attributes
        ]
        return a.split_answer(a.encode_notification_attributes(command.uid, values), self.att_mtu)

    def _attribute(self, n: PostedNotification, attribute: a.NotificationAttribute) -> str:
        na = a.NotificationAttribute
        return {
            na.APP_IDENTIFIER: n.app,
            na.TITLE: n.title,
            na.SUBTITLE: n.subtitle,
            na.MESSAGE: n.message,
            na.MESSAGE_SIZE: str(len(n.message)),
            na.DATE: n.date,
            na.POSITIVE_ACTION_LABEL: n.positive or "",
            na.NEGATIVE_ACTION_LABEL: n.negative or "",
        }[attribute]

    def _flags(self, n: PostedNotification) -> a.EventFlag:
        flags = n.flags
        if n.positive is not None:
            flags |= a.EventFlag.POSITIVE_ACTION
        if n.negative is not None:
            flags |= a.EventFlag.NEGATIVE_ACTION
        return flags

    def _event(self, event: a.EventId, uid: int, *, pre_existing: bool = False) -> bytes:
        n = self.notifications[uid]
        flags = self._flags(n) | (a.EventFlag.PRE_EXISTING if pre_existing else NO_FLAGS)
        count = sum(1 for other in self.notifications.values() if other.category == n.category)
        return a.NotificationEvent(event, flags, n.category, min(count, 255), uid).encode()

    # -- AMS --------------------------------------------------------------------------

    def supported_commands(self) -> bytes:
        """The Remote Command value: the commands the player supports now."""
        return bytes(sorted(self.player.supported))

    def register(self, value: bytes) -> list[bytes]:
        """An Entity Update write registering attributes: their current values at once."""
        if not value or value[0] not in a.Entity._value2member_map_:
            raise a.CommandError(a.AncsError.INVALID_PARAMETER, "unknown AMS entity")
        entity = a.Entity(value[0])
        keys = {(entity, attribute) for attribute in value[1:]}
        known = self.player.values()
        if not keys or not keys <= known.keys():
            raise a.CommandError(a.AncsError.INVALID_PARAMETER, "unknown AMS attribute")
        self._registered = {k for k in self._registered if k[0] != entity} | keys
        self._sent = {k: v for k, v in self._sent.items() if k[0] != entity}
        return self.updates()

    def updates(self) -> list[bytes]:
        """Entity Updates for every registered value that changed since it was last
        sent, each cut to fit one notification (flagged truncated when cut)."""
        room = self.att_mtu - 3 - 3
        out = []
        for key, value in sorted(self.player.values().items()):
            if key not in self._registered or self._sent.get(key) == value:
                continue
            self._sent[key] = value
            cut = a.truncate(value, room).decode()
            out.append(a.EntityUpdate(key[0], key[1], cut != value, cut).encode())
        return out

    def select_attribute(self, value: bytes) -> None:
        """An Entity Attribute write: the value a read of it gives next."""
        if len(value) != 2:
            raise a.CommandError(a.AncsError.INVALID_COMMAND, "not entity and attribute")
        key = (a.Entity(value[0]) if value[0] in a.Entity._value2member_map_ else None, value[1])
        if key[0] is None or key not in self.player.values():
            raise a.CommandError(a.AncsError.INVALID_PARAMETER, "unknown AMS attribute")
        self._selected = (key[0], key[1])

    def read_attribute(self) -> bytes:
        """An Entity Attribute read: the selected value whole (ATT long reads give the rest)."""
        if self._selected is None:
            return b""
        return self.player.values()[self._selected].encode()

    def remote_command(self, value: bytes) -> list[bytes]:
        """A Remote Command write: the player acts (when it supports the command), and
        the updates that follow."""
        command = a.parse_remote_command(value)
        if command not in self.player.supported:
            return []
        self.commands.append(command)
        player = self.player
        if command in (a.RemoteCommand.PLAY, a.RemoteCommand.TOGGLE_PLAY_PAUSE) and (
            command is a.RemoteCommand.PLAY or player.state is a.PlaybackStateId.PAUSED
        ):
            player.state, player.rate = a.PlaybackStateId.PLAYING, 1.0
        elif command in (a.RemoteCommand.PAUSE, a.RemoteCommand.TOGGLE_PLAY_PAUSE):
            player.state, player.rate = a.PlaybackStateId.PAUSED, 0.0
        if self.on_command is not None:
            self.on_command(command)
        return self.updates()
