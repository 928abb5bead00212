"""What the wire carries, measured from a capture: ``python -m tools.bench.wire``.

The demo (``bridge demo``: a first pairing, a drop, a reconnection of the known phone)
runs on the simulated link with its links recorded (``transports/recorder.py``) and its
session keys logged; bridge-dump's decoder then reads the capture back with the keys.
From it, for each profile:

- P2: the bytes of one encrypted pause command: the frame, the encrypted record, the
  ATT value (the segment), the ATT PDU and the L2CAP frame the link layer carries, and
  how many ATT packets it took;
- the handshake: messages each way before the first application frame, for the first
  pairing (Noise XX and the numeric comparison) and for the reconnection of a known phone
  (Noise KK).
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.emulation import demo, demo_radio
from pairing.keylog import KeyLog, read_keylog
from tools.dump.att import AttTracker
from tools.dump.capture import HciPacket, PacketType, read_capture
from tools.dump.decode import Decoder, Item

ACL_HEADER = 4  # handle and flags, length: before the L2CAP frame in an HCI ACL packet
L2CAP_HEADER = 4  # length, channel id


@dataclass
class Wire:
    link: str
    profile: str
    pause_frame: int
    pause_record: int
    pause_value: int  # the ATT value: segment header + record
    pause_att_pdu: int  # the ATT PDU as captured: opcode, handle, value
    pause_l2cap: int  # the L2CAP frame as captured: its header and the ATT PDU
    pause_packets: int  # ATT packets (segments) the pause took
    pairing_messages: int  # records before the first application frame, first pairing
    known_messages: int  # the same, reconnecting a known phone


def _before_application(items: list[Item]) -> int:
    """Records on a link before its first application frame (handshake, hellos, acks)."""
    count = 0
    for item in items:
        if item.kind == "frame" and item.channel != "control":
            break
        count += 1
    return count


@dataclass(frozen=True)
class _Value:
    number: int  # the capture frame
    value: bytes  # the ATT value
    l2cap: int  # the L2CAP frame's length as the ACL packet carried it (header included)


def _segments(values: list[_Value], number: int) -> tuple[int, int, int]:
    """(ATT packets, largest ATT value, largest L2CAP frame) of the record completed at
    capture frame ``number``: back from it to the FIRST segment of its lane."""
    at = next(i for i, v in enumerate(values) if v.number == number)
    lane = (values[at].value[0] >> 4) & 3
    packets, largest, l2cap = 0, 0, 0
    for v in reversed(values[: at + 1]):
        if v.value[0] >> 6 == 2 or (v.value[0] >> 4) & 3 != lane:  # credits, other lanes
            continue
        packets += 1
        largest, l2cap = max(largest, len(v.value)), max(l2cap, v.l2cap)
        if v.value[0] >> 6 == 1:  # FIRST
            break
    return packets, largest, l2cap


def _acl_length(packet: HciPacket) -> int:
    """The L2CAP bytes of a whole (unfragmented) ACL packet: its length field."""
    return int.from_bytes(packet.data[2:4], "little")


def read(capture: Path, keys: Path, link: str, profile: str) -> Wire:
    """The pause and handshake figures of one capture of a demo."""
    tracker, decoder = AttTracker(), Decoder(read_keylog(keys))
    streams: dict[tuple[object, str], list[_Value]] = {}
    items: list[Item] = []
    acl: dict[int, int] = {}
    for packet in read_capture(capture.read_bytes()):
        if packet.type is PacketType.ACL and len(packet.data) >= ACL_HEADER:
            acl[packet.number] = _acl_length(packet)
        for pdu in tracker.feed(packet):
            direction = decoder.direction(pdu)
            if direction is not None:
                streams.setdefault((pdu.connection.key, direction), []).append(
                    _Value(pdu.number, pdu.value, acl.get(pdu.number, 0))
                )
            items.extend(decoder.feed(pdu))
    pause = next(i for i in items if i.type == "media_command_request" and "pause" in i.summary)
    assert pause.cbor is not None
    packets, value, l2cap = _segments(streams[(pause.connection, pause.direction)], pause.number)
    links = sorted({i.connection for i in items if i.kind in ("frame", "encrypted")})
    first = [i for i in items if i.connection == pause.connection]
    known = [i for i in items if i.connection == links[-1]]
    return Wire(
        link, profile, len(pause.cbor), pause.size, value, l2cap - L2CAP_HEADER, l2cap,
        packets, _before_application(first), _before_application(known),
    )  # fmt: skip


def measure(profile: str) -> Wire:
    """The demo on the simulated link, its links recorded as HCI traffic."""
    with tempfile.TemporaryDirectory(prefix="bridge-wire-") as folder:
        path = Path(folder)
        status = demo.main(
            profile, seed=1, drop=True, realtime=False, out=io.StringIO(),
            keylog=KeyLog(path / "keys.log"), capture=path,
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"the {profile} demo failed")
        return read(path / "head-unit.pcapng", path / "keys.log", "simulated", profile)


def measure_radio() -> Wire:
    """The radio demo (an Android and an iOS phone on the Bumble radio): the head unit's
    real HCI traffic as Bumble's host sent and received it. The pause goes to the iPhone;
    the known reconnection is the Pixel's."""
    with tempfile.TemporaryDirectory(prefix="bridge-wire-") as folder:
        path = Path(folder)
        status = demo_radio.main(
            drop=True,
            realtime=False,
            out=io.StringIO(),
            keylog=KeyLog(path / "keys.log"),
            capture=path,
        )
        if status != 0:
            raise RuntimeError("the radio demo failed")
        return read(path / "head-unit.btsnoop", path / "keys.log", "Bumble", "ios")


def table(rows: list[Wire]) -> str:
    lines = [
        "one encrypted pause command, bytes (goal: one ATT packet, <= 32 on the air); "
        "records on a link before its first application frame",
        f"{'link':<9} {'profile':<8} {'frame':>5} {'record':>6} {'ATT value':>9} "
        f"{'ATT PDU':>7} {'L2CAP':>5} {'packets':>7} | {'pairing':>7} {'known':>5}",
    ]
    for w in rows:
        lines.append(
            f"{w.link:<9} {w.profile:<8} {w.pause_frame:>5} {w.pause_record:>6} {w.pause_value:>9} "
            f"{w.pause_att_pdu:>7} {w.pause_l2cap:>5} {w.pause_packets:>7} | "
            f"{w.pairing_messages:>7} {w.known_messages:>5}"
        )
    return "\n".join(lines)


def main() -> int:
    logging.getLogger("pairing.keylog").setLevel(logging.ERROR)  # the demos' temporary key logs
    rows = [measure(profile) for profile in ("android", "ios", "legacy")]
    print(table([*rows, measure_radio()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
