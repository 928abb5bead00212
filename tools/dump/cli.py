"""``bridge-dump``: decode the bridge's traffic in a Bluetooth capture.

One line per frame: time (seconds from the capture's start), device, direction,
channel, message type and a short summary. Reads btsnoop (Android's
``btsnoop_hci.log``, btmon's ``-w``, ``bridge demo --capture``), pcapng and pcap with
Bluetooth HCI packets. Decodes with the bridge's own codecs (``tools/dump/decode.py``).

Exit codes: 0 the capture was read (whatever it held), 1 it could not be (not a
capture, damaged, unreadable), 2 usage, 3 the key log could not be read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bridge import cbor
from bridge.errors import ProtocolError
from pairing.keylog import read_keylog
from tools.dump.att import AttPdu, AttTracker
from tools.dump.capture import CaptureError, HciPacket, read_capture
from tools.dump.decode import ARROWS, Decoder, Item
from tools.dump.diag import diag

EXIT_OK, EXIT_BAD_CAPTURE, EXIT_USAGE, EXIT_BAD_KEYLOG = 0, 1, 2, 3
FOLLOW_POLL = 0.5  # seconds between looks at a capture being written
SHORT = {"control": "control", "navigation": "nav", "audio": "audio", "messaging": "msg"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-dump",
        description="Decode the bridge's frames in a Bluetooth capture (btsnoop, pcapng, pcap).",
        epilog="exit codes: 0 read, 1 not a readable capture, 2 usage, 3 key log unreadable",
    )
    parser.add_argument("capture", type=Path, metavar="FILE")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also each frame's CBOR in diagnostic notation"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--keylog", type=Path, metavar="FILE", help="session keys (bridge demo --keylog)"
    )
    parser.add_argument("--device", action="append", help="only this device (address or name)")
    parser.add_argument(
        "--channel",
        action="append",
        choices=["control", "nav", "navigation", "audio", "msg", "messaging", "bulk"],
        help="only this channel",
    )
    parser.add_argument("--type", action="append", help="only this message type (maneuver...)")
    parser.add_argument(
        "--follow", action="store_true", help="keep reading a capture that is being written"
    )
    parser.add_argument("--stats", action="store_true", help="per device and channel statistics")
    return parser


@dataclass
class Filters:
    devices: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)

    def keep(self, item: Item, address: str) -> bool:
        if self.devices and not self.devices & {item.device.lower(), address.lower()}:
            return False
        if self.channels and (item.channel or "") not in self.channels:
            return False
        return not self.types or (item.type or "") in self.types


def _channels(names: list[str] | None) -> set[str]:
    long = {v: k for k, v in SHORT.items()}
    return {long.get(n, n) for n in names or []}


class Dump:
    """The capture's packets in, items and a summary out."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.att = AttTracker()
        self.start: float | None = None
        self.packets = 0
        self.pdus: list[AttPdu] = []

    def feed(self, packets: Iterator[HciPacket]) -> Iterator[tuple[Item, AttPdu]]:
        for packet in packets:
            self.packets += 1
            if self.start is None and packet.time > 0:
                self.start = packet.time
            for pdu in self.att.feed(packet):
                self.pdus.append(pdu)
                for item in self.decoder.feed(pdu):
                    yield item, pdu


def _line(item: Item, start: float, verbose: bool) -> str:
    channel = SHORT.get(item.channel or "", item.channel or "")
    what = item.error if item.kind == "error" else item.summary
    kind = item.type or item.kind
    text = (
        f"{item.time - start:10.6f}  {item.device:<18} {ARROWS[item.direction]:<9}  "
        f"{channel:<7} {kind:<20} {what}"
    )
    if item.decrypted:
        text += "  [decrypted]"
    if verbose and item.cbor is not None:
        with contextlib.suppress(ProtocolError):
            text += "\n" + " " * 12 + diag(cbor.loads(item.cbor))
    return text.rstrip()


def _no_bridge(dump: Dump, name: str, out: TextIO) -> None:
    print(f"{name}: no bridge service found ({dump.packets} HCI packets)", file=out)
    if not dump.pdus:
        print("no ATT traffic", file=out)
        return
    print(f"ATT traffic: {len(dump.pdus)} packets", file=out)
    for conn in dump.att.connections:
        pdus = [p for p in dump.pdus if p.connection is conn]
        if not pdus:
            continue
        role = {True: "central", False: "peripheral", None: "role unknown"}[conn.central]
        print(f"  connection {conn.label} (this host {role}): {len(pdus)} ATT packets", file=out)
        counts = Counter((p.name, p.handle) for p in pdus)
        for (opname, handle), n in sorted(counts.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
            where = f" 0x{handle:04x}" if handle is not None else ""
            print(f"    {n:5d}  {opname}{where}", file=out)


def _stats(dump: Dump, items: list[Item], out: TextIO) -> None:
    print("\nstatistics", file=out)
    rows: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        if item.kind in ("frame", "encrypted"):
            rows.setdefault((item.device, item.channel or "encrypted"), []).append(item)
    print(
        f"  {'device':<18} {'channel':<10} {'frames':>6} {'bytes':>8} {'enc %':>6} "
        f"{'largest':>7} {'repeats':>7} {'asm ms':>7}",
        file=out,
    )
    for (device, channel), group in sorted(rows.items()):
        size = sum(i.size for i in group)
        encrypted = sum(17 for i in group if i.decrypted or i.kind == "encrypted")
        seen: set[tuple[str, int]] = set()
        repeats = 0
        for i in group:
            if i.frame is not None and i.frame.seq is not None:
                key = (i.direction, i.frame.seq)
                repeats += key in seen
                seen.add(key)
        assembly = max(i.assembly for i in group) * 1000
        print(
            f"  {device:<18} {SHORT.get(channel, channel):<10} {len(group):>6} {size:>8} "
            f"{100 * encrypted / max(size - encrypted, 1):>5.1f}% {max(i.size for i in group):>7} "
            f"{repeats:>7} {assembly:>7.1f}",
            file=out,
        )
    for (conn_key, direction), stream in sorted(dump.decoder.streams().items()):
        mine = [i for i in items if i.connection == conn_key and i.direction == direction]
        payload = sum(i.size for i in mine) or 1
        print(
            f"  stream {conn_key[1]:#06x}#{conn_key[2]} {ARROWS[direction]}: "
            f"{stream.segments} segments, header {100 * stream.header_bytes / payload:.1f}% of "
            f"records, {stream.gaps} gaps",
            file=out,
        )


def main(
    argv: list[str] | None = None,
    out: TextIO | None = None,
    wait: Callable[[float], None] = time.sleep,  # --follow's pause between reads
) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    keys = {}
    if args.keylog is not None:
        try:
            keys = read_keylog(args.keylog)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            print(f"bridge-dump: cannot read the key log {args.keylog}: {e}", file=sys.stderr)
            return EXIT_BAD_KEYLOG
    filters = Filters(
        {d.lower() for d in args.device or []}, _channels(args.channel), set(args.type or [])
    )
    dump = Dump(Decoder(keys))
    items: list[Item] = []
    try:
        for item, pdu in _run(dump, args.capture, args.follow, wait):
            items.append(item)
            if not filters.keep(item, pdu.connection.label):
                continue
            if args.json:
                print(json.dumps(item.to_json(), ensure_ascii=False), file=out)
            else:
                print(_line(item, dump.start or 0.0, args.verbose), file=out)
    except CaptureError as e:
        print(f"bridge-dump: {args.capture}: {e}", file=sys.stderr)
        return EXIT_BAD_CAPTURE
    except BrokenPipeError:  # piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        print(f"bridge-dump: cannot read {args.capture}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_CAPTURE
    except KeyboardInterrupt:
        pass
    if not dump.decoder.bridge_connections and not args.json:
        _no_bridge(dump, str(args.capture), out)
    encrypted = any(i.kind == "encrypted" for i in items)
    if keys and encrypted and not any(i.decrypted for i in items):
        print("bridge-dump: no session in the key log matches this capture", file=sys.stderr)
    if args.stats:
        _stats(dump, items, out)
    return EXIT_OK


def _run(
    dump: Dump, path: Path, follow: bool, wait: Callable[[float], None]
) -> Iterator[tuple[Item, AttPdu]]:
    if not follow:
        yield from dump.feed(read_capture(path.read_bytes()))
        return
    done, size = 0, -1
    while True:  # ends with Ctrl-C
        if path.stat().st_size != size:  # read again only when the file grew
            data = path.read_bytes()
            size = len(data)
            packets = list(read_capture(data, partial_ok=True))
            yield from dump.feed(iter(packets[done:]))
            done = len(packets)
        wait(FOLLOW_POLL)


if __name__ == "__main__":
    sys.exit(main())
