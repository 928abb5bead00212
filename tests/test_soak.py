"""The fault soak (tools/soak.py), short: 1,000 messages both ways across 20 link drops and
two head-unit crashes, in virtual time. The long run (10,000 / 100 / 2) is
``python -m tools.soak``; its last result is in docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio.testing

import tools.soak
from bridge.emulation.phone_app import PhoneApp
from bridge.phone_device import MAX_INBOX
from tools.soak import SoakResult, fleet, report, soak


async def test_nothing_lost_duplicated_or_reordered_across_drops_and_restarts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    result = await soak(tmp_path, messages=1000, drops=20, restarts=2, seed=7)
    assert (result.drops, result.restarts) == (20, 2)
    assert len(result.notifications) == 800 and len(result.replies) == 200
    assert SoakResult.check(result.notifications, result.delivered) == (0, 0, True)
    assert SoakResult.check(result.replies, result.answered) == (0, 0, True)
    assert result.ok()
    # the last life's inbox holds what the earlier lives received (it came from the
    # file), up to its cap
    assert result.inbox == min(800, MAX_INBOX)


async def test_a_soak_that_stops_moving_ends_as_a_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a phone that never records a reply: the soak must end and say so, not wait forever
    class Deaf(PhoneApp):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.replies = _Bottomless()

    monkeypatch.setattr(tools.soak, "PhoneApp", Deaf)
    result = await soak(tmp_path, messages=100, drops=2, restarts=0, seed=3)
    assert result.stalled and not result.ok()
    assert "STALLED" in report(result, 0.0)


class _Bottomless(list[tuple[str, str]]):
    def append(self, item: tuple[str, str]) -> None:
        pass


def test_the_check_sees_loss_duplication_and_reordering() -> None:
    sent = ["a", "b", "c"]
    assert SoakResult.check(sent, ["a", "b", "c"]) == (0, 0, True)
    assert SoakResult.check(sent, ["a", "c"]) == (1, 0, True)
    assert SoakResult.check(sent, ["a", "b", "b", "c"])[1] == 1
    assert SoakResult.check(sent, ["b", "a", "c"])[2] is False
    broken = SoakResult(notifications=sent, delivered=["a", "c", "b"])
    assert not broken.ok()


async def test_a_fleet_keeps_its_memory_and_tasks_flat(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # short: 2 devices, 6 simulated minutes (the documented run: 8 devices, 10 minutes)
    result = await fleet(tmp_path, devices=2, minutes=6, seed=3)
    assert result.messages > 500 and result.commands > 0 and result.drops > 0
    assert len(result.samples) == 7
    assert result.memory_growth() <= 1.25  # live memory, after a collection
    assert result.task_growth() <= 8  # a link's tasks come and go; none pile up
