"""bulk_chunk_size: chunks whose encrypted records fill whole segments carry at least as
much data per segment as 4096-byte ones, for every segment size a link can have, with
the largest offsets, totals and sequence numbers and a piggybacked acknowledgement."""

from __future__ import annotations

import pytest

from bridge.emulation.phone_app import PhoneApp
from bridge.session import LinkUp, PeerSession
from bridge.wire.channels import Channel
from bridge.wire.codec import Message
from bridge.wire.frame import Frame, encode_frame
from bridge.wire.messages import BULK_CHUNK_SIZE, BulkChunk, bulk_chunk_size
from pairing.encrypted_records import RECORD_OVERHEAD
from transports.link import segment_size_for

FIRST, CONT = 3, 1  # segment header bytes (PROTOCOL.md 3), a FIRST without a grant


def _segments(record: int, segment_size: int) -> int:
    rest = max(0, record - (segment_size - FIRST))
    return 1 + -(-rest // (segment_size - CONT))


def _record(data: int, offset: int, seq: int, acks: dict[Channel, int]) -> int:
    chunk = BulkChunk(7, offset, 1 << 20, bytes(data))
    frame = Frame(chunk.channel, chunk.type, seq, chunk.to_body(), acks)
    return len(encode_frame(frame)) + RECORD_OVERHEAD


@pytest.mark.parametrize("acks", [{}, {Channel.AUDIO: 70_000}])
def test_aligned_chunks_never_carry_less_per_segment(acks: dict[Channel, int]) -> None:
    sizes = sorted({segment_size_for(mtu - 3) for mtu in range(23, 518)})
    gained = 0
    for size in sizes:
        data = bulk_chunk_size(size)
        assert 0 < data <= BULK_CHUNK_SIZE
        for offset, seq in ((0, 0), (70_000, 300), ((1 << 20) - BULK_CHUNK_SIZE, 70_000)):
            aligned = data / _segments(_record(data, offset, seq, acks), size)
            plain = BULK_CHUNK_SIZE / _segments(_record(BULK_CHUNK_SIZE, offset, seq, acks), size)
            assert aligned >= plain, (size, offset, seq)
            gained += aligned > plain
    assert gained > len(sizes)  # it is not 4096 everywhere: most sizes gain a segment


def test_examples() -> None:
    assert bulk_chunk_size(244) == 4076  # 17 segments at ATT MTU 247 instead of 18
    assert bulk_chunk_size(182) == 3927  # 22 at 185
    assert bulk_chunk_size(20) == BULK_CHUNK_SIZE  # below 64 bytes the tail is small
    with pytest.raises(ValueError):
        bulk_chunk_size(513)


async def test_the_emulated_phone_sends_chunks_that_fill_its_links_segments() -> None:
    sent: list[object] = []

    class Recording(PhoneApp):
        async def send(self, message: Message) -> int:
            sent.append(message)
            return len(sent)

    app = Recording(PeerSession("phone"), clock_ms=lambda: 0)
    await app.on_event(LinkUp("car", 244, True))  # ATT MTU 247
    await app.send_object(3, bytes(10_000), "image/png")
    assert [len(c.data) for c in sent if isinstance(c, BulkChunk)] == [4076, 4076, 1848]
    await app.on_event(LinkUp("car", 20, True))  # the next link: ATT MTU 23
    sent.clear()
    await app.send_object(4, bytes(5_000), "image/png")
    assert [len(c.data) for c in sent if isinstance(c, BulkChunk)] == [4096, 904]
