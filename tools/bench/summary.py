"""Every benchmark in one run, then the goals: ``python -m tools.bench``.

In order, each printing its own table as it goes: goodput and pause latency on the
simulated link and the Bumble radio (P1, P3; ``tools/bench/link.py``, about five
minutes), the bytes of one encrypted pause and the handshake's records read from the
demos' captures (P2; ``wire.py``), CPU per megabyte (P4; ``cpu.py``), round trips to the
first application frame (P5; ``handshake.py``) and the daemon's resident memory with
four phones (P6; ``memory.py``, about 40 s; ``--bluez`` adds the same on BlueZ in the VM
lane, about 75 s more). Then one table of the goals with what this run measured and
whether each was met. ``--quick``, ``--radio``, ``--profile`` and ``--mtu`` narrow the
first part; the exit status is 0 when every measurement ran, met or not.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.bench import cpu, handshake, link, memory, wire


@dataclass(frozen=True)
class Goal:
    name: str
    what: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def _span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def link_goals(rows: dict[str, list[link.Row]]) -> list[Goal]:
    goals: list[Goal] = []
    labels = (("simulated", "simulated"), ("bumble", "Bumble"),
              ("bumble-peripheral", "Bumble, head unit as server"))  # fmt: skip
    for radio, label in labels:
        measured = rows.get(radio, [])
        if not measured:
            continue
        for mtus, least in (((185, 247, 517), 0.98), ((23,), 0.94)):
            ratios = [r.ratio for r in measured if r.mtu in mtus]
            if ratios:
                present = _span([float(r.mtu) for r in measured if r.mtu in mtus], ".0f")
                what = f"goodput / raw capacity, encrypted, MTU {present}, {label}"
                met = min(ratios) >= least
                goals.append(Goal("P1", what, f">= {least}", _span(ratios, ".3f"), met))
        worst = [max(r.priority_ratios) for r in measured]
        what = f"pause under load / idle, worst of p50 and p99, {label}"
        goals.append(Goal("P3", what, "<= 1.5", _span(worst, ".2f"), max(worst) <= 1.5))
    return goals


def wire_goal(rows: list[wire.Wire]) -> Goal:
    values = [r.pause_value for r in rows if r.profile != "legacy"]
    packets = [r.pause_packets for r in rows if r.profile != "legacy"]
    return Goal(
        "P2", "encrypted pause: ATT value bytes, packets (MTU >= 33)", "<= 32, 1",
        f"{_span([float(v) for v in values], '.0f')}, {max(packets)}",
        max(values) <= 32 and max(packets) == 1,
    )  # fmt: skip


def cpu_goals(result: cpu.CpuResult) -> list[Goal]:
    cores = result.cores / result.aead
    return [
        Goal("P4", "CPU per MB, whole stack both ends / ChaCha20-Poly1305", "<= x40",
             f"x{result.ratio:.0f} ({100 * result.core_share:.1f} % of a core)",
             result.ratio <= 40),
        Goal("P4", "CPU per MB, the sans-IO cores / ChaCha20-Poly1305", "<= x15",
             f"x{cores:.0f}", cores <= 15),
    ]  # fmt: skip


def handshake_goals(first: handshake.Flights, known: handshake.Flights) -> list[Goal]:
    assert first.codes is not None
    to_frame, to_code = known.first_frame / 2, first.codes / 2
    return [
        Goal("P5", "round trips to the first frame, known phone", "1", f"{to_frame:g}",
             to_frame <= 1),
        Goal("P5", "round trips to the code, first pairing (first frame)", "2 + the user",
             f"{to_code:g} ({first.first_frame / 2:g})", to_code <= 2),
    ]  # fmt: skip


def memory_goal(where: str, rss_kb: int | None) -> Goal:
    if rss_kb is None:
        return Goal("P6", f"bridge run resident, 4 phones, {where}", "<= 60 MB", "not run", None)
    mb = rss_kb / 1024
    return Goal(
        "P6", f"bridge run resident, 4 phones, {where}", "<= 60 MB", f"{mb:.1f} MB", mb <= 60
    )


BLUEZ_LOGS = Path("test-artifacts/bench-bluez")


def bluez_memory(logs: Path = BLUEZ_LOGS) -> int | None:
    """``bridge run``'s resident kB on BlueZ from one boot of the VM lane, or None (the
    lane's logs stay in ``logs``; it says where)."""
    shutil.rmtree(logs, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "tools.bluez_vm", "memory", "--logs", str(logs)], check=False
    )
    found = list(logs.glob("*/measurements.txt"))
    if done.returncode != 0 or not found:
        return None
    line = found[0].read_text()
    return round(float(line.split("resident ")[1].split(" MB")[0]) * 1024)


def goal_table(goals: list[Goal]) -> str:
    width = max(len(g.what) for g in goals)
    lines = [
        "goals (issues 9 and 24) and this run",
        f"{'':3} {'what':<{width}}  {'goal':<13} {'measured':<24} result",
    ]
    for g in sorted(goals, key=lambda g: g.name):
        result = {True: "met", False: "MISSED", None: "-"}[g.met]
        lines.append(f"{g.name:3} {g.what:<{width}}  {g.goal:<13} {g.measured:<24} {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    link.add_arguments(parser)
    parser.add_argument("--no-memory", action="store_true", help="skip P6 (the daemon's RSS)")
    parser.add_argument(
        "--bluez", action="store_true", help="P6 on BlueZ too (one boot of the VM lane)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("pairing.keylog").setLevel(logging.ERROR)  # the demos' temporary key logs
    goals = link_goals(link.tables(args))

    wires = [wire.measure(profile) for profile in ("android", "ios", "legacy")]
    wires.append(wire.measure_radio())
    print(wire.table(wires), end="\n\n", flush=True)
    goals.append(wire_goal(wires))

    result = cpu.measure()
    print(cpu.report(result), end="\n\n", flush=True)
    goals.extend(cpu_goals(result))

    first, known = handshake.flights(known=False), handshake.flights(known=True)
    print(handshake.report(first, known), end="\n\n", flush=True)
    goals.extend(handshake_goals(first, known))

    ran = True
    if not args.no_memory:
        ready, rss, peak = memory.measure(4)
        print(memory.report(ready, 4, rss, peak), end="\n\n", flush=True)
        goals.append(memory_goal("Bumble dongle", rss if ready == 4 else None))
        ran &= ready == 4
    if args.bluez:
        rss_kb = bluez_memory()
        goals.append(memory_goal("BlueZ (VM lane)", rss_kb))
        ran &= rss_kb is not None
    print(goal_table(goals))
    return 0 if ran else 1
