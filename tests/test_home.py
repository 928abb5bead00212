"""The home link (docs/HOME.md): the sans-IO view, then ``bridge run`` with a real
broker (Debian's mosquitto on a free loopback port) and an emulated phone on the
virtual radio, in real time: discovery, retained state, scenes, the home's notices, a
flood of bad payloads, a wrong password, the broker going away and coming back."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion

from bridge import daemon
from bridge.api import ApiError
from bridge.config import ApiConfig, Config, HomeConfig, SceneConfig
from bridge.doctor import check_home
from bridge.emulation.world import RadioWorld
from bridge.home import MAX_PAYLOAD, HomeInputError, HomeView, Notice, SceneReply, topic_id
from bridge.home_mqtt import HomeLink, probe_broker
from bridge.wire import messages as m
from tests.mqtt_helpers import Broker, make_certificates
from tools.screen_demo import service_with_phones

GARAGE = SceneConfig("garage", "Open the garage", "home/garage/set", "OPEN", "home/garage/state")
LIGHTS = SceneConfig("lights", "Lights on", "home/lights/set")


def _device(name: str = "Pixel 9", **kw: Any) -> dict[str, Any]:
    device = {"id": "1a2b3c4d5e6f7081", "name": name, "connected": True, "route": None,
              "now_playing": None, "inbox": []}  # fmt: skip
    device.update(kw)
    return device


# -- the sans-IO view ----------------------------------------------------------------------


def test_the_car_appears_as_one_device_with_its_entities() -> None:
    view = HomeView(HomeConfig(enabled=True, host="x"), "Demo car", "car_0123456789")
    out = view.online([_device()])
    assert out[0].topic == "ble-bridge/status" and out[0].payload == "online"
    configs = {p.topic: json.loads(p.payload) for p in out if p.topic.startswith("homeassistant/")}
    assert all(p.retain for p in out)
    assert all(c["device"]["identifiers"] == ["car_0123456789"] for c in configs.values())
    assert all(c["availability_topic"] == "ble-bridge/status" for c in configs.values())
    names = sorted(c["name"] for c in configs.values())
    assert names == ["Arriving", "Destination", "Distance to destination", "Music from",
                     "Now playing", "Pixel 9 in the car", "Time to destination",
                     "Unread messages"]  # fmt: skip
    tid = topic_id("1a2b3c4d5e6f7081")
    assert {p.topic: p.payload for p in out}[f"ble-bridge/device/{tid}/present"] == "ON"
    assert "1a2b3c4d" not in " ".join(p.topic + p.payload for p in out)  # no key prefix


def test_only_what_changed_is_published_and_message_text_stays_in_the_car() -> None:
    view = HomeView(HomeConfig(enabled=True, host="x", arriving_minutes=3), "Car", "car_1")
    note = {"id": "n1", "app": "Chat", "sender": "Anna", "text": "Running late",
            "time_ms": 5, "read": False}  # fmt: skip
    view.online([_device(inbox=[note])])
    assert view.update([_device(inbox=[note])]) == []  # nothing changed: nothing sent
    route = {"state": "active", "destination": "Home", "remaining_m": 2500, "remaining_s": 170}
    changed = {p.topic: p.payload for p in view.update([_device(inbox=[note], route=route)],
                                                      now=0)}  # fmt: skip
    nav = json.loads(changed["ble-bridge/navigation"])
    assert (nav["destination"], nav["remaining_min"], nav["eta"]) == (
        "Home",
        2.8,
        "1970-01-01T00:02:50Z",
    )
    assert changed["ble-bridge/navigation/arriving"] == "ON"  # 170 s is within 3 minutes
    everything = " ".join(p.payload for p in view.online([_device(inbox=[note])]))
    assert "Running late" not in everything and "Anna" not in everything
    shared = HomeView(HomeConfig(enabled=True, host="x", share_message_text=True), "Car", "c")
    last = {p.topic: p.payload for p in shared.online([_device(inbox=[note])])}
    assert json.loads(last["ble-bridge/messages/last"])["text"] == "Running late"


def test_what_comes_from_the_home_is_checked() -> None:
    view = HomeView(HomeConfig(enabled=True, host="x", scenes=(GARAGE,)), "Car", "car_1")
    assert view.subscriptions() == ["ble-bridge/notice", "home/garage/state"]
    assert view.incoming("ble-bridge/notice", b"Dinner\nis ready") == Notice("Dinner is ready")
    assert view.incoming("home/garage/state", b"open") == SceneReply("garage", "open")
    for bad in (b"\xff\xfe", b"", b"\x00\x01", b"x" * (MAX_PAYLOAD + 1)):
        with pytest.raises(HomeInputError):
            view.incoming("ble-bridge/notice", bad)
    with pytest.raises(HomeInputError):
        view.incoming("elsewhere", b"hi")
    _scene, command = view.scene("garage")
    assert (command.topic, command.payload, command.retain) == ("home/garage/set", "OPEN", False)


# -- a real broker ---------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    try:
        yield running
    finally:
        running.stop()


class Observer:
    """A home-side MQTT client: what the car published (retained values included)."""

    made = 0

    def __init__(self, port: int, username: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        Observer.made += 1  # a client id of its own: the broker drops a second with one id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"observer-{Observer.made}"
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            found = [p for t, p, _ in self.messages if t == topic]
        return found[-1] if found else None

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(what: str, predicate: Callable[[], bool], limit: float = 30) -> None:
    with trio.move_on_after(limit):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not seen within {limit} s: {what}")


@asynccontextmanager
async def car(tmp_path: Path, home: HomeConfig) -> AsyncIterator[tuple[daemon.Service, RadioWorld]]:
    config = Config(name="Demo car", data_dir=str(tmp_path / "data"), pairing=True,
                    api=ApiConfig(port=0), home=home)  # fmt: skip
    async with service_with_phones(
        config, {"pixel": "android"}, tmp_path / "world", daemon.yes
    ) as running:
        yield running


async def test_the_car_publishes_its_state_and_the_home_acts_on_it(
    aio: Any, tmp_path: Path, broker: Broker
) -> None:
    observer = Observer(broker.port)
    home = HomeConfig(enabled=True, host="127.0.0.1", port=broker.port, scenes=(GARAGE, LIGHTS))
    try:
        async with car(tmp_path, home) as (service, world):
            link = service.home
            assert isinstance(link, HomeLink) and service.api is not None
            await until("the car online", lambda: observer.last("ble-bridge/status") == b"online")
            node = link.view.node
            await until("discovery", lambda: observer.last(
                f"homeassistant/sensor/{node}/media_title/config") is not None)  # fmt: skip
            phone = world.phones["pixel"]
            await until("the Pixel paired and connected", phone.connected.is_set, 60)

            def present() -> bytes | None:
                tids = [t for t, _, _ in observer.messages if t.endswith("/present")]
                return observer.last(tids[-1]) if tids else None

            await until("the Pixel present", lambda: present() == b"ON")
            configs = [json.loads(p) for t, p, _ in observer.messages
                       if t.startswith(f"homeassistant/binary_sensor/{node}/present_")]  # fmt: skip
            assert configs[-1]["name"] == "Pixel 9 in the car"
            # now playing and the route, retained for whoever subscribes later
            await phone.app.play([m.NowPlaying("Holocene", "Bon Iver", duration_ms=300_000)])
            await phone.app.set_route(m.RouteStatus(m.RouteState.ACTIVE, "Home", remaining_m=2000,
                                                    remaining_s=150))  # fmt: skip

            def media() -> dict[str, Any]:
                raw = observer.last("ble-bridge/media")
                return json.loads(raw) if raw else {}

            await until("now playing", lambda: media().get("title") == "Holocene")
            assert media()["source"] == "Pixel 9"
            await until(
                "arriving", lambda: observer.last("ble-bridge/navigation/arriving") == b"ON"
            )
            late = Observer(broker.port)  # retained: a new subscriber gets the state at once
            try:
                await until("retained state", lambda: late.last("ble-bridge/media") is not None)
            finally:
                late.close()
            # a scene from the car's screen, and the home's answer on the screen
            assert (await service.api.run_op({"op": "scene", "id": "garage"})) == {}
            await until("the garage command", lambda: observer.last("home/garage/set") == b"OPEN")
            observer.publish("home/garage/state", "opening")
            await until("the reply shown", lambda: link.replies.get("garage") == "opening")
            home_json = service.api.snapshot()["home"]
            assert home_json["connected"] and home_json["scenes"][0]["reply"] == "opening"
            # a notice from the home, shown as a message from "Home"
            events = service.api.listen()
            observer.publish("ble-bridge/notice", "Dinner is ready")
            await until("the notice", lambda: any(n["text"] == "Dinner is ready"
                                                  for n in link.notices))  # fmt: skip
            with trio.fail_after(5):
                while (await events.receive()).get("event") != "home_notice":
                    pass
            # a flood of bad payloads: ignored and counted, nothing else affected
            for i in range(100):
                observer.client.publish("ble-bridge/notice", b"\xff" * (i % 7 + 1))
                observer.client.publish("home/garage/state", b"x" * (MAX_PAYLOAD + 1))
            observer.publish("ble-bridge/notice", "Door locked")
            await until("the flood counted", lambda: link.ignored == 200)
            await until("a good notice after it", lambda: link.notices[-1]["text"] == "Door locked")
            assert phone.connected.is_set() and link.connected
            with pytest.raises(ApiError, match="no scene 'sauna'"):
                await service.api.run_op({"op": "scene", "id": "sauna"})
    finally:
        observer.close()


async def test_the_broker_goes_away_and_comes_back(
    aio: Any, tmp_path: Path, broker: Broker
) -> None:
    home = HomeConfig(enabled=True, host="127.0.0.1", port=broker.port, scenes=(GARAGE,))
    async with car(tmp_path, home) as (service, world):
        link = service.home
        assert link is not None and service.api is not None
        await until("connected", lambda: link.connected)
        broker.stop()
        await until("the link down", lambda: not link.connected)
        with pytest.raises(ApiError, match="the home is not connected"):
            await service.api.run_op({"op": "scene", "id": "garage"})
        await until("the Pixel connected all the same", world.phones["pixel"].connected.is_set, 60)
        broker.start()  # persistence off: the broker forgot everything retained
        observer = Observer(broker.port)
        try:
            await until("reconnected", lambda: link.connected, 90)
            await until(
                "state published again", lambda: observer.last("ble-bridge/status") == b"online"
            )
            await until("discovery again", lambda: any(
                t.startswith("homeassistant/") for t, _, _ in observer.messages))  # fmt: skip
            # the last will: a car that vanishes without a goodbye is "offline"
            assert link._client is not None
            sock = link._client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
            await until("the will", lambda: observer.last("ble-bridge/status") == b"offline")
            await until("back online", lambda: observer.last("ble-bridge/status") == b"online", 90)
        finally:
            observer.close()


async def test_a_wrong_password_is_one_sentence_and_the_car_carries_on(
    aio: Any, tmp_path: Path
) -> None:
    locked = Broker(tmp_path, password="right horse")
    (tmp_path / "password").write_text("wrong horse\n")
    home = HomeConfig(enabled=True, host="127.0.0.1", port=locked.port, username="car",
                      password_file=str(tmp_path / "password"))  # fmt: skip
    try:
        async with car(tmp_path, home) as (service, world):
            link = service.home
            assert link is not None
            await until("refused", lambda: link.error is not None)
            assert link.error == (
                "the broker refused the user name or password (home.username, home.password_file)"
            )
            assert not link.connected
            await until("the Pixel connected all the same",
                        world.phones["pixel"].connected.is_set, 60)  # fmt: skip
    finally:
        locked.stop()


async def test_tls_with_the_home_ca_and_a_wrong_ca_refused(aio: Any, tmp_path: Path) -> None:
    secure = Broker(tmp_path, tls=True)
    try:
        home = HomeConfig(enabled=True, host="127.0.0.1", port=secure.port, tls=True,
                          ca_file=str(secure.ca))  # fmt: skip
        assert probe_broker(home) is None
        async with car(tmp_path, home) as (service, world):
            link = service.home
            assert link is not None
            await until("connected over TLS", lambda: link.connected)
            # (and the phone paired: a radio torn down mid-command trips Bumble's host)
            await until("the Pixel connected", world.phones["pixel"].connected.is_set, 60)
        other = tmp_path / "other"
        other.mkdir()
        make_certificates(other / "ca.pem", other / "c.pem", other / "k.pem")
        wrong = HomeConfig(enabled=True, host="127.0.0.1", port=secure.port, tls=True,
                           ca_file=str(other / "ca.pem"))  # fmt: skip
        why = probe_broker(wrong)
        assert why is not None and why.startswith("cannot reach the broker at 127.0.0.1:")
        assert "CERTIFICATE_VERIFY_FAILED" in why
        plain = HomeConfig(enabled=True, host="127.0.0.1", port=secure.port)
        assert probe_broker(plain) is not None  # MQTT in the clear to a TLS port: refused
    finally:
        secure.stop()


def test_doctor_checks_the_broker(tmp_path: Path, broker: Broker) -> None:
    def config(**kw: Any) -> Config:
        return Config(home=HomeConfig(enabled=True, host="127.0.0.1", **kw))

    ok = check_home(config(port=broker.port), probe_broker)
    assert ok.ok and ok.detail == f"MQTT broker at 127.0.0.1:{broker.port} takes our credentials"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    down = check_home(config(port=free), probe_broker)
    assert not down.ok and down.detail.startswith(f"cannot reach the broker at 127.0.0.1:{free}")
    assert "docs/HOME.md" in down.fix
    missing = check_home(config(port=broker.port, username="car",
                                password_file=str(tmp_path / "nope")), probe_broker)  # fmt: skip
    assert not missing.ok and missing.detail.startswith("home.password_file: cannot read")


def test_doctor_says_a_wrong_password_in_one_sentence(tmp_path: Path) -> None:
    locked = Broker(tmp_path, password="right horse")
    try:
        (tmp_path / "pw").write_text("wrong horse\n")
        home = HomeConfig(enabled=True, host="127.0.0.1", port=locked.port, username="car",
                          password_file=str(tmp_path / "pw"))  # fmt: skip
        check = check_home(Config(home=home), probe_broker)
        assert not check.ok and check.detail == (
            "the broker refused the user name or password (home.username, home.password_file)"
        )
        (tmp_path / "pw").write_text("right horse\n")
        assert check_home(Config(home=home), probe_broker).ok
    finally:
        locked.stop()
