"""tools.bench.scale in virtual time: several phones on one Bumble radio, every session
encrypted, each phone's transfer delivered whole, pauses measured while they stream, and
the heap pass counts something per phone."""

from __future__ import annotations

from typing import Any

from tools.bench.scale import ScaleRow, report, run


async def test_two_phones_stream_at_once_and_each_pause_is_measured(autojump_clock: Any) -> None:
    row = await run(2, 64 * 1024, 4, memory=False)
    assert row.phones == 2
    assert row.samples >= 4  # pauses to both phones, taken while their transfers ran
    assert 0.0 < row.pause[0] <= row.pause[1] < 0.2
    assert 0.0 < row.slowest <= 170_000  # no phone beyond the android link's capacity
    assert row.cpu_per_mb > 0.0
    assert row.memory_per_phone is None


async def test_the_heap_pass_traces_each_phone(autojump_clock: Any) -> None:
    row = await run(1, 64 * 1024, 2, memory=True)
    assert row.memory_per_phone is not None
    assert row.memory_per_phone > 10_000  # a phone's sessions, links and Bumble stack


def test_the_report_divides_by_the_one_phone_row() -> None:
    one = ScaleRow(1, 2.0, (0.008, 0.015), 30, 160_000.0, 600_000.0)
    eight = ScaleRow(8, 2.5, (0.010, 0.030), 240, 40_000.0, 540_000.0)
    text = report([one, eight], 256 * 1024)
    last = text.splitlines()[-1].split()
    assert last[0] == "8"
    assert last[-3:] == ["1.25", "2.00", "0.90"]  # CPU per MB, p99, heap per phone
