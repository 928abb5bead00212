"""tools.bench's goal table: each goal judged from the rows of the run, met or missed."""

from __future__ import annotations

from tools.bench.handshake import Flights
from tools.bench.link import Row
from tools.bench.summary import goal_table, handshake_goals, link_goals, memory_goal


def _row(mtu: int, goodput: float, pause: tuple[float, float]) -> Row:
    idle = (0.010, 0.020)
    loaded = (idle[0] * pause[0], idle[1] * pause[1])
    return Row("ios", mtu, 1000.0, goodput, idle, loaded, (1.0, 2.0), (60, 5))


def test_link_goals_are_judged_on_the_worst_row() -> None:
    rows = {
        "simulated": [_row(23, 944.0, (1.0, 1.0)), _row(185, 980.0, (1.2, 1.6))],
        "bumble": [_row(185, 990.0, (1.0, 1.0)), _row(517, 960.0, (1.0, 1.5))],
    }
    goals = {(g.name, g.what): g for g in link_goals(rows)}
    simulated_p3 = goals[("P3", "pause under load / idle, worst of p50 and p99, simulated")]
    assert (simulated_p3.measured, simulated_p3.met) == ("1.00-1.60", False)
    bumble_p3 = goals[("P3", "pause under load / idle, worst of p50 and p99, Bumble")]
    assert (bumble_p3.measured, bumble_p3.met) == ("1.00-1.50", True)
    mtu23 = goals[("P1", "goodput / raw capacity, encrypted, MTU 23, simulated")]
    assert (mtu23.measured, mtu23.met) == ("0.944", True)  # at least 0.94 at MTU 23
    simulated_p1 = goals[("P1", "goodput / raw capacity, encrypted, MTU 185, simulated")]
    assert (simulated_p1.measured, simulated_p1.met) == ("0.980", True)
    bumble_p1 = goals[("P1", "goodput / raw capacity, encrypted, MTU 185-517, Bumble")]
    assert (bumble_p1.measured, bumble_p1.met) == ("0.960-0.990", False)  # 0.98 from 185
    assert ("P1", "goodput / raw capacity, encrypted, MTU 23, Bumble") not in goals


def test_the_table_says_met_missed_or_not_run() -> None:
    goals = [
        *handshake_goals(Flights(first_frame=6, codes=4), Flights(first_frame=4, codes=None)),
        memory_goal("BlueZ (VM lane)", None),
        memory_goal("Bumble dongle", 64_000),
    ]
    assert [g.met for g in goals] == [False, True, None, False]
    lines = goal_table(goals).splitlines()
    assert lines[2].endswith("MISSED") and "2 (3)" in lines[3] and lines[3].endswith("met")
    assert lines[4].endswith("-") and "62.5 MB" in lines[5]
