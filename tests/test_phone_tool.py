"""``bridge-phone`` on a controller reached through a Bumble transport (TCP here; a USB
dongle on a desk), against the head unit's bleak transport on the same virtual radio."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from bumble.transport import open_transport

from bridge.emulation.world import RadioWorld
from bridge.endpoint import clock_ms_from_trio
from bridge.session import LinkUp
from bridge.wire import messages as m
from pairing.handshake import Authenticated
from tools import phone as tool
from tools.dump import cli as dump
from transports.bumble_host import close_transport
from transports.bumble_radio import PacedController


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("role", ["peripheral", "central"])
async def test_the_phone_command_pairs_and_plays_over_a_tcp_controller(
    aio: Any, tmp_path: Path, captures: Path, role: str
) -> None:
    world = RadioWorld(tmp_path / "hu", clock_ms=clock_ms_from_trio(), snoop_dir=captures)
    port = _free_port()
    # a controller on the virtual radio, exported as HCI over TCP (as a dongle would be)
    transport = await trio_asyncio.aio_as_trio(open_transport)(f"tcp-server:127.0.0.1:{port}")
    PacedController(  # the radio's controllers give real scan responses (its docstring)
        "exported", host_source=transport.source, host_sink=transport.sink, link=world.radio.link
    )
    out = io.StringIO()
    accepted: list[Any] = []
    args = tool._parser().parse_args(
        ["--transport", f"tcp-client:127.0.0.1:{port}", "--yes",
         "--data-dir", str(tmp_path / "phone"), "--scenario", "drive", "--duration", "30",
         "--capture", str(captures / "phone.btsnoop"), "--role", role]
    )  # fmt: skip
    try:
        central = await world.start_central()

        async def yes(phone: Any, event: Any) -> bool:
            return True

        if role == "central":  # the phone connects: the head unit serves (protocol v1)
            hu = world.head_unit(None, confirm=yes, listener=world.listener())
        else:
            hu = world.head_unit(central, confirm=yes)
        events: list[Any] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tool.run, args, out)
                await nursery.start(hu.run)
                async for _, event in hu.events:
                    events.append(event)
                    if isinstance(event, m.Maneuver):
                        break
                accepted.append(transport.sink.transport)
                nursery.cancel_scope.cancel()
        links = [e for e in events if isinstance(e, LinkUp)]
        assert links and links[0].payload_size == 512
        assert [e.paired_now for e in events if isinstance(e, Authenticated)] == [True]
        text = out.getvalue()
        assert "asks to pair; code" in text and "a head unit connected" in text
        assert ("scans for a head unit" if role == "central" else "advertises the bridge") in text
        # the phone's own capture decodes: the handshake in the clear, then records
        dumped = io.StringIO()
        assert dump.main([str(captures / "phone.btsnoop")], out=dumped) == 0
        lines = dumped.getvalue().splitlines()
        assert [line.split("handshake")[1].split(",")[0].strip() for line in lines[:3]] == [
            "XX message 1", "XX message 2", "XX message 3"
        ]  # fmt: skip
        assert "hu->phone" in lines[0] and "encrypted" in lines[-1]
    finally:
        world.close()
        with trio.CancelScope(shield=True):
            for connection in accepted:
                connection.close()
            transport.server.close()  # Bumble's TCP server transport leaves both open
            await close_transport(transport)


def test_the_phone_command_explains_a_bad_transport(capsys: pytest.CaptureFixture[str]) -> None:
    assert tool.main(["--transport", "nonsense:1", "--duration", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "bridge-phone: cannot open Bluetooth transport 'nonsense:1': unknown transport scheme "
        "(transports: usb:0, serial:/dev/ttyACM0, tcp-client:HOST:PORT, ...)"
    )
    with pytest.raises(SystemExit) as usage:
        tool.main([])
    assert usage.value.code == 2
    assert isinstance(tool._parser(), argparse.ArgumentParser)
