"""bridge-dump on real captures: the radio demo's (made here, with its key log), the
Android HCI logs of ../shared/captures, the same packets in every container format,
and bad files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.emulation import demo as simulated_demo
from bridge.emulation import demo_radio
from bridge.wire import apple, gatt
from bridge.wire.errors import ProtocolError
from pairing.keylog import KeyLog
from tools.dump import cli
from tools.dump.att import AttPdu, AttTracker, Connection
from tools.dump.capture import BTSNOOP_EPOCH, CaptureError, HciPacket, PacketType, read_capture
from tools.dump.decode import Decoder
from tools.fuzz.targets import capture as decode_everything  # readers, ATT, decoder

SHARED = Path(__file__).resolve().parents[2] / "shared" / "captures"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The radio demo (two phones, pairing, a link drop), captured with its key log."""
    folder = tmp_path_factory.mktemp("demo")
    status = demo_radio.main(
        drop=True,
        realtime=False,
        out=io.StringIO(),
        keylog=KeyLog(folder / "keys.log"),
        capture=folder,
    )
    assert status == 0
    yield folder


def run(*args: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main([str(a) for a in args], out=out)
    return code, out.getvalue()


def test_the_head_unit_capture_decrypts_into_every_channel(demo: Path) -> None:
    code, out = run(demo / "head-unit.btsnoop", "--keylog", demo / "keys.log")
    assert code == 0
    lines = out.splitlines()
    assert "XX message 1, 32 bytes" in lines[0]
    assert any("KK message 1" in line for line in lines)  # the reconnection after the drop
    assert any("phone->hu  nav     maneuver" in line and "onto Main St" in line for line in lines)
    assert any("audio   media_command_request pause" in line for line in lines)
    assert any("msg     notification" in line and "Anna" in line for line in lines)
    assert any("bulk    bulk_chunk" in line for line in lines)
    assert not [line for line in lines if " error " in line]
    assert any(line.split()[1] == "Pixel" for line in lines)  # named from its hello
    assert any("iPhone 16" in line for line in lines)


def test_without_the_keys_records_are_listed_encrypted(demo: Path) -> None:
    code, out = run(demo / "head-unit.btsnoop")
    assert code == 0
    assert "encrypted, " in out and "[decrypted]" not in out
    assert "handshake" in out  # handshake messages travel in the clear


def test_a_key_log_of_other_sessions_decrypts_nothing_and_says_so(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.log"
    other.write_text(f"BRIDGE_V0 {'11' * 32} {'22' * 32} {'33' * 32}\n")
    code, out = run(demo / "head-unit.btsnoop", "--keylog", other)
    assert code == 0 and "[decrypted]" not in out
    assert "no session in the key log matches this capture" in capsys.readouterr().err


def test_a_tampered_record_is_reported_as_failing_to_decrypt(demo: Path, tmp_path: Path) -> None:
    data = bytearray((demo / "head-unit.btsnoop").read_bytes())
    packets = list(read_capture(bytes(data)))
    tracker, decoder = AttTracker(), Decoder()
    candidates = []
    for packet in packets:
        for pdu in tracker.feed(packet):
            for item in decoder.feed(pdu):
                if item.kind == "encrypted" and item.size > 40:
                    candidates.append(packet)
    target = candidates[10]  # not a stream's first record: the keys are found by then
    # flip the last byte of that packet (inside the AEAD tag) in the file
    offset = _record_offset(bytes(data), target.number) + len(target.data)
    data[offset] ^= 0x01
    (tmp_path / "t.btsnoop").write_bytes(bytes(data))
    code, out = run(tmp_path / "t.btsnoop", "--keylog", demo / "keys.log")
    assert code == 0
    assert "failed to decrypt with this connection's keys" in out
    assert "[decrypted]" in out  # the rest still decrypts


def _record_offset(data: bytes, number: int) -> int:
    """Where btsnoop record ``number``'s H4 type byte is."""
    offset = 16
    for _ in range(number - 1):
        offset += 24 + struct.unpack_from(">I", data, offset + 4)[0]
    return offset + 24


def test_filters_json_and_verbose(demo: Path) -> None:
    code, out = run(
        demo / "head-unit.btsnoop", "--keylog", demo / "keys.log",
        "--channel", "nav", "--type", "maneuver", "--json",
    )  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and rows and {r["channel"] for r in rows} == {"navigation"}
    assert {r["type"] for r in rows} == {"maneuver"} and all(r["decrypted"] for r in rows)
    assert {r["device"] for r in rows} == {"Pixel 9"}
    _, out = run(
        demo / "head-unit.btsnoop", "--keylog", demo / "keys.log", "--device", "iPhone 16",
        "--type", "media_command_request", "-v",
    )  # fmt: skip
    lines = out.splitlines()
    assert "pause" in lines[0]
    assert lines[1].strip().startswith("[2, ") and "{0: " in lines[1]  # diagnostic notation


def test_stats(demo: Path) -> None:
    code, out = run(demo / "head-unit.btsnoop", "--keylog", demo / "keys.log", "--stats")
    assert code == 0
    table = out[out.index("statistics") :]
    assert "Pixel 9" in table and "bulk" in table and "gaps" in table


def _monitor(packets: list[HciPacket]) -> bytes:
    out = bytearray(b"btsnoop\0" + struct.pack(">II", 1, 2001))
    opcodes = {(1, True): 2, (4, False): 3, (2, True): 4, (2, False): 5}
    for p in packets:
        flags = opcodes[(int(p.type), p.sent)]
        stamp = int(p.time * 1e6) + BTSNOOP_EPOCH
        out += struct.pack(">IIIIq", len(p.data), len(p.data), flags, 0, stamp) + p.data
    return bytes(out)


def _pcapng(packets: list[HciPacket]) -> bytes:
    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 201, 0, 0))
    for p in packets:
        data = struct.pack(">I", 0 if p.sent else 1) + bytes([int(p.type)]) + p.data
        ticks = int(p.time * 1e6)
        out += block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                    len(data)) + data)  # fmt: skip
    return out


def _pcap(packets: list[HciPacket]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 201)
    for p in packets:
        data = struct.pack(">I", 0 if p.sent else 1) + bytes([int(p.type)]) + p.data
        seconds = int(p.time)
        out += struct.pack("<IIII", seconds, round((p.time - seconds) * 1e6), len(data), len(data))
        out += data
    return out


@pytest.mark.parametrize("container", [_monitor, _pcapng, _pcap])
def test_the_same_packets_in_every_container_decode_the_same(
    demo: Path, tmp_path: Path, container: object
) -> None:
    original = demo / "pixel.btsnoop"
    packets = [p for p in read_capture(original.read_bytes()) if int(p.type) in (1, 2, 4)]
    other = tmp_path / "capture"
    other.write_bytes(container(packets))  # type: ignore[operator]
    _, expected = run(original, "--keylog", demo / "keys.log", "--json")
    _, got = run(other, "--keylog", demo / "keys.log", "--json")

    def strip(text: str) -> list[dict[str, object]]:  # frame numbers and times may differ
        rows = [json.loads(line) for line in text.splitlines()]
        return [{k: v for k, v in r.items() if k not in ("frame", "time")} for r in rows]

    assert strip(got) == strip(expected) and expected


@pytest.mark.parametrize("name", ["revcar_btsnoop_hci.log", "yeelock_btsnoop_hci.log"])
def test_real_android_logs_have_no_bridge_and_their_att_counts_match_tshark(
    name: str, tshark: str
) -> None:
    capture = SHARED / name
    if not capture.exists():  # CI runs with ../shared beside the clone
        if os.environ.get("BRIDGE_REQUIRE_SHARED"):
            pytest.fail(f"{capture} is missing: ../shared must be beside the repository")
        pytest.skip(f"{capture} is not there (../shared is not beside the repository)")
    code, out = run(capture)
    assert code == 0
    assert "no bridge service found" in out.splitlines()[0]
    total = int(out.splitlines()[1].split()[2])
    listed = sum(int(line.split()[0]) for line in out.splitlines() if line.startswith("     "))
    assert listed == total
    rows = subprocess.run(
        [tshark, "-r", str(capture), "-Y", "btatt", "-T", "fields", "-e", "btatt.opcode",
         "-e", "btatt.handle"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    assert total == len(rows)
    writes = sum(1 for r in rows if r.split("\t")[0] == "0x52")
    assert f"{writes:5d}  Write Command" in out or writes == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty or too short"),
        (b"hello, this is not a capture at all", "not a capture this tool reads"),
        (b"btsnoop\0\0\0\0\1\0\0\0\x05", "datalink 5"),
    ],
)
def test_bad_files_are_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    assert run(path)[0] == cli.EXIT_BAD_CAPTURE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_truncated_capture_shows_what_it_has_then_fails(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (demo / "head-unit.btsnoop").read_bytes()
    offset = 16  # btsnoop: a 16-byte file header, then records of a 24-byte header + data
    while offset < len(data) // 2:
        offset += 24 + int.from_bytes(data[offset + 4 : offset + 8], "big")
    (tmp_path / "cut").write_bytes(data[: offset + 30])  # a record cut after 6 of its bytes
    code, out = run(tmp_path / "cut")
    assert code == cli.EXIT_BAD_CAPTURE and "handshake" in out
    assert "truncated" in capsys.readouterr().err


def test_missing_file_and_bad_key_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "nothing")[0] == cli.EXIT_BAD_CAPTURE
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "keys").write_text("BRIDGE_V0 zz\n")
    assert run(tmp_path / "nothing", "--keylog", tmp_path / "keys")[0] == cli.EXIT_BAD_KEYLOG
    assert "cannot read the key log" in capsys.readouterr().err


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.sampled_from([b"", b"btsnoop\0\0\0\0\1\0\0\x03\xea",
       b"btsnoop\0\0\0\0\1\0\0\x07\xd1", b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1"]))  # fmt: skip
def test_random_files_raise_only_capture_errors(tail: bytes, head: bytes) -> None:
    with contextlib.suppress(CaptureError):
        decode_everything(head + tail)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_captures_raise_only_protocol_errors(demo: Path, data: st.DataObject) -> None:
    base = bytearray((demo / "pixel.btsnoop").read_bytes()[:12000])
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(base) - 1))
        base[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    with contextlib.suppress(ProtocolError):
        decode_everything(bytes(base[:cut]))


LUA = Path(__file__).resolve().parents[1] / "tools" / "wireshark" / "bridge.lua"


def _dissector_agrees(capture: Path, tshark: str) -> list[tuple[str, str]]:
    """Run tshark with the Lua dissector: the same records as bridge-dump, in the same
    frames, directions and sizes, the same ones in the clear. Returns the clear frames'
    (channel, type)."""
    fields = ["frame.number", "bridge.direction", "bridge.segment.kind", "bridge.record.length",
              "bridge.record.encrypted", "bridge.frame.channel", "bridge.frame.type"]  # fmt: skip
    out = subprocess.run(
        [tshark, "-X", f"lua_script:{LUA}", "-r", str(capture), "-Y", "bridge",
         "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
    records = [r for r in rows if r["bridge.record.length"]]
    _, dumped = run(capture, "--json")
    items = [json.loads(line) for line in dumped.splitlines()]
    expected = [i for i in items if i["kind"] in ("frame", "encrypted")]
    seen = [
        (int(r["frame.number"]), r["bridge.direction"], int(r["bridge.record.length"]),
         r["bridge.record.encrypted"] == "1")
        for r in records
    ]  # fmt: skip
    wanted = [(i["frame"], i["direction"], i["size"], i["kind"] == "encrypted") for i in expected]
    assert seen == wanted and seen
    assert {r["bridge.segment.kind"] for r in rows} >= {"0", "1"}
    return [(r["bridge.frame.channel"], r["bridge.frame.type"]) for r in records
            if r["bridge.record.encrypted"] == "0"]  # fmt: skip


def test_the_wireshark_dissector_agrees_with_bridge_dump(demo: Path, tshark: str) -> None:
    clear = _dissector_agrees(demo / "head-unit.btsnoop", tshark)
    assert clear == [("0", "4")] * 8  # the handshakes: XX, XX and, after the drop, KK


def test_the_simulated_demo_records_a_pcapng_that_both_tools_read(
    tmp_path: Path, tshark: str
) -> None:
    status = simulated_demo.main(
        "android", seed=1, drop=True, realtime=False, out=io.StringIO(),
        keylog=KeyLog(tmp_path / "keys.log"), capture=tmp_path,
    )  # fmt: skip
    assert status == 0
    capture = tmp_path / "head-unit.pcapng"
    code, out = run(capture, "--keylog", tmp_path / "keys.log")
    lines = out.splitlines()
    assert code == 0 and " error " not in out
    assert any("nav     maneuver" in line and "[decrypted]" in line for line in lines)
    assert sum("handshake" in line for line in lines) == 5  # XX, then KK after the drop
    assert _dissector_agrees(capture, tshark) == [("0", "4")] * 5
    # the link lost in the tunnel ends with a supervision timeout in the capture
    packets = list(read_capture(capture.read_bytes()))
    ends = [p.data for p in packets if p.data[:1] == b"\x05"]
    assert ends and ends[0][-1] == 0x08


def test_follow_reads_a_capture_as_it_grows(demo: Path, tmp_path: Path) -> None:
    data = (demo / "head-unit.btsnoop").read_bytes()
    growing = tmp_path / "growing.btsnoop"
    growing.write_bytes(data[: len(data) // 3 + 5])  # cut inside a record
    polls: list[int] = []

    def wait(seconds: float) -> None:  # the writer appends between polls; then Ctrl-C
        polls.append(1)
        if len(polls) == 1:
            growing.write_bytes(data)
        else:
            raise KeyboardInterrupt

    out = io.StringIO()
    code = cli.main([str(growing), "--follow", "--json"], out=out, wait=wait)
    followed = out.getvalue()
    _, whole = run(demo / "head-unit.btsnoop", "--json")
    assert code == 0 and len(polls) == 2
    assert followed == whole


# -- JSON Lines in every mode, filters that say when they match nothing -----------------------


def test_json_frames_carry_the_messages_own_fields(demo: Path) -> None:
    code, out = run(demo / "head-unit.btsnoop", "--keylog", demo / "keys.log", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    maneuver = next(r for r in rows if r.get("type") == "maneuver")
    assert maneuver["fields"]["display_unit"] in ("meters", "kilometers", "feet", "miles", "yards")
    assert isinstance(maneuver["fields"]["distance_m"], int)
    chunk = next(r for r in rows if r.get("type") == "bulk_chunk")
    assert chunk["fields"]["data"]["length"] > 0 and "hex" not in chunk["fields"]["data"]
    hello = next(r for r in rows if r.get("type") == "hello")
    assert hello["fields"]["name"] in ("Pixel 9", "iPhone 16", "Car", "Head unit")
    assert not any("fields" in r for r in rows if r.get("type") == "handshake")


@pytest.mark.parametrize("name", ["revcar_btsnoop_hci.log", "yeelock_btsnoop_hci.log"])
def test_the_att_summary_of_a_capture_without_the_bridge_is_json_lines(name: str) -> None:
    capture = SHARED / name
    if not capture.exists():
        if os.environ.get("BRIDGE_REQUIRE_SHARED"):
            pytest.fail(f"{capture} is missing: ../shared must be beside the repository")
        pytest.skip(f"{capture} is not there (../shared is not beside the repository)")
    _, text = run(capture)
    code, out = run(capture, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and rows[0]["kind"] == "capture" and rows[0]["bridge"] is False
    att = [r for r in rows if r["kind"] == "att"]
    assert sum(r["packets"] for r in att) == rows[0]["att_packets"] == int(text.split()[10])


def test_stats_are_labelled_honour_the_filters_and_come_as_json(demo: Path) -> None:
    keys = demo / "keys.log"
    _, out = run(demo / "head-unit.btsnoop", "--keylog", keys, "--stats")
    table = out[out.index("statistics") :].splitlines()
    assert table[1].split() == [
        "device", "channel", "frames", "bytes", "largest", "crypto", "%", "repeats",
        "reassembly", "ms",
    ]  # fmt: skip
    lines = [line for line in table[2:] if "%" in line and not line.strip()[0].islower()]
    shares = [float(line.split("%")[0].split()[-1]) for line in lines]
    assert shares and all(0 <= s <= 100 for s in shares) and max(shares) > 0
    assert any(line.strip().startswith("connection handle 0x") for line in table)
    assert any(line.strip().startswith("frames: ") for line in table)  # the legend
    _, out = run(demo / "head-unit.btsnoop", "--keylog", keys, "--stats", "--json",
                 "--device", "iPhone 16")  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    stats = [r for r in rows if r["kind"] == "stats"]
    assert stats and {r["device"] for r in stats} == {"iPhone 16"}
    assert all(0 < r["crypto_percent"] <= 100 for r in stats if r["channel"] != "control")
    assert {r["kind"] for r in rows} == {"frame", "stats", "stream"}


def test_filters_that_match_nothing_say_so_and_unknown_names_are_usage_errors(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = demo / "head-unit.btsnoop"
    with pytest.raises(SystemExit) as usage:
        run(capture, "--type", "manoeuvre")
    assert usage.value.code == cli.EXIT_USAGE
    assert "unknown --type manoeuvre" in capsys.readouterr().err
    assert run(capture, "--device", "Nokia 3310")[0] == cli.EXIT_USAGE
    assert "no device nokia 3310" in capsys.readouterr().err
    code, out = run(capture, "--keylog", demo / "keys.log", "--type", "dismiss")
    assert code == 0 and out == ""
    assert "no frame matched the filters" in capsys.readouterr().err
    code, out = run(capture, "--channel", "nav")  # no key log: nav frames are encrypted
    err = capsys.readouterr().err
    assert code == 0 and "encrypted records have no channel" in err and "--keylog" in err


def test_follow_reads_the_key_log_again_as_it_grows(tmp_path: Path) -> None:
    """Following a capture as it is written: the reconnection's keys are logged after
    following started, and its frames decrypt all the same."""
    status = simulated_demo.main(
        "android", seed=1, drop=True, realtime=False, out=io.StringIO(),
        keylog=KeyLog(tmp_path / "keys.log"), capture=tmp_path,
    )  # fmt: skip
    assert status == 0
    packets = list(read_capture((tmp_path / "head-unit.pcapng").read_bytes()))
    drop = next(i for i, p in enumerate(packets) if p.data[:1] == b"\x05")  # disconnection
    sessions = list(dict.fromkeys((tmp_path / "keys.log").read_text().splitlines(True)))
    assert len(sessions) == 2  # the pairing, then the reconnection (KK)
    growing, keys = tmp_path / "growing.pcapng", tmp_path / "growing-keys.log"
    growing.write_bytes(_pcapng(packets[: drop + 1]))  # up to the drop...
    keys.write_text(sessions[0])  # ...when only the first session was logged
    polls: list[int] = []

    def wait(seconds: float) -> None:  # then the reconnection is logged and captured
        polls.append(1)
        if len(polls) == 1:
            keys.write_text("".join(sessions))
            growing.write_bytes(_pcapng(packets))
        else:
            raise KeyboardInterrupt

    out = io.StringIO()
    code = cli.main([str(growing), "--follow", "--keylog", str(keys)], out=out, wait=wait)
    whole = tmp_path / "whole.pcapng"
    whole.write_bytes(_pcapng(packets))
    _, expected = run(whole, "--keylog", tmp_path / "keys.log")
    assert code == 0 and len(polls) == 2
    assert out.getvalue() == expected and "encrypted, " not in expected


def test_the_wireshark_dissector_decrypts_with_the_key_log(demo: Path, tshark: str) -> None:
    """With the key log preference the Lua dissector opens (and checks) every record
    bridge-dump decrypts, and finds in it the same frames: channel and sequence number."""
    capture, keys = demo / "head-unit.btsnoop", demo / "keys.log"
    fields = ["frame.number", "bridge.direction", "bridge.record.decrypted",
              "bridge.frame.channel", "bridge.frame.seq"]  # fmt: skip
    out = subprocess.run(
        [tshark, "-X", f"lua_script:{LUA}", "-o", f"bridge.keylog:{keys}", "-r", str(capture),
         "-Y", "bridge.record.encrypted == 1", "-T", "fields",
         *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
    assert rows and all(r["bridge.record.decrypted"] == "1" for r in rows)
    channels = {"control": 0, "navigation": 1, "audio": 2, "messaging": 3, "bulk": 4}
    seen = [
        (int(r["frame.number"]), r["bridge.direction"], int(r["bridge.frame.channel"]),
         int(r["bridge.frame.seq"]) if r["bridge.frame.seq"] else None)
        for r in rows
    ]  # fmt: skip
    _, dumped = run(capture, "--keylog", keys, "--json")
    items = [json.loads(line) for line in dumped.splitlines()]
    wanted = [
        (i["frame"], i["direction"], channels[i["channel"]], i["seq"])
        for i in items if i.get("decrypted")
    ]  # fmt: skip
    assert seen == wanted
    # a key log of other sessions decrypts nothing, and says so in the field
    other = demo.parent / "other-keys.log"
    other.write_text(f"BRIDGE_V0 {'00' * 32} {'11' * 32} {'22' * 32}\n")
    out = subprocess.run(
        [tshark, "-X", f"lua_script:{LUA}", "-o", f"bridge.keylog:{other}", "-r", str(capture),
         "-Y", "bridge.record.encrypted == 1", "-T", "fields", "-e", "bridge.record.decrypted"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert set(out.split()) == {"0"}


# -- ANCS and AMS (an iPhone without the app) ------------------------------------------------


def test_ancs_and_ams_of_the_app_free_iphone_are_decoded(demo: Path) -> None:
    code, out = run(demo / "head-unit.btsnoop", "--json", "--channel", "ancs", "--channel", "ams")
    items = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and items and {i["channel"] for i in items} == {"ancs", "ams"}
    assert not [i for i in items if i["kind"] == "error"]
    answers = [i["fields"] for i in items if i.get("type") == "answer" and "uid" in i["fields"]]
    call = next(a for a in answers if a["values"]["title"] == "Mum")
    assert call["values"]["positive_action_label"] == "Answer"
    assert {"app": "com.apple.mobilephone", "values": {"display_name": "Phone"}} in [
        i["fields"] for i in items if i.get("type") == "answer"
    ]
    events = [i["fields"] for i in items if i.get("type") == "notification-event"]
    assert {"event": "removed", "uid": call["uid"], "category": "incoming_call",
            "flags": ["important", "positive_action", "negative_action"]} in events  # fmt: skip
    summaries = [(i["direction"], i.get("type"), i["summary"]) for i in items]
    assert ("to iphone", "command", f"perform positive action on uid {call['uid']}") in summaries
    assert ("to iphone", "remote-command", "pause") in summaries
    assert any(t == "update" and s == "track title = 'Sinnerman'" for _, t, s in summaries)
    # the lines a person reads
    code, text = run(demo / "head-unit.btsnoop", "--channel", "ams")
    assert "hu->iphone  ams     remote-command       pause" in text


def test_long_writes_and_apples_errors_in_a_capture() -> None:
    """A command longer than MTU - 3 goes as Prepare Write parts and an Execute Write;
    an iPhone refuses a bad command with an ATT error 0xA0 to 0xA3."""
    conn = Connection((0, 1, 1), 0, 1, peer="iphone")
    conn.uuids = {0x10: apple.CONTROL_POINT, 0x12: apple.DATA_SOURCE}
    command = apple.get_app_attributes("com.apple.MobileSMS")
    pdus = [
        AttPdu(1, 0.0, conn, True, 0x16, 0x10, b"\x00\x00" + command[:18]),
        AttPdu(2, 0.0, conn, True, 0x16, 0x10, b"\x12\x00" + command[18:]),
        AttPdu(3, 0.0, conn, True, 0x18, None, b"\x01"),
        AttPdu(4, 0.0, conn, False, 0x1B, 0x12,
               apple.encode_app_attributes("com.apple.MobileSMS",
                                           [(apple.AppAttribute.DISPLAY_NAME, b"Messages")])),
        AttPdu(5, 0.0, conn, True, 0x12, 0x10, b"\x07"),
        AttPdu(6, 0.0, conn, False, 0x01, None, b"\x12\x10\x00\xa0"),
        AttPdu(7, 0.0, conn, False, 0x1B, 0x12, b"\x00\x01"),
    ]  # fmt: skip
    decoder = Decoder()
    items = [item for pdu in pdus for item in decoder.feed(pdu)]
    assert [(i.type, i.summary or i.error) for i in items] == [
        ("command", "get app attributes of com.apple.MobileSMS"),
        ("answer", "app com.apple.MobileSMS: {'display_name': 'Messages'}"),
        (None, "bad ancs value: ANCS command 7 (invalid_message)"),
        ("command-error", "0xA0 unknown_command"),
        (None, "a Data Source value with no command before it in the capture"),
    ]


def _att(number: int, handle: int, pdu: bytes, *, sent: bool) -> HciPacket:
    l2cap = struct.pack("<HH", len(pdu), 4) + pdu  # ATT's fixed channel
    acl = struct.pack("<HH", handle | 0x2000, len(l2cap)) + l2cap
    return HciPacket(number, float(number), 0, sent, PacketType.ACL, acl)


def _connected(number: int, handle: int, peer: bytes) -> HciPacket:
    event = bytes((0x3E, 19, 0x01, 0)) + struct.pack("<H", handle) + bytes((0, 1)) + peer
    return HciPacket(number, float(number), 0, False, PacketType.EVENT, event + bytes(7))


def test_a_connection_that_trusts_its_cached_database_is_still_decoded() -> None:
    # BlueZ reads the peer's Database Hash and, when it matches, discovers nothing: the
    # second connection to the phone must be read with what the first one discovered
    peer = bytes.fromhex("030003f3f2f1")
    to_server = bytes(reversed(gatt.TO_SERVER_UUID.bytes))
    declarations = bytes((0x09, 21)) + struct.pack("<HBH", 0x0F, 0x04, 0x10) + to_server
    keepalive = bytes.fromhex("400500840002f6a0")  # FIRST, seq 0, a plaintext KEEPALIVE
    write = bytes((0x52,)) + struct.pack("<H", 0x10) + keepalive
    disconnected = HciPacket(4, 4.0, 0, False, PacketType.EVENT, bytes((0x05, 4, 0, 1, 0, 0x13)))
    packets = [
        _connected(1, 1, peer), _att(2, 1, declarations, sent=False),
        _att(3, 1, write, sent=True), disconnected,
        _connected(5, 1, peer), _att(6, 1, write, sent=True),  # no discovery this time
    ]  # fmt: skip
    tracker, decoder = AttTracker(), Decoder()
    items = [item for p in packets for pdu in tracker.feed(p) for item in decoder.feed(pdu)]
    assert [(i.number, i.kind) for i in items] == [(3, "frame"), (6, "frame")]
    assert len({i.connection for i in items}) == 2  # two connections, one database
