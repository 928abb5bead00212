"""Shared fixtures: an asyncio loop inside trio (for bleak and Bumble), and btsnoop
captures that are kept when a test fails."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio_asyncio

from tests.helpers import needed

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def aio() -> AsyncIterator[Any]:
    """trio-asyncio's loop: bleak and Bumble run in it, on trio's (virtual) clock."""
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture
def captures(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A folder for the test's btsnoop captures; copied to test-artifacts/ on failure."""
    folder = tmp_path / "captures"
    folder.mkdir()
    yield folder
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        target = ARTIFACTS / "captures" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)


@pytest.fixture
def tshark() -> str:
    """Debian's tshark (the capture tests): required where BRIDGE_REQUIRE_TSHARK is set."""
    return needed("tshark", "BRIDGE_REQUIRE_TSHARK", "Debian: apt-get install tshark")
