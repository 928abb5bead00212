"""Every per-device buffer of the head unit has a bound (bulk transfers, the inbox), and
one device's damaged message store is that device's problem alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.endpoint import clock_ms_from_trio
from bridge.phone_device import (
    MAX_INBOX,
    MAX_TRANSFER_BYTES,
    MAX_TRANSFERS,
    CommandFailed,
    PhoneDevice,
)
from bridge.session import PeerSession
from bridge.store import MessageStore
from bridge.wire import messages as m
from bridge.wire.codec import encode
from bridge.wire.errors import ProtocolError
from tests.app_helpers import Rig, wait_for


def device(tmp: Path | None = None) -> PhoneDevice:
    store = MessageStore(tmp) if tmp is not None else None
    return PhoneDevice(PeerSession("phone"), store=store, clock_ms=clock_ms_from_trio())


async def test_tiny_chunks_announcing_huge_objects_hold_only_what_arrived() -> None:
    phone = device()
    for transfer in range(200):  # each opens a transfer that announces 1 MiB
        await phone.apply(m.BulkChunk(transfer, 0, 1 << 20, b"x" * 19), None)
    assert phone.bulk_bytes_held <= MAX_TRANSFERS * 19
    assert phone.transfers_dropped == 200 - MAX_TRANSFERS


async def test_transfers_together_stay_under_their_byte_cap() -> None:
    phone = device()
    chunk = b"y" * m.BULK_CHUNK_SIZE
    for transfer in range(MAX_TRANSFERS):
        for offset in range(0, 700 * 1024, len(chunk)):
            await phone.apply(m.BulkChunk(transfer, offset, 1 << 20, chunk), None)
            assert phone.bulk_bytes_held <= MAX_TRANSFER_BYTES


async def test_chunks_out_of_order_are_refused_and_a_whole_object_completes() -> None:
    phone = device()
    with pytest.raises(ProtocolError, match="start at 0"):
        await phone.apply(m.BulkChunk(1, 4, 8, b"late"), None)
    await phone.apply(m.BulkChunk(2, 0, 8, b"abcd"), None)
    with pytest.raises(ProtocolError, match="out of order"):
        await phone.apply(m.BulkChunk(2, 6, 8, b"gh"), None)
    playing = m.NowPlaying("Song", "Artist", state=m.PlaybackState.PLAYING, art=3)
    await phone.apply(playing, None)
    for chunk in m.chunk_object(3, b"0123456789" * 1000, size=4096):
        await phone.apply(chunk, None)
    assert phone.state.art == b"0123456789" * 1000


def note(n: int) -> m.Notification:
    return m.Notification(f"n{n}", "Chat", m.Category.MESSAGE, f"text {n}", n)


async def test_the_inbox_keeps_the_newest_and_says_how_many_it_dropped(
    tmp_path: Path, autojump_clock: Any
) -> None:
    phone = device(tmp_path)
    for n in range(MAX_INBOX + 250):
        await phone.apply(note(n), None)
        if phone.store is not None:
            with phone.store.transaction() as db:
                phone.persist(note(n), encode(note(n)), db)
    assert len(phone.state.inbox) == MAX_INBOX and phone.inbox_dropped == 250
    assert next(iter(phone.state.inbox)) == "n250"
    again = device(tmp_path)  # after a restart: what the store kept
    assert len(again.state.inbox) == MAX_INBOX


def damage(directory: Path) -> None:
    """A message store with a zeroed page: it still opens, then fails on first use."""
    store = MessageStore(directory)
    for n in range(50):
        store.outbox_add(f"hu-{n}", 3, 1, {0: "x" * 200})
        with store.transaction() as db:
            store.inbox_put(db, f"n{n}", encode(note(n)))
    store.close()
    path = directory / "messages.sqlite3"
    data = bytearray(path.read_bytes())
    data[4096:8192] = bytes(4096)
    path.write_bytes(bytes(data))


async def test_a_damaged_store_turns_off_that_devices_messaging_only(
    tmp_path: Path, autojump_clock: Any
) -> None:
    damage(tmp_path / "hu")
    rig = Rig.make(tmp_path)  # the head unit's side of this phone opens the damaged file
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        assert rig.hu.store_error is not None and "move the file away" in rig.hu.store_error
        await rig.phone.notify(note(999))
        await rig.phone.set_route(m.RouteStatus(m.RouteState.ACTIVE, "Elm Rd 42", remaining_m=3030))
        await wait_for(rig.hu, m.RouteStatus)  # navigation carries on
        with trio.fail_after(10):
            while not rig.phone.errors_received:
                await trio.sleep(0.1)
        (refused,) = rig.phone.errors_received  # the phone is told, the link stays up
        assert "cannot store messages" in refused.text and rig.hu_session.connected
        assert "n999" not in rig.hu.state.inbox
        with pytest.raises(CommandFailed, match="messaging is off"):
            await rig.hu.mark_read("n0")
        nursery.cancel_scope.cancel()


async def test_a_result_for_an_earlier_head_unit_process_answers_nothing(
    autojump_clock: Any,
) -> None:
    """A phone resends, to a restarted head unit, the result of a command the previous
    process sent; the new process numbers its commands from 0 again. That stale result
    must not be taken for the answer to the new process's command 0 (found by
    bridge-conformance)."""
    phone = device()
    await phone.apply(m.MediaCommandResult(0, True), None)  # arrives first, stale
    with pytest.raises(CommandFailed, match="did not answer"):
        await phone.media(m.MediaCommand.PAUSE)  # its frame is seq 0 too
