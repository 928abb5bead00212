"""The home link's driver: paho-mqtt's client under trio (docs/HOME.md).

Strategy. paho runs its network loop in a thread of its own (``loop_start``): it
connects, reconnects with backoff (1 s doubling to 60 s), keeps the last will
("offline", retained) with the broker, and does TLS. What it receives is handed to trio
with ``trio.from_thread.run_sync``; trio publishes with paho's thread-safe ``publish``.
What to publish and what a message from the home means is :class:`bridge.home.HomeView`'s
(sans-IO). The link follows the API's events (:class:`bridge.api.ApiState`), so the home
sees what the screen sees, and it offers the screen the scenes and the home's notices.
The car never waits for the broker: a broker that is down, refuses the password or
floods the command topics changes nothing else.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import ssl
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trio
from paho.mqtt.enums import CallbackAPIVersion

from bridge.api import ApiError, ApiState
from bridge.config import ConfigError, HomeConfig
from bridge.home import HomeInputError, HomeView, Notice, Publish, SceneReply

log = logging.getLogger(__name__)

MAX_NOTICES = 20  # the home's newest notices the screen keeps
RECONNECT_MIN, RECONNECT_MAX = 1, 60  # seconds, paho's backoff


def node_id(identity_public: bytes) -> str:
    """The head unit's id in topics and discovery: a hash of its public identity."""
    return "car_" + hashlib.sha256(b"ble-bridge-car:" + identity_public).hexdigest()[:10]


def _reason(reason_code: Any) -> str:
    text = str(reason_code)
    if "password" in text.lower() or "authori" in text.lower():
        return ("the broker refused the user name or password (home.username, "
                "home.password_file)")  # fmt: skip
    return f"the broker refused the connection ({text})"


def make_client(config: HomeConfig, client_id: str, will: Publish | None = None) -> mqtt.Client:
    """A paho client with the configured credentials, TLS and last will; ConfigError
    (naming the key) if the password or CA file cannot be used."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    if config.username:
        password = None
        if config.password_file:
            try:
                password = Path(config.password_file).read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"home.password_file: cannot read {config.password_file} ({e.strerror})"
                ) from None
        client.username_pw_set(config.username, password)
    if config.tls:
        try:
            client.tls_set(ca_certs=config.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"home.ca_file: cannot use {config.ca_file} ({e})") from None
    return client


def probe_broker(config: HomeConfig, timeout: float = 5.0) -> str | None:
    """``bridge doctor``'s check (blocking): None if the broker takes our credentials,
    else why not, in one sentence."""
    try:
        client = make_client(config, f"ble-bridge-doctor-{os.getpid()}")
    except ConfigError as e:
        return str(e)
    answer: list[Any] = []
    client.on_connect = lambda c, u, f, reason_code, p: answer.append(reason_code)
    where = f"{config.host}:{config.port}"
    failure = None
    # paho drops a socket whose TLS handshake failed without closing it: it is freed
    # (and so closed) here, not later with a ResourceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.connect(config.host, config.port, keepalive=10)
        except (OSError, ssl.SSLError) as e:
            failure = f"cannot reach the broker at {where} ({getattr(e, 'strerror', None) or e})"
        gc.collect()
    if failure is not None:
        return failure
    try:
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except (OSError, ssl.SSLError) as e:
        return f"the broker at {where} ended the connection ({e})"
    finally:
        client.disconnect()
    if not answer:
        return f"the broker at {where} did not answer within {timeout:g} s"
    if answer[0].is_failure:
        return _reason(answer[0])
    return None


class HomeLink:
    """The car's MQTT link to the home; run :meth:`run` in a nursery."""

    def __init__(self, config: HomeConfig, api: ApiState, *, node: str) -> None:
        self.config = config
        self.api = api
        self.view = HomeView(config, api.hu.name, node)
        self.connected = False
        self.error: str | None = None  # why the last connection failed, one sentence
        self.ignored = 0  # payloads from the home that could not be used
        self.published = 0
        self.notices: deque[dict[str, Any]] = deque(maxlen=MAX_NOTICES)
        self.replies: dict[str, str] = {}  # scene id -> the home's last answer
        self._client: mqtt.Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._next_notice = 1
        api.home = self

    # -- for the API ------------------------------------------------------------------

    def home_json(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "error": self.error,
            "scenes": [{"id": s.id, "label": s.label, "reply": self.replies.get(s.id)}
                       for s in self.config.scenes],
            "notices": list(self.notices),
        }  # fmt: skip

    def run_scene(self, scene_id: str) -> None:
        try:
            scene, command = self.view.scene(scene_id)
        except KeyError:
            raise ApiError(f"no scene {scene_id!r} (the scenes are [[home.scenes]])") from None
        if not self.connected or self._client is None:
            raise ApiError(f"{scene.label}: the home is not connected" +
                           (f" ({self.error})" if self.error else ""))  # fmt: skip
        self._send([command])
        log.info("home scene %s sent", scene.id)

    # -- the link ---------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = make_client(c, c.client_id or f"ble-bridge-{self.view.node}", self.view.offline())
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.on_connect = self._thread_connected
        client.on_disconnect = self._thread_disconnected
        client.on_message = self._thread_message
        client.on_connect_fail = self._thread_connect_failed
        return client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        client = self._client = self._make_client()
        client.connect_async(self.config.host, self.config.port, keepalive=30)
        client.loop_start()
        log.info("home link to %s:%d", self.config.host, self.config.port)
        task_status.started()
        try:
            while True:  # a listener that fell behind is dropped: listen again
                events = self.api.listen()
                async for event in events:
                    if event.get("event") in ("device", "state") and self.connected:
                        self._send(self.view.update(self._devices()))
        finally:
            with trio.CancelScope(shield=True):
                if self.connected:
                    info = client.publish(self.view.status_topic, "offline", qos=1, retain=True)
                    with trio.move_on_after(2):
                        await trio.to_thread.run_sync(info.wait_for_publish, 2.0)
                client.disconnect()
                await trio.to_thread.run_sync(client.loop_stop)
                self._client = None

    def _devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self.api.snapshot()["devices"]
        return devices

    def _send(self, messages: list[Publish]) -> None:
        client = self._client
        if client is None:
            return
        for message in messages:
            client.publish(message.topic, message.payload, qos=1, retain=message.retain)
            self.published += 1

    # what paho's thread calls: each hands over to trio, or does nothing once trio is gone
    def _to_trio(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _thread_connected(self, client: mqtt.Client, userdata: Any, flags: Any,
                          reason_code: Any, properties: Any) -> None:  # fmt: skip
        if reason_code.is_failure:
            self._to_trio(self._failed, _reason(reason_code))
            return
        for topic in self.view.subscriptions():
            client.subscribe(topic, qos=1)
        self._to_trio(self._connected)

    def _thread_disconnected(self, client: mqtt.Client, userdata: Any, flags: Any,
                             reason_code: Any, properties: Any) -> None:  # fmt: skip
        self._to_trio(self._disconnected)

    def _thread_connect_failed(self, client: mqtt.Client, userdata: Any) -> None:
        self._to_trio(self._failed, f"cannot reach the broker at {self.config.host}:"
                      f"{self.config.port}")  # fmt: skip

    def _thread_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        self._to_trio(self._message, message.topic, bytes(message.payload))

    # ... and in trio
    def _connected(self) -> None:
        was = self.error
        self.connected, self.error = True, None
        log.info("home link up%s", " again" if was else "")
        self._send(self.view.online(self._devices()))
        self.api.home_changed()

    def _disconnected(self) -> None:
        if self.connected:
            log.info("home link down: reconnecting with backoff")
        self.connected = False
        self.api.home_changed()

    def _failed(self, why: str) -> None:
        if why != self.error:
            log.warning("home link: %s; the car carries on, and tries again", why)
        self.connected, self.error = False, why
        self.api.home_changed()

    def _message(self, topic: str, payload: bytes) -> None:
        try:
            what = self.view.incoming(topic, payload)
        except HomeInputError as e:
            self.ignored += 1
            log.debug("home: ignored %s", e)
            return
        if isinstance(what, Notice):
            notice = {"id": self._next_notice, "text": what.text,
                      "time_ms": self.api.clock_ms()}  # fmt: skip
            self._next_notice += 1
            self.notices.append(notice)
            self.api.broadcast({"event": "home_notice", **notice})
        elif isinstance(what, SceneReply):
            self.replies[what.scene] = what.text
        self.api.home_changed()
