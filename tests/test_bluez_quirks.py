"""The BlueZ quirk workarounds of ``transports/bluez.py`` against a fake D-Bus: BlueZ's
answer is believed only where bleak's cache is stale, and never made up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from dbus_fast.constants import MessageType
from dbus_fast.signature import Variant

from transports import bluez

PATH = "/org/bluez/hci0/dev_C0_DE_00_00_00_01"


class FakeManager:
    def __init__(self, connected: bool | None) -> None:
        device = {} if connected is None else {"Connected": connected}
        self._properties = {PATH: {"org.bluez.Device1": device}}


class Reply:
    def __init__(self, value: Any, kind: MessageType = MessageType.METHOD_RETURN) -> None:
        self.message_type = kind
        if value is None:
            self.body: list[Variant] = []
        else:
            self.body = [Variant("b" if isinstance(value, bool) else "s", value)]


class FakeBus:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.asked: list[tuple[str, str, list[Any]]] = []

    async def call(self, message: Any) -> Reply:
        self.asked.append((message.path, message.member, list(message.body)))
        return self.reply


def correct(
    monkeypatch: pytest.MonkeyPatch, cached: bool | None, reply: Reply
) -> tuple[bool, FakeManager, FakeBus]:
    manager, bus = FakeManager(cached), FakeBus(reply)

    async def get_manager() -> FakeManager:
        return manager

    monkeypatch.setattr(bluez, "get_global_bluez_manager", get_manager)
    fixed = asyncio.run(bluez.correct_stale_connected(bus, PATH))  # type: ignore[arg-type]
    return fixed, manager, bus


def test_a_connection_bluez_did_not_announce_is_taken_from_bluez(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="transports.bluez")
    fixed, manager, bus = correct(monkeypatch, False, Reply(True))
    assert fixed
    assert manager._properties[PATH]["org.bluez.Device1"]["Connected"] is True
    assert bus.asked == [(PATH, "Get", ["org.bluez.Device1", "Connected"])]
    assert "did not announce the connection" in caplog.text


@pytest.mark.parametrize(
    ("cached", "reply"),
    [
        (True, Reply(True)),  # nothing stale: BlueZ is not even asked
        (False, Reply(False)),  # really disconnected
        (False, Reply(None, MessageType.ERROR)),  # BlueZ cannot say: no guessing
        (False, Reply("yes")),  # not a boolean
        (None, Reply(True)),  # bleak knows no such property: left alone
    ],
)
def test_otherwise_bleak_s_view_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, cached: bool | None, reply: Reply
) -> None:
    fixed, manager, bus = correct(monkeypatch, cached, reply)
    assert not fixed
    assert manager._properties[PATH]["org.bluez.Device1"].get("Connected") == cached
    if cached:
        assert bus.asked == []


def forget(
    monkeypatch: pytest.MonkeyPatch, device: dict[str, Any] | None, reply: Reply | Exception
) -> tuple[bool, list[tuple[str, str, list[Any]]]]:
    asked: list[tuple[str, str, list[Any]]] = []

    class Bus:
        async def call(self, message: Any) -> Reply:
            asked.append((message.path, message.member, list(message.body)))
            if isinstance(reply, Exception):
                raise reply
            return reply

    class Manager:
        _bus = Bus()
        _properties = {} if device is None else {PATH: {"org.bluez.Device1": device}}

    async def get_manager() -> Manager:
        return Manager()

    monkeypatch.setattr(bluez, "get_global_bluez_manager", get_manager)
    return asyncio.run(bluez.forget_unbonded(PATH)), asked


def test_a_device_bluez_did_not_bond_with_is_removed_after_its_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = {"Adapter": "/org/bluez/hci0", "Paired": False, "Connected": False}
    removed, asked = forget(monkeypatch, device, Reply(None))
    assert removed and asked == [("/org/bluez/hci0", "RemoveDevice", [PATH])]


@pytest.mark.parametrize(
    ("device", "reply"),
    [
        ({"Adapter": "/org/bluez/hci0", "Paired": True}, Reply(None)),  # an iPhone's bond
        ({"Adapter": "/org/bluez/hci0", "Bonded": True}, Reply(None)),
        ({"Adapter": "/org/bluez/hci0", "Connected": True}, Reply(None)),  # up again
        (None, Reply(None)),  # already gone
    ],
)
def test_a_bonded_connected_or_unknown_device_is_kept(
    monkeypatch: pytest.MonkeyPatch, device: dict[str, Any] | None, reply: Reply
) -> None:
    removed, asked = forget(monkeypatch, device, reply)
    assert not removed and asked == []


def test_a_failed_removal_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    device = {"Adapter": "/org/bluez/hci0", "Paired": False, "Connected": False}
    assert forget(monkeypatch, device, Reply(None, MessageType.ERROR))[0] is False
    assert forget(monkeypatch, device, OSError("the bus went away"))[0] is False
