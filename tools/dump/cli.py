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

from bridge.wire import cbor
from bridge.wire.errors import ProtocolError
from pairing.keylog import read_keylog
from tools.dump.att import AttPdu, AttTracker
from tools.dump.capture import CaptureError, HciPacket, read_capture
from tools.dump.decode import ARROWS, Decoder, Item, type_names
from tools.dump.diag import diag

EXIT_OK, EXIT_BAD_CAPTURE, EXIT_USAGE, EXIT_BAD_KEYLOG = 0, 1, 2, 3
FOLLOW_POLL = 0.5  # seconds between looks at a capture being written
SHORT = {"control": "control", "navigation": "nav", "audio": "audio", "messaging": "msg",
         "ancs": "ancs", "ams": "ams"}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-dump",
        description="Decode the bridge's frames in a Bluetooth capture (btsnoop, pcapng, pcap), "
        "and the ANCS and AMS traffic of iPhones without the app.",
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
        choices=[
            "control",
            "nav",
            "navigation",
            "audio",
            "msg",
            "messaging",
            "bulk",
            "ancs",
            "ams",
        ],
        help="only this channel (ancs, ams: an iPhone without the app)",
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


def _no_bridge(dump: Dump, name: str, out: TextIO, as_json: bool) -> None:
    """What a capture without the bridge holds: its ATT traffic per connection, opcode
    and handle (JSON Lines with ``as_json``: one object per count, after a summary)."""
    if as_json:
        summary = {"kind": "capture", "bridge": False, "hci_packets": dump.packets,
                   "att_packets": len(dump.pdus)}  # fmt: skip
        print(json.dumps(summary), file=out)
    else:
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
        if not as_json:
            print(
                f"  connection {conn.label} (this host {role}): {len(pdus)} ATT packets", file=out
            )
        counts = Counter((p.name, p.handle) for p in pdus)
        for (opname, handle), n in sorted(counts.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
            if as_json:
                row = {
                    "kind": "att", "connection": conn.label, "connection_handle": conn.handle,
                    "this_host": role, "opcode": opname, "handle": handle, "packets": n,
                }  # fmt: skip
                print(json.dumps(row), file=out)
                continue
            where = f" 0x{handle:04x}" if handle is not None else ""
            print(f"    {n:5d}  {opname}{where}", file=out)


STATS_LEGEND = """\
  frames: records decoded or listed; bytes: their bytes on the air (records, segment
  headers excluded); largest: the largest record; crypto %: the encryption's 17 bytes per
  record as a share of those bytes; repeats: frames sent again with a seq already seen
  (resends after a reconnect); reassembly ms: the longest a record took from its first
  segment to its last"""


def _stats(dump: Dump, items: list[Item], out: TextIO, as_json: bool) -> None:
    """Per device and channel, then per segment stream; ``items`` are the ones the
    filters kept."""
    rows: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        if item.kind in ("frame", "encrypted"):
            rows.setdefault((item.device, item.channel or "encrypted"), []).append(item)
    if not as_json:
        print("\nstatistics", file=out)
        print(
            f"  {'device':<18} {'channel':<10} {'frames':>6} {'bytes':>8} {'largest':>7} "
            f"{'crypto %':>8} {'repeats':>7} {'reassembly ms':>13}",
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
        share = 100 * encrypted / max(size, 1)
        largest = max(i.size for i in group)
        name = SHORT.get(channel, channel)
        if as_json:
            row = {"kind": "stats", "device": device, "channel": channel, "frames": len(group),
                   "bytes": size, "largest": largest, "crypto_percent": round(share, 1),
                   "repeats": repeats, "reassembly_ms": round(assembly, 1)}  # fmt: skip
            print(json.dumps(row, ensure_ascii=False), file=out)
            continue
        print(
            f"  {device:<18} {name:<10} {len(group):>6} {size:>8} {largest:>7} "
            f"{share:>7.1f}% {repeats:>7} {assembly:>13.1f}",
            file=out,
        )
    kept = {(i.connection, i.direction) for i in items}
    for (conn_key, direction), stream in sorted(dump.decoder.streams().items()):
        if (conn_key, direction) not in kept:
            continue
        mine = [i for i in items if i.connection == conn_key and i.direction == direction]
        payload = sum(i.size for i in mine) or 1
        connection = f"handle 0x{conn_key[1]:04x} (#{conn_key[2]})"
        header = 100 * stream.header_bytes / payload
        if as_json:
            row = {"kind": "stream", "connection": connection, "connection_handle": conn_key[1],
                   "direction": direction, "segments": stream.segments,
                   "header_percent": round(header, 1), "gaps": stream.gaps}  # fmt: skip
            print(json.dumps(row), file=out)
            continue
        print(
            f"  connection {connection} {ARROWS[direction]}: {stream.segments} segments, "
            f"segment headers {header:.1f}% of record bytes, {stream.gaps} sequence gaps",
            file=out,
        )
    if not as_json:
        print(STATS_LEGEND, file=out)


def main(
    argv: list[str] | None = None,
    out: TextIO | None = None,
    wait: Callable[[float], None] = time.sleep,  # --follow's pause between reads
) -> int:
    try:
        return _main(argv, out or sys.stdout, wait)
    except BrokenPipeError:  # piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: list[str] | None, out: TextIO, wait: Callable[[float], None]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = set(args.type or []) - type_names() - {"encrypted", "credit", "error"}
    if unknown:
        names = ", ".join(sorted(type_names()))
        parser.error(f"unknown --type {', '.join(sorted(unknown))}; the types are: {names}")
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

    def reload_keys() -> None:  # --follow: sessions logged after we started
        if args.keylog is not None:
            with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
                dump.decoder.keys.update(read_keylog(args.keylog))

    items: list[Item] = []
    kept: list[Item] = []
    seen_devices: set[str] = set()
    try:
        for item, pdu in _run(dump, args.capture, args.follow, wait, reload_keys):
            items.append(item)
            seen_devices |= {item.device.lower(), pdu.connection.label.lower()}
            if not filters.keep(item, pdu.connection.label):
                continue
            kept.append(item)
            if args.json:
                print(json.dumps(item.to_json(), ensure_ascii=False), file=out)
            else:
                print(_line(item, dump.start or 0.0, args.verbose), file=out)
    except CaptureError as e:
        print(f"bridge-dump: {args.capture}: {e}", file=sys.stderr)
        return EXIT_BAD_CAPTURE
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        print(f"bridge-dump: cannot read {args.capture}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_CAPTURE
    except KeyboardInterrupt:
        pass
    if not dump.decoder.bridge_connections and not dump.decoder.apple.connections:
        _no_bridge(dump, str(args.capture), out, args.json)
        return EXIT_OK
    missing = filters.devices - seen_devices
    if missing:
        known = ", ".join(sorted({i.device for i in items})) or "none"
        print(
            f"bridge-dump: no device {', '.join(sorted(missing))} in {args.capture} "
            f"(devices: {known})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    encrypted = sum(i.kind == "encrypted" for i in items)
    if dump.decoder.keys and encrypted and not any(i.decrypted for i in items):
        print("bridge-dump: no session in the key log matches this capture", file=sys.stderr)
    if filters.channels and encrypted:
        print(
            f"bridge-dump: {encrypted} encrypted records have no channel to filter on"
            + ("" if args.keylog else ": give their key log (--keylog) to see them"),
            file=sys.stderr,
        )
    if not kept and (filters.devices or filters.channels or filters.types):
        print(f"bridge-dump: no frame matched the filters ({len(items)} in all)", file=sys.stderr)
    if args.stats:
        _stats(dump, kept, out, args.json)
    return EXIT_OK


def _run(
    dump: Dump, path: Path, follow: bool, wait: Callable[[float], None],
    reload_keys: Callable[[], None],
) -> Iterator[tuple[Item, AttPdu]]:  # fmt: skip
    if not follow:
        yield from dump.feed(read_capture(path.read_bytes()))
        return
    done, size = 0, -1
    while True:  # ends with Ctrl-C
        if path.stat().st_size != size:  # read again only when the file grew
            reload_keys()  # a reconnection's keys are logged as its handshake ends
            data = path.read_bytes()
            size = len(data)
            packets = list(read_capture(data, partial_ok=True))
            yield from dump.feed(iter(packets[done:]))
            done = len(packets)
        wait(FOLLOW_POLL)


if __name__ == "__main__":
    sys.exit(main())
