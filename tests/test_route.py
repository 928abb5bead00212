"""``python -m tools.route`` measures one notification's route (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.route import Route, measure


def test_moves_back_count_returns_to_files_already_left() -> None:
    route = Route(["a.py", "b.py", "c.py", "b.py", "a.py", "d.py"])
    assert route.files == ["a.py", "b.py", "c.py", "d.py"]
    assert (route.moves, route.moves_back) == (5, 2)


async def test_the_route_runs_from_the_phone_app_to_the_api_through_the_head_unit(
    autojump_clock: Any, tmp_path: Path
) -> None:
    route = await measure(tmp_path)
    assert route.visits[0] == "bridge/emulation/phone_app.py"  # where the notification starts
    files = route.files
    for step in ("bridge/endpoint.py", "bridge/wire/mux.py", "pairing/encrypted_records.py",
                 "transports/ble.py", "bridge/phone_device.py", "bridge/api.py"):  # fmt: skip
        assert step in files
    # the head unit's radio delivers it before the API last runs (the event goes out)
    assert route.visits.index("transports/ble.py") < max(
        i for i, f in enumerate(route.visits) if f == "bridge/api.py"
    )
    # as measured when the route was written down (24 files): it must not grow unnoticed
    assert len(files) <= 24
