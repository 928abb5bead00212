"""The local API: JSON over a WebSocket on localhost, for the head unit's screen and any
other local client (docs/API.md).

Strategy. :class:`ApiState` turns head-unit events into JSON events (what changed of a
device) and client operations into calls on the head unit; it knows nothing of sockets,
but it is not sans-IO: it hands events to clients through trio memory channels and waits
on trio events for pairing answers.
:class:`ApiServer` is the trio driver: an HTTP/1.1 listener (h11) that serves the
screen's static files and upgrades ``/api`` to a WebSocket (wsproto); each client
first authenticates with the token from a file only the service's user can read.

Every client message is one JSON object with an ``op``; anything else closes the
connection with code 1003 and a reason, never crashes the service. Commands to a phone
run in their own tasks (a phone may take seconds to answer) and are answered with
``{"reply_to": seq, "ok": ...}``.
"""

from __future__ import annotations

import base64
import functools
import grp
import hmac
import json
import logging
import math
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from bridge.config import ConfigError
from bridge.phone_device import CommandFailed, LaunchFailed
from bridge.radio_policy import HeadUnit, HeadUnitEvent, PairingAttemptFailed, Phone
from bridge.wire import messages as m
from pairing.handshake import CodeToConfirm

log = logging.getLogger(__name__)

MAX_MESSAGE = 16384  # bytes of one client message
MAX_REQUEST = 8192  # bytes of an HTTP request head
#: From accepting a connection until its request is served or its WebSocket client has
#: authenticated; and how many such connections may be open at once (beyond it, a new
#: one is closed at once), so idle sockets cannot use up the service's file descriptors.
AUTH_TIMEOUT = 5.0
MAX_UNAUTHENTICATED = 16
MIN_TOKEN = 32  # characters of an acceptable token file
UNAUTHORIZED, BAD_MESSAGE = 4001, 1003
SCREEN = Path(__file__).resolve().parent / "screen"


def load_or_create_token(path: Path, group: str = "") -> str:
    """The API token in ``path``, created if there is none: owner-only, or readable by
    ``group`` too (the screen's user; its folder then may be entered by the group). A
    token file that others may read (or the group, when none is given), or whose token
    is too short to resist guessing, is replaced by a new one (and the log says so)."""
    gid = _group_id(group) if group else None
    try:
        token = path.read_text().strip()
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        wrong_group = mode & 0o070 and (gid is None or info.st_gid != gid)
        if len(token) >= MIN_TOKEN and not mode & 0o007 and not wrong_group:
            _share(path, gid)
            return token
        why = "its token is too short" if len(token) < MIN_TOKEN else "others may read it"
        log.warning("the API token file %s was replaced: %s", path, why)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700 if gid is None else 0o750, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    _share(tmp, gid)
    os.replace(tmp, path)
    return token


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"api.token_group: there is no group {group!r} (groupadd it)") from None


def _share(path: Path, gid: int | None) -> None:
    """The token file readable by the group ``gid`` (its folder enterable by it), or by
    its owner only."""
    if gid is None:
        os.chmod(path, 0o600)
        return
    os.chown(path, -1, gid)
    os.chmod(path, 0o640)
    folder = path.parent
    if folder.stat().st_uid == os.geteuid():  # ours (e.g. systemd's RuntimeDirectory)
        os.chown(folder, -1, gid)
        os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | 0o050)


def screen_url(host: str, port: int, token: str) -> str:
    """The screen's address with its token (in the fragment, which is never sent)."""
    return f"http://{'[::1]' if host == '::1' else host}:{port}/#token={token}"


def screen_launcher(url: str) -> str:
    """A tiny page that sends a browser on to ``url``: a kiosk opens this file (owner-only)
    instead of taking the token on its command line, where any local user could read it."""
    return (
        "<!doctype html><meta charset=utf-8><title>Head unit</title>"
        f'<meta http-equiv="refresh" content="0; url={url}">'
        f"<script>location.replace({json.dumps(url)})</script>\n"
    )


# -- JSON views of the head unit's state --------------------------------------------------


def _enum(value: Any) -> Any:
    return value.name.lower() if hasattr(value, "name") else value


def device_id(key: bytes) -> str:
    """A device's stable id in the API: the start of its static key, in hex."""
    return key.hex()[:16]


def device_json(phone: Phone, now_ms: int) -> dict[str, Any]:
    state = phone.device.state
    out: dict[str, Any] = {
        "id": device_id(phone.key) if phone.key else "",
        "name": phone.name,
        "platform": phone.platform,
        "connected": phone.connected,
        "ready": phone.connected and phone.device.peer is not None,  # its hello arrived
        "route": None,
        "maneuver": None,
        "now_playing": None,
        "inbox": [],
        "inbox_dropped": phone.device.inbox_dropped,  # the oldest, beyond the inbox's cap
        "messaging_error": phone.device.store_error,  # why messaging is off, or null
        "kind": phone.device.kind,  # "app" (the bridge's protocol) or "ancs" (no app)
        "offers": list(phone.device.capabilities),
        "media_commands": phone.device.media_commands_offered(),  # null: any
        "shortcuts": [_shortcut_json(s, state.icons.get(s.id)) for s in state.shortcuts],
    }
    if state.route is not None:
        r = state.route
        out["route"] = {
            "state": _enum(r.state), "destination": r.destination,
            "remaining_m": r.remaining_m, "remaining_s": r.remaining_s,
        }  # fmt: skip
    if state.maneuver is not None:
        x = state.maneuver
        out["maneuver"] = {
            "type": _enum(x.maneuver), "distance_m": x.distance_m,
            "display_distance": x.display_distance, "display_unit": _enum(x.display_unit),
            "road": x.road, "roundabout_exit": x.roundabout_exit,
            "lanes": [
                {"directions": [_enum(d) for d in lane.directions], "recommended": lane.recommended}
                for lane in x.lanes or []
            ],
            "image": _data_url(state.maneuver_image) if state.maneuver_image else None,
        }  # fmt: skip
    if state.now_playing is not None:
        p = state.now_playing
        out["now_playing"] = {
            "title": p.title, "artist": p.artist, "album": p.album,
            "duration_ms": p.duration_ms, "position_ms": phone.device.position_ms(now_ms),
            "state": _enum(p.state), "source_app": p.source_app,
            "art": _data_url(state.art) if state.art else None,
        }  # fmt: skip
    for item in state.inbox.values():
        n = item.notification
        out["inbox"].append({
            "id": n.id, "app": n.app, "category": _enum(n.category), "sender": n.sender,
            "title": n.title, "text": n.text, "time_ms": n.time_ms, "read": item.read,
            "canned_replies": n.canned_replies or [],
            "actions": [
                {"id": a.id, "label": a.label, "kind": _enum(a.kind)} for a in n.actions or []
            ],
        })  # fmt: skip
    return out


def _shortcut_json(shortcut: m.Shortcut, icon: bytes | None) -> dict[str, Any]:
    return {
        "id": shortcut.id, "label": shortcut.label, "kind": _enum(shortcut.kind),
        "icon": _data_url(icon) if icon else None,
    }  # fmt: skip


def device_delta(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
    """What a ``device`` event sends: the whole device the first time, then its ``id``
    and the fields that changed. In ``now_playing`` (sent whole when any of its fields
    changed), ``art`` is there only when the picture changed."""
    if before is None:
        return now
    delta: dict[str, Any] = {"id": now["id"]}
    for key, value in now.items():
        old = before.get(key)
        if key == "now_playing" and isinstance(value, dict) and isinstance(old, dict):
            fields = {k: v for k, v in value.items() if k != "art"}
            if fields != {k: v for k, v in old.items() if k != "art"}:
                delta[key] = fields
            if value.get("art") != old.get("art"):
                delta.setdefault(key, dict(fields))["art"] = value.get("art")
        elif value != old:
            delta[key] = value
    return delta


def merge_device(device: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    """A client's copy of a device after a ``device`` event (docs/API.md)."""
    if device is None:
        return dict(delta)
    merged = {**device, **delta}
    old, new = device.get("now_playing"), delta.get("now_playing")
    if isinstance(old, dict) and isinstance(new, dict) and "art" not in new:
        merged["now_playing"] = {**new, "art": old.get("art")}
    return merged


@functools.lru_cache(maxsize=16)  # one encoding per picture, not one per device event
def _data_url(image: bytes) -> str:
    kind = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{kind};base64,{base64.b64encode(image).decode()}"


# -- the sans-IO part ---------------------------------------------------------------------


#: The screen's files by suffix: a fixed table, not the system's MIME database (which
#: varies between machines and costs 0.4 MB resident once read)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}


class ApiError(Exception):
    """A client operation that cannot be done; the message goes back to the client, with
    ``fields`` added to the reply."""

    def __init__(self, text: str, **fields: Any) -> None:
        super().__init__(text)
        self.fields = fields


@dataclass
class PairingPrompt:
    id: int
    phone: Phone
    event: CodeToConfirm
    answer: trio.Event = field(default_factory=trio.Event)
    accepted: bool = False


class HomeControl(Protocol):
    """The home link as the API uses it (``bridge/home_mqtt.py``'s HomeLink)."""

    def home_json(self) -> dict[str, Any]: ...
    def run_scene(self, scene_id: str) -> None: ...


class ApiState:
    """What every client sees and may do; one per head unit."""

    def __init__(self, hu: HeadUnit, clock_ms: Callable[[], int]) -> None:
        self.hu = hu
        self.clock_ms = clock_ms
        self.prompts: dict[int, PairingPrompt] = {}
        # the car stands still (set by the vehicle's side through the API; off until
        # then): free typing on the screen is only for a parked car
        self.parked = False
        self.home: HomeControl | None = None  # the MQTT home link, when configured
        self._next_prompt = 1
        self._sent: dict[str, dict[str, Any]] = {}  # device id -> as last broadcast
        self._listeners: list[trio.MemorySendChannel[dict[str, Any]]] = []

    # events out
    def listen(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](256)
        self._listeners.append(send)
        return receive

    def broadcast(self, event: dict[str, Any]) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._listeners.remove(send)  # a client that does not read is dropped
                send.close()

    def snapshot(self) -> dict[str, Any]:
        now = self.clock_ms()
        return {
            "event": "state",
            "name": self.hu.name,
            "pairing": self.hu.pairing_mode,
            "parked": self.parked,
            "devices": [device_json(p, now) for p in self.hu.phones.values() if p.key],
            "prompts": [self._prompt_json(p) for p in self.prompts.values()],
            "home": self.home.home_json() if self.home is not None else None,
        }

    def home_changed(self) -> None:
        """The home link's state changed (connected, a scene's reply, a notice)."""
        if self.home is not None:
            self.broadcast({"event": "home", "home": self.home.home_json()})

    def _prompt_json(self, prompt: PairingPrompt) -> dict[str, Any]:
        peer = prompt.event.peer
        return {
            "id": prompt.id, "name": peer.display_name, "platform": peer.platform,
            "code": prompt.event.code, "re_pairing": prompt.event.re_pairing,
        }  # fmt: skip

    def on_device_event(self, phone: Phone, event: HeadUnitEvent) -> None:
        if isinstance(event, PairingAttemptFailed):
            failed = event
            self.broadcast({
                "event": "pairing_attempt_failed", "failed": failed.failed,
                "limit": failed.limit, "pairing": self.hu.pairing_mode,
            })  # fmt: skip
            if failed.pairing_mode_ended:
                self.broadcast({"event": "pairing", "on": False})
            return
        if phone.key is None:  # still pairing: it becomes a device once paired
            return
        self.device_changed(phone)

    def device_changed(self, phone: Phone) -> None:
        """Send what changed of this device (after an event, or an operation that changed
        the head unit's own state of it: a notification marked read)."""
        now = device_json(phone, self.clock_ms())
        delta = device_delta(self._sent.get(now["id"]), now)
        self._sent[now["id"]] = now
        if len(delta) > 1:  # something besides the id changed
            self.broadcast({"event": "device", "device": delta})

    # pairing: the head unit's confirm callback
    async def confirm(self, phone: Phone, event: CodeToConfirm) -> bool:
        prompt = PairingPrompt(self._next_prompt, phone, event)
        self._next_prompt += 1
        self.prompts[prompt.id] = prompt
        self.broadcast({"event": "pairing_request", **self._prompt_json(prompt)})
        try:
            await prompt.answer.wait()
            return prompt.accepted
        finally:
            del self.prompts[prompt.id]
            self.broadcast({"event": "pairing_closed", "id": prompt.id})

    # operations in
    def _phone(self, request: dict[str, Any]) -> Phone:
        """The device an operation names by its ``id`` (as its state events carry it)."""
        device = request.get("device")
        if not isinstance(device, str) or not device:
            raise ApiError("this operation needs device: the id of a device in the state")
        for phone in self.hu.phones.values():
            if phone.key is not None and device_id(phone.key) == device:
                return phone
        raise ApiError(f"no device with the id {device!r}")

    async def run_op(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one authenticated operation; the reply's fields."""
        op = request.get("op")
        if op == "state":
            return {"state": self.snapshot()}
        if op == "confirm":
            prompt = self.prompts.get(request.get("id"))  # type: ignore[arg-type]
            accept = request.get("accept")
            if prompt is None or not isinstance(accept, bool):
                raise ApiError("confirm needs the id of an open pairing prompt and accept")
            prompt.accepted = accept
            prompt.answer.set()
            return {}
        if op == "pairing":
            on = request.get("on")
            if not isinstance(on, bool):
                raise ApiError("pairing needs on: true or false")
            self.hu.pairing_mode = on
            self.broadcast({"event": "pairing", "on": on})
            return {}
        if op == "parked":
            on = request.get("on")
            if not isinstance(on, bool):
                raise ApiError("parked needs on: true or false")
            self.parked = on
            self.broadcast({"event": "parked", "on": on})
            return {}
        if op == "scene":
            scene = request.get("id")
            if self.home is None:
                raise ApiError("no home link: configure [home] (docs/HOME.md)")
            if not isinstance(scene, str):
                raise ApiError("scene needs id: one of the home's scenes")
            self.home.run_scene(scene)
            return {}
        if op not in DEVICE_OPS:
            raise ApiError(f"unknown op {op!r}; the operations are in docs/API.md")
        phone = self._phone(request)
        try:
            if op == "media":
                command = _member(m.MediaCommand, request.get("command"))
                value = request.get("value")
                if value is not None and not isinstance(value, int):
                    raise ApiError("value must be a whole number")
                await phone.device.media(command, value)
            elif op == "reply":
                text, canned = request.get("text"), request.get("canned")
                if not isinstance(text, str | None) or not isinstance(canned, int | None):
                    raise ApiError("reply needs text (a string) or canned (a number)")
                if text is not None and not self.parked:
                    raise ApiError("a typed reply waits until the car is parked; canned "
                                   "replies work while driving")  # fmt: skip
                await phone.device.reply(_id(request), text=text, canned=canned)
            elif op == "mark_read":
                await phone.device.mark_read(_id(request))
            elif op == "dismiss":
                await phone.device.dismiss(_id(request))
            elif op == "action":
                action = request.get("action")
                if not isinstance(action, str):
                    raise ApiError("action needs the action's id")
                await phone.device.perform_action(_id(request), action)
            elif op == "launch":
                shortcut = request.get("shortcut")
                if not isinstance(shortcut, str) or not shortcut:
                    raise ApiError("launch needs shortcut: the id of one of the device's shortcuts")
                await phone.device.launch(shortcut)
                return {"outcome": "done"}
            else:
                raise ApiError(f"unknown op {op!r}")  # (checked before the device too)
        except LaunchFailed as e:
            raise ApiError(f"{phone.name}: {e}", outcome=_enum(e.outcome)) from e
        except CommandFailed as e:
            raise ApiError(f"{phone.name}: {e}") from e
        except ValueError as e:  # a message the codec refuses (text too long...)
            raise ApiError(str(e)) from e
        finally:
            if phone.key is not None:
                self.device_changed(phone)  # what the operation changed here (read)
        return {}


DEVICE_OPS = ("media", "reply", "mark_read", "dismiss", "action", "launch")


def _id(request: dict[str, Any]) -> str:
    value = request.get("id")
    if not isinstance(value, str):
        raise ApiError("id must be the notification's id")
    return value


def _member(enum: Any, name: object) -> Any:
    try:
        return enum[str(name).upper()]
    except KeyError:
        raise ApiError(f"unknown {enum.__name__} {name!r}") from None


# -- the trio driver -----------------------------------------------------------------------


class ApiServer:
    def __init__(self, state: ApiState, token: str, screen: Path = SCREEN) -> None:
        self.state = state
        self.token = token
        self.screen = screen
        self.clients = 0
        self.unauthenticated = 0  # connections open that have not authenticated
        self.refused = 0  # connections closed at once: too many unauthenticated

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._client, listeners)

    async def _client(self, stream: trio.SocketStream) -> None:
        # except*: a WebSocket client's errors come out of its nursery in a group; one
        # client's broken connection is that client's end, never the service's
        if self.unauthenticated >= MAX_UNAUTHENTICATED:
            self.refused += 1
            await stream.aclose()
            return
        gate = _AuthGate(self)
        try:
            async with stream:
                with gate.scope:
                    await self._handle(stream, gate)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            log.debug("API client gone: %s", group.exceptions[0])
        finally:
            gate.passed()

    async def _handle(self, stream: trio.SocketStream, gate: _AuthGate) -> None:
        raw = b""
        with trio.move_on_after(AUTH_TIMEOUT):
            while b"\r\n\r\n" not in raw and len(raw) < MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                raw += chunk
        http = h11.Connection(h11.SERVER)
        http.receive_data(raw)
        try:
            request = http.next_event()
        except h11.RemoteProtocolError:
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        if not isinstance(request, h11.Request):
            return
        headers = {k.lower(): v.lower() for k, v in request.headers}
        if request.target.split(b"?")[0] == b"/api" and headers.get(b"upgrade") == b"websocket":
            await self._websocket(stream, raw, gate)
        else:
            await self._static(stream, http, request)

    async def _static(
        self, stream: trio.SocketStream, http: h11.Connection, request: h11.Request
    ) -> None:
        target = request.target.decode("latin-1").split("?")[0]
        name = "index.html" if target in ("", "/") else target.lstrip("/")
        path = (self.screen / name).resolve()
        ok = (
            request.method in (b"GET", b"HEAD")
            and path.is_file()
            and self.screen.resolve() in path.parents
        )
        body = path.read_bytes() if ok else b"not found\n"
        kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream") if ok else "text/plain"
        response = h11.Response(
            status_code=200 if ok else 404,
            headers=[("content-type", kind), ("content-length", str(len(body))),
                     ("cache-control", "no-store"), ("x-content-type-options", "nosniff")],
        )  # fmt: skip
        data = http.send(response) or b""
        if request.method != b"HEAD":
            data += http.send(h11.Data(data=body)) or b""
        data += http.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)

    async def _websocket(self, stream: trio.SocketStream, raw: bytes, gate: _AuthGate) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        out = trio.open_memory_channel[dict[str, Any]](64)
        client = _Client(self, stream, ws, out[0], gate)
        try:
            ws.receive_data(raw)
        except RemoteProtocolError:
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        self.clients += 1
        try:
            async with trio.open_nursery() as nursery:
                client.nursery = nursery
                nursery.start_soon(client.writer, out[1])
                await client.reader()
                nursery.cancel_scope.cancel()
        finally:
            self.clients -= 1
            if client.events is not None:
                client.events.close()


class _AuthGate:
    """One connection's unauthenticated phase: counted by the server, and cancelled at
    :data:`AUTH_TIMEOUT` unless the client passes (authenticates) first."""

    def __init__(self, server: ApiServer) -> None:
        self._server = server
        server.unauthenticated += 1
        self._open = True
        self.scope = trio.CancelScope(deadline=trio.current_time() + AUTH_TIMEOUT)

    def passed(self) -> None:
        if self._open:
            self._open = False
            self._server.unauthenticated -= 1
            self.scope.deadline = math.inf


class _Client:
    def __init__(
        self, server: ApiServer, stream: trio.SocketStream, ws: WSConnection,
        out: trio.MemorySendChannel[dict[str, Any]], gate: _AuthGate,
    ) -> None:  # fmt: skip
        self.server = server
        self.stream = stream
        self.ws = ws
        self.out = out
        self.gate = gate
        # the reader (pongs, the close handshake), the writer (events) and close() all
        # send: one at a time, or two send_all on one stream collide (BusyResourceError)
        self._send_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.authenticated = False
        self.events: trio.MemoryReceiveChannel[dict[str, Any]] | None = None
        self.closing = False
        self._text = ""

    async def send_ws(self, event: Event) -> None:
        async with self._send_lock:
            if self.ws.state is ConnectionState.CLOSED:
                return  # the close handshake is over: nothing more goes out
            data = self.ws.send(event)
            if data:
                await self.stream.send_all(data)

    async def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            await self.send_ws(CloseConnection(code=code, reason=reason))

    async def writer(self, queue: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for event in queue:
            await self.send_ws(TextMessage(data=json.dumps(event, ensure_ascii=False)))

    async def forward(self, events: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for event in events:
            await self.out.send(event)
        await self.close(1011, "too slow to read events")  # the state dropped us

    async def reader(self) -> None:
        while True:
            for event in self.ws.events():
                if isinstance(event, Request):
                    await self.send_ws(AcceptConnection())
                elif isinstance(event, Ping):
                    await self.send_ws(event.response())
                elif isinstance(event, CloseConnection):
                    if not self.closing:
                        self.closing = True
                        await self.send_ws(event.response())
                    return
                elif isinstance(event, TextMessage):
                    self._text += event.data
                    if len(self._text) > MAX_MESSAGE:
                        await self.close(1009, "message too big")
                        return
                    if event.message_finished:
                        text, self._text = self._text, ""
                        if not await self.on_text(text):
                            return
                else:  # binary messages, rejections: not part of the API
                    await self.close(BAD_MESSAGE, "the API speaks JSON text messages")
                    return
            data = await self.stream.receive_some(65536)
            if not data:
                return
            try:
                self.ws.receive_data(data)
            except RemoteProtocolError:
                return

    async def on_text(self, text: str) -> bool:
        """Handle one client message; False once the connection is closing."""
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            await self.close(BAD_MESSAGE, "each message must be a JSON object with an op")
            return False
        state = self.server.state
        if not self.authenticated:
            token = request.get("token")
            if request["op"] != "auth":
                await self.close(UNAUTHORIZED, "authenticate first: {op: auth, token}")
                return False
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), self.server.token.encode()
            ):
                await self.close(UNAUTHORIZED, "wrong token: it is in the service's api-token file")
                return False
            self.authenticated = True
            self.gate.passed()
            self.events = state.listen()
            assert self.nursery is not None
            await self.out.send(state.snapshot())
            self.nursery.start_soon(self.forward, self.events)
            return True
        assert self.nursery is not None
        self.nursery.start_soon(self.run, request)
        return True

    async def run(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"reply_to": request.get("seq"), "ok": True}
        try:
            reply.update(await self.server.state.run_op(request))
        except ApiError as e:
            reply.update(ok=False, error=str(e), **e.fields)
        await self.out.send(reply)


# -- a client (bridge pair while the service runs; tests) ------------------------------------


class ApiClient:
    """A WebSocket client of the API over a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.closed: CloseConnection | None = None
        self.pending: list[dict[str, Any]] = []
        #: The devices as the events so far describe them (deltas merged), by id.
        self.devices: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self._text = ""

    @classmethod
    async def open(cls, host: str, port: int) -> ApiClient:
        client = cls(await trio.open_tcp_stream(host, port))
        await client.stream.send_all(client.ws.send(Request(host=host, target="/api")))
        while True:
            for event in await client._events():
                if isinstance(event, AcceptConnection):
                    return client

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _events(self) -> list[Event]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(bytes(data) or None)
        return list(self.ws.events())

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def op(self, **request: Any) -> dict[str, Any]:
        """Send an operation and wait for its reply."""
        self.seq += 1
        await self.send({**request, "seq": self.seq})
        seq = self.seq
        return await self.receive(lambda e: e.get("reply_to") == seq)

    def _follow(self, message: dict[str, Any]) -> None:
        if message.get("event") == "state":
            self.devices = {d["id"]: d for d in message["devices"]}
        elif message.get("event") == "device":
            delta = message["device"]
            self.devices[delta["id"]] = merge_device(self.devices.get(delta["id"]), delta)

    async def receive(
        self, match: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        """The next message that ``match`` accepts (others are kept for later);
        ConnectionError once the server closed the connection."""
        while True:
            for i, event in enumerate(self.pending):
                if match(event):
                    return self.pending.pop(i)
            for ws_event in await self._events():
                if isinstance(ws_event, TextMessage):  # possibly in several fragments
                    self._text += ws_event.data
                    if ws_event.message_finished:
                        message = json.loads(self._text)
                        self._follow(message)
                        self.pending.append(message)
                        self._text = ""
                elif isinstance(ws_event, CloseConnection):
                    self.closed = ws_event
                    raise ConnectionError(f"closed {ws_event.code}: {ws_event.reason}")
