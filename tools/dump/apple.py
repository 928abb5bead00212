"""ANCS and AMS traffic in a capture (an iPhone without the app; docs/IPHONE.md), with
the project's own codec (``bridge/wire/apple.py``), sans-IO.

Strategy. The iPhone is the GATT server of both services; its characteristics are known
by their UUIDs from the discovery in the capture (``AttTracker``). Notification Source
events, control-point commands (and their ATT errors 0xA0 to 0xA3), Data Source answers
reassembled across notifications (each against the command written before it), AMS
registrations, entity updates and remote commands each become one item of the channel
``ancs`` or ``ams``. Bad bytes become items with an ``error``, never exceptions.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from bridge.wire import apple as a
from bridge.wire.errors import ProtocolError
from tools.dump.att import NOTIFICATION, WRITE_COMMAND, WRITE_REQUEST, AttPdu

TO_IPHONE, FROM_IPHONE = "to iphone", "from iphone"
ERROR_RESPONSE, PREPARE_WRITE, EXECUTE_WRITE = 0x01, 0x16, 0x18
MAX_LONG_WRITE = 4096
ANCS_CHARACTERISTICS = {a.NOTIFICATION_SOURCE, a.CONTROL_POINT, a.DATA_SOURCE}
AMS_CHARACTERISTICS = {a.REMOTE_COMMAND, a.ENTITY_UPDATE, a.ENTITY_ATTRIBUTE}
ATTRIBUTES = {
    a.Entity.PLAYER: a.PlayerAttribute,
    a.Entity.QUEUE: a.QueueAttribute,
    a.Entity.TRACK: a.TrackAttribute,
}

#: Makes an item: (pdu, direction, channel, type, summary, fields, error).
MakeItem = Callable[..., Any]  # Decoder._apple_item


def _name(value: Any) -> str:
    return str(getattr(value, "name", value)).lower()


def _attribute(entity: a.Entity, attribute: int) -> str:
    names = ATTRIBUTES[entity]
    return _name(names(attribute)) if attribute in names._value2member_map_ else str(attribute)


class AppleTraffic:
    """ANCS and AMS items of every connection in a capture."""

    def __init__(self) -> None:
        self._assemblers: dict[tuple[int, int, int], a.DataSourceAssembler] = {}
        self.connections: set[tuple[int, int, int]] = set()
        self._long: dict[tuple[tuple[int, int, int], int], bytearray] = {}

    def role(self, pdu: AttPdu) -> uuid.UUID | None:
        if pdu.handle is None:
            return None
        found = pdu.connection.uuids.get(pdu.handle)
        return found if found in ANCS_CHARACTERISTICS | AMS_CHARACTERISTICS else None

    def feed(self, pdu: AttPdu, make: MakeItem) -> Iterator[Any]:
        if pdu.opcode == ERROR_RESPONSE:
            yield from self._error(pdu, make)
            return
        if pdu.opcode == PREPARE_WRITE and self.role(pdu) is not None and len(pdu.value) >= 2:
            # a long write (a command longer than MTU - 3): its parts, then Execute Write
            held = self._long.setdefault((pdu.connection.key, pdu.handle or 0), bytearray())
            if len(held) < MAX_LONG_WRITE:
                held += pdu.value[2:]
            return
        if pdu.opcode == EXECUTE_WRITE:
            for key in [k for k in self._long if k[0] == pdu.connection.key]:
                value = bytes(self._long.pop(key))
                if pdu.value[:1] == b"\x01":  # written, not cancelled
                    whole = dataclasses.replace(pdu, opcode=WRITE_REQUEST, handle=key[1],
                                                value=value)  # fmt: skip
                    yield from self.feed(whole, make)
            return
        role = self.role(pdu)
        if role is None:
            return
        self.connections.add(pdu.connection.key)
        channel = "ancs" if role in ANCS_CHARACTERISTICS else "ams"
        written = pdu.opcode in (WRITE_COMMAND, WRITE_REQUEST)
        notified = pdu.opcode == NOTIFICATION
        direction = TO_IPHONE if written else FROM_IPHONE
        try:
            if role == a.NOTIFICATION_SOURCE and notified:
                yield self._event(pdu, direction, make)
            elif role == a.CONTROL_POINT and written:
                yield self._command(pdu, direction, make)
            elif role == a.DATA_SOURCE and notified:
                item = self._answer(pdu, direction, make)
                if item is not None:
                    yield item
            elif role == a.ENTITY_UPDATE and written:
                entity = a.Entity(pdu.value[0])  # an empty one: IndexError, said below
                names = ", ".join(_attribute(entity, x) for x in pdu.value[1:])
                yield make(pdu, direction, channel, "register", f"{_name(entity)}: {names}")
            elif role == a.ENTITY_UPDATE and notified:
                update = a.parse_entity_update(pdu.value)
                cut = " (truncated)" if update.truncated else ""
                what = f"{_name(update.entity)} {_attribute(update.entity, update.attribute)}"
                yield make(pdu, direction, channel, "update", f"{what} = {update.value!r}{cut}",
                           {"entity": _name(update.entity), "attribute": update.attribute,
                            "truncated": update.truncated, "value": update.value})  # fmt: skip
            elif role == a.REMOTE_COMMAND and written:
                command = a.parse_remote_command(pdu.value)
                yield make(pdu, direction, channel, "remote-command", _name(command))
            elif role == a.REMOTE_COMMAND and notified:
                names = ", ".join(sorted(_name(c) for c in a.parse_supported_commands(pdu.value)))
                yield make(pdu, direction, channel, "supported", names or "nothing")
            elif role == a.ENTITY_ATTRIBUTE and written and len(pdu.value) == 2:
                entity = a.Entity(pdu.value[0])
                what = f"{_name(entity)} {_attribute(entity, pdu.value[1])}"
                yield make(pdu, direction, channel, "read-whole", what)
        except (ProtocolError, ValueError, IndexError) as e:
            yield make(pdu, direction, channel, None, "", None, f"bad {channel} value: {e}")

    def _event(self, pdu: AttPdu, direction: str, make: MakeItem) -> Any:
        event = a.parse_notification_event(pdu.value)
        flags = ", ".join(_name(f) for f in a.EventFlag if f in event.flags)
        summary = (
            f"{_name(event.event)} uid {event.uid}: {_name(event.category)}"
            f" ({event.category_count} in category{', ' + flags if flags else ''})"
        )
        fields = {"event": _name(event.event), "uid": event.uid, "category":
                  _name(event.category), "flags": flags.split(", ") if flags else []}  # fmt: skip
        return make(pdu, direction, "ancs", "notification-event", summary, fields)

    def _command(self, pdu: AttPdu, direction: str, make: MakeItem) -> Any:
        command = a.parse_command(pdu.value)
        assembler = self._assemblers.setdefault(pdu.connection.key, a.DataSourceAssembler())
        if isinstance(command, a.PerformNotificationAction):
            summary = f"perform {_name(command.action)} action on uid {command.uid}"
        elif isinstance(command, a.GetAppAttributes):
            assembler.expect(pdu.value)
            summary = f"get app attributes of {command.app}"
        else:
            assembler.expect(pdu.value)
            asked = ", ".join(
                _name(x) + (f"({n})" if n is not None else "") for x, n in command.attributes
            )
            summary = f"get attributes of uid {command.uid}: {asked}"
        return make(pdu, direction, "ancs", "command", summary)

    def _answer(self, pdu: AttPdu, direction: str, make: MakeItem) -> Any:
        assembler = self._assemblers.get(pdu.connection.key)
        if assembler is None or not assembler.pending:
            return make(pdu, direction, "ancs", None, "", None,
                        "a Data Source value with no command before it in the capture")  # fmt: skip
        answer = assembler.feed(pdu.value)
        if answer is None:
            return None  # more to come
        values = {_name(k): v for k, v in answer.values.items()}
        if isinstance(answer, a.AppAttributes):
            summary = f"app {answer.app}: {values}"
            fields: dict[str, Any] = {"app": answer.app, "values": values}
        else:
            summary = f"uid {answer.uid}: {values}"
            fields = {"uid": answer.uid, "values": values}
        return make(pdu, direction, "ancs", "answer", summary, fields)

    def _error(self, pdu: AttPdu, make: MakeItem) -> Iterator[Any]:
        """An ATT Error Response to a control-point write: Apple's 0xA0 to 0xA3."""
        if len(pdu.value) < 4:
            return
        handle, code = int.from_bytes(pdu.value[1:3], "little"), pdu.value[3]
        if pdu.connection.uuids.get(handle) != a.CONTROL_POINT:
            return
        name = _name(a.AncsError(code)) if code in a.AncsError._value2member_map_ else hex(code)
        assembler = self._assemblers.get(pdu.connection.key)
        if assembler is not None:
            assembler.cancel()
        yield make(pdu, FROM_IPHONE, "ancs", "command-error", f"0x{code:02X} {name}")
