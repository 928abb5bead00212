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
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge import demo
from pairing.keylog import KeyLog, read_keylog
from tools.dump.att import AttTracker
from tools.dump.capture import read_capture
from tools.dump.decode import Decoder, Item

L2CAP_HEADER, ATT_WRITE_HEADER = 4, 3


@dataclass
class Wire:
    profile: str
    pause_frame: int
    pause_record: int
    pause_value: int  # the ATT value: segment header + record
    pause_packets: int  # ATT packets (segments) the pause took
    pairing_messages: int  # records before the first application frame, first pairing
    known_messages: int  # the same, reconnecting a known phone

    @property
    def pause_att_pdu(self) -> int:
        return self.pause_value + ATT_WRITE_HEADER

    @property
    def pause_l2cap(self) -> int:
        return self.pause_att_pdu + L2CAP_HEADER


def _before_application(items: list[Item]) -> int:
    """Records on a link before its first application frame (handshake, hellos, acks)."""
    count = 0
    for item in items:
        if item.kind == "frame" and item.channel != "control":
            break
        count += 1
    return count


def _segments(values: list[tuple[int, bytes]], number: int) -> tuple[int, int]:
    """(ATT packets, largest ATT value) of the record completed at capture frame
    ``number``: back from it to the FIRST segment of its lane."""
    at = next(i for i, (n, _) in enumerate(values) if n == number)
    lane = (values[at][1][0] >> 4) & 3
    packets, largest = 0, 0
    for _, value in reversed(values[: at + 1]):
        if value[0] >> 6 == 2 or (value[0] >> 4) & 3 != lane:  # credits, other lanes
            continue
        packets += 1
        largest = max(largest, len(value))
        if value[0] >> 6 == 1:  # FIRST
            break
    return packets, largest


def measure(profile: str) -> Wire:
    with tempfile.TemporaryDirectory(prefix="bridge-wire-") as folder:
        path = Path(folder)
        status = demo.main(
            profile, seed=1, drop=True, realtime=False, out=io.StringIO(),
            keylog=KeyLog(path / "keys.log"), capture=path,
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"the {profile} demo failed")
        tracker, decoder = AttTracker(), Decoder(read_keylog(path / "keys.log"))
        streams: dict[tuple[object, str], list[tuple[int, bytes]]] = {}
        items: list[Item] = []
        for packet in read_capture((path / "head-unit.pcapng").read_bytes()):
            for pdu in tracker.feed(packet):
                direction = decoder.direction(pdu)
                if direction is not None:
                    streams.setdefault((pdu.connection.key, direction), []).append(
                        (pdu.number, pdu.value)
                    )
                items.extend(decoder.feed(pdu))
    pause = next(i for i in items if i.type == "media_command_request" and "pause" in i.summary)
    assert pause.cbor is not None
    packets, value = _segments(streams[(pause.connection, pause.direction)], pause.number)
    links = sorted({i.connection for i in items})
    first = [i for i in items if i.connection == links[0]]
    known = [i for i in items if i.connection == links[-1]]
    return Wire(
        profile, len(pause.cbor), pause.size, value, packets,
        _before_application(first), _before_application(known),
    )  # fmt: skip


def table(rows: list[Wire]) -> str:
    lines = [
        "one encrypted pause command, bytes (goal: one ATT packet, <= 32 on the air); "
        "records on a link before its first application frame",
        f"{'profile':<8} {'frame':>5} {'record':>6} {'ATT value':>9} {'ATT PDU':>7} "
        f"{'L2CAP':>5} {'packets':>7} | {'pairing':>7} {'known':>5}",
    ]
    for w in rows:
        lines.append(
            f"{w.profile:<8} {w.pause_frame:>5} {w.pause_record:>6} {w.pause_value:>9} "
            f"{w.pause_att_pdu:>7} {w.pause_l2cap:>5} {w.pause_packets:>7} | "
            f"{w.pairing_messages:>7} {w.known_messages:>5}"
        )
    return "\n".join(lines)


def main() -> int:
    print(table([measure(profile) for profile in ("android", "ios", "legacy")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
