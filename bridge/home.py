"""The home link's protocol core: what the car publishes over MQTT, what it takes from
the home (docs/HOME.md). Sans-IO: it turns the API's view of the devices (``device_json``
dicts) into retained MQTT messages, each sent only when it changed, with Home Assistant
discovery configs so the head unit appears as one device with its entities; and it
parses what arrives on the topics it subscribes to. The MQTT client is
``bridge/home_mqtt.py``.

What is shared is the owner's choice (``[home]`` in the config): presence by the name
each device was paired with (never a key: a device's topic id is a hash), now playing,
navigation with an "arriving" flag, counts of unread messages; message text and senders
only with ``share_message_text``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.config import HomeConfig, SceneConfig

#: Longest payload taken from the home on a notice or scene-reply topic, bytes; and the
#: longest text shown of it, characters.
MAX_PAYLOAD = 1024
MAX_NOTICE = 200
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: str
    retain: bool = True


@dataclass(frozen=True)
class Notice:
    """The home sent the car screen a notice."""

    text: str


@dataclass(frozen=True)
class SceneReply:
    """The home answered a scene's command (on the scene's ``reply_topic``)."""

    scene: str
    text: str


class HomeInputError(ValueError):
    """A payload from the home that cannot be used (ignored and counted)."""


def topic_id(device_id: str) -> str:
    """A device's id in topics: a hash of its API id, so no key prefix reaches the home."""
    return hashlib.sha256(f"ble-bridge-device:{device_id}".encode()).hexdigest()[:12]


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD:
        raise HomeInputError(f"a payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise HomeInputError("a payload that is not UTF-8") from None
    text = " ".join(text.split())  # no control characters or line breaks on the screen
    if not text or not text.isprintable():
        raise HomeInputError("an empty or unprintable payload")
    return text[:MAX_NOTICE]


class HomeView:
    """The car as the home sees it; call :meth:`online` after each (re)connection, then
    :meth:`update` with the devices whenever they change."""

    def __init__(self, config: HomeConfig, car_name: str, node: str) -> None:
        self.config = config
        self.car_name = car_name
        self.node = node  # the head unit's id in topics and discovery
        self.prefix = config.prefix.rstrip("/")
        self._sent: dict[str, str] = {}  # topic -> payload last published
        self._devices_announced: set[str] = set()

    # -- topics ----------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    @property
    def notice_topic(self) -> str:
        return f"{self.prefix}/notice"

    def subscriptions(self) -> list[str]:
        return [self.notice_topic] + [s.reply_topic for s in self.config.scenes if s.reply_topic]

    # -- out -------------------------------------------------------------------------

    def online(self, devices: Iterable[dict[str, Any]]) -> list[Publish]:
        """After a (re)connection: online, every discovery config, all the state again."""
        self._sent.clear()
        self._devices_announced.clear()
        out = [Publish(self.status_topic, ONLINE)]
        out += self._discovery()
        out += self.update(devices)
        return out

    def offline(self) -> Publish:
        """The last will, and what a clean stop publishes."""
        return Publish(self.status_topic, OFFLINE)

    def update(self, devices: Iterable[dict[str, Any]], now: float | None = None) -> list[Publish]:
        """What changed since the last call, as retained messages."""
        devices = list(devices)
        now = time.time() if now is None else now
        state: dict[str, str] = {}
        out: list[Publish] = []
        c = self.config
        if c.share_presence:
            for device in devices:
                tid = topic_id(device["id"])
                if tid not in self._devices_announced:
                    self._devices_announced.add(tid)
                    out.append(self._presence_config(tid, device["name"]))
                present = "ON" if device["connected"] else "OFF"
                state[f"{self.prefix}/device/{tid}/present"] = present
        if c.share_media:
            playing = next(
                (d for d in devices if d["connected"] and (d.get("now_playing") or {}).get(
                    "state") == "playing"), None,
            )  # fmt: skip
            media: dict[str, Any] = {"state": "idle", "title": None, "artist": None, "source": None}
            if playing is not None:
                p = playing["now_playing"]
                media = {"state": "playing", "title": p["title"], "artist": p["artist"],
                         "source": playing["name"]}  # fmt: skip
            state[f"{self.prefix}/media"] = json.dumps(media, ensure_ascii=False)
        if c.share_navigation:
            state.update(self._navigation(devices, now))
        if c.share_messages:
            unread = sum(1 for d in devices for n in d.get("inbox", []) if not n["read"])
            state[f"{self.prefix}/messages/unread"] = str(unread)
            if c.share_message_text:
                notes = [(n, d["name"]) for d in devices for n in d.get("inbox", [])]
                newest = max(notes, key=lambda x: x[0]["time_ms"], default=None)
                last = {"sender": None, "text": None, "device": None}
                if newest is not None:
                    note, name = newest
                    last = {"sender": note["sender"] or note["app"], "text": note["text"],
                            "device": name}  # fmt: skip
                state[f"{self.prefix}/messages/last"] = json.dumps(last, ensure_ascii=False)
        for topic, payload in state.items():
            if self._sent.get(topic) != payload:
                self._sent[topic] = payload
                out.append(Publish(topic, payload))
        return out

    def _navigation(self, devices: list[dict[str, Any]], now: float) -> dict[str, str]:
        route = next(
            (d["route"] for d in devices if d["connected"] and d.get("route")
             and d["route"]["state"] in ("active", "rerouting")), None,
        )  # fmt: skip
        nav: dict[str, Any] = {"state": "inactive", "destination": None, "remaining_m": None,
                               "remaining_min": None, "eta": None}  # fmt: skip
        arriving = False
        if route is not None:
            seconds = route.get("remaining_s")
            nav = {
                "state": route["state"], "destination": route.get("destination"),
                "remaining_m": route.get("remaining_m"),
                "remaining_min": None if seconds is None else round(seconds / 60, 1),
                "eta": None if seconds is None else time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + seconds)),
            }  # fmt: skip
            arriving = seconds is not None and seconds <= self.config.arriving_minutes * 60
        return {
            f"{self.prefix}/navigation": json.dumps(nav, ensure_ascii=False),
            f"{self.prefix}/navigation/arriving": "ON" if arriving else "OFF",
        }

    # -- Home Assistant discovery ------------------------------------------------------

    def _device_block(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": self.car_name,
                "manufacturer": "ble-bridge", "model": "head unit"}  # fmt: skip

    def _config(self, component: str, object_id: str, fields: dict[str, Any]) -> Publish:
        body = {
            "unique_id": f"{self.node}_{object_id}", "object_id": f"{self.node}_{object_id}",
            "availability_topic": self.status_topic, "payload_available": ONLINE,
            "payload_not_available": OFFLINE, "device": self._device_block(), **fields,
        }  # fmt: skip
        topic = f"{self.config.discovery_prefix}/{component}/{self.node}/{object_id}/config"
        return Publish(topic, json.dumps(body, ensure_ascii=False))

    def _discovery(self) -> list[Publish]:
        c, p = self.config, self.prefix
        out: list[Publish] = []
        if c.share_media:
            media = f"{p}/media"
            out += [
                self._config("sensor", "media_title", {
                    "name": "Now playing", "state_topic": media,
                    "value_template": "{{ value_json.title or 'nothing' }}",
                    "json_attributes_topic": media,
                }),
                self._config("sensor", "media_source", {
                    "name": "Music from", "state_topic": media,
                    "value_template": "{{ value_json.source or 'none' }}",
                }),
            ]  # fmt: skip
        if c.share_navigation:
            nav = f"{p}/navigation"
            out += [
                self._config("sensor", "destination", {
                    "name": "Destination", "state_topic": nav,
                    "value_template": "{{ value_json.destination or 'none' }}",
                    "json_attributes_topic": nav,
                }),
                self._config("sensor", "remaining_time", {
                    "name": "Time to destination", "state_topic": nav,
                    "value_template": "{{ value_json.remaining_min }}",
                    "unit_of_measurement": "min", "device_class": "duration",
                }),
                self._config("sensor", "remaining_distance", {
                    "name": "Distance to destination", "state_topic": nav,
                    "value_template": "{{ value_json.remaining_m }}",
                    "unit_of_measurement": "m", "device_class": "distance",
                }),
                self._config("binary_sensor", "arriving", {
                    "name": "Arriving", "state_topic": f"{nav}/arriving",
                    "payload_on": "ON", "payload_off": "OFF",
                }),
            ]  # fmt: skip
        if c.share_messages:
            out.append(self._config("sensor", "unread", {
                "name": "Unread messages", "state_topic": f"{p}/messages/unread",
                "state_class": "measurement",
            }))  # fmt: skip
            if c.share_message_text:
                out.append(self._config("sensor", "last_message", {
                    "name": "Last message", "state_topic": f"{p}/messages/last",
                    "value_template": "{{ value_json.text or 'none' }}",
                    "json_attributes_topic": f"{p}/messages/last",
                }))  # fmt: skip
        return out

    def _presence_config(self, tid: str, name: str) -> Publish:
        return self._config("binary_sensor", f"present_{tid}", {
            "name": f"{name} in the car", "device_class": "presence",
            "state_topic": f"{self.prefix}/device/{tid}/present",
            "payload_on": "ON", "payload_off": "OFF",
        })  # fmt: skip

    # -- in --------------------------------------------------------------------------

    def scene(self, scene_id: str) -> tuple[SceneConfig, Publish]:
        """The command a scene's tap publishes (not retained); KeyError if none."""
        for scene in self.config.scenes:
            if scene.id == scene_id:
                return scene, Publish(scene.topic, scene.payload, retain=False)
        raise KeyError(scene_id)

    def incoming(self, topic: str, payload: bytes) -> Notice | SceneReply:
        """What a message from the home means; HomeInputError if it is unusable."""
        if topic == self.notice_topic:
            return Notice(_text(payload))
        for scene in self.config.scenes:
            if scene.reply_topic and topic == scene.reply_topic:
                return SceneReply(scene.id, _text(payload))
        raise HomeInputError(f"a message on {topic!r}, which the car does not read")
