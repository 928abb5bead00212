"""The head unit's side of an iPhone with no app: ANCS and AMS into the project's model.

Strategy. :class:`AppleClient` is sans-IO (STYLE.md): the driver (a GATT client on the
iPhone's services, in ``transports/``) feeds it the values the iPhone notifies and the
outcome of each request, and performs the requests it hands out, one at a time, in
order (:meth:`AppleClient.next_request`). What it learns comes out as the same typed
messages a phone running the bridge's protocol sends (``m.Notification``,
``m.NotificationRemoved``, ``m.NowPlaying``) plus :class:`MediaCommands` (what the
player offers now), so everything above (the device state, the API, the screen) treats
an app-free iPhone as a device like any other.

- ANCS: each added or modified notification is fetched with Get Notification Attributes;
  the app's display name once per app (Get App Attributes), cached. One control-point
  command is outstanding at a time; its Data Source answer is reassembled
  (:class:`~bridge.wire.apple.DataSourceAssembler`); an answer that does not complete
  within ``answer_timeout_ms``, a refused command (ATT 0xA0 to 0xA3) or a broken answer
  drops that notification (or uses the app identifier as its name) and the next goes on.
  Notifications already announced are not announced again when the iPhone lists them as
  PreExisting after a reconnection.
- AMS: registers for every player, queue and track attribute; a value the iPhone sends
  truncated is read whole through Entity Attribute; the elapsed time is extrapolated
  with the playback rate.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from bridge.wire import apple as a
from bridge.wire import messages as m
from bridge.wire.errors import ProtocolError

#: Notifications waiting to be fetched; beyond it the oldest waiting are given up
#: (an iPhone lists every notification it holds after a reconnection).
MAX_WAITING = 64
#: Notifications remembered as announced, and app names cached.
MAX_KNOWN = 512
MAX_APPS = 128


@dataclass(frozen=True)
class Write:
    characteristic: uuid.UUID
    value: bytes
    with_response: bool = True


@dataclass(frozen=True)
class Read:
    characteristic: uuid.UUID


Request = Write | Read


@dataclass(frozen=True)
class MediaCommands:
    """The remote commands the iPhone's player supports now."""

    commands: frozenset[a.RemoteCommand]


AppleEvent = m.Notification | m.NotificationRemoved | m.NowPlaying | MediaCommands

_CATEGORIES = {
    a.AncsCategory.INCOMING_CALL: m.Category.INCOMING_CALL,
    a.AncsCategory.MISSED_CALL: m.Category.MISSED_CALL,
    a.AncsCategory.VOICEMAIL: m.Category.VOICEMAIL,
    a.AncsCategory.SOCIAL: m.Category.MESSAGE,
    a.AncsCategory.SCHEDULE: m.Category.SCHEDULE,
    a.AncsCategory.EMAIL: m.Category.EMAIL,
    a.AncsCategory.NEWS: m.Category.NEWS,
}

#: The project's media commands and the AMS remote command each one is.
REMOTE_COMMANDS = {
    m.MediaCommand.PLAY: a.RemoteCommand.PLAY,
    m.MediaCommand.PAUSE: a.RemoteCommand.PAUSE,
    m.MediaCommand.TOGGLE: a.RemoteCommand.TOGGLE_PLAY_PAUSE,
    m.MediaCommand.NEXT: a.RemoteCommand.NEXT_TRACK,
    m.MediaCommand.PREVIOUS: a.RemoteCommand.PREVIOUS_TRACK,
    m.MediaCommand.VOLUME_UP: a.RemoteCommand.VOLUME_UP,
    m.MediaCommand.VOLUME_DOWN: a.RemoteCommand.VOLUME_DOWN,
    m.MediaCommand.SKIP_FORWARD: a.RemoteCommand.SKIP_FORWARD,
    m.MediaCommand.SKIP_BACKWARD: a.RemoteCommand.SKIP_BACKWARD,
    m.MediaCommand.LIKE: a.RemoteCommand.LIKE_TRACK,
    m.MediaCommand.DISLIKE: a.RemoteCommand.DISLIKE_TRACK,
    m.MediaCommand.BOOKMARK: a.RemoteCommand.BOOKMARK_TRACK,
}

POSITIVE, NEGATIVE = "positive", "negative"  # the action ids of an ANCS notification


class Unsupported(Exception):
    """A command this iPhone does not offer (now): one sentence for the user."""


@dataclass
class _Media:
    values: dict[tuple[a.Entity, int], str] = field(default_factory=dict)
    playback: a.PlaybackInfo | None = None
    playback_at_ms: int = 0


class AppleClient:
    def __init__(self, *, answer_timeout_ms: int = 5000) -> None:
        self.answer_timeout_ms = answer_timeout_ms
        self.supported: frozenset[a.RemoteCommand] = frozenset()
        self.errors = 0  # broken or refused ANCS/AMS exchanges, survived
        self._requests: deque[Request] = deque()
        self._waiting: OrderedDict[int, a.NotificationEvent] = OrderedDict()
        self._fetched: dict[int, tuple[a.NotificationEvent, dict[a.NotificationAttribute, str]]]
        self._fetched = {}
        self._announced: OrderedDict[int, None] = OrderedDict()
        self._apps: OrderedDict[str, str] = OrderedDict()
        self._apps_asked: set[str] = set()
        self._assembler = a.DataSourceAssembler()
        self._outstanding: bytes | None = None  # the control-point command being answered
        self._outstanding_uid: int | None = None
        self._deadline: int | None = None
        self._events: list[AppleEvent] = []
        self._media = _Media()
        self._media_dirty = False
        self._announced_media = False
        self._reading: deque[tuple[a.Entity, int]] = deque()

    # -- what the driver does ------------------------------------------------------------

    def start(self) -> None:
        """Once subscribed to the services' notifications (ANCS: Data Source, then
        Notification Source; AMS: Remote Command and Entity Update): register for the
        AMS entities."""
        for entity, attributes in a.REGISTRATIONS:
            self._requests.append(Write(a.ENTITY_UPDATE, a.register(entity, attributes)))

    def next_request(self, now_ms: int) -> Request | None:
        """The next request to perform (and report with :meth:`on_written` or
        :meth:`on_read`), or None for now."""
        if self._requests:
            return self._requests.popleft()
        if self._outstanding is not None:
            return None
        command = self._next_command()
        if command is None:
            return None
        self._outstanding = command
        self._assembler.expect(command)
        self._deadline = now_ms + self.answer_timeout_ms
        return Write(a.CONTROL_POINT, command)

    def deadline(self) -> int | None:
        return self._deadline

    def on_timer(self, now_ms: int) -> None:
        if self._deadline is not None and now_ms >= self._deadline:
            self._give_up()

    def on_written(self, request: Write, att_error: int | None) -> None:
        """A write was answered (``att_error`` None: accepted)."""
        if att_error is None:
            return
        if request.characteristic == a.CONTROL_POINT and request.value == self._outstanding:
            self._give_up()  # counts the error
        else:
            self.errors += 1

    def on_read(self, request: Read, value: bytes | None) -> None:
        """The value an Entity Attribute read gave (None: the read failed)."""
        if not self._reading:
            return
        key = self._reading.popleft()
        if value is None:
            self.errors += 1
            return
        try:
            whole = a.parse_entity_update(bytes((key[0], key[1], 0)) + value)
            self._media.values[key] = whole.value
        except ProtocolError:
            self.errors += 1
            return
        self._media_changed(key, None)

    def cancel_pending(self) -> None:
        """The iPhone's services changed: the outstanding command and the requests not
        yet made are void (its notifications will be listed again)."""
        self._requests.clear()
        self._reading.clear()
        if self._outstanding is not None:
            self._outstanding = self._deadline = None
            self._assembler.cancel()
            if self._outstanding_uid is not None:
                self._waiting.pop(self._outstanding_uid, None)

    def pop_events(self) -> list[AppleEvent]:
        """What changed since the last call; the player's updates as one NowPlaying."""
        events, self._events = self._events, []
        if self._media_dirty:
            self._media_dirty = False
            playing = self.now_playing()
            if playing.title or playing.artist or self._announced_media:
                self._announced_media = True  # nothing plays until a track is known
                events.append(playing)
        return events

    # -- what the iPhone notifies -----------------------------------------------------------

    def on_notified(self, characteristic: uuid.UUID, value: bytes, now_ms: int) -> None:
        """A value the iPhone notified on one of ANCS's or AMS's characteristics (any
        other is ignored); each parser's ProtocolError comes out."""
        if characteristic == a.NOTIFICATION_SOURCE:
            self.on_notification_source(value)
        elif characteristic == a.DATA_SOURCE:
            self.on_data_source(value)
        elif characteristic == a.REMOTE_COMMAND:
            self.on_remote_command(value)
        elif characteristic == a.ENTITY_UPDATE:
            self.on_entity_update(value, now_ms)

    def on_notification_source(self, value: bytes) -> None:
        event = a.parse_notification_event(value)
        uid = event.uid
        if event.event is a.EventId.REMOVED:
            self._waiting.pop(uid, None)
            self._fetched.pop(uid, None)
            if uid in self._announced:
                del self._announced[uid]
                self._events.append(m.NotificationRemoved(str(uid)))
            return
        if a.EventFlag.PRE_EXISTING in event.flags and uid in self._announced:
            return  # announced before the link dropped: nothing new
        self._waiting[uid] = event
        self._waiting.move_to_end(uid)
        while len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)

    def on_data_source(self, value: bytes) -> None:
        try:
            answer = self._assembler.feed(value)
        except ProtocolError:
            self._give_up()
            raise
        if answer is None:
            return
        self._outstanding = self._deadline = None
        if isinstance(answer, a.AppAttributes):
            name = answer.values.get(a.AppAttribute.DISPLAY_NAME) or answer.app
            self._remember_app(answer.app, name)
        else:
            event = self._waiting.pop(answer.uid, None)
            if event is not None:
                self._fetched[answer.uid] = (event, answer.values)
        self._announce_ready()

    def on_remote_command(self, value: bytes) -> None:
        self.supported = a.parse_supported_commands(value)
        self._events.append(MediaCommands(self.supported))

    def on_entity_update(self, value: bytes, now_ms: int) -> None:
        update = a.parse_entity_update(value)
        key = (update.entity, update.attribute)
        self._media.values[key] = update.value
        if update.truncated and key not in self._reading:
            self._reading.append(key)
            self._requests.append(Write(a.ENTITY_ATTRIBUTE, a.entity_attribute_request(*key)))
            self._requests.append(Read(a.ENTITY_ATTRIBUTE))
        self._media_changed(key, now_ms)

    # -- commands from the head unit ----------------------------------------------------------

    def perform_action(self, id: str, action_id: str) -> Write:
        """Queue a notification's positive or negative action (its only two); the write
        whose outcome says whether the iPhone did it."""
        if action_id not in (POSITIVE, NEGATIVE):
            raise Unsupported(f"an iPhone without the app has no action {action_id!r}")
        uid = int(id) if id.isdigit() else -1
        if uid not in self._announced:
            raise Unsupported("that notification is no longer on the iPhone")
        action = a.ActionId.POSITIVE if action_id == POSITIVE else a.ActionId.NEGATIVE
        request = Write(a.CONTROL_POINT, a.perform_notification_action(uid, action))
        self._requests.append(request)
        return request

    def media(self, command: m.MediaCommand) -> Write:
        """Queue a remote command, if the player offers it now."""
        remote = REMOTE_COMMANDS.get(command)
        if remote is None or remote not in self.supported:
            raise Unsupported(f"the iPhone's player does not offer {command.name.lower()} now")
        request = Write(a.REMOTE_COMMAND, bytes((remote,)), with_response=False)
        self._requests.append(request)
        return request

    # -- inside -----------------------------------------------------------------------------

    def _next_command(self) -> bytes | None:
        for uid in self._fetched:
            app = self._fetched[uid][1].get(a.NotificationAttribute.APP_IDENTIFIER, "")
            if app and app not in self._apps and app not in self._apps_asked:
                self._apps_asked.add(app)
                self._outstanding_uid = None
                return a.get_app_attributes(app)
        if self._waiting:
            uid = next(iter(self._waiting))
            self._outstanding_uid = uid
            return a.get_notification_attributes(uid)
        return None

    def _give_up(self) -> None:
        """The outstanding command failed or its answer never finished."""
        self.errors += 1
        command, self._outstanding, self._deadline = self._outstanding, None, None
        self._assembler.cancel()
        if command is None:
            return
        if command[0] == a.CommandId.GET_APP_ATTRIBUTES:
            app = command[1:].split(b"\0", 1)[0].decode(errors="replace")
            self._remember_app(app, app)  # shown by its identifier
        elif self._outstanding_uid is not None:
            self._waiting.pop(self._outstanding_uid, None)  # that notification is lost
        self._announce_ready()

    def _remember_app(self, app: str, name: str) -> None:
        self._apps_asked.discard(app)
        self._apps[app] = name
        while len(self._apps) > MAX_APPS:
            self._apps.popitem(last=False)

    def _announce_ready(self) -> None:
        for uid in list(self._fetched):
            event, values = self._fetched[uid]
            app = values.get(a.NotificationAttribute.APP_IDENTIFIER, "")
            if app and app not in self._apps:
                continue  # its app's name is still being asked
            del self._fetched[uid]
            self._events.append(self._notification(event, values, self._apps.get(app, app)))
            self._announced[uid] = None
            self._announced.move_to_end(uid)
            while len(self._announced) > MAX_KNOWN:
                self._announced.popitem(last=False)

    @staticmethod
    def _notification(
        event: a.NotificationEvent, values: dict[a.NotificationAttribute, str], app: str
    ) -> m.Notification:
        n = a.NotificationAttribute
        actions = []
        if a.EventFlag.POSITIVE_ACTION in event.flags:
            label = values.get(n.POSITIVE_ACTION_LABEL) or "OK"
            actions.append(m.Action(POSITIVE, label, m.ActionKind.CUSTOM))
        if a.EventFlag.NEGATIVE_ACTION in event.flags:
            label = values.get(n.NEGATIVE_ACTION_LABEL) or "Clear"
            actions.append(m.Action(NEGATIVE, label, m.ActionKind.DISMISS))
        title = values.get(n.TITLE) or None
        subtitle = values.get(n.SUBTITLE) or None
        category = _CATEGORIES.get(event.category, m.Category.OTHER)
        person = category in (m.Category.MESSAGE, m.Category.INCOMING_CALL, m.Category.MISSED_CALL)
        return m.Notification(
            id=str(event.uid),
            app=app or "iPhone",
            category=category,
            text=values.get(n.MESSAGE, ""),
            time_ms=0,
            sender=title if person else None,
            title=subtitle if person else title,
            actions=actions or None,
        )

    def _media_changed(self, key: tuple[a.Entity, int], now_ms: int | None) -> None:
        media = self._media
        if key == (a.Entity.PLAYER, a.PlayerAttribute.PLAYBACK_INFO) and now_ms is not None:
            try:
                media.playback = a.parse_playback_info(media.values[key])
            except ProtocolError:
                self.errors += 1
                media.playback = None
            media.playback_at_ms = now_ms
        self._media_dirty = True  # one NowPlaying for all the updates handled together

    def now_playing(self) -> m.NowPlaying:
        """What is playing, as a phone with the app would say it (position as of the last
        playback info, stamped with the head unit's clock; :meth:`position_ms` moves it)."""
        values, playback = self._media.values, self._media.playback
        track = a.TrackAttribute

        def value(entity: a.Entity, attribute: int) -> str:
            return values.get((entity, attribute), "")

        duration = self._number(value(a.Entity.TRACK, track.DURATION), "duration")
        state = m.PlaybackState.STOPPED
        if playback is not None:
            state = (
                m.PlaybackState.PAUSED
                if playback.state is a.PlaybackStateId.PAUSED
                else m.PlaybackState.PLAYING
            )
        repeat = self._number(value(a.Entity.QUEUE, a.QueueAttribute.REPEAT_MODE), "repeat")
        shuffle = self._number(value(a.Entity.QUEUE, a.QueueAttribute.SHUFFLE_MODE), "shuffle")
        return m.NowPlaying(
            title=value(a.Entity.TRACK, track.TITLE),
            artist=value(a.Entity.TRACK, track.ARTIST),
            album=value(a.Entity.TRACK, track.ALBUM) or None,
            duration_ms=round(duration * 1000) if duration is not None else None,
            position_ms=round(playback.elapsed * 1000) if playback is not None else 0,
            position_at_ms=self._media.playback_at_ms,
            state=state,
            shuffle=bool(shuffle),
            repeat={1: m.RepeatMode.ONE, 2: m.RepeatMode.ALL}.get(
                int(repeat or 0), m.RepeatMode.OFF
            ),
            source_app=value(a.Entity.PLAYER, a.PlayerAttribute.NAME) or None,
        )

    def position_ms(self, now_ms: int) -> int | None:
        """The elapsed time now, extrapolated with the playback rate (2.0 when fast
        forwarding, 0 when paused), within the track's duration."""
        playback = self._media.playback
        if playback is None:
            return None
        seconds = playback.elapsed_at((now_ms - self._media.playback_at_ms) / 1000)
        duration = self._number(self._media.values.get((a.Entity.TRACK, 3), ""), "duration")
        if duration is not None:
            seconds = min(seconds, duration)
        return round(seconds * 1000)

    def _number(self, text: str, what: str) -> float | None:
        try:
            return a.parse_number(text, what)
        except ProtocolError:
            self.errors += 1
            return None
