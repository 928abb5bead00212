"""The local API (docs/API.md) end to end: ``bridge run`` on the virtual radio with an
emulated phone, and a WebSocket client on localhost (wsproto over trio sockets)."""

from __future__ import annotations

import base64
import io
import json
import socket
import stat
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto.events import CloseConnection

from bridge import daemon
from bridge.api import (
    AUTH_TIMEOUT,
    CONTENT_TYPES,
    MAX_UNAUTHENTICATED,
    SCREEN,
    ApiClient,
    ApiState,
    device_delta,
    load_or_create_token,
    merge_device,
)
from bridge.config import ApiConfig, Config
from bridge.emulation.scenarios import ARROW, ART, FLAVOURS, ICONS, launcher
from bridge.emulation.world import RadioWorld
from bridge.phone_device import PhoneDevice
from bridge.radio_policy import HeadUnit, PairingAttemptFailed, Phone
from bridge.session import PeerSession
from bridge.wire import messages as m
from pairing.trust import TrustStore
from tools.screen_demo import service_with_phones


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[ApiClient]:
    client = await ApiClient.open("127.0.0.1", port)
    try:
        with trio.fail_after(120):  # virtual time: a test that waits in vain ends at once
            yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def service(
    tmp_path: Path, *, pairing: bool = True, **phones: str
) -> AsyncIterator[tuple[daemon.Service, RadioWorld]]:
    config = Config(name="Test car", data_dir=str(tmp_path / "data"), pairing=pairing,
                    api=ApiConfig(port=0))  # fmt: skip
    async with service_with_phones(config, phones, tmp_path / "world") as running:
        yield running


def token(tmp_path: Path) -> str:
    path = tmp_path / "data" / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # only the service's user reads it
    return path.read_text().strip()


async def device_until(
    client: ApiClient,
    predicate: Callable[[dict[str, Any]], bool],
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Device events (deltas, merged by the client) until a device satisfies ``predicate``;
    that device, whole. ``seen`` collects the raw events."""
    while True:
        event = await client.receive(lambda e: e.get("event") == "device")
        if seen is not None:
            seen.append(event)
        device = client.devices[event["device"]["id"]]
        if predicate(device):
            return device


async def test_pairing_confirmed_on_the_screen_then_commands_reach_the_phone(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with (
        service(tmp_path, pixel="android") as (running, world),
        connect(running.api_port or 0) as client,
    ):
        await client.send({"op": "auth", "token": token(tmp_path)})
        state = await client.receive(lambda e: e.get("event") == "state")
        assert state["name"] == "Test car" and state["pairing"] is True
        prompt = await client.receive(lambda e: e.get("event") == "pairing_request")
        # a phone says its name only after the comparison
        assert prompt["name"] == "a new android device" and prompt["platform"] == "android"
        assert len(prompt["code"].replace(" ", "")) == 6
        assert await client.op(op="confirm", id=prompt["id"], accept=True) == {
            "reply_to": client.seq, "ok": True,
        }  # fmt: skip
        device = await device_until(client, lambda d: d["connected"] and d["name"] == "Pixel 9")
        assert device["platform"] == "android"
        pixel = device["id"]  # operations name a device by its id
        phone = world.phones["pixel"]
        await phone.app.notify(m.Notification(
            "n1", "Chat", m.Category.MESSAGE, "Running late", 0, sender="Bo",
            canned_replies=["On my way"],
            actions=[m.Action("cb", "Call back", m.ActionKind.CALL_BACK)],
        ))  # fmt: skip
        update = await device_until(client, lambda d: bool(d["inbox"]))
        (note,) = update["inbox"]
        assert (note["id"], note["sender"], note["text"]) == ("n1", "Bo", "Running late")
        assert note["actions"] == [{"id": "cb", "label": "Call back", "kind": "call_back"}]
        assert (await client.op(op="reply", device=pixel, id="n1", canned=0))["ok"]
        assert ("n1", "On my way") in phone.app.replies
        # typing is for a parked car: refused while driving (the default), not sent
        typed = await client.op(op="reply", device=pixel, id="n1", text="See you")
        assert not typed["ok"] and "parked" in typed["error"]
        assert state["parked"] is False
        assert (await client.op(op="parked", on=True))["ok"]
        await client.receive(lambda e: e == {"event": "parked", "on": True})
        assert (await client.op(op="reply", device=pixel, id="n1", text="See you"))["ok"]
        assert phone.app.replies[-1] == ("n1", "See you")
        assert (await client.op(op="parked", on="yes"))["error"] == "parked needs on: true or false"
        assert (await client.op(op="mark_read", device=pixel, id="n1"))["ok"]
        read = await device_until(client, lambda d: d["inbox"][0]["read"])  # sent at once
        assert read["inbox"][0]["id"] == "n1"
        await phone.app.play([m.NowPlaying("Song", "Artist", duration_ms=200_000)], art=ART)
        art_events: list[dict[str, Any]] = []
        with_art = await device_until(
            client, lambda d: bool(d["now_playing"]) and bool(d["now_playing"]["art"]), art_events
        )  # a message of some 60 KB: it arrives in pieces, the client joins them
        art = with_art["now_playing"]["art"]
        assert art.startswith("data:image/") and base64.b64decode(art.split(",", 1)[1]) == ART
        assert (await client.op(op="media", device=pixel, command="pause"))["ok"]
        assert phone.app.player is not None and not phone.app.player.playing
        # events send what changed: the picture once, never again with the pause
        after: list[dict[str, Any]] = []
        paused = await device_until(client, lambda d: d["now_playing"]["state"] == "paused", after)
        assert paused["now_playing"]["art"] == art  # the client's merged copy kept it
        assert all("art" not in (e["device"].get("now_playing") or {}) for e in after)
        assert all("inbox" not in e["device"] for e in after)  # unchanged: not sent
        pictures = [e for e in art_events if (e["device"].get("now_playing") or {}).get("art")]
        assert len(pictures) == 1
        # refused operations say why and keep the connection
        bad = await client.op(op="media", device=pixel, command="louder")
        assert bad == {
            "reply_to": client.seq,
            "ok": False,
            "error": "unknown MediaCommand 'louder'",
        }
        bad = await client.op(op="media", device="Pixel 9", command="pause")
        assert bad["error"] == "no device with the id 'Pixel 9'"
        bad = await client.op(op="louder", device=pixel)
        assert bad["error"].startswith("unknown op 'louder'")
        assert (await client.op(op="pairing", on=False))[
            "ok"
        ] and not running.head_unit.pairing_mode


async def test_the_api_lists_shortcuts_and_launches_them(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """A device's shortcuts with their icons, a launch's outcome in the reply (done, or
    locked / unknown with one sentence), and the maneuver's own picture."""
    async with (
        service(tmp_path, pixel="android") as (running, world),
        connect(running.api_port or 0) as client,
    ):
        await client.send({"op": "auth", "token": token(tmp_path)})
        prompt = await client.receive(lambda e: e.get("event") == "pairing_request")
        await client.op(op="confirm", id=prompt["id"], accept=True)
        device = await device_until(client, lambda d: d["ready"])
        assert device["shortcuts"] == []
        phone = world.phones["pixel"]
        await launcher(phone.app, FLAVOURS["android"])
        offered = await device_until(
            client, lambda d: len(d["shortcuts"]) == 4 and all(s["icon"] for s in d["shortcuts"])
        )
        first = offered["shortcuts"][0]
        assert {k: first[k] for k in ("id", "label", "kind")} == {
            "id": "nav-home", "label": "Navigate home", "kind": "navigation",
        }  # fmt: skip
        assert base64.b64decode(first["icon"].split(",", 1)[1]) == ICONS["navigation"]
        pixel = device["id"]
        done = await client.op(op="launch", device=pixel, shortcut="daily-mix")
        assert done == {"reply_to": client.seq, "ok": True, "outcome": "done"}
        assert phone.app.launches == ["daily-mix"]
        phone.app.locked = True
        locked = await client.op(op="launch", device=pixel, shortcut="garage")
        assert locked["ok"] is False and locked["outcome"] == "locked"
        assert locked["error"] == "Pixel 9: unlock the phone to open the garage"
        unknown = await client.op(op="launch", device=pixel, shortcut="teleport")
        assert unknown["outcome"] == "unknown" and "no shortcut 'teleport'" in unknown["error"]
        assert (await client.op(op="launch", device=pixel))["error"].startswith("launch needs")
        # the maneuver's picture goes with its maneuver, and not with the next one
        roundabout = m.Maneuver(
            m.ManeuverType.ROUNDABOUT_ENTER_AND_EXIT, 600, "600", m.DistanceUnit.METERS,
            "Avenue Foch", roundabout_exit=2,
        )  # fmt: skip
        await phone.app.maneuver(roundabout, image=ARROW)
        pictured = await device_until(client, lambda d: bool((d["maneuver"] or {}).get("image")))
        image = pictured["maneuver"]["image"]
        assert base64.b64decode(image.split(",", 1)[1]) == ARROW
        await phone.app.maneuver(m.Maneuver(m.ManeuverType.TURN_LEFT, 150, "150",
                                            m.DistanceUnit.METERS, "Elm Rd"))  # fmt: skip
        plain = await device_until(client, lambda d: d["maneuver"]["road"] == "Elm Rd")
        assert plain["maneuver"]["image"] is None


async def test_a_rejected_code_pairs_nothing(aio: Any, autojump_clock: Any, tmp_path: Path) -> None:
    async with (
        service(tmp_path, pixel="android") as (running, _),
        connect(running.api_port or 0) as client,
    ):
        await client.send({"op": "auth", "token": token(tmp_path)})
        prompt = await client.receive(lambda e: e.get("event") == "pairing_request")
        await client.op(op="confirm", id=prompt["id"], accept=False)
        await client.receive(lambda e: e == {"event": "pairing_closed", "id": prompt["id"]})
        assert running.head_unit.trust.devices() == []


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ({"op": "auth", "token": "guess"}, 4001, "wrong token"),
        ({"op": "media", "device": "x", "command": "pause"}, 4001, "authenticate first"),
        ("not json", 1003, "JSON object with an op"),
        ([1, 2], 1003, "JSON object with an op"),
    ],
)
async def test_no_token_no_api(
    aio: Any, autojump_clock: Any, tmp_path: Path, *, first: Any, code: int, reason: str
) -> None:
    async with service(tmp_path) as (running, _), connect(running.api_port or 0) as client:
        await client.send(first if isinstance(first, str) else json.dumps(first))
        with pytest.raises(ConnectionError):
            await client.receive()
        assert client.closed is not None
        assert client.closed.code == code and reason in (client.closed.reason or "")


async def test_a_client_that_resets_its_connection_is_dropped_and_the_service_goes_on(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    # found in the VM lane: a WebSocket client's TCP reset, seen while the server read
    # from it inside the client's nursery, ended `bridge run` with a traceback
    async with service(tmp_path, pixel="android") as (running, _):
        port = running.api_port or 0
        for _ in range(3):
            async with connect(port) as client:
                await client.send({"op": "auth", "token": token(tmp_path)})
                assert (await client.op(op="state"))["ok"]
                assert isinstance(client.stream, trio.SocketStream)
                sock = client.stream.socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # a reset, not a close handshake
            await trio.sleep(1.0)
        async with connect(port) as client:  # still serving
            await client.send({"op": "auth", "token": token(tmp_path)})
            assert (await client.op(op="state"))["ok"]


async def test_static_files_and_nothing_outside_them(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with service(tmp_path) as (running, _):

        async def get(target: str) -> bytes:
            stream = await trio.open_tcp_stream("127.0.0.1", running.api_port or 0)
            async with stream:
                await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
                    if b"\r\n\r\n" in data:
                        head, _, body = data.partition(b"\r\n\r\n")
                        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                        if len(body) >= length:
                            break
                return data

        assert (await get("/../../../etc/passwd")).startswith(b"HTTP/1.1 404")
        assert (await get("/nothing.js")).startswith(b"HTTP/1.1 404")
        for target, kind in (
            ("/", b"text/html"),
            ("/app.js", b"text/javascript"),
            ("/style.css", b"text/css"),
        ):
            head = (await get(target)).partition(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200")
            assert b"content-type: " + kind + b"; charset=utf-8" in head
    # every file the screen is made of has its type in the table
    assert {p.suffix for p in SCREEN.iterdir()} <= set(CONTENT_TYPES)


async def test_bridge_pair_goes_through_the_running_service(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    asked: list[dict[str, Any]] = []

    async def ask(request: dict[str, Any]) -> bool:
        asked.append(request)
        return True

    async with service(tmp_path, pairing=False, pixel="android") as (running, world):
        assert not running.head_unit.pairing_mode  # strangers are left alone until asked
        port = running.api_port or 0
        config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(port=port))
        name = await daemon.pair_through_service(config, ask, limit=60, out=io.StringIO())
        assert name == "Pixel 9" and [a["name"] for a in asked] == ["a new android device"]
        assert [d.name for d in running.head_unit.trust.devices()] == ["Pixel 9"]
        assert not running.head_unit.pairing_mode  # back as it was
        await world.phones["pixel"].connected.wait()


async def test_bridge_pair_says_when_the_service_api_is_unreachable(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(port=1))
    config.data_path.mkdir(parents=True)
    config.token_path.write_text("token")

    async def ask(request: dict[str, Any]) -> bool:
        return True

    with pytest.raises(daemon.DaemonError, match=r"its API at 127\.0\.0\.1:1 does not answer"):
        await daemon.pair_through_service(config, ask, limit=5)


async def test_idle_connections_cannot_use_up_the_service(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """Sockets that never authenticate: beyond a few at once they are closed at once,
    and each is closed at its deadline; the real screen still gets in."""
    async with service(tmp_path) as (running, _):
        port = running.api_port or 0
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_UNAUTHENTICATED)]
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(1):
            assert await extra.receive_some(10) == b""  # over the cap: closed at once
        with trio.fail_after(AUTH_TIMEOUT + 1):  # the others at their deadline
            for stream in idle:
                assert await stream.receive_some(10) == b""
        half = await ApiClient.open("127.0.0.1", port)  # a WebSocket that never authenticates
        with trio.fail_after(AUTH_TIMEOUT + 1), pytest.raises(ConnectionError):
            await half.receive()
        async with connect(port) as client:  # the screen
            await client.send({"op": "auth", "token": token(tmp_path)})
            await trio.sleep(2 * AUTH_TIMEOUT)  # authenticated: no deadline any more
            assert (await client.op(op="state"))["ok"]
        for stream in [*idle, extra]:
            await stream.aclose()
        await half.aclose()


async def test_a_slow_client_closing_during_a_large_message_does_not_crash_the_service(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """The writer is stuck sending a large event to a client that does not read while
    the reader answers that client's close: one send at a time, and the service goes on."""
    async with service(tmp_path) as (running, _):
        port = running.api_port or 0
        assert running.api is not None
        slow = await ApiClient.open("127.0.0.1", port)
        await slow.send({"op": "auth", "token": token(tmp_path)})
        await trio.sleep(0.5)
        for _ in range(3):  # more than the socket buffers hold
            running.api.broadcast({"event": "big", "blob": "x" * 4_000_000})
        await trio.sleep(0.5)
        await slow.stream.send_all(slow.ws.send(CloseConnection(code=1000)))
        await trio.sleep(1.0)
        await slow.aclose()
        await trio.sleep(1.0)
        async with connect(port) as client:  # still serving
            await client.send({"op": "auth", "token": token(tmp_path)})
            assert (await client.op(op="state"))["ok"]


@pytest.mark.parametrize(("content", "mode"), [("abc", 0o600), ("y" * 43, 0o644)])
def test_a_weak_or_readable_token_file_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, mode: int
) -> None:
    path = tmp_path / "api-token"
    path.write_text(content + "\n")
    path.chmod(mode)
    new = load_or_create_token(path)
    assert new != content and len(new) >= 32 and "was replaced" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == new
    assert load_or_create_token(path) == new  # a good one is kept


def test_a_failed_pairing_attempt_reaches_every_client(tmp_path: Path) -> None:
    """What the screen shows and bridge pair's user reads: the attempt, the count and
    whether pairing mode ended."""
    radio: Any = None  # never used: the head unit does not run
    hu = HeadUnit(radio, TrustStore(tmp_path / "hu"), tmp_path / "hu", clock_ms=lambda: 0)
    state = ApiState(hu, clock_ms=lambda: 0)
    events = state.listen()
    hu.pairing_mode = False  # the third failure ended it
    session = PeerSession("new phone")
    phone = Phone(session, PhoneDevice(session, clock_ms=lambda: 0))
    state.on_device_event(phone, PairingAttemptFailed(3, 3, True))
    assert events.receive_nowait() == {
        "event": "pairing_attempt_failed", "failed": 3, "limit": 3, "pairing": False,
    }  # fmt: skip
    assert events.receive_nowait() == {"event": "pairing", "on": False}


def test_a_client_merging_the_deltas_has_the_device_as_the_service_has_it() -> None:
    art = "data:image/png;base64,AAAA"
    states = [
        {"id": "d1", "name": "Pixel 9", "connected": False, "now_playing": None, "inbox": []},
        {"id": "d1", "name": "Pixel 9", "connected": True, "now_playing": None, "inbox": []},
        {"id": "d1", "name": "Pixel 9", "connected": True, "inbox": [],
         "now_playing": {"title": "A", "position_ms": 0, "art": None}},
        {"id": "d1", "name": "Pixel 9", "connected": True, "inbox": [],
         "now_playing": {"title": "A", "position_ms": 900, "art": art}},
        {"id": "d1", "name": "Pixel 9", "connected": True, "inbox": [{"id": "n1"}],
         "now_playing": {"title": "A", "position_ms": 900, "art": art}},
        {"id": "d1", "name": "Pixel 9", "connected": True, "inbox": [{"id": "n1"}],
         "now_playing": {"title": "B", "position_ms": 0, "art": art}},
        {"id": "d1", "name": "Pixel 9", "connected": False, "inbox": [], "now_playing": None},
    ]  # fmt: skip
    sent: dict[str, Any] | None = None
    client: dict[str, Any] | None = None
    pictures = 0
    for now in states:
        delta = device_delta(sent, now)
        client, sent = merge_device(client, delta), now
        assert client == now
        pictures += (delta.get("now_playing") or {}).get("art") == art
    assert pictures == 1  # the picture went once, though now_playing changed four times
    assert device_delta(states[-1], states[-1]) == {"id": "d1"}  # nothing: nothing sent


async def test_the_prompt_of_a_pairing_the_phone_rejected_is_closed(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    async with (
        service(tmp_path, pixel="android") as (running, world),
        connect(running.api_port or 0) as client,
    ):

        async def reject(event: Any) -> bool:
            return False

        world.phones["pixel"].app.confirm = reject  # its user taps Reject
        await client.send({"op": "auth", "token": token(tmp_path)})
        prompt = await client.receive(lambda e: e.get("event") == "pairing_request")
        assert prompt["re_pairing"] is False
        await client.receive(lambda e: e == {"event": "pairing_closed", "id": prompt["id"]})
        state = await client.op(op="state")
        assert state["state"]["prompts"] == [] and running.head_unit.trust.devices() == []


async def test_a_re_pairing_prompt_says_so_and_closes_when_the_phone_rejects(
    aio: Any, autojump_clock: Any, tmp_path: Path
) -> None:
    """The head unit knows the phone; the phone forgot the head unit (KK, UNKNOWN, XX):
    the prompt says it is a re-pairing, and closes when the phone's user rejects."""
    async with (
        service(tmp_path, pixel="android") as (running, world),
        connect(running.api_port or 0) as client,
    ):
        await client.send({"op": "auth", "token": token(tmp_path)})
        first = await client.receive(lambda e: e.get("event") == "pairing_request")
        assert first["re_pairing"] is False
        await client.op(op="confirm", id=first["id"], accept=True)
        await device_until(client, lambda d: bool(d.get("ready")))
        phone = world.phones["pixel"]

        async def reject(event: Any) -> bool:
            return False

        phone.app.confirm = reject
        phone.trust.forget("Test car")  # the phone's user removed the car
        world.lose_link("pixel")
        again = await client.receive(lambda e: e.get("event") == "pairing_request")
        assert again["re_pairing"] is True
        await client.receive(lambda e: e == {"event": "pairing_closed", "id": again["id"]})
        assert (await client.op(op="state"))["state"]["prompts"] == []


def test_api_md_lists_every_enumeration_value() -> None:
    """docs/API.md's enumerations are the codec's, all of them (issue 21 item 16)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()
    fields = {
        "route.state": m.RouteState, "maneuver.type": m.ManeuverType,
        "maneuver.display_unit": m.DistanceUnit, "maneuver.lanes[].directions[]": m.LaneDirection,
        "now_playing.state": m.PlaybackState, "inbox[].category": m.Category,
        "inbox[].actions[].kind": m.ActionKind, "media.command": m.MediaCommand,
        "shortcuts[].kind": m.ShortcutKind,
    }  # fmt: skip
    for field, enum in fields.items():
        (line,) = [x for x in text.splitlines() if x.startswith(f"- `{field}`: ")]
        listed = [v.strip(" `") for v in line.split(": ", 1)[1].split(",")]
        assert listed == [v.name.lower() for v in enum], field
    (line,) = [x for x in text.splitlines() if x.startswith("- `launch` reply's `outcome`: ")]
    assert [v.strip(" `") for v in line.split(": ", 1)[1].split(",")] == [
        v.name.lower() for v in m.LaunchOutcome
    ]
